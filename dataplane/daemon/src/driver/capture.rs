//! Packet capture, the event loop's side: resolve a request's points and
//! filters, run it in the [`CaptureSet`] (the pipeline's tap), pump its
//! records out after each turn (pcapng bytes to the connection's task
//! through a byte-bounded channel, TZSP datagrams on a non-blocking UDP
//! socket), end it on a limit or when its client goes.
//!
//! Nothing here waits: a reader that does not keep up loses records, and
//! they are counted (`dropped`).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tunterm_core::forward::Carrier;
use tunterm_core::proto::bridge::{PortId, TRUNK, host_port};
use tunterm_core::proto::capture::{
    CaptureSet, Direction, Filter, Limits, Point, PortInfo, Record,
};
use tunterm_core::proto::gre::GreDrop;
use tunterm_core::proto::l2tp::DataDrop;
use tunterm_core::wire::l2tp::Transport;
use tunterm_core::wire::tzsp;

use super::Dataplane;
use crate::api::{
    CAPTURE_DEFAULT_DURATION, CAPTURE_DEFAULT_PACKETS, CAPTURE_DEFAULT_SNAPLEN,
    CAPTURE_MAX_DURATION, CAPTURE_MAX_PACKETS, CAPTURE_SNAPLEN, CaptureAccepted, CaptureFormat,
    CapturePointInfo, CaptureRequest, CaptureStats, CaptureSummary,
};
use crate::capture::{Clock, PROTO_UDP, Pcapng, compile, outer_frame};

/// Bytes of pcapng a capture may have on its way to its reader; past it,
/// records are dropped (counted).
pub(super) const MAX_BUFFERED: usize = 4 << 20;
/// Chunks (one per loop turn) on their way to a reader.
const CHUNKS: usize = 1024;

/// The checked limits of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Checked {
    num_packets: u64,
    duration: u64,
    snaplen: u32,
}

/// Check a request's limits (before anything starts).
pub(super) fn check(req: &CaptureRequest) -> Result<Checked, String> {
    let num_packets = req.num_packets.unwrap_or(CAPTURE_DEFAULT_PACKETS);
    if num_packets > CAPTURE_MAX_PACKETS {
        return Err(format!(
            "capture: num_packets {num_packets}: at most {CAPTURE_MAX_PACKETS} (0: no limit)"
        ));
    }
    let duration = req.duration.unwrap_or(CAPTURE_DEFAULT_DURATION);
    if duration == 0 || duration > CAPTURE_MAX_DURATION {
        return Err(format!(
            "capture: duration {duration}: 1 to {CAPTURE_MAX_DURATION} seconds"
        ));
    }
    let snaplen = req.max_pkt_len.unwrap_or(CAPTURE_DEFAULT_SNAPLEN);
    if !CAPTURE_SNAPLEN.contains(&snaplen) {
        return Err(format!(
            "capture: max_pkt_len {snaplen}: {} to {} bytes",
            CAPTURE_SNAPLEN.start(),
            CAPTURE_SNAPLEN.end()
        ));
    }
    if req.points.is_empty() {
        return Err("capture: no point (see capture-points)".into());
    }
    match (req.format, &req.tzsp) {
        (CaptureFormat::Tzsp, None) => {
            return Err("capture: format tzsp needs tzsp (host:port)".into());
        }
        (CaptureFormat::Pcapng, Some(_)) => {
            return Err("capture: tzsp is for format tzsp".into());
        }
        _ => {}
    }
    Ok(Checked {
        num_packets,
        duration,
        snaplen,
    })
}

/// Where TZSP goes: `host`, `host:port`, `[v6]:port` (port 37008 when
/// absent), resolved.
pub(super) async fn resolve_tzsp(to: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = to.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = to.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, tzsp::TZSP_PORT));
    }
    let (host, port) = match to.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("capture: TZSP {to:?}: the port is not a number"))?,
        ),
        None => (to, tzsp::TZSP_PORT),
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("capture: TZSP host {host:?} does not resolve: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("capture: TZSP host {host:?} has no address"))
}

/// What the connection's task gets for a capture that runs.
pub(super) struct Stream {
    pub accepted: CaptureAccepted,
    /// pcapng bytes (nothing for TZSP).
    pub chunks: mpsc::Receiver<Vec<u8>>,
    /// Bytes sent on `chunks` and not yet written: the task takes off what
    /// it wrote.
    pub in_flight: Arc<AtomicUsize>,
    /// The end: the last bytes (pcapng statistics) and the summary.
    pub end: oneshot::Receiver<End>,
}

