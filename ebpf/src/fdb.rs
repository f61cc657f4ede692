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

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::ap_rx::Error;
use crate::maps::{
    TT_FDB_BUCKET_SLOTS, TT_FDB_HASH_MUL0, TT_FDB_HASH_MUL1, TT_FDB_HASH0_SHIFT, TT_FDB_SEEN_SHIFT,
    tt_fdb_entry, tt_fdb_key,
};
use crate::tables::Table;

const SLOTS: usize = TT_FDB_BUCKET_SLOTS as usize;
/// `u64` words of a bucket (key and entry per slot).
const WORDS: usize = 2 * SLOTS;

/// A key's bits as the table stores them: the `tt_fdb_key`'s 8 bytes as a
/// little-endian `u64` (VLAN in the low 16 bits).
pub fn key_bits(k: &tt_fdb_key) -> u64 {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&k.vlan.to_le_bytes());
    b[2..].copy_from_slice(&k.mac);
    u64::from_le_bytes(b)
}

fn key_of(bits: u64) -> tt_fdb_key {
    let b = bits.to_le_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&b[2..]);
    tt_fdb_key::new(u16::from_le_bytes([b[0], b[1]]), mac)
}

fn entry_bits(e: &tt_fdb_entry) -> u64 {
    u64::from(e.port) | u64::from(e.flags) << 32 | u64::from(e.seen) << 48
}

