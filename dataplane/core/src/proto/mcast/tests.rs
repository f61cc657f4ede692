use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use etherparse::{NetHeaders, PacketHeaders};
use tunterm_control::VlanSet;

use super::*;
use crate::forward::FloodPolicy;
use crate::proto::bridge::{PortId, TRUNK};
use crate::wire::checksum::{fold, internet_checksum, sum16};
use crate::wire::ether::{self, MacAddr};
use crate::wire::ipv4;

const VLAN: u16 = 10;
const A: PortId = PortId(101);
const B: PortId = PortId(102);
const C: PortId = PortId(103);
const MEMBERS: [PortId; 4] = [TRUNK, A, B, C];
const MAC: MacAddr = MacAddr([0x02, 0, 0x5e, 0, 0x53, 1]);

fn vlans(v: &[u16]) -> VlanSet {
    let mut s = VlanSet::new();
    for &v in v {
        s.insert(v).unwrap();
    }
    s
}

fn cfg(querier: bool) -> McastConfig {
    McastConfig {
        snoop_vlans: vlans(&[VLAN]),
        querier: querier.then(|| QuerierConfig {
            query_interval: Duration::from_secs(20),
            max_resp: 50,
            robustness: 2,
            version: Version::V3,
        }),
        static_router_ports: vec![TRUNK],
        mac: MAC,
        addr4: [(VLAN, Ipv4Addr::new(192, 0, 2, 10))].into(),
        ..McastConfig::default()
    }
}

fn v4(src: [u8; 4], dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mac = super::group_mac(&IpAddr::V4(dst));
    let mut f = vec![];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[2, 0, 0, 0, 0, src[3]]);
    f.extend_from_slice(&[0x08, 0x00]);
    ipv4::Repr {
        src_addr: src.into(),
        dst_addr: dst,
        protocol: ipv4::Protocol::from(proto),
        payload_len: payload.len(),
        ttl: 1,
        ident: 0,
        dont_frag: false,
        dscp_ecn: 0,
    }
    .append_to(&mut f);
    f.extend_from_slice(payload);
    f
}

fn igmp_msg(mut b: Vec<u8>) -> Vec<u8> {
    let s = internet_checksum(&b);
    b[2..4].copy_from_slice(&s.to_be_bytes());
    b
}

fn v2_report(src: [u8; 4], g: Ipv4Addr) -> Vec<u8> {
    let o = g.octets();
    v4(
        src,
        g,
        2,
        &igmp_msg(vec![0x16, 0, 0, 0, o[0], o[1], o[2], o[3]]),
    )
}

fn v2_leave(src: [u8; 4], g: Ipv4Addr) -> Vec<u8> {
    let o = g.octets();
    let m = igmp_msg(vec![0x17, 0, 0, 0, o[0], o[1], o[2], o[3]]);
    v4(src, igmp::ALL_ROUTERS, 2, &m)
}

fn v3_report(src: [u8; 4], record: u8, g: Ipv4Addr) -> Vec<u8> {
    let o = g.octets();
    let m = igmp_msg(vec![
        0x22, 0, 0, 0, 0, 0, 0, 1, record, 0, 0, 0, o[0], o[1], o[2], o[3],
    ]);
    v4(src, igmp::V3_ROUTERS, 2, &m)
}

fn udp_to(src: [u8; 4], g: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut udp = vec![0x30, 0x39];
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&[0, 12, 0, 0, b'd', b'a', b't', b'a']);
    v4(src, g, 17, &udp)
}

/// An MLD message in its IPv6 packet (Hop-by-Hop Router Alert first).
fn v6_mld(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    let len = msg.len() as u32;
    let acc = sum16(&dst.octets(), sum16(&src.octets(), 0)) + (len & 0xffff) + 58;
    let s = fold(sum16(&msg, acc));
    msg[2..4].copy_from_slice(&s.to_be_bytes());
    let mut f = vec![];
    f.extend_from_slice(&super::group_mac(&IpAddr::V6(dst)));
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&((msg.len() + 8) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
    f.extend_from_slice(&msg);
    f
}

fn v6_udp(src: Ipv6Addr, dst: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut f = vec![];
    f.extend_from_slice(&super::group_mac(&IpAddr::V6(dst)));
    f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 12, 17, 1]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[0x30, 0x39]);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&[0, 12, 0, 0, b'd', b'a', b't', b'a']);
    f
}

