//! One table of cases (name, input packet, expected XDP action and counter,
//! expected output frame), katran-style, run through `xdp_ap_rx` with
//! BPF_PROG_TEST_RUN and through the userspace path (the kernel's UDP
//! receive, modelled; `Endpoint::handle_datagram`; `Switch::ingress`;
//! `ether::write_retagged`), with the same expectations:
//! - where the fast path redirects, the slow path forwards to the trunk, and
//!   both produce exactly the expected frame;
//! - where the fast path drops, the slow path drops for the same reason;
//! - where the fast path passes, the packet is left untouched (the slow path
//!   gets it as it arrived and decides; its decision is checked too).
//!
//! The sessions are brought up with the real L2TPv3 handshake, then
//! mirrored into the BPF maps the way the daemon will (`common::mirror`).
//! Needs root (BPF); skipped with a message otherwise.

mod common;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::mirror::{self, NotFast};
use common::packets::{self, Ip, Mac};
use tunterm::proto::bridge::{DropReason, PortConfig, PortId, Switch, TRUNK, Verdict};
use tunterm::proto::l2tp::{
    DataDrop, DataSession, Endpoint, EndpointConfig, Event, Incoming, PwProfile, SessionRequest,
    SessionState,
};
use tunterm::wire::ether;
use tunterm::wire::l2tp::{Cookie, Transport, pw};
use tunterm_control::VlanSet;
use tunterm_ebpf::maps::{Counters, tt_counter};
use tunterm_ebpf::{Action, ApRx};

/// Addresses from the documentation ranges: nothing is ever sent (a test
/// run transmits nothing, a redirect only reports XDP_REDIRECT).
const EDGE: &str = "192.0.2.1:1701";
const TRUNK_IFINDEX: u32 = 7;
/// The host on the trunk every client talks to.
const HOST: Mac = [0x02, 0xee, 0, 0, 0, 1];
/// Client frame payload length after the ethertype.
const LEN: usize = 60;

fn vlans(ids: &[u16]) -> VlanSet {
    let mut s = VlanSet::default();
    for &i in ids {
        s.insert(i).expect("valid VLAN");
    }
    s
}

/// One session as both ends see it after the handshake.
struct Tunnel {
    /// The edge side (one endpoint per cookie size: the size we assign is
    /// an endpoint-wide setting; the daemon has one endpoint for all).
    edge: Endpoint,
    /// The edge's view of the session.
    session: DataSession,
    /// The session id and cookie the AP puts on data (its view).
    ap_sends_sid: u32,
    ap_sends_cookie: Vec<u8>,
    ap: SocketAddrV4,
    port: PortConfig,
    client: Mac,
}

