//! The pipeline on byte-literal frames, with etherparse as an independent
//! reader of what it emits.

use std::net::SocketAddr;

use etherparse::{LinkExtHeader, NetHeaders, PacketHeaders, TcpOptionElement, TransportHeader};
use tunterm_control::VlanSet;

use super::*;
use crate::proto::bridge::{DropReason, PortConfig, host_port};
use crate::wire::checksum::internet_checksum;
use crate::wire::l2tp::Transport;

/// Tunnel A: L2TP/UDP to 198.51.100.2:40000, VLANs 1, 10, 20, untagged 10,
/// a 4-byte header (session id 0x0a0a0a0a), MTU 1500.
const A: PortId = PortId(0x0a0a_0a0a);
/// Tunnel B: GRE to 2001:db8::2, VLAN 20 tagged only, a GRE header with a
/// key (8 bytes), MTU 1500.
const B: PortId = PortId(0xf000_0001);
/// Tunnel C: L2TP/IP to 198.51.100.3, VLAN 10 untagged, MTU 1400 (below the
/// link's 1500: inner IPv4 without DF is fragmented here).
const C: PortId = PortId(0x0c0c_0c0c);
/// A port of the switch with no tunnel behind it (a session that just went).
const GONE: PortId = PortId(0x0d0d_0d0d);

const HOST: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];
const CLIENT: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 1];
const CLIENT_B: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 2];
const CLIENT_C: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 3];

struct FakeTunnel {
    port: PortId,
    carrier: Carrier,
    peer: SocketAddr,
    mtu: u16,
    hdr: Vec<u8>,
}

/// Tunnels with fixed headers: what the pipeline does with them is the test.
struct Fake(Vec<FakeTunnel>);

impl TunnelPorts for Fake {
    fn encap(&mut self, port: PortId, hdr: &mut Vec<u8>) -> Option<Encap> {
        let t = self.0.iter().find(|t| t.port == port)?;
        hdr.clear();
        hdr.extend_from_slice(&t.hdr);
        Some(Encap {
            carrier: t.carrier,
            peer: t.peer,
            mtu: t.mtu,
        })
    }
    fn overhead(&self, port: PortId) -> Option<(usize, u16)> {
        let t = self.0.iter().find(|t| t.port == port)?;
        Some((t.carrier.outer_len(t.peer.is_ipv6()) + t.hdr.len(), t.mtu))
    }
    fn ap(&self, port: PortId) -> Option<(&str, IpAddr)> {
        let t = self.0.iter().find(|t| t.port == port)?;
        Some(("ap", t.peer.ip()))
    }
}

struct Bed {
    switch: Switch,
    tunnels: Fake,
    fwd: Forwarder,
    out: Actions,
    now: Instant,
}

impl Bed {
    fn new() -> Bed {
        let mut switch = Switch::new(crate::proto::bridge::DEFAULT_AGING);
        let port = |v: &[u16], u: Option<u16>| PortConfig {
            vlans: VlanSet::from_ids(v.iter().copied()).unwrap(),
            untagged_vlan: u,
        };
        switch.add_port(TRUNK, port(&[10, 20, 30], Some(1)));
        switch.add_port(A, port(&[1, 10, 20], Some(10)));
        switch.add_port(B, port(&[20], None));
        switch.add_port(C, port(&[], Some(10)));
        switch.add_port(GONE, port(&[20], None));
        switch.add_port(host_port(30), port(&[], Some(30)));
        let tunnels = Fake(vec![
            FakeTunnel {
                port: A,
                carrier: Carrier::L2tp(Transport::Udp),
                peer: "198.51.100.2:40000".parse().unwrap(),
                mtu: 1500,
                hdr: vec![0x0a, 0x0a, 0x0a, 0x0a],
            },
            FakeTunnel {
                port: B,
                carrier: Carrier::Gre,
                peer: "[2001:db8::2]:0".parse().unwrap(),
                mtu: 1500,
                hdr: vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7],
            },
            FakeTunnel {
                port: C,
                carrier: Carrier::L2tp(Transport::Ip),
                peer: "198.51.100.3:0".parse().unwrap(),
                mtu: 1400,
                hdr: vec![0x0c, 0x0c, 0x0c, 0x0c],
            },
        ]);
        let fwd = Forwarder::new(ForwardConfig {
            link_mtu: 1500,
            icmp_src4: Some("192.0.2.1".parse().unwrap()),
            icmp_src6: Some("2001:db8::1".parse().unwrap()),
        });
        Bed {
            switch,
            tunnels,
            fwd,
            out: Actions::default(),
            now: crate::test_t0(),
        }
    }

    /// One frame through the pipeline; the actions it added.
    fn run(&mut self, ingress: PortId, frame: &[u8]) -> (Outcome, Vec<Owned>) {
        self.run_tapped(ingress, frame, &mut NoTap)
    }

    fn run_tapped(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        tap: &mut impl Tap,
    ) -> (Outcome, Vec<Owned>) {
        self.out.clear();
        let mut ports = Ports {
            switch: &mut self.switch,
            tunnels: &mut self.tunnels,
            relay: None,
        };
        let o = self
            .fwd
            .handle(self.now, ingress, frame, &mut ports, &mut self.out, tap);
        (o, self.out.iter().map(Owned::from).collect())
    }

    /// Teach the switch that `mac` is behind `port` (untagged), and forget
    /// the announcement and actions that made.
    fn learn(&mut self, port: PortId, mac: [u8; 6], tag: Option<u16>) {
        let f = frame([0xff; 6], mac, tag, 0x88b5, &[0; 46]);
        let _ = self.run(port, &f);
    }
}

