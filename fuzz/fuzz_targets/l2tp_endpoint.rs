//! The L2TPv3 endpoint (proto/l2tp): the edge (responder) against two
//! AP-side endpoints (initiators) and a forger, over a network the input
//! drives: deliver, lose, duplicate, reorder and corrupt packets, forge
//! control messages and data, let virtual time pass.
//!
//! Properties checked after every step:
//! - the edge never has more half-open connections than its cap, nor more
//!   sources in its SCCRQ rate table than its size;
//! - every datagram the edge gets is accounted: it moves at least one of
//!   the receive counters (control, data, or a drop reason);
//! - a data message the edge accepts on a sequenced session is never
//!   behind the last one accepted (sequencing drops duplicates).
#![no_main]
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tunterm_core::proto::l2tp::{
    AdmissionConfig, Endpoint, EndpointConfig, EndpointCounters, Incoming, PwProfile,
    RetransmitConfig, SessionRequest,
};
use tunterm_core::wire::l2tp::{
    self, Avp, ControlHeader, ControlMessage, Cookie, MessageType, Transport,
};

const MAX_HALF_OPEN: usize = 3;
const RATE_TABLE: usize = 4;
/// In-flight packets kept; the oldest is lost beyond it.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Arbitrary, Debug)]
struct Input {
    cookie_len: u8,
    sequencing: bool,
    admit_only_aps: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        ap: bool,
        ip: bool,
    },
    OpenSession {
        ap: bool,
        conn: u8,
        vlan: bool,
        known_name: bool,
    },
    Close {
        ap: bool,
        conn: u8,
    },
    CloseSession {
        ap: bool,
        sess: u8,
    },
    Deliver {
        at: u8,
    },
    Duplicate {
        at: u8,
    },
    Lose {
        at: u8,
    },
    Corrupt {
        at: u8,
        pos: u16,
        xor: u8,
    },
    ApData {
        ap: bool,
        sess: u8,
        len: u8,
    },
    Data {
        sess: u8,
        good_cookie: bool,
        seq: Option<u32>,
        from_elsewhere: bool,
        len: u8,
    },
    Forged {
        src: u8,
        ip: bool,
        ccid: CcidSel,
        ns: u16,
        nr: u16,
        msg_type: u8,
        avps: Vec<FAvp>,
    },
    Raw {
        src: u8,
        ip: bool,
        bytes: Vec<u8>,
    },
    Tick {
        ms: u16,
    },
    Accepting(bool),
    EdgeCloseAll,
}

#[derive(Arbitrary, Debug)]
enum CcidSel {
    Zero,
    Known(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum FAvp {
    ResultCode(u16, Option<u16>, Option<String>),
    TieBreaker([u8; 8]),
    FirmwareRevision(u16),
    HostName(Vec<u8>),
    VendorName(Vec<u8>),
    ReceiveWindowSize(u16),
    SerialNumber(u32),
    RouterId(u32),
    AssignedCcid(u32),
    PwCapabilities(Vec<u16>),
    LocalSessionId(u32),
    RemoteSessionId(SidSel),
    AssignedCookie(bool, [u8; 8]),
    RemoteEndId(bool, Vec<u8>),
    PwType(u16),
    L2SpecificSublayer(u16),
    DataSequencing(u16),
    CircuitStatus(bool, bool),
    Unknown {
        mandatory: bool,
        vendor: u16,
        attr: u16,
        value: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum SidSel {
    Known(u8),
    Any(u32),
}

struct Pkt {
    /// None: to the edge from `from`; Some(i): from the edge to AP i.
    to_ap: Option<usize>,
    from: SocketAddr,
    transport: Transport,
    bytes: Vec<u8>,
}

const EDGE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1701);
fn ap_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2 + i as u8)),
        40000 + i as u16,
    )
}
fn src_addr(s: u8) -> SocketAddr {
    // Two APs, two other admitted hosts, one host outside the admitted subnet.
    match s % 5 {
        0 | 1 => ap_addr(usize::from(s % 5)),
        2 => "10.0.0.9:1701".parse().unwrap(),
        3 => "10.0.0.10:5000".parse().unwrap(),
        _ => "192.0.2.66:1701".parse().unwrap(),
    }
}

/// The receive counters: each datagram moves at least one of them.
fn accounted(c: &EndpointCounters) -> u64 {
    c.rx_control
        + c.rx_control_not_admitted
        + c.rx_data_not_admitted
        + c.rx_data
        + c.rx_data_malformed
        + c.rx_data_unknown_session
        + c.rx_data_not_established
        + c.rx_data_bad_source
        + c.rx_data_bad_cookie
        + c.rx_data_bad_sublayer
        + c.rx_data_out_of_order
}

