//! A tunnel socket as the event loops use it: UDP (L2TPv3 over UDP) or raw
//! IP (L2TPv3 over IP protocol 115, GRE protocol 47), registered with tokio.
//! Receive hands back the tunnel packet (the UDP payload or the IP payload)
//! and where it came from; over raw IP the port is 0.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use socket2::SockAddr;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use super::batch::{Layout, RecvBatch};
use super::raw::{RawIpSocket, sockaddr_socket, udp_socket};

/// Most packets one [`TunnelSocket::try_send_batch`] call sends.
pub const SEND_BATCH: usize = 64;

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

    /// Readiness for reading, for a caller that polls many sockets itself:
    /// `Ready` while a packet may be there (the readiness stays set until a
    /// receive meets `WouldBlock`).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            TunnelSocket::Udp(u) => u.poll_recv_ready(cx),
            TunnelSocket::Raw(r) => r.poll_read_ready(cx).map_ok(|mut g| g.retain_ready()),
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

    /// Up to a batch of packets with one `recvmmsg(2)`, into `batch`: each
    /// one as [`TunnelSocket::try_recv`] gives it (IPv4-mapped addresses
    /// made plain; port 0 over raw IP). Returns how many it kept;
    /// `WouldBlock` (and the socket's readiness cleared) when none was
    /// queued. A packet longer than a slot is dropped and counted in
    /// [`RecvBatch::truncated`].
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        match self {
            TunnelSocket::Udp(u) => {
                u.try_io(Interest::READABLE, || recv_udp_batch(u.as_raw_fd(), batch))
            }
            TunnelSocket::Raw(r) => r.try_io(Interest::READABLE, |s| s.recv_batch(batch)),
        }
    }

    /// Send `packets`, each to its destination (the port is ignored over raw
    /// IP), with one `sendmmsg(2)` call for up to [`SEND_BATCH`] of them.
    /// Returns how many the kernel took, in order; an error only when it
    /// took none (the first packet's error).
    pub fn try_send_batch(&self, packets: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        let packets = &packets[..packets.len().min(SEND_BATCH)];
        if packets.is_empty() {
            return Ok(0);
        }
        let raw = matches!(self, TunnelSocket::Raw(_));
        let addrs: Vec<SockAddr> = packets
            .iter()
            .map(|(a, _)| SockAddr::from(if raw { SocketAddr::new(a.ip(), 0) } else { *a }))
            .collect();
        let mut iovs: Vec<libc::iovec> = packets
            .iter()
            .map(|(_, p)| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = addrs
            .iter()
            .zip(iovs.iter_mut())
            .map(|(a, iov)| {
                // SAFETY: an all-zero msghdr is a valid "no name, no data,
                // no control" header; the fields that matter are set below.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = a.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = a.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let fd = match self {
            TunnelSocket::Udp(u) => u.as_raw_fd(),
            TunnelSocket::Raw(r) => r.get_ref().as_raw_fd(),
        };
        // SAFETY: `msgs` points at `addrs` and `iovs`, which point at the
        // callers' payloads; all outlive the call, and the kernel only reads
        // them (and writes msg_len into `msgs`).
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
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

/// One `recvmmsg(2)` on the UDP socket `fd` into `batch`.
fn recv_udp_batch(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    // The control messages carry the socket's drop count (SO_RXQ_OVFL).
    let n = batch.receive(fd, Layout::Whole, true, true, 0)?;
    for i in 0..n {
        let raw = batch.raw(i);
        if raw.hdr.msg_flags & libc::MSG_TRUNC != 0 {
            batch.count_truncated();
            continue;
        }
        let len = raw.len;
        match sockaddr_socket(raw.name) {
            Some(a) => batch.keep(i, 0, len, SocketAddr::new(a.ip().to_canonical(), a.port())),
            None => batch.count_malformed(),
        }
    }
    Ok(batch.len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_batch_leaves_in_order_in_one_call_and_is_capped() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let dst = rx.local_addr().unwrap();
        let tx = TunnelSocket::udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_eq!(tx.try_send_batch(&[]).unwrap(), 0);
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let batch: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|p| (dst, p.as_slice())).collect();
        assert_eq!(tx.try_send_batch(&batch[..3]).unwrap(), 3);
        assert_eq!(tx.try_send_batch(&batch).unwrap(), SEND_BATCH, "capped");
        let mut buf = [0u8; 256];
        for p in payloads[..3].iter().chain(&payloads[..SEND_BATCH]) {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], p.as_slice());
        }
    }

    /// Waits for `sock` to be readable, then one batch.
    async fn recv_batch(sock: &TunnelSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        tokio::time::timeout(Duration::from_secs(2), sock.readable())
            .await
            .expect("readable within 2 s")?;
        sock.try_recv_batch(batch)
    }

    #[tokio::test]
    async fn a_receive_batch_takes_many_datagrams_in_order_and_drops_the_oversize() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let rx = TunnelSocket::udp(local.parse().unwrap(), false).unwrap();
            let TunnelSocket::Udp(u) = &rx else {
                unreachable!()
            };
            let dst = u.local_addr().unwrap();
            let tx_a = std::net::UdpSocket::bind(local).unwrap();
            let tx_b = std::net::UdpSocket::bind(local).unwrap();
            // Ten datagrams from two senders; the sixth is longer than a
            // slot.
            let mut sent = Vec::new();
            for i in 0..10u8 {
                let len = if i == 5 {
                    300
                } else {
                    20 + usize::from(i) * 10
                };
                let tx = if i % 2 == 0 { &tx_a } else { &tx_b };
                let p = vec![i; len];
                assert_eq!(tx.send_to(&p, dst).unwrap(), len);
                if i != 5 {
                    sent.push((p, tx.local_addr().unwrap()));
                }
            }
            // Loopback delivers before send returns; the pause is margin.
            std::thread::sleep(Duration::from_millis(50));
            let mut batch = RecvBatch::new(4, 256);
            assert_eq!(batch.capacity(), 4);
            let mut got = Vec::new();
            let (mut calls, mut truncated) = (Vec::new(), 0);
            loop {
                match recv_batch(&rx, &mut batch).await {
                    Ok(n) => {
                        assert_eq!(n, batch.len());
                        calls.push(n);
                        truncated += batch.truncated();
                        got.extend(batch.iter().map(|(p, a)| (p.to_vec(), a)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{local}: {e}"),
                }
            }
            assert_eq!(
                got, sent,
                "{local}: every datagram once, in order, with its source"
            );
            // 4 + (4 with one dropped) + 2; then the readiness was cleared.
            assert_eq!(calls, [4, 3, 2], "{local}");
            assert_eq!(truncated, 1, "{local}");
            assert_eq!(batch.malformed(), 0);
            assert!(batch.is_empty());
            assert!(
                tokio::time::timeout(Duration::from_millis(50), rx.readable())
                    .await
                    .is_err(),
                "{local}: still readable after WouldBlock"
            );
        }
    }
}
