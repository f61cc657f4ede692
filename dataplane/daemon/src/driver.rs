//! The daemon's event loop: read → proto → write, and timers.
//!
//! One thread owns everything: the tunnel sockets toward the APs (L2TPv3
//! over UDP and over IP protocol 115, GRE, each over IPv4 and IPv6), the
//! AF_PACKET socket on the upstream trunk, the L2TP [`Endpoint`], the mGRE
//! [`GreEndpoint`] and the [`Switch`]. Frames go tunnel → switch →
//! trunk/tunnel and trunk → switch → tunnel without leaving this loop: the
//! driver reads a socket, hands each frame to the forwarding pipeline
//! ([`tunterm_core::forward`]) and writes the actions it returns (trunk and
//! host-port frames at once, tunnel packets batched per `sendmmsg`). The
//! control socket ([`crate::api`]) is served beside it (`control`): the
//! loop only snapshots what a request asks for. The edge's own host ports,
//! routes and DHCP relay, and the reload on SIGHUP, are in `services`.

mod bounce;
mod capture;
pub(crate) mod clients;
mod control;
mod http;
mod inputs;
mod mcast;
pub mod metrics;
mod services;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};
use tunterm_control::{EdgeConfig, TunnelProtocol};

use crate::api::EventKind as ApiEvent;
use crate::io::afpacket::PacketSocket;
use crate::io::batch::RecvBatch;
use crate::io::notify::Notifier;
use crate::io::tunnel::{SEND_BATCH, TunnelSocket, TunnelSockets};
use crate::io::xdp::{FastPath, FastPathStats, MapOptions, Mode as FastPathMode};
use crate::monitoring::{MonitorOptions, ProbeResult, UpstreamMonitor};
use crate::operations::{OperationCounters, Operations};
use tunterm_core::forward::{
    Actions, Carrier, EdgeTunnels, ForwardConfig, ForwardCounters, Forwarder, NoTap, Out, Ports,
    TunnelMtus,
};
use tunterm_core::proto::bridge::{
    PortConfig, PortId, Switch, SwitchCounters, TRUNK, is_host_port,
};
use tunterm_core::proto::capture::Direction;
use tunterm_core::proto::clients::Containment;
use tunterm_core::proto::gre::{
    GreConfig, GreCounters, GreEndpoint, GreEvent, GreIncoming, GrePeerSnapshot,
};
use tunterm_core::proto::l2tp::{
    AdmissionConfig, ConnSnapshot, ConnStats, Endpoint, EndpointConfig, EndpointCounters, Event,
    Incoming, PwProfile,
};
use tunterm_core::proto::mcast::McastPolicy;
use tunterm_core::proto::monitor::MonitorStats;
use tunterm_core::wire::gre::IP_PROTO_GRE;
use tunterm_core::wire::l2tp::{self as l2tp_wire, IP_PROTO_L2TP, Transport, pw};

/// Largest datagram or frame handled.
const BUF_LEN: usize = 65_536 + 64;
/// Datagrams or frames read with one `recvmmsg` per readiness event before
/// other work runs.
const BATCH: usize = 64;
/// Bytes of forwarded frames held before the tunnel queue is flushed.
const TX_BYTES: usize = SEND_BATCH * 2048;

/// What the daemon needs besides the Mist configuration.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Unix socket for `tunterm stats` (and, later, the agent).
    pub control_socket: PathBuf,
    /// Group that may use the control socket too (mode 0660); None: only
    /// its owner (0600).
    pub control_group: Option<String>,
    /// Override of the upstream trunk interface.
    pub upstream: Option<String>,
    /// UDP port to listen on (1701; tests may pick another).
    pub port: u16,
    /// Where tunnel decapsulation runs (`--fast-path`).
    pub fast_path: FastPathMode,
    /// Sizes of the fast path's tables (`--fast-path-fdb-entries`).
    pub fast_path_capacity: tunterm_ebpf::Capacity,
    /// bpffs directory for the fast path's pins (`--pin-dir`); None: not
    /// pinned (the programs go when the daemon goes).
    pub pin_dir: Option<PathBuf>,
    /// `pin_dir` is the default one: when it is not on a bpffs, run
    /// unpinned with a warning instead of failing.
    pub pin_dir_is_default: bool,
    /// Where the established tunnels are written for a restart
    /// (`--state-file`); None: a restart rebuilds every tunnel.
    pub state_file: Option<PathBuf>,
    /// Limits on new L2TP control connections (`--max-half-open`,
    /// `--sccrq-rate`, `--sccrq-burst`, `--sccrq-sources`).
    pub admission: AdmissionConfig,
    /// Upstream monitoring (`--monitor-interval`, `--monitor-timeout`,
    /// `--monitor-recover`).
    pub monitor: MonitorOptions,
    /// The configuration file, re-read on SIGHUP (None: nothing to re-read).
    pub config: Option<PathBuf>,
    /// Length of the cookies tunterm assigns to sessions: 0, 4 or 8 bytes
    /// (`--cookie-len`).
    pub cookie_len: usize,
    /// Where the Prometheus metrics and the status page are served
    /// (`--metrics`); None: nowhere.
    pub metrics: Option<SocketAddr>,
    /// What the metrics export (`--metrics-tunnels`).
    pub metrics_options: metrics::MetricsOptions,
    /// Threads of the userspace data path (`--workers`): 1, everything on
    /// the one event loop; N ≥ 2, that loop plus N-1 forwarding workers
    /// (`crate::workers`). None: the configuration's
    /// (`mxedge.tunterm_workers`), else 1.
    pub workers: Option<usize>,
}

/// The default `--pin-dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tunterm";

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            control_socket: PathBuf::from("/run/tunterm/tunterm.sock"),
            control_group: None,
            upstream: None,
            port: l2tp_wire::L2TP_PORT,
            fast_path: FastPathMode::Off,
            fast_path_capacity: tunterm_ebpf::Capacity::default(),
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            pin_dir_is_default: true,
            state_file: Some(PathBuf::from("/run/tunterm/tunterm.state")),
            admission: AdmissionConfig::default(),
            monitor: MonitorOptions::default(),
            config: None,
            cookie_len: EndpointConfig::default().cookie_len,
            metrics: None,
            metrics_options: metrics::MetricsOptions::default(),
            workers: None,
        }
    }
}

/// How the daemon ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stop (SIGTERM, SIGINT): close every tunnel with StopCCN so the APs
    /// move to another edge at once, detach the fast path, remove the pins
    /// and the state file.
    Stop,
    /// Exit for a restart (SIGQUIT): leave the tunnels up, the fast path
    /// forwarding (when pinned) and the state file written, for the next
    /// daemon to take over without the APs noticing.
    Restart,
    /// As [`Exit::Restart`], asked for on the control socket (`restart`):
    /// the caller execs the daemon again.
    Reexec,
}

/// How long a `restart` request's answer has to be written before the exec.
const REEXEC_ANSWER_WAIT: Duration = Duration::from_millis(100);

/// Longest the shutdown waits for the APs to acknowledge their StopCCN.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Least time between two writes of the state file.
const STATE_WRITE_EVERY: Duration = Duration::from_millis(200);

/// The state file: what a restarted daemon takes back.
#[derive(Debug, Serialize, serde::Deserialize)]
struct SavedState {
    /// Layout version of this file.
    version: u32,
    /// The edge's name (a file of another edge is not taken).
    edge: String,
    /// Established L2TP connections and sessions.
    l2tp: Vec<ConnSnapshot>,
    /// Live mGRE peers.
    gre: Vec<GrePeerSnapshot>,
    /// The switch's MACs behind the trunk and the tunnels, written by the
    /// exit for a restart only (a file written while running has none, so
    /// a crash never brings back an old table). The next tunterm takes
    /// back those the pinned fast path's FDB does not hold: all of them
    /// without the fast path, or when pins of another layout were
    /// replaced.
    /// (As the `fdb` request shows them.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fdb: Vec<FdbEntry>,
}

const STATE_VERSION: u32 = 1;

/// What taking back a state file did (for the log and the stats).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestartStats {
    /// The state file, if one is kept.
    pub state_file: String,
    /// L2TP tunnels taken back at start.
    pub restored_tunnels: usize,
    /// L2TP sessions taken back at start.
    pub restored_sessions: usize,
    /// mGRE peers taken back at start.
    pub restored_gre_peers: usize,
    /// FDB entries taken back from the fast path's maps at start.
    pub restored_fdb: usize,
    /// FDB entries taken back from the state file at start (written by
    /// the exit for a restart): those the fast path's maps did not hold.
    #[serde(default)]
    pub restored_fdb_file: usize,
    /// Entries of the file refused, and why.
    pub refused: Vec<String>,
    /// Writes of the state file.
    pub writes: u64,
    /// Writes that failed (see the log).
    pub write_errors: u64,
}

