//! TZSP (TaZmen Sniffer Protocol), as Wireshark reads it: the header of a
//! mirrored frame sent over UDP (port [`TZSP_PORT`] by default).
//!
//! ```text
//!  version 1 | type 0 (received) | encapsulation u16 (1: Ethernet)
//!  tags: 41 original length (len 2, u16) · 82 timestamp (len 8: u32 s,
//!        u32 ns) · 1 end (one byte, no length)
//!  the frame
//! ```
//!
//! Every number is big-endian. Tags 0 (padding) and 1 (end) are one byte;
//! the others are type, length, value.

/// The UDP port Wireshark decodes as TZSP by default.
pub const TZSP_PORT: u16 = 37008;
/// Protocol version.
pub const VERSION: u8 = 1;
/// Type: a received frame.
pub const TYPE_RECEIVED: u8 = 0;
/// Encapsulation: Ethernet.
pub const ENCAP_ETHERNET: u16 = 1;
/// Tag: padding (one byte).
pub const TAG_PADDING: u8 = 0;
/// Tag: end of the tags (one byte).
pub const TAG_END: u8 = 1;
/// Tag: the frame's original length (u16).
pub const TAG_ORIGINAL_LENGTH: u8 = 41;
/// Tag: the time the frame was seen (u32 seconds, u32 nanoseconds).
pub const TAG_TIMESTAMP: u8 = 82;
/// Bytes [`encode`] puts in front of the frame.
pub const HEADER_LEN: usize = 4 + 4 + 10 + 1;

/// Append a TZSP datagram to `out`: a received Ethernet `frame` (maybe cut
/// to a snap length) whose original length was `original_len` (saturated
/// at 65535), seen at `secs`.`nanos` since the Unix epoch.
pub fn encode(frame: &[u8], original_len: usize, secs: u32, nanos: u32, out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + frame.len());
    out.extend_from_slice(&[VERSION, TYPE_RECEIVED]);
    out.extend_from_slice(&ENCAP_ETHERNET.to_be_bytes());
    out.extend_from_slice(&[TAG_ORIGINAL_LENGTH, 2]);
    let len = u16::try_from(original_len).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[TAG_TIMESTAMP, 8]);
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
    out.push(TAG_END);
    out.extend_from_slice(frame);
}

/// A TZSP datagram, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tzsp<'a> {
    /// Version (1).
    pub version: u8,
    /// Type (0: received).
    pub kind: u8,
    /// Encapsulation (1: Ethernet).
    pub encap: u16,
    /// Tag 41.
    pub original_len: Option<u16>,
    /// Tag 82: seconds and nanoseconds.
    pub timestamp: Option<(u32, u32)>,
    /// What follows the end tag.
    pub frame: &'a [u8],
}

/// Parse a TZSP datagram; None when it is cut short or has no end tag.
/// Unknown tags are skipped.
pub fn parse(dgram: &[u8]) -> Option<Tzsp<'_>> {
    let hdr = dgram.get(..4)?;
    let mut t = Tzsp {
        version: hdr[0],
        kind: hdr[1],
        encap: u16::from_be_bytes([hdr[2], hdr[3]]),
        original_len: None,
        timestamp: None,
        frame: &[],
    };
    let mut at = 4;
    loop {
        match *dgram.get(at)? {
            TAG_PADDING => at += 1,
            TAG_END => {
                t.frame = &dgram[at + 1..];
                return Some(t);
            }
            tag => {
                let len = usize::from(*dgram.get(at + 1)?);
                let v = dgram.get(at + 2..at + 2 + len)?;
                match (tag, len) {
                    (TAG_ORIGINAL_LENGTH, 2) => {
                        t.original_len = Some(u16::from_be_bytes([v[0], v[1]]))
                    }
                    (TAG_TIMESTAMP, 8) => {
                        let s = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                        let ns = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
                        t.timestamp = Some((s, ns));
                    }
                    _ => {}
                }
                at += 2 + len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_encoded_as_wireshark_reads_it() {
        let frame = [
            0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
        ];
        let mut out = Vec::new();
        encode(&frame, 60, 0x6000_0001, 999_999_999, &mut out);
        assert_eq!(
            &out[..HEADER_LEN],
            &[
                1, 0, 0, 1, // version, received, Ethernet
                41, 2, 0, 60, // original length 60
                82, 8, 0x60, 0, 0, 1, 0x3b, 0x9a, 0xc9, 0xff, // timestamp
                1,    // end
            ]
        );
        assert_eq!(&out[HEADER_LEN..], &frame);
        let t = parse(&out).unwrap();
        assert_eq!(
            (t.version, t.kind, t.encap, t.original_len, t.timestamp),
            (1, 0, 1, Some(60), Some((0x6000_0001, 999_999_999)))
        );
        assert_eq!(t.frame, &frame);
    }

    #[test]
    fn mikrotik_style_and_broken_datagrams() {
        // No tags but the end, padding, an unknown tag.
        let t = parse(&[1, 0, 0, 1, 0, 0, 7, 1, 0xaa, 1, 0xde, 0xad]).unwrap();
        assert_eq!((t.original_len, t.frame), (None, &[0xde, 0xad][..]));
        assert_eq!(parse(&[1, 0, 0]), None);
        assert_eq!(parse(&[1, 0, 0, 1]), None, "no end tag");
        assert_eq!(parse(&[1, 0, 0, 1, 41, 2, 0]), None, "tag cut short");
        let mut out = Vec::new();
        encode(&[], 70_000, 0, 0, &mut out);
        assert_eq!(parse(&out).unwrap().original_len, Some(u16::MAX));
    }
}
