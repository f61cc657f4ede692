//! The client table, ARP/ND containment and storm control, sans-IO. It owns
//! what the edge knows of the clients behind its tunnels: (VLAN, MAC) →
//! tunnel port, IPv4/IPv6 addresses (DHCP ACKs on their way to the client,
//! relayed or bridged; ARP and neighbour discovery gleaned from the
//! client's own frames), first/last seen, packets and bytes each way; and
//! one token bucket per class (broadcast, multicast, unknown unicast) per
//! tunnel port.
//!
//! [`Containment`] is the outermost [`FloodPolicy`] of the daemon: every
//! frame the switch floods passes through it first, then (unless it
//! decided) through the policy it wraps ([`McastPolicy`], which wraps
//! [`FloodAll`](crate::forward::FloodAll)):
//!
//! 1. Storm control: a broadcast, multicast or unknown-unicast frame out of
//!    a tunnel takes a token from that port's bucket for its class; with
//!    none left it is dropped and counted (per port and in total). The
//!    trunk and host ports are not limited: they carry every AP's traffic.
//! 2. ARP/ND containment, on VLANs where it is on:
//!    - an ARP request or a neighbour solicitation for an address in the
//!      table goes only down the tunnel of the client that owns it (none
//!      when the asker is behind that same tunnel: its AP bridged it);
//!    - a gratuitous ARP (sender address = target address, or a flooded
//!      reply), an ARP probe or DAD for the client's own address and an
//!      unsolicited neighbour advertisement, out of a tunnel, go to the
//!      trunk and host ports only, not to every other tunnel.
//!
//!    Anything else (an address not in the table, announcements from the
//!    trunk) goes on to the wrapped policy.
//!
//! Why down the owner's tunnel rather than an answer made by the edge: the
//! client answers for itself, so a stale table (a client that changed its
//! address, a lease that ended) never produces a wrong answer — at worst a
//! request goes unanswered until the entry ages out, as it would with the
//! client gone — and nothing in the edge forges frames in a client's name.
//! The cost is one tunnel copy per request instead of N−1.
//!
//! The table learns through [`FloodPolicy::seen`], which the pipeline calls
//! for every frame it switches or delivers (before the flood decision).
//! Bounded: at most [`ClientConfig::max_clients`] entries (a full table
//! evicts the least recently seen, approximately: second chance), at most
//! [`MAX_ADDRS`] addresses per client; entries age out after
//! [`ClientConfig::max_age`] without a frame, and go at once with their
//! port ([`FloodPolicy::remove_port`]). Timers are the caller's:
//! [`Containment::handle_timeout`] at [`Containment::poll_timeout`].
//!
//! What the XDP fast path forwards (known unicast) never reaches this
//! table: with it on, packet and byte counts are those of the slow path,
//! and a client the switch still has behind its port (the fast path keeps
//! the FDB fresh) is kept as if seen (the caller says which, at expiry).
//! DHCPv6 leases are not read (IPv6 addresses come from ND).

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tunterm_control::VlanSet;

use crate::forward::FloodPolicy;
use crate::proto::bridge::{PortId, TRUNK, is_host_port};
use crate::proto::mcast::McastPolicy;
use crate::wire::dhcp::server_ack;
use crate::wire::ether::{ETHERTYPE_ARP, FrameView, MacAddr};
use crate::wire::mld;

/// Addresses kept per client, at most (the oldest goes first).
pub const MAX_ADDRS: usize = 8;
/// Expiry sweeps run at most this often.
const SWEEP: Duration = Duration::from_secs(10);

