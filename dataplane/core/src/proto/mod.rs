//! Protocol state machines (sans-IO): every entry point takes `now` and
//! bytes, and returns what to send and when to be called again.

pub mod bridge;
pub mod capture;
pub mod clients;
pub mod dhcp;
pub mod gre;
pub mod l2tp;
pub mod mcast;
pub mod monitor;
pub mod pmtu;
