//! `stormbench`: reconnect storms, hitless restart and a soak at scale
//! (issue 18). One lab (namespaces `tt….stormbench-{aps,edge,up}`): tunterm
//! with a state file (and the fast path when asked), `tunterm-apsim --count
//! N` with synthetic clients, and phases in turn:
//!
//! - **bring-up**: every AP connects to a fresh edge.
//! - **setup** (issue 17): the tunnel setup rate, `--setup-rounds` times:
//!   the APs killed (no StopCCN), the edge killed and started fresh (no
//!   state file), then `tunterm-apsim --count N` started; the time from the
//!   first SCCRQ an AP sent to the N-th tunnel the edge logged established
//!   (and to the N-th tunnel and session up at the APs), tunnels/s, the
//!   edge's and the simulator's CPU. With `--realtime` tunterm and the
//!   simulator run under `chrt -f 10`, so other work on the machine does
//!   not distort the figure.
//! - **storm**: `kill -9` the edge, delete its state file, start it again.
//!   Every AP finds its tunnel dead (hello_interval × hello_retries after
//!   the edge's last word) and reconnects, with the edge's default SCCRQ
//!   admission (half-open cap; the per-source limit is off, as every
//!   simulated AP shares one address). Figures: seconds from the restart
//!   until every AP is back, seconds from the first AP seen down until all
//!   are back, and APs that lost their tunnel a second time (a re-built
//!   tunnel whose hellos went unanswered during the storm).
//! - **hitless**: a sender on the trunk sends unicast to the APs' synthetic
//!   clients for a window; in the middle the edge is killed (`kill -9`,
//!   state file kept) and started again. Figures: tunnels rebuilt (apsim's
//!   `tunnels_up`), frames sent and received by the APs
//!   (`rx_client_frames`), against a window without a restart first.
//! - **stall**: the trunk sender sends to every learned client while the
//!   edge is stopped (SIGSTOP) for longer than the APs' dead-peer time, so
//!   every AP gives its tunnel up and the edge forgets the clients once it
//!   runs again (SIGCONT): the trunk traffic is then unknown unicast,
//!   flooded. Figures: seconds from SIGCONT until every AP is back, APs
//!   that lost their tunnel again afterwards, and what the edge shed
//!   (floods kept from the tunnels, control and data shed at the sockets).
//!   An edge that floods without a bound never gets back (a collapse seen
//!   at 10,000 APs: the flooding starved the tunnels' control).
//! - **soak**: minutes of that traffic plus the synthetic clients'
//!   announcements, while a second simulator's APs join and leave; RSS,
//!   counters (none may go backwards), FDB entries and sessions sampled;
//!   at the end every AP leaves and the counts must come back to baseline.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tunterm_core::wire::ether::MacAddr;
use tunterm_lab::apsim::igmp::data_frame;
use tunterm_lab::topology::{edge_config, query_apsim, query_apsim_summary};
use tunterm_lab::{self as lab, BpfFs, LogDir, Netns, Proc};

use crate::labbench::median;
use crate::mcastbench::{cpu_ticks, query, raise_fd_limit, ticks_per_s};

/// The VLAN of the synthetic clients and the trunk traffic.
pub const VLAN: u16 = 10;

/// The bench's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Simulated APs of the main simulator.
    pub aps: u32,
    /// Synthetic clients per AP.
    pub clients_per_ap: u32,
    /// Interval of each synthetic client's announcement.
    pub announce_interval: Duration,
    /// HELLO interval of the APs and the edge, seconds.
    pub hello_interval: f64,
    /// Missed hellos before an AP gives its tunnel up.
    pub hello_retries: u32,
    /// `--fast-path` of the edge (off, xdp-native, xdp-generic).
    pub fast_path: String,
    /// Phases to run, in order: storm, hitless, stall, soak.
    pub phases: Vec<String>,
    /// Frames a second the trunk sender sends (hitless, soak).
    pub pps: u32,
    /// Length of each hitless window.
    pub window: Duration,
    /// Soak length.
    pub soak: Duration,
    /// APs of the second simulator that joins and leaves during the soak.
    pub churn_aps: u32,
    /// How long the churning APs stay, and stay away.
    pub churn_period: Duration,
    /// Longest wait for every tunnel to come up (bring-up and storm).
    pub bring_up: Duration,
    /// Where tunterm, tunterm-apsim and tunterm-lab are.
    pub bin_dir: PathBuf,
    /// Rounds of the setup phase.
    pub setup_rounds: u32,
    /// Run tunterm and the simulators under `chrt -f` [`RT_PRIORITY`].
    pub realtime: bool,
    /// The edge's `--max-half-open` (None: its default).
    pub max_half_open: Option<usize>,
    /// An earlier build's `tunterm`: the edge starts with it and the
    /// hitless phase's restart starts `bin_dir`'s (a hitless upgrade).
    pub upgrade_from: Option<PathBuf>,
}

/// The SCHED_FIFO priority of `--realtime` (labbench's; the kernel's RT
/// throttling still leaves other tasks 5% of each CPU).
pub const RT_PRIORITY: &str = "10";

/// One round of the setup phase: N APs against a fresh edge. Times are
/// seconds from the first SCCRQ an AP sent (the simulator's clock, which
/// is the edge's: one machine).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupRound {
    /// Load average when the round started.
    pub loadavg: String,
    /// Every AP's session came up in the bench's wait.
    pub all_up: bool,
    /// To the edge's first tunnel established (its log).
    pub edge_first_tunnel_s: Option<f64>,
    /// To the edge's N-th tunnel established (its log): the setup time.
    pub edge_tunnels_s: Option<f64>,
    /// To the edge's N-th session up (its log).
    pub edge_sessions_s: Option<f64>,
    /// To the N-th tunnel up at the APs.
    pub ap_tunnels_s: Option<f64>,
    /// To the N-th session up at the APs.
    pub ap_sessions_s: Option<f64>,
    /// N / `edge_tunnels_s`: the setup rate.
    pub tunnels_per_s: Option<f64>,
    /// Tunnels up at the APs in the round (N: none lost and rebuilt).
    pub ap_tunnel_up_events: u64,
    /// The edge's SCCRQ counters at the end.
    pub sccrq: Value,
    /// The edge's packet counts at the end (a fresh edge: the round's):
    /// tunnel and trunk packets received and sent, tunnel packets shed.
    pub edge_io: Value,
    /// The edge's CPU from the simulator's start to every session up, %
    /// of one core.
    pub edge_cpu_pct: f64,
    /// The simulator's, likewise.
    pub apsim_cpu_pct: f64,
}