/// How a capture ended.
pub(super) struct End {
    pub trailer: Vec<u8>,
    pub summary: CaptureSummary,
}

enum Output {
    Pcapng(Pcapng),
    /// Not connected: an ICMP unreachable from a host with no listener
    /// would fail the next send.
    Tzsp {
        sock: UdpSocket,
        to: SocketAddr,
        buf: Vec<u8>,
    },
}

struct Active {
    id: u64,
    points: Vec<String>,
    format: CaptureFormat,
    deadline: Instant,
    clock: Clock,
    out: Output,
    chunks: mpsc::Sender<Vec<u8>>,
    in_flight: Arc<AtomicUsize>,
    end: Option<oneshot::Sender<End>>,
}

/// The captures of the loop.
#[derive(Default)]
pub(super) struct Captures {
    pub set: CaptureSet,
    active: Vec<Active>,
    next_id: u64,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Captures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captures")
            .field("active", &self.active.len())
            .finish()
    }
}

impl Captures {
    /// Counters of the running captures (the stats).
    pub fn stats(&self) -> Vec<CaptureStats> {
        self.active
            .iter()
            .map(|a| CaptureStats {
                id: a.id,
                points: a.points.clone(),
                format: a.format,
                counters: self.set.counters(a.id).unwrap_or_default(),
            })
            .collect()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.active.iter().map(|a| a.deadline).min()
    }

    /// A datagram of the AP link (`local` is tunterm's side), for `wire`.
    pub fn wire(
        &mut self,
        now: Instant,
        direction: Direction,
        carrier: Carrier,
        local: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) {
        if !self.set.watches(&Point::Wire) {
            return;
        }
        let (src, dst) = match direction {
            Direction::Inbound => (peer, local),
            Direction::Outbound => (local, peer),
        };
        self.with_outer((src, dst), carrier, payload, |set, frame| {
            set.wire(now, direction, frame)
        });
    }

    /// `payload` from `src` to `dst` with its outer headers re-created,
    /// handed to `f` with the capture set.
    fn with_outer(
        &mut self,
        (src, dst): (SocketAddr, SocketAddr),
        carrier: Carrier,
        payload: &[u8],
        f: impl FnOnce(&mut CaptureSet, &[u8]),
    ) {
        outer_frame(&mut self.scratch, src, dst, proto_of(carrier), payload);
        let frame = std::mem::take(&mut self.scratch);
        f(&mut self.set, &frame);
        self.scratch = frame;
    }

    /// A datagram an endpoint refused, for `drop`.
    pub fn dropped(
        &mut self,
        now: Instant,
        reason: &'static str,
        carrier: Carrier,
        local: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) {
        if !self.set.watches(&Point::Drop) {
            return;
        }
        self.with_outer((peer, local), carrier, payload, |set, frame| {
            set.dropped(now, reason, frame)
        });
    }

    /// Write out what the captures queued; end those whose limit came.
    pub fn pump(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.active.len() {
            pump_one(&mut self.set, &mut self.active[i]);
            let a = &self.active[i];
            let ended_by = if self.set.is_done(a.id) {
                Some("num_packets")
            } else if now >= a.deadline {
                Some("duration")
            } else if a.chunks.is_closed() {
                Some("client")
            } else {
                None
            };
            match ended_by {
                Some(why) => self.end(i, why),
                None => i += 1,
            }
        }
    }

    /// End capture `id` (its client went).
    pub fn stop(&mut self, id: u64) {
        if let Some(i) = self.active.iter().position(|a| a.id == id) {
            pump_one(&mut self.set, &mut self.active[i]);
            self.end(i, "client");
        }
    }

    fn end(&mut self, i: usize, why: &str) {
        let mut a = self.active.swap_remove(i);
        let counters = self.set.stop(a.id).unwrap_or_default();
        let trailer = match &mut a.out {
            Output::Pcapng(w) => {
                w.statistics(&counters, a.clock.wall(Instant::now()));
                w.take()
            }
            Output::Tzsp { .. } => Vec::new(),
        };
        tracing::info!(id = a.id, points = %a.points.join(","), ended_by = why,
                       seen = counters.seen, matched = counters.matched,
                       written = counters.written, dropped = counters.dropped, "capture ended");
        if let Some(end) = a.end.take() {
            let _ = end.send(End {
                trailer,
                summary: CaptureSummary {
                    id: a.id,
                    ended_by: why.into(),
                    counters,
                },
            });
        }
    }
}

