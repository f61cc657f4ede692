//! Two endpoints (AP initiator, edge responder) on virtual time, over a
//! network that can lose, duplicate and reorder packets (quinn's `Pair`).

use std::collections::HashSet;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::wire::l2tp::{
    self, Avp, ControlHeader, ControlMessage, Cookie, MessageType, Packet, Transport, pw,
};

const AP: &str = "10.99.0.2:40000";
const EDGE: &str = "10.99.0.1:1701";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn edge_cfg() -> EndpointConfig {
    EndpointConfig {
        host_name: "edge".into(),
        cookie_len: 4,
        profiles: vec![PwProfile {
            names: vec!["lab".into(), "id-lab".into()],
            hello_interval: Duration::from_secs(2),
            hello_retries: 3,
            transport: None,
        }],
        ..EndpointConfig::default()
    }
}

fn ap_cfg(cookie_len: usize) -> EndpointConfig {
    EndpointConfig {
        host_name: "ap-1".into(),
        cookie_len,
        accept_incoming: false,
        ..EndpointConfig::default()
    }
}

/// Network impairment, in percent per packet, from a seeded generator so a
/// run is repeatable.
#[derive(Clone, Copy, Default)]
struct Impair {
    /// Packets lost.
    loss: u64,
    /// Packets delivered twice.
    dup: u64,
    /// Packets swapped with the one before.
    swap: u64,
}

struct Pair {
    now: Instant,
    transport: Transport,
    ap: Endpoint,
    edge: Endpoint,
    /// In flight: (deliver at, to edge?, from, payload).
    wire: VecDeque<(Instant, bool, Vec<u8>)>,
    impair: Impair,
    sent: u64,
    latency: Duration,
    ap_events: Vec<Event>,
    edge_events: Vec<Event>,
    /// Blackhole everything from the AP (a silent AP).
    ap_silent: bool,
    /// When the edge last got a packet from the AP.
    last_to_edge: Option<Instant>,
    /// When the edge reported its tunnel down.
    edge_down_at: Option<Instant>,
    /// What the edge sent to others than the AP (kept only with
    /// `strays_ok`; otherwise such a packet fails the test).
    strays: Vec<Transmit>,
    strays_ok: bool,
    /// The link is cut: everything is lost, both ways.
    cut: bool,
    /// When the AP last got a packet from the edge.
    last_to_ap: Option<Instant>,
    /// When the AP reported its tunnel down.
    ap_down_at: Option<Instant>,
}

impl Pair {
    /// Over IP there are no ports: the driver hands over port 0.
    fn ap_addr(&self) -> SocketAddr {
        match self.transport {
            Transport::Udp => addr(AP),
            Transport::Ip => SocketAddr::new(addr(AP).ip(), 0),
        }
    }

    fn edge_addr(&self) -> SocketAddr {
        match self.transport {
            Transport::Udp => addr(EDGE),
            Transport::Ip => SocketAddr::new(addr(EDGE).ip(), 0),
        }
    }

    fn new(transport: Transport, cookie_len: usize) -> Self {
        Pair {
            now: crate::test_t0(),
            ap: Endpoint::new(ap_cfg(cookie_len), 1),
            edge: Endpoint::new(edge_cfg(), 2),
            transport,
            wire: VecDeque::new(),
            impair: Impair::default(),
            sent: 0,
            latency: Duration::from_millis(5),
            ap_events: vec![],
            edge_events: vec![],
            ap_silent: false,
            last_to_edge: None,
            edge_down_at: None,
            strays: vec![],
            strays_ok: false,
            cut: false,
            last_to_ap: None,
            ap_down_at: None,
        }
    }

    fn collect(&mut self) {
        while let Some(t) = self.ap.poll_transmit() {
            assert_eq!(t.dst, self.edge_addr());
            assert_eq!(t.transport, self.transport);
            if !self.ap_silent {
                self.put(true, t.payload);
            }
        }
        while let Some(t) = self.edge.poll_transmit() {
            if self.strays_ok && t.dst != self.ap_addr() {
                self.strays.push(t);
                continue;
            }
            assert_eq!(t.dst, self.ap_addr());
            self.put(false, t.payload);
        }
        while let Some(e) = self.ap.poll_event() {
            if matches!(e, Event::TunnelDown { .. }) && self.ap_down_at.is_none() {
                self.ap_down_at = Some(self.now);
            }
            self.ap_events.push(e);
        }
        while let Some(e) = self.edge.poll_event() {
            if matches!(e, Event::TunnelDown { .. }) && self.edge_down_at.is_none() {
                self.edge_down_at = Some(self.now);
            }
            self.edge_events.push(e);
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.sent = self
            .sent
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.sent >> 33) % 100 < percent
    }

    fn put(&mut self, to_edge: bool, p: Vec<u8>) {
        let i = self.impair;
        if self.chance(i.loss) || self.cut {
            return;
        }
        let at = self.now + self.latency;
        if self.chance(i.dup) {
            self.wire.push_back((at, to_edge, p.clone()));
        }
        self.wire.push_back((at, to_edge, p));
        if self.chance(i.swap) && self.wire.len() >= 2 {
            let l = self.wire.len();
            self.wire.swap(l - 1, l - 2);
        }
    }

    /// Advance virtual time to `until`, delivering packets and running timers.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.collect();
            let next_pkt = self.wire.front().map(|w| w.0);
            let next = [next_pkt, self.ap.poll_timeout(), self.edge.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = until;
                self.ap.handle_timeout(until);
                self.edge.handle_timeout(until);
                self.collect();
                return;
            };
            self.now = self.now.max(next);
            if next_pkt == Some(next) {
                let (_, to_edge, p) = self.wire.pop_front().unwrap();
                let r = if to_edge {
                    self.last_to_edge = Some(self.now);
                    self.edge
                        .handle_datagram(self.now, self.transport, self.ap_addr(), &p)
                } else {
                    self.last_to_ap = Some(self.now);
                    self.ap
                        .handle_datagram(self.now, self.transport, self.edge_addr(), &p)
                };
                // Only control on this wire; from an AP no longer admitted
                // it is dropped.
                assert!(
                    matches!(
                        r,
                        Incoming::Control | Incoming::Dropped(DataDrop::NotAdmitted)
                    ),
                    "only control on this wire: {r:?}"
                );
            }
            self.ap.handle_timeout(self.now);
            self.edge.handle_timeout(self.now);
        }
    }

    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn connect(&mut self, pw_type: u16) -> u32 {
        let ccid = self.ap.connect(
            self.now,
            self.transport,
            addr(EDGE),
            Duration::from_secs(2),
            3,
        );
        self.request_session(ccid, pw_type);
        ccid
    }

    /// The AP asks for one more session (remote end "lab") on `ccid`.
    fn request_session(&mut self, ccid: u32, pw_type: u16) {
        assert!(self.ap.open_session(
            self.now,
            ccid,
            SessionRequest {
                remote_end_id: "lab".into(),
                pw_type,
            },
        ));
    }

    /// Both sides have seen `n` sessions come up.
    fn assert_sessions_up(&self, n: usize, what: &str) {
        let ap = Self::sessions_up(&self.ap_events).len();
        assert_eq!(ap, n, "{what}: AP sessions up: {:?}", self.ap_events);
        let edge = Self::sessions_up(&self.edge_events).len();
        assert_eq!(edge, n, "{what}: edge sessions up: {:?}", self.edge_events);
    }

    fn sessions_up(events: &[Event]) -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::SessionUp { session_id, .. } => Some(*session_id),
                _ => None,
            })
            .collect()
    }
}

fn establish(transport: Transport, cookie_len: usize, impair: Impair) -> Pair {
    let mut p = Pair::new(transport, cookie_len);
    p.impair = impair;
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(20));
    p.assert_sessions_up(1, "establish");
    p
}

#[test]
fn handshake_brings_up_tunnel_and_session_both_transports() {
    for transport in [Transport::Udp, Transport::Ip] {
        let p = establish(transport, 8, Impair::default());
        let stats = p.edge.stats(p.now);
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].state, "established_with_sessions");
        assert_eq!(stats[0].ap, "ap-1");
        let port = if transport == Transport::Udp {
            40000
        } else {
            0
        };
        assert_eq!(stats[0].remote_port, port);
        assert_eq!(stats[0].sessions[0].state, "established");
        assert_eq!(stats[0].sessions[0].remote_id, "lab");
        // SCCRQ, SCCCN, ICRQ, ICCN from the AP; SCCRP, ICRP, ZLB(s) from the edge.
        assert!(stats[0].rx_control_pkts >= 4);
        assert_eq!(stats[0].retransmits, 0, "clean network: no retransmission");
        let ap = &p.ap.stats(p.now)[0];
        assert_eq!(ap.ap, "edge", "AP sees the edge's host name");
        assert_eq!(ap.remote_ccid, stats[0].local_ccid);
        assert_eq!(stats[0].remote_ccid, ap.local_ccid);
    }
}