/// Storm control limits, frames per second per tunnel port (0: no limit
/// for that class), and one limit on the copies every flood together
/// writes into tunnels. A bucket holds one second's worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormConfig {
    /// Broadcast frames.
    pub broadcast_pps: u32,
    /// Multicast frames (IGMP/MLD reports included).
    pub multicast_pps: u32,
    /// Unicast frames to a MAC the switch does not know.
    pub unknown_unicast_pps: u32,
    /// Tunnel copies of flooded frames, per second, from every ingress
    /// (the trunk and host ports too) and every VLAN together. One frame
    /// flooded into a VLAN of 10,000 tunnels is 10,000 copies: this bounds
    /// the work floods can take whatever their source. A flood with more
    /// tunnel copies than the bucket holds goes to no tunnel (its other
    /// ports still get it) and is counted.
    #[serde(default = "default_flood_copies_pps")]
    pub flood_copies_pps: u32,
}

/// [`StormConfig::flood_copies_pps`]'s default.
pub const FLOOD_COPIES_PPS: u32 = 200_000;

fn default_flood_copies_pps() -> u32 {
    FLOOD_COPIES_PPS
}

impl Default for StormConfig {
    /// Far above what an AP's clients send in normal use (DHCP, ARP, ND,
    /// mDNS, SSDP: a few frames per client per minute), far below what
    /// one looping or flooding client sends.
    fn default() -> Self {
        StormConfig {
            broadcast_pps: 200,
            multicast_pps: 500,
            unknown_unicast_pps: 200,
            flood_copies_pps: FLOOD_COPIES_PPS,
        }
    }
}

/// Settings of [`Containment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Clients in the table, at most.
    pub max_clients: usize,
    /// A client not heard from for this long is forgotten.
    pub max_age: Duration,
    /// ARP/ND containment (see the module documentation).
    pub proxy: bool,
    /// VLANs where it is off all the same.
    pub proxy_off_vlans: VlanSet,
    /// Storm control (None: off).
    pub storm: Option<StormConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_clients: 200_000,
            max_age: Duration::from_secs(300),
            proxy: true,
            proxy_off_vlans: VlanSet::new(),
            storm: Some(StormConfig::default()),
        }
    }
}

/// Counters of the client table and ARP/ND containment (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCounters {
    /// Clients added to the table.
    pub learned: u64,
    /// Clients that moved to another tunnel port.
    pub moved: u64,
    /// Clients forgotten after `max_age` of silence.
    pub aged: u64,
    /// Clients evicted to make room (the table was full).
    pub evicted: u64,
    /// Clients removed with their port (session down).
    pub port_removed: u64,
    /// Addresses learned from DHCP ACKs.
    pub dhcp_acks: u64,
    /// Addresses learned from ARP.
    pub arp_gleaned: u64,
    /// Addresses learned from neighbour discovery.
    pub nd_gleaned: u64,
    /// Addresses that another client took over.
    pub addr_moved: u64,
    /// ARP requests sent only down the owner's tunnel.
    pub arp_directed: u64,
    /// Neighbour solicitations sent only down the owner's tunnel.
    pub nd_directed: u64,
    /// Requests for a client behind the asker's own tunnel (no copy).
    pub resolved_local: u64,
    /// Gratuitous ARPs, probes and unsolicited NAs from clients kept to
    /// the trunk.
    pub announcements_contained: u64,
    /// Tunnel copies not sent thanks to containment (a flood's copies
    /// minus those sent).
    pub copies_saved: u64,
}

/// Storm control counters, in total or for one port (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormDrops {
    /// Broadcast frames dropped.
    pub broadcast: u64,
    /// Multicast frames dropped.
    pub multicast: u64,
    /// Unknown-unicast frames dropped.
    pub unknown_unicast: u64,
}

impl StormDrops {
    /// All classes.
    pub fn total(&self) -> u64 {
        self.broadcast + self.multicast + self.unknown_unicast
    }

    fn add(&mut self, class: Class) {
        match class {
            Class::Broadcast => self.broadcast += 1,
            Class::Multicast => self.multicast += 1,
            Class::UnknownUnicast => self.unknown_unicast += 1,
        }
    }
}

