//! The lab both tables run in: L2TPv3 sessions brought up with the real
//! handshake (every transport, family, cookie size), mGRE peers brought up
//! by their first packet, a userspace switch that has learned a trunk host
//! and every client, and the userspace path on a packet: the kernel's
//! receive (modelled), the endpoints' decapsulation, then the daemon's own
//! forwarding pipeline (`tunterm_core::forward`: switch, re-tag, MSS clamp,
//! too-big, encapsulation), as `tunterm run` runs it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::mirror::{self, ApLink};
use super::packets::{self, Ip, Ip6, Mac};
use tunterm_control::VlanSet;
use tunterm_core::forward::{
    self, Actions, Carrier, Encap, ForwardConfig, Forwarder, Kind, NoTap, Out, Outcome, Ports,
    Reason, TunnelPorts,
};
use tunterm_core::proto::bridge::{DropReason, PortConfig, PortId, Switch, TRUNK, Verdict};
use tunterm_core::proto::gre::{
    GreConfig, GreDrop, GreEndpoint, GreEvent, GreIncoming, is_gre_port,
};
use tunterm_core::proto::l2tp::{
    DataDrop, DataSession, Endpoint, EndpointConfig, Event, Incoming, PwProfile, SessionRequest,
    SessionState,
};
use tunterm_core::wire::l2tp::{Transport, pw};
use tunterm_ebpf::Table as _;
use tunterm_ebpf::maps::{Counters, tt_counter, tt_fdb_key};
use tunterm_ebpf::{Action, FastPath, PortIndex};

/// Addresses from the documentation ranges: nothing is ever sent (a test
/// run transmits nothing, a redirect only reports XDP_REDIRECT).
pub const EDGE: &str = "192.0.2.1:1701";
pub const EDGE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const EDGE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const TRUNK_IFINDEX: u32 = 7;
pub const AP_IFINDEX: u32 = 9;
/// The host on the trunk every client talks to.
pub const HOST: Mac = [0x02, 0xee, 0, 0, 0, 1];

/// `m` with its group bit set: the multicast address the FDB must never
/// take for `m` (it keys a unicast MAC's other 47 bits).
pub fn group_twin(m: Mac) -> Mac {
    let mut g = m;
    g[0] |= 1;
    g
}
/// Client frame payload length after the ethertype.
pub const LEN: usize = 60;
/// The tunnel MTU of the templates.
pub const MTU: u16 = 1500;

/// How the edge reaches the APs (the templates' outer headers).
pub fn ap_link() -> ApLink {
    ApLink {
        ifindex: AP_IFINDEX,
        src_mac: packets::EDGE_MAC,
        next_hop_mac: packets::GW_MAC,
        local4: Some(EDGE4),
        local6: Some(EDGE6),
        ttl: 64,
        dont_fragment: true,
        mtu: MTU,
    }
}

/// One session as both ends see it after the handshake.
pub struct Tunnel {
    /// The edge side (one endpoint per cookie size: the size we assign is
    /// an endpoint-wide setting; the daemon has one endpoint for all).
    pub edge: Endpoint,
    /// The AP side.
    pub apside: Endpoint,
    /// The edge's view of the session.
    pub session: DataSession,
    /// The AP's view.
    pub ap_view: DataSession,
    /// The session id and cookie the AP puts on data (its view).
    pub ap_sends_sid: u32,
    pub ap_sends_cookie: Vec<u8>,
    pub ap: SocketAddr,
    pub edge_addr: SocketAddr,
    pub transport: Transport,
    pub port: PortConfig,
    pub client: Mac,
}