impl Tunnel {
    fn up(
        seed: u64,
        cookie_len: usize,
        sublayer: bool,
        ap: SocketAddrV4,
        port: PortConfig,
    ) -> Tunnel {
        let now = Instant::now();
        let edge_addr: SocketAddr = EDGE.parse().expect("addr");
        let mut edge = Endpoint::new(
            EndpointConfig {
                cookie_len,
                profiles: vec![PwProfile {
                    names: vec!["lab".into()],
                    hello_interval: Duration::from_secs(60),
                    hello_retries: 7,
                    transport: None,
                }],
                ..EndpointConfig::default()
            },
            seed,
        );
        let mut apside = Endpoint::new(
            EndpointConfig {
                accept_incoming: false,
                l2_sublayer: sublayer,
                ..EndpointConfig::default()
            },
            seed + 1000,
        );
        let ccid = apside.connect(now, Transport::Udp, edge_addr, Duration::from_secs(60), 7);
        let opened = apside.open_session(
            now,
            ccid,
            SessionRequest {
                remote_end_id: "lab".into(),
                pw_type: pw::ETHERNET,
            },
        );
        assert!(opened, "session requested");
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = apside.poll_transmit() {
                let _ = edge.handle_datagram(now, Transport::Udp, SocketAddr::V4(ap), &t.payload);
                moved = true;
            }
            while let Some(t) = edge.poll_transmit() {
                let _ = apside.handle_datagram(now, Transport::Udp, edge_addr, &t.payload);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let mut sid = None;
        while let Some(e) = edge.poll_event() {
            if let Event::SessionUp { session_id, .. } = e {
                sid = Some(session_id);
            }
        }
        let sid = sid.expect("the edge brought the session up");
        let session = edge.session(sid).expect("session").clone();
        assert_eq!(session.state, SessionState::Established);
        assert_eq!(session.cookie_rx.len(), cookie_len);
        assert_eq!(session.sublayer, sublayer, "sublayer negotiated");
        let mut ap_view = None;
        while let Some(e) = apside.poll_event() {
            if let Event::SessionUp { session_id, .. } = e {
                ap_view = apside.session(session_id).cloned();
            }
        }
        let ap_view = ap_view.expect("the AP brought the session up");
        assert_eq!(ap_view.remote_sid, sid, "both ends agree on the id");
        Tunnel {
            edge,
            ap_sends_sid: ap_view.remote_sid,
            ap_sends_cookie: ap_view.cookie_tx.as_slice().to_vec(),
            session,
            ap,
            port,
            client: [0x02, 0xc1, 0, 0, 0, seed as u8],
        }
    }

    fn port_id(&self) -> PortId {
        mirror::port_of(&self.session)
    }

    /// A data message from the AP carrying `frame` (sublayer word `sl` when
    /// the session has one).
    fn data(&self, frame: &[u8]) -> Vec<u8> {
        self.data_with(self.ap, &self.ap_sends_cookie, self.sublayer_word(0), frame)
    }

    fn sublayer_word(&self, w: u32) -> Option<u32> {
        self.session.sublayer.then_some(w)
    }

    fn data_with(
        &self,
        from: SocketAddrV4,
        cookie: &[u8],
        sl: Option<u32>,
        frame: &[u8],
    ) -> Vec<u8> {
        let edge: SocketAddrV4 = EDGE.parse().expect("addr");
        packets::udp4(
            Ip::udp(from, edge),
            &packets::l2tp_data(self.ap_sends_sid, cookie, sl, frame),
        )
    }
}

/// The fast path's expected result.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fast {
    Redirect(Vec<u8>),
    Drop(tt_counter),
    Pass(tt_counter),
}

/// The slow path's result.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slow {
    /// No datagram reaches the L2TP socket as it stands.
    Kernel,
    /// A control message, consumed by the endpoint.
    Control,
    EndpointDrop(DataDrop),
    SwitchDrop(DropReason),
    ToTrunk(Vec<u8>),
    ToTunnel(PortId),
    Flood(u16),
}

struct Case {
    name: String,
    packet: Vec<u8>,
    fast: Fast,
    slow: Slow,
}

fn case(name: impl Into<String>, packet: Vec<u8>, fast: Fast, slow: Slow) -> Case {
    Case {
        name: name.into(),
        packet,
        fast,
        slow,
    }
}

/// Forwarded to the trunk by both paths, as `out`.
fn forward(name: &str, packet: Vec<u8>, out: Vec<u8>) -> Case {
    case(
        name,
        packet,
        Fast::Redirect(out.clone()),
        Slow::ToTrunk(out),
    )
}

struct Lab {
    tunnels: Vec<Tunnel>,
    switch: Switch,
    now: Instant,
}