impl TunnelPorts for &mut Fake {
    fn encap(&mut self, port: PortId, hdr: &mut Vec<u8>) -> Option<Encap> {
        (**self).encap(port, hdr)
    }
    fn overhead(&self, port: PortId) -> Option<(usize, u16)> {
        (**self).overhead(port)
    }
    fn ap(&self, port: PortId) -> Option<(&str, IpAddr)> {
        (**self).ap(port)
    }
}

/// An [`Out`] with its bytes copied, to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Trunk(Kind, Vec<u8>),
    Tunnel(PortId, Carrier, SocketAddr, Kind, Vec<u8>),
    Host(PortId, u16, Kind, Vec<u8>),
    Relayed(PortId, u16),
    Drop(PortId, Reason),
}

impl From<Out<'_>> for Owned {
    fn from(o: Out<'_>) -> Owned {
        match o {
            Out::Trunk { kind, frame } => Owned::Trunk(kind, frame.to_vec()),
            Out::Tunnel {
                port,
                carrier,
                peer,
                kind,
                packet,
                ..
            } => Owned::Tunnel(port, carrier, peer, kind, packet.to_vec()),
            Out::HostPort {
                port,
                vlan,
                kind,
                frame,
            } => Owned::Host(port, vlan, kind, frame.to_vec()),
            Out::Relayed { port, vlan } => Owned::Relayed(port, vlan),
            Out::Drop { port, reason } => Owned::Drop(port, reason),
        }
    }
}

