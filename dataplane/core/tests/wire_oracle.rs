//! etherparse as an independent oracle for `wire/`: for the same bytes, our
//! views and etherparse agree on whether each layer parses and on every
//! field both read — Ethernet and the 802.1Q tag, IPv4, IPv6 and UDP.
//!
//! The bytes: a corpus of realistic frames (below) and the frames our own
//! builders emit (DHCP relay replies, ICMP too-big replies, IPv4 fragments,
//! ARP probes, MAC announcements), each whole, cut at every length and with
//! every single bit of its first 80 bytes flipped.
//!
//! Where the two differ on purpose, the test says so: only TPID 0x8100 is a
//! tag to us (etherparse also reads 0x88a8 and 0x9100); a UDP length of 0
//! (the IPv6 jumbogram convention) is malformed to us; etherparse walks an
//! IPv4 authentication header, we do not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv4Slice, Ipv6HeaderSlice, SingleVlanHeaderSlice,
    UdpSlice,
};
use tunterm_core::proto::pmtu::{TooBig, fragment_v4, too_big_reply};
use tunterm_core::wire::dhcp::{UdpFrame, emit_udp_frame};
use tunterm_core::wire::ether::{self, MacAddr};
use tunterm_core::wire::{ipv4, ipv6, udp};

/// What the comparisons covered, so the test can insist every layer was
/// reached (and not silently skipped).
#[derive(Debug, Default)]
struct Coverage {
    frames: usize,
    ether_both: usize,
    ether_neither: usize,
    tagged: usize,
    ipv4_both: usize,
    ipv4_neither: usize,
    ipv4_checksum_ok: usize,
    ipv4_checksum_bad: usize,
    ipv6_both: usize,
    ipv6_neither: usize,
    udp_both: usize,
    udp_neither: usize,
    udp_checksum_ok: usize,
    udp_checksum_bad: usize,
}

/// Compare our views with etherparse on one frame; panics with `what` and
/// the bytes at the first disagreement.
fn agree(what: &str, f: &[u8], cov: &mut Coverage) {
    cov.frames += 1;
    let ctx = || format!("{what}: {} bytes {f:02x?}", f.len());
    let theirs = Ethernet2HeaderSlice::from_slice(f).ok();
    let ours = ether::parse(f);
    let Some(eth) = theirs else {
        assert!(
            ours.is_none(),
            "ours parsed Ethernet, etherparse not: {}",
            ctx()
        );
        cov.ether_neither += 1;
        return;
    };
    // etherparse reads the tag separately: a frame with TPID 0x8100 but no
    // room for it is Ethernet to etherparse, nothing to us.
    let tag_theirs =
        (eth.ether_type().0 == 0x8100).then(|| SingleVlanHeaderSlice::from_slice(&f[14..]).ok());
    let Some(v) = ours else {
        assert!(
            matches!(tag_theirs, Some(None)),
            "ours refused, etherparse parsed: {}",
            ctx()
        );
        cov.ether_neither += 1;
        return;
    };
    cov.ether_both += 1;
    assert_eq!(v.dst, MacAddr(eth.destination()), "dst {}", ctx());
    assert_eq!(v.src, MacAddr(eth.source()), "src {}", ctx());
    let ethertype = match tag_theirs {
        None => {
            assert_eq!(v.tag, None, "{}", ctx());
            assert_eq!(v.inner_offset, 12, "{}", ctx());
            eth.ether_type().0
        }
        Some(None) => panic!("ours parsed a tag etherparse could not: {}", ctx()),
        Some(Some(t)) => {
            cov.tagged += 1;
            let tci = v.tag.expect("tag");
            assert_eq!(tci.pcp(), t.priority_code_point().value(), "PCP {}", ctx());
            assert_eq!(tci.dei(), t.drop_eligible_indicator(), "DEI {}", ctx());
            assert_eq!(tci.vid(), t.vlan_identifier().value(), "VID {}", ctx());
            assert_eq!(v.inner_offset, 16, "{}", ctx());
            t.ether_type().0
        }
    };
    let at = v.inner_offset;
    assert_eq!(
        u16::from_be_bytes([f[at], f[at + 1]]),
        ethertype,
        "ethertype {}",
        ctx()
    );
    let l3 = &f[at + 2..];
    match ethertype {
        0x0800 => agree_ipv4(l3, cov, &ctx),
        0x86dd => agree_ipv6(l3, cov, &ctx),
        _ => {}
    }
}

