//! The multipoint GRE endpoint: every AP that tunnels Ethernet to the edge
//! over GRE (protocol type 0x6558) becomes a port of the learning switch.
//! It owns the peer table (an AP is its source address plus the GRE key when
//! it uses one), admission, per-peer sequence numbers, Cisco-style keepalive
//! reflection and the removal of silent peers. Sans-IO: the driver reads
//! GRE from a raw IP socket (protocol 47, IPv4 or IPv6) and hands over the
//! IP payload and its source address.
//!
//! Keepalives (the Cisco scheme, so real gear interoperates): the sender
//! wraps, in a GRE packet of protocol type 0x0800 (0x86DD over IPv6), an IP
//! packet from the receiver's address to its own whose payload is a GRE
//! header of protocol type 0. The receiver decapsulates and routes the inner
//! packet, which takes it back to the sender as a GRE packet of protocol 0:
//! proof both directions work. tunterm reflects only to the sender itself,
//! so it is no relay for packets addressed elsewhere.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::proto::bridge::PortId;
use crate::wire::gre::{self, GreHeader};
use crate::wire::{ipv4, ipv6};

/// First switch port id of GRE peers: peer n gets `GRE_PORT_BASE + n`. The
/// range `GRE_PORT_BASE..=u32::MAX` belongs to GRE; other tunnel kinds
/// (L2TP session ids) must stay out of it.
pub const GRE_PORT_BASE: u32 = 0xF000_0000;
/// Number of port ids in the GRE range.
pub const GRE_PORT_COUNT: u32 = 0x1000_0000;
/// The keepalive interval APs use by default.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Silence after which a peer is removed by default: three keepalives.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Peer table size by default.
pub const DEFAULT_MAX_PEERS: usize = 16_384;
/// A sequence number at most this far behind the expected one is a late or
/// duplicated packet and is dropped; further behind, the peer restarted its
/// counter and we follow it.
pub const SEQ_REORDER_WINDOW: u32 = 1024;

/// Shortest payload that is an Ethernet frame (the MAC header).
const ETHER_HEADER_LEN: usize = 14;

/// Whether `port` is in the range GRE peers are numbered from.
pub fn is_gre_port(port: PortId) -> bool {
    port.0 >= GRE_PORT_BASE
}

/// Settings of a [`GreEndpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreConfig {
    /// A peer silent this long (no data, no keepalive) is removed.
    pub peer_timeout: Duration,
    /// Source prefixes peers may come from (`tunterm_ap_subnets`); empty:
    /// any.
    pub admit: Vec<IpNet>,
    /// Most peers at once; packets that would add one more are dropped.
    pub max_peers: usize,
}

impl Default for GreConfig {
    fn default() -> Self {
        GreConfig {
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            admit: Vec::new(),
            max_peers: DEFAULT_MAX_PEERS,
        }
    }
}

/// What identifies a GRE peer (an AP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PeerKey {
    /// The outer source address.
    pub addr: IpAddr,
    /// The GRE key, when the peer sends one.
    pub key: Option<u32>,
}

/// A live peer as written across a restart ([`GreEndpoint::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GrePeerSnapshot {
    /// Its switch port.
    pub port: u32,
    /// Its address.
    pub addr: IpAddr,
    /// Its GRE key.
    pub key: Option<u32>,
    /// Our address it sent to.
    pub local: IpAddr,
}

/// What became of a packet given to [`GreEndpoint::handle_packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreIncoming<'a> {
    /// An Ethernet frame from a peer, for the switch.
    Data {
        /// The peer's switch port.
        port: PortId,
        /// The inner Ethernet frame.
        payload: &'a [u8],
    },
    /// A keepalive, answered: drain [`GreEndpoint::poll_transmit`].
    Keepalive,
    /// Dropped and counted.
    Dropped(GreDrop),
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GreDrop {
    /// Not a valid GRE packet (see [`gre::GreError`]), an Ethernet payload
    /// shorter than a MAC header, or a keepalive with a broken inner packet.
    Malformed,
    /// The source is outside the admitted prefixes, or the endpoint is not
    /// accepting new peers.
    NotAdmitted,
    /// A protocol type other than Ethernet or a keepalive.
    WrongProtocol,
    /// A new peer while the table is full.
    TooManyPeers,
    /// A sequence number at or behind one already received.
    SequenceOld,
    /// A keepalive whose inner packet is not addressed back to its sender.
    BadKeepalive,
}

/// Why a peer's port went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerDownReason {
    /// Nothing heard for [`GreConfig::peer_timeout`].
    Timeout,
    /// [`GreEndpoint::remove_peer`] or [`GreEndpoint::remove_all`].
    Removed,
}

/// Something the driver should know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreEvent {
    /// A new peer: add `port` to the switch.
    PeerUp {
        /// Its switch port.
        port: PortId,
        /// Who it is.
        peer: PeerKey,
    },
    /// A peer is gone: remove `port` from the switch (and flush its MACs).
    PeerDown {
        /// Its switch port, never handed out again while the endpoint has
        /// other ports to give.
        port: PortId,
        /// Who it was.
        peer: PeerKey,
        /// Why.
        reason: PeerDownReason,
    },
}

/// Counters of the endpoint (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GreCounters {
    /// Packets given to [`GreEndpoint::handle_packet`].
    pub rx_packets: u64,
    /// Ethernet frames accepted.
    pub rx_data: u64,
    /// Keepalives received and answered.
    pub rx_keepalives: u64,
    /// Keepalive replies queued.
    pub tx_keepalive_replies: u64,
    /// Headers written by [`GreEndpoint::encap_header`].
    pub tx_data: u64,
    /// Drops: [`GreDrop::Malformed`].
    pub drop_malformed: u64,
    /// Drops: [`GreDrop::NotAdmitted`].
    pub drop_not_admitted: u64,
    /// Drops: [`GreDrop::WrongProtocol`].
    pub drop_wrong_protocol: u64,
    /// Drops: [`GreDrop::TooManyPeers`].
    pub drop_too_many_peers: u64,
    /// Drops: [`GreDrop::SequenceOld`].
    pub drop_sequence_old: u64,
    /// Drops: [`GreDrop::BadKeepalive`].
    pub drop_bad_keepalive: u64,
    /// Sequence numbers skipped (packets lost on the way, or still to come
    /// late and be dropped).
    pub rx_seq_lost: u64,
    /// Peers whose sequence numbers jumped back beyond the reorder window
    /// (a restarted counter), followed.
    pub rx_seq_resync: u64,
    /// Peers added.
    pub peers_up: u64,
    /// Peers removed for silence.
    pub peers_timed_out: u64,
    /// Peers removed by request.
    pub peers_removed: u64,
}