impl Tunnel {
    pub fn up(
        seed: u64,
        cookie_len: usize,
        sublayer: bool,
        transport: Transport,
        ap: SocketAddr,
        port: PortConfig,
    ) -> Tunnel {
        let now = Instant::now();
        let edge_ip: IpAddr = if ap.is_ipv4() {
            EDGE4.into()
        } else {
            EDGE6.into()
        };
        let edge_addr = match transport {
            Transport::Udp => SocketAddr::new(edge_ip, 1701),
            Transport::Ip => SocketAddr::new(edge_ip, 0),
        };
        let mut edge = Endpoint::new(
            EndpointConfig {
                cookie_len,
                profiles: vec![PwProfile {
                    names: vec!["lab".into()],
                    hello_interval: Duration::from_secs(60),
                    hello_retries: 7,
                    transport: None,
                }],
                ..EndpointConfig::default()
            },
            seed,
        );
        let mut apside = Endpoint::new(
            EndpointConfig {
                accept_incoming: false,
                l2_sublayer: sublayer,
                ..EndpointConfig::default()
            },
            seed + 1000,
        );
        let ccid = apside.connect(now, transport, edge_addr, Duration::from_secs(60), 7);
        let opened = apside.open_session(
            now,
            ccid,
            SessionRequest {
                remote_end_id: "lab".into(),
                pw_type: pw::ETHERNET,
            },
        );
        assert!(opened, "session requested");
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = apside.poll_transmit() {
                let _ = edge.handle_datagram(now, transport, ap, &t.payload);
                moved = true;
            }
            while let Some(t) = edge.poll_transmit() {
                let _ = apside.handle_datagram(now, transport, edge_addr, &t.payload);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let mut sid = None;
        while let Some(e) = edge.poll_event() {
            if let Event::SessionUp { session_id, .. } = e {
                sid = Some(session_id);
            }
        }
        let sid = sid.expect("the edge brought the session up");
        let session = edge.session(sid).expect("session").clone();
        assert_eq!(session.state, SessionState::Established);
        assert_eq!(session.cookie_rx.len(), cookie_len);
        assert_eq!(session.sublayer, sublayer, "sublayer negotiated");
        assert_eq!(session.transport, transport);
        let mut ap_view = None;
        while let Some(e) = apside.poll_event() {
            if let Event::SessionUp { session_id, .. } = e {
                ap_view = apside.session(session_id).cloned();
            }
        }
        let ap_view = ap_view.expect("the AP brought the session up");
        assert_eq!(ap_view.remote_sid, sid, "both ends agree on the id");
        Tunnel {
            edge,
            apside,
            ap_sends_sid: ap_view.remote_sid,
            ap_sends_cookie: ap_view.cookie_tx.as_slice().to_vec(),
            session,
            ap_view,
            ap,
            edge_addr,
            transport,
            port,
            client: [0x02, 0xc1, 0, 0, 0, seed as u8],
        }
    }

    pub fn port_id(&self) -> PortId {
        mirror::port_of(&self.session)
    }

    /// The AP's address, for the IPv4 UDP cases.
    pub fn ap4(&self) -> SocketAddrV4 {
        match self.ap {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => panic!("an IPv4 case on an IPv6 tunnel"),
        }
    }

    /// A data message from the AP carrying `frame` (sublayer word 0 when
    /// the session has one).
    pub fn data(&self, frame: &[u8]) -> Vec<u8> {
        self.data_with(self.ap, &self.ap_sends_cookie, self.sublayer_word(0), frame)
    }

    pub fn sublayer_word(&self, w: u32) -> Option<u32> {
        self.session.sublayer.then_some(w)
    }

    pub fn data_with(
        &self,
        from: impl Into<SocketAddr>,
        cookie: &[u8],
        sl: Option<u32>,
        frame: &[u8],
    ) -> Vec<u8> {
        self.data_over(
            self.transport,
            from.into(),
            self.ap_sends_sid,
            cookie,
            sl,
            frame,
        )
    }

    /// A data message over `transport` (which may not be the session's).
    pub fn data_over(
        &self,
        transport: Transport,
        from: SocketAddr,
        sid: u32,
        cookie: &[u8],
        sl: Option<u32>,
        frame: &[u8],
    ) -> Vec<u8> {
        let msg = match transport {
            Transport::Udp => packets::l2tp_data(sid, cookie, sl, frame),
            Transport::Ip => packets::l2tp_ip_data(sid, cookie, sl, frame),
        };
        wrap(transport, from, self.edge_addr.ip(), &msg)
    }
}

/// An L2TP message from `from` to the edge at `edge`, over `transport`.
pub fn wrap(transport: Transport, from: SocketAddr, edge: IpAddr, msg: &[u8]) -> Vec<u8> {
    match (transport, from, edge) {
        (Transport::Udp, SocketAddr::V4(f), IpAddr::V4(e)) => {
            packets::udp4(Ip::udp(f, SocketAddrV4::new(e, 1701)), msg)
        }
        (Transport::Udp, SocketAddr::V6(f), IpAddr::V6(e)) => packets::udp6(
            Ip6 {
                src: *f.ip(),
                dst: e,
                ext: None,
            },
            f.port(),
            1701,
            msg,
        ),
        (Transport::Ip, SocketAddr::V4(f), IpAddr::V4(e)) => packets::ip4(*f.ip(), e, 115, msg),
        (Transport::Ip, SocketAddr::V6(f), IpAddr::V6(e)) => packets::ip6(
            Ip6 {
                src: *f.ip(),
                dst: e,
                ext: None,
            },
            115,
            msg,
        ),
        _ => panic!("families differ"),
    }
}

/// A GRE packet from `from` to the edge (IPv4 or IPv6 by `from`).
pub fn gre_from(from: IpAddr, gre: &[u8]) -> Vec<u8> {
    match from {
        IpAddr::V4(a) => packets::ip4(a, EDGE4, 47, gre),
        IpAddr::V6(a) => packets::ip6(
            Ip6 {
                src: a,
                dst: EDGE6,
                ext: None,
            },
            47,
            gre,
        ),
    }
}

/// One mGRE peer.
pub struct GreAp {
    pub addr: IpAddr,
    pub key: Option<u32>,
    pub port: PortId,
    pub client: Mac,
    pub sequenced: bool,
}

impl GreAp {
    /// A data packet carrying `frame` (with a sequence number when the peer
    /// sequences).
    pub fn data(&self, frame: &[u8]) -> Vec<u8> {
        let seq = self.sequenced.then_some(100);
        gre_from(
            self.addr,
            &packets::gre(0x6558, false, self.key, seq, frame),
        )
    }
}

/// The fast path's expected result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fast<C> {
    Redirect(Vec<u8>),
    Drop(C),
    Pass(C),
    /// Whatever the slow path decides, the fast path must agree with it
    /// (the truncation sweeps): redirect only to the slow path's frame,
    /// drop only for the slow path's reason, else pass untouched.
    Agree,
}

