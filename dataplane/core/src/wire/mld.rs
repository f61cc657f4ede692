//! MLD (RFC 2710 v1, RFC 3810 v2) and Multicast Router Discovery
//! advertisements (RFC 4286), ICMPv6 messages: what a snooping switch reads,
//! and the queries a querier writes.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type = 130   |      Code     |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Maximum Response Code      |           Reserved            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Multicast Address (16 bytes)                 |   v1 (and 131, 132): 24 bytes
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Resv  |S| QRV |     QQIC      |     Number of Sources (N)     |   v2 query: 28 + 16N
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! v2 report (type 143): Type | Reserved | Checksum | Reserved | Nr of Mcast
//! Address Records (M), then M records shaped as IGMPv3's with 16-byte
//! addresses.
//! ```
//!
//! Every MLD message travels with a Hop-by-Hop Router Alert option (RFC
//! 2711), link-local source, hop limit 1: [`upper_layer`] walks the extension
//! headers to the ICMPv6 message.

use std::net::Ipv6Addr;

use super::checksum::{fold, sum16};
use super::igmp::{Records, Version, code_to_value, value_to_code};

/// ICMPv6's next-header number.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// Multicast Listener Query.
pub const TYPE_QUERY: u8 = 130;
/// MLDv1 Multicast Listener Report.
pub const TYPE_REPORT_V1: u8 = 131;
/// MLDv1 Multicast Listener Done.
pub const TYPE_DONE: u8 = 132;
/// MLDv2 Multicast Listener Report.
pub const TYPE_REPORT_V2: u8 = 143;
/// Multicast Router Advertisement (RFC 4286).
pub const TYPE_MRD_ADVERT: u8 = 151;
/// All nodes (general queries go there).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Why bytes are not an MLD message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its type needs.
    #[error("truncated MLD message")]
    Truncated,
    /// The checksum does not verify.
    #[error("bad ICMPv6 checksum")]
    BadChecksum,
}

/// The upper-layer protocol and payload of an IPv6 packet's payload that
/// starts with `next` (Hop-by-Hop, Routing and Destination Options headers
/// skipped); None when truncated or fragmented.
pub fn upper_layer(mut next: u8, mut b: &[u8]) -> Option<(u8, &[u8])> {
    // Hop-by-Hop (0), Routing (43), Destination Options (60).
    for _ in 0..4 {
        if !matches!(next, 0 | 43 | 60) {
            return Some((next, b));
        }
        let len = (usize::from(*b.get(1)?) + 1) * 8;
        next = b[0];
        b = b.get(len..)?;
    }
    None
}

/// The ICMPv6 checksum's sum over `msg` with its pseudo-header.
fn pseudo_sum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u32 {
    let len = msg.len() as u32;
    let acc = sum16(&dst.octets(), sum16(&src.octets(), 0));
    sum16(
        msg,
        acc + (len >> 16) + (len & 0xffff) + u32::from(NEXT_HEADER_ICMPV6),
    )
}

/// An MLD message as a snooping switch sees it.
#[derive(Clone, Debug)]
pub enum Repr<'a> {
    /// A Multicast Listener Query: general when `group` is unspecified.
    Query {
        /// V2 for MLDv1 (24 bytes), V3 for MLDv2 (28 or more), as with
        /// IGMP's versions they pair with.
        version: Version,
        /// Maximum response delay in milliseconds.
        max_resp_ms: u32,
        /// The group asked about.
        group: Ipv6Addr,
        /// Robustness (v2; 0 otherwise).
        qrv: u8,
        /// Query interval in seconds (v2; 0 otherwise).
        qqi: u32,
    },
    /// An MLDv1 report.
    Report {
        /// The group.
        group: Ipv6Addr,
    },
    /// An MLDv1 Done.
    Done {
        /// The group.
        group: Ipv6Addr,
    },
    /// An MLDv2 report.
    ReportV2 {
        /// Its address records.
        records: Records<'a, 16>,
    },
    /// A Multicast Router Advertisement.
    RouterAdvert,
    /// Another ICMPv6 type (neighbour discovery, echo...): not MLD.
    Other(u8),
}