#[test]
fn data_crosses_with_cookies_of_each_size() {
    for cookie_len in [0, 4, 8] {
        for transport in [Transport::Udp, Transport::Ip] {
            let mut p = establish(transport, cookie_len, Impair::default());
            let ap_sid = Pair::sessions_up(&p.ap_events)[0];
            let edge_sid = Pair::sessions_up(&p.edge_events)[0];
            let ap_s = p.ap.session(ap_sid).unwrap().clone();
            assert_eq!(ap_s.cookie_rx.len(), cookie_len);
            // AP → edge: header from the AP's view of the session.
            let frame = [0xab_u8; 60];
            let mut pkt = vec![0; l2tp::data_header_len(transport, ap_s.cookie_tx.len())];
            l2tp::emit_data_header(transport, ap_s.remote_sid, &ap_s.cookie_tx, &mut pkt);
            pkt.extend_from_slice(&frame);
            match p
                .edge
                .handle_datagram(p.now, p.transport, p.ap_addr(), &pkt)
            {
                Incoming::Data {
                    session_id,
                    payload,
                } => {
                    assert_eq!(session_id, edge_sid);
                    assert_eq!(payload, &frame[..]);
                }
                other => panic!("{other:?}"),
            }
            // Wrong source, wrong cookie, unknown session: dropped and counted.
            let r = p
                .edge
                .handle_datagram(p.now, p.transport, addr("10.99.0.9:40000"), &pkt);
            assert_eq!(r, Incoming::Dropped(DataDrop::BadSource));
            if cookie_len > 0 {
                let mut bad = pkt.clone();
                let at = l2tp::data_header_len(transport, 0);
                bad[at] ^= 0xff;
                let r = p
                    .edge
                    .handle_datagram(p.now, p.transport, p.ap_addr(), &bad);
                assert_eq!(r, Incoming::Dropped(DataDrop::BadCookie));
            }
            let mut unknown = vec![0; l2tp::data_header_len(transport, 0)];
            l2tp::emit_data_header(transport, 0x0bad_cafe, &Cookie::NONE, &mut unknown);
            unknown.extend_from_slice(&frame);
            let r = p
                .edge
                .handle_datagram(p.now, p.transport, p.ap_addr(), &unknown);
            assert_eq!(r, Incoming::Dropped(DataDrop::UnknownSession));
            let c = p.edge.counters();
            assert_eq!(c.rx_data, 1);
            assert_eq!(c.rx_data_bad_source, 1);
            assert_eq!(c.rx_data_bad_cookie, u64::from(cookie_len > 0));
            assert_eq!(c.rx_data_unknown_session, 1);
        }
    }
}

#[test]
fn survives_loss_duplication_and_reordering() {
    for (name, impair) in [
        (
            "loss",
            Impair {
                loss: 25,
                ..Impair::default()
            },
        ),
        (
            "dup",
            Impair {
                dup: 50,
                ..Impair::default()
            },
        ),
        (
            "reorder",
            Impair {
                swap: 50,
                ..Impair::default()
            },
        ),
        (
            "all",
            Impair {
                loss: 15,
                dup: 20,
                swap: 20,
            },
        ),
    ] {
        let mut p = Pair::new(Transport::Udp, 4);
        p.sent = 7;
        p.impair = impair;
        // Three sessions, so several messages are in flight at once.
        let ccid = p.connect(pw::ETHERNET);
        for _ in 0..2 {
            p.request_session(ccid, pw::ETHERNET);
        }
        p.run(Duration::from_secs(30));
        p.assert_sessions_up(3, name);
        assert_eq!(
            p.edge.conn_count(),
            1,
            "{name}: duplicates create no second tunnel"
        );
        assert_eq!(p.edge.session_count(), 3, "{name}");
        let (e, a) = (p.edge.counters(), p.ap.counters());
        match name {
            "dup" => assert!(
                e.control_duplicates + a.control_duplicates > 0,
                "{name}: duplicates seen"
            ),
            "reorder" => assert!(
                e.control_reordered + a.control_reordered > 0,
                "{name}: reordering seen"
            ),
            _ => {}
        }
        // Stay up through several hello periods despite the impairment.
        p.run(Duration::from_secs(30));
        assert!(
            !p.edge_events
                .iter()
                .any(|e| matches!(e, Event::TunnelDown { .. })),
            "{name}: {:?}",
            p.edge_events
        );
    }
}

#[test]
fn stopccn_from_ap_tears_down_edge_side() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    let ccid = match p.ap_events[0] {
        Event::TunnelUp { ccid, .. } => ccid,
        ref e => panic!("{e:?}"),
    };
    p.ap.close(p.now, ccid, l2tp::stopccn::CLEAR, "bye");
    p.run(Duration::from_secs(1));
    let edge_sid = Pair::sessions_up(&p.edge_events)[0];
    assert!(p.edge_events.contains(&Event::SessionDown {
        ccid: edge_ccid(&p),
        session_id: edge_sid,
        reason: CloseReason::PeerStopCcn {
            result: l2tp::stopccn::CLEAR,
            error: Some(0),
            message: Some("bye".into()),
        },
    }));
    assert!(
        p.edge_events
            .iter()
            .any(|e| matches!(e, Event::TunnelDown { was_up: true, .. }))
    );
    assert!(p.edge.stats(p.now).is_empty());
    assert_eq!(p.edge.session_count(), 0);
    // Both sides forget the connection after lingering.
    p.run(Duration::from_secs(10));
    assert_eq!(p.edge.conn_count(), 0);
    assert_eq!(p.ap.conn_count(), 0);
}

#[test]
fn a_paused_edge_answers_sccrq_with_stopccn_and_takes_tunnels_again_when_resumed() {
    let mut p = Pair::new(Transport::Udp, 4);
    p.edge.set_accepting(false);
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(1));
    // The AP hears why at once (one round trip), not after ~31 s of
    // unanswered SCCRQs.
    let down = p
        .ap_events
        .iter()
        .find_map(|e| match e {
            Event::TunnelDown { reason, was_up, .. } => Some((reason.clone(), *was_up)),
            _ => None,
        })
        .expect("the AP's tunnel attempt ends");
    assert_eq!(
        down,
        (
            CloseReason::PeerStopCcn {
                result: l2tp::stopccn::CLEAR,
                error: Some(0),
                message: Some(super::conn::NOT_ACCEPTING.into()),
            },
            false
        )
    );
    assert!(Pair::sessions_up(&p.edge_events).is_empty());
    let c = p.edge.counters();
    assert_eq!(
        (
            c.sccrq_received,
            c.sccrq_accepted,
            c.sccrq_refused,
            c.sccrq_not_accepting
        ),
        (1, 0, 1, 1)
    );
    assert!(
        !p.edge_events
            .iter()
            .any(|e| matches!(e, Event::TunnelUp { .. })),
        "{:?}",
        p.edge_events
    );
    // The AP acknowledges the StopCCN (it learns our CCID from it): no
    // retransmission until it gives up (~31 s), the refusing connection
    // goes after lingering.
    p.run(Duration::from_secs(10));
    assert_eq!(p.edge.conn_count(), 0);
    assert_eq!(p.edge.half_open_count(), 0);

    p.edge.set_accepting(true);
    p.ap_events.clear();
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(1));
    assert_eq!(Pair::sessions_up(&p.edge_events).len(), 1);
    assert_eq!(p.edge.counters().sccrq_accepted, 1);
}

#[test]
fn an_initiator_only_endpoint_ignores_sccrq() {
    let now = crate::test_t0();
    let mut ap = Endpoint::new(ap_cfg(4), 5);
    ap.set_accepting(true);
    assert_eq!(
        ap.handle_datagram(now, Transport::Udp, addr(EDGE), &raw_sccrq(vec![], 0)),
        Incoming::Control
    );
    assert!(ap.poll_transmit().is_none(), "no reply from an AP");
    assert_eq!(ap.counters().sccrq_refused, 1);
    assert_eq!(ap.conn_count(), 0);
}

fn edge_ccid(p: &Pair) -> u32 {
    p.edge_events
        .iter()
        .find_map(|e| match e {
            Event::TunnelUp { ccid, .. } => Some(*ccid),
            _ => None,
        })
        .unwrap()
}

#[test]
fn silent_ap_is_torn_down_after_hello_interval_times_retries() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    p.ap_silent = true;
    // Profile: hello 2 s × 3 = 6 s after the last packet heard.
    p.run(Duration::from_secs(10));
    let heard = p.last_to_edge.unwrap();
    let down = p.edge_down_at.expect("torn down");
    assert_eq!(
        down - heard,
        Duration::from_secs(6),
        "exactly hello_interval × hello_retries"
    );
    assert!(p.edge_events.iter().any(|e| matches!(
        e,
        Event::TunnelDown {
            reason: CloseReason::HelloTimeout,
            ..
        }
    )));
    assert!(p.edge.counters().hellos_sent >= 1);
    assert_eq!(p.edge.session_count(), 0);
    assert!(p.edge.stats(p.now).is_empty());
}

#[test]
fn hellos_keep_an_idle_tunnel_up() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    p.run(Duration::from_secs(60));
    assert!(
        !p.edge_events
            .iter()
            .any(|e| matches!(e, Event::TunnelDown { .. }))
    );
    assert!(p.edge.counters().hellos_sent > 0 || p.ap.counters().hellos_sent > 0);
}

#[test]
fn unknown_remote_end_id_is_refused_with_cdn() {
    let mut p = Pair::new(Transport::Udp, 4);
    let ccid =
        p.ap.connect(p.now, p.transport, addr(EDGE), Duration::from_secs(2), 3);
    p.ap.open_session(
        p.now,
        ccid,
        SessionRequest {
            remote_end_id: "nope".into(),
            pw_type: pw::ETHERNET,
        },
    );
    p.run(Duration::from_secs(2));
    assert!(p.ap_events.iter().any(|e| matches!(
        e,
        Event::PeerCdn {
            result: l2tp::cdn::GENERAL_ERROR,
            ..
        }
    )));
    assert_eq!(p.edge.session_count(), 0);
    assert_eq!(p.edge.counters().sessions_refused, 1);
    // The tunnel itself stays up.
    assert_eq!(p.edge.stats(p.now)[0].state, "established");
}

#[test]
fn unsupported_pw_type_is_refused() {
    let mut p = Pair::new(Transport::Udp, 4);
    p.connect(0x0007);
    p.run(Duration::from_secs(2));
    assert!(p.ap_events.iter().any(|e| matches!(
        e,
        Event::PeerCdn {
            result: l2tp::cdn::PW_TYPE_NOT_SUPPORTED,
            ..
        }
    )));
}

