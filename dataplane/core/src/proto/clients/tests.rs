//! The client table, ARP/ND containment and storm control on byte-literal
//! frames, against a set of VLAN members as the switch would pass them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::forward::FloodAll;
use crate::proto::bridge::host_port;
use crate::wire::dhcp::{UdpFrame, emit_udp_frame};
use crate::wire::ether;

const VLAN: u16 = 10;
const A: PortId = PortId(101);
const B: PortId = PortId(102);
const C: PortId = PortId(103);
const HOST: MacAddr = MacAddr([0x02, 0xee, 0, 0, 0, 1]);
const CLIENT: MacAddr = MacAddr([0x02, 0xc1, 0, 0, 0, 1]);
const CLIENT_B: MacAddr = MacAddr([0x02, 0xc1, 0, 0, 0, 2]);

fn members() -> Vec<PortId> {
    vec![TRUNK, A, B, C, host_port(VLAN)]
}

/// An ARP request from the trunk's host 02:ee:00:00:00:01 (192.0.2.1) for
/// 192.0.2.50.
const ARP_FOR_50: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xee, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, // eth
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
    0x02, 0xee, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x01, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x32, // target
];

/// An ARP request from client 02:c1:00:00:00:01 (192.0.2.50) for the
/// gateway 192.0.2.1.
const CLIENT_ARP_FOR_GW: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xc1, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, // eth
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
    0x02, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x32, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x01, // target
];

/// A gratuitous ARP from client 02:c1:00:00:00:02: 192.0.2.51 for itself.
const GARP_51: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xc1, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, // eth
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
    0x02, 0xc1, 0x00, 0x00, 0x00, 0x02, 0xc0, 0x00, 0x02, 0x33, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x33, // target = sender
];

/// A neighbour solicitation from the trunk's host (fe80::1) for
/// 2001:db8::50, to its solicited-node group, with a source link-layer
/// address option.
const NS_FOR_50: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x50, 0x02, 0xee, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xff, 0x00, 0x00, 0x50, 0x87, 0x00, 0x49, 0xd5, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x01, 0x01,
    0x02, 0xee, 0x00, 0x00, 0x00, 0x01,
];

/// A neighbour solicitation from client 02:c1:00:00:00:01 (2001:db8::50)
/// for fe80::1: teaches the client's address.
const CLIENT_NS: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x01, 0x02, 0xc1, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xff, 0x00, 0x00, 0x01, 0x87, 0x00, 0x4a, 0x51, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01,
    0x02, 0xc1, 0x00, 0x00, 0x00, 0x01,
];

/// An unsolicited neighbour advertisement (override set, solicited clear)
/// from client 02:c1:00:00:00:01 for 2001:db8::50, to ff02::1.
const UNSOLICITED_NA: [u8; 86] = [
    0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0xc1, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x00, 0xf7, 0xcb, 0x20, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x01,
    0x02, 0xc1, 0x00, 0x00, 0x00, 0x01,
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy(cfg: ClientConfig) -> Containment<FloodAll> {
    Containment::wrapping(cfg, FloodAll)
}

fn no_storm() -> ClientConfig {
    ClientConfig {
        storm: None,
        ..ClientConfig::default()
    }
}

/// `frame` from `ingress` to be flooded: the ports that get a copy.
fn flood(
    p: &mut Containment<FloodAll>,
    now: Instant,
    ingress: PortId,
    frame: &[u8],
) -> Vec<PortId> {
    let view = ether::parse(frame).unwrap();
    p.seen(now, ingress, VLAN, &view, frame, None);
    let mut to = Vec::new();
    p.flood_ports(now, ingress, VLAN, &view, frame, &members(), &mut to);
    to.sort();
    to
}

fn sorted(mut v: Vec<PortId>) -> Vec<PortId> {
    v.sort();
    v
}

/// Every member but `ingress`: what flooding sends.
fn all_but(ingress: PortId) -> Vec<PortId> {
    sorted(members().into_iter().filter(|&p| p != ingress).collect())
}

/// A DHCPACK from 192.0.2.1 giving `yiaddr` to `chaddr`, as a relay or
/// server sends it to the client (UDP 67 → 68).
fn dhcp_ack(chaddr: MacAddr, yiaddr: Ipv4Addr) -> Vec<u8> {
    let mut bootp = vec![0u8; 240];
    bootp[..4].copy_from_slice(&[2, 1, 6, 0]); // BOOTREPLY, Ethernet
    bootp[16..20].copy_from_slice(&yiaddr.octets());
    bootp[28..34].copy_from_slice(&chaddr.0);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, 5, 255]); // DHCPACK, end
    let mut f = Vec::new();
    emit_udp_frame(
        &UdpFrame {
            src_mac: HOST,
            dst_mac: chaddr,
            src: (Ipv4Addr::new(192, 0, 2, 1), 67),
            dst: (yiaddr, 68),
        },
        &bootp,
        &mut f,
    );
    f
}

