//! Where control connection ids, session ids and cookies come from: ChaCha20
//! (a CSPRNG) from a 256-bit seed the caller passes in, so nothing here reads
//! the OS. A cookie is the only authentication of a data message (RFC 3931
//! §8.2), so seeing one's own ids and cookies must tell nothing about the
//! next session's: the daemon seeds from the OS; tests and simulations pass
//! a fixed seed to replay the same choices.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// The seed of an [`Endpoint`](super::Endpoint)'s generator.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed([u8; 32]);

impl From<[u8; 32]> for Seed {
    /// 32 bytes from the OS (the daemon: `getrandom`).
    fn from(bytes: [u8; 32]) -> Self {
        Seed(bytes)
    }
}

impl From<u64> for Seed {
    /// A reproducible seed for tests and simulations, expanded to 32 bytes
    /// (rand_core's `seed_from_u64`). Only 2^64 of them: never for an
    /// endpoint that faces untrusted peers.
    fn from(n: u64) -> Self {
        Seed(ChaCha20Rng::seed_from_u64(n).get_seed())
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A seed is a secret: never in a log.
        f.write_str("Seed(..)")
    }
}

/// The generator behind ids and cookies.
#[derive(Clone)]
pub(super) struct Rng(ChaCha20Rng);

impl Rng {
    pub fn new(seed: Seed) -> Self {
        Rng(ChaCha20Rng::from_seed(seed.0))
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        self.0.fill_bytes(out);
    }
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Its state predicts every later cookie.
        f.write_str("Rng(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_another_does_not() {
        let draw = |seed: Seed| {
            let mut r = Rng::new(seed);
            (0..8).map(|_| r.next_u32()).collect::<Vec<_>>()
        };
        assert_eq!(draw(Seed::from(7)), draw(Seed::from(7)));
        assert_ne!(draw(Seed::from(7)), draw(Seed::from(8)));
        assert_ne!(draw(Seed::from([1; 32])), draw(Seed::from([2; 32])));
    }

    #[test]
    fn debug_shows_no_state() {
        assert_eq!(format!("{:?}", Seed::from(7)), "Seed(..)");
        assert_eq!(format!("{:?}", Rng::new(Seed::from(7))), "Rng(..)");
    }
}
