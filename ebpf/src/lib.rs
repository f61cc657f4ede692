//! tunterm's XDP fast path: the compiled C programs (`src/*.bpf.c`), the
//! Rust form of their map layouts (generated from the one C header
//! `include/tunterm_maps.h`), and the loader.
//!
//! The userspace switch stays the source of truth: it decides what the fast
//! path may forward by writing [`maps::tt_session`] and FDB entries, and
//! everything the programs do not handle reaches it unchanged (`XDP_PASS`).

pub mod ap_rx;
pub mod bench;
pub mod maps;

pub use ap_rx::{Action, ApRx, Error, TestOutcome};

/// The compiled `xdp_ap_rx.bpf.c` (ELF, BPF target), 8-byte aligned for the
/// object parser.
pub static XDP_AP_RX_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_ap_rx.bpf.o"));
