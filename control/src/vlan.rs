//! VLAN id sets and the Mist API's mixed VLAN lists.
//!
//! The API writes VLAN lists as JSON arrays mixing numbers and strings:
//! `[3, 4, 5, "7-9", "12"]`. [`VlanEntry`] is one item of such a list (a single
//! id or an inclusive range, validated on construction) and [`VlanSet`] is the
//! set they describe: a 4096-bit bitmap with an allocation-free
//! [`VlanSet::contains`].

use std::fmt;
use std::iter::{FusedIterator, Peekable};
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Lowest valid VLAN id.
pub const VLAN_MIN: u16 = 1;
/// Highest valid VLAN id (4095 is reserved by IEEE 802.1Q).
pub const VLAN_MAX: u16 = 4094;

/// Why a VLAN id, range or list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    /// A VLAN id outside `1..=4094` (the offending value as written).
    #[error("VLAN id {0} is out of range 1..=4094")]
    OutOfRange(String),
    /// A range whose start is greater than its end, e.g. `"9-7"`.
    #[error("VLAN range {0}-{1} is reversed (start > end)")]
    Reversed(u16, u16),
    /// Text that is neither a number nor a `"a-b"` range.
    #[error("invalid VLAN id or range {0:?}: expected an id like 7 or a range like \"7-9\"")]
    Syntax(String),
}

fn check_id(id: u16) -> Result<u16, VlanError> {
    if (VLAN_MIN..=VLAN_MAX).contains(&id) {
        Ok(id)
    } else {
        Err(VlanError::OutOfRange(id.to_string()))
    }
}

/// Parses one decimal VLAN id as written in a string (surrounding spaces allowed).
fn parse_id(text: &str, whole: &str) -> Result<u16, VlanError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VlanError::Syntax(whole.to_string()));
    }
    match t.parse::<u16>() {
        Ok(id) => check_id(id),
        // All digits but too large for u16: certainly out of range.
        Err(_) => Err(VlanError::OutOfRange(t.to_string())),
    }
}

/// One item of a Mist VLAN list: a single VLAN id or an inclusive range.
///
/// Always valid: both ends are in `1..=4094` and `first <= last`. In JSON a
/// single id is written as a number (`7`, also accepted as the string `"7"`)
/// and a range as a string (`"7-9"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanEntry {
    first: u16,
    last: u16,
}

impl VlanEntry {
    /// A single VLAN id; fails outside `1..=4094`.
    pub fn single(id: u16) -> Result<Self, VlanError> {
        let id = check_id(id)?;
        Ok(Self {
            first: id,
            last: id,
        })
    }

    /// The inclusive range `first..=last`; fails if either end is out of range
    /// or `first > last`.
    pub fn range(first: u16, last: u16) -> Result<Self, VlanError> {
        let first = check_id(first)?;
        let last = check_id(last)?;
        if first > last {
            return Err(VlanError::Reversed(first, last));
        }
        Ok(Self { first, last })
    }

    /// The first (lowest) VLAN id of the entry.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last (highest) VLAN id of the entry.
    pub fn last(self) -> u16 {
        self.last
    }

    /// Whether the entry covers more than one VLAN id.
    pub fn is_range(self) -> bool {
        self.first != self.last
    }

    /// The VLAN ids the entry covers.
    pub fn ids(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl FromStr for VlanEntry {
    type Err = VlanError;

    /// Parses `"7"` or `"7-9"` (spaces around the numbers are allowed).
    fn from_str(s: &str) -> Result<Self, VlanError> {
        match s.split_once('-') {
            Some((a, b)) => Self::range(parse_id(a, s)?, parse_id(b, s)?),
            None => Self::single(parse_id(s, s)?),
        }
    }
}

impl fmt::Display for VlanEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_range() {
            write!(f, "{}-{}", self.first, self.last)
        } else {
            write!(f, "{}", self.first)
        }
    }
}

impl Serialize for VlanEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_range() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u16(self.first)
        }
    }
}

