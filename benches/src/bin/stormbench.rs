//! `stormbench`: reconnect storm, hitless restart and soak at scale (issue
//! 18; see [`tunterm_benches::stormbench`]). Needs root, and `tunterm`,
//! `tunterm-apsim` and `tunterm-lab` built beside it (`cargo build
//! --release -p tunterm -p tunterm-lab -p tunterm-benches --bins`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tunterm_benches::stormbench::{self, Options};

#[derive(Parser)]
#[command(
    about = "Reconnect storm (kill -9 without the state file), hitless restart (kill -9 with it, traffic counted at the APs) and a soak, with N simulated APs"
)]
struct Cli {
    /// Simulated APs.
    #[arg(long, default_value_t = 10_000)]
    aps: u32,
    /// Synthetic clients per AP.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Interval of each client's announcement (gratuitous ARP), ms.
    #[arg(long, default_value_t = 20_000)]
    announce_interval_ms: u64,
    /// HELLO interval of the APs and the edge, seconds.
    #[arg(long, default_value_t = 10.0)]
    hello_interval: f64,
    /// Missed hellos before an AP gives its tunnel up.
    #[arg(long, default_value_t = 3)]
    hello_retries: u32,
    /// The edge's --fast-path (off, xdp-native, xdp-generic).
    #[arg(long, default_value = "xdp-native")]
    fast_path: String,
    /// Phases, in order: setup, storm, hitless, stall, soak (setup: the tunnel
    /// setup rate against a fresh edge, --setup-rounds times; run it first
    /// or alone).
    #[arg(long, value_delimiter = ',', default_value = "storm,hitless,soak")]
    phases: Vec<String>,
    /// Frames a second the trunk sender sends to the clients.
    #[arg(long, default_value_t = 10_000)]
    pps: u32,
    /// Length of each hitless window, seconds.
    #[arg(long, default_value_t = 15.0)]
    window: f64,
    /// Soak length, minutes.
    #[arg(long, default_value_t = 30.0)]
    soak_minutes: f64,
    /// APs of the second simulator that joins and leaves during the soak.
    #[arg(long, default_value_t = 1000)]
    churn_aps: u32,
    /// Seconds the churning APs stay, and stay away.
    #[arg(long, default_value_t = 120.0)]
    churn_period: f64,
    /// Longest wait for every tunnel, seconds.
    #[arg(long, default_value_t = 900.0)]
    bring_up: f64,
    /// Directory holding tunterm, tunterm-apsim and tunterm-lab (default:
    /// beside this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Rounds of the setup phase (medians over them).
    #[arg(long, default_value_t = 3)]
    setup_rounds: u32,
    /// Run tunterm and the simulators under SCHED_FIFO (chrt -f 10), so
    /// other work on the machine does not distort the figures.
    #[arg(long)]
    realtime: bool,
    /// The edge's --max-half-open (default: tunterm's).
    #[arg(long)]
    max_half_open: Option<usize>,
    /// A directory with an earlier build's tunterm: the edge starts with it
    /// and the hitless phase's restart starts this build's, so the window
    /// measures a hitless upgrade (the two builds' map layout ids must
    /// agree for the fast path to be adopted; `fast_path_start` says).
    #[arg(long)]
    upgrade_from: Option<PathBuf>,
    /// Where to write the figures as JSON (default target/stormbench.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("--{name} {v}: not a duration"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = Options {
        aps: cli.aps,
        clients_per_ap: cli.clients,
        announce_interval: Duration::from_millis(cli.announce_interval_ms),
        hello_interval: cli.hello_interval,
        hello_retries: cli.hello_retries,
        fast_path: cli.fast_path,
        phases: cli.phases,
        pps: cli.pps,
        window: secs("window", cli.window)?,
        soak: secs("soak-minutes", cli.soak_minutes * 60.0)?,
        churn_aps: cli.churn_aps,
        churn_period: secs("churn-period", cli.churn_period)?,
        bring_up: secs("bring-up", cli.bring_up)?,
        setup_rounds: cli.setup_rounds,
        realtime: cli.realtime,
        max_half_open: cli.max_half_open,
        upgrade_from: match cli.upgrade_from {
            Some(d) => {
                let old = d.join("tunterm");
                anyhow::ensure!(
                    old.is_file(),
                    "--upgrade-from {}: no tunterm there",
                    d.display()
                );
                Some(old)
            }
            None => None,
        },
        bin_dir: match cli.bin_dir {
            Some(d) => d,
            None => tunterm_benches::default_bin_dir()?,
        },
    };
    let report = stormbench::run(&opts)?;
    print!("{}", report.table());
    let json = cli
        .json
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/stormbench.json"));
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("\nJSON: {}", json.display());
    anyhow::ensure!(report.errors.is_empty(), "a phase failed (see errors)");
    Ok(())
}
