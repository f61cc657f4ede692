//! The learning switch: ports (the upstream trunk, one per tunnel session),
//! per-port allowed VLANs, an FDB of (VLAN, MAC) → port with aging, and the
//! forwarding decision. Sans-IO: the driver passes `now` and the frame, and
//! writes what the verdict says.
//!
//! Known unicast goes to one port; broadcast, multicast and unknown unicast
//! are flooded to the VLAN's members except the ingress port.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Serialize;
use tunterm_control::VlanSet;

use crate::wire::ether::{self, FrameView, MacAddr};

/// A switch port. By convention [`TRUNK`] is the upstream trunk and a tunnel
/// session's port id is its local L2TP session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

/// The upstream trunk.
pub const TRUNK: PortId = PortId(0);

/// MAC aging time when none is configured.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);

/// VLAN membership of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// VLANs the port carries; tagged frames with another VID are dropped.
    pub vlans: VlanSet,
    /// Untagged frames belong to this VLAN, and frames on it leave
    /// untagged. `None`: untagged frames are dropped and all egress is
    /// tagged.
    pub untagged_vlan: Option<u16>,
}

/// Why the switch dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Send to every member of the VLAN except the ingress port.
    Flood {
        /// The frame's VLAN.
        vlan: u16,
    },
    /// Drop (counted).
    Drop(DropReason),
}

/// Counters of the switch (monotonic).
#[derive(Clone, Debug, Default, Serialize)]
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
    /// MACs flushed with their port.
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
}

#[derive(Debug)]
struct Port {
    cfg: PortConfig,
    macs: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortId,
    last_seen: Instant,
}

fn key(vlan: u16, mac: &MacAddr) -> u64 {
    let mut k = u64::from(vlan) << 48;
    for (i, b) in mac.iter().enumerate() {
        k |= u64::from(*b) << (8 * (5 - i));
    }
    k
}

fn unkey(k: u64) -> (u16, MacAddr) {
    let mut mac = [0; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = (k >> (8 * (5 - i))) as u8;
    }
    ((k >> 48) as u16, mac)
}

/// The learning switch.
#[derive(Debug)]
pub struct Switch {
    aging: Duration,
    ports: FxHashMap<PortId, Port>,
    fdb: FxHashMap<u64, Entry>,
    members: Vec<Vec<PortId>>,
    next_sweep: Option<Instant>,
    counters: SwitchCounters,
}

impl Switch {
    /// An empty switch aging MACs after `aging` without traffic.
    pub fn new(aging: Duration) -> Self {
        Switch {
            aging,
            ports: FxHashMap::default(),
            fdb: FxHashMap::default(),
            members: vec![Vec::new(); 4096],
            next_sweep: None,
            counters: SwitchCounters::default(),
        }
    }

    /// Add a port, or replace its VLAN membership (its MACs are flushed if
    /// the membership changed).
    pub fn add_port(&mut self, port: PortId, cfg: PortConfig) {
        if let Some(old) = self.ports.get(&port) {
            if old.cfg == cfg {
                return;
            }
            self.remove_port(port);
        }
        for v in cfg.vlans.iter() {
            self.members[usize::from(v)].push(port);
        }
        if let Some(v) = cfg.untagged_vlan
            && !cfg.vlans.contains(v)
        {
            self.members[usize::from(v)].push(port);
        }
        self.ports.insert(port, Port { cfg, macs: 0 });
    }

