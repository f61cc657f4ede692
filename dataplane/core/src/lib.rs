//! tunterm-core: the sans-IO heart of tunterm.
//!
//! - [`wire`]: packet views and builders, one module per protocol.
//! - [`proto`]: protocol state machines and the learning switch: they take
//!   `now` and bytes, and say what to send and when to wake.
//! - [`forward`]: the forwarding pipeline on top of them: a frame and its
//!   ingress port in, what to send where (and what was dropped, why) out.
//!
//! Nothing here opens a socket, reads a clock or uses `unsafe`: the crate
//! forbids unsafe code and depends on no I/O crate (tokio, libc, socket2,
//! aya), so the compiler, not a review, keeps it sans-IO. The daemon
//! (`tunterm`) owns every file descriptor and drives these state machines.

#![forbid(unsafe_code)]

pub mod forward;
pub mod proto;
pub mod wire;

/// The start of virtual time for the sans-IO tests of `proto/` and
/// `wire/`: those modules never read a clock themselves, not even in their
/// tests; everything after this instant is `t0 + offset`.
#[cfg(test)]
pub(crate) fn test_t0() -> std::time::Instant {
    std::time::Instant::now()
}
