//! TAP devices: the host ports through which the kernel's own stack sends
//! and receives Ethernet frames on one VLAN.
//!
//! This module only creates the device and moves frames; bringing the link
//! up and giving it addresses is the caller's job (the lab shells out to
//! `ip`, the daemon will use rtnetlink). The device is not persistent: it
//! disappears when the [`Tap`] is dropped.

#![warn(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// A TAP device (`IFF_TAP | IFF_NO_PI`): each read or write is one whole
/// Ethernet frame, without a packet-information header. Non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates TAP device `name` in the calling thread's network namespace
    /// (a name with `%d` lets the kernel pick a number; see
    /// [`name`](Self::name)). The link starts down.
    pub fn create(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TAP name {name:?}: must be 1 to 15 bytes without NUL"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("TAP {name}: open /dev/net/tun: {e}")))?;

        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is and
        // which outlives the call; `file` is an open /dev/net/tun.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TAP {name}: TUNSETIFF: {e}"),
            ));
        }
        // The kernel writes back the name it chose (it differs with `%d`).
        let name: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Ok(Tap {
            file,
            name: String::from_utf8_lossy(&name).into_owned(),
        })
    }

    /// Reads one frame the kernel sent out of the device; `buf` should hold
    /// the device MTU plus 14 bytes of Ethernet header (a shorter buffer
    /// truncates the frame). [`io::ErrorKind::WouldBlock`] when none is
    /// queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one whole frame into the device, as if it had arrived on the
    /// wire. Fails with `EIO` while the link is down.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    /// The device's name as the kernel created it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