/// The setup phase's rounds and their medians.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Setup {
    /// Each round.
    pub rounds: Vec<SetupRound>,
    /// Median of the rounds' `tunnels_per_s`.
    pub median_tunnels_per_s: Option<f64>,
    /// Median of N / `ap_sessions_s` (every AP's session up).
    pub median_ap_sessions_per_s: Option<f64>,
}

/// The storm's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Storm {
    /// Seconds from the restarted edge's start until every AP was back.
    pub reestablished_s: Option<f64>,
    /// Seconds from the first AP seen down until every AP was back (the
    /// storm itself; before it, APs are still waiting out hello_interval
    /// × hello_retries).
    pub storm_s: Option<f64>,
    /// Fewest sessions up seen at once.
    pub min_sessions_up: u64,
    /// APs that rebuilt their tunnel exactly once.
    pub rebuilt_once: usize,
    /// APs that lost their tunnel more than once (a rebuilt tunnel lost
    /// again during the storm: hellos not served).
    pub rebuilt_more: usize,
    /// APs that never lost their tunnel.
    pub never_lost: usize,
    /// APs' failovers (tunnel losses) during the phase.
    pub failovers: u64,
    /// The new edge's SCCRQs: received, accepted, dropped at the half-open
    /// cap, retransmits.
    pub sccrq: Value,
    /// The new edge's CPU over the storm, % of one core.
    pub edge_cpu_pct: f64,
    /// Sessions up at the edge a while after the storm (apsim's count is
    /// the one above).
    pub edge_sessions_after: usize,
}

/// One traffic window's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    /// Whether the edge was killed and restarted in it.
    pub restart: bool,
    /// Clients the sender sent to (those the edge had learned).
    pub clients: usize,
    /// Frames the trunk sender sent.
    pub sent: u64,
    /// Frames the APs received for their synthetic clients.
    pub received: u64,
    /// sent − received.
    pub lost: i64,
    /// Tunnels the APs rebuilt in the window (sum of `tunnels_up` deltas).
    pub tunnels_rebuilt: u64,
    /// The restarted edge's `restart` stats (restored tunnels, sessions,
    /// FDB entries, refused).
    pub restart_stats: Value,
    /// The restarted edge's fast path start (`adopted` or `fresh`).
    pub fast_path_start: Value,
    /// Seconds the edge was down (signal to `tunterm running`).
    pub down_s: Option<f64>,
    /// The daemon the restart replaced, when it was another build's
    /// (`--upgrade-from`).
    pub upgraded_from: Option<String>,
}

/// The stall's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stall {
    /// Seconds the edge was stopped.
    pub stopped_s: f64,
    /// Fewest sessions up at the APs after SIGCONT.
    pub min_sessions_up: u64,
    /// Seconds from SIGCONT until every AP was up again with a rebuilt
    /// tunnel (None: not within `bring_up`).
    pub recovered_s: Option<f64>,
    /// APs whose tunnel went down more than once over the phase.
    pub lost_again: usize,
    /// Frames the trunk sender sent over the phase.
    pub sent: u64,
    /// The edge's counters over the phase: floods kept from the tunnels
    /// (`clients.flood_dropped`), control and data shed at the tunnel
    /// sockets, trunk frames shed, tunnel packets written, and the SCCRQ
    /// admission.
    pub edge: Value,
    /// The edge's CPU from SIGCONT until recovered, % of one core.
    pub edge_cpu_pct: f64,
}

/// One soak sample.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds into the soak.
    pub t_s: f64,
    /// The edge's RSS, KiB.
    pub rss_kib: u64,
    /// Sessions up at the edge.
    pub sessions: usize,
    /// Tunnels at the edge.
    pub tunnels: usize,
    /// FDB entries.
    pub fdb_entries: u64,
    /// Whether the churning APs were present.
    pub churn_up: bool,
    /// `tunterm stats` wall time, ms.
    pub stats_ms: f64,
}