/// An Ethernet frame: `dst`, `src`, an 802.1Q tag with TCI `tag`, the
/// ethertype, the payload.
fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    if let Some(t) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&t.to_be_bytes());
    }
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 UDP packet 10.0.0.2 → 10.0.0.1 of `total` bytes, DF as given.
fn ipv4_udp(total: u16, df: bool) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    if df {
        p[6] = 0x40;
    }
    let ck = internet_checksum(&p);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    // UDP 5000 → 5001, no checksum.
    p.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    p.extend_from_slice(&(total - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(usize::from(total), 0x5a);
    p
}

/// The VLAN id of the first tag etherparse finds, and the headers.
fn parse(f: &[u8]) -> (Option<u16>, PacketHeaders<'_>) {
    let h = PacketHeaders::from_ethernet_slice(f).expect("etherparse reads it");
    let vid = h.link_exts.iter().find_map(|e| match e {
        LinkExtHeader::Vlan(v) => Some(v.vlan_id.value()),
        _ => None,
    });
    (vid, h)
}

#[test]
fn an_untagged_frame_from_a_tunnel_is_tagged_with_its_default_vlan() {
    let mut bed = Bed::new();
    bed.learn(TRUNK, HOST, Some(10));
    // dst, src, ethertype 0x88b5, "hello".
    let f = [
        0x02, 0xee, 0, 0, 0, 1, 0x02, 0xc1, 0, 0, 0, 1, 0x88, 0xb5, b'h', b'e', b'l', b'l', b'o',
    ];
    let (o, acts) = bed.run(A, &f);
    assert_eq!(
        o,
        Outcome::Forward {
            vlan: 10,
            to: TRUNK
        }
    );
    // Forwarded tagged 10, and the new MAC announced on VLAN 10.
    let want = [
        0x02, 0xee, 0, 0, 0, 1, 0x02, 0xc1, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x0a, 0x88, 0xb5, b'h',
        b'e', b'l', b'l', b'o',
    ];
    assert_eq!(acts[0], Owned::Trunk(Kind::Frame, want.to_vec()));
    let Owned::Trunk(Kind::Announce, rarp) = &acts[1] else {
        panic!("{acts:?}")
    };
    let (vid, h) = parse(rarp);
    assert_eq!(vid, Some(10));
    let link = h.link.unwrap().ethernet2().unwrap();
    assert_eq!((link.source, link.destination), (CLIENT, [0xff; 6]));
    assert_eq!(acts.len(), 2);
    assert_eq!(bed.fwd.counters().mac_announcements, 1);
    // Known now: no second announcement.
    let (_, acts) = bed.run(A, &f);
    assert_eq!(acts.len(), 1);
}

#[test]
fn a_tagged_frame_from_the_trunk_leaves_a_tunnel_untagged_on_its_default_vlan() {
    let mut bed = Bed::new();
    bed.learn(A, CLIENT, None);
    let f = frame(CLIENT, HOST, Some(0x600a), 0x88b5, b"down");
    let (o, acts) = bed.run(TRUNK, &f);
    assert_eq!(o, Outcome::Forward { vlan: 10, to: A });
    let mut want = vec![0x0a, 0x0a, 0x0a, 0x0a];
    want.extend(frame(CLIENT, HOST, None, 0x88b5, b"down"));
    assert_eq!(
        acts,
        [Owned::Tunnel(
            A,
            Carrier::L2tp(Transport::Udp),
            "198.51.100.2:40000".parse().unwrap(),
            Kind::Frame,
            want
        )]
    );
    // On VLAN 20 the tag stays, its PCP kept.
    bed.learn(A, CLIENT, Some(20));
    let (_, acts) = bed.run(TRUNK, &frame(CLIENT, HOST, Some(0xa014), 0x88b5, b"x"));
    let Owned::Tunnel(_, _, _, _, p) = &acts[0] else {
        panic!("{acts:?}")
    };
    let (vid, h) = parse(&p[4..]);
    assert_eq!(vid, Some(20));
    let LinkExtHeader::Vlan(v) = &h.link_exts[0] else {
        panic!()
    };
    assert_eq!(v.pcp.value(), 5);
}

#[test]
fn the_native_vlan_is_untagged_on_the_trunk_and_tagged_in_a_tunnel() {
    let mut bed = Bed::new();
    bed.learn(A, CLIENT, Some(1));
    // Untagged on the trunk: VLAN 1, tagged 1 toward A (A carries 1 tagged).
    let (o, acts) = bed.run(TRUNK, &frame(CLIENT, HOST, None, 0x88b5, b"n"));
    assert_eq!(o, Outcome::Forward { vlan: 1, to: A });
    let Owned::Tunnel(_, _, _, _, p) = &acts[0] else {
        panic!("{acts:?}")
    };
    assert_eq!(&p[4..], frame(CLIENT, HOST, Some(1), 0x88b5, b"n"));
    // And back: the tag comes off on the trunk.
    let (o, acts) = bed.run(A, &frame(HOST, CLIENT, Some(1), 0x88b5, b"u"));
    assert_eq!(o, Outcome::Forward { vlan: 1, to: TRUNK });
    assert_eq!(
        acts[0],
        Owned::Trunk(Kind::Frame, frame(HOST, CLIENT, None, 0x88b5, b"u"))
    );
}

#[test]
fn vlans_a_port_does_not_carry_are_dropped_with_the_reason() {
    let mut bed = Bed::new();
    let (o, acts) = bed.run(A, &frame(HOST, CLIENT, Some(30), 0x88b5, b"x"));
    let why = Reason::Switch(DropReason::VlanNotAllowed);
    assert_eq!(o, Outcome::Drop(why));
    assert_eq!(acts, [Owned::Drop(A, why)]);
    // B is tagged only.
    let (o, _) = bed.run(B, &frame(HOST, CLIENT_B, None, 0x88b5, b"x"));
    assert_eq!(
        o,
        Outcome::Drop(Reason::Switch(DropReason::UntaggedNotAllowed))
    );
    // Shorter than an Ethernet header.
    let (o, acts) = bed.run(TRUNK, &[0xff; 13]);
    let why = Reason::Switch(DropReason::Malformed);
    assert_eq!(
        (o, acts),
        (Outcome::Drop(why), vec![Owned::Drop(TRUNK, why)])
    );
}

/// An untagged frame HOST → CLIENT holding an IPv4 TCP SYN with MSS 1460.
fn syn_mss_1460() -> Vec<u8> {
    let mut ip = vec![
        0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let ck = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    // 80 → 40000, seq 1, data offset 6, SYN, window, MSS 1460.
    let mut tcp = vec![
        0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 0x05,
        0xb4,
    ];
    let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 24];
    pseudo.extend_from_slice(&tcp);
    let ck = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&ck.to_be_bytes());
    ip.extend_from_slice(&tcp);
    frame(CLIENT, HOST, Some(10), 0x0800, &ip)
}

fn mss_of(f: &[u8]) -> u16 {
    let (_, h) = parse(f);
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("IPv4")
    };
    let Some(TransportHeader::Tcp(tcp)) = &h.transport else {
        panic!("TCP")
    };
    let sum = tcp.calc_checksum_ipv4(ip, &[]).unwrap();
    assert_eq!(sum, tcp.checksum, "TCP checksum still right");
    tcp.options_iterator()
        .find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        })
        .expect("an MSS option")
}

#[test]
fn a_syn_into_a_tunnel_gets_the_mss_the_tunnel_carries() {
    let mut bed = Bed::new();
    bed.learn(A, CLIENT, None);
    let (_, acts) = bed.run(TRUNK, &syn_mss_1460());
    let Owned::Tunnel(_, _, _, _, p) = &acts[0] else {
        panic!("{acts:?}")
    };
    // 1500 - 20 IPv4 - 8 UDP - 4 L2TP - 14 Ethernet - 40 IPv4+TCP.
    assert_eq!(mss_of(&p[4..]), 1500 - 20 - 8 - 4 - 14 - 40);
    assert_eq!(bed.fwd.counters().mss_clamped, 1);
    // A SYN from the tunnel to the trunk: clamped for the way back too.
    bed.learn(TRUNK, HOST, Some(10));
    let mut up = syn_mss_1460();
    up.drain(12..16);
    up[..12].copy_from_slice(&[HOST, CLIENT].concat());
    let (_, acts) = bed.run(A, &up);
    let Owned::Trunk(Kind::Frame, f) = &acts[0] else {
        panic!("{acts:?}")
    };
    assert_eq!(mss_of(f), 1500 - 20 - 8 - 4 - 18 - 40);
    assert_eq!(bed.fwd.counters().mss_clamped, 2);
}

