//! The learning switch: ports (the upstream trunk, one per tunnel session),
//! per-port VLAN membership, a forwarding database of (VLAN, MAC) → port with
//! aging, and the forwarding decision. Sans-IO: the driver passes `now` and
//! the frame, and writes what the [`Verdict`] says.
//!
//! Known unicast goes to one port; broadcast, multicast and unknown unicast
//! are flooded to the VLAN's members ([`Switch::vlan_ports`]) except the
//! ingress port.
//!
//! The FDB is one hash map keyed by VLAN and MAC packed into a `u64`; each
//! port also keeps the keys learned on it, so flushing a port (a tunnel going
//! down) costs its own MACs, not a scan of the whole table.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tunterm_control::VlanSet;
use tunterm_control::vlan::{VLAN_MAX, VLAN_MIN};

use crate::wire::ether::{self, FrameView, MacAddr};

/// A switch port. By convention [`TRUNK`] is the upstream trunk and a tunnel
/// session's port id is its local L2TP session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

/// The upstream trunk.
pub const TRUNK: PortId = PortId(0);

/// First switch port id of host ports (the edge's own address on a VLAN):
/// VLAN `v`'s is `HOST_PORT_BASE + v`. Session ids stay out of the range.
pub const HOST_PORT_BASE: u32 = 0xEFFF_F000;

/// The host port of VLAN `vid`.
pub fn host_port(vid: u16) -> PortId {
    PortId(HOST_PORT_BASE + u32::from(vid & 0x0fff))
}

/// Whether `port` is a host port.
pub fn is_host_port(port: PortId) -> bool {
    (HOST_PORT_BASE..HOST_PORT_BASE + 0x1000).contains(&port.0)
}

/// MAC aging time when none is configured.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);

/// VLAN membership of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// VLANs the port carries tagged; tagged frames with another VID are
    /// dropped ([`DropReason::VlanNotAllowed`]).
    pub vlans: VlanSet,
    /// Untagged (and priority-tagged, VID 0) frames belong to this VLAN, and
    /// frames on it leave untagged; the port is a member of it even if it is
    /// not in `vlans`. `None` (or an id outside 1..=4094): untagged frames
    /// are dropped ([`DropReason::UntaggedNotAllowed`]) and all egress is
    /// tagged.
    pub untagged_vlan: Option<u16>,
}

impl PortConfig {
    /// The VLANs the port is a member of: `vlans` and the untagged VLAN.
    fn member_vlans(&self) -> impl Iterator<Item = u16> + '_ {
        let extra = self.untagged_vlan.filter(|&v| !self.vlans.contains(v));
        self.vlans.iter().chain(extra)
    }
}

/// Why the switch dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Malformed,
    /// The ingress port is not (or no longer) a port of the switch.
    UnknownPort,
    /// Tagged with a VLAN the port does not carry.
    VlanNotAllowed,
    /// Untagged on a port with no untagged VLAN.
    UntaggedNotAllowed,
    /// Multicast or all-zero source MAC.
    BadSourceMac,
    /// The destination is behind the ingress port itself.
    Local,
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send on one port.
    Forward {
        /// The frame's VLAN.
        vlan: u16,
        /// The port.
        to: PortId,
    },
    /// Send to every member of the VLAN ([`Switch::vlan_ports`]) except the
    /// ingress port.
    Flood {
        /// The frame's VLAN.
        vlan: u16,
    },
    /// Drop (counted in [`SwitchCounters`]).
    Drop(DropReason),
}

/// Counters of the switch (monotonic).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwitchCounters {
    /// Frames forwarded to one port.
    pub forwarded: u64,
    /// Frames flooded.
    pub flooded: u64,
    /// MACs learned.
    pub learned: u64,
    /// MACs that moved to another port.
    pub moved: u64,
    /// MACs aged out.
    pub aged: u64,
    /// MACs flushed with their port (removed, flushed or reconfigured).
    pub flushed: u64,
    /// Drops: shorter than an Ethernet header.
    pub drop_malformed: u64,
    /// Drops: unknown ingress port.
    pub drop_unknown_port: u64,
    /// Drops: VLAN not allowed on the ingress port.
    pub drop_vlan_not_allowed: u64,
    /// Drops: untagged on a tagged-only port.
    pub drop_untagged_not_allowed: u64,
    /// Drops: multicast or zero source MAC.
    pub drop_bad_source_mac: u64,
    /// Drops: destination behind the ingress port.
    pub drop_local: u64,
    /// MACs new or moved behind a tunnel, queued to be announced upstream
    /// ([`Switch::take_announcements`]).
    pub announce_queued: u64,
    /// Announcements not queued: the queue was full (the MAC's own
    /// traffic teaches the upstream switches instead).
    pub announce_overflow: u64,
}

/// Most MACs waiting to be announced upstream.
pub const ANNOUNCE_QUEUE: usize = 4096;

#[derive(Debug)]
struct Port {
    cfg: PortConfig,
    /// FDB keys learned on this port, in no order; an entry's `slot` is its
    /// index here.
    keys: Vec<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    last_seen: Instant,
    port: PortId,
    /// Index of this entry's key in its port's `keys`.
    slot: u32,
}