fn agree_ipv4(l3: &[u8], cov: &mut Coverage, ctx: &dyn Fn() -> String) {
    let ours = ipv4::Packet::new_checked(l3);
    let theirs = Ipv4Slice::from_slice(l3);
    let (p, s) = match (ours, theirs) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(_), Err(_)) => {
            cov.ipv4_neither += 1;
            return;
        }
        // etherparse also parses an authentication header (protocol 51)
        // and refuses the packet when that header is short.
        (Ok(p), Err(_)) if p.protocol() == ipv4::Protocol::Unknown(51) => return,
        (o, t) => panic!(
            "IPv4: ours {:?}, etherparse {:?}: {}",
            o.err(),
            t.err(),
            ctx()
        ),
    };
    cov.ipv4_both += 1;
    let h: Ipv4HeaderSlice = s.header();
    assert_eq!(p.version(), h.version(), "{}", ctx());
    assert_eq!(p.header_len(), usize::from(h.ihl()) * 4, "{}", ctx());
    assert_eq!(
        p.dscp_ecn(),
        (h.dcp().value() << 2) | h.ecn().value(),
        "{}",
        ctx()
    );
    assert_eq!(p.total_len(), h.total_len(), "{}", ctx());
    assert_eq!(p.ident(), h.identification(), "{}", ctx());
    assert_eq!(p.dont_frag(), h.dont_fragment(), "{}", ctx());
    assert_eq!(p.more_frags(), h.more_fragments(), "{}", ctx());
    assert_eq!(
        p.frag_offset(),
        h.fragments_offset().value() * 8,
        "{}",
        ctx()
    );
    assert_eq!(p.is_fragment(), h.is_fragmenting_payload(), "{}", ctx());
    assert_eq!(p.ttl(), h.ttl(), "{}", ctx());
    assert_eq!(u8::from(p.protocol()), h.protocol().0, "{}", ctx());
    assert_eq!(p.checksum(), h.header_checksum(), "{}", ctx());
    assert_eq!(p.src_addr(), h.source_addr(), "{}", ctx());
    assert_eq!(p.dst_addr(), h.destination_addr(), "{}", ctx());
    assert_eq!(p.options(), h.options(), "{}", ctx());
    // etherparse's own ones' complement sum over the header as it is (its
    // `Ipv4Header` drops the reserved flag bit, so it cannot recompute a
    // header that has it set).
    let sum = etherparse::checksum::Sum16BitWords::new().add_slice(h.slice());
    assert_eq!(
        p.verify_checksum(),
        sum.ones_complement() == 0,
        "IPv4 checksum {}",
        ctx()
    );
    if p.flags_frag() & 0x8000 == 0 && p.verify_checksum() && p.checksum() != 0xffff {
        assert_eq!(
            h.to_header().calc_header_checksum(),
            p.checksum(),
            "{}",
            ctx()
        );
    }
    if p.verify_checksum() {
        cov.ipv4_checksum_ok += 1;
        let r = ipv4::Repr::parse(&p).expect("a verified header parses");
        assert_eq!(r.payload_len, s.payload().payload.len(), "{}", ctx());
    } else {
        cov.ipv4_checksum_bad += 1;
    }
    if p.protocol() == ipv4::Protocol::Unknown(51) {
        return;
    }
    assert_eq!(p.payload(), s.payload().payload, "IPv4 payload {}", ctx());
    if p.protocol() == ipv4::Protocol::Udp && !p.is_fragment() {
        let (src, dst) = (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()));
        agree_udp(p.payload(), (src, dst), cov, ctx);
    }
}

