//! The lab benchmark's XDP programs (`labbench` in `benches/`): not part of
//! the fast path, compiled here because this crate builds every
//! `src/*.bpf.c`.
//!
//! - `bench_count.bpf.c`: the receiver. Counts (per CPU: frames, bytes)
//!   and drops every frame but ARP, IPv6 and L2TP control messages.
//! - `bench_redirect.bpf.c`: the physical limit. Redirects every frame
//!   unparsed to the interface its `bench_ports` devmap names for the
//!   ingress interface.

/// The compiled `bench_count.bpf.c` (program `bench_count`, per-CPU array
/// `bench_counters`: 0 frames, 1 bytes).
pub static BENCH_COUNT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_count.bpf.o"));

/// The compiled `bench_redirect.bpf.c` (program `bench_redirect`, devmap
/// hash `bench_ports`: ingress ifindex → egress ifindex).
pub static BENCH_REDIRECT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_redirect.bpf.o"));
