//! tunterm: a Mist Edge-style tunnel terminator — the daemon.
//!
//! Wi-Fi APs build L2TPv3 tunnels to tunterm; it bridges the client frames
//! inside them onto 802.1Q VLANs of an upstream trunk, and back.
//!
//! The protocol logic is sans-IO, in [`tunterm_core`] (`wire`, `proto`);
//! this crate owns every file descriptor and drives it:
//!
//! - [`api`]: the control socket's protocol and its one client.
//! - [`io`]: sockets, AF_PACKET, TAP, netlink, XDP loading.
//! - [`driver`]: the daemon's event loop (read → proto → write, timers).
//! - [`monitoring`]: the probes of upstream monitoring.
//! - [`operations`]: `disconnect-aps` and `preempt`.
//! - `workers`: the forwarding workers of `--workers N` (N ≥ 2).
//!
//! The netns lab and the AP simulator are in the `tunterm-lab` crate: test
//! and demo infrastructure, not part of this crate's API.

pub mod api;
pub mod capture;
pub mod driver;
pub mod io;
pub mod monitoring;
pub mod operations;
mod workers;
