//! Packet views and builders, one module per protocol. No I/O, no clock.

pub mod checksum;
pub mod dhcp;
pub mod ether;
pub mod gre;
pub mod ipv4;
pub mod ipv6;
pub mod l2tp;
pub mod udp;
