//! The trunk side's table (katran-style, as `ap_rx_table.rs`): frames off
//! the trunk run through `xdp_trunk_rx` with BPF_PROG_TEST_RUN and through
//! the userspace path (the daemon's forwarding pipeline,
//! `tunterm_core::forward::Forwarder`, over the lab's endpoints), with the
//! same expectations. An encapsulated frame must be, byte for byte, the outer
//! packet built here from the RFCs (Ethernet, IPv4 with a valid checksum /
//! IPv6, UDP with checksum 0 over IPv4, the L2TPv3 header as the AP's own
//! session state expects it, or GRE with the peer's key), its tunnel
//! payload must be what the userspace driver hands its socket, and it must
//! decode at the AP (the AP-side endpoint, or the GRE parser).
//! Needs root (BPF); fails with a message otherwise.

mod common;

use std::net::IpAddr;

use common::lab::{EDGE4, EDGE6, Fast, HOST, LEN, Lab, TrunkSlow, check_fast, group_twin};
use common::packets::{self, Mac};
use etherparse::TcpHeader;
use tunterm_core::proto::bridge::{DropReason, PortId};
use tunterm_core::proto::l2tp::Incoming;
use tunterm_core::wire::l2tp::Transport;
use tunterm_core::wire::{gre, ipv4, ipv6, udp};
use tunterm_ebpf::maps::tt_counter;
use tunterm_ebpf::{Action, FastPath, Program};

/// What the slow path must do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    Tunnel(PortId),
    Drop(DropReason),
    Flood(u16),
    Local,
    /// Whatever it does (the truncation sweep): the fast path must agree.
    Any,
}

struct Case {
    name: String,
    frame: Vec<u8>,
    fast: Fast<tt_counter>,
    slow: Want,
}

fn case(name: impl Into<String>, frame: Vec<u8>, fast: Fast<tt_counter>, slow: Want) -> Case {
    Case {
        name: name.into(),
        frame,
        fast,
        slow,
    }
}

/// The outer packet the AP must receive: Ethernet to the next hop, IPv4
/// (RFC 791: no options, id 0, DF, TTL 64, checksum) or IPv6 (RFC 8200: hop
/// limit 64) from the edge, of protocol `proto`, around `l4`.
fn outer(peer: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(40 + l4.len());
    let ethertype = match peer {
        IpAddr::V4(p) => {
            ipv4::Repr {
                src_addr: EDGE4,
                dst_addr: p,
                protocol: proto.into(),
                payload_len: l4.len(),
                ttl: 64,
                ident: 0,
                dont_frag: true,
                dscp_ecn: 0,
            }
            .append_to(&mut h);
            0x0800
        }
        IpAddr::V6(p) => {
            ipv6::Repr {
                src_addr: EDGE6,
                dst_addr: p,
                next_header: proto.into(),
                payload_len: l4.len(),
                hop_limit: 64,
            }
            .append_to(&mut h);
            0x86dd
        }
    };
    h.extend_from_slice(l4);
    packets::ether(packets::GW_MAC, packets::EDGE_MAC, None, ethertype, &h)
}

/// The L2TPv3 packet tunnel `i` must carry `inner` in, built from the AP's
/// own view of the session (its id, the cookie it expects, the sublayer),
/// in its outer headers.
fn l2tp_out(lab: &Lab, i: usize, inner: &[u8]) -> Vec<u8> {
    let t = &lab.tunnels[i];
    let sl = t.ap_view.sublayer.then_some(0);
    let cookie = t.ap_view.cookie_rx.as_slice();
    match t.transport {
        Transport::Udp => {
            let msg = packets::l2tp_data(t.ap_view.local_sid, cookie, sl, inner);
            let mut u = Vec::with_capacity(8 + msg.len());
            udp::Repr {
                src_port: 1701,
                dst_port: t.ap.port(),
                payload_len: msg.len(),
            }
            .append_to(&mut u);
            u.extend_from_slice(&msg);
            outer(t.ap.ip(), 17, &u)
        }
        Transport::Ip => outer(
            t.ap.ip(),
            115,
            &packets::l2tp_ip_data(t.ap_view.local_sid, cookie, sl, inner),
        ),
    }
}

fn gre_out(lab: &Lab, i: usize, inner: &[u8]) -> Vec<u8> {
    let g = &lab.gre_aps[i];
    outer(g.addr, 47, &packets::gre(0x6558, false, g.key, None, inner))
}

