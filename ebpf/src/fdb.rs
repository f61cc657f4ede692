//! The FDB table as userspace writes it: tunterm's own two-choice hash
//! table of 64-byte buckets in the mmapable `fdb` array (layout and the
//! rules both sides keep in `include/tunterm_maps.h`).
//!
//! Why not a kernel hash map: each of the two FDB lookups per frame there
//! costs three calls (hash, bucket walk, compare), and with this machine's
//! return-thunk mitigations every call and return is tens of nanoseconds;
//! the bucket walk was the largest item of the fast path's profile. Here a
//! lookup is inline code on one cache line (two when the first bucket is
//! full), and userspace reads and writes the table through a shared
//! mapping, no syscall per entry.
//!
//! A slot is 8 bytes, key and entry: the MAC's bits but its group bit
//! (the table holds unicast MACs only) are permuted one-to-one, its first
//! bucket is the permutation's top bits and the slot keeps the rest (the
//! tag), so 100,000 clients fit in 1 MiB. `Shape` turns a key into
//! its place (buckets, home slots, key bits) and a slot back into its key.

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::ap_rx::Error;
use crate::maps::{self, tt_fdb_entry, tt_fdb_key};
use crate::tables::Table;

// The header's constants, typed as used here (bindgen's types follow
// each literal).
const SLOTS: usize = maps::TT_FDB_BUCKET_SLOTS as usize;
const MUL0: u64 = maps::TT_FDB_HASH_MUL0 as u64;
const MUL1: u64 = maps::TT_FDB_HASH_MUL1 as u64;
const SECOND: u64 = maps::TT_FDB_SECOND as u64;
const SEEN: u64 = maps::TT_FDB_SEEN as u64;
const PORT_MASK: u64 = maps::TT_FDB_PORT_MASK as u64;
const KEY_SHIFT: u32 = maps::TT_FDB_KEY_SHIFT;
const VLAN_SHIFT: u32 = maps::TT_FDB_VLAN_SHIFT;
const TAG_SHIFT: u32 = maps::TT_FDB_TAG_SHIFT;
/// The bits of a unicast MAC the table keys: all but the group bit.
const MAC_BITS: u32 = maps::TT_FDB_MAC_BITS;
/// The mask of [`MAC_BITS`] bits.
const MAC_MASK: u64 = (1 << MAC_BITS) - 1;
/// The key's bits of a slot (tag, VLAN, which bucket): 0 when empty.
const KEY_MASK: u64 = !((1 << KEY_SHIFT) - 1);

/// The inverse of an odd `a` modulo 2^64 (Newton's iteration: each step
/// doubles the bits that are right, from the 3 of `a` itself).
const fn inverse(a: u64) -> u64 {
    let mut x = a;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}
const MUL0_INV: u64 = inverse(MUL0);
const _: () = assert!(MUL0_INV.wrapping_mul(MUL0) == 1);

/// A MAC as the programs read it (`ld_mac`: its first byte lowest, so
/// the group bit is bit 0).
fn mac_bits(mac: &[u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(mac);
    u64::from_le_bytes(b)
}

/// Whether `mac` is a group (multicast or broadcast) address: none is in
/// the table, whose keys have no room for the group bit.
fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// The permutation of a unicast MAC's bits (`mac_bits` without the group
/// bit, [`MAC_BITS`] of them) whose top bits are its first bucket and the
/// rest its tag (`fdb_perm` in `tt_fast_path.bpf.h`): a xor-shift and a
/// product by an odd number modulo 2^47, both one-to-one.
fn perm(mac: u64) -> u64 {
    let u = mac >> 1;
    (u ^ (u >> 24)).wrapping_mul(MUL0) & MAC_MASK
}

/// The unicast MAC of a permuted `p` ([`perm`] undone).
fn unperm(p: u64) -> u64 {
    let x = p.wrapping_mul(MUL0_INV) & MAC_MASK;
    // x's top 23 bits are u's top 23: xor them back into the low ones,
    // then the group bit (0) back in below.
    (x ^ (x >> 24)) << 1
}

/// The table's geometry: 2^bits buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    bits: u32,
}

