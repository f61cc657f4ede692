//! The fast path's tables as userspace fills them: entries by key, whatever
//! the map type behind them.
//!
//! `gre_peers` and `long_templates` are hash maps, `fdb` is tunterm's own
//! ([`crate::fdb`]). `sessions` (with `session_vlans`) and `templates` are
//! arrays the programs index without hashing: a session's entry sits at the
//! slot of its local session id (`id % TT_MAX_SESSIONS`) and holds the
//! whole id to compare, a tunnel's template at its port index
//! ([`crate::ports`], which the daemon never hands two tunnels at once).
//! [`SessionSlots`] and [`TemplateSlots`] make them look like maps: an
//! insert never overwrites another session's entry ([`Error::SlotTaken`]),
//! a removal clears only the session's own.

use aya::Pod;
use aya::maps::{Array, HashMap, MapData};

use crate::ap_rx::Error;
use crate::maps::{
    Session, TT_GRE_PORT_BASE, TT_MAX_PORTS, TT_MAX_SESSIONS, tt_session, tt_template,
    tt_template_line, tt_vlans,
};

/// A table of the fast path, by key.
pub trait Table<K, V> {
    /// Write `value` under `key`.
    fn put(&mut self, key: K, value: V) -> Result<(), Error>;
    /// Remove `key`'s entry (nothing if there is none).
    fn delete(&mut self, key: &K) -> Result<(), Error>;
    /// Every entry (unreadable ones skipped).
    fn entries(&self) -> Vec<(K, V)>;
}

impl<K: Pod, V: Pod> Table<K, V> for HashMap<&mut MapData, K, V> {
    fn put(&mut self, key: K, value: V) -> Result<(), Error> {
        Ok(self.insert(key, value, 0)?)
    }

    fn delete(&mut self, key: &K) -> Result<(), Error> {
        match self.remove(key) {
            // aya 0.14 reports a missing key as the syscall's ENOENT.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            r => Ok(r?),
        }
    }

    fn entries(&self) -> Vec<(K, V)> {
        self.iter().filter_map(Result::ok).collect()
    }
}

/// The array slot of a session id or a session's port id.
pub fn slot_of(id: u32) -> u32 {
    id & (TT_MAX_SESSIONS - 1)
}

/// An array of entries that each say which id they belong to (0: empty),
/// as a map by that id (`id` gives it from the slot and the entry). Ids
/// from `TT_GRE_PORT_BASE` on are mGRE ports, never a session's: refused.
pub struct Slots<'a, V: Pod> {
    array: Array<&'a mut MapData, V>,
    id: fn(u32, &V) -> u32,
}

/// The `sessions` and `session_vlans` arrays as a map: local session id →
/// [`Session`] (whose entry's `session_id` is that id). The VLANs are
/// written before the entry, and the entry cleared before the VLANs: a
/// packet that finds the session finds its VLANs.
pub struct SessionSlots<'a> {
    sessions: Slots<'a, tt_session>,
    vlans: Array<&'a mut MapData, tt_vlans>,
}

/// The `templates` array and the `long_templates` hash as a map: a
/// tunnel's port index → [`tt_template`]. The array's line at the index
/// holds the template, or for a header longer than a line a marker, with
/// the template in `long_templates` (written before the marker, removed
/// after it); an empty line is all zero. Index 0 is the trunk's and holds
/// no template.
pub struct TemplateSlots<'a> {
    lines: Array<&'a mut MapData, tt_template_line>,
    long: HashMap<&'a mut MapData, u32, tt_template>,
}

impl<'a> SessionSlots<'a> {
    pub(crate) fn sessions(
        array: Array<&'a mut MapData, tt_session>,
        vlans: Array<&'a mut MapData, tt_vlans>,
    ) -> Self {
        SessionSlots {
            sessions: Slots {
                array,
                id: |_, s| s.session_id,
            },
            vlans,
        }
    }
}