impl<'de> Deserialize<'de> for VlanEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl Visitor<'_> for EntryVisitor {
            type Value = VlanEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a VLAN id (1..=4094) or a range string like \"7-9\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VlanEntry, E> {
                match u16::try_from(v) {
                    Ok(id) => VlanEntry::single(id).map_err(E::custom),
                    Err(_) => Err(E::custom(VlanError::OutOfRange(v.to_string()))),
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VlanEntry, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(VlanError::OutOfRange(v.to_string()))),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<VlanEntry, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

const WORDS: usize = 4096 / 64;

/// A set of VLAN ids (`1..=4094`), stored as a 4096-bit bitmap.
///
/// [`contains`](Self::contains) is a single bit test. The set is deliberately
/// not `Copy` (it is 512 bytes); clone it when a copy is needed.
///
/// Parses from and displays as the compact list `"10,20,30-31"`; serializes as
/// the API's mixed list `[10, 20, "30-31"]` and deserializes from such a list
/// (or from the compact string).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VlanSet {
    words: [u64; WORDS],
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl VlanSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { words: [0; WORDS] }
    }

    /// Builds a set from list entries (duplicates and overlaps are merged).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a VlanEntry>) -> Self {
        let mut set = Self::new();
        for entry in entries {
            set.insert_entry(*entry);
        }
        set
    }

    /// The set of `ids`; fails on the first outside `1..=4094`.
    pub fn from_ids(ids: impl IntoIterator<Item = u16>) -> Result<Self, VlanError> {
        let mut set = Self::new();
        for id in ids {
            set.insert(id)?;
        }
        Ok(set)
    }

    /// Adds one VLAN id; returns whether it was newly added. Fails (and leaves
    /// the set unchanged) outside `1..=4094`.
    pub fn insert(&mut self, id: u16) -> Result<bool, VlanError> {
        let id = check_id(id)?;
        let (w, b) = (usize::from(id / 64), id % 64);
        let fresh = self.words[w] & (1 << b) == 0;
        self.words[w] |= 1 << b;
        Ok(fresh)
    }

    /// Adds every VLAN id of an entry.
    pub fn insert_entry(&mut self, entry: VlanEntry) {
        for id in entry.ids() {
            self.words[usize::from(id / 64)] |= 1 << (id % 64);
        }
    }

    /// Removes one VLAN id; returns whether it was present.
    pub fn remove(&mut self, id: u16) -> bool {
        let present = self.contains(id);
        if present {
            self.words[usize::from(id / 64)] &= !(1 << (id % 64));
        }
        present
    }

    /// Whether `id` is in the set (always false for 0 and ids above 4094).
    #[inline]
    pub fn contains(&self, id: u16) -> bool {
        match self.words.get(usize::from(id / 64)) {
            Some(word) => word & (1 << (id % 64)) != 0,
            None => false,
        }
    }

    /// Number of VLAN ids in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The lowest VLAN id in the set.
    pub fn first(&self) -> Option<u16> {
        self.iter().next()
    }

    /// The highest VLAN id in the set.
    pub fn last(&self) -> Option<u16> {
        let (w, word) = self
            .words
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)?;
        Some((w * 64) as u16 + 63 - word.leading_zeros() as u16)
    }

    /// The VLAN ids in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            words: &self.words,
            next_word: 1,
            bits: self.words[0],
            base: 0,
        }
    }

    /// The set as maximal runs of consecutive ids, ascending — the compact form
    /// used by [`Display`](fmt::Display) and [`Serialize`].
    pub fn ranges(&self) -> Ranges<'_> {
        Ranges {
            ids: self.iter().peekable(),
        }
    }
}

/// Iterator over the ids of a [`VlanSet`], ascending. See [`VlanSet::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    words: &'a [u64; WORDS],
    next_word: usize,
    bits: u64,
    base: u16,
}