/// Handcraft an SCCRQ with extra AVPs and feed it to a fresh edge.
fn raw_sccrq(extra: Vec<Avp>, ns: u16) -> Vec<u8> {
    let mut avps = vec![
        Avp::HostName(b"raw-ap".to_vec()),
        Avp::RouterId(7),
        Avp::AssignedCcid(77),
        Avp::PwCapabilities(vec![pw::ETHERNET]),
    ];
    avps.extend(extra);
    let msg = ControlMessage {
        msg_type: MessageType::Sccrq,
        avps,
    };
    let mut out = vec![];
    msg.emit(
        Transport::Udp,
        ControlHeader { ccid: 0, ns, nr: 0 },
        &mut out,
    );
    out
}

fn decode(p: &[u8]) -> (ControlHeader, Option<ControlMessage>) {
    match l2tp::parse(Transport::Udp, p).unwrap() {
        Packet::Control(c) => (
            c.header,
            (!c.is_zlb()).then(|| ControlMessage::parse(&c).unwrap()),
        ),
        Packet::Data(_) => panic!("data"),
    }
}

#[test]
fn unknown_mandatory_avp_in_sccrq_gets_stopccn() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let pkt = raw_sccrq(
        vec![Avp::Unknown {
            mandatory: true,
            vendor: 0,
            attr: 999,
            value: vec![1, 2],
        }],
        0,
    );
    assert_eq!(
        edge.handle_datagram(now, Transport::Udp, addr(AP), &pkt),
        Incoming::Control
    );
    let t = edge.poll_transmit().expect("StopCCN");
    let (h, m) = decode(&t.payload);
    assert_eq!(h.ccid, 77, "addressed to the peer's assigned CCID");
    let m = m.unwrap();
    assert_eq!(m.msg_type, MessageType::StopCcn);
    assert!(m.avps.contains(&Avp::ResultCode {
        result: l2tp::stopccn::GENERAL_ERROR,
        error: Some(l2tp::error_code::UNKNOWN_MANDATORY_AVP),
        message: Some("unknown mandatory AVP vendor 0 type 999".into()),
    }));
    assert_eq!(edge.counters().unknown_mandatory_avps, 1);
}

#[test]
fn unknown_optional_avp_is_ignored() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let pkt = raw_sccrq(
        vec![Avp::Unknown {
            mandatory: false,
            vendor: 9,
            attr: 1,
            value: vec![1],
        }],
        0,
    );
    let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &pkt);
    let (_, m) = decode(&edge.poll_transmit().unwrap().payload);
    assert_eq!(m.unwrap().msg_type, MessageType::Sccrp);
}

#[test]
fn retransmitted_sccrq_creates_one_tunnel_and_is_reacked() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let pkt = raw_sccrq(vec![], 0);
    let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &pkt);
    let (h1, m1) = decode(&edge.poll_transmit().unwrap().payload);
    assert_eq!(m1.unwrap().msg_type, MessageType::Sccrp);
    assert_eq!((h1.ns, h1.nr), (0, 1));
    let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &pkt);
    let (h2, m2) = decode(&edge.poll_transmit().unwrap().payload);
    assert!(m2.is_none(), "duplicate answered with a ZLB");
    assert_eq!(h2.nr, 1);
    assert_eq!(edge.conn_count(), 1);
    assert_eq!(edge.counters().control_duplicates, 1);
}

#[test]
fn sccrq_missing_host_name_is_refused() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let msg = ControlMessage {
        msg_type: MessageType::Sccrq,
        avps: vec![
            Avp::RouterId(7),
            Avp::AssignedCcid(77),
            Avp::PwCapabilities(vec![pw::ETHERNET]),
        ],
    };
    let mut pkt = vec![];
    msg.emit(
        Transport::Udp,
        ControlHeader {
            ccid: 0,
            ns: 0,
            nr: 0,
        },
        &mut pkt,
    );
    let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &pkt);
    let (_, m) = decode(&edge.poll_transmit().unwrap().payload);
    assert_eq!(m.unwrap().msg_type, MessageType::StopCcn);
    assert!(edge.stats(now).is_empty());
}

#[test]
fn half_open_tunnel_is_dropped_when_sccrp_is_never_acked() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &raw_sccrq(vec![], 0));
    let mut t = now;
    for _ in 0..20 {
        while edge.poll_transmit().is_some() {}
        let Some(next) = edge.poll_timeout() else {
            break;
        };
        t = next;
        edge.handle_timeout(t);
    }
    assert_eq!(edge.conn_count(), 0, "gone after the retry cap");
    assert!(t - now < Duration::from_secs(60));
    assert!(matches!(
        edge.poll_event(),
        Some(Event::TunnelDown {
            was_up: false,
            reason: CloseReason::RetransmitTimeout,
            ..
        })
    ));
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let valid = raw_sccrq(vec![], 0);
    let mut seed = 0x1234_5678_u64;
    for len in 0..valid.len() {
        let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &valid[..len]);
    }
    for _ in 0..2000 {
        let mut p = valid.clone();
        for _ in 0..3 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (seed >> 33) as usize % p.len();
            p[i] ^= (seed >> 20) as u8;
        }
        let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &p);
    }
    let c = edge.counters();
    assert!(c.rx_data_malformed + c.rx_control_malformed > 0);
}

#[test]
fn ethernet_vlan_pseudowire_comes_up_with_its_type() {
    let mut p = Pair::new(Transport::Udp, 4);
    p.connect(pw::ETHERNET_VLAN);
    p.run(Duration::from_secs(2));
    let sid = Pair::sessions_up(&p.edge_events)[0];
    assert_eq!(p.edge.session(sid).unwrap().pw_type, pw::ETHERNET_VLAN);
    assert_eq!(
        p.edge.stats(p.now)[0].sessions[0].pw_type,
        pw::ETHERNET_VLAN
    );
}

#[test]
fn unknown_mandatory_avp_in_icrq_gets_cdn_and_the_tunnel_stays() {
    let now = crate::test_t0();
    let mut edge = Endpoint::new(edge_cfg(), 3);
    let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &raw_sccrq(vec![], 0));
    let (_, sccrp) = decode(&edge.poll_transmit().unwrap().payload);
    let edge_ccid = sccrp.unwrap().assigned_ccid().unwrap();
    let send = |edge: &mut Endpoint, t: MessageType, avps: Vec<Avp>, ns: u16| {
        let mut out = vec![];
        let h = ControlHeader {
            ccid: edge_ccid,
            ns,
            nr: 1,
        };
        ControlMessage { msg_type: t, avps }.emit(Transport::Udp, h, &mut out);
        let _ = edge.handle_datagram(now, Transport::Udp, addr(AP), &out);
    };
    send(&mut edge, MessageType::Scccn, vec![], 1);
    while edge.poll_transmit().is_some() {}
    let icrq = vec![
        Avp::LocalSessionId(4242),
        Avp::RemoteSessionId(0),
        Avp::SerialNumber(1),
        Avp::PwType(pw::ETHERNET),
        Avp::RemoteEndId(b"lab".to_vec()),
        Avp::Unknown {
            mandatory: true,
            vendor: 0,
            attr: 900,
            value: vec![0],
        },
    ];
    send(&mut edge, MessageType::Icrq, icrq, 2);
    let (h, m) = decode(&edge.poll_transmit().expect("CDN").payload);
    let m = m.unwrap();
    assert_eq!(h.ccid, 77);
    assert_eq!(m.msg_type, MessageType::Cdn);
    assert_eq!(
        m.remote_session_id(),
        Some(4242),
        "addressed to the AP's session"
    );
    let (result, error, _) = m.result_code().unwrap();
    assert_eq!(
        (result, error),
        (
            l2tp::cdn::GENERAL_ERROR,
            Some(l2tp::error_code::UNKNOWN_MANDATORY_AVP)
        )
    );
    assert_eq!(edge.session_count(), 0);
    assert_eq!(
        edge.stats(now)[0].state,
        "established",
        "the tunnel is not torn down"
    );
}

fn establish_with(l2_sublayer: bool, sequencing: bool) -> (Pair, u32, u32) {
    let mut p = Pair::new(Transport::Udp, 4);
    p.ap = Endpoint::new(
        EndpointConfig {
            l2_sublayer,
            sequencing,
            ..ap_cfg(4)
        },
        1,
    );
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(2));
    let ap_sid = Pair::sessions_up(&p.ap_events)[0];
    let edge_sid = Pair::sessions_up(&p.edge_events)[0];
    (p, ap_sid, edge_sid)
}

/// A data message from the AP with sequence number `seq` (None: S bit clear).
fn ap_data(p: &Pair, ap_sid: u32, seq: Option<u32>, frame: &[u8]) -> Vec<u8> {
    let s = p.ap.session(ap_sid).unwrap();
    let mut pkt = vec![0; s.header_len()];
    let n = l2tp::emit_data_header(Transport::Udp, s.remote_sid, &s.cookie_tx, &mut pkt);
    l2tp::emit_sublayer(seq, &mut pkt[n..]);
    pkt.extend_from_slice(frame);
    pkt
}