/// The counter that counts an L2TP data message the endpoint refused.
pub(super) fn l2tp_drop_name(d: DataDrop) -> &'static str {
    match d {
        DataDrop::Malformed => "l2tp.rx_data_malformed",
        DataDrop::UnknownSession => "l2tp.rx_data_unknown_session",
        DataDrop::NotEstablished => "l2tp.rx_data_not_established",
        DataDrop::BadSource => "l2tp.rx_data_bad_source",
        DataDrop::BadCookie => "l2tp.rx_data_bad_cookie",
        DataDrop::BadSublayer => "l2tp.rx_data_bad_sublayer",
        DataDrop::OutOfOrder => "l2tp.rx_data_out_of_order",
        DataDrop::NotAdmitted => "l2tp.rx_data_not_admitted",
    }
}

/// The counter that counts a GRE packet the endpoint refused.
pub(super) fn gre_drop_name(d: GreDrop) -> &'static str {
    match d {
        GreDrop::Malformed => "gre.drop_malformed",
        GreDrop::NotAdmitted => "gre.drop_not_admitted",
        GreDrop::WrongProtocol => "gre.drop_wrong_protocol",
        GreDrop::TooManyPeers => "gre.drop_too_many_peers",
        GreDrop::SequenceOld => "gre.drop_sequence_old",
        GreDrop::BadKeepalive => "gre.drop_bad_keepalive",
    }
}

fn proto_of(c: Carrier) -> u8 {
    match c {
        Carrier::L2tp(Transport::Udp) => PROTO_UDP,
        Carrier::L2tp(Transport::Ip) => tunterm_core::wire::l2tp::IP_PROTO_L2TP,
        Carrier::Gre => tunterm_core::wire::gre::IP_PROTO_GRE,
    }
}

/// Write out capture `a`'s queued records.
fn pump_one(set: &mut CaptureSet, a: &mut Active) {
    let (mut written, mut dropped) = (0u64, 0u64);
    match &mut a.out {
        Output::Pcapng(w) => {
            let mut n = 0u64;
            while let Some(r) = set.pop(a.id) {
                w.packet(&r, &a.clock);
                n += 1;
            }
            let len = w.pending();
            if n > 0 && len > 0 {
                let bytes = w.take();
                if a.in_flight.load(Relaxed) + len > MAX_BUFFERED {
                    dropped = n;
                } else {
                    a.in_flight.fetch_add(len, Relaxed);
                    match a.chunks.try_send(bytes) {
                        Ok(()) => written = n,
                        Err(_) => {
                            a.in_flight.fetch_sub(len, Relaxed);
                            dropped = n;
                        }
                    }
                }
            }
        }
        Output::Tzsp { sock, to, buf } => {
            while let Some(r) = set.pop(a.id) {
                if send_tzsp(sock, *to, buf, &r, &a.clock) {
                    written += 1;
                } else {
                    dropped += 1;
                }
            }
        }
    }
    set.count_output(a.id, written, dropped);
}

fn send_tzsp(
    sock: &UdpSocket,
    to: SocketAddr,
    buf: &mut Vec<u8>,
    r: &Record,
    clock: &Clock,
) -> bool {
    let t = clock.wall(r.time);
    buf.clear();
    tzsp::encode(
        &r.data,
        r.original_len,
        t.as_secs() as u32,
        t.subsec_nanos(),
        buf,
    );
    sock.send_to(buf, to).is_ok()
}

/// A point name as a request gives it, resolved.
fn resolve(name: &str, catalog: &[(String, Point, String)]) -> Option<Point> {
    catalog
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, p, _)| p.clone())
}

