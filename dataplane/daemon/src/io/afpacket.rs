//! The trunk port: an `AF_PACKET` socket bound to one interface.
//!
//! The kernel's receive path moves an 802.1Q tag out of the frame into skb
//! metadata before any packet socket sees it (on veth too, and whether or not
//! the 8021q module exists), so a plain `recv` loses the tag. The socket asks
//! for `PACKET_AUXDATA` and [`PacketSocket::recv`] puts the tag back, so
//! callers always see the frame as it was on the wire. Sending needs nothing
//! special: a tag written in the frame goes out as written.
//!
//! ```text
//!  recvmsg:  [ dst | src ]  (gap 4)  [ ethertype | payload ... ]
//!             iov[0]: 12 B           iov[1]
//!  tagged:   [ dst | src | TPID TCI | ethertype | payload ... ]  (no copy)
//!  untagged: [ dst | src | ethertype | payload ... ]             (one memmove)
//! ```
//!
//! [`PacketSocket::recv_batch`] takes many frames with one `recvmmsg(2)`,
//! each with its own control buffer for `PACKET_AUXDATA`, and the same tag
//! handling.

#![warn(missing_docs)]

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::batch::{Layout, NO_ADDR, RecvBatch, TAG_GAP_AT, TAG_GAP_LEN};
use super::sockopt;

/// Bytes of the two MAC addresses that precede an 802.1Q tag.
const ETH_ADDRS_LEN: usize = TAG_GAP_AT;
/// Bytes of one 802.1Q tag (TPID + TCI).
const VLAN_TAG_LEN: usize = TAG_GAP_LEN;
/// The TPID used when the kernel reports a tag without one.
const TPID_8021Q: u16 = 0x8100;
/// Receive buffer size that fits any frame a packet socket can deliver
/// (64 KiB GRO/TSO super-frames included) plus a re-inserted tag.
pub const RECV_BUF_LEN: usize = 65536 + VLAN_TAG_LEN;

/// A raw Ethernet port: every frame seen on one interface, in and out.
///
/// Non-blocking, promiscuous, and blind to its own sends
/// (`PACKET_IGNORE_OUTGOING`). Frames returned by [`recv`](Self::recv) carry
/// their 802.1Q tag in place, as they were on the wire.
#[derive(Debug)]
pub struct PacketSocket {
    /// The receive ring, when the socket has one (unmapped before the
    /// descriptor closes).
    ring: Option<Mutex<RxRing>>,
    fd: OwnedFd,
    ifindex: u32,
    ifname: String,
    truncated: AtomicU64,
}

impl PacketSocket {
    /// Opens a packet socket on interface `ifname` (in the calling thread's
    /// network namespace).
    ///
    /// Fails with [`io::ErrorKind::NotFound`] naming the interface if it does
    /// not exist, and with the kernel's error (`EPERM` without
    /// `CAP_NET_RAW`) otherwise.
    pub fn bind(ifname: &str) -> io::Result<PacketSocket> {
        PacketSocket::open(ifname, false)
    }

    /// [`bind`](Self::bind), with a receive ring (`PACKET_RX_RING`,
    /// `TPACKET_V2`, [`RING_FRAMES`] frames of [`RING_FRAME_LEN`] bytes,
    /// mapped into this process): the kernel copies each frame into the
    /// ring in its own receive path, and [`recv_batch`](Self::recv_batch) /
    /// [`recv`](Self::recv) read them from memory, with no system call per
    /// frame. A frame too long for a ring slot takes the ordinary path
    /// (`PACKET_COPY_THRESH`) and is read whole with `recvmsg`, in order.
    pub fn bind_with_rx_ring(ifname: &str) -> io::Result<PacketSocket> {
        PacketSocket::open(ifname, true)
    }

