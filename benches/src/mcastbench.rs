//! `mcastbench`: the multicast and ARP containment scale bench of issue 15.
//! Each run builds a fresh lab (namespaces `tt….mcastbench-{aps,edge,up}`),
//! starts tunterm and `tunterm-apsim --count N`, and measures one scenario
//! once per mode:
//!
//! - **stream**: the first AP's synthetic client joins a group (IGMPv3,
//!   `--join-group`); an upstream sender streams to the group at a fixed
//!   rate for a window. Figures: APs that received the stream, copies they
//!   received, the edge's tunnel packets sent and its multicast counters.
//!   Modes: snooping `on` (VLAN 10, querier) and `off`.
//! - **garp**: every AP's synthetic clients send a gratuitous ARP every
//!   interval on VLAN 10. Figures: tunnels up at the end (and failovers),
//!   `tunterm stats` latency (median, max over the calls), the edge's CPU,
//!   its tunnel and trunk packets a second. Modes: containment `on` and
//!   `off` (`mxedge.tunterm_client_config.arp_nd_proxy`, the client table's
//!   setting; a build without it ignores the field, so both modes then
//!   measure the same edge).
//!
//! Per mode, `--set MODE:KEY=JSON` sets further `mxedge` fields.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use tunterm::api::client::{Client, block_on};
use tunterm_core::wire::ether::MacAddr;
use tunterm_lab::apsim::igmp::data_frame;
use tunterm_lab::topology::{edge_config, query_apsim};
use tunterm_lab::{self as lab, LogDir, Netns, Proc};

/// The VLAN of the bench's clients, group and sender.
pub const VLAN: u16 = 10;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One member, a stream to its group.
    Stream,
    /// Gratuitous ARPs from every AP's synthetic clients.
    Garp,
}

/// The bench's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// Simulated APs (one tunnel and session each).
    pub aps: u32,
    /// Modes to run, in order: `on`, `off`.
    pub modes: Vec<String>,
    /// Extra `mxedge` fields per mode: (mode, key, value).
    pub set: Vec<(String, String, Value)>,
    /// stream: the group.
    pub group: Ipv4Addr,
    /// stream: frames a second the sender sends.
    pub pps: u32,
    /// stream: UDP payload bytes.
    pub payload: usize,
    /// Measurement window (stream: how long the sender sends).
    pub window: Duration,
    /// garp: synthetic clients per AP.
    pub clients_per_ap: u32,
    /// garp: interval of each client's gratuitous ARP.
    pub garp_interval: Duration,
    /// garp: `tunterm stats` calls, spread over the window.
    pub stats_calls: usize,
    /// Longest wait for every tunnel to come up.
    pub bring_up: Duration,
    /// HELLO interval of the APs and the edge, seconds.
    pub hello_interval: f64,
    /// Missed HELLOs before the APs and the edge give a tunnel up (None:
    /// the edge 7, the APs apsim's default).
    pub hello_retries: Option<u32>,
    /// SCHED_FIFO priority for tunterm (`chrt -f`); None: as the bench.
    pub edge_fifo: Option<u8>,
    /// SCHED_FIFO priority for tunterm-apsim; None: as the bench.
    pub apsim_fifo: Option<u8>,
    /// Where tunterm and tunterm-apsim are.
    pub bin_dir: PathBuf,
}

/// `args` run under `chrt -f PRIO` when `fifo` is set.
fn with_fifo<'a>(fifo: Option<&'a str>, args: Vec<&'a str>) -> Vec<&'a str> {
    match fifo {
        Some(p) => ["chrt", "-f", p].into_iter().chain(args).collect(),
        None => args,
    }
}

