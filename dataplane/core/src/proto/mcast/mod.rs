//! Multicast containment, sans-IO: IGMP/MLD snooping (RFC 4541) with a
//! querier per VLAN (RFC 3376 / RFC 3810 timers), and per-VLAN mDNS / SSDP
//! forwarding. It owns the snooping table (the MDB: (VLAN, group) → member
//! ports with their timers), the router ports and the queriers' state.
//!
//! [`McastPolicy`] is a [`FloodPolicy`]: every multicast frame the switch
//! would flood passes through it. It reads the IGMP/MLD messages among them
//! (reports, leaves, queries; PIM hellos and MRD advertisements mark router
//! ports), narrows each data frame's ports to the group's members and the
//! router ports, then hands that narrowed member list to the policy it
//! wraps (`P`, [`FloodAll`] by default): storm control or ARP proxying can
//! sit inside it. Frames that are not IP multicast go to `P` untouched.
//!
//! Forwarding rules, on a VLAN in `snoop_vlans`:
//! - IGMP/MLD reports and leaves: to router ports only; queries: to all.
//! - Link-local groups (224.0.0.0/24, ff02::1): to all.
//! - Other groups: member ports and router ports; an unregistered group to
//!   router ports only, or to all on a VLAN in `flood_unregistered` and
//!   while the table fills after a start ([`McastPolicy::warm_up`]), and
//!   on a VLAN where the table refused a join (full), for a membership
//!   interval after the last refusal: a member the table could not hold
//!   still gets its group.
//!
//! mDNS (224.0.0.251, ff02::fb, UDP 5353) and SSDP (239.255.255.250,
//! ff02::c, ff05::c, UDP 1900), when their service is configured: to all on
//! its VLANs, dropped (counted) elsewhere. Unconfigured: the rules above.
//!
//! IGMPv3/MLDv2 source lists are ignored: a group is joined by any record
//! that wants some source (EXCLUDE, or INCLUDE/ALLOW with sources) and left
//! by TO_IN({}); BLOCK changes nothing (as the Linux bridge without
//! source tracking).
//!
//! Older hosts (RFC 3376 §7.3.2, RFC 3810 §8.3.2): the querier keeps
//! sending queries of its configured version — IGMPv1/v2 and MLDv1 hosts
//! answer IGMPv3/MLDv2 queries (RFC 3376 §7.2.1, RFC 3810 §8.2.1), and a
//! querier steps down only for an older *querier*, which is configuration
//! (§7.3.1). Each membership keeps an IGMPv1-host-present timer (group
//! membership interval after the last IGMPv1 report on that port): while
//! it runs, leaves for the group from that port (IGMPv2 Leave, IGMPv3
//! TO_IN({})) are ignored and counted, since a v1 host would not answer
//! the group-specific query and its membership would be cut. An IGMPv2
//! report needs nothing of the kind: its Leave is handled as TO_IN({}).
//!
//! Timers are driven by the caller: [`McastPolicy::handle_timeout`] at
//! [`McastPolicy::poll_timeout`], then [`McastPolicy::poll_query`] for the
//! queries to send. Expiry runs in a sweep at most once a second.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tunterm_control::VlanSet;

use crate::forward::{FloodAll, FloodPolicy};
use crate::proto::bridge::{PortId, is_host_port};
use crate::wire::checksum::internet_checksum;
use crate::wire::ether::{FrameView, MacAddr};
use crate::wire::igmp::{self, Version};
use crate::wire::mld;

/// PIM's IP protocol / next-header number (hellos mark router ports).
const PROTO_PIM: u8 = 103;
/// Last member query interval (RFC 3376 §8.8 default, fixed here).
const LAST_MEMBER_INTERVAL: Duration = Duration::from_secs(1);
/// Expiry sweeps run at most this often.
const SWEEP: Duration = Duration::from_secs(1);
/// Queries waiting for the driver, at most.
pub const QUERY_QUEUE: usize = 4096;
/// Pending group-specific queries (after leaves), at most.
pub const PENDING_LEAVES: usize = 4096;

/// The querier's settings (`tunterm_igmp_snooping_config.querier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuerierConfig {
    /// Between general queries.
    pub query_interval: Duration,
    /// Max response time, tenths of a second.
    pub max_resp: u32,
    /// Robustness variable, 1..=7.
    pub robustness: u8,
    /// Highest IGMP version spoken (V3 also means MLDv2, below: MLDv1).
    pub version: Version,
}

impl Default for QuerierConfig {
    /// RFC 3376 §8 defaults.
    fn default() -> Self {
        QuerierConfig {
            query_interval: Duration::from_secs(125),
            max_resp: 100,
            robustness: 2,
            version: Version::V3,
        }
    }
}

impl QuerierConfig {
    /// Group membership interval (RFC 3376 §8.4): robustness × query
    /// interval + max response time.
    pub fn membership_interval(&self) -> Duration {
        self.query_interval * u32::from(self.robustness)
            + Duration::from_millis(u64::from(self.max_resp) * 100)
    }

