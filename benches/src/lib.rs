//! tunterm benches: criterion micro-benchmarks (`benches/`) and the lab
//! throughput harness (`labbench`, [`labbench`]).

pub mod labbench;
