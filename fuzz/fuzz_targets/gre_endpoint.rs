//! The mGRE endpoint (proto/gre): packets from a handful of sources (APs,
//! NATed APs with keys, a host outside the admitted subnet), well-formed
//! data and keepalives or arbitrary bytes, with virtual time passing,
//! peers removed, the table snapshotted and restored.
//!
//! Properties checked after every step:
//! - never more peers than `max_peers`; ports and peers agree (each
//!   PeerUp's port is live until its PeerDown, none is up twice);
//! - every packet is accounted exactly once: `rx_packets` and exactly one
//!   of data, keepalive or a drop reason move;
//! - on a sequenced peer, accepted data never goes back in sequence
//!   inside the reorder window (late and duplicated packets are dropped);
//! - a snapshot restored into a fresh endpoint gives the same peers.
#![no_main]
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tunterm_core::proto::bridge::PortId;
use tunterm_core::proto::gre::{
    GreConfig, GreCounters, GreEndpoint, GreEvent, GreIncoming, SEQ_REORDER_WINDOW,
};
use tunterm_core::wire::gre::{self, GreHeader};
use tunterm_core::wire::ipv4;

const MAX_PEERS: usize = 4;

#[derive(Arbitrary, Debug)]
struct Input {
    admit_only_aps: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Data {
        src: u8,
        key: Option<u8>,
        seq: Option<u32>,
        checksum: bool,
        len: u8,
    },
    Keepalive {
        src: u8,
        key: Option<u8>,
        to_sender: bool,
        v6_proto: bool,
    },
    Raw {
        src: u8,
        bytes: Vec<u8>,
    },
    Tick {
        ms: u16,
    },
    Remove {
        port: u8,
    },
    RemoveAll,
    Refresh {
        port: u8,
    },
    Encap {
        port: u8,
    },
    Accepting(bool),
    SnapshotRestore,
}

fn src_addr(s: u8) -> IpAddr {
    match s % 6 {
        5 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)),
        4 => "::ffff:10.0.0.2".parse().unwrap(),
        n => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2 + n)),
    }
}
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn outcomes(c: &GreCounters) -> u64 {
    c.rx_data
        + c.rx_keepalives
        + c.drop_malformed
        + c.drop_not_admitted
        + c.drop_wrong_protocol
        + c.drop_too_many_peers
        + c.drop_sequence_old
        + c.drop_bad_keepalive
}

struct World {
    now: Instant,
    gre: GreEndpoint,
    up: HashSet<PortId>,
    last_seq: HashMap<PortId, u32>,
}

impl World {
    fn ports(&self) -> Vec<PortId> {
        let mut p: Vec<PortId> = self.up.iter().copied().collect();
        p.sort_unstable();
        p
    }

    fn port(&self, i: u8) -> Option<PortId> {
        let p = self.ports();
        p.get(usize::from(i) % p.len().max(1)).copied()
    }

    fn packet(&mut self, src: IpAddr, bytes: &[u8]) {
        let before = self.gre.counters().clone();
        let seq = gre::parse(bytes).ok().and_then(|p| p.header.seq);
        match self.gre.handle_packet(self.now, src, LOCAL, bytes) {
            GreIncoming::Data { port, payload } => {
                assert!(payload.len() >= 14);
                self.drain();
                assert!(
                    self.up.contains(&port),
                    "data from {port:?} which is not up"
                );
                if let Some(n) = seq
                    && let Some(last) = self.last_seq.insert(port, n)
                {
                    let behind = last.wrapping_sub(n);
                    assert!(
                        behind >= SEQ_REORDER_WINDOW,
                        "seq {n} accepted {behind} behind {last}"
                    );
                }
            }
            GreIncoming::Keepalive | GreIncoming::Dropped(_) => {}
        }
        let after = self.gre.counters();
        assert_eq!(after.rx_packets, before.rx_packets + 1);
        assert_eq!(
            outcomes(after),
            outcomes(&before) + 1,
            "a packet counted {} times",
            outcomes(after) - outcomes(&before)
        );
    }

    fn drain(&mut self) {
        while let Some(e) = self.gre.poll_event() {
            match e {
                GreEvent::PeerUp { port, .. } => {
                    assert!(self.up.insert(port), "{port:?} up twice");
                    self.last_seq.remove(&port);
                }
                GreEvent::PeerDown { port, .. } => {
                    assert!(self.up.remove(&port), "{port:?} down while not up");
                }
            }
        }
        while self.gre.poll_transmit().is_some() {}
        assert!(self.gre.peer_count() <= MAX_PEERS);
        assert_eq!(self.gre.peer_count(), self.up.len());
        for p in &self.up {
            assert!(self.gre.peer(*p).is_some(), "{p:?} up but unknown");
        }
    }
}

