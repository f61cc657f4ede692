//! The userspace path's test bed, shared by the criterion `switch` bench
//! and `fwdcount`: 1,000 L2TPv3 sessions brought up by the real handshake,
//! 10 client MACs learned behind each (10,000 in all) and a trunk host, the
//! frames of labbench's mix (IPv4/UDP, AP→trunk inside L2TPv3 data
//! messages, trunk→AP tagged VLAN 10), and the daemon's flood policy
//! chain with containment on or off.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use tunterm_control::VlanSet;
use tunterm_core::forward::{
    Actions, EdgeTunnels, FloodPolicy, ForwardConfig, Forwarder, NoTap, Out, Ports, TunnelMtus,
};
use tunterm_core::proto::bridge::{DEFAULT_AGING, PortConfig, PortId, Switch, TRUNK};
use tunterm_core::proto::clients::{ClientConfig, Containment};
use tunterm_core::proto::gre::{GreConfig, GreEndpoint};
use tunterm_core::proto::l2tp::{
    AdmissionConfig, Endpoint, EndpointConfig, Event, Incoming, PwProfile, SessionRequest,
};
use tunterm_core::proto::mcast::{McastConfig, McastPolicy};
use tunterm_core::wire::ether::MacAddr;
use tunterm_core::wire::l2tp::{self, Transport, pw};

/// Tunnel sessions (ports) of the bed.
pub const SESSIONS: usize = 1_000;
/// Client MACs learned behind each session.
pub const MACS_PER_SESSION: usize = 10;
/// The edge's L2TP address.
pub const EDGE: &str = "10.99.0.1:1701";
/// Every AP's address (one connection per session).
pub const AP: &str = "10.99.0.2:40000";
/// The host on the trunk every client talks to.
pub const TRUNK_HOST: MacAddr = MacAddr([0x02, 0xee, 0, 0, 0, 1]);
/// Tunnel packets the daemon queues before one `sendmmsg`
/// (`io::tunnel::SEND_BATCH`).
pub const SEND_BATCH: usize = 64;
/// Bytes of actions the daemon holds before it flushes (its `TX_BYTES`).
pub const TX_BYTES: usize = SEND_BATCH * 2048;

/// An IPv4/UDP frame (on VLAN `vid` if given) of `len` bytes, as
/// labbench's traffic generator sends.
pub fn frame(dst: MacAddr, src: MacAddr, vid: Option<u16>, len: usize) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src.octets(), dst.octets());
    let headers = 14 + 20 + 8 + if vid.is_some() { 4 } else { 0 };
    let payload = vec![0x5a; len.saturating_sub(headers)];
    let mut f = Vec::with_capacity(len);
    let (ip_src, ip_dst) = ([10, 10, 0, 2], [10, 20, 0, 2]);
    let written = match vid {
        Some(v) => eth
            .single_vlan(etherparse::VlanId::try_new(v).expect("a valid VLAN id"))
            .ipv4(ip_src, ip_dst, 64)
            .udp(5000, 5001)
            .write(&mut f, &payload),
        None => eth
            .ipv4(ip_src, ip_dst, 64)
            .udp(5000, 5001)
            .write(&mut f, &payload),
    };
    written.expect("a frame");
    f
}

/// Client `m` behind session `s`.
pub fn client_mac(s: usize, m: usize) -> MacAddr {
    MacAddr([0x02, 0, (s >> 8) as u8, s as u8, 0, m as u8])
}

