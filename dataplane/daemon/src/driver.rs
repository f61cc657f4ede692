//! The daemon's event loop: read → proto → write, and timers.
//!
//! One thread owns everything: the tunnel sockets toward the APs (L2TPv3
//! over UDP and over IP protocol 115, GRE, each over IPv4 and IPv6), the
//! AF_PACKET socket on the upstream trunk, the L2TP [`Endpoint`], the mGRE
//! [`GreEndpoint`] and the [`Switch`]. Frames go tunnel → switch →
//! trunk/tunnel and trunk → switch → tunnel without leaving this loop. The
//! control socket ([`crate::api`]) is served beside it ([`control`]): the
//! loop only snapshots what a request asks for. The edge's own host ports,
//! routes and DHCP relay, and the reload on SIGHUP, are in [`services`].

mod control;
mod services;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};
use tunterm_control::{EdgeConfig, TunnelProtocol};

use crate::api::EventKind as ApiEvent;
use crate::io::afpacket::PacketSocket;
use crate::io::batch::RecvBatch;
use crate::io::tunnel::{SEND_BATCH, TunnelSocket};
use crate::io::xdp::{FastPath, FastPathStats, MapOptions, Mode as FastPathMode};
use crate::monitoring::{MonitorOptions, ProbeResult, UpstreamMonitor};
use crate::operations::{OperationCounters, Operations};
use tunterm_core::proto::bridge::{PortConfig, PortId, Switch, SwitchCounters, TRUNK, Verdict};
use tunterm_core::proto::gre::{
    GreConfig, GreCounters, GreEndpoint, GreEvent, GreIncoming, GrePeerSnapshot,
};
use tunterm_core::proto::l2tp::{
    AdmissionConfig, ConnSnapshot, ConnStats, Endpoint, EndpointConfig, EndpointCounters, Event,
    Incoming, PwProfile,
};
use tunterm_core::proto::monitor::MonitorStats;
use tunterm_core::proto::pmtu::{self, ClampResult, TooBig};
use tunterm_core::wire::ether::{self, FrameView};
use tunterm_core::wire::gre::IP_PROTO_GRE;
use tunterm_core::wire::l2tp::{self as l2tp_wire, IP_PROTO_L2TP, Transport, pw};

/// Largest datagram or frame handled.
const BUF_LEN: usize = 65_536 + 64;
/// Datagrams or frames read with one `recvmmsg` per readiness event before
/// other work runs.
const BATCH: usize = 64;

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
}

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
    /// Frames read from the trunk.
    pub trunk_rx: u64,
    /// Frames on the trunk too long to read whole, dropped.
    pub trunk_rx_truncated: u64,
    /// Frames written to the trunk.
    pub trunk_tx: u64,
    /// Trunk writes that failed (full socket buffer, link down).
    pub trunk_tx_errors: u64,
    /// Packets read from the tunnel sockets.
    pub tunnel_rx: u64,
    /// Packets on the tunnel sockets too long to read whole, dropped.
    pub tunnel_rx_truncated: u64,
    /// Data packets sent into tunnels.
    pub tunnel_tx: u64,
    /// Tunnel sends that failed.
    pub tunnel_tx_errors: u64,
    /// Frames for a tunnel port that is gone (raced a teardown).
    pub tunnel_tx_no_session: u64,
    /// Frames too big for their tunnel answered with ICMP (DF set / IPv6).
    pub too_big_icmp: u64,
    /// Frames too big for their tunnel, IPv4 without DF, sent fragmented:
    /// the outer packet by the kernel at the path MTU, or the inner packet
    /// by tunterm below it ([`IoCounters::inner_fragments`]).
    pub too_big_fragmented: u64,
    /// Frames too big for their tunnel dropped (no ICMP allowed).
    pub too_big_dropped: u64,
    /// IPv4 fragments sent through tunnels whose configured MTU is below
    /// the path's (the inner packet split by tunterm).
    pub inner_fragments: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// MACs announced on the trunk (new or moved behind a tunnel).
    pub mac_announcements: u64,
}

