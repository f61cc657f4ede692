//! The AP-facing tunnel sockets: raw IP sockets for L2TPv3 over IP (protocol
//! 115) and GRE (protocol 47), IPv4 and IPv6, and the UDP socket for L2TPv3
//! over UDP (port 1701).
//!
//! A [`RawIpSocket`] moves IP *payloads*: what [`RawIpSocket::recv_from`]
//! returns starts with the L2TPv3 session id or the GRE flags, and what
//! [`RawIpSocket::send_to`] takes is the same; the kernel builds the outer IP
//! header (no `IP_HDRINCL`).
//!
//! ```text
//!  IPv4 recvmsg:  [ IP header, 20 B ]  [ options? | payload ... ]
//!                  iov[0]: scratch      iov[1]: caller's buffer
//!                 no options: no copy; options: one memmove
//!  IPv6 recvmsg:  [ payload ... ]      (the kernel never hands the header)
//! ```
//!
//! What the kernel does underneath (Linux, checked in the netns lab):
//! - A raw socket receives a copy of *every* packet of its protocol addressed
//!   to its bound address (or to any local address when bound to `0.0.0.0` /
//!   `::`), whether or not a kernel protocol handler exists. Without kernel
//!   L2TP and `ip_gre` (as here) the raw socket is the only receiver, and the
//!   kernel sends no ICMP protocol-unreachable because a raw socket took it.
//! - Fragments are reassembled by the kernel before delivery: an IPv4 raw
//!   socket sees one whole datagram (`ip_local_deliver` defragments before
//!   raw delivery), and an IPv6 raw socket for protocol 115 or 47 sees the
//!   reassembled packet (the fragment header is consumed first). The lab test
//!   sends 3000 bytes over a 1500-byte MTU link and receives them whole.
//! - Two sockets of the same protocol both get a copy of a matching packet.

#![warn(missing_docs)]

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tunterm_core::wire::ipv4;

use super::batch::{Layout, RecvBatch};
use super::sockopt::{attach_cbpf, set_int};

/// IP protocol number of L2TPv3 over IP (RFC 3931 §4.1.1).
pub const IPPROTO_L2TP: u8 = 115;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;

/// Receive buffer size that fits any IP payload (the largest IPv4 or
/// non-jumbo IPv6 datagram, reassembled).
pub const RECV_BUF_LEN: usize = 65535;

/// Kernel socket buffer size asked for on every socket made here, for both
/// directions. With `CAP_NET_ADMIN` it is forced past `net.core.rmem_max` /
/// `wmem_max`; without, the kernel caps it there.
pub const SOCKET_BUF_BYTES: usize = 8 << 20;

/// Bytes of an IPv4 header without options.
const IPV4_HDR_LEN: usize = ipv4::HEADER_LEN;

/// `SO_SNDBUFFORCE` / `SO_RCVBUFFORCE` (asm-generic values, as on x86 and
/// arm; the libc crate does not export them for Linux).
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// One datagram received by [`RawIpSocket::recv_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecv {
    /// Length of the IP payload (the L2TPv3 or GRE packet) written at the
    /// start of the caller's buffer.
    pub len: usize,
    /// The packet's source address (the AP).
    pub src: IpAddr,
    /// The packet's destination address: which of this host's addresses it
    /// was sent to (telling them apart when bound to `0.0.0.0` / `::`).
    /// IPv4: read from the received IP header (the same value `IP_PKTINFO`'s
    /// `ipi_addr` would give, without the control message); IPv6: from
    /// `IPV6_PKTINFO`.
    pub dst: IpAddr,
}

/// A raw IP socket for one protocol (115 or 47), bound to one local address,
/// IPv4 or IPv6. Non-blocking, with large kernel buffers.
///
/// Path MTU behaviour is the kernel default until
/// [`set_fragmentation`](Self::set_fragmentation) is called:
/// `IP_PMTUDISC_WANT` / `IPV6_PMTUDISC_WANT`, under which a datagram larger
/// than the route's MTU is fragmented locally (checked: 3000 bytes over a
/// 1500-byte veth arrive whole, v4 and v6) and a fitting IPv4 one leaves with
/// DF set.
#[derive(Debug)]
pub struct RawIpSocket {
    socket: Socket,
    local: IpAddr,
    protocol: u8,
    truncated: AtomicU64,
    malformed: AtomicU64,
}

