//! `labbench`: the lab throughput benchmark of issue 4. Builds a veth lab in
//! fresh namespaces and measures packets per second of client frames
//! through raw XDP_REDIRECT, kernel VXLAN + bridge, tunterm's XDP fast path
//! and tunterm's userspace path, both ways. Needs root, trafgen
//! (netsniff-ng), and `tunterm` + `tunterm-apsim` built beside it
//! (`cargo build --release -p tunterm`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tunterm_benches::labbench::{self, Case, Options};

#[derive(Parser)]
#[command(about = "Lab throughput benchmark: raw XDP, kernel VXLAN, tunterm fast and slow path")]
struct Cli {
    /// Client frame lengths in bytes (untagged Ethernet, no FCS).
    #[arg(long, value_delimiter = ',', default_value = "64,1400")]
    frames: Vec<usize>,
    /// L2TPv3 sessions, one per simulated AP.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Client MACs, spread evenly over the sessions.
    #[arg(long, default_value_t = 10_000)]
    macs: usize,
    /// Measurement window per row, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Traffic before each window opens, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Cases to run, by number (1 raw XDP, 2 kernel VXLAN, 3 tunterm XDP,
    /// 4 tunterm userspace, 5 tunterm userspace with workers: see
    /// --workers).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    cases: Vec<u8>,
    /// Run every case this many times, in turn, and report each rate as
    /// the median of its rounds (for a noisy machine).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// tunterm's sessions over IP (L2TPv3/IP, protocol 115) rather than
    /// UDP: `udp` or `ip` (case 2 is VXLAN over UDP either way).
    #[arg(long, default_value = "udp", value_parser = ["udp", "ip"])]
    transport: String,
    /// Cookie length tunterm assigns to the sessions (0, 4 or 8; default:
    /// tunterm's own, 8). 4 compares with builds older than that default.
    #[arg(long)]
    cookie_len: Option<u8>,
    /// Measure cases 3 and 4 with `tunterm capture -i trunk -f FILTER`
    /// running (no count, into /dev/null): compare with a run without it.
    /// A filter that matches nothing (`ether proto 0x88b6`) costs the
    /// capture's steering and filtering; `len > 0` matches everything.
    #[arg(long, conflicts_with = "capture_compare")]
    capture_filter: Option<String>,
    /// Measure cases 3 and 4 three times on the same edge and sessions:
    /// without a capture, with a capture on the trunk that matches nothing
    /// (`ether proto 0x88b6`) and with one that matches everything (`len >
    /// 0`); report the capture-on rates as ratios of the capture-off ones.
    #[arg(long)]
    capture_compare: bool,
    /// Run trafgen, tunterm and the capture reader under SCHED_FIFO (chrt
    /// -f 10), so other work on a shared machine cannot take their CPUs
    /// while they sleep between wake-ups (the kernel's RT throttling still
    /// leaves others 5%). Without it, on a busy machine, tunterm's rate
    /// measures the machine's load as much as tunterm.
    #[arg(long)]
    realtime: bool,
    /// tunterm's userspace path with these `--workers` counts: 1 is case
    /// 4, a count N ≥ 2 case 5 (e.g. `--workers 1,2`: both). Given, it
    /// replaces case 4 in --cases by what it lists.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<usize>,
    /// Directory holding tunterm and tunterm-apsim (default: beside this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write the table as JSON.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/labbench.json"))]
    json: PathBuf,
    /// Directory for logs, configurations and generator files (default: a
    /// fresh one under the temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("--{name} {v}: not a duration"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let work_dir = match cli.work_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("labbench-{}", std::process::id())),
    };
    let opts = Options {
        frames: cli.frames,
        sessions: cli.sessions,
        macs: cli.macs,
        window: secs("seconds", cli.seconds)?,
        warmup: secs("warmup", cli.warmup)?,
        bin_dir: match cli.bin_dir {
            Some(d) => d,
            None => tunterm_benches::default_bin_dir()?,
        },
        work_dir: work_dir.clone(),
        cases: cli
            .cases
            .iter()
            .map(|&n| Case::from_number(n).with_context(|| format!("--cases: no case {n}")))
            .collect::<anyhow::Result<_>>()?,
        rounds: cli.rounds,
        cookie_len: cli.cookie_len,
        capture_filter: cli.capture_filter,
        capture_compare: cli.capture_compare,
        realtime: cli.realtime,
        workers: cli.workers.iter().copied().find(|&n| n >= 2).unwrap_or(2),
        l2tp_ip: cli.transport == "ip",
    };
    let mut opts = opts;
    if !cli.workers.is_empty() {
        opts.cases
            .retain(|c| !matches!(c, Case::TuntermUserspace | Case::TuntermWorkers));
        if cli.workers.contains(&1) {
            opts.cases.push(Case::TuntermUserspace);
        }
        if cli.workers.iter().any(|&n| n >= 2) {
            opts.cases.push(Case::TuntermWorkers);
        }
    }
    let report = labbench::run(opts)?;
    print!("{}", report.table());
    let mut json = cli.json;
    if let (Some(dir), Some(name)) = (json.parent(), json.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::create_dir_all(dir)?;
        // target/labbench.json rather than benches/../target/labbench.json
        json = dir.canonicalize()?.join(name);
    }
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("\nJSON: {}\nlogs: {}", json.display(), work_dir.display());
    Ok(())
}
