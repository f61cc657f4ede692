//! A tunnel socket as the event loops use it: UDP (L2TPv3 over UDP) or raw
//! IP (L2TPv3 over IP protocol 115, GRE protocol 47), registered with tokio.
//! Receive hands back the tunnel packet (the UDP payload or the IP payload)
//! and where it came from; over raw IP the port is 0.
//!
//! The daemon listens on each tunnel address with a [`TunnelSockets`] pair:
//! the kernel sorts what arrives into a control socket (L2TP control
//! messages, GRE keepalives) and a data socket (everything else), each with
//! its own receive buffer, so a data flood the event loop cannot keep up
//! with fills and overflows the data socket's buffer only, and control
//! still gets through (issue 18).
//!
//! ```text
//!  L2TPv3/UDP  two UDP sockets, one SO_REUSEPORT group on addr:1701; the
//!              group's classic BPF selector (SO_ATTACH_REUSEPORT_CBPF)
//!              sees the UDP payload: T bit (0x80 of byte 0) set → 0, the
//!              control socket (bound first); clear → 1, the data socket
//!  L2TPv3/IP   two raw sockets (protocol 115), each with a socket filter
//!              (SO_ATTACH_FILTER): session id 0 (control) → control
//!              socket only, any other → data socket only
//!  GRE         two raw sockets (protocol 47), each with a socket filter:
//!              protocol type 0x6558 (Ethernet: data) → data socket only,
//!              any other (keepalives: 0x0800 / 0x86DD) → control only
//! ```
//!
//! A packet too short to classify goes to the control socket, whose reader
//! counts it as malformed. Which socket a packet arrives on changes only
//! which queue it waits in: the loop handles both the same way.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::task::{Context, Poll};

use socket2::SockAddr;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

use super::batch::{Layout, RecvBatch};
use super::raw::{RawIpSocket, sockaddr_socket, udp_socket, udp_socket_with};
use super::sockopt::attach_cbpf;

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

    /// Datagrams the kernel dropped at this socket because its receive
    /// buffer was full, since it opened (modulo 2^32): see
    /// `super::sockopt::drops`.
    pub fn drops(&self) -> io::Result<u32> {
        match self {
            TunnelSocket::Udp(u) => super::sockopt::drops(u.as_fd()),
            TunnelSocket::Raw(r) => super::sockopt::drops(r.get_ref().as_fd()),
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
        // `try_io` returns `WouldBlock` without a receive when tokio holds
        // the socket not readable: the batch must not keep the counts of
        // an earlier receive (another socket's), or its caller counts
        // that socket's kernel drops as this one's.
        batch.begin();
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
    ///
    /// Over UDP this is the system call itself (the socket is nonblocking),
    /// not tokio's `try_send_to`: that answers `WouldBlock` without trying
    /// while the runtime has not seen the socket writable since its last
    /// `WouldBlock` (or ever), so a reply could be refused with room in the
    /// buffer (the simulator lost every AP's first SCCRQ to it).
    pub fn try_send(&self, payload: &[u8], dst: SocketAddr) -> io::Result<usize> {
        match self {
            TunnelSocket::Udp(u) => {
                socket2::SockRef::from(u).send_to(payload, &SockAddr::from(dst))
            }
            TunnelSocket::Raw(r) => r.get_ref().send_to(payload, dst.ip()),
        }
    }
}

/// The two sockets of one tunnel address (see the module's comment):
/// control and data, sorted by the kernel.
pub struct TunnelSockets {
    /// L2TP control messages, GRE keepalives (and what is too short to
    /// tell). Replies and data leave through it too.
    pub control: TunnelSocket,
    /// Everything else: L2TP data messages, GRE Ethernet packets.
    pub data: TunnelSocket,
}

impl TunnelSockets {
    /// The two UDP sockets of L2TPv3 over UDP on `local` (inside a tokio
    /// runtime): one reuseport group, the control socket bound first (so
    /// index 0 of the group) and the selector attached once both are in.
    pub fn udp(local: SocketAddr, allow_fragmentation: bool) -> io::Result<TunnelSockets> {
        let control = udp_socket_with(local, allow_fragmentation, true)?;
        // Port 0 (tests): the data socket joins on the port the control
        // socket was given.
        let data = udp_socket_with(control.local_addr()?, allow_fragmentation, true)?;
        attach_cbpf(
            control.as_fd(),
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &udp_selector(),
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("UDP socket on {local}: SO_ATTACH_REUSEPORT_CBPF: {e}"),
            )
        })?;
        Ok(TunnelSockets {
            control: TunnelSocket::Udp(UdpSocket::from_std(control)?),
            data: TunnelSocket::Udp(UdpSocket::from_std(data)?),
        })
    }

    /// The control socket (`control`) or the data socket.
    pub fn get(&self, control: bool) -> &TunnelSocket {
        if control { &self.control } else { &self.data }
    }

    /// The two raw IP sockets for `protocol` (115 or 47) on `local` (inside
    /// a tokio runtime), each with its socket filter.
    pub fn raw(
        local: IpAddr,
        protocol: u8,
        allow_fragmentation: bool,
    ) -> io::Result<TunnelSockets> {
        let open = |control: bool| -> io::Result<TunnelSocket> {
            let filter = raw_filter(protocol, local.is_ipv4(), control);
            let s = RawIpSocket::bind_filtered(local, protocol, &filter)?;
            s.set_fragmentation(allow_fragmentation)?;
            Ok(TunnelSocket::Raw(s.into_async()?))
        };
        Ok(TunnelSockets {
            control: open(true)?,
            data: open(false)?,
        })
    }
}