fn flood(p: &mut McastPolicy, now: Instant, ingress: PortId, frame: &[u8]) -> Vec<PortId> {
    flood_on(p, now, ingress, VLAN, frame)
}

fn flood_on(
    p: &mut McastPolicy,
    now: Instant,
    ingress: PortId,
    vlan: u16,
    frame: &[u8],
) -> Vec<PortId> {
    let view = ether::parse(frame).unwrap();
    let mut to = vec![];
    p.flood_ports(now, ingress, vlan, &view, frame, &MEMBERS, &mut to);
    to.sort();
    to
}

fn g(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn queries(p: &mut McastPolicy) -> Vec<QueryOut> {
    std::iter::from_fn(|| p.poll_query()).collect()
}

#[test]
fn data_reaches_members_and_router_ports_only() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(false), t0);
    let grp = g("239.1.2.3");
    // A v2 report goes to the router port (the trunk), not to other APs.
    assert_eq!(
        flood(&mut p, t0, A, &v2_report([10, 0, 0, 1], grp)),
        [TRUNK]
    );
    assert_eq!(p.members(VLAN, grp.into()), [A]);
    // The stream from upstream: A only (B and C pruned).
    let data = udp_to([198, 51, 100, 1], grp, 5001);
    assert_eq!(flood(&mut p, t0, TRUNK, &data), [A]);
    assert_eq!(p.counters().forwarded, 1);
    assert_eq!(p.counters().pruned_copies, 4, "report: 2, data: 2");
    // A v3 join from B adds it.
    flood(&mut p, t0, B, &v3_report([10, 0, 0, 2], 4, grp));
    assert_eq!(flood(&mut p, t0, TRUNK, &data), [A, B]);
    // From a member AP: the other member and the router port.
    assert_eq!(flood(&mut p, t0, A, &data), [TRUNK, B]);
}

#[test]
fn unregistered_groups_go_to_router_ports_or_flood_where_asked() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(false), t0);
    let data = udp_to([10, 0, 0, 1], g("239.9.9.9"), 5001);
    // While the table fills after a start (no querier: a membership
    // interval), they flood.
    assert_eq!(p.warm_up(), Duration::from_secs(260));
    assert_eq!(flood(&mut p, t0, A, &data), [TRUNK, B, C]);
    let t1 = t0 + p.warm_up();
    assert_eq!(flood(&mut p, t1, A, &data), [TRUNK]);
    assert_eq!(flood(&mut p, t1, TRUNK, &data), [] as [PortId; 0]);
    assert_eq!(p.counters().unregistered, 2);
    let mut c = cfg(false);
    c.flood_unregistered = vlans(&[VLAN]);
    p.reconfigure(c, t1);
    assert_eq!(flood(&mut p, t1, A, &data), [TRUNK, B, C]);
    assert_eq!(p.counters().unregistered_flooded, 2);
    // With a querier: its max response time and a second.
    assert_eq!(
        McastPolicy::new(cfg(true), t0).warm_up(),
        Duration::from_secs(6)
    );
}

#[test]
fn link_local_broadcast_and_unsnooped_vlans_flood() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(false), t0);
    let ospf = v4([10, 0, 0, 1], g("224.0.0.5"), 89, &[0; 8]);
    assert_eq!(flood(&mut p, t0, A, &ospf), [TRUNK, B, C]);
    let data = udp_to([10, 0, 0, 1], g("239.9.9.9"), 5001);
    assert_eq!(flood_on(&mut p, t0, A, 20, &data), [TRUNK, B, C]);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(flood(&mut p, t0, A, &arp), [TRUNK, B, C]);
    // An all-nodes IPv6 frame (router advertisement) floods too.
    let ra = v6_udp("fe80::1".parse().unwrap(), mld::ALL_NODES, 9);
    assert_eq!(flood(&mut p, t0, TRUNK, &ra), [A, B, C]);
}