/// The tunnel payload (UDP payload over UDP, IP payload otherwise) of an
/// outer packet, after checking its lengths and IPv4 checksum.
fn payload_of(p: &[u8]) -> Result<(u8, &[u8]), String> {
    match [p[12], p[13]] {
        [0x08, 0x00] => {
            let ip = &p[14..];
            if packets::checksum(&ip[..20]) != 0 {
                return Err("IPv4 header checksum wrong".into());
            }
            if usize::from(u16::from_be_bytes([ip[2], ip[3]])) != ip.len() {
                return Err("IPv4 total length wrong".into());
            }
            if ip[9] == 17 {
                let u = &ip[20..];
                if usize::from(u16::from_be_bytes([u[4], u[5]])) != u.len() || u[6..8] != [0, 0] {
                    return Err("UDP length or checksum wrong".into());
                }
                return Ok((17, &u[8..]));
            }
            Ok((ip[9], &ip[20..]))
        }
        [0x86, 0xdd] => {
            let ip = &p[14..];
            if usize::from(u16::from_be_bytes([ip[4], ip[5]])) + 40 != ip.len() {
                return Err("IPv6 payload length wrong".into());
            }
            Ok((ip[6], &ip[40..]))
        }
        _ => Err("not IP".into()),
    }
}

impl Lab {
    fn trunk_cases(&self) -> Vec<Case> {
        use tt_counter::*;
        let c = packets::client;
        let mut v = Vec::new();
        let egress = |untagged: Option<u16>, vlan: u16, tci: u16| -> Option<u16> {
            (untagged != Some(vlan)).then_some((tci & 0xf000) | vlan)
        };
        for (i, t) in self.tunnels.iter().enumerate() {
            let templated = i != 4;
            for (vlan, tci) in [(10u16, 10u16), (20, 0xa014)] {
                let frame = c(t.client, HOST, Some(tci), LEN);
                let inner = c(t.client, HOST, egress(t.port.untagged_vlan, vlan, tci), LEN);
                let name = format!(
                    "session {i} ({:?} {}), VLAN {vlan}",
                    t.transport,
                    if t.ap.is_ipv4() { "IPv4" } else { "IPv6" }
                );
                let fast = if templated {
                    Fast::Redirect(l2tp_out(self, i, &inner))
                } else {
                    Fast::Pass(TT_CNT_TRUNK_PASS_NO_TEMPLATE)
                };
                v.push(case(name, frame, fast, Want::Tunnel(t.port_id())));
            }
        }
        for (i, g) in self.gre_aps.iter().enumerate() {
            let frame = c(g.client, HOST, Some(20), LEN);
            let inner = c(g.client, HOST, Some(20), LEN);
            let fast = if g.sequenced {
                Fast::Pass(TT_CNT_TRUNK_PASS_NO_TEMPLATE)
            } else {
                Fast::Redirect(gre_out(self, i, &inner))
            };
            v.push(case(
                format!("GRE peer {i} ({} key {:?}), VLAN 20", g.addr, g.key),
                frame,
                fast,
                Want::Tunnel(g.port),
            ));
            if !g.sequenced {
                let frame = c(g.client, HOST, Some(10), LEN);
                v.push(case(
                    format!("GRE peer {i}, VLAN 10 (its untagged VLAN)"),
                    frame,
                    Fast::Redirect(gre_out(self, i, &c(g.client, HOST, None, LEN))),
                    Want::Tunnel(g.port),
                ));
            }
        }
        let t0 = &self.tunnels[0];
        let g0 = &self.gre_aps[0];
        v.extend([
            case(
                "untagged (trunk VLAN 1) → session 0 tagged 1",
                c(t0.client, HOST, None, LEN),
                Fast::Redirect(l2tp_out(self, 0, &c(t0.client, HOST, Some(1), LEN))),
                Want::Tunnel(t0.port_id()),
            ),
            case(
                "priority tag PCP 3 (VLAN 1) → tagged 1, PCP kept",
                c(t0.client, HOST, Some(0x6000), LEN),
                Fast::Redirect(l2tp_out(self, 0, &c(t0.client, HOST, Some(0x6001), LEN))),
                Want::Tunnel(t0.port_id()),
            ),
            case(
                "VLAN 40 not on the trunk",
                c(g0.client, HOST, Some(40), LEN),
                Fast::Drop(TT_CNT_TRUNK_DROP_VLAN_NOT_ALLOWED),
                Want::Drop(DropReason::VlanNotAllowed),
            ),
            case(
                "broadcast",
                c([0xff; 6], HOST, Some(10), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_BUM),
                Want::Flood(10),
            ),
            case(
                "multicast",
                c([0x01, 0, 0x5e, 0, 0, 1], HOST, Some(20), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_BUM),
                Want::Flood(20),
            ),
            case(
                "the group twin of a client behind a tunnel",
                c(group_twin(g0.client), HOST, Some(20), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_BUM),
                Want::Flood(20),
            ),
            case(
                "unknown destination",
                c([0x02, 0xdd, 0, 0, 0, 1], HOST, Some(10), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_UNKNOWN_DST),
                Want::Flood(10),
            ),
            case(
                "destination on the trunk",
                c(HOST, HOST, Some(10), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_NOT_TUNNEL),
                Want::Local,
            ),
            case(
                "source not learned (the slow path learns it)",
                c(g0.client, [0x02, 0xee, 0, 0, 0, 9], Some(20), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_SRC_NOT_LEARNED),
                Want::Tunnel(g0.port),
            ),
            case(
                "source learned behind a tunnel (a move)",
                c(g0.client, self.tunnels[1].client, Some(20), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_SRC_NOT_LEARNED),
                Want::Tunnel(g0.port),
            ),
            case(
                "multicast source",
                c(g0.client, [0x03, 0, 0, 0, 0, 1], Some(20), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_SRC_NOT_LEARNED),
                Want::Drop(DropReason::BadSourceMac),
            ),
            case(
                "the group twin of the learned trunk host as source",
                c(g0.client, group_twin(HOST), Some(20), LEN),
                Fast::Pass(TT_CNT_TRUNK_PASS_SRC_NOT_LEARNED),
                Want::Drop(DropReason::BadSourceMac),
            ),
            case(
                "bigger than the tunnel MTU",
                c(g0.client, HOST, Some(20), 1480),
                Fast::Pass(TT_CNT_TRUNK_PASS_TOO_BIG),
                Want::Tunnel(g0.port),
            ),
            case(
                "inner TCP SYN (the slow path clamps its MSS)",
                {
                    let mut f = tcp_syn(g0.client);
                    f.splice(12..12, [0x81, 0, 0, 20]);
                    f
                },
                Fast::Pass(TT_CNT_TRUNK_PASS_TCP_SYN),
                Want::Tunnel(g0.port),
            ),
            case(
                "tagged header cut short",
                c(g0.client, HOST, Some(20), LEN)[..16].to_vec(),
                Fast::Pass(TT_CNT_TRUNK_PASS_MALFORMED),
                Want::Drop(DropReason::Malformed),
            ),
        ]);
        // Every length of a good frame (Ethernet has no length field: a
        // short frame is still a frame): the two paths must agree.
        let full = c(self.tunnels[6].client, HOST, Some(20), LEN);
        for n in 14..full.len() {
            v.push(case(
                format!("frame cut to {n} bytes"),
                full[..n].to_vec(),
                Fast::Agree,
                Want::Any,
            ));
        }
        v
    }
}