struct World {
    now: Instant,
    edge: Endpoint,
    aps: [Endpoint; 2],
    ap_conns: [Vec<u32>; 2],
    net: Vec<Pkt>,
    /// Last sequence number the edge accepted per session.
    last_seq: std::collections::HashMap<u32, u32>,
}

impl World {
    fn drain(&mut self) {
        while let Some(t) = self.edge.poll_transmit() {
            let to = (0..2).find(|&i| ap_addr(i).ip() == t.dst.ip());
            if let Some(i) = to {
                self.push(Pkt {
                    to_ap: Some(i),
                    from: EDGE,
                    transport: t.transport,
                    bytes: t.payload,
                });
            }
        }
        while self.edge.poll_event().is_some() {}
        for i in 0..2 {
            while let Some(t) = self.aps[i].poll_transmit() {
                self.push(Pkt {
                    to_ap: None,
                    from: ap_addr(i),
                    transport: t.transport,
                    bytes: t.payload,
                });
            }
            while self.aps[i].poll_event().is_some() {}
        }
        let admission = &self.edge.config().admission;
        assert!(
            self.edge.half_open_count() <= admission.max_half_open,
            "{} half-open over the cap of {}",
            self.edge.half_open_count(),
            admission.max_half_open
        );
        assert!(self.edge.rate_table_len() <= admission.rate_table_size);
    }

    fn push(&mut self, p: Pkt) {
        if self.net.len() >= MAX_IN_FLIGHT {
            self.net.remove(0);
        }
        self.net.push(p);
    }

    fn send_to_edge(&mut self, transport: Transport, from: SocketAddr, bytes: &[u8]) {
        let before = accounted(self.edge.counters());
        match self.edge.handle_datagram(self.now, transport, from, bytes) {
            Incoming::Data {
                session_id,
                payload,
            } => {
                let s = self
                    .edge
                    .session(session_id)
                    .expect("data for a session that exists");
                if s.drop_out_of_order {
                    // The sequence number this data message carried.
                    let hdr = bytes.len() - payload.len() - l2tp::SUBLAYER_LEN;
                    if let Some(Some(n)) = l2tp::parse_sublayer(&bytes[hdr..])
                        && let Some(last) = self.last_seq.insert(session_id, n)
                    {
                        let ahead = n.wrapping_sub(last) & l2tp::SUBLAYER_SEQ_MASK;
                        assert!(
                            ahead != 0 && ahead < 1 << 23,
                            "seq {n} accepted after {last}"
                        );
                    }
                }
            }
            Incoming::Control | Incoming::Dropped(_) => {}
        }
        assert!(
            accounted(self.edge.counters()) > before,
            "a datagram moved no counter: {bytes:02x?}"
        );
    }

    fn deliver(&mut self, p: &Pkt) {
        match p.to_ap {
            Some(i) => {
                let _ = self.aps[i].handle_datagram(self.now, p.transport, p.from, &p.bytes);
            }
            None => self.send_to_edge(p.transport, p.from, &p.bytes),
        }
    }
}

fn avp(a: FAvp, w: &World) -> Option<Avp> {
    Some(match a {
        FAvp::ResultCode(result, error, message) => Avp::ResultCode {
            result,
            error,
            message,
        },
        FAvp::TieBreaker(b) => Avp::TieBreaker(b),
        FAvp::FirmwareRevision(v) => Avp::FirmwareRevision(v),
        FAvp::HostName(v) => Avp::HostName(v),
        FAvp::VendorName(v) => Avp::VendorName(v),
        FAvp::ReceiveWindowSize(v) => Avp::ReceiveWindowSize(v),
        FAvp::SerialNumber(v) => Avp::SerialNumber(v),
        FAvp::RouterId(v) => Avp::RouterId(v),
        FAvp::AssignedCcid(v) => Avp::AssignedCcid(v),
        FAvp::PwCapabilities(v) => Avp::PwCapabilities(v),
        FAvp::LocalSessionId(v) => Avp::LocalSessionId(v),
        FAvp::RemoteSessionId(SidSel::Any(v)) => Avp::RemoteSessionId(v),
        FAvp::RemoteSessionId(SidSel::Known(i)) => {
            let sids: Vec<u32> = w.edge.sessions().map(|s| s.local_sid).collect();
            Avp::RemoteSessionId(*sids.get(usize::from(i) % sids.len().max(1))?)
        }
        FAvp::AssignedCookie(eight, b) => {
            Avp::AssignedCookie(Cookie::new(&b[..if eight { 8 } else { 4 }]).unwrap())
        }
        FAvp::RemoteEndId(true, _) => Avp::RemoteEndId(b"lab".to_vec()),
        FAvp::RemoteEndId(false, v) => Avp::RemoteEndId(v),
        FAvp::PwType(v) => Avp::PwType(v),
        FAvp::L2SpecificSublayer(v) => Avp::L2SpecificSublayer(v),
        FAvp::DataSequencing(v) => Avp::DataSequencing(v),
        FAvp::CircuitStatus(active, new) => Avp::CircuitStatus { active, new },
        FAvp::Unknown {
            mandatory,
            vendor,
            attr,
            value,
        } => Avp::Unknown {
            mandatory,
            vendor,
            attr,
            value,
        },
    })
}

