//! GRE headers (RFC 2784, with the Key and Sequence Number of RFC 2890).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C|R|K|S|  Reserved0      | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (optional)      |       Reserved1 (optional)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (optional)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (optional)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! R is RFC 1701's routing-present bit; with it, and with bits 4-5 (RFC
//! 1701's strict source route and the top of its recursion control), RFC
//! 2784 has a receiver that does not implement RFC 1701 discard the packet.
//! Bits 6-12 must be sent as zero and ignored on receipt, so they are.
//! Version 1 is PPTP's enhanced GRE, not ours.

use crate::wire::checksum::internet_checksum;

/// IP protocol number of GRE.
pub const IP_PROTO_GRE: u8 = 47;
/// Protocol type of transparent Ethernet bridging: the payload is an
/// Ethernet frame.
pub const PROTO_TEB: u16 = 0x6558;
/// Protocol type of IPv4 (carries Cisco-style keepalives).
pub const PROTO_IPV4: u16 = 0x0800;
/// Protocol type of IPv6 (carries keepalives over IPv6).
pub const PROTO_IPV6: u16 = 0x86dd;
/// Protocol type 0: the inner GRE header of a keepalive.
pub const PROTO_KEEPALIVE: u16 = 0;
/// Length of the fixed part (flags, version, protocol type).
pub const BASE_LEN: usize = 4;
/// Longest header: checksum, key and sequence number all present.
pub const MAX_HEADER_LEN: usize = 16;

mod field {
    pub const FLAGS: usize = 0;
    pub const PROTOCOL: usize = 2;

    pub const C: u16 = 0x8000;
    pub const R: u16 = 0x4000;
    pub const K: u16 = 0x2000;
    pub const S: u16 = 0x1000;
    /// Bits 4-5: discarded by an RFC 2784 receiver.
    pub const MUST_BE_ZERO: u16 = 0x0c00;
    pub const VERSION: u16 = 0x0007;
}

/// Why bytes are not a GRE packet tunterm accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GreError {
    /// Shorter than the header its flags announce.
    #[error("truncated")]
    Truncated,
    /// The version field is not 0.
    #[error("GRE version {0} is not 0")]
    BadVersion(u8),
    /// Bits 4-5 of the flags are set (RFC 1701 features).
    #[error("reserved bits set")]
    ReservedBits,
    /// The checksum is present and wrong.
    #[error("bad checksum")]
    BadChecksum,
    /// The routing-present bit (RFC 1701) is set.
    #[error("routing present")]
    Routing,
}

/// The owned form of a GRE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GreHeader {
    /// Protocol type of the payload (an EtherType).
    pub protocol: u16,
    /// Checksum present: verified by [`parse`], filled in by
    /// [`fill_checksum`] / [`emit_packet`].
    pub checksum: bool,
    /// The Key field, when present.
    pub key: Option<u32>,
    /// The Sequence Number field, when present.
    pub seq: Option<u32>,
}

/// A parsed GRE packet: the header and what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrePacket<'a> {
    /// The header.
    pub header: GreHeader,
    /// The payload (for [`PROTO_TEB`], an Ethernet frame).
    pub payload: &'a [u8],
}

impl GreHeader {
    /// A header with no optional field.
    pub const fn new(protocol: u16) -> GreHeader {
        GreHeader {
            protocol,
            checksum: false,
            key: None,
            seq: None,
        }
    }

    /// The header of an Ethernet frame (protocol 0x6558) to an mGRE peer:
    /// its key if it uses one, our sequence number if it sends them.
    pub const fn data(key: Option<u32>, seq: Option<u32>) -> GreHeader {
        GreHeader {
            key,
            seq,
            ..GreHeader::new(PROTO_TEB)
        }
    }

    /// Bytes [`emit`] writes for this header.
    pub const fn header_len(&self) -> usize {
        header_len(self.checksum, self.key.is_some(), self.seq.is_some())
    }
}