impl Table<u32, Session> for SessionSlots<'_> {
    fn put(&mut self, id: u32, value: Session) -> Result<(), Error> {
        self.sessions.check(id, &value.entry)?;
        self.vlans.set(slot_of(id), value.vlans, 0)?;
        self.sessions.put(id, value.entry)
    }

    fn delete(&mut self, id: &u32) -> Result<(), Error> {
        // The entry goes; the bitmap stays until the slot's next session
        // overwrites it (no packet reads it without the entry).
        self.sessions.delete(id)
    }

    fn entries(&self) -> Vec<(u32, Session)> {
        self.sessions
            .entries()
            .into_iter()
            .filter_map(|(id, entry)| {
                let vlans = self.vlans.get(&slot_of(id), 0).ok()?;
                Some((id, Session { entry, vlans }))
            })
            .collect()
    }
}

impl<'a> TemplateSlots<'a> {
    pub(crate) fn templates(
        lines: Array<&'a mut MapData, tt_template_line>,
        long: HashMap<&'a mut MapData, u32, tt_template>,
    ) -> Self {
        TemplateSlots { lines, long }
    }

    fn check(idx: u32) -> Result<(), Error> {
        if idx == 0 || idx >= TT_MAX_PORTS {
            return Err(Error::SlotId { id: idx, entry: 0 });
        }
        Ok(())
    }
}

impl Table<u32, tt_template> for TemplateSlots<'_> {
    fn put(&mut self, idx: u32, value: tt_template) -> Result<(), Error> {
        Self::check(idx)?;
        let line = value.line();
        if value.is_long() {
            self.long.put(idx, value)?;
            Ok(self.lines.set(idx, line, 0)?)
        } else {
            self.lines.set(idx, line, 0)?;
            self.long.delete(&idx)
        }
    }

    fn delete(&mut self, idx: &u32) -> Result<(), Error> {
        Self::check(*idx)?;
        self.lines.set(*idx, zeroed::<tt_template_line>(), 0)?;
        self.long.delete(idx)
    }

    fn entries(&self) -> Vec<(u32, tt_template)> {
        self.lines
            .iter()
            .zip(0u32..)
            .filter_map(|(line, idx)| {
                let line = line.ok()?;
                if line.hdr_len == 0 {
                    return None;
                }
                match line.template() {
                    Some(t) => Some((idx, t)),
                    None => self.long.get(&idx, 0).ok().map(|t| (idx, t)),
                }
            })
            .collect()
    }
}

/// An empty slot's value: all zero.
fn zeroed<V: Pod>() -> V {
    // SAFETY: `Pod` map values are plain bytes (the header's layouts are
    // asserted padding-free and hold only integers), for which all-zero is
    // a valid value.
    unsafe { std::mem::zeroed() }
}

impl<V: Pod> Slots<'_, V> {
    /// Whether `value` may go in under `id`: it says so, and the slot is
    /// free or already `id`'s.
    fn check(&self, id: u32, value: &V) -> Result<(), Error> {
        let slot = slot_of(id);
        let entry = (self.id)(slot, value);
        if id == 0 || id >= TT_GRE_PORT_BASE || entry != id {
            return Err(Error::SlotId { id, entry });
        }
        let held = (self.id)(slot, &self.array.get(&slot, 0)?);
        if held != 0 && held != id {
            return Err(Error::SlotTaken { id, held });
        }
        Ok(())
    }
}