/// The soak's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Soak {
    /// Minutes it ran.
    pub minutes: f64,
    /// Samples, about every 30 s.
    pub samples: Vec<Sample>,
    /// Counters that went backwards between two samples: path, before, after.
    pub backwards: Vec<String>,
    /// Frames sent and received over the soak.
    pub sent: u64,
    /// Frames received by the APs' synthetic clients.
    pub received: u64,
    /// Times the churning APs joined.
    pub churn_joins: u32,
    /// Edge counts with only the main APs, before the soak: (tunnels,
    /// sessions, FDB entries, RSS KiB).
    pub baseline: (usize, usize, u64, u64),
    /// The same after the soak, churning APs gone.
    pub after_churn: (usize, usize, u64, u64),
    /// The same once every AP left (tunnels, sessions, FDB, RSS).
    pub all_left: (usize, usize, u64, u64),
    /// The edge's CPU over the soak, % of one core.
    pub edge_cpu_pct: f64,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The settings.
    pub settings: Value,
    /// Load average at the start and at the end.
    pub loadavg: (String, String),
    /// Seconds the first bring-up took (0 when the setup phase came first
    /// and did it).
    pub bring_up_s: f64,
    /// The setup phase, when run.
    pub setup: Option<Setup>,
    /// Edge RSS after the bring-up, KiB.
    pub rss_after_bring_up_kib: u64,
    /// The storm, when run.
    pub storm: Option<Storm>,
    /// The hitless windows, when run (the first without a restart).
    pub hitless: Vec<Window>,
    /// The stall, when run.
    pub stall: Option<Stall>,
    /// The soak, when run.
    pub soak: Option<Soak>,
    /// Errors of phases that failed (the others still ran).
    pub errors: Vec<String>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A process's resident set, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Lab {
    tunterm: Proc,
    apsim: Option<Proc>,
    churn: Option<Proc>,
    _xdp_pass: Vec<Proc>,
    edge: Netns,
    aps: Netns,
    up: Netns,
    tunterm_args: Vec<String>,
    /// Where in `tunterm_args` the daemon's path is.
    daemon_arg: usize,
    /// This build's daemon, while the edge runs an earlier one
    /// (`--upgrade-from`): the hitless phase's restart starts it.
    upgrade_to: Option<String>,
    edge_sock: PathBuf,
    ap_sock: PathBuf,
    state_file: PathBuf,
    restarts: u32,
    _bpffs: Option<BpfFs>,
    dir: LogDir,
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Lab {
    /// The lab, and the main simulator unless `with_apsim` is false (the
    /// setup phase starts it).
    fn start(opts: &Options, with_apsim: bool) -> anyhow::Result<Lab> {
        let (prefix, dir) = lab::begin("stormbench")?;
        let edge = Netns::new(&format!("{prefix}edge"))?;
        let aps = Netns::new(&format!("{prefix}aps"))?;
        let up = Netns::new(&format!("{prefix}up"))?;
        lab::veth(&aps, "e0", &edge, "ap0")?;
        lab::addr(&edge, "ap0", "10.99.0.1/24")?;
        lab::addr(&edge, "ap0", "fd00:99::1/64")?;
        lab::addr(&aps, "e0", "10.99.0.2/24")?;
        lab::addr(&aps, "e0", "10.99.0.3/24")?;
        lab::veth(&edge, "trunk0", &up, "t0")?;
        let mut cfg = edge_config(opts.hello_interval, opts.hello_retries);
        cfg["mxtunnels"][0]["vlan_ids"] = json!([VLAN]);
        // Containment on: the clients' announcements are not flooded to
        // every tunnel.
        cfg["mxedge"]["tunterm_client_config"] = json!({"arp_nd_proxy": true});
        let config = dir.join("edge.json");
        std::fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
        let edge_sock = dir.join("edge.sock");
        let state_file = dir.join("edge.state");
        let mut tunterm_args = rt_prefix(opts);
        let daemon = opts.bin_dir.join("tunterm");
        // With --upgrade-from, the earlier build first (see upgrade_to).
        let (first, upgrade_to) = match &opts.upgrade_from {
            Some(old) => (old.clone(), Some(s(&daemon))),
            None => (daemon, None),
        };
        let daemon_arg = tunterm_args.len();
        tunterm_args.extend([
            s(&first),
            "run".into(),
            "--config".into(),
            s(&config),
            "--control-socket".into(),
            s(&edge_sock),
            "--state-file".into(),
            s(&state_file),
            "--fast-path".into(),
            opts.fast_path.clone(),
            // Every simulated AP has the same address: the per-source
            // SCCRQ limit (meant for one address per AP or per NAT) off;
            // the half-open cap stays at its default unless asked.
            "--sccrq-burst".into(),
            "0".into(),
        ]);
        if let Some(n) = opts.max_half_open {
            tunterm_args.extend(["--max-half-open".into(), n.to_string()]);
        }
        let bpffs = if opts.fast_path != "off" {
            let fs = BpfFs::mount(&dir.join("bpf"))?;
            // Sized as the option's help says: the clients and a sixteenth more.
            let macs = u64::from(opts.aps + opts.churn_aps) * u64::from(opts.clients_per_ap);
            let slots = tunterm_ebpf::Capacity::for_macs(macs as usize).fdb;
            tunterm_args.extend([
                "--pin-dir".into(),
                s(&fs.path().join("tunterm")),
                "--fast-path-fdb-entries".into(),
                slots.to_string(),
            ]);
            Some(fs)
        } else {
            None
        };
        let args: Vec<&str> = tunterm_args.iter().map(String::as_str).collect();
        let mut tunterm = edge.spawn(&args, &dir.join("tunterm.log"))?;
        tunterm
            .wait_for_log("tunterm running", Duration::from_secs(30))
            .context("tunterm did not start")?;
        let mut xdp_pass = Vec::new();
        if opts.fast_path == "xdp-native" {
            // Native XDP redirects into a veth only when its peer runs XDP.
            let lab_bin = s(&opts.bin_dir.join("tunterm-lab"));
            for (ns, ifname) in [(&aps, "e0"), (&up, "t0")] {
                let mut p = ns.spawn(
                    &[&lab_bin, "xdp-pass", "--iface", ifname],
                    &dir.join(format!("xdp-pass-{ifname}.log")),
                )?;
                p.wait_for_log("xdp_pass on", Duration::from_secs(30))
                    .with_context(|| format!("xdp-pass on {ifname}"))?;
                xdp_pass.push(p);
            }
        }
        let ap_sock = dir.join("apsim.sock");
        let mut lab = Lab {
            tunterm,
            apsim: None,
            churn: None,
            _xdp_pass: xdp_pass,
            edge,
            aps,
            up,
            tunterm_args,
            daemon_arg,
            upgrade_to,
            edge_sock,
            ap_sock,
            state_file,
            restarts: 0,
            _bpffs: bpffs,
            dir,
        };
        raise_fd_limit();
        if with_apsim {
            lab.apsim = Some(lab.spawn_apsim(opts, "apsim", opts.aps, 0, "10.99.0.2")?);
        }
        Ok(lab)
    }

    /// A simulator of `count` APs numbered from `first`.
    fn spawn_apsim(
        &self,
        opts: &Options,
        name: &str,
        count: u32,
        first: u32,
        ip: &str,
    ) -> anyhow::Result<Proc> {
        let sock = s(&self.dir.join(format!("{name}.sock")));
        let _ = std::fs::remove_file(&sock);
        let mut args = rt_prefix(opts);
        args.extend([
            s(&opts.bin_dir.join("tunterm-apsim")),
            "--edge".into(),
            "10.99.0.1".into(),
            "--count".into(),
            count.to_string(),
            "--first-index".into(),
            first.to_string(),
            "--local-ip".into(),
            ip.into(),
            "--hello-interval".into(),
            opts.hello_interval.to_string(),
            "--hello-retries".into(),
            opts.hello_retries.to_string(),
            "--synthetic-vlan".into(),
            VLAN.to_string(),
            "--synthetic-clients".into(),
            opts.clients_per_ap.to_string(),
            "--synthetic-interval-ms".into(),
            opts.announce_interval.as_millis().max(1).to_string(),
            "--control-socket".into(),
            sock,
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.aps.spawn(&args, &self.dir.join(format!("{name}.log")))
    }

    /// kill -9 the edge, optionally delete its state file, start it again;
    /// the time it was down.
    fn kill_and_restart(&mut self, keep_state: bool) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.tunterm.kill9()?;
        if !keep_state {
            match std::fs::remove_file(&self.state_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e)
                        .with_context(|| format!("removing {}", self.state_file.display()));
                }
                _ => {}
            }
        }
        self.restarts += 1;
        let log = self.dir.join(format!("tunterm-{}.log", self.restarts));
        let args: Vec<&str> = self.tunterm_args.iter().map(String::as_str).collect();
        let mut p = self.edge.spawn(&args, &log)?;
        p.wait_for_log("tunterm running", Duration::from_secs(60))
            .context("tunterm did not start again")?;
        self.tunterm = p;
        Ok(t0.elapsed())
    }

    fn apsim_stats(&self) -> anyhow::Result<Value> {
        query_apsim(&self.ap_sock)
    }
}

