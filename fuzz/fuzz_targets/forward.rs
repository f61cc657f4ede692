//! The forwarding pipeline (forward/) with the daemon's flood policy chain
//! (Containment: storm control, client table, ARP/ND containment; then
//! McastPolicy: IGMP/MLD snooping with a querier, mDNS/SSDP), on a switch
//! with the trunk, three tunnels (L2TP/UDP, GRE, L2TP/IP with an MTU below
//! the link's) and a host port. Frames are built from structured input
//! (addresses from a small set so MACs and groups repeat; ARP, IGMP,
//! IPv4/UDP, large IPv4 and IPv6 payloads) or taken raw.
//!
//! Properties checked for every frame:
//! - no copy of a switched frame goes back out of its ingress port;
//! - every emitted Ethernet frame reads with etherparse; what goes to the
//!   trunk is tagged unless it is on the trunk's untagged VLAN, what goes
//!   to a host port is untagged; a tunnel packet is its header plus a frame
//!   (a QinQ frame excepted: its inner tag shows once the outer one is
//!   removed, and cut short right after it, it no longer parses);
//! - a drop outcome leaves a drop action with the same reason;
//! - the client table and the multicast group table stay within their caps.
#![no_main]
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tunterm_control::VlanSet;
use tunterm_control::mac::MacAddr;
use tunterm_core::forward::{
    Actions, Carrier, Encap, ForwardConfig, Forwarder, Kind, NoTap, Out, Outcome, Ports,
    TunnelPorts,
};
use tunterm_core::proto::bridge::{PortConfig, PortId, Switch, TRUNK, host_port};
use tunterm_core::proto::clients::{ClientConfig, Containment, StormConfig};
use tunterm_core::proto::mcast::{McastConfig, McastPolicy, QuerierConfig};
use tunterm_core::wire::checksum::internet_checksum;
use tunterm_core::wire::ipv4;
use tunterm_core::wire::l2tp::Transport;

const A: PortId = PortId(0x0a0a_0a0a);
const B: PortId = PortId(0xf000_0001);
const C: PortId = PortId(0x0c0c_0c0c);
const HOST30: u16 = 30;
const MAX_CLIENTS: usize = 6;
const MAX_GROUPS: usize = 5;

struct Tunnel {
    port: PortId,
    carrier: Carrier,
    peer: SocketAddr,
    mtu: u16,
    hdr: Vec<u8>,
    up: bool,
}

struct Tunnels(Vec<Tunnel>);

