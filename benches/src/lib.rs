//! tunterm benches: criterion micro-benchmarks (benches/) and, later, the lab throughput harness.