/// Fill `bpf`'s FDB to 90% of its slots with clients on `t`'s port and
/// VLAN 10 (apsim's MACs, 02:AP:AP:AP:C:C, ten per AP), so that keys sit
/// at their home slot, elsewhere in their first bucket and in their
/// second bucket (asserted); the MACs put in.
pub fn fill_fdb(bpf: &mut FastPath, t: &Tunnel) -> Vec<Mac> {
    let mut fdb = bpf.fdb().expect("fdb");
    let entry = fdb
        .get(&tt_fdb_key::new(10, t.client))
        .expect("the lab's client is in the FDB");
    let want = fdb.capacity() * 9 / 10 - fdb.placement().keys;
    let mut macs = Vec::with_capacity(want);
    for i in 0u32.. {
        if macs.len() == want {
            break;
        }
        // tunterm_lab::apsim::synthetic_client_mac(i / 10 + 1, i % 10).
        let [_, a2, a1, a0] = (i / 10 + 1).to_be_bytes();
        let mac = [2, a2, a1, a0, 0, (i % 10) as u8];
        if fdb.put(tt_fdb_key::new(10, mac), entry).is_ok() {
            macs.push(mac);
        }
    }
    let p = fdb.placement();
    eprintln!("FDB of {} slots: {p:?}", fdb.capacity());
    assert!(
        p.at_home < p.keys && p.in_second > 0,
        "the fill covers every placement: {p:?}"
    );
    macs
}

/// Fails unless `run` (a frame from or to each of `macs` through a
/// program) redirects every one: `what` names the failure, e.g. "not
/// forwarded".
pub fn assert_all_redirected(macs: &[Mac], what: &str, mut run: impl FnMut(Mac) -> Action) {
    let slow: Vec<_> = macs
        .iter()
        .map(|&mac| (mac, run(mac)))
        .filter(|&(_, action)| action != Action::Redirect)
        .collect();
    assert!(
        slow.is_empty(),
        "{} of {} clients {what}, e.g. {:02x?}",
        slow.len(),
        macs.len(),
        &slow[..slow.len().min(5)]
    );
}

/// Fails the test, saying why, unless it runs as root: a table that was
/// not run must not pass.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the XDP table tests need root (euid is {euid}): they load BPF programs and \
         run them with BPF_PROG_TEST_RUN; run the tests as root"
    );
}