#[test]
fn sublayer_is_negotiated_and_carries_sequence_numbers() {
    let (mut p, ap_sid, edge_sid) = establish_with(true, true);
    let (a, e) = (
        p.ap.session(ap_sid).unwrap(),
        p.edge.session(edge_sid).unwrap(),
    );
    assert!(a.sublayer && e.sublayer, "both sides use the sublayer");
    assert!(
        a.send_seq && e.send_seq,
        "a sequenced session is sequenced both ways"
    );
    assert!(e.drop_out_of_order);
    // The edge's own encapsulation numbers its packets 0, 1, 2...
    let mut out = vec![];
    for want in 0..3 {
        p.edge.encap_header(edge_sid, &mut out).unwrap();
        let at = l2tp::data_header_len(Transport::Udp, 4);
        assert_eq!(l2tp::parse_sublayer(&out[at..]), Some(Some(want)));
    }
    let frame = [0x11u8; 60];
    for seq in [0, 1, 2] {
        let pkt = ap_data(&p, ap_sid, Some(seq), &frame);
        assert!(
            matches!(p.edge.handle_datagram(p.now, p.transport, p.ap_addr(), &pkt), Incoming::Data { payload, .. } if payload == frame)
        );
    }
    // A duplicate and a late packet are counted and dropped.
    let dup = ap_data(&p, ap_sid, Some(2), &frame);
    assert_eq!(
        p.edge
            .handle_datagram(p.now, p.transport, p.ap_addr(), &dup),
        Incoming::Dropped(DataDrop::OutOfOrder)
    );
    let late = ap_data(&p, ap_sid, Some(0), &frame);
    assert_eq!(
        p.edge
            .handle_datagram(p.now, p.transport, p.ap_addr(), &late),
        Incoming::Dropped(DataDrop::OutOfOrder)
    );
    // A gap (loss) is accepted and counted.
    let ahead = ap_data(&p, ap_sid, Some(6), &frame);
    assert!(matches!(
        p.edge
            .handle_datagram(p.now, p.transport, p.ap_addr(), &ahead),
        Incoming::Data { .. }
    ));
    // Too short for the sublayer.
    let mut short = ap_data(&p, ap_sid, Some(7), &[]);
    short.truncate(short.len() - 2);
    assert_eq!(
        p.edge
            .handle_datagram(p.now, p.transport, p.ap_addr(), &short),
        Incoming::Dropped(DataDrop::BadSublayer)
    );
    let c = p.edge.counters();
    assert_eq!(
        (
            c.rx_data,
            c.rx_data_out_of_order,
            c.rx_data_duplicate,
            c.rx_data_seq_gap,
            c.rx_data_bad_sublayer
        ),
        (4, 2, 1, 3, 1)
    );
}

#[test]
fn a_sequence_number_half_the_space_ahead_is_taken_as_late() {
    let (mut p, ap_sid, _) = establish_with(true, true);
    let frame = [0x11u8; 60];
    let deliver = |p: &mut Pair, seq: u32| {
        let pkt = ap_data(p, ap_sid, Some(seq), &frame);
        matches!(
            p.edge
                .handle_datagram(p.now, p.transport, p.ap_addr(), &pkt),
            Incoming::Data { .. }
        )
    };
    // The numbers of the fuzz finding: 2^23 apart.
    assert!(deliver(&mut p, 10_987_431));
    assert!(!deliver(&mut p, 2_598_823), "exactly half ahead: late");
    // One less than half ahead is newer; then its opposite is late.
    assert!(deliver(&mut p, (10_987_431 + (1 << 23) - 1) & 0xff_ffff));
    assert!(!deliver(&mut p, 10_987_431));
}

#[test]
fn sublayer_without_sequencing_counts_but_delivers() {
    let (mut p, ap_sid, edge_sid) = establish_with(true, false);
    let e = p.edge.session(edge_sid).unwrap();
    assert!(e.sublayer && !e.send_seq && !e.drop_out_of_order);
    let frame = [0x22u8; 60];
    for seq in [5, 4] {
        let pkt = ap_data(&p, ap_sid, Some(seq), &frame);
        assert!(matches!(
            p.edge
                .handle_datagram(p.now, p.transport, p.ap_addr(), &pkt),
            Incoming::Data { .. }
        ));
    }
    assert_eq!(
        p.edge.counters().rx_data_out_of_order,
        1,
        "counted, delivered"
    );
    // The edge sends the sublayer with the S bit clear.
    let mut out = vec![];
    p.edge.encap_header(edge_sid, &mut out).unwrap();
    assert_eq!(
        l2tp::parse_sublayer(&out[l2tp::data_header_len(Transport::Udp, 4)..]),
        Some(None)
    );
}

#[test]
fn no_sublayer_unless_asked() {
    let (p, _, edge_sid) = establish_with(false, false);
    let e = p.edge.session(edge_sid).unwrap();
    assert!(!e.sublayer);
    assert_eq!(e.header_len(), l2tp::data_header_len(Transport::Udp, 4));
}

#[test]
fn mxtunnel_protocol_decides_which_encapsulation_may_bind() {
    // The profile is udp-only: a session arriving over IP 115 is refused.
    let mut p = Pair::new(Transport::Ip, 4);
    p.edge = Endpoint::new(
        EndpointConfig {
            profiles: vec![PwProfile {
                transport: Some(Transport::Udp),
                ..edge_cfg().profiles[0].clone()
            }],
            ..edge_cfg()
        },
        2,
    );
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(2));
    assert!(
        p.ap_events
            .iter()
            .any(|e| matches!(e, Event::PeerCdn { .. })),
        "{:?}",
        p.ap_events
    );
    assert_eq!(p.edge.session_count(), 0);
    // Over UDP the same AP gets its session.
    let mut p2 = Pair::new(Transport::Udp, 4);
    p2.edge = Endpoint::new(p.edge.config().clone(), 2);
    p2.connect(pw::ETHERNET);
    p2.run(Duration::from_secs(2));
    let sid = Pair::sessions_up(&p2.ap_events)[0];
    // A data message for a UDP session that arrives over IP is dropped.
    let s = p2.ap.session(sid).unwrap();
    let mut pkt = vec![0; l2tp::data_header_len(Transport::Ip, 4)];
    l2tp::emit_data_header(Transport::Ip, s.remote_sid, &s.cookie_tx, &mut pkt);
    pkt.extend_from_slice(&[0u8; 60]);
    let from = SocketAddr::new(addr(AP).ip(), 0);
    let r = p2.edge.handle_datagram(p2.now, Transport::Ip, from, &pkt);
    assert_eq!(r, Incoming::Dropped(DataDrop::BadSource));
}

/// The edge restarts: a new endpoint takes back a snapshot written
/// `stale_by` hellos before the old one died. Both sides keep their tunnel
/// and session (no TunnelDown anywhere), data goes on both ways, and the
/// sequence numbers resynchronise (no retransmission left hanging).
fn restart_edge(p: &mut Pair, stale_by: Duration) {
    let snap = p.edge.snapshot(p.now);
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].sessions.len(), 1);
    // The old edge lives on a while after the file was written (its Ns
    // and Nr move on), then dies.
    p.run(stale_by);
    p.edge = Endpoint::new(edge_cfg(), 99);
    p.edge_events.clear();
    let r = p.edge.restore(p.now, snap.clone());
    assert_eq!((r.tunnels, r.sessions), (1, 1), "{r:?}");
    assert!(r.refused.is_empty(), "{r:?}");
    // Restoring fires the same events a new tunnel would, for the driver.
    p.collect();
    assert_eq!(
        Pair::sessions_up(&p.edge_events),
        vec![snap[0].sessions[0].local_sid]
    );
}

#[test]
fn a_restored_edge_keeps_tunnels_and_resynchronises_sequence_numbers() {
    for stale in [Duration::ZERO, Duration::from_secs(5)] {
        for transport in [Transport::Udp, Transport::Ip] {
            let mut p = establish(transport, 8, Impair::default());
            let ap_sid = Pair::sessions_up(&p.ap_events)[0];
            let edge_sid = Pair::sessions_up(&p.edge_events)[0];
            p.run(Duration::from_secs(3));
            let ap_retransmits = p.ap.stats(p.now)[0].retransmits;
            restart_edge(&mut p, stale);
            // Well past hello_interval × retries (2 s × 3).
            p.run(Duration::from_secs(20));
            // The control channel delivers again: a second session comes up.
            let ccid = p.ap.stats(p.now)[0].local_ccid;
            p.ap_events.clear();
            p.request_session(ccid, pw::ETHERNET);
            p.run(Duration::from_secs(2));
            assert_eq!(
                Pair::sessions_up(&p.ap_events).len(),
                1,
                "{:?}",
                p.ap_events
            );
            assert_eq!(
                Pair::sessions_up(&p.edge_events).len(),
                2,
                "{:?}",
                p.edge_events
            );
            assert!(p.ap.all_acked() && p.edge.all_acked());
            assert_eq!(
                p.ap.stats(p.now)[0].retransmits,
                ap_retransmits,
                "the AP retransmitted"
            );
            assert_eq!(p.edge.counters().control_reordered, 0);
            let down = |evs: &[Event]| {
                evs.iter()
                    .any(|e| matches!(e, Event::TunnelDown { .. } | Event::SessionDown { .. }))
            };
            assert!(
                !down(&p.ap_events),
                "{stale:?} {transport:?}: {:?}",
                p.ap_events
            );
            assert!(
                !down(&p.edge_events),
                "{stale:?} {transport:?}: {:?}",
                p.edge_events
            );
            let edge = &p.edge.stats(p.now)[0];
            assert_eq!(edge.state, "established_with_sessions");
            assert!(edge.rx_control_pkts >= 5, "hellos heard: {edge:?}");
            assert_eq!(p.edge.counters().control_out_of_window, 0);
            // Data both ways with the same ids and cookies.
            let ap_s = p.ap.session(ap_sid).unwrap().clone();
            let frame = [0x5a_u8; 64];
            let mut pkt = vec![0; l2tp::data_header_len(transport, ap_s.cookie_tx.len())];
            l2tp::emit_data_header(transport, ap_s.remote_sid, &ap_s.cookie_tx, &mut pkt);
            pkt.extend_from_slice(&frame);
            let r = p.edge.handle_datagram(p.now, transport, p.ap_addr(), &pkt);
            assert_eq!(
                r,
                Incoming::Data {
                    session_id: edge_sid,
                    payload: &frame[..]
                }
            );
            let mut back = Vec::new();
            p.edge.encap_header(edge_sid, &mut back).unwrap();
            back.extend_from_slice(&frame);
            let r = p.ap.handle_datagram(p.now, transport, p.edge_addr(), &back);
            assert!(matches!(r, Incoming::Data { session_id, .. } if session_id == ap_sid));
        }
    }
}