#[test]
fn leave_as_querier_sends_group_queries_then_prunes() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(true), t0);
    let grp = g("239.1.2.3");
    flood(&mut p, t0, A, &v2_report([10, 0, 0, 1], grp));
    flood(&mut p, t0, B, &v2_report([10, 0, 0, 2], grp));
    let t1 = t0 + Duration::from_secs(1);
    // The leave goes up only.
    assert_eq!(flood(&mut p, t1, A, &v2_leave([10, 0, 0, 1], grp)), [TRUNK]);
    assert_eq!(p.counters().leaves, 1);
    p.handle_timeout(t1);
    let q: Vec<_> = queries(&mut p)
        .into_iter()
        .filter(|q| q.to.is_some())
        .collect();
    assert_eq!(q.len(), 1, "one group-specific query now");
    assert_eq!((q[0].vlan, q[0].to), (VLAN, Some(A)));
    let h = PacketHeaders::from_ethernet_slice(&q[0].frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!()
    };
    assert_eq!(ip.destination, grp.octets());
    assert_eq!(ip.source, [192, 0, 2, 10]);
    match igmp::Repr::parse(&q[0].frame[14 + 24..]).unwrap() {
        igmp::Repr::Query { group, .. } => assert_eq!(group, grp),
        r => panic!("{r:?}"),
    }
    // The second one a second later; then A is gone (2 s), B stays.
    let t2 = t1 + Duration::from_secs(1);
    p.handle_timeout(t2);
    assert_eq!(
        queries(&mut p).iter().filter(|q| q.to == Some(A)).count(),
        1
    );
    let t3 = t1 + Duration::from_millis(2100);
    p.handle_timeout(t3);
    let data = udp_to([198, 51, 100, 1], grp, 5001);
    assert_eq!(flood(&mut p, t3, TRUNK, &data), [B]);
    assert_eq!(p.counters().expired, 1);
    assert_eq!(p.counters().group_queries_out, 2);
}

#[test]
fn leave_answered_keeps_the_member() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(true), t0);
    let grp = g("239.1.2.3");
    flood(&mut p, t0, A, &v3_report([10, 0, 0, 1], 4, grp));
    // IGMPv3 leave: TO_IN with no source.
    flood(&mut p, t0, A, &v3_report([10, 0, 0, 1], 3, grp));
    p.handle_timeout(t0);
    let t1 = t0 + Duration::from_millis(500);
    flood(&mut p, t1, A, &v3_report([10, 0, 0, 1], 2, grp));
    let t2 = t0 + Duration::from_secs(5);
    p.handle_timeout(t2);
    assert_eq!(p.members(VLAN, grp.into()), [A]);
    assert_eq!(
        p.counters().group_queries_out,
        1,
        "no more queries once answered"
    );
}

#[test]
fn memberships_time_out_and_go_with_their_port() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(true), t0);
    let (g1, g2) = (g("239.1.1.1"), g("239.2.2.2"));
    flood(&mut p, t0, A, &v2_report([10, 0, 0, 1], g1));
    flood(&mut p, t0, B, &v2_report([10, 0, 0, 2], g2));
    // GMI = 2 × 20 s + 5 s.
    let gmi = Duration::from_secs(45);
    let t1 = t0 + Duration::from_secs(30);
    flood(&mut p, t1, B, &v2_report([10, 0, 0, 2], g2));
    p.handle_timeout(t0 + gmi - Duration::from_millis(1));
    assert_eq!(p.len(), 2);
    p.handle_timeout(t0 + gmi + Duration::from_secs(1));
    assert_eq!(p.members(VLAN, g1.into()), [] as [PortId; 0]);
    assert_eq!(p.members(VLAN, g2.into()), [B]);
    p.remove_port(B);
    assert!(p.is_empty());
    assert_eq!(p.counters().port_removed, 1);
    assert!(p.poll_timeout().is_some(), "the querier still runs");
}