impl TunnelSockets {
    /// The raw socket of the control socket (None over UDP).
    pub(crate) fn raw_socket(&self) -> Option<&RawIpSocket> {
        match &self.control {
            TunnelSocket::Raw(r) => Some(r.get_ref()),
            TunnelSocket::Udp(_) => None,
        }
    }

    /// Raw IP: forwarding workers take the data (`to_workers`), each with
    /// a socket of its own ([`raw_worker_filter`]), and this pair's data
    /// socket gets none of it (else every packet would be handled twice);
    /// or the data is the data socket's again (the workers stopped). The
    /// new filter replaces the old one at once; what the data socket
    /// queued before stays queued. Over UDP nothing changes (the reuseport
    /// selector sends data to the workers).
    pub(crate) fn data_to_workers(&self, to_workers: bool) -> io::Result<()> {
        let TunnelSocket::Raw(r) = &self.data else {
            return Ok(());
        };
        let r = r.get_ref();
        let keep_data = raw_filter(r.protocol(), r.local().is_ipv4(), false);
        let none = [insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0)];
        let filter: &[libc::sock_filter] = if to_workers { &none } else { &keep_data };
        attach_cbpf(r.as_fd(), libc::SO_ATTACH_FILTER, filter)
    }
}

/// A classic BPF instruction.
const fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The L2TPv3/UDP reuseport selector: the kernel runs it on the UDP
/// payload (`reuseport_select_sock` pulls the UDP header first) and gives
/// the datagram to the group's socket of the index it returns. T bit set
/// (control) → 0; clear (data) → 1. An empty payload fails the load, which
/// returns 0: the control socket.
fn udp_selector() -> [libc::sock_filter; 5] {
    use libc::{BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET};
    [
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),
        insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x80),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        insn(BPF_RET | BPF_K, 0, 0, 1),
        insn(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

/// The socket filter of a raw tunnel socket: for the control socket
/// (`control`) or the data socket, of `protocol` (115: L2TPv3 session id
/// 0 is control; 47: GRE protocol type 0x6558 is data), IPv4 (the filter
/// sees the IP header first: X = its length) or IPv6 (the payload first).
/// Returns "keep the whole packet" or "drop"; a packet too short to tell
/// goes to the control socket.
fn raw_filter(protocol: u8, v4: bool, control: bool) -> [libc::sock_filter; 9] {
    use libc::{
        BPF_ALU, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
        BPF_LEN, BPF_MSH, BPF_RET, BPF_SUB, BPF_W, BPF_X,
    };
    // A return value is how many bytes to keep: all of them, or none.
    const KEEP: u32 = u32::MAX;
    const DROP: u32 = 0;
    // The field that tells (loaded at X + offset), its size, and the value
    // that means "control" or "data".
    let (load, need, value, value_is_control) = if protocol == super::raw::IPPROTO_L2TP {
        (insn(BPF_LD | BPF_W | BPF_IND, 0, 0, 0), 4, 0, true)
    } else {
        (insn(BPF_LD | BPF_H | BPF_IND, 0, 0, 2), 4, 0x6558, false)
    };
    let (short, matched, other) = match (control, value_is_control) {
        (true, true) => (KEEP, KEEP, DROP),
        (true, false) => (KEEP, DROP, KEEP),
        (false, true) => (DROP, DROP, KEEP),
        (false, false) => (DROP, KEEP, DROP),
    };
    let header = if v4 {
        insn(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0)
    } else {
        insn(BPF_LDX | BPF_W | BPF_IMM, 0, 0, 0)
    };
    [
        header,
        // Long enough? len - X >= need, else `short`.
        insn(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        insn(BPF_ALU | BPF_SUB | BPF_X, 0, 0, 0),
        insn(BPF_JMP | BPF_JGE | BPF_K, 1, 0, need),
        insn(BPF_RET | BPF_K, 0, 0, short),
        load,
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, value),
        insn(BPF_RET | BPF_K, 0, 0, matched),
        insn(BPF_RET | BPF_K, 0, 0, other),
    ]
}

/// The socket filter of forwarding worker `k` of `n` on a raw tunnel
/// address of `protocol`, IPv4 (`v4`: the filter sees the IP header first)
/// or IPv6: it keeps the worker's share of the data and drops the rest.
///
/// - L2TPv3/IP (115): session id ≠ 0 (data) and session id mod n = k: one
///   session's packets on one worker, in order.
/// - GRE (47): protocol type 0x6558 (data) and the last 32 bits of the
///   source address mod n = k: an AP (its address, with or without a key)
///   on one worker, in order. The address is read from the network header
///   (`SKF_NET_OFF`), which an IPv6 raw socket's filter does not otherwise
///   see.
///
/// A packet too short to classify is left to the control socket.
pub(crate) fn raw_worker_filter(protocol: u8, v4: bool, n: u32, k: u32) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_H, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD,
        BPF_LDX, BPF_LEN, BPF_MOD, BPF_MSH, BPF_RET, BPF_SUB, BPF_W, BPF_X,
    };
    const KEEP: u32 = u32::MAX;
    const DROP: u32 = 0;
    let header = if v4 {
        insn(BPF_LDX | libc::BPF_B | BPF_MSH, 0, 0, 0)
    } else {
        insn(BPF_LDX | BPF_W | BPF_IMM, 0, 0, 0)
    };
    let mut f = vec![
        header,
        insn(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        insn(BPF_ALU | BPF_SUB | BPF_X, 0, 0, 0),
        insn(BPF_JMP | BPF_JGE | BPF_K, 1, 0, 4),
        insn(BPF_RET | BPF_K, 0, 0, DROP),
    ];
    // Then: is it data (else to the last instruction, DROP), and the
    // number to split on in A.
    if protocol == super::raw::IPPROTO_L2TP {
        f.extend([
            insn(BPF_LD | BPF_W | BPF_IND, 0, 0, 0),
            // Session id 0: control. Jump over MOD, JEQ, KEEP.
            insn(BPF_JMP | BPF_JEQ | BPF_K, 3, 0, 0),
        ]);
    } else {
        // The source address's last word, at 12 (IPv4) or 20 (IPv6) of
        // the network header.
        let src = libc::SKF_NET_OFF + if v4 { 12 } else { 20 };
        f.extend([
            insn(BPF_LD | BPF_H | BPF_IND, 0, 0, 2),
            // Not Ethernet: jump over LD, MOD, JEQ, KEEP.
            insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, 0x6558),
            insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, src as u32),
        ]);
    }
    f.extend([
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, n.max(1)),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, k),
        insn(BPF_RET | BPF_K, 0, 0, KEEP),
        insn(BPF_RET | BPF_K, 0, 0, DROP),
    ]);
    f
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
    async fn the_drop_count_is_what_a_full_buffer_refused() {
        let rx = TunnelSocket::udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let TunnelSocket::Udp(u) = &rx else {
            unreachable!()
        };
        let dst = u.local_addr().unwrap();
        assert_eq!(rx.drops().unwrap(), 0);
        // Far more than its buffer holds (8 MiB, or rmem_max unprivileged).
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [0u8; 1400];
        let sent = 30_000u32;
        for _ in 0..sent {
            tx.send_to(&payload, dst).unwrap();
        }
        let mut buf = [0u8; 2048];
        let mut read = 0u32;
        rx.readable().await.unwrap();
        while rx.try_recv(&mut buf).is_ok() {
            read += 1;
        }
        let drops = rx.drops().unwrap();
        assert!(drops > 0, "the buffer overflowed: {read} of {sent} read");
        assert_eq!(drops + read, sent, "every datagram read or counted");
    }

    #[tokio::test]
    async fn a_new_socket_sends_before_the_runtime_has_polled_it() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let dst = rx.local_addr().unwrap();
        // No await between making it and sending: tokio has not seen it
        // writable yet (its own try_send_to would say WouldBlock here).
        let tx = TunnelSocket::udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_eq!(tx.try_send(b"hello", dst).unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }

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

    /// Every packet queued on `sock` now (after a pause for delivery).
    fn queued(sock: &TunnelSocket) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        loop {
            match sock.try_recv(&mut buf) {
                Ok((n, _)) => got.push(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Sends `packets` with `send`, then checks which of `pair`'s sockets
    /// each arrived on: `control[i]` says the control one.
    async fn sorted_as(
        what: &str,
        pair: &TunnelSockets,
        packets: &[&[u8]],
        control: &[bool],
        send: impl Fn(&[u8]),
    ) {
        for p in packets {
            send(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let want = |c: bool| -> Vec<Vec<u8>> {
            packets
                .iter()
                .zip(control)
                .filter(|(_, k)| **k == c)
                .map(|(p, _)| p.to_vec())
                .collect()
        };
        // A raw socket on a loopback address also hears what others send
        // there: only this test's packets (each one distinct) count.
        let mine = |got: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
            got.into_iter()
                .filter(|g| packets.contains(&g.as_slice()))
                .collect()
        };
        assert_eq!(mine(queued(&pair.control)), want(true), "{what}: control");
        assert_eq!(mine(queued(&pair.data)), want(false), "{what}: data");
    }

    #[tokio::test]
    async fn the_kernel_sorts_l2tp_udp_control_from_data_into_the_pair() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let pair = TunnelSockets::udp(local.parse().unwrap(), false).unwrap();
            let TunnelSocket::Udp(c) = &pair.control else {
                unreachable!()
            };
            let TunnelSocket::Udp(d) = &pair.data else {
                unreachable!()
            };
            let dst = c.local_addr().unwrap();
            assert_eq!(d.local_addr().unwrap(), dst, "one address and port");
            let tx = std::net::UdpSocket::bind(local).unwrap();
            // A SCCRQ-like control message (T bit set), data messages
            // (session ids), a zero-length datagram (to control, which
            // counts it malformed), a hello.
            let packets: [&[u8]; 6] = [
                &[0xc8, 0x03, 0, 20, 1],
                &[0, 0, 0, 7, 0xaa],
                &[0, 0, 0, 0, 0, 0, 0, 9],
                &[],
                &[0x7f, 1],
                &[0x80, 2],
            ];
            let control = [true, false, false, true, false, true];
            sorted_as(local, &pair, &packets, &control, |p| {
                assert_eq!(tx.send_to(p, dst).unwrap(), p.len());
            })
            .await;
        }
    }

    /// A raw pair on `local`; None (said) without CAP_NET_RAW.
    fn raw_pair(what: &str, local: IpAddr, protocol: u8) -> Option<TunnelSockets> {
        match TunnelSockets::raw(local, protocol, false) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("{what}: skipped, raw sockets need CAP_NET_RAW");
                None
            }
            r => Some(r.unwrap()),
        }
    }

    #[tokio::test]
    async fn the_kernel_sorts_l2tp_ip_and_gre_control_from_data_into_the_pair() {
        use super::super::raw::{IPPROTO_GRE, IPPROTO_L2TP};
        for local in ["127.0.0.1", "::1"] {
            let local: IpAddr = local.parse().unwrap();
            for protocol in [IPPROTO_L2TP, IPPROTO_GRE] {
                let what = format!("{local} protocol {protocol}");
                let Some(pair) = raw_pair(&what, local, protocol) else {
                    return;
                };
                let tx = RawIpSocket::bind(local, protocol).unwrap();
                // A marker byte makes each packet distinct.
                let (packets, control): (Vec<&[u8]>, Vec<bool>) = if protocol == IPPROTO_L2TP {
                    (
                        vec![
                            // Session id 0: control (a SCCRQ follows).
                            &[0, 0, 0, 0, 0xc8, 0x03, 0, 20, 0x51],
                            // Session ids: data.
                            &[0, 0, 0, 9, 0x52],
                            &[0x80, 0, 0, 0, 0x53],
                            // Too short to tell: control.
                            &[0, 0x54],
                        ],
                        vec![true, false, false, true],
                    )
                } else {
                    (
                        vec![
                            // Ethernet (0x6558): data.
                            &[0, 0, 0x65, 0x58, 0x61],
                            &[0x20, 0, 0x65, 0x58, 0, 0, 0, 1, 0x62],
                            // Keepalives (IPv4, IPv6 inside): control.
                            &[0, 0, 0x08, 0x00, 0x63],
                            &[0, 0, 0x86, 0xdd, 0x64],
                            // Too short to tell: control.
                            &[0, 0x65],
                        ],
                        vec![false, false, true, true, true],
                    )
                };
                sorted_as(&what, &pair, &packets, &control, |p| {
                    assert_eq!(tx.send_to(p, local).unwrap(), p.len());
                })
                .await;
            }
        }
    }

    #[tokio::test]
    async fn worker_filters_split_raw_data_by_session_and_by_ap_and_the_loop_lets_go() {
        use super::super::raw::{IPPROTO_GRE, IPPROTO_L2TP};
        // Two workers: k = 0 and 1.
        for (local, other_src) in [("127.0.0.1", Some("127.0.0.2")), ("::1", None)] {
            let local: IpAddr = local.parse().unwrap();
            for protocol in [IPPROTO_L2TP, IPPROTO_GRE] {
                let what = format!("{local} protocol {protocol}");
                let Some(pair) = raw_pair(&what, local, protocol) else {
                    return;
                };
                pair.data_to_workers(true).unwrap();
                let workers: Vec<TunnelSocket> = (0..2)
                    .map(|k| {
                        let f = raw_worker_filter(protocol, local.is_ipv4(), 2, k);
                        let s = RawIpSocket::bind_filtered(local, protocol, &f).unwrap();
                        TunnelSocket::Raw(s.into_async().unwrap())
                    })
                    .collect();
                let send = |from: IpAddr, p: &[u8]| {
                    let tx = RawIpSocket::bind(from, protocol).unwrap();
                    assert_eq!(tx.send_to(p, local).unwrap(), p.len());
                };
                // Each packet, from where, and who must get it: the
                // control socket (None) or worker k.
                let mut cases: Vec<(IpAddr, Vec<u8>, Option<usize>)> = Vec::new();
                if protocol == IPPROTO_L2TP {
                    cases.push((local, vec![0, 0, 0, 0, 0xc8, 0x03, 0, 20, 0x71], None));
                    cases.push((local, vec![0, 0, 0, 9, 0x72], Some(1)));
                    cases.push((local, vec![0, 0, 1, 0, 0x73], Some(0)));
                    cases.push((local, vec![0x80, 0, 0, 3, 0x74], Some(1)));
                    cases.push((local, vec![0, 0x75], None));
                } else {
                    // 127.0.0.1 and ::1 end in 1: worker 1.
                    cases.push((local, vec![0, 0, 0x65, 0x58, 0x81], Some(1)));
                    cases.push((local, vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 4, 0x82], Some(1)));
                    cases.push((local, vec![0, 0, 0x08, 0x00, 0x83], None));
                    cases.push((local, vec![0, 0x84], None));
                    if let Some(src) = other_src {
                        // 127.0.0.2: worker 0, keyed or not.
                        let src = src.parse().unwrap();
                        cases.push((src, vec![0, 0, 0x65, 0x58, 0x85], Some(0)));
                        cases.push((src, vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 5, 0x86], Some(0)));
                    }
                }
                for (from, p, _) in &cases {
                    send(*from, p);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mine = |got: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
                    got.into_iter()
                        .filter(|g| cases.iter().any(|(_, p, _)| p == g))
                        .collect()
                };
                let want = |who: Option<usize>| -> Vec<Vec<u8>> {
                    cases
                        .iter()
                        .filter(|(_, _, w)| *w == who)
                        .map(|(_, p, _)| p.clone())
                        .collect()
                };
                assert_eq!(mine(queued(&pair.control)), want(None), "{what}: control");
                assert!(
                    mine(queued(&pair.data)).is_empty(),
                    "{what}: the loop's data socket"
                );
                for (k, w) in workers.iter().enumerate() {
                    assert_eq!(mine(queued(w)), want(Some(k)), "{what}: worker {k}");
                }
                // The workers gone: the loop's data socket gets data again.
                pair.data_to_workers(false).unwrap();
                drop(workers);
                let data = &cases.iter().find(|(_, _, w)| w.is_some()).unwrap().1;
                send(local, data);
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert_eq!(
                    mine(queued(&pair.data)),
                    std::slice::from_ref(data),
                    "{what}: data again"
                );
            }
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
