//! Reconnect delays: exponential from one second, capped at 60 s, each
//! times a random factor in [0.5, 1.5] (so edges cut off together do not
//! come back together), reset after a successful session.

use std::time::Duration;

/// The first delay.
pub const BASE: Duration = Duration::from_secs(1);
/// The cap on the exponential part.
pub const CAP: Duration = Duration::from_secs(60);

/// The delays between connection attempts.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt, given a factor in [0.5, 1.5]
    /// (from [`Backoff::next_delay`], or a test).
    pub fn next_with(&mut self, factor: f64) -> Duration {
        let exp = BASE.saturating_mul(1u32 << self.failures.min(16)).min(CAP);
        self.failures = self.failures.saturating_add(1);
        exp.mul_f64(factor.clamp(0.5, 1.5))
    }

    /// The delay before the next attempt, with a random factor.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random_range(0.5..=1.5))
    }

    /// A session worked: start again from [`BASE`].
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_at_a_minute_jitters_and_resets() {
        let mut b = Backoff::default();
        let plain: Vec<u64> = (0..9).map(|_| b.next_with(1.0).as_secs()).collect();
        assert_eq!(plain, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.next_with(1.5), Duration::from_secs(90));
        assert_eq!(b.next_with(0.5), Duration::from_secs(30));
        assert_eq!(b.next_with(9.0), Duration::from_secs(90), "factor clamped");
        for _ in 0..1000 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(90),
                "{d:?}"
            );
        }
        b.reset();
        assert_eq!(b.next_with(1.0), BASE);
        // Random factors spread.
        let mut b = Backoff::default();
        let spread: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| {
                b.reset();
                b.next_delay().as_millis()
            })
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
