//! Control messages of `recvmsg`: the one place that walks them.

use std::mem;

/// The first control message of `level`/`ty` in `msg` whose payload holds a
/// whole `T`, copied out.
///
/// # Safety
/// `msg` must have been filled by a successful `recvmsg(2)`: its control
/// pointer and length describe valid `cmsghdr`s inside a live buffer.
pub(crate) unsafe fn find<T: Copy>(
    msg: &libc::msghdr,
    level: libc::c_int,
    ty: libc::c_int,
) -> Option<T> {
    // SAFETY: CMSG_LEN is pure arithmetic on its argument.
    let want = unsafe { libc::CMSG_LEN(mem::size_of::<T>() as u32) } as usize;
    // SAFETY: by the caller's contract the control buffer is valid.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points at a cmsghdr inside the
        // control buffer (CMSG_FIRSTHDR / CMSG_NXTHDR guarantee it).
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == level && hdr.cmsg_type == ty && hdr.cmsg_len >= want {
            // SAFETY: cmsg_len says a whole T follows the header;
            // read_unaligned copes with any alignment.
            return Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) });
        }
        // SAFETY: `msg` and `cmsg` are valid as above; CMSG_NXTHDR returns
        // null past the end of the control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}
