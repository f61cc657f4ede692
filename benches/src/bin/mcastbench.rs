//! `mcastbench`: the multicast and ARP containment scale bench of issue 15
//! (see [`tunterm_benches::mcastbench`]). Needs root, and `tunterm` +
//! `tunterm-apsim` built beside it (`cargo build --release -p tunterm -p
//! tunterm-lab`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tunterm_benches::mcastbench::{self, Options, Scenario};

#[derive(Parser)]
#[command(
    about = "Multicast snooping and ARP containment at scale: a group stream to one member among N APs, or gratuitous ARPs from every AP's clients"
)]
struct Cli {
    /// stream (one member, a group stream) or garp (gratuitous ARPs).
    #[arg(value_parser = parse_scenario)]
    scenario: Scenario,
    /// Simulated APs.
    #[arg(long, default_value_t = 1000)]
    aps: u32,
    /// Modes, in order: on, off (stream: IGMP snooping; garp: ARP/ND
    /// containment, tunterm_client_config.arp_nd_proxy).
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    modes: Vec<String>,
    /// Set an mxedge field in one mode, MODE:KEY=JSON (repeatable), e.g.
    /// 'off:tunterm_client_config={"arp_nd_proxy":false,"storm_control":{"enabled":false}}'.
    #[arg(long, value_parser = parse_set)]
    set: Vec<(String, String, serde_json::Value)>,
    /// stream: the group.
    #[arg(long, default_value = "239.1.2.3")]
    group: Ipv4Addr,
    /// stream: frames a second.
    #[arg(long, default_value_t = 1000)]
    pps: u32,
    /// stream: UDP payload bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Measurement window, seconds (stream: how long the sender sends).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// garp: synthetic clients per AP.
    #[arg(long, default_value_t = 10)]
    synthetic_clients: u32,
    /// garp: each client's gratuitous ARP interval, ms.
    #[arg(long, default_value_t = 20_000)]
    synthetic_interval_ms: u64,
    /// garp: `tunterm stats` calls spread over the window.
    #[arg(long, default_value_t = 9)]
    stats_calls: usize,
    /// Longest wait for every tunnel, seconds (the bench goes on with
    /// those that are up, and says so).
    #[arg(long, default_value_t = 900.0)]
    bring_up: f64,
    /// HELLO interval of the APs and the edge, seconds.
    #[arg(long, default_value_t = 60.0)]
    hello_interval: f64,
    /// Missed HELLOs before the APs and the edge give a tunnel up
    /// (default: the edge 7, the APs tunterm-apsim's default).
    #[arg(long)]
    hello_retries: Option<u32>,
    /// Run tunterm with the real-time policy SCHED_FIFO at this priority
    /// (`chrt -f`), so other work on the host does not decide the figures.
    #[arg(long)]
    edge_fifo: Option<u8>,
    /// Run tunterm-apsim likewise (below the edge's priority: the APs are
    /// other machines, they must not starve it of a core).
    #[arg(long)]
    apsim_fifo: Option<u8>,
    /// Directory holding tunterm and tunterm-apsim (default: beside this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write the figures as JSON (default
    /// target/mcastbench-SCENARIO.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    match s {
        "stream" => Ok(Scenario::Stream),
        "garp" => Ok(Scenario::Garp),
        _ => Err(format!("{s:?}: stream or garp")),
    }
}

fn parse_set(s: &str) -> Result<(String, String, serde_json::Value), String> {
    let bad = || format!("{s:?}: expected MODE:KEY=JSON");
    let (mode, rest) = s.split_once(':').ok_or_else(bad)?;
    let (key, value) = rest.split_once('=').ok_or_else(bad)?;
    let value = serde_json::from_str(value).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((mode.into(), key.into(), value))
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("--{name} {v}: not a duration"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = Options {
        scenario: cli.scenario,
        aps: cli.aps,
        modes: cli.modes,
        set: cli.set,
        group: cli.group,
        pps: cli.pps,
        payload: cli.payload,
        window: secs("seconds", cli.seconds)?,
        clients_per_ap: cli.synthetic_clients,
        garp_interval: Duration::from_millis(cli.synthetic_interval_ms),
        stats_calls: cli.stats_calls,
        bring_up: secs("bring-up", cli.bring_up)?,
        hello_interval: cli.hello_interval,
        hello_retries: cli.hello_retries,
        edge_fifo: cli.edge_fifo,
        apsim_fifo: cli.apsim_fifo,
        bin_dir: match cli.bin_dir {
            Some(d) => d,
            None => tunterm_benches::default_bin_dir()?,
        },
    };
    anyhow::ensure!(opts.group.is_multicast(), "--group: not a multicast group");
    let report = mcastbench::run(&opts)?;
    print!("{}", report.table());
    let json = match cli.json {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../target/mcastbench-{}.json",
            serde_json::to_value(opts.scenario)?
                .as_str()
                .unwrap_or("run")
        )),
    };
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("\nJSON: {}", json.display());
    anyhow::ensure!(
        report.rows.iter().all(|r| r.error.is_none()),
        "a mode failed (its row says why)"
    );
    Ok(())
}