impl Lab {
    fn new() -> Lab {
        let ap = |port| SocketAddrV4::new([198, 51, 100, 2].into(), port);
        let tunnels = vec![
            // 0: no cookie; VLAN 1 is the trunk's untagged VLAN.
            Tunnel::up(
                1,
                0,
                false,
                ap(40000),
                PortConfig {
                    vlans: vlans(&[1, 10, 20]),
                    untagged_vlan: Some(10),
                },
            ),
            // 1: 4-byte cookie.
            Tunnel::up(
                2,
                4,
                false,
                ap(40001),
                PortConfig {
                    vlans: vlans(&[10, 20]),
                    untagged_vlan: Some(10),
                },
            ),
            // 2: 8-byte cookie, tagged only.
            Tunnel::up(
                3,
                8,
                false,
                ap(40002),
                PortConfig {
                    vlans: vlans(&[10, 20]),
                    untagged_vlan: None,
                },
            ),
            // 3: 4-byte cookie and the L2-Specific Sublayer, untagged → 20.
            Tunnel::up(
                4,
                4,
                true,
                ap(40003),
                PortConfig {
                    vlans: vlans(&[10, 20]),
                    untagged_vlan: Some(20),
                },
            ),
        ];
        let mut sids: Vec<u32> = tunnels.iter().map(|t| t.session.local_sid).collect();
        sids.sort_unstable();
        sids.dedup();
        assert_eq!(sids.len(), tunnels.len(), "distinct session ids");

        let now = Instant::now();
        let mut switch = Switch::new(Duration::from_secs(300));
        switch.add_port(
            TRUNK,
            PortConfig {
                vlans: vlans(&[10, 20, 30]),
                untagged_vlan: Some(1),
            },
        );
        for t in &tunnels {
            switch.add_port(t.port_id(), t.port.clone());
        }
        // The trunk host on VLANs 1 (untagged), 10 and 20.
        for tci in [None, Some(10), Some(20)] {
            let (v, _) = switch.ingress(now, TRUNK, &packets::client([0xff; 6], HOST, tci, LEN));
            assert!(matches!(v, Verdict::Flood { .. }), "{v:?}");
        }
        // Each client on each VLAN its session allows.
        for t in &tunnels {
            for vid in t.port.vlans.iter() {
                let f = packets::client([0xff; 6], t.client, Some(vid), LEN);
                let (v, _) = switch.ingress(now, t.port_id(), &f);
                assert!(matches!(v, Verdict::Flood { .. }), "{v:?}");
            }
        }
        Lab {
            tunnels,
            switch,
            now,
        }
    }

    /// Mirror the sessions and the FDB into the maps.
    fn mirror_into(&self, bpf: &mut ApRx) {
        let mut sessions = bpf.sessions().expect("sessions map");
        for t in &self.tunnels {
            let (k, v) = mirror::session_entry(&t.session, &t.port, TRUNK_IFINDEX)
                .expect("an established UDP/IPv4 session has an entry");
            sessions.insert(k, v, 0).expect("insert session");
        }
        let mut fdb = bpf.fdb().expect("fdb map");
        let mut n = 0;
        for (k, v) in mirror::fdb_entries(&self.switch) {
            fdb.insert(k, v, 0).expect("insert fdb");
            n += 1;
        }
        assert_eq!(n, self.switch.fdb_len());
    }

    /// The userspace path on `packet`.
    fn slow_path(&mut self, packet: &[u8]) -> Slow {
        let Some((from, datagram)) = packets::kernel_udp_rx(packet) else {
            return Slow::Kernel;
        };
        // The endpoint that owns the session id (see Tunnel::edge).
        let sid = datagram
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let idx = self
            .tunnels
            .iter()
            .position(|t| Some(t.session.local_sid) == sid)
            .unwrap_or(0);
        let edge = &mut self.tunnels[idx].edge;
        match edge.handle_datagram(self.now, Transport::Udp, SocketAddr::V4(from), datagram) {
            Incoming::Control => Slow::Control,
            Incoming::Dropped(d) => Slow::EndpointDrop(d),
            Incoming::Data {
                session_id,
                payload,
            } => match self.switch.ingress(self.now, PortId(session_id), payload) {
                (Verdict::Forward { vlan, to }, Some(view)) if to == TRUNK => {
                    let mut out = Vec::new();
                    let tag = self.switch.egress_tag(TRUNK, vlan);
                    ether::write_retagged(payload, &view, tag, &mut out);
                    Slow::ToTrunk(out)
                }
                (Verdict::Forward { to, .. }, _) => Slow::ToTunnel(to),
                (Verdict::Flood { vlan }, _) => Slow::Flood(vlan),
                (Verdict::Drop(r), _) => Slow::SwitchDrop(r),
            },
        }
    }

