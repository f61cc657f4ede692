//! Everything that owns a file descriptor: sockets, AF_PACKET, TAP,
//! rtnetlink, the service manager's notification socket.

pub mod afpacket;
pub mod batch;
mod cmsg;
pub mod hostport;
pub mod netlink;
pub mod notify;
pub mod probe;
pub mod raw;
pub(crate) mod sockopt;
pub mod tap;
pub mod tunnel;
pub mod xdp;