#[test]
fn a_restore_refuses_what_it_cannot_trust() {
    let p = establish(Transport::Udp, 4, Impair::default());
    let snap = p.edge.snapshot(p.now);
    let mut edge = Endpoint::new(edge_cfg(), 7);
    let mut bad = snap[0].clone();
    bad.local_ccid = 0;
    let mut bad_cookie = snap[0].clone();
    bad_cookie.local_ccid += 1;
    bad_cookie.peer_ccid += 1;
    bad_cookie.sessions[0].local_sid += 1;
    bad_cookie.sessions[0].cookie_rx = vec![1, 2, 3];
    let mut dup = snap[0].clone();
    dup.local_ccid += 2;
    let mut no_hello = snap[0].clone();
    no_hello.local_ccid += 3;
    no_hello.peer_ccid += 3;
    no_hello.hello_interval_ms = 0;
    let r = edge.restore(p.now, vec![snap[0].clone(), bad, bad_cookie, dup, no_hello]);
    // The good one; the one with a bad cookie comes back without its
    // session; the rest are refused whole.
    assert_eq!((r.tunnels, r.sessions), (2, 1), "{r:?}");
    assert_eq!(r.refused.len(), 4, "{:?}", r.refused);
    assert!(r.refused.iter().any(|w| w.contains("CCID of 0")));
    assert!(r.refused.iter().any(|w| w.contains("cookie")));
    assert!(r.refused.iter().any(|w| w.contains("exists")));
    assert!(r.refused.iter().any(|w| w.contains("hello interval")));
    // The file form survives a round trip.
    let text = serde_json::to_string(&snap).unwrap();
    let back: Vec<ConnSnapshot> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);
}

// ---- Admission: source subnets, half-open cap, per-source SCCRQ rate ----

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

/// An SCCRQ from a flood source: its own Assigned CCID, nothing else odd.
fn flood_sccrq(peer_ccid: u32) -> Vec<u8> {
    let msg = ControlMessage {
        msg_type: MessageType::Sccrq,
        avps: vec![
            Avp::HostName(format!("flood-{peer_ccid}").into_bytes()),
            Avp::RouterId(peer_ccid),
            Avp::AssignedCcid(peer_ccid),
            Avp::PwCapabilities(vec![pw::ETHERNET]),
        ],
    };
    let mut out = vec![];
    msg.emit(
        Transport::Udp,
        ControlHeader {
            ccid: 0,
            ns: 0,
            nr: 0,
        },
        &mut out,
    );
    out
}

fn sccrq_outcomes(c: &EndpointCounters) -> u64 {
    c.sccrq_accepted
        + c.sccrq_retransmits
        + c.sccrq_refused
        + c.sccrq_rate_limited
        + c.sccrq_half_open_full
}

#[test]
fn sources_outside_the_ap_subnets_are_dropped_before_any_state() {
    let cfg = EndpointConfig {
        admit: vec![net("10.99.0.0/24"), net("fd00:99::/64")],
        ..edge_cfg()
    };
    let now = crate::test_t0();
    let mut edge = Endpoint::new(cfg.clone(), 3);
    let sccrq = raw_sccrq(vec![], 0);
    for from in [
        "10.98.0.2:40000",
        "[fd00:98::2]:40000",
        "[::ffff:10.98.0.2]:1701",
    ] {
        let r = edge.handle_datagram(now, Transport::Udp, addr(from), &sccrq);
        assert_eq!(r, Incoming::Dropped(DataDrop::NotAdmitted), "{from}");
    }
    // Data, and garbage, from outside: dropped, counted as data.
    let mut data = vec![0; l2tp::data_header_len(Transport::Udp, 0)];
    l2tp::emit_data_header(Transport::Udp, 0x1234, &Cookie::NONE, &mut data);
    data.extend_from_slice(&[0xab; 60]);
    for bytes in [&data[..], &[0xff, 0x03][..], &[][..]] {
        let r = edge.handle_datagram(now, Transport::Udp, addr("10.98.0.2:40000"), bytes);
        assert_eq!(r, Incoming::Dropped(DataDrop::NotAdmitted));
    }
    let c = edge.counters();
    assert_eq!(c.rx_control_not_admitted, 3);
    assert_eq!(c.rx_data_not_admitted, 3);
    // Nothing else looked at them: no state, no timer, no reply.
    assert_eq!(
        (c.rx_control, c.sccrq_received, c.rx_data_malformed),
        (0, 0, 0)
    );
    assert_eq!(edge.conn_count(), 0);
    assert_eq!(edge.half_open_count(), 0);
    assert_eq!(edge.rate_table_len(), 0);
    assert_eq!(edge.poll_timeout(), None);
    assert_eq!(edge.poll_transmit(), None);
    assert_eq!(edge.poll_event(), None);
    // Inside the subnets (an IPv4-mapped address counts as IPv4): answered.
    for (i, from) in [
        "10.99.0.2:40000",
        "[::ffff:10.99.0.3]:1701",
        "[fd00:99::2]:1701",
    ]
    .into_iter()
    .enumerate()
    {
        let r = edge.handle_datagram(now, Transport::Udp, addr(from), &sccrq);
        assert_eq!(r, Incoming::Control);
        let (_, m) = decode(&edge.poll_transmit().expect("SCCRP").payload);
        assert_eq!(m.unwrap().msg_type, MessageType::Sccrp);
        assert_eq!(edge.counters().sccrq_accepted, i as u64 + 1);
    }

    // A whole tunnel from inside comes up as usual; a restore of one from
    // outside is refused.
    let mut p = Pair::new(Transport::Udp, 4);
    p.edge = Endpoint::new(cfg.clone(), 2);
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(5));
    assert_eq!(Pair::sessions_up(&p.edge_events).len(), 1);
    let mut snap = p.edge.snapshot(p.now);
    snap[0].peer = addr("10.98.0.2:40000");
    let report = Endpoint::new(cfg, 9).restore(p.now, snap);
    assert_eq!(report.tunnels, 0);
    assert!(
        report.refused[0].contains("tunterm_ap_subnets"),
        "{report:?}"
    );
}

#[test]
fn a_full_half_open_table_refuses_without_state_but_knows_its_own_retransmissions() {
    let cfg = EndpointConfig {
        admission: AdmissionConfig {
            max_half_open: 4,
            ..AdmissionConfig::default()
        },
        ..edge_cfg()
    };
    let t0 = crate::test_t0();
    let mut edge = Endpoint::new(cfg, 3);
    let src = |i: u32| SocketAddr::new(IpAddr::V4((0x0a63_0064 + i).into()), 40000);
    for i in 0..4 {
        let _ = edge.handle_datagram(t0, Transport::Udp, src(i), &flood_sccrq(100 + i));
        assert!(edge.poll_transmit().is_some(), "SCCRP to {}", src(i));
    }
    assert_eq!(edge.half_open_count(), 4);
    let wake = edge.poll_timeout();
    // The fifth: no reply, no connection, no timer.
    let _ = edge.handle_datagram(t0, Transport::Udp, src(4), &flood_sccrq(104));
    assert_eq!(edge.poll_transmit(), None);
    assert_eq!(edge.conn_count(), 4);
    assert_eq!(edge.poll_timeout(), wake);
    assert_eq!(edge.counters().sccrq_half_open_full, 1);
    // A retransmission of the first SCCRQ is still its connection's: acked
    // again, nothing new.
    let _ = edge.handle_datagram(t0, Transport::Udp, src(0), &flood_sccrq(100));
    let (h, m) = decode(&edge.poll_transmit().expect("re-ack").payload);
    assert!(m.is_none(), "a ZLB");
    assert_eq!(h.nr, 1);
    assert_eq!(edge.counters().sccrq_retransmits, 1);
    assert_eq!(edge.conn_count(), 4);

    // The half-open ones give up (SCCRP never acknowledged) and linger;
    // once gone their slots are free and the fifth source gets in.
    let mut t = t0;
    while edge.half_open_count() > 0 {
        while edge.poll_transmit().is_some() {}
        t = edge.poll_timeout().expect("a timer while half-open");
        edge.handle_timeout(t);
        assert!(t - t0 < Duration::from_secs(60));
    }
    assert_eq!(edge.conn_count(), 0);
    let _ = edge.handle_datagram(t, Transport::Udp, src(4), &flood_sccrq(104));
    let (_, m) = decode(&edge.poll_transmit().expect("SCCRP").payload);
    assert_eq!(m.unwrap().msg_type, MessageType::Sccrp);
    let c = edge.counters();
    assert_eq!(c.half_open_peak, 4);
    assert_eq!(c.sccrq_received, 7);
    assert_eq!(sccrq_outcomes(c), c.sccrq_received);
    // SCCRP unacknowledged through 5 retransmissions (31 s), then 8 s of
    // lingering: the lifetime the half-open cap is sized by.
    assert_eq!((t - t0).as_secs(), 39);
}

