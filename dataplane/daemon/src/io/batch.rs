//! Receiving many datagrams or frames with one `recvmmsg(2)`: the buffers a
//! batch needs, owned by the caller and reused from call to call (the hot
//! path does not allocate), and the one place that calls `recvmmsg`.
//!
//! ```text
//!  bytes:  [ slot 0 ........ | slot 1 ........ | ... | slot cap-1 ...... ]
//!  per message i: a name (sockaddr_storage), a control buffer (64 B), a
//!  20-byte head (an IPv4 header off to the side) and two iovecs, laid out
//!  by the socket that receives (see [`Layout`])
//! ```
//!
//! The sockets ([`TunnelSocket::try_recv_batch`], [`RawIpSocket::recv_batch`],
//! [`PacketSocket::recv_batch`]) fill a [`RecvBatch`] and then describe
//! what they kept: a datagram or frame they drop (truncated, malformed) is
//! counted in [`RecvBatch::truncated`] / [`RecvBatch::malformed`] and not
//! handed on.
//!
//! [`TunnelSocket::try_recv_batch`]: super::tunnel::TunnelSocket::try_recv_batch
//! [`RawIpSocket::recv_batch`]: super::raw::RawIpSocket::recv_batch
//! [`PacketSocket::recv_batch`]: super::afpacket::PacketSocket::recv_batch

#![warn(missing_docs)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;

use super::cmsg;

/// Bytes of the scratch head of each message (an IPv4 header without
/// options).
pub(crate) const HEAD_LEN: usize = 20;
/// Bytes of the gap an AF_PACKET slot leaves for a re-inserted 802.1Q tag,
/// after the 12 bytes of MAC addresses.
pub(crate) const TAG_GAP_AT: usize = 12;
pub(crate) const TAG_GAP_LEN: usize = 4;

/// `u64` words of each message's control buffer: room for
/// `IPV6_PKTINFO` (40 bytes) and `SO_RXQ_OVFL` (24) with some to spare.
const CONTROL_WORDS: usize = 12;

/// `SO_RXQ_OVFL` (asm-generic, as on x86 and arm; the libc crate does not
/// export it for Linux): each message carries the socket's drop count.
pub(crate) const SO_RXQ_OVFL: libc::c_int = 40;

/// How each message's bytes are spread over its iovecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// All of it into the slot (UDP, raw IPv6).
    Whole,
    /// The first [`HEAD_LEN`] bytes into the head, the rest into the slot
    /// (raw IPv4: the IP header off to the side).
    Head,
    /// The first 12 bytes at the start of the slot, the rest 4 bytes
    /// further on (AF_PACKET: room for a tag the kernel took out).
    TagGap,
}

/// One datagram or frame a receive kept: where in the slots, and from whom.
#[derive(Clone, Debug)]
struct Kept {
    bytes: Range<usize>,
    src: SocketAddr,
}

/// Buffers for up to `capacity` datagrams or frames of up to `slot_len`
/// bytes each, received with one system call; after a receive, what it
/// kept, in arrival order.
pub struct RecvBatch {
    slot_len: usize,
    bytes: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    // u64 elements keep each control buffer aligned for cmsghdr.
    controls: Vec<[u64; CONTROL_WORDS]>,
    heads: Vec<[u8; HEAD_LEN]>,
    iovs: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
    kept: Vec<Kept>,
    truncated: u64,
    malformed: u64,
    kernel_drops: Option<u32>,
    /// Most messages the next receive takes (up to the capacity).
    take: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity())
            .field("slot_len", &self.slot_len)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// One received message as the kernel left it, for the socket that asked
/// to make sense of it.
pub(crate) struct Raw<'a> {
    /// The message's slot (all of it).
    pub slot: &'a mut [u8],
    /// The scratch head ([`Layout::Head`]).
    pub head: &'a [u8; HEAD_LEN],
    /// The sender's address, as the kernel wrote it.
    pub name: &'a libc::sockaddr_storage,
    /// The message header: `msg_flags`, and the control messages for
    /// [`super::cmsg::find`].
    pub hdr: &'a libc::msghdr,
    /// What `recvmmsg` said of this message: its length (the whole
    /// datagram's with `MSG_TRUNC`).
    pub len: usize,
}

impl RecvBatch {
    /// Room for `capacity` messages of `slot_len` bytes (at least 64).
    pub fn new(capacity: usize, slot_len: usize) -> RecvBatch {
        let capacity = capacity.max(1);
        let slot_len = slot_len.max(64);
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RecvBatch {
            slot_len,
            bytes: vec![0; capacity * slot_len],
            names: vec![name; capacity],
            controls: vec![[0; CONTROL_WORDS]; capacity],
            heads: vec![[0; HEAD_LEN]; capacity],
            iovs: vec![[iov; 2]; capacity],
            msgs: (0..capacity)
                // SAFETY: an all-zero mmsghdr is a valid "no name, no data,
                // no control" header; receive() sets what matters.
                .map(|_| unsafe { mem::zeroed() })
                .collect(),
            kept: Vec::with_capacity(capacity),
            truncated: 0,
            malformed: 0,
            kernel_drops: None,
            take: capacity,
        }
    }

    /// Most messages one receive takes.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Let the receives take at most `n` messages each (1 up to the
    /// capacity): a caller with little work left in its budget reads
    /// little, and leaves the rest queued in the kernel.
    pub fn set_take(&mut self, n: usize) {
        self.take = n.clamp(1, self.capacity());
    }

    /// Most messages one receive takes now ([`RecvBatch::set_take`]; the
    /// capacity unless set lower).
    pub fn take(&self) -> usize {
        self.take
    }

