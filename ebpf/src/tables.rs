//! The fast path's tables as userspace fills them: entries by key, whatever
//! the map type behind them.
//!
//! `gre_peers` and `long_templates` are hash maps, `fdb` is tunterm's own
//! ([`crate::fdb`]). `sessions` (with `session_vlans`) and `templates` are
//! arrays the programs index without hashing: a session's entry sits at the
//! slot of its local session id (`id % TT_MAX_SESSIONS`) and holds the
//! whole id to compare, a tunnel's template at its port index
//! ([`crate::ports`], which the daemon never hands two tunnels at once),
//! over a base in `template_bases` that tunnels share.
//! [`SessionSlots`] and [`TemplateSlots`] make them look like maps: an
//! insert never overwrites another session's entry ([`Error::SlotTaken`]),
//! a removal clears only the session's own.

use aya::Pod;
use aya::maps::{Array, HashMap, MapData};

use crate::ap_rx::Error;
use crate::maps::{
    Session, TT_GRE_PORT_BASE, TT_MAX_PORTS, TT_MAX_SESSIONS, TT_TEMPLATE_BASES, TT_TEMPLATE_LONG,
    tt_session, tt_template, tt_template_short, tt_vlans,
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

/// The `templates` and `template_bases` arrays and the `long_templates`
/// hash as a map: a tunnel's port index → [`tt_template`]. The entry at
/// the index is the template's short form over a base (IPv4,
/// [`tt_template::split`]; the base written before the entry), or a
/// marker, with the template in `long_templates` (written before the
/// marker, removed after it); an empty entry is all zero. Index 0 is the
/// trunk's and holds no template.
///
/// Bases are shared: one per distinct base, [`TT_TEMPLATE_BASES`] of them.
/// A slot no entry uses is written again only when none was never used,
/// and when every slot is in use a template goes whole in
/// `long_templates` (slower, still in XDP).
pub struct TemplateSlots<'a> {
    lines: Array<&'a mut MapData, tt_template_short>,
    base_map: Array<&'a mut MapData, tt_template>,
    long: HashMap<&'a mut MapData, u32, tt_template>,
    bases: &'a mut Bases,
}

/// What userspace knows of `template_bases`: the bases, how many entries
/// of `templates` use each, and which one each entry uses. Read from the
/// maps when a [`TemplateSlots`] is first made (they may be a previous
/// run's), then kept by it.
#[derive(Debug)]
pub(crate) struct Bases {
    bases: Vec<Option<tt_template>>,
    users: Vec<u32>,
    /// What each entry of `templates` is, by its index.
    of: Vec<Entry>,
}

/// An entry of `templates`, as userspace wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// No template (all zero).
    Empty,
    /// A short template over this base.
    Short(u8),
    /// The marker: the template is whole in `long_templates`.
    Long,
}

impl Bases {
    /// As the maps hold them.
    pub(crate) fn read(
        lines: &Array<&mut MapData, tt_template_short>,
        base_map: &Array<&mut MapData, tt_template>,
    ) -> Bases {
        let bases: Vec<Option<tt_template>> = (0..TT_TEMPLATE_BASES)
            .map(|b| base_map.get(&b, 0).ok().filter(|t| t.hdr_len != 0))
            .collect();
        let mut users = vec![0; bases.len()];
        let mut of = vec![Entry::Empty; TT_MAX_PORTS as usize];
        for (line, idx) in lines.iter().zip(0usize..) {
            let Ok(line) = line else { continue };
            match u32::from(line.hdr_len) {
                0 => {}
                TT_TEMPLATE_LONG => of[idx] = Entry::Long,
                _ => {
                    users[usize::from(line.base)] += 1;
                    of[idx] = Entry::Short(line.base);
                }
            }
        }
        Bases { bases, users, of }
    }

    /// Where `base` is or can go: the slot holding it, else one never
    /// used, else one no entry uses; `None` when all are in use.
    fn place(&self, base: &tt_template) -> Option<u8> {
        let at = |f: &dyn Fn(usize) -> bool| (0..self.bases.len()).find(|&b| f(b));
        at(&|b| self.bases[b].as_ref() == Some(base))
            .or_else(|| at(&|b| self.bases[b].is_none() && self.users[b] == 0))
            .or_else(|| at(&|b| self.users[b] == 0))
            .and_then(|b| u8::try_from(b).ok())
    }