    /// Other querier present interval (RFC 3376 §8.5): robustness × query
    /// interval + half the max response time.
    pub fn other_querier_interval(&self) -> Duration {
        self.query_interval * u32::from(self.robustness)
            + Duration::from_millis(u64::from(self.max_resp) * 50)
    }
}

/// Settings of [`McastPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McastConfig {
    /// VLANs snooped (IGMP/MLD).
    pub snoop_vlans: VlanSet,
    /// Querier on every snooped VLAN; its timers also set the membership
    /// timeout (RFC 3376 defaults without it).
    pub querier: Option<QuerierConfig>,
    /// Snooped VLANs where unregistered groups are flooded (the Linux
    /// bridge's `mcast_flood`) rather than sent to router ports only.
    pub flood_unregistered: VlanSet,
    /// Router ports on every VLAN they carry, learned or not (the trunk).
    pub static_router_ports: Vec<PortId>,
    /// mDNS forwarded on these VLANs only (None: normal rules).
    pub mdns: Option<VlanSet>,
    /// SSDP forwarded on these VLANs only (None: normal rules).
    pub ssdp: Option<VlanSet>,
    /// Source MAC of the queries.
    pub mac: MacAddr,
    /// Source address of IPv4 queries per VLAN (the edge's host port);
    /// 0.0.0.0 elsewhere.
    pub addr4: HashMap<u16, Ipv4Addr>,
    /// Groups in the table, at most.
    pub max_groups: usize,
    /// Groups per VLAN, at most.
    pub max_groups_per_vlan: usize,
}

impl Default for McastConfig {
    fn default() -> Self {
        McastConfig {
            snoop_vlans: VlanSet::new(),
            querier: None,
            flood_unregistered: VlanSet::new(),
            static_router_ports: Vec::new(),
            mdns: None,
            ssdp: None,
            mac: MacAddr::ZERO,
            addr4: HashMap::new(),
            max_groups: 16_384,
            max_groups_per_vlan: 1_024,
        }
    }
}

/// Counters (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McastCounters {
    /// IGMP/MLD reports seen (v3/v2 reports count once).
    pub reports: u64,
    /// Leaves seen (IGMPv2 leave, MLD done, TO_IN({}) records).
    pub leaves: u64,
    /// Of those, ignored: IGMPv1 hosts are members behind the port.
    pub leaves_ignored: u64,
    /// Queries heard from others.
    pub queries_in: u64,
    /// General queries sent (one per VLAN and family, whatever the ports).
    pub queries_out: u64,
    /// Group-specific queries sent after leaves.
    pub group_queries_out: u64,
    /// Router ports learned from PIM hellos and MRD advertisements.
    pub router_adverts: u64,
    /// IGMP/MLD messages dropped: bad checksum, truncated.
    pub malformed: u64,
    /// Multicast data frames forwarded by the table (not flooded).
    pub forwarded: u64,
    /// Copies not sent thanks to snooping (VLAN members left out).
    pub pruned_copies: u64,
    /// Data frames to groups with no member (router ports only).
    pub unregistered: u64,
    /// Joins refused: the table (or the VLAN's share) is full.
    pub table_full: u64,
    /// Memberships expired (no report within the membership interval, or
    /// none after a leave's group-specific queries).
    pub expired: u64,
    /// Memberships removed with their port (session down).
    pub port_removed: u64,
    /// mDNS frames dropped on VLANs where mDNS is not enabled.
    pub mdns_dropped: u64,
    /// mDNS frames forwarded on an enabled VLAN.
    pub mdns_forwarded: u64,
    /// SSDP frames dropped on VLANs where SSDP is not enabled.
    pub ssdp_dropped: u64,
    /// SSDP frames forwarded on an enabled VLAN.
    pub ssdp_forwarded: u64,
    /// Data frames to groups with no member flooded: on a VLAN in
    /// `flood_unregistered`, or while the table fills after a start.
    pub unregistered_flooded: u64,
    /// Queries dropped because the driver's queue was full, or leaves not
    /// followed by group-specific queries (too many pending).
    pub queue_full: u64,
}

/// One (VLAN, group) of the MDB, as `tunterm mdb` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbEntry {
    /// The VLAN.
    pub vlan: u16,
    /// The group.
    pub group: IpAddr,
    /// Member ports and the milliseconds each has left.
    pub ports: Vec<MdbPort>,
}

/// One member port of an [`MdbEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbPort {
    /// The switch port.
    pub port: u32,
    /// Until the membership expires.
    pub expires_ms: u64,
}

/// A router port, as `tunterm mdb` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterPort {
    /// The VLAN.
    pub vlan: u16,
    /// The switch port.
    pub port: u32,
    /// Until it is forgotten; None for a static one.
    pub expires_ms: Option<u64>,
}

/// A querier, as `tunterm mdb` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerierStatus {
    /// The VLAN.
    pub vlan: u16,
    /// The address tunterm queries from (0.0.0.0 or a link-local).
    pub address: IpAddr,
    /// Whether tunterm is querying (no lower-addressed querier heard).
    pub active: bool,
    /// The other querier heard last, while it counts.
    pub other: Option<IpAddr>,
}