#[test]
fn an_arp_request_for_a_client_goes_down_its_tunnel_only() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    // Unknown yet: flooded; the client's own request teaches its address
    // (and, from a client, for an unknown target, is flooded too).
    assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), all_but(TRUNK));
    assert_eq!(flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW), all_but(A));
    assert_eq!(
        p.table().owner(t0, VLAN, ip("192.0.2.50")),
        Some((CLIENT, A))
    );
    assert_eq!(p.table().counters().arp_gleaned, 1);

    assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), vec![A]);
    let c = p.table().counters();
    assert_eq!((c.arp_directed, c.copies_saved), (1, 2));
    // Another VLAN knows nothing of it.
    let view = ether::parse(&ARP_FOR_50).unwrap();
    let mut to = Vec::new();
    p.flood_ports(t0, TRUNK, 20, &view, &ARP_FOR_50, &members(), &mut to);
    assert_eq!(sorted(to), all_but(TRUNK));
}

#[test]
fn a_request_from_behind_the_owners_own_tunnel_gets_no_copy() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    // Another client behind A asks for 192.0.2.50: its AP bridged it.
    let mut f = ARP_FOR_50;
    f[6..12].copy_from_slice(&CLIENT_B.0);
    f[22..28].copy_from_slice(&CLIENT_B.0);
    f[28..32].copy_from_slice(&[192, 0, 2, 51]);
    assert_eq!(flood(&mut p, t0, A, &f), Vec::<PortId>::new());
    assert_eq!(p.table().counters().resolved_local, 1);
}

#[test]
fn gratuitous_arps_and_unsolicited_nas_from_clients_go_to_the_trunk_only() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    let upstream = vec![TRUNK, host_port(VLAN)];
    assert_eq!(flood(&mut p, t0, B, &GARP_51), upstream);
    assert_eq!(
        p.table().owner(t0, VLAN, ip("192.0.2.51")),
        Some((CLIENT_B, B))
    );
    assert_eq!(flood(&mut p, t0, A, &UNSOLICITED_NA), upstream);
    assert_eq!(
        p.table().owner(t0, VLAN, ip("2001:db8::50")),
        Some((CLIENT, A))
    );
    let c = p.table().counters();
    assert_eq!((c.announcements_contained, c.copies_saved), (2, 4));
    // A router's announcement from the trunk reaches everyone.
    let mut f = GARP_51;
    f[6..12].copy_from_slice(&HOST.0);
    f[22..28].copy_from_slice(&HOST.0);
    f[31] = 1;
    f[41] = 1;
    assert_eq!(flood(&mut p, t0, TRUNK, &f), all_but(TRUNK));
}

#[test]
fn a_neighbour_solicitation_for_a_client_goes_down_its_tunnel_only() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    assert_eq!(flood(&mut p, t0, TRUNK, &NS_FOR_50), all_but(TRUNK));
    // The client's own solicitation (for the router) teaches its source.
    assert_eq!(flood(&mut p, t0, C, &CLIENT_NS), all_but(C));
    assert_eq!(p.table().counters().nd_gleaned, 1);
    assert_eq!(flood(&mut p, t0, TRUNK, &NS_FOR_50), vec![C]);
    assert_eq!(p.table().counters().nd_directed, 1);
    // Hop limit not 255: not neighbour discovery, flooded as it is.
    let mut f = NS_FOR_50;
    f[21] = 64;
    assert_eq!(flood(&mut p, t0, TRUNK, &f), all_but(TRUNK));
}

