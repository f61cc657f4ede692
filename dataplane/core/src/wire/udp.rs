//! The UDP header (RFC 768): a checked view ([`Packet`]) and the owned form
//! for building one ([`Repr`]). The checksum covers a pseudo-header of the
//! IP addresses (RFC 768 for IPv4, RFC 8200 §8.1 for IPv6); over IPv4 a
//! zero checksum means "none", over IPv6 it is mandatory.
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |   Source Port   |   Dest. Port    |
//! +--------+--------+--------+--------+
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! |          data octets ...
//! +---------------- ...
//! ```

use std::net::IpAddr;

use super::checksum::{fold, sum16};
use super::{be16, set_be16};

/// Length of the header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Why bytes are not a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header or than its length field.
    #[error("truncated UDP datagram")]
    Truncated,
    /// A length field below 8.
    #[error("malformed UDP header")]
    Malformed,
    /// The checksum does not verify.
    #[error("bad UDP checksum")]
    BadChecksum,
}

packet_view! {
    /// A view of a UDP datagram over `T`.
    error: Error
}

/// The sum of the pseudo-header of a datagram of `len` bytes between `src`
/// and `dst` (both of one family), to chain into [`sum16`].
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: usize) -> u32 {
    let acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)),
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            sum16(&v6(d).octets(), sum16(&v6(s).octets(), 0))
        }
    };
    // Length as 32 bits (IPv6) or 16 (IPv4): the same sum below 64 KiB.
    acc + (len as u32 >> 16) + (len as u32 & 0xffff) + 17
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The buffer holds the header and the length field's worth of bytes,
    /// and that length is at least the header's.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < l {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header and payload.
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }

    /// Checksum as written (0: none, over IPv4).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The checksum verifies against the pseudo-header of `src`/`dst`; a
    /// zero checksum over IPv4 ("none") passes.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if src.is_ipv4() && dst.is_ipv4() && self.checksum() == 0 {
            return true;
        }
        let len = usize::from(self.len());
        fold(sum16(
            &self.buffer.as_ref()[..len],
            pseudo_header_sum(src, dst, len),
        )) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, up to the length field.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Set the length field.
    pub fn set_len(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Set the checksum field as is.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Compute and write the checksum over the header and payload (up to
    /// the length field); a computed 0 is sent as 0xffff (RFC 768).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = fold(sum16(
            &self.buffer.as_ref()[..len],
            pseudo_header_sum(src, dst, len),
        ));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
}

/// A UDP header, owned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// The header of a checked datagram (the checksum is the caller's to
    /// verify: it needs the IP addresses).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Header length when emitted.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into the start of `packet` with checksum 0 (none,
    /// allowed over IPv4; call [`Packet::fill_checksum`] once the payload
    /// is in for a real one).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_checksum(0);
    }

    /// Append the header to `out`, checksum 0.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.resize(at + HEADER_LEN, 0);
        self.emit(&mut Packet::new_unchecked(&mut out[at..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query's UDP header and 4 payload bytes, 10.0.0.2 → 10.0.0.1,
    /// with its checksum (RFC 768, over the pseudo-header).
    static DATAGRAM: [u8; 12] = [
        0x30, 0x39, 0x00, 0x35, // 12345 → 53
        0x00, 0x0c, 0x1d, 0xc8, // length 12, checksum
        0xde, 0xad, 0xbe, 0xef,
    ];
    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const DST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn parse_emit_and_checksum() {
        let p = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (12345, 53, 12));
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, DST));
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr {
                src_port: 12345,
                dst_port: 53,
                payload_len: 4
            }
        );
        let mut out = vec![];
        r.append_to(&mut out);
        out.extend_from_slice(&DATAGRAM[8..]);
        let mut p = Packet::new_unchecked(&mut out[..]);
        assert_eq!(p.checksum(), 0);
        assert!(p.verify_checksum(SRC, DST), "0 is no checksum over IPv4");
        p.fill_checksum(SRC, DST);
        assert_eq!(out, DATAGRAM);
    }

    #[test]
    fn ipv6_checksum_is_mandatory() {
        let (s6, d6): (IpAddr, IpAddr) = (
            "2001:db8::2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        let mut b = DATAGRAM;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_checksum(0);
        assert!(!p.verify_checksum(s6, d6));
        p.fill_checksum(s6, d6);
        assert!(p.verify_checksum(s6, d6));
    }

    #[test]
    fn short_or_lying_lengths_are_refused() {
        for n in 0..12 {
            assert_eq!(
                Packet::new_checked(&DATAGRAM[..n]).err(),
                Some(Error::Truncated),
                "{n}"
            );
        }
        let mut b = DATAGRAM;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Malformed));
    }
}