impl TunnelPorts for &mut Tunnels {
    fn encap(&mut self, port: PortId, hdr: &mut Vec<u8>) -> Option<Encap> {
        let t = self.0.iter().find(|t| t.port == port && t.up)?;
        hdr.clear();
        hdr.extend_from_slice(&t.hdr);
        Some(Encap {
            carrier: t.carrier,
            peer: t.peer,
            mtu: t.mtu,
        })
    }
    fn overhead(&self, port: PortId) -> Option<(usize, u16)> {
        let t = self.0.iter().find(|t| t.port == port && t.up)?;
        Some((t.carrier.outer_len(t.peer.is_ipv6()) + t.hdr.len(), t.mtu))
    }
    fn ap(&self, port: PortId) -> Option<(&str, IpAddr)> {
        let t = self.0.iter().find(|t| t.port == port && t.up)?;
        Some(("ap", t.peer.ip()))
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    proxy: bool,
    storm: bool,
    querier: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Frame {
        ingress: u8,
        dst: Dst,
        src: u8,
        tag: Option<u16>,
        body: Body,
    },
    Raw {
        ingress: u8,
        bytes: Vec<u8>,
    },
    Deliver {
        to: u8,
        vlan: u8,
        src: u8,
    },
    Tick {
        ms: u32,
    },
    TunnelDown {
        port: u8,
    },
    TunnelUp {
        port: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Dst {
    Broadcast,
    Host(u8),
    Group4(u8),
    Group6(u8),
    Any([u8; 6]),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Arp {
        op: u8,
        sender: u8,
        target: u8,
    },
    Igmp {
        kind: u8,
        group: u8,
        code: u8,
    },
    Udp {
        port: u8,
        group: Option<u8>,
        len: u8,
    },
    BigV4 {
        df: bool,
        len: u16,
        tcp_syn_mss: Option<u16>,
    },
    V6 {
        next: u8,
        group: Option<u8>,
        icmp_type: u8,
        len: u16,
    },
    Raw {
        ethertype: u16,
        bytes: Vec<u8>,
    },
}

fn ingress_port(i: u8) -> PortId {
    [TRUNK, A, B, C, host_port(HOST30), PortId(0x0d0d_0d0d)][usize::from(i) % 6]
}

fn mac(i: u8) -> [u8; 6] {
    [0x02, 0xc1, 0, 0, 0, i % 8]
}

fn ip4(i: u8) -> [u8; 4] {
    [10, 10, 0, i % 8]
}

fn group4(g: u8) -> [u8; 4] {
    // A few routable groups, 224.0.0.x (always flooded), mDNS and SSDP.
    match g % 6 {
        0 => [224, 0, 0, 251],
        1 => [239, 255, 255, 250],
        2 => [224, 0, 0, 1],
        n => [239, 1, 1, n],
    }
}

fn ipv4_packet(proto: u8, src: [u8; 4], dst: [u8; 4], df: bool, payload: &[u8], out: &mut Vec<u8>) {
    ipv4::Repr {
        src_addr: src.into(),
        dst_addr: dst.into(),
        protocol: ipv4::Protocol::from(proto),
        payload_len: payload.len(),
        ttl: 1,
        ident: 7,
        dont_frag: df,
        dscp_ecn: 0,
    }
    .append_to(out);
    out.extend_from_slice(payload);
}

fn frame(dst: &Dst, src: u8, tag: Option<u16>, body: &Body) -> Vec<u8> {
    let d = match dst {
        Dst::Broadcast => [0xff; 6],
        Dst::Host(h) => mac(*h),
        Dst::Group4(g) => {
            let a = group4(*g);
            [0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]]
        }
        Dst::Group6(g) => [0x33, 0x33, 0, 0, 0, *g % 4],
        Dst::Any(m) => *m,
    };
    let mut f = d.to_vec();
    f.extend_from_slice(&mac(src));
    if let Some(t) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&t.to_be_bytes());
    }
    let s4 = ip4(src);
    match body {
        Body::Arp { op, sender, target } => {
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1 + op % 2]);
            f.extend_from_slice(&mac(src));
            f.extend_from_slice(&ip4(*sender));
            f.extend_from_slice(if op % 2 == 0 { &[0; 6] } else { &d });
            f.extend_from_slice(&ip4(*target));
        }
        Body::Igmp { kind, group, code } => {
            f.extend_from_slice(&[0x08, 0x00]);
            let g = group4(*group);
            let mut m = match kind % 4 {
                0 => vec![0x16, 0, 0, 0, g[0], g[1], g[2], g[3]],
                1 => vec![0x17, 0, 0, 0, g[0], g[1], g[2], g[3]],
                2 => vec![0x11, *code, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0],
                _ => vec![
                    0x22,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    1,
                    1 + code % 6,
                    0,
                    0,
                    0,
                    g[0],
                    g[1],
                    g[2],
                    g[3],
                ],
            };
            let ck = internet_checksum(&m);
            m[2..4].copy_from_slice(&ck.to_be_bytes());
            let dst = if kind % 4 == 2 { [224, 0, 0, 1] } else { g };
            ipv4_packet(2, s4, dst, false, &m, &mut f);
        }
        Body::Udp { port, group, len } => {
            f.extend_from_slice(&[0x08, 0x00]);
            let p: u16 = [5353, 1900, 67, 68, 9][usize::from(*port) % 5];
            let n = usize::from(*len);
            let mut u = Vec::new();
            u.extend_from_slice(&p.to_be_bytes());
            u.extend_from_slice(&p.to_be_bytes());
            u.extend_from_slice(&((8 + n) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend(std::iter::repeat_n(0x11, n));
            let dst = group.map(group4).unwrap_or([10, 10, 0, 1]);
            ipv4_packet(17, s4, dst, false, &u, &mut f);
        }
        Body::BigV4 {
            df,
            len,
            tcp_syn_mss,
        } => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut t = vec![
                0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0,
            ];
            if let Some(mss) = tcp_syn_mss {
                t.extend_from_slice(&[2, 4]);
                t.extend_from_slice(&mss.to_be_bytes());
            } else {
                t[12] = 0x50;
            }
            t.extend(std::iter::repeat_n(0, usize::from(*len % 3000)));
            ipv4_packet(6, s4, [10, 10, 0, 1], *df, &t, &mut f);
        }
        Body::V6 {
            next,
            group,
            icmp_type,
            len,
        } => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let n = usize::from(*len % 3000) + 8;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(n as u16).to_be_bytes());
            f.extend_from_slice(&[[58, 17, 6, 0][usize::from(*next) % 4], 1]);
            f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src % 8]);
            match group {
                Some(g) => f.extend_from_slice(&[
                    0xff,
                    0x02,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    *g % 4,
                ]),
                None => {
                    f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
                }
            }
            f.push(*icmp_type);
            f.extend(std::iter::repeat_n(0, n - 1));
        }
        Body::Raw { ethertype, bytes } => {
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(bytes);
        }
    }
    f
}