/// `chrt -f RT_PRIORITY` with `--realtime`, else nothing: the start of a
/// command line.
fn rt_prefix(opts: &Options) -> Vec<String> {
    if opts.realtime {
        vec!["chrt".into(), "-f".into(), RT_PRIORITY.into()]
    } else {
        Vec::new()
    }
}

/// Per-AP `field` of an apsim stats document.
fn per_ap(st: &Value, field: &str) -> Vec<(String, u64)> {
    st["per_ap"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v[field].as_u64().unwrap_or(0)))
        .collect()
}

fn sum_delta(before: &Value, after: &Value, field: &str) -> u64 {
    per_ap(after, field)
        .into_iter()
        .map(|(ap, n)| n.saturating_sub(before["per_ap"][&ap][field].as_u64().unwrap_or(0)))
        .sum()
}

fn wait_all_up(lab: &Lab, want: u64, timeout: Duration) -> bool {
    // The summary: every AP's status, asked for this often, would keep
    // the simulator busy serving it.
    lab::wait_until(timeout, || {
        query_apsim_summary(&lab.ap_sock).is_ok_and(|st| st["sessions_up"].as_u64() == Some(want))
    })
}

/// A time of tunterm's log (`2026-12-03T07:02:32.123456Z`, UTC, maybe in
/// colour) at the start of `line`, in seconds since the Unix epoch.
fn log_time(line: &str) -> Option<f64> {
    // Drop the colour escapes (ESC [ ... m).
    let mut plain = String::with_capacity(40);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else if c == ' ' {
            break;
        } else {
            plain.push(c);
        }
    }
    let ts = plain.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// The times of the edge's log lines whose message is `message`, in order.