fn agree_ipv6(l3: &[u8], cov: &mut Coverage, ctx: &dyn Fn() -> String) {
    let ours = ipv6::Packet::new_checked(l3);
    // The fixed header only: etherparse's Ipv6Slice also walks extension
    // headers, which are payload to us.
    let theirs = Ipv6HeaderSlice::from_slice(l3)
        .ok()
        .filter(|h| l3.len() >= 40 + usize::from(h.payload_length()));
    let (p, h) = match (ours, theirs) {
        (Ok(p), Some(h)) => (p, h),
        (Err(_), None) => {
            cov.ipv6_neither += 1;
            return;
        }
        (o, t) => panic!(
            "IPv6: ours {:?}, etherparse {:?}: {}",
            o.err(),
            t.is_some(),
            ctx()
        ),
    };
    cov.ipv6_both += 1;
    assert_eq!(p.version(), h.version(), "{}", ctx());
    assert_eq!(p.traffic_class(), h.traffic_class(), "{}", ctx());
    assert_eq!(p.flow_label(), h.flow_label().value(), "{}", ctx());
    assert_eq!(p.payload_len(), h.payload_length(), "{}", ctx());
    assert_eq!(u8::from(p.next_header()), h.next_header().0, "{}", ctx());
    assert_eq!(p.hop_limit(), h.hop_limit(), "{}", ctx());
    assert_eq!(p.src_addr(), Ipv6Addr::from(h.source()), "{}", ctx());
    assert_eq!(p.dst_addr(), Ipv6Addr::from(h.destination()), "{}", ctx());
    let r = ipv6::Repr::parse(&p).unwrap();
    assert_eq!(r.payload_len, usize::from(h.payload_length()), "{}", ctx());
    assert_eq!(p.payload(), &l3[40..40 + r.payload_len], "{}", ctx());
    if p.next_header() == ipv6::Protocol::Udp {
        let (src, dst) = (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()));
        agree_udp(p.payload(), (src, dst), cov, ctx);
    }
}