    fn open(ifname: &str, with_ring: bool) -> io::Result<PacketSocket> {
        let ifindex = if_index(ifname)?;
        // Protocol 0 until bind: the socket receives nothing before it is
        // bound to the interface, so no frame from another port slips in.
        // SAFETY: plain socket(2) call with constant arguments; the result is
        // checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(context(io::Error::last_os_error(), ifname, "socket"));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        set_int(&fd, libc::PACKET_AUXDATA, 1).map_err(|e| context(e, ifname, "PACKET_AUXDATA"))?;
        set_int(&fd, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(|e| context(e, ifname, "PACKET_IGNORE_OUTGOING"))?;

        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        sockopt::set(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )
        .map_err(|e| context(e, ifname, "PACKET_MR_PROMISC"))?;

        // Before bind: no frame can reach the ordinary receive queue first
        // (only frames too long for the ring ever go there).
        let ring = if with_ring {
            Some(Mutex::new(
                RxRing::map(&fd).map_err(|e| context(e, ifname, "PACKET_RX_RING"))?,
            ))
        } else {
            None
        };

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll that outlives the call, and
        // the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(context(io::Error::last_os_error(), ifname, "bind"));
        }

        Ok(PacketSocket {
            ring,
            fd,
            ifindex,
            ifname: ifname.to_owned(),
            truncated: AtomicU64::new(0),
        })
    }

    /// Receives one frame into `buf` and returns its length, 802.1Q tag
    /// re-inserted after the MAC addresses if the kernel had taken it out.
    ///
    /// Returns [`io::ErrorKind::WouldBlock`] when no frame is queued. A frame
    /// that does not fit in `buf` is dropped and counted
    /// ([`truncated`](Self::truncated)); size `buf` with [`RECV_BUF_LEN`] to
    /// never lose one. `buf` must hold at least 16 bytes.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(ring) = &self.ring {
            let mut ring = lock(ring);
            loop {
                match self.ring_take(&mut ring, buf)? {
                    Some(len) => return Ok(len),
                    None => {
                        self.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        loop {
            match self.recv_one(buf)? {
                Some(len) => return Ok(len),
                None => {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// One `recvmsg`: `Ok(None)` when the frame was larger than `buf`.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if buf.len() < ETH_ADDRS_LEN + VLAN_TAG_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "PacketSocket::recv: buffer shorter than 16 bytes",
            ));
        }
        // Leave a tag-sized gap after the MAC addresses: a tagged frame then
        // needs no copy at all, an untagged one one memmove.
        let (head, rest) = buf.split_at_mut(ETH_ADDRS_LEN);
        let body = &mut rest[VLAN_TAG_LEN..];
        let mut iov = [
            libc::iovec {
                iov_base: head.as_mut_ptr().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_mut_ptr().cast(),
                iov_len: body.len(),
            },
        ];
        // u64 elements keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);

        // SAFETY: `msg` points at `iov` (two live, disjoint slices of `buf`)
        // and at `control`, all of which outlive the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Ok(None);
        }
        Ok(Some(put_tag_back(buf, n as usize, auxdata_tag(&msg))))
    }

    /// Receives up to a batch of frames with one `recvmmsg(2)`, each with
    /// its 802.1Q tag back in place as [`recv`](Self::recv) gives it, in
    /// `batch` (their source address is unspecified). Returns how many
    /// were kept.
    ///
    /// [`io::ErrorKind::WouldBlock`] when no frame is queued. A frame that
    /// does not fit a slot (with its tag) is dropped and counted both here
    /// ([`truncated`](Self::truncated)) and in the batch; size the slots
    /// with [`RECV_BUF_LEN`] to never lose one.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        if let Some(ring) = &self.ring {
            return self.recv_batch_ring(&mut lock(ring), batch);
        }
        let n = batch.receive(self.fd.as_raw_fd(), Layout::TagGap, false, true, 0)?;
        for i in 0..n {
            let raw = batch.raw(i);
            if raw.hdr.msg_flags & libc::MSG_TRUNC != 0 {
                batch.count_truncated();
                self.truncated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let len = put_tag_back(raw.slot, raw.len, auxdata_tag(raw.hdr));
            batch.keep(i, 0, len, NO_ADDR);
        }
        Ok(batch.len())
    }

