//! The daemon's event loop: read → proto → write, and timers.
//!
//! One thread owns everything: the L2TP socket toward the APs, the
//! AF_PACKET socket on the upstream trunk, the [`Endpoint`] (control
//! connections and sessions) and the [`Switch`]. Data frames go
//! tunnel → switch → trunk/tunnel and trunk → switch → tunnel without
//! leaving this loop. A Unix socket answers `stats` with JSON.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener};
use tracing::{debug, info, warn};
use tunterm_control::{EdgeConfig, TunnelProtocol};

use crate::io::afpacket::PacketSocket;
use crate::proto::bridge::{PortConfig, PortId, Switch, SwitchCounters, TRUNK, Verdict};
use crate::proto::l2tp::{
    ConnStats, Endpoint, EndpointConfig, EndpointCounters, Event, Incoming, PwProfile,
};
use crate::wire::ether::{self, FrameView};
use crate::wire::l2tp::{self as l2tp_wire, Transport, pw};

/// Largest datagram or frame handled.
const BUF_LEN: usize = 65_536 + 64;
/// Datagrams or frames drained per readiness event before other work runs.
const BATCH: usize = 64;

/// What the daemon needs besides the Mist configuration.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Unix socket for `tunterm stats` (and, later, the agent).
    pub control_socket: PathBuf,
    /// Override of the upstream trunk interface.
    pub upstream: Option<String>,
    /// UDP port to listen on (1701; tests may pick another).
    pub port: u16,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            control_socket: PathBuf::from("/run/tunterm/tunterm.sock"),
            upstream: None,
            port: l2tp_wire::L2TP_PORT,
        }
    }
}

/// I/O counters of the driver.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoCounters {
    /// Frames read from the trunk.
    pub trunk_rx: u64,
    /// Frames written to the trunk.
    pub trunk_tx: u64,
    /// Trunk writes that failed (full socket buffer, link down).
    pub trunk_tx_errors: u64,
    /// Data messages sent into tunnels.
    pub tunnel_tx: u64,
    /// Tunnel sends that failed.
    pub tunnel_tx_errors: u64,
    /// Frames for a session that is not established (raced a teardown).
    pub tunnel_tx_no_session: u64,
    /// Datagrams read from the L2TP socket.
    pub udp_rx: u64,
}

/// One FDB entry in the stats.
#[derive(Clone, Debug, Serialize)]
pub struct FdbEntry {
    /// VLAN.
    pub vlan: u16,
    /// MAC, aa:bb:cc:dd:ee:ff.
    pub mac: String,
    /// "trunk" or the session id.
    pub port: String,
}

/// The stats document served on the control socket.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// The edge's name.
    pub name: String,
    /// Seconds since start.
    pub uptime: u64,
    /// Control connections that are not closed.
    pub num_tunnels: usize,
    /// Per tunnel, in the shape of Mist's tunnel stats.
    pub tunnels: Vec<ConnStats>,
    /// L2TP counters.
    pub l2tp: EndpointCounters,
    /// Switch counters.
    pub switch: SwitchCounters,
    /// I/O counters.
    pub io: IoCounters,
    /// The forwarding database.
    pub fdb: Vec<FdbEntry>,
}

struct Dataplane {
    name: String,
    started: Instant,
    cfg: EdgeConfig,
    endpoint: Endpoint,
    switch: Switch,
    udp: UdpSocket,
    trunk: Rc<AsyncFd<PacketSocket>>,
    tx: Vec<u8>,
    flood: Vec<PortId>,
    io: IoCounters,
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn endpoint_config(cfg: &EdgeConfig) -> EndpointConfig {
    EndpointConfig {
        host_name: cfg.name.clone(),
        router_id: cfg.tunnel_ip.map_or(1, u32::from),
        profiles: profiles(cfg),
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
    // Tagged on the trunk: every VLAN some mxtunnel carries. The native VLAN
    // is the untagged one.
    let mut vlans = tunterm_control::VlanSet::default();
    for t in &cfg.tunnels {
        for v in t.vlans.iter() {
            // Ids from a validated VlanSet are always in range.
            let _ = vlans.insert(v);
        }
    }
    PortConfig {
        vlans,
        untagged_vlan: Some(cfg.upstream_port_vlan_id),
    }
}

impl Dataplane {
    fn stats(&self, now: Instant) -> Stats {
        let tunnels = self.endpoint.stats(now);
        Stats {
            name: self.name.clone(),
            uptime: (now - self.started).as_secs(),
            num_tunnels: tunnels.len(),
            tunnels,
            l2tp: self.endpoint.counters().clone(),
            switch: self.switch.counters().clone(),
            io: self.io.clone(),
            fdb: self
                .switch
                .fdb()
                .map(|(vlan, mac, port)| FdbEntry {
                    vlan,
                    mac: format_mac(&mac),
                    port: if port == TRUNK {
                        "trunk".into()
                    } else {
                        port.0.to_string()
                    },
                })
                .collect(),
        }
    }

    /// A frame entered the switch on `ingress`.
    fn switch_frame(&mut self, now: Instant, ingress: PortId, frame: &[u8]) {
        let (verdict, view) = self.switch.ingress(now, ingress, frame);
        let Some(view) = view else { return };
        match verdict {
            Verdict::Forward { vlan, to } => self.egress(to, vlan, frame, &view),
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
                    self.egress(p, vlan, frame, &view);
                }
                self.flood = ports;
            }
            Verdict::Drop(_) => {}
        }
    }