/// The MDB and the queriers, for stats and `tunterm mdb`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbSnapshot {
    /// Groups, by VLAN then group.
    pub groups: Vec<MdbEntry>,
    /// Router ports.
    pub routers: Vec<RouterPort>,
    /// Queriers.
    pub queriers: Vec<QuerierStatus>,
}

/// A query to send: the driver delivers `frame` (untagged) on `vlan` to
/// `to`, or to every port of the VLAN when None.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryOut {
    /// The VLAN.
    pub vlan: u16,
    /// One port (a group-specific query after a leave) or all.
    pub to: Option<PortId>,
    /// The Ethernet frame, untagged.
    pub frame: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    port: PortId,
    expires: Instant,
    /// IGMPv1 hosts behind this port are members until then.
    v1_hosts: Option<Instant>,
}

/// A querier for one VLAN and family.
#[derive(Clone, Debug)]
struct Querier {
    vlan: u16,
    v6: bool,
    addr: IpAddr,
    next: Instant,
    startup_left: u8,
    other: Option<(IpAddr, Instant)>,
}

/// A leave being checked with group-specific queries.
#[derive(Clone, Copy, Debug)]
struct Leave {
    vlan: u16,
    group: IpAddr,
    port: PortId,
    next: Instant,
    left: u8,
}

/// The multicast flood policy; see the module documentation.
#[derive(Debug)]
pub struct McastPolicy<P = FloodAll> {
    cfg: McastConfig,
    timers: QuerierConfig,
    inner: P,
    groups: FxHashMap<(u16, IpAddr), Vec<Member>>,
    per_vlan: FxHashMap<u16, usize>,
    routers: FxHashMap<u16, Vec<Member>>,
    queriers: Vec<Querier>,
    leaves: Vec<Leave>,
    out: VecDeque<QueryOut>,
    next_query: Option<Instant>,
    next_sweep: Option<Instant>,
    /// Until then unregistered groups are flooded: the table is filling
    /// (a start, a restart that kept the tunnels).
    warm_until: Instant,
    /// VLANs where a join was refused (table full), until when: their
    /// unregistered groups flood, as a member may be behind any port.
    overflow: FxHashMap<u16, Instant>,
    counters: McastCounters,
    /// Scratch: the narrowed member list handed to `inner`.
    narrowed: Vec<PortId>,
}

/// What a multicast IP frame carries, as far as this policy cares.
enum Ip<'a> {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        payload: &'a [u8],
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next: u8,
        payload: &'a [u8],
    },
}

impl Ip<'_> {
    fn dst(&self) -> IpAddr {
        match self {
            Ip::V4 { dst, .. } => IpAddr::V4(*dst),
            Ip::V6 { dst, .. } => IpAddr::V6(*dst),
        }
    }

    /// Protocol and payload after the extension headers.
    fn upper(&self) -> Option<(u8, &[u8])> {
        match self {
            Ip::V4 { proto, payload, .. } => Some((*proto, payload)),
            Ip::V6 { next, payload, .. } => mld::upper_layer(*next, payload),
        }
    }
}

/// The IP multicast packet in `frame`, if it is one (an unfragmented first
/// piece: later fragments have no header to read and are data anyway).
fn ip_multicast<'a>(view: &FrameView, frame: &'a [u8]) -> Option<Ip<'a>> {
    if !view.dst.is_multicast() {
        return None;
    }
    let ty = frame.get(view.inner_offset..view.inner_offset + 2)?;
    let l3 = &frame[view.inner_offset + 2..];
    match u16::from_be_bytes([ty[0], ty[1]]) {
        0x0800 => {
            let p = crate::wire::ipv4::Packet::new_checked(l3).ok()?;
            let dst = p.dst_addr();
            dst.is_multicast().then(|| Ip::V4 {
                src: p.src_addr(),
                dst,
                proto: u8::from(p.protocol()),
                payload: if p.frag_offset() == 0 {
                    p.payload()
                } else {
                    &[]
                },
            })
        }
        0x86dd => {
            let p = crate::wire::ipv6::Packet::new_checked(l3).ok()?;
            let dst = p.dst_addr();
            dst.is_multicast().then(|| Ip::V6 {
                src: p.src_addr(),
                dst,
                next: u8::from(p.next_header()),
                payload: p.payload(),
            })
        }
        _ => None,
    }
}