/// One mode's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// `on` or `off`.
    pub mode: String,
    /// APs simulated.
    pub aps: u32,
    /// Sessions up at the edge when the window opened.
    pub sessions_up: usize,
    /// Seconds every tunnel took to come up.
    pub bring_up_s: f64,
    /// Measured window, seconds.
    pub window_s: f64,
    /// stream: frames the sender sent.
    pub sent: Option<u64>,
    /// stream: APs that received at least one frame of the stream.
    pub aps_with_stream: Option<usize>,
    /// stream: frames of the stream received, all APs together.
    pub copies_received: Option<u64>,
    /// stream: the group's member ports in the edge's MDB (the VLAN's).
    pub mdb_member_ports: Option<usize>,
    /// The edge's tunnel packets sent in the window (`io.tunnel_tx`).
    pub edge_tunnel_tx: u64,
    /// stream: the edge's tunnel packets sent per frame sent, queries
    /// left out (`io.tunnel_tx` − general queries × sessions).
    pub edge_tunnel_tx_per_frame: Option<f64>,
    /// stream: seconds from the sender's end until the edge's tunnel tx
    /// and the APs' counts stood still (within the window's figures).
    pub drain_s: Option<f64>,
    /// General queries the edge sent in the window (`mcast.counters.queries_out`).
    pub queries_out: u64,
    /// The edge's trunk frames sent in the window (`io.trunk_tx`).
    pub edge_trunk_tx: u64,
    /// Delta of `mcast.counters.forwarded` (frames the table forwarded).
    pub mcast_forwarded: u64,
    /// Delta of `mcast.counters.pruned_copies`.
    pub mcast_pruned_copies: u64,
    /// garp: sessions up when the window closed.
    pub sessions_up_after: Option<usize>,
    /// garp: APs' failovers in the window (tunnels lost).
    pub failovers: Option<u64>,
    /// garp: `tunterm stats` wall time, median, ms.
    pub stats_ms_median: Option<f64>,
    /// garp: `tunterm stats` wall time, max, ms.
    pub stats_ms_max: Option<f64>,
    /// garp: `tunterm stats` calls that failed (the CLI gives up after
    /// 10 s without an answer); not in the median and max.
    pub stats_failed: Option<usize>,
    /// The edge's CPU over the window, % of one core.
    pub edge_cpu_pct: f64,
    /// The edge's FDB entries when the window closed.
    pub fdb_entries: usize,
    /// Tunnel packets the edge read in the window (`io.tunnel_rx`).
    pub edge_tunnel_rx: u64,
    /// Tunnel packets the kernel shed at the edge's data sockets in the
    /// window (`io.tunnel_rx_shed_data`): data it could not keep up with.
    pub edge_shed_data: u64,
    /// ... at its control sockets (`io.tunnel_rx_shed_control`): must be 0.
    pub edge_shed_control: u64,
    /// garp: the edge did not answer the closing stats query (within a
    /// minute): the sessions up and failovers are the APs' own (apsim),
    /// the edge's counters unknown.
    pub edge_silent: Option<String>,
    /// Why this mode has no figures (the others still ran).
    pub error: Option<String>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: Scenario,
    /// Its settings, as given.
    pub settings: Value,
    /// One per mode.
    pub rows: Vec<Row>,
}

/// The `mxedge` fields of `mode` for `scenario`.
fn mode_fields(scenario: Scenario, mode: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let ip = (
        "tunterm_other_ip_configs".to_string(),
        json!({"10": {"ip": "192.168.10.250", "netmask": "255.255.255.0"}}),
    );
    let snooping = (
        "tunterm_igmp_snooping_config".to_string(),
        json!({"enabled": true, "vlan_ids": [VLAN], "querier": {
            "query_interval": 60, "max_response_time": 20, "robustness": 2, "version": 3}}),
    );
    Ok(match (scenario, mode) {
        (Scenario::Stream, "on") => vec![ip, snooping],
        (Scenario::Stream, "off") => vec![ip],
        (Scenario::Garp, "on" | "off") => vec![
            ip,
            snooping,
            (
                "tunterm_client_config".to_string(),
                json!({"arp_nd_proxy": mode == "on"}),
            ),
        ],
        (_, other) => anyhow::bail!("mode {other:?}: on or off"),
    })
}

/// tunterm's stats, waiting up to a minute: an edge flooding a stream to
/// every tunnel answers late, and that is a figure, not a failure.
pub fn query(sock: &Path) -> anyhow::Result<Value> {
    let client = Client::new(sock).with_timeout(Duration::from_secs(60));
    Ok(serde_json::to_value(block_on(client.stats())?)?)
}

