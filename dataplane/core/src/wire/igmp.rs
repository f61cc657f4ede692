//! IGMP (RFC 1112 v1, RFC 2236 v2, RFC 3376 v3) and Multicast Router
//! Discovery advertisements (RFC 4286): what a snooping switch reads, and the
//! queries a querier writes.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      | Max Resp Code |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Group Address                         |   v1, v2: 8 bytes
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Resv  |S| QRV |     QQIC      |     Number of Sources (N)     |   v3 query: 12 + 4N
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address [1..N]                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! v3 report (type 0x22): Type | Reserved | Checksum | Reserved | Number of
//! Group Records (M), then M records:
//! | Record Type | Aux Data Len | Number of Sources (N) | Multicast Address |
//! | Source Address [1..N] | Auxiliary Data (Aux Data Len × 4 bytes) |
//! ```
//!
//! The version of a query is told by its length and code (RFC 3376 §7.1):
//! 8 bytes with code 0 is v1, 8 bytes otherwise v2, 12 or more v3.

use std::net::Ipv4Addr;

use super::checksum::internet_checksum;

/// IGMP's IP protocol number.
pub const PROTOCOL: u8 = 2;
/// Membership Query.
pub const TYPE_QUERY: u8 = 0x11;
/// IGMPv1 Membership Report.
pub const TYPE_REPORT_V1: u8 = 0x12;
/// IGMPv2 Membership Report.
pub const TYPE_REPORT_V2: u8 = 0x16;
/// IGMPv2 Leave Group.
pub const TYPE_LEAVE: u8 = 0x17;
/// IGMPv3 Membership Report.
pub const TYPE_REPORT_V3: u8 = 0x22;
/// Multicast Router Advertisement (RFC 4286).
pub const TYPE_MRD_ADVERT: u8 = 0x30;
/// All systems (general queries go there).
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// All routers (v2 leaves go there).
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// IGMPv3-capable routers (v3 reports go there).
pub const V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

/// Why bytes are not an IGMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its type needs.
    #[error("truncated IGMP message")]
    Truncated,
    /// The checksum does not verify.
    #[error("bad IGMP checksum")]
    BadChecksum,
}

/// A query's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// RFC 1112 (no max response time).
    V1,
    /// RFC 2236.
    V2,
    /// RFC 3376.
    V3,
}

/// A v3 group record's type (RFC 3376 §4.2.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// MODE_IS_INCLUDE (1).
    IsInclude,
    /// MODE_IS_EXCLUDE (2).
    IsExclude,
    /// CHANGE_TO_INCLUDE_MODE (3).
    ToInclude,
    /// CHANGE_TO_EXCLUDE_MODE (4).
    ToExclude,
    /// ALLOW_NEW_SOURCES (5).
    AllowNew,
    /// BLOCK_OLD_SOURCES (6).
    BlockOld,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for RecordType {
    fn from(v: u8) -> Self {
        match v {
            1 => RecordType::IsInclude,
            2 => RecordType::IsExclude,
            3 => RecordType::ToInclude,
            4 => RecordType::ToExclude,
            5 => RecordType::AllowNew,
            6 => RecordType::BlockOld,
            v => RecordType::Unknown(v),
        }
    }
}

/// One record of an IGMPv3 (or MLDv2) report, source list skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupRecord<A> {
    /// Its type.
    pub kind: RecordType,
    /// The group.
    pub group: A,
    /// Number of sources listed.
    pub sources: u16,
}

impl<A> GroupRecord<A> {
    /// What a snooping switch that ignores source lists makes of it: true
    /// when the host wants the group, false when it leaves it
    /// (TO_IN or IS_IN with no source), None for no change in membership
    /// (ALLOW and BLOCK only move sources).
    pub fn joins(&self) -> Option<bool> {
        match self.kind {
            RecordType::IsExclude | RecordType::ToExclude => Some(true),
            RecordType::IsInclude | RecordType::ToInclude => Some(self.sources != 0),
            RecordType::AllowNew => (self.sources != 0).then_some(true),
            RecordType::BlockOld | RecordType::Unknown(_) => None,
        }
    }
}

/// The group records of a v3 report (IGMPv3: 4-byte groups; MLDv2: 16).
#[derive(Clone, Debug)]
pub struct Records<'a, const N: usize> {
    bytes: &'a [u8],
    left: u16,
}

impl<'a, const N: usize> Records<'a, N> {
    /// Records starting at `bytes` (`count` of them, as the header says).
    pub fn new(bytes: &'a [u8], count: u16) -> Self {
        Records { bytes, left: count }
    }
}

impl<const N: usize> Iterator for Records<'_, N> {
    type Item = GroupRecord<[u8; N]>;

    /// The next record; None after the last or at a truncated one.
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.bytes;
        let head = b.get(..4 + N)?;
        let aux = usize::from(head[1]) * 4;
        let sources = u16::from_be_bytes([head[2], head[3]]);
        let len = 4 + N + usize::from(sources) * N + aux;
        if b.len() < len {
            self.left = 0;
            return None;
        }
        self.bytes = &b[len..];
        Some(GroupRecord {
            kind: RecordType::from(head[0]),
            group: head[4..4 + N].try_into().ok()?,
            sources,
        })
    }
}