#[test]
fn a_dhcp_ack_teaches_the_leased_address() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    let ack = dhcp_ack(CLIENT, Ipv4Addr::new(192, 0, 2, 50));
    let view = ether::parse(&ack).unwrap();
    // Relayed: delivered from the host port to the client's tunnel, before
    // the client sent anything the table saw.
    p.seen(t0, host_port(VLAN), VLAN, &view, &ack, Some(B));
    assert_eq!(
        p.table().owner(t0, VLAN, ip("192.0.2.50")),
        Some((CLIENT, B))
    );
    assert_eq!(p.table().counters().dhcp_acks, 1);
    assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), vec![B]);
    let r: Vec<_> = p.table().records(t0).collect();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].mac, r[0].port, r[0].vlan), (CLIENT, B.0, VLAN));
    assert_eq!(r[0].ips, vec![ip("192.0.2.50")]);
    assert_eq!((r[0].packets_to, r[0].bytes_to), (1, ack.len() as u64));
    assert_eq!(r[0].packets_from, 0);
    // A DHCPOFFER (type 2) teaches nothing.
    let mut offer = dhcp_ack(CLIENT_B, Ipv4Addr::new(192, 0, 2, 51));
    let n = offer.len();
    offer[n - 2] = 2;
    let view = ether::parse(&offer).unwrap();
    p.seen(t0, TRUNK, VLAN, &view, &offer, Some(A));
    assert_eq!(p.table().owner(t0, VLAN, ip("192.0.2.51")), None);
}

#[test]
fn containment_is_off_on_the_vlans_it_is_turned_off_for() {
    let t0 = crate::test_t0();
    let mut off = VlanSet::new();
    off.insert(VLAN).unwrap();
    let mut p = policy(ClientConfig {
        proxy_off_vlans: off,
        ..no_storm()
    });
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), all_but(TRUNK));
    assert_eq!(flood(&mut p, t0, B, &GARP_51), all_but(B));
    // The table still learns.
    assert_eq!(p.table().len(), 2);
}

#[test]
fn counters_follow_each_client_both_ways() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    // A unicast reply from the gateway to the client, forwarded to A.
    let mut reply = ether::arp_request(
        (HOST, Ipv4Addr::new(192, 0, 2, 1)),
        Ipv4Addr::new(192, 0, 2, 50),
        CLIENT,
        None,
    );
    reply[21] = 2;
    let view = ether::parse(&reply).unwrap();
    p.seen(
        t0 + Duration::from_secs(3),
        TRUNK,
        VLAN,
        &view,
        &reply,
        Some(A),
    );
    let r = p
        .table()
        .records(t0 + Duration::from_secs(5))
        .next()
        .unwrap();
    assert_eq!((r.packets_from, r.bytes_from), (1, 42));
    assert_eq!((r.packets_to, r.bytes_to), (1, 60));
    assert_eq!((r.first_seen_s, r.last_seen_s), (5, 5));
}

#[test]
fn clients_age_out_move_and_go_with_their_port() {
    let t0 = crate::test_t0();
    let mut p = policy(ClientConfig {
        max_age: Duration::from_secs(60),
        ..no_storm()
    });
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    flood(&mut p, t0 + Duration::from_secs(30), B, &GARP_51);
    assert_eq!(p.table().len(), 2);
    // Past its age the first no longer answers for its address, and the
    // sweep forgets it.
    let t = t0 + Duration::from_secs(61);
    assert_eq!(p.table().owner(t, VLAN, ip("192.0.2.50")), None);
    assert!(p.poll_timeout().is_some_and(|w| w <= t));
    p.handle_timeout(t, |_, _, _| false);
    assert_eq!((p.table().len(), p.table().counters().aged), (1, 1));
    // The second moves to C, then C goes: it goes with it.
    flood(&mut p, t, C, &GARP_51);
    assert_eq!(
        p.table().owner(t, VLAN, ip("192.0.2.51")),
        Some((CLIENT_B, C))
    );
    p.remove_port(B);
    assert_eq!(p.table().len(), 1);
    p.remove_port(C);
    let c = p.table().counters();
    assert_eq!(
        (
            p.table().len(),
            p.table().addresses(),
            c.moved,
            c.port_removed
        ),
        (0, 0, 1, 1)
    );
}

