//! Every session of an endpoint, by local session id, with the ids' fast
//! path slots.
//!
//! The XDP fast path finds a session without hashing: its `sessions` map is
//! an array indexed by the low 16 bits of the local session id (the id the
//! AP puts in every data packet), and the entry there holds the whole id to
//! compare. So [`SessionTable::slot_free`] tells the allocator whether a new
//! id's slot is taken, and the ids handed out keep their slots distinct
//! while fewer than [`SESSION_SLOTS`] sessions are live. Ids that share a
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

/// Sessions by local id, and how many live ids use each slot.
#[derive(Default)]
pub struct SessionTable {
    by_id: FxHashMap<u32, DataSession>,
    slots: FxHashMap<u32, u32>,
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
            *self.slots.entry(session_slot(sid)).or_default() += 1;
        }
        old
    }

    /// Remove the session `sid`.
    pub fn remove(&mut self, sid: &u32) -> Option<DataSession> {
        let old = self.by_id.remove(sid)?;
        let slot = session_slot(*sid);
        if let Some(n) = self.slots.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                self.slots.remove(&slot);
            }
        }
        Some(old)
    }

    /// The session `sid`, to change.
    pub fn get_mut(&mut self, sid: &u32) -> Option<&mut DataSession> {
        self.by_id.get_mut(sid)
    }

    /// Whether no live session's id has `sid`'s slot.
    pub fn slot_free(&self, sid: u32) -> bool {
        !self.slots.contains_key(&session_slot(sid))
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
    }
}