/// One client, as `tunterm clients` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The VLAN.
    pub vlan: u16,
    /// The client's MAC.
    pub mac: MacAddr,
    /// The tunnel port it is behind (an L2TP session id or an mGRE peer's
    /// port).
    pub port: u32,
    /// Its addresses, oldest first.
    pub ips: Vec<IpAddr>,
    /// Seconds since it was first seen.
    pub first_seen_s: u64,
    /// Seconds since it was last seen.
    pub last_seen_s: u64,
    /// Frames from the client.
    pub packets_from: u64,
    /// Bytes from the client (Ethernet frames).
    pub bytes_from: u64,
    /// Unicast frames to the client.
    pub packets_to: u64,
    /// Bytes of unicast frames to the client.
    pub bytes_to: u64,
}

type Key = (u16, MacAddr);

#[derive(Clone, Debug)]
struct Client {
    port: PortId,
    first_seen: Instant,
    last_seen: Instant,
    addrs: Vec<IpAddr>,
    packets_from: u64,
    bytes_from: u64,
    packets_to: u64,
    bytes_to: u64,
}

/// Whether `p` is a tunnel port (an L2TP session or an mGRE peer).
pub fn is_tunnel_port(p: PortId) -> bool {
    p != TRUNK && !is_host_port(p)
}

/// The client table; see the module documentation.
#[derive(Debug)]
pub struct ClientTable {
    max: usize,
    max_age: Duration,
    /// Looked up for every frame the switch takes from or sends to a
    /// client: FxHash, as the switch's FDB for the same (VLAN, MAC) keys
    /// (SipHash cost about 270 of the ~1,770 instructions per frame that
    /// `fwdcount` counted on the userspace path); bounded by `max`.
    clients: FxHashMap<Key, Client>,
    /// (VLAN, address) → the MAC that owns it.
    owners: FxHashMap<(u16, IpAddr), MacAddr>,
    /// Eviction order: keys with when they were queued (stale records of
    /// gone clients are skipped).
    order: VecDeque<(Key, Instant)>,
    /// Keys per port (may hold keys that moved away: checked on use,
    /// rebuilt by the sweep).
    by_port: FxHashMap<PortId, Vec<Key>>,
    by_port_len: usize,
    next_sweep: Option<Instant>,
    counters: ClientCounters,
}

impl ClientTable {
    /// An empty table of at most `max` clients, aging them after `max_age`.
    pub fn new(max: usize, max_age: Duration) -> Self {
        ClientTable {
            max: max.max(1),
            max_age,
            clients: FxHashMap::default(),
            owners: FxHashMap::default(),
            order: VecDeque::new(),
            by_port: FxHashMap::default(),
            by_port_len: 0,
            next_sweep: None,
            counters: ClientCounters::default(),
        }
    }

    /// Clients in the table.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Counters.
    pub fn counters(&self) -> &ClientCounters {
        &self.counters
    }

    /// Addresses known, over all clients.
    pub fn addresses(&self) -> usize {
        self.owners.len()
    }

    /// The client that owns `ip` on `vlan` and its port, while it is fresh.
    pub fn owner(&self, now: Instant, vlan: u16, ip: IpAddr) -> Option<(MacAddr, PortId)> {
        let mac = *self.owners.get(&(vlan, ip))?;
        let c = self.clients.get(&(vlan, mac))?;
        (now.saturating_duration_since(c.last_seen) < self.max_age).then_some((mac, c.port))
    }

