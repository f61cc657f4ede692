//! One table of cases (name, input packet, expected XDP action and counter,
//! expected output frame), katran-style, run through `xdp_ap_rx` with
//! BPF_PROG_TEST_RUN and through the userspace path (the kernel's UDP
//! receive, modelled; `Endpoint::handle_datagram`; then the daemon's own
//! forwarding pipeline, `tunterm_core::forward::Forwarder`), with the same
//! expectations:
//! - where the fast path redirects, the slow path forwards to the trunk, and
//!   both produce exactly the expected frame;
//! - where the fast path drops, the slow path drops for the same reason;
//! - where the fast path passes, the packet is left untouched (the slow path
//!   gets it as it arrived and decides; its decision is checked too).
//!
//! The sessions are brought up with the real L2TPv3 handshake, then
//! mirrored into the BPF maps the way the daemon will (`common::mirror`).
//! Needs root (BPF); fails with a message otherwise.

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use common::lab::{self, EDGE, HOST, LEN, Lab, Slow, Tunnel, gre_from, group_twin};
use common::mirror::{self, NotFast};
use common::packets::{self, Ip, Ip6, Mac};
use etherparse::TcpHeader;
use tunterm_core::proto::bridge::{DropReason, PortConfig};
use tunterm_core::proto::gre::GreDrop;
use tunterm_core::proto::l2tp::{DataDrop, DataSession, SessionState};
use tunterm_core::wire::l2tp::{Cookie, Transport, pw};
use tunterm_ebpf::maps::{EntryError, tt_counter, tt_fdb_key};
use tunterm_ebpf::{Action, ApRx};

type Fast = lab::Fast<tt_counter>;

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