impl Iterator for Iter<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        while self.bits == 0 {
            let word = *self.words.get(self.next_word)?;
            self.base = (self.next_word * 64) as u16;
            self.next_word += 1;
            self.bits = word;
        }
        let bit = self.bits.trailing_zeros() as u16;
        self.bits &= self.bits - 1;
        Some(self.base + bit)
    }
}

impl FusedIterator for Iter<'_> {}

/// Iterator over the maximal runs of a [`VlanSet`]. See [`VlanSet::ranges`].
#[derive(Debug, Clone)]
pub struct Ranges<'a> {
    ids: Peekable<Iter<'a>>,
}

impl Iterator for Ranges<'_> {
    type Item = VlanEntry;

    fn next(&mut self) -> Option<VlanEntry> {
        let first = self.ids.next()?;
        let mut last = first;
        while self.ids.next_if_eq(&(last + 1)).is_some() {
            last += 1;
        }
        Some(VlanEntry { first, last })
    }
}

impl FusedIterator for Ranges<'_> {}

impl<'a> IntoIterator for &'a VlanSet {
    type Item = u16;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<VlanEntry> for VlanSet {
    fn from_iter<I: IntoIterator<Item = VlanEntry>>(iter: I) -> Self {
        let mut set = Self::new();
        set.extend(iter);
        set
    }
}

impl Extend<VlanEntry> for VlanSet {
    fn extend<I: IntoIterator<Item = VlanEntry>>(&mut self, iter: I) {
        for entry in iter {
            self.insert_entry(entry);
        }
    }
}

impl FromStr for VlanSet {
    type Err = VlanError;

    /// Parses a comma-separated list of ids and ranges, e.g. `"10,20,30-31"`.
    /// Duplicates and overlapping ranges are merged; the empty (or all-blank)
    /// string is the empty set.
    fn from_str(s: &str) -> Result<Self, VlanError> {
        let mut set = Self::new();
        if s.trim().is_empty() {
            return Ok(set);
        }
        for item in s.split(',') {
            set.insert_entry(item.parse()?);
        }
        Ok(set)
    }
}

impl fmt::Display for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlanSet({self})")
    }
}