fn log_times(log: &Path, message: &str) -> Vec<f64> {
    let needle = format!(" {message} ");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(log_time)
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// The setup rate: `--setup-rounds` times, N APs against a fresh edge.
fn setup(lab: &mut Lab, opts: &Options) -> anyhow::Result<Setup> {
    let n = u64::from(opts.aps);
    let mut out = Setup::default();
    for round in 0..opts.setup_rounds {
        // No AP (kill -9: no StopCCN to handle), a fresh edge.
        if let Some(mut p) = lab.apsim.take() {
            p.kill9()?;
        }
        lab.kill_and_restart(false)?;
        std::thread::sleep(Duration::from_secs(1));
        let mut r = SetupRound {
            loadavg: loadavg(),
            ..SetupRound::default()
        };
        let edge_pid = lab.tunterm.pid();
        let edge_cpu0 = cpu_ticks(edge_pid)?;
        let t0 = Instant::now();
        let apsim = lab.spawn_apsim(opts, "apsim", opts.aps, 0, "10.99.0.2")?;
        let ap_pid = apsim.pid();
        lab.apsim = Some(apsim);
        r.all_up = lab::wait_until(opts.bring_up, || {
            query_apsim_summary(&lab.ap_sock).is_ok_and(|st| st["sessions_up"].as_u64() == Some(n))
        });
        let secs = t0.elapsed().as_secs_f64();
        r.edge_cpu_pct = (cpu_ticks(edge_pid)? - edge_cpu0) as f64 / ticks_per_s() / secs * 100.0;
        r.apsim_cpu_pct = cpu_ticks(ap_pid)? as f64 / ticks_per_s() / secs * 100.0;
        let st = query_apsim_summary(&lab.ap_sock)?;
        let times = &st["setup"];
        let t_first = times["first_connect_unix"].as_f64().unwrap_or(0.0);
        let since = |t: f64| (t_first > 0.0 && t >= t_first).then_some(t - t_first);
        if r.all_up {
            r.ap_tunnels_s = since(times["last_tunnel_up_unix"].as_f64().unwrap_or(0.0));
            r.ap_sessions_s = since(times["last_session_up_unix"].as_f64().unwrap_or(0.0));
        }
        r.ap_tunnel_up_events = times["tunnel_up_events"].as_u64().unwrap_or(0);
        let log = lab.tunterm.log().to_path_buf();
        let nth = |v: &[f64]| v.get(n as usize - 1).copied().and_then(since);
        // An AP's session is up before the edge has the ICCN: the edge's
        // last lines may still be coming.
        lab::wait_until(Duration::from_secs(10), || {
            log_times(&log, "session up").len() as u64 >= n
        });
        let tunnels = log_times(&log, "tunnel up");
        r.edge_first_tunnel_s = tunnels.first().copied().and_then(since);
        r.edge_tunnels_s = nth(&tunnels);
        r.edge_sessions_s = nth(&log_times(&log, "session up"));
        r.tunnels_per_s = r.edge_tunnels_s.map(|s| n as f64 / s);
        let edge = query(&lab.edge_sock)?;
        let io = &edge["io"];
        r.edge_io = json!({
            "tunnel_rx": io["tunnel_rx"], "tunnel_tx": io["tunnel_tx"],
            "trunk_rx": io["trunk_rx"], "trunk_tx": io["trunk_tx"],
            "tunnel_rx_shed": io["tunnel_rx_shed"],
        });
        let l2 = &edge["l2tp"];
        r.sccrq = json!({
            "received": l2["sccrq_received"], "accepted": l2["sccrq_accepted"],
            "half_open_full": l2["sccrq_half_open_full"], "retransmits": l2["sccrq_retransmits"],
            "rate_limited": l2["sccrq_rate_limited"], "half_open_peak": l2["half_open_peak"],
        });
        eprintln!(
            "stormbench setup round {}: {}",
            round + 1,
            serde_json::to_string(&r)?
        );
        anyhow::ensure!(r.all_up, "round {}: not every AP came up", round + 1);
        out.rounds.push(r);
    }
    out.median_tunnels_per_s = median(out.rounds.iter().filter_map(|r| r.tunnels_per_s).collect());
    out.median_ap_sessions_per_s = median(
        out.rounds
            .iter()
            .filter_map(|r| r.ap_sessions_s.map(|s| n as f64 / s))
            .collect(),
    );
    Ok(out)
}

fn storm(lab: &mut Lab, opts: &Options) -> anyhow::Result<Storm> {
    let n = u64::from(opts.aps);
    let before = lab.apsim_stats()?;
    lab.kill_and_restart(false)?;
    let t_restart = Instant::now();
    let pid = lab.tunterm.pid();
    let cpu0 = cpu_ticks(pid)?;
    let mut out = Storm {
        min_sessions_up: n,
        ..Storm::default()
    };
    let mut first_down: Option<Instant> = None;
    let deadline = t_restart + opts.bring_up;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(st) = lab.apsim_stats() else { continue };
        let up = st["sessions_up"].as_u64().unwrap_or(0);
        out.min_sessions_up = out.min_sessions_up.min(up);
        if up < n && first_down.is_none() {
            first_down = Some(Instant::now());
        }
        // Back: every AP up, each with a rebuilt tunnel.
        let rebuilt = per_ap(&st, "tunnels_up")
            .iter()
            .filter(|(ap, t)| *t > before["per_ap"][ap]["tunnels_up"].as_u64().unwrap_or(0))
            .count() as u64;
        if up == n && rebuilt == n {
            let now = Instant::now();
            out.reestablished_s = Some((now - t_restart).as_secs_f64());
            out.storm_s = first_down.map(|t| (now - t).as_secs_f64());
            break;
        }
    }
    out.edge_cpu_pct =
        (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_s() / t_restart.elapsed().as_secs_f64() * 100.0;
    // A while longer: a tunnel back early that the storm starves loses
    // its hellos within hello_interval × hello_retries.
    std::thread::sleep(Duration::from_secs_f64(
        opts.hello_interval * f64::from(opts.hello_retries) + 5.0,
    ));
    let after = lab.apsim_stats()?;
    for (ap, t) in per_ap(&after, "tunnels_up") {
        match t.saturating_sub(before["per_ap"][&ap]["tunnels_up"].as_u64().unwrap_or(0)) {
            0 => out.never_lost += 1,
            1 => out.rebuilt_once += 1,
            _ => out.rebuilt_more += 1,
        }
    }
    out.failovers = sum_delta(&before, &after, "failovers");
    let edge = query(&lab.edge_sock)?;
    let l2 = &edge["l2tp"];
    out.sccrq = json!({
        "received": l2["sccrq_received"], "accepted": l2["sccrq_accepted"],
        "half_open_full": l2["sccrq_half_open_full"], "retransmits": l2["sccrq_retransmits"],
        "rate_limited": l2["sccrq_rate_limited"],
        "stale_stopccn_sent": l2["stale_stopccn_sent"],
        "stale_stopccn_limited": l2["stale_stopccn_limited"],
    });
    out.edge_sessions_after = lab::topology::sessions_up(&edge);
    Ok(out)
}

/// The `stall` phase (module documentation).
fn stall(lab: &mut Lab, opts: &Options) -> anyhow::Result<Stall> {
    let n = u64::from(opts.aps);
    wait_clients_learned(lab, opts)?;
    let frames = client_frames(lab, opts)?;
    let before = lab.apsim_stats()?;
    let edge0 = query(&lab.edge_sock)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = spawn_sender(&lab.up, frames, opts.pps, stop.clone(), sent.clone())?;
    // Longer than the APs' dead-peer time: every tunnel is given up.
    let stopped =
        Duration::from_secs_f64(opts.hello_interval * f64::from(opts.hello_retries + 1) + 5.0);
    let mut out = Stall {
        stopped_s: stopped.as_secs_f64(),
        min_sessions_up: n,
        ..Stall::default()
    };
    let result = (|| -> anyhow::Result<()> {
        lab.tunterm.signal(libc::SIGSTOP)?;
        std::thread::sleep(stopped);
        lab.tunterm.signal(libc::SIGCONT)?;
        let t_cont = Instant::now();
        let pid = lab.tunterm.pid();
        let cpu0 = cpu_ticks(pid)?;
        let deadline = t_cont + opts.bring_up;
        let mut saw_down = false;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let Ok(st) = lab.apsim_stats() else { continue };
            let up = st["sessions_up"].as_u64().unwrap_or(0);
            out.min_sessions_up = out.min_sessions_up.min(up);
            saw_down |= up < n;
            let rebuilt = per_ap(&st, "tunnels_up")
                .iter()
                .filter(|(ap, t)| *t > before["per_ap"][ap]["tunnels_up"].as_u64().unwrap_or(0))
                .count() as u64;
            if saw_down && up == n && rebuilt == n {
                out.recovered_s = Some(t_cont.elapsed().as_secs_f64());
                break;
            }
        }
        out.edge_cpu_pct =
            (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_s() / t_cont.elapsed().as_secs_f64()
                * 100.0;
        // A while longer, traffic still on: a tunnel back early that the
        // edge then starves loses it again within the dead-peer time.
        std::thread::sleep(Duration::from_secs_f64(
            opts.hello_interval * f64::from(opts.hello_retries) + 5.0,
        ));
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    // Never leave the edge stopped.
    let _ = lab.tunterm.signal(libc::SIGCONT);
    result?;
    out.sent = sent.load(Ordering::Relaxed);
    let after = lab.apsim_stats()?;
    out.lost_again = per_ap(&after, "tunnels_up")
        .iter()
        .filter(|(ap, t)| {
            t.saturating_sub(before["per_ap"][ap]["tunnels_up"].as_u64().unwrap_or(0)) > 1
        })
        .count();
    let edge1 = query(&lab.edge_sock)?;
    let d = |path: &str| -> u64 {
        let get = |v: &Value| path.split('.').fold(v, |v, k| &v[k]).as_u64().unwrap_or(0);
        get(&edge1).saturating_sub(get(&edge0))
    };
    out.edge = json!({
        "flood_dropped_frames_from_upstream": d("clients.flood_dropped.from_upstream"),
        "flood_dropped_copies": d("clients.flood_dropped.copies"),
        "flooded": d("switch.flooded"),
        "tunnel_tx": d("io.tunnel_tx"),
        "tunnel_rx_shed_control": d("io.tunnel_rx_shed_control"),
        "tunnel_rx_shed_data": d("io.tunnel_rx_shed_data"),
        "trunk_rx_shed": d("io.trunk_rx_shed"),
        "sccrq_received": d("l2tp.sccrq_received"),
        "sccrq_accepted": d("l2tp.sccrq_accepted"),
        "sccrq_half_open_full": d("l2tp.sccrq_half_open_full"),
    });
    Ok(out)
}

/// The frames the trunk sender sends: unicast to every synthetic client of
/// the main APs the edge has learned (an unknown one would be flooded to
/// every tunnel), round robin.
fn client_frames(lab: &Lab, opts: &Options) -> anyhow::Result<Vec<Vec<u8>>> {
    let src = (
        MacAddr([0x02, 0xee, 0, 0, 0x77, 0x01]),
        Ipv4Addr::new(192, 168, 10, 1),
    );
    let fdb = lab::topology::query_fdb(&lab.edge_sock)?;
    let mut frames = Vec::new();
    for e in fdb.iter().filter(|e| e.vlan == VLAN) {
        let Ok(mac) = e.mac.parse::<tunterm_control::mac::MacAddr>() else {
            continue;
        };
        let m = mac.octets();
        let index = u32::from_be_bytes([0, m[1], m[2], m[3]]);
        if m[0] != 0x02 || index >= opts.aps {
            continue;
        }
        let mut f = data_frame(src, Ipv4Addr::new(10, 200, 0, 1), Some(VLAN), 18);
        f[..6].copy_from_slice(&m);
        frames.push(f);
    }
    anyhow::ensure!(!frames.is_empty(), "the edge has learned no client");
    Ok(frames)
}

/// A sender on the trunk (the upstream namespace's `t0`) at `pps` until
/// `stop`; `sent` counts its frames.
fn spawn_sender(
    ns: &Netns,
    frames: Vec<Vec<u8>>,
    pps: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    // Bound inside the namespace, the socket stays on its interface.
    let sock = ns.enter(|| tunterm::io::afpacket::PacketSocket::bind("t0"))??;
    Ok(std::thread::spawn(move || {
        let per_ms = f64::from(pps.max(1)) / 1000.0;
        let t0 = Instant::now();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            if sock.send(&frames[i % frames.len()]).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
            // Paced: frame i goes at i / pps seconds.
            let next = t0 + Duration::from_secs_f64(i as f64 / per_ms / 1000.0);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }))
}

/// Waits until the edge has learned every main AP's client (an unknown
/// destination would be flooded to every tunnel).
fn wait_clients_learned(lab: &Lab, opts: &Options) -> anyhow::Result<()> {
    let want = u64::from(opts.aps) * u64::from(opts.clients_per_ap);
    let learned = lab::wait_until(opts.announce_interval * 3, || {
        query(&lab.edge_sock).is_ok_and(|st| st["fdb_entries"].as_u64().unwrap_or(0) >= want)
    });
    if !learned {
        // The sender only sends to the learned ones.
        eprintln!("stormbench: the edge did not learn all {want} client MACs");
    }
    Ok(())
}

/// One traffic window, with a kill -9 and restart (state kept) in its
/// middle when `restart`.
fn window(lab: &mut Lab, opts: &Options, restart: bool) -> anyhow::Result<Window> {
    wait_clients_learned(lab, opts)?;
    let before = lab.apsim_stats()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let frames = client_frames(lab, opts)?;
    let clients = frames.len();
    let sender = spawn_sender(&lab.up, frames, opts.pps, stop.clone(), sent.clone())?;
    let mut out = Window {
        restart,
        clients,
        ..Window::default()
    };
    std::thread::sleep(opts.window / 3);
    if restart {
        if let Some(new) = lab.upgrade_to.take() {
            let old = std::mem::replace(&mut lab.tunterm_args[lab.daemon_arg], new);
            out.upgraded_from = Some(old);
        }
        out.down_s = Some(lab.kill_and_restart(true)?.as_secs_f64());
    }
    std::thread::sleep(opts.window.saturating_sub(opts.window / 3));
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))?;
    out.sent = sent.load(Ordering::Relaxed);
    // Until the APs' counts stand still (the last frames drain).
    let mut last = u64::MAX;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now = sum_delta(&before, &lab.apsim_stats()?, "rx_client_frames");
        if now == last {
            break;
        }
        last = now;
    }
    let after = lab.apsim_stats()?;
    out.received = sum_delta(&before, &after, "rx_client_frames");
    out.lost = out.sent as i64 - out.received as i64;
    out.tunnels_rebuilt = sum_delta(&before, &after, "tunnels_up");
    if restart {
        let st = query(&lab.edge_sock)?;
        let r = &st["restart"];
        out.restart_stats = json!({
            "restored_tunnels": r["restored_tunnels"], "restored_sessions": r["restored_sessions"],
            "restored_fdb": r["restored_fdb"], "refused": r["refused"],
        });
        out.fast_path_start = st["fast_path"]["start"].clone();
    }
    Ok(out)
}

