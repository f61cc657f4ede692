//! Every session of an endpoint, by local session id, with the ids' fast
//! path slots.
//!
//! The XDP fast path finds a session without hashing: its `sessions` map is
//! an array indexed by the low 16 bits of the local session id (the id the
//! AP puts in every data packet), and the entry there holds the whole id to
//! compare. So the allocator gives a new id the lowest free slot
//! ([`SessionTable::free_slot`], from a per-endpoint base) under 16 random
//! high bits: slots of
//! live sessions stay distinct while fewer than [`SESSION_SLOTS`] are live,
//! and packed at the start of the arrays. (The ids are not secrets: data is
//! authenticated by the peer's address and the random cookie.) Ids that share a
//! slot anyway (restored from a snapshot of an older build, or beyond
//! 65,536 sessions) still work: the fast path installs one of them and the
//! slow path carries the others.

use std::ops::Deref;

use rustc_hash::FxHashMap;

use super::endpoint::DataSession;

/// Slots of the fast path's session array: a session id's slot is
/// `id % SESSION_SLOTS` (`TT_MAX_SESSIONS` in `ebpf/include/tunterm_maps.h`).
pub const SESSION_SLOTS: u32 = 1 << 16;

/// The fast-path slot of a local session id.
pub fn session_slot(sid: u32) -> u32 {
    sid % SESSION_SLOTS
}

/// Sessions by local id, and which slots their ids use.
#[derive(Default)]
pub struct SessionTable {
    by_id: FxHashMap<u32, DataSession>,
    /// Bit `slot % 64` of word `slot / 64`: the slot has a live id
    /// (8 KiB, allocated with the first session).
    used: Vec<u64>,
    /// Slots that more than one live id shares, with how many ids beyond
    /// the first: rare (the allocator hands out free slots), so a map no
    /// bigger than the table rather than a count per slot (256 KiB up
    /// front for every endpoint with a session).
    shared: FxHashMap<u32, u32>,
    /// Where [`SessionTable::free_slot`] starts looking.
    base: u32,
}

impl Deref for SessionTable {
    type Target = FxHashMap<u32, DataSession>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

impl SessionTable {
    /// Add (or replace) the session `sid`.
    pub fn insert(&mut self, sid: u32, s: DataSession) -> Option<DataSession> {
        let old = self.by_id.insert(sid, s);
        if old.is_none() {
            if self.used.is_empty() {
                self.used = vec![0; SESSION_SLOTS as usize / 64];
            }
            let slot = session_slot(sid);
            let (word, bit) = ((slot / 64) as usize, 1 << (slot % 64));
            if self.used[word] & bit == 0 {
                self.used[word] |= bit;
            } else {
                *self.shared.entry(slot).or_default() += 1;
            }
        }
        old
    }