/// Groups flooded as they are (never in the table): 224.0.0.0/24, ff02::1.
pub fn is_link_local_group(g: &IpAddr) -> bool {
    match g {
        IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
        IpAddr::V6(a) => *a == mld::ALL_NODES,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Mdns,
    Ssdp,
}

/// mDNS or SSDP: the group and the UDP destination port.
fn service(ip: &Ip<'_>) -> Option<Service> {
    let (proto, payload) = ip.upper()?;
    if proto != 17 || payload.len() < 8 {
        return None;
    }
    let port = u16::from_be_bytes([payload[2], payload[3]]);
    let mdns4 = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251));
    let mdns6 = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb));
    let ssdp4 = IpAddr::V4(Ipv4Addr::new(239, 255, 255, 250));
    let ssdp6 = [0xff02, 0xff05].map(|p| IpAddr::V6(Ipv6Addr::new(p, 0, 0, 0, 0, 0, 0, 0xc)));
    let dst = ip.dst();
    if port == 5353 && (dst == mdns4 || dst == mdns6) {
        Some(Service::Mdns)
    } else if port == 1900 && (dst == ssdp4 || ssdp6.contains(&dst)) {
        Some(Service::Ssdp)
    } else {
        None
    }
}

/// The link-local address (modified EUI-64) of `mac`: the source of MLD
/// queries.
pub fn link_local(mac: &MacAddr) -> Ipv6Addr {
    let m = mac.octets();
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// The multicast MAC of `group` (RFC 1112 §6.4, RFC 2464 §7).
fn group_mac(group: &IpAddr) -> [u8; 6] {
    match group {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}

/// Whether `a` wins an election against `b` (RFC 3376 §6.6.2: the lowest
/// address). An unspecified address (a snooping switch's) loses to any.
fn wins(a: &IpAddr, b: &IpAddr) -> bool {
    if a.is_unspecified() {
        return false;
    }
    b.is_unspecified() || a < b
}

impl McastPolicy<FloodAll> {
    /// A policy that floods what it does not prune to all ports.
    pub fn new(cfg: McastConfig, now: Instant) -> Self {
        McastPolicy::wrapping(cfg, now, FloodAll)
    }
}

impl<P: FloodPolicy> McastPolicy<P> {
    /// A policy that hands its (narrowed) decisions to `inner`.
    pub fn wrapping(cfg: McastConfig, now: Instant, inner: P) -> Self {
        let mut p = McastPolicy {
            cfg: McastConfig::default(),
            timers: QuerierConfig::default(),
            inner,
            groups: FxHashMap::default(),
            per_vlan: FxHashMap::default(),
            routers: FxHashMap::default(),
            queriers: Vec::new(),
            leaves: Vec::new(),
            out: VecDeque::new(),
            next_query: None,
            next_sweep: None,
            warm_until: now,
            overflow: FxHashMap::default(),
            counters: McastCounters::default(),
            narrowed: Vec::new(),
        };
        p.reconfigure(cfg, now);
        p.warm_until = now + p.warm_up();
        p
    }

    /// New settings: queriers restart (startup queries) where they changed;
    /// groups of VLANs no longer snooped are forgotten.
    pub fn reconfigure(&mut self, cfg: McastConfig, now: Instant) {
        if cfg == self.cfg {
            return;
        }
        self.timers = cfg.querier.unwrap_or_default();
        self.groups.retain(|(v, _), _| cfg.snoop_vlans.contains(*v));
        self.per_vlan.retain(|v, _| cfg.snoop_vlans.contains(*v));
        self.queriers.clear();
        if let Some(q) = cfg.querier {
            for vlan in cfg.snoop_vlans.iter() {
                let a4 = cfg
                    .addr4
                    .get(&vlan)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                for (v6, addr) in [
                    (false, IpAddr::V4(a4)),
                    (true, IpAddr::V6(link_local(&cfg.mac))),
                ] {
                    self.queriers.push(Querier {
                        vlan,
                        v6,
                        addr,
                        next: now,
                        startup_left: q.robustness,
                        other: None,
                    });
                }
            }
        }
        self.next_query = self.queriers.iter().map(|q| q.next).min();
        self.cfg = cfg;
    }

    /// How long after a start unregistered groups are flooded: until the
    /// hosts have answered tunterm's first query (max response time + 1 s),
    /// or without a querier of its own, for a membership interval (the
    /// upstream querier's next query comes within it). Streams joined before
    /// a restart keep flowing meanwhile.
    pub fn warm_up(&self) -> Duration {
        match self.cfg.querier {
            Some(q) => Duration::from_millis(u64::from(q.max_resp) * 100) + SWEEP,
            None => self.timers.membership_interval(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &McastConfig {
        &self.cfg
    }

    /// Counters.
    pub fn counters(&self) -> &McastCounters {
        &self.counters
    }

    /// The policy it wraps.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Groups in the table.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The member ports of `group` on `vlan` (unsorted).
    pub fn members(&self, vlan: u16, group: IpAddr) -> Vec<PortId> {
        self.groups
            .get(&(vlan, group))
            .map_or_else(Vec::new, |m| m.iter().map(|m| m.port).collect())
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let leave = self.leaves.iter().map(|l| l.next).min();
        [self.next_query, self.next_sweep, leave]
            .into_iter()
            .flatten()
            .min()
    }

    /// Run the timers due at `now`: general queries, group-specific
    /// queries after leaves, expiry. Queries wait in
    /// [`poll_query`](Self::poll_query).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_query.is_some_and(|t| t <= now) {
            self.run_queriers(now);
        }
        self.run_leaves(now);
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
    }

    /// The next query to send, if any. Call after
    /// [`handle_timeout`](Self::handle_timeout) until None.
    #[must_use]
    pub fn poll_query(&mut self) -> Option<QueryOut> {
        self.out.pop_front()
    }

    /// `port` is gone (session down, peer removed): its memberships and
    /// router-port state go at once.
    pub fn remove_port(&mut self, port: PortId) {
        self.counters.port_removed += self.retain_members(|m| m.port != port);
        self.leaves.retain(|l| l.port != port);
    }

    /// The MDB, router ports and queriers at `now`.
    pub fn snapshot(&self, now: Instant) -> MdbSnapshot {
        let left = |t: Instant| t.saturating_duration_since(now).as_millis() as u64;
        let mut groups: Vec<MdbEntry> = self
            .groups
            .iter()
            .map(|((vlan, group), m)| {
                let mut ports: Vec<MdbPort> = m
                    .iter()
                    .map(|m| MdbPort {
                        port: m.port.0,
                        expires_ms: left(m.expires),
                    })
                    .collect();
                ports.sort_by_key(|p| p.port);
                MdbEntry {
                    vlan: *vlan,
                    group: *group,
                    ports,
                }
            })
            .collect();
        groups.sort_by_key(|e| (e.vlan, e.group));
        let mut routers: Vec<RouterPort> = self
            .routers
            .iter()
            .flat_map(|(vlan, r)| {
                r.iter().map(move |m| RouterPort {
                    vlan: *vlan,
                    port: m.port.0,
                    expires_ms: Some(left(m.expires)),
                })
            })
            .collect();
        routers.sort_by_key(|r| (r.vlan, r.port));
        let queriers = self
            .queriers
            .iter()
            .map(|q| {
                let other = q.other.filter(|(_, until)| *until > now).map(|(a, _)| a);
                QuerierStatus {
                    vlan: q.vlan,
                    address: q.addr,
                    active: other.is_none(),
                    other,
                }
            })
            .collect();
        MdbSnapshot {
            groups,
            routers,
            queriers,
        }
    }

    fn run_queriers(&mut self, now: Instant) {
        let Some(cfg) = self.cfg.querier else {
            self.next_query = None;
            return;
        };
        let mut due = std::mem::take(&mut self.queriers);
        for q in due.iter_mut().filter(|q| q.next <= now) {
            if let Some((_, until)) = q.other {
                if until > now {
                    q.next = until;
                    continue;
                }
                // The other querier went quiet: start over as at startup.
                q.other = None;
                q.startup_left = cfg.robustness;
            }
            let frame = self.query_frame(q.v6, q.addr, None, cfg.version);
            if self.push(q.vlan, None, frame) {
                self.counters.queries_out += 1;
            }
            let interval = if q.startup_left > 1 {
                q.startup_left -= 1;
                cfg.query_interval / 4
            } else {
                q.startup_left = 0;
                cfg.query_interval
            };
            q.next = now + interval;
        }
        self.next_query = due.iter().map(|q| q.next).min();
        self.queriers = due;
    }

    fn run_leaves(&mut self, now: Instant) {
        let mut leaves = std::mem::take(&mut self.leaves);
        leaves.retain_mut(|l| {
            if l.next > now {
                return true;
            }
            if !self.groups.contains_key(&(l.vlan, l.group)) {
                return false;
            }
            let src = self.querier_addr(l.vlan, l.group.is_ipv6());
            let frame =
                self.query_frame(l.group.is_ipv6(), src, Some(l.group), self.timers.version);
            if self.push(l.vlan, Some(l.port), frame) {
                self.counters.group_queries_out += 1;
            }
            l.left -= 1;
            l.next = now + LAST_MEMBER_INTERVAL;
            l.left > 0
        });
        self.leaves = leaves;
    }

    fn sweep(&mut self, now: Instant) {
        self.counters.expired += self.retain_members(|m| m.expires > now);
        self.overflow.retain(|_, t| *t > now);
        self.next_sweep =
            (!self.groups.is_empty() || !self.routers.is_empty()).then(|| now + SWEEP);
    }

    /// Keep the memberships and router ports `keep` says; groups left with
    /// no member go. Returns the memberships dropped.
    fn retain_members(&mut self, keep: impl Fn(&Member) -> bool) -> u64 {
        let mut dropped = 0;
        let per_vlan = &mut self.per_vlan;
        self.groups.retain(|(vlan, _), members| {
            let before = members.len();
            members.retain(&keep);
            dropped += (before - members.len()) as u64;
            if members.is_empty() {
                if let Some(n) = per_vlan.get_mut(vlan) {
                    *n = n.saturating_sub(1);
                }
                return false;
            }
            true
        });
        for r in self.routers.values_mut() {
            r.retain(&keep);
        }
        self.routers.retain(|_, r| !r.is_empty());
        dropped
    }

    fn arm_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP);
        }
    }

    /// Queue a query; false (counted) when the queue is full.
    fn push(&mut self, vlan: u16, to: Option<PortId>, frame: Vec<u8>) -> bool {
        if self.out.len() >= QUERY_QUEUE {
            self.counters.queue_full += 1;
            return false;
        }
        self.out.push_back(QueryOut { vlan, to, frame });
        true
    }

    fn querier_addr(&self, vlan: u16, v6: bool) -> IpAddr {
        self.queriers
            .iter()
            .find(|q| q.vlan == vlan && q.v6 == v6)
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |q| q.addr)
    }

    /// An IGMPv1 report for `group` from `port` on `vlan` (after its
    /// join): IGMPv1 hosts are present in that membership for a group
    /// membership interval.
    fn v1_host(&mut self, now: Instant, vlan: u16, group: Ipv4Addr, port: PortId) {
        let until = now + self.timers.membership_interval();
        if let Some(m) = self
            .groups
            .get_mut(&(vlan, IpAddr::V4(group)))
            .and_then(|m| m.iter_mut().find(|m| m.port == port))
        {
            m.v1_hosts = Some(until);
        }
    }

    /// Whether tunterm is the querier on `vlan` for the family of `v6`.
    fn is_querier(&self, vlan: u16, v6: bool, now: Instant) -> bool {
        self.queriers
            .iter()
            .any(|q| q.vlan == vlan && q.v6 == v6 && q.other.is_none_or(|(_, until)| until <= now))
    }

    /// A general (`group` None) or group-specific query from `src`.
    fn query_frame(
        &self,
        v6: bool,
        src: IpAddr,
        group: Option<IpAddr>,
        version: Version,
    ) -> Vec<u8> {
        let q = self.timers;
        let mut f = Vec::with_capacity(90);
        if !v6 {
            let dst = match group {
                Some(IpAddr::V4(g)) => g,
                _ => igmp::ALL_SYSTEMS,
            };
            let msg = igmp::Query {
                version,
                // A group-specific query asks within the last member interval.
                max_resp: if group.is_some() { 10 } else { q.max_resp },
                group: group.map_or(Ipv4Addr::UNSPECIFIED, |g| match g {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                }),
                qrv: q.robustness,
                qqi: q.query_interval.as_secs() as u32,
            };
            let src = match src {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            f.extend_from_slice(&group_mac(&IpAddr::V4(dst)));
            f.extend_from_slice(&self.cfg.mac.octets());
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (24 + msg.buffer_len()) as u16;
            let ip = f.len();
            // IHL 6 (Router Alert), DSCP CS6 as Linux sends, TTL 1.
            f.extend_from_slice(&[0x46, 0xc0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 1, igmp::PROTOCOL, 0, 0]);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&dst.octets());
            f.extend_from_slice(&[0x94, 0x04, 0, 0]);
            let sum = internet_checksum(&f[ip..ip + 24]);
            f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
            msg.append_to(&mut f);
        } else {
            let dst = match group {
                Some(IpAddr::V6(g)) => g,
                _ => mld::ALL_NODES,
            };
            let src = match src {
                IpAddr::V6(a) => a,
                IpAddr::V4(_) => link_local(&self.cfg.mac),
            };
            let msg = mld::Query {
                version: if version == Version::V3 {
                    Version::V3
                } else {
                    Version::V2
                },
                max_resp_ms: if group.is_some() {
                    1000
                } else {
                    q.max_resp * 100
                },
                group: group.map_or(Ipv6Addr::UNSPECIFIED, |g| match g {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
                }),
                qrv: q.robustness,
                qqi: q.query_interval.as_secs() as u32,
            };
            f.extend_from_slice(&group_mac(&IpAddr::V6(dst)));
            f.extend_from_slice(&self.cfg.mac.octets());
            f.extend_from_slice(&[0x86, 0xdd]);
            let payload = (8 + msg.buffer_len()) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&payload.to_be_bytes());
            f.extend_from_slice(&[0, 1]); // Hop-by-Hop next, hop limit 1
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&dst.octets());
            // Hop-by-Hop: ICMPv6 next, Router Alert (MLD), PadN.
            f.extend_from_slice(&[mld::NEXT_HEADER_ICMPV6, 0, 5, 2, 0, 0, 1, 0]);
            msg.append_to(&src, &dst, &mut f);
        }
        f
    }

    /// `port` wants `group` on `vlan`.
    fn join(&mut self, now: Instant, vlan: u16, group: IpAddr, port: PortId) {
        if is_link_local_group(&group) || !group.is_multicast() {
            return;
        }
        let expires = now + self.timers.membership_interval();
        self.leaves
            .retain(|l| !(l.vlan == vlan && l.group == group && l.port == port));
        if let Some(m) = self.groups.get_mut(&(vlan, group)) {
            match m.iter_mut().find(|m| m.port == port) {
                Some(m) => m.expires = expires,
                None => m.push(Member {
                    port,
                    expires,
                    v1_hosts: None,
                }),
            }
            return;
        }
        let n = self.per_vlan.entry(vlan).or_default();
        if *n >= self.cfg.max_groups_per_vlan || self.groups.len() >= self.cfg.max_groups {
            self.counters.table_full += 1;
            self.overflow.insert(vlan, expires);
            return;
        }
        *n += 1;
        self.groups.insert(
            (vlan, group),
            vec![Member {
                port,
                expires,
                v1_hosts: None,
            }],
        );
        self.arm_sweep(now);
    }

    /// `port` leaves `group` on `vlan`: it has the last member interval to
    /// answer (tunterm's group-specific queries when it is the querier,
    /// the upstream querier's otherwise).
    fn leave(&mut self, now: Instant, vlan: u16, group: IpAddr, port: PortId) {
        self.counters.leaves += 1;
        let lmqc = self.timers.robustness;
        let lmqt = LAST_MEMBER_INTERVAL * u32::from(lmqc);
        let Some(m) = self
            .groups
            .get_mut(&(vlan, group))
            .and_then(|m| m.iter_mut().find(|m| m.port == port))
        else {
            return;
        };
        if m.v1_hosts.is_some_and(|t| t > now) {
            // IGMPv1 hosts behind the port would not answer the
            // group-specific query (RFC 3376 §7.3.2): the leave is ignored.
            self.counters.leaves_ignored += 1;
            return;
        }
        m.expires = m.expires.min(now + lmqt);
        if !self.is_querier(vlan, group.is_ipv6(), now)
            || self
                .leaves
                .iter()
                .any(|l| l.vlan == vlan && l.group == group && l.port == port)
        {
            return;
        }
        if self.leaves.len() >= PENDING_LEAVES {
            self.counters.queue_full += 1;
            return;
        }
        self.leaves.push(Leave {
            vlan,
            group,
            port,
            next: now,
            left: lmqc,
        });
    }

    /// A query from `src` on `port`: a router port, and maybe a querier
    /// that silences tunterm's.
    fn heard_query(&mut self, now: Instant, vlan: u16, port: PortId, src: IpAddr) {
        self.counters.queries_in += 1;
        self.router_port(now, vlan, port);
        let oqpi = self.timers.other_querier_interval();
        for q in &mut self.queriers {
            if q.vlan == vlan && q.v6 == src.is_ipv6() && wins(&src, &q.addr) {
                q.other = Some((src, now + oqpi));
            }
        }
    }

    fn router_port(&mut self, now: Instant, vlan: u16, port: PortId) {
        if is_host_port(port) || self.cfg.static_router_ports.contains(&port) {
            return;
        }
        let expires = now + self.timers.other_querier_interval();
        let r = self.routers.entry(vlan).or_default();
        match r.iter_mut().find(|m| m.port == port) {
            Some(m) => m.expires = expires,
            None => r.push(Member {
                port,
                expires,
                v1_hosts: None,
            }),
        }
        self.arm_sweep(now);
    }

    /// Router ports of `vlan` among `members`, into `narrowed`.
    fn push_routers(&mut self, vlan: u16, members: &[PortId]) {
        for &p in &self.cfg.static_router_ports {
            if members.contains(&p) && !self.narrowed.contains(&p) {
                self.narrowed.push(p);
            }
        }
        if let Some(r) = self.routers.get(&vlan) {
            for m in r {
                if !self.narrowed.contains(&m.port) {
                    self.narrowed.push(m.port);
                }
            }
        }
    }

    /// An IGMP or MLD message from `port`: learn, and say where it goes.
    fn control(&mut self, now: Instant, vlan: u16, port: PortId, ip: &Ip<'_>) -> Handling {
        let joins = |records: &mut dyn Iterator<Item = (IpAddr, Option<bool>)>, p: &mut Self| {
            p.counters.reports += 1;
            for (g, j) in records {
                match j {
                    Some(true) => p.join(now, vlan, g, port),
                    Some(false) => p.leave(now, vlan, g, port),
                    None => {}
                }
            }
            Handling::Routers
        };
        let (src, msg) = match ip {
            Ip::V4 { src, payload, .. } => match igmp::Repr::parse(payload) {
                Ok(m) => (IpAddr::V4(*src), Ok(m)),
                Err(_) => {
                    self.counters.malformed += 1;
                    return Handling::Drop;
                }
            },
            Ip::V6 { src, dst, .. } => {
                let Some((_, msg)) = ip.upper() else {
                    return Handling::Data;
                };
                match mld::Repr::parse(src, dst, msg) {
                    Ok(m) => (IpAddr::V6(*src), Err(m)),
                    Err(_) => {
                        self.counters.malformed += 1;
                        return Handling::Drop;
                    }
                }
            }
        };
        match msg {
            Ok(igmp::Repr::Query { .. }) | Err(mld::Repr::Query { .. }) => {
                self.heard_query(now, vlan, port, src);
                Handling::All
            }
            Ok(igmp::Repr::Report { version, group }) => {
                let h = joins(&mut std::iter::once((IpAddr::V4(group), Some(true))), self);
                if version == 1 {
                    self.v1_host(now, vlan, group, port);
                }
                h
            }
            Err(mld::Repr::Report { group }) => {
                joins(&mut std::iter::once((IpAddr::V6(group), Some(true))), self)
            }
            Ok(igmp::Repr::Leave { group }) => {
                self.leave(now, vlan, IpAddr::V4(group), port);
                Handling::Routers
            }
            Err(mld::Repr::Done { group }) => {
                self.leave(now, vlan, IpAddr::V6(group), port);
                Handling::Routers
            }
            Ok(igmp::Repr::ReportV3 { records }) => joins(
                &mut records.map(|r| (IpAddr::V4(Ipv4Addr::from(r.group)), r.joins())),
                self,
            ),
            Err(mld::Repr::ReportV2 { records }) => joins(
                &mut records.map(|r| (IpAddr::V6(Ipv6Addr::from(r.group)), r.joins())),
                self,
            ),
            Ok(igmp::Repr::RouterAdvert) | Err(mld::Repr::RouterAdvert) => {
                self.counters.router_adverts += 1;
                self.router_port(now, vlan, port);
                Handling::All
            }
            Ok(igmp::Repr::Unknown(_)) => Handling::All,
            // Not MLD (neighbour discovery...): data to its group.
            Err(mld::Repr::Other(_)) => Handling::Data,
        }
    }
}