    /// Every client, unordered, as records at `now`.
    pub fn records(&self, now: Instant) -> impl Iterator<Item = ClientRecord> + '_ {
        let ago = move |t: Instant| now.saturating_duration_since(t).as_secs();
        self.clients
            .iter()
            .map(move |(&(vlan, mac), c)| ClientRecord {
                vlan,
                mac,
                port: c.port.0,
                ips: c.addrs.clone(),
                first_seen_s: ago(c.first_seen),
                last_seen_s: ago(c.last_seen),
                packets_from: c.packets_from,
                bytes_from: c.bytes_from,
                packets_to: c.packets_to,
                bytes_to: c.bytes_to,
            })
    }

    /// New limits; a smaller table evicts at once.
    pub fn set_limits(&mut self, now: Instant, max: usize, max_age: Duration) {
        self.max = max.max(1);
        self.max_age = max_age;
        while self.clients.len() > self.max {
            self.evict_one(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Age out silent clients (a sweep at most every 10 s). `present`
    /// says whether the switch still has a client's MAC behind its port
    /// (learned or refreshed since, e.g. by the XDP fast path, whose frames
    /// this table never sees): such a client past half its age counts as
    /// seen now and stays.
    pub fn handle_timeout(&mut self, now: Instant, present: impl Fn(u16, MacAddr, PortId) -> bool) {
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        let max_age = self.max_age;
        let mut stale = Vec::new();
        for (&(vlan, mac), c) in &mut self.clients {
            let age = now.saturating_duration_since(c.last_seen);
            if age < max_age / 2 {
                continue;
            }
            if present(vlan, mac, c.port) {
                c.last_seen = now;
            } else if age >= max_age {
                stale.push((vlan, mac));
            }
        }
        self.counters.aged += stale.len() as u64;
        for k in stale {
            self.remove(k);
        }
        self.rebuild_indexes();
        self.next_sweep = (!self.clients.is_empty()).then(|| now + SWEEP);
    }

    /// `port` is gone: its clients go at once.
    pub fn remove_port(&mut self, port: PortId) {
        let Some(keys) = self.by_port.remove(&port) else {
            return;
        };
        self.by_port_len -= keys.len();
        for k in keys {
            if self.clients.get(&k).is_some_and(|c| c.port == port) {
                self.remove(k);
                self.counters.port_removed += 1;
            }
        }
    }

    /// A frame of `len` bytes from `mac` on `vlan` came out of tunnel
    /// `port`: learn or refresh the client.
    fn touch(&mut self, now: Instant, vlan: u16, mac: MacAddr, port: PortId, len: usize) {
        let key = (vlan, mac);
        if let Some(c) = self.clients.get_mut(&key) {
            c.last_seen = now;
            c.packets_from += 1;
            c.bytes_from += len as u64;
            if c.port != port {
                c.port = port;
                self.counters.moved += 1;
                self.index_port(port, key);
            }
            return;
        }
        if self.clients.len() >= self.max {
            self.evict_one(now);
        }
        self.clients.insert(
            key,
            Client {
                port,
                first_seen: now,
                last_seen: now,
                addrs: Vec::new(),
                packets_from: 1,
                bytes_from: len as u64,
                packets_to: 0,
                bytes_to: 0,
            },
        );
        self.counters.learned += 1;
        self.order.push_back((key, now));
        self.index_port(port, key);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP);
        }
        if self.order.len() > 2 * self.max + 1024 || self.by_port_len > 2 * self.max + 1024 {
            self.rebuild_indexes();
        }
    }

    /// `ip` on `vlan` belongs to the client `mac` (which must be known).
    fn claim(&mut self, vlan: u16, mac: MacAddr, ip: IpAddr) -> bool {
        let Some(c) = self.clients.get_mut(&(vlan, mac)) else {
            return false;
        };
        if c.addrs.contains(&ip) {
            return false;
        }
        if c.addrs.len() >= MAX_ADDRS {
            let old = c.addrs.remove(0);
            if self.owners.get(&(vlan, old)) == Some(&mac) {
                self.owners.remove(&(vlan, old));
            }
        }
        c.addrs.push(ip);
        if let Some(prev) = self.owners.insert((vlan, ip), mac)
            && prev != mac
        {
            self.counters.addr_moved += 1;
            if let Some(p) = self.clients.get_mut(&(vlan, prev)) {
                p.addrs.retain(|a| *a != ip);
            }
        }
        true
    }

    fn index_port(&mut self, port: PortId, key: Key) {
        self.by_port.entry(port).or_default().push(key);
        self.by_port_len += 1;
    }

    fn remove(&mut self, key: Key) {
        let Some(c) = self.clients.remove(&key) else {
            return;
        };
        for a in c.addrs {
            if self.owners.get(&(key.0, a)) == Some(&key.1) {
                self.owners.remove(&(key.0, a));
            }
        }
    }

    /// Evict the least recently seen client, approximately: the oldest in
    /// the queue, unless seen since it was queued (then it goes to the back
    /// once: a second chance).
    fn evict_one(&mut self, now: Instant) {
        for _ in 0..=self.order.len() {
            let Some((key, queued)) = self.order.pop_front() else {
                break;
            };
            let Some(c) = self.clients.get(&key) else {
                continue;
            };
            if c.last_seen > queued {
                self.order.push_back((key, now));
                continue;
            }
            self.remove(key);
            self.counters.evicted += 1;
            return;
        }
        // Everyone had a second chance: the front goes.
        if let Some(&key) = self.clients.keys().next() {
            self.remove(key);
            self.counters.evicted += 1;
        }
    }

    /// Drop the stale records of the eviction queue and the port index.
    fn rebuild_indexes(&mut self) {
        let clients = &self.clients;
        self.order.retain(|(k, _)| clients.contains_key(k));
        self.by_port.clear();
        for (k, c) in clients {
            self.by_port.entry(c.port).or_default().push(*k);
        }
        self.by_port_len = self.clients.len();
    }

    /// Learn from a frame the switch took: the client behind a tunnel
    /// ingress, its ARP/ND addresses, a DHCP ACK on its way to a client,
    /// the packets and bytes each way.
    fn observe(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
        to: Option<PortId>,
    ) {
        let l3 = &frame[view.inner_offset..];
        if is_tunnel_port(ingress) {
            if view.src.is_multicast() || view.src == MacAddr::ZERO {
                return;
            }
            self.touch(now, vlan, view.src, ingress, frame.len());
            let (addr, nd) = match Resolution::parse(l3) {
                Some(Resolution::Arp { sha, spa, .. })
                    if sha == view.src && !spa.is_unspecified() =>
                {
                    (IpAddr::V4(spa), false)
                }
                // DAD (from ::) is for a tentative address: not yet its.
                Some(Resolution::Ns { src, .. }) if !src.is_unspecified() => {
                    (IpAddr::V6(src), true)
                }
                Some(Resolution::Na { target, .. }) => (IpAddr::V6(target), true),
                _ => return,
            };
            if self.claim(vlan, view.src, addr) {
                if nd {
                    self.counters.nd_gleaned += 1;
                } else {
                    self.counters.arp_gleaned += 1;
                }
            }
            return;
        }
        if let Some((mac, ip)) = server_ack(l3) {
            // A relayed or unicast ACK names its tunnel; a broadcast one
            // reaches a client the table learned from its request.
            if !self.clients.contains_key(&(vlan, mac))
                && let Some(to) = to.filter(|p| is_tunnel_port(*p))
            {
                self.touch(now, vlan, mac, to, 0);
                if let Some(c) = self.clients.get_mut(&(vlan, mac)) {
                    c.packets_from = 0;
                }
            }
            if self.claim(vlan, mac, IpAddr::V4(ip)) {
                self.counters.dhcp_acks += 1;
            }
        }
        if let Some(to) = to
            && is_tunnel_port(to)
            && let Some(c) = self.clients.get_mut(&(vlan, view.dst))
        {
            c.packets_to += 1;
            c.bytes_to += frame.len() as u64;
        }
    }
}