    /// Bytes of one slot: a longer datagram or frame is dropped and counted.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Messages the last receive kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether the last receive kept nothing.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The `i`th message the last receive kept, and its source (port 0
    /// over raw IP; unspecified for AF_PACKET frames).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        self.kept
            .get(i)
            .map(|k| (&self.bytes[k.bytes.clone()], k.src))
    }

    /// What the last receive kept, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], SocketAddr)> + '_ {
        self.kept
            .iter()
            .map(|k| (&self.bytes[k.bytes.clone()], k.src))
    }

    /// Messages the last receive dropped because they did not fit a slot.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Messages the last receive dropped because the kernel handed
    /// something unparseable (never expected).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The socket's drop count as the kernel last reported it with a
    /// message of the last receive (`SO_RXQ_OVFL`: datagrams it dropped
    /// since the socket opened because the receive buffer was full, i.e.
    /// not read in time). None when the receive reported none: the socket
    /// does not ask for it, or has dropped nothing yet.
    pub fn kernel_drops(&self) -> Option<u32> {
        self.kernel_drops
    }

    /// One `recvmmsg(fd, .., MSG_DONTWAIT | flags)` into the slots laid out
    /// as `layout`, with room for names and control messages when asked
    /// for. Forgets what the previous receive kept. Returns how many
    /// messages arrived (then look at each with [`RecvBatch::raw`] and
    /// [`RecvBatch::keep`]); `WouldBlock` when none was queued.
    pub(crate) fn receive(
        &mut self,
        fd: libc::c_int,
        layout: Layout,
        name: bool,
        control: bool,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        self.begin();
        let slot_len = self.slot_len;
        // Rebuilt on every call: the kernel rewrote the lengths last time,
        // and nothing points into a Vec that may have moved.
        for ((((msg, iov), slot), head), (nm, ctl)) in self
            .msgs
            .iter_mut()
            .zip(self.iovs.iter_mut())
            .zip(self.bytes.chunks_exact_mut(slot_len))
            .zip(self.heads.iter_mut())
            .zip(self.names.iter_mut().zip(self.controls.iter_mut()))
        {
            let (n_iov, first, second) = match layout {
                Layout::Whole => (1, (slot.as_mut_ptr(), slot_len), (std::ptr::null_mut(), 0)),
                Layout::Head => (
                    2,
                    (head.as_mut_ptr(), HEAD_LEN),
                    (slot.as_mut_ptr(), slot_len),
                ),
                Layout::TagGap => {
                    let (addrs, rest) = slot.split_at_mut(TAG_GAP_AT);
                    let body = &mut rest[TAG_GAP_LEN..];
                    (
                        2,
                        (addrs.as_mut_ptr(), TAG_GAP_AT),
                        (body.as_mut_ptr(), body.len()),
                    )
                }
            };
            iov[0] = libc::iovec {
                iov_base: first.0.cast(),
                iov_len: first.1,
            };
            iov[1] = libc::iovec {
                iov_base: second.0.cast(),
                iov_len: second.1,
            };
            let h = &mut msg.msg_hdr;
            h.msg_iov = iov.as_mut_ptr();
            h.msg_iovlen = n_iov;
            if name {
                h.msg_name = (nm as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            } else {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            }
            if control {
                h.msg_control = ctl.as_mut_ptr().cast();
                h.msg_controllen = mem::size_of_val(ctl);
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            h.msg_flags = 0;
            msg.msg_len = 0;
        }
        // SAFETY: every mmsghdr points at its own iovecs, name and control
        // buffer, and the iovecs at disjoint parts of `bytes` and `heads`,
        // all with their true lengths; all of it lives in `self`, which the
        // call borrows mutably, and no Vec is resized while it runs; `take`
        // is at most their length (set_take).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.take as libc::c_uint,
                libc::MSG_DONTWAIT | flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if control {
            for m in &self.msgs[..n] {
                // SAFETY: recvmmsg succeeded and filled this message's
                // control buffer and length.
                let d = unsafe { cmsg::find::<u32>(&m.msg_hdr, libc::SOL_SOCKET, SO_RXQ_OVFL) };
                // The count only grows (modulo 2^32): the last is the newest.
                if d.is_some() {
                    self.kernel_drops = d;
                }
            }
        }
        Ok(n)
    }

    /// Forgets what the previous receive kept and counted.
    pub(crate) fn begin(&mut self) {
        self.kept.clear();
        self.truncated = 0;
        self.malformed = 0;
        self.kernel_drops = None;
    }

    /// Slot `i`, for a receive that copies into it itself.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bytes[i * self.slot_len..(i + 1) * self.slot_len]
    }

    /// The `i`th message of the last [`RecvBatch::receive`], to be made sense
    /// of by the socket that received it.
    pub(crate) fn raw(&mut self, i: usize) -> Raw<'_> {
        let slot_len = self.slot_len;
        let m = &self.msgs[i];
        Raw {
            slot: &mut self.bytes[i * slot_len..(i + 1) * slot_len],
            head: &self.heads[i],
            name: &self.names[i],
            hdr: &m.msg_hdr,
            len: m.msg_len as usize,
        }
    }

    /// Hand on `len` bytes at `start` of message `i`'s slot, from `src`.
    pub(crate) fn keep(&mut self, i: usize, start: usize, len: usize, src: SocketAddr) {
        let at = i * self.slot_len + start;
        debug_assert!(start + len <= self.slot_len);
        self.kept.push(Kept {
            bytes: at..at + len,
            src,
        });
    }

    /// Count a message dropped as too long for its slot.
    pub(crate) fn count_truncated(&mut self) {
        self.truncated += 1;
    }

    /// Count a message dropped as unparseable.
    pub(crate) fn count_malformed(&mut self) {
        self.malformed += 1;
    }
}

/// The source of frames without an address (AF_PACKET).
pub(crate) const NO_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