/// An IGMP message as a snooping switch sees it.
#[derive(Clone, Debug)]
pub enum Repr<'a> {
    /// A Membership Query: general when `group` is unspecified.
    Query {
        /// Its version (by length and code).
        version: Version,
        /// Max response time in tenths of a second (0 for v1).
        max_resp: u32,
        /// The group asked about.
        group: Ipv4Addr,
        /// The querier's robustness variable (v3; 0 otherwise).
        qrv: u8,
        /// The querier's query interval in seconds (v3; 0 otherwise).
        qqi: u32,
    },
    /// An IGMPv1 or v2 report.
    Report {
        /// 1 or 2.
        version: u8,
        /// The group joined.
        group: Ipv4Addr,
    },
    /// An IGMPv2 Leave Group.
    Leave {
        /// The group left.
        group: Ipv4Addr,
    },
    /// An IGMPv3 report.
    ReportV3 {
        /// Its group records.
        records: Records<'a, 4>,
    },
    /// A Multicast Router Advertisement.
    RouterAdvert,
    /// Any other type.
    Unknown(u8),
}

/// The value of an 8-bit Max Resp Code or QQIC (RFC 3376 §4.1.1, §4.1.7):
/// below 128 itself, else a float with a 3-bit exponent and 4-bit mantissa.
pub fn code_to_value(code: u8) -> u32 {
    if code < 128 {
        return u32::from(code);
    }
    let (exp, mant) = (u32::from((code >> 4) & 7), u32::from(code & 0xf));
    (mant | 0x10) << (exp + 3)
}

/// The code for `value` (rounded down, capped at 31744): the inverse of
/// [`code_to_value`].
pub fn value_to_code(value: u32) -> u8 {
    if value < 128 {
        return value as u8;
    }
    let value = value.min(31744);
    let mut exp = 0;
    while (value >> (exp + 3)) > 0x1f {
        exp += 1;
    }
    0x80 | ((exp as u8) << 4) | (((value >> (exp + 3)) & 0xf) as u8)
}

impl<'a> Repr<'a> {
    /// Parse an IGMP message (the IPv4 payload), checksum verified.
    pub fn parse(b: &'a [u8]) -> Result<Repr<'a>, Error> {
        if b.len() < 8 {
            return Err(Error::Truncated);
        }
        if internet_checksum(b) != 0 {
            return Err(Error::BadChecksum);
        }
        let group = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Ok(match b[0] {
            TYPE_QUERY if b.len() >= 12 => Repr::Query {
                version: Version::V3,
                max_resp: code_to_value(b[1]),
                group,
                qrv: b[8] & 7,
                qqi: code_to_value(b[9]),
            },
            TYPE_QUERY => Repr::Query {
                version: if b[1] == 0 { Version::V1 } else { Version::V2 },
                max_resp: u32::from(b[1]),
                group,
                qrv: 0,
                qqi: 0,
            },
            TYPE_REPORT_V1 => Repr::Report { version: 1, group },
            TYPE_REPORT_V2 => Repr::Report { version: 2, group },
            TYPE_LEAVE => Repr::Leave { group },
            TYPE_REPORT_V3 => Repr::ReportV3 {
                records: Records::new(&b[8..], u16::from_be_bytes([b[6], b[7]])),
            },
            TYPE_MRD_ADVERT => Repr::RouterAdvert,
            t => Repr::Unknown(t),
        })
    }
}

/// A Membership Query to write (no source list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// v1: code 0; v2: 8 bytes; v3: 12 bytes with QRV and QQIC.
    pub version: Version,
    /// Max response time in tenths of a second.
    pub max_resp: u32,
    /// Unspecified for a general query.
    pub group: Ipv4Addr,
    /// Robustness (v3), 1..=7.
    pub qrv: u8,
    /// Query interval in seconds (v3).
    pub qqi: u32,
}

impl Query {
    /// Bytes when emitted.
    pub fn buffer_len(&self) -> usize {
        if self.version == Version::V3 { 12 } else { 8 }
    }