/// A frame's class for storm control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Broadcast,
    Multicast,
    UnknownUnicast,
}

impl Class {
    fn of(dst: &MacAddr) -> Class {
        if *dst == MacAddr::BROADCAST {
            Class::Broadcast
        } else if dst.is_multicast() {
            Class::Multicast
        } else {
            Class::UnknownUnicast
        }
    }
}

/// A token bucket in thousandths of a frame, holding one second's worth.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Bucket {
        Bucket {
            milli: u64::MAX,
            at: now,
        }
    }

    /// Take one frame's token at `rate` frames/s; false when empty.
    fn take(&mut self, now: Instant, rate: u32) -> bool {
        self.take_n(now, rate, 1)
    }

    /// Take `n` tokens at `rate` a second; none and false when fewer are
    /// left.
    fn take_n(&mut self, now: Instant, rate: u32, n: u64) -> bool {
        if rate == 0 {
            return true;
        }
        let cap = u64::from(rate) * 1000;
        let elapsed = now.saturating_duration_since(self.at);
        // µs × frames/s / 1000 = thousandths of a frame; a second refills.
        let refill =
            (elapsed.min(Duration::from_secs(1)).as_micros() as u64 * u64::from(rate)) / 1000;
        self.at = self.at.max(now);
        self.milli = self.milli.saturating_add(refill).min(cap);
        let need = n.saturating_mul(1000);
        if self.milli < need {
            return false;
        }
        self.milli -= need;
        true
    }
}