    /// Entry `idx` is `entry` now.
    fn set(&mut self, idx: u32, entry: Entry) {
        let idx = idx as usize;
        if let Entry::Short(old) = self.of[idx] {
            self.users[usize::from(old)] -= 1;
        }
        if let Entry::Short(b) = entry {
            self.users[usize::from(b)] += 1;
        }
        self.of[idx] = entry;
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.users.iter().filter(|&&u| u > 0).count()
    }
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
        lines: Array<&'a mut MapData, tt_template_short>,
        base_map: Array<&'a mut MapData, tt_template>,
        long: HashMap<&'a mut MapData, u32, tt_template>,
        bases: &'a mut Option<Bases>,
    ) -> Self {
        let bases = bases.get_or_insert_with(|| Bases::read(&lines, &base_map));
        TemplateSlots {
            lines,
            base_map,
            long,
            bases,
        }
    }

    /// Templates held whole in `long_templates`: IPv6 ones, and IPv4 ones
    /// that found every shared base in use (one more cold load a frame
    /// than a short template; still in XDP).
    pub fn long_entries(&self) -> usize {
        self.bases.of.iter().filter(|&&e| e == Entry::Long).count()
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
        let short = value
            .split()
            .and_then(|(base, own)| Some((self.bases.place(&base)?, base, own)));
        match short {
            Some((b, base, mut own)) => {
                if self.bases.bases[usize::from(b)] != Some(base) {
                    self.base_map.set(u32::from(b), base, 0)?;
                    self.bases.bases[usize::from(b)] = Some(base);
                }
                own.base = b;
                self.lines.set(idx, own, 0)?;
                self.bases.set(idx, Entry::Short(b));
                self.long.delete(&idx)
            }
            None => {
                self.long.put(idx, value)?;
                self.lines.set(idx, tt_template_short::long(), 0)?;
                self.bases.set(idx, Entry::Long);
                Ok(())
            }
        }
    }

    fn delete(&mut self, idx: &u32) -> Result<(), Error> {
        Self::check(*idx)?;
        self.lines.set(*idx, zeroed::<tt_template_short>(), 0)?;
        self.bases.set(*idx, Entry::Empty);
        self.long.delete(idx)
    }

    fn entries(&self) -> Vec<(u32, tt_template)> {
        self.lines
            .iter()
            .zip(0u32..)
            .filter_map(|(line, idx)| {
                let line = line.ok()?;
                match u32::from(line.hdr_len) {
                    0 => None,
                    TT_TEMPLATE_LONG => self.long.get(&idx, 0).ok().map(|t| (idx, t)),
                    _ => {
                        let base = self.bases.bases[usize::from(line.base)].as_ref()?;
                        tt_template::join(base, &line).map(|t| (idx, t))
                    }
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
        // IPv6 has no short form: the entry is a marker, the template is in
        // long_templates, and entries() gives it back whole; going back to
        // a short one removes the long entry.
        let long = template_v6(3);
        assert!(long.split().is_none() && template(3).split().is_some());
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

    /// A GRE template from `local` to `peer` with `key`: the peer (and
    /// the index's untagged VLAN) are the entry's own bytes, the local
    /// address the base's.
    fn gre(idx: u32, local: &str, peer: &str, key: u32) -> tt_template {
        template_of(
            idx as u16,
            local,
            peer,
            TunnelHeader::Gre { key: Some(key) },
        )
    }

    #[test]
    fn tunnels_share_bases_and_a_full_base_table_falls_back_to_long_entries() {
        let mut fp = FastPath::load().expect("loading the fast path (root)");
        let mut t = fp.templates().unwrap();
        // Tunnels that differ only in their own bytes (next hop, address,
        // key) share one base.
        let peer = |i: u32| gre(i, "10.0.0.1", &format!("10.1.0.{i}"), i);
        for i in 1..=50 {
            t.put(i, peer(i)).unwrap();
        }
        assert_eq!(t.bases.in_use(), 1);
        assert_eq!(t.long.iter().count(), 0);
        let mut want: Vec<(u32, tt_template)> = (1..=50).map(|i| (i, peer(i))).collect();
        assert_eq!(t.entries(), want);
        // Every local address is another base: TT_TEMPLATE_BASES - 1 more
        // fill the table, the next tunnel's template goes whole in
        // long_templates and comes back the same.
        for k in 1..TT_TEMPLATE_BASES {
            let idx = 100 + k;
            t.put(idx, gre(idx, &format!("10.0.1.{}", k - 1), "10.2.0.1", 1))
                .unwrap();
        }
        assert_eq!(t.bases.in_use(), TT_TEMPLATE_BASES as usize);
        let spill = gre(1000, "10.0.0.2", "10.2.0.1", 1);
        assert_eq!(t.long_entries(), 0);
        t.put(1000, spill).unwrap();
        assert_eq!(t.long.iter().count(), 1);
        assert_eq!(t.long_entries(), 1);
        assert!(t.entries().contains(&(1000, spill)));
        // A base no tunnel uses any more is written again for another.
        t.delete(&101).unwrap();
        let next = gre(1001, "10.0.0.3", "10.2.0.1", 1);
        t.put(1001, next).unwrap();
        assert_eq!(t.long.iter().count(), 1, "1001 took 101's base slot");
        assert_eq!(t.long_entries(), 1);
        assert!(t.entries().contains(&(1001, next)));
        assert!(!t.entries().iter().any(|(i, _)| *i == 101));
        // A new run reads the same bases back from the maps.
        fp.template_bases_forget();
        let mut t = fp.templates().unwrap();
        assert_eq!(t.bases.in_use(), TT_TEMPLATE_BASES as usize);
        assert_eq!(t.long_entries(), 1, "read back from the marker");
        let got = t.entries();
        want.retain(|w| got.contains(w));
        assert_eq!(want.len(), 50);
        assert!(got.contains(&(1000, spill)) && got.contains(&(1001, next)));
        // Removed, it is long no more.
        t.delete(&1000).unwrap();
        assert_eq!(t.long_entries(), 0);
    }

    #[test]
    fn a_short_template_and_its_base_make_the_template_again() {
        let cookies: [&[u8]; 3] = [&[], &[1, 2, 3, 4], &[1, 2, 3, 4, 5, 6, 7, 8]];
        let mut headers = vec![
            TunnelHeader::Gre { key: None },
            TunnelHeader::Gre {
                key: Some(0xdead_beef),
            },
        ];
        for cookie in cookies {
            for sublayer in [false, true] {
                headers.push(TunnelHeader::L2tpIp {
                    session_id: 0x1234_5678,
                    cookie,
                    sublayer,
                });
                headers.push(TunnelHeader::L2tpUdp {
                    local_port: 1701,
                    peer_port: 40_000,
                    session_id: 0x1234_5678,
                    cookie,
                    sublayer,
                });
            }
        }
        for header in headers {
            let t = template_of(5, "192.0.2.1", "198.51.100.7", header);
            let (base, own) = t
                .split()
                .unwrap_or_else(|| panic!("{header:?}: no short form"));
            assert_eq!(tt_template::join(&base, &own), Some(t), "{header:?}");
            // The base holds none of the tunnel's own bytes: another AP's
            // template over the same base differs only in the entry.
            let other = template_of(6, "192.0.2.1", "198.51.100.8", header);
            let (base2, own2) = other.split().unwrap();
            assert_eq!(base, base2, "{header:?}");
            assert_ne!(own, own2, "{header:?}");
            // An entry is not taken over a base of another length, nor with
            // a sum that is not its header's.
            let mut bad = own;
            bad.ip_sum ^= 1;
            assert_eq!(tt_template::join(&base, &bad), None);
            let mut shorter = base;
            shorter.hdr_len -= 2;
            assert_eq!(tt_template::join(&shorter, &own), None);
        }
    }
}