/// One XDP run against the table's `fast`: the action it wants, and the
/// counters (`rx` once and exactly one other slot once: the case's, or
/// `redirect` for a redirect). Returns what went wrong, if anything.
pub fn check_fast(
    fast: &Fast<tt_counter>,
    got: Action,
    delta: &Counters,
    rx: tt_counter,
    redirect: tt_counter,
) -> Vec<String> {
    let want = match fast {
        Fast::Redirect(_) => Some((Action::Redirect, redirect)),
        Fast::Drop(r) => Some((Action::Drop, *r)),
        Fast::Pass(r) => Some((Action::Pass, *r)),
        Fast::Agree => None,
    };
    let mut wrong = Vec::new();
    if let Some((a, _)) = want
        && got != a
    {
        wrong.push(format!("fast path: {got:?}, want {a:?}"));
    }
    let rx = rx as usize;
    let others: Vec<usize> = (0..delta.0.len())
        .filter(|&i| i != rx && delta.0[i] != 0)
        .collect();
    let ok = delta.0[rx] == 1
        && others.len() == 1
        && delta.0[others[0]] == 1
        && want.is_none_or(|(_, w)| others == [w as usize]);
    if !ok {
        wrong.push(format!(
            "counters moved: RX {} and {others:?}, want RX once and {want:?}",
            delta.0[rx]
        ));
    }
    wrong
}

/// The slow path's result on the AP side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slow {
    /// No datagram reaches a tunnel socket as it stands.
    Kernel,
    /// A control message, consumed by the endpoint.
    Control,
    /// A GRE keepalive, answered.
    Keepalive,
    EndpointDrop(DataDrop),
    GreDrop(GreDrop),
    SwitchDrop(DropReason),
    ToTrunk(Vec<u8>),
    ToTunnel(PortId),
    Flood(u16),
    /// Something else the pipeline did.
    Other(String),
}

/// The slow path's result on the trunk side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrunkSlow {
    /// Into a tunnel: the port, where the kernel sends it, and the IP
    /// payload (UDP payload over UDP) the sockets are handed.
    ToTunnel {
        port: PortId,
        peer: SocketAddr,
        payload: Vec<u8>,
    },
    SwitchDrop(DropReason),
    Flood(u16),
    /// Known behind the trunk itself.
    Local,
    /// No session or peer behind a port the switch forwards to.
    NoTunnel,
    /// Something else the pipeline did (an ICMP answer, fragments, a drop
    /// for size).
    Other(String),
}

/// The lab's tunnels as the pipeline sees them: several L2TP endpoints
/// (one per cookie size, see [`Tunnel::edge`]) and the mGRE endpoint, all
/// with the templates' MTU.
struct LabTunnels<'a> {
    tunnels: &'a mut [Tunnel],
    gre: &'a mut GreEndpoint,
}

impl TunnelPorts for LabTunnels<'_> {
    fn encap(&mut self, port: PortId, hdr: &mut Vec<u8>) -> Option<Encap> {
        if is_gre_port(port) {
            let ip = self.gre.encap_header(port, hdr)?;
            return Some(Encap {
                carrier: Carrier::Gre,
                peer: SocketAddr::new(ip, 0),
                mtu: MTU,
            });
        }
        let t = self
            .tunnels
            .iter_mut()
            .find(|t| t.session.local_sid == port.0)?;
        let (transport, peer) = t.edge.encap_header(port.0, hdr)?;
        Some(Encap {
            carrier: Carrier::L2tp(transport),
            peer,
            mtu: MTU,
        })
    }

    fn overhead(&self, port: PortId) -> Option<(usize, u16)> {
        if is_gre_port(port) {
            return Some((forward::gre_overhead(&self.gre.peer(port)?), MTU));
        }
        let t = self
            .tunnels
            .iter()
            .find(|t| t.session.local_sid == port.0)?;
        Some((forward::l2tp_overhead(t.edge.session(port.0)?), MTU))
    }

    fn ap(&self, _port: PortId) -> Option<(&str, IpAddr)> {
        None
    }
}