/// A switch with the trunk (VLANs 10 and 20, native 1) and [`TRUNK_HOST`]
/// learned on VLAN 10.
pub fn trunk_switch(now: Instant) -> Switch {
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
pub fn add_session(
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

/// The daemon's flood policy chain (`Containment` → `McastPolicy` →
/// `FloodAll`), containment on (the defaults: ARP/ND containment and
/// storm control) or off (`arp_nd_proxy: false`, storm control disabled).
pub fn daemon_policy(now: Instant, containment: bool) -> Containment<McastPolicy> {
    let cfg = if containment {
        ClientConfig::default()
    } else {
        ClientConfig {
            proxy: false,
            storm: None,
            ..ClientConfig::default()
        }
    };
    let mcast = McastConfig {
        static_router_ports: vec![TRUNK],
        ..McastConfig::default()
    };
    Containment::wrapping(cfg, McastPolicy::new(mcast, now))
}

/// The edge's side of [`SESSIONS`] sessions and the frames through them.
pub struct Bed {
    /// The edge's L2TP endpoint.
    pub edge: Endpoint,
    /// Its mGRE endpoint (no peers).
    pub gre: GreEndpoint,
    /// Tunnel MTUs.
    pub mtus: TunnelMtus,
    /// The switch, every MAC learned.
    pub switch: Switch,
    /// Per session: (edge sid, data message from the AP to the trunk host).
    pub uplink: Vec<(u32, Vec<u8>)>,
    /// Where the uplink messages come from.
    pub ap: SocketAddr,
    /// Trunk frames, tagged VLAN 10, to client MACs behind sessions.
    pub downlink: Vec<Vec<u8>>,
}

impl Bed {
    /// Bring up [`SESSIONS`] sessions between an AP-side endpoint and the
    /// edge by running the real handshake, then learn the MACs. Frames of
    /// `frame_len` bytes (the inner frame, untagged).
    pub fn new(frame_len: usize) -> Bed {
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
        // Learning queued an announcement per MAC: the driver's first
        // frames would send them; the bench starts after.
        let _ = switch.take_announcements().count();
        Bed {
            edge,
            gre: GreEndpoint::new(GreConfig::default()),
            mtus: TunnelMtus {
                link: 1500,
                profiles: vec![0],
            },
            switch,
            uplink,
            ap: ap_addr,
            downlink,
        }
    }

    /// A pipeline with the daemon's settings for this bed.
    pub fn forwarder<P: FloodPolicy>(policy: P) -> Forwarder<P> {
        Forwarder::with_policy(ForwardConfig::default(), policy)
    }

    /// What the daemon does with a data message from the AP (uplink `i`):
    /// decap, then the pipeline (no DHCP relay, no capture).
    pub fn up<P: FloodPolicy>(
        &mut self,
        now: Instant,
        i: usize,
        fwd: &mut Forwarder<P>,
        out: &mut Actions,
    ) {
        let msg = &self.uplink[i].1;
        if let Incoming::Data {
            session_id,
            payload,
        } = self.edge.handle_datagram(now, Transport::Udp, self.ap, msg)
        {
            let mut ports = Ports {
                switch: &mut self.switch,
                tunnels: EdgeTunnels {
                    l2tp: &mut self.edge,
                    gre: &mut self.gre,
                    mtus: &self.mtus,
                },
                relay: None,
            };
            fwd.handle(
                now,
                PortId(session_id),
                payload,
                &mut ports,
                out,
                &mut NoTap,
            );
        }
    }

    /// What the daemon does with trunk frame `j` (downlink): the pipeline,
    /// the encapsulation included.
    pub fn down<P: FloodPolicy>(
        &mut self,
        now: Instant,
        j: usize,
        fwd: &mut Forwarder<P>,
        out: &mut Actions,
    ) {
        let mut ports = Ports {
            switch: &mut self.switch,
            tunnels: EdgeTunnels {
                l2tp: &mut self.edge,
                gre: &mut self.gre,
                mtus: &self.mtus,
            },
            relay: None,
        };
        fwd.handle(now, TRUNK, &self.downlink[j], &mut ports, out, &mut NoTap);
    }
}

/// Where the actions of the next call will start, as the daemon's
/// `write_actions` takes it.
pub fn mark(out: &Actions) -> (usize, usize) {
    (out.len(), out.immediate_count())
}

/// The daemon's writes without the system calls: each trunk frame from
/// `mark` on (one `send` each; no walk when the call added none), and the
/// queued tunnel packets once a batch is full (grouped as for one
/// `sendmmsg`). Returns the packets "sent".
pub fn write_actions(out: &mut Actions, (mark, immediate): (usize, usize)) -> usize {
    let mut sent = 0;
    let from = if out.immediate_count() == immediate {
        out.len()
    } else {
        mark
    };
    for o in out.iter_from(from) {
        if let Out::Trunk { frame, .. } = o {
            black_box(frame);
            sent += 1;
        }
    }
    if out.tunnel_count() >= SEND_BATCH || out.byte_len() >= TX_BYTES {
        sent += flush_tunnels(out);
    }
    sent
}

/// Hand the queued tunnel packets to a (pretend) `sendmmsg` and clear.
pub fn flush_tunnels(out: &mut Actions) -> usize {
    let mut batch: Vec<(SocketAddr, &[u8])> = Vec::with_capacity(SEND_BATCH);
    for o in out.iter() {
        if let Out::Tunnel { peer, packet, .. } = o {
            batch.push((peer, packet));
        }
    }
    let n = black_box(&batch).len();
    drop(batch);
    out.clear();
    n
}