fuzz_target!(|input: Input| {
    let cfg = GreConfig {
        peer_timeout: Duration::from_secs(3),
        admit: if input.admit_only_aps {
            vec!["10.0.0.0/24".parse().unwrap()]
        } else {
            vec![]
        },
        max_peers: MAX_PEERS,
    };
    let mut w = World {
        now: Instant::now(),
        gre: GreEndpoint::new(cfg.clone()),
        up: HashSet::new(),
        last_seq: HashMap::new(),
    };
    for op in input.ops.into_iter().take(256) {
        match op {
            Op::Data {
                src,
                key,
                seq,
                checksum,
                len,
            } => {
                let header = GreHeader {
                    checksum,
                    key: key.map(u32::from),
                    seq,
                    ..GreHeader::new(gre::PROTO_TEB)
                };
                let mut payload = vec![
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, src, 0x08, 0x06,
                ];
                payload.truncate(usize::from(len).min(14));
                payload.extend(std::iter::repeat_n(0, usize::from(len.saturating_sub(14))));
                let mut out = Vec::new();
                gre::emit_packet(&header, &payload, &mut out);
                w.packet(src_addr(src), &out);
            }
            Op::Keepalive {
                src,
                key,
                to_sender,
                v6_proto,
            } => {
                let addr = src_addr(src);
                let back = match (to_sender, addr) {
                    (true, IpAddr::V4(a)) => a,
                    (true, IpAddr::V6(a)) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST),
                    (false, _) => Ipv4Addr::new(10, 0, 0, 200),
                };
                let mut reply = Vec::new();
                gre::emit_packet(
                    &GreHeader {
                        key: key.map(u32::from),
                        ..GreHeader::new(gre::PROTO_KEEPALIVE)
                    },
                    &[],
                    &mut reply,
                );
                let mut inner = Vec::new();
                ipv4::Repr {
                    src_addr: Ipv4Addr::new(10, 0, 0, 1),
                    dst_addr: back,
                    protocol: ipv4::Protocol::Gre,
                    payload_len: reply.len(),
                    ttl: 255,
                    ident: 0,
                    dont_frag: false,
                    dscp_ecn: 0,
                }
                .append_to(&mut inner);
                inner.extend_from_slice(&reply);
                let proto = if v6_proto {
                    gre::PROTO_IPV6
                } else {
                    gre::PROTO_IPV4
                };
                let mut out = Vec::new();
                gre::emit_packet(
                    &GreHeader {
                        key: key.map(u32::from),
                        ..GreHeader::new(proto)
                    },
                    &inner,
                    &mut out,
                );
                w.packet(addr, &out);
            }
            Op::Raw { src, bytes } => w.packet(src_addr(src), &bytes),
            Op::Tick { ms } => {
                w.now += Duration::from_millis(u64::from(ms));
                if w.gre.poll_timeout().is_some_and(|t| t <= w.now) {
                    w.gre.handle_timeout(w.now);
                }
            }
            Op::Remove { port } => {
                if let Some(p) = w.port(port) {
                    w.gre.remove_peer(p);
                }
            }
            Op::RemoveAll => w.gre.remove_all(),
            Op::Refresh { port } => {
                if let Some(p) = w.port(port) {
                    let _ = w.gre.refresh(p, w.now);
                }
            }
            Op::Encap { port } => {
                if let Some(p) = w.port(port) {
                    let mut out = Vec::new();
                    let dst = w
                        .gre
                        .encap_header(p, &mut out)
                        .expect("a live port encapsulates");
                    let h = gre::parse(&out).expect("an encap header parses");
                    assert_eq!(h.header.key, w.gre.peer(p).unwrap().key);
                    assert_eq!(dst, w.gre.peer(p).unwrap().addr);
                }
            }
            Op::Accepting(on) => w.gre.set_accepting(on),
            Op::SnapshotRestore => {
                let snap = w.gre.snapshot();
                let mut fresh = GreEndpoint::new(cfg.clone());
                let refused = fresh.restore(w.now, &snap);
                assert!(refused.is_empty(), "own snapshot refused: {refused:?}");
                assert_eq!(fresh.snapshot(), snap);
            }
        }
        w.drain();
    }
});