/// Where a multicast frame on a snooped VLAN goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handling {
    /// Nowhere (a malformed IGMP/MLD message).
    Drop,
    /// To every port (queries, link-local groups).
    All,
    /// To router ports (reports, leaves).
    Routers,
    /// To the group's members and router ports.
    Data,
}

impl<P: FloodPolicy> FloodPolicy for McastPolicy<P> {
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
        let Some(ip) = ip_multicast(view, frame) else {
            return self
                .inner
                .flood_ports(now, ingress, vlan, view, frame, members, to);
        };
        if let Some(svc) = service(&ip) {
            let (vlans, fwd, drop) = match svc {
                Service::Mdns => (
                    &self.cfg.mdns,
                    &mut self.counters.mdns_forwarded,
                    &mut self.counters.mdns_dropped,
                ),
                Service::Ssdp => (
                    &self.cfg.ssdp,
                    &mut self.counters.ssdp_forwarded,
                    &mut self.counters.ssdp_dropped,
                ),
            };
            match vlans {
                Some(v) if v.contains(vlan) => {
                    *fwd += 1;
                    return self
                        .inner
                        .flood_ports(now, ingress, vlan, view, frame, members, to);
                }
                Some(_) => {
                    *drop += 1;
                    return;
                }
                None => {}
            }
        }
        if !self.cfg.snoop_vlans.contains(vlan) {
            return self
                .inner
                .flood_ports(now, ingress, vlan, view, frame, members, to);
        }
        let group = ip.dst();
        let handling = match ip.upper().map(|(p, _)| p) {
            Some(igmp::PROTOCOL) if matches!(ip, Ip::V4 { .. }) => {
                self.control(now, vlan, ingress, &ip)
            }
            Some(mld::NEXT_HEADER_ICMPV6) if matches!(ip, Ip::V6 { .. }) => {
                self.control(now, vlan, ingress, &ip)
            }
            Some(PROTO_PIM) => {
                self.counters.router_adverts += 1;
                self.router_port(now, vlan, ingress);
                Handling::All
            }
            _ => Handling::Data,
        };
        let handling = match handling {
            Handling::Data if is_link_local_group(&group) => Handling::All,
            h => h,
        };
        self.narrowed.clear();
        match handling {
            Handling::Drop => return,
            Handling::All => {
                return self
                    .inner
                    .flood_ports(now, ingress, vlan, view, frame, members, to);
            }
            Handling::Routers => {}
            Handling::Data => match self.groups.get(&(vlan, group)) {
                Some(m) => {
                    self.counters.forwarded += 1;
                    self.narrowed.extend(m.iter().map(|m| m.port));
                }
                None if self.cfg.flood_unregistered.contains(vlan)
                    || now < self.warm_until
                    || self.overflow.get(&vlan).is_some_and(|&t| now < t) =>
                {
                    self.counters.unregistered_flooded += 1;
                    return self
                        .inner
                        .flood_ports(now, ingress, vlan, view, frame, members, to);
                }
                None => self.counters.unregistered += 1,
            },
        }
        self.push_routers(vlan, members);
        let copies = self.narrowed.iter().filter(|&&p| p != ingress).count();
        // The switch took the frame in on a member port of the VLAN: no
        // walk over thousands of members per frame to count the others.
        let all = members.len().saturating_sub(1);
        self.counters.pruned_copies += all.saturating_sub(copies) as u64;
        let narrowed = std::mem::take(&mut self.narrowed);
        self.inner
            .flood_ports(now, ingress, vlan, view, frame, &narrowed, to);
        self.narrowed = narrowed;
    }

    fn remove_port(&mut self, port: PortId) {
        McastPolicy::remove_port(self, port);
        self.inner.remove_port(port);
    }
}