impl RawIpSocket {
    /// Opens a `SOCK_RAW` socket for `protocol` bound to `local` (an address
    /// of this host, or `0.0.0.0` / `::` for all), in the calling thread's
    /// network namespace.
    ///
    /// The socket is non-blocking and close-on-exec, with
    /// [`SOCKET_BUF_BYTES`] receive and send buffers (`SO_RCVBUFFORCE`, or
    /// `SO_RCVBUF` capped by `rmem_max` without `CAP_NET_ADMIN`; the same for
    /// send). An IPv6 socket asks for `IPV6_RECVPKTINFO` so
    /// [`recv_from`](Self::recv_from) can report the destination address; an
    /// IPv4 one reads it from the IP header it receives anyway.
    ///
    /// Fails with `InvalidInput` for protocol 0 or 255 (`IPPROTO_RAW` is
    /// send-only with a caller-built header), `EPERM` without `CAP_NET_RAW`,
    /// `EADDRNOTAVAIL` if `local` is not an address of this host. An IPv6
    /// link-local `local` cannot be bound (no scope id).
    pub fn bind(local: IpAddr, protocol: u8) -> io::Result<RawIpSocket> {
        RawIpSocket::bind_filtered(local, protocol, &[])
    }

    /// As [`bind`](Self::bind), with the socket filter `filter` (classic
    /// BPF, `SO_ATTACH_FILTER`; none when empty) attached before the bind:
    /// the kernel then drops, before queueing, every packet the filter
    /// refuses. The filter sees the packet as the socket receives it from
    /// the kernel: from the IPv4 header (IPv4), from the IP payload (IPv6).
    pub fn bind_filtered(
        local: IpAddr,
        protocol: u8,
        filter: &[libc::sock_filter],
    ) -> io::Result<RawIpSocket> {
        if protocol == 0 || protocol == libc::IPPROTO_RAW as u8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("raw IP socket: protocol {protocol} is not a payload protocol"),
            ));
        }
        let what = |step: &str| format!("raw IP socket (protocol {protocol}) on {local}: {step}");
        let domain = match local {
            IpAddr::V4(_) => Domain::IPV4,
            IpAddr::V6(_) => Domain::IPV6,
        };
        let socket = Socket::new(
            domain,
            Type::RAW.nonblocking(),
            Some(Protocol::from(i32::from(protocol))),
        )
        .map_err(|e| context(e, &what("socket")))?;
        if !filter.is_empty() {
            attach_cbpf(socket.as_fd(), libc::SO_ATTACH_FILTER, filter)
                .map_err(|e| context(e, &what("SO_ATTACH_FILTER")))?;
        }
        set_buffers(&socket).map_err(|e| context(e, &what("socket buffers")))?;
        if local.is_ipv6() {
            set_int(
                socket.as_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                1,
            )
            .map_err(|e| context(e, &what("IPV6_RECVPKTINFO")))?;
        }
        socket
            .bind(&SockAddr::from(SocketAddr::new(local, 0)))
            .map_err(|e| context(e, &what("bind")))?;
        Ok(RawIpSocket {
            socket,
            local,
            protocol,
            truncated: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        })
    }

    /// Chooses what happens to a datagram larger than the path MTU.
    ///
    /// `allow = true`: the kernel fragments it and clears DF
    /// (`IP_MTU_DISCOVER = IP_PMTUDISC_DONT`; IPv6: `IPV6_MTU_DISCOVER =
    /// IPV6_PMTUDISC_DONT` and `IPV6_DONTFRAG = 0`), so a full-size inner
    /// frame plus encapsulation still gets through a 1500-byte path.
    ///
    /// `allow = false`: DF set and path MTU discovery honoured
    /// (`IP_PMTUDISC_DO`; IPv6: `IPV6_PMTUDISC_DO` and `IPV6_DONTFRAG = 1`);
    /// [`send_to`](Self::send_to) then fails with `EMSGSIZE` for a datagram
    /// that does not fit the route's MTU.
    pub fn set_fragmentation(&self, allow: bool) -> io::Result<()> {
        set_fragmentation(self.socket.as_fd(), self.local, allow).map_err(|e| {
            context(
                e,
                &format!(
                    "raw IP socket (protocol {}) on {}: set_fragmentation({allow})",
                    self.protocol, self.local
                ),
            )
        })
    }

    /// Receives one datagram's IP payload (the L2TPv3 or GRE packet, without
    /// the IP header) into the start of `buf`, with its source and
    /// destination addresses.
    ///
    /// Returns [`io::ErrorKind::WouldBlock`] when nothing is queued. A
    /// datagram whose payload does not fit in `buf` is dropped and counted
    /// ([`truncated`](Self::truncated)); size `buf` with [`RECV_BUF_LEN`] to
    /// never lose one.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<RawRecv> {
        loop {
            let got = match self.local {
                IpAddr::V4(_) => self.recv_v4(buf)?,
                IpAddr::V6(_) => self.recv_v6(buf)?,
            };
            if let Some(recv) = got {
                return Ok(recv);
            }
        }
    }

    /// One IPv4 `recvmsg`: the header into a scratch buffer, the rest into
    /// `buf`. `Ok(None)` for a datagram that was dropped (and counted).
    fn recv_v4(&self, buf: &mut [u8]) -> io::Result<Option<RawRecv>> {
        let mut hdr = [0u8; IPV4_HDR_LEN];
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut msg = recv_header(&mut name, &mut iov);

        // MSG_TRUNC: the return value is the whole datagram's length.
        // SAFETY: `msg` points at `name`, `hdr` and `buf` (disjoint, live,
        // with their true lengths), all of which outlive the call.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.count(finish_v4(n as usize, &hdr, buf, &name)))
    }

    /// One IPv6 `recvmsg`: the payload straight into `buf`, the destination
    /// from `IPV6_PKTINFO`. `Ok(None)` for a datagram that was dropped.
    fn recv_v6(&self, buf: &mut [u8]) -> io::Result<Option<RawRecv>> {
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        // u64 elements keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut msg = recv_header(&mut name, &mut iov);
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);

        // SAFETY: `msg` points at `name`, `buf` and `control` (live, with
        // their true lengths), all of which outlive the call.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.count(finish_v6(self.local, n as usize, buf.len(), &name, &msg)))
    }

    /// Counts a datagram dropped on receive; passes a kept one on.
    fn count(&self, got: Result<RawRecv, Dropped>) -> Option<RawRecv> {
        match got {
            Ok(r) => return Some(r),
            Err(Dropped::Truncated) => self.truncated.fetch_add(1, Ordering::Relaxed),
            Err(Dropped::Malformed) => self.malformed.fetch_add(1, Ordering::Relaxed),
        };
        None
    }

    /// Receives up to a batch of datagrams with one `recvmmsg(2)`: each
    /// one's IP payload (as [`recv_from`](Self::recv_from) gives it) and its
    /// source, IPv4-mapped addresses made plain and port 0, in `batch`
    /// (the destination is not reported). Returns how many were kept.
    ///
    /// [`io::ErrorKind::WouldBlock`] when nothing is queued. A datagram
    /// whose payload does not fit a slot, or that the kernel handed
    /// malformed, is dropped and counted both here
    /// ([`truncated`](Self::truncated), [`malformed`](Self::malformed)) and
    /// in the batch; size the slots with [`RECV_BUF_LEN`] to never lose one.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let v4 = self.local.is_ipv4();
        let layout = if v4 { Layout::Head } else { Layout::Whole };
        // MSG_TRUNC: each message's length is the whole datagram's.
        // Control messages: IPV6_PKTINFO (IPv6) and the drop count.
        let n = batch.receive(self.socket.as_raw_fd(), layout, true, true, libc::MSG_TRUNC)?;
        for i in 0..n {
            let raw = batch.raw(i);
            let got = if v4 {
                finish_v4(raw.len, raw.head, raw.slot, raw.name)
            } else {
                finish_v6(self.local, raw.len, raw.slot.len(), raw.name, raw.hdr)
            };
            match got {
                Ok(r) => batch.keep(i, 0, r.len, SocketAddr::new(r.src.to_canonical(), 0)),
                Err(d) => {
                    match d {
                        Dropped::Truncated => batch.count_truncated(),
                        Dropped::Malformed => batch.count_malformed(),
                    }
                    let _ = self.count(Err(d));
                }
            }
        }
        Ok(batch.len())
    }

    /// Sends `payload` (an L2TPv3 or GRE packet) as one IP datagram of this
    /// socket's protocol to `dst`, from the bound address (or the route's
    /// source address when bound to `0.0.0.0` / `::`). Returns the payload
    /// bytes sent.
    ///
    /// `dst` must be of the socket's family (`InvalidInput` otherwise).
    /// [`io::ErrorKind::WouldBlock`] (or `ENOBUFS`) when the send queue is
    /// full; `EMSGSIZE` when fragmentation is disallowed and the datagram
    /// exceeds the path MTU.
    pub fn send_to(&self, payload: &[u8], dst: IpAddr) -> io::Result<usize> {
        if dst.is_ipv4() != self.local.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "raw IP socket on {}: cannot send to {dst} (other address family)",
                    self.local
                ),
            ));
        }
        // Port 0: the kernel uses the socket's protocol.
        self.socket
            .send_to(payload, &SockAddr::from(SocketAddr::new(dst, 0)))
    }

    /// The address the socket is bound to.
    pub fn local(&self) -> IpAddr {
        self.local
    }

    /// The IP protocol number the socket carries (115 or 47).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Datagrams dropped by [`recv_from`](Self::recv_from) because their
    /// payload did not fit in the caller's buffer.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Datagrams dropped by [`recv_from`](Self::recv_from) because the kernel
    /// handed something unparseable (never expected).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// A second handle on the same socket (a `dup`ed descriptor): what one
    /// receives the other does not; its own drop counts start at zero.
    pub fn try_clone(&self) -> io::Result<RawIpSocket> {
        Ok(RawIpSocket {
            socket: self.socket.try_clone()?,
            local: self.local,
            protocol: self.protocol,
            truncated: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        })
    }

    /// Register with the tokio reactor (inside a runtime).
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<RawIpSocket>> {
        // SAFETY: a RawIpSocket owns its descriptor (a socket2::Socket) for
        // its whole life and `as_raw_fd` always returns that same descriptor.
        unsafe { tokio::io::unix::AsyncFd::register(self) }.map_err(io::Error::from)
    }
}

