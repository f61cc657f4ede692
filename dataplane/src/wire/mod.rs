//! Packet views and builders, one module per protocol. No I/O, no clock.

pub mod ether;
pub mod l2tp;