/// One peer, as [`GreEndpoint::peers`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// Its switch port.
    #[serde(serialize_with = "port_number")]
    pub port: PortId,
    /// Its address.
    pub addr: IpAddr,
    /// Its GRE key.
    pub key: Option<u32>,
    /// Our address it last sent to.
    pub local: IpAddr,
    /// Time since it became a peer.
    pub uptime: Duration,
    /// Time since we last heard from it.
    pub last_rx_age: Duration,
    /// Packets received from it (data and keepalives).
    pub rx_packets: u64,
    /// Data packets sent to it.
    pub tx_packets: u64,
    /// Keepalives answered.
    pub keepalives: u64,
    /// Whether it sends sequence numbers (and so gets them).
    pub sequenced: bool,
}

fn port_number<S: serde::Serializer>(port: &PortId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(port.0)
}

#[derive(Debug)]
struct Peer {
    port: PortId,
    local: IpAddr,
    since: Instant,
    last_rx: Instant,
    /// Its entry in the timer set; may be earlier than `last_rx + timeout`
    /// (the data path does not touch the set).
    deadline: Instant,
    rx_packets: u64,
    tx_packets: u64,
    keepalives: u64,
    /// Next sequence number expected, once one was seen.
    rx_seq: Option<u32>,
    /// The peer's last data packet had a sequence number: ours get one too.
    sequenced: bool,
    tx_seq: u32,
}

/// The edge's one multipoint GRE endpoint.
#[derive(Debug)]
pub struct GreEndpoint {
    cfg: GreConfig,
    accepting: bool,
    peers: FxHashMap<PeerKey, Peer>,
    ports: FxHashMap<PortId, PeerKey>,
    timers: BTreeSet<(Instant, PortId)>,
    /// Offset of the next port id to try, so freed ids come back last.
    next_port: u32,
    events: VecDeque<GreEvent>,
    transmits: VecDeque<(IpAddr, Vec<u8>)>,
    counters: GreCounters,
}

impl GreEndpoint {
    /// An endpoint with no peers, accepting new ones.
    pub fn new(cfg: GreConfig) -> Self {
        GreEndpoint {
            cfg,
            accepting: true,
            peers: FxHashMap::default(),
            ports: FxHashMap::default(),
            timers: BTreeSet::new(),
            next_port: 0,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            counters: GreCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GreConfig {
        &self.cfg
    }

    /// Whether new peers are taken. Off while upstream monitoring fails:
    /// APs' keepalives then go unanswered and they move to another edge
    /// (existing peers stay until [`GreEndpoint::remove_all`]).
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Counters.
    pub fn counters(&self) -> &GreCounters {
        &self.counters
    }

    /// Replace the admitted prefixes and the peer timeout (configuration
    /// change). Peers from addresses now outside are removed
    /// ([`GreEvent::PeerDown`], reason `Removed`); their number is
    /// returned. The new timeout counts from each peer's next packet.
    pub fn reconfigure(&mut self, admit: Vec<IpNet>, peer_timeout: Duration) -> usize {
        self.cfg.admit = admit;
        self.cfg.peer_timeout = peer_timeout;
        let admit = &self.cfg.admit;
        let mut outside: Vec<PortId> = self
            .ports
            .iter()
            .filter(|(_, k)| !admit.is_empty() && !admit.iter().any(|n| n.contains(&k.addr)))
            .map(|(p, _)| *p)
            .collect();
        outside.sort_unstable();
        for &port in &outside {
            self.remove_peer(port);
        }
        outside.len()
    }

    /// A GRE packet (the IP payload) from `src`, received on our address
    /// `local`. A new admitted peer (src, key) becomes a port (a
    /// [`GreEvent::PeerUp`]) on its first valid 0x6558 packet or keepalive;
    /// every accepted packet refreshes it. Data comes back as the inner
    /// Ethernet frame, without allocating; a keepalive is answered through
    /// [`GreEndpoint::poll_transmit`]. Drain [`GreEndpoint::poll_event`]
    /// afterwards.
    #[must_use]
    pub fn handle_packet<'a>(
        &mut self,
        now: Instant,
        src: IpAddr,
        local: IpAddr,
        bytes: &'a [u8],
    ) -> GreIncoming<'a> {
        self.counters.rx_packets += 1;
        let Ok(p) = gre::parse(bytes) else {
            return self.dropped(GreDrop::Malformed);
        };
        let key = PeerKey {
            addr: src.to_canonical(),
            key: p.header.key,
        };
        let local = local.to_canonical();
        match p.header.protocol {
            gre::PROTO_TEB => self.on_data(now, key, local, &p.header, p.payload),
            gre::PROTO_IPV4 | gre::PROTO_IPV6 => {
                self.on_keepalive(now, key, local, p.header.protocol, p.payload)
            }
            _ => self.dropped(GreDrop::WrongProtocol),
        }
    }

