//! Port indexes: the 16-bit numbers the fast path knows switch ports by.
//!
//! The switch names a port by a 32-bit id (an L2TPv3 session's local id,
//! `GRE_PORT_BASE + n` for an mGRE peer, 0 for the trunk). The programs'
//! FDB entries and the `templates` array name it by a port index instead:
//! small enough for an FDB entry to hold, and the array's index, so
//! encapsulation goes from a destination's entry straight to its template
//! with nothing to compare but the index the line says it holds.
//!
//! The trunk is index 0 (`TT_PORT_TRUNK`). A tunnel port the daemon puts in
//! the fast path gets one of 1 to `TT_MAX_PORTS - 1` from a [`PortIndex`].
//! A tunnel that leaves gives its index back, but the FDB may still hold
//! entries naming it (the FDB is mirrored on its own schedule): the index
//! is reusable only after the caller says no FDB entry names it any more
//! ([`PortIndex::fdb_clean`]), and then goes to the back of the queue, so
//! an index comes back as late as the table allows. Were it reused while
//! an entry still named it, frames to the old tunnel's clients would take
//! the new tunnel's header: to another AP.

use std::collections::{HashMap, VecDeque};

use crate::maps::{TT_MAX_PORTS, TT_PORT_TRUNK};

/// Tunnel ports and their indexes, and the indexes free to hand out.
#[derive(Clone, Debug)]
pub struct PortIndex {
    /// Tunnel port id → its index, for ports that hold one.
    by_port: HashMap<u32, u16>,
    /// Index → the port id holding it (0: none; index 0 is the trunk's).
    ports: Vec<u32>,
    /// Indexes nobody holds and no FDB entry names: the front is handed
    /// out next.
    free: VecDeque<u16>,
    /// Given back, maybe still named by FDB entries: port id → index.
    released: HashMap<u32, u16>,
    /// Named by FDB entries without a port holding them (found in an
    /// earlier run's maps): not handed out before the next clean FDB.
    orphans: Vec<u16>,
}

impl Default for PortIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl PortIndex {
    /// Every tunnel index free.
    pub fn new() -> Self {
        PortIndex {
            by_port: HashMap::new(),
            ports: vec![0; TT_MAX_PORTS as usize],
            // Indexes are 16 bits: TT_MAX_PORTS is at most 65,536.
            free: (1..TT_MAX_PORTS).map(|i| i as u16).collect(),
            released: HashMap::new(),
            orphans: Vec::new(),
        }
    }

    /// The index of `port` (the trunk's is 0), if it holds one.
    pub fn get(&self, port: u32) -> Option<u16> {
        if port == TT_PORT_TRUNK {
            return Some(TT_PORT_TRUNK as u16);
        }
        self.by_port.get(&port).copied()
    }

    /// The port holding index `idx` (0: the trunk).
    pub fn port(&self, idx: u16) -> Option<u32> {
        if u32::from(idx) == TT_PORT_TRUNK {
            return Some(TT_PORT_TRUNK);
        }
        match self.ports.get(usize::from(idx)) {
            Some(&p) if p != 0 => Some(p),
            _ => None,
        }
    }

    /// The index of tunnel port `port`: the one it holds, the one it gave
    /// back (no other port can have it yet), or the next free one. `None`
    /// when every index is taken (the tunnel stays on the slow path), and
    /// for the trunk's id.
    pub fn assign(&mut self, port: u32) -> Option<u16> {
        if port == TT_PORT_TRUNK {
            return None;
        }
        if let Some(&i) = self.by_port.get(&port) {
            return Some(i);
        }
        let i = match self.released.remove(&port) {
            Some(i) => i,
            None => self.free.pop_front()?,
        };
        self.by_port.insert(port, i);
        self.ports[usize::from(i)] = port;
        Some(i)
    }

    /// Put `port` back in the index it held in an earlier run's maps.
    /// Refused (false) for index 0, an index out of range, or one another
    /// port holds; a port already holding another index moves to `idx`.
    pub fn adopt(&mut self, port: u32, idx: u16) -> bool {
        let at = usize::from(idx);
        if port == TT_PORT_TRUNK || idx == 0 || at >= self.ports.len() {
            return false;
        }
        match self.ports[at] {
            0 => {}
            p if p == port => return true,
            _ => return false,
        }
        if let Some(old) = self.by_port.insert(port, idx) {
            self.ports[usize::from(old)] = 0;
            self.free.push_back(old);
        }
        self.ports[at] = port;
        self.free.retain(|&f| f != idx);
        true
    }

