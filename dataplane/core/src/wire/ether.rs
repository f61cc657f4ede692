//! Ethernet II and the 802.1Q customer tag (IEEE 802.1Q-2018 §9.6): just the
//! offsets the switch needs, with no allocation.
//!
//! ```text
//!  0                   6                  12            14          16
//! +-------------------+-------------------+-------------+-----------+-----------+----
//! | destination MAC   | source MAC        | TPID 0x8100 | PCP|D|VID | ethertype | payload
//! +-------------------+-------------------+-------------+-----------+-----------+----
//!                                          (the tag is optional: untagged, the
//!                                           ethertype sits at 12)
//! TCI: PCP (3 bits) | DEI (1 bit) | VID (12 bits)
//! ```
//!
//! Only TPID 0x8100 is a tag here. An S-tag (0x88a8) or any other ethertype
//! at offset 12 is payload: the frame is untagged as far as the switch is
//! concerned.

/// A MAC address, in wire order.
pub type MacAddr = [u8; 6];

/// TPID of a customer VLAN tag (C-tag).
pub const TPID_8021Q: u16 = 0x8100;

mod field {
    use core::ops::Range;

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    /// Ethertype of an untagged frame, TPID of a tagged one.
    pub const TYPE: usize = 12;
    pub const TCI: usize = 14;
    /// Shortest header: addresses and an ethertype.
    pub const UNTAGGED_LEN: usize = 14;
    /// Shortest tagged header: addresses, tag and an ethertype.
    pub const TAGGED_LEN: usize = 18;
}

/// Tag Control Information of an 802.1Q tag: PCP, DEI and VID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tci(pub u16);

impl Tci {
    const PCP_DEI: u16 = 0xf000;
    const VID: u16 = 0x0fff;
    const DEI: u16 = 0x1000;

    /// VLAN id (low 12 bits). 0 is a priority tag: no VLAN.
    pub fn vid(self) -> u16 {
        self.0 & Self::VID
    }

    /// Priority code point (top 3 bits).
    pub fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(self) -> bool {
        self.0 & Self::DEI != 0
    }

    /// A TCI from priority and VLAN id, DEI clear. Extra bits of either are
    /// ignored.
    pub fn with_vid(pcp: u8, vid: u16) -> Tci {
        Tci((u16::from(pcp & 7) << 13) | (vid & Self::VID))
    }

    /// This tag's PCP and DEI with another VLAN id.
    pub fn retagged(self, vid: u16) -> Tci {
        Tci((self.0 & Self::PCP_DEI) | (vid & Self::VID))
    }
}

/// A checked view of an Ethernet frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The 802.1Q tag (TPID 0x8100), if the frame has one, as on the wire.
    pub tag: Option<Tci>,
    /// Index of the ethertype after the tag (12 untagged, 16 tagged): where
    /// the untagged remainder of the frame starts.
    pub inner_offset: usize,
}

/// Parse the header; `None` if the frame is too short to be Ethernet
/// (14 bytes, 18 when tagged).
pub fn parse(frame: &[u8]) -> Option<FrameView> {
    let hdr = frame.get(..field::UNTAGGED_LEN)?;
    let dst = hdr[field::DST].try_into().ok()?;
    let src = hdr[field::SRC].try_into().ok()?;
    let ty = u16::from_be_bytes([hdr[field::TYPE], hdr[field::TYPE + 1]]);
    if ty != TPID_8021Q {
        return Some(FrameView {
            dst,
            src,
            tag: None,
            inner_offset: field::TYPE,
        });
    }
    let hdr = frame.get(..field::TAGGED_LEN)?;
    Some(FrameView {
        dst,
        src,
        tag: Some(Tci(u16::from_be_bytes([
            hdr[field::TCI],
            hdr[field::TCI + 1],
        ]))),
        inner_offset: field::TCI + 2,
    })
}

/// EtherType of RARP (RFC 903).
pub const ETHERTYPE_RARP: u16 = 0x8035;

