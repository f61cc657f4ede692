//! The per-packet slow path on one core, with 1,000 tunnel ports and 10,000
//! learned MACs, in frames per second.
//!
//! - `switch/{len}B`: the learning switch's decision alone
//!   (`Switch::ingress`): known unicast in both directions, and the flood
//!   decision for a broadcast (ingress and the VLAN's member list).
//! - `slowpath/{len}B`: the daemon's userspace path behind real sessions:
//!   L2TPv3 data decap and the forwarding pipeline
//!   (`tunterm_core::forward::Forwarder`: switch, re-tag, MSS check, the
//!   trunk action) AP to trunk; the pipeline on a trunk frame (switch,
//!   re-tag, L2TPv3 encap, the tunnel action) trunk to AP. The baseline the
//!   XDP fast path is measured against.
//!
//! Each group is one function over a bed built once; a new group is one
//! more function in `criterion_group!`.
//!
//! `cargo bench -p tunterm-benches --bench switch [-- --quick]`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{EtherType, Ethernet2Header, SingleVlanHeader, VlanId};
use tunterm_control::VlanSet;
use tunterm_core::forward::{
    Actions, EdgeTunnels, ForwardConfig, Forwarder, NoTap, Outcome, Ports, TunnelMtus,
};
use tunterm_core::proto::bridge::{DEFAULT_AGING, PortConfig, PortId, Switch, TRUNK, Verdict};
use tunterm_core::proto::gre::{GreConfig, GreEndpoint};
use tunterm_core::proto::l2tp::{
    AdmissionConfig, Endpoint, EndpointConfig, Event, Incoming, PwProfile, SessionRequest,
};
use tunterm_core::wire::ether::MacAddr;
use tunterm_core::wire::l2tp::{self, Transport, pw};

const SESSIONS: usize = 1_000;
const MACS_PER_SESSION: usize = 10;
const EDGE: &str = "10.99.0.1:1701";
const AP: &str = "10.99.0.2:40000";

struct Bed {
    edge: Endpoint,
    gre: GreEndpoint,
    mtus: TunnelMtus,
    fwd: Forwarder,
    switch: Switch,
    /// Per session: (edge sid, data message from the AP to a trunk MAC).
    uplink: Vec<(u32, Vec<u8>)>,
    /// Trunk frames, tagged VLAN 10, to client MACs behind sessions.
    downlink: Vec<Vec<u8>>,
}

/// An IPv4-typed frame (on VLAN `vid` if given) padded to `len` bytes.
fn frame(dst: MacAddr, src: MacAddr, vid: Option<u16>, len: usize) -> Vec<u8> {
    let mut eth = Ethernet2Header {
        source: src.octets(),
        destination: dst.octets(),
        ether_type: EtherType::IPV4,
    };
    let mut f = Vec::with_capacity(len);
    if let Some(v) = vid {
        eth.ether_type = EtherType::VLAN_TAGGED_FRAME;
        f.extend_from_slice(&eth.to_bytes());
        let tag = SingleVlanHeader {
            vlan_id: VlanId::try_new(v).expect("a valid VLAN id"),
            ether_type: EtherType::IPV4,
            ..SingleVlanHeader::default()
        };
        f.extend_from_slice(&tag.to_bytes());
    } else {
        f.extend_from_slice(&eth.to_bytes());
    }
    f.resize(len, 0x5a);
    f
}

fn client_mac(s: usize, m: usize) -> MacAddr {
    MacAddr([0x02, 0, (s >> 8) as u8, s as u8, 0, m as u8])
}

/// A switch with the trunk (VLANs 10 and 20, native 1) and [`TRUNK_HOST`]
/// learned on VLAN 10.
fn trunk_switch(now: Instant) -> Switch {
    let mut switch = Switch::new(DEFAULT_AGING);
    switch.add_port(
        TRUNK,
        PortConfig {
            vlans: VlanSet::from_ids([10, 20]).unwrap(),
            untagged_vlan: Some(1),
        },
    );
    let _ = switch.ingress(
        now,
        TRUNK,
        &frame(MacAddr::BROADCAST, TRUNK_HOST, Some(10), 64),
    );
    switch
}

/// Add session `s`'s port (VLANs 10 and 20, native 10), learn its clients'
/// MACs behind it, and push a trunk frame of `frame_len` bytes (tagged VLAN
/// 10) to each of them onto `downlink`.
fn add_session(
    switch: &mut Switch,
    now: Instant,
    port: PortId,
    s: usize,
    frame_len: usize,
    downlink: &mut Vec<Vec<u8>>,
) {
    switch.add_port(
        port,
        PortConfig {
            vlans: VlanSet::from_ids([10, 20]).unwrap(),
            untagged_vlan: Some(10),
        },
    );
    for m in 0..MACS_PER_SESSION {
        let hello = frame(MacAddr::BROADCAST, client_mac(s, m), None, 64);
        let _ = switch.ingress(now, port, &hello);
        downlink.push(frame(client_mac(s, m), TRUNK_HOST, Some(10), frame_len + 4));
    }
}

/// The switch alone, populated as [`setup`] leaves it but with no L2TP
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

const TRUNK_HOST: MacAddr = MacAddr([0x02, 0xee, 0, 0, 0, 1]);

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

