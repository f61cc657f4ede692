//! Packet views and builders, one module per protocol. No I/O, no clock.

pub mod checksum;
pub mod dhcp;
pub mod ether;
pub mod gre;
pub mod l2tp;
