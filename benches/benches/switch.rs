//! The per-packet slow path on one core, with 1,000 tunnel ports and 10,000
//! learned MACs, in frames per second.
//!
//! - `switch/{len}B`: the learning switch's decision alone
//!   (`Switch::ingress`): known unicast in both directions, and the flood
//!   decision for a broadcast (ingress and the VLAN's member list).
//! - `slowpath/{len}B`: the daemon's userspace path behind real sessions
//!   (`tunterm_benches::slowpath`, the bed `fwdcount` counts instructions
//!   on): L2TPv3 data decap and the forwarding pipeline
//!   (`tunterm_core::forward::Forwarder` with the daemon's flood policy
//!   chain: switch, client table, re-tag, MSS check, the trunk action) AP
//!   to trunk; the pipeline on a trunk frame (switch, client table, re-tag,
//!   L2TPv3 encap, the tunnel action) trunk to AP; each with containment
//!   (ARP/ND containment and storm control) off and on. The baseline the
//!   XDP fast path is measured against.
//!
//! Each group is one function over a bed built once; a new group is one
//! more function in `criterion_group!`.
//!
//! `cargo bench -p tunterm-benches --bench switch [-- --quick]`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tunterm_benches::slowpath::{
    self, Bed, MACS_PER_SESSION, SESSIONS, TRUNK_HOST, add_session, client_mac, frame, trunk_switch,
};
use tunterm_core::forward::{Actions, Out};
use tunterm_core::proto::bridge::{PortId, Switch, TRUNK, Verdict};
use tunterm_core::wire::ether::MacAddr;

/// The switch alone, populated as [`Bed::new`] leaves it but with no L2TP
/// behind its ports.
struct SwitchBed {
    switch: Switch,
    /// Per session port: a client frame (untagged) to the trunk host.
    uplink: Vec<(PortId, Vec<u8>)>,
    /// Trunk frames, tagged VLAN 10, to client MACs behind sessions.
    downlink: Vec<Vec<u8>>,
    /// Per session port: a client's broadcast (ARP-like, untagged).
    broadcast: Vec<(PortId, Vec<u8>)>,
}

/// Session ports as the edge numbers them: any non-zero u32.
fn session_port(s: usize) -> PortId {
    PortId(0x1000_0000 + s as u32 * 7919)
}

fn setup_switch(now: Instant, frame_len: usize) -> SwitchBed {
    let mut switch = trunk_switch(now);
    let (mut uplink, mut downlink, mut broadcast) = (vec![], vec![], vec![]);
    for s in 0..SESSIONS {
        let port = session_port(s);
        add_session(&mut switch, now, port, s, frame_len, &mut downlink);
        uplink.push((port, frame(TRUNK_HOST, client_mac(s, 0), None, frame_len)));
        broadcast.push((
            port,
            frame(MacAddr::BROADCAST, client_mac(s, 1), None, frame_len),
        ));
    }
    assert_eq!(switch.fdb_len(), SESSIONS * MACS_PER_SESSION + 1);
    assert_eq!(switch.vlan_ports(10).len(), SESSIONS + 1);
    SwitchBed {
        switch,
        uplink,
        downlink,
        broadcast,
    }
}

fn switch_only(c: &mut Criterion) {
    // One clock reading per run, as a driver takes one per batch: the bench
    // measures the switch, not the clock.
    let now = Instant::now();
    for len in [64usize, 1400] {
        let mut bed = setup_switch(now, len);
        let mut g = c.benchmark_group(format!("switch/{len}B"));
        g.throughput(Throughput::Elements(1));
        let mut i = 0usize;
        g.bench_function("known unicast decision (AP→trunk)", |b| {
            b.iter(|| {
                i = (i + 7) % bed.uplink.len();
                let (port, f) = &bed.uplink[i];
                let (verdict, view) = bed.switch.ingress(now, *port, f);
                let Verdict::Forward { to, .. } = verdict else {
                    unreachable!("{verdict:?}")
                };
                black_box((to, view))
            })
        });
        let mut j = 0usize;
        g.bench_function("known unicast decision (trunk→AP)", |b| {
            b.iter(|| {
                j = (j + 7) % bed.downlink.len();
                let f = &bed.downlink[j];
                let (verdict, view) = bed.switch.ingress(now, TRUNK, f);
                let Verdict::Forward { to, .. } = verdict else {
                    unreachable!("{verdict:?}")
                };
                black_box((to, view))
            })
        });
        // The decision only: which ports get a copy. Writing 1,000 copies
        // is the flood's cost, not the switch's.
        let mut k = 0usize;
        g.bench_function("flood decision (broadcast from AP)", |b| {
            b.iter(|| {
                k = (k + 7) % bed.broadcast.len();
                let (port, f) = &bed.broadcast[k];
                let (verdict, _) = bed.switch.ingress(now, *port, f);
                let Verdict::Flood { vlan } = verdict else {
                    unreachable!("{verdict:?}")
                };
                let targets = bed.switch.vlan_ports(vlan);
                black_box(targets.iter().filter(|&p| p != port).count())
            })
        });
        g.finish();
    }
}

fn slowpath(c: &mut Criterion) {
    for len in [64usize, 1400] {
        let mut bed = Bed::new(len);
        let mut g = c.benchmark_group(format!("slowpath/{len}B"));
        g.throughput(Throughput::Elements(1));
        let mut copy = Vec::with_capacity(2048);
        // Baseline in the same run: the least any path does per frame, one
        // copy of it. Report the others as multiples of this.
        let mut k = 0usize;
        g.bench_function("baseline: copy frame", |b| {
            b.iter(|| {
                k = (k + 7) % bed.uplink.len();
                copy.clear();
                copy.extend_from_slice(&bed.uplink[k].1);
                black_box(copy.len())
            })
        });
        let mut out = Actions::with_capacity(slowpath::TX_BYTES + 65_600);
        for containment in [false, true] {
            let on = if containment { "on" } else { "off" };
            let mut fwd = Bed::forwarder(slowpath::daemon_policy(Instant::now(), containment));
            let mut i = 0usize;
            g.bench_function(
                format!("decap+forward (AP→trunk), containment {on}"),
                |b| {
                    b.iter(|| {
                        i = (i + 7) % bed.uplink.len();
                        out.clear();
                        bed.up(Instant::now(), i, &mut fwd, &mut out);
                        debug_assert!(matches!(out.get(0), Some(Out::Trunk { .. })));
                        black_box(out.byte_len())
                    })
                },
            );
            let mut j = 0usize;
            g.bench_function(
                format!("forward+encap (trunk→AP), containment {on}"),
                |b| {
                    b.iter(|| {
                        j = (j + 7) % bed.downlink.len();
                        out.clear();
                        bed.down(Instant::now(), j, &mut fwd, &mut out);
                        debug_assert!(matches!(out.get(0), Some(Out::Tunnel { .. })));
                        black_box(out.byte_len())
                    })
                },
            );
        }
        g.finish();
    }
}

criterion_group!(benches, switch_only, slowpath);
criterion_main!(benches);