/// Bring up SESSIONS sessions between an AP-side endpoint and the edge by
/// running the real handshake, then learn the MACs.
fn setup(frame_len: usize) -> Bed {
    let edge_addr: SocketAddr = EDGE.parse().unwrap();
    let ap_addr: SocketAddr = AP.parse().unwrap();
    let now = Instant::now();
    let mut edge = Endpoint::new(
        EndpointConfig {
            profiles: vec![PwProfile {
                names: vec!["lab".into()],
                hello_interval: Duration::from_secs(60),
                hello_retries: 7,
                transport: None,
            }],
            // Every session's connection comes from one address at once.
            admission: AdmissionConfig {
                sccrq_burst: 0,
                ..AdmissionConfig::default()
            },
            ..EndpointConfig::default()
        },
        1,
    );
    let mut ap = Endpoint::new(
        EndpointConfig {
            accept_incoming: false,
            ..EndpointConfig::default()
        },
        2,
    );
    for _ in 0..SESSIONS {
        let ccid = ap.connect(now, Transport::Udp, edge_addr, Duration::from_secs(60), 7);
        ap.open_session(
            now,
            ccid,
            SessionRequest {
                remote_end_id: "lab".into(),
                pw_type: pw::ETHERNET,
            },
        );
    }
    loop {
        let mut moved = false;
        while let Some(t) = ap.poll_transmit() {
            let _ = edge.handle_datagram(now, Transport::Udp, ap_addr, &t.payload);
            moved = true;
        }
        while let Some(t) = edge.poll_transmit() {
            let _ = ap.handle_datagram(now, Transport::Udp, edge_addr, &t.payload);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    let mut switch = trunk_switch(now);
    let mut edge_sids = vec![];
    while let Some(e) = edge.poll_event() {
        if let Event::SessionUp { session_id, .. } = e {
            edge_sids.push(session_id);
        }
    }
    let mut ap_sids = vec![];
    while let Some(e) = ap.poll_event() {
        if let Event::SessionUp { session_id, .. } = e {
            ap_sids.push(session_id);
        }
    }
    assert_eq!(edge_sids.len(), SESSIONS, "every session up");
    // Pair AP-side and edge-side views of each session.
    let mut uplink = vec![];
    let mut downlink = vec![];
    for (i, &ap_sid) in ap_sids.iter().enumerate() {
        let s = ap.session(ap_sid).unwrap();
        // The AP's remote session id is the edge's local one.
        let edge_sid = s.remote_sid;
        assert!(
            edge_sids.contains(&edge_sid),
            "the edge has the AP's session"
        );
        add_session(
            &mut switch,
            now,
            PortId(edge_sid),
            i,
            frame_len,
            &mut downlink,
        );
        let inner = frame(TRUNK_HOST, client_mac(i, 0), None, frame_len);
        let mut msg = vec![0; l2tp::data_header_len(Transport::Udp, s.cookie_tx.len())];
        l2tp::emit_data_header(Transport::Udp, s.remote_sid, &s.cookie_tx, &mut msg);
        msg.extend_from_slice(&inner);
        uplink.push((edge_sid, msg));
    }
    assert_eq!(switch.fdb_len(), SESSIONS * MACS_PER_SESSION + 1);
    // Learning queued an announcement per MAC: the driver's first frames
    // would send them; the bench starts after.
    let _ = switch.take_announcements().count();
    Bed {
        edge,
        gre: GreEndpoint::new(GreConfig::default()),
        mtus: TunnelMtus {
            link: 1500,
            profiles: vec![0],
        },
        fwd: Forwarder::new(ForwardConfig::default()),
        switch,
        uplink,
        downlink,
    }
}

fn slowpath(c: &mut Criterion) {
    let ap_addr: SocketAddr = AP.parse().unwrap();
    for len in [64usize, 1400] {
        let mut bed = setup(len);
        let mut g = c.benchmark_group(format!("slowpath/{len}B"));
        g.throughput(Throughput::Elements(1));
        let mut out = Vec::with_capacity(2048);
        // Baseline in the same run: the least any path does per frame, one
        // copy of it. Report the others as multiples of this.
        let mut k = 0usize;
        g.bench_function("baseline: copy frame", |b| {
            b.iter(|| {
                k = (k + 7) % bed.uplink.len();
                out.clear();
                out.extend_from_slice(&bed.uplink[k].1);
                black_box(out.len())
            })
        });
        let mut actions = Actions::with_capacity(64 * 1024);
        let mut i = 0usize;
        g.bench_function("decap+forward (AP→trunk)", |b| {
            b.iter(|| {
                i = (i + 7) % bed.uplink.len();
                let now = Instant::now();
                let msg = &bed.uplink[i].1;
                actions.clear();
                if let Incoming::Data {
                    session_id,
                    payload,
                } = bed.edge.handle_datagram(now, Transport::Udp, ap_addr, msg)
                {
                    let mut ports = Ports {
                        switch: &mut bed.switch,
                        tunnels: EdgeTunnels {
                            l2tp: &mut bed.edge,
                            gre: &mut bed.gre,
                            mtus: &bed.mtus,
                        },
                        relay: None,
                    };
                    let o = bed.fwd.handle(
                        now,
                        PortId(session_id),
                        payload,
                        &mut ports,
                        &mut actions,
                        &mut NoTap,
                    );
                    debug_assert!(matches!(o, Outcome::Forward { to: TRUNK, .. }));
                }
                black_box(actions.byte_len())
            })
        });
        let mut j = 0usize;
        g.bench_function("forward+encap (trunk→AP)", |b| {
            b.iter(|| {
                j = (j + 7) % bed.downlink.len();
                let now = Instant::now();
                let f = &bed.downlink[j];
                actions.clear();
                let mut ports = Ports {
                    switch: &mut bed.switch,
                    tunnels: EdgeTunnels {
                        l2tp: &mut bed.edge,
                        gre: &mut bed.gre,
                        mtus: &bed.mtus,
                    },
                    relay: None,
                };
                let o = bed
                    .fwd
                    .handle(now, TRUNK, f, &mut ports, &mut actions, &mut NoTap);
                debug_assert!(matches!(o, Outcome::Forward { .. }));
                black_box(actions.byte_len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, switch_only, slowpath);
criterion_main!(benches);
