//! Packet views and builders, one module per protocol. No I/O, no clock.

/// The part of a checked view every protocol module shares (smoltcp's
/// shape): `Packet<T>` over a buffer, `new_unchecked`, `new_checked`
/// (which calls the module's own `check_len`) and `into_inner`.
macro_rules! packet_view {
    ($(#[$doc:meta])* error: $err:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Packet<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> Packet<T> {
            /// A view with no checks: the getters may panic on short buffers.
            pub const fn new_unchecked(buffer: T) -> Packet<T> {
                Packet { buffer }
            }

            /// A view after [`check_len`](Self::check_len): every getter is
            /// then in bounds.
            pub fn new_checked(buffer: T) -> Result<Packet<T>, $err> {
                let p = Packet::new_unchecked(buffer);
                p.check_len()?;
                Ok(p)
            }

            /// The buffer back.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

pub mod checksum;
pub mod dhcp;
pub mod ether;
pub mod gre;
pub mod igmp;
pub mod ipv4;
pub mod ipv6;
pub mod l2tp;
pub mod mld;
pub mod tzsp;
pub mod udp;

/// The big-endian 16-bit field at `r` (two bytes) of `buf`.
pub(crate) fn be16(buf: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([buf[r.start], buf[r.start + 1]])
}

/// Write `v` big-endian into the 16-bit field at `r` of `buf`.
pub(crate) fn set_be16(buf: &mut [u8], r: core::ops::Range<usize>, v: u16) {
    buf[r].copy_from_slice(&v.to_be_bytes());
}