/// A `/proc/<pid>/stat`'s user + system time, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = text
        .rfind(')')
        .and_then(|i| text.get(i + 2..))
        .context("stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

/// Clock ticks a second (of [`cpu_ticks`]).
pub fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Let children (the 10,000 APs' sockets) have as many files as allowed.
pub fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit for getrlimit/setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// The number at `path` in `v` (0 when absent).
pub fn u64_at(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// Sum of `field` over the APs of an apsim stats document, and the APs
/// where it is above `before`'s.
pub fn ap_deltas(before: &Value, after: &Value, field: &str) -> (u64, usize) {
    let Some(aps) = after["per_ap"].as_object() else {
        return (0, 0);
    };
    let mut sum = 0;
    let mut n = 0;
    for (name, st) in aps {
        let d = st[field]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before["per_ap"][name][field].as_u64().unwrap_or(0));
        sum += d;
        n += usize::from(d > 0);
    }
    (sum, n)
}

/// A lab for one mode: namespaces, tunterm, apsim.
struct Lab {
    // Processes before namespaces, the directory last.
    tunterm: Proc,
    _apsim: Proc,
    _edge: Netns,
    _aps: Netns,
    up: Netns,
    edge_sock: PathBuf,
    ap_sock: PathBuf,
    _dir: LogDir,
}

impl Lab {
    fn start(opts: &Options, mode: &str) -> anyhow::Result<(Lab, f64)> {
        let (prefix, dir) = lab::begin(&format!("mcastbench-{mode}"))?;
        let edge = Netns::new(&format!("{prefix}edge"))?;
        let aps = Netns::new(&format!("{prefix}aps"))?;
        let up = Netns::new(&format!("{prefix}up"))?;
        lab::veth(&aps, "e0", &edge, "ap0")?;
        lab::addr(&edge, "ap0", "10.99.0.1/24")?;
        lab::addr(&edge, "ap0", "fd00:99::1/64")?;
        lab::addr(&aps, "e0", "10.99.0.2/24")?;
        lab::veth(&edge, "trunk0", &up, "t0")?;
        let mut cfg = edge_config(opts.hello_interval, opts.hello_retries.unwrap_or(7));
        cfg["mxtunnels"][0]["vlan_ids"] = json!([VLAN]);
        for (k, v) in mode_fields(opts.scenario, mode)? {
            cfg["mxedge"][k] = v;
        }
        for (m, k, v) in &opts.set {
            if m == mode {
                cfg["mxedge"][k] = v.clone();
            }
        }
        let config = dir.join("edge.json");
        std::fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
        let edge_sock = dir.join("edge.sock");
        let ap_sock = dir.join("apsim.sock");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let tunterm_bin = s(&opts.bin_dir.join("tunterm"));
        let edge_fifo = opts.edge_fifo.map(|p| p.to_string());
        let apsim_fifo = opts.apsim_fifo.map(|p| p.to_string());
        let mut tunterm = edge.spawn(
            &with_fifo(
                edge_fifo.as_deref(),
                vec![
                    &tunterm_bin,
                    "run",
                    "--config",
                    &s(&config),
                    "--control-socket",
                    &s(&edge_sock),
                    "--sccrq-burst",
                    "0",
                    "--max-half-open",
                    "100000",
                    "--sccrq-rate",
                    "100000",
                ],
            ),
            &dir.join("tunterm.log"),
        )?;
        tunterm
            .wait_for_log("tunterm running", Duration::from_secs(10))
            .context("tunterm did not start")?;
        let count = opts.aps.to_string();
        let hello = opts.hello_interval.to_string();
        let retries = opts.hello_retries.map(|r| r.to_string());
        let vlan = VLAN.to_string();
        let group = opts.group.to_string();
        let clients = opts.clients_per_ap.to_string();
        let interval = opts.garp_interval.as_millis().max(1).to_string();
        let apsim_bin = s(&opts.bin_dir.join("tunterm-apsim"));
        let ap_sock_s = s(&ap_sock);
        let mut args = vec![
            apsim_bin.as_str(),
            "--edge",
            "10.99.0.1",
            "--count",
            &count,
            "--local-ip",
            "10.99.0.2",
            "--hello-interval",
            &hello,
            "--synthetic-vlan",
            &vlan,
            "--control-socket",
            &ap_sock_s,
        ];
        if let Some(r) = &retries {
            args.extend(["--hello-retries", r]);
        }
        match opts.scenario {
            Scenario::Stream => args.extend(["--join-group", &group]),
            Scenario::Garp => args.extend([
                "--synthetic-clients",
                &clients,
                "--synthetic-interval-ms",
                &interval,
            ]),
        }
        raise_fd_limit();
        let apsim = aps.spawn(
            &with_fifo(apsim_fifo.as_deref(), args),
            &dir.join("apsim.log"),
        )?;
        let t0 = Instant::now();
        let want = opts.aps as usize;
        let all_up = lab::wait_until(opts.bring_up, || {
            query(&edge_sock).is_ok_and(|st| lab::topology::sessions_up(&st) >= want)
        });
        let took = t0.elapsed().as_secs_f64();
        let lab = Lab {
            tunterm,
            _apsim: apsim,
            _edge: edge,
            _aps: aps,
            up,
            edge_sock,
            ap_sock,
            _dir: dir,
        };
        if !all_up {
            let up = query(&lab.edge_sock).map_or(0, |st| lab::topology::sessions_up(&st));
            eprintln!("mcastbench {mode}: only {up} of {want} sessions up after {took:.0} s");
        }
        Ok((lab, took))
    }
}

/// Send `pps` frames a second of `frame` on `ifname` for `window`; the
/// frames sent.
fn stream(
    ns: &Netns,
    ifname: &str,
    frame: &[u8],
    pps: u32,
    window: Duration,
) -> anyhow::Result<u64> {
    ns.enter(|| -> anyhow::Result<u64> {
        let sock = tunterm::io::afpacket::PacketSocket::bind(ifname)?;
        let gap = Duration::from_secs_f64(1.0 / f64::from(pps.max(1)));
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut next = t0;
        while t0.elapsed() < window {
            if sock.send(frame).is_ok() {
                sent += 1;
            }
            next += gap;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        Ok(sent)
    })?
}

/// Time `tunterm stats` (the CLI, one line into a pipe) once.
fn time_stats(bin: &Path, sock: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["stats", "--control-socket"])
        .arg(sock)
        .output()?;
    let took = t.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "tunterm stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run_mode(opts: &Options, mode: &str) -> anyhow::Result<Row> {
    let (lab, bring_up) = Lab::start(opts, mode)?;
    let mut row = Row {
        mode: mode.into(),
        aps: opts.aps,
        bring_up_s: bring_up,
        ..Row::default()
    };
    if opts.scenario == Scenario::Stream {
        // After a start, groups with no member flood for the querier's max
        // response time + 1 s: wait that out.
        std::thread::sleep(Duration::from_secs(4));
    }
    let edge0 = query(&lab.edge_sock)?;
    let ap0 = query_apsim(&lab.ap_sock)?;
    row.sessions_up = lab::topology::sessions_up(&edge0);
    let pid = lab.tunterm.pid();
    let (cpu0, t0) = (cpu_ticks(pid)?, Instant::now());
    match opts.scenario {
        Scenario::Stream => {
            let src = (
                MacAddr([0x02, 0, 0, 0, 0x77, 0x01]),
                Ipv4Addr::new(192, 168, 10, 1),
            );
            let frame = data_frame(src, opts.group, Some(VLAN), opts.payload);
            row.sent = Some(stream(&lab.up, "t0", &frame, opts.pps, opts.window)?);
            // An edge that cannot keep up sends its backlog after the
            // sender stopped: wait until its tunnel tx and the APs' counts
            // stand still (at most a minute), so both count the same copies.
            let t1 = Instant::now();
            let mut last = (u64::MAX, u64::MAX);
            while t1.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(1000));
                let now = (
                    u64_at(&query(&lab.edge_sock)?, &["io", "tunnel_tx"]),
                    ap_deltas(&ap0, &query_apsim(&lab.ap_sock)?, "rx_group_frames").0,
                );
                if now == last {
                    break;
                }
                last = now;
            }
            row.drain_s = Some(t1.elapsed().as_secs_f64());
        }
        Scenario::Garp => {
            let bin = opts.bin_dir.join("tunterm");
            let calls = opts.stats_calls.max(1);
            let gap = opts.window / calls as u32;
            let mut times = Vec::new();
            let mut failed = 0;
            for i in 0..calls {
                let at = t0 + gap * i as u32 + gap / 2;
                if let Some(d) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                match time_stats(&bin, &lab.edge_sock) {
                    Ok(d) => times.push(d),
                    Err(e) => {
                        failed += 1;
                        eprintln!("mcastbench {mode}: {}", format!("{e:#}").trim());
                    }
                }
            }
            if let Some(d) = (t0 + opts.window).checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            times.sort();
            row.stats_ms_median = times.get(times.len() / 2).copied().map(ms);
            row.stats_ms_max = times.last().copied().map(ms);
            row.stats_failed = Some(failed);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    row.edge_cpu_pct = (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_s() / elapsed * 100.0;
    row.window_s = elapsed;
    let ap1 = query_apsim(&lab.ap_sock)?;
    let edge1 = match query(&lab.edge_sock) {
        Ok(v) => v,
        Err(e) if opts.scenario == Scenario::Garp => {
            // A saturated edge is a figure: what the APs saw stands.
            row.sessions_up_after = ap1["sessions_up"].as_u64().map(|n| n as usize);
            row.failovers = Some(ap_deltas(&ap0, &ap1, "failovers").0);
            row.edge_silent = Some(format!("{e:#}"));
            return Ok(row);
        }
        Err(e) => return Err(e),
    };
    let delta = |path: &[&str]| u64_at(&edge1, path).saturating_sub(u64_at(&edge0, path));
    row.edge_tunnel_tx = delta(&["io", "tunnel_tx"]);
    row.edge_trunk_tx = delta(&["io", "trunk_tx"]);
    row.edge_tunnel_rx = delta(&["io", "tunnel_rx"]);
    row.edge_shed_data = delta(&["io", "tunnel_rx_shed_data"]);
    row.edge_shed_control = delta(&["io", "tunnel_rx_shed_control"]);
    row.mcast_forwarded = delta(&["mcast", "counters", "forwarded"]);
    row.mcast_pruned_copies = delta(&["mcast", "counters", "pruned_copies"]);
    row.queries_out = delta(&["mcast", "counters", "queries_out"]);
    row.fdb_entries = edge1["fdb_entries"].as_u64().unwrap_or(0) as usize;
    match opts.scenario {
        Scenario::Stream => {
            let (copies, aps) = ap_deltas(&ap0, &ap1, "rx_group_frames");
            row.copies_received = Some(copies);
            row.aps_with_stream = Some(aps);
            let group = opts.group.to_string();
            row.mdb_member_ports = Some(
                edge1["mcast"]["mdb"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|g| g["vlan"] == VLAN && g["group"] == group.as_str())
                    .map(|g| g["ports"].as_array().map_or(0, Vec::len))
                    .sum(),
            );
            let queries = row.queries_out * row.sessions_up as u64;
            row.edge_tunnel_tx_per_frame = row
                .sent
                .filter(|&s| s > 0)
                .map(|s| row.edge_tunnel_tx.saturating_sub(queries) as f64 / s as f64);
        }
        Scenario::Garp => {
            row.sessions_up_after = Some(lab::topology::sessions_up(&edge1));
            row.failovers = Some(ap_deltas(&ap0, &ap1, "failovers").0);
        }
    }
    Ok(row)
}

/// Run every mode in turn.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    lab::require_root()?;
    let settings = json!({
        "aps": opts.aps,
        "modes": opts.modes,
        "group": opts.group.to_string(),
        "pps": opts.pps,
        "payload": opts.payload,
        "window_s": opts.window.as_secs_f64(),
        "clients_per_ap": opts.clients_per_ap,
        "garp_interval_ms": opts.garp_interval.as_millis() as u64,
        "stats_calls": opts.stats_calls,
        "edge_fifo": opts.edge_fifo,
        "apsim_fifo": opts.apsim_fifo,
        "set": opts.set.iter().map(|(m, k, v)| json!({"mode": m, "key": k, "value": v})).collect::<Vec<_>>(),
    });
    let mut rows = Vec::new();
    for mode in &opts.modes {
        rows.push(run_mode(opts, mode).unwrap_or_else(|e| {
            eprintln!("mcastbench: mode {mode}: {e:#}");
            Row {
                mode: mode.clone(),
                aps: opts.aps,
                error: Some(format!("{e:#}")),
                ..Row::default()
            }
        }));
    }
    Ok(Report {
        scenario: opts.scenario,
        settings,
        rows,
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

impl Report {
    /// The figures as a text table, one line per mode.
    pub fn table(&self) -> String {
        let mut out = String::new();
        match self.scenario {
            Scenario::Stream => {
                out.push_str(&format!(
                    "{:<5} {:>6} {:>7} {:>8} {:>9} {:>8} {:>10} {:>7} {:>8} {:>9} {:>10} {:>6} {:>7}\n",
                    "snoop",
                    "APs",
                    "up",
                    "sent",
                    "APs got",
                    "copies",
                    "tunnel tx",
                    "queries",
                    "tx/frame",
                    "forwarded",
                    "pruned",
                    "cpu %",
                    "drain s"
                ));
                for r in &self.rows {
                    if let Some(e) = &r.error {
                        out.push_str(&format!("{:<5} {:>6} failed: {e}\n", r.mode, r.aps));
                        continue;
                    }
                    out.push_str(&format!(
                        "{:<5} {:>6} {:>7} {:>8} {:>9} {:>8} {:>10} {:>7} {:>8} {:>9} {:>10} {:>6.1} {:>7}\n",
                        r.mode,
                        r.aps,
                        r.sessions_up,
                        opt(r.sent),
                        opt(r.aps_with_stream),
                        opt(r.copies_received),
                        r.edge_tunnel_tx,
                        r.queries_out,
                        opt(r.edge_tunnel_tx_per_frame.map(|x| format!("{x:.2}"))),
                        r.mcast_forwarded,
                        r.mcast_pruned_copies,
                        r.edge_cpu_pct,
                        opt(r.drain_s.map(|x| format!("{x:.1}")))
                    ));
                }
            }
            Scenario::Garp => {
                out.push_str(&format!(
                    "{:<7} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>6} {:>12} {:>10} {:>8}\n",
                    "contain",
                    "APs",
                    "up",
                    "up end",
                    "failover",
                    "stats med",
                    "stats max",
                    "no ans",
                    "cpu %",
                    "tunnel tx/s",
                    "trunk tx/s",
                    "FDB"
                ));
                for r in &self.rows {
                    if let Some(e) = &r.error {
                        out.push_str(&format!("{:<7} {:>6} failed: {e}\n", r.mode, r.aps));
                        continue;
                    }
                    let rate = |n: u64| {
                        let x = n as f64 / r.window_s.max(1e-9);
                        if r.edge_silent.is_some() {
                            "-".to_string()
                        } else {
                            format!("{x:.0}")
                        }
                    };
                    out.push_str(&format!(
                        "{:<7} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>6.1} {:>12} {:>10} {:>8}\n",
                        r.mode,
                        r.aps,
                        r.sessions_up,
                        opt(r.sessions_up_after),
                        opt(r.failovers),
                        opt(r.stats_ms_median.map(|x| format!("{x:.1}ms"))),
                        opt(r.stats_ms_max.map(|x| format!("{x:.1}ms"))),
                        opt(r.stats_failed),
                        r.edge_cpu_pct,
                        rate(r.edge_tunnel_tx),
                        rate(r.edge_trunk_tx),
                        if r.edge_silent.is_some() {
                            "-".to_string()
                        } else {
                            r.fdb_entries.to_string()
                        }
                    ));
                    if let Some(e) = &r.edge_silent {
                        out.push_str(&format!(
                            "{:<7} the edge did not answer at the window's end ({e}): up end and failovers are the APs' own\n",
                            ""
                        ));
                    } else {
                        out.push_str(&format!(
                            "{:<7} tunnel rx/s {}, shed by the kernel: data {} ({}/s), control {}\n",
                            "",
                            rate(r.edge_tunnel_rx),
                            r.edge_shed_data,
                            rate(r.edge_shed_data),
                            r.edge_shed_control
                        ));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_set_the_edge_s_fields() {
        let keys = |s, m| -> Vec<String> {
            mode_fields(s, m)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert!(keys(Scenario::Stream, "on").contains(&"tunterm_igmp_snooping_config".into()));
        assert!(!keys(Scenario::Stream, "off").contains(&"tunterm_igmp_snooping_config".into()));
        let on = mode_fields(Scenario::Garp, "on").unwrap();
        let off = mode_fields(Scenario::Garp, "off").unwrap();
        let proxy = |f: &[(String, Value)]| {
            f.iter()
                .find(|(k, _)| k == "tunterm_client_config")
                .map(|(_, v)| v["arp_nd_proxy"].clone())
        };
        assert_eq!(proxy(&on), Some(json!(true)));
        assert_eq!(proxy(&off), Some(json!(false)));
        assert!(mode_fields(Scenario::Garp, "maybe").is_err());
    }

    #[test]
    fn ap_deltas_count_aps_that_moved() {
        let before = json!({"per_ap": {"a": {"x": 5}, "b": {"x": 1}}});
        let after = json!({"per_ap": {"a": {"x": 5}, "b": {"x": 4}, "c": {"x": 2}}});
        assert_eq!(ap_deltas(&before, &after, "x"), (5, 2));
    }
}