    /// [`recv_batch`](Self::recv_batch) from the ring: frames copied out
    /// into the slots until the batch has taken [`RecvBatch::take`] or the
    /// ring is empty.
    fn recv_batch_ring(&self, ring: &mut RxRing, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.begin();
        let mut taken = 0;
        for i in 0..batch.take() {
            match self.ring_take(ring, batch.slot_mut(i)) {
                Ok(Some(len)) => batch.keep(i, 0, len, NO_ADDR),
                Ok(None) => {
                    batch.count_truncated();
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if taken == 0 => return Err(e),
                Err(_) => break,
            }
            taken += 1;
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(batch.len())
    }

    /// The ring's next frame into `buf`, tag back in place, and the slot
    /// handed back to the kernel. `Ok(None)`: the frame did not fit (in the
    /// ring or in `buf`) and was dropped; `WouldBlock`: the ring is empty.
    fn ring_take(&self, ring: &mut RxRing, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if buf.len() < ETH_ADDRS_LEN + VLAN_TAG_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "PacketSocket::recv: buffer shorter than 16 bytes",
            ));
        }
        let Some(frame) = ring.next() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let got = if frame.status & libc::TP_STATUS_COPY != 0 {
            // Too long for the ring: the whole frame waits in the receive
            // queue, where the kernel put it before marking this slot.
            match self.recv_one(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => {
                    ring.release();
                    return Err(e);
                }
            }
        } else if frame.data.len() < frame.len || frame.data.len() + VLAN_TAG_LEN > buf.len() {
            None
        } else {
            let n = frame.data.len();
            // The kernel's layout, as recvmsg would leave it: addresses,
            // a tag-sized gap, the rest.
            if n >= ETH_ADDRS_LEN {
                buf[..ETH_ADDRS_LEN].copy_from_slice(&frame.data[..ETH_ADDRS_LEN]);
                buf[ETH_ADDRS_LEN + VLAN_TAG_LEN..n + VLAN_TAG_LEN]
                    .copy_from_slice(&frame.data[ETH_ADDRS_LEN..]);
            } else {
                buf[..n].copy_from_slice(frame.data);
            }
            Some(put_tag_back(buf, n, frame.tag))
        };
        ring.release();
        Ok(got)
    }

    /// Sends one complete frame (addresses, optional 802.1Q tag, ethertype,
    /// payload) out of the interface. Returns the bytes sent;
    /// [`io::ErrorKind::WouldBlock`] (or `ENOBUFS`) when the queue is full.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is a live slice; the kernel reads at most
        // `frame.len()` bytes from it.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Join fanout group `group` (`PACKET_FANOUT`, hash mode): the sockets
    /// of one group on one interface share its frames, each flow's frames
    /// to one socket (the forwarding workers of `--workers`). The group
    /// ignores outgoing frames as the socket did (the group's own hook
    /// replaces the socket's, and `PACKET_IGNORE_OUTGOING` with it: without
    /// the flag the host's own frames on the trunk would be read as
    /// received).
    pub fn join_fanout(&self, group: u16) -> io::Result<()> {
        /// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` (recent kernels, 6.18 here; not in
        /// libc): an older kernel refuses the join, and `--workers` with it.
        const IGNORE_OUTGOING: libc::c_int = 0x4000;
        let mode = libc::PACKET_FANOUT_HASH as libc::c_int | IGNORE_OUTGOING;
        set_int(
            &self.fd,
            libc::PACKET_FANOUT,
            libc::c_int::from(group) | mode << 16,
        )
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name the socket was bound with.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's current MAC address.
    pub fn mac(&self) -> io::Result<[u8; 6]> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` and `len` are valid for writes and outlive the call;
        // `len` holds the size of `sll`.
        let rc = unsafe { libc::getsockname(self.fd.as_raw_fd(), (&raw mut sll).cast(), &mut len) };
        if rc < 0 {
            return Err(context(
                io::Error::last_os_error(),
                &self.ifname,
                "getsockname",
            ));
        }
        if sll.sll_halen != 6 {
            return Err(io::Error::other(format!(
                "{}: not an Ethernet interface (hardware address length {})",
                self.ifname, sll.sll_halen
            )));
        }
        let mut mac = [0; 6];
        mac.copy_from_slice(&sll.sll_addr[..6]);
        Ok(mac)
    }

    /// Frames dropped by [`recv`](Self::recv) because they did not fit in
    /// the caller's buffer.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Frames the kernel dropped since the last call (the first call: since
    /// the socket opened) because the receive ring or queue was full, i.e.
    /// not read in time (`PACKET_STATISTICS`, which resets on reading).
    pub fn take_drops(&self) -> io::Result<u32> {
        let mut st = TpacketStats::default();
        let mut len = mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `st` is a live tpacket_stats and `len` its size; the
        // kernel writes at most `len` bytes into it.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&raw mut st).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.tp_drops)
    }
}

/// `PACKET_STATISTICS` (linux/if_packet.h; not exported by the libc crate).
const PACKET_STATISTICS: libc::c_int = 6;

/// `struct tpacket_stats` (linux/if_packet.h), what `PACKET_STATISTICS`
/// gives for a `TPACKET_V2` (or no) ring.
#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    _tp_packets: u32,
    tp_drops: u32,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Puts a frame back together in `buf`: the kernel wrote its 12 bytes of
/// addresses at the start and the other `n - 12` bytes 4 further on.
/// With `tag`, the tag fills the gap (no copy); without, the rest moves
/// down. Returns the frame's length.
fn put_tag_back(buf: &mut [u8], n: usize, tag: Option<(u16, u16)>) -> usize {
    if n < ETH_ADDRS_LEN {
        // A runt: nothing after the addresses to tag or move.
        return n;
    }
    match tag {
        Some((tpid, tci)) => {
            buf[ETH_ADDRS_LEN..ETH_ADDRS_LEN + 2].copy_from_slice(&tpid.to_be_bytes());
            buf[ETH_ADDRS_LEN + 2..ETH_ADDRS_LEN + 4].copy_from_slice(&tci.to_be_bytes());
            n + VLAN_TAG_LEN
        }
        None => {
            let start = ETH_ADDRS_LEN + VLAN_TAG_LEN;
            buf.copy_within(start..start + (n - ETH_ADDRS_LEN), ETH_ADDRS_LEN);
            n
        }
    }
}

/// The 802.1Q tag (TPID, TCI) the kernel took out of the frame, if any,
/// from the `PACKET_AUXDATA` control message.
fn auxdata_tag(msg: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `msg` was filled by a successful recvmsg or recvmmsg (our
    // only callers).
    let aux: libc::tpacket_auxdata =
        unsafe { super::cmsg::find(msg, libc::SOL_PACKET, libc::PACKET_AUXDATA) }?;
    vlan_tag(aux.tp_status, aux.tp_vlan_tci, aux.tp_vlan_tpid)
}

/// The 802.1Q tag (TPID, TCI) the kernel reports with a frame (auxdata or
/// ring header: the same status bits and fields), if any.
fn vlan_tag(status: u32, tci: u16, tpid: u16) -> Option<(u16, u16)> {
    let valid = status & libc::TP_STATUS_VLAN_VALID != 0 || tci != 0;
    if !valid {
        return None;
    }
    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 {
        tpid
    } else {
        TPID_8021Q
    };
    Some((tpid, tci))
}

/// Bytes of one slot of the receive ring: any frame of a 1500-byte MTU
/// link with its tag, after the ring's own header (longer ones take the
/// ordinary path, see [`PacketSocket::bind_with_rx_ring`]).
pub const RING_FRAME_LEN: usize = 2048;
/// Slots in the receive ring (8 MiB in all).
pub const RING_FRAMES: usize = 4096;
/// Bytes of one block of the ring (the kernel allocates block by block).
const RING_BLOCK_LEN: usize = 64 << 10;

/// A `TPACKET_V2` receive ring mapped into this process.
///
/// ```text
///  slot i at i × RING_FRAME_LEN:
///  [ tpacket2_hdr: status len snaplen mac net ... vlan_tci vlan_tpid | ... | frame (snaplen B at mac) ]
///  status: KERNEL (0) the kernel's to fill; USER set by the kernel once the
///  frame is there (+ COPY: the frame is in the receive queue instead)
/// ```
///
/// The kernel fills slots in order and marks each one for us; we read them
/// in the same order and hand each back. Whoever holds the `&mut` is the
/// only reader (the socket keeps it behind a mutex).
#[derive(Debug)]
struct RxRing {
    map: memmap2::MmapRaw,
    head: usize,
}

/// One frame in the ring, as the kernel described it.
struct RingFrame<'a> {
    status: u32,
    /// Its length on the wire (after the kernel took a tag out).
    len: usize,
    /// What the slot holds of it.
    data: &'a [u8],
    tag: Option<(u16, u16)>,
}

