//! tunterm's XDP fast path: the compiled C programs (`src/*.bpf.c`), the
//! Rust form of their map layouts (generated from the one C header
//! `include/tunterm_maps.h`), and the loader.
//!
//! The userspace switch stays the source of truth: it decides what the fast
//! path may forward by writing [`maps::Session`] and FDB entries, and
//! everything the programs do not handle reaches it unchanged (`XDP_PASS`).

pub mod ap_rx;
pub mod bench;
pub mod fast_path;
pub mod fdb;
pub mod maps;
pub mod pass;
pub mod ports;
pub mod tables;

pub use ap_rx::{Action, ApRx, Error, TestOutcome};
/// The aya the programs are loaded with (attach modes, link ids).
pub use aya;
pub use aya::programs::XdpMode;
pub use fast_path::{
    Attached, Capacity, FastPath, MAP_NAMES, MAPS_LAYOUT, Pins, Program, is_bpffs, unpin_all,
};
pub use fdb::Fdb;
pub use ports::PortIndex;
pub use tables::{SessionSlots, Table, TemplateSlots};

/// The compiled `xdp_ap_rx.bpf.c` alone (ELF, BPF target), 8-byte aligned
/// for the object parser. Its maps are the same as the combined object's.
pub static XDP_AP_RX_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_ap_rx.bpf.o"));

/// The compiled `xdp_pass.bpf.c`.
pub static XDP_PASS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pass.bpf.o"));

/// Both programs in one object (`tunterm_xdp.bpf.c`), sharing their maps:
/// what [`FastPath`] and [`ApRx`] load.
pub static TUNTERM_XDP_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tunterm_xdp.bpf.o"));
