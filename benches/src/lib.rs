//! tunterm benches: criterion micro-benchmarks (`benches/`) and the lab
//! throughput harness (`labbench`, [`labbench`]), and the per-frame cost of
//! the XDP programs alone (`xdpcost`, [`xdpcost`]), and the multicast/ARP
//! containment scale bench (`mcastbench`, [`mcastbench`]).

pub mod labbench;
pub mod mcastbench;
pub mod xdpcost;