#[test]
fn querier_startup_interval_and_election() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(true), t0);
    assert_eq!(p.poll_timeout(), Some(t0));
    p.handle_timeout(t0);
    let q = queries(&mut p);
    assert_eq!(q.len(), 2, "IGMP and MLD");
    assert!(q.iter().all(|q| q.vlan == VLAN && q.to.is_none()));
    // IGMPv3 general query: Router Alert, TTL 1, valid checksums.
    let h = PacketHeaders::from_ethernet_slice(&q[0].frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!()
    };
    assert_eq!(ip.time_to_live, 1);
    assert_eq!(ip.options.as_slice(), &[0x94, 4, 0, 0]);
    assert_eq!(ip.destination, [224, 0, 0, 1]);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(&q[0].frame[..6], &[1, 0, 0x5e, 0, 0, 1]);
    match igmp::Repr::parse(&q[0].frame[14 + 24..]).unwrap() {
        igmp::Repr::Query {
            version,
            max_resp,
            qrv,
            qqi,
            group,
        } => assert_eq!(
            (version, max_resp, qrv, qqi, group),
            (Version::V3, 50, 2, 20, Ipv4Addr::UNSPECIFIED)
        ),
        r => panic!("{r:?}"),
    }
    // MLDv2 general query from the EUI-64 link-local, to ff02::1.
    let h = PacketHeaders::from_ethernet_slice(&q[1].frame).unwrap();
    let Some(NetHeaders::Ipv6(ip6, _)) = &h.net else {
        panic!()
    };
    assert_eq!(
        Ipv6Addr::from(ip6.source),
        "fe80::5eff:fe00:5301".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(ip6.hop_limit, 1);
    let src = Ipv6Addr::from(ip6.source);
    let icmp = &q[1].frame[14 + 48..];
    assert!(matches!(
        mld::Repr::parse(&src, &mld::ALL_NODES, icmp),
        Ok(mld::Repr::Query {
            version: Version::V3,
            max_resp_ms: 5000,
            ..
        })
    ));
    // Startup: robustness (2) queries a quarter interval apart, then the
    // interval.
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    p.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(queries(&mut p).len(), 2);
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    // A lower-addressed querier upstream silences the IPv4 one.
    let t1 = t0 + Duration::from_secs(6);
    let other = igmp_msg(vec![0x11, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0]);
    let heard = v4([192, 0, 2, 1], igmp::ALL_SYSTEMS, 2, &other);
    assert_eq!(flood(&mut p, t1, TRUNK, &heard), [A, B, C]);
    let snap = p.snapshot(t1);
    let q4 = snap.queriers.iter().find(|q| q.address.is_ipv4()).unwrap();
    assert!(!q4.active);
    assert_eq!(q4.other, Some("192.0.2.1".parse().unwrap()));
    let t2 = t0 + Duration::from_secs(25);
    p.handle_timeout(t2);
    let q = queries(&mut p);
    assert_eq!(q.len(), 1, "only MLD");
    assert_eq!(&q[0].frame[12..14], &[0x86, 0xdd]);
    // A higher-addressed one does not.
    let mut p2 = McastPolicy::new(cfg(true), t0);
    let high = v4([192, 0, 2, 200], igmp::ALL_SYSTEMS, 2, &other);
    flood(&mut p2, t0, TRUNK, &high);
    p2.handle_timeout(t0);
    assert_eq!(queries(&mut p2).len(), 2);
    // Other querier present interval: 2 × 20 + 2.5 s, then back.
    let t3 = t1 + Duration::from_millis(42_600);
    while p.poll_timeout().is_some_and(|t| t <= t3) {
        let t = p.poll_timeout().unwrap();
        p.handle_timeout(t);
    }
    p.handle_timeout(t3);
    assert!(
        queries(&mut p)
            .iter()
            .any(|q| q.frame[12..14] == [0x08, 0x00])
    );
    assert!(p.snapshot(t3).queriers.iter().all(|q| q.active));
}

#[test]
fn a_snooping_querier_with_no_address_yields_to_any() {
    let t0 = Instant::now();
    let mut c = cfg(true);
    c.addr4.clear();
    let mut p = McastPolicy::new(c, t0);
    let other = igmp_msg(vec![0x11, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0]);
    flood(
        &mut p,
        t0,
        TRUNK,
        &v4([203, 0, 113, 9], igmp::ALL_SYSTEMS, 2, &other),
    );
    p.handle_timeout(t0);
    let q = queries(&mut p);
    assert_eq!(q.len(), 1);
    assert_eq!(&q[0].frame[12..14], &[0x86, 0xdd]);
}