fn entry_of(bits: u64) -> tt_fdb_entry {
    tt_fdb_entry {
        port: bits as u32,
        flags: (bits >> 32) as u16,
        seen: (bits >> 48) as u16,
    }
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

/// The `seen` stamp of CLOCK_MONOTONIC time `ns` (what XDP writes).
pub fn seen_stamp(ns: u64) -> u16 {
    (ns >> TT_FDB_SEEN_SHIFT) as u16
}

impl tt_fdb_entry {
    /// How long before `now_ns` (CLOCK_MONOTONIC) XDP last forwarded from
    /// this entry's MAC, or `None` if it never did: since the start of the
    /// stamp's 2^30 ns unit, so one stamp always gives the same instant, at
    /// most a unit early. Valid for ages under the stamp's wrap (19.5
    /// hours; the switch ages MACs out long before).
    pub fn seen_ago(&self, now_ns: u64) -> Option<Duration> {
        (self.seen != 0).then(|| {
            let units = seen_stamp(now_ns).wrapping_sub(self.seen);
            let into_unit = now_ns & ((1 << TT_FDB_SEEN_SHIFT) - 1);
            Duration::from_nanos((u64::from(units) << TT_FDB_SEEN_SHIFT) + into_unit)
        })
    }
}

/// The bucket of `key` by hash `which` (0 or 1) in a table of `buckets`
/// buckets (any number): the programs' `fdb_find`. The first hashes the
/// MAC alone (the VLAN is the key's low 16 bits). The product's top 32
/// bits, its best mixed, scaled to the table (`(h32 × buckets) >> 32`,
/// Lemire's multiply-shift range reduction): no power-of-two table, so
/// its memory follows the clients asked for instead of doubling at each
/// power of two.
pub fn bucket_of(key: u64, which: usize, buckets: u32) -> usize {
    (((hash(key, which) >> 32) * u64::from(buckets)) >> 32) as usize
}

/// Hash `which` (0 or 1) of `key`: the programs' `fdb_hash0` and the
/// second product of `fdb_find`.
fn hash(key: u64, which: usize) -> u64 {
    if which == 0 {
        let mac = key >> TT_FDB_HASH0_SHIFT;
        (mac ^ (mac >> 24)).wrapping_mul(TT_FDB_HASH_MUL0 as u64)
    } else {
        (key ^ (key >> 29)).wrapping_mul(TT_FDB_HASH_MUL1 as u64)
    }
}

/// Where a key's home slot is in its hash ([`home_slot`]); the programs
/// get it at load (`tt_fdb_home_shift`).
pub const HOME_SHIFT: u32 = 30;
// The home slot's bits stay below the bucket's (the hash's top 32), so
// where a key sits in its bucket does not follow which bucket it is in.
const _: () = assert!(HOME_SHIFT + SLOTS.trailing_zeros() <= 32);

/// The slot of its bucket (by hash `which`) that `key` takes when it is
/// free, and that the programs compare first: bits 30 and 31 of the hash,
/// below the 32 that pick the bucket (`fdb_home` in `tt_fast_path.bpf.h`).
/// With keys at their home slot, the first compare of a lookup mostly
/// hits, so the CPU predicts it; in fill order, which slot matches was a
/// different one frame by frame, and the compares mispredicted.
pub fn home_slot(key: u64, which: usize) -> usize {
    ((hash(key, which) >> HOME_SHIFT) & (SLOTS as u64 - 1)) as usize
}

/// The `fdb` array mapped into this process (shared with the kernel).
#[derive(Debug)]
pub struct FdbMem {
    map: MmapRaw,
    buckets: usize,
}

impl FdbMem {
    /// Map the `fdb` array of `buckets` buckets behind `fd` (created with
    /// BPF_F_MMAPABLE).
    pub(crate) fn map(fd: BorrowedFd<'_>, buckets: u32) -> Result<Self, Error> {
        let bytes = buckets as usize * size_of::<crate::maps::tt_fdb_bucket>();
        let map = MmapOptions::new()
            .len(bytes)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| Error::Pin(format!("mapping the fdb array: {e}")))?;
        Ok(FdbMem {
            map,
            buckets: buckets as usize,
        })
    }

    fn word(&self, bucket: usize, w: usize) -> &AtomicU64 {
        assert!(bucket < self.buckets && w < WORDS);
        // SAFETY: in bounds (asserted; `buckets` buckets of WORDS words are
        // mapped), page-aligned base so every word is 8-byte aligned, only
        // ever accessed atomically (here and by the programs), and the
        // mapping lives as long as `self`.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().cast::<u64>().add(bucket * WORDS + w)) }
    }

    fn key(&self, bucket: usize, slot: usize) -> &AtomicU64 {
        self.word(bucket, 2 * slot)
    }

    fn entry(&self, bucket: usize, slot: usize) -> &AtomicU64 {
        self.word(bucket, 2 * slot + 1)
    }

    fn placement(&self) -> Placement {
        let mut p = Placement::default();
        for b in 0..self.buckets {
            for s in 0..SLOTS {
                let k = self.key(b, s).load(Ordering::Relaxed);
                if k == 0 {
                    continue;
                }
                let which = usize::from(self.buckets_of(k)[0] != b);
                p.keys += 1;
                p.at_home += usize::from(home_slot(k, which) == s);
                p.in_second += which;
            }
        }
        p
    }

    fn buckets_of(&self, key: u64) -> [usize; 2] {
        let n = self.buckets as u32;
        [bucket_of(key, 0, n), bucket_of(key, 1, n)]
    }

    fn find(&self, key: u64) -> Option<(usize, usize)> {
        self.buckets_of(key).into_iter().find_map(|b| {
            (0..SLOTS)
                .find(|&s| self.key(b, s).load(Ordering::Acquire) == key)
                .map(|s| (b, s))
        })
    }

    /// A free slot of `bucket` (by hash `which` of `key`): the key's home
    /// slot if that is free, else the first free one.
    fn free_slot(&self, bucket: usize, key: u64, which: usize) -> Option<usize> {
        let home = home_slot(key, which);
        std::iter::once(home)
            .chain(0..SLOTS)
            .find(|&s| self.key(bucket, s).load(Ordering::Relaxed) == 0)
    }

    /// Write a new entry into an empty slot: the entry first, then (with
    /// release ordering) the key that makes it visible.
    fn fill(&self, bucket: usize, slot: usize, key: u64, entry: u64) {
        self.entry(bucket, slot).store(entry, Ordering::Relaxed);
        self.key(bucket, slot).store(key, Ordering::Release);
    }

    /// Make room in `start`'s buckets by moving occupants along a path of
    /// buckets to one with a free slot (cuckoo hashing, breadth-first, at
    /// most [`MAX_MOVES`] moves): the freed slot. Each move writes the key
    /// into its other bucket before clearing it here, so a reader always
    /// finds it.
    fn make_room(&self, key: u64, start: [usize; 2]) -> Option<(usize, usize)> {
        let mut nodes: Vec<Node> = start.iter().map(|&b| (b, None, 0)).collect();
        let mut i = 0;
        let found = loop {
            let &(bucket, from, depth) = nodes.get(i)?;
            // The key that would land here: the new one at the start, else
            // the one the move from the previous bucket brings.
            let (lands, which) = match from {
                None => (key, i),
                Some((f, s)) => {
                    let k = self.key(nodes[f].0, s).load(Ordering::Relaxed);
                    (k, usize::from(self.buckets_of(k)[0] != bucket))
                }
            };
            if let Some(free) = self.free_slot(bucket, lands, which) {
                break (i, free);
            }
            if depth < MAX_MOVES {
                for s in 0..SLOTS {
                    let k = self.key(bucket, s).load(Ordering::Relaxed);
                    let [a, b] = self.buckets_of(k);
                    let other = if a == bucket { b } else { a };
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
            let k = self.key(src, s).load(Ordering::Relaxed);
            let e = self.entry(src, s).load(Ordering::Relaxed);
            self.fill(bucket, free, k, e);
            self.key(src, s).store(0, Ordering::Release);
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

    /// The entry of `key`, as XDP finds it.
    pub fn get(&self, key: &tt_fdb_key) -> Option<tt_fdb_entry> {
        let k = key_bits(key);
        let (b, s) = self.mem.find(k)?;
        let e = self.mem.entry(b, s).load(Ordering::Acquire);
        (self.mem.key(b, s).load(Ordering::Acquire) == k).then(|| entry_of(e))
    }

    /// Slots in all (entries it holds at most).
    pub fn capacity(&self) -> usize {
        self.mem.buckets * SLOTS
    }

    /// Where the keys sit, which is what a lookup costs: a key at its home
    /// slot is the first compare, a key in its second bucket is a second
    /// cache line.
    pub fn placement(&self) -> Placement {
        self.mem.placement()
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
    /// too.
    fn put(&mut self, key: tt_fdb_key, value: tt_fdb_entry) -> Result<(), Error> {
        let k = key_bits(&key);
        if k == 0 {
            return Err(Error::FdbFull {
                vlan: 0,
                mac: [0; 6],
            });
        }
        let e = entry_bits(&value);
        let m = self.mem;
        if let Some((b, s)) = m.find(k) {
            m.entry(b, s).store(e, Ordering::Release);
            return Ok(());
        }
        // The first bucket while it has room: a lookup reads it first, and
        // a key there costs one cache miss, not two.
        let [b0, b1] = m.buckets_of(k);
        let spot = m
            .free_slot(b0, k, 0)
            .map(|s| (b0, s))
            .or_else(|| m.free_slot(b1, k, 1).map(|s| (b1, s)))
            .or_else(|| m.make_room(k, [b0, b1]));
        let (b, s) = spot.ok_or(Error::FdbFull {
            vlan: key.vlan,
            mac: key.mac,
        })?;
        m.fill(b, s, k, e);
        Ok(())
    }

    fn delete(&mut self, key: &tt_fdb_key) -> Result<(), Error> {
        if let Some((b, s)) = self.mem.find(key_bits(key)) {
            self.mem.key(b, s).store(0, Ordering::Release);
        }
        Ok(())
    }

    fn entries(&self) -> Vec<(tt_fdb_key, tt_fdb_entry)> {
        let m = self.mem;
        (0..m.buckets)
            .flat_map(|b| (0..SLOTS).map(move |s| (b, s)))
            .filter_map(|(b, s)| {
                let k = m.key(b, s).load(Ordering::Acquire);
                (k != 0).then(|| (key_of(k), entry_of(m.entry(b, s).load(Ordering::Acquire))))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An FDB of `buckets` buckets in anonymous memory, as the programs'
    /// array would be.
    fn anon(buckets: u32) -> FdbMem {
        let bytes = buckets as usize * size_of::<crate::maps::tt_fdb_bucket>();
        let map = MmapOptions::new()
            .len(bytes)
            .map_anon()
            .expect("anonymous map");
        FdbMem {
            map: map.into(),
            buckets: buckets as usize,
        }
    }

    /// apsim's and labbench's client MACs, 02:AP:AP:AP:C:C
    /// (`tunterm_lab::apsim::synthetic_client_mac`, not a dependency here).
    fn client_mac(ap: u32, c: u32) -> [u8; 6] {
        let [_, a2, a1, a0] = ap.to_be_bytes();
        let [.., c1, c0] = c.to_be_bytes();
        [2, a2, a1, a0, c1, c0]
    }

    #[test]
    fn most_keys_sit_at_their_home_slot_and_all_are_found() {
        // The bench's sizes: 1,000 APs × 10 clients and 10,000 × 10 in
        // 1.5 × as many slots (Capacity::for_macs), and a table 90% full.
        for (aps, buckets, min_home) in [
            (1_000u32, 3_751u32, 0.65),
            (10_000, 37_501, 0.65),
            (1_000, 2_778, 0.55),
        ] {
            let mem = anon(buckets);
            let mut fdb = Fdb::new(&mem);
            let mut keys = Vec::new();
            for ap in 0..aps {
                for c in 0..10 {
                    let k = tt_fdb_key::new(10, client_mac(ap, c));
                    fdb.put(k, tt_fdb_entry::new(ap + 1, false)).expect("room");
                    keys.push(k);
                }
            }
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(fdb.get(k).map(|e| e.port), Some(i as u32 / 10 + 1));
            }
            let p = fdb.placement();
            assert_eq!(p.keys, keys.len());
            let home = p.at_home as f64 / p.keys as f64;
            // In fill order (the first free slot) this was about 1/3 at
            // 1.5 × headroom: the first slot of a bucket was the match for
            // its first key only.
            assert!(home > min_home, "{aps} APs in {buckets} buckets: {p:?}");
            eprintln!("{aps} APs × 10 in {buckets} buckets: {home:.2} at home, {p:?}");
        }
    }

    #[test]
    fn keys_and_entries_round_trip_through_their_bits() {
        let k = tt_fdb_key::new(0x0123, [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(key_bits(&k), 0xeedd_ccbb_aa02_0123);
        let back = key_of(key_bits(&k));
        assert_eq!((back.vlan, back.mac), (k.vlan, k.mac));
        let e = tt_fdb_entry {
            port: 0xdead_beef,
            flags: 1,
            seen: 0x1234,
        };
        let back = entry_of(entry_bits(&e));
        assert_eq!(
            (back.port, back.flags, back.seen),
            (e.port, e.flags, e.seen)
        );
    }

    #[test]
    fn seen_stamps_give_ages_across_the_wrap() {
        let unit = 1u64 << TT_FDB_SEEN_SHIFT;
        let mut e = tt_fdb_entry::new(5, false);
        assert_eq!(e.seen_ago(123 * unit), None, "never seen");
        // Seen at 100 units + 7 ns: from then on, the start of unit 100.
        e.seen = seen_stamp(100 * unit + 7);
        assert_eq!(e.seen_ago(100 * unit + 9), Some(Duration::from_nanos(9)));
        assert_eq!(
            e.seen_ago(130 * unit + 5),
            Some(Duration::from_nanos(30 * unit + 5))
        );
        assert_eq!(
            e.seen_ago(130 * unit),
            Some(Duration::from_nanos(30 * unit))
        );
        // The stamp is 16 bits: an age across its wrap still comes out.
        e.seen = seen_stamp(65_530 * unit);
        assert_eq!(
            e.seen_ago(65_546 * unit),
            Some(Duration::from_nanos(16 * unit))
        );
    }

    #[test]
    fn buckets_cover_the_table_and_the_two_hashes_differ() {
        // A power of two and not: every bucket is reachable either way.
        for n in [256u32, 250] {
            let mut hit = vec![0u32; n as usize];
            let mut same = 0;
            for i in 0..16 * u64::from(n) {
                let k = key_bits(&tt_fdb_key::new(10, [2, 0, 0, 0, (i >> 8) as u8, i as u8]));
                let (a, b) = (bucket_of(k, 0, n), bucket_of(k, 1, n));
                hit[a] += 1;
                same += usize::from(a == b);
            }
            // 16 keys per bucket on average: none empty, none three times over.
            assert!(hit.iter().all(|&h| (1..48).contains(&h)), "{n}: {hit:?}");
            assert!(same < 64, "{n}: {same} keys have one bucket twice");
        }
    }

    #[test]
    fn structured_macs_spread_like_random_ones() {
        // apsim's and labbench's clients: 02:AP:AP:AP:C:C. N keys thrown
        // at random into B buckets fill B·(1 - e^(-N/B)) of them; the
        // first hash must do about as well (a plain product of the MAC
        // filled half as many at 10,000 × 10 in 65,536 buckets).
        // Any number of buckets, not only powers of two.
        for (aps, per_ap, buckets) in [
            (1_000u32, 10u32, 4_096u32),
            (10_000, 10, 65_536),
            (1_000, 10, 3_751),
        ] {
            let mut used = vec![false; buckets as usize];
            for ap in 0..aps {
                for c in 0..per_ap {
                    let k = key_bits(&tt_fdb_key::new(10, client_mac(ap, c)));
                    used[bucket_of(k, 0, buckets)] = true;
                }
            }
            let n = f64::from(aps * per_ap);
            let b = f64::from(buckets);
            let random = b * (1.0 - (-n / b).exp());
            let got = used.iter().filter(|&&u| u).count() as f64;
            assert!(got > 0.97 * random, "{got} buckets used, random {random}");
        }
    }

    #[test]
    fn the_first_bucket_is_the_macs_and_its_other_vlans_spread() {
        let n = 1024;
        let mac = [0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e];
        let keys: Vec<u64> = (1..=100)
            .map(|v| key_bits(&tt_fdb_key::new(v, mac)))
            .collect();
        let first = bucket_of(keys[0], 0, n);
        assert!(keys.iter().all(|&k| bucket_of(k, 0, n) == first));
        let mut second: Vec<usize> = keys.iter().map(|&k| bucket_of(k, 1, n)).collect();
        second.sort_unstable();
        second.dedup();
        assert!(
            second.len() > 90,
            "{} second buckets for 100 VLANs",
            second.len()
        );
    }
}
