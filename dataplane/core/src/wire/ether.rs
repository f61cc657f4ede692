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

use std::net::Ipv4Addr;

pub use tunterm_control::mac::{MacAddr, MacParseError};

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
    let dst = MacAddr(hdr[field::DST].try_into().ok()?);
    let src = MacAddr(hdr[field::SRC].try_into().ok()?);
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

/// EtherType of ARP (RFC 826).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of RARP (RFC 903).
pub const ETHERTYPE_RARP: u16 = 0x8035;

/// ARP and RARP operation codes (RFC 826, RFC 903).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// Request (1).
    Request,
    /// Reply (2).
    Reply,
    /// RARP request reverse (3).
    RequestReverse,
}

impl From<ArpOp> for etherparse::ArpOperation {
    fn from(op: ArpOp) -> etherparse::ArpOperation {
        etherparse::ArpOperation(match op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::RequestReverse => 3,
        })
    }
}

/// Ethernet/IPv4 ARP (or RARP) frame, written into `out` (cleared first)
/// with etherparse: to `dst` (tagged with `vid` if given), sender and
/// target (hardware, protocol) address, padded to the 60-byte minimum.
/// For probes and announcements, off the per-packet path.
pub fn write_arp(
    ethertype: u16,
    dst: MacAddr,
    vid: Option<u16>,
    op: ArpOp,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&sender.0.0);
    if let Some(v) = vid {
        out.extend_from_slice(&TPID_8021Q.to_be_bytes());
        out.extend_from_slice(&Tci::with_vid(0, v).0.to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    // Every address has its fixed Ethernet/IPv4 size: `new` cannot refuse.
    if let Ok(arp) = etherparse::ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        etherparse::EtherType::IPV4,
        op.into(),
        &sender.0.0,
        &sender.1.octets(),
        &target.0.0,
        &target.1.octets(),
    ) {
        out.extend_from_slice(&arp.to_bytes());
    }
    out.resize(out.len().max(60), 0);
}

/// A broadcast ARP request from `sender` for `target_ip` (tagged with `vid`
/// if given): what a host sends to resolve an address, and, with
/// `target_ip` its own, a gratuitous ARP that teaches switches its MAC.
pub fn arp_request(
    sender: (MacAddr, Ipv4Addr),
    target_ip: Ipv4Addr,
    dst: MacAddr,
    vid: Option<u16>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_arp(
        ETHERTYPE_ARP,
        dst,
        vid,
        ArpOp::Request,
        sender,
        (MacAddr::ZERO, target_ip),
        &mut out,
    );
    out
}

/// The sender (hardware, protocol) address of an Ethernet/IPv4 ARP reply
/// in the frame `view` parsed; `None` for anything else.
pub fn arp_reply_sender(frame: &[u8], view: &FrameView) -> Option<(MacAddr, Ipv4Addr)> {
    let l3 = frame.get(view.inner_offset..)?;
    if l3.get(..2)? != ETHERTYPE_ARP.to_be_bytes() {
        return None;
    }
    let arp = etherparse::ArpPacketSlice::from_slice(&l3[2..]).ok()?;
    if arp.operation() != ArpOp::Reply.into()
        || arp.hw_addr_type() != etherparse::ArpHardwareId::ETHERNET
        || arp.proto_addr_type() != etherparse::EtherType::IPV4
    {
        return None;
    }
    let mac = MacAddr::try_from(arp.sender_hw_addr()).ok()?;
    let ip: [u8; 4] = arp.sender_protocol_addr().try_into().ok()?;
    Some((mac, Ipv4Addr::from(ip)))
}