impl Dataplane {
    /// Every capture point of the running edge: name, what it is, what it
    /// shows.
    fn capture_catalog(&self) -> Vec<(String, Point, String)> {
        let mut c = vec![
            (
                "trunk".to_string(),
                Point::Trunk,
                format!("the upstream trunk {} (802.1Q tagged)", self.upstream),
            ),
            (
                "wire".into(),
                Point::Wire,
                "the AP-facing link: tunnel packets with their outer headers".into(),
            ),
            (
                "drop".into(),
                Point::Drop,
                "every frame tunterm drops; the reason is the packet's comment".into(),
            ),
        ];
        if let Some(ports) = &self.cfg.raw.ports {
            for (mist, iface) in ports {
                let what = if *iface == self.upstream {
                    Point::Trunk
                } else if self.cfg.downstream_interfaces.contains(iface) {
                    Point::Wire
                } else {
                    continue;
                };
                c.push((
                    format!("port{mist}"),
                    what.clone(),
                    format!("Mist port {mist} ({iface}): the same as {what}"),
                ));
            }
        }
        for s in self.endpoint.sessions() {
            let ap = self.endpoint.peer_host_name(s.ccid).unwrap_or("");
            c.push((
                format!("session:{}", s.local_sid),
                Point::Session(s.local_sid),
                format!("L2TP session {} of {ap} ({})", s.local_sid, s.peer),
            ));
            let name = format!("ap:{ap}");
            if !ap.is_empty() && !c.iter().any(|(n, _, _)| *n == name) {
                c.push((
                    name,
                    Point::Ap(ap.into()),
                    format!("every session of AP {ap}: inner frames"),
                ));
            }
        }
        for p in self.gre.peers(self.started) {
            c.push((
                format!("gre:{}", p.addr),
                Point::Gre(p.addr),
                format!("the mGRE peer {}: inner frames", p.addr),
            ));
        }
        let mut vlans: Vec<u16> = super::trunk_port(&self.cfg).vlans.iter().collect();
        vlans.push(self.cfg.upstream_port_vlan_id);
        vlans.sort_unstable();
        vlans.dedup();
        for &v in &vlans {
            if self.switch.port_config(host_port(v)).is_some() {
                c.push((
                    format!("host:{v}"),
                    Point::Host(v),
                    format!("the edge's own host port on VLAN {v}"),
                ));
            }
        }
        for &v in &vlans {
            c.push((
                format!("vlan:{v}"),
                Point::Vlan(v),
                format!("frames entering the switch on VLAN {v}, from any port"),
            ));
        }
        c
    }

    pub(super) fn capture_points(&self) -> Vec<CapturePointInfo> {
        self.capture_catalog()
            .into_iter()
            .map(|(name, _, description)| CapturePointInfo { name, description })
            .collect()
    }

    /// What the capture set knows of each port (APs' names, peers,
    /// untagged VLANs): set at a capture's start, kept by the events.
    pub(super) fn label_capture_ports(&mut self) {
        self.captures.set.set_port(
            TRUNK,
            PortInfo {
                untagged_vlan: Some(self.cfg.upstream_port_vlan_id),
                ..PortInfo::default()
            },
        );
        let sids: Vec<u32> = self.endpoint.sessions().map(|s| s.local_sid).collect();
        for sid in sids {
            self.label_session(sid);
        }
        let peers: Vec<(PortId, IpAddr)> = self
            .gre
            .peers(self.started)
            .map(|p| (p.port, p.addr))
            .collect();
        for (port, addr) in peers {
            self.label_gre_peer(port, addr);
        }
    }

    pub(super) fn label_session(&mut self, sid: u32) {
        let Some(s) = self.endpoint.session(sid) else {
            return;
        };
        let untagged_vlan = self
            .switch
            .port_config(PortId(sid))
            .and_then(|c| c.untagged_vlan);
        let info = PortInfo {
            ap: self.endpoint.peer_host_name(s.ccid).map(str::to_string),
            peer: Some(s.peer.ip()),
            untagged_vlan,
        };
        self.captures.set.set_port(PortId(sid), info);
    }

    pub(super) fn label_gre_peer(&mut self, port: PortId, addr: IpAddr) {
        let untagged_vlan = self.switch.port_config(port).and_then(|c| c.untagged_vlan);
        self.captures.set.set_port(
            port,
            PortInfo {
                ap: None,
                peer: Some(addr),
                untagged_vlan,
            },
        );
    }

