//! tunterm benches: criterion micro-benchmarks (`benches/`) and the lab
//! throughput harness (`labbench`, [`labbench`]), and the per-frame cost of
//! the XDP programs alone (`xdpcost`, [`xdpcost`]).

pub mod labbench;
pub mod xdpcost;