impl AsRawFd for RawIpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for RawIpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Opens the UDP socket for L2TPv3 over UDP (the daemon binds port 1701 on
/// `tunterm_ip_config.ip` and `.ip6`), in the calling thread's network
/// namespace.
///
/// `SO_REUSEADDR` for a fixed port (never for port 0: with it, Linux may
/// hand two sockets the same ephemeral port, and one of them would never
/// hear its replies), non-blocking, close-on-exec, [`SOCKET_BUF_BYTES`] buffers
/// (forced when allowed, as for [`RawIpSocket::bind`]), `IPV6_V6ONLY` for an
/// IPv6 `local` (so a `::` bind never swallows IPv4), and fragmentation as
/// [`RawIpSocket::set_fragmentation`] describes for `allow_fragmentation`.
pub fn udp_socket(local: SocketAddr, allow_fragmentation: bool) -> io::Result<UdpSocket> {
    udp_socket_with(local, allow_fragmentation, false)
}

/// As [`udp_socket`], with `SO_REUSEPORT` when `reuse_port`: more sockets
/// of this process may bind the same address and port, one reuseport group
/// (a classic BPF program attached with `SO_ATTACH_REUSEPORT_CBPF` can
/// choose which of them gets a datagram).
pub fn udp_socket_with(
    local: SocketAddr,
    allow_fragmentation: bool,
    reuse_port: bool,
) -> io::Result<UdpSocket> {
    let what = |step: &str| format!("UDP socket on {local}: {step}");
    let socket = Socket::new(
        Domain::for_address(local),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )
    .map_err(|e| context(e, &what("socket")))?;
    if local.port() != 0 {
        socket
            .set_reuse_address(true)
            .map_err(|e| context(e, &what("SO_REUSEADDR")))?;
    }
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| context(e, &what("SO_REUSEPORT")))?;
    }
    if local.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| context(e, &what("IPV6_V6ONLY")))?;
    }
    set_buffers(&socket).map_err(|e| context(e, &what("socket buffers")))?;
    set_fragmentation(socket.as_fd(), local.ip(), allow_fragmentation)
        .map_err(|e| context(e, &what("IP_MTU_DISCOVER")))?;
    socket
        .bind(&SockAddr::from(local))
        .map_err(|e| context(e, &what("bind")))?;
    Ok(socket.into())
}