/// I/O counters of the driver.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IoCounters {
    /// Tunnel packets a forwarding worker handed over for a carrier (and
    /// family) the event loop no longer listens on: a reload closed it
    /// while they waited in the hand-over queue (dropped).
    #[serde(default)]
    pub punted_stale: u64,
    /// Frames read from the trunk.
    pub trunk_rx: u64,
    /// Frames on the trunk too long to read whole, dropped.
    pub trunk_rx_truncated: u64,
    /// Frames the kernel dropped at the trunk because tunterm had not read
    /// them in time (receive ring full): input shed under overload. From
    /// `PACKET_STATISTICS`.
    pub trunk_rx_shed: u64,
    /// Frames written to the trunk.
    pub trunk_tx: u64,
    /// Trunk writes that failed (full socket buffer, link down).
    pub trunk_tx_errors: u64,
    /// Packets read from the tunnel sockets.
    pub tunnel_rx: u64,
    /// Packets on the tunnel sockets too long to read whole, dropped.
    pub tunnel_rx_truncated: u64,
    /// Packets the kernel dropped at the tunnel sockets because tunterm had
    /// not read them in time (receive buffer full): input shed when it
    /// comes faster than the event loop reads it (each socket gets a
    /// budget per turn of the loop). From `SO_RXQ_OVFL`. The sum of
    /// `tunnel_rx_shed_control` and `tunnel_rx_shed_data`.
    pub tunnel_rx_shed: u64,
    /// Of `tunnel_rx_shed`: shed at the control sockets (L2TP control,
    /// GRE keepalives). Each has its own buffer, read first every turn:
    /// 0 unless control itself floods the edge.
    #[serde(default)]
    pub tunnel_rx_shed_control: u64,
    /// Of `tunnel_rx_shed`: shed at the data sockets (L2TP data, GRE
    /// Ethernet): a data flood the loop cannot keep up with is shed here.
    #[serde(default)]
    pub tunnel_rx_shed_data: u64,
    /// Data packets sent into tunnels.
    pub tunnel_tx: u64,
    /// Tunnel sends that failed.
    pub tunnel_tx_errors: u64,
    /// System calls that sent tunnel packets (`sendmmsg`, up to
    /// `SEND_BATCH` packets each): a flood to N tunnels is one or a few,
    /// not N.
    #[serde(default)]
    pub tunnel_tx_calls: u64,
    /// Bytes of the frames read from the trunk.
    #[serde(default)]
    pub trunk_rx_bytes: u64,
    /// Bytes of the frames written to the trunk.
    #[serde(default)]
    pub trunk_tx_bytes: u64,
    /// Bytes of the packets read from the tunnel sockets (the payload of
    /// their outer IP or UDP header).
    #[serde(default)]
    pub tunnel_rx_bytes: u64,
    /// Bytes of the packets sent into tunnels (likewise).
    #[serde(default)]
    pub tunnel_tx_bytes: u64,
    /// The forwarding pipeline's counters (`tunnel_tx_no_session`,
    /// `too_big_*`, `inner_fragments`, `mss_clamped`, `mac_announcements`),
    /// in this section under their own names.
    #[serde(flatten)]
    pub forward: ForwardCounters,
}

/// One FDB entry (`tunterm fdb`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// VLAN.
    pub vlan: u16,
    /// MAC, aa:bb:cc:dd:ee:ff.
    pub mac: String,
    /// "trunk", `"host:<vlan>"` (a host port), the L2TP session id, or the
    /// mGRE peer's port number.
    pub port: String,
}

/// One mGRE peer in the stats.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrePeerStats {
    /// Switch port.
    pub port: u32,
    /// The AP's address.
    pub remote_ip: String,
    /// GRE key, if the AP uses one.
    pub key: Option<u32>,
}

/// The stats document served on the control socket (the FDB is not in
/// it: it is its own, paged request).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// The edge's name.
    pub name: String,
    /// tunterm's version (and `git describe` of its build, when known).
    pub version: String,
    /// SHA-256 of the running configuration's canonical JSON
    /// ([`crate::api::config_digest`]): the file loaded at start or by the
    /// last reload.
    pub config_digest: String,
    /// Seconds since start.
    pub uptime: u64,
    /// L2TP control connections that are not closed.
    pub num_tunnels: usize,
    /// Per L2TP tunnel, in the shape of Mist's tunnel stats.
    pub tunnels: Vec<ConnStats>,
    /// mGRE peers.
    pub gre_peers: Vec<GrePeerStats>,
    /// L2TP counters.
    pub l2tp: EndpointCounters,
    /// mGRE counters.
    pub gre: GreCounters,
    /// Switch counters.
    pub switch: SwitchCounters,
    /// I/O counters.
    pub io: IoCounters,
    /// Entries in the forwarding database (`tunterm fdb` lists them).
    pub fdb_entries: usize,
    /// The XDP fast path (mode `off` and nothing else when it is off).
    pub fast_path: FastPathStats,
    /// The state kept for a restart, and what this run took back.
    pub restart: RestartStats,
    /// Upstream monitoring (`tunterm_monitoring`): health, per-check results.
    pub monitoring: MonitorStats,
    /// `disconnect-aps` and `preempt` requests and what they closed.
    pub operations: OperationCounters,
    /// Host ports, extra routes, DHCP relay, reloads.
    pub services: services::ServicesStats,
    /// The control socket: connections, refusals, subscriptions.
    pub control: crate::api::ControlStats,
    /// Running packet captures and their counters.
    #[serde(default)]
    pub captures: Vec<crate::api::CaptureStats>,
    /// IGMP/MLD snooping, the querier, mDNS/SSDP: counters and the MDB.
    #[serde(default)]
    pub mcast: mcast::McastStats,
    /// The client table (counts; `tunterm clients` lists it), ARP/ND
    /// containment, storm control drops in total and per AP.
    #[serde(default)]
    pub clients: clients::ClientStats,
    /// `bounce-port`: ports bounced, failures, ports down now.
    #[serde(default)]
    pub bounce: bounce::BounceCounters,
    /// The forwarding workers (`--workers`; absent with 1): their table,
    /// what each forwarded and handed to the event loop. Their reads and
    /// writes are in `io` and `switch.forwarded` with the loop's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<crate::workers::WorkersStats>,
}

/// The tunnel sockets, by carrier and local address (one control and data
/// pair per family).
struct Socks {
    slots: Vec<(Carrier, IpAddr, Rc<TunnelSockets>)>,
}

impl Socks {
    /// The socket that sends for `carrier` and family: the control socket
    /// of the pair (either could; one keeps each AP's packets in order).
    fn get(&self, carrier: Carrier, v6: bool) -> Option<&TunnelSocket> {
        self.slots
            .iter()
            .find(|(c, a, _)| *c == carrier && a.is_ipv6() == v6)
            .map(|(_, _, s)| &s.control)
    }

    /// What is open: carrier and local address, in order.
    fn keys(&self) -> Vec<(Carrier, IpAddr)> {
        self.slots.iter().map(|(c, a, _)| (*c, *a)).collect()
    }

    /// The pairs the forwarding workers open sockets beside: all of them.
    fn worker_pairs(&self) -> Vec<(Carrier, IpAddr, Rc<TunnelSockets>)> {
        self.slots.clone()
    }
}