    /// Start a capture: its points resolved, its filters compiled (the
    /// error is what the client is told).
    pub(super) fn start_capture(
        &mut self,
        req: CaptureRequest,
        tzsp_to: Option<SocketAddr>,
    ) -> Result<Stream, String> {
        let limits = check(&req)?;
        let catalog = self.capture_catalog();
        let mut points: Vec<(Point, Option<Box<dyn Filter>>)> = Vec::new();
        let mut names = Vec::new();
        for p in &req.points {
            let Some(point) = resolve(&p.name, &catalog) else {
                let valid: Vec<&str> = catalog.iter().map(|(n, _, _)| n.as_str()).collect();
                return Err(format!(
                    "capture: unknown point {:?}; this edge has: {}",
                    p.name,
                    valid.join(", ")
                ));
            };
            let filter = match p.filter.as_deref().or(req.filter.as_deref()) {
                Some(expr) if !expr.trim().is_empty() => {
                    Some(Box::new(compile(expr)?) as Box<dyn Filter>)
                }
                _ => None,
            };
            points.push((point, filter));
            names.push(p.name.clone());
        }
        let out = match (req.format, tzsp_to) {
            (CaptureFormat::Tzsp, Some(to)) => {
                let any: SocketAddr = if to.is_ipv6() {
                    "[::]:0".parse().expect("an address")
                } else {
                    "0.0.0.0:0".parse().expect("an address")
                };
                let sock = UdpSocket::bind(any)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|e| format!("capture: TZSP to {to}: {e}"))?;
                Output::Tzsp {
                    sock,
                    to,
                    buf: Vec::with_capacity(2048 + tzsp::HEADER_LEN),
                }
            }
            (CaptureFormat::Tzsp, None) => return Err("capture: no TZSP address".into()),
            (CaptureFormat::Pcapng, _) => Output::Pcapng(Pcapng::new(&names, limits.snaplen)),
        };
        self.captures.next_id += 1;
        let id = self.captures.next_id;
        self.label_capture_ports();
        self.captures
            .set
            .start(
                id,
                points,
                Limits {
                    num_packets: limits.num_packets,
                    snaplen: limits.snaplen as usize,
                },
            )
            .map_err(|e| format!("capture: {e}"))?;
        let (tx, rx) = mpsc::channel(CHUNKS);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut out = out;
        if let Output::Pcapng(w) = &mut out {
            // The header goes first, whatever the budget.
            let header = w.take();
            in_flight.fetch_add(header.len(), Relaxed);
            let _ = tx.try_send(header);
        }
        let (end_tx, end_rx) = oneshot::channel();
        let now = Instant::now();
        tracing::info!(id, points = %names.join(","), format = ?req.format,
                       num_packets = limits.num_packets, duration = limits.duration,
                       max_pkt_len = limits.snaplen, "capture started");
        self.captures.active.push(Active {
            id,
            points: names.clone(),
            format: req.format,
            deadline: now + Duration::from_secs(limits.duration),
            clock: Clock::now(),
            out,
            chunks: tx,
            in_flight: in_flight.clone(),
            end: Some(end_tx),
        });
        Ok(Stream {
            accepted: CaptureAccepted {
                id,
                points: names,
                num_packets: limits.num_packets,
                duration: limits.duration,
                max_pkt_len: limits.snaplen,
                format: req.format,
                tzsp: tzsp_to.map(|a| a.to_string()),
            },
            chunks: rx,
            in_flight,
            end: end_rx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CapturePoint;

    fn req(json: &str) -> CaptureRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn limits_default_to_mists_and_bad_ones_are_refused() {
        let ok = check(&req(r#"{"points":[{"name":"trunk"}]}"#)).unwrap();
        assert_eq!(
            ok,
            Checked {
                num_packets: 1024,
                duration: 600,
                snaplen: 512
            }
        );
        let e = |j: &str| check(&req(j)).unwrap_err();
        assert!(
            e(r#"{"points":[{"name":"trunk"}],"num_packets":10001}"#).contains("at most 10000")
        );
        assert!(e(r#"{"points":[{"name":"trunk"}],"max_pkt_len":63}"#).contains("64 to 2048"));
        assert!(e(r#"{"points":[{"name":"trunk"}],"max_pkt_len":2049}"#).contains("64 to 2048"));
        assert!(e(r#"{"points":[{"name":"trunk"}],"duration":0}"#).contains("duration 0"));
        assert!(e(r#"{"points":[]}"#).contains("no point"));
        assert!(e(r#"{"points":[{"name":"trunk"}],"format":"tzsp"}"#).contains("needs tzsp"));
        let unlimited = check(&req(r#"{"points":[{"name":"drop"}],"num_packets":0}"#)).unwrap();
        assert_eq!(unlimited.num_packets, 0);
        let r = CaptureRequest {
            points: vec![CapturePoint {
                name: "trunk".into(),
                filter: Some("icmp".into()),
            }],
            ..CaptureRequest::default()
        };
        assert!(check(&r).is_ok());
    }
}