type Fwd = Forwarder<Containment<McastPolicy>>;

struct World {
    now: Instant,
    switch: Switch,
    tunnels: Tunnels,
    fwd: Fwd,
    out: Actions,
}

/// Whether `frame` is 802.1Q tagged with an inner ethertype of 0x8100
/// again (QinQ): the switch only reads and rewrites the outer tag.
fn inner_tag(frame: &[u8]) -> bool {
    tunterm_core::wire::ether::parse(frame)
        .is_some_and(|v| v.tag.is_some() && frame[v.inner_offset..].starts_with(&[0x81, 0x00]))
}

/// `frame` parsed as Ethernet. Only a QinQ frame (`qinq`) may fail: cut
/// short after its inner 0x8100 and sent without its outer tag, what is
/// left is an 802.1Q frame cut short (found by this target; the switch
/// forwards such a frame as it came, and so does `write_retagged`).
fn ethernet(frame: &[u8], qinq: bool, what: &str) -> Option<tunterm_core::wire::ether::FrameView> {
    let v = tunterm_core::wire::ether::parse(frame);
    assert!(
        v.is_some() || (qinq && frame.get(12..14) == Some(&[0x81, 0x00][..])),
        "{what} is not Ethernet: {frame:02x?}"
    );
    v
}

impl World {
    /// `qinq`: the frame handled carries a second 802.1Q tag inside its
    /// first (see [`inner_tag`]).
    fn check(&self, ingress: Option<PortId>, outcome: Option<Outcome>, qinq: bool) {
        let mut drops = Vec::new();
        for o in self.out.iter() {
            match o {
                Out::Trunk { kind, frame } => {
                    if kind == Kind::Frame {
                        assert_ne!(ingress, Some(TRUNK), "a trunk frame went back to the trunk");
                    }
                    let h = etherparse::SlicedPacket::from_ethernet(frame);
                    assert!(h.is_ok() || frame.len() >= 14, "trunk frame unreadable");
                    // Untagged on the trunk: only its untagged VLAN 1,
                    // whose frames (from elsewhere) leave untagged.
                    ethernet(frame, qinq, "trunk frame");
                }
                Out::Tunnel {
                    port,
                    kind,
                    packet,
                    header_len,
                    ..
                } => {
                    if kind == Kind::Frame {
                        assert_ne!(ingress, Some(port), "a frame went back into its own tunnel");
                    }
                    let t = self
                        .tunnels
                        .0
                        .iter()
                        .find(|t| t.port == port)
                        .expect("a known tunnel");
                    assert!(t.up, "a packet for a tunnel that is down");
                    assert_eq!(header_len, t.hdr.len());
                    assert_eq!(&packet[..header_len], &t.hdr[..]);
                    ethernet(&packet[header_len..], qinq, "tunnel frame");
                }
                Out::HostPort {
                    port, kind, frame, ..
                } => {
                    if kind == Kind::Frame {
                        assert_ne!(ingress, Some(port), "a frame went back to its host port");
                    }
                    let v = ethernet(frame, qinq, "host frame");
                    // Untagged, but for the inner tag of a QinQ frame.
                    assert!(
                        v.is_none_or(|v| v.tag.is_none()) || qinq,
                        "a host port frame is tagged: {frame:02x?}"
                    );
                }
                Out::Relayed { .. } => {}
                Out::Drop { reason, .. } => drops.push(reason),
            }
        }
        if let Some(Outcome::Drop(r)) = outcome {
            assert!(
                drops.contains(&r),
                "drop outcome {r:?} without its drop action"
            );
        }
        let c = self.fwd.policy();
        assert!(
            c.table().len() <= MAX_CLIENTS,
            "{} clients",
            c.table().len()
        );
        assert!(c.inner().len() <= MAX_GROUPS, "{} groups", c.inner().len());
    }
}