struct Dataplane {
    name: String,
    started: Instant,
    cfg: EdgeConfig,
    endpoint: Endpoint,
    gre: GreEndpoint,
    switch: Switch,
    socks: Socks,
    trunk: Rc<AsyncFd<PacketSocket>>,
    /// MTU of the AP-facing link: the tunnel MTU where the mxtunnel says 0.
    link_mtu: u16,
    /// Per-tunnel MTUs (the link's, and each mxtunnel's).
    mtus: TunnelMtus,
    /// The forwarding pipeline; its flood policy: storm control, the
    /// client table and ARP/ND containment around multicast containment.
    fwd: Forwarder<Containment<McastPolicy>>,
    /// What it asked for: trunk and host-port frames are written at once,
    /// tunnel packets wait for [`Dataplane::flush_tunnel_tx`] (one
    /// `sendmmsg` per batch), then it is cleared.
    out: Actions,
    /// Actions the forwarding pipeline made (tunnel packets, trunk and
    /// host-port frames, drops) since start: the measure of a turn's data
    /// work (a flooded frame makes one per port), see `inputs`.
    made: u64,
    io: IoCounters,
    /// The XDP fast path, when on.
    fast: Option<FastPath>,
    /// A session came or went since the fast path last looked.
    sessions_changed: bool,
    /// Where the state for a restart goes.
    state_file: Option<PathBuf>,
    /// A tunnel, session or peer came or went since the last write.
    state_dirty: bool,
    /// Earliest next write.
    state_due: Instant,
    restart: RestartStats,
    /// Upstream monitoring.
    monitor: UpstreamMonitor,
    /// `disconnect-aps` and `preempt`.
    operations: Operations,
    /// Host ports, routes, DHCP relay.
    svc: services::Services,
    /// The control socket's side in the loop: events, counters, digest.
    control: control::Control,
    /// Packet captures (the pipeline's tap while one runs).
    captures: capture::Captures,
    /// The upstream trunk's interface.
    upstream: String,
    /// `--upstream`: the trunk is this interface whatever the
    /// configuration says.
    upstream_override: Option<String>,
    /// tunterm's L2TP/UDP port (for the `wire` capture point's headers).
    port: u16,
    /// Ports down for a `bounce-port`.
    bounces: bounce::Bounces,
    /// Monitoring settings of the command line (a reload rebuilds the
    /// checks with them).
    monitor_opts: MonitorOptions,
    /// The loop's inputs changed (sockets rebound, monitoring restarted):
    /// the loop takes them at its next turn.
    rewired: Option<Rewired>,
    /// A `restart` request came: exit for a restart and exec again.
    reexec: bool,
    /// The forwarding workers (`--workers` ≥ 2).
    workers: Option<crate::workers::Workers>,
    /// `--workers`: the threads whatever the configuration says.
    workers_override: Option<usize>,
}

/// What a live reconfiguration hands the event loop to wait on instead.
#[derive(Default)]
struct Rewired {
    /// The tunnel sockets or the trunk changed: rebuild the inputs (the
    /// forwarding workers already have the new tunnel sockets).
    sockets: bool,
    /// The new monitor's probe results.
    probes: Option<tokio::sync::mpsc::UnboundedReceiver<ProbeResult>>,
}

/// The tunnels' MTUs: each mxtunnel's `mtu` (by profile index), the AP
/// link's where it is 0 and for mGRE peers.
fn tunnel_mtus(cfg: &EdgeConfig, link_mtu: u16) -> TunnelMtus {
    TunnelMtus {
        link: link_mtu,
        profiles: cfg.tunnels.iter().map(|t| t.mtu).collect(),
    }
}

fn endpoint_config(cfg: &EdgeConfig, opts: &DaemonOptions) -> EndpointConfig {
    EndpointConfig {
        host_name: cfg.name.clone(),
        router_id: cfg.tunnel_ip.map_or(1, u32::from),
        profiles: profiles(cfg),
        admit: cfg.ap_subnets.clone(),
        admission: opts.admission,
        cookie_len: opts.cookie_len,
        ..EndpointConfig::default()
    }
}

fn profiles(cfg: &EdgeConfig) -> Vec<PwProfile> {
    cfg.tunnels
        .iter()
        .map(|t| PwProfile {
            names: vec![t.id.clone(), t.name.clone()],
            hello_interval: t.hello_interval,
            hello_retries: t.hello_retries,
            transport: Some(match t.protocol {
                TunnelProtocol::Udp => Transport::Udp,
                TunnelProtocol::Ip => Transport::Ip,
            }),
        })
        .collect()
}

fn trunk_port(cfg: &EdgeConfig) -> PortConfig {
    // Tagged on the trunk: every VLAN some tunnel carries. The native VLAN
    // is the untagged one.
    let mut vlans = tunterm_control::VlanSet::default();
    let mgre = cfg.mgre.iter().flat_map(|m| m.vlans.iter());
    for v in cfg.tunnels.iter().flat_map(|t| t.vlans.iter()).chain(mgre) {
        // Ids from a validated VlanSet are always in range.
        let _ = vlans.insert(v);
    }
    PortConfig {
        vlans,
        untagged_vlan: Some(cfg.upstream_port_vlan_id),
    }
}

impl Dataplane {
    /// The I/O counters with the forwarding workers' added to the loop's
    /// (what a worker forwards never passes the loop), and the workers'
    /// forwarded frames added to `switch`.
    fn io_counters(&self, switch: &mut SwitchCounters) -> IoCounters {
        let mut io = IoCounters {
            forward: self.fwd.counters().clone(),
            ..self.io.clone()
        };
        if let Some(w) = &self.workers {
            w.add_counters(&mut io, switch);
        }
        io
    }

    fn stats(&self, now: Instant) -> Stats {
        let tunnels = self.endpoint.stats(now);
        let mut switch = self.switch.counters().clone();
        let io = self.io_counters(&mut switch);
        Stats {
            name: self.name.clone(),
            version: crate::api::DAEMON_VERSION.to_string(),
            config_digest: self.control.config_digest.clone(),
            uptime: (now - self.started).as_secs(),
            num_tunnels: tunnels.len(),
            tunnels,
            gre_peers: self
                .gre
                .peers(now)
                .map(|p| GrePeerStats {
                    port: p.port.0,
                    remote_ip: p.addr.to_string(),
                    key: p.key,
                })
                .collect(),
            l2tp: self.endpoint.counters().clone(),
            gre: self.gre.counters().clone(),
            switch,
            io,
            fdb_entries: self.switch.fdb_len(),
            fast_path: self.fast.as_ref().map_or_else(
                || FastPathStats {
                    mode: FastPathMode::Off.to_string(),
                    ..FastPathStats::default()
                },
                FastPath::stats,
            ),
            restart: self.restart.clone(),
            monitoring: self.monitor.stats(now),
            operations: self.operations.counters().clone(),
            services: self.svc.stats(),
            control: self.control.stats(),
            captures: self.captures.stats(),
            mcast: self.mcast_stats(now),
            clients: self.client_stats(),
            bounce: self.bounces.counters.clone(),
            workers: self.workers.as_ref().map(crate::workers::Workers::stats),
        }
    }