impl RxRing {
    /// Asks for `TPACKET_V2`, a ring of [`RING_FRAMES`] slots, the
    /// ordinary path for frames too long for a slot, and maps the ring.
    fn map(fd: &OwnedFd) -> io::Result<RxRing> {
        set_int(
            fd,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )?;
        set_int(fd, libc::PACKET_COPY_THRESH, 1)?;
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK_LEN as libc::c_uint,
            tp_block_nr: (RING_FRAMES * RING_FRAME_LEN / RING_BLOCK_LEN) as libc::c_uint,
            tp_frame_size: RING_FRAME_LEN as libc::c_uint,
            tp_frame_nr: RING_FRAMES as libc::c_uint,
        };
        sockopt::set(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let map = memmap2::MmapOptions::new()
            .len(RING_FRAMES * RING_FRAME_LEN)
            .map_raw(fd.as_raw_fd())?;
        Ok(RxRing { map, head: 0 })
    }

    /// The status word of slot `i`.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: slot `i` (< RING_FRAMES) lies inside the mapping, which
        // lives as long as `self`; tp_status is the slot's first field, a
        // u32 at a 16-byte aligned address, which the kernel also only
        // reads and writes whole.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(i * RING_FRAME_LEN).cast()) }
    }

    /// The frame in the head slot, if the kernel has handed it over.
    fn next(&self) -> Option<RingFrame<'_>> {
        // Acquire: the frame and its header were written before the
        // status said so.
        let status = self.status(self.head).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the slot is ours until release() (status USER), lies in
        // the mapping, and starts 16-byte aligned, enough for the header.
        let slot = unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.head * RING_FRAME_LEN),
                RING_FRAME_LEN,
            )
        };
        // SAFETY: the slot starts with a whole tpacket2_hdr (plain old
        // data); read_unaligned asks nothing of the alignment.
        let hdr: libc::tpacket2_hdr = unsafe { std::ptr::read_unaligned(slot.as_ptr().cast()) };
        let start = usize::from(hdr.tp_mac);
        let end = start
            .saturating_add(hdr.tp_snaplen as usize)
            .min(RING_FRAME_LEN);
        Some(RingFrame {
            status,
            len: hdr.tp_len as usize,
            data: slot.get(start..end).unwrap_or_default(),
            tag: vlan_tag(hdr.tp_status, hdr.tp_vlan_tci, hdr.tp_vlan_tpid),
        })
    }

    /// Hands the head slot back to the kernel and moves on.
    fn release(&mut self) {
        // Release: done with the frame before the kernel may refill it.
        self.status(self.head)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.head = (self.head + 1) % RING_FRAMES;
    }
}

