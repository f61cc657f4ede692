//! Who may open a control connection: the per-source SCCRQ rate limit and
//! the settings of admission (source subnets, the half-open cap).
//!
//! A spoofed flood of SCCRQs must cost a bounded amount of memory and work:
//! every table here has a fixed capacity. The [`SourceLimiter`] keeps one
//! token bucket per source address, the least recently seen evicted when the
//! table is full. An evicted source comes back with a full bucket, so a
//! flood from more sources than the table holds escapes the per-source
//! limit; the half-open cap of the [`Endpoint`](super::Endpoint) is what
//! bounds that case.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Instant;

/// Admission of new control connections (responder role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Most responder connections not yet established at once (see
    /// [`DEFAULT_MAX_HALF_OPEN`]); an SCCRQ beyond it is refused without a
    /// reply.
    pub max_half_open: usize,
    /// SCCRQs each source address may send per second, sustained.
    pub sccrq_per_second: u32,
    /// SCCRQs a source address may send at once (bucket size); 0 turns the
    /// per-source limit off.
    pub sccrq_burst: u32,
    /// Source addresses whose buckets are kept; the least recently seen is
    /// evicted beyond it.
    pub rate_table_size: usize,
    /// StopCCNs a second (and at once) sent in answer to control messages
    /// for a control connection this endpoint does not have (see
    /// [`Endpoint`](super::Endpoint)'s stale-connection answer); 0 turns
    /// the answer off.
    pub stale_stopccn_per_second: u32,
}

/// Default of [`AdmissionConfig::stale_stopccn_per_second`]: 10,000 APs
/// with a 10 s hello find out within one hello interval, and a hostile
/// source gets no more than this many small replies a second in all.
pub const DEFAULT_STALE_STOPCCN_PER_SECOND: u32 = 2000;

/// Default of [`AdmissionConfig::max_half_open`].
///
/// A half-open connection lives from its SCCRQ until its SCCCN arrives, or
/// until our SCCRP has gone unacknowledged through every retransmission
/// (~31 s with the RFC 3931 defaults: sent at 0, 1, 3, 7, 15 and 23 s,
/// given up at 31 s) and it has lingered 8 s more: about 39 s. A real AP
/// answers within a round trip, so a thousand slots admit thousands of APs
/// a second (an edge coming back after an outage: every AP reconnects at
/// once, and one that is refused retransmits its SCCRQ 1, 2, 4… s later and
/// gets in then). A flood of SCCRQs that never complete holds the slots for
/// ~39 s; 1024 of them take about a megabyte (a connection is ~0.4 kB plus
/// its queued SCCRP and table entries) and cause ~160 SCCRP
/// retransmissions a second, which leaves the loop free for established
/// tunnels.
pub const DEFAULT_MAX_HALF_OPEN: usize = 1024;

impl Default for AdmissionConfig {
    fn default() -> Self {
        // Per source: an AP sends one SCCRQ per tunnel and retransmits it
        // at most once a second; 16 at once and 4 a second leave room for
        // a few dozen APs behind one NAT address reconnecting together.
        AdmissionConfig {
            max_half_open: DEFAULT_MAX_HALF_OPEN,
            sccrq_per_second: 4,
            sccrq_burst: 16,
            rate_table_size: 4096,
            stale_stopccn_per_second: DEFAULT_STALE_STOPCCN_PER_SECOND,
        }
    }
}

/// One token, in the bucket's unit.
const TOKEN: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Billionths of a token (tokens per second are billionths per
    /// nanosecond: no rounding however often a source sends).
    nano: u64,
    /// When `nano` was last brought up to date.
    last: Instant,
}

impl Bucket {
    /// Bring the bucket up to `now` at `per_second` (capped at
    /// `burst_nano`) and take a token if there is one.
    fn take(&mut self, now: Instant, per_second: u64, burst_nano: u64) -> bool {
        let ns = now.saturating_duration_since(self.last).as_nanos();
        let add = u64::try_from(ns.saturating_mul(u128::from(per_second))).unwrap_or(u64::MAX);
        self.nano = self.nano.saturating_add(add).min(burst_nano);
        self.last = self.last.max(now);
        if self.nano >= TOKEN {
            self.nano -= TOKEN;
            true
        } else {
            false
        }
    }
}

/// One token bucket for everything (a rate of `per_second`, as many at
/// once); 0 allows nothing.
#[derive(Debug)]
pub(super) struct RateLimiter {
    per_second: u64,
    bucket: Option<Bucket>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second: u64::from(per_second),
            bucket: None,
        }
    }

    /// Take a token; false: over the rate (or the rate is 0).
    pub fn allow(&mut self, now: Instant) -> bool {
        let burst_nano = self.per_second * TOKEN;
        if burst_nano == 0 {
            return false;
        }
        self.bucket
            .get_or_insert(Bucket {
                nano: burst_nano,
                last: now,
            })
            .take(now, self.per_second, burst_nano)
    }
}