impl<'a> Repr<'a> {
    /// Parse the ICMPv6 message `msg` sent from `src` to `dst`, checksum
    /// verified when it is an MLD type.
    pub fn parse(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &'a [u8]) -> Result<Repr<'a>, Error> {
        let Some(&ty) = msg.first() else {
            return Err(Error::Truncated);
        };
        let need = match ty {
            TYPE_QUERY | TYPE_REPORT_V1 | TYPE_DONE => 24,
            TYPE_REPORT_V2 | TYPE_MRD_ADVERT => 8,
            t => return Ok(Repr::Other(t)),
        };
        if msg.len() < need {
            return Err(Error::Truncated);
        }
        if fold(pseudo_sum(src, dst, msg)) != 0 {
            return Err(Error::BadChecksum);
        }
        let group = || Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).unwrap_or([0; 16]));
        Ok(match ty {
            TYPE_QUERY if msg.len() >= 28 => Repr::Query {
                version: Version::V3,
                max_resp_ms: code16_to_value(u16::from_be_bytes([msg[4], msg[5]])),
                group: group(),
                qrv: msg[24] & 7,
                qqi: code_to_value(msg[25]),
            },
            TYPE_QUERY => Repr::Query {
                version: Version::V2,
                max_resp_ms: u32::from(u16::from_be_bytes([msg[4], msg[5]])),
                group: group(),
                qrv: 0,
                qqi: 0,
            },
            TYPE_REPORT_V1 => Repr::Report { group: group() },
            TYPE_DONE => Repr::Done { group: group() },
            TYPE_REPORT_V2 => Repr::ReportV2 {
                records: Records::new(&msg[8..], u16::from_be_bytes([msg[6], msg[7]])),
            },
            _ => Repr::RouterAdvert,
        })
    }
}

/// The value of MLDv2's 16-bit Maximum Response Code (RFC 3810 §5.1.3):
/// below 32768 itself, else a float (3-bit exponent, 12-bit mantissa).
pub fn code16_to_value(code: u16) -> u32 {
    if code < 0x8000 {
        return u32::from(code);
    }
    let (exp, mant) = (u32::from((code >> 12) & 7), u32::from(code & 0xfff));
    (mant | 0x1000) << (exp + 3)
}

/// The code for `value` ms (rounded down): the inverse of [`code16_to_value`].
pub fn value_to_code16(value: u32) -> u16 {
    if value < 0x8000 {
        return value as u16;
    }
    let value = value.min(0x1fff << 10);
    let mut exp = 0;
    while (value >> (exp + 3)) > 0x1fff {
        exp += 1;
    }
    0x8000 | ((exp as u16) << 12) | (((value >> (exp + 3)) & 0xfff) as u16)
}

/// A Multicast Listener Query to write (no source list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// V3: MLDv2 (28 bytes); anything lower: MLDv1 (24 bytes).
    pub version: Version,
    /// Maximum response delay in milliseconds.
    pub max_resp_ms: u32,
    /// Unspecified for a general query.
    pub group: Ipv6Addr,
    /// Robustness (v2), 1..=7.
    pub qrv: u8,
    /// Query interval in seconds (v2).
    pub qqi: u32,
}

impl Query {
    /// Bytes when emitted.
    pub fn buffer_len(&self) -> usize {
        if self.version == Version::V3 { 28 } else { 24 }
    }