/// The ring behind its mutex (a panic elsewhere while holding it leaves
/// nothing half-done that matters: at worst a slot read twice).
fn lock(ring: &Mutex<RxRing>) -> std::sync::MutexGuard<'_, RxRing> {
    ring.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The index of interface `ifname`, or a `NotFound` error that names it.
fn if_index(ifname: &str) -> io::Result<u32> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?}: must be 1 to 15 bytes"),
        ));
    }
    let c_name = CString::new(ifname).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} contains a NUL byte"),
        )
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        let err = io::Error::last_os_error();
        let kind = match err.raw_os_error() {
            Some(libc::ENODEV) | Some(libc::ENXIO) => io::ErrorKind::NotFound,
            _ => err.kind(),
        };
        return Err(io::Error::new(
            kind,
            format!("interface {ifname:?} not found in this network namespace ({err})"),
        ));
    }
    Ok(index)
}

/// `setsockopt(SOL_PACKET, name, value)` for an int option.
fn set_int(fd: &OwnedFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    sockopt::set_int(fd.as_fd(), libc::SOL_PACKET, name, value)
}

/// Prefixes an error with the interface and the step that failed.
fn context(err: io::Error, ifname: &str, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("AF_PACKET on {ifname}: {what}: {err}"))
}

impl PacketSocket {
    /// Register with the tokio reactor (inside a runtime).
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<PacketSocket>> {
        // SAFETY: a PacketSocket owns its descriptor (an OwnedFd) for its
        // whole life and `as_raw_fd` always returns that same descriptor.
        unsafe { tokio::io::unix::AsyncFd::register(self) }.map_err(io::Error::from)
    }
}