    /// Take back a state file's tunnels and peers (a restart), then the
    /// FDB entries of adopted fast-path maps.
    fn restore(&mut self, now: Instant) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        self.restart.state_file = path.display().to_string();
        let mut saved_fdb = Vec::new();
        match read_state(&path) {
            Ok(None) => {}
            Ok(Some(state)) if state.edge != self.name => {
                warn!(file = %path.display(), edge = %state.edge, "state file of another edge; not taken");
            }
            Ok(Some(state)) => {
                let r = self.endpoint.restore(now, state.l2tp);
                let gre_refused = self.gre.restore(now, &state.gre);
                self.restart.restored_tunnels = r.tunnels;
                self.restart.restored_sessions = r.sessions;
                self.restart.restored_gre_peers = state.gre.len() - gre_refused.len();
                self.restart.refused = r.refused.into_iter().chain(gre_refused).collect();
                for why in &self.restart.refused {
                    warn!(file = %path.display(), "state file: refused {why}");
                }
                info!(
                    tunnels = r.tunnels,
                    sessions = r.sessions,
                    gre_peers = self.restart.restored_gre_peers,
                    "restart: took back the tunnels of the state file"
                );
                self.handle_events();
                saved_fdb = state.fdb;
            }
            Err(e) => {
                let bad = path.with_extension("bad");
                warn!(file = %path.display(), error = %format!("{e:#}"), moved_to = %bad.display(),
                      "state file unreadable; starting without it");
                let _ = std::fs::rename(&path, &bad);
            }
        }
        if let Some(f) = &mut self.fast {
            let mut restored = 0;
            for (vlan, mac, port) in f.take_adopted_fdb() {
                if self.switch.restore_entry(
                    vlan,
                    &tunterm_core::wire::ether::MacAddr(mac),
                    port,
                    now,
                ) {
                    restored += 1;
                }
            }
            self.restart.restored_fdb = restored;
            if restored > 0 {
                info!(
                    macs = restored,
                    "restart: took back the fast path's FDB entries"
                );
            }
        }
        // Then the file's MACs (restore_entry takes none the table holds,
        // none on a port that is gone or does not carry the VLAN).
        let mut from_file = 0;
        let mut bad = 0;
        let written = !saved_fdb.is_empty();
        let mut first_bad = None;
        for e in &saved_fdb {
            match control::fdb_key(e) {
                Ok((vlan, mac, port)) => {
                    if self.switch.restore_entry(vlan, &mac, port, now) {
                        from_file += 1;
                    }
                }
                Err(why) => {
                    bad += 1;
                    first_bad.get_or_insert(why);
                }
            }
        }
        self.restart.restored_fdb_file = from_file;
        if let Some(why) = first_bad {
            warn!(entries = bad, first = %why, "state file: refused FDB entries");
            self.restart
                .refused
                .push(format!("{bad} FDB entries, the first: {why}"));
        }
        if from_file > 0 {
            info!(
                macs = from_file,
                "restart: took back the FDB entries of the state file"
            );
        }
        self.sessions_changed = true;
        // What was taken back is what the file says: no write needed yet,
        // unless it held MACs: the next write leaves them out, so a crash
        // later never brings this table back.
        self.state_dirty = written;
    }

    /// Write the state file if something changed (at most every 200 ms),
    /// or at once, with the switch's MACs, for the exit (`exit`).
    fn persist(&mut self, now: Instant, exit: bool) {
        let Some(path) = &self.state_file else { return };
        if !exit && (!self.state_dirty || now < self.state_due) {
            return;
        }
        let fdb = if exit {
            self.switch
                .fdb()
                .filter(|&(_, _, port)| !is_host_port(port))
                .map(|(vlan, mac, port)| control::fdb_entry(vlan, &mac, port))
                .collect()
        } else {
            Vec::new()
        };
        let state = SavedState {
            version: STATE_VERSION,
            edge: self.name.clone(),
            l2tp: self.endpoint.snapshot(now),
            gre: self.gre.snapshot(),
            fdb,
        };
        match write_state(path, &state) {
            Ok(()) => self.restart.writes += 1,
            Err(e) => {
                self.restart.write_errors += 1;
                warn!(file = %path.display(), error = %format!("{e:#}"), "writing the state file");
            }
        }
        self.state_dirty = false;
        self.state_due = now + STATE_WRITE_EVERY;
    }

    /// A frame entered the switch on `ingress`: run the forwarding
    /// pipeline and write what it says.
    fn switch_frame(&mut self, now: Instant, ingress: PortId, frame: &[u8]) {
        let mark = (self.out.len(), self.out.immediate_count());
        let mut ports = Ports {
            switch: &mut self.switch,
            tunnels: EdgeTunnels {
                l2tp: &mut self.endpoint,
                gre: &mut self.gre,
                mtus: &self.mtus,
            },
            relay: Some(self.svc.relay_mut()),
        };
        // Without a capture the tap compiles to nothing.
        let _ = if self.captures.set.is_active() {
            self.fwd.handle(
                now,
                ingress,
                frame,
                &mut ports,
                &mut self.out,
                &mut self.captures.set,
            )
        } else {
            self.fwd
                .handle(now, ingress, frame, &mut ports, &mut self.out, &mut NoTap)
        };
        self.made += (self.out.len() - mark.0) as u64;
        self.write_actions(mark);
    }

    /// Send `frame` on `vlan` to `to` as from `from` (a DHCP reply from the
    /// relay on host port `from` to the client's tunnel).
    fn deliver(&mut self, now: Instant, from: PortId, to: PortId, vlan: u16, frame: &[u8]) {
        let mark = (self.out.len(), self.out.immediate_count());
        let mut ports = Ports {
            switch: &mut self.switch,
            tunnels: EdgeTunnels {
                l2tp: &mut self.endpoint,
                gre: &mut self.gre,
                mtus: &self.mtus,
            },
            relay: None,
        };
        if self.captures.set.is_active() {
            let tap = &mut self.captures.set;
            tap.forget_ingress();
            self.fwd
                .deliver(now, from, to, vlan, frame, &mut ports, &mut self.out, tap);
        } else {
            let tap = &mut NoTap;
            self.fwd
                .deliver(now, from, to, vlan, frame, &mut ports, &mut self.out, tap);
        }
        self.write_actions(mark);
    }

    /// Write the actions from `mark` (their number, and
    /// [`Actions::immediate_count`], before the call) on: trunk frames and
    /// host-port frames now, relayed DHCP to the servers; tunnel packets
    /// stay queued for [`Dataplane::flush_tunnel_tx`] (flushed here once a
    /// batch is full).
    fn write_actions(&mut self, (mark, immediate): (usize, usize)) {
        // Nothing to write now (tunnel packets, drops): skip the walk.
        let from = if self.out.immediate_count() == immediate {
            self.out.len()
        } else {
            mark
        };
        for o in self.out.iter_from(from) {
            match o {
                Out::Trunk { frame, .. } => match self.trunk.get_ref().send(frame) {
                    Ok(_) => {
                        self.io.trunk_tx += 1;
                        self.io.trunk_tx_bytes += frame.len() as u64;
                    }
                    Err(e) => {
                        self.io.trunk_tx_errors += 1;
                        debug!(error = %e, "trunk send failed");
                    }
                },
                Out::HostPort { port, frame, .. } => {
                    let vid = (port.0 - tunterm_core::proto::bridge::HOST_PORT_BASE) as u16;
                    self.svc.send_to_host_port(vid, frame);
                }
                Out::Relayed { .. } => self.svc.send_relayed(),
                Out::Tunnel { .. } | Out::Drop { .. } => {}
            }
        }
        if self.out.tunnel_count() >= SEND_BATCH || self.out.byte_len() >= TX_BYTES {
            self.flush_tunnel_tx();
        }
    }

    /// Send the queued tunnel packets: consecutive ones for the same
    /// socket in one system call (at most [`SEND_BATCH`]). What the kernel
    /// refuses is dropped and counted, as a single send's error would be.
    fn flush_tunnel_tx(&mut self) {
        if self.out.tunnel_count() == 0 {
            self.out.clear();
            return;
        }
        if self
            .captures
            .set
            .watches(&tunterm_core::proto::capture::Point::Wire)
        {
            let now = Instant::now();
            for o in self.out.iter() {
                if let Out::Tunnel {
                    carrier,
                    peer,
                    packet,
                    ..
                } = o
                {
                    let local = local_addr(&self.cfg, self.port, carrier, peer.ip());
                    self.captures
                        .wire(now, Direction::Outbound, carrier, local, peer, packet);
                }
            }
        }
        let mut batch: Vec<(SocketAddr, &[u8])> = Vec::with_capacity(SEND_BATCH);
        let mut to: Option<(Carrier, bool)> = None;
        for o in self.out.iter() {
            let Out::Tunnel {
                carrier,
                peer,
                packet,
                ..
            } = o
            else {
                continue;
            };
            let here = (carrier, peer.is_ipv6());
            if to != Some(here) || batch.len() >= SEND_BATCH {
                if let Some(sock) = to {
                    send_tunnel_batch(&self.socks, sock, &batch, &mut self.io);
                }
                batch.clear();
                to = Some(here);
            }
            batch.push((peer, packet));
        }
        if let Some(sock) = to {
            send_tunnel_batch(&self.socks, sock, &batch, &mut self.io);
        }
        self.out.clear();
    }

    fn flush_control(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            let v6 = t.dst.is_ipv6();
            let carrier = Carrier::L2tp(t.transport);
            let local = local_addr(&self.cfg, self.port, carrier, t.dst.ip());
            self.captures.wire(
                Instant::now(),
                Direction::Outbound,
                carrier,
                local,
                t.dst,
                &t.payload,
            );
            match self.socks.get(Carrier::L2tp(t.transport), v6) {
                Some(s) => {
                    if let Err(e) = s.try_send(&t.payload, t.dst) {
                        warn!(error = %e, peer = %t.dst, "control send failed");
                    }
                }
                None => warn!(peer = %t.dst, "no socket for {:?}", t.transport),
            }
        }
        while let Some((dst, payload)) = self.gre.poll_transmit() {
            let peer = SocketAddr::new(dst, 0);
            let local = local_addr(&self.cfg, self.port, Carrier::Gre, dst);
            self.captures.wire(
                Instant::now(),
                Direction::Outbound,
                Carrier::Gre,
                local,
                peer,
                &payload,
            );
            if let Some(s) = self.socks.get(Carrier::Gre, dst.is_ipv6()) {
                let _ = s.try_send(&payload, SocketAddr::new(dst, 0));
            }
        }
    }

    fn handle_events(&mut self) {
        while let Some(ev) = self.endpoint.poll_event() {
            self.state_dirty = true;
            match ev {
                Event::TunnelUp {
                    ccid,
                    peer,
                    host_name,
                } => {
                    info!(tunnel_id = ccid, %peer, ap = %host_name, "tunnel up");
                    self.control.emit(|| ApiEvent::TunnelUp {
                        tunnel_id: ccid,
                        peer: peer.to_string(),
                        ap: host_name,
                    });
                }
                Event::TunnelDown {
                    ccid,
                    peer,
                    was_up,
                    reason,
                } => {
                    info!(tunnel_id = ccid, %peer, was_up, reason = ?reason, "tunnel down");
                    self.control.emit(|| ApiEvent::TunnelDown {
                        tunnel_id: ccid,
                        peer: peer.to_string(),
                        was_up,
                        reason: control::close_reason(&reason),
                    });
                }
                Event::SessionUp { ccid, session_id } => {
                    self.sessions_changed = true;
                    self.session_up(ccid, session_id);
                    self.label_session(session_id);
                    self.control.emit(|| ApiEvent::SessionUp {
                        tunnel_id: ccid,
                        session_id,
                    });
                }
                Event::SessionDown {
                    ccid,
                    session_id,
                    reason,
                } => {
                    self.sessions_changed = true;
                    let flushed = self.switch.remove_port(PortId(session_id));
                    self.captures.set.remove_port(PortId(session_id));
                    self.fwd.remove_port(PortId(session_id));
                    info!(tunnel_id = ccid, session_id, flushed_macs = flushed, reason = ?reason, "session down");
                    self.control.emit(|| ApiEvent::SessionDown {
                        tunnel_id: ccid,
                        session_id,
                        reason: control::close_reason(&reason),
                        flushed_macs: flushed,
                    });
                }
                Event::PeerCdn { .. } => {}
            }
        }
        while let Some(ev) = self.gre.poll_event() {
            self.state_dirty = true;
            match ev {
                GreEvent::PeerUp { port, peer } => {
                    self.sessions_changed = true;
                    let Some(m) = &self.cfg.mgre else { continue };
                    info!(port = port.0, ap = %peer.addr, key = ?peer.key, vlans = %m.vlans, "mGRE peer up");
                    self.switch.add_port(
                        port,
                        PortConfig {
                            vlans: m.vlans.clone(),
                            untagged_vlan: Some(m.default_vlan),
                        },
                    );
                    self.label_gre_peer(port, peer.addr);
                    self.control.emit(|| ApiEvent::PeerAdded {
                        port: port.0,
                        ap: peer.addr.to_string(),
                        key: peer.key,
                    });
                }
                GreEvent::PeerDown { port, peer, reason } => {
                    self.sessions_changed = true;
                    let flushed = self.switch.remove_port(port);
                    self.captures.set.remove_port(port);
                    self.fwd.remove_port(port);
                    info!(port = port.0, ap = %peer.addr, flushed_macs = flushed, reason = ?reason, "mGRE peer down");
                    self.control.emit(|| ApiEvent::PeerRemoved {
                        port: port.0,
                        ap: peer.addr.to_string(),
                        reason: format!("{reason:?}").to_lowercase(),
                        flushed_macs: flushed,
                    });
                }
            }
        }
        for (healthy, failing) in self.monitor.take_health_changes() {
            self.control.emit(|| ApiEvent::Health {
                state: if healthy { "healthy" } else { "failed" }.into(),
                failing,
            });
        }
    }

    fn session_up(&mut self, ccid: u32, sid: u32) {
        let Some(s) = self.endpoint.session(sid) else {
            return;
        };
        let Some(t) = s.profile.and_then(|i| self.cfg.tunnels.get(i)) else {
            warn!(
                session_id = sid,
                "session without a tunnel profile; closing"
            );
            self.endpoint
                .close_session(Instant::now(), sid, l2tp_wire::cdn::ADMINISTRATIVE);
            return;
        };
        // Ethernet (raw) mode: untagged frames are the tunnel's first VLAN.
        // Ethernet VLAN (tagged) mode: every frame carries its tag.
        let untagged_vlan = (s.pw_type == pw::ETHERNET).then_some(t.default_vlan);
        info!(tunnel_id = ccid, session_id = sid, mxtunnel = %t.name, vlans = %t.vlans, ?untagged_vlan,
              transport = ?s.transport, sublayer = s.sublayer, sequencing = s.drop_out_of_order, "session up");
        self.switch.add_port(
            PortId(sid),
            PortConfig {
                vlans: t.vlans.clone(),
                untagged_vlan,
            },
        );
    }

    /// Read a batch from a tunnel socket (one `recvmmsg`) and handle it;
    /// true once the socket is empty (or failed).
    fn drain_tunnel(&mut self, carrier: Carrier, sock: &TunnelSocket, rx: &mut RecvBatch) -> bool {
        let got = sock.try_recv_batch(rx);
        self.io.tunnel_rx_truncated += rx.truncated();
        if !received(got, "tunnel") {
            return true;
        }
        self.io.tunnel_rx += rx.len() as u64;
        for (pkt, from) in rx.iter() {
            self.io.tunnel_rx_bytes += pkt.len() as u64;
            self.tunnel_packet(carrier, from, pkt);
        }
        false
    }

    /// One packet from a tunnel socket (read here or by a forwarding
    /// worker, which counted it).
    fn tunnel_packet(&mut self, carrier: Carrier, from: SocketAddr, pkt: &[u8]) {
        {
            let now = Instant::now();
            let here = local_addr(&self.cfg, self.port, carrier, from.ip());
            self.captures
                .wire(now, Direction::Inbound, carrier, here, from, pkt);
            match carrier {
                Carrier::L2tp(t) => match self.endpoint.handle_datagram(now, t, from, pkt) {
                    Incoming::Data {
                        session_id,
                        payload,
                    } => self.switch_frame(now, PortId(session_id), payload),
                    Incoming::Control => {
                        self.flush_control();
                        self.handle_events();
                    }
                    Incoming::Dropped(d) => {
                        let why = capture::l2tp_drop_name(d);
                        self.captures.dropped(now, why, carrier, here, from, pkt);
                    }
                },
                Carrier::Gre => {
                    let local = self.local_for(from.ip());
                    match self.gre.handle_packet(now, from.ip(), local, pkt) {
                        GreIncoming::Data { port, payload } => {
                            // A first packet may have made the peer a port.
                            self.handle_events();
                            self.switch_frame(now, port, payload)
                        }
                        GreIncoming::Keepalive => {
                            self.handle_events();
                            self.flush_control();
                        }
                        GreIncoming::Dropped(d) => {
                            let why = capture::gre_drop_name(d);
                            self.captures.dropped(now, why, carrier, here, from, pkt);
                        }
                    }
                }
            }
        }
    }

    fn local_for(&self, peer: IpAddr) -> IpAddr {
        match peer {
            IpAddr::V4(_) => self.cfg.tunnel_ip.map(IpAddr::V4),
            IpAddr::V6(_) => self.cfg.tunnel_ip6.map(IpAddr::V6),
        }
        .unwrap_or(peer)
    }

    /// Read a batch of frames from the trunk (one `recvmmsg`) and handle
    /// it; true once the socket is empty (its readiness then cleared).
    fn drain_trunk(&mut self, rx: &mut RecvBatch) -> bool {
        let got = self
            .trunk
            .try_io(tokio::io::Interest::READABLE, |s| s.recv_batch(rx));
        self.io.trunk_rx_truncated += rx.truncated();
        if !received(got, "trunk") {
            return true;
        }
        self.io.trunk_rx += rx.len() as u64;
        for (frame, _) in rx.iter() {
            self.io.trunk_rx_bytes += frame.len() as u64;
            self.trunk_frame(frame);
        }
        self.trunk_batch_done();
        false
    }

    /// One frame off the trunk (read here or by a forwarding worker, which
    /// counted it).
    fn trunk_frame(&mut self, frame: &[u8]) {
        let now = Instant::now();
        if !self.monitor.take_trunk_frame(now, frame) {
            self.switch_frame(now, TRUNK, frame);
        }
    }

    /// After a batch of trunk frames.
    fn trunk_batch_done(&mut self) {
        // An ARP answer can change the health: act on it in this turn, not
        // at the next timer (stats must not say healthy while SCCRQs are
        // still refused).
        if self
            .monitor
            .apply(Instant::now(), &mut self.endpoint, &mut self.gre)
        {
            self.sessions_changed = true;
            self.flush_control();
            self.handle_events();
        }
    }

    /// What a forwarding worker handed over: handled as if read here.
    fn handle_punts(&mut self, punts: &crate::workers::PuntBatch) {
        let mut trunk = false;
        for (src, bytes) in punts.iter() {
            match src {
                crate::workers::Source::Trunk => {
                    trunk = true;
                    self.trunk_frame(bytes);
                }
                crate::workers::Source::Tunnel(carrier, from) => {
                    // Not served any more (mGRE turned off, an address
                    // gone): the loop would not have read it.
                    let served = self.socks.slots.iter().any(|(c, ip, _)| {
                        *c == carrier && ip.is_ipv4() == from.ip().to_canonical().is_ipv4()
                    });
                    if served {
                        self.tunnel_packet(carrier, from, bytes)
                    } else {
                        self.io.punted_stale += 1;
                    }
                }
            }
        }
        if trunk {
            self.trunk_batch_done();
        }
    }

    /// A reload changed the tunnel sockets: the forwarding workers take
    /// theirs for the new set and close the old (`Workers::resocket`).
    fn resocket_workers(&mut self) {
        let pairs = self.socks.worker_pairs();
        if let Some(w) = &mut self.workers {
            w.resocket(&pairs);
        }
    }

    /// After a reload moved the trunk: the forwarding workers' packet
    /// sockets follow it (theirs were bound to the old interface, where
    /// they would write what they forward).
    fn move_workers(&mut self) {
        let Some(w) = &mut self.workers else {
            return;
        };
        if w.upstream() == self.upstream {
            return;
        }
        match w.move_trunk(&self.upstream, self.trunk.get_ref()) {
            Ok(()) => info!(to = %self.upstream, "forwarding workers moved to the new trunk"),
            Err(e) => {
                warn!(error = %format!("{e:#}"),
                      "forwarding workers stopped (the trunk moved): the event loop forwards alone");
                self.workers = None;
            }
        }
    }

    /// The forwarding workers' table and marks (before the fast path's
    /// sync, which clears `sessions_changed`).
    fn sync_workers(&mut self, now: Instant) {
        if let Some(w) = &mut self.workers {
            w.sync(
                now,
                &self.endpoint,
                &mut self.gre,
                &mut self.switch,
                &self.mtus,
                self.captures.set.is_active(),
                self.sessions_changed,
            );
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.gre.handle_timeout(now);
        self.switch.handle_timeout(now);
        self.run_monitor(now);
        self.svc.handle_timeout(now);
        self.run_mcast(now);
        self.run_clients(now);
        self.end_bounces(now, false);
        self.flush_control();
        self.handle_events();
    }

    /// Upstream monitoring: expire probes, start due ones (ARP on the
    /// trunk), act on a change of health.
    fn run_monitor(&mut self, now: Instant) {
        let (trunk, io) = (&self.trunk, &mut self.io);
        self.monitor
            .handle_timeout(now, |frame| match trunk.get_ref().send(frame) {
                Ok(_) => {
                    io.trunk_tx += 1;
                    io.trunk_tx_bytes += frame.len() as u64;
                }
                Err(_) => io.trunk_tx_errors += 1,
            });
        if self.monitor.apply(now, &mut self.endpoint, &mut self.gre) {
            self.sessions_changed = true;
        }
    }

    /// A probe of the upstream monitoring answered.
    fn on_probe_result(&mut self, r: ProbeResult) {
        let now = Instant::now();
        self.monitor.handle_result(now, r);
        self.run_monitor(now);
        self.flush_control();
        self.handle_events();
    }

    /// Bring the fast path's maps up to date with the switch.
    fn sync_fast_path(&mut self, now: Instant) {
        if let Some(f) = &mut self.fast {
            // A capture sees what the slow path forwards: while one runs,
            // the fast path forwards nothing.
            f.set_capture_bypass(now, self.captures.set.is_active());
            let (endpoint, mtus, link_mtu) = (&self.endpoint, &self.mtus, self.link_mtu);
            f.handle(
                now,
                endpoint,
                &mut self.gre,
                &mut self.switch,
                self.sessions_changed,
                |port| mtus.of(endpoint, port).unwrap_or(link_mtu),
            );
        }
        self.sessions_changed = false;
    }

    fn next_wake(&self) -> Instant {
        let fallback = Instant::now() + Duration::from_secs(1);
        [
            self.endpoint.poll_timeout(),
            self.gre.poll_timeout(),
            self.switch.poll_timeout(),
            self.fast.as_ref().map(FastPath::poll_timeout),
            self.monitor.poll_timeout(),
            self.svc.poll_timeout(),
            self.fwd.policy().poll_timeout(),
            self.fwd.policy().inner().poll_timeout(),
            (self.state_dirty && self.state_file.is_some()).then_some(self.state_due),
            self.captures.poll_timeout(),
            self.bounces.poll_timeout(),
            self.workers
                .as_ref()
                .map(crate::workers::Workers::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(fallback)
        .min(fallback)
    }
}

/// tunterm's address and port for a datagram to or from `peer` on
/// `carrier` (the `wire` capture point's outer headers).
fn local_addr(cfg: &EdgeConfig, port: u16, carrier: Carrier, peer: IpAddr) -> SocketAddr {
    let ip = match peer {
        IpAddr::V4(_) => cfg.tunnel_ip.map(IpAddr::V4),
        IpAddr::V6(_) => cfg.tunnel_ip6.map(IpAddr::V6),
    }
    .unwrap_or(peer);
    let port = match carrier {
        Carrier::L2tp(Transport::Udp) => port,
        _ => 0,
    };
    SocketAddr::new(ip, port)
}

/// Whether a batch read got something; a socket that would block (empty)
/// or failed (logged, `what` the socket) ends its drain.
fn received<T>(got: io::Result<T>, what: &str) -> bool {
    match got {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => {
            debug!(error = %e, socket = what, "recv");
            false
        }
    }
}

/// Send `msgs` on the tunnel socket of `carrier` and family (`v6`) with
/// one `sendmmsg`, counting what was sent and what was refused.
fn send_tunnel_batch(
    socks: &Socks,
    (carrier, v6): (Carrier, bool),
    msgs: &[(SocketAddr, &[u8])],
    io: &mut IoCounters,
) {
    let n = msgs.len();
    let Some(sock) = socks.get(carrier, v6) else {
        io.tunnel_tx_errors += n as u64;
        return;
    };
    io.tunnel_tx_calls += 1;
    match sock.try_send_batch(msgs) {
        Ok(sent) => {
            io.tunnel_tx += sent as u64;
            io.tunnel_tx_bytes += msgs[..sent.min(n)]
                .iter()
                .map(|(_, m)| m.len() as u64)
                .sum::<u64>();
            io.tunnel_tx_errors += (n - sent) as u64;
        }
        Err(e) => {
            io.tunnel_tx_errors += n as u64;
            debug!(error = %e, ?carrier, "tunnel send failed");
        }
    }
}

/// The state file at `path`: None if there is none.
fn read_state(path: &Path) -> anyhow::Result<Option<SavedState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: SavedState = serde_json::from_str(&text).context("not a tunterm state file")?;
    if state.version != STATE_VERSION {
        bail!(
            "state file version {} (this tunterm reads {STATE_VERSION})",
            state.version
        );
    }
    Ok(Some(state))
}

/// Write the state file whole or not at all (a new file renamed over the
/// old one): a daemon killed mid-write leaves the previous one.
fn write_state(path: &Path, state: &SavedState) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(state)?;
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The pin directory to use: `dir` if it is (or would be created) on a
/// bpffs; for the default one, None with a warning when not.
fn pin_dir_for(opts: &DaemonOptions) -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = &opts.pin_dir else {
        return Ok(None);
    };
    if opts.fast_path == FastPathMode::Off {
        return Ok(None);
    }
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if tunterm_ebpf::is_bpffs(existing) {
        return Ok(Some(dir.clone()));
    }
    if opts.pin_dir_is_default {
        warn!(
            pin_dir = %dir.display(),
            "no bpffs there (`ip netns exec` remounts /sys): the fast path is not pinned and \
             stops while tunterm restarts; mount one (mount -t bpf bpf DIR) and pass --pin-dir DIR"
        );
        return Ok(None);
    }
    bail!(
        "--pin-dir {}: not on a bpffs (mount -t bpf bpf {}), or --pin-dir none",
        dir.display(),
        dir.display()
    )
}