pub struct Lab {
    pub tunnels: Vec<Tunnel>,
    pub gre: GreEndpoint,
    pub gre_aps: Vec<GreAp>,
    pub mgre_port: PortConfig,
    pub trunk_port: PortConfig,
    pub switch: Switch,
    pub now: Instant,
    /// The daemon's forwarding pipeline, and its actions for one packet.
    pub fwd: Forwarder,
    pub out: Actions,
    /// The tunnels' port indexes, handed out as the daemon does.
    pub ports: PortIndex,
}

impl Lab {
    pub fn new() -> Lab {
        let ap = |port| SocketAddr::V4(SocketAddrV4::new([198, 51, 100, 2].into(), port));
        let ap6 = |n: u16, port| {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)),
                port,
            )
        };
        let ap_ip = |n: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)), 0);
        let cfg = |v: &[u16], u: Option<u16>| PortConfig {
            vlans: VlanSet::from_ids(v.iter().copied()).unwrap(),
            untagged_vlan: u,
        };
        let tunnels = vec![
            // 0: UDP/IPv4, no cookie; VLAN 1 is the trunk's untagged VLAN.
            Tunnel::up(
                1,
                0,
                false,
                Transport::Udp,
                ap(40000),
                cfg(&[1, 10, 20], Some(10)),
            ),
            // 1: UDP/IPv4, 4-byte cookie.
            Tunnel::up(
                2,
                4,
                false,
                Transport::Udp,
                ap(40001),
                cfg(&[10, 20], Some(10)),
            ),
            // 2: UDP/IPv4, 8-byte cookie, tagged only.
            Tunnel::up(3, 8, false, Transport::Udp, ap(40002), cfg(&[10, 20], None)),
            // 3: UDP/IPv4, 4-byte cookie and the sublayer, untagged → 20.
            Tunnel::up(
                4,
                4,
                true,
                Transport::Udp,
                ap(40003),
                cfg(&[10, 20], Some(20)),
            ),
            // 4: UDP/IPv6, 4-byte cookie.
            Tunnel::up(
                5,
                4,
                false,
                Transport::Udp,
                ap6(5, 40004),
                cfg(&[10, 20], Some(10)),
            ),
            // 5: IP/IPv4, no cookie.
            Tunnel::up(
                6,
                0,
                false,
                Transport::Ip,
                ap_ip(6),
                cfg(&[10, 20], Some(10)),
            ),
            // 6: IP/IPv4, 8-byte cookie and the sublayer, tagged only.
            Tunnel::up(7, 8, true, Transport::Ip, ap_ip(7), cfg(&[10, 20], None)),
            // 7: IP/IPv6, 4-byte cookie.
            Tunnel::up(
                8,
                4,
                false,
                Transport::Ip,
                ap6(8, 0),
                cfg(&[10, 20], Some(20)),
            ),
        ];
        // One endpoint keeps its sessions' fast-path slots distinct; these
        // are several (one per cookie size), whose seeds happen to.
        let mut slots: Vec<u32> = tunnels
            .iter()
            .map(|t| tunterm_ebpf::tables::slot_of(t.session.local_sid))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), tunnels.len(), "distinct session slots");

        let now = Instant::now();
        let mut switch = Switch::new(Duration::from_secs(300));
        let trunk_port = cfg(&[10, 20, 30], Some(1));
        switch.add_port(TRUNK, trunk_port.clone());
        for t in &tunnels {
            switch.add_port(t.port_id(), t.port.clone());
        }
        let mgre_port = cfg(&[10, 20], Some(10));
        let mut lab = Lab {
            tunnels,
            gre: GreEndpoint::new(GreConfig::default()),
            gre_aps: Vec::new(),
            mgre_port,
            trunk_port,
            switch,
            now,
            fwd: Forwarder::new(ForwardConfig {
                link_mtu: MTU,
                icmp_src4: Some(EDGE4),
                icmp_src6: Some(EDGE6),
            }),
            out: Actions::default(),
            ports: PortIndex::new(),
        };
        // The mGRE peers, made by their first packet (a broadcast).
        for (i, (addr, key, sequenced)) in [
            ("198.51.100.20", None, false),
            ("198.51.100.21", Some(0x1234), false),
            ("2001:db8:1::22", Some(7), false),
            ("2001:db8:1::23", None, false),
            ("198.51.100.24", Some(0), true),
        ]
        .into_iter()
        .enumerate()
        {
            let mut g = GreAp {
                addr: addr.parse().expect("addr"),
                key,
                port: PortId(0),
                client: [0x02, 0xc2, 0, 0, 0, i as u8],
                sequenced,
            };
            let first = g.data(&packets::client([0xff; 6], g.client, None, LEN));
            match lab.slow_path(&first) {
                Slow::Flood(10) => {}
                other => panic!("first GRE packet: {other:?}"),
            }
            g.port = lab
                .switch
                .lookup(10, &tunterm_core::wire::ether::MacAddr(g.client))
                .expect("learned");
            assert!(is_gre_port(g.port));
            lab.gre_aps.push(g);
        }
        for port in lab
            .tunnels
            .iter()
            .map(|t| t.port_id())
            .chain(lab.gre_aps.iter().map(|g| g.port))
        {
            lab.ports.assign(port.0).expect("a port index");
        }
        // The trunk host on VLANs 1 (untagged), 10 and 20.
        for tci in [None, Some(10), Some(20)] {
            let (v, _) =
                lab.switch
                    .ingress(now, TRUNK, &packets::client([0xff; 6], HOST, tci, LEN));
            assert!(matches!(v, Verdict::Flood { .. }), "{v:?}");
        }
        // Each client on each VLAN its tunnel allows.
        let mut learn = Vec::new();
        for t in &lab.tunnels {
            for vid in t.port.vlans.iter() {
                learn.push((t.port_id(), t.client, vid));
            }
        }
        for g in &lab.gre_aps {
            for vid in lab.mgre_port.vlans.iter() {
                learn.push((g.port, g.client, vid));
            }
        }
        for (port, client, vid) in learn {
            let f = packets::client([0xff; 6], client, Some(vid), LEN);
            let (v, _) = lab.switch.ingress(now, port, &f);
            assert!(matches!(v, Verdict::Flood { .. }), "{v:?}");
        }
        lab
    }

    /// Mirror the sessions, peers, templates, trunk and FDB into the maps.
    pub fn mirror_into(&self, bpf: &mut FastPath) {
        let link = ap_link();
        let trunk = mirror::TrunkLink {
            ifindex: TRUNK_IFINDEX,
            untagged_vlan: self.trunk_port.untagged_vlan,
        };
        let mut sessions = bpf.sessions().expect("sessions map");
        for t in &self.tunnels {
            let (k, v) = mirror::session_entry(&t.session, &t.port, self.idx(t.port_id()), &trunk)
                .expect("an established session has an entry");
            sessions.put(k, v).expect("insert session");
        }
        let mut peers = bpf.gre_peers().expect("gre_peers map");
        let stats: Vec<_> = self.gre.peers(self.now).collect();
        assert_eq!(stats.len(), self.gre_aps.len());
        for p in &stats {
            let (k, v) =
                mirror::gre_peer_entry(p, &self.mgre_port, self.idx(p.port), &trunk).expect("peer");
            peers.insert(k, v, 0).expect("insert peer");
        }
        let mut templates = bpf.templates().expect("templates map");
        for t in &self.tunnels {
            if let Ok((k, v)) =
                mirror::session_template(&t.session, &t.port, self.idx(t.port_id()), &link)
            {
                templates.put(k, v).expect("insert template");
            }
        }
        for p in &stats {
            if let Ok((k, v)) = mirror::gre_template(p, &self.mgre_port, self.idx(p.port), &link) {
                templates.put(k, v).expect("insert template");
            }
        }
        bpf.set_trunk(&mirror::trunk_entry(&self.trunk_port).expect("trunk"))
            .expect("trunk map");
        let mut fdb = bpf.fdb().expect("fdb map");
        let mut n = 0;
        for (k, v) in mirror::fdb_entries(&self.switch, &self.ports) {
            fdb.put(k, v).expect("insert fdb");
            n += 1;
        }
        assert_eq!(n, self.switch.fdb_len());
    }

    /// The port index of a tunnel of the lab.
    pub fn idx(&self, port: PortId) -> u16 {
        self.ports
            .get(port.0)
            .expect("every tunnel has a port index")
    }

    /// The userspace path on a packet from the AP side.
    pub fn slow_path(&mut self, packet: &[u8]) -> Slow {
        let Some(rx) = packets::kernel_rx(packet) else {
            return Slow::Kernel;
        };
        let (port, payload) = match rx.proto {
            47 => {
                let got = self
                    .gre
                    .handle_packet(self.now, rx.src.ip(), rx.dst, rx.payload);
                while let Some(ev) = self.gre.poll_event() {
                    if let GreEvent::PeerUp { port, .. } = ev {
                        self.switch.add_port(port, self.mgre_port.clone());
                    }
                }
                while self.gre.poll_transmit().is_some() {}
                match got {
                    GreIncoming::Data { port, payload } => (port, payload),
                    GreIncoming::Keepalive => return Slow::Keepalive,
                    GreIncoming::Dropped(d) => return Slow::GreDrop(d),
                }
            }
            proto => {
                let transport = if proto == 17 {
                    Transport::Udp
                } else {
                    Transport::Ip
                };
                let at = if proto == 17 { 4 } else { 0 };
                // The endpoint that owns the session id (see Tunnel::edge).
                let sid = rx
                    .payload
                    .get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let idx = self
                    .tunnels
                    .iter()
                    .position(|t| Some(t.session.local_sid) == sid)
                    .or_else(|| self.tunnels.iter().position(|t| t.transport == transport))
                    .unwrap_or(0);
                let edge = &mut self.tunnels[idx].edge;
                match edge.handle_datagram(self.now, transport, rx.src, rx.payload) {
                    Incoming::Control => return Slow::Control,
                    Incoming::Dropped(d) => return Slow::EndpointDrop(d),
                    Incoming::Data {
                        session_id,
                        payload,
                    } => (PortId(session_id), payload),
                }
            }
        };
        match self.forward(port, payload) {
            Outcome::Forward { to, .. } if to == TRUNK => self
                .out
                .iter()
                .find_map(|o| match o {
                    Out::Trunk {
                        kind: Kind::Frame,
                        frame,
                    } => Some(Slow::ToTrunk(frame.to_vec())),
                    _ => None,
                })
                .unwrap_or_else(|| Slow::Other(format!("{:?}", self.outs()))),
            Outcome::Forward { to, .. } => Slow::ToTunnel(to),
            Outcome::Flood { vlan } => Slow::Flood(vlan),
            Outcome::Drop(Reason::Switch(r)) => Slow::SwitchDrop(r),
            other => Slow::Other(format!("{other:?}")),
        }
    }

    /// The daemon's pipeline on `frame` from `port`; its actions are in
    /// `self.out`.
    fn forward(&mut self, port: PortId, frame: &[u8]) -> Outcome {
        self.out.clear();
        let mut ports = Ports {
            switch: &mut self.switch,
            tunnels: LabTunnels {
                tunnels: &mut self.tunnels,
                gre: &mut self.gre,
            },
            relay: None,
        };
        self.fwd
            .handle(self.now, port, frame, &mut ports, &mut self.out, &mut NoTap)
    }

    /// The actions of the last packet, for messages.
    fn outs(&self) -> Vec<String> {
        self.out.iter().map(|o| format!("{o:?}")).collect()
    }

    /// The userspace path on a frame from the trunk (the driver's egress:
    /// the port's egress tag, the tunnel's encap header, the frame).
    pub fn slow_trunk(&mut self, frame: &[u8]) -> TrunkSlow {
        match self.forward(TRUNK, frame) {
            Outcome::Forward { to, .. } => {
                for o in self.out.iter() {
                    match o {
                        Out::Tunnel {
                            port,
                            peer,
                            kind: Kind::Frame,
                            packet,
                            ..
                        } if port == to => {
                            return TrunkSlow::ToTunnel {
                                port,
                                peer,
                                payload: packet.to_vec(),
                            };
                        }
                        Out::Drop {
                            reason: Reason::NoTunnel,
                            ..
                        } => return TrunkSlow::NoTunnel,
                        _ => {}
                    }
                }
                TrunkSlow::Other(format!("{:?}", self.outs()))
            }
            Outcome::Flood { vlan } => TrunkSlow::Flood(vlan),
            Outcome::Drop(Reason::Switch(DropReason::Local)) => TrunkSlow::Local,
            Outcome::Drop(Reason::Switch(r)) => TrunkSlow::SwitchDrop(r),
            other => TrunkSlow::Other(format!("{other:?}")),
        }
    }
}
