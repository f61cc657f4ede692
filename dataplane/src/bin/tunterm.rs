//! `tunterm`: the tunnel terminator daemon and its small CLI.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tunterm::driver::{self, DaemonOptions};
use tunterm::io::xdp::Mode as FastPathMode;
use tunterm::proto::l2tp::AdmissionConfig;

fn parse_fast_path(s: &str) -> Result<FastPathMode, String> {
    s.parse()
}

#[derive(Parser)]
#[command(version, about = "Mist Edge-style L2TPv3 tunnel terminator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Configuration file (mxedge / mxcluster / mxtunnels JSON). Without
        /// it, the embedded lab configuration is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Control socket for `tunterm stats`.
        #[arg(long, default_value = "/run/tunterm/tunterm.sock")]
        control_socket: PathBuf,
        /// Upstream trunk interface (overrides tunterm_port_config).
        #[arg(long)]
        upstream: Option<String>,
        /// UDP port for L2TP.
        #[arg(long, default_value_t = 1701)]
        port: u16,
        /// Where tunnel decapsulation runs: xdp-native (XDP in the driver),
        /// xdp-generic (XDP in the kernel's generic hook, any interface) or
        /// off (userspace only).
        #[arg(long, default_value = "off", value_parser = parse_fast_path)]
        fast_path: FastPathMode,
        /// bpffs directory where the fast path's maps, programs and links
        /// are pinned, so it goes on forwarding while tunterm restarts
        /// (`none`: not pinned). The default is skipped with a warning when
        /// it is not on a bpffs.
        #[arg(long, default_value = driver::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// File where the established tunnels are kept for a restart
        /// (`none`: a restart rebuilds every tunnel). Default: the control
        /// socket's path with the extension `.state`.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Most L2TP control connections half-open (SCCRQ received, not yet
        /// established) at once; further SCCRQs are dropped and counted.
        #[arg(long, default_value_t = AdmissionConfig::default().max_half_open)]
        max_half_open: usize,
        /// SCCRQs per second each source address may send, sustained.
        #[arg(long, default_value_t = AdmissionConfig::default().sccrq_per_second)]
        sccrq_rate: u32,
        /// SCCRQs a source address may send at once (0: no per-source limit).
        #[arg(long, default_value_t = AdmissionConfig::default().sccrq_burst)]
        sccrq_burst: u32,
        /// Source addresses whose SCCRQ rate is tracked (least recently
        /// seen evicted beyond it).
        #[arg(long, default_value_t = AdmissionConfig::default().rate_table_size)]
        sccrq_sources: usize,
    },
    /// Print a running daemon's stats (JSON).
    Stats {
        /// Control socket of the daemon.
        #[arg(long, default_value = "/run/tunterm/tunterm.sock")]
        control_socket: PathBuf,
    },
    /// Validate a configuration file and print what tunterm would run.
    CheckConfig {
        /// The file.
        config: PathBuf,
    },
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<tunterm_control::EdgeConfig> {
    match config {
        Some(path) => Ok(tunterm_control::load_file(path)?),
        None => {
            tracing::info!("no --config: using the embedded lab configuration");
            Ok(tunterm_control::load_str(tunterm_control::LAB_DEFAULT)
                .context("embedded lab configuration")?)
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Run {
            config,
            control_socket,
            upstream,
            port,
            fast_path,
            pin_dir,
            state_file,
            max_half_open,
            sccrq_rate,
            sccrq_burst,
            sccrq_sources,
        } => {
            let cfg = load(config.as_ref())?;
            let config_path = config.clone();
            let none = |p: &PathBuf| p.as_os_str() == "none";
            let state_file = match state_file {
                Some(p) if none(&p) => None,
                Some(p) => Some(p),
                None => Some(control_socket.with_extension("state")),
            };
            let opts = DaemonOptions {
                pin_dir_is_default: pin_dir.as_os_str() == driver::DEFAULT_PIN_DIR,
                pin_dir: (!none(&pin_dir)).then_some(pin_dir),
                state_file,
                control_socket,
                upstream,
                port,
                fast_path,
                admission: AdmissionConfig {
                    max_half_open,
                    sccrq_per_second: sccrq_rate,
                    sccrq_burst,
                    rate_table_size: sccrq_sources,
                },
                config: config_path,
            };
            rt.block_on(driver::run(cfg, opts, shutdown_signal()))
        }
        Cmd::Stats { control_socket } => {
            let out = rt.block_on(driver::query_stats(&control_socket))?;
            println!("{}", out.trim_end());
            Ok(())
        }
        Cmd::CheckConfig { config } => {
            let cfg = load(Some(&config))?;
            println!("{cfg:#?}");
            Ok(())
        }
    }
}

/// SIGTERM or SIGINT: stop (close the tunnels). SIGQUIT: exit for a
/// restart (keep them).
async fn shutdown_signal() -> driver::Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
    tokio::select! {
        _ = term.recv() => driver::Exit::Stop,
        _ = int.recv() => driver::Exit::Stop,
        _ = quit.recv() => driver::Exit::Restart,
    }
}