/// The smallest MTU of the AP-facing interfaces: what too-big replies and
/// the MSS clamp work from. 1500 when the configuration names none.
fn link_mtu_of(ifaces: &[String]) -> anyhow::Result<u16> {
    let mut min: Option<u16> = None;
    for name in ifaces {
        let mtu = link_mtu(name).with_context(|| format!("downstream port {name:?}"))?;
        min = Some(min.map_or(mtu, |m| m.min(mtu)));
    }
    Ok(min.unwrap_or(1500))
}

/// An interface's MTU (up to 65535: loopback's 65536 is cut to fit); an
/// error naming what is wrong when there is no such interface or its MTU
/// cannot be read.
fn link_mtu(iface: &str) -> anyhow::Result<u16> {
    let mtu = match crate::io::netlink::mtu(iface) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            bail!("no interface of that name on this host")
        }
        r => r?,
    };
    Ok(u16::try_from(mtu).unwrap_or(u16::MAX))
}

/// Every interface the configuration names (the upstream ones, or the
/// `--upstream` override, and the downstream ones) exists on this host
/// with a readable MTU. A port that is not there is refused with its name
/// rather than started without: the edge would never see its APs.
pub fn check_ports(cfg: &EdgeConfig, upstream: Option<&str>) -> anyhow::Result<()> {
    let upstream: Vec<String> = match upstream {
        Some(u) => vec![u.to_string()],
        None => cfg.upstream_interfaces.clone(),
    };
    for (role, list) in [
        ("upstream", &upstream),
        ("downstream", &cfg.downstream_interfaces),
    ] {
        for name in list {
            link_mtu(name).with_context(|| format!("tunterm_port_config: {role} port {name:?}"))?;
        }
    }
    Ok(())
}