#[test]
fn too_big_ipv4_with_df_is_answered_with_fragmentation_needed() {
    let mut bed = Bed::new();
    bed.learn(A, CLIENT, None);
    // 1500 bytes of IP cannot cross a 1500-byte tunnel with 46 bytes of
    // encapsulation around it.
    let f = frame(CLIENT, HOST, Some(10), 0x0800, &ipv4_udp(1500, true));
    let (o, acts) = bed.run(TRUNK, &f);
    assert_eq!(o, Outcome::Forward { vlan: 10, to: A });
    assert_eq!(acts.len(), 1, "{acts:?}");
    let Owned::Trunk(Kind::IcmpTooBig, reply) = &acts[0] else {
        panic!("{acts:?}")
    };
    let (vid, h) = parse(reply);
    assert_eq!(vid, Some(10));
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("IPv4")
    };
    assert_eq!((ip.source, ip.destination), ([192, 0, 2, 1], [10, 0, 0, 2]));
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else {
        panic!("ICMP")
    };
    // 1500 - 46 (outer IP, UDP, L2TP, inner Ethernet).
    assert_eq!(
        icmp.icmp_type,
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1500 - 20 - 8 - 4 - 14
            }
        )
    );
    assert_eq!(
        icmp.checksum,
        icmp.icmp_type.calc_checksum(h.payload.slice())
    );
    assert_eq!(bed.fwd.counters().too_big_icmp, 1);
}

#[test]
fn too_big_ipv4_without_df_goes_whole_when_the_kernel_fragments_it() {
    let mut bed = Bed::new();
    bed.learn(A, CLIENT, None);
    let f = frame(CLIENT, HOST, Some(10), 0x0800, &ipv4_udp(1500, false));
    let (_, acts) = bed.run(TRUNK, &f);
    let Owned::Tunnel(A, _, _, Kind::Frame, p) = &acts[0] else {
        panic!("{acts:?}")
    };
    assert_eq!(p.len(), 4 + 14 + 1500);
    assert_eq!(bed.fwd.counters().too_big_fragmented, 1);
    assert_eq!(bed.fwd.counters().inner_fragments, 0);
}

#[test]
fn too_big_ipv4_without_df_is_split_below_the_link_mtu() {
    let mut bed = Bed::new();
    bed.learn(C, CLIENT_C, None);
    let ip = ipv4_udp(3000, false);
    let f = frame(CLIENT_C, HOST, Some(10), 0x0800, &ip);
    let (_, acts) = bed.run(TRUNK, &f);
    // 1400 - 20 outer IPv4 - 4 L2TP - 14 Ethernet: 1362 bytes of IP, so
    // 1336 of payload per fragment (a multiple of 8) after a 20-byte header.
    let mut payload = Vec::new();
    let mut offsets = Vec::new();
    for a in &acts {
        let Owned::Tunnel(C, Carrier::L2tp(Transport::Ip), _, Kind::Fragment, p) = a else {
            panic!("{a:?}")
        };
        assert_eq!(&p[..4], [0x0c; 4]);
        assert!(p.len() - 4 - 14 <= 1362);
        let (vid, h) = parse(&p[4..]);
        assert_eq!(vid, None, "VLAN 10 is C's untagged one");
        let Some(NetHeaders::Ipv4(iph, _)) = &h.net else {
            panic!("IPv4")
        };
        assert_eq!(iph.header_checksum, iph.calc_header_checksum());
        offsets.push((iph.fragment_offset.value() * 8, iph.more_fragments));
        payload.extend_from_slice(&p[4 + 14 + 20..]);
    }
    assert_eq!(offsets, [(0, true), (1336, true), (2672, false)]);
    assert_eq!(payload, ip[20..], "the pieces make the packet");
    assert_eq!(bed.fwd.counters().inner_fragments, 3);
    assert_eq!(bed.fwd.counters().too_big_fragmented, 1);
}

#[test]
fn too_big_ipv6_is_answered_with_packet_too_big() {
    let mut bed = Bed::new();
    bed.learn(B, CLIENT_B, Some(20));
    // IPv6 UDP 2001:db8:9::2 → 2001:db8:9::1, 1460 bytes of payload.
    let mut ip = vec![0x60, 0, 0, 0, 0x05, 0xb4, 17, 64];
    ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    ip.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0x05, 0xb4, 0, 0]);
    ip.resize(40 + 1460, 0);
    let f = frame(CLIENT_B, HOST, Some(20), 0x86dd, &ip);
    let (_, acts) = bed.run(TRUNK, &f);
    let Owned::Trunk(Kind::IcmpTooBig, reply) = &acts[0] else {
        panic!("{acts:?}")
    };
    let (vid, h) = parse(reply);
    assert_eq!(vid, Some(20));
    let Some(NetHeaders::Ipv6(ip6, _)) = &h.net else {
        panic!("IPv6")
    };
    assert_eq!(
        ip6.source,
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
    );
    let Some(TransportHeader::Icmpv6(icmp)) = &h.transport else {
        panic!("ICMPv6")
    };
    // 1500 - 40 outer IPv6 - 8 GRE - 18 tagged Ethernet.
    assert_eq!(
        icmp.icmp_type,
        etherparse::Icmpv6Type::PacketTooBig {
            mtu: 1500 - 40 - 8 - 18
        }
    );
    let sum = icmp
        .icmp_type
        .calc_checksum(ip6.source, ip6.destination, h.payload.slice())
        .unwrap();
    assert_eq!(icmp.checksum, sum);
    assert_eq!(bed.fwd.counters().too_big_icmp, 1);
}