fuzz_target!(|input: Input| {
    let now = Instant::now();
    let mut switch = Switch::new(Duration::from_secs(30));
    let port = |v: &[u16], u: Option<u16>| PortConfig {
        vlans: VlanSet::from_ids(v.iter().copied()).unwrap(),
        untagged_vlan: u,
    };
    switch.add_port(TRUNK, port(&[10, 20, 30], Some(1)));
    switch.add_port(A, port(&[1, 10, 20], Some(10)));
    switch.add_port(B, port(&[20], None));
    switch.add_port(C, port(&[], Some(10)));
    switch.add_port(PortId(0x0d0d_0d0d), port(&[20], None));
    switch.add_port(host_port(HOST30), port(&[], Some(HOST30)));
    let tunnels = Tunnels(vec![
        Tunnel {
            port: A,
            carrier: Carrier::L2tp(Transport::Udp),
            peer: "198.51.100.2:40000".parse().unwrap(),
            mtu: 1500,
            hdr: vec![0x0a; 4],
            up: true,
        },
        Tunnel {
            port: B,
            carrier: Carrier::Gre,
            peer: "[2001:db8::2]:0".parse().unwrap(),
            mtu: 1500,
            hdr: vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 7],
            up: true,
        },
        Tunnel {
            port: C,
            carrier: Carrier::L2tp(Transport::Ip),
            peer: "198.51.100.3:0".parse().unwrap(),
            mtu: 1400,
            hdr: vec![0x0c; 4],
            up: true,
        },
    ]);
    let mcast = McastConfig {
        snoop_vlans: VlanSet::from_ids([10, 20]).unwrap(),
        querier: input.querier.then(QuerierConfig::default),
        flood_unregistered: VlanSet::from_ids([20]).unwrap(),
        static_router_ports: vec![TRUNK],
        mdns: Some(VlanSet::from_ids([10]).unwrap()),
        ssdp: None,
        mac: MacAddr([2, 0xee, 0, 0, 0, 1]),
        max_groups: MAX_GROUPS,
        max_groups_per_vlan: 3,
        ..McastConfig::default()
    };
    let clients = ClientConfig {
        max_clients: MAX_CLIENTS,
        max_age: Duration::from_secs(20),
        proxy: input.proxy,
        storm: input.storm.then_some(StormConfig {
            broadcast_pps: 3,
            multicast_pps: 3,
            unknown_unicast_pps: 3,
            // A few floods' worth: the copies limit runs out too.
            flood_copies_pps: 8,
        }),
        ..ClientConfig::default()
    };
    let fwd = Forwarder::with_policy(
        ForwardConfig {
            link_mtu: 1500,
            icmp_src4: Some("192.0.2.1".parse().unwrap()),
            icmp_src6: Some("2001:db8::1".parse().unwrap()),
        },
        Containment::wrapping(clients, McastPolicy::new(mcast, now)),
    );
    let mut w = World {
        now,
        switch,
        tunnels,
        fwd,
        out: Actions::default(),
    };
    for op in input.ops.into_iter().take(128) {
        w.out.clear();
        match op {
            Op::Frame {
                ingress,
                dst,
                src,
                tag,
                body,
            } => {
                let f = frame(&dst, src, tag, &body);
                let ing = ingress_port(ingress);
                let mut ports = Ports {
                    switch: &mut w.switch,
                    tunnels: &mut w.tunnels,
                    relay: None,
                };
                let o = w
                    .fwd
                    .handle(w.now, ing, &f, &mut ports, &mut w.out, &mut NoTap);
                w.check(Some(ing), Some(o), inner_tag(&f));
            }
            Op::Raw { ingress, bytes } => {
                let ing = ingress_port(ingress);
                let mut ports = Ports {
                    switch: &mut w.switch,
                    tunnels: &mut w.tunnels,
                    relay: None,
                };
                let o = w
                    .fwd
                    .handle(w.now, ing, &bytes, &mut ports, &mut w.out, &mut NoTap);
                w.check(Some(ing), Some(o), inner_tag(&bytes));
            }
            Op::Deliver { to, vlan, src } => {
                let f = frame(
                    &Dst::Host(src.wrapping_add(1)),
                    src,
                    None,
                    &Body::Udp {
                        port: 3,
                        group: None,
                        len: 40,
                    },
                );
                let to = ingress_port(to);
                let vlan = [1, 10, 20, 30][usize::from(vlan) % 4];
                // The callers' contract (DHCP replies, querier queries): `to`
                // is a member of `vlan`. deliver() itself does not check it.
                if !w.switch.vlan_ports(vlan).contains(&to) {
                    continue;
                }
                let mut ports = Ports {
                    switch: &mut w.switch,
                    tunnels: &mut w.tunnels,
                    relay: None,
                };
                w.fwd.deliver(
                    w.now,
                    host_port(vlan),
                    to,
                    vlan,
                    &f,
                    &mut ports,
                    &mut w.out,
                    &mut NoTap,
                );
                w.check(None, None, false);
            }
            Op::Tick { ms } => {
                w.now += Duration::from_millis(u64::from(ms % 120_000));
                if w.switch.poll_timeout().is_some_and(|t| t <= w.now) {
                    w.switch.handle_timeout(w.now);
                }
                let p = w.fwd.policy_mut();
                if p.inner().poll_timeout().is_some_and(|t| t <= w.now) {
                    p.inner_mut().handle_timeout(w.now);
                    while p.inner_mut().poll_query().is_some() {}
                }
                if p.poll_timeout().is_some_and(|t| t <= w.now) {
                    let sw = &w.switch;
                    p.handle_timeout(w.now, |vlan, mac, port| sw.lookup(vlan, &mac) == Some(port));
                }
            }
            Op::TunnelDown { port } => {
                let t = &mut w.tunnels.0[usize::from(port) % 3];
                t.up = false;
                let p = t.port;
                w.switch.flush_port(p);
                w.fwd.remove_port(p);
            }
            Op::TunnelUp { port } => w.tunnels.0[usize::from(port) % 3].up = true,
        }
    }
});
