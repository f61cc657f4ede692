//! `tunterm-agent`: registers this edge with the cloud once, then keeps one
//! outbound TLS websocket to it (see the library's docs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tracing::{info, warn};
use tunterm::api::client::Client;
use tunterm_agent::backoff::Backoff;
use tunterm_agent::session::{Agent, Ended};
use tunterm_agent::spool::Spool;
use tunterm_agent::state::State;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The cloud, `https://HOST:PORT` (needed to register).
    #[arg(long)]
    cloud: Option<String>,
    /// Claim code (the mxedge's `magic`), exchanged once for a token.
    #[arg(long)]
    claim_code: Option<String>,
    /// The cloud's CA certificate (PEM); else the web PKI roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Directory for the state file (0600), last-good configuration and
    /// event spool.
    #[arg(long, default_value = "/var/lib/tunterm-agent")]
    state_dir: PathBuf,
    /// The daemon's control socket.
    #[arg(long, default_value = "/run/tunterm/tunterm.sock")]
    control_socket: PathBuf,
    /// The daemon's configuration file (its `ports` are kept).
    #[arg(long)]
    daemon_config: Option<PathBuf>,
    /// Have the daemon write applied configurations to its --config file.
    #[arg(long)]
    persist: bool,
    /// Seconds between stats reports.
    #[arg(long, default_value_t = 60)]
    stats_interval: u64,
    /// Events kept while the cloud is away (the oldest go first).
    #[arg(long, default_value_t = 10_000)]
    spool_events: usize,
    /// tunterm's systemd unit: the cloud's service stop / start are done
    /// with systemctl (without it they are refused; restart needs none).
    #[arg(long)]
    daemon_unit: Option<String>,
    /// `config_auto_revert`: seconds the cloud has to be reachable again
    /// after a configuration is applied before the previous one is put back.
    #[arg(long, default_value_t = 120)]
    auto_revert_after: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("--state-dir {}", args.state_dir.display()))?;
    let tls = tunterm_agent::tls::client_config(args.ca.as_deref())?;
    let state_file = args.state_dir.join("state.json");
    let state = match State::load(&state_file)? {
        Some(s) => s,
        None => {
            let (Some(cloud), Some(code)) = (&args.cloud, &args.claim_code) else {
                anyhow::bail!("not registered yet: give --cloud https://HOST:PORT and --claim-code")
            };
            // Through the proxy the daemon's configuration names, if any.
            let proxy = args
                .daemon_config
                .as_deref()
                .and_then(tunterm_agent::cloudcfg::read)
                .as_ref()
                .and_then(tunterm_agent::net::proxy_of)
                .map(|u| tunterm_agent::net::Proxy::parse(&u))
                .transpose()?;
            let s =
                tunterm_agent::register::register(cloud, code, tls.clone(), proxy.as_ref()).await?;
            s.save(&state_file)?;
            info!(mxedge_id = %s.mxedge_id, org_id = %s.org_id, "registered");
            s
        }
    };
    let spool = Spool::open(&args.state_dir.join("events.jsonl"), args.spool_events)?;
    let mut agent = Agent::new(
        state,
        tls,
        Client::new(&args.control_socket),
        args.state_dir.join("last-good.json"),
        spool,
    );
    agent.daemon_config = args.daemon_config;
    agent.persist = args.persist;
    agent.stats_every = Duration::from_secs(args.stats_interval.max(1));
    agent.daemon_unit = args.daemon_unit;
    agent.auto_revert_after = Duration::from_secs(args.auto_revert_after.max(1));
    let agent = Arc::new(agent);
    tokio::spawn(tunterm_agent::session::watch_daemon(agent.clone()));
    let mut backoff = Backoff::default();
    loop {
        let began = Instant::now();
        match agent.session().await {
            Ok(Ended::Unregistered) => {
                warn!(
                    "this edge was unregistered in the cloud: syncing stops; the data path stays as it is"
                );
                State::remove(&state_file)?;
                return Ok(());
            }
            Ok(Ended::Closed) => info!("the cloud closed the session"),
            Err(e) => warn!(error = %format!("{e:#}"), "cloud session failed"),
        }
        if began.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        let wait = backoff.next_delay();
        info!(?wait, "reconnecting");
        // A configuration the cloud has not confirmed may fall due meanwhile.
        let until = Instant::now() + wait;
        if let Some(d) = agent.revert_deadline() {
            tokio::time::sleep_until(d.min(until).into()).await;
            agent.revert_if_due().await;
        }
        tokio::time::sleep_until(until.into()).await;
    }
}