#[test]
fn mld_join_done_and_data() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(true), t0);
    let src: Ipv6Addr = "fe80::a".parse().unwrap();
    let grp: Ipv6Addr = "ff05::1:3".parse().unwrap();
    let mut rec = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
    rec.extend_from_slice(&grp.octets());
    let report = v6_mld(src, "ff02::16".parse().unwrap(), rec);
    assert_eq!(flood(&mut p, t0, C, &report), [TRUNK]);
    let data = v6_udp("2001:db8::1".parse().unwrap(), grp, 5001);
    assert_eq!(flood(&mut p, t0, TRUNK, &data), [C]);
    // MLDv1 done.
    let mut done = vec![132, 0, 0, 0, 0, 0, 0, 0];
    done.extend_from_slice(&grp.octets());
    flood(
        &mut p,
        t0,
        C,
        &v6_mld(src, "ff02::2".parse().unwrap(), done),
    );
    p.handle_timeout(t0);
    let gsq: Vec<_> = queries(&mut p)
        .into_iter()
        .filter(|q| q.to == Some(C))
        .collect();
    assert_eq!(gsq.len(), 1);
    assert_eq!(&gsq[0].frame[..6], &[0x33, 0x33, 0, 1, 0, 3]);
    let t1 = t0 + p.warm_up();
    p.handle_timeout(t0 + Duration::from_secs(1));
    p.handle_timeout(t1);
    assert_eq!(flood(&mut p, t1, TRUNK, &data), [] as [PortId; 0]);
    // Neighbour discovery to a solicited-node group is snooped as data,
    // not parsed as MLD (and not dropped).
    let ns = v6_mld(
        src,
        "ff02::1:ff00:1".parse().unwrap(),
        vec![135, 0, 0, 0, 0, 0, 0, 0],
    );
    assert_eq!(flood(&mut p, t1, A, &ns), [TRUNK]);
    assert_eq!(p.counters().malformed, 0);
}

#[test]
fn router_ports_from_queries_pim_and_mrd() {
    let t0 = Instant::now();
    let mut c = cfg(false);
    c.static_router_ports.clear();
    let mut p = McastPolicy::new(c, t0);
    let t0 = t0 + p.warm_up();
    let data = udp_to([10, 0, 0, 1], g("239.9.9.9"), 5001);
    assert_eq!(flood(&mut p, t0, A, &data), [] as [PortId; 0]);
    // A PIM hello from B's side makes it a router port.
    flood(
        &mut p,
        t0,
        B,
        &v4([10, 0, 0, 2], g("224.0.0.13"), 103, &[0x20, 0, 0, 0]),
    );
    assert_eq!(flood(&mut p, t0, A, &data), [B]);
    // An MRD advertisement from C.
    let mrd = igmp_msg(vec![0x30, 20, 0, 0, 0, 125, 0, 2]);
    flood(&mut p, t0, C, &v4([10, 0, 0, 3], g("224.0.0.106"), 2, &mrd));
    assert_eq!(flood(&mut p, t0, A, &data), [B, C]);
    assert_eq!(p.snapshot(t0).routers.len(), 2);
    // They expire after the other querier present interval (255 s).
    let t1 = t0 + Duration::from_secs(256);
    p.handle_timeout(t1);
    assert_eq!(flood(&mut p, t1, A, &data), [] as [PortId; 0]);
}

#[test]
fn mdns_and_ssdp_follow_their_vlans() {
    let t0 = Instant::now();
    let mut c = cfg(false);
    c.mdns = Some(vlans(&[VLAN]));
    c.ssdp = Some(vlans(&[30]));
    let mut p = McastPolicy::new(c, t0);
    let mdns = udp_to([10, 0, 0, 1], g("224.0.0.251"), 5353);
    assert_eq!(flood(&mut p, t0, A, &mdns), [TRUNK, B, C]);
    assert_eq!(flood_on(&mut p, t0, A, 20, &mdns), [] as [PortId; 0]);
    let mdns6 = v6_udp(
        "fe80::1".parse().unwrap(),
        "ff02::fb".parse().unwrap(),
        5353,
    );
    assert_eq!(flood_on(&mut p, t0, A, 20, &mdns6), [] as [PortId; 0]);
    assert_eq!(p.counters().mdns_dropped, 2);
    assert_eq!(p.counters().mdns_forwarded, 1);
    // SSDP: enabled on 30 only, so dropped on the snooped VLAN 10 too.
    let ssdp = udp_to([10, 0, 0, 1], g("239.255.255.250"), 1900);
    assert_eq!(flood(&mut p, t0, A, &ssdp), [] as [PortId; 0]);
    assert_eq!(flood_on(&mut p, t0, A, 30, &ssdp), [TRUNK, B, C]);
    assert_eq!(p.counters().ssdp_dropped, 1);
    // Another port to the same group is plain data.
    let other = udp_to([10, 0, 0, 1], g("239.255.255.250"), 1901);
    let warm = t0 + p.warm_up();
    assert_eq!(flood(&mut p, warm, A, &other), [TRUNK]);
    // Without the object: normal rules (mDNS is link-local: flooded).
    p.reconfigure(cfg(false), t0);
    assert_eq!(flood_on(&mut p, t0, A, 20, &mdns), [TRUNK, B, C]);
}