/// Where a key goes: its two buckets, its home slot in each, and its key
/// bits (tag and VLAN; `SECOND` added in its second bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    bucket: [usize; 2],
    home: [usize; 2],
    key: u64,
}

impl Shape {
    fn buckets(self) -> usize {
        1 << self.bits
    }

    /// The place of (vlan, mac): the programs' `fdb_find_in`.
    fn place(self, vlan: u16, mac: &[u8; 6]) -> Place {
        let p = perm(mac_bits(mac));
        let tag = p & ((1 << (MAC_BITS - self.bits)) - 1);
        let key = tag << TAG_SHIFT | u64::from(vlan) << VLAN_SHIFT;
        let b0 = (p >> (MAC_BITS - self.bits)) as usize;
        let (b1, home1) = self.other(b0, key);
        Place {
            bucket: [b0, b1],
            home: [
                ((p >> (MAC_BITS - 3 - self.bits)) & (SLOTS as u64 - 1)) as usize,
                home1,
            ],
            key,
        }
    }

    /// From the bucket a key is in to its other one, and the key's home
    /// slot in its second: both from its key bits, whichever bucket it is
    /// in (XOR with the same number).
    fn other(self, bucket: usize, key: u64) -> (usize, usize) {
        let h = (key & KEY_MASK & !SECOND).wrapping_mul(MUL1);
        let other = bucket ^ ((h >> (64 - self.bits)) | 1) as usize;
        (
            other,
            ((h >> (61 - self.bits)) & (SLOTS as u64 - 1)) as usize,
        )
    }

    /// The home slot of the key `word` holds in `bucket`.
    fn home(self, bucket: usize, word: u64) -> usize {
        if word & SECOND != 0 {
            self.other(bucket, word).1
        } else {
            ((word >> (TAG_SHIFT + MAC_BITS - 3 - self.bits)) & (SLOTS as u64 - 1)) as usize
        }
    }

    /// The (VLAN, MAC) of the key `word` holds in `bucket`.
    fn key_of(self, bucket: usize, word: u64) -> tt_fdb_key {
        let first = if word & SECOND != 0 {
            self.other(bucket, word).0
        } else {
            bucket
        };
        let tag = (word >> TAG_SHIFT) & ((1 << (MAC_BITS - self.bits)) - 1);
        let mac = unperm((first as u64) << (MAC_BITS - self.bits) | tag);
        let mut m = [0u8; 6];
        m.copy_from_slice(&mac.to_le_bytes()[..6]);
        tt_fdb_key::new(((word >> VLAN_SHIFT) & 0xfff) as u16, m)
    }
}