#[test]
fn broadcast_floods_the_vlan_but_the_ingress() {
    let mut bed = Bed::new();
    let f = frame([0xff; 6], HOST, Some(20), 0x0806, &[1; 28]);
    let (o, acts) = bed.run(TRUNK, &f);
    assert_eq!(o, Outcome::Flood { vlan: 20 });
    let to: Vec<_> = acts
        .iter()
        .map(|a| match a {
            Owned::Tunnel(p, ..) => (*p, None),
            Owned::Drop(p, r) => (*p, Some(*r)),
            other => panic!("{other:?}"),
        })
        .collect();
    // A and B carry 20; GONE carries it with no tunnel behind it.
    assert_eq!(to, [(A, None), (B, None), (GONE, Some(Reason::NoTunnel))]);
    assert_eq!(bed.fwd.counters().tunnel_tx_no_session, 1);
    // From A: the trunk and B get it, tagged 20 both.
    let (_, acts) = bed.run(A, &frame([0xff; 6], CLIENT, Some(20), 0x0806, &[1; 28]));
    let Owned::Trunk(Kind::Frame, t) = &acts[0] else {
        panic!("{acts:?}")
    };
    assert_eq!(parse(t).0, Some(20));
    let Owned::Tunnel(B, Carrier::Gre, _, _, p) = &acts[1] else {
        panic!("{acts:?}")
    };
    assert_eq!(parse(&p[8..]).0, Some(20));
}

/// Floods nothing: broadcasts stay where they are.
struct NoFlood;

impl FloodPolicy for NoFlood {
    fn flood_ports(
        &mut self,
        _: Instant,
        _: PortId,
        _: u16,
        view: &FrameView,
        _: &[u8],
        members: &[PortId],
        to: &mut Vec<PortId>,
    ) {
        // Unknown unicast still goes to the trunk; broadcast nowhere.
        if !view.dst.is_multicast() {
            to.extend(members.iter().filter(|&&p| p == TRUNK));
        }
    }
}

#[test]
fn the_flood_policy_decides_who_gets_a_copy() {
    let mut bed = Bed::new();
    let mut fwd = Forwarder::with_policy(ForwardConfig::default(), NoFlood);
    let mut out = Actions::default();
    let mut ports = Ports {
        switch: &mut bed.switch,
        tunnels: &mut bed.tunnels,
        relay: None,
    };
    let b = frame([0xff; 6], CLIENT, None, 0x0806, &[1; 28]);
    let o = fwd.handle(bed.now, A, &b, &mut ports, &mut out, &mut NoTap);
    assert_eq!(o, Outcome::Flood { vlan: 10 });
    assert!(
        out.iter().all(|o| matches!(
            o,
            Out::Trunk {
                kind: Kind::Announce,
                ..
            }
        )),
        "only the new MAC's announcement"
    );
    out.clear();
    let u = frame([0x02, 0xdd, 0, 0, 0, 9], CLIENT, None, 0x0800, &[1; 28]);
    let _ = fwd.handle(bed.now, A, &u, &mut ports, &mut out, &mut NoTap);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out.get(0),
        Some(Out::Trunk {
            kind: Kind::Frame,
            ..
        })
    ));
}

#[test]
fn learning_turns_a_flood_into_a_forward_and_follows_a_move() {
    let mut bed = Bed::new();
    let down = frame(CLIENT, HOST, Some(20), 0x88b5, b"d");
    assert_eq!(bed.run(TRUNK, &down).0, Outcome::Flood { vlan: 20 });
    bed.learn(A, CLIENT, Some(20));
    assert_eq!(
        bed.run(TRUNK, &down).0,
        Outcome::Forward { vlan: 20, to: A }
    );
    // CLIENT roams to B: announced again, and forwarded there.
    let (_, acts) = bed.run(B, &frame([0xff; 6], CLIENT, Some(20), 0x88b5, b"m"));
    assert!(acts.contains(&Owned::Trunk(Kind::Announce, {
        let mut f = Vec::new();
        ether::write_mac_announce(&ether::MacAddr(CLIENT), Some(20), &mut f);
        f
    })));
    assert_eq!(
        bed.run(TRUNK, &down).0,
        Outcome::Forward { vlan: 20, to: B }
    );
    // A frame back to where it came from is dropped as local.
    let (o, _) = bed.run(TRUNK, &frame(HOST, HOST, Some(20), 0x88b5, b"l"));
    assert_eq!(o, Outcome::Drop(Reason::Switch(DropReason::Local)));
}