#[test]
fn an_sccrq_flood_from_5000_sources_is_bounded_and_established_tunnels_keep_their_hellos() {
    const CAP: usize = 1024;
    const TABLE: usize = 4096;
    let cfg = EndpointConfig {
        admit: vec![net("10.99.0.0/24"), net("10.100.0.0/16")],
        admission: AdmissionConfig {
            max_half_open: CAP,
            sccrq_per_second: 1,
            sccrq_burst: 2,
            rate_table_size: TABLE,
            ..AdmissionConfig::default()
        },
        ..edge_cfg()
    };
    let mut p = Pair::new(Transport::Udp, 4);
    p.edge = Endpoint::new(cfg, 2);
    p.strays_ok = true;
    p.connect(pw::ETHERNET);
    p.run(Duration::from_secs(3));
    assert_eq!(Pair::sessions_up(&p.edge_events).len(), 1);
    let tunnel = edge_ccid(&p);
    let ap_hellos_before = p.ap.counters().hellos_sent;
    let edge_hellos_before = p.edge.counters().hellos_sent;
    let c0 = p.edge.counters().clone();
    assert_eq!((c0.sccrq_received, c0.sccrq_accepted), (1, 1), "the AP's");

    // One virtual second: 10,000 SCCRQs from 5,000 admitted addresses
    // (4,992 light ones, twice each at most; 8 heavy ones, 125 each), and
    // 500 from outside the subnets, interleaved with the AP's hellos.
    let light = |k: u32| {
        SocketAddr::new(
            IpAddr::V4((0x0a64_0000 + 256 + k).into()),
            20000 + (k % 1000) as u16,
        )
    };
    let heavy = |h: u32| SocketAddr::new(IpAddr::V4((0x0a64_0000 + 2 + h).into()), 1701);
    let outside = |i: u32| SocketAddr::new(IpAddr::V4((0x0a65_0000 + i).into()), 1701);
    let t0 = p.now;
    let mut sent = 0u64;
    let mut second_sccrqs: Vec<(SocketAddr, u32)> = vec![];
    let (mut next_light, mut peak_half_open, mut peak_table) = (0u32, 0, 0);
    for i in 0..10_500u32 {
        p.run_until(t0 + Duration::from_micros(u64::from(i) * 95));
        let from_outside = i % 21 == 20;
        let (from, peer_ccid) = if from_outside {
            (outside(i), i + 1)
        } else if i % 10 == 0 {
            (heavy(i / 10 % 8), 1_000_000 + i)
        } else {
            let k = next_light % 4992;
            let round = next_light / 4992;
            next_light += 1;
            // In its second round an even source retransmits its SCCRQ
            // (same CCID), an odd one asks again with a new one.
            let ccid = if round == 1 && k % 2 == 1 {
                500_000 + k
            } else {
                1 + k
            };
            if round == 1 {
                second_sccrqs.push((light(k), ccid));
            }
            (light(k), ccid)
        };
        sent += u64::from(!from_outside);
        let pkt = flood_sccrq(peer_ccid);
        let r = p.edge.handle_datagram(p.now, Transport::Udp, from, &pkt);
        assert!(matches!(
            r,
            Incoming::Control | Incoming::Dropped(DataDrop::NotAdmitted)
        ));
        peak_half_open = peak_half_open.max(p.edge.half_open_count());
        peak_table = peak_table.max(p.edge.rate_table_len());
        assert!(p.edge.half_open_count() <= CAP);
        assert!(p.edge.rate_table_len() <= TABLE);
        assert!(p.edge.conn_count() <= 1 + CAP);
    }
    assert!(p.now - t0 < Duration::from_secs(1));
    assert_eq!(sent, 10_000);
    p.collect();

    let c = p.edge.counters().clone();
    assert_eq!(c.rx_control_not_admitted, 500);
    assert_eq!(c.sccrq_received - c0.sccrq_received, 10_000);
    assert_eq!(sccrq_outcomes(&c), c.sccrq_received, "{c:?}");
    assert_eq!(
        c.sccrq_accepted - 1,
        CAP as u64,
        "every slot taken, none more"
    );
    assert_eq!(c.half_open_peak, CAP as u64);
    assert_eq!(peak_half_open, CAP);
    // The heavy sources (1,000 SCCRQs) are held to their burst of 2 and
    // 1 a second; the light ones never reach their limit.
    assert!(c.sccrq_rate_limited >= 1000 - 8 * 3, "{c:?}");
    assert!(c.sccrq_rate_limited <= 1000, "{c:?}");
    assert!(c.sccrq_half_open_full > 0);
    assert_eq!(c.sccrq_refused, 0);
    assert_eq!(peak_table, TABLE);
    assert!(c.sccrq_sources_evicted >= 5000 - TABLE as u64, "{c:?}");
    // Only accepted SCCRQs were answered: one SCCRP per connection,
    // addressed to the peer's CCID, and nothing to outside sources.
    let replied: HashSet<(SocketAddr, u32)> = p
        .strays
        .iter()
        .filter_map(|t| {
            let (h, m) = decode(&t.payload);
            (m?.msg_type == MessageType::Sccrp).then_some((t.dst, h.ccid))
        })
        .collect();
    assert_eq!(replied.len(), CAP);
    assert!(
        p.strays
            .iter()
            .all(|t| matches!(t.dst.ip(), IpAddr::V4(a) if a.octets()[1] == 100))
    );
    // Every second SCCRQ of an answered even source was recognised as a
    // retransmission.
    let retransmitted = second_sccrqs
        .iter()
        .filter(|&&(from, ccid)| replied.contains(&(from, ccid)))
        .count();
    assert!(retransmitted > 0);
    assert_eq!(c.sccrq_retransmits, retransmitted as u64);

    // The established tunnel never noticed: hellos both ways for far longer
    // than hello_interval × hello_retries (2 s × 3), each acknowledged,
    // while the half-open connections time out.
    p.run(Duration::from_secs(40));
    let downs: Vec<&Event> = p
        .edge_events
        .iter()
        .filter(|e| matches!(e, Event::TunnelDown { ccid, .. } if *ccid == tunnel))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    assert!(
        !p.ap_events
            .iter()
            .any(|e| matches!(e, Event::TunnelDown { .. })),
        "{:?}",
        p.ap_events
    );
    assert_eq!(p.edge.conn_state(tunnel), Some(ConnState::Established));
    let ap_hellos = p.ap.counters().hellos_sent - ap_hellos_before;
    let edge_hellos = p.edge.counters().hellos_sent - edge_hellos_before;
    assert!(ap_hellos + edge_hellos >= 15, "{ap_hellos} + {edge_hellos}");
    assert!(p.ap.all_acked() && p.edge.stats(p.now)[0].retransmits == 0);
    // And the memory the flood took is given back.
    assert_eq!(p.edge.half_open_count(), 0);
    assert_eq!(p.edge.conn_count(), 1);
    println!(
        "flood: half-open peak {}, accepted {}, half-open full {}, rate limited {}, \
         retransmits {}, not admitted {}, sources evicted {}, hellos {ap_hellos} (AP) + \
         {edge_hellos} (edge) over 40 s",
        c.half_open_peak,
        c.sccrq_accepted - 1,
        c.sccrq_half_open_full,
        c.sccrq_rate_limited,
        c.sccrq_retransmits,
        c.rx_control_not_admitted,
        c.sccrq_sources_evicted
    );
}

#[test]
fn session_ids_keep_their_fast_path_slots_distinct() {
    // 2,000 random 16-bit slots would collide almost surely (the birthday
    // bound is ~300); the allocator hands out the next free slot.
    let mut p = establish(Transport::Udp, 4, Impair::default());
    let ccid = p.ap.sessions().next().expect("the first session").ccid;
    for _ in 0..1_999 {
        p.request_session(ccid, pw::ETHERNET);
    }
    p.run(Duration::from_secs(30));
    let sids: Vec<u32> = p
        .edge
        .sessions()
        .filter(|s| s.state == SessionState::Established)
        .map(|s| s.local_sid)
        .collect();
    assert_eq!(sids.len(), 2_000);
    let slots: HashSet<u32> = sids.iter().map(|&s| session_slot(s)).collect();
    assert_eq!(slots.len(), sids.len(), "two sessions share a slot");
    // Packed together in the fast path's arrays, from the endpoint's base.
    let base = (0..SESSION_SLOTS)
        .find(|&b| {
            slots.contains(&b) && !slots.contains(&((b + SESSION_SLOTS - 1) % SESSION_SLOTS))
        })
        .expect("a first slot");
    let packed: HashSet<u32> = (0..2_000).map(|i| (base + i) % SESSION_SLOTS).collect();
    assert!(
        slots == packed,
        "the slots are not 2,000 in a row from {base}"
    );
    // The high halves are random, not a counter.
    let high: HashSet<u32> = sids.iter().map(|&s| s >> 16).collect();
    assert!(high.len() > 1_900, "{} distinct high halves", high.len());
}

#[test]
fn closing_counts_the_stopccns_not_yet_acknowledged() {
    for transport in [Transport::Udp, Transport::Ip] {
        let mut p = establish(transport, 4, Impair::default());
        assert_eq!(p.edge.closing_count(), 0);
        p.edge
            .close_all(p.now, l2tp::stopccn::SHUTTING_DOWN, "shutting down");
        assert_eq!(p.edge.closing_count(), 1, "StopCCN sent, not acknowledged");
        assert!(
            p.edge.stats(p.now).is_empty(),
            "stats leave closing tunnels out"
        );
        // The AP acknowledges within one round trip.
        p.run(Duration::from_millis(20));
        assert_eq!(p.edge.closing_count(), 0, "{transport:?}");
        // A silent AP: the StopCCN stays unacknowledged until the
        // retransmissions give up.
        let mut p = establish(transport, 4, Impair::default());
        p.ap_silent = true;
        p.edge
            .close_all(p.now, l2tp::stopccn::SHUTTING_DOWN, "shutting down");
        p.run(Duration::from_secs(1));
        assert_eq!(p.edge.closing_count(), 1, "{transport:?}");
    }
}

/// What an edge built with `seed` and the default configuration picks for
/// one AP opening three sessions: its CCID, then each session's id and the
/// cookie it assigned.
fn edge_choices(seed: impl Into<Seed>) -> (u32, Vec<(u32, Cookie)>) {
    edge_choices_with(seed, EndpointConfig::default().cookie_len)
}

fn edge_choices_with(seed: impl Into<Seed>, cookie_len: usize) -> (u32, Vec<(u32, Cookie)>) {
    let mut p = Pair::new(Transport::Udp, 4);
    p.edge = Endpoint::new(
        EndpointConfig {
            cookie_len,
            ..edge_cfg()
        },
        seed,
    );
    let ccid = p.connect(pw::ETHERNET);
    p.request_session(ccid, pw::ETHERNET);
    p.request_session(ccid, pw::ETHERNET);
    p.run(Duration::from_secs(20));
    p.assert_sessions_up(3, "three sessions");
    let sessions = Pair::sessions_up(&p.edge_events)
        .into_iter()
        .map(|sid| (sid, p.edge.session(sid).expect("session").cookie_rx))
        .collect();
    (p.edge.stats(p.now)[0].local_ccid, sessions)
}