/// Every number in `v` below `path`, flattened: `a.b.c` → n. Lists (the
/// per-tunnel ones) are left out: tunnels come and go.
fn numbers(v: &Value, path: String, out: &mut Vec<(String, u64)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                numbers(v, format!("{path}.{k}"), out);
            }
        }
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.push((path, n));
            }
        }
        _ => {}
    }
}

/// The monotonic counters of a stats document.
fn counters(st: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    // fast_path's and mcast's own top level holds table sizes: their
    // counters only.
    for k in [
        "io",
        "switch",
        "l2tp",
        "gre",
        "fast_path.counters",
        "mcast.counters",
        "operations",
    ] {
        let v = k.split('.').fold(st, |v, part| &v[part]);
        numbers(v, k.to_string(), &mut out);
    }
    // Gauges among them: current sizes and states, not counts.
    out.retain(|(p, _)| {
        ![
            "entries",
            "size",
            "current",
            "active",
            "half_open",
            "groups",
            "ports",
            "members",
            "len",
            "capacity",
            "max",
            "pps",
            "limit",
            "mtu",
            "peak",
            "_now",
            "in_flight",
            "queued",
            "pending",
        ]
        .iter()
        .any(|g| p.contains(g))
    });
    out
}

fn counts(lab: &Lab) -> anyhow::Result<(usize, usize, u64, u64, Value)> {
    let st = query(&lab.edge_sock)?;
    Ok((
        st["tunnels"].as_array().map_or(0, Vec::len),
        lab::topology::sessions_up(&st),
        st["fdb_entries"].as_u64().unwrap_or(0),
        rss_kib(lab.tunterm.pid()),
        st,
    ))
}

