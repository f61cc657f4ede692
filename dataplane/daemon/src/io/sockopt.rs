//! `setsockopt(2)` with a typed value: the one place the daemon's sockets
//! set the options socket2 does not cover.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setsockopt(fd, level, name, value)`: the option's value is `*value`,
/// `size_of::<T>()` bytes (a `c_int`, or a kernel struct such as
/// `packet_mreq` or `tpacket_req`).
pub(crate) fn set<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live T for the whole call, the length passed is
    // its size, and the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const *value).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setsockopt(fd, level, name, value)` for an int option.
pub(crate) fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set(fd, level, name, &value)
}

/// Attaches the classic BPF program `prog` with option `name`
/// (`SO_ATTACH_FILTER`: a socket filter, or `SO_ATTACH_REUSEPORT_CBPF`:
/// the selector of a reuseport group).
pub(crate) fn attach_cbpf(
    fd: BorrowedFd<'_>,
    name: libc::c_int,
    prog: &[libc::sock_filter],
) -> io::Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call; `prog` outlives it.
    set(fd, libc::SOL_SOCKET, name, &fprog)
}