/// Write into `out` (cleared first) the frame that announces `mac` to
/// upstream switches: a broadcast RARP request-reverse from `mac` (sender
/// and target hardware address `mac`, no protocol addresses), tagged with
/// `vid` if given, padded to 60 bytes — what hypervisors send when a
/// machine moves, so learning switches move the MAC at once.
pub fn write_mac_announce(mac: &MacAddr, vid: Option<u16>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0xff; 6]);
    out.extend_from_slice(mac);
    if let Some(v) = vid {
        out.extend_from_slice(&TPID_8021Q.to_be_bytes());
        out.extend_from_slice(&(v & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    // Ethernet, IPv4, 6, 4, operation 3 (request reverse).
    out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]);
    out.extend_from_slice(mac);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(mac);
    out.extend_from_slice(&[0; 4]);
    out.resize(out.len().max(60), 0);
}

/// Append `frame` (parsed as `view`) to `out` with its tag replaced: VID `vid`
/// keeping the frame's PCP and DEI (0 and clear if it had no tag), or no tag
/// for `None`. For building behind an encapsulation header already in `out`.
pub fn append_retagged(frame: &[u8], view: &FrameView, vid: Option<u16>, out: &mut Vec<u8>) {
    out.extend_from_slice(&frame[..field::TYPE]);
    if let Some(vid) = vid {
        let tci = view.tag.unwrap_or(Tci(0)).retagged(vid);
        out.extend_from_slice(&TPID_8021Q.to_be_bytes());
        out.extend_from_slice(&tci.0.to_be_bytes());
    }
    out.extend_from_slice(&frame[view.inner_offset..]);
}

/// [`append_retagged`] into a cleared `out`: dst, src, the tag if `vid` is
/// `Some`, then everything from the ethertype on.
pub fn write_retagged(frame: &[u8], view: &FrameView, vid: Option<u16>, out: &mut Vec<u8>) {
    out.clear();
    append_retagged(frame, view, vid, out);
}