#[test]
fn host_ports_get_their_vlan_untagged_and_send_into_the_switch() {
    let mut bed = Bed::new();
    let hp = host_port(30);
    let edge_mac = [0x02, 0x77, 0, 0, 0, 30];
    bed.learn(hp, edge_mac, None);
    let (o, acts) = bed.run(TRUNK, &frame(edge_mac, HOST, Some(30), 0x0800, b"to me"));
    assert_eq!(o, Outcome::Forward { vlan: 30, to: hp });
    assert_eq!(
        acts,
        [Owned::Host(
            hp,
            30,
            Kind::Frame,
            frame(edge_mac, HOST, None, 0x0800, b"to me")
        )]
    );
    // From the host port: tagged 30 on the trunk (its MAC was announced
    // when it was learned).
    bed.learn(TRUNK, HOST, Some(30));
    let (o, acts) = bed.run(hp, &frame(HOST, edge_mac, None, 0x0800, b"from me"));
    assert_eq!(
        o,
        Outcome::Forward {
            vlan: 30,
            to: TRUNK
        }
    );
    assert_eq!(
        acts,
        [Owned::Trunk(
            Kind::Frame,
            frame(HOST, edge_mac, Some(30), 0x0800, b"from me")
        )]
    );
}

#[derive(Default)]
struct Recorder {
    ingress: Vec<PortId>,
    outputs: Vec<String>,
}

impl Tap for Recorder {
    fn ingress(&mut self, _: Instant, port: PortId, _: &[u8]) {
        self.ingress.push(port);
    }
    fn output(&mut self, _: Instant, out: &Out<'_>) {
        self.outputs.push(match out {
            Out::Trunk { kind, .. } => format!("trunk {kind:?}"),
            Out::Tunnel { port, kind, .. } => format!("tunnel {} {kind:?}", port.0),
            Out::HostPort { vlan, .. } => format!("host {vlan}"),
            Out::Relayed { vlan, .. } => format!("relayed {vlan}"),
            Out::Drop { reason, .. } => format!("drop {reason:?}"),
        });
    }
}

#[test]
fn the_tap_sees_every_ingress_egress_and_drop() {
    let mut bed = Bed::new();
    let mut tap = Recorder::default();
    let _ = bed.run_tapped(
        TRUNK,
        &frame([0xff; 6], HOST, Some(20), 0x0806, &[0; 28]),
        &mut tap,
    );
    let _ = bed.run_tapped(
        A,
        &frame(HOST, CLIENT, Some(30), 0x0800, &[0; 28]),
        &mut tap,
    );
    assert_eq!(tap.ingress, [TRUNK, A]);
    assert_eq!(
        tap.outputs,
        [
            format!("tunnel {} Frame", A.0),
            format!("tunnel {} Frame", B.0),
            "drop NoTunnel".to_string(),
            "drop Switch(VlanNotAllowed)".to_string(),
        ]
    );
}