    fn egress(&mut self, port: PortId, vlan: u16, frame: &[u8], view: &FrameView) {
        let tag = self.switch.egress_tag(port, vlan);
        if port == TRUNK {
            ether::write_retagged(frame, view, tag, &mut self.tx);
            match self.trunk.get_ref().send(&self.tx) {
                Ok(_) => self.io.trunk_tx += 1,
                Err(e) => {
                    self.io.trunk_tx_errors += 1;
                    debug!(error = %e, "trunk send failed");
                }
            }
            return;
        }
        let Some((_, peer)) = self.endpoint.encap_header(port.0, &mut self.tx) else {
            self.io.tunnel_tx_no_session += 1;
            return;
        };
        ether::append_retagged(frame, view, tag, &mut self.tx);
        match self.udp.try_send_to(&self.tx, peer) {
            Ok(_) => self.io.tunnel_tx += 1,
            Err(e) => {
                self.io.tunnel_tx_errors += 1;
                debug!(error = %e, %peer, "tunnel send failed");
            }
        }
    }

    fn flush_control(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            if let Err(e) = self.udp.try_send_to(&t.payload, t.dst) {
                warn!(error = %e, peer = %t.dst, "control send failed");
            }
        }
    }

    fn handle_events(&mut self) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::TunnelUp {
                    ccid,
                    peer,
                    host_name,
                } => info!(tunnel_id = ccid, %peer, ap = %host_name, "tunnel up"),
                Event::TunnelDown {
                    ccid,
                    peer,
                    was_up,
                    reason,
                } => info!(tunnel_id = ccid, %peer, was_up, reason = ?reason, "tunnel down"),
                Event::SessionUp { ccid, session_id } => self.session_up(ccid, session_id),
                Event::SessionDown {
                    ccid,
                    session_id,
                    reason,
                } => {
                    let flushed = self.switch.remove_port(PortId(session_id));
                    info!(tunnel_id = ccid, session_id, flushed_macs = flushed, reason = ?reason, "session down");
                }
                Event::PeerCdn { .. } => {}
            }
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
        info!(tunnel_id = ccid, session_id = sid, mxtunnel = %t.name, vlans = %t.vlans, ?untagged_vlan, "session up");
        self.switch.add_port(
            PortId(sid),
            PortConfig {
                vlans: t.vlans.clone(),
                untagged_vlan,
            },
        );
    }

    fn drain_udp(&mut self, buf: &mut [u8]) {
        for _ in 0..BATCH {
            let (n, from) = match self.udp.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "udp recv");
                    break;
                }
            };
            self.io.udp_rx += 1;
            let now = Instant::now();
            let from = canonical(from);
            match self
                .endpoint
                .handle_datagram(now, Transport::Udp, from, &buf[..n])
            {
                Incoming::Data {
                    session_id,
                    payload,
                } => self.switch_frame(now, PortId(session_id), payload),
                Incoming::Control => {
                    self.flush_control();
                    self.handle_events();
                }
                Incoming::Dropped(_) => {}
            }
        }
    }

    /// Read up to a batch of frames from the trunk; true once the socket is
    /// empty (only then may its readiness be cleared).
    fn drain_trunk(&mut self, buf: &mut [u8]) -> bool {
        for _ in 0..BATCH {
            let n = match self.trunk.get_ref().recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    debug!(error = %e, "trunk recv");
                    return true;
                }
            };
            self.io.trunk_rx += 1;
            self.switch_frame(Instant::now(), TRUNK, &buf[..n]);
        }
        false
    }

    fn on_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.switch.handle_timeout(now);
        self.flush_control();
        self.handle_events();
    }

    fn next_wake(&self) -> Instant {
        let fallback = Instant::now() + Duration::from_secs(1);
        [self.endpoint.poll_timeout(), self.switch.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(fallback)
            .min(fallback)
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn bind_udp(ip: IpAddr, port: u16) -> anyhow::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.set_recv_buffer_size(8 << 20).ok();
    s.set_send_buffer_size(8 << 20).ok();
    s.bind(&addr.into()).with_context(|| {
        format!(
            "binding the L2TP socket to {addr} (is tunterm_ip_config.ip an address of this host?)"
        )
    })?;
    Ok(UdpSocket::from_std(s.into())?)
}

fn bind_control_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))
}