    #[inline]
    fn on_data<'a>(
        &mut self,
        now: Instant,
        key: PeerKey,
        local: IpAddr,
        header: &GreHeader,
        payload: &'a [u8],
    ) -> GreIncoming<'a> {
        if payload.len() < ETHER_HEADER_LEN {
            return self.dropped(GreDrop::Malformed);
        }
        let peer = match self.peers.get_mut(&key) {
            Some(peer) => peer,
            None => match self.new_peer(now, key, local) {
                Ok(peer) => self.peers.entry(key).or_insert(peer),
                Err(d) => return self.dropped(d),
            },
        };
        peer.last_rx = now;
        peer.local = local;
        peer.rx_packets += 1;
        peer.sequenced = header.seq.is_some();
        let c = &mut self.counters;
        if let Some(seq) = header.seq {
            match peer.rx_seq {
                None => peer.rx_seq = Some(seq.wrapping_add(1)),
                Some(expected) => {
                    let ahead = seq.wrapping_sub(expected);
                    let behind = expected.wrapping_sub(seq);
                    if ahead < 1 << 31 {
                        c.rx_seq_lost += u64::from(ahead);
                        peer.rx_seq = Some(seq.wrapping_add(1));
                    } else if behind <= SEQ_REORDER_WINDOW {
                        c.drop_sequence_old += 1;
                        return GreIncoming::Dropped(GreDrop::SequenceOld);
                    } else {
                        c.rx_seq_resync += 1;
                        peer.rx_seq = Some(seq.wrapping_add(1));
                    }
                }
            }
        }
        c.rx_data += 1;
        GreIncoming::Data {
            port: peer.port,
            payload,
        }
    }

    fn on_keepalive<'a>(
        &mut self,
        now: Instant,
        key: PeerKey,
        local: IpAddr,
        protocol: u16,
        inner: &[u8],
    ) -> GreIncoming<'a> {
        let parsed = if protocol == gre::PROTO_IPV4 {
            inner_ipv4(inner)
        } else {
            inner_ipv6(inner)
        };
        let (dst, reply) = match parsed {
            Ok(x) => x,
            Err(d) => return self.dropped(d),
        };
        match gre::parse(reply) {
            Ok(g) if g.header.protocol == gre::PROTO_KEEPALIVE => {}
            Ok(_) => return self.dropped(GreDrop::WrongProtocol),
            Err(_) => return self.dropped(GreDrop::Malformed),
        }
        // The inner source is not checked: behind NAT it is the address the
        // AP knows us by, not `local`.
        if dst != key.addr {
            return self.dropped(GreDrop::BadKeepalive);
        }
        let peer = match self.peers.get_mut(&key) {
            Some(peer) => peer,
            None => match self.new_peer(now, key, local) {
                Ok(peer) => self.peers.entry(key).or_insert(peer),
                Err(d) => return self.dropped(d),
            },
        };
        peer.last_rx = now;
        peer.local = local;
        peer.rx_packets += 1;
        peer.keepalives += 1;
        self.counters.rx_keepalives += 1;
        self.counters.tx_keepalive_replies += 1;
        self.transmits.push_back((dst, reply.to_vec()));
        GreIncoming::Keepalive
    }

    /// Admit `key` as a new peer (its port, timer and event; the caller puts
    /// it in the table), or say why not.
    fn new_peer(&mut self, now: Instant, key: PeerKey, local: IpAddr) -> Result<Peer, GreDrop> {
        let admitted = self.accepting
            && (self.cfg.admit.is_empty() || self.cfg.admit.iter().any(|n| n.contains(&key.addr)));
        if !admitted {
            return Err(GreDrop::NotAdmitted);
        }
        if self.peers.len() >= self.cfg.max_peers.min(GRE_PORT_COUNT as usize) {
            return Err(GreDrop::TooManyPeers);
        }
        let port = self.alloc_port();
        let deadline = now + self.cfg.peer_timeout;
        self.timers.insert((deadline, port));
        self.ports.insert(port, key);
        self.counters.peers_up += 1;
        self.events.push_back(GreEvent::PeerUp { port, peer: key });
        Ok(Peer {
            port,
            local,
            since: now,
            last_rx: now,
            deadline,
            rx_packets: 0,
            tx_packets: 0,
            keepalives: 0,
            rx_seq: None,
            sequenced: false,
            tx_seq: 0,
        })
    }

    /// The next port id not in use, going round the whole range before
    /// handing out a freed one again.
    fn alloc_port(&mut self) -> PortId {
        loop {
            let port = PortId(GRE_PORT_BASE + self.next_port);
            self.next_port = (self.next_port + 1) & (GRE_PORT_COUNT - 1);
            if !self.ports.contains_key(&port) {
                return port;
            }
        }
    }

    fn dropped<'a>(&mut self, why: GreDrop) -> GreIncoming<'a> {
        let c = &mut self.counters;
        *match why {
            GreDrop::Malformed => &mut c.drop_malformed,
            GreDrop::NotAdmitted => &mut c.drop_not_admitted,
            GreDrop::WrongProtocol => &mut c.drop_wrong_protocol,
            GreDrop::TooManyPeers => &mut c.drop_too_many_peers,
            GreDrop::SequenceOld => &mut c.drop_sequence_old,
            GreDrop::BadKeepalive => &mut c.drop_bad_keepalive,
        } += 1;
        GreIncoming::Dropped(why)
    }

    /// Write the GRE header for a frame to `port` into `out` (cleared
    /// first; reusing it does not allocate): the peer's key if it uses one,
    /// and the next of our sequence numbers if it sends sequence numbers.
    /// The frame goes after it. Returns the peer's address, or `None` if the
    /// port is not a live peer.
    pub fn encap_header(&mut self, port: PortId, out: &mut Vec<u8>) -> Option<IpAddr> {
        let key = self.ports.get(&port)?;
        let peer = self.peers.get_mut(key)?;
        let seq = peer.sequenced.then(|| {
            let s = peer.tx_seq;
            peer.tx_seq = s.wrapping_add(1);
            s
        });
        let header = GreHeader::data(key.key, seq);
        out.clear();
        out.resize(header.header_len(), 0);
        gre::emit(&header, out);
        peer.tx_packets += 1;
        self.counters.tx_data += 1;
        Some(key.addr)
    }

    /// Next packet to send: (destination, GRE packet for a raw IP socket of
    /// protocol 47). These are keepalive replies.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(IpAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GreEvent> {
        self.events.pop_front()
    }

    /// When [`GreEndpoint::handle_timeout`] wants to be called. It may be
    /// early (a peer heard from since); calling early is harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Remove every peer silent for [`GreConfig::peer_timeout`] at `now`
    /// ([`GreEvent::PeerDown`] with [`PeerDownReason::Timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, port)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(key) = self.ports.get(&port).copied() else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            let due = peer.last_rx + self.cfg.peer_timeout;
            if due <= now {
                self.counters.peers_timed_out += 1;
                self.remove(port, key, PeerDownReason::Timeout);
            } else {
                peer.deadline = due;
                self.timers.insert((due, port));
            }
        }
    }

    /// The peer on `port` sent data at `at` that someone else forwarded
    /// (the XDP fast path): it is alive. Only forward in time; returns
    /// whether the peer exists and was refreshed.
    pub fn refresh(&mut self, port: PortId, at: Instant) -> bool {
        let Some(key) = self.ports.get(&port).copied() else {
            return false;
        };
        match self.peers.get_mut(&key) {
            Some(peer) if at > peer.last_rx => {
                peer.last_rx = at;
                true
            }
            _ => false,
        }
    }

    /// Every live peer as (port, address, key, our address), to keep
    /// across a restart of the daemon. In port order.
    pub fn snapshot(&self) -> Vec<GrePeerSnapshot> {
        let mut out: Vec<GrePeerSnapshot> = self
            .peers
            .iter()
            .map(|(k, p)| GrePeerSnapshot {
                port: p.port.0,
                addr: k.addr,
                key: k.key,
                local: p.local,
            })
            .collect();
        out.sort_by_key(|p| p.port);
        out
    }

    /// Take back the peers of a [`snapshot`](Self::snapshot) after a
    /// restart, on their old ports (so the fast path's entries stay valid),
    /// as if heard from now: [`GreEvent::PeerUp`] for each. Peers outside
    /// the admitted subnets, on a port outside the mGRE range, or clashing
    /// with one that exists, are refused and described in the result.
    pub fn restore(&mut self, now: Instant, peers: &[GrePeerSnapshot]) -> Vec<String> {
        let mut refused = Vec::new();
        for s in peers {
            let key = PeerKey {
                addr: s.addr,
                key: s.key,
            };
            let port = PortId(s.port);
            let admitted =
                self.cfg.admit.is_empty() || self.cfg.admit.iter().any(|n| n.contains(&key.addr));
            let why = if !is_gre_port(port) {
                Some("a port outside the mGRE range")
            } else if self.ports.contains_key(&port) || self.peers.contains_key(&key) {
                Some("the peer or port exists")
            } else if !admitted {
                Some("not in tunterm_ap_subnets")
            } else if self.peers.len() >= self.cfg.max_peers.min(GRE_PORT_COUNT as usize) {
                Some("too many peers")
            } else {
                None
            };
            if let Some(why) = why {
                refused.push(format!("mGRE peer {} (port {}): {why}", s.addr, s.port));
                continue;
            }
            let deadline = now + self.cfg.peer_timeout;
            self.timers.insert((deadline, port));
            self.ports.insert(port, key);
            self.peers.insert(
                key,
                Peer {
                    port,
                    local: s.local,
                    since: now,
                    last_rx: now,
                    deadline,
                    rx_packets: 0,
                    tx_packets: 0,
                    keepalives: 0,
                    rx_seq: None,
                    sequenced: false,
                    tx_seq: 0,
                },
            );
            self.events.push_back(GreEvent::PeerUp { port, peer: key });
        }
        refused
    }

    /// Remove one peer (operator request, upstream failure):
    /// [`GreEvent::PeerDown`] with [`PeerDownReason::Removed`]. A peer that
    /// keeps sending comes back as a new port.
    pub fn remove_peer(&mut self, port: PortId) {
        if let Some(key) = self.ports.get(&port).copied() {
            self.counters.peers_removed += 1;
            self.remove(port, key, PeerDownReason::Removed);
        }
    }

    /// Remove every peer, in port order.
    pub fn remove_all(&mut self) {
        let mut ports: Vec<PortId> = self.ports.keys().copied().collect();
        ports.sort_unstable();
        for port in ports {
            self.remove_peer(port);
        }
    }

    fn remove(&mut self, port: PortId, key: PeerKey, reason: PeerDownReason) {
        self.ports.remove(&port);
        if let Some(peer) = self.peers.remove(&key) {
            self.timers.remove(&(peer.deadline, port));
        }
        self.events.push_back(GreEvent::PeerDown {
            port,
            peer: key,
            reason,
        });
    }

    /// The peer behind `port`, if it is live.
    pub fn peer(&self, port: PortId) -> Option<PeerKey> {
        self.ports.get(&port).copied()
    }

    /// Number of live peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Every live peer, in no particular order; ages are relative to `now`.
    pub fn peers(&self, now: Instant) -> impl Iterator<Item = PeerStats> + '_ {
        self.peers.iter().map(move |(key, p)| PeerStats {
            port: p.port,
            addr: key.addr,
            key: key.key,
            local: p.local,
            uptime: now.saturating_duration_since(p.since),
            last_rx_age: now.saturating_duration_since(p.last_rx),
            rx_packets: p.rx_packets,
            tx_packets: p.tx_packets,
            keepalives: p.keepalives,
            sequenced: p.sequenced,
        })
    }
}