#[test]
fn a_dhcp_discover_from_a_tunnel_on_a_relayed_vlan_goes_to_the_relay_only() {
    use crate::proto::dhcp::VlanRelay;
    let mut bed = Bed::new();
    let mut relay = RelayAgent::new(
        [(
            10,
            VlanRelay {
                addr: "192.168.10.2".parse().unwrap(),
                mac: ether::MacAddr([0x02, 0x77, 0, 0, 0, 10]),
                servers: vec!["192.168.10.1".parse().unwrap()],
            },
        )]
        .into(),
    );
    // DHCPDISCOVER: op 1, htype 1, hlen 6, xid, chaddr CLIENT, the magic
    // cookie, option 53 = 1, end.
    let mut dhcp = vec![1, 1, 6, 0, 0xde, 0xad, 0xbe, 0xef];
    dhcp.resize(28, 0);
    dhcp.extend_from_slice(&CLIENT);
    dhcp.resize(236, 0);
    dhcp.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 255]);
    let mut udp = vec![0, 68, 0, 67];
    udp.extend_from_slice(&((8 + dhcp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&dhcp);
    let total = (20 + udp.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let ck = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    ip.extend_from_slice(&udp);
    let f = frame([0xff; 6], CLIENT, None, 0x0800, &ip);
    let mut ports = Ports {
        switch: &mut bed.switch,
        tunnels: &mut bed.tunnels,
        relay: Some(&mut relay),
    };
    let o = bed
        .fwd
        .handle(bed.now, A, &f, &mut ports, &mut bed.out, &mut NoTap);
    assert_eq!(o, Outcome::Relayed { vlan: 10 });
    assert_eq!(
        bed.out.iter().map(Owned::from).collect::<Vec<_>>(),
        [Owned::Relayed(A, 10)]
    );
    let sent = relay.poll_transmit().expect("relayed to the server");
    assert_eq!(sent.dst, "192.168.10.1:67".parse().unwrap());
    // The same from the trunk is no client of ours: flooded.
    bed.out.clear();
    let mut ports = Ports {
        switch: &mut bed.switch,
        tunnels: &mut bed.tunnels,
        relay: Some(&mut relay),
    };
    let o = bed.fwd.handle(
        bed.now,
        TRUNK,
        &frame([0xff; 6], HOST, Some(10), 0x0800, &ip),
        &mut ports,
        &mut bed.out,
        &mut NoTap,
    );
    assert_eq!(o, Outcome::Flood { vlan: 10 });
}

#[test]
fn edge_tunnels_put_an_mgre_peers_key_on_what_it_gets() {
    use crate::proto::gre::{GreConfig, GreEvent, GreIncoming};
    use crate::proto::l2tp::EndpointConfig;
    let now = crate::test_t0();
    let mut l2tp = Endpoint::new(EndpointConfig::default(), 1);
    let mut gre = GreEndpoint::new(GreConfig::default());
    let mut switch = Switch::new(crate::proto::bridge::DEFAULT_AGING);
    switch.add_port(
        TRUNK,
        PortConfig {
            vlans: VlanSet::from_ids([20]).unwrap(),
            untagged_vlan: Some(1),
        },
    );
    // GRE with key 7 (K set, protocol 0x6558), carrying CLIENT's broadcast.
    let mut pkt = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7];
    pkt.extend(frame([0xff; 6], CLIENT, None, 0x88b5, b"hi"));
    let ap: IpAddr = "198.51.100.9".parse().unwrap();
    let GreIncoming::Data { port, .. } =
        gre.handle_packet(now, ap, "192.0.2.1".parse().unwrap(), &pkt)
    else {
        panic!("a data packet")
    };
    let Some(GreEvent::PeerUp { .. }) = gre.poll_event() else {
        panic!("a new peer")
    };
    switch.add_port(
        port,
        PortConfig {
            vlans: VlanSet::from_ids([20]).unwrap(),
            untagged_vlan: Some(10),
        },
    );
    let mtus = TunnelMtus {
        link: 1500,
        profiles: vec![],
    };
    let mut fwd = Forwarder::new(ForwardConfig::default());
    let mut out = Actions::default();
    let mut ports = Ports {
        switch: &mut switch,
        tunnels: EdgeTunnels {
            l2tp: &mut l2tp,
            gre: &mut gre,
            mtus: &mtus,
        },
        relay: None,
    };
    assert_eq!(ports.tunnels.overhead(port), Some((20 + 8, 1500)));
    assert_eq!(ports.tunnels.ap(port), Some(("", ap)));
    let _ = fwd.handle(
        now,
        port,
        &frame([0xff; 6], CLIENT, Some(20), 0x88b5, b"hi"),
        &mut ports,
        &mut out,
        &mut NoTap,
    );
    out.clear();
    let down = frame(CLIENT, HOST, Some(20), 0x88b5, b"down");
    let o = fwd.handle(now, TRUNK, &down, &mut ports, &mut out, &mut NoTap);
    assert_eq!(o, Outcome::Forward { vlan: 20, to: port });
    let mut want = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7];
    want.extend(&down);
    assert_eq!(
        out.iter().map(Owned::from).collect::<Vec<_>>(),
        [Owned::Tunnel(
            port,
            Carrier::Gre,
            SocketAddr::new(ap, 0),
            Kind::Frame,
            want
        )]
    );
}

#[test]
fn every_cut_of_every_frame_from_every_port_is_handled_without_a_panic() {
    let mut bed = Bed::new();
    bed.learn(A, CLIENT, None);
    bed.learn(C, CLIENT_C, None);
    bed.learn(TRUNK, HOST, Some(10));
    let frames = [
        syn_mss_1460(),
        frame(CLIENT, HOST, Some(10), 0x0800, &ipv4_udp(1500, true)),
        frame(CLIENT_C, HOST, Some(10), 0x0800, &ipv4_udp(3000, false)),
        frame(HOST, CLIENT, None, 0x86dd, &[0x60; 1500]),
        frame([0xff; 6], CLIENT, None, 0x0800, &ipv4_udp(400, false)),
    ];
    for f in &frames {
        for n in 0..=f.len() {
            for port in [TRUNK, A, B, C, GONE, host_port(30), PortId(77)] {
                let _ = bed.run(port, &f[..n]);
            }
        }
    }
    assert!(bed.fwd.counters().too_big_icmp > 0);
}