fn soak(lab: &mut Lab, opts: &Options) -> anyhow::Result<Soak> {
    wait_clients_learned(lab, opts)?;
    let (t, sess, fdb, rss, _) = counts(lab)?;
    let mut out = Soak {
        baseline: (t, sess, fdb, rss),
        ..Soak::default()
    };
    let before = lab.apsim_stats()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = spawn_sender(
        &lab.up,
        client_frames(lab, opts)?,
        opts.pps,
        stop.clone(),
        sent.clone(),
    )?;
    let pid = lab.tunterm.pid();
    let (cpu0, t0) = (cpu_ticks(pid)?, Instant::now());
    let mut prev: Vec<(String, u64)> = Vec::new();
    let mut next_churn = t0;
    let mut next_sample = t0;
    while t0.elapsed() < opts.soak {
        let now = Instant::now();
        if now >= next_churn && opts.churn_aps > 0 {
            match lab.churn.take() {
                // Leave: SIGTERM, each AP sends StopCCN.
                Some(mut p) => {
                    p.signal(libc::SIGTERM)?;
                    let _ = p.wait_exit(Duration::from_secs(10));
                }
                None => {
                    lab.churn = Some(lab.spawn_apsim(
                        opts,
                        "churn",
                        opts.churn_aps,
                        opts.aps,
                        "10.99.0.3",
                    )?);
                    out.churn_joins += 1;
                }
            }
            next_churn = now + opts.churn_period;
        }
        if now >= next_sample {
            let q = Instant::now();
            let (tunnels, sessions, fdb_entries, rss_kib, st) = counts(lab)?;
            let stats_ms = q.elapsed().as_secs_f64() * 1e3;
            let c = counters(&st);
            for (p, n) in &c {
                if let Some((_, old)) = prev.iter().find(|(q, _)| q == p)
                    && n < old
                {
                    out.backwards.push(format!(
                        "{p}: {old} → {n} at {:.0} s",
                        t0.elapsed().as_secs_f64()
                    ));
                }
            }
            prev = c;
            let sample = Sample {
                t_s: t0.elapsed().as_secs_f64(),
                rss_kib,
                sessions,
                tunnels,
                fdb_entries,
                churn_up: lab.churn.is_some(),
                stats_ms,
            };
            eprintln!("stormbench soak: {}", serde_json::to_string(&sample)?);
            out.samples.push(sample);
            next_sample = now + Duration::from_secs(30);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))?;
    out.minutes = t0.elapsed().as_secs_f64() / 60.0;
    out.edge_cpu_pct =
        (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_s() / t0.elapsed().as_secs_f64() * 100.0;
    std::thread::sleep(Duration::from_secs(3));
    out.sent = sent.load(Ordering::Relaxed);
    out.received = sum_delta(&before, &lab.apsim_stats()?, "rx_client_frames");
    // The churning APs leave: back to the baseline.
    if let Some(mut p) = lab.churn.take() {
        p.signal(libc::SIGTERM)?;
        let _ = p.wait_exit(Duration::from_secs(10));
    }
    let settle = |lab: &Lab, want: (usize, usize)| {
        lab::wait_until(Duration::from_secs(60), || {
            counts(lab).is_ok_and(|(t, s, ..)| (t, s) == want)
        })
    };
    settle(lab, (out.baseline.0, out.baseline.1));
    let (t, sess, fdb, rss, _) = counts(lab)?;
    out.after_churn = (t, sess, fdb, rss);
    // Every AP leaves.
    if let Some(mut p) = lab.apsim.take() {
        p.signal(libc::SIGTERM)?;
        let _ = p.wait_exit(Duration::from_secs(30));
    }
    settle(lab, (0, 0));
    let (t, sess, fdb, rss, _) = counts(lab)?;
    out.all_left = (t, sess, fdb, rss);
    Ok(out)
}

/// Run the phases.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    lab::require_root()?;
    let mut report = Report {
        settings: json!({
            "aps": opts.aps, "clients_per_ap": opts.clients_per_ap,
            "announce_interval_ms": opts.announce_interval.as_millis() as u64,
            "hello_interval": opts.hello_interval, "hello_retries": opts.hello_retries,
            "fast_path": opts.fast_path, "phases": opts.phases, "pps": opts.pps,
            "window_s": opts.window.as_secs_f64(), "soak_minutes": opts.soak.as_secs_f64() / 60.0,
            "churn_aps": opts.churn_aps, "churn_period_s": opts.churn_period.as_secs_f64(),
            "setup_rounds": opts.setup_rounds, "realtime": opts.realtime,
            "max_half_open": opts.max_half_open, "upgrade_from": opts.upgrade_from,
        }),
        ..Report::default()
    };
    report.loadavg.0 = loadavg();
    // The setup phase first: it brings the APs up itself.
    let setup_first = opts.phases.first().is_some_and(|p| p == "setup");
    let mut lab = Lab::start(opts, !setup_first)?;
    if !setup_first {
        let t0 = Instant::now();
        let all_up = wait_all_up(&lab, u64::from(opts.aps), opts.bring_up);
        report.bring_up_s = t0.elapsed().as_secs_f64();
        report.rss_after_bring_up_kib = rss_kib(lab.tunterm.pid());
        eprintln!(
            "stormbench: bring-up {:.1} s ({})",
            report.bring_up_s,
            if all_up { "all up" } else { "NOT all up" }
        );
        anyhow::ensure!(all_up, "not every AP came up in {:?}", opts.bring_up);
        // The clients announced themselves at least once.
        std::thread::sleep(opts.announce_interval + Duration::from_secs(2));
    }
    for (i, phase) in opts.phases.iter().enumerate() {
        let r = match phase.as_str() {
            "setup" => setup(&mut lab, opts).map(|s| {
                report.setup = Some(s);
                report.rss_after_bring_up_kib = rss_kib(lab.tunterm.pid());
                // A phase after it wants the clients announced.
                if i + 1 < opts.phases.len() {
                    std::thread::sleep(opts.announce_interval + Duration::from_secs(2));
                }
            }),
            "storm" => storm(&mut lab, opts).map(|s| {
                eprintln!(
                    "stormbench storm: {}",
                    serde_json::to_string(&s).unwrap_or_default()
                );
                report.storm = Some(s);
            }),
            "hitless" => window(&mut lab, opts, false).and_then(|w0| {
                eprintln!("stormbench window: {}", serde_json::to_string(&w0)?);
                report.hitless.push(w0);
                let w1 = window(&mut lab, opts, true)?;
                eprintln!("stormbench window: {}", serde_json::to_string(&w1)?);
                report.hitless.push(w1);
                Ok(())
            }),
            "stall" => stall(&mut lab, opts).map(|s| {
                eprintln!(
                    "stormbench stall: {}",
                    serde_json::to_string(&s).unwrap_or_default()
                );
                report.stall = Some(s);
            }),
            "soak" => soak(&mut lab, opts).map(|s| report.soak = Some(s)),
            other => Err(anyhow::anyhow!(
                "phase {other:?}: setup, storm, hitless, stall or soak"
            )),
        };
        if let Err(e) = r {
            eprintln!("stormbench: {phase}: {e:#}");
            report.errors.push(format!("{phase}: {e:#}"));
        }
        // The next phase starts from every AP up.
        if lab.apsim.is_some() && !wait_all_up(&lab, u64::from(opts.aps), opts.bring_up) {
            report
                .errors
                .push(format!("after {phase}: not every AP up again"));
        }
    }
    report.loadavg.1 = loadavg();
    Ok(report)
}