fn transport(ip: bool) -> Transport {
    if ip { Transport::Ip } else { Transport::Udp }
}

fuzz_target!(|input: Input| {
    let t0 = Instant::now();
    let edge_cfg = EndpointConfig {
        host_name: "edge".into(),
        cookie_len: usize::from(input.cookie_len % 3) * 4,
        sequencing: input.sequencing,
        l2_sublayer: input.sequencing,
        profiles: vec![PwProfile {
            names: vec!["lab".into(), "id-lab".into()],
            hello_interval: Duration::from_secs(2),
            hello_retries: 3,
            transport: None,
        }],
        admit: if input.admit_only_aps {
            vec!["10.0.0.0/24".parse().unwrap()]
        } else {
            vec![]
        },
        admission: AdmissionConfig {
            max_half_open: MAX_HALF_OPEN,
            sccrq_per_second: 1,
            sccrq_burst: 2,
            rate_table_size: RATE_TABLE,
            // Small, so both answering and refusing to answer a stale
            // connection are reached.
            stale_stopccn_per_second: 2,
        },
        retransmit: RetransmitConfig {
            rto_initial: Duration::from_millis(500),
            rto_max: Duration::from_secs(2),
            max_retries: 3,
        },
        ..EndpointConfig::default()
    };
    let ap_cfg = |i: usize| EndpointConfig {
        host_name: format!("ap-{i}"),
        cookie_len: 4 + 4 * i,
        accept_incoming: false,
        l2_sublayer: input.sequencing,
        sequencing: input.sequencing && i == 0,
        ..EndpointConfig::default()
    };
    let mut w = World {
        now: t0,
        edge: Endpoint::new(edge_cfg, 1),
        aps: [Endpoint::new(ap_cfg(0), 2), Endpoint::new(ap_cfg(1), 3)],
        ap_conns: [Vec::new(), Vec::new()],
        net: Vec::new(),
        last_seq: Default::default(),
    };
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Connect { ap, ip } => {
                let i = usize::from(ap);
                let c = w.aps[i].connect(w.now, transport(ip), EDGE, Duration::from_secs(2), 3);
                w.ap_conns[i].push(c);
            }
            Op::OpenSession {
                ap,
                conn,
                vlan,
                known_name,
            } => {
                let i = usize::from(ap);
                if let Some(&c) = w.ap_conns[i].get(usize::from(conn) % w.ap_conns[i].len().max(1))
                {
                    let req = SessionRequest {
                        remote_end_id: if known_name { "lab" } else { "nope" }.into(),
                        pw_type: if vlan {
                            l2tp::pw::ETHERNET_VLAN
                        } else {
                            l2tp::pw::ETHERNET
                        },
                    };
                    let _ = w.aps[i].open_session(w.now, c, req);
                }
            }
            Op::Close { ap, conn } => {
                let i = usize::from(ap);
                if let Some(&c) = w.ap_conns[i].get(usize::from(conn) % w.ap_conns[i].len().max(1))
                {
                    w.aps[i].close(w.now, c, 1, "bye");
                }
            }
            Op::CloseSession { ap, sess } => {
                let i = usize::from(ap);
                let sids: Vec<u32> = w.aps[i].sessions().map(|s| s.local_sid).collect();
                if let Some(&s) = sids.get(usize::from(sess) % sids.len().max(1)) {
                    w.aps[i].close_session(w.now, s, 3);
                }
            }
            Op::Deliver { at } | Op::Lose { at } | Op::Corrupt { at, .. } if w.net.is_empty() => {
                let _ = at;
            }
            Op::Deliver { at } => {
                let p = w.net.remove(usize::from(at) % w.net.len());
                w.deliver(&p);
            }
            Op::Duplicate { at } => {
                if !w.net.is_empty() {
                    let i = usize::from(at) % w.net.len();
                    let p = Pkt {
                        bytes: w.net[i].bytes.clone(),
                        ..w.net[i]
                    };
                    w.deliver(&p);
                }
            }
            Op::Lose { at } => {
                w.net.remove(usize::from(at) % w.net.len());
            }
            Op::Corrupt { at, pos, xor } => {
                let mut p = w.net.remove(usize::from(at) % w.net.len());
                if !p.bytes.is_empty() {
                    let n = p.bytes.len();
                    p.bytes[usize::from(pos) % n] ^= xor;
                }
                w.deliver(&p);
            }
            Op::ApData { ap, sess, len } => {
                let i = usize::from(ap);
                let sids: Vec<u32> = w.aps[i].sessions().map(|s| s.local_sid).collect();
                if let Some(&s) = sids.get(usize::from(sess) % sids.len().max(1)) {
                    let mut buf = Vec::new();
                    if let Some((t, _dst)) = w.aps[i].encap_header(s, &mut buf) {
                        buf.extend(std::iter::repeat_n(0xab, usize::from(len)));
                        w.push(Pkt {
                            to_ap: None,
                            from: ap_addr(i),
                            transport: t,
                            bytes: buf,
                        });
                    }
                }
            }
            Op::Data {
                sess,
                good_cookie,
                seq,
                from_elsewhere,
                len,
            } => {
                let sessions: Vec<_> = w.edge.sessions().cloned().collect();
                if let Some(s) = sessions.get(usize::from(sess) % sessions.len().max(1)) {
                    let cookie = if good_cookie {
                        s.cookie_rx
                    } else {
                        Cookie::new(&[0x5a; 8][..s.cookie_rx.len()]).unwrap()
                    };
                    let hl = l2tp::data_header_len(s.transport, cookie.len());
                    let mut buf = vec![0; hl];
                    l2tp::emit_data_header(s.transport, s.local_sid, &cookie, &mut buf);
                    if s.sublayer {
                        let mut sl = [0; l2tp::SUBLAYER_LEN];
                        l2tp::emit_sublayer(seq.map(|n| n & l2tp::SUBLAYER_SEQ_MASK), &mut sl);
                        buf.extend_from_slice(&sl);
                    }
                    buf.extend(std::iter::repeat_n(0xcd, usize::from(len)));
                    let from = if from_elsewhere { src_addr(3) } else { s.peer };
                    w.send_to_edge(s.transport, from, &buf);
                }
            }
            Op::Forged {
                src,
                ip,
                ccid,
                ns,
                nr,
                msg_type,
                avps,
            } => {
                let ccid = match ccid {
                    CcidSel::Zero => 0,
                    CcidSel::Any(c) => c,
                    CcidSel::Known(i) => {
                        let ccids: Vec<u32> =
                            w.edge.stats(w.now).iter().map(|c| c.local_ccid).collect();
                        ccids
                            .get(usize::from(i) % ccids.len().max(1))
                            .copied()
                            .unwrap_or(0)
                    }
                };
                let msg = ControlMessage {
                    msg_type: MessageType::from(u16::from(msg_type % 24)),
                    avps: avps
                        .into_iter()
                        .take(16)
                        .filter_map(|a| avp(a, &w))
                        .collect(),
                };
                let mut out = Vec::new();
                msg.emit(transport(ip), ControlHeader { ccid, ns, nr }, &mut out);
                w.send_to_edge(transport(ip), src_addr(src), &out);
            }
            Op::Raw { src, ip, bytes } => w.send_to_edge(transport(ip), src_addr(src), &bytes),
            Op::Tick { ms } => {
                w.now += Duration::from_millis(u64::from(ms));
                for _ in 0..64 {
                    let mut fired = false;
                    let [a0, a1] = &mut w.aps;
                    for e in [&mut w.edge, a0, a1] {
                        if e.poll_timeout().is_some_and(|t| t <= w.now) {
                            e.handle_timeout(w.now);
                            fired = true;
                        }
                    }
                    if !fired {
                        break;
                    }
                }
            }
            Op::Accepting(on) => w.edge.set_accepting(on),
            Op::EdgeCloseAll => w.edge.close_all(w.now, 6, "shutdown"),
        }
        w.drain();
    }
    let _ = (w.edge.snapshot(w.now), w.edge.stats(w.now));
});
