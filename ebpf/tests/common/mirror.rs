//! Mirroring the userspace switch into the fast path's maps: the daemon's
//! own conversions (`tunterm::io::xdp`), so the table tests exercise exactly
//! what `tunterm run --fast-path` installs.

pub use tunterm::io::xdp::{NotFast, fdb_entries, session_entry};
use tunterm::proto::bridge::PortId;
use tunterm::proto::l2tp::DataSession;

/// The port id of a session (the switch's convention).
pub fn port_of(s: &DataSession) -> PortId {
    PortId(s.local_sid)
}
