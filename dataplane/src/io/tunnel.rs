//! A tunnel socket as the event loops use it: UDP (L2TPv3 over UDP) or raw
//! IP (L2TPv3 over IP protocol 115, GRE protocol 47), registered with tokio.
//! Receive hands back the tunnel packet (the UDP payload or the IP payload)
//! and where it came from; over raw IP the port is 0.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use super::raw::{RawIpSocket, udp_socket};

/// UDP or raw IP.
pub enum TunnelSocket {
    /// L2TPv3 over UDP.
    Udp(UdpSocket),
    /// L2TPv3 over IP or GRE.
    Raw(AsyncFd<RawIpSocket>),
}

impl TunnelSocket {
    /// A UDP socket on `local` (inside a tokio runtime). With
    /// `allow_fragmentation`, oversize packets leave fragmented (DF clear).
    pub fn udp(local: SocketAddr, allow_fragmentation: bool) -> io::Result<TunnelSocket> {
        Ok(TunnelSocket::Udp(UdpSocket::from_std(udp_socket(
            local,
            allow_fragmentation,
        )?)?))
    }

    /// A raw IP socket for `protocol` on `local` (inside a tokio runtime).
    pub fn raw(local: IpAddr, protocol: u8, allow_fragmentation: bool) -> io::Result<TunnelSocket> {
        let s = RawIpSocket::bind(local, protocol)?;
        s.set_fragmentation(allow_fragmentation)?;
        Ok(TunnelSocket::Raw(s.into_async()?))
    }

    /// Wait until a packet may be there (then drain with
    /// [`TunnelSocket::try_recv`] until `WouldBlock`).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            TunnelSocket::Udp(u) => u.readable().await,
            TunnelSocket::Raw(r) => r.readable().await.map(|mut g| g.retain_ready()),
        }
    }

    /// One packet: its length in `buf`, and where from (IPv4-mapped
    /// addresses made plain; port 0 over raw IP).
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            TunnelSocket::Udp(u) => u
                .try_recv_from(buf)
                .map(|(n, a)| (n, SocketAddr::new(a.ip().to_canonical(), a.port()))),
            TunnelSocket::Raw(r) => r
                .try_io(Interest::READABLE, |s| s.recv_from(buf))
                .map(|rx| (rx.len, SocketAddr::new(rx.src.to_canonical(), 0))),
        }
    }

    /// Send one packet (the port is ignored over raw IP).
    pub fn try_send(&self, payload: &[u8], dst: SocketAddr) -> io::Result<usize> {
        match self {
            TunnelSocket::Udp(u) => u.try_send_to(payload, dst),
            TunnelSocket::Raw(r) => r.get_ref().send_to(payload, dst.ip()),
        }
    }
}