#[derive(Clone, Copy, Debug)]
struct PortStorm {
    buckets: [Bucket; 3],
    drops: StormDrops,
}

/// Storm control: token buckets per tunnel port and class, and one for
/// the tunnel copies of every flood.
#[derive(Debug, Default)]
pub struct StormControl {
    ports: FxHashMap<PortId, PortStorm>,
    total: StormDrops,
    copies: Option<Bucket>,
    flood_dropped: FloodDrops,
}

/// Floods kept from the tunnels by [`StormConfig::flood_copies_pps`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodDrops {
    /// Flooded frames that went to no tunnel, by class.
    pub frames: StormDrops,
    /// Of those, the frames that came from the trunk or a host port.
    pub from_upstream: u64,
    /// Tunnel copies not written.
    pub copies: u64,
}

impl StormControl {
    /// Whether a frame of `class` from `port` may pass at `now`.
    fn allow(&mut self, now: Instant, port: PortId, dst: &MacAddr, cfg: &StormConfig) -> bool {
        let class = Class::of(dst);
        let (i, rate) = match class {
            Class::Broadcast => (0, cfg.broadcast_pps),
            Class::Multicast => (1, cfg.multicast_pps),
            Class::UnknownUnicast => (2, cfg.unknown_unicast_pps),
        };
        if rate == 0 {
            return true;
        }
        let p = self.ports.entry(port).or_insert_with(|| PortStorm {
            buckets: [Bucket::full(now); 3],
            drops: StormDrops::default(),
        });
        if p.buckets[i].take(now, rate) {
            return true;
        }
        p.drops.add(class);
        self.total.add(class);
        false
    }

    /// Drops in total, every port since start.
    pub fn total(&self) -> &StormDrops {
        &self.total
    }

    /// Floods kept from the tunnels by the copies limit, since start.
    pub fn flood_dropped(&self) -> &FloodDrops {
        &self.flood_dropped
    }

    /// Whether a flood of `copies` tunnel copies may go at `now`; counted
    /// when not.
    fn allow_copies(
        &mut self,
        now: Instant,
        ingress: PortId,
        dst: &MacAddr,
        copies: usize,
        cfg: &StormConfig,
    ) -> bool {
        if copies == 0 || cfg.flood_copies_pps == 0 {
            return true;
        }
        let bucket = self.copies.get_or_insert_with(|| Bucket::full(now));
        if bucket.take_n(now, cfg.flood_copies_pps, copies as u64) {
            return true;
        }
        let d = &mut self.flood_dropped;
        d.frames.add(Class::of(dst));
        d.from_upstream += u64::from(!is_tunnel_port(ingress));
        d.copies += copies as u64;
        false
    }

    /// Drops per port that has any (ports still up).
    pub fn per_port(&self) -> impl Iterator<Item = (PortId, StormDrops)> + '_ {
        self.ports
            .iter()
            .filter(|(_, p)| p.drops.total() > 0)
            .map(|(port, p)| (*port, p.drops))
    }

    fn remove_port(&mut self, port: PortId) {
        self.ports.remove(&port);
    }
}