/// One token bucket per source address, in a table of bounded size.
#[derive(Debug)]
pub(super) struct SourceLimiter {
    per_second: u64,
    burst_nano: u64,
    capacity: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// (last seen, source): the oldest first, for eviction.
    by_age: BTreeSet<(Instant, IpAddr)>,
    /// Buckets evicted to make room (monotonic).
    pub evicted: u64,
}

impl SourceLimiter {
    pub fn new(cfg: &AdmissionConfig) -> Self {
        SourceLimiter {
            per_second: u64::from(cfg.sccrq_per_second),
            burst_nano: u64::from(cfg.sccrq_burst) * TOKEN,
            capacity: cfg.rate_table_size.max(1),
            buckets: HashMap::new(),
            by_age: BTreeSet::new(),
            evicted: 0,
        }
    }

    /// Take a token for an SCCRQ from `src`; false: over its rate.
    pub fn allow(&mut self, now: Instant, src: IpAddr) -> bool {
        if self.burst_nano == 0 {
            return true;
        }
        if self.buckets.len() >= self.capacity
            && !self.buckets.contains_key(&src)
            && let Some((_, old)) = self.by_age.pop_first()
        {
            self.buckets.remove(&old);
            self.evicted += 1;
        }
        let b = self.buckets.entry(src).or_insert(Bucket {
            nano: self.burst_nano,
            last: now,
        });
        self.by_age.remove(&(b.last, src));
        let allowed = b.take(now, self.per_second, self.burst_nano);
        self.by_age.insert((b.last, src));
        allowed
    }

    /// Source addresses in the table.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(per_second: u32, burst: u32, table: usize) -> AdmissionConfig {
        AdmissionConfig {
            sccrq_per_second: per_second,
            sccrq_burst: burst,
            rate_table_size: table,
            ..AdmissionConfig::default()
        }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4((0x0a63_0000 + i).into())
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = SourceLimiter::new(&cfg(2, 3, 16));
        let t0 = crate::test_t0();
        let allowed = (0..10).filter(|_| l.allow(t0, ip(1))).count();
        assert_eq!(allowed, 3);
        // Another source is not affected.
        assert!(l.allow(t0, ip(2)));
        // 2 per second: one more after 500 ms, none at 700 ms, one at 1 s.
        assert!(l.allow(t0 + Duration::from_millis(500), ip(1)));
        assert!(!l.allow(t0 + Duration::from_millis(700), ip(1)));
        assert!(l.allow(t0 + Duration::from_millis(1000), ip(1)));
        // Idle for long: the bucket is full again, no more than the burst.
        let t = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.allow(t, ip(1))).count(), 3);
    }

    #[test]
    fn frequent_attempts_still_refill_at_the_rate() {
        // An attempt every 10 µs for 2 s: the burst, then 4 a second.
        let mut l = SourceLimiter::new(&cfg(4, 16, 16));
        let t0 = crate::test_t0();
        let allowed = (0..200_000u64)
            .filter(|&i| l.allow(t0 + Duration::from_micros(i * 10), ip(1)))
            .count();
        assert_eq!(allowed, 16 + 7, "16 at once, then one every 250 ms");
    }

    #[test]
    fn the_global_limiter_gives_its_rate_at_once_then_per_second() {
        let mut l = RateLimiter::new(3);
        let t0 = crate::test_t0();
        assert_eq!((0..10).filter(|_| l.allow(t0)).count(), 3);
        assert!(!l.allow(t0 + Duration::from_millis(300)));
        assert!(l.allow(t0 + Duration::from_millis(334)));
        let t = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| l.allow(t)).count(), 3);
        let mut off = RateLimiter::new(0);
        assert!(!off.allow(t0));
    }

    #[test]
    fn the_table_stays_bounded_and_evicts_the_oldest() {
        let mut l = SourceLimiter::new(&cfg(1, 1, 100));
        let t0 = crate::test_t0();
        for i in 0..1000 {
            assert!(l.allow(t0 + Duration::from_micros(i.into()), ip(i)));
            assert!(l.len() <= 100);
        }
        assert_eq!(l.len(), 100);
        assert_eq!(l.evicted, 900);
        // The newest 100 are still held (and empty); the first one is
        // gone and comes back with a full bucket.
        let t = t0 + Duration::from_millis(1);
        assert!(!l.allow(t, ip(999)));
        assert!(l.allow(t, ip(0)));
        assert_eq!(l.len(), 100);
    }

    #[test]
    fn a_burst_of_zero_turns_the_limit_off() {
        let mut l = SourceLimiter::new(&cfg(0, 0, 1));
        let t0 = crate::test_t0();
        assert!((0..1000).all(|i| l.allow(t0, ip(i))));
        assert_eq!(l.len(), 0);
    }
}