    /// `port` left the fast path: its index is no longer its, and is
    /// handed out again after the next [`fdb_clean`](Self::fdb_clean)
    /// (to `port` itself before that, should it come back).
    pub fn release(&mut self, port: u32) {
        if let Some(i) = self.by_port.remove(&port) {
            self.ports[usize::from(i)] = 0;
            self.released.insert(port, i);
        }
    }

    /// The FDB (an earlier run's) names `idx`, which no port holds: it is
    /// not handed out before the next [`fdb_clean`](Self::fdb_clean).
    pub fn hold(&mut self, idx: u16) {
        if idx == 0 || self.port(idx).is_some() || self.orphans.contains(&idx) {
            return;
        }
        let before = self.free.len();
        self.free.retain(|&f| f != idx);
        if self.free.len() < before {
            self.orphans.push(idx);
        }
    }

    /// Whether indexes were given back that the FDB may still name.
    #[cfg(test)]
    fn has_released(&self) -> bool {
        !self.released.is_empty() || !self.orphans.is_empty()
    }

    /// The FDB names no index but those ports hold now: the given-back
    /// ones go to the back of the free queue.
    pub fn fdb_clean(&mut self) {
        let mut back: Vec<u16> = self.released.drain().map(|(_, i)| i).collect();
        back.append(&mut self.orphans);
        // Lowest first: a stable order, whatever the hash map's.
        back.sort_unstable();
        self.free.extend(back);
    }

    /// Tunnel ports holding an index, and their indexes.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u16)> + '_ {
        self.by_port.iter().map(|(&p, &i)| (p, i))
    }
}

const _: () = assert!(TT_MAX_PORTS <= 1 << 16, "a port index is 16 bits");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trunk_is_zero_and_tunnels_count_from_one() {
        let mut p = PortIndex::new();
        assert_eq!(p.get(0), Some(0));
        assert_eq!(p.port(0), Some(0));
        assert_eq!(p.assign(0), None, "the trunk is not a tunnel");
        assert_eq!(p.assign(0x1234_0005), Some(1));
        assert_eq!(p.assign(0xf000_0001), Some(2));
        assert_eq!(p.assign(0x1234_0005), Some(1), "a port keeps its index");
        assert_eq!(p.get(0xf000_0001), Some(2));
        assert_eq!(p.port(2), Some(0xf000_0001));
        assert_eq!(p.port(3), None);
        assert_eq!(p.iter().count(), 2);
    }

    #[test]
    fn an_index_comes_back_only_after_the_fdb_let_go_of_it_and_last() {
        let mut p = PortIndex::new();
        let a = p.assign(10).unwrap();
        let b = p.assign(11).unwrap();
        p.release(10);
        assert_eq!(p.get(10), None);
        assert_eq!(p.port(a), None);
        assert!(p.has_released());
        // Not to another port while the FDB may name it.
        let c = p.assign(12).unwrap();
        assert_ne!(c, a);
        // Its own port may have it back.
        assert_eq!(p.assign(10), Some(a));
        p.release(10);
        p.fdb_clean();
        assert!(!p.has_released());
        // Now it is free, behind every index never used.
        let next = p.assign(13).unwrap();
        assert!(next != a && next != b && next != c);
        assert_eq!(p.free.back(), Some(&a));
    }

    #[test]
    fn every_index_is_handed_out_once_then_none() {
        let mut p = PortIndex::new();
        let n = TT_MAX_PORTS - 1;
        let mut seen = vec![false; TT_MAX_PORTS as usize];
        for port in 1..=n {
            let i = p.assign(port).expect("an index");
            assert!(i != 0 && !seen[usize::from(i)]);
            seen[usize::from(i)] = true;
        }
        assert_eq!(p.assign(n + 1), None, "all taken");
        p.release(5);
        assert_eq!(p.assign(n + 1), None, "given back, not clean yet");
        p.fdb_clean();
        assert!(p.assign(n + 1).is_some());
    }

    #[test]
    fn adoption_takes_the_earlier_runs_indexes() {
        let mut p = PortIndex::new();
        assert!(p.adopt(77, 500));
        assert!(p.adopt(77, 500), "again: the same");
        assert!(!p.adopt(78, 500), "another port's");
        assert!(!p.adopt(79, 0) && !p.adopt(0, 3));
        assert_eq!(p.get(77), Some(500));
        assert_eq!(p.port(500), Some(77));
        // An index the FDB names without a port is held back until the
        // FDB is clean.
        p.hold(501);
        assert!(p.has_released());
        // 500 and 501 are not handed out.
        for port in 1000..1000 + TT_MAX_PORTS - 3 {
            let i = p.assign(port).expect("an index");
            assert!(i != 500 && i != 501);
        }
        assert_eq!(p.assign(99_999), None);
        p.fdb_clean();
        assert_eq!(p.assign(99_999), Some(501));
    }
}