#[test]
fn cookies_are_eight_random_bytes_by_default() {
    assert_eq!(EndpointConfig::default().cookie_len, 8);
    let (_, sessions) = edge_choices([7; 32]);
    let cookies: HashSet<[u8; 8]> = sessions
        .iter()
        .map(|(_, c)| c.as_slice().try_into().expect("an 8-byte cookie"))
        .collect();
    assert_eq!(cookies.len(), 3, "three sessions, three cookies");
    // A length RFC 3931 has no cookie of: the longest, never none.
    for len in [1, 5, 16] {
        let (_, sessions) = edge_choices_with(7, len);
        assert!(sessions.iter().all(|(_, c)| c.len() == 8), "{len}");
    }
}

#[test]
fn a_seed_replays_its_choices_and_another_seed_shares_none() {
    // The same seed: the same CCID, session ids and cookies (tests can
    // count on them).
    assert_eq!(edge_choices(7), edge_choices(7));
    assert_eq!(edge_choices([9; 32]), edge_choices([9; 32]));
    // Seeds one apart (as wall-clock seeds of two edges started together
    // would be): nothing in common but the low 16 bits of a session id,
    // which are fast-path slots handed out in a row from a random base.
    for (a, b) in [
        (edge_choices(7), edge_choices(8)),
        (edge_choices([1; 32]), edge_choices([2; 32])),
    ] {
        assert_ne!(a.0, b.0, "CCIDs");
        for ((sid_a, cookie_a), (sid_b, cookie_b)) in a.1.iter().zip(&b.1) {
            assert_ne!(sid_a >> 16, sid_b >> 16, "session ids' random halves");
            assert_ne!(cookie_a, cookie_b, "cookies");
            assert_ne!(cookie_a.as_slice()[..4], cookie_b.as_slice()[..4]);
            assert_ne!(cookie_a.as_slice()[4..], cookie_b.as_slice()[4..]);
        }
    }
}

fn profile(name: &str) -> PwProfile {
    PwProfile {
        names: vec![name.into()],
        hello_interval: Duration::from_secs(2),
        hello_retries: 3,
        transport: None,
    }
}

fn ap_heard_stopccn(p: &Pair, message: &str) -> bool {
    p.ap_events.iter().any(|e| {
        matches!(e, Event::TunnelDown {
            reason: CloseReason::PeerStopCcn { message: Some(m), .. }, was_up: true, ..
        } if m == message)
    })
}

#[test]
fn profiles_replaced_live_keep_the_tunnels_of_those_that_stay() {
    // A profile put in front: the session's moves from index 0 to 1, the
    // tunnel stays up and keeps carrying data.
    let mut p = establish(Transport::Udp, 4, Impair::default());
    let sid = Pair::sessions_up(&p.edge_events)[0];
    let now = p.now;
    let moved = p.edge.replace_profiles(
        now,
        vec![profile("new"), edge_cfg().profiles[0].clone()],
        &[Some(1)],
        l2tp::stopccn::CLEAR,
        "mxtunnel removed",
    );
    assert_eq!(moved, (0, 0));
    assert_eq!(p.edge.session(sid).unwrap().profile, Some(1));
    p.run(Duration::from_secs(10));
    assert_eq!(p.edge.stats(p.now)[0].state, "established_with_sessions");
    assert!(!ap_heard_stopccn(&p, "mxtunnel removed"));

    // Its profile removed: the tunnel is closed with StopCCN.
    let now = p.now;
    let closed = p.edge.replace_profiles(
        now,
        vec![profile("new")],
        &[Some(0), None],
        l2tp::stopccn::CLEAR,
        "mxtunnel removed",
    );
    assert_eq!(closed, (1, 0));
    p.run(Duration::from_secs(2));
    assert!(
        ap_heard_stopccn(&p, "mxtunnel removed"),
        "{:?}",
        p.ap_events
    );
    assert!(p.edge.session(sid).is_none());
}

#[test]
fn hello_settings_changed_live_apply_to_the_running_tunnel() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    // The same mxtunnel, hellos every 200 ms, 3 retries: a window of
    // 600 ms from the change instead of the 6 s it was set up with.
    let mut quick = edge_cfg().profiles[0].clone();
    quick.hello_interval = Duration::from_millis(200);
    let now = p.now;
    assert_eq!(
        p.edge
            .replace_profiles(now, vec![quick], &[Some(0)], l2tp::stopccn::CLEAR, "x"),
        (0, 0)
    );
    p.ap_silent = true;
    let changed = p.now;
    p.run(Duration::from_secs(2));
    let down = p.edge_down_at.expect("torn down under the new settings");
    assert!(
        down - changed <= Duration::from_millis(600),
        "down {:?} after the change",
        down - changed
    );
    assert!(p.edge_events.iter().any(|e| matches!(
        e,
        Event::TunnelDown {
            reason: CloseReason::HelloTimeout,
            ..
        }
    )));
}

#[test]
fn a_connection_already_closing_is_not_closed_again_when_its_mxtunnel_goes() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    // The AP stops answering, so the StopCCN of a subnet change stays
    // unacknowledged and the connection stays closing.
    p.ap_silent = true;
    let now = p.now;
    let outside = vec!["10.98.0.0/24".parse().unwrap()];
    assert_eq!(
        p.edge
            .set_admit(now, outside, l2tp::stopccn::CLEAR, "outside"),
        1
    );
    p.run(Duration::from_millis(100));
    let now = p.now;
    assert_eq!(
        p.edge
            .replace_profiles(now, vec![], &[None], l2tp::stopccn::CLEAR, "gone"),
        (0, 0),
        "the closing connection is neither closed again nor counted"
    );
}

#[test]
fn admitted_subnets_replaced_live_close_the_tunnels_now_outside() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    let now = p.now;
    // Still inside: nothing closes.
    let inside = vec!["10.99.0.0/24".parse().unwrap()];
    assert_eq!(
        p.edge
            .set_admit(now, inside, l2tp::stopccn::CLEAR, "outside"),
        0
    );
    p.run(Duration::from_secs(5));
    assert_eq!(p.edge.stats(p.now)[0].state, "established_with_sessions");
    // The AP's address no longer inside: StopCCN, counted.
    let now = p.now;
    let outside = vec!["10.98.0.0/24".parse().unwrap()];
    assert_eq!(
        p.edge
            .set_admit(now, outside, l2tp::stopccn::CLEAR, "outside"),
        1
    );
    p.run(Duration::from_secs(1));
    assert_eq!(p.edge.counters().closed_not_admitted, 1);
    assert!(ap_heard_stopccn(&p, "outside"), "{:?}", p.ap_events);
}

/// A pair whose tunnel profile (edge) and connection (AP) use hello
/// `interval` × `retries`, with `seed` for the network and the edge.
fn establish_hello(interval: Duration, retries: u32, seed: u64) -> Pair {
    let mut p = Pair::new(Transport::Udp, 4);
    let mut cfg = edge_cfg();
    cfg.profiles[0].hello_interval = interval;
    cfg.profiles[0].hello_retries = retries;
    p.edge = Endpoint::new(cfg, seed + 1000);
    p.sent = seed.wrapping_mul(7919) + 1;
    let ccid =
        p.ap.connect(p.now, Transport::Udp, addr(EDGE), interval, retries);
    p.request_session(ccid, pw::ETHERNET);
    p.run(Duration::from_secs(5));
    p.assert_sessions_up(1, "establish");
    p
}

fn tunnel_downs(p: &Pair) -> Vec<&Event> {
    p.ap_events
        .iter()
        .chain(&p.edge_events)
        .filter(|e| matches!(e, Event::TunnelDown { .. }))
        .collect()
}

/// RFC 3931 §4.4: liveness is the reliable channel's. On a cut link each
/// side's hello goes unacknowledged and the tunnel goes down with
/// HelloTimeout exactly `max(retries, 2) × interval` after the last packet
/// it heard (its hello one interval after that packet, then
/// `max(retries − 1, 1)` intervals of retransmissions).
#[test]
fn a_cut_link_times_out_exactly_max_retries_2_intervals_after_the_last_packet() {
    for (interval_ms, retries) in [(1_000, 3), (500, 3), (10_000, 3), (2_000, 7), (1_000, 1)] {
        let interval = Duration::from_millis(interval_ms);
        let mut p = establish_hello(interval, retries, 3);
        // Idle a while (hellos both ways), then cut at an odd instant.
        p.run(interval * 5 + Duration::from_millis(337));
        assert!(tunnel_downs(&p).is_empty());
        p.cut = true;
        p.run(interval * (retries + 3));
        let expect = interval * retries.max(2);
        let what = format!("hello {interval:?} × {retries}");
        for (side, heard, down) in [
            ("edge", p.last_to_edge, p.edge_down_at),
            ("AP", p.last_to_ap, p.ap_down_at),
        ] {
            let took = down.expect("down") - heard.unwrap();
            assert_eq!(
                took, expect,
                "{what}: {side} down after the last packet heard"
            );
        }
        for e in tunnel_downs(&p) {
            assert!(
                matches!(
                    e,
                    Event::TunnelDown {
                        reason: CloseReason::HelloTimeout,
                        ..
                    }
                ),
                "{what}: {e:?}"
            );
        }
        let (a, e) = (p.ap.counters(), p.edge.counters());
        assert!(a.hellos_sent + e.hellos_sent >= 2, "{what}: hellos sent");
    }
}