/// An address resolution message in a frame (from its ethertype on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    /// Ethernet/IPv4 ARP (RFC 826).
    Arp {
        op: u16,
        sha: MacAddr,
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
    },
    /// Neighbour solicitation (RFC 4861 §4.3), `src` :: for DAD.
    Ns { src: Ipv6Addr, target: Ipv6Addr },
    /// Neighbour advertisement (RFC 4861 §4.4).
    Na { target: Ipv6Addr, solicited: bool },
}

impl Resolution {
    fn parse(l3: &[u8]) -> Option<Resolution> {
        let (ty, rest) = l3.split_at_checked(2)?;
        match u16::from_be_bytes([ty[0], ty[1]]) {
            ETHERTYPE_ARP => {
                // htype 1, ptype IPv4, hlen 6, plen 4.
                let a = rest.get(..28)?;
                if a[..6] != [0, 1, 8, 0, 6, 4] {
                    return None;
                }
                let ip = |r: std::ops::Range<usize>| -> Option<Ipv4Addr> {
                    Some(Ipv4Addr::from(<[u8; 4]>::try_from(&a[r]).ok()?))
                };
                Some(Resolution::Arp {
                    op: u16::from_be_bytes([a[6], a[7]]),
                    sha: MacAddr::try_from(&a[8..14]).ok()?,
                    spa: ip(14..18)?,
                    tpa: ip(24..28)?,
                })
            }
            0x86dd => {
                let ip = rest.get(..40)?;
                // Neighbour discovery is link-local only: hop limit 255.
                if ip[0] >> 4 != 6 || ip[7] != 255 {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let payload = rest.get(40..40 + len)?;
                let (next, icmp) = mld::upper_layer(ip[6], payload)?;
                if next != mld::NEXT_HEADER_ICMPV6 || icmp.len() < 24 || icmp[1] != 0 {
                    return None;
                }
                let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
                match icmp[0] {
                    135 => Some(Resolution::Ns { src, target }),
                    136 => Some(Resolution::Na {
                        target,
                        solicited: icmp[4] & 0x40 != 0,
                    }),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// What containment decided for a flooded frame.
enum Decision {
    /// Not ours: the wrapped policy decides.
    Pass,
    /// Only down the tunnel of `port` (the owner of the address asked for).
    Owner(PortId, bool),
    /// The owner is behind the asker's own tunnel: no copy.
    Local,
    /// A client's announcement: the trunk and host ports only.
    Announcement,
}

/// The edge's outermost flood policy: storm control, the client table and
/// ARP/ND containment around `P` (see the module documentation).
#[derive(Debug)]
pub struct Containment<P = McastPolicy> {
    cfg: ClientConfig,
    table: ClientTable,
    storm: StormControl,
    inner: P,
}

impl<P: FloodPolicy> Containment<P> {
    /// Containment set by `cfg` around `inner`.
    pub fn wrapping(cfg: ClientConfig, inner: P) -> Self {
        Containment {
            table: ClientTable::new(cfg.max_clients, cfg.max_age),
            cfg,
            storm: StormControl::default(),
            inner,
        }
    }

    /// New settings (the table and the buckets are kept).
    pub fn reconfigure(&mut self, now: Instant, cfg: ClientConfig) {
        self.table.set_limits(now, cfg.max_clients, cfg.max_age);
        self.cfg = cfg;
    }

    /// Settings.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The client table.
    pub fn table(&self) -> &ClientTable {
        &self.table
    }

    /// Storm control.
    pub fn storm(&self) -> &StormControl {
        &self.storm
    }

    /// The policy it wraps.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The policy it wraps.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run (the
    /// wrapped policy's timers are its own).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Age out silent clients; `present` as for
    /// [`ClientTable::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Instant, present: impl Fn(u16, MacAddr, PortId) -> bool) {
        self.table.handle_timeout(now, present);
    }

    fn decide(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
    ) -> Decision {
        if !self.cfg.proxy || self.cfg.proxy_off_vlans.contains(vlan) {
            return Decision::Pass;
        }
        let from_client = is_tunnel_port(ingress);
        let (target, nd) = match Resolution::parse(&frame[view.inner_offset..]) {
            Some(Resolution::Arp { op, spa, tpa, .. }) => {
                if from_client && (spa == tpa || op == 2) {
                    return Decision::Announcement;
                }
                if op != 1 {
                    return Decision::Pass;
                }
                (IpAddr::V4(tpa), false)
            }
            Some(Resolution::Ns { target, .. }) => (IpAddr::V6(target), true),
            Some(Resolution::Na { solicited, .. }) => {
                return if from_client && !solicited {
                    Decision::Announcement
                } else {
                    Decision::Pass
                };
            }
            None => return Decision::Pass,
        };
        match self.table.owner(now, vlan, target) {
            // A probe, DAD or re-announcement of the client's own address.
            Some((mac, _)) if mac == view.src && from_client => Decision::Announcement,
            Some((_, port)) if port == ingress => Decision::Local,
            Some((_, port)) => Decision::Owner(port, nd),
            None => Decision::Pass,
        }
    }
}

impl<P: FloodPolicy> FloodPolicy for Containment<P> {
    fn seen(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
        to: Option<PortId>,
    ) {
        self.table.observe(now, ingress, vlan, view, frame, to);
        self.inner.seen(now, ingress, vlan, view, frame, to);
    }

    fn flood_ports(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
        members: &[PortId],
        to: &mut Vec<PortId>,
    ) {
        if let Some(storm) = &self.cfg.storm
            && is_tunnel_port(ingress)
            && !self.storm.allow(now, ingress, &view.dst, storm)
        {
            return;
        }
        let start = to.len();
        self.contain(now, ingress, vlan, view, frame, members, to);
        if let Some(storm) = &self.cfg.storm {
            let copies = to[start..].iter().filter(|&&p| is_tunnel_port(p)).count();
            if !self
                .storm
                .allow_copies(now, ingress, &view.dst, copies, storm)
            {
                // Keep the other ports, in order.
                let mut kept = start;
                for i in start..to.len() {
                    if !is_tunnel_port(to[i]) {
                        to[kept] = to[i];
                        kept += 1;
                    }
                }
                to.truncate(kept);
            }
        }
    }

    fn remove_port(&mut self, port: PortId) {
        self.table.remove_port(port);
        self.storm.remove_port(port);
        self.inner.remove_port(port);
    }
}

impl<P: FloodPolicy> Containment<P> {
    /// The ports a flood goes to after ARP/ND containment (and `inner`).
    #[allow(clippy::too_many_arguments)]
    fn contain(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
        members: &[PortId],
        to: &mut Vec<PortId>,
    ) {
        let flood = || {
            members
                .iter()
                .filter(|&&p| p != ingress && is_tunnel_port(p))
                .count()
        };
        match self.decide(now, ingress, vlan, view, frame) {
            Decision::Owner(port, nd) if members.contains(&port) => {
                let c = &mut self.table.counters;
                if nd {
                    c.nd_directed += 1;
                } else {
                    c.arp_directed += 1;
                }
                c.copies_saved += flood().saturating_sub(1) as u64;
                to.push(port);
            }
            // Not ours, or an owner not on this VLAN's ports (raced away).
            Decision::Pass | Decision::Owner(..) => {
                self.inner
                    .flood_ports(now, ingress, vlan, view, frame, members, to);
            }
            Decision::Local => {
                let c = &mut self.table.counters;
                c.resolved_local += 1;
                c.copies_saved += flood() as u64;
            }
            Decision::Announcement => {
                let c = &mut self.table.counters;
                c.announcements_contained += 1;
                c.copies_saved += flood() as u64;
                to.extend(
                    members
                        .iter()
                        .copied()
                        .filter(|&p| p != ingress && !is_tunnel_port(p)),
                );
            }
        }
    }
}