#[test]
fn a_full_table_evicts_the_least_recently_seen() {
    let t0 = crate::test_t0();
    let mut p = policy(ClientConfig {
        max_clients: 2,
        ..no_storm()
    });
    let from = |n: u8| {
        let mut f = CLIENT_ARP_FOR_GW;
        f[11] = n;
        f[27] = n;
        f[31] = n;
        f
    };
    for (i, n) in [1u8, 2, 1, 3].into_iter().enumerate() {
        flood(&mut p, t0 + Duration::from_secs(i as u64), A, &from(n));
    }
    // 1 was seen again after 2: 2 went.
    let t = t0 + Duration::from_secs(4);
    let mut macs: Vec<u8> = p.table().records(t).map(|r| r.mac.0[5]).collect();
    macs.sort();
    assert_eq!(macs, vec![1, 3]);
    assert_eq!(p.table().counters().evicted, 1);
    assert_eq!(p.table().owner(t, VLAN, ip("192.0.2.2")), None);
    assert_eq!(p.table().addresses(), 2);
}

#[test]
fn an_address_taken_over_by_another_client_moves() {
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    let mut f = CLIENT_ARP_FOR_GW;
    f[6..12].copy_from_slice(&CLIENT_B.0);
    f[22..28].copy_from_slice(&CLIENT_B.0);
    flood(&mut p, t0, B, &f);
    assert_eq!(
        p.table().owner(t0, VLAN, ip("192.0.2.50")),
        Some((CLIENT_B, B))
    );
    assert_eq!(p.table().counters().addr_moved, 1);
    let a = p.table().records(t0).find(|r| r.mac == CLIENT).unwrap();
    assert!(a.ips.is_empty());
}

#[test]
fn storm_control_limits_each_tunnel_port_and_class() {
    let t0 = crate::test_t0();
    let mut p = policy(ClientConfig {
        proxy: false,
        storm: Some(StormConfig {
            broadcast_pps: 10,
            multicast_pps: 0,
            unknown_unicast_pps: 5,
            flood_copies_pps: 0,
        }),
        ..ClientConfig::default()
    });
    let passed = |p: &mut Containment<FloodAll>, t: Instant, port: PortId, f: &[u8], n: usize| {
        (0..n).filter(|_| !flood(p, t, port, f).is_empty()).count()
    };
    // A burst: a second's worth passes, the rest is dropped.
    assert_eq!(passed(&mut p, t0, A, &CLIENT_ARP_FOR_GW, 25), 10);
    // Another tunnel and the trunk have buckets of their own (the trunk none).
    assert_eq!(passed(&mut p, t0, B, &GARP_51, 12), 10);
    assert_eq!(passed(&mut p, t0, TRUNK, &ARP_FOR_50, 50), 50);
    // Multicast unlimited (0); unknown unicast its own limit.
    assert_eq!(passed(&mut p, t0, A, &UNSOLICITED_NA, 30), 30);
    let mut unknown = CLIENT_ARP_FOR_GW;
    unknown[..6].copy_from_slice(&HOST.0);
    assert_eq!(passed(&mut p, t0, A, &unknown, 8), 5);
    // Half a second refills half the bucket.
    assert_eq!(
        passed(
            &mut p,
            t0 + Duration::from_millis(500),
            A,
            &CLIENT_ARP_FOR_GW,
            10
        ),
        5
    );
    let total = *p.storm().total();
    assert_eq!(
        (total.broadcast, total.multicast, total.unknown_unicast),
        (22, 0, 3)
    );
    let mut per: Vec<_> = p.storm().per_port().collect();
    per.sort_by_key(|(port, _)| *port);
    assert_eq!(per[0].0, A);
    assert_eq!((per[0].1.broadcast, per[0].1.unknown_unicast), (20, 3));
    assert_eq!((per[1].0, per[1].1.broadcast), (B, 2));
    p.remove_port(A);
    assert_eq!(p.storm().per_port().count(), 1);
}