impl Lab {
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
            // The client table learns a client's addresses from its ARP
            // and neighbour discovery, unicast ones too.
            case(
                "cookie 4, a client's unicast ARP reply → slow path (client table)",
                t4.data(&arp_reply(t4.client, Some(10))),
                Fast::Pass(TT_CNT_PASS_ARP_ND),
                Slow::ToTrunk(arp_reply(t4.client, Some(10))),
            ),
            case(
                "cookie 4, a client's unicast neighbour advert → slow path (client table)",
                t4.data(&neighbour_advert(t4.client, Some(20))),
                Fast::Pass(TT_CNT_PASS_ARP_ND),
                Slow::ToTrunk(neighbour_advert(t4.client, Some(20))),
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
                    SocketAddrV4::new(*t0.ap4().ip(), t0.ap.port() + 100),
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
                    Ip::udp(t0.ap4(), EDGE.parse().expect("addr")),
                    &packets::l2tp_data(0x7777_7777, &[], None, &c(HOST, t0.client, None, LEN)),
                ),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::EndpointDrop(DataDrop::UnknownSession),
            ),
            case(
                "unknown session in a live session's slot",
                packets::udp4(
                    Ip::udp(t0.ap4(), EDGE.parse().expect("addr")),
                    &packets::l2tp_data(
                        t0.session.local_sid ^ 0x0001_0000,
                        &[],
                        None,
                        &c(HOST, t0.client, None, LEN),
                    ),
                ),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::EndpointDrop(DataDrop::UnknownSession),
            ),
            case(
                "session id 0 over UDP (an empty slot holds 0)",
                packets::udp4(
                    Ip::udp(t0.ap4(), EDGE.parse().expect("addr")),
                    &packets::l2tp_data(0, &[], None, &c(HOST, t0.client, None, LEN)),
                ),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::EndpointDrop(DataDrop::Malformed),
            ),
            case(
                "control message (ZLB ack)",
                packets::udp4(Ip::udp(t0.ap4(), EDGE.parse().expect("addr")), &zlb(t0)),
                Fast::Pass(TT_CNT_PASS_CONTROL),
                Slow::Control,
            ),
            case(
                "L2TPv2 on port 1701",
                packets::udp4(
                    Ip::udp(t0.ap4(), EDGE.parse().expect("addr")),
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
                "the group twin of a trunk host as inner destination",
                t4.data(&c(group_twin(HOST), t4.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_BUM),
                Slow::Flood(10),
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
            case(
                "the group twin of the tunnel's own client as source",
                t4.data(&c(HOST, group_twin(t4.client), None, LEN)),
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
                    Ip::udp(t4.ap4(), SocketAddrV4::new([192, 0, 2, 1].into(), 53)),
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
        v.extend(self.new_encap_cases());
        v
    }

    /// L2TPv3/UDP over IPv6, L2TPv3 over IP (v4, v6), GRE (v4, v6, with and
    /// without a key), with sweeps of every truncation of a good packet.
    fn new_encap_cases(&self) -> Vec<Case> {
        use tt_counter::*;
        let c = packets::client;
        let u6 = &self.tunnels[4];
        let i0 = &self.tunnels[5];
        let i8 = &self.tunnels[6];
        let i6 = &self.tunnels[7];
        let [g0, g1, g2, g3, gs] = &self.gre_aps[..] else {
            panic!("five GRE peers")
        };
        let t0 = &self.tunnels[0];
        let stranger: Mac = [0x02, 0xc3, 0, 0, 0, 1];
        let other6: SocketAddr = "[2001:db8:1::99]:40004".parse().expect("addr");
        let mut v = vec![
            forward(
                "UDP/IPv6 cookie 4, untagged → 10",
                u6.data(&c(HOST, u6.client, None, LEN)),
                c(HOST, u6.client, Some(10), LEN),
            ),
            forward(
                "UDP/IPv6 cookie 4, tagged 20",
                u6.data(&c(HOST, u6.client, Some(20), LEN)),
                c(HOST, u6.client, Some(20), LEN),
            ),
            case(
                "UDP/IPv6 wrong cookie",
                u6.data_with(
                    u6.ap,
                    &flip_last(&u6.ap_sends_cookie),
                    None,
                    &c(HOST, u6.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            case(
                "UDP/IPv6 wrong source address",
                u6.data_with(
                    other6,
                    &u6.ap_sends_cookie,
                    None,
                    &c(HOST, u6.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            case(
                "UDP/IPv6 wrong source port",
                u6.data_with(
                    SocketAddr::new(u6.ap.ip(), 1),
                    &u6.ap_sends_cookie,
                    None,
                    &c(HOST, u6.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            case(
                "UDP/IPv6 zero UDP checksum",
                {
                    let mut p = u6.data(&c(HOST, u6.client, None, LEN));
                    p[60..62].fill(0);
                    p
                },
                Fast::Pass(TT_CNT_PASS_UDP6_ZERO_CSUM),
                Slow::Kernel,
            ),
            case(
                "UDP/IPv6 VLAN 30 not allowed",
                u6.data(&c(HOST, u6.client, Some(30), LEN)),
                Fast::Drop(TT_CNT_DROP_VLAN_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::VlanNotAllowed),
            ),
            case(
                "UDP/IPv6 destination options header (the kernel skips it)",
                six(
                    u6,
                    Some(60),
                    |m| packets::l2tp_data(u6.ap_sends_sid, &u6.ap_sends_cookie, None, m),
                    &c(HOST, u6.client, None, LEN),
                ),
                Fast::Pass(TT_CNT_PASS_IPV6_EXT),
                Slow::ToTrunk(c(HOST, u6.client, Some(10), LEN)),
            ),
            case(
                "UDP/IPv6 fragment header",
                six(
                    u6,
                    Some(44),
                    |m| packets::l2tp_data(u6.ap_sends_sid, &u6.ap_sends_cookie, None, m),
                    &c(HOST, u6.client, None, LEN),
                ),
                Fast::Pass(TT_CNT_PASS_FRAGMENT),
                Slow::Kernel,
            ),
            case(
                "UDP/IPv6 to another port",
                packets::udp6(
                    Ip6 {
                        src: v6(u6.ap.ip()),
                        dst: lab::EDGE6,
                        ext: None,
                    },
                    5000,
                    53,
                    &[0; 20],
                ),
                Fast::Pass(TT_CNT_PASS_NOT_L2TP),
                Slow::Kernel,
            ),
            case(
                "UDP/IPv4 data for the IPv6 session",
                lab::wrap(
                    Transport::Udp,
                    SocketAddr::V4(t0.ap4()),
                    lab::EDGE4.into(),
                    &packets::l2tp_data(
                        u6.ap_sends_sid,
                        &u6.ap_sends_cookie,
                        None,
                        &c(HOST, u6.client, None, LEN),
                    ),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            // L2TPv3 over IP.
            forward(
                "IP/IPv4 cookie 0, untagged → 10",
                i0.data(&c(HOST, i0.client, None, LEN)),
                c(HOST, i0.client, Some(10), LEN),
            ),
            forward(
                "IP/IPv4 cookie 0, tagged 20",
                i0.data(&c(HOST, i0.client, Some(20), LEN)),
                c(HOST, i0.client, Some(20), LEN),
            ),
            forward(
                "IP/IPv4 cookie 8 + sublayer, tagged 10",
                i8.data(&c(HOST, i8.client, Some(10), LEN)),
                c(HOST, i8.client, Some(10), LEN),
            ),
            forward(
                "IP/IPv6 cookie 4, untagged → 20",
                i6.data(&c(HOST, i6.client, None, LEN)),
                c(HOST, i6.client, Some(20), LEN),
            ),
            forward(
                "IP/IPv6 cookie 4, tagged 10",
                i6.data(&c(HOST, i6.client, Some(10), LEN)),
                c(HOST, i6.client, Some(10), LEN),
            ),
            case(
                "IP/IPv4 control message (session id 0)",
                lab::wrap(
                    Transport::Ip,
                    i0.ap,
                    lab::EDGE4.into(),
                    &[&[0u8; 4][..], &zlb(i0)].concat(),
                ),
                Fast::Pass(TT_CNT_PASS_CONTROL),
                Slow::Control,
            ),
            case(
                "IP/IPv6 control message (session id 0)",
                lab::wrap(
                    Transport::Ip,
                    i6.ap,
                    lab::EDGE6.into(),
                    &[&[0u8; 4][..], &zlb(i6)].concat(),
                ),
                Fast::Pass(TT_CNT_PASS_CONTROL),
                Slow::Control,
            ),
            case(
                "IP/IPv4 unknown session",
                i0.data_over(
                    Transport::Ip,
                    i0.ap,
                    0x7777_7777,
                    &[],
                    None,
                    &c(HOST, i0.client, None, LEN),
                ),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::EndpointDrop(DataDrop::UnknownSession),
            ),
            case(
                "IP/IPv4 wrong source address",
                i0.data_with(
                    SocketAddr::new([198, 51, 100, 99].into(), 0),
                    &[],
                    None,
                    &c(HOST, i0.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            case(
                "IP/IPv4 cookie 8 wrong cookie",
                i8.data_with(
                    i8.ap,
                    &flip_last(&i8.ap_sends_cookie),
                    Some(0),
                    &c(HOST, i8.client, Some(10), LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            case(
                "IP/IPv4 cookie 8 untagged on a tagged-only session",
                i8.data(&c(HOST, i8.client, None, LEN)),
                Fast::Drop(TT_CNT_DROP_UNTAGGED_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::UntaggedNotAllowed),
            ),
            case(
                "IP/IPv4 sublayer with a sequence number",
                i8.data_with(
                    i8.ap,
                    &i8.ap_sends_cookie,
                    Some(0x4000_0009),
                    &c(HOST, i8.client, Some(10), LEN),
                ),
                Fast::Pass(TT_CNT_PASS_SEQUENCED),
                Slow::ToTrunk(c(HOST, i8.client, Some(10), LEN)),
            ),
            case(
                "IP/IPv6 wrong cookie",
                i6.data_with(
                    i6.ap,
                    &flip_last(&i6.ap_sends_cookie),
                    None,
                    &c(HOST, i6.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_COOKIE),
                Slow::EndpointDrop(DataDrop::BadCookie),
            ),
            case(
                "IP/IPv6 VLAN 30 not allowed",
                i6.data(&c(HOST, i6.client, Some(30), LEN)),
                Fast::Drop(TT_CNT_DROP_VLAN_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::VlanNotAllowed),
            ),
            case(
                "IP/IPv6 broadcast",
                i6.data(&c([0xff; 6], i6.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_BUM),
                Slow::Flood(20),
            ),
            case(
                "UDP session's data over IP (wrong transport)",
                t0.data_over(
                    Transport::Ip,
                    SocketAddr::new(t0.ap.ip(), 0),
                    t0.ap_sends_sid,
                    &[],
                    None,
                    &c(HOST, t0.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            case(
                "IP session's data over UDP (wrong transport)",
                i0.data_over(
                    Transport::Udp,
                    SocketAddr::new(i0.ap.ip(), 1701),
                    i0.ap_sends_sid,
                    &[],
                    None,
                    &c(HOST, i0.client, None, LEN),
                ),
                Fast::Drop(TT_CNT_DROP_BAD_SOURCE),
                Slow::EndpointDrop(DataDrop::BadSource),
            ),
            // GRE.
            forward(
                "GRE/IPv4 no key, untagged → 10",
                g0.data(&c(HOST, g0.client, None, LEN)),
                c(HOST, g0.client, Some(10), LEN),
            ),
            forward(
                "GRE/IPv4 no key, tagged 20 PCP 5",
                g0.data(&c(HOST, g0.client, Some(0xa014), LEN)),
                c(HOST, g0.client, Some(0xa014), LEN),
            ),
            forward(
                "GRE/IPv4 key, tagged 10",
                g1.data(&c(HOST, g1.client, Some(10), LEN)),
                c(HOST, g1.client, Some(10), LEN),
            ),
            forward(
                "GRE/IPv4 key, untagged → 10",
                g1.data(&c(HOST, g1.client, None, LEN)),
                c(HOST, g1.client, Some(10), LEN),
            ),
            forward(
                "GRE/IPv6 key, untagged → 10",
                g2.data(&c(HOST, g2.client, None, LEN)),
                c(HOST, g2.client, Some(10), LEN),
            ),
            forward(
                "GRE/IPv6 no key, tagged 20",
                g3.data(&c(HOST, g3.client, Some(20), LEN)),
                c(HOST, g3.client, Some(20), LEN),
            ),
            case(
                "GRE/IPv4 VLAN 30 not allowed",
                g0.data(&c(HOST, g0.client, Some(30), LEN)),
                Fast::Drop(TT_CNT_DROP_VLAN_NOT_ALLOWED),
                Slow::SwitchDrop(DropReason::VlanNotAllowed),
            ),
            case(
                "GRE/IPv6 broadcast",
                g2.data(&c([0xff; 6], g2.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_BUM),
                Slow::Flood(10),
            ),
            case(
                "GRE/IPv4 multicast",
                g1.data(&c([0x01, 0, 0x5e, 0, 0, 1], g1.client, Some(20), LEN)),
                Fast::Pass(TT_CNT_PASS_BUM),
                Slow::Flood(20),
            ),
            case(
                "GRE/IPv4 unknown unicast",
                g0.data(&c([0x02, 0xdd, 0, 0, 0, 9], g0.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_DST),
                Slow::Flood(10),
            ),
            case(
                "GRE wrong key: a new peer (the slow path makes it)",
                gre_pkt(g1.addr, Some(0x1235), None, &c(HOST, stranger, None, LEN)),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::ToTrunk(c(HOST, stranger, Some(10), LEN)),
            ),
            case(
                "GRE keyed peer's address without a key: a new peer",
                gre_pkt(
                    g1.addr,
                    None,
                    None,
                    &c(HOST, [0x02, 0xc3, 0, 0, 0, 2], Some(20), LEN),
                ),
                Fast::Pass(TT_CNT_PASS_UNKNOWN_SESSION),
                Slow::ToTrunk(c(HOST, [0x02, 0xc3, 0, 0, 0, 2], Some(20), LEN)),
            ),
            case(
                "GRE keepalive",
                gre_from(
                    g0.addr,
                    &packets::gre(
                        0x0800,
                        false,
                        None,
                        None,
                        &packets::ip4(lab::EDGE4, v4(g0.addr), 47, &[0, 0, 0, 0])[14..],
                    ),
                ),
                Fast::Pass(TT_CNT_PASS_CONTROL),
                Slow::Keepalive,
            ),
            case(
                "GRE with a checksum",
                gre_from(
                    g0.addr,
                    &packets::gre(0x6558, true, None, None, &c(HOST, g0.client, None, LEN)),
                ),
                Fast::Pass(TT_CNT_PASS_GRE_OTHER),
                Slow::ToTrunk(c(HOST, g0.client, Some(10), LEN)),
            ),
            case(
                "GRE version 1",
                {
                    let mut p = g0.data(&c(HOST, g0.client, None, LEN));
                    p[35] |= 1;
                    p
                },
                Fast::Pass(TT_CNT_PASS_GRE_OTHER),
                Slow::GreDrop(GreDrop::Malformed),
            ),
            case(
                "GRE protocol 0x88b5",
                gre_from(g0.addr, &packets::gre(0x88b5, false, None, None, &[0; 40])),
                Fast::Pass(TT_CNT_PASS_GRE_OTHER),
                Slow::GreDrop(GreDrop::WrongProtocol),
            ),
            case(
                "GRE payload shorter than Ethernet",
                gre_from(g0.addr, &packets::gre(0x6558, false, None, None, &[0; 13])),
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::GreDrop(GreDrop::Malformed),
            ),
            case(
                "GRE key bit without a key",
                gre_from(g0.addr, &[0x20, 0, 0x65, 0x58]),
                Fast::Pass(TT_CNT_PASS_MALFORMED),
                Slow::GreDrop(GreDrop::Malformed),
            ),
            case(
                "GRE sequenced peer sending without (the slow path sees it stop)",
                gre_pkt(gs.addr, gs.key, None, &c(HOST, gs.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_SEQUENCED),
                Slow::ToTrunk(c(HOST, gs.client, Some(10), LEN)),
            ),
            case(
                "GRE with a sequence number",
                gre_pkt(g3.addr, None, Some(5), &c(HOST, g3.client, None, LEN)),
                Fast::Pass(TT_CNT_PASS_SEQUENCED),
                Slow::ToTrunk(c(HOST, g3.client, Some(10), LEN)),
            ),
            case(
                "inner TCP SYN (the slow path clamps its MSS)",
                g0.data(&tcp_syn(g0.client)),
                Fast::Pass(TT_CNT_PASS_TCP_SYN),
                Slow::ToTrunk({
                    let mut f = tcp_syn(g0.client);
                    f.splice(12..12, [0x81, 0x00, 0, 10]);
                    f
                }),
            ),
            case(
                "inner TCP SYN over UDP/IPv6",
                u6.data(&tcp_syn(u6.client)),
                Fast::Pass(TT_CNT_PASS_TCP_SYN),
                Slow::ToTrunk({
                    let mut f = tcp_syn(u6.client);
                    f.splice(12..12, [0x81, 0x00, 0, 10]);
                    f
                }),
            ),
        ];
        // Every truncation of a good packet of each encapsulation: in
        // flight (the lengths claim more), and sent short (lengths agree;
        // the two paths must agree, whatever they decide).
        let goods: Vec<(&str, Vec<u8>, usize)> = vec![
            (
                "UDP/IPv4 cookie 4",
                self.tunnels[1].data(&c(HOST, self.tunnels[1].client, Some(20), LEN)),
                42,
            ),
            (
                "UDP/IPv4 sublayer",
                self.tunnels[3].data(&c(HOST, self.tunnels[3].client, Some(20), LEN)),
                42,
            ),
            (
                "UDP/IPv6 cookie 4",
                u6.data(&c(HOST, u6.client, Some(20), LEN)),
                62,
            ),
            (
                "IP/IPv4 cookie 0",
                i0.data(&c(HOST, i0.client, Some(20), LEN)),
                34,
            ),
            (
                "IP/IPv4 cookie 8 sublayer",
                i8.data(&c(HOST, i8.client, Some(20), LEN)),
                34,
            ),
            (
                "IP/IPv6 cookie 4",
                i6.data(&c(HOST, i6.client, Some(20), LEN)),
                54,
            ),
            (
                "GRE/IPv4 key",
                g1.data(&c(HOST, g1.client, Some(20), LEN)),
                34,
            ),
            (
                "GRE/IPv6 no key",
                g3.data(&c(HOST, g3.client, Some(20), LEN)),
                54,
            ),
        ];
        for (name, full, min_short) in goods {
            for n in 14..full.len() {
                v.push(case(
                    format!("{name} truncated in flight to {n}"),
                    full[..n].to_vec(),
                    Fast::Pass(TT_CNT_PASS_MALFORMED),
                    Slow::Kernel,
                ));
            }
            for n in min_short..full.len() {
                let mut p = full[..n].to_vec();
                packets::fix_any_lengths(&mut p);
                v.push(case(
                    format!("{name} sent short, {n} bytes"),
                    p,
                    Fast::Agree,
                    Slow::Kernel,
                ));
            }
        }
        v
    }
}

fn v4(a: IpAddr) -> std::net::Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("IPv4 wanted"),
    }
}

fn v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => panic!("IPv6 wanted"),
    }
}

/// A GRE data packet from `from`.
fn gre_pkt(from: IpAddr, key: Option<u32>, seq: Option<u32>, frame: &[u8]) -> Vec<u8> {
    gre_from(from, &packets::gre(0x6558, false, key, seq, frame))
}

/// A UDP/IPv6 data message of `t` with an extension header of type `ext`.
fn six(t: &Tunnel, ext: Option<u8>, msg: impl FnOnce(&[u8]) -> Vec<u8>, frame: &[u8]) -> Vec<u8> {
    packets::udp6(
        Ip6 {
            src: v6(t.ap.ip()),
            dst: lab::EDGE6,
            ext,
        },
        t.ap.port(),
        1701,
        &msg(frame),
    )
}

/// A client's unicast ARP reply to HOST: 10.0.0.2 is at `src`.
fn arp_reply(src: Mac, tci: Option<u16>) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
    a.extend_from_slice(&src);
    a.extend_from_slice(&[10, 0, 0, 2]);
    a.extend_from_slice(&HOST);
    a.extend_from_slice(&[10, 0, 0, 1]);
    // Padded to the shortest Ethernet frame, as a kernel sends it.
    a.resize(46, 0);
    packets::ether(HOST, src, tci, 0x0806, &a)
}

/// A client's unicast ICMPv6 neighbour advertisement to HOST (RFC 4861
/// §4.4: solicited, override; its target link-layer address option).
fn neighbour_advert(src: Mac, tci: Option<u16>) -> Vec<u8> {
    let target: std::net::Ipv6Addr = "fe80::2".parse().expect("addr");
    let dst: std::net::Ipv6Addr = "fe80::1".parse().expect("addr");
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&src);
    let h = etherparse::Ipv6Header {
        payload_length: icmp.len() as u16,
        next_header: etherparse::IpNumber(58),
        hop_limit: 255,
        source: target.octets(),
        destination: dst.octets(),
        ..Default::default()
    };
    let mut p = h.to_bytes().to_vec();
    p.extend_from_slice(&icmp);
    packets::ether(HOST, src, tci, 0x86dd, &p)
}

/// An untagged frame to HOST carrying an IPv4 TCP SYN without options.
fn tcp_syn(src: Mac) -> Vec<u8> {
    let mut tcp = TcpHeader::new(40000, 80, 0, 0);
    tcp.syn = true;
    let ips = ([10, 0, 0, 2].into(), [10, 0, 0, 1].into());
    packets::tcp4(HOST, src, None, ips, tcp)
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
    let mut ip = Ip::udp(t.ap4(), EDGE.parse().expect("addr"));
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

/// The counter of slot `i` (its drop reasons are all this test needs).
fn counter_at(i: usize) -> Option<tt_counter> {
    use tt_counter::*;
    [
        TT_CNT_DROP_BAD_SOURCE,
        TT_CNT_DROP_BAD_COOKIE,
        TT_CNT_DROP_BAD_SUBLAYER,
        TT_CNT_DROP_VLAN_NOT_ALLOWED,
        TT_CNT_DROP_UNTAGGED_NOT_ALLOWED,
    ]
    .into_iter()
    .find(|c| *c as usize == i)
}

/// Every case through both paths; all failures reported together.
#[test]
fn same_table_fast_and_slow() {
    lab::require_root();
    let mut lab = Lab::new();
    let mut bpf = ApRx::load().expect("xdp_ap_rx loads and verifies");
    lab.mirror_into(bpf.fast_path());
    let cases = lab.cases();
    let mut failures = Vec::new();
    // What each case did, for the runs with other guesses of the cookie
    // and sublayer length below.
    let mut outcomes = Vec::new();

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
        outcomes.push((c, got.action, got.packet.clone()));
        let delta = bpf.counters().expect("counters").since(&before);

        // The fast path against the table.
        let rx = tt_counter::TT_CNT_RX;
        for w in lab::check_fast(&c.fast, got.action, &delta, rx, tt_counter::TT_CNT_REDIRECT) {
            fail(w);
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
            Fast::Pass(_) | Fast::Drop(_) | Fast::Agree => {
                if got.action == Action::Pass && got.packet != c.packet {
                    fail("fast path changed a packet it passed".into());
                }
            }
        }

        // The slow path against the table.
        let slow = lab.slow_path(&c.packet);
        if c.fast != Fast::Agree && slow != c.slow {
            fail(format!("slow path: {slow:?}\n  want {:?}", c.slow));
        }

        // The two paths against each other, whatever the table says: what
        // the fast path did, not what the table said it would.
        match got.action {
            Action::Redirect if slow != Slow::ToTrunk(got.packet.clone()) => {
                fail(format!("fast path redirects, slow path says {slow:?}"));
            }
            Action::Drop => {
                let moved = (0..delta.0.len()).find(|&i| i != rx as usize && delta.0[i] != 0);
                let r = moved.and_then(counter_at);
                if !r.is_some_and(|r| slow_drop_matches(r, &slow)) {
                    fail(format!("fast path drops ({r:?}), slow path says {slow:?}"));
                }
            }
            Action::Pass | Action::Redirect => {}
            other => fail(format!("fast path: {other:?}")),
        }
    }

    // Where the program expects the inner frame before it has the session
    // (expect_l2tp_extra, 8 until now) only decides which FDB bucket it
    // starts loading early: every guess forwards, passes and drops the
    // same. The table's sessions have cookies of 0, 4 and 8 bytes, with
    // and without the sublayer.
    for extra in [0, 4, 12] {
        bpf.fast_path()
            .expect_l2tp_extra(extra)
            .expect("a valid guess");
        for (c, action, packet) in &outcomes {
            let got = bpf.test_run(&c.packet).expect("test run");
            if got.action != *action || &got.packet != packet {
                failures.push(format!(
                    "{} with {extra} bytes expected after the session id: {:?}, not {action:?}",
                    c.name, got.action
                ));
            }
        }
    }
    for bad in [2, 16] {
        let e = bpf.fast_path().expect_l2tp_extra(bad);
        if e.is_ok() {
            failures.push(format!("expect_l2tp_extra({bad}) accepted"));
        }
    }
    bpf.fast_path().expect_l2tp_extra(8).expect("the default");

    // While a capture runs nothing is dropped in XDP: what the policy
    // refuses goes to the slow path (whose `drop` point the capture has),
    // unchanged and counted as passed for the capture.
    bpf.fast_path()
        .set_slow_path_only(true)
        .expect("set the capture flag");
    let mut dropped = 0;
    for c in cases.iter().filter(|c| matches!(c.fast, Fast::Drop(_))) {
        dropped += 1;
        let before = bpf.counters().expect("counters");
        let got = bpf.test_run(&c.packet).expect("test run");
        let delta = bpf.counters().expect("counters").since(&before);
        let capture = delta.0[tt_counter::TT_CNT_PASS_CAPTURE as usize];
        if got.action != Action::Pass || got.packet != c.packet || capture != 1 {
            failures.push(format!(
                "{} during a capture: {:?}, changed: {}, ap_pass_capture +{capture}",
                c.name,
                got.action,
                got.packet != c.packet
            ));
        }
    }
    assert!(dropped >= 4, "the table has policy drops to check");
    bpf.fast_path()
        .set_slow_path_only(false)
        .expect("clear the capture flag");

    // A forwarded source's FDB slot is marked seen (userspace takes the
    // marks to keep the switch's entry from aging); taking them clears
    // them, and the next frame from it marks it again.
    let t0 = &lab.tunnels[0];
    let key = tt_fdb_key::new(10, t0.client);
    let seen = |bpf: &mut ApRx| bpf.fdb().expect("fdb").take_seen().contains(&key);
    if !seen(&mut bpf) {
        failures.push("the table's frames from t0's client did not mark it seen".into());
    }
    if seen(&mut bpf) {
        failures.push("taking the seen marks did not clear them".into());
    }
    let frame = t0.data(&packets::client(HOST, t0.client, None, LEN));
    let got = bpf.test_run(&frame).expect("test run");
    if got.action != Action::Redirect || !seen(&mut bpf) {
        failures.push(format!(
            "a frame from t0's client ({:?}) did not mark it seen",
            got.action
        ));
    }

    let failed = failures.len();
    eprintln!(
        "xdp_ap_rx table: {} cases, {} failure(s)",
        cases.len(),
        failed
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A client forwards wherever the FDB holds it: at its home slot, at
/// another slot of its first bucket, or in its second bucket after cuckoo
/// moves. The table is filled to 90% with clients of the first tunnel and
/// each sends one frame to the trunk host.
#[test]
fn clients_anywhere_in_a_full_fdb_forward() {
    lab::require_root();
    let lab = Lab::new();
    let mut bpf = ApRx::load().expect("xdp_ap_rx loads and verifies");
    lab.mirror_into(bpf.fast_path());
    let t0 = &lab.tunnels[0];
    let macs = lab::fill_fdb(bpf.fast_path(), t0);
    lab::assert_all_redirected(&macs, "not forwarded", |mac| {
        let frame = t0.data(&packets::client(HOST, mac, None, LEN));
        bpf.test_run(&frame).expect("test run").action
    });
}

/// The mirror refuses what the fast path cannot do, so the slow path keeps it.
#[test]
fn mirror_keeps_unsupported_sessions_slow() {
    let port = PortConfig {
        vlans: tunterm_control::VlanSet::from_ids([10]).unwrap(),
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
    let trunk = mirror::TrunkLink {
        ifindex: 3,
        untagged_vlan: Some(1),
    };
    let (k, v) = mirror::session_entry(&base, &port, 9, &trunk).expect("entry");
    assert_eq!(k, 42);
    assert_eq!(
        (v.entry.port, v.entry.port_idx, v.entry.trunk_untagged_vlan),
        (42, 9, 1)
    );
    assert_eq!(v.entry.cookie(), &[9, 8, 7, 6]);
    assert_eq!(v.entry.default_vlan, 10);
    assert_eq!(v.entry.trunk_ifindex, 3);
    assert!(v.allows(10) && !v.allows(20));

    let mut s = base.clone();
    s.state = SessionState::WaitConnect;
    assert_eq!(
        mirror::session_entry(&s, &port, 9, &trunk).err(),
        Some(NotFast::NotEstablished)
    );
    // Over IP and over IPv6 they have entries now, with the transport and
    // family they were set up over.
    let mut s = base.clone();
    s.transport = Transport::Ip;
    let (_, v) = mirror::session_entry(&s, &port, 9, &trunk).expect("IP entry");
    assert_eq!(
        (u32::from(v.entry.transport), v.entry.peer_port),
        (tunterm_ebpf::maps::TT_TRANSPORT_IP, 0)
    );
    let mut s = base.clone();
    s.peer = "[2001:db8::2]:40000".parse().expect("addr");
    let (_, v) = mirror::session_entry(&s, &port, 9, &trunk).expect("IPv6 entry");
    assert_eq!(
        v.entry.peer_ip(),
        "2001:db8::2".parse::<IpAddr>().expect("addr")
    );
    assert_eq!(u32::from(v.entry.family), tunterm_ebpf::maps::TT_AF_INET6);
    // Templates: not for sequenced senders, nor for UDP over IPv6.
    let link = lab::ap_link();
    let mut s = base.clone();
    s.cookie_tx = Cookie::new(&[1, 2, 3, 4]).expect("cookie");
    let (k, t) = mirror::session_template(&s, &port, 9, &link).expect("template");
    // Keyed by the port index, with the port's untagged VLAN.
    assert_eq!(
        (k, t.untagged_vlan, t.hdr_len, t.ifindex),
        (9, 10, 14 + 20 + 8 + 8 + 4, lab::AP_IFINDEX)
    );
    s.sublayer = true;
    s.send_seq = true;
    assert_eq!(
        mirror::session_template(&s, &port, 9, &link).err(),
        Some(NotFast::Sequenced)
    );
    let mut s = base;
    s.peer = "[2001:db8::2]:40000".parse().expect("addr");
    assert_eq!(
        mirror::session_template(&s, &port, 9, &link).err(),
        Some(NotFast::Entry(EntryError::Udp6))
    );
    s.transport = Transport::Ip;
    let (_, t) = mirror::session_template(&s, &port, 9, &link).expect("IP/IPv6 template");
    assert_eq!(t.hdr_len, 14 + 40 + 4);
}

/// A client frame holding an IPv4 TCP segment with `flags` (no options):
/// 40000 → 80, seq 1, window 65535.
fn tcp4(dst: Mac, src: Mac, tci: Option<u16>, flags: u8) -> Vec<u8> {
    let mut tcp = TcpHeader::new(40000, 80, 1, 0xffff);
    tcp.syn = flags & 0x02 != 0;
    tcp.ack = flags & 0x10 != 0;
    let ips = ([192, 168, 10, 11].into(), [192, 168, 10, 1].into());
    packets::tcp4(dst, src, tci, ips, tcp)
}