/// The capture tap sees the ingress frame, each copy as it leaves (the
/// tunnel's without its encapsulation header) and the drops with the
/// frame that was dropped and the reason's counter.
#[test]
fn the_capture_tap_sees_every_copy_and_the_drops() {
    use crate::proto::capture::{CaptureSet, Direction, Limits, Point};
    let mut bed = Bed::new();
    let mut set = CaptureSet::default();
    let pts = [
        Point::Trunk,
        Point::Session(A.0),
        Point::Drop,
        Point::Vlan(10),
    ];
    set.start(
        1,
        pts.iter().cloned().map(|p| (p, None)).collect(),
        Limits {
            num_packets: 0,
            snaplen: 2048,
        },
    )
    .unwrap();
    // From the trunk on VLAN 10 (tagged): flooded to A (untagged there).
    let f = frame([0xff; 6], HOST, Some(10), 0x0806, &[0; 46]);
    let (_, outs) = bed.run_tapped(TRUNK, &f, &mut set);
    let mut got: Vec<_> = std::iter::from_fn(|| set.pop(1))
        .map(|r| (pts[r.point].to_string(), r.direction, r.data))
        .collect();
    assert_eq!(
        got.remove(0),
        ("trunk".into(), Direction::Inbound, f.clone())
    );
    assert_eq!(got.remove(0).0, "vlan:10");
    let untagged = frame([0xff; 6], HOST, None, 0x0806, &[0; 46]);
    let to_a = outs
        .iter()
        .find_map(|o| match o {
            Owned::Tunnel(p, _, _, _, pkt) if *p == A => Some(pkt.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        &to_a[4..],
        untagged.as_slice(),
        "the packet carries the header"
    );
    assert_eq!(
        got.remove(0),
        (
            "session:".to_string() + &A.0.to_string(),
            Direction::Outbound,
            untagged
        )
    );
    assert!(got.is_empty(), "{got:?}");
    // On a VLAN the trunk does not carry: dropped, with the frame.
    let bad = frame([0xff; 6], HOST, Some(99), 0x0806, &[0; 46]);
    let _ = bed.run_tapped(TRUNK, &bad, &mut set);
    let recs: Vec<_> = std::iter::from_fn(|| set.pop(1)).collect();
    let drop = recs.iter().find(|r| pts[r.point] == Point::Drop).unwrap();
    assert_eq!(drop.comment, Some("switch.drop_vlan_not_allowed"));
    assert_eq!(drop.data, bad);
    // A delivery's drop (no live tunnel behind GONE) has no ingress frame
    // to show once it is forgotten: nothing stale is recorded.
    set.forget_ingress();
    let mut ports = Ports {
        switch: &mut bed.switch,
        tunnels: &mut bed.tunnels,
        relay: None,
    };
    bed.out.clear();
    let reply = frame(CLIENT, HOST, None, 0x0800, &[0x45; 46]);
    bed.fwd.deliver(
        bed.now,
        host_port(30),
        GONE,
        20,
        &reply,
        &mut ports,
        &mut bed.out,
        &mut set,
    );
    assert!(
        bed.out.iter().any(|o| matches!(
            o,
            Out::Drop {
                reason: Reason::NoTunnel,
                ..
            }
        )),
        "dropped for want of a tunnel"
    );
    assert_eq!(set.pop(1), None, "{:?}", set.counters(1));
}

/// An IPv4 packet from `src` to group `dst` with `proto` and `payload`.
fn ipv4_to_group(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 1, proto, 0, 0];
    p[2..4].copy_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let ck = internet_checksum(&p);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn snooping_as_the_flood_policy_sends_a_group_to_its_members_only() {
    use crate::proto::mcast::{McastConfig, McastPolicy};
    let mut bed = Bed::new();
    let cfg = McastConfig {
        snoop_vlans: VlanSet::from_ids([10]).unwrap(),
        static_router_ports: vec![TRUNK],
        ..McastConfig::default()
    };
    let mut fwd = Forwarder::with_policy(ForwardConfig::default(), McastPolicy::new(cfg, bed.now));
    let mut out = Actions::default();
    let mut ports = Ports {
        switch: &mut bed.switch,
        tunnels: &mut bed.tunnels,
        relay: None,
    };
    let group_mac = [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03];
    // A (untagged VLAN 10) joins 239.1.2.3 with IGMPv2: the report goes up
    // the trunk only, not to C (also on VLAN 10).
    let mut igmp = vec![0x16, 0, 0, 0, 239, 1, 2, 3];
    let ck = internet_checksum(&igmp);
    igmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let report = frame(
        group_mac,
        CLIENT,
        None,
        0x0800,
        &ipv4_to_group([10, 0, 0, 2], [239, 1, 2, 3], 2, &igmp),
    );
    let _ = fwd.handle(bed.now, A, &report, &mut ports, &mut out, &mut NoTap);
    let frames: Vec<Owned> = out.iter().map(Owned::from).collect();
    assert!(
        frames.iter().all(|o| matches!(o, Owned::Trunk(..))),
        "{frames:?}"
    );
    // The stream from upstream reaches A, not C.
    let data = frame(
        group_mac,
        HOST,
        Some(10),
        0x0800,
        &ipv4_to_group(
            [192, 0, 2, 9],
            [239, 1, 2, 3],
            17,
            &[0x13, 0x88, 0x13, 0x89, 0, 8, 0, 0],
        ),
    );
    out.clear();
    let _ = fwd.handle(bed.now, TRUNK, &data, &mut ports, &mut out, &mut NoTap);
    let to: Vec<PortId> = out
        .iter()
        .filter_map(|o| match o {
            Out::Tunnel { port, .. } => Some(port),
            _ => None,
        })
        .collect();
    assert_eq!(to, [A]);
    // A's session goes: its membership with it, and the stream nowhere.
    // (After the warm-up, when unregistered groups are no longer flooded.)
    fwd.remove_port(A);
    out.clear();
    let later = bed.now + fwd.policy().warm_up();
    let _ = fwd.handle(later, TRUNK, &data, &mut ports, &mut out, &mut NoTap);
    assert_eq!(out.len(), 0);
    assert_eq!(fwd.policy().counters().port_removed, 1);
}