/// 20% loss each way, 5% duplication and 5% reordering, over 6,000 hello
/// intervals (20 seeds × 300): the hello retransmissions always get
/// through within the window, no tunnel goes down; Ns/Nr stay right
/// (duplicates and reordered messages seen and handled, both sides agree
/// on the sequence numbers once the link is clean again).
#[test]
fn twenty_percent_loss_with_duplication_and_reordering_never_times_out() {
    let interval = Duration::from_secs(1);
    let (mut retransmits, mut dups, mut reordered, mut hellos) = (0, 0, 0, 0);
    for seed in 0..20 {
        let mut p = establish_hello(interval, 3, seed);
        p.impair = Impair {
            loss: 20,
            dup: 5,
            swap: 5,
        };
        p.run(interval * 150);
        // A burst of session requests: several messages in flight at once,
        // for the duplication and reordering to act on.
        let ccid = p.ap.stats(p.now)[0].local_ccid;
        for _ in 0..3 {
            p.request_session(ccid, pw::ETHERNET);
        }
        p.run(interval * 150);
        assert!(
            tunnel_downs(&p).is_empty(),
            "seed {seed}: {:?}",
            tunnel_downs(&p)
        );
        p.impair = Impair::default();
        p.run(Duration::from_secs(2));
        // Between two exchanges: nothing in flight.
        while !p.wire.is_empty() {
            p.run(Duration::from_millis(1));
        }
        let (ap, edge) = (p.ap.snapshot(p.now), p.edge.snapshot(p.now));
        assert_eq!((ap.len(), edge.len()), (1, 1), "seed {seed}");
        assert_eq!(
            (ap[0].next_ns, ap[0].expected_ns),
            (edge[0].expected_ns, edge[0].next_ns),
            "seed {seed}: each side expects the other's next Ns"
        );
        assert_eq!(
            (p.ap.session_count(), p.edge.session_count()),
            (4, 4),
            "seed {seed}: sessions set up under the loss"
        );
        retransmits += p.ap.stats(p.now)[0].retransmits + p.edge.stats(p.now)[0].retransmits;
        let (a, e) = (p.ap.counters(), p.edge.counters());
        dups += a.control_duplicates + e.control_duplicates;
        reordered += a.control_reordered + e.control_reordered;
        hellos += a.hellos_sent + e.hellos_sent;
    }
    assert!(
        retransmits > 0 && dups > 0 && reordered > 0,
        "the impairment bit: {retransmits} retransmits, {dups} duplicates, {reordered} reordered"
    );
    assert!(hellos >= 20 * 150, "{hellos} hellos");
    println!(
        "6,000 hello intervals (1 s × 3) at 20% loss, 5% dup, 5% reorder: no timeout; \
         {hellos} hellos, {retransmits} retransmits, {dups} duplicates, {reordered} reordered"
    );
}

/// A control message of `msg_type` (no AVPs besides the type) to `ccid`.
fn raw_control(msg_type: MessageType, ccid: u32, ns: u16, nr: u16, avps: Vec<Avp>) -> Vec<u8> {
    let mut out = vec![];
    ControlMessage { msg_type, avps }.emit(
        Transport::Udp,
        ControlHeader { ccid, ns, nr },
        &mut out,
    );
    out
}

#[test]
fn an_edge_restarted_without_its_state_sends_the_ap_away_at_its_next_hello() {
    for transport in [Transport::Udp, Transport::Ip] {
        let mut p = establish(transport, 4, Impair::default());
        let ap_ccid = match p.ap_events[0] {
            Event::TunnelUp { ccid, .. } => ccid,
            ref e => panic!("{e:?}"),
        };
        // kill -9, no state file: a new edge that knows nothing.
        p.edge = Endpoint::new(edge_cfg(), 99);
        p.edge_events.clear();
        let restart = p.now;
        // Hello 2 s × 3: the AP alone would give up 6 s after the last
        // word of the old edge. Its next hello (≤ 2 s) gets the StopCCN.
        p.run(Duration::from_secs(3));
        let down = p.ap_down_at.expect("the AP's tunnel went down");
        assert!(
            down - restart <= Duration::from_millis(2_100),
            "{transport:?}: down {:?} after the restart",
            down - restart
        );
        assert!(
            p.ap_events.contains(&Event::TunnelDown {
                ccid: ap_ccid,
                peer: p.edge_addr(),
                reason: CloseReason::PeerStopCcn {
                    result: l2tp::stopccn::GENERAL_ERROR,
                    error: Some(l2tp::error_code::NO_CONTROL_CONNECTION),
                    message: Some(STALE_MESSAGE.into()),
                },
                was_up: true,
            }),
            "{transport:?}: {:?}",
            p.ap_events
        );
        let (e, a) = (p.edge.counters(), p.ap.counters());
        assert_eq!(e.stale_stopccn_sent, 1, "{transport:?}: {e:?}");
        assert_eq!(a.rx_stale_stopccn, 1, "{transport:?}: {a:?}");
        // The new edge kept nothing; the AP's acknowledgement (a ZLB to the
        // old CCID) is not answered.
        assert_eq!(p.edge.conn_count(), 0);
        p.run(Duration::from_secs(15));
        assert_eq!(p.edge.counters().stale_stopccn_sent, 1);
        assert_eq!(p.ap.conn_count(), 0, "{transport:?}");
    }
}

#[test]
fn stale_stopccns_are_rate_limited_and_never_answer_a_stopccn_or_a_zlb() {
    let mut cfg = edge_cfg();
    cfg.admission.stale_stopccn_per_second = 2;
    let mut edge = Endpoint::new(cfg, 5);
    let t0 = crate::test_t0();
    let ap = addr(AP);
    let mut answers = vec![];
    for ccid in 1..=5u32 {
        let hello = raw_control(MessageType::Hello, ccid, 7, 3, vec![]);
        let _ = edge.handle_datagram(t0, Transport::Udp, ap, &hello);
        while let Some(t) = edge.poll_transmit() {
            assert_eq!(t.dst, ap);
            answers.push((ccid, t.payload));
        }
    }
    assert_eq!(answers.len(), 2, "the burst is the rate: 2");
    for (ccid, payload) in &answers {
        let (h, m) = decode(payload);
        // CCID 0: ours to name the connection is the AVP; Ns is what the
        // peer expects next (its Nr), Nr follows its message.
        assert_eq!((h.ccid, h.ns, h.nr), (0, 3, 8));
        let m = m.unwrap();
        assert_eq!(m.msg_type, MessageType::StopCcn);
        assert_eq!(m.assigned_ccid(), Some(*ccid));
    }
    let c = edge.counters();
    assert_eq!((c.stale_stopccn_sent, c.stale_stopccn_limited), (2, 3));
    assert_eq!(c.rx_control_unknown_ccid, 5);
    // Half a second later one more token.
    let t1 = t0 + Duration::from_millis(500);
    let _ = edge.handle_datagram(
        t1,
        Transport::Udp,
        ap,
        &raw_control(MessageType::Hello, 9, 1, 1, vec![]),
    );
    assert!(edge.poll_transmit().is_some());
    // Never an answer to a StopCCN (two endpoints that both lost the
    // connection would bounce them), a ZLB or an SCCRQ's CCID 0, however
    // many tokens there are.
    let t2 = t0 + Duration::from_secs(60);
    let stop = raw_control(
        MessageType::StopCcn,
        11,
        1,
        1,
        vec![Avp::ResultCode {
            result: l2tp::stopccn::CLEAR,
            error: None,
            message: None,
        }],
    );
    let _ = edge.handle_datagram(t2, Transport::Udp, ap, &stop);
    let mut zlb = vec![];
    l2tp::emit_zlb(
        Transport::Udp,
        ControlHeader {
            ccid: 12,
            ns: 1,
            nr: 1,
        },
        &mut zlb,
    );
    let _ = edge.handle_datagram(t2, Transport::Udp, ap, &zlb);
    // A StopCCN with CCID 0 that names no connection of this source.
    let stale = raw_control(MessageType::StopCcn, 0, 1, 1, vec![Avp::AssignedCcid(1234)]);
    let _ = edge.handle_datagram(t2, Transport::Udp, ap, &stale);
    assert!(edge.poll_transmit().is_none());
    assert_eq!(edge.counters().rx_stale_stopccn, 0);
    assert_eq!(edge.counters().stale_stopccn_sent, 3);

    // 0 turns the answer off.
    let mut cfg = edge_cfg();
    cfg.admission.stale_stopccn_per_second = 0;
    let mut off = Endpoint::new(cfg, 5);
    let _ = off.handle_datagram(
        t0,
        Transport::Udp,
        ap,
        &raw_control(MessageType::Hello, 1, 1, 1, vec![]),
    );
    assert!(off.poll_transmit().is_none());
    assert_eq!(off.counters().stale_stopccn_limited, 1);
}

#[test]
fn a_stale_stopccn_closes_only_the_connection_it_names_from_its_peer() {
    let mut p = establish(Transport::Udp, 4, Impair::default());
    let edge_ccid = edge_ccid(&p);
    let ap_stats = p.ap.stats(p.now);
    let ns = 0;
    // From another address, or naming another CCID: ignored.
    let forged = raw_control(
        MessageType::StopCcn,
        0,
        ns,
        0,
        vec![Avp::AssignedCcid(edge_ccid)],
    );
    let _ =
        p.ap.handle_datagram(p.now, Transport::Udp, addr("10.99.0.9:1701"), &forged);
    let wrong = raw_control(
        MessageType::StopCcn,
        0,
        ns,
        0,
        vec![Avp::AssignedCcid(edge_ccid ^ 1)],
    );
    let _ =
        p.ap.handle_datagram(p.now, Transport::Udp, addr(EDGE), &wrong);
    p.run(Duration::from_secs(5));
    assert!(p.ap_down_at.is_none(), "{:?}", p.ap_events);
    assert_eq!(p.ap.counters().rx_stale_stopccn, 0);
    assert_eq!(p.ap.stats(p.now).len(), ap_stats.len());
}