/// The tunnel sockets the configuration calls for: carrier and local
/// address, in the order they are opened.
fn socket_keys(cfg: &EdgeConfig) -> Vec<(Carrier, IpAddr)> {
    let addrs: Vec<IpAddr> = cfg
        .tunnel_ip
        .map(IpAddr::V4)
        .into_iter()
        .chain(cfg.tunnel_ip6.map(IpAddr::V6))
        .collect();
    let wants = |p: TunnelProtocol| cfg.tunnels.iter().any(|t| t.protocol == p);
    let mut keys = Vec::new();
    for &ip in &addrs {
        if wants(TunnelProtocol::Udp) {
            keys.push((Carrier::L2tp(Transport::Udp), ip));
        }
        if wants(TunnelProtocol::Ip) {
            keys.push((Carrier::L2tp(Transport::Ip), ip));
        }
        if cfg.mgre.is_some() {
            keys.push((Carrier::Gre, ip));
        }
    }
    keys
}

/// Open the tunnel sockets the configuration calls for; those of `keep`
/// with the same carrier and address are taken over as they are (a reload:
/// their queued packets are not lost), the others of `keep` are left to
/// close when it is dropped.
fn open_sockets(cfg: &EdgeConfig, port: u16, keep: Option<&Socks>) -> anyhow::Result<Socks> {
    let mut slots = Vec::new();
    for (carrier, ip) in socket_keys(cfg) {
        let kept = keep.and_then(|k| {
            k.slots
                .iter()
                .find(|(c, a, _)| (*c, *a) == (carrier, ip))
                .map(|(_, _, s)| s.clone())
        });
        if let Some(s) = kept {
            slots.push((carrier, ip, s));
            continue;
        }
        let s = match carrier {
            Carrier::L2tp(Transport::Udp) => TunnelSockets::udp(SocketAddr::new(ip, port), true)
                .with_context(|| {
                    format!("binding L2TP/UDP to {ip}:{port} (is tunterm_ip_config an address of this host?)")
                })?,
            Carrier::L2tp(Transport::Ip) => TunnelSockets::raw(ip, IP_PROTO_L2TP, true)
                .with_context(|| format!("opening L2TP/IP (protocol 115) on {ip}"))?,
            Carrier::Gre => TunnelSockets::raw(ip, IP_PROTO_GRE, true)
                .with_context(|| format!("opening GRE (protocol 47) on {ip}"))?,
        };
        slots.push((carrier, ip, Rc::new(s)));
    }
    Ok(Socks { slots })
}