/// Group address (multicast, broadcast included): the I/G bit is set.
pub fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_announce_is_a_broadcast_rarp_from_the_mac_on_its_vlan() {
        let mac = [2, 0, 0, 0, 0, 0xa];
        let mut out = vec![9; 3];
        write_mac_announce(&mac, Some(20), &mut out);
        let v = parse(&out).unwrap();
        assert_eq!(
            (v.dst, v.src, v.tag.map(|t| t.vid())),
            ([0xff; 6], mac, Some(20))
        );
        assert_eq!(&out[16..18], &[0x80, 0x35]);
        assert_eq!(out.len(), 60);
        assert_eq!(&out[18 + 8..18 + 14], &mac);
        assert_eq!(&out[18 + 18..18 + 24], &mac);
        write_mac_announce(&mac, None, &mut out);
        assert_eq!((out.len(), &out[12..14]), (60, &[0x80, 0x35][..]));
    }

    /// ARP request from 02:00:00:00:00:01, untagged (payload cut short).
    static UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0x00, 0x01, // htype Ethernet
    ];
    /// The same, tagged VID 10 with PCP 5.
    static TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x81, 0x00, 0xa0, 0x0a, // PCP 5, DEI 0, VID 10
        0x08, 0x06, //
        0x00, 0x01,
    ];
    /// The same, tagged VID 20 with PCP 3 and DEI set.
    static TAGGED_DEI: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x81, 0x00, 0x70, 0x14, // PCP 3, DEI 1, VID 20
        0x08, 0x06, //
        0x00, 0x01,
    ];
    /// An 802.1ad S-tag in front of the ARP: not ours to strip.
    static S_TAGGED: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x88, 0xa8, 0x00, 0x0a, //
        0x08, 0x06, //
        0x00, 0x01,
    ];

    #[test]
    fn parses_untagged_and_tagged() {
        let u = parse(&UNTAGGED).unwrap();
        assert_eq!(
            u,
            FrameView {
                dst: [0xff; 6],
                src: [2, 0, 0, 0, 0, 1],
                tag: None,
                inner_offset: 12,
            }
        );
        let t = parse(&TAGGED).unwrap();
        assert_eq!(t.tag, Some(Tci(0xa00a)));
        assert_eq!(t.tag.map(Tci::vid), Some(10));
        assert_eq!(t.tag.map(Tci::pcp), Some(5));
        assert_eq!(t.tag.map(Tci::dei), Some(false));
        assert_eq!(t.inner_offset, 16);
        assert_eq!(&TAGGED[t.inner_offset..], &UNTAGGED[u.inner_offset..]);
        let d = parse(&TAGGED_DEI).unwrap().tag.unwrap();
        assert_eq!((d.pcp(), d.dei(), d.vid()), (3, true, 20));
    }

    #[test]
    fn only_8100_is_a_tag() {
        let s = parse(&S_TAGGED).unwrap();
        assert_eq!(s.tag, None);
        assert_eq!(s.inner_offset, 12);
        // An S-tagged frame is only 14 bytes of header to us: a short one
        // still parses.
        assert!(parse(&S_TAGGED[..14]).is_some());
    }

    #[test]
    fn short_frames_are_rejected() {
        for n in 0..14 {
            assert_eq!(parse(&UNTAGGED[..n]), None, "{n} bytes");
        }
        for n in 14..18 {
            assert_eq!(parse(&TAGGED[..n]), None, "{n} bytes, tagged");
        }
        assert!(parse(&UNTAGGED[..14]).is_some());
        assert!(parse(&TAGGED[..18]).is_some());
    }

    #[test]
    fn tci_fields() {
        assert_eq!(Tci::with_vid(5, 10), Tci(0xa00a));
        assert_eq!(Tci::with_vid(0xff, 0xffff), Tci(0xefff), "DEI stays clear");
        assert_eq!(Tci(0x700a).retagged(20), Tci(0x7014));
        assert_eq!(Tci(0xffff).vid(), 4095);
    }

    #[test]
    fn untagged_gets_a_tag_with_pcp_0() {
        let mut out = vec![0xaa; 3];
        let u = parse(&UNTAGGED).unwrap();
        write_retagged(&UNTAGGED, &u, Some(10), &mut out);
        let expected: [u8; 20] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
            0x81, 0x00, 0x00, 0x0a, //
            0x08, 0x06, //
            0x00, 0x01,
        ];
        assert_eq!(out, expected, "out cleared first");
    }

    #[test]
    fn tagged_loses_its_tag_or_keeps_pcp_and_dei() {
        let mut out = vec![];
        let t = parse(&TAGGED).unwrap();
        write_retagged(&TAGGED, &t, None, &mut out);
        assert_eq!(out, UNTAGGED);
        write_retagged(&TAGGED, &t, Some(10), &mut out);
        assert_eq!(out, TAGGED, "same VID: unchanged");
        let d = parse(&TAGGED_DEI).unwrap();
        write_retagged(&TAGGED_DEI, &d, Some(10), &mut out);
        assert_eq!(&out[14..16], &[0x70, 0x0a], "PCP 3 and DEI kept");
        assert_eq!(&out[16..], &TAGGED_DEI[16..]);
    }

    #[test]
    fn append_keeps_what_is_there() {
        let t = parse(&TAGGED).unwrap();
        let mut out = vec![0xee; 8];
        append_retagged(&TAGGED, &t, None, &mut out);
        assert_eq!(&out[..8], &[0xee; 8]);
        assert_eq!(&out[8..], &UNTAGGED);
    }

    #[test]
    fn group_addresses() {
        assert!(is_multicast(&[0xff; 6]));
        assert!(is_multicast(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb])); // mDNS v4
        assert!(is_multicast(&[0x33, 0x33, 0x00, 0x00, 0x00, 0x01])); // all-nodes
        assert!(is_multicast(&[0x01, 0x80, 0xc2, 0x00, 0x00, 0x00])); // STP
        assert!(!is_multicast(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]));
        assert!(!is_multicast(&[0x00; 6]));
    }
}