/// The entry of a slot's bits.
fn entry_of(word: u64) -> tt_fdb_entry {
    tt_fdb_entry::new((word & PORT_MASK) as u16)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`
/// (which lags it by at most a tick) and of `Instant`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether `bits` bucket bits make a table the slots can describe.
fn bits_ok(bits: u32) -> bool {
    (maps::TT_FDB_MIN_BITS..=maps::TT_FDB_MAX_BITS).contains(&bits)
}

/// The `fdb` array mapped into this process (shared with the kernel).
#[derive(Debug)]
pub struct FdbMem {
    map: MmapRaw,
    shape: Shape,
}

impl FdbMem {
    /// Map the `fdb` array of 2^`bits` buckets behind `fd` (created with
    /// BPF_F_MMAPABLE).
    pub(crate) fn map(fd: BorrowedFd<'_>, bits: u32) -> Result<Self, Error> {
        if !bits_ok(bits) {
            return Err(Error::Pin(format!("an FDB of 2^{bits} buckets")));
        }
        let shape = Shape { bits };
        let map = MmapOptions::new()
            .len(shape.buckets() * SLOTS * 8)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| Error::Pin(format!("mapping the fdb array: {e}")))?;
        Ok(FdbMem { map, shape })
    }

    fn slot(&self, bucket: usize, slot: usize) -> &AtomicU64 {
        assert!(bucket < self.shape.buckets() && slot < SLOTS);
        // SAFETY: in bounds (asserted; 2^bits buckets of SLOTS words are
        // mapped), page-aligned base so every word is 8-byte aligned, only
        // ever accessed atomically (here and by the programs: one 8-byte
        // load, or an atomic OR), and the mapping lives as long as `self`.
        unsafe {
            AtomicU64::from_ptr(
                self.map
                    .as_mut_ptr()
                    .cast::<u64>()
                    .add(bucket * SLOTS + slot),
            )
        }
    }

    fn load(&self, bucket: usize, slot: usize) -> u64 {
        self.slot(bucket, slot).load(Ordering::Acquire)
    }

    fn placement(&self) -> Placement {
        let mut p = Placement::default();
        for b in 0..self.shape.buckets() {
            for s in 0..SLOTS {
                let w = self.slot(b, s).load(Ordering::Relaxed);
                if w & KEY_MASK == 0 {
                    continue;
                }
                p.keys += 1;
                p.at_home += usize::from(self.shape.home(b, w) == s);
                p.in_second += usize::from(w & SECOND != 0);
            }
        }
        p
    }

    /// Where the key of `place` is: (bucket, slot).
    fn find(&self, place: &Place) -> Option<(usize, usize)> {
        (0..2).find_map(|i| {
            let want = place.key | if i == 1 { SECOND } else { 0 };
            let b = place.bucket[i];
            (0..SLOTS)
                .find(|&s| self.load(b, s) & KEY_MASK == want)
                .map(|s| (b, s))
        })
    }

    /// A free slot of `bucket`: `home` if that is free, else the first free
    /// one.
    fn free_slot(&self, bucket: usize, home: usize) -> Option<usize> {
        std::iter::once(home)
            .chain(0..SLOTS)
            .find(|&s| self.slot(bucket, s).load(Ordering::Relaxed) & KEY_MASK == 0)
    }

    /// Make room in `start`'s buckets by moving occupants along a path of
    /// buckets to one with a free slot (cuckoo hashing, breadth-first, at
    /// most [`MAX_MOVES`] moves): the freed slot. Each move writes the key
    /// into its other bucket before clearing it here, so a reader always
    /// finds it.
    fn make_room(&self, place: &Place) -> Option<(usize, usize)> {
        let mut nodes: Vec<Node> = place.bucket.iter().map(|&b| (b, None, 0)).collect();
        let mut i = 0;
        let found = loop {
            let &(bucket, from, depth) = nodes.get(i)?;
            // The home slot here of the key that would land here: the new
            // one at the start, else the one the move from the previous
            // bucket brings (its word with the bucket bit flipped).
            let home = match from {
                None => place.home[i],
                Some((f, s)) => {
                    let w = self.load(nodes[f].0, s) ^ SECOND;
                    self.shape.home(bucket, w)
                }
            };
            if let Some(free) = self.free_slot(bucket, home) {
                break (i, free);
            }
            if depth < MAX_MOVES {
                for s in 0..SLOTS {
                    let w = self.load(bucket, s);
                    let other = self.shape.other(bucket, w).0;
                    if !nodes.iter().any(|n| n.0 == other) {
                        nodes.push((other, Some((i, s)), depth + 1));
                    }
                }
            }
            i += 1;
        };
        // Move from the free end back to the start.
        let (mut node, mut free) = found;
        while let (bucket, Some((from, s)), _) = nodes[node] {
            let src = nodes[from].0;
            let w = self.load(src, s);
            self.slot(bucket, free).store(w ^ SECOND, Ordering::Release);
            self.slot(src, s).store(0, Ordering::Release);
            (node, free) = (from, s);
        }
        Some((nodes[node].0, free))
    }
}

/// A bucket on the search for room: (bucket, the node it was reached from
/// and the slot there whose key would move into it, moves from the start).
type Node = (usize, Option<(usize, usize)>, usize);

/// Longest chain of moves that makes room for a key.
const MAX_MOVES: usize = 4;

/// The FDB as a map: (VLAN, MAC) → [`tt_fdb_entry`].
#[derive(Debug)]
pub struct Fdb<'a> {
    mem: &'a FdbMem,
}

impl<'a> Fdb<'a> {
    pub(crate) fn new(mem: &'a FdbMem) -> Self {
        Fdb { mem }
    }

    /// The entry of `key`, as XDP finds it (none for a group MAC).
    pub fn get(&self, key: &tt_fdb_key) -> Option<tt_fdb_entry> {
        if is_group(&key.mac) {
            return None;
        }
        let place = self.mem.shape.place(key.vlan, &key.mac);
        let (b, s) = self.mem.find(&place)?;
        Some(entry_of(self.mem.load(b, s)))
    }

    /// Slots in all (entries it holds at most).
    pub fn capacity(&self) -> usize {
        self.mem.shape.buckets() * SLOTS
    }

    /// Where the keys sit, which is what a lookup costs: a key at its home
    /// slot is the first compare, a key in its second bucket is a second
    /// cache line.
    pub fn placement(&self) -> Placement {
        self.mem.placement()
    }

    /// The keys XDP forwarded a frame from since the last call (their
    /// slots' seen marks, which this clears).
    pub fn take_seen(&self) -> Vec<tt_fdb_key> {
        let m = self.mem;
        let mut keys = Vec::new();
        for b in 0..m.shape.buckets() {
            for s in 0..SLOTS {
                let slot = m.slot(b, s);
                if slot.load(Ordering::Relaxed) & SEEN == 0 {
                    continue;
                }
                let v = slot.fetch_and(!SEEN, Ordering::AcqRel);
                if v & KEY_MASK != 0 {
                    keys.push(m.shape.key_of(b, v));
                }
            }
        }
        keys
    }
}

/// Where the FDB's keys sit ([`Fdb::placement`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Keys in all.
    pub keys: usize,
    /// Keys at their home slot of the bucket they are in.
    pub at_home: usize,
    /// Keys in their second bucket.
    pub in_second: usize,
}

impl Table<tt_fdb_key, tt_fdb_entry> for Fdb<'_> {
    /// Overwrite `key`'s entry where it is, or put it into the first of
    /// its two buckets with room, moving occupants to their other buckets
    /// to make room if both are full; [`Error::FdbFull`] when that fails
    /// too, or for a VLAN outside 1..=4095 (no slot can hold it);
    /// [`Error::PortIndex`] for a port index past the slot's 15 bits;
    /// [`Error::GroupMac`] for a group MAC (XDP never looks one up).
    fn put(&mut self, key: tt_fdb_key, value: tt_fdb_entry) -> Result<(), Error> {
        let full = Error::FdbFull {
            vlan: key.vlan,
            mac: key.mac,
        };
        if !(1..=0xfff).contains(&key.vlan) {
            return Err(full);
        }
        if is_group(&key.mac) {
            return Err(Error::GroupMac(key.mac));
        }
        let e = u64::from(value.port);
        if e > PORT_MASK {
            return Err(Error::PortIndex(value.port));
        }
        let m = self.mem;
        let place = m.shape.place(key.vlan, &key.mac);
        if let Some((b, s)) = m.find(&place) {
            // The key and its seen mark stay.
            let w = m.load(b, s);
            m.slot(b, s)
                .store(w & (KEY_MASK | SEEN) | e, Ordering::Release);
            return Ok(());
        }
        // The first bucket while it has room: a lookup reads it first, and
        // a key there costs one cache miss, not two.
        let [b0, b1] = place.bucket;
        let spot = m
            .free_slot(b0, place.home[0])
            .map(|s| (b0, s))
            .or_else(|| m.free_slot(b1, place.home[1]).map(|s| (b1, s)))
            .or_else(|| m.make_room(&place));
        let (b, s) = spot.ok_or(full)?;
        let second = if b == b0 { 0 } else { SECOND };
        m.slot(b, s)
            .store(place.key | second | e, Ordering::Release);
        Ok(())
    }

    fn delete(&mut self, key: &tt_fdb_key) -> Result<(), Error> {
        if is_group(&key.mac) {
            // Never stored (put refuses it): nothing to delete, and its
            // place is its unicast twin's.
            return Ok(());
        }
        let place = self.mem.shape.place(key.vlan, &key.mac);
        if let Some((b, s)) = self.mem.find(&place) {
            self.mem.slot(b, s).store(0, Ordering::Release);
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(tt_fdb_key, tt_fdb_entry)> {
        let m = self.mem;
        (0..m.shape.buckets())
            .flat_map(|b| (0..SLOTS).map(move |s| (b, s)))
            .filter_map(|(b, s)| {
                let w = m.load(b, s);
                (w & KEY_MASK != 0).then(|| (m.shape.key_of(b, w), entry_of(w)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An FDB of 2^`bits` buckets in anonymous memory, as the programs'
    /// arrays would be.
    fn anon(bits: u32) -> FdbMem {
        let shape = Shape { bits };
        let map = MmapOptions::new()
            .len(shape.buckets() * SLOTS * 8)
            .map_anon()
            .expect("anonymous map")
            .into();
        FdbMem { map, shape }
    }

    /// apsim's and labbench's client MACs, 02:AP:AP:AP:C:C
    /// (`tunterm_lab::apsim::synthetic_client_mac`, not a dependency here).
    fn client_mac(ap: u32, c: u32) -> [u8; 6] {
        let [_, a2, a1, a0] = ap.to_be_bytes();
        let [.., c1, c0] = c.to_be_bytes();
        [2, a2, a1, a0, c1, c0]
    }

    /// A few thousand unicast MACs of no pattern (a xorshift generator).
    fn random_macs(n: usize) -> Vec<[u8; 6]> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut m = [0u8; 6];
                m.copy_from_slice(&x.to_le_bytes()[..6]);
                m[0] &= !1;
                m
            })
            .collect()
    }

    #[test]
    fn the_permutation_is_one_to_one() {
        for m in random_macs(10_000).iter().map(mac_bits).chain([
            0,
            2,
            (1 << 48) - 2,
            1 << 47,
            0x0000_0100_0000,
        ]) {
            assert_eq!(unperm(perm(m)), m, "{m:#x}");
            assert!(perm(m) <= MAC_MASK);
        }
        // Over a small domain, exhaustively: 2^20 unicast MACs (the group
        // bit clear) take 2^20 distinct places.
        let mut ps: Vec<u64> = (0..1u64 << 20).map(|i| perm(i << 1)).collect();
        ps.sort_unstable();
        ps.dedup();
        assert_eq!(ps.len(), 1 << 20);
    }

    #[test]
    fn group_macs_are_refused_and_never_alias_their_unicast_twin() {
        let mem = anon(maps::TT_FDB_MIN_BITS);
        let mut fdb = Fdb::new(&mem);
        let unicast = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let group = [0x03, 0x11, 0x22, 0x33, 0x44, 0x55];
        let broadcast = [0xff; 6];
        fdb.put(tt_fdb_key::new(10, unicast), tt_fdb_entry::new(7))
            .unwrap();
        for g in [group, broadcast] {
            assert!(matches!(
                fdb.put(tt_fdb_key::new(10, g), tt_fdb_entry::new(9)),
                Err(Error::GroupMac(m)) if m == g
            ));
            assert_eq!(fdb.get(&tt_fdb_key::new(10, g)), None);
            fdb.delete(&tt_fdb_key::new(10, g)).unwrap();
        }
        // The twin (same bits but the group bit) is untouched.
        assert_eq!(
            fdb.get(&tt_fdb_key::new(10, unicast)).map(|e| e.port),
            Some(7)
        );
        assert_eq!(fdb.entries().len(), 1);
    }

    #[test]
    fn a_slot_gives_back_its_key_in_either_bucket() {
        for bits in [maps::TT_FDB_MIN_BITS, 17, maps::TT_FDB_MAX_BITS] {
            let shape = Shape { bits };
            for (i, mac) in random_macs(2_000).iter().enumerate() {
                let vlan = 1 + (i % 4094) as u16;
                let p = shape.place(vlan, mac);
                assert!(p.bucket.iter().all(|&b| b < shape.buckets()));
                assert_ne!(p.bucket[0], p.bucket[1]);
                // Each bucket leads to the other, and the home slot of
                // the second is the same whichever it is reached from.
                assert_eq!(shape.other(p.bucket[0], p.key), (p.bucket[1], p.home[1]));
                assert_eq!(shape.other(p.bucket[1], p.key).0, p.bucket[0]);
                for (i, second) in [(0, 0), (1, SECOND)] {
                    let word = p.key | second | SEEN | 0x7345;
                    let k = shape.key_of(p.bucket[i], word);
                    assert_eq!((k.vlan, k.mac), (vlan, *mac), "bits {bits}");
                    assert_eq!(shape.home(p.bucket[i], word), p.home[i]);
                }
                // The slot's key starts above the entry, and is never 0.
                assert_ne!(p.key & KEY_MASK, 0);
                assert_eq!(p.key & !KEY_MASK, 0);
            }
        }
    }

    #[test]
    fn most_keys_sit_at_their_home_slot_and_all_are_found() {
        // The bench's sizes in their tables (Capacity::for_macs): 1,000
        // APs × 10 clients in 2^12 buckets, 10,000 × 10 in 2^14, and a
        // table 90% full.
        for (aps, bits, min_home) in [(1_000u32, 12, 0.9), (10_000, 14, 0.7), (11_796, 14, 0.6)] {
            let mem = anon(bits);
            let mut fdb = Fdb::new(&mem);
            let mut keys = Vec::new();
            for ap in 0..aps {
                for c in 0..10 {
                    let k = tt_fdb_key::new(10, client_mac(ap, c));
                    let port = (ap % 0x7fff + 1) as u16;
                    fdb.put(k, tt_fdb_entry::new(port)).expect("room");
                    keys.push((k, port));
                }
            }
            for (k, port) in &keys {
                assert_eq!(fdb.get(k).map(|e| e.port), Some(*port));
            }
            let p = fdb.placement();
            assert_eq!(p.keys, keys.len());
            let home = p.at_home as f64 / p.keys as f64;
            assert!(home > min_home, "{aps} APs: {p:?}");
            eprintln!(
                "{aps} APs × 10 in {} slots: {home:.2} at home, {p:?}",
                fdb.capacity()
            );
            // entries() names every key, decoded from its slot.
            let mut all: Vec<_> = fdb
                .entries()
                .into_iter()
                .map(|(k, e)| (k, e.port))
                .collect();
            let mut want = keys.clone();
            let order = |a: &(tt_fdb_key, u16)| (a.0.vlan, a.0.mac);
            all.sort_by_key(order);
            want.sort_by_key(order);
            assert!(
                all.len() == want.len()
                    && all
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| order(a) == order(b) && a.1 == b.1)
            );
            // Removing keys frees their slots; the rest are still found.
            for (k, _) in keys.iter().step_by(2) {
                fdb.delete(k).unwrap();
            }
            for (i, (k, port)) in keys.iter().enumerate() {
                let want = (i % 2 == 1).then_some(*port);
                assert_eq!(fdb.get(k).map(|e| e.port), want);
            }
        }
    }

    #[test]
    fn a_full_table_refuses_a_key_and_keeps_the_others() {
        let mem = anon(maps::TT_FDB_MIN_BITS);
        let mut fdb = Fdb::new(&mem);
        let macs = random_macs(fdb.capacity());
        let mut put = Vec::new();
        let mut refused = 0;
        for m in &macs {
            let k = tt_fdb_key::new(20, *m);
            match fdb.put(k, tt_fdb_entry::new(3)) {
                Ok(()) => put.push(k),
                Err(Error::FdbFull { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // Two 8-slot buckets per key and cuckoo moves fill it nearly all.
        assert!(
            put.len() > fdb.capacity() * 95 / 100,
            "{} of {}",
            put.len(),
            fdb.capacity()
        );
        assert!(refused > 0);
        assert!(put.iter().all(|k| fdb.get(k).is_some_and(|e| e.port == 3)));
        // VLAN 0 and VLANs past 12 bits have no slot, port indexes past
        // 15 bits no room.
        let k = |vlan| tt_fdb_key::new(vlan, [2, 0, 0, 0, 0, 1]);
        for vlan in [0, 0x1000] {
            assert!(fdb.put(k(vlan), tt_fdb_entry::new(1)).is_err());
        }
        assert!(matches!(
            fdb.put(k(5), tt_fdb_entry::new(0x8000)),
            Err(Error::PortIndex(0x8000))
        ));
    }

    #[test]
    fn seen_bits_name_the_keys_forwarded_from() {
        let mem = anon(maps::TT_FDB_MIN_BITS);
        let mut fdb = Fdb::new(&mem);
        let keys: Vec<_> = random_macs(100)
            .into_iter()
            .map(|m| tt_fdb_key::new(10, m))
            .collect();
        for k in &keys {
            fdb.put(*k, tt_fdb_entry::new(1)).unwrap();
        }
        assert!(fdb.take_seen().is_empty());
        // What fdb_touch does, for keys 3 and 77, and what a mark racing
        // the slot's removal leaves: a mark on an empty slot.
        let mark = |b: usize, s: usize| {
            mem.slot(b, s).fetch_or(SEEN, Ordering::Relaxed);
        };
        for k in [&keys[3], &keys[77]] {
            let (b, s) = mem.find(&mem.shape.place(k.vlan, &k.mac)).unwrap();
            mark(b, s);
        }
        let empty = (0..mem.shape.buckets() * SLOTS)
            .find(|&s| mem.load(s / SLOTS, s % SLOTS) == 0)
            .unwrap();
        mark(empty / SLOTS, empty % SLOTS);
        // A rewrite of a marked key's entry keeps the mark.
        fdb.put(keys[3], tt_fdb_entry::new(2)).unwrap();
        let mut seen: Vec<_> = fdb
            .take_seen()
            .into_iter()
            .map(|k| (k.vlan, k.mac))
            .collect();
        seen.sort_unstable();
        let mut want = vec![(10, keys[3].mac), (10, keys[77].mac)];
        want.sort_unstable();
        assert_eq!(seen, want);
        assert!(fdb.take_seen().is_empty(), "taking them clears them");
        // The marked empty slot is still empty to a put, and the marks
        // never touched the entries.
        assert_eq!(fdb.get(&keys[3]).map(|e| e.port), Some(2));
        assert_eq!(fdb.get(&keys[77]).map(|e| e.port), Some(1));
        assert_eq!(fdb.entries().len(), keys.len());
    }

    #[test]
    fn structured_macs_spread_like_random_ones() {
        // apsim's and labbench's clients: 02:AP:AP:AP:C:C. N keys thrown
        // at random into B buckets fill B·(1 - e^(-N/B)) of them; the
        // first bucket must do about as well.
        for (aps, bits) in [(1_000u32, 12u32), (10_000, 14), (10_000, 16)] {
            let shape = Shape { bits };
            let mut used = vec![false; shape.buckets()];
            for ap in 0..aps {
                for c in 0..10 {
                    used[shape.place(10, &client_mac(ap, c)).bucket[0]] = true;
                }
            }
            let n = f64::from(aps * 10);
            let b = shape.buckets() as f64;
            let random = b * (1.0 - (-n / b).exp());
            let got = used.iter().filter(|&&u| u).count() as f64;
            assert!(got > 0.97 * random, "{got} buckets used, random {random}");
        }
    }

    #[test]
    fn the_first_bucket_is_the_macs_and_its_other_vlans_spread() {
        let shape = Shape {
            bits: maps::TT_FDB_MIN_BITS,
        };
        let mac = [0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e];
        let places: Vec<Place> = (1..=100).map(|v| shape.place(v, &mac)).collect();
        assert!(places.iter().all(|p| p.bucket[0] == places[0].bucket[0]));
        let mut second: Vec<usize> = places.iter().map(|p| p.bucket[1]).collect();
        second.sort_unstable();
        second.dedup();
        assert!(
            second.len() > 90,
            "{} second buckets for 100 VLANs",
            second.len()
        );
    }
}