#[test]
fn the_table_is_bounded_and_bad_messages_dropped() {
    let t0 = Instant::now();
    let mut c = cfg(false);
    c.max_groups_per_vlan = 2;
    let mut p = McastPolicy::new(c, t0);
    for i in 1..=3 {
        flood(
            &mut p,
            t0,
            A,
            &v2_report([10, 0, 0, 1], Ipv4Addr::new(239, 0, 0, i)),
        );
    }
    assert_eq!(p.len(), 2);
    assert_eq!(p.counters().table_full, 1);
    // Joins of link-local groups are not kept.
    flood(&mut p, t0, A, &v2_report([10, 0, 0, 1], g("224.0.0.251")));
    assert_eq!(p.len(), 2);
    let mut bad = v2_report([10, 0, 0, 1], g("239.5.5.5"));
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert_eq!(flood(&mut p, t0, A, &bad), [] as [PortId; 0]);
    assert_eq!(p.counters().malformed, 1);
    // The refused group's member still gets it: unregistered groups of
    // the VLAN flood for a membership interval (after the warm-up here).
    let t1 = t0 + p.warm_up() - Duration::from_secs(1);
    let refused = udp_to([198, 51, 100, 1], Ipv4Addr::new(239, 0, 0, 3), 5001);
    assert_eq!(flood(&mut p, t1, TRUNK, &refused), [A, B, C]);
    flood(
        &mut p,
        t1,
        A,
        &v2_report([10, 0, 0, 1], Ipv4Addr::new(239, 0, 0, 3)),
    );
    let t2 = t1 + Duration::from_secs(259);
    assert_eq!(flood(&mut p, t2, TRUNK, &refused), [A, B, C]);
    let t3 = t1 + Duration::from_secs(261);
    p.handle_timeout(t3);
    assert_eq!(flood(&mut p, t3, TRUNK, &refused), [] as [PortId; 0]);
    // Truncated IPv4 / garbage: never a panic.
    for cut in 0..bad.len() {
        let f = &bad[..cut.max(14)];
        let view = ether::parse(f).unwrap();
        let mut to = vec![];
        p.flood_ports(t0, A, VLAN, &view, f, &MEMBERS, &mut to);
    }
}

#[test]
fn queries_from_the_host_port_do_not_make_it_a_router_port() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(false), t0);
    let other = igmp_msg(vec![0x11, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0]);
    let hp = crate::proto::bridge::host_port(VLAN);
    let view_frame = v4([192, 0, 2, 5], igmp::ALL_SYSTEMS, 2, &other);
    let view = ether::parse(&view_frame).unwrap();
    let mut to = vec![];
    p.flood_ports(t0, hp, VLAN, &view, &view_frame, &[TRUNK, A, hp], &mut to);
    assert_eq!(to, [TRUNK, A]);
    assert!(p.snapshot(t0).routers.is_empty());
}

/// The IGMP version and max response code of a general IPv4 query, or the
/// MLD version of an IPv6 one.
fn query_versions(q: &[QueryOut]) -> (Option<(Version, u8)>, Option<Version>) {
    let mut v4 = None;
    let mut v6 = None;
    for q in q.iter().filter(|q| q.to.is_none()) {
        if q.frame[12..14] == [0x08, 0x00] {
            if let igmp::Repr::Query { version, .. } =
                igmp::Repr::parse(&q.frame[14 + 24..]).unwrap()
            {
                v4 = Some((version, q.frame[14 + 24 + 1]));
            }
        } else {
            let h = PacketHeaders::from_ethernet_slice(&q.frame).unwrap();
            let Some(NetHeaders::Ipv6(ip6, _)) = &h.net else {
                panic!()
            };
            let src = Ipv6Addr::from(ip6.source);
            if let Ok(mld::Repr::Query { version, .. }) =
                mld::Repr::parse(&src, &mld::ALL_NODES, &q.frame[14 + 48..])
            {
                v6 = Some(version);
            }
        }
    }
    (v4, v6)
}