/// One FDB entry (`tunterm fdb`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// VLAN.
    pub vlan: u16,
    /// MAC, aa:bb:cc:dd:ee:ff.
    pub mac: String,
    /// "trunk", "host:<vlan>" (a host port), the L2TP session id, or the
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
}

/// What a tunnel socket carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    L2tp(Transport),
    Gre,
}

/// The tunnel sockets, by carrier and address family.
struct Socks {
    slots: Vec<(Carrier, bool, Rc<TunnelSocket>)>,
}

impl Socks {
    fn get(&self, carrier: Carrier, v6: bool) -> Option<&TunnelSocket> {
        self.slots
            .iter()
            .find(|(c, f, _)| *c == carrier && *f == v6)
            .map(|(_, _, s)| &**s)
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
    tx: Vec<u8>,
    flood: Vec<PortId>,
    /// Scratch for the fragments of an inner packet, kept for its capacity.
    frags: Vec<Vec<u8>>,
    /// Tunnel packets waiting for [`Dataplane::flush_tunnel_tx`]: carrier,
    /// destination and their bytes in `txq_bytes`.
    txq: Vec<(Carrier, SocketAddr, std::ops::Range<usize>)>,
    txq_bytes: Vec<u8>,
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
}

/// The MTU of the tunnel behind `port`: its mxtunnel's `mtu`, or the AP
/// link's when that is 0 or the port is an mGRE peer. None for the trunk.
fn tunnel_mtu_of(
    endpoint: &Endpoint,
    cfg: &EdgeConfig,
    link_mtu: u16,
    port: PortId,
) -> Option<u16> {
    if port == TRUNK {
        return None;
    }
    let configured = endpoint
        .session(port.0)
        .and_then(|s| s.profile)
        .and_then(|i| cfg.tunnels.get(i))
        .map_or(0, |t| t.mtu);
    Some(if configured == 0 {
        link_mtu
    } else {
        configured
    })
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn endpoint_config(cfg: &EdgeConfig, admission: AdmissionConfig) -> EndpointConfig {
    EndpointConfig {
        host_name: cfg.name.clone(),
        router_id: cfg.tunnel_ip.map_or(1, u32::from),
        profiles: profiles(cfg),
        admit: cfg.ap_subnets.clone(),
        admission,
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

/// Outer IP (+ UDP) header bytes in front of an L2TP or GRE packet.
fn outer_len(carrier: Carrier, v6: bool) -> usize {
    let ip = if v6 { 40 } else { 20 };
    match carrier {
        Carrier::L2tp(Transport::Udp) => ip + 8,
        _ => ip,
    }
}

impl Dataplane {
    fn stats(&self, now: Instant) -> Stats {
        let tunnels = self.endpoint.stats(now);
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
            switch: self.switch.counters().clone(),
            io: self.io.clone(),
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
        }
    }

    /// Take back a state file's tunnels and peers (a restart), then the
    /// FDB entries of adopted fast-path maps.
    fn restore(&mut self, now: Instant) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        self.restart.state_file = path.display().to_string();
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
            for (vlan, mac, port, ago) in f.take_adopted_fdb() {
                let at = ago.and_then(|a| now.checked_sub(a)).unwrap_or(now);
                if self.switch.restore_entry(vlan, &mac, port, at) {
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
        self.sessions_changed = true;
        // What was taken back is what the file says: no write needed yet.
        self.state_dirty = false;
    }

    /// Write the state file if something changed (at most every 200 ms),
    /// or at once with `force`.
    fn persist(&mut self, now: Instant, force: bool) {
        let Some(path) = &self.state_file else { return };
        if !force && (!self.state_dirty || now < self.state_due) {
            return;
        }
        let state = SavedState {
            version: STATE_VERSION,
            edge: self.name.clone(),
            l2tp: self.endpoint.snapshot(now),
            gre: self.gre.snapshot(),
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

    /// The MTU of the tunnel behind `port` (None for the trunk).
    fn tunnel_mtu(&self, port: PortId) -> Option<u16> {
        tunnel_mtu_of(&self.endpoint, &self.cfg, self.link_mtu, port)
    }

    /// A frame entered the switch on `ingress`.
    fn switch_frame(&mut self, now: Instant, ingress: PortId, frame: &[u8]) {
        let (verdict, view) = self.switch.ingress(now, ingress, frame);
        let Some(view) = view else { return };
        if let Verdict::Forward { vlan, .. } | Verdict::Flood { vlan } = verdict
            && self.relay_client(now, ingress, vlan, frame, &view)
        {
            return;
        }
        match verdict {
            Verdict::Forward { vlan, to } => self.egress(ingress, to, vlan, frame, &view),
            Verdict::Flood { vlan } => {
                let mut ports = std::mem::take(&mut self.flood);
                ports.clear();
                ports.extend(
                    self.switch
                        .vlan_ports(vlan)
                        .iter()
                        .copied()
                        .filter(|&p| p != ingress),
                );
                for &p in &ports {
                    self.egress(ingress, p, vlan, frame, &view);
                }
                self.flood = ports;
            }
            Verdict::Drop(_) => {}
        }
        if ingress != TRUNK {
            self.announce_macs();
        }
    }

    /// Announce on the trunk the MACs that just appeared behind a tunnel
    /// (one broadcast RARP each, on its VLAN as the trunk carries it).
    fn announce_macs(&mut self) {
        // Empty (no allocation) but for a frame that taught something.
        let macs: Vec<_> = self.switch.take_announcements().collect();
        if macs.is_empty() {
            return;
        }
        let mut frame = std::mem::take(&mut self.tx);
        for (vlan, mac) in macs {
            let tag = self.switch.egress_tag(TRUNK, vlan);
            ether::write_mac_announce(&mac, tag, &mut frame);
            match self.trunk.get_ref().send(&frame) {
                Ok(_) => {
                    self.io.trunk_tx += 1;
                    self.io.mac_announcements += 1;
                }
                Err(_) => self.io.trunk_tx_errors += 1,
            }
        }
        self.tx = frame;
    }

    /// Clamp the MSS of a TCP SYN in `frame` (already re-tagged) to what a
    /// tunnel of `mtu` carries.
    /// Bytes the tunnel behind `port` puts around an inner frame (outer IP,
    /// UDP, L2TP or GRE header), and its MTU. None for the trunk.
    fn tunnel_overhead(&self, port: PortId) -> Option<(usize, u16)> {
        let mtu = self.tunnel_mtu(port)?;
        if tunterm_core::proto::gre::is_gre_port(port) {
            let peer = self.gre.peer(port)?;
            let hdr = tunterm_core::wire::gre::header_len(false, peer.key.is_some(), false);
            return Some((outer_len(Carrier::Gre, peer.addr.is_ipv6()) + hdr, mtu));
        }
        let s = self.endpoint.session(port.0)?;
        let carrier = Carrier::L2tp(s.transport);
        Some((outer_len(carrier, s.peer.is_ipv6()) + s.header_len(), mtu))
    }

    /// Clamp the MSS of a TCP SYN in `frame` (as it leaves, re-tagged) to
    /// what a tunnel of `mtu` with `overhead` bytes of encapsulation carries.
    fn clamp(&mut self, frame: &mut [u8], mtu: u16, overhead: usize) {
        let l2 = ether::parse(frame).map_or(14, |v| v.inner_offset + 2);
        let over = (overhead + l2) as u16;
        let (mss4, mss6) = (
            pmtu::mss_for(mtu, over, false),
            pmtu::mss_for(mtu, over, true),
        );
        if let ClampResult::Clamped { .. } = pmtu::clamp_mss(frame, mss4, mss6) {
            self.io.mss_clamped += 1;
        }
    }

    fn egress(&mut self, ingress: PortId, port: PortId, vlan: u16, frame: &[u8], view: &FrameView) {
        if tunterm_core::proto::bridge::is_host_port(port) {
            self.send_to_host_port(port, vlan, frame, view);
            return;
        }
        let tag = self.switch.egress_tag(port, vlan);
        if port == TRUNK {
            ether::write_retagged(frame, view, tag, &mut self.tx);
            // A SYN from an AP announces the MSS the server may send back
            // through the AP's tunnel.
            if let Some((overhead, mtu)) = self.tunnel_overhead(ingress) {
                let mut tx = std::mem::take(&mut self.tx);
                self.clamp(&mut tx, mtu, overhead);
                self.tx = tx;
            }
            match self.trunk.get_ref().send(&self.tx) {
                Ok(_) => self.io.trunk_tx += 1,
                Err(e) => {
                    self.io.trunk_tx_errors += 1;
                    debug!(error = %e, "trunk send failed");
                }
            }
            return;
        }
        let Some((carrier, peer)) = self.encap(port) else {
            self.io.tunnel_tx_no_session += 1;
            return;
        };
        let hdr = self.tx.len();
        ether::append_retagged(frame, view, tag, &mut self.tx);
        let v6 = peer.is_ipv6();
        let overhead = outer_len(carrier, v6) + hdr;
        let mtu = self.tunnel_mtu(port).unwrap_or(self.link_mtu);
        {
            let mut tx = std::mem::take(&mut self.tx);
            self.clamp(&mut tx[hdr..], mtu, overhead);
            self.tx = tx;
        }
        let inner = self.tx.len() - hdr;
        if overhead + inner > usize::from(mtu) {
            let l2 = ether::parse(&self.tx[hdr..]).map_or(14, |v| v.inner_offset + 2);
            let inner_mtu = usize::from(mtu).saturating_sub(overhead + l2) as u16;
            let src6 = self.cfg.tunnel_ip6;
            match pmtu::too_big_reply(&self.tx[hdr..], inner_mtu, self.cfg.tunnel_ip, src6) {
                TooBig::Reply(icmp) => {
                    self.io.too_big_icmp += 1;
                    // Back to the sender, through the port it came from.
                    if let Some(v) = ether::parse(&icmp) {
                        let tx = std::mem::take(&mut self.tx);
                        self.egress(port, ingress, vlan, &icmp, &v);
                        self.tx = tx;
                    }
                    return;
                }
                // The kernel fragments the outer packet only at the path's
                // MTU; below it (a configured tunnel MTU) the inner packet
                // is split here and each piece sent in its own tunnel packet.
                TooBig::Fragment if mtu < self.link_mtu => {
                    self.io.too_big_fragmented += 1;
                    let mut frags = std::mem::take(&mut self.frags);
                    frags.clear();
                    if pmtu::fragment_v4(&self.tx[hdr..], inner_mtu, &mut frags) == 0 {
                        self.io.too_big_dropped += 1;
                    }
                    for f in &frags {
                        self.tx.clear();
                        let Some((carrier, peer)) = self.encap(port) else {
                            break;
                        };
                        self.tx.extend_from_slice(f);
                        self.io.inner_fragments += 1;
                        self.send_tunnel(carrier, peer);
                    }
                    self.frags = frags;
                    return;
                }
                TooBig::Fragment => self.io.too_big_fragmented += 1,
                TooBig::Fits => {}
                TooBig::Drop => {
                    self.io.too_big_dropped += 1;
                    return;
                }
            }
        }
        self.send_tunnel(carrier, peer);
    }

    /// Queue `self.tx`, a whole tunnel packet after the outer IP header,
    /// for [`Dataplane::flush_tunnel_tx`] (one `sendmmsg` per batch).
    fn send_tunnel(&mut self, carrier: Carrier, peer: SocketAddr) {
        let at = self.txq_bytes.len();
        self.txq_bytes.extend_from_slice(&self.tx);
        self.txq.push((carrier, peer, at..self.txq_bytes.len()));
        if self.txq.len() >= SEND_BATCH {
            self.flush_tunnel_tx();
        }
    }

    /// Send the queued tunnel packets: consecutive ones for the same
    /// socket in one system call. What the kernel refuses is dropped and
    /// counted, as a single send's error would be.
    fn flush_tunnel_tx(&mut self) {
        let queue = std::mem::take(&mut self.txq);
        let mut rest = queue.as_slice();
        while let Some(&(carrier, peer, _)) = rest.first() {
            let v6 = peer.is_ipv6();
            let n = rest
                .iter()
                .take(SEND_BATCH)
                .take_while(|(c, p, _)| *c == carrier && p.is_ipv6() == v6)
                .count();
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let Some(sock) = self.socks.get(carrier, v6) else {
                self.io.tunnel_tx_errors += n as u64;
                continue;
            };
            let msgs: Vec<(SocketAddr, &[u8])> = batch
                .iter()
                .map(|(_, p, r)| (*p, &self.txq_bytes[r.clone()]))
                .collect();
            match sock.try_send_batch(&msgs) {
                Ok(sent) => {
                    self.io.tunnel_tx += sent as u64;
                    self.io.tunnel_tx_errors += (n - sent) as u64;
                }
                Err(e) => {
                    self.io.tunnel_tx_errors += n as u64;
                    debug!(error = %e, %peer, "tunnel send failed");
                }
            }
        }
        self.txq = queue;
        self.txq.clear();
        self.txq_bytes.clear();
    }

    /// Write the tunnel header for `port` into `self.tx`; where it goes.
    fn encap(&mut self, port: PortId) -> Option<(Carrier, SocketAddr)> {
        if tunterm_core::proto::gre::is_gre_port(port) {
            let ip = self.gre.encap_header(port, &mut self.tx)?;
            return Some((Carrier::Gre, SocketAddr::new(ip, 0)));
        }
        let (t, peer) = self.endpoint.encap_header(port.0, &mut self.tx)?;
        Some((Carrier::L2tp(t), peer))
    }

    fn flush_control(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            let v6 = t.dst.is_ipv6();
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
                    self.control.emit(|| ApiEvent::PeerAdded {
                        port: port.0,
                        ap: peer.addr.to_string(),
                        key: peer.key,
                    });
                }
                GreEvent::PeerDown { port, peer, reason } => {
                    self.sessions_changed = true;
                    let flushed = self.switch.remove_port(port);
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

    /// Read a batch from a tunnel socket (one `recvmmsg`) and handle it.
    fn drain_tunnel(&mut self, carrier: Carrier, sock: &TunnelSocket, rx: &mut RecvBatch) {
        let got = sock.try_recv_batch(rx);
        self.io.tunnel_rx_truncated += rx.truncated();
        match got {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                debug!(error = %e, "tunnel recv");
                return;
            }
        }
        self.io.tunnel_rx += rx.len() as u64;
        for (pkt, from) in rx.iter() {
            let now = Instant::now();
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
                    Incoming::Dropped(_) => {}
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
                        GreIncoming::Dropped(_) => {}
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
    /// it; true once the socket is empty (only then may its readiness be
    /// cleared).
    fn drain_trunk(&mut self, rx: &mut RecvBatch) -> bool {
        let got = self.trunk.get_ref().recv_batch(rx);
        self.io.trunk_rx_truncated += rx.truncated();
        match got {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) => {
                debug!(error = %e, "trunk recv");
                return true;
            }
        }
        self.io.trunk_rx += rx.len() as u64;
        for (frame, _) in rx.iter() {
            let now = Instant::now();
            if self.monitor.take_trunk_frame(now, frame) {
                continue;
            }
            self.switch_frame(now, TRUNK, frame);
        }
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
        false
    }

    fn on_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.gre.handle_timeout(now);
        self.switch.handle_timeout(now);
        self.run_monitor(now);
        self.svc.handle_timeout(now);
        self.flush_control();
        self.handle_events();
    }

    /// Upstream monitoring: expire probes, start due ones (ARP on the
    /// trunk), act on a change of health.
    fn run_monitor(&mut self, now: Instant) {
        let (trunk, io) = (&self.trunk, &mut self.io);
        self.monitor
            .handle_timeout(now, |frame| match trunk.get_ref().send(frame) {
                Ok(_) => io.trunk_tx += 1,
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
            let (endpoint, cfg, link_mtu) = (&self.endpoint, &self.cfg, self.link_mtu);
            f.handle(
                now,
                endpoint,
                &mut self.gre,
                &mut self.switch,
                self.sessions_changed,
                |port| tunnel_mtu_of(endpoint, cfg, link_mtu, port).unwrap_or(link_mtu),
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
            (self.state_dirty && self.state_file.is_some()).then_some(self.state_due),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(fallback)
        .min(fallback)
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

/// MTU of the interface that holds `ip` (1500 if it cannot be read).
fn link_mtu_of(ifaces: &[String]) -> u16 {
    ifaces
        .iter()
        .filter_map(|i| std::fs::read_to_string(format!("/sys/class/net/{i}/mtu")).ok())
        .filter_map(|s| s.trim().parse::<u16>().ok())
        .min()
        .unwrap_or(1500)
}

/// Open the tunnel sockets the configuration calls for.
fn open_sockets(cfg: &EdgeConfig, port: u16) -> anyhow::Result<Socks> {
    let mut slots = Vec::new();
    let addrs: Vec<IpAddr> = cfg
        .tunnel_ip
        .map(IpAddr::V4)
        .into_iter()
        .chain(cfg.tunnel_ip6.map(IpAddr::V6))
        .collect();
    let wants = |p: TunnelProtocol| cfg.tunnels.iter().any(|t| t.protocol == p);
    for &ip in &addrs {
        let v6 = ip.is_ipv6();
        if wants(TunnelProtocol::Udp) {
            let s = TunnelSocket::udp(SocketAddr::new(ip, port), true).with_context(|| {
                format!("binding L2TP/UDP to {ip}:{port} (is tunterm_ip_config an address of this host?)")
            })?;
            slots.push((Carrier::L2tp(Transport::Udp), v6, Rc::new(s)));
        }
        if wants(TunnelProtocol::Ip) {
            let s = TunnelSocket::raw(ip, IP_PROTO_L2TP, true)
                .with_context(|| format!("opening L2TP/IP (protocol 115) on {ip}"))?;
            slots.push((Carrier::L2tp(Transport::Ip), v6, Rc::new(s)));
        }
        if cfg.mgre.is_some() {
            let s = TunnelSocket::raw(ip, IP_PROTO_GRE, true)
                .with_context(|| format!("opening GRE (protocol 47) on {ip}"))?;
            slots.push((Carrier::Gre, v6, Rc::new(s)));
        }
    }
    Ok(Socks { slots })
}

async fn ready(slot: Option<&Rc<TunnelSocket>>) -> io::Result<()> {
    match slot {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Run the daemon until `shutdown` resolves. [`Exit::Stop`]: close every
/// tunnel with StopCCN (result 6, shutting down), wait briefly for the
/// acks, detach the fast path and remove its pins and the state file.
/// [`Exit::Restart`]: write the state file and leave everything up.
///
/// At start, a state file (`opts.state_file`) left by an earlier run is
/// taken back: its tunnels come back established, and pinned fast-path
/// maps and links (`opts.pin_dir`) are taken over with their entries.
pub async fn run(
    cfg: EdgeConfig,
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = Exit>,
) -> anyhow::Result<()> {
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
    // The edge's host ports come first: tunterm_ip_config's address may be
    // on one, and the tunnel sockets bind to it.
    let mut switch = Switch::new(tunterm_core::proto::bridge::DEFAULT_AGING);
    switch.add_port(TRUNK, trunk_port(&cfg));
    let ip_config_port = cfg.tunnel_ip.is_some_and(|ip| !services::is_local(ip));
    let mut svc = services::Services::new(ip_config_port);
    svc.apply(&mut switch, &cfg, services::desired(&cfg, ip_config_port));
    let socks = open_sockets(&cfg, opts.port)?;
    let trunk = PacketSocket::bind_with_rx_ring(&upstream)
        .with_context(|| format!("opening the upstream trunk {upstream}"))?;
    let trunk = Rc::new(trunk.into_async()?);
    let listener = control::bind(&opts.control_socket, opts.control_group.as_deref())?;
    let seed = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    };
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
    let (control, mut control_jobs) = control::serve(listener, crate::api::config_digest(&cfg.raw));
    let mut dp = Dataplane {
        name: cfg.name.clone(),
        started: Instant::now(),
        endpoint: Endpoint::new(endpoint_config(&cfg, opts.admission), seed),
        gre,
        switch,
        socks,
        trunk,
        link_mtu: link_mtu_of(&downstream),
        tx: Vec::with_capacity(BUF_LEN),
        flood: Vec::new(),
        frags: Vec::new(),
        txq: Vec::with_capacity(SEND_BATCH),
        txq_bytes: Vec::with_capacity(SEND_BATCH * 2048),
        io: IoCounters::default(),
        fast,
        sessions_changed: true,
        state_file: opts.state_file.clone(),
        state_dirty: false,
        state_due: Instant::now(),
        restart: RestartStats::default(),
        monitor,
        operations: Operations::new(seed),
        svc,
        control,
        cfg,
    };
    dp.restore(Instant::now());
    let listening: Vec<String> = dp
        .socks
        .slots
        .iter()
        .map(|(c, v6, _)| format!("{c:?}/{}", if *v6 { "v6" } else { "v4" }))
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
    let mut buf = RecvBatch::new(BATCH, BUF_LEN);
    let trunk_fd = dp.trunk.clone();
    let slot = |i: usize| dp.socks.slots.get(i).map(|(c, _, s)| (*c, s.clone()));
    let (s0, s1, s2, s3, s4, s5) = (slot(0), slot(1), slot(2), slot(3), slot(4), slot(5));
    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let exit = loop {
        let wake = dp.next_wake();
        let (taps, relays) = dp.svc.poll_set();
        tokio::select! {
            biased;
            exit = &mut shutdown => break exit,
            _ = hangup.recv() => dp.reload(opts.config.as_deref()),
            what = crate::io::hostport::readable(&taps, &relays) => dp.drain_services(what),
            r = ready(s0.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s0.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s1.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s1.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s2.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s2.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s3.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s3.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s4.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s4.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s5.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s5.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = trunk_fd.readable() => {
                let mut guard = r?;
                if dp.drain_trunk(&mut buf) {
                    guard.clear_ready();
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => dp.on_timeout(Instant::now()),
            Some(r) = probe_results.recv() => dp.on_probe_result(r),
            Some(job) = control_jobs.recv() => dp.control_job(job),
        }
        dp.flush_tunnel_tx();
        let now = Instant::now();
        dp.sync_fast_path(now);
        dp.persist(now, false);
    };
    if exit == Exit::Restart {
        dp.flush_tunnel_tx();
        dp.persist(Instant::now(), true);
        info!(
            tunnels = dp.endpoint.conn_count(),
            gre_peers = dp.gre.peer_count(),
            pinned = dp.fast.as_ref().is_some_and(|_| pin_dir.is_some()),
            "exiting for a restart: tunnels stay up, the state file and the pinned fast path are kept"
        );
        let _ = std::fs::remove_file(&opts.control_socket);
        return Ok(());
    }
    info!("shutting down: closing tunnels");
    let now = Instant::now();
    dp.endpoint.close_all(
        now,
        l2tp_wire::stopccn::SHUTTING_DOWN,
        "tunterm shutting down",
    );
    dp.gre.remove_all();
    dp.flush_control();
    dp.handle_events();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dp.endpoint.stats(Instant::now()).is_empty() && Instant::now() < deadline {
        let wake = dp.next_wake().min(deadline);
        tokio::select! {
            r = ready(s0.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s0.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s1.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s1.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s2.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s2.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            r = ready(s3.as_ref().map(|s| &s.1)) => { r?; let (c, s) = s3.clone().unwrap(); dp.drain_tunnel(c, &s, &mut buf); }
            _ = tokio::time::sleep_until(wake.into()) => dp.on_timeout(Instant::now()),
        }
        dp.flush_tunnel_tx();
    }
    if let Some(f) = dp.fast.take() {
        f.unpin();
    }
    if let Some(path) = &dp.state_file {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(&opts.control_socket);
    Ok(())
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
        };
        write_state(&path, &state).unwrap();
        assert!(!path.with_extension("tmp").exists());
        let back = read_state(&path).unwrap().unwrap();
        assert_eq!((back.edge.as_str(), back.gre), ("e1", state.gre));
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