    /// Append the message, checksum included, to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let at = out.len();
        let code = match self.version {
            Version::V1 => 0,
            Version::V2 => self.max_resp.min(255) as u8,
            Version::V3 => value_to_code(self.max_resp),
        };
        out.extend_from_slice(&[TYPE_QUERY, code, 0, 0]);
        out.extend_from_slice(&self.group.octets());
        if self.version == Version::V3 {
            out.extend_from_slice(&[self.qrv.min(7), value_to_code(self.qqi), 0, 0]);
        }
        let sum = internet_checksum(&out[at..]);
        out[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IGMPv2 Leave for 224.0.6.150 (smoltcp's `LEAVE_PACKET_BYTES`).
    static LEAVE_PACKET_BYTES: [u8; 8] = [0x17, 0x00, 0x02, 0x69, 0xe0, 0x00, 0x06, 0x96];

    /// An IGMPv2 report for 224.0.6.150, max resp 2 s (smoltcp's layout).
    static REPORT_PACKET_BYTES: [u8; 8] = [0x16, 0x14, 0x03, 0x55, 0xe0, 0x00, 0x06, 0x96];

    /// An IGMPv3 report as Linux sends it on joining 239.1.2.3: one
    /// CHANGE_TO_EXCLUDE record with no source.
    static V3_JOIN: [u8; 16] = [
        0x22, 0x00, 0xe8, 0xf9, // type, reserved, checksum
        0x00, 0x00, 0x00, 0x01, // reserved, 1 record
        0x04, 0x00, 0x00, 0x00, // TO_EX, no aux, no source
        239, 1, 2, 3,
    ];

    #[test]
    fn v2_leave_and_report_parse() {
        match Repr::parse(&LEAVE_PACKET_BYTES).unwrap() {
            Repr::Leave { group } => assert_eq!(group, Ipv4Addr::new(224, 0, 6, 150)),
            r => panic!("{r:?}"),
        }
        match Repr::parse(&REPORT_PACKET_BYTES).unwrap() {
            Repr::Report { version, group } => {
                assert_eq!((version, group), (2, Ipv4Addr::new(224, 0, 6, 150)))
            }
            r => panic!("{r:?}"),
        }
        let mut bad = LEAVE_PACKET_BYTES;
        bad[7] ^= 1;
        assert_eq!(Repr::parse(&bad).err(), Some(Error::BadChecksum));
        assert_eq!(Repr::parse(&bad[..7]).err(), Some(Error::Truncated));
    }

    #[test]
    fn v3_report_records() {
        let Repr::ReportV3 { records } = Repr::parse(&V3_JOIN).unwrap() else {
            panic!()
        };
        let r: Vec<_> = records.collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].group, [239, 1, 2, 3]);
        assert_eq!(r[0].kind, RecordType::ToExclude);
        assert_eq!(r[0].joins(), Some(true));
        // A record count beyond the bytes stops at the end, no panic.
        let mut b = V3_JOIN;
        b[7] = 9;
        let sum = internet_checksum(&{
            let mut c = b;
            c[2] = 0;
            c[3] = 0;
            c
        });
        b[2..4].copy_from_slice(&sum.to_be_bytes());
        let Repr::ReportV3 { records } = Repr::parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(records.count(), 1);
    }

    #[test]
    fn leave_records() {
        let leave = GroupRecord {
            kind: RecordType::ToInclude,
            group: [239, 1, 2, 3],
            sources: 0,
        };
        assert_eq!(leave.joins(), Some(false));
        let block = GroupRecord {
            kind: RecordType::BlockOld,
            ..leave
        };
        assert_eq!(block.joins(), None);
    }

    #[test]
    fn codes_round_trip() {
        for v in [0, 1, 100, 127, 128, 136, 992, 3968, 31744] {
            assert_eq!(code_to_value(value_to_code(v)), v, "{v}");
        }
        // Rounded down between representable values; capped.
        assert_eq!(code_to_value(value_to_code(129)), 128);
        assert_eq!(value_to_code(40000), 0xff);
        assert_eq!(code_to_value(0xff), 31744);
    }

    #[test]
    fn queries_emit_and_parse_back() {
        let q = Query {
            version: Version::V3,
            max_resp: 100,
            group: Ipv4Addr::UNSPECIFIED,
            qrv: 2,
            qqi: 125,
        };
        let mut out = vec![];
        q.append_to(&mut out);
        assert_eq!(
            out,
            [0x11, 0x64, 0xec, 0x1e, 0, 0, 0, 0, 0x02, 0x7d, 0, 0],
            "RFC 3376 general query, 10 s, QRV 2, QQIC 125"
        );
        match Repr::parse(&out).unwrap() {
            Repr::Query {
                version,
                max_resp,
                group,
                qrv,
                qqi,
            } => assert_eq!(
                (version, max_resp, group, qrv, qqi),
                (Version::V3, 100, Ipv4Addr::UNSPECIFIED, 2, 125)
            ),
            r => panic!("{r:?}"),
        }
        let v2 = Query {
            version: Version::V2,
            group: Ipv4Addr::new(239, 1, 2, 3),
            max_resp: 10,
            ..q
        };
        out.clear();
        v2.append_to(&mut out);
        assert_eq!(out.len(), 8);
        assert!(matches!(
            Repr::parse(&out),
            Ok(Repr::Query {
                version: Version::V2,
                max_resp: 10,
                ..
            })
        ));
        let v1 = Query {
            version: Version::V1,
            ..q
        };
        out.clear();
        v1.append_to(&mut out);
        assert!(matches!(
            Repr::parse(&out),
            Ok(Repr::Query {
                version: Version::V1,
                ..
            })
        ));
    }
}