/// Path-MTU options on `fd`, a socket of `local`'s family (see
/// [`RawIpSocket::set_fragmentation`]).
fn set_fragmentation(fd: BorrowedFd<'_>, local: IpAddr, allow: bool) -> io::Result<()> {
    match local {
        IpAddr::V4(_) => {
            let mode = if allow {
                libc::IP_PMTUDISC_DONT
            } else {
                libc::IP_PMTUDISC_DO
            };
            set_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode)
        }
        IpAddr::V6(_) => {
            let mode = if allow {
                libc::IPV6_PMTUDISC_DONT
            } else {
                libc::IPV6_PMTUDISC_DO
            };
            set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, mode)?;
            set_int(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_DONTFRAG,
                libc::c_int::from(!allow),
            )
        }
    }
}

/// Asks for [`SOCKET_BUF_BYTES`] in both directions: forced past the sysctl
/// caps if the process may, else as much as the caps allow. Received
/// messages carry the socket's drop count (`SO_RXQ_OVFL`, see
/// [`RecvBatch::kernel_drops`]).
fn set_buffers(socket: &Socket) -> io::Result<()> {
    set_int(
        socket.as_fd(),
        libc::SOL_SOCKET,
        super::batch::SO_RXQ_OVFL,
        1,
    )?;
    let size = SOCKET_BUF_BYTES as libc::c_int;
    if set_int(socket.as_fd(), libc::SOL_SOCKET, SO_RCVBUFFORCE, size).is_err() {
        socket.set_recv_buffer_size(SOCKET_BUF_BYTES)?;
    }
    if set_int(socket.as_fd(), libc::SOL_SOCKET, SO_SNDBUFFORCE, size).is_err() {
        socket.set_send_buffer_size(SOCKET_BUF_BYTES)?;
    }
    Ok(())
}