impl Report {
    /// The figures as text.
    pub fn table(&self) -> String {
        let mut out = format!(
            "bring-up: {} APs in {:.1} s, edge RSS {} MiB; load average {} → {}\n",
            self.settings["aps"],
            self.bring_up_s,
            self.rss_after_bring_up_kib / 1024,
            self.loadavg.0,
            self.loadavg.1
        );
        if let Some(s) = &self.setup {
            let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
            out += &format!(
                "setup ({} APs, fresh edge, s from the first SCCRQ): edge first tunnel / N-th tunnel / N-th session; \
                 APs N-th tunnel / N-th session; tunnels/s; edge CPU, apsim CPU (% of a core); SCCRQs\n",
                self.settings["aps"]
            );
            for (i, r) in s.rounds.iter().enumerate() {
                out += &format!(
                    "  round {} (load {}): {} / {} / {}; {} / {}; {} tunnels/s; {:.0} %, {:.0} %; {}\n",
                    i + 1,
                    r.loadavg,
                    f(r.edge_first_tunnel_s),
                    f(r.edge_tunnels_s),
                    f(r.edge_sessions_s),
                    f(r.ap_tunnels_s),
                    f(r.ap_sessions_s),
                    r.tunnels_per_s.map_or("-".into(), |x| format!("{x:.0}")),
                    r.edge_cpu_pct,
                    r.apsim_cpu_pct,
                    r.sccrq
                );
            }
            out += &format!(
                "  median: {} tunnels/s at the edge, {} sessions/s at the APs\n",
                s.median_tunnels_per_s
                    .map_or("-".into(), |x| format!("{x:.0}")),
                s.median_ap_sessions_per_s
                    .map_or("-".into(), |x| format!("{x:.0}"))
            );
        }
        if let Some(s) = &self.storm {
            let f = |x: Option<f64>| x.map_or("not all back".into(), |x| format!("{x:.1} s"));
            out += &format!(
                "storm (kill -9, no state file): all back {} after the restart, {} after the first AP down; \
                 min up {}; rebuilt once {}, more than once {}, never lost {}; SCCRQs {}; edge CPU {:.0} %\n",
                f(s.reestablished_s),
                f(s.storm_s),
                s.min_sessions_up,
                s.rebuilt_once,
                s.rebuilt_more,
                s.never_lost,
                s.sccrq,
                s.edge_cpu_pct
            );
        }
        for w in &self.hitless {
            out += &format!(
                "window{}: sent {}, received {}, lost {}, tunnels rebuilt {}{}\n",
                match (&w.upgraded_from, w.restart) {
                    (Some(old), _) =>
                        format!(" with kill -9 + restart into this build from {old} (state kept)"),
                    (None, true) => " with kill -9 + restart (state kept)".into(),
                    (None, false) => " (no restart)".into(),
                },
                w.sent,
                w.received,
                w.lost,
                w.tunnels_rebuilt,
                if w.restart {
                    format!(
                        ", down {:.1} s, restart {}, fast path {}",
                        w.down_s.unwrap_or(0.0),
                        w.restart_stats,
                        w.fast_path_start
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(s) = &self.stall {
            out += &format!(
                "stall (SIGSTOP {:.0} s, trunk traffic on): all back {} after SIGCONT; min up {}; \
                 lost again {}; sent {}; edge {}; edge CPU {:.0} %\n",
                s.stopped_s,
                s.recovered_s.map_or("NOT".into(), |x| format!("{x:.1} s")),
                s.min_sessions_up,
                s.lost_again,
                s.sent,
                s.edge,
                s.edge_cpu_pct
            );
        }
        if let Some(s) = &self.soak {
            let (first, last) = (s.samples.first(), s.samples.last());
            out += &format!(
                "soak {:.1} min: RSS {} → {} KiB, {} samples, counters backwards {}, churn joins {}, \
                 sent {} received {}; baseline (tunnels, sessions, FDB, RSS) {:?}, churn gone {:?}, all left {:?}; edge CPU {:.0} %\n",
                s.minutes,
                first.map_or(0, |x| x.rss_kib),
                last.map_or(0, |x| x.rss_kib),
                s.samples.len(),
                s.backwards.len(),
                s.churn_joins,
                s.sent,
                s.received,
                s.baseline,
                s.after_churn,
                s.all_left,
                s.edge_cpu_pct
            );
            for b in &s.backwards {
                out += &format!("  backwards: {b}\n");
            }
        }
        for e in &self.errors {
            out += &format!("error: {e}\n");
        }
        out
    }
}