/// Header length for the given optional fields.
pub const fn header_len(checksum: bool, key: bool, seq: bool) -> usize {
    BASE_LEN + 4 * (checksum as usize + key as usize + seq as usize)
}

/// Parse and check a GRE packet (the IP payload). With C set the checksum
/// is verified over the whole packet.
pub fn parse(bytes: &[u8]) -> Result<GrePacket<'_>, GreError> {
    let Some(&[f0, f1, p0, p1]) = bytes.first_chunk::<BASE_LEN>() else {
        return Err(GreError::Truncated);
    };
    let flags = u16::from_be_bytes([f0, f1]);
    let version = (flags & field::VERSION) as u8;
    if version != 0 {
        return Err(GreError::BadVersion(version));
    }
    if flags & field::R != 0 {
        return Err(GreError::Routing);
    }
    if flags & field::MUST_BE_ZERO != 0 {
        return Err(GreError::ReservedBits);
    }
    let checksum = flags & field::C != 0;
    let has_key = flags & field::K != 0;
    let has_seq = flags & field::S != 0;
    let len = header_len(checksum, has_key, has_seq);
    if bytes.len() < len {
        return Err(GreError::Truncated);
    }
    if checksum && internet_checksum(bytes) != 0 {
        return Err(GreError::BadChecksum);
    }
    let mut at = BASE_LEN + if checksum { 4 } else { 0 };
    let mut word = || {
        let w = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        at += 4;
        w
    };
    let key = has_key.then(&mut word);
    let seq = has_seq.then(&mut word);
    Ok(GrePacket {
        header: GreHeader {
            protocol: u16::from_be_bytes([p0, p1]),
            checksum,
            key,
            seq,
        },
        payload: &bytes[len..],
    })
}

/// Write `header` at the start of `out` and return its length. The
/// checksum field (if present) is written as zero: call [`fill_checksum`]
/// once the payload follows it.
///
/// # Panics
/// If `out` is shorter than [`GreHeader::header_len`].
pub fn emit(header: &GreHeader, out: &mut [u8]) -> usize {
    let len = header.header_len();
    let out = &mut out[..len];
    let mut flags = 0u16;
    if header.checksum {
        flags |= field::C;
    }
    if header.key.is_some() {
        flags |= field::K;
    }
    if header.seq.is_some() {
        flags |= field::S;
    }
    out[field::FLAGS..field::FLAGS + 2].copy_from_slice(&flags.to_be_bytes());
    out[field::PROTOCOL..field::PROTOCOL + 2].copy_from_slice(&header.protocol.to_be_bytes());
    let mut at = BASE_LEN;
    if header.checksum {
        out[at..at + 4].fill(0);
        at += 4;
    }
    for w in [header.key, header.seq].into_iter().flatten() {
        out[at..at + 4].copy_from_slice(&w.to_be_bytes());
        at += 4;
    }
    len
}

/// Fill in the checksum of a whole GRE packet (header then payload) whose
/// C bit is set; does nothing when it is not set or the packet is too short.
pub fn fill_checksum(packet: &mut [u8]) {
    if packet.len() < header_len(true, false, false) || packet[0] & 0x80 == 0 {
        return;
    }
    packet[4..6].fill(0);
    let sum = internet_checksum(packet);
    packet[4..6].copy_from_slice(&sum.to_be_bytes());
}