/// Why a received datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dropped {
    /// Its payload did not fit the buffer.
    Truncated,
    /// The kernel handed something unparseable (never expected).
    Malformed,
}

/// Makes sense of one IPv4 datagram of `n` bytes (the whole datagram's
/// length: received with `MSG_TRUNC`) whose first 20 bytes landed in `hdr`
/// and the rest at the start of `buf`: moves the payload to the start of
/// `buf` past any IP options.
fn finish_v4(
    n: usize,
    hdr: &[u8; IPV4_HDR_LEN],
    buf: &mut [u8],
    name: &libc::sockaddr_storage,
) -> Result<RawRecv, Dropped> {
    // Only the fixed header is here: read it unchecked, the lengths are
    // checked against `n` below.
    let ip = ipv4::Packet::new_unchecked(&hdr[..]);
    let ihl = ip.header_len();
    if n < IPV4_HDR_LEN || ip.version() != 4 || ihl < IPV4_HDR_LEN || n < ihl {
        return Err(Dropped::Malformed);
    }
    if n - IPV4_HDR_LEN > buf.len() {
        return Err(Dropped::Truncated);
    }
    let len = n - ihl;
    if ihl > IPV4_HDR_LEN {
        // IP options landed at the start of `buf`: move the payload down.
        let opts = ihl - IPV4_HDR_LEN;
        buf.copy_within(opts..opts + len, 0);
    }
    let src = sockaddr_ip(name).ok_or(Dropped::Malformed)?;
    Ok(RawRecv {
        len,
        src,
        dst: IpAddr::V4(ip.dst_addr()),
    })
}

/// Makes sense of one IPv6 payload of `n` bytes (the whole payload's
/// length) received into a buffer of `buf_len` bytes with `msg`.
fn finish_v6(
    local: IpAddr,
    n: usize,
    buf_len: usize,
    name: &libc::sockaddr_storage,
    msg: &libc::msghdr,
) -> Result<RawRecv, Dropped> {
    if n > buf_len {
        return Err(Dropped::Truncated);
    }
    let src = sockaddr_ip(name).ok_or(Dropped::Malformed)?;
    // Without PKTINFO (never seen) the bound address is the best answer.
    let dst = pktinfo6_dst(msg).map_or(local, IpAddr::V6);
    Ok(RawRecv { len: n, src, dst })
}

/// The address in a `sockaddr_in` / `sockaddr_in6` filled by the kernel.
fn sockaddr_ip(name: &libc::sockaddr_storage) -> Option<IpAddr> {
    sockaddr_socket(name).map(|a| a.ip())
}

/// The address and port in a `sockaddr_in` / `sockaddr_in6` filled by the
/// kernel (the port is 0 for a raw IP socket's).
pub(crate) fn sockaddr_socket(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for one.
            let sin: &libc::sockaddr_in =
                unsafe { &*(name as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and
            // sockaddr_storage is large and aligned enough for one.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

/// The destination address from an `IPV6_PKTINFO` control message, if any.
fn pktinfo6_dst(msg: &libc::msghdr) -> Option<Ipv6Addr> {
    // SAFETY: `msg` was filled by a successful recvmsg or recvmmsg (our
    // only callers).
    let info: libc::in6_pktinfo =
        unsafe { super::cmsg::find(msg, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) }?;
    Some(Ipv6Addr::from(info.ipi6_addr.s6_addr))
}

/// A `msghdr` for one `recvmsg` into `iov`, the source address into
/// `name` (no control buffer: the caller adds one if it wants one). It
/// points at both: they must outlive the call it is used for.
fn recv_header(name: &mut libc::sockaddr_storage, iov: &mut [libc::iovec]) -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    msg
}

/// Prefixes an error with what was being done (the kind is kept).
fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