/// VLAN in the top 16 bits, the MAC in wire order below: one word to hash.
fn key(vlan: u16, mac: &MacAddr) -> u64 {
    let [a, b, c, d, e, f] = mac.0;
    (u64::from(vlan) << 48) | u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

fn unkey(k: u64) -> (u16, MacAddr) {
    let [v0, v1, a, b, c, d, e, f] = k.to_be_bytes();
    (u16::from_be_bytes([v0, v1]), MacAddr([a, b, c, d, e, f]))
}

fn valid_vlan(v: u16) -> bool {
    (VLAN_MIN..=VLAN_MAX).contains(&v)
}

/// The learning switch. See the module documentation.
///
/// A MAC not seen for the aging time is no longer forwarded to (its frames
/// flood); [`Switch::handle_timeout`] removes it from the table at most a
/// quarter of the aging time later.
#[derive(Debug)]
pub struct Switch {
    aging: Duration,
    ports: FxHashMap<PortId, Port>,
    fdb: FxHashMap<u64, Entry>,
    /// Per VLAN id (index), the member ports, in the order they joined;
    /// grown to the highest VLAN a port has joined (at most
    /// `VLAN_MAX + 1` lists, none for VLANs above every port's).
    members: Vec<Vec<PortId>>,
    next_sweep: Option<Instant>,
    /// Scratch for the aging sweep, kept for its capacity.
    expired: Vec<u64>,
    /// MACs that appeared (or moved) behind a tunnel port, to announce on
    /// the trunk.
    announce: Vec<(u16, MacAddr)>,
    counters: SwitchCounters,
}

impl Switch {
    /// An empty switch aging MACs after `aging` without traffic
    /// ([`DEFAULT_AGING`] unless configured).
    pub fn new(aging: Duration) -> Self {
        Switch {
            aging,
            ports: FxHashMap::default(),
            fdb: FxHashMap::default(),
            members: Vec::new(),
            next_sweep: None,
            expired: Vec::new(),
            announce: Vec::new(),
            counters: SwitchCounters::default(),
        }
    }

    /// Add a port, or replace its configuration. A port whose configuration
    /// changes loses the MACs learned on it (they may be on a VLAN it no
    /// longer carries); re-adding the same configuration keeps them.
    pub fn add_port(&mut self, port: PortId, mut cfg: PortConfig) {
        cfg.untagged_vlan = cfg.untagged_vlan.filter(|&v| valid_vlan(v));
        if self.ports.get(&port).is_some_and(|p| p.cfg == cfg) {
            return;
        }
        let keys = match self.ports.remove(&port) {
            Some(mut old) => {
                self.leave_vlans(port, &old.cfg);
                self.flush_keys(&mut old.keys);
                old.keys
            }
            None => Vec::new(),
        };
        for v in cfg.member_vlans() {
            let v = usize::from(v);
            if self.members.len() <= v {
                self.members.resize_with(v + 1, Vec::new);
            }
            self.members[v].push(port);
        }
        self.ports.insert(port, Port { cfg, keys });
    }

    /// Remove a port and flush its MACs; returns how many. Frames still to
    /// arrive on it are dropped as [`DropReason::UnknownPort`].
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let Some(mut p) = self.ports.remove(&port) else {
            return 0;
        };
        self.leave_vlans(port, &p.cfg);
        self.flush_keys(&mut p.keys)
    }

    /// Forget every MAC learned on `port` (it stays a port); returns how
    /// many. Costs the port's MACs, not the table's.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let Some(p) = self.ports.get_mut(&port) else {
            return 0;
        };
        let mut keys = std::mem::take(&mut p.keys);
        let n = self.flush_keys(&mut keys);
        if let Some(p) = self.ports.get_mut(&port) {
            p.keys = keys;
        }
        n
    }

    /// Remove `keys` (all of one port's) from the FDB, leaving `keys` empty.
    fn flush_keys(&mut self, keys: &mut Vec<u64>) -> usize {
        let n = keys.len();
        for k in keys.drain(..) {
            self.fdb.remove(&k);
        }
        self.counters.flushed += n as u64;
        if self.fdb.is_empty() {
            self.next_sweep = None;
        }
        n
    }

    fn leave_vlans(&mut self, port: PortId, cfg: &PortConfig) {
        for v in cfg.member_vlans() {
            if let Some(m) = self.members.get_mut(usize::from(v)) {
                m.retain(|&m| m != port);
            }
        }
    }

    fn vlan_of(port: &Port, view: &FrameView) -> Result<u16, DropReason> {
        match view.tag.map(|t| t.vid()) {
            // VID 0 is a priority tag: the frame is untagged for VLAN purposes.
            Some(0) | None => port.cfg.untagged_vlan.ok_or(DropReason::UntaggedNotAllowed),
            Some(v) if port.cfg.vlans.contains(v) => Ok(v),
            Some(_) => Err(DropReason::VlanNotAllowed),
        }
    }

    fn count_drop(&mut self, r: DropReason) -> Verdict {
        let c = &mut self.counters;
        match r {
            DropReason::Malformed => c.drop_malformed += 1,
            DropReason::UnknownPort => c.drop_unknown_port += 1,
            DropReason::VlanNotAllowed => c.drop_vlan_not_allowed += 1,
            DropReason::UntaggedNotAllowed => c.drop_untagged_not_allowed += 1,
            DropReason::BadSourceMac => c.drop_bad_source_mac += 1,
            DropReason::Local => c.drop_local += 1,
        }
        Verdict::Drop(r)
    }

    /// A frame arrived on `port` at `now`: learn its source, decide where it
    /// goes. Call for every frame out of a tunnel or off the trunk; the
    /// parsed header comes back for the driver's re-tag (`None` when the
    /// frame is too short to be Ethernet).
    ///
    /// The frame's VLAN is its tag's VID if tagged (it must be one of the
    /// port's `vlans`), else the port's untagged VLAN. A frame dropped for
    /// its port, VLAN or source teaches nothing. One dropped as
    /// [`DropReason::Local`] does: its source is behind the ingress port
    /// whatever its destination, and a MAC that just moved here may say so
    /// first with such a frame.
    ///
    /// A known unicast destination costs two FDB lookups and no allocation.
    #[must_use]
    pub fn ingress(
        &mut self,
        now: Instant,
        port: PortId,
        frame: &[u8],
    ) -> (Verdict, Option<FrameView>) {
        let Some(view) = ether::parse(frame) else {
            return (self.count_drop(DropReason::Malformed), None);
        };
        let Some(p) = self.ports.get(&port) else {
            return (self.count_drop(DropReason::UnknownPort), Some(view));
        };
        let vlan = match Self::vlan_of(p, &view) {
            Ok(v) => v,
            Err(r) => return (self.count_drop(r), Some(view)),
        };
        if view.src.is_multicast() || view.src == MacAddr::ZERO {
            return (self.count_drop(DropReason::BadSourceMac), Some(view));
        }
        self.learn(now, vlan, &view.src, port);
        if view.dst.is_multicast() {
            self.counters.flooded += 1;
            return (Verdict::Flood { vlan }, Some(view));
        }
        let verdict = match self.fdb.get(&key(vlan, &view.dst)) {
            // Past its aging time but not yet swept: as good as unknown.
            Some(e) if now.saturating_duration_since(e.last_seen) < self.aging => {
                if e.port == port {
                    self.count_drop(DropReason::Local)
                } else {
                    self.counters.forwarded += 1;
                    Verdict::Forward { vlan, to: e.port }
                }
            }
            _ => {
                self.counters.flooded += 1;
                Verdict::Flood { vlan }
            }
        };
        (verdict, Some(view))
    }

    /// `mac` on `vlan` is behind `port` (a port of the switch) as of `now`.
    fn learn(&mut self, now: Instant, vlan: u16, mac: &MacAddr, port: PortId) {
        let k = key(vlan, mac);
        let (from, slot) = match self.fdb.get_mut(&k) {
            Some(e) if e.port == port => {
                e.last_seen = now;
                return;
            }
            Some(e) => {
                let Some(p) = self.ports.get_mut(&port) else {
                    return;
                };
                let was = (e.port, e.slot);
                *e = Entry {
                    last_seen: now,
                    port,
                    slot: p.keys.len() as u32,
                };
                p.keys.push(k);
                self.counters.moved += 1;
                self.queue_announce(vlan, mac, port);
                was
            }
            None => {
                let Some(p) = self.ports.get_mut(&port) else {
                    return;
                };
                let slot = p.keys.len() as u32;
                p.keys.push(k);
                self.fdb.insert(
                    k,
                    Entry {
                        last_seen: now,
                        port,
                        slot,
                    },
                );
                self.counters.learned += 1;
                self.queue_announce(vlan, mac, port);
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + self.aging / 4);
                }
                return;
            }
        };
        self.unlink(from, slot);
    }

    fn queue_announce(&mut self, vlan: u16, mac: &MacAddr, port: PortId) {
        if port == TRUNK {
            return;
        }
        if self.announce.len() >= ANNOUNCE_QUEUE {
            self.counters.announce_overflow += 1;
            return;
        }
        self.counters.announce_queued += 1;
        self.announce.push((vlan, *mac));
    }

    /// MACs that appeared behind a tunnel port (new, or moved from another
    /// port — an AP that failed over from another edge) since the last
    /// call: the driver announces each on the trunk, so upstream switches
    /// move them at once instead of waiting for their traffic.
    pub fn take_announcements(&mut self) -> std::vec::Drain<'_, (u16, MacAddr)> {
        self.announce.drain(..)
    }

    /// Take the key at `slot` out of `port`'s list (the entry has moved or
    /// gone), keeping the slot of the key swapped into its place right.
    fn unlink(&mut self, port: PortId, slot: u32) {
        let Some(p) = self.ports.get_mut(&port) else {
            return;
        };
        let slot = slot as usize;
        if slot >= p.keys.len() {
            debug_assert!(false, "FDB slot {slot} out of {} keys", p.keys.len());
            return;
        }
        p.keys.swap_remove(slot);
        if let Some(k) = p.keys.get(slot)
            && let Some(e) = self.fdb.get_mut(k)
        {
            e.slot = slot as u32;
        }
    }

    /// Members of `vlan`, to flood to (the caller skips the ingress port).
    /// Empty for a VLAN no port carries.
    pub fn vlan_ports(&self, vlan: u16) -> &[PortId] {
        self.members
            .get(usize::from(vlan))
            .map_or(&[], Vec::as_slice)
    }

    /// The tag a frame on `vlan` leaves `port` with: `None` (untagged) on
    /// the port's untagged VLAN, `Some(vlan)` otherwise.
    pub fn egress_tag(&self, port: PortId, vlan: u16) -> Option<u16> {
        match self.ports.get(&port) {
            Some(p) if p.cfg.untagged_vlan == Some(vlan) => None,
            _ => Some(vlan),
        }
    }

    /// `mac` on `vlan` was seen at `at` as a source on `port` by someone
    /// else (the XDP fast path forwards without the switch seeing frames):
    /// keep it from aging. Only an entry already on `port` is refreshed, and
    /// only forward in time; returns whether it was.
    pub fn refresh(&mut self, vlan: u16, mac: &MacAddr, port: PortId, at: Instant) -> bool {
        match self.fdb.get_mut(&key(vlan, mac)) {
            Some(e) if e.port == port && at > e.last_seen => {
                e.last_seen = at;
                true
            }
            _ => false,
        }
    }

    /// Put back an entry a restarted daemon found in the fast path's
    /// table: `mac` on `vlan` behind `port`, last seen at `at`. Only onto a
    /// port that exists and carries `vlan`, for a unicast MAC the table does
    /// not hold yet; returns whether it was taken.
    pub fn restore_entry(&mut self, vlan: u16, mac: &MacAddr, port: PortId, at: Instant) -> bool {
        let carries = self
            .ports
            .get(&port)
            .is_some_and(|p| p.cfg.member_vlans().any(|v| v == vlan));
        if !carries
            || mac.is_multicast()
            || *mac == [0; 6]
            || self.fdb.contains_key(&key(vlan, mac))
        {
            return false;
        }
        self.learn(at, vlan, mac, port);
        true
    }

    /// A generation number of the FDB: it changes whenever an entry is
    /// learned, moves, ages out or is flushed (a mirror of the table only
    /// needs to look again when it does).
    pub fn fdb_generation(&self) -> u64 {
        let c = &self.counters;
        c.learned
            .wrapping_add(c.moved)
            .wrapping_add(c.aged)
            .wrapping_add(c.flushed)
    }

    /// The configuration of `port`, if it is a port.
    pub fn port_config(&self, port: PortId) -> Option<&PortConfig> {
        self.ports.get(&port).map(|p| &p.cfg)
    }

    /// Where `mac` on `vlan` was learned (whether or not it has aged since:
    /// this is the table as it stands, up to the last sweep).
    pub fn lookup(&self, vlan: u16, mac: &MacAddr) -> Option<PortId> {
        self.fdb.get(&key(vlan, mac)).map(|e| e.port)
    }

    /// MACs learned on `port`.
    pub fn macs_on(&self, port: PortId) -> usize {
        self.ports.get(&port).map_or(0, |p| p.keys.len())
    }

    /// Entries in the FDB.
    pub fn fdb_len(&self) -> usize {
        self.fdb.len()
    }

    /// Every FDB entry: (VLAN, MAC, port), in no order.
    pub fn fdb(&self) -> impl Iterator<Item = (u16, MacAddr, PortId)> + '_ {
        self.fdb.iter().map(|(&k, e)| {
            let (v, m) = unkey(k);
            (v, m, e.port)
        })
    }

    /// Age out MACs not seen for the aging time. Call when
    /// [`poll_timeout`](Self::poll_timeout) is due; earlier calls do nothing.
    /// A sweep scans the whole table, once every quarter of the aging time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.next_sweep else { return };
        if now < at {
            return;
        }
        let aging = self.aging;
        let mut expired = std::mem::take(&mut self.expired);
        expired.extend(
            self.fdb
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.last_seen) >= aging)
                .map(|(&k, _)| k),
        );
        for k in &expired {
            if let Some(e) = self.fdb.remove(k) {
                self.unlink(e.port, e.slot);
            }
        }
        self.counters.aged += expired.len() as u64;
        expired.clear();
        self.expired = expired;
        self.next_sweep = (!self.fdb.is_empty()).then(|| now + aging / 4);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the next
    /// aging sweep, every quarter of the aging time while the FDB has
    /// entries. `None` while it is empty.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Counters.
    pub fn counters(&self) -> &SwitchCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: MacAddr, src: MacAddr, tag: Option<u16>) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(f.len() + 46, 0);
        f
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
    const BCAST: MacAddr = MacAddr::BROADCAST;
    const MCAST: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    const S1: PortId = PortId(101);
    const S2: PortId = PortId(102);

    /// Trunk: tagged 10 and 20, native VLAN 1. S1: 10 and 20, untagged is
    /// 10. S2: tagged 10 only.
    fn switch() -> Switch {
        let mut sw = Switch::new(DEFAULT_AGING);
        sw.add_port(
            TRUNK,
            PortConfig {
                vlans: VlanSet::from_ids([10, 20]).unwrap(),
                untagged_vlan: Some(1),
            },
        );
        sw.add_port(
            S1,
            PortConfig {
                vlans: VlanSet::from_ids([10, 20]).unwrap(),
                untagged_vlan: Some(10),
            },
        );
        sw.add_port(
            S2,
            PortConfig {
                vlans: VlanSet::from_ids([10]).unwrap(),
                untagged_vlan: None,
            },
        );
        sw
    }

    #[test]
    fn macs_new_or_moved_behind_a_tunnel_are_announced_once() {
        let t0 = crate::test_t0();
        let mut sw = switch();
        // C first seen on the trunk: nothing to announce (it is upstream).
        let _ = sw.ingress(t0, TRUNK, &frame(BCAST, C, Some(10)));
        assert_eq!(sw.take_announcements().count(), 0);
        // A appears behind S1 (untagged: VLAN 10), B tagged 20.
        let _ = sw.ingress(t0, S1, &frame(BCAST, A, None));
        let _ = sw.ingress(t0, S1, &frame(C, B, Some(20)));
        let _ = sw.ingress(t0, S1, &frame(C, A, None)); // known: no news
        let got: Vec<_> = sw.take_announcements().collect();
        assert_eq!(got, vec![(10, A), (20, B)]);
        // C moves from the trunk to S2 (an AP failed over to this edge).
        let _ = sw.ingress(t0, S2, &frame(A, C, Some(10)));
        assert_eq!(sw.take_announcements().collect::<Vec<_>>(), vec![(10, C)]);
        // A goes back upstream: not announced by us.
        let _ = sw.ingress(t0, TRUNK, &frame(C, A, Some(10)));
        assert_eq!(sw.take_announcements().count(), 0);
        assert_eq!(sw.counters().announce_queued, 3);
    }

    #[test]
    fn restored_entries_forward_like_learned_ones_and_age_from_when_seen() {
        let t0 = crate::test_t0();
        let mut sw = switch();
        assert!(sw.restore_entry(10, &A, S1, t0));
        assert!(sw.restore_entry(20, &B, TRUNK, t0 + Duration::from_secs(100)));
        // Not onto a missing port, a VLAN the port lacks, a group MAC, or
        // over an entry that exists.
        assert!(!sw.restore_entry(10, &C, PortId(999), t0));
        assert!(!sw.restore_entry(20, &C, S2, t0));
        assert!(!sw.restore_entry(10, &MCAST, S1, t0));
        assert!(!sw.restore_entry(10, &A, S2, t0));
        check(&sw);
        assert_eq!(sw.lookup(10, &A), Some(S1));
        // Trunk → A on VLAN 10 goes to S1 without flooding.
        let (v, _) = sw.ingress(t0, TRUNK, &frame(A, C, Some(10)));
        assert_eq!(v, Verdict::Forward { vlan: 10, to: S1 });
        // A ages from when it was last seen (t0), not from the restore.
        sw.handle_timeout(t0 + DEFAULT_AGING + DEFAULT_AGING / 2);
        assert_eq!(sw.lookup(10, &A), None);
        check(&sw);
    }

    /// The FDB, the per-port key lists and the VLAN member lists agree.
    fn check(sw: &Switch) {
        check_index(sw);
        let mut want = vec![0; sw.members.len()];
        for p in sw.ports.values() {
            for v in p.cfg.member_vlans() {
                want[usize::from(v)] += 1;
            }
        }
        for (v, members) in sw.members.iter().enumerate() {
            assert_eq!(members.len(), want[v], "members of VLAN {v}");
            for m in members {
                let cfg = &sw.ports[m].cfg;
                assert!(cfg.member_vlans().any(|x| usize::from(x) == v));
            }
        }
    }

    /// The FDB and the per-port key lists agree.
    fn check_index(sw: &Switch) {
        let mut n = 0;
        for (&port, p) in &sw.ports {
            for (i, k) in p.keys.iter().enumerate() {
                let e = sw.fdb[k];
                assert_eq!((e.port, e.slot as usize), (port, i), "key {k:#x}");
            }
            n += p.keys.len();
        }
        assert_eq!(n, sw.fdb.len(), "every entry is in its port's list");
        assert_eq!(sw.poll_timeout().is_some(), !sw.fdb.is_empty());
    }

    #[test]
    fn learns_then_forwards_known_unicast() {
        let t = crate::test_t0();
        let mut sw = switch();
        // A behind S1 (untagged → VLAN 10) broadcasts: flooded, learned.
        let (v, view) = sw.ingress(t, S1, &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
        assert_eq!(view.map(|v| v.src), Some(A));
        assert_eq!(sw.lookup(10, &A), Some(S1));
        // B on the trunk, tagged 10, answers A: forwarded to S1 only.
        let (v, _) = sw.ingress(t, TRUNK, &frame(A, B, Some(10)));
        assert_eq!(v, Verdict::Forward { vlan: 10, to: S1 });
        // And back.
        let (v, _) = sw.ingress(t, S1, &frame(B, A, None));
        assert_eq!(
            v,
            Verdict::Forward {
                vlan: 10,
                to: TRUNK
            }
        );
        let c = sw.counters();
        assert_eq!((c.forwarded, c.flooded, c.learned), (2, 1, 2));
        // Same MAC on another VLAN is another entry.
        assert_eq!(sw.lookup(20, &A), None);
        let (v, _) = sw.ingress(t, TRUNK, &frame(A, B, Some(20)));
        assert_eq!(v, Verdict::Flood { vlan: 20 });
        assert_eq!((sw.fdb_len(), sw.macs_on(TRUNK), sw.macs_on(S1)), (3, 2, 1));
        let mut fdb: Vec<_> = sw.fdb().collect();
        fdb.sort();
        assert_eq!(fdb, [(10, A, S1), (10, B, TRUNK), (20, B, TRUNK)]);
        check(&sw);
    }

    #[test]
    fn flooding_stays_in_the_vlan_and_off_the_ingress_port() {
        let t = crate::test_t0();
        let mut sw = switch();
        assert_eq!(sw.vlan_ports(10), &[TRUNK, S1, S2]);
        assert_eq!(sw.vlan_ports(20), &[TRUNK, S1]);
        assert_eq!(sw.vlan_ports(1), &[TRUNK], "native VLAN of the trunk");
        assert!(sw.vlan_ports(30).is_empty());
        assert!(sw.vlan_ports(0).is_empty());
        assert!(sw.vlan_ports(u16::MAX).is_empty());
        // What the driver sends a flood to.
        let targets = |sw: &Switch, v: Verdict, ingress: PortId| -> Vec<PortId> {
            let Verdict::Flood { vlan } = v else {
                panic!("{v:?} is not a flood")
            };
            let ports = sw.vlan_ports(vlan).iter().copied();
            ports.filter(|&p| p != ingress).collect()
        };
        // Broadcast on 20 from S1: the trunk only (S2 does not carry 20).
        let (v, _) = sw.ingress(t, S1, &frame(BCAST, A, Some(20)));
        assert_eq!(targets(&sw, v, S1), [TRUNK]);
        // Multicast on 10 from the trunk: both sessions.
        let (v, _) = sw.ingress(t, TRUNK, &frame(MCAST, B, Some(10)));
        assert_eq!(targets(&sw, v, TRUNK), [S1, S2]);
        // Unknown unicast on 10 from S2.
        let (v, _) = sw.ingress(t, S2, &frame(C, A, Some(10)));
        assert_eq!(targets(&sw, v, S2), [TRUNK, S1]);
        // Known unicast goes to its one port.
        let (v, _) = sw.ingress(t, S1, &frame(B, C, None));
        assert_eq!(
            v,
            Verdict::Forward {
                vlan: 10,
                to: TRUNK
            }
        );
        assert_eq!(sw.counters().flooded, 3);
    }

    #[test]
    fn untagged_frames_take_the_ports_untagged_vlan() {
        let t = crate::test_t0();
        let mut sw = switch();
        let (v, _) = sw.ingress(t, S1, &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
        let (v, _) = sw.ingress(t, TRUNK, &frame(BCAST, B, None));
        assert_eq!(v, Verdict::Flood { vlan: 1 });
        assert_eq!(sw.lookup(10, &A), Some(S1));
        assert_eq!(sw.lookup(1, &B), Some(TRUNK));
        // Tagged with its own untagged VLAN: S1 carries 10 tagged too.
        let (v, _) = sw.ingress(t, S1, &frame(B, C, Some(10)));
        assert_eq!(v, Verdict::Flood { vlan: 10 }, "B is on VLAN 1, not 10");
    }

    #[test]
    fn priority_tag_is_untagged() {
        let t = crate::test_t0();
        let mut sw = switch();
        let (v, view) = sw.ingress(t, S1, &frame(BCAST, A, Some(0)));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
        assert_eq!(view.unwrap().inner_offset, 16);
        let (v, _) = sw.ingress(t, S2, &frame(BCAST, A, Some(0)));
        assert_eq!(v, Verdict::Drop(DropReason::UntaggedNotAllowed));
    }

    #[test]
    fn disallowed_vlan_is_dropped_counted_and_not_learned() {
        let t = crate::test_t0();
        let mut sw = switch();
        let (v, view) = sw.ingress(t, S2, &frame(BCAST, A, Some(20)));
        assert_eq!(v, Verdict::Drop(DropReason::VlanNotAllowed));
        assert!(view.is_some(), "the header is still there for logs");
        let (v, _) = sw.ingress(t, TRUNK, &frame(BCAST, A, Some(4095)));
        assert_eq!(v, Verdict::Drop(DropReason::VlanNotAllowed));
        assert_eq!(sw.counters().drop_vlan_not_allowed, 2);
        assert_eq!((sw.fdb_len(), sw.counters().learned), (0, 0));
        assert_eq!(sw.poll_timeout(), None);
    }

    #[test]
    fn untagged_on_a_tagged_only_port_is_dropped() {
        let t = crate::test_t0();
        let mut sw = switch();
        let (v, _) = sw.ingress(t, S2, &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Drop(DropReason::UntaggedNotAllowed));
        assert_eq!(sw.counters().drop_untagged_not_allowed, 1);
        assert_eq!(sw.fdb_len(), 0);
        assert_eq!(sw.egress_tag(S2, 10), Some(10), "egress always tagged");
    }

    #[test]
    fn unknown_port_is_dropped() {
        let t = crate::test_t0();
        let mut sw = switch();
        let (v, _) = sw.ingress(t, PortId(999), &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Drop(DropReason::UnknownPort));
        assert_eq!(sw.counters().drop_unknown_port, 1);
        assert_eq!(sw.fdb_len(), 0);
    }

    #[test]
    fn short_frames_are_malformed() {
        let t = crate::test_t0();
        let mut sw = switch();
        let tagged = frame(BCAST, A, Some(10));
        for bad in [&[][..], &[0u8; 13][..], &tagged[..17]] {
            let (v, view) = sw.ingress(t, S1, bad);
            assert_eq!((v, view), (Verdict::Drop(DropReason::Malformed), None));
        }
        // Even on an unknown port: the frame is judged first.
        let (v, _) = sw.ingress(t, PortId(999), &[0u8; 13]);
        assert_eq!(v, Verdict::Drop(DropReason::Malformed));
        assert_eq!(sw.counters().drop_malformed, 4);
        assert_eq!(sw.fdb_len(), 0);
        // The shortest header is enough.
        let (v, _) = sw.ingress(t, S1, &tagged[..18]);
        assert_eq!(v, Verdict::Flood { vlan: 10 });
    }

    #[test]
    fn group_or_zero_source_is_rejected() {
        let t = crate::test_t0();
        let mut sw = switch();
        for src in [BCAST, MCAST, MacAddr::ZERO] {
            let (v, _) = sw.ingress(t, S1, &frame(A, src, None));
            assert_eq!(v, Verdict::Drop(DropReason::BadSourceMac), "{src:x?}");
        }
        assert_eq!(sw.counters().drop_bad_source_mac, 3);
        assert_eq!(sw.fdb_len(), 0);
    }

    #[test]
    fn destination_behind_ingress_is_dropped_but_source_is_learned() {
        let t = crate::test_t0();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let (v, _) = sw.ingress(t, S1, &frame(A, B, None));
        assert_eq!(v, Verdict::Drop(DropReason::Local));
        assert_eq!(sw.counters().drop_local, 1);
        assert_eq!(sw.lookup(10, &B), Some(S1));
    }

    #[test]
    fn mac_moves_between_ports() {
        let t = crate::test_t0();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let _ = sw.ingress(t, S1, &frame(BCAST, C, None));
        let _ = sw.ingress(t, TRUNK, &frame(BCAST, B, Some(10)));
        // A roams to the AP behind S2 and says so with a unicast frame.
        let (v, _) = sw.ingress(t, S2, &frame(B, A, Some(10)));
        assert_eq!(
            v,
            Verdict::Forward {
                vlan: 10,
                to: TRUNK
            }
        );
        assert_eq!(sw.lookup(10, &A), Some(S2));
        assert_eq!((sw.counters().moved, sw.counters().learned), (1, 3));
        assert_eq!((sw.macs_on(S1), sw.macs_on(S2)), (1, 1));
        check(&sw);
        // Traffic to A follows it.
        let (v, _) = sw.ingress(t, TRUNK, &frame(A, B, Some(10)));
        assert_eq!(v, Verdict::Forward { vlan: 10, to: S2 });
        // Flushing S1 leaves A where it is now.
        assert_eq!(sw.flush_port(S1), 1);
        assert_eq!(sw.lookup(10, &A), Some(S2));
        assert_eq!(sw.lookup(10, &C), None);
        check(&sw);
    }

    #[test]
    fn aging_removes_idle_macs() {
        let t = crate::test_t0();
        let s = Duration::from_secs;
        let mut sw = Switch::new(s(40));
        sw.add_port(
            S1,
            PortConfig {
                vlans: VlanSet::from_ids([10]).unwrap(),
                untagged_vlan: Some(10),
            },
        );
        sw.add_port(
            S2,
            PortConfig {
                vlans: VlanSet::from_ids([10]).unwrap(),
                untagged_vlan: Some(10),
            },
        );
        assert_eq!(sw.poll_timeout(), None, "nothing to age");
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        assert_eq!(sw.poll_timeout(), Some(t + s(10)), "a quarter of aging");
        sw.handle_timeout(t + s(5));
        assert_eq!(sw.poll_timeout(), Some(t + s(10)), "early call: no sweep");
        sw.handle_timeout(t + s(39));
        assert_eq!(sw.fdb_len(), 1);
        let _ = sw.ingress(t + s(39), S1, &frame(BCAST, B, None));
        assert_eq!(sw.poll_timeout(), Some(t + s(49)));
        // At 45 s A is past its aging but not yet swept: no longer a
        // forwarding target.
        let (v, _) = sw.ingress(t + s(45), S2, &frame(A, C, None));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
        assert_eq!(sw.lookup(10, &A), Some(S1), "still in the table");
        sw.handle_timeout(t + s(49));
        assert_eq!(sw.lookup(10, &A), None, "A idle for 49 s");
        assert_eq!(sw.lookup(10, &B), Some(S1), "B seen 10 s ago");
        assert_eq!(sw.counters().aged, 1);
        assert_eq!(sw.macs_on(S1), 1);
        check(&sw);
        sw.handle_timeout(t + s(100));
        assert_eq!(sw.fdb_len(), 0);
        assert_eq!(sw.counters().aged, 3);
        assert_eq!(sw.poll_timeout(), None, "no sweep for an empty FDB");
        check(&sw);
    }

    #[test]
    fn member_lists_go_up_to_the_highest_vlan_a_port_carries() {
        let mut sw = Switch::new(DEFAULT_AGING);
        assert!(sw.members.is_empty(), "nothing allocated up front");
        assert!(sw.vlan_ports(VLAN_MAX).is_empty());
        let cfg = |v: &[u16], u| PortConfig {
            vlans: VlanSet::from_ids(v.iter().copied()).unwrap(),
            untagged_vlan: u,
        };
        sw.add_port(S1, cfg(&[10, 30], Some(5)));
        assert_eq!(sw.members.len(), 31);
        sw.add_port(S2, cfg(&[], Some(VLAN_MAX)));
        assert_eq!(sw.members.len(), usize::from(VLAN_MAX) + 1);
        assert_eq!(sw.vlan_ports(VLAN_MAX), &[S2]);
        assert_eq!(sw.vlan_ports(5), &[S1]);
        // Reconfigured and removed ports leave their VLANs.
        sw.add_port(S1, cfg(&[30], None));
        assert!(sw.vlan_ports(5).is_empty());
        assert_eq!(sw.vlan_ports(30), &[S1]);
        sw.remove_port(S2);
        assert!(sw.vlan_ports(VLAN_MAX).is_empty());
        check(&sw);
    }

    #[test]
    fn remove_port_flushes_its_macs_and_membership() {
        let t = crate::test_t0();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let _ = sw.ingress(t, S1, &frame(BCAST, C, Some(20)));
        let _ = sw.ingress(t, TRUNK, &frame(BCAST, B, Some(10)));
        assert_eq!(sw.remove_port(S1), 2);
        assert_eq!(sw.remove_port(S1), 0, "already gone");
        assert_eq!(sw.lookup(10, &A), None);
        assert_eq!(sw.lookup(20, &C), None);
        assert_eq!(sw.lookup(10, &B), Some(TRUNK));
        assert_eq!(sw.vlan_ports(10), &[TRUNK, S2]);
        assert_eq!(sw.vlan_ports(20), &[TRUNK]);
        assert_eq!(sw.counters().flushed, 2);
        check(&sw);
        // Traffic to A floods again; frames from S1 are refused.
        let (v, _) = sw.ingress(t, TRUNK, &frame(A, B, Some(10)));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
        let (v, _) = sw.ingress(t, S1, &frame(B, A, None));
        assert_eq!(v, Verdict::Drop(DropReason::UnknownPort));
        // The last MACs gone: nothing left to age.
        assert_eq!(sw.remove_port(TRUNK), 1);
        assert_eq!(sw.poll_timeout(), None);
        check(&sw);
    }

    #[test]
    fn reconfiguring_a_port_flushes_it_only_on_change() {
        let t = crate::test_t0();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let same = PortConfig {
            vlans: VlanSet::from_ids([10, 20]).unwrap(),
            untagged_vlan: Some(10),
        };
        sw.add_port(S1, same);
        assert_eq!(sw.macs_on(S1), 1, "same configuration keeps MACs");
        sw.add_port(
            S1,
            PortConfig {
                vlans: VlanSet::from_ids([20, 30]).unwrap(),
                untagged_vlan: Some(20),
            },
        );
        assert_eq!((sw.macs_on(S1), sw.lookup(10, &A)), (0, None));
        assert_eq!(sw.counters().flushed, 1);
        assert_eq!(sw.vlan_ports(10), &[TRUNK, S2]);
        assert_eq!(sw.vlan_ports(20), &[TRUNK, S1]);
        assert_eq!(sw.vlan_ports(30), &[S1]);
        let (v, _) = sw.ingress(t, S1, &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Flood { vlan: 20 });
        check(&sw);
        // An untagged VLAN that cannot exist is no untagged VLAN.
        sw.add_port(
            S2,
            PortConfig {
                vlans: VlanSet::from_ids([10]).unwrap(),
                untagged_vlan: Some(4095),
            },
        );
        let (v, _) = sw.ingress(t, S2, &frame(BCAST, B, None));
        assert_eq!(v, Verdict::Drop(DropReason::UntaggedNotAllowed));
        assert!(sw.vlan_ports(4095).is_empty());
        check(&sw);
    }

    #[test]
    fn egress_tags_except_the_untagged_vlan() {
        let sw = switch();
        assert_eq!(sw.egress_tag(S1, 10), None);
        assert_eq!(sw.egress_tag(S1, 20), Some(20));
        assert_eq!(sw.egress_tag(TRUNK, 10), Some(10));
        assert_eq!(sw.egress_tag(TRUNK, 1), None);
        assert_eq!(sw.egress_tag(S2, 10), Some(10));
    }

    #[test]
    fn fdb_key_round_trips() {
        let m = MacAddr([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]);
        assert_eq!(key(4094, &m), 0x0ffe_dead_beef_0001);
        assert_eq!(unkey(key(4094, &m)), (4094, m));
        assert_eq!(unkey(key(1, &BCAST)), (1, BCAST));
    }

    /// Learning, moves, flushes, reconfiguration and aging in a scripted
    /// random order keep the per-port key lists in step with the FDB.
    #[test]
    fn port_index_survives_churn() {
        let t0 = crate::test_t0();
        let mut sw = Switch::new(Duration::from_secs(40));
        let ports = [TRUNK, PortId(1), PortId(2), PortId(3), PortId(4)];
        let cfg = |n: u64| PortConfig {
            vlans: VlanSet::from_ids([10, 20 + (n % 2) as u16]).unwrap(),
            untagged_vlan: Some(10),
        };
        for p in ports {
            sw.add_port(p, cfg(0));
        }
        // xorshift64: a fixed script, the same every run.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = t0;
        for step in 0..20_000 {
            let r = rnd();
            let port = ports[(r % 5) as usize];
            match (r >> 8) % 100 {
                0 => {
                    let n = sw.macs_on(port);
                    assert_eq!(sw.flush_port(port), n);
                }
                1 => {
                    let n = sw.macs_on(port);
                    assert_eq!(sw.remove_port(port), n);
                    sw.add_port(port, cfg(r >> 32));
                }
                2 => sw.add_port(port, cfg(r >> 32)),
                3..=5 => {
                    now += Duration::from_secs((r >> 16) % 8);
                    sw.handle_timeout(now);
                }
                _ => {
                    let mac = MacAddr([2, 0, 0, 0, 0, (r >> 16) as u8 % 64]);
                    let dst = MacAddr([2, 0, 0, 0, 0, (r >> 24) as u8 % 64]);
                    let tag = [None, Some(10), Some(20), Some(21)][((r >> 32) % 4) as usize];
                    let _ = sw.ingress(now, port, &frame(dst, mac, tag));
                }
            }
            check_index(&sw);
            if step % 500 == 0 {
                check(&sw);
            }
        }
        let c = sw.counters();
        assert!(c.moved > 100 && c.aged > 100 && c.flushed > 100, "{c:?}");
    }

    #[test]
    fn refresh_keeps_a_mac_from_aging_only_on_its_own_port() {
        let t0 = crate::test_t0();
        let mut sw = Switch::new(Duration::from_secs(10));
        for p in [TRUNK, S1] {
            let cfg = PortConfig {
                vlans: VlanSet::from_ids([10]).unwrap(),
                untagged_vlan: None,
            };
            sw.add_port(p, cfg);
        }
        let g0 = sw.fdb_generation();
        let _ = sw.ingress(t0, S1, &frame(B, A, Some(10)));
        assert_ne!(sw.fdb_generation(), g0, "learning changes the generation");
        let g1 = sw.fdb_generation();
        assert!(
            !sw.refresh(10, &A, TRUNK, t0 + Duration::from_secs(8)),
            "wrong port"
        );
        assert!(!sw.refresh(10, &B, S1, t0), "unknown MAC");
        assert!(sw.refresh(10, &A, S1, t0 + Duration::from_secs(8)));
        assert!(
            !sw.refresh(10, &A, S1, t0 + Duration::from_secs(5)),
            "backwards"
        );
        assert_eq!(sw.fdb_generation(), g1, "a refresh is not a change");
        sw.handle_timeout(t0 + Duration::from_secs(13));
        assert_eq!(
            sw.lookup(10, &A),
            Some(S1),
            "refreshed at 8 s: alive at 13 s"
        );
        sw.handle_timeout(t0 + Duration::from_secs(19));
        assert_eq!(sw.lookup(10, &A), None, "aged 10 s after the refresh");
    }
}
