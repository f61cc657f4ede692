//! Ethernet II and 802.1Q (IEEE 802.1Q-2018 §9): just the offsets the switch
//! needs, with no allocation.
//!
//! ```text
//! | dst (6) | src (6) | [0x8100 | PCP:3 DEI:1 VID:12] | ethertype (2) | payload
//! ```

/// A MAC address.
pub type MacAddr = [u8; 6];

/// TPID of a customer VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;

/// Tag Control Information of an 802.1Q tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tci(pub u16);

impl Tci {
    /// VLAN id (low 12 bits).
    pub fn vid(self) -> u16 {
        self.0 & 0x0fff
    }

    /// Priority code point.
    pub fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }

    /// A TCI from priority and VLAN id (DEI clear).
    pub fn with_vid(pcp: u8, vid: u16) -> Tci {
        Tci((u16::from(pcp & 7) << 13) | (vid & 0x0fff))
    }
}

/// A checked view of an Ethernet frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The 802.1Q tag, if the frame has one.
    pub tag: Option<Tci>,
    /// Index of the ethertype after the tag (12 untagged, 16 tagged).
    pub inner_offset: usize,
}

/// Parse the header; `None` if the frame is too short to be Ethernet
/// (14 bytes, 18 when tagged).
pub fn parse(frame: &[u8]) -> Option<FrameView> {
    if frame.len() < 14 {
        return None;
    }
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&frame[..6]);
    src.copy_from_slice(&frame[6..12]);
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == TPID_8021Q {
        if frame.len() < 18 {
            return None;
        }
        Some(FrameView {
            dst,
            src,
            tag: Some(Tci(u16::from_be_bytes([frame[14], frame[15]]))),
            inner_offset: 16,
        })
    } else {
        Some(FrameView {
            dst,
            src,
            tag: None,
            inner_offset: 12,
        })
    }
}

/// Append `frame` to `out` with its tag replaced: VID `vid` (keeping the
/// frame's PCP), or no tag for `None`.
pub fn append_retagged(frame: &[u8], view: &FrameView, vid: Option<u16>, out: &mut Vec<u8>) {
    out.extend_from_slice(&frame[..12]);
    if let Some(vid) = vid {
        let pcp = view.tag.map_or(0, Tci::pcp);
        out.extend_from_slice(&TPID_8021Q.to_be_bytes());
        out.extend_from_slice(&Tci::with_vid(pcp, vid).0.to_be_bytes());
    }
    out.extend_from_slice(&frame[view.inner_offset..]);
}

/// [`append_retagged`] into a cleared `out`.
pub fn write_retagged(frame: &[u8], view: &FrameView, vid: Option<u16>, out: &mut Vec<u8>) {
    out.clear();
    append_retagged(frame, view, vid, out);
}

/// Group (multicast or broadcast) address.
pub fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ARP request from 02:00:00:00:00:01, untagged.
    static UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, 0x00, 0x01,
    ];
    /// The same, tagged VID 10 with PCP 5.
    static TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x81, 0x00, 0xa0, 0x0a, 0x08,
        0x06, 0x00, 0x01,
    ];

    #[test]
    fn parses_untagged_and_tagged() {
        let u = parse(&UNTAGGED).unwrap();
        assert_eq!(u.tag, None);
        assert_eq!(u.inner_offset, 12);
        assert!(is_multicast(&u.dst));
        assert!(!is_multicast(&u.src));
        let t = parse(&TAGGED).unwrap();
        assert_eq!(t.tag.map(Tci::vid), Some(10));
        assert_eq!(t.tag.map(Tci::pcp), Some(5));
        assert_eq!(t.inner_offset, 16);
    }

    #[test]
    fn short_frames_are_rejected() {
        for n in 0..14 {
            assert_eq!(parse(&UNTAGGED[..n]), None);
        }
        for n in 14..18 {
            assert_eq!(parse(&TAGGED[..n]), None);
        }
    }

    #[test]
    fn retag_round_trips() {
        let mut out = vec![];
        let u = parse(&UNTAGGED).unwrap();
        write_retagged(&UNTAGGED, &u, Some(10), &mut out);
        assert_eq!(&out[..14], &TAGGED[..14]);
        assert_eq!(out[14] >> 5, 0, "an untagged frame gets PCP 0");
        let t = parse(&TAGGED).unwrap();
        write_retagged(&TAGGED, &t, None, &mut out);
        assert_eq!(out, UNTAGGED);
        write_retagged(&TAGGED, &t, Some(20), &mut out);
        assert_eq!(
            parse(&out).unwrap().tag,
            Some(Tci::with_vid(5, 20)),
            "PCP kept"
        );
        assert_eq!(&out[16..], &TAGGED[16..]);
    }
}