    /// Remove the session `sid`.
    pub fn remove(&mut self, sid: &u32) -> Option<DataSession> {
        let old = self.by_id.remove(sid)?;
        let slot = session_slot(*sid);
        match self.shared.get_mut(&slot) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.shared.remove(&slot);
            }
            // Its last id: `used` is allocated, since a session was in.
            None => self.used[(slot / 64) as usize] &= !(1 << (slot % 64)),
        }
        Some(old)
    }

    /// The session `sid`, to change.
    pub fn get_mut(&mut self, sid: &u32) -> Option<&mut DataSession> {
        self.by_id.get_mut(sid)
    }

    /// Whether no live session's id has `sid`'s slot.
    #[cfg(test)]
    pub fn slot_free(&self, sid: u32) -> bool {
        let slot = session_slot(sid);
        self.used
            .get((slot / 64) as usize)
            .is_none_or(|w| w & (1 << (slot % 64)) == 0)
    }

    /// An empty table whose sessions take slots from `base` on.
    pub fn with_base(base: u32) -> Self {
        SessionTable {
            base: base % SESSION_SLOTS,
            ..SessionTable::default()
        }
    }

    /// The first slot no live session has, from the table's base on
    /// (wrapping round), if any. New ids take it, so the sessions' entries
    /// in the fast path's arrays stay packed together: a thousand
    /// sessions' entries are a few dozen pages, not a thousand pages
    /// scattered over the arrays (a TLB and cache miss per frame). The
    /// base is drawn per endpoint, so endpoints side by side (in tests)
    /// do not all start at the same slot.
    pub fn free_slot(&self) -> Option<u32> {
        if self.used.is_empty() {
            return Some(self.base);
        }
        let words = self.used.len() as u32;
        let (first, skip) = (self.base / 64, self.base % 64);
        let below = (1u64 << skip) - 1;
        for i in 0..=words {
            let w = (first + i) % words;
            let mut bits = self.used[w as usize];
            if i == 0 {
                // Slots of the first word before the base: last.
                bits |= below;
            }
            if i == words {
                // Round again at the first word: only those slots.
                bits |= !below;
            }
            if bits != u64::MAX {
                return Some(w * 64 + bits.trailing_ones());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::l2tp::SessionState;
    use crate::wire::l2tp::{Cookie, Transport};

    fn session(sid: u32) -> DataSession {
        DataSession {
            local_sid: sid,
            remote_sid: 7,
            ccid: 1,
            peer: "10.0.0.2:1701".parse().unwrap(),
            transport: Transport::Udp,
            cookie_rx: Cookie::default(),
            cookie_tx: Cookie::default(),
            pw_type: 5,
            profile: None,
            remote_end_id: String::new(),
            state: SessionState::Established,
            sublayer: false,
            send_seq: false,
            drop_out_of_order: false,
            tx_seq: 0,
            rx_seq: None,
        }
    }

    #[test]
    fn a_slot_stays_taken_until_its_last_session_goes() {
        let mut t = SessionTable::default();
        // Two ids in slot 0x1234 (as restored from an older build's state).
        let (a, b) = (0x0001_1234, 0x0002_1234);
        assert!(t.slot_free(a));
        t.insert(a, session(a));
        // Replacing a session does not count its slot twice.
        t.insert(a, session(a));
        t.insert(b, session(b));
        assert!(!t.slot_free(0x7777_1234));
        assert!(t.slot_free(0x0001_1235));
        t.remove(&a);
        assert!(!t.slot_free(a), "b still holds the slot");
        assert!(t.remove(&a).is_none());
        t.remove(&b);
        assert!(t.slot_free(a));
        assert!(t.is_empty());

        // Three ids in one slot: taken until all three are gone, in any
        // order, and free for a new id afterwards.
        let ids = [0x0001_0042, 0x0002_0042, 0x0003_0042];
        for sid in ids {
            t.insert(sid, session(sid));
        }
        for (i, sid) in [ids[1], ids[0], ids[2]].into_iter().enumerate() {
            assert!(!t.slot_free(sid), "slot taken before removal {i}");
            assert!(t.remove(&sid).is_some());
        }
        assert!(t.slot_free(ids[0]));
        t.insert(ids[2], session(ids[2]));
        assert!(!t.slot_free(ids[0]));
        t.remove(&ids[2]);
        assert!(t.slot_free(ids[0]));
    }

    #[test]
    fn free_slots_are_handed_out_in_order_from_the_base() {
        let mut t = SessionTable::default();
        assert_eq!(t.free_slot(), Some(0));
        for slot in 0..130 {
            t.insert(0x0005_0000 | slot, session(0x0005_0000 | slot));
        }
        assert_eq!(t.free_slot(), Some(130));
        t.remove(&0x0005_0040);
        assert_eq!(t.free_slot(), Some(64));
        for slot in 130..SESSION_SLOTS {
            t.insert(0x0006_0000 | slot, session(0x0006_0000 | slot));
        }
        t.insert(0x0007_0040, session(0x0007_0040));
        assert_eq!(t.free_slot(), None, "every slot taken");

        // From a base inside a word, wrapping round the end of the slots.
        let base = SESSION_SLOTS - 3;
        let mut t = SessionTable::with_base(base + SESSION_SLOTS);
        assert_eq!(t.free_slot(), Some(base));
        let mut got = Vec::new();
        for i in 0..6 {
            let slot = t.free_slot().unwrap();
            got.push(slot);
            t.insert((0x0001_0000 * (i + 1)) | slot, session(slot));
        }
        assert_eq!(got, [base, base + 1, base + 2, 0, 1, 2]);
        // Base 100: 64..99 come after every slot from 100 on.
        let mut t = SessionTable::with_base(100);
        for slot in (100..SESSION_SLOTS).chain(0..64) {
            t.insert(0x0009_0000 | slot, session(slot));
        }
        assert_eq!(t.free_slot(), Some(64));
    }
}