    fn cases(&self) -> Vec<Case> {
        use tt_counter::*;
        let c = packets::client;
        let t0 = &self.tunnels[0];
        let t4 = &self.tunnels[1];
        let t8 = &self.tunnels[2];
        let ts = &self.tunnels[3];
        let mut v = vec![
            // Forwarded, every cookie size, tagged and untagged.
            forward(
                "cookie 0, untagged → default VLAN 10 pushed",
                t0.data(&c(HOST, t0.client, None, LEN)),
                c(HOST, t0.client, Some(10), LEN),
            ),
            forward(
                "cookie 0, tagged 20 PCP 3 → kept",
                t0.data(&c(HOST, t0.client, Some(0x6014), LEN)),
                c(HOST, t0.client, Some(0x6014), LEN),
            ),
            forward(
                "cookie 0, tagged 1 (trunk's untagged VLAN) → tag removed",
                t0.data(&c(HOST, t0.client, Some(1), LEN)),
                c(HOST, t0.client, None, LEN),
            ),
            forward(
                "cookie 0, priority tag (VID 0, PCP 5) → VLAN 10, PCP kept",
                t0.data(&c(HOST, t0.client, Some(0xa000), LEN)),
                c(HOST, t0.client, Some(0xa00a), LEN),
            ),
            forward(
                "cookie 4, untagged → default VLAN 10 pushed",
                t4.data(&c(HOST, t4.client, None, LEN)),
                c(HOST, t4.client, Some(10), LEN),
            ),
            forward(
                "cookie 4, tagged 20 → kept",
                t4.data(&c(HOST, t4.client, Some(20), LEN)),
                c(HOST, t4.client, Some(20), LEN),
            ),
            forward(
                "cookie 4, 1400-byte frame",
                t4.data(&c(HOST, t4.client, Some(20), 1400)),
                c(HOST, t4.client, Some(20), 1400),
            ),
            forward(
                "cookie 8, tagged 10 → kept",
                t8.data(&c(HOST, t8.client, Some(10), LEN)),
                c(HOST, t8.client, Some(10), LEN),
            ),
            forward(
                "cookie 8, tagged 20 with DEI → DEI kept (as Tci::retagged)",
                t8.data(&c(HOST, t8.client, Some(0x1014), LEN)),
                c(HOST, t8.client, Some(0x1014), LEN),
            ),
            forward(
                "sublayer without sequence number, untagged → VLAN 20",
                ts.data(&c(HOST, ts.client, None, LEN)),
                c(HOST, ts.client, Some(20), LEN),
            ),
            case(
                "sublayer with a sequence number → slow path (it sequences)",
                ts.data_with(
                    ts.ap,
                    &ts.ap_sends_cookie,
                    Some(0x4000_0005),
                    &c(HOST, ts.client, Some(10), LEN),
                ),
                Fast::Pass(TT_CNT_PASS_SEQUENCED),
                Slow::ToTrunk(c(HOST, ts.client, Some(10), LEN)),
            ),
            // TCP: SYNs go up for MSS clamping, the rest of a flow stays fast.
            case(
                "cookie 4, IPv4 TCP SYN → slow path (MSS clamp)",
                t4.data(&tcp4(HOST, t4.client, Some(10), 0x02)),
                Fast::Pass(TT_CNT_PASS_TCP_SYN),
                Slow::ToTrunk(tcp4(HOST, t4.client, Some(10), 0x02)),
            ),
            case(
                "cookie 4, IPv4 TCP SYN-ACK → slow path (MSS clamp)",
                t4.data(&tcp4(HOST, t4.client, Some(20), 0x12)),
                Fast::Pass(TT_CNT_PASS_TCP_SYN),
                Slow::ToTrunk(tcp4(HOST, t4.client, Some(20), 0x12)),
            ),
            forward(
                "cookie 4, IPv4 TCP ACK → kept in XDP",
                t4.data(&tcp4(HOST, t4.client, Some(10), 0x10)),
                tcp4(HOST, t4.client, Some(10), 0x10),
            ),
            // Policy drops, on both paths.
            case(
                "cookie 4, VLAN 30 not allowed",
                t4.data(&c(HOST, t4.client, Some(30), LEN)),
                Fast::Drop(TT_CNT_DROP_VLAN_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::VlanNotAllowed),
            ),
            case(
                "cookie 4, VLAN 1 not allowed",
                t4.data(&c(HOST, t4.client, Some(1), LEN)),
                Fast::Drop(TT_CNT_DROP_VLAN_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::VlanNotAllowed),
            ),
            case(
                "cookie 8, untagged on a tagged-only session",
                t8.data(&c(HOST, t8.client, None, LEN)),
                Fast::Drop(TT_CNT_DROP_UNTAGGED_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::UntaggedNotAllowed),
            ),
            case(
                "cookie 8, priority-tagged on a tagged-only session",
                t8.data(&c(HOST, t8.client, Some(0x2000), LEN)),
                Fast::Drop(TT_CNT_DROP_UNTAGGED_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::UntaggedNotAllowed),
            ),
            case(
                "cookie 4, wrong cookie",
                t4.data_with(
                    t4.ap,
                    &flip_last(&t4.ap_sends_cookie),
                    None,
                    &c(HOST, t4.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            case(
                "cookie 8, wrong cookie (last byte)",
                t8.data_with(
                    t8.ap,
                    &flip_last(&t8.ap_sends_cookie),
                    None,
                    &c(HOST, t8.client, Some(10), LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            case(
                "cookie 8, first half only right",
                t8.data_with(
                    t8.ap,
                    &[&t8.ap_sends_cookie[..4], &[0u8; 4][..]].concat(),
                    None,
                    &c(HOST, t8.client, Some(10), LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            case(
                "cookie 4, wrong source address",
                t4.data_with(
                    SocketAddrV4::new([198, 51, 100, 99].into(), t4.ap.port()),
                    &t4.ap_sends_cookie,
                    None,
                    &c(HOST, t4.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            case(
                "cookie 0, wrong source port",
                t0.data_with(
                    SocketAddrV4::new(*t0.ap.ip(), t0.ap.port() + 100),
                    &[],
                    None,
                    &c(HOST, t0.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            // The slow path's: L2TP it must judge.
            case(
                "unknown session",
                packets::udp4(
                    Ip::udp(t0.ap, EDGE.parse().expect("addr")),
                    &packets::l2tp_data(0x7777_7777, &[], None, &c(HOST, t0.client, None, LEN)),
                ),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::EndpointDrop(DataDrop::UnknownSession),
            ),
            case(
                "control message (ZLB ack)",
                packets::udp4(Ip::udp(t0.ap, EDGE.parse().expect("addr")), &zlb(t0)),
                Fast::Pass(TT_CNT_PASS_CONTROL),
                Slow::Control,
            ),
            case(
                "L2TPv2 on port 1701",
                packets::udp4(
                    Ip::udp(t0.ap, EDGE.parse().expect("addr")),
                    &[0x00, 0x02, 0, 1, 0, 1, 0, 0],
                ),
                Fast::Pass(TT_CNT_PASS_NOT_L2TP),
                Slow::EndpointDrop(DataDrop::Malformed),
            ),
            // The slow path's: switching it must do.
            case(
                "broadcast inner destination",
                t4.data(&c([0xff; 6], t4.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_BUM),
                Slow::Flood(10),
            ),
            case(
                "multicast inner destination",
                t4.data(&c([0x01, 0, 0x5e, 0, 0, 0xfb], t4.client, Some(20), LEN)),
                Fast::Pass(TT_CNT_PASS_BUM),
                Slow::Flood(20),
            ),
            case(
                "unknown unicast inner destination",
                t4.data(&c([0x02, 0xdd, 0, 0, 0, 9], t4.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_DST),
                Slow::Flood(10),
            ),
            case(
                "destination behind another tunnel",
                t0.data(&c(t4.client, t0.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_NOT_TRUNK),
                Slow::ToTunnel(t4.port_id()),
            ),
            case(
                "source MAC not learned yet (the slow path learns it)",
                t4.data(&c(HOST, [0x02, 0xc1, 0, 0, 0x77, 1], None, LEN)),
                Fast::Pass(TT_CNT_PASS_SRC_NOT_LEARNED),
                Slow::ToTrunk(c(HOST, [0x02, 0xc1, 0, 0, 0x77, 1], Some(10), LEN)),
            ),
            case(
                "source MAC learned on another tunnel (the slow path moves it)",
                t4.data(&c(HOST, t8.client, Some(20), LEN)),
                Fast::Pass(TT_CNT_PASS_SRC_NOT_LEARNED),
                Slow::ToTrunk(c(HOST, t8.client, Some(20), LEN)),
            ),
            case(
                "multicast source MAC",
                t4.data(&c(HOST, [0x03, 0, 0, 0, 0, 1], None, LEN)),
                Fast::Pass(TT_CNT_PASS_SRC_NOT_LEARNED),
                Slow::SwitchDrop(DropReason::BadSourceMac),
            ),
            // Not for the fast path at all.
            case(
                "first fragment (MF)",
                with_ip(t4, |ip| ip.frag = 0x2000),
                Fast::Pass(TT_CNT_PASS_FRAGMENT),
                Slow::Kernel,
            ),
            case(
                "later fragment (offset 185)",
                with_ip(t4, |ip| ip.frag = 185),
                Fast::Pass(TT_CNT_PASS_FRAGMENT),
                Slow::Kernel,
            ),
            case(
                "IP options",
                with_ip(t4, |ip| ip.options = 4),
                Fast::Pass(TT_CNT_PASS_IP_OPTIONS),
                Slow::ToTrunk(c(HOST, t4.client, Some(10), LEN)),
            ),
            case(
                "UDP to another port",
                packets::udp4(
                    Ip::udp(t4.ap, SocketAddrV4::new([192, 0, 2, 1].into(), 53)),
                    &[0; 40],
                ),
                Fast::Pass(TT_CNT_PASS_NOT_L2TP),
                Slow::Kernel,
            ),
            case(
                "TCP",
                with_ip(t4, |ip| ip.protocol = 6),
                Fast::Pass(TT_CNT_PASS_NOT_L2TP),
                Slow::Kernel,
            ),
            case(
                "outer 802.1Q tag",
                packets::ether(
                    packets::EDGE_MAC,
                    packets::GW_MAC,
                    Some(5),
                    0x0800,
                    &t4.data(&c(HOST, t4.client, None, LEN))[14..],
                ),
                Fast::Pass(TT_CNT_PASS_NOT_IPV4),
                Slow::Kernel,
            ),
            case(
                "ARP",
                packets::ether([0xff; 6], packets::GW_MAC, None, 0x0806, &[0; 28]),
                Fast::Pass(TT_CNT_PASS_NOT_IPV4),
                Slow::Kernel,
            ),
            case(
                "bad IPv4 header checksum",
                {
                    let mut p = t4.data(&c(HOST, t4.client, None, LEN));
                    p[24] ^= 0x40;
                    p
                },
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::Kernel,
            ),
            case(
                "trailing bytes after the IP datagram",
                {
                    let mut p = t4.data(&c(HOST, t4.client, None, LEN));
                    p.extend_from_slice(&[0; 4]);
                    p
                },
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::ToTrunk(c(HOST, t4.client, Some(10), LEN)),
            ),
        ];

        // Truncated in flight (the lengths claim more than arrived).
        let full = t4.data(&c(HOST, t4.client, Some(20), LEN));
        for n in [
            14,
            15,
            20,
            33,
            34,
            41,
            42,
            45,
            49,
            50,
            53,
            54,
            67,
            71,
            full.len() - 1,
        ] {
            v.push(case(
                format!("truncated to {n} bytes"),
                full[..n].to_vec(),
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::Kernel,
            ));
        }
        // Short datagrams sent as such (the lengths agree).
        let short = |t: &Tunnel, n: usize| {
            let mut p = t.data(&c(HOST, t.client, Some(20), LEN));
            p.truncate(n);
            packets::fix_lengths(&mut p);
            p
        };
        let mal = DataDrop::Malformed;
        for (n, fast, slow) in [
            (
                42,
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::EndpointDrop(mal),
            ),
            (
                45,
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::EndpointDrop(mal),
            ),
            (
                49,
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::EndpointDrop(mal),
            ),
            (
                50,
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            (
                52,
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            (
                54,
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::SwitchDrop(DropReason::Malformed),
            ),
            (
                67,
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::SwitchDrop(DropReason::Malformed),
            ),
            (
                70,
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::SwitchDrop(DropReason::Malformed),
            ),
        ] {
            v.push(case(
                format!("cookie 4, short datagram of {n} bytes"),
                short(t4, n),
                fast,
                slow,
            ));
        }
        v.push(case(
            "sublayer session, short datagram without the sublayer",
            short(ts, 54),
            Fast::Drop(TT_CNT_DROP_BAD_SUBLAYER),
            Slow::EndpointDrop(DataDrop::BadSublayer),
        ));
        v.push(case(
            "cookie 8, short datagram inside the cookie",
            short(t8, 55),
            Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
            Slow::EndpointDrop(DataDrop::BadCookie),
        ));
        v
    }
}

fn flip_last(cookie: &[u8]) -> Vec<u8> {
    let mut c = cookie.to_vec();
    if let Some(b) = c.last_mut() {
        *b ^= 0x01;
    }
    c
}

/// A ZLB acknowledgement on the tunnel's control connection: T, L, S set,
/// version 3, length 12, the edge's CCID, Ns 0, Nr 0.
fn zlb(t: &Tunnel) -> Vec<u8> {
    let mut m = vec![0xc8, 0x03, 0, 12];
    m.extend_from_slice(&t.session.ccid.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

/// A forwardable data message of `t` with its IP header changed by `f`.
fn with_ip(t: &Tunnel, f: impl FnOnce(&mut Ip)) -> Vec<u8> {
    let mut ip = Ip::udp(t.ap, EDGE.parse().expect("addr"));
    f(&mut ip);
    let frame = packets::client(HOST, t.client, None, LEN);
    packets::udp4(
        ip,
        &packets::l2tp_data(
            t.ap_sends_sid,
            &t.ap_sends_cookie,
            t.sublayer_word(0),
            &frame,
        ),
    )
}

fn slow_drop_matches(reason: tt_counter, slow: &Slow) -> bool {
    use tt_counter::*;
    matches!(
        (reason, slow),
        (
            TT_CNT_DROP_BAD_SOURCE,
            Slow::EndpointDrop(DataDrop::BadSource)
        ) | (
            TT_CNT_DROP_BAD_COOKIE,
            Slow::EndpointDrop(DataDrop::BadCookie)
        ) | (
            TT_CNT_DROP_BAD_SUBLAYER,
            Slow::EndpointDrop(DataDrop::BadSublayer)
        ) | (
            TT_CNT_DROP_VLAN_NOT_ALLOWED,
            Slow::SwitchDrop(DropReason::VlanNotAllowed)
        ) | (
            TT_CNT_DROP_UNTAGGED_NOT_ALLOWED,
            Slow::SwitchDrop(DropReason::UntaggedNotAllowed)
        )
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Every case through both paths; all failures reported together.
#[test]
fn same_table_fast_and_slow() {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let mut lab = Lab::new();
    let mut bpf = ApRx::load().expect("xdp_ap_rx loads and verifies");
    lab.mirror_into(&mut bpf);
    let cases = lab.cases();
    let mut failures = Vec::new();

    for c in &cases {
        let mut fail = |what: String| failures.push(format!("{}: {what}", c.name));
        let before = bpf.counters().expect("counters");
        let got = match bpf.test_run(&c.packet) {
            Ok(o) => o,
            Err(e) => {
                fail(format!("test run failed: {e}"));
                continue;
            }
        };
        let delta = bpf.counters().expect("counters").since(&before);

        // The fast path against the table.
        let (want_action, want_counter) = match &c.fast {
            Fast::Redirect(_) => (Action::Redirect, tt_counter::TT_CNT_REDIRECT),
            Fast::Drop(r) => (Action::Drop, *r),
            Fast::Pass(r) => (Action::Pass, *r),
        };
        if got.action != want_action {
            fail(format!("fast path: {:?}, want {want_action:?}", got.action));
        }
        let mut want_delta = [0u64; tunterm_ebpf::maps::COUNTERS];
        want_delta[tt_counter::TT_CNT_RX as usize] = 1;
        want_delta[want_counter as usize] = 1;
        if delta != Counters(want_delta) {
            let moved: Vec<String> = delta
                .0
                .iter()
                .enumerate()
                .filter(|(_, n)| **n != 0)
                .map(|(i, n)| format!("#{i}+{n}"))
                .collect();
            fail(format!(
                "counters moved {moved:?}, want RX and {want_counter:?} (#{}) once",
                want_counter as usize
            ));
        }
        match &c.fast {
            Fast::Redirect(out) => {
                if &got.packet != out {
                    fail(format!(
                        "fast path output\n  got  {:02x?}\n  want {out:02x?}",
                        got.packet
                    ));
                }
            }
            Fast::Pass(_) | Fast::Drop(_) => {
                if got.action == Action::Pass && got.packet != c.packet {
                    fail("fast path changed a packet it passed".into());
                }
            }
        }

        // The slow path against the table.
        let slow = lab.slow_path(&c.packet);
        if slow != c.slow {
            fail(format!("slow path: {slow:?}\n  want {:?}", c.slow));
        }

        // The two paths against each other, whatever the table says.
        match &c.fast {
            Fast::Redirect(out) if slow != Slow::ToTrunk(out.clone()) => {
                fail(format!("fast path redirects, slow path says {slow:?}"));
            }
            Fast::Drop(r) if !slow_drop_matches(*r, &slow) => {
                fail(format!("fast path drops ({r:?}), slow path says {slow:?}"));
            }
            _ => {}
        }
    }

    // A forwarded source is refreshed in the FDB (its last-seen).
    let t0 = &lab.tunnels[0];
    let key = tunterm_ebpf::maps::tt_fdb_key::new(10, t0.client);
    let entry = bpf.fdb().expect("fdb").get(&key, 0).expect("client entry");
    if entry.last_seen_ns == 0 {
        failures.push("forwarding did not refresh the source's last_seen_ns".into());
    }

    let failed = failures.len();
    eprintln!(
        "xdp_ap_rx table: {} cases, {} failure(s)",
        cases.len(),
        failed
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The mirror refuses what the fast path cannot do, so the slow path keeps it.
#[test]
fn mirror_keeps_unsupported_sessions_slow() {
    let port = PortConfig {
        vlans: vlans(&[10]),
        untagged_vlan: Some(10),
    };
    let base = DataSession {
        local_sid: 42,
        remote_sid: 43,
        ccid: 1,
        peer: "198.51.100.2:40000".parse().expect("addr"),
        transport: Transport::Udp,
        cookie_rx: Cookie::new(&[9, 8, 7, 6]).expect("cookie"),
        cookie_tx: Cookie::NONE,
        pw_type: pw::ETHERNET,
        profile: None,
        remote_end_id: "lab".into(),
        state: SessionState::Established,
        sublayer: false,
        send_seq: false,
        drop_out_of_order: false,
        tx_seq: 0,
        rx_seq: None,
    };
    let (k, v) = mirror::session_entry(&base, &port, 3).expect("entry");
    assert_eq!(k, 42);
    assert_eq!(v.port, 42);
    assert_eq!(v.cookie(), &[9, 8, 7, 6]);
    assert_eq!(v.default_vlan, 10);
    assert_eq!(v.trunk_ifindex, 3);
    assert!(v.allows(10) && !v.allows(20));

    let mut s = base.clone();
    s.state = SessionState::WaitConnect;
    assert_eq!(
        mirror::session_entry(&s, &port, 3).err(),
        Some(NotFast::NotEstablished)
    );
    let mut s = base.clone();
    s.transport = Transport::Ip;
    assert_eq!(
        mirror::session_entry(&s, &port, 3).err(),
        Some(NotFast::NotUdp)
    );
    let mut s = base;
    s.peer = "[2001:db8::2]:40000".parse().expect("addr");
    assert_eq!(
        mirror::session_entry(&s, &port, 3).err(),
        Some(NotFast::NotIpv4)
    );
}

/// A client frame holding an IPv4 TCP segment with `flags` (no options).
fn tcp4(dst: [u8; 6], src: [u8; 6], tci: Option<u16>, flags: u8) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&[192, 168, 10, 11, 192, 168, 10, 1]);
    let ck = packets::checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    // Ports 40000 → 80, seq 1, ack 0, data offset 5, flags, window.
    ip.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff,
    ]);
    ip.extend_from_slice(&[0, 0, 0, 0]);
    packets::ether(dst, src, tci, 0x0800, &ip)
}
