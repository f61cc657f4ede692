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

/// `getsockopt(fd, level, name)` for an option whose value is a `T`
/// (plain old data: an int, or an array of them such as `SO_MEMINFO`'s).
pub(crate) fn get<T: Copy + Default>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut value = T::default();
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live T and `len` its size; the kernel writes at
    // most `len` bytes into it, and any bytes are a valid T (plain data).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// `SO_MEMINFO` (asm-generic/socket.h; libc does not name it on every
/// architecture): the socket's memory figures, `SK_MEMINFO_VARS` of them.
const SO_MEMINFO: libc::c_int = 55;

/// The datagrams the kernel dropped at `fd` since it opened because its
/// receive buffer was full (`sk_drops`, read now with `SO_MEMINFO`; the
/// same count `SO_RXQ_OVFL` attaches to received messages, but current:
/// that one only comes with a message, and behind a full queue the
/// messages read were queued before the latest drops).
pub(crate) fn drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let info: [u32; 9] = get(fd, libc::SOL_SOCKET, SO_MEMINFO)?;
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
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
