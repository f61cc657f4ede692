//! The IPv4 header (RFC 791): a checked view over the bytes ([`Packet`])
//! and the owned form for building one ([`Repr`]), in the smoltcp style.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP/ECN    |          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! Flags: reserved | DF | MF
//! ```

use std::net::Ipv4Addr;

use super::checksum::internet_checksum;
use super::{be16, set_be16};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// Don't Fragment, in the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;
/// More Fragments, in the flags/fragment-offset word.
pub const FLAG_MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units) in that word.
pub const FRAG_OFFSET: u16 = 0x1fff;

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// The protocol numbers (IANA "Assigned Internet Protocol Numbers") an
/// IPv4 protocol field or an IPv6 next header holds, as far as we use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// IPv6 hop-by-hop options (0).
    HopByHop,
    /// ICMP (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// GRE (47).
    Gre,
    /// ICMPv6 (58).
    Icmpv6,
    /// IPv6 destination options (60).
    Ipv6Opts,
    /// L2TPv3 over IP (115).
    L2tp,
    /// Any other.
    Unknown(u8),
}

impl From<u8> for Protocol {
    fn from(v: u8) -> Protocol {
        match v {
            0 => Protocol::HopByHop,
            1 => Protocol::Icmp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            44 => Protocol::Ipv6Frag,
            47 => Protocol::Gre,
            58 => Protocol::Icmpv6,
            60 => Protocol::Ipv6Opts,
            115 => Protocol::L2tp,
            v => Protocol::Unknown(v),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        match p {
            Protocol::HopByHop => 0,
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Ipv6Frag => 44,
            Protocol::Gre => 47,
            Protocol::Icmpv6 => 58,
            Protocol::Ipv6Opts => 60,
            Protocol::L2tp => 115,
            Protocol::Unknown(v) => v,
        }
    }
}

/// Why bytes are not an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its header or its total length says.
    #[error("truncated IPv4 packet")]
    Truncated,
    /// Version not 4, IHL under 5 or a total length shorter than the header.
    #[error("malformed IPv4 header")]
    Malformed,
    /// The header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadChecksum,
}

packet_view! {
    /// A view of an IPv4 packet over `T`.
    error: Error
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The buffer holds the whole header (options included) and the total
    /// length's worth of bytes; version 4, IHL ≥ 5, total ≥ header. Bytes
    /// after the total length (Ethernet padding) are allowed.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let hl = self.header_len();
        let total = usize::from(self.total_len());
        if hl < HEADER_LEN || total < hl {
            return Err(Error::Malformed);
        }
        if len < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN, as one byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length: header and payload.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// The flags and fragment offset word as on the wire.
    pub fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// Don't Fragment.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET) << 3
    }

    /// A fragment (MF set or a non-zero offset), not a whole datagram.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> Protocol {
        Protocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum as written.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    /// The header checksum verifies (over the header with its options).
    pub fn verify_checksum(&self) -> bool {
        internet_checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options: the bytes between the fixed header and the payload.
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload, up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 4 and the header length (a multiple of 4, ≤ 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Set DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Set the total length.
    pub fn set_total_len(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Set the identification.
    pub fn set_ident(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Set the flags and fragment offset word.
    pub fn set_flags_frag(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Set the time to live.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Set the protocol.
    pub fn set_protocol(&mut self, p: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.into();
    }

    /// Set the checksum field as is.
    pub fn set_checksum(&mut self, v: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Compute and write the header checksum (after every other field).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = internet_checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// The payload, mutable (up to the total length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

/// An IPv4 header without options, owned: what the tunnel, ICMP and
/// keepalive builders fill in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: Protocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// DSCP and ECN.
    pub dscp_ecn: u8,
}

impl Repr {
    /// The header of a checked packet, after verifying its checksum. A
    /// fragment parses (its flags are not in the `Repr`: check
    /// [`Packet::is_fragment`]); options are skipped.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            dscp_ecn: packet.dscp_ecn(),
        })
    }

    /// Header length when emitted (no options).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header (checksum included) into the start of `packet`,
    /// which must hold at least [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_and_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_ident(self.ident);
        packet.set_flags_frag(if self.dont_frag { FLAG_DF } else { 0 });
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }

    /// Append the header to `out` (the payload is the caller's to append).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.resize(at + HEADER_LEN, 0);
        self.emit(&mut Packet::new_unchecked(&mut out[at..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GRE keepalive's inner packet: 192.0.2.1 → 198.51.100.10, TTL 255,
    /// GRE, 4 bytes of payload.
    static PACKET_BYTES: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, // v4, IHL 5, length 24
        0x00, 0x00, 0x00, 0x00, // id 0, no flags
        0xff, 0x2f, 0xcf, 0x77, // TTL 255, GRE, checksum
        192, 0, 2, 1, // src
        198, 51, 100, 10, // dst
        0x00, 0x00, 0x00, 0x00, // payload
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(192, 0, 2, 1),
            dst_addr: Ipv4Addr::new(198, 51, 100, 10),
            protocol: Protocol::Gre,
            payload_len: 4,
            ttl: 255,
            ident: 0,
            dont_frag: false,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn parse_and_emit_round_trip() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 24));
        assert!(p.verify_checksum() && !p.is_fragment());
        assert_eq!(p.payload(), &[0; 4]);
        assert_eq!(Repr::parse(&p), Ok(repr()));
        let mut out = vec![0u8; 24];
        repr().emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, PACKET_BYTES);
        let mut appended = vec![];
        repr().append_to(&mut appended);
        assert_eq!(appended, PACKET_BYTES[..20]);
    }

    #[test]
    fn flags_and_fragments() {
        let mut b = PACKET_BYTES;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_flags_frag(FLAG_DF);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        p.set_flags_frag(FLAG_MF | 3);
        assert!(p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 24);
        assert!(!p.verify_checksum(), "checksum not refreshed");
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    #[test]
    fn short_lying_or_wrong_headers_are_refused() {
        for n in 0..24 {
            assert_eq!(
                Packet::new_checked(&PACKET_BYTES[..n]).err(),
                Some(Error::Truncated),
                "{n} bytes"
            );
        }
        let with = |i: usize, v: u8| {
            let mut b = PACKET_BYTES;
            b[i] = v;
            b
        };
        assert_eq!(
            Packet::new_checked(&with(0, 0x65)[..]).err(),
            Some(Error::Malformed)
        );
        assert_eq!(
            Packet::new_checked(&with(0, 0x44)[..]).err(),
            Some(Error::Malformed)
        );
        assert_eq!(
            Packet::new_checked(&with(3, 19)[..]).err(),
            Some(Error::Malformed)
        );
        let ttl = with(8, 1);
        let p = Packet::new_checked(&ttl[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::BadChecksum));
        // Ethernet padding after the total length is not payload.
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0xee; 6]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &[0; 4]);
    }

    #[test]
    fn protocol_codepoints_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Protocol::from(v)), v);
        }
        assert_eq!(Protocol::from(115), Protocol::L2tp);
        assert_eq!(Protocol::from(200), Protocol::Unknown(200));
    }
}