#[test]
fn flood_copies_limit_keeps_floods_from_the_tunnels_and_counts_them() {
    let t0 = crate::test_t0();
    let mut p = policy(ClientConfig {
        proxy: false,
        storm: Some(StormConfig {
            broadcast_pps: 0,
            multicast_pps: 0,
            unknown_unicast_pps: 0,
            flood_copies_pps: 7,
        }),
        ..ClientConfig::default()
    });
    let hp = host_port(VLAN);
    // From the trunk: 3 tunnel copies a flood; 7 a second pass 2 floods.
    assert_eq!(
        flood(&mut p, t0, TRUNK, &ARP_FOR_50),
        sorted(vec![A, B, C, hp])
    );
    assert_eq!(
        flood(&mut p, t0, TRUNK, &ARP_FOR_50),
        sorted(vec![A, B, C, hp])
    );
    // The third goes to no tunnel, the host port still gets it.
    assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), vec![hp]);
    // From a tunnel (2 tunnel copies): nothing left either.
    assert_eq!(
        flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW),
        sorted(vec![TRUNK, hp])
    );
    let d = *p.storm().flood_dropped();
    assert_eq!(
        (d.frames.broadcast, d.from_upstream, d.copies),
        (2, 1, 5),
        "{d:?}"
    );
    // Per-port storm control counted none of it.
    assert_eq!(p.storm().total().total(), 0);
    // A second refills the bucket (one second's worth, no more).
    let t1 = t0 + Duration::from_secs(5);
    let passed = (0..5)
        .filter(|_| flood(&mut p, t1, TRUNK, &ARP_FOR_50).len() == 4)
        .count();
    assert_eq!(passed, 2);
    // 0: no limit.
    let mut p = policy(ClientConfig {
        proxy: false,
        storm: Some(StormConfig {
            flood_copies_pps: 0,
            ..StormConfig::default()
        }),
        ..ClientConfig::default()
    });
    for _ in 0..1000 {
        assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50).len(), 4);
    }
}

#[test]
fn short_and_odd_frames_are_passed_on_without_a_panic() {
    let t0 = crate::test_t0();
    let mut p = policy(ClientConfig::default());
    for f in [
        &ARP_FOR_50[..],
        &NS_FOR_50[..],
        &UNSOLICITED_NA[..],
        &GARP_51[..],
    ] {
        for cut in 14..f.len() {
            for port in [TRUNK, A] {
                flood(&mut p, t0, port, &f[..cut]);
            }
        }
    }
    let ack = dhcp_ack(CLIENT, Ipv4Addr::new(192, 0, 2, 50));
    for cut in 14..ack.len() {
        let view = ether::parse(&ack[..cut]).unwrap();
        p.seen(t0, TRUNK, VLAN, &view, &ack[..cut], Some(A));
    }
    let _ = Ipv6Addr::LOCALHOST;
}

#[test]
fn a_client_the_switch_still_has_is_kept_past_its_age() {
    let t0 = crate::test_t0();
    let mut p = policy(ClientConfig {
        max_age: Duration::from_secs(60),
        ..no_storm()
    });
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    flood(&mut p, t0, B, &GARP_51);
    // Only CLIENT's frames went by the fast path since: the switch has it.
    let fdb = |_: u16, mac: MacAddr, port: PortId| mac == CLIENT && port == A;
    for s in [10, 20, 30, 40, 50, 60, 70] {
        p.handle_timeout(t0 + Duration::from_secs(s), fdb);
    }
    let t = t0 + Duration::from_secs(70);
    assert_eq!(
        p.table().owner(t, VLAN, ip("192.0.2.50")),
        Some((CLIENT, A))
    );
    assert_eq!(p.table().owner(t, VLAN, ip("192.0.2.51")), None);
    assert_eq!((p.table().len(), p.table().counters().aged), (1, 1));
}

#[test]
fn new_settings_apply_at_once_and_keep_the_table() {
    // A reload: containment turned off on the VLAN, then a smaller table.
    let t0 = crate::test_t0();
    let mut p = policy(no_storm());
    flood(&mut p, t0, A, &CLIENT_ARP_FOR_GW);
    flood(&mut p, t0, B, &GARP_51);
    assert_eq!(p.table().len(), 2);
    assert_ne!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), all_but(TRUNK));
    let mut off = VlanSet::new();
    off.insert(VLAN).unwrap();
    p.reconfigure(
        t0,
        ClientConfig {
            proxy_off_vlans: off,
            ..no_storm()
        },
    );
    assert_eq!(p.table().len(), 2, "the table is kept");
    assert_eq!(flood(&mut p, t0, TRUNK, &ARP_FOR_50), all_but(TRUNK));
    p.reconfigure(
        t0,
        ClientConfig {
            max_clients: 1,
            ..no_storm()
        },
    );
    assert_eq!(p.table().len(), 1, "a smaller table evicts at once");
}