#[test]
fn older_hosts_get_the_configured_queries_and_v1_members_keep_their_group() {
    let t0 = Instant::now();
    let mut p = McastPolicy::new(cfg(true), t0);
    let grp = g("239.1.2.3");
    p.handle_timeout(t0);
    let (q4, q6) = query_versions(&queries(&mut p));
    assert_eq!(q4.map(|(v, _)| v), Some(Version::V3));
    assert_eq!(q6, Some(Version::V3));
    // An IGMPv2 host (A), an IGMPv1 host (B) and an MLDv1 host (C): the
    // querier stays at its configured IGMPv3/MLDv2 (older hosts answer
    // those; only an older querier would make it step down, RFC 3376
    // §7.3.1), so the IGMPv3 hosts keep source filtering.
    let t1 = t0 + Duration::from_secs(1);
    flood(&mut p, t1, A, &v2_report([10, 0, 0, 1], grp));
    let v1 = igmp_msg(vec![0x12, 0, 0, 0, 239, 1, 2, 3]);
    flood(&mut p, t1, B, &v4([10, 0, 0, 2], grp, 2, &v1));
    let g6: Ipv6Addr = "ff05::1:3".parse().unwrap();
    let mut report = vec![131, 0, 0, 0, 0, 0, 0, 0];
    report.extend_from_slice(&g6.octets());
    flood(
        &mut p,
        t1,
        C,
        &v6_mld("fe80::9".parse().unwrap(), g6, report),
    );
    assert_eq!(p.members(VLAN, grp.into()), [A, B]);
    p.handle_timeout(t0 + Duration::from_secs(5));
    let (q4, q6) = query_versions(&queries(&mut p));
    assert_eq!(q4.map(|(v, _)| v), Some(Version::V3));
    assert_eq!(q6, Some(Version::V3));
    // A leave for the group from B's port, where an IGMPv1 host is a
    // member, is ignored (counted): no group-specific query, B stays.
    let t2 = t0 + Duration::from_secs(6);
    flood(&mut p, t2, B, &v2_leave([10, 0, 0, 2], grp));
    p.handle_timeout(t2 + Duration::from_secs(3));
    assert_eq!(p.counters().leaves_ignored, 1);
    assert_eq!(p.counters().group_queries_out, 0);
    assert!(queries(&mut p).iter().all(|q| q.to.is_none()));
    assert_eq!(p.members(VLAN, grp.into()), [A, B]);
    // The IGMPv2 host's leave is checked with group-specific queries to
    // its port and, unanswered, prunes A at the last member query time.
    let t3 = t0 + Duration::from_secs(10);
    flood(&mut p, t3, A, &v2_leave([10, 0, 0, 1], grp));
    p.handle_timeout(t3);
    let gsq = queries(&mut p);
    assert!(gsq.iter().any(|q| q.to == Some(A)), "{gsq:?}");
    for s in 1..=3 {
        p.handle_timeout(t3 + Duration::from_secs(s));
        let _ = queries(&mut p);
    }
    assert_eq!(p.members(VLAN, grp.into()), [B]);
    assert_eq!(p.counters().leaves_ignored, 1);
    // A group membership interval (45 s) after B's IGMPv1 report, a fresh
    // IGMPv3 report from B's port refreshes the membership; its leave is
    // then honoured.
    let t4 = t1 + Duration::from_secs(46);
    flood(&mut p, t4, B, &v2_report([10, 0, 0, 2], grp));
    flood(&mut p, t4, B, &v2_leave([10, 0, 0, 2], grp));
    for s in 0..=3 {
        p.handle_timeout(t4 + Duration::from_secs(s));
        let _ = queries(&mut p);
    }
    assert!(p.members(VLAN, grp.into()).is_empty());
    assert_eq!(p.counters().leaves_ignored, 1);
}