/// Ask a running daemon for its stats over its control socket.
pub async fn query_stats(path: &Path) -> anyhow::Result<String> {
    let mut s = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("connecting to {} (is tunterm running?)", path.display()))?;
    s.write_all(b"stats\n").await?;
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await?;
    Ok(out)
}

/// Run the daemon until `shutdown` resolves; then close every tunnel with
/// StopCCN (result 6, shutting down) and wait briefly for the acks.
pub async fn run(
    cfg: EdgeConfig,
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(t) = cfg
        .tunnels
        .iter()
        .find(|t| t.protocol != TunnelProtocol::Udp)
    {
        bail!(
            "mxtunnel {:?}: protocol {:?} is not supported by this build (only udp)",
            t.name,
            t.protocol
        );
    }
    let Some(tunnel_ip) = cfg.tunnel_ip else {
        bail!("mxedge.tunterm_ip_config.ip is required");
    };
    let upstream = match (&opts.upstream, cfg.upstream_interfaces.first()) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => {
            bail!("no upstream interface: set tunterm_port_config.upstream_ports or --upstream")
        }
    };
    let udp = bind_udp(IpAddr::V4(tunnel_ip), opts.port)?;
    let trunk = PacketSocket::bind(&upstream)
        .with_context(|| format!("opening the upstream trunk {upstream}"))?;
    let trunk = Rc::new(trunk.into_async()?);
    let control = bind_control_socket(&opts.control_socket)?;
    let seed = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    };
    let mut switch = Switch::new(crate::proto::bridge::DEFAULT_AGING);
    switch.add_port(TRUNK, trunk_port(&cfg));
    let mut dp = Dataplane {
        name: cfg.name.clone(),
        started: Instant::now(),
        endpoint: Endpoint::new(endpoint_config(&cfg), seed),
        switch,
        udp,
        trunk,
        tx: Vec::with_capacity(BUF_LEN),
        flood: Vec::new(),
        io: IoCounters::default(),
        cfg,
    };
    info!(
        name = %dp.name,
        listen = %SocketAddr::new(IpAddr::V4(tunnel_ip), opts.port),
        upstream = %upstream,
        trunk_fd = dp.trunk.get_ref().as_raw_fd(),
        tunnels = dp.cfg.tunnels.len(),
        control_socket = %opts.control_socket.display(),
        "tunterm running"
    );
    let mut buf = vec![0u8; BUF_LEN];
    let trunk_fd = dp.trunk.clone();
    tokio::pin!(shutdown);
    loop {
        let wake = dp.next_wake();
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = dp.udp.readable() => {
                r?;
                dp.drain_udp(&mut buf);
            }
            r = trunk_fd.readable() => {
                let mut guard = r?;
                if dp.drain_trunk(&mut buf) {
                    guard.clear_ready();
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => dp.on_timeout(Instant::now()),
            conn = control.accept() => {
                if let Ok((stream, _)) = conn {
                    serve_control(&dp, stream);
                }
            }
        }
    }
    info!("shutting down: closing tunnels");
    dp.endpoint.close_all(
        Instant::now(),
        l2tp_wire::stopccn::SHUTTING_DOWN,
        "tunterm shutting down",
    );
    dp.flush_control();
    dp.handle_events();
    let deadline = Instant::now() + Duration::from_secs(2);
    while dp.endpoint.conn_count() > 0 && Instant::now() < deadline {
        let wake = dp.next_wake().min(deadline);
        tokio::select! {
            r = dp.udp.readable() => { r?; dp.drain_udp(&mut buf); }
            _ = tokio::time::sleep_until(wake.into()) => dp.on_timeout(Instant::now()),
        }
        // Connections that got their StopCCN acked linger only to re-ack;
        // at shutdown there is nothing left to wait for.
        if dp.endpoint.stats(Instant::now()).is_empty() {
            break;
        }
    }
    let _ = std::fs::remove_file(&opts.control_socket);
    Ok(())
}

fn serve_control(dp: &Dataplane, stream: tokio::net::UnixStream) {
    // The snapshot is taken now, in the loop; writing it out happens beside.
    let snapshot = serde_json::to_string_pretty(&dp.stats(Instant::now()))
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    tokio::spawn(async move {
        let (rd, mut wr) = stream.into_split();
        let mut line = String::new();
        let mut rd = BufReader::new(rd);
        let _ = tokio::time::timeout(Duration::from_secs(2), rd.read_line(&mut line)).await;
        let reply = match line.trim() {
            "stats" | "" => snapshot,
            other => format!("{{\"error\":\"unknown command {other:?}; try stats\"}}"),
        };
        let _ = wr.write_all(reply.as_bytes()).await;
        let _ = wr.write_all(b"\n").await;
    });
}