    /// Remove a port and flush its MACs; returns how many.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let flushed = self.flush_port(port);
        if let Some(p) = self.ports.remove(&port) {
            let untagged = p.cfg.untagged_vlan.filter(|v| !p.cfg.vlans.contains(*v));
            for v in p.cfg.vlans.iter().chain(untagged) {
                self.members[usize::from(v)].retain(|&m| m != port);
            }
        }
        flushed
    }

    /// Forget every MAC learned on `port`; returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let Some(p) = self.ports.get_mut(&port) else {
            return 0;
        };
        if p.macs == 0 {
            return 0;
        }
        // A scan of the FDB, only for ports that have MACs; a per-port index
        // would make this O(port's MACs) if teardown storms ever show up.
        let before = self.fdb.len();
        self.fdb.retain(|_, e| e.port != port);
        let flushed = before - self.fdb.len();
        p.macs = 0;
        self.counters.flushed += flushed as u64;
        flushed
    }

    fn vlan_of(&self, port: &Port, view: &FrameView) -> Result<u16, DropReason> {
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

    /// A frame arrived on `port`: learn its source, decide where it goes.
    /// The parsed header comes back for the driver's rewrite (None when the
    /// frame is not Ethernet).
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
        let vlan = match self.vlan_of(p, &view) {
            Ok(v) => v,
            Err(r) => return (self.count_drop(r), Some(view)),
        };
        if ether::is_multicast(&view.src) || view.src == [0; 6] {
            return (self.count_drop(DropReason::BadSourceMac), Some(view));
        }
        self.learn(now, vlan, &view.src, port);
        if ether::is_multicast(&view.dst) {
            self.counters.flooded += 1;
            return (Verdict::Flood { vlan }, Some(view));
        }
        match self.fdb.get(&key(vlan, &view.dst)) {
            Some(e) if now.saturating_duration_since(e.last_seen) < self.aging => {
                if e.port == port {
                    (self.count_drop(DropReason::Local), Some(view))
                } else {
                    self.counters.forwarded += 1;
                    (Verdict::Forward { vlan, to: e.port }, Some(view))
                }
            }
            _ => {
                self.counters.flooded += 1;
                (Verdict::Flood { vlan }, Some(view))
            }
        }
    }

    fn learn(&mut self, now: Instant, vlan: u16, mac: &MacAddr, port: PortId) {
        let k = key(vlan, mac);
        match self.fdb.get_mut(&k) {
            Some(e) if e.port == port => e.last_seen = now,
            Some(e) => {
                let old = std::mem::replace(&mut e.port, port);
                e.last_seen = now;
                self.counters.moved += 1;
                if let Some(o) = self.ports.get_mut(&old) {
                    o.macs = o.macs.saturating_sub(1);
                }
                if let Some(n) = self.ports.get_mut(&port) {
                    n.macs += 1;
                }
            }
            None => {
                self.fdb.insert(
                    k,
                    Entry {
                        port,
                        last_seen: now,
                    },
                );
                self.counters.learned += 1;
                if let Some(n) = self.ports.get_mut(&port) {
                    n.macs += 1;
                }
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + self.aging / 4);
                }
            }
        }
    }

    /// Members of `vlan` (flood targets; the caller skips the ingress port).
    pub fn vlan_ports(&self, vlan: u16) -> &[PortId] {
        self.members
            .get(usize::from(vlan))
            .map_or(&[], Vec::as_slice)
    }

    /// The tag a frame on `vlan` leaves `port` with (`None`: untagged).
    pub fn egress_tag(&self, port: PortId, vlan: u16) -> Option<u16> {
        match self.ports.get(&port) {
            Some(p) if p.cfg.untagged_vlan == Some(vlan) => None,
            _ => Some(vlan),
        }
    }

    /// Where `mac` on `vlan` was learned.
    pub fn lookup(&self, vlan: u16, mac: &MacAddr) -> Option<PortId> {
        self.fdb.get(&key(vlan, mac)).map(|e| e.port)
    }

    /// MACs learned on `port`.
    pub fn macs_on(&self, port: PortId) -> usize {
        self.ports.get(&port).map_or(0, |p| p.macs)
    }

    /// Entries in the FDB.
    pub fn fdb_len(&self) -> usize {
        self.fdb.len()
    }

    /// Every FDB entry: (VLAN, MAC, port).
    pub fn fdb(&self) -> impl Iterator<Item = (u16, MacAddr, PortId)> + '_ {
        self.fdb.iter().map(|(&k, e)| {
            let (v, m) = unkey(k);
            (v, m, e.port)
        })
    }

    /// Age out MACs not seen for the aging time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.next_sweep else { return };
        if now < at {
            return;
        }
        let aging = self.aging;
        let mut aged = 0;
        let ports = &mut self.ports;
        self.fdb.retain(|_, e| {
            let keep = now.saturating_duration_since(e.last_seen) < aging;
            if !keep {
                aged += 1;
                if let Some(p) = ports.get_mut(&e.port) {
                    p.macs = p.macs.saturating_sub(1);
                }
            }
            keep
        });
        self.counters.aged += aged;
        self.next_sweep = (!self.fdb.is_empty()).then(|| now + aging / 4);
    }

    /// When the next aging sweep is due.
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

    fn vlans(ids: &[u16]) -> VlanSet {
        let mut s = VlanSet::default();
        for &i in ids {
            s.insert(i).unwrap();
        }
        s
    }

    fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(f.len() + 46, 0);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];
    const S1: PortId = PortId(101);
    const S2: PortId = PortId(102);

    fn switch() -> Switch {
        let mut sw = Switch::new(Duration::from_secs(300));
        sw.add_port(
            TRUNK,
            PortConfig {
                vlans: vlans(&[10, 20]),
                untagged_vlan: Some(1),
            },
        );
        sw.add_port(
            S1,
            PortConfig {
                vlans: vlans(&[10, 20]),
                untagged_vlan: Some(10),
            },
        );
        sw.add_port(
            S2,
            PortConfig {
                vlans: vlans(&[10]),
                untagged_vlan: None,
            },
        );
        sw
    }

    #[test]
    fn learns_then_forwards_known_unicast() {
        let t = Instant::now();
        let mut sw = switch();
        // A behind S1 (untagged → VLAN 10) broadcasts: flooded, learned.
        let (v, _) = sw.ingress(t, S1, &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
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
        assert_eq!(sw.counters().forwarded, 2);
        assert_eq!(sw.counters().learned, 2);
        // Same MAC on another VLAN is another entry.
        assert_eq!(sw.lookup(20, &A), None);
    }

    #[test]
    fn flooding_stays_in_the_vlan() {
        let sw = switch();
        assert_eq!(sw.vlan_ports(10), &[TRUNK, S1, S2]);
        assert_eq!(sw.vlan_ports(20), &[TRUNK, S1]);
        assert_eq!(sw.vlan_ports(1), &[TRUNK], "native VLAN of the trunk");
        assert!(sw.vlan_ports(30).is_empty());
    }

    #[test]
    fn disallowed_vlan_is_dropped_counted_and_not_learned() {
        let t = Instant::now();
        let mut sw = switch();
        let (v, _) = sw.ingress(t, S2, &frame(BCAST, A, Some(20)));
        assert_eq!(v, Verdict::Drop(DropReason::VlanNotAllowed));
        assert_eq!(sw.counters().drop_vlan_not_allowed, 1);
        assert_eq!(sw.fdb_len(), 0);
        let (v, _) = sw.ingress(t, S2, &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Drop(DropReason::UntaggedNotAllowed));
        let (v, _) = sw.ingress(t, PortId(999), &frame(BCAST, A, None));
        assert_eq!(v, Verdict::Drop(DropReason::UnknownPort));
        let (v, view) = sw.ingress(t, S1, &[0u8; 13]);
        assert_eq!((v, view), (Verdict::Drop(DropReason::Malformed), None));
        let (v, _) = sw.ingress(t, S1, &frame(A, BCAST, None));
        assert_eq!(v, Verdict::Drop(DropReason::BadSourceMac));
        assert_eq!(sw.fdb_len(), 0);
    }

    #[test]
    fn priority_tag_is_untagged() {
        let t = Instant::now();
        let mut sw = switch();
        let (v, _) = sw.ingress(t, S1, &frame(BCAST, A, Some(0)));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
    }

    #[test]
    fn destination_behind_ingress_is_dropped() {
        let t = Instant::now();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let (v, _) = sw.ingress(t, S1, &frame(A, B, None));
        assert_eq!(v, Verdict::Drop(DropReason::Local));
    }

    #[test]
    fn mac_moves_between_ports() {
        let t = Instant::now();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let _ = sw.ingress(t, S2, &frame(BCAST, A, Some(10)));
        assert_eq!(sw.lookup(10, &A), Some(S2));
        assert_eq!(sw.counters().moved, 1);
        assert_eq!((sw.macs_on(S1), sw.macs_on(S2)), (0, 1));
    }

    #[test]
    fn remove_port_flushes_its_macs_and_membership() {
        let t = Instant::now();
        let mut sw = switch();
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let _ = sw.ingress(t, TRUNK, &frame(BCAST, B, Some(10)));
        assert_eq!(sw.remove_port(S1), 1);
        assert_eq!(sw.lookup(10, &A), None);
        assert_eq!(sw.lookup(10, &B), Some(TRUNK));
        assert_eq!(sw.vlan_ports(10), &[TRUNK, S2]);
        assert_eq!(sw.counters().flushed, 1);
        // Traffic to A floods again.
        let (v, _) = sw.ingress(t, TRUNK, &frame(A, B, Some(10)));
        assert_eq!(v, Verdict::Flood { vlan: 10 });
    }

    #[test]
    fn aging_removes_idle_macs() {
        let t = Instant::now();
        let mut sw = Switch::new(Duration::from_secs(40));
        sw.add_port(
            S1,
            PortConfig {
                vlans: vlans(&[10]),
                untagged_vlan: Some(10),
            },
        );
        let _ = sw.ingress(t, S1, &frame(BCAST, A, None));
        let sweep = sw.poll_timeout().unwrap();
        assert_eq!(sweep - t, Duration::from_secs(10));
        sw.handle_timeout(t + Duration::from_secs(39));
        assert_eq!(sw.fdb_len(), 1);
        let _ = sw.ingress(t + Duration::from_secs(39), S1, &frame(BCAST, B, None));
        assert_eq!(sw.poll_timeout(), Some(t + Duration::from_secs(49)));
        sw.handle_timeout(t + Duration::from_secs(49));
        assert_eq!(sw.lookup(10, &A), None, "A idle for 49 s");
        assert_eq!(sw.lookup(10, &B), Some(S1), "B seen 10 s ago");
        assert_eq!(sw.counters().aged, 1);
        assert_eq!(sw.macs_on(S1), 1);
        sw.handle_timeout(t + Duration::from_secs(100));
        assert_eq!(sw.poll_timeout(), None, "no sweep for an empty FDB");
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
        let m = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01];
        assert_eq!(unkey(key(4094, &m)), (4094, m));
    }
}