/// A frame to `dst` from HOST carrying an IPv4 TCP SYN without options.
fn tcp_syn(dst: Mac) -> Vec<u8> {
    let mut tcp = TcpHeader::new(0, 0, 0, 0);
    tcp.syn = true;
    let ips = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
    packets::tcp4(dst, HOST, None, ips, tcp)
}

/// Does `got` (an encapsulated frame) decode at the AP as `inner`?
fn decodes(lab: &mut Lab, port: PortId, got: &[u8]) -> Result<(), String> {
    let (proto, payload) = payload_of(got)?;
    if proto == 47 {
        let p = gre::parse(payload).map_err(|e| format!("GRE: {e}"))?;
        let g = lab
            .gre_aps
            .iter()
            .find(|g| g.port == port)
            .ok_or("no such peer")?;
        if p.header.key != g.key || p.header.protocol != gre::PROTO_TEB || p.header.seq.is_some() {
            return Err(format!("GRE header {:?}", p.header));
        }
        return Ok(());
    }
    let now = lab.now;
    let t = lab
        .tunnels
        .iter_mut()
        .find(|t| t.session.local_sid == port.0)
        .ok_or("no such session")?;
    let transport = if proto == 17 {
        Transport::Udp
    } else {
        Transport::Ip
    };
    match t
        .apside
        .handle_datagram(now, transport, t.edge_addr, payload)
    {
        Incoming::Data { .. } => Ok(()),
        other => Err(format!("the AP says {other:?}")),
    }
}