/// Write into `out` (cleared first) the frame that announces `mac` to
/// upstream switches: a broadcast RARP request-reverse from `mac` (sender
/// and target hardware address `mac`, no protocol addresses), tagged with
/// `vid` if given, padded to 60 bytes — what hypervisors send when a
/// machine moves, so learning switches move the MAC at once.
pub fn write_mac_announce(mac: &MacAddr, vid: Option<u16>, out: &mut Vec<u8>) {
    let none = Ipv4Addr::UNSPECIFIED;
    write_arp(
        ETHERTYPE_RARP,
        MacAddr::BROADCAST,
        vid,
        ArpOp::RequestReverse,
        (*mac, none),
        (*mac, none),
        out,
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_announce_is_a_broadcast_rarp_from_the_mac_on_its_vlan() {
        let mac = MacAddr([2, 0, 0, 0, 0, 0xa]);
        let mut out = vec![9; 3];
        write_mac_announce(&mac, Some(20), &mut out);
        let v = parse(&out).unwrap();
        assert_eq!(
            (v.dst, v.src, v.tag.map(|t| t.vid())),
            (MacAddr::BROADCAST, mac, Some(20))
        );
        assert_eq!(&out[16..18], &[0x80, 0x35]);
        assert_eq!(out.len(), 60);
        assert_eq!(&out[18 + 8..18 + 14], &mac.0);
        assert_eq!(&out[18 + 18..18 + 24], &mac.0);
        write_mac_announce(&mac, None, &mut out);
        assert_eq!((out.len(), &out[12..14]), (60, &[0x80, 0x35][..]));
    }

    #[test]
    fn arp_requests_are_tagged_as_asked_and_replies_are_read_back() {
        let mac = MacAddr([0x02, 0x7e, 1, 2, 3, 4]);
        let t = Ipv4Addr::new(192, 168, 10, 1);
        let req = arp_request(
            (mac, Ipv4Addr::UNSPECIFIED),
            t,
            MacAddr::BROADCAST,
            Some(10),
        );
        let v = parse(&req).unwrap();
        assert_eq!((v.dst, v.src), (MacAddr::BROADCAST, mac));
        assert_eq!(v.tag.map(|t| t.vid()), Some(10));
        assert_eq!((req.len(), &req[16..18]), (60, &[0x08, 0x06][..]));
        let me = Ipv4Addr::new(192, 168, 10, 2);
        let untagged = arp_request((mac, me), t, MacAddr::BROADCAST, None);
        assert_eq!(untagged.len(), 60);
        #[rustfmt::skip]
        assert_eq!(&untagged[12..42], &[
            0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1, // ARP, Ethernet/IPv4, request
            0x02, 0x7e, 1, 2, 3, 4, 192, 168, 10, 2, // sender
            0, 0, 0, 0, 0, 0, 192, 168, 10, 1, // target
        ][..]);
        let v = parse(&untagged).unwrap();
        assert_eq!(arp_reply_sender(&untagged, &v), None, "a request");
        let mut reply = vec![];
        let router = MacAddr([2, 0, 0, 0, 0, 1]);
        write_arp(
            ETHERTYPE_ARP,
            mac,
            Some(10),
            ArpOp::Reply,
            (router, t),
            (mac, me),
            &mut reply,
        );
        let v = parse(&reply).unwrap();
        assert_eq!(arp_reply_sender(&reply, &v), Some((router, t)));
        for n in 0..reply.len() - 18 {
            let cut = &reply[..18 + n];
            let got = parse(cut).and_then(|v| arp_reply_sender(cut, &v));
            assert_eq!(got, (n >= 28).then_some((router, t)), "{n}");
        }
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
                dst: MacAddr::BROADCAST,
                src: MacAddr([2, 0, 0, 0, 0, 1]),
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

    /// Found by the `forward` fuzz target: a broadcast on VLAN 30 whose
    /// inner ethertype is 0x8100 again, with nothing after it, flooded to
    /// an untagged port. Only the outer tag is the switch's: untagged, the
    /// inner one shows, and cut short it no longer parses (the frame goes
    /// out as it came; nothing panics).
    #[test]
    fn untagging_a_qinq_frame_shows_its_inner_tag() {
        let mut qinq = [0xff; 12].to_vec();
        qinq.extend_from_slice(&[0x81, 0x00, 0x00, 0x1e, 0x81, 0x00]);
        let v = parse(&qinq).unwrap();
        assert_eq!(v.tag.map(|t| t.vid()), Some(30));
        let mut out = vec![];
        write_retagged(&qinq, &v, None, &mut out);
        assert_eq!((out.len(), &out[12..]), (14, &[0x81, 0x00][..]));
        assert!(parse(&out).is_none(), "an 802.1Q frame cut short");
        // With the inner tag there, it shows once the outer one is gone.
        qinq.extend_from_slice(&[0x00, 0x0a, 0x08, 0x00]);
        write_retagged(&qinq, &parse(&qinq).unwrap(), None, &mut out);
        assert_eq!(parse(&out).unwrap().tag.map(|t| t.vid()), Some(10));
    }

    #[test]
    fn append_keeps_what_is_there() {
        let t = parse(&TAGGED).unwrap();
        let mut out = vec![0xee; 8];
        append_retagged(&TAGGED, &t, None, &mut out);
        assert_eq!(&out[..8], &[0xee; 8]);
        assert_eq!(&out[8..], &UNTAGGED);
    }
}
