//! Mirroring the userspace switch into the fast path's maps: the daemon's
//! own conversions (`tunterm::io::xdp::mirror`), so the table tests run the
//! programs on exactly what `tunterm run --fast-path` installs.

pub use tunterm::io::xdp::mirror::*;