fn agree_udp(
    l4: &[u8],
    (src, dst): (IpAddr, IpAddr),
    cov: &mut Coverage,
    ctx: &dyn Fn() -> String,
) {
    let ours = udp::Packet::new_checked(l4);
    let theirs = UdpSlice::from_slice(l4);
    let (p, s) = match (ours, theirs) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(_), Err(_)) => {
            cov.udp_neither += 1;
            return;
        }
        // Length 0: "as long as the IP payload" to etherparse (RFC 2675
        // jumbograms); malformed to us, who never see jumbograms.
        (Err(udp::Error::Malformed), Ok(s)) if s.length() == 0 => return,
        (o, t) => panic!(
            "UDP: ours {:?}, etherparse {:?}: {}",
            o.err(),
            t.err(),
            ctx()
        ),
    };
    cov.udp_both += 1;
    assert_eq!(p.src_port(), s.source_port(), "{}", ctx());
    assert_eq!(p.dst_port(), s.destination_port(), "{}", ctx());
    assert_eq!(p.len(), s.length(), "{}", ctx());
    assert_eq!(p.checksum(), s.checksum(), "{}", ctx());
    assert_eq!(p.payload(), s.payload(), "{}", ctx());
    let r = udp::Repr::parse(&p).unwrap();
    assert_eq!(r.payload_len, s.payload().len(), "{}", ctx());
    let header = s.to_header();
    let want = match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            header.calc_checksum_ipv4_raw(a.octets(), b.octets(), s.payload())
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            header.calc_checksum_ipv6_raw(a.octets(), b.octets(), s.payload())
        }
        _ => unreachable!(),
    }
    .unwrap();
    let none_v4 = src.is_ipv4() && p.checksum() == 0;
    // As for IPv4 headers: a written 0x0000 or 0xffff may both be zero.
    if !none_v4 && p.checksum() != 0 && p.checksum() != 0xffff {
        assert_eq!(
            p.verify_checksum(src, dst),
            want == p.checksum(),
            "UDP checksum (etherparse computes {want:#06x}) {}",
            ctx()
        );
    }
    if p.verify_checksum(src, dst) {
        cov.udp_checksum_ok += 1;
    } else {
        cov.udp_checksum_bad += 1;
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Frames that tunterm-core's own builders emit.
fn built_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut f = Vec::new();
    emit_udp_frame(
        &UdpFrame {
            src_mac: MacAddr([2, 0xee, 0, 0, 0, 10]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
            src: (Ipv4Addr::new(192, 168, 10, 2), 67),
            dst: (Ipv4Addr::new(192, 168, 10, 50), 68),
        },
        &[0x02; 300],
        &mut f,
    );
    out.push(("DHCP reply from emit_udp_frame".into(), f.clone()));
    let mac = MacAddr([0x02, 0x7e, 1, 2, 3, 4]);
    for vid in [None, Some(10)] {
        let sender = (mac, Ipv4Addr::new(192, 168, 10, 2));
        let arp = ether::arp_request(
            sender,
            Ipv4Addr::new(192, 168, 10, 1),
            MacAddr::BROADCAST,
            vid,
        );
        out.push((format!("ARP probe, tag {vid:?}"), arp));
        ether::write_mac_announce(&mac, vid, &mut f);
        out.push((format!("MAC announcement, tag {vid:?}"), f.clone()));
    }
    // Big client frames for the too-big replies and the fragmenter.
    for (df, vid) in [(true, Some(10)), (false, None)] {
        let mut frame = hex("020000000002020000000001");
        if let Some(v) = vid {
            frame.extend_from_slice(&[0x81, 0x00, 0, v as u8]);
        }
        frame.extend_from_slice(&[0x08, 0x00]);
        let payload = vec![0x5a; 1472];
        let udp_at = frame.len() + 20;
        ipv4::Repr {
            src_addr: Ipv4Addr::new(192, 168, 10, 11),
            dst_addr: Ipv4Addr::new(192, 168, 10, 1),
            protocol: ipv4::Protocol::Udp,
            payload_len: 8 + payload.len(),
            ttl: 64,
            ident: 7,
            dont_frag: df,
            dscp_ecn: 0,
        }
        .append_to(&mut frame);
        udp::Repr {
            src_port: 5000,
            dst_port: 9,
            payload_len: payload.len(),
        }
        .append_to(&mut frame);
        frame.extend_from_slice(&payload);
        udp::Packet::new_unchecked(&mut frame[udp_at..]).fill_checksum(
            Ipv4Addr::new(192, 168, 10, 11).into(),
            Ipv4Addr::new(192, 168, 10, 1).into(),
        );
        out.push((format!("big client frame, DF {df}"), frame.clone()));
        if let TooBig::Reply(r) =
            too_big_reply(&frame, 1400, Some(Ipv4Addr::new(10, 99, 0, 1)), None)
        {
            out.push(("ICMP fragmentation needed".into(), r));
        }
        let mut frags = Vec::new();
        fragment_v4(&frame, 1400, &mut frags);
        for (i, fr) in frags.into_iter().enumerate() {
            out.push((format!("fragment {i}"), fr));
        }
    }
    let mut v6 = hex("02000000000202000000000186dd");
    let l4 = vec![0x11; 1452];
    ipv6::Repr {
        src_addr: "2001:db8::11".parse().unwrap(),
        dst_addr: "2001:db8::1".parse().unwrap(),
        next_header: ipv6::Protocol::Udp,
        payload_len: l4.len(),
        hop_limit: 64,
    }
    .append_to(&mut v6);
    v6.extend_from_slice(&l4);
    if let TooBig::Reply(r) = too_big_reply(&v6, 1400, None, None) {
        out.push(("ICMPv6 packet too big".into(), r));
    }
    out
}

include!("wire_oracle/corpus.rs");

#[test]
fn wire_and_etherparse_agree_on_whole_cut_and_flipped_frames() {
    let mut frames: Vec<(String, Vec<u8>)> = CORPUS
        .iter()
        .map(|(name, h)| (name.to_string(), hex(h)))
        .collect();
    frames.extend(built_frames());
    assert!(frames.len() >= 25, "{} frames", frames.len());
    let mut cov = Coverage::default();
    for (name, frame) in &frames {
        agree(name, frame, &mut cov);
        for n in 0..frame.len() {
            agree(&format!("{name}, cut to {n}"), &frame[..n], &mut cov);
        }
        for i in 0..frame.len().min(80) {
            for bit in 0..8 {
                let mut b = frame.clone();
                b[i] ^= 1 << bit;
                agree(&format!("{name}, byte {i} bit {bit} flipped"), &b, &mut cov);
            }
        }
    }
    eprintln!("{cov:#?}");
    // Every layer was compared both ways: parsed by both, refused by both,
    // with checksums right and wrong.
    for (what, n) in [
        ("ether_both", cov.ether_both),
        ("ether_neither", cov.ether_neither),
        ("tagged", cov.tagged),
        ("ipv4_both", cov.ipv4_both),
        ("ipv4_neither", cov.ipv4_neither),
        ("ipv4_checksum_ok", cov.ipv4_checksum_ok),
        ("ipv4_checksum_bad", cov.ipv4_checksum_bad),
        ("ipv6_both", cov.ipv6_both),
        ("ipv6_neither", cov.ipv6_neither),
        ("udp_both", cov.udp_both),
        ("udp_neither", cov.udp_neither),
        ("udp_checksum_ok", cov.udp_checksum_ok),
        ("udp_checksum_bad", cov.udp_checksum_bad),
    ] {
        assert!(n >= 20, "{what}: only {n} cases");
    }
}