    /// Append the message, with its checksum for `src` → `dst`, to `out`.
    pub fn append_to(&self, src: &Ipv6Addr, dst: &Ipv6Addr, out: &mut Vec<u8>) {
        let at = out.len();
        let code = if self.version == Version::V3 {
            value_to_code16(self.max_resp_ms)
        } else {
            self.max_resp_ms.min(0xffff) as u16
        };
        out.extend_from_slice(&[TYPE_QUERY, 0, 0, 0]);
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.group.octets());
        if self.version == Version::V3 {
            out.extend_from_slice(&[self.qrv.min(7), value_to_code(self.qqi), 0, 0]);
        }
        let sum = fold(pseudo_sum(src, dst, &out[at..]));
        out[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MLDv2 report from fe80::1 to ff02::16 as Linux sends it on
    /// joining ff05::1:3: one CHANGE_TO_EXCLUDE record, no source.
    static V2_JOIN: [u8; 28] = [
        0x8f, 0x00, 0x00, 0x00, // type 143, reserved, checksum (filled below)
        0x00, 0x00, 0x00, 0x01, // reserved, 1 record
        0x04, 0x00, 0x00, 0x00, // TO_EX, no aux, no source
        0xff, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0x03,
    ];

    fn with_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, b: &[u8]) -> Vec<u8> {
        let mut v = b.to_vec();
        v[2] = 0;
        v[3] = 0;
        let s = fold(pseudo_sum(src, dst, &v));
        v[2..4].copy_from_slice(&s.to_be_bytes());
        v
    }

    #[test]
    fn v2_report_records() {
        let (src, dst) = ("fe80::1".parse().unwrap(), "ff02::16".parse().unwrap());
        let b = with_checksum(&src, &dst, &V2_JOIN);
        let Repr::ReportV2 { records } = Repr::parse(&src, &dst, &b).unwrap() else {
            panic!()
        };
        let r: Vec<_> = records.collect();
        assert_eq!(r.len(), 1);
        assert_eq!(
            Ipv6Addr::from(r[0].group),
            "ff05::1:3".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(r[0].joins(), Some(true));
        // Another destination: the pseudo-header no longer sums.
        let other = "ff02::1".parse().unwrap();
        assert_eq!(
            Repr::parse(&src, &other, &b).err(),
            Some(Error::BadChecksum)
        );
        assert_eq!(
            Repr::parse(&src, &dst, &b[..4]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn neighbour_discovery_is_not_mld() {
        let (src, dst) = ("fe80::1".parse().unwrap(), "ff02::1".parse().unwrap());
        assert!(matches!(
            Repr::parse(&src, &dst, &[135, 0, 0, 0]),
            Ok(Repr::Other(135))
        ));
    }

    #[test]
    fn hop_by_hop_is_skipped() {
        // HBH: next ICMPv6, length 0 (8 bytes), Router Alert (MLD), PadN.
        let b = [58, 0, 5, 2, 0, 0, 1, 0, 0x8f, 0xaa];
        assert_eq!(upper_layer(0, &b), Some((58, &b[8..])));
        assert_eq!(upper_layer(0, &b[..6]), None);
        assert_eq!(upper_layer(17, &b), Some((17, &b[..])));
    }

    #[test]
    fn codes16_round_trip() {
        for v in [0, 1000, 10000, 32767, 32768, 0x1fff << 10] {
            assert_eq!(code16_to_value(value_to_code16(v)), v, "{v}");
        }
    }

    #[test]
    fn queries_emit_and_parse_back() {
        let src: Ipv6Addr = "fe80::200:5eff:fe00:5301".parse().unwrap();
        let q = Query {
            version: Version::V3,
            max_resp_ms: 10_000,
            group: Ipv6Addr::UNSPECIFIED,
            qrv: 2,
            qqi: 125,
        };
        let mut out = vec![];
        q.append_to(&src, &ALL_NODES, &mut out);
        assert_eq!(out.len(), 28);
        assert_eq!(&out[4..6], &10_000u16.to_be_bytes());
        assert_eq!(&out[24..26], &[2, 125]);
        match Repr::parse(&src, &ALL_NODES, &out).unwrap() {
            Repr::Query {
                version,
                max_resp_ms,
                qrv,
                qqi,
                ..
            } => assert_eq!(
                (version, max_resp_ms, qrv, qqi),
                (Version::V3, 10_000, 2, 125)
            ),
            r => panic!("{r:?}"),
        }
        let v1 = Query {
            version: Version::V2,
            ..q
        };
        out.clear();
        v1.append_to(&src, &ALL_NODES, &mut out);
        assert_eq!(out.len(), 24);
        assert!(matches!(
            Repr::parse(&src, &ALL_NODES, &out),
            Ok(Repr::Query {
                version: Version::V2,
                max_resp_ms: 10_000,
                ..
            })
        ));
    }
}
