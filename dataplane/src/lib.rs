//! tunterm: a Mist Edge-style tunnel terminator.
//!
//! Wi-Fi APs build L2TPv3 tunnels to tunterm; it bridges the client frames
//! inside them onto 802.1Q VLANs of an upstream trunk, and back.
//!
//! - [`wire`]: packet views and builders, one module per protocol (sans-IO).
//! - [`proto`]: protocol state machines and the learning switch (sans-IO:
//!   they take `now` and bytes, and say what to send and when to wake).
//! - [`io`]: the only place with file descriptors.
//! - [`driver`]: the daemon's event loop.
//! - [`apsim`]: the AP simulator (L2TPv3 initiators, the lab's load generator).
//! - [`lab`]: network-namespace lab used by the tests and the demo.

pub mod apsim;
pub mod driver;
pub mod io;
pub mod lab;
pub mod monitoring;
pub mod operations;
pub mod proto;
pub mod wire;

/// The start of virtual time for the sans-IO tests of `proto/` and
/// `wire/`: those modules never read a clock themselves, not even in their
/// tests; everything after this instant is `t0 + offset`.
#[cfg(test)]
pub(crate) fn test_t0() -> std::time::Instant {
    std::time::Instant::now()
}