/// Run the daemon until `shutdown` resolves. [`Exit::Stop`]: close every
/// tunnel with StopCCN (result 6, shutting down), wait briefly for the
/// acks, detach the fast path and remove its pins and the state file.
/// [`Exit::Restart`]: write the state file and leave everything up.
/// Returns how it ended: [`Exit::Reexec`] when a `restart` request asked
/// for the daemon to exec itself again.
///
/// At start, a state file (`opts.state_file`) left by an earlier run is
/// taken back: its tunnels come back established, and pinned fast-path
/// maps and links (`opts.pin_dir`) are taken over with their entries.
pub async fn run(
    cfg: EdgeConfig,
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = Exit>,
) -> anyhow::Result<Exit> {
    if cfg.tunnel_ip.is_none() && cfg.tunnel_ip6.is_none() {
        bail!("mxedge.tunterm_ip_config: an ip or ip6 is required");
    }
    let upstream = match (&opts.upstream, cfg.upstream_interfaces.first()) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => {
            bail!("no upstream interface: set tunterm_port_config.upstream_ports or --upstream")
        }
    };
    check_ports(&cfg, Some(&upstream))?;
    // The edge's host ports come first: tunterm_ip_config's address may be
    // on one, and the tunnel sockets bind to it.
    let mut switch = Switch::new(tunterm_core::proto::bridge::DEFAULT_AGING);
    switch.add_port(TRUNK, trunk_port(&cfg));
    let ip_config_port = cfg.tunnel_ip.is_some_and(|ip| !services::is_local(ip));
    let mut svc = services::Services::new(ip_config_port);
    svc.apply(&mut switch, &cfg, services::desired(&cfg, ip_config_port));
    let socks = open_sockets(&cfg, opts.port, None)?;
    let trunk = PacketSocket::bind_with_rx_ring(&upstream)
        .with_context(|| format!("opening the upstream trunk {upstream}"))?;
    let trunk = Rc::new(trunk.into_async()?);
    let listener = control::bind(&opts.control_socket, opts.control_group.as_deref())?;
    let http_listener = opts.metrics.map(http::bind).transpose()?;
    // Ids and cookies from a CSPRNG seeded by the OS: a cookie is all that
    // authenticates a data message, so no AP may predict another's.
    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .context("reading a random seed from the OS")?;
    let operations_seed = OsRng
        .try_next_u64()
        .context("reading a random seed from the OS")?;
    let gre = GreEndpoint::new(GreConfig {
        peer_timeout: cfg
            .mgre
            .as_ref()
            .map_or(Duration::from_secs(30), |m| m.peer_timeout),
        admit: cfg.ap_subnets.clone(),
        ..GreConfig::default()
    });
    let downstream: Vec<String> = cfg.downstream_interfaces.clone();
    let pin_dir = pin_dir_for(&opts)?;
    let fast = FastPath::start(
        opts.fast_path,
        &downstream,
        &upstream,
        &switch,
        cfg.tunnel_ip,
        cfg.tunnel_ip6,
        MapOptions {
            pin_dir: pin_dir.as_deref(),
            capacity: opts.fast_path_capacity,
        },
    )?;
    let (monitor, mut probe_results) = UpstreamMonitor::new(Instant::now(), &cfg, &opts.monitor);
    let (control, mut control_jobs) = control::serve(
        listener,
        crate::api::config_digest(&cfg.raw),
        opts.config.clone(),
    );
    if let Some(l) = http_listener {
        http::serve(l, control.local_api(), opts.metrics_options)?;
    }
    let link_mtu = link_mtu_of(&downstream)?;
    let mut dp = Dataplane {
        name: cfg.name.clone(),
        started: Instant::now(),
        endpoint: Endpoint::new(endpoint_config(&cfg, &opts), seed),
        gre,
        switch,
        socks,
        trunk,
        link_mtu,
        mtus: tunnel_mtus(&cfg, link_mtu),
        fwd: Forwarder::with_policy(
            ForwardConfig {
                link_mtu,
                icmp_src4: cfg.tunnel_ip,
                icmp_src6: cfg.tunnel_ip6,
            },
            Containment::wrapping(
                clients::client_config(&cfg),
                McastPolicy::new(mcast::mcast_config(&cfg, ip_config_port), Instant::now()),
            ),
        ),
        out: Actions::with_capacity(TX_BYTES + BUF_LEN),
        made: 0,
        io: IoCounters::default(),
        fast,
        sessions_changed: true,
        state_file: opts.state_file.clone(),
        state_dirty: false,
        state_due: Instant::now(),
        restart: RestartStats::default(),
        monitor,
        operations: Operations::new(operations_seed),
        svc,
        control,
        captures: capture::Captures::default(),
        upstream: upstream.clone(),
        upstream_override: opts.upstream.clone(),
        port: opts.port,
        bounces: bounce::Bounces::default(),
        monitor_opts: opts.monitor.clone(),
        rewired: None,
        reexec: false,
        workers: None,
        workers_override: opts.workers,
        cfg,
    };
    dp.restore(Instant::now());
    let mut punts = None;
    let threads = opts.workers.or(dp.cfg.workers()).unwrap_or(1);
    if threads > 1 {
        let (w, rx) = crate::workers::Workers::start(
            threads - 1,
            &upstream,
            dp.trunk.get_ref(),
            &dp.socks.worker_pairs(),
        )?;
        info!(
            workers = threads - 1,
            "forwarding workers started beside the event loop"
        );
        dp.workers = Some(w);
        punts = Some(rx);
    }
    let listening: Vec<String> = dp
        .socks
        .slots
        .iter()
        .map(|(c, ip, _)| format!("{c:?}/{ip}"))
        .collect();
    info!(
        name = %dp.name,
        tunnel_ip = ?dp.cfg.tunnel_ip,
        tunnel_ip6 = ?dp.cfg.tunnel_ip6,
        sockets = %listening.join(","),
        upstream = %upstream,
        link_mtu = dp.link_mtu,
        tunnels = dp.cfg.tunnels.len(),
        mgre = dp.cfg.mgre.is_some(),
        control_socket = %opts.control_socket.display(),
        "tunterm running"
    );
    control::announce(&opts.control_socket, opts.control_group.as_deref());
    // Forwarding is up (sockets bound, trunk open, fast path attached, an
    // earlier run's tunnels taken back): tell systemd (Type=notify), and
    // ping its watchdog from this loop, so a loop that stops turning is
    // restarted (through the hitless path: pins and state file stay).
    let mut notifier = Notifier::from_env(Instant::now());
    notifier.ready(&format!(
        "forwarding: {} tunnels, {} mGRE peers taken back",
        dp.endpoint.conn_count(),
        dp.gre.peer_count()
    ));
    if let Some(every) = notifier.watchdog_every() {
        info!(
            every_ms = every.as_millis() as u64,
            "pinging the service manager's watchdog"
        );
    }
    let mut buf = RecvBatch::new(BATCH, BUF_LEN);
    // Every tunnel socket and the trunk: one source each, with a budget
    // per turn (inputs.rs).
    let mut inputs = inputs::Inputs::new(&dp, true);
    let mut turn = 0usize;
    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    // One turn of the loop: wait until something is ready; serve the one
    // thing the select picked (signals, probes and the control socket
    // before packets); then give every readable packet source (each tunnel
    // socket, the trunk) its budget; then run the timers if due. A turn is
    // bounded whatever the input rate, and everything is served every
    // turn: a flood on one socket is shed (counted), it does not hold the
    // loop. The timers' branch is last: it only wakes an idle loop (with
    // hundreds of tunnels a timer is due nearly every turn under load, and
    // ahead of the others it would starve them).
    let exit = loop {
        let wake = dp.next_wake();
        let sleep = notifier.poll_timeout().map_or(wake, |w| w.min(wake));
        let (mut taps, mut relays) = dp.svc.poll_set();
        // A different host port first each turn: one busy port does not
        // hide the others.
        turn = turn.wrapping_add(1);
        let (nt, nr) = (taps.len().max(1), relays.len().max(1));
        taps.rotate_left(turn % nt);
        relays.rotate_left(turn % nr);
        tokio::select! {
            biased;
            exit = &mut shutdown => break exit,
            _ = hangup.recv() => dp.reload(opts.config.as_deref()),
            Some(r) = probe_results.recv() => dp.on_probe_result(r),
            Some(job) = control_jobs.recv() => dp.control_job(job),
            Some(p) = crate::workers::punted(&mut punts) => dp.handle_punts(&p),
            what = crate::io::hostport::readable(&taps, &relays) => dp.drain_services(what),
            r = inputs.readable() => r?,
            _ = tokio::time::sleep_until(sleep.into()) => {}
        }
        if let Some(r) = dp.rewired.take() {
            if r.sockets {
                inputs = inputs::Inputs::new(&dp, true);
                dp.move_workers();
            }
            if let Some(rx) = r.probes {
                probe_results = rx;
            }
        }
        let busy = inputs.serve(&mut dp, &mut buf).await?;
        let now = Instant::now();
        if now >= wake {
            dp.on_timeout(now);
        }
        notifier.handle_timeout(now);
        dp.flush_tunnel_tx();
        dp.captures.pump(Instant::now());
        dp.sync_workers(now);
        dp.sync_fast_path(now);
        dp.persist(now, false);
        if dp.reexec {
            break Exit::Reexec;
        }
        if busy {
            // Overloaded: let the runtime take in new I/O events (a control
            // connection, its reply's progress) and run the control tasks
            // now, not only when tokio's task budget runs out.
            tokio::task::yield_now().await;
        }
    };
    // A link left down would outlive tunterm.
    dp.end_bounces(Instant::now(), true);
    if exit != Exit::Stop {
        notifier.stopping("exiting for a restart: tunnels kept");
        dp.flush_tunnel_tx();
        dp.persist(Instant::now(), true);
        info!(
            tunnels = dp.endpoint.conn_count(),
            gre_peers = dp.gre.peer_count(),
            pinned = dp.fast.as_ref().is_some_and(|_| pin_dir.is_some()),
            "exiting for a restart: tunnels stay up, the state file and the pinned fast path are kept"
        );
        if exit == Exit::Reexec {
            // The control tasks write the "restarting" answer meanwhile.
            tokio::time::sleep(REEXEC_ANSWER_WAIT).await;
        }
        let _ = std::fs::remove_file(&opts.control_socket);
        return Ok(exit);
    }
    info!("shutting down: closing tunnels");
    notifier.stopping("shutting down: closing tunnels");
    let now = Instant::now();
    dp.endpoint.close_all(
        now,
        l2tp_wire::stopccn::SHUTTING_DOWN,
        "tunterm shutting down",
    );
    dp.gre.remove_all();
    dp.flush_control();
    dp.handle_events();
    // Wait for the StopCCNs' acks on every tunnel socket (retransmitting
    // on the timers), until every tunnel is closed or SHUTDOWN_WAIT.
    let started = Instant::now();
    let deadline = started + SHUTDOWN_WAIT;
    let closing = dp.endpoint.closing_count();
    let mut inputs = inputs::Inputs::new(&dp, false);
    while dp.endpoint.closing_count() > 0 && Instant::now() < deadline {
        let wake = dp.next_wake().min(deadline);
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = inputs.readable() => r?,
        }
        inputs.serve(&mut dp, &mut buf).await?;
        let now = Instant::now();
        if now >= wake {
            dp.on_timeout(now);
        }
        dp.flush_tunnel_tx();
    }
    let unacknowledged = dp.endpoint.closing_count();
    info!(
        tunnels = closing,
        acknowledged = closing - unacknowledged.min(closing),
        unacknowledged,
        waited_ms = started.elapsed().as_millis() as u64,
        "tunnels closed"
    );
    if let Some(f) = dp.fast.take() {
        f.unpin();
    }
    if let Some(path) = &dp.state_file {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(&opts.control_socket);
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tunterm-state-{}-{name}", std::process::id()))
    }

    #[test]
    fn the_state_file_round_trips_and_bad_ones_are_errors() {
        let path = tmp("rt");
        assert!(
            read_state(&path).unwrap().is_none(),
            "no file: nothing to take"
        );
        let state = SavedState {
            version: STATE_VERSION,
            edge: "e1".into(),
            l2tp: vec![],
            gre: vec![GrePeerSnapshot {
                port: 0xF000_0001,
                addr: "10.0.0.2".parse().unwrap(),
                key: Some(3),
                local: "10.0.0.1".parse().unwrap(),
            }],
            fdb: vec![FdbEntry {
                vlan: 10,
                mac: "02:00:00:00:00:01".into(),
                port: "3000000001".into(),
            }],
        };
        write_state(&path, &state).unwrap();
        assert!(!path.with_extension("tmp").exists());
        let back = read_state(&path).unwrap().unwrap();
        assert_eq!((back.edge.as_str(), &back.gre), ("e1", &state.gre));
        assert_eq!(
            back.fdb
                .iter()
                .map(control::fdb_key)
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            [(
                10,
                "02:00:00:00:00:01".parse().unwrap(),
                PortId(3_000_000_001)
            )]
        );
        let bad = |mac: &str, port: &str| {
            control::fdb_key(&FdbEntry {
                vlan: 10,
                mac: mac.into(),
                port: port.into(),
            })
            .unwrap_err()
        };
        assert!(bad("02:00:00:00:00", "trunk").contains("not a MAC address"));
        assert!(bad("02:00:00:00:00:01", "tunnel").contains("port \"tunnel\""));
        // An earlier build's file (no MACs) is read as one without them.
        std::fs::write(
            &path,
            br#"{"version": 1, "edge": "e1", "l2tp": [], "gre": []}"#,
        )
        .unwrap();
        assert!(read_state(&path).unwrap().unwrap().fdb.is_empty());
        std::fs::write(&path, b"{\"version\": 1, \"edge\": ").unwrap();
        let e = read_state(&path).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a tunterm state file"),
            "{e:#}"
        );
        std::fs::write(
            &path,
            br#"{"version": 9, "edge": "e1", "l2tp": [], "gre": []}"#,
        )
        .unwrap();
        let e = read_state(&path).unwrap_err();
        assert!(format!("{e:#}").contains("version 9"), "{e:#}");
        std::fs::remove_file(&path).unwrap();
    }
}