#[test]
fn same_table_fast_and_slow() {
    common::lab::require_root();
    let mut lab = Lab::new();
    let mut bpf = FastPath::load().expect("both programs load and verify");
    lab.mirror_into(&mut bpf);
    let cases = lab.trunk_cases();
    let mut failures = Vec::new();
    let mut redirects = 0;
    for c in &cases {
        let mut fail = |what: String| failures.push(format!("{}: {what}", c.name));
        let before = bpf.counters().expect("counters");
        let got = match bpf.test_run(Program::TrunkRx, &c.frame) {
            Ok(o) => o,
            Err(e) => {
                fail(format!("test run failed: {e}"));
                continue;
            }
        };
        let delta = bpf.counters().expect("counters").since(&before);
        let (rx, redirect) = (
            tt_counter::TT_CNT_TRUNK_RX,
            tt_counter::TT_CNT_TRUNK_REDIRECT,
        );
        for w in check_fast(&c.fast, got.action, &delta, rx, redirect) {
            fail(w);
        }
        if let Fast::Redirect(out) = &c.fast
            && &got.packet != out
        {
            fail(format!(
                "output\n  got  {:02x?}\n  want {out:02x?}",
                got.packet
            ));
        }
        if got.action == Action::Pass && got.packet != c.frame {
            fail("fast path changed a frame it passed".into());
        }

        let slow = lab.slow_trunk(&c.frame);
        let slow_ok = match (&c.slow, &slow) {
            (Want::Any, _) => true,
            (Want::Tunnel(p), TrunkSlow::ToTunnel { port, .. }) => p == port,
            (Want::Drop(r), TrunkSlow::SwitchDrop(s)) => r == s,
            (Want::Flood(v), TrunkSlow::Flood(s)) => v == s,
            (Want::Local, TrunkSlow::Local) => true,
            _ => false,
        };
        if !slow_ok {
            fail(format!("slow path: {slow:?}, want {:?}", c.slow));
        }
        // Against each other: what the fast path did.
        match got.action {
            Action::Redirect => {
                redirects += 1;
                match &slow {
                    TrunkSlow::ToTunnel {
                        port,
                        peer,
                        payload,
                    } => {
                        match payload_of(&got.packet) {
                            Ok((_, p)) if p == &payload[..] => {}
                            Ok((_, p)) => fail(format!(
                                "tunnel payload\n  fast {p:02x?}\n  slow {payload:02x?}"
                            )),
                            Err(e) => fail(e),
                        }
                        let dst: IpAddr = match [got.packet[12], got.packet[13]] {
                            [0x08, 0x00] => <[u8; 4]>::try_from(&got.packet[30..34])
                                .map(IpAddr::from)
                                .expect("4"),
                            _ => <[u8; 16]>::try_from(&got.packet[38..54])
                                .map(IpAddr::from)
                                .expect("16"),
                        };
                        if dst != peer.ip() {
                            fail(format!("sent to {dst}, the slow path to {peer}"));
                        }
                        if let Err(e) = decodes(&mut lab, *port, &got.packet) {
                            fail(format!("does not decode at the AP: {e}"));
                        }
                    }
                    other => fail(format!("fast path redirects, slow path says {other:?}")),
                }
            }
            Action::Drop => {
                if !matches!(
                    slow,
                    TrunkSlow::SwitchDrop(
                        DropReason::VlanNotAllowed | DropReason::UntaggedNotAllowed
                    )
                ) {
                    fail(format!("fast path drops, slow path says {slow:?}"));
                }
            }
            Action::Pass => {}
            other => fail(format!("fast path: {other:?}")),
        }
    }
    // While a capture runs the policy drops go up unchanged, counted.
    bpf.set_slow_path_only(true).expect("set the capture flag");
    let mut dropped = 0;
    for c in cases.iter().filter(|c| matches!(c.fast, Fast::Drop(_))) {
        dropped += 1;
        let before = bpf.counters().expect("counters");
        let got = bpf.test_run(Program::TrunkRx, &c.frame).expect("test run");
        let delta = bpf.counters().expect("counters").since(&before);
        let capture = delta.0[tt_counter::TT_CNT_TRUNK_PASS_CAPTURE as usize];
        if got.action != Action::Pass || got.packet != c.frame || capture != 1 {
            failures.push(format!(
                "{} during a capture: {:?}, changed: {}, trunk_pass_capture +{capture}",
                c.name,
                got.action,
                got.packet != c.frame
            ));
        }
    }
    assert!(dropped >= 1, "the table has policy drops to check");
    bpf.set_slow_path_only(false)
        .expect("clear the capture flag");
    eprintln!(
        "xdp_trunk_rx table: {} cases ({redirects} redirected), {} failure(s)",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A client is reached wherever the FDB holds it: at its home slot, at
/// another slot of its first bucket, or in its second bucket after cuckoo
/// moves. The table is filled to 90% with clients of the first tunnel and
/// the trunk host sends a frame to each.
#[test]
fn clients_anywhere_in_a_full_fdb_are_reached() {
    common::lab::require_root();
    let lab = Lab::new();
    let mut bpf = FastPath::load().expect("both programs load and verify");
    lab.mirror_into(&mut bpf);
    let t0 = &lab.tunnels[0];
    let to = |mac: Mac| packets::client(mac, HOST, Some(10), LEN);
    let got = bpf
        .test_run(Program::TrunkRx, &to(t0.client))
        .expect("test run");
    assert_eq!(got.action, Action::Redirect, "the lab's client on VLAN 10");
    let macs = common::lab::fill_fdb(&mut bpf, t0);
    common::lab::assert_all_redirected(&macs, "not reached", |mac| {
        let got = bpf.test_run(Program::TrunkRx, &to(mac));
        got.expect("test run").action
    });
}