impl Serialize for VlanSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for entry in self.ranges() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for VlanSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SetVisitor;

        impl<'de> Visitor<'de> for SetVisitor {
            type Value = VlanSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of VLAN ids and \"a-b\" ranges")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VlanSet, A::Error> {
                let mut set = VlanSet::new();
                while let Some(entry) = seq.next_element::<VlanEntry>()? {
                    set.insert_entry(entry);
                }
                Ok(set)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<VlanSet, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SetVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_contains() {
        let set: VlanSet = "10,20,30-31".parse().unwrap();
        assert_eq!(set.to_string(), "10,20,30-31");
        assert_eq!(set.len(), 4);
        assert_eq!(set.first(), Some(10));
        assert_eq!(set.last(), Some(31));
        for id in [10, 20, 30, 31] {
            assert!(set.contains(id), "{id}");
        }
        for id in [0, 1, 9, 11, 29, 32, 4094, 4095, u16::MAX] {
            assert!(!set.contains(id), "{id}");
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![10, 20, 30, 31]);
    }

    #[test]
    fn from_ids_takes_every_id_or_names_the_bad_one() {
        let set = VlanSet::from_ids([30, 10, 31, 20, 10]).unwrap();
        assert_eq!(set.to_string(), "10,20,30-31");
        assert_eq!(VlanSet::from_ids([]).unwrap(), VlanSet::new());
        for bad in [0, 4095] {
            let e = VlanSet::from_ids([10, bad]).unwrap_err();
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn ranges_strings_and_duplicates() {
        let set: VlanSet = " 7-9 , 8, 7 ,9-9, 1".parse().unwrap();
        assert_eq!(set.to_string(), "1,7-9");
        assert_eq!(set.len(), 4);
        // Adjacent entries merge into one run when displayed.
        let set: VlanSet = "5,6,7,4094,4093".parse().unwrap();
        assert_eq!(set.to_string(), "5-7,4093-4094");
        assert_eq!("".parse::<VlanSet>().unwrap(), VlanSet::new());
        let all: VlanSet = "1-4094".parse().unwrap();
        assert_eq!(all.len(), 4094);
        assert_eq!((all.first(), all.last()), (Some(1), Some(4094)));
        assert_eq!(all.iter().count(), 4094);
        assert_eq!(all.to_string(), "1-4094");
    }

    #[test]
    fn parse_errors() {
        let e = |s: &str| s.parse::<VlanSet>().unwrap_err();
        assert_eq!(e("0"), VlanError::OutOfRange("0".into()));
        assert_eq!(e("4095"), VlanError::OutOfRange("4095".into()));
        assert_eq!(e("1-5000"), VlanError::OutOfRange("5000".into()));
        assert_eq!(e("99999999"), VlanError::OutOfRange("99999999".into()));
        assert_eq!(e("9-7"), VlanError::Reversed(9, 7));
        assert_eq!(e("abc"), VlanError::Syntax("abc".into()));
        assert_eq!(e("1,,2"), VlanError::Syntax("".into()));
        assert_eq!(e("-5"), VlanError::Syntax("-5".into()));
        assert_eq!(e("1-2-3"), VlanError::Syntax("1-2-3".into()));
        assert_eq!(
            e("9-7").to_string(),
            "VLAN range 9-7 is reversed (start > end)"
        );
        assert_eq!(e("0").to_string(), "VLAN id 0 is out of range 1..=4094");
    }

    #[test]
    fn insert_remove() {
        let mut set = VlanSet::new();
        assert!(set.is_empty());
        assert_eq!(set.first(), None);
        assert_eq!(set.last(), None);
        assert_eq!(set.insert(64), Ok(true));
        assert_eq!(set.insert(64), Ok(false));
        assert_eq!(set.insert(63), Ok(true));
        assert!(set.insert(0).is_err());
        assert!(set.insert(4095).is_err());
        assert_eq!(set.to_string(), "63-64");
        assert!(set.remove(63));
        assert!(!set.remove(63));
        assert!(!set.remove(5000));
        assert_eq!(set.to_string(), "64");
        assert_eq!(format!("{set:?}"), "VlanSet(64)");
    }

    #[test]
    fn entries() {
        let e: VlanEntry = "7-9".parse().unwrap();
        assert_eq!((e.first(), e.last(), e.is_range()), (7, 9, true));
        assert_eq!(e.ids().collect::<Vec<_>>(), vec![7, 8, 9]);
        let e: VlanEntry = "7".parse().unwrap();
        assert_eq!((e.first(), e.last(), e.is_range()), (7, 7, false));
        assert!(VlanEntry::single(0).is_err());
        assert_eq!(VlanEntry::range(3, 2), Err(VlanError::Reversed(3, 2)));
    }

    #[test]
    fn serde_mixed_list() {
        let set: VlanSet = serde_json::from_str(r#"[3, 4, 5, "7-9", "12", 4]"#).unwrap();
        assert_eq!(set.to_string(), "3-5,7-9,12");
        assert_eq!(serde_json::to_string(&set).unwrap(), r#"["3-5","7-9",12]"#);
        let set: VlanSet = serde_json::from_str(r#""10,20""#).unwrap();
        assert_eq!(set.to_string(), "10,20");

        let entries: Vec<VlanEntry> = serde_json::from_str(r#"[10, "20", "30-31"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&entries).unwrap(),
            r#"[10,20,"30-31"]"#
        );

        for bad in [
            "[0]",
            "[4095]",
            "[-1]",
            "[70000]",
            r#"["9-7"]"#,
            "[1.5]",
            "[true]",
        ] {
            assert!(serde_json::from_str::<VlanSet>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<VlanSet>(r#"[1, "9-7"]"#).unwrap_err();
        assert!(
            err.to_string().starts_with("VLAN range 9-7 is reversed"),
            "{err}"
        );
    }
}