impl<V: Pod> Table<u32, V> for Slots<'_, V> {
    fn put(&mut self, id: u32, value: V) -> Result<(), Error> {
        self.check(id, &value)?;
        Ok(self.array.set(slot_of(id), value, 0)?)
    }

    fn delete(&mut self, id: &u32) -> Result<(), Error> {
        let slot = slot_of(*id);
        if (self.id)(slot, &self.array.get(&slot, 0)?) == *id {
            self.array.set(slot, zeroed::<V>(), 0)?;
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(u32, V)> {
        self.array
            .iter()
            .zip(0u32..)
            .filter_map(|(v, slot)| {
                let v = v.ok()?;
                let id = (self.id)(slot, &v);
                (id != 0).then_some((id, v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FastPath;
    use crate::maps::{SessionSpec, TemplateSpec, TunnelHeader};

    fn session(sid: u32) -> Session {
        Session::new(
            &SessionSpec {
                peer: "10.0.0.2:40000".parse().unwrap(),
                cookie: &[1, 2, 3, 4],
                sublayer: false,
                port: sid,
                port_idx: 1,
                untagged_vlan: Some(10),
                trunk_ifindex: 3,
                trunk_untagged_vlan: None,
            },
            [20],
        )
        .unwrap()
    }

    fn template(idx: u16) -> tt_template {
        template_of(idx, "10.0.0.1", "10.0.0.2", TunnelHeader::Gre { key: None })
    }

    /// An IPv6 L2TPv3/IP template with an 8-byte cookie and the sublayer:
    /// longer than a line.
    fn template_v6(idx: u16) -> tt_template {
        let header = TunnelHeader::L2tpIp {
            session_id: 9,
            cookie: &[1, 2, 3, 4, 5, 6, 7, 8],
            sublayer: true,
        };
        template_of(idx, "2001:db8::1", "2001:db8::2", header)
    }

    fn template_of(idx: u16, local: &str, peer: &str, header: TunnelHeader<'_>) -> tt_template {
        tt_template::new(&TemplateSpec {
            // A template per index, told apart by its untagged VLAN.
            untagged_vlan: Some(idx % 4094 + 1),
            ifindex: 4,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            ttl: 64,
            dont_fragment: false,
            mtu: 1500,
            header,
        })
        .unwrap()
    }

    #[test]
    fn slots_hold_one_id_each_and_removal_clears_only_its_own() {
        // Loading programs needs root, as the daemon does.
        let mut fp = FastPath::load().expect("loading the fast path (root)");
        let (a, b) = (0x0001_0005, 0x0002_0005);
        let mut s = fp.sessions().unwrap();
        s.put(a, session(a)).unwrap();
        // Rewriting the same session is fine; another id in its slot is not.
        s.put(a, session(a)).unwrap();
        assert!(matches!(
            s.put(b, session(b)),
            Err(Error::SlotTaken { id, held }) if id == b && held == a
        ));
        // An entry must carry the id it is installed under.
        assert!(matches!(
            s.put(0x0003_0006, session(a)),
            Err(Error::SlotId { .. })
        ));
        s.delete(&b).unwrap();
        assert_eq!(s.entries().len(), 1, "b's removal left a's entry");
        assert_eq!(s.entries()[0].0, a);
        s.delete(&a).unwrap();
        assert!(s.entries().is_empty());
        s.put(b, session(b)).unwrap();
        assert_eq!(s.entries()[0].0, b);
        // The VLANs come back with the entry.
        assert!(s.entries()[0].1.allows(20) && !s.entries()[0].1.allows(21));

        // Templates are at their tunnel's port index: from 1 (0 is the
        // trunk's) to TT_MAX_PORTS - 1.
        let mut t = fp.templates().unwrap();
        t.put(3, template(3)).unwrap();
        for bad in [0, TT_MAX_PORTS] {
            assert!(matches!(t.put(bad, template(3)), Err(Error::SlotId { .. })));
        }
        assert_eq!(t.entries(), vec![(3, template(3))]);
        // A header longer than a line: the line is a marker, the template
        // is in long_templates, and entries() gives it back whole; going
        // back to a short one removes the long entry.
        let long = template_v6(3);
        assert!(long.is_long() && !template(3).is_long());
        t.put(3, long).unwrap();
        assert_eq!(t.entries(), vec![(3, long)]);
        assert_eq!(t.long.iter().count(), 1);
        t.put(3, template(3)).unwrap();
        assert_eq!(t.entries(), vec![(3, template(3))]);
        assert_eq!(t.long.iter().count(), 0);
        t.put(3, long).unwrap();
        t.delete(&3).unwrap();
        assert!(t.entries().is_empty());
        assert_eq!(t.long.iter().count(), 0);
        // The last index is one like any other.
        let last = TT_MAX_PORTS - 1;
        t.put(last, template(last as u16)).unwrap();
        assert_eq!(t.entries(), vec![(last, template(last as u16))]);
    }
}