/// Append a whole GRE packet (header, payload, checksum if asked) to `out`.
pub fn emit_packet(header: &GreHeader, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + header.header_len(), 0);
    emit(header, &mut out[start..]);
    out.extend_from_slice(payload);
    fill_checksum(&mut out[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TEB, no optional field, a 14-byte Ethernet header as payload.
    static PLAIN: [u8; 18] = [
        0x00, 0x00, 0x65, 0x58, // no flags, ver 0, TEB
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst MAC
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src MAC
        0x08, 0x06, // ARP
    ];

    /// TEB with key 0x00000400.
    static KEYED: [u8; 12] = [
        0x20, 0x00, 0x65, 0x58, // K, TEB
        0x00, 0x00, 0x04, 0x00, // key
        0xde, 0xad, 0xbe, 0xef, // payload
    ];

    /// TEB with key 7 and sequence number 0x01020304.
    static KEY_SEQ: [u8; 14] = [
        0x30, 0x00, 0x65, 0x58, // K S, TEB
        0x00, 0x00, 0x00, 0x07, // key
        0x01, 0x02, 0x03, 0x04, // sequence number
        0xaa, 0xbb, // payload
    ];

    /// TEB with sequence number 1 only.
    static SEQ: [u8; 9] = [
        0x10, 0x00, 0x65, 0x58, // S, TEB
        0x00, 0x00, 0x00, 0x01, // sequence number
        0x42, // payload
    ];

    /// IPv4 with a checksum: 0x8000 + 0x0800 + 0x0102 + 0x0304 = 0x8c06,
    /// complement 0x73f9.
    static CHECKSUMMED: [u8; 12] = [
        0x80, 0x00, 0x08, 0x00, // C, IPv4
        0x73, 0xf9, 0x00, 0x00, // checksum, reserved1
        0x01, 0x02, 0x03, 0x04, // payload
    ];

    /// Checksum, key and sequence number, odd payload length:
    /// 0xb000 + 0x6558 + 0x0000 + 0x0009 + 0x0000 + 0x0002 + 0x4200 =
    /// 0x15763 → 0x5764, complement 0xa89b.
    static ALL: [u8; 17] = [
        0xb0, 0x00, 0x65, 0x58, // C K S, TEB
        0xa8, 0x9b, 0x00, 0x00, // checksum, reserved1
        0x00, 0x00, 0x00, 0x09, // key
        0x00, 0x00, 0x00, 0x02, // sequence number
        0x42, // payload
    ];

    fn roundtrip(bytes: &[u8], want: GreHeader) {
        let p = parse(bytes).unwrap();
        assert_eq!(p.header, want);
        assert_eq!(p.payload, &bytes[want.header_len()..]);
        let mut out = Vec::new();
        emit_packet(&p.header, p.payload, &mut out);
        assert_eq!(out, bytes);
        let mut hdr = [0xeeu8; MAX_HEADER_LEN];
        let n = emit(&p.header, &mut hdr);
        assert_eq!(n, want.header_len());
        if !want.checksum {
            assert_eq!(&hdr[..n], &bytes[..n]);
        }
    }

    #[test]
    fn parse_emit_roundtrip() {
        roundtrip(&PLAIN, GreHeader::new(PROTO_TEB));
        roundtrip(
            &KEYED,
            GreHeader {
                key: Some(0x400),
                ..GreHeader::new(PROTO_TEB)
            },
        );
        roundtrip(
            &KEY_SEQ,
            GreHeader {
                key: Some(7),
                seq: Some(0x0102_0304),
                ..GreHeader::new(PROTO_TEB)
            },
        );
        roundtrip(
            &SEQ,
            GreHeader {
                seq: Some(1),
                ..GreHeader::new(PROTO_TEB)
            },
        );
        roundtrip(
            &CHECKSUMMED,
            GreHeader {
                checksum: true,
                ..GreHeader::new(PROTO_IPV4)
            },
        );
        roundtrip(
            &ALL,
            GreHeader {
                checksum: true,
                key: Some(9),
                seq: Some(2),
                protocol: PROTO_TEB,
            },
        );
    }

    #[test]
    fn header_lengths() {
        assert_eq!(header_len(false, false, false), 4);
        assert_eq!(header_len(true, false, false), 8);
        assert_eq!(header_len(false, true, false), 8);
        assert_eq!(header_len(false, true, true), 12);
        assert_eq!(header_len(true, true, true), MAX_HEADER_LEN);
    }

    #[test]
    fn empty_payload_is_fine() {
        let p = parse(&[0, 0, 0, 0]).unwrap();
        assert_eq!(p.header, GreHeader::new(PROTO_KEEPALIVE));
        assert!(p.payload.is_empty());
    }

    #[test]
    fn bad_version() {
        for v in 1..8u8 {
            let mut b = PLAIN;
            b[1] |= v;
            assert_eq!(parse(&b), Err(GreError::BadVersion(v)));
        }
        // PPTP's enhanced GRE: K, S, version 1, PPP.
        assert_eq!(
            parse(&[0x30, 0x81, 0x88, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(GreError::BadVersion(1))
        );
    }

    #[test]
    fn routing_bit() {
        let mut b = PLAIN;
        b[0] |= 0x40;
        assert_eq!(parse(&b), Err(GreError::Routing));
    }

    #[test]
    fn reserved_bits() {
        for bit in [0x08u8, 0x04] {
            let mut b = PLAIN;
            b[0] |= bit;
            assert_eq!(parse(&b), Err(GreError::ReservedBits));
        }
        // Bits 6-12 are ignored on receipt and sent as zero.
        for (byte, bit) in [(0, 0x02u8), (0, 0x01), (1, 0x80), (1, 0x08)] {
            let mut b = PLAIN;
            b[byte] |= bit;
            let p = parse(&b).unwrap();
            assert_eq!(p.header, GreHeader::new(PROTO_TEB));
            let mut out = Vec::new();
            emit_packet(&p.header, p.payload, &mut out);
            assert_eq!(out, PLAIN);
        }
    }

    #[test]
    fn bad_checksum() {
        for i in 0..CHECKSUMMED.len() {
            let mut b = CHECKSUMMED;
            b[i] ^= 0x10;
            assert_eq!(parse(&b), Err(GreError::BadChecksum), "byte {i}");
        }
        let mut b = ALL;
        b[16] = 0x43;
        assert_eq!(parse(&b), Err(GreError::BadChecksum));
    }

    #[test]
    fn every_truncation() {
        for full in [&PLAIN[..], &KEYED, &KEY_SEQ, &SEQ, &CHECKSUMMED, &ALL] {
            let hlen = parse(full).unwrap().header.header_len();
            for n in 0..hlen {
                assert_eq!(
                    parse(&full[..n]),
                    Err(GreError::Truncated),
                    "{full:02x?} at {n}"
                );
            }
        }
    }

    #[test]
    fn checksum_helpers() {
        // No C bit, or too short: untouched.
        let mut b = PLAIN;
        fill_checksum(&mut b);
        assert_eq!(b, PLAIN);
        let mut short = [0x80u8, 0, 0];
        fill_checksum(&mut short);
        assert_eq!(short, [0x80, 0, 0]);
    }

    #[test]
    fn fuzzed_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [&PLAIN[..], &KEYED, &KEY_SEQ, &SEQ, &CHECKSUMMED, &ALL];
        let mut ok = 0;
        for i in 0..20_000 {
            let r = next();
            let mut b: Vec<u8> = if i % 2 == 0 {
                seeds[(r % 6) as usize].to_vec()
            } else {
                (0..(r % 24)).map(|_| next() as u8).collect()
            };
            if !b.is_empty() {
                let n = (next() % 3) as usize;
                for _ in 0..n {
                    let at = (next() as usize) % b.len();
                    b[at] ^= 1 << (next() % 8);
                }
            }
            b.truncate((next() % 24) as usize);
            if let Ok(p) = parse(&b) {
                ok += 1;
                let mut out = Vec::new();
                emit_packet(&p.header, p.payload, &mut out);
                // What parses re-emits to something that parses the same.
                assert_eq!(parse(&out), Ok(p));
            }
        }
        assert!(ok > 0);
    }
}