/// The destination and payload of the IPv4 packet inside a keepalive.
fn inner_ipv4(b: &[u8]) -> Result<(IpAddr, &[u8]), GreDrop> {
    let ip = ipv4::Packet::new_checked(b).map_err(|_| GreDrop::Malformed)?;
    // A fragment (MF set or an offset) is not a whole keepalive.
    if !ip.verify_checksum() || ip.is_fragment() {
        return Err(GreDrop::Malformed);
    }
    if ip.protocol() != ipv4::Protocol::Gre {
        return Err(GreDrop::WrongProtocol);
    }
    Ok((IpAddr::V4(ip.dst_addr()), ip.payload()))
}

/// The destination and payload of the IPv6 packet inside a keepalive (no
/// extension headers).
fn inner_ipv6(b: &[u8]) -> Result<(IpAddr, &[u8]), GreDrop> {
    let ip = ipv6::Packet::new_checked(b).map_err(|_| GreDrop::Malformed)?;
    if ip.next_header() != ipv6::Protocol::Gre {
        return Err(GreDrop::WrongProtocol);
    }
    Ok((IpAddr::V6(ip.dst_addr()), ip.payload()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keepalive an AP at `local` sends to the edge at `remote` (the
    /// lab's AP simulator builds its own, with etherparse): GRE around an IP
    /// packet from `remote` to `local` around a GRE header of protocol 0.
    /// IPv6 if either address is, an IPv4 one then written IPv4-mapped.
    fn keepalive_probe(local: IpAddr, remote: IpAddr, key: Option<u32>) -> Vec<u8> {
        let mut reply = vec![];
        let reply_header = GreHeader {
            key,
            ..GreHeader::new(gre::PROTO_KEEPALIVE)
        };
        gre::emit_packet(&reply_header, &[], &mut reply);
        let mut ip = vec![];
        let protocol = match (local.to_canonical(), remote.to_canonical()) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => {
                ipv4::Repr {
                    src_addr: remote,
                    dst_addr: local,
                    protocol: ipv4::Protocol::Gre,
                    payload_len: reply.len(),
                    ttl: 255,
                    ident: 0,
                    dont_frag: false,
                    dscp_ecn: 0,
                }
                .append_to(&mut ip);
                gre::PROTO_IPV4
            }
            _ => {
                let v6 = |a: IpAddr| match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                };
                ipv6::Repr {
                    src_addr: v6(remote),
                    dst_addr: v6(local),
                    next_header: ipv6::Protocol::Gre,
                    payload_len: reply.len(),
                    hop_limit: 255,
                }
                .append_to(&mut ip);
                gre::PROTO_IPV6
            }
        };
        ip.extend_from_slice(&reply);
        let mut out = vec![];
        gre::emit_packet(
            &GreHeader {
                key,
                ..GreHeader::new(protocol)
            },
            &ip,
            &mut out,
        );
        out
    }

    fn is_keepalive_reply(bytes: &[u8]) -> bool {
        matches!(gre::parse(bytes), Ok(p) if p.header.protocol == gre::PROTO_KEEPALIVE)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const EDGE: &str = "192.0.2.1";
    const AP1: &str = "198.51.100.10";
    const AP2: &str = "198.51.100.20";

    /// An Ethernet frame: broadcast ARP from 02:00:00:00:00:01.
    static FRAME: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06,
    ];

    fn data(key: Option<u32>, seq: Option<u32>) -> Vec<u8> {
        let h = GreHeader {
            key,
            seq,
            ..GreHeader::new(gre::PROTO_TEB)
        };
        let mut out = Vec::new();
        gre::emit_packet(&h, &FRAME, &mut out);
        out
    }

    fn events(e: &mut GreEndpoint) -> Vec<GreEvent> {
        std::iter::from_fn(|| e.poll_event()).collect()
    }

    fn up(e: &mut GreEndpoint, t: Instant, src: &str, key: Option<u32>) -> PortId {
        match e.handle_packet(t, ip(src), ip(EDGE), &data(key, None)) {
            GreIncoming::Data { port, .. } => port,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn restored_peers_keep_their_ports_and_refuse_what_does_not_fit() {
        let t0 = crate::test_t0();
        let admit = GreConfig {
            admit: vec![net("198.51.100.0/24")],
            ..GreConfig::default()
        };
        let mut old = GreEndpoint::new(admit.clone());
        let p1 = up(&mut old, t0, AP1, None);
        let p2 = up(&mut old, t0, AP2, Some(7));
        let snap = old.snapshot();
        assert_eq!(snap.len(), 2);
        let text = serde_json::to_string(&snap).unwrap();
        let mut back: Vec<GrePeerSnapshot> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
        // Hostile additions: outside the admitted subnets, a port out of
        // range, and a second entry for AP1's port.
        back.push(GrePeerSnapshot {
            port: GRE_PORT_BASE + 9,
            addr: ip("203.0.113.5"),
            key: None,
            local: ip(EDGE),
        });
        back.push(GrePeerSnapshot {
            port: 5,
            addr: ip("198.51.100.30"),
            key: None,
            local: ip(EDGE),
        });
        back.push(GrePeerSnapshot {
            port: p1.0,
            addr: ip("198.51.100.31"),
            key: None,
            local: ip(EDGE),
        });
        let mut e = GreEndpoint::new(admit);
        let refused = e.restore(t0, &back);
        assert_eq!(refused.len(), 3, "{refused:?}");
        let ups: Vec<PortId> = events(&mut e)
            .into_iter()
            .map(|ev| match ev {
                GreEvent::PeerUp { port, .. } => port,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ups, [p1, p2]);
        // Their traffic lands on the same ports, with no new PeerUp.
        assert_eq!(up(&mut e, t0, AP2, Some(7)), p2);
        assert_eq!(up(&mut e, t0, AP1, None), p1);
        assert!(events(&mut e).is_empty());
        // A new peer does not get a restored peer's port.
        let p3 = up(&mut e, t0, "198.51.100.40", None);
        assert!(p3 != p1 && p3 != p2);
        // Restored peers time out like any other.
        e.handle_timeout(t0 + e.config().peer_timeout + Duration::from_secs(1));
        assert_eq!(e.peer_count(), 0);
    }

    #[test]
    fn new_peer_gets_a_port_in_the_reserved_range() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let pkt = data(None, None);
        let got = e.handle_packet(t0, ip(AP1), ip(EDGE), &pkt);
        let GreIncoming::Data { port, payload } = got else {
            panic!("{got:?}");
        };
        assert_eq!(payload, &FRAME);
        assert_eq!(port, PortId(GRE_PORT_BASE));
        assert!(is_gre_port(port));
        let peer = PeerKey {
            addr: ip(AP1),
            key: None,
        };
        assert_eq!(events(&mut e), [GreEvent::PeerUp { port, peer }]);
        // Same peer again: same port, no event.
        let again = e.handle_packet(t0, ip(AP1), ip(EDGE), &pkt);
        assert_eq!(
            again,
            GreIncoming::Data {
                port,
                payload: &FRAME
            }
        );
        assert!(events(&mut e).is_empty());
        assert_eq!(e.peer(port), Some(peer));
        assert_eq!(e.counters().rx_data, 2);
        assert_eq!(e.counters().peers_up, 1);
        let stats: Vec<_> = e.peers(t0 + Duration::from_secs(2)).collect();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].rx_packets, 2);
        assert_eq!(stats[0].local, ip(EDGE));
        assert_eq!(stats[0].last_rx_age, Duration::from_secs(2));
        let json = serde_json::to_value(&stats[0]).unwrap();
        assert_eq!(json["port"], GRE_PORT_BASE);
    }

    #[test]
    fn admission_by_subnet() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig {
            admit: vec![net("198.51.100.0/28"), net("2001:db8:1::/48")],
            ..GreConfig::default()
        });
        let pkt = data(None, None);
        assert!(matches!(
            e.handle_packet(t0, ip(AP1), ip(EDGE), &pkt),
            GreIncoming::Data { .. }
        ));
        assert_eq!(
            e.handle_packet(t0, ip(AP2), ip(EDGE), &pkt),
            GreIncoming::Dropped(GreDrop::NotAdmitted)
        );
        assert!(matches!(
            e.handle_packet(t0, ip("2001:db8:1::5"), ip("2001:db8::1"), &pkt),
            GreIncoming::Data { .. }
        ));
        assert_eq!(
            e.handle_packet(t0, ip("2001:db8:2::5"), ip("2001:db8::1"), &pkt),
            GreIncoming::Dropped(GreDrop::NotAdmitted)
        );
        // An IPv4-mapped source is the IPv4 address.
        assert!(matches!(
            e.handle_packet(t0, ip("::ffff:198.51.100.11"), ip(EDGE), &pkt),
            GreIncoming::Data { .. }
        ));
        assert_eq!(e.counters().drop_not_admitted, 2);
        assert_eq!(e.peer_count(), 3);
        // Not accepting: known peers go on, new ones are refused.
        e.set_accepting(false);
        assert!(matches!(
            e.handle_packet(t0, ip(AP1), ip(EDGE), &pkt),
            GreIncoming::Data { .. }
        ));
        assert_eq!(
            e.handle_packet(t0, ip("198.51.100.12"), ip(EDGE), &pkt),
            GreIncoming::Dropped(GreDrop::NotAdmitted)
        );
    }

    #[test]
    fn key_distinguishes_peers_at_one_address() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let a = up(&mut e, t0, AP1, Some(1));
        let b = up(&mut e, t0, AP1, Some(2));
        let c = up(&mut e, t0, AP1, None);
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_ne!(a, c);
        assert_eq!(up(&mut e, t0, AP1, Some(2)), b);
        assert_eq!(events(&mut e).len(), 3);
        // Replies carry the peer's own key.
        let mut out = Vec::new();
        assert_eq!(e.encap_header(a, &mut out), Some(ip(AP1)));
        assert_eq!(gre::parse(&out).unwrap().header.key, Some(1));
        assert_eq!(e.encap_header(c, &mut out), Some(ip(AP1)));
        assert_eq!(out, [0x00, 0x00, 0x65, 0x58]);
    }

    #[test]
    fn silent_peer_times_out() {
        let t0 = crate::test_t0();
        let s = Duration::from_secs(1);
        let mut e = GreEndpoint::new(GreConfig::default());
        let a = up(&mut e, t0, AP1, None);
        let b = up(&mut e, t0 + 5 * s, AP2, None);
        events(&mut e);
        assert_eq!(e.poll_timeout(), Some(t0 + 30 * s));
        // AP1 keeps talking; AP2 falls silent.
        up(&mut e, t0 + 20 * s, AP1, None);
        e.handle_timeout(t0 + 29 * s);
        assert!(events(&mut e).is_empty());
        e.handle_timeout(t0 + 30 * s);
        assert!(events(&mut e).is_empty(), "AP1 was heard at 20 s");
        assert_eq!(e.poll_timeout(), Some(t0 + 35 * s));
        e.handle_timeout(t0 + 35 * s);
        assert_eq!(
            events(&mut e),
            [GreEvent::PeerDown {
                port: b,
                peer: PeerKey {
                    addr: ip(AP2),
                    key: None
                },
                reason: PeerDownReason::Timeout,
            }]
        );
        assert_eq!(e.poll_timeout(), Some(t0 + 50 * s));
        e.handle_timeout(t0 + 50 * s);
        assert!(matches!(
            events(&mut e)[..],
            [GreEvent::PeerDown {
                port,
                reason: PeerDownReason::Timeout,
                ..
            }] if port == a
        ));
        assert_eq!(e.poll_timeout(), None);
        assert_eq!(e.counters().peers_timed_out, 2);
        let mut out = Vec::new();
        assert_eq!(e.encap_header(a, &mut out), None);
        // Coming back, AP2 gets a fresh port.
        let b2 = up(&mut e, t0 + 60 * s, AP2, None);
        assert!(b2 != a && b2 != b && is_gre_port(b2));
    }

    #[test]
    fn refresh_from_the_fast_path_keeps_a_peer_alive() {
        let t0 = crate::test_t0();
        let s = Duration::from_secs(1);
        let mut e = GreEndpoint::new(GreConfig::default());
        let a = up(&mut e, t0, AP1, None);
        events(&mut e);
        assert!(e.refresh(a, t0 + 25 * s));
        assert!(!e.refresh(a, t0 + 10 * s), "backwards");
        assert!(!e.refresh(PortId(a.0 + 1), t0 + 25 * s), "no such peer");
        e.handle_timeout(t0 + 30 * s);
        assert!(events(&mut e).is_empty(), "refreshed at 25 s");
        e.handle_timeout(t0 + 55 * s);
        assert!(matches!(
            events(&mut e)[..],
            [GreEvent::PeerDown { port, reason: PeerDownReason::Timeout, .. }] if port == a
        ));
    }

    #[test]
    fn reconfigured_subnets_remove_the_peers_now_outside() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let a = up(&mut e, t0, AP1, None);
        let b = up(&mut e, t0, AP2, None);
        events(&mut e);
        let inside_a = format!("{AP1}/32");
        let removed = e.reconfigure(vec![net(&inside_a)], Duration::from_secs(7));
        assert_eq!(removed, 1);
        let ev = events(&mut e);
        assert!(matches!(
            ev[..],
            [GreEvent::PeerDown { port, reason: PeerDownReason::Removed, .. }] if port == b
        ));
        assert_eq!(e.peer(a).map(|k| k.addr), Some(ip(AP1)));
        assert_eq!(e.config().peer_timeout, Duration::from_secs(7));
        // New packets from the removed one are checked against the new list.
        assert_eq!(
            e.handle_packet(t0, ip(AP2), ip(EDGE), &data(None, None)),
            GreIncoming::Dropped(GreDrop::NotAdmitted)
        );
    }

    #[test]
    fn remove_peer_and_remove_all() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let a = up(&mut e, t0, AP1, None);
        let b = up(&mut e, t0, AP2, None);
        let c = up(&mut e, t0, AP2, Some(9));
        events(&mut e);
        e.remove_peer(b);
        e.remove_peer(b);
        let ev = events(&mut e);
        assert!(matches!(
            ev[..],
            [GreEvent::PeerDown { port, reason: PeerDownReason::Removed, .. }] if port == b
        ));
        e.remove_all();
        let ports: Vec<PortId> = events(&mut e)
            .into_iter()
            .map(|ev| match ev {
                GreEvent::PeerDown {
                    port,
                    reason: PeerDownReason::Removed,
                    ..
                } => port,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ports, [a, c]);
        assert_eq!(e.peer_count(), 0);
        assert_eq!(e.poll_timeout(), None);
        assert_eq!(e.counters().peers_removed, 3);
    }

    #[test]
    fn keepalive_is_reflected_to_its_sender() {
        let t0 = crate::test_t0();
        for (ap, edge, key) in [
            (AP1, EDGE, None),
            (AP1, EDGE, Some(0x1234)),
            ("2001:db8:1::5", "2001:db8::1", None),
            ("2001:db8:1::5", "2001:db8::1", Some(7)),
        ] {
            let mut e = GreEndpoint::new(GreConfig::default());
            let probe = keepalive_probe(ip(ap), ip(edge), key);
            let p = gre::parse(&probe).unwrap();
            assert_eq!(p.header.key, key);
            assert_eq!(
                p.header.protocol,
                if ip(ap).is_ipv4() {
                    gre::PROTO_IPV4
                } else {
                    gre::PROTO_IPV6
                }
            );
            assert!(!is_keepalive_reply(&probe));
            assert_eq!(
                e.handle_packet(t0, ip(ap), ip(edge), &probe),
                GreIncoming::Keepalive
            );
            // A keepalive creates the peer.
            let ev = events(&mut e);
            let [GreEvent::PeerUp { port, peer }] = ev[..] else {
                panic!("{ev:?}");
            };
            assert_eq!(peer, PeerKey { addr: ip(ap), key });
            let (dst, reply) = e.poll_transmit().unwrap();
            assert_eq!(dst, ip(ap));
            assert!(is_keepalive_reply(&reply));
            let r = gre::parse(&reply).unwrap();
            assert_eq!(
                r.header,
                GreHeader {
                    key,
                    ..GreHeader::new(0)
                }
            );
            assert!(r.payload.is_empty());
            assert!(e.poll_transmit().is_none());
            let st: Vec<_> = e.peers(t0).collect();
            assert_eq!((st[0].port, st[0].keepalives), (port, 1));
            assert_eq!(e.counters().rx_keepalives, 1);
            assert_eq!(e.counters().tx_keepalive_replies, 1);
        }
    }

    #[test]
    fn keepalive_probe_bytes() {
        let probe = keepalive_probe(ip(AP1), ip(EDGE), None);
        #[rustfmt::skip]
        let want: [u8; 28] = [
            0x00, 0x00, 0x08, 0x00, // GRE, IPv4
            0x45, 0x00, 0x00, 0x18, // IPv4, length 24
            0x00, 0x00, 0x00, 0x00, // id, flags, offset
            0xff, 0x2f, 0xcf, 0x77, // TTL 255, GRE, checksum
            192, 0, 2, 1, // src: the edge
            198, 51, 100, 10, // dst: the AP
            0x00, 0x00, 0x00, 0x00, // GRE, protocol 0
        ];
        assert_eq!(probe, want);
        let (dst, inner) = inner_ipv4(&probe[4..]).unwrap();
        assert_eq!((dst, inner), (ip(AP1), &want[24..]));
    }

    #[test]
    fn keepalive_for_someone_else_is_not_relayed() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        // Inner destination AP2, sent by AP1.
        let probe = keepalive_probe(ip(AP2), ip(EDGE), None);
        assert_eq!(
            e.handle_packet(t0, ip(AP1), ip(EDGE), &probe),
            GreIncoming::Dropped(GreDrop::BadKeepalive)
        );
        assert!(e.poll_transmit().is_none());
        assert_eq!(e.peer_count(), 0);
        assert_eq!(e.counters().drop_bad_keepalive, 1);
    }

    #[test]
    fn broken_keepalives_are_dropped() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let good = keepalive_probe(ip(AP1), ip(EDGE), None);
        let cases: Vec<(Vec<u8>, GreDrop)> = vec![
            (good[..20].to_vec(), GreDrop::Malformed), // inner IPv4 truncated
            (
                {
                    let mut b = good.clone();
                    b[4 + 9] = 17; // UDP, not GRE (checksum fixed below)
                    b[14..16].fill(0);
                    let s = crate::wire::checksum::internet_checksum(&b[4..24]);
                    b[14..16].copy_from_slice(&s.to_be_bytes());
                    b
                },
                GreDrop::WrongProtocol,
            ),
            (
                {
                    let mut b = good.clone();
                    b[4 + 8] = 1; // TTL changed, checksum not
                    b
                },
                GreDrop::Malformed,
            ),
            (
                {
                    let mut b = good.clone();
                    b[26] = 0x65; // inner GRE protocol 0x6500
                    b
                },
                GreDrop::WrongProtocol,
            ),
            (
                {
                    let mut b = good.clone();
                    b[25] = 0x01; // inner GRE version 1
                    b
                },
                GreDrop::Malformed,
            ),
            (
                {
                    // IPv6 inner packet under protocol 0x0800.
                    let mut b = keepalive_probe(ip("2001:db8::5"), ip("2001:db8::1"), None);
                    b[2..4].copy_from_slice(&gre::PROTO_IPV4.to_be_bytes());
                    b
                },
                GreDrop::Malformed,
            ),
        ];
        for (i, (pkt, want)) in cases.iter().enumerate() {
            assert_eq!(
                e.handle_packet(t0, ip(AP1), ip(EDGE), pkt),
                GreIncoming::Dropped(*want),
                "case {i}"
            );
        }
        assert!(e.poll_transmit().is_none());
        assert_eq!(e.peer_count(), 0);
    }

    #[test]
    fn encap_header_roundtrips_through_a_second_endpoint() {
        let t0 = crate::test_t0();
        for key in [None, Some(0xdead_beef)] {
            let mut edge = GreEndpoint::new(GreConfig::default());
            let mut ap = GreEndpoint::new(GreConfig::default());
            // AP → edge with sequence numbers: the edge sequences its own.
            let port = match edge.handle_packet(t0, ip(AP1), ip(EDGE), &data(key, Some(100))) {
                GreIncoming::Data { port, .. } => port,
                other => panic!("{other:?}"),
            };
            let mut out = Vec::with_capacity(64);
            let cap = out.capacity();
            for n in 0..3u32 {
                assert_eq!(edge.encap_header(port, &mut out), Some(ip(AP1)));
                let h = gre::parse(&out).unwrap().header;
                assert_eq!((h.key, h.seq, h.protocol), (key, Some(n), gre::PROTO_TEB));
                out.extend_from_slice(&FRAME);
                let got = ap.handle_packet(t0, ip(EDGE), ip(AP1), &out);
                let GreIncoming::Data { payload, .. } = got else {
                    panic!("{got:?}");
                };
                assert_eq!(payload, &FRAME);
                assert_eq!(out.capacity(), cap, "no reallocation");
            }
            assert_eq!(ap.peer_count(), 1);
            assert_eq!(ap.counters().rx_data, 3);
            // The AP stops sequencing: so does the edge.
            let _ = edge.handle_packet(t0, ip(AP1), ip(EDGE), &data(key, None));
            edge.encap_header(port, &mut out).unwrap();
            assert_eq!(gre::parse(&out).unwrap().header.seq, None);
            assert_eq!(edge.counters().tx_data, 4);
            let st: Vec<_> = edge.peers(t0).collect();
            assert_eq!(st[0].tx_packets, 4);
        }
    }

    #[test]
    fn sequence_numbers() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let send = |e: &mut GreEndpoint, seq: u32| {
            let pkt = data(None, Some(seq));
            match e.handle_packet(t0, ip(AP1), ip(EDGE), &pkt) {
                GreIncoming::Data { .. } => None,
                GreIncoming::Dropped(d) => Some(d),
                GreIncoming::Keepalive => panic!(),
            }
        };
        assert_eq!(send(&mut e, u32::MAX - 1), None);
        assert_eq!(send(&mut e, u32::MAX), None);
        assert_eq!(send(&mut e, 0), None, "wraps");
        assert_eq!(send(&mut e, 0), Some(GreDrop::SequenceOld), "duplicate");
        assert_eq!(send(&mut e, 3), None, "gap of 2");
        assert_eq!(send(&mut e, 2), Some(GreDrop::SequenceOld), "late");
        assert_eq!(e.counters().rx_seq_lost, 2);
        assert_eq!(e.counters().drop_sequence_old, 2);
        // Far behind: the AP restarted its counter.
        assert_eq!(
            send(&mut e, 3u32.wrapping_sub(SEQ_REORDER_WINDOW + 10)),
            None
        );
        assert_eq!(e.counters().rx_seq_resync, 1);
    }

    #[test]
    fn drops_are_counted() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let drop = |e: &mut GreEndpoint, b: &[u8]| match e.handle_packet(t0, ip(AP1), ip(EDGE), b) {
            GreIncoming::Dropped(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(drop(&mut e, &[]), GreDrop::Malformed);
        assert_eq!(drop(&mut e, &[0x00, 0x01, 0x65, 0x58]), GreDrop::Malformed);
        assert_eq!(drop(&mut e, &[0x40, 0x00, 0x65, 0x58]), GreDrop::Malformed);
        assert_eq!(
            drop(&mut e, &[0x20, 0x00, 0x65, 0x58, 0]),
            GreDrop::Malformed
        );
        // A TEB payload too short to be an Ethernet frame.
        assert_eq!(drop(&mut e, &data(None, None)[..17]), GreDrop::Malformed);
        // MPLS, PPP, and a stray keepalive reply.
        assert_eq!(
            drop(&mut e, &[0, 0, 0x88, 0x47, 1, 2]),
            GreDrop::WrongProtocol
        );
        assert_eq!(drop(&mut e, &[0, 0, 0x88, 0x0b]), GreDrop::WrongProtocol);
        assert_eq!(drop(&mut e, &[0, 0, 0, 0]), GreDrop::WrongProtocol);
        let c = e.counters();
        assert_eq!((c.drop_malformed, c.drop_wrong_protocol), (5, 3));
        assert_eq!((c.rx_packets, c.rx_data), (8, 0));
        assert_eq!(e.peer_count(), 0);
        assert!(events(&mut e).is_empty());
    }

    #[test]
    fn max_peers_enforced() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig {
            max_peers: 2,
            ..GreConfig::default()
        });
        let a = up(&mut e, t0, AP1, None);
        up(&mut e, t0, AP2, None);
        assert_eq!(
            e.handle_packet(t0, ip(AP1), ip(EDGE), &data(Some(5), None)),
            GreIncoming::Dropped(GreDrop::TooManyPeers)
        );
        let probe = keepalive_probe(ip("198.51.100.30"), ip(EDGE), None);
        assert_eq!(
            e.handle_packet(t0, ip("198.51.100.30"), ip(EDGE), &probe),
            GreIncoming::Dropped(GreDrop::TooManyPeers)
        );
        assert!(e.poll_transmit().is_none(), "no reply for a refused peer");
        assert_eq!(e.counters().drop_too_many_peers, 2);
        // Known peers still pass; a freed slot is taken by a new port id.
        up(&mut e, t0, AP1, None);
        e.remove_peer(a);
        let c = up(&mut e, t0, AP1, Some(5));
        assert_eq!(c, PortId(GRE_PORT_BASE + 2));
    }

    #[test]
    fn port_ids_wrap_and_skip_live_ones() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig::default());
        let a = up(&mut e, t0, AP1, None);
        assert_eq!(a, PortId(GRE_PORT_BASE));
        e.next_port = GRE_PORT_COUNT - 1;
        assert_eq!(up(&mut e, t0, AP2, None), PortId(u32::MAX));
        // Wrapped round: GRE_PORT_BASE is still AP1's, so the next is +1.
        assert_eq!(up(&mut e, t0, AP2, Some(1)), PortId(GRE_PORT_BASE + 1));
    }

    #[test]
    fn fuzzed_packets_never_panic() {
        let t0 = crate::test_t0();
        let mut e = GreEndpoint::new(GreConfig {
            max_peers: 8,
            ..GreConfig::default()
        });
        let seeds = [
            data(None, None),
            data(Some(3), Some(9)),
            keepalive_probe(ip(AP1), ip(EDGE), None),
            keepalive_probe(ip(AP1), ip(EDGE), Some(1)),
            keepalive_probe(ip("2001:db8::5"), ip("2001:db8::1"), None),
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for i in 0..20_000u64 {
            let mut b = seeds[(next() % 5) as usize].clone();
            for _ in 0..next() % 4 {
                let at = (next() as usize) % b.len();
                b[at] ^= 1 << (next() % 8);
            }
            b.truncate((next() % 100) as usize);
            let src = if next() % 2 == 0 {
                ip(AP1)
            } else {
                ip("2001:db8::5")
            };
            let t = t0 + Duration::from_millis(i * 10);
            let _ = e.handle_packet(t, src, ip(EDGE), &b);
            e.handle_timeout(t);
            while e.poll_transmit().is_some() {}
            while let Some(ev) = e.poll_event() {
                if let GreEvent::PeerUp { port, .. } = ev {
                    assert!(is_gre_port(port));
                    e.encap_header(port, &mut out).unwrap();
                }
            }
        }
        assert!(e.counters().rx_packets == 20_000);
    }
}
