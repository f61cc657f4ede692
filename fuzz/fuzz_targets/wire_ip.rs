//! IPv4 (RFC 791), IPv6 (RFC 8200) with its extension-header walk, UDP
//! (RFC 768) and the Internet checksum. Property: a header that parses
//! emits to bytes that parse to the same header; a checksum filled in
//! verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use tunterm_core::wire::{checksum, ipv4, ipv6, mld, udp};

fuzz_target!(|data: &[u8]| {
    let _ = checksum::internet_checksum(data);
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (
            p.is_fragment(),
            p.more_frags(),
            p.frag_offset(),
            p.options(),
        );
        if let Ok(r) = ipv4::Repr::parse(&p) {
            let payload = p.payload();
            assert_eq!(payload.len(), r.payload_len);
            let mut out = Vec::new();
            r.append_to(&mut out);
            out.extend_from_slice(payload);
            let p2 = ipv4::Packet::new_checked(&out[..]).expect("emitted IPv4 checks");
            assert_eq!(ipv4::Repr::parse(&p2), Ok(r));
            udp_roundtrip(IpAddr::V4(r.src_addr), IpAddr::V4(r.dst_addr), payload);
        }
    }
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let r = ipv6::Repr::parse(&p).expect("a checked IPv6 packet parses");
        let payload = p.payload();
        let mut out = Vec::new();
        r.append_to(&mut out);
        out.extend_from_slice(payload);
        let p2 = ipv6::Packet::new_checked(&out[..]).expect("emitted IPv6 checks");
        assert_eq!(ipv6::Repr::parse(&p2), Ok(r));
        if let Some((_next, upper)) = mld::upper_layer(u8::from(r.next_header), payload) {
            assert!(upper.len() <= payload.len());
        }
        udp_roundtrip(IpAddr::V6(r.src_addr), IpAddr::V6(r.dst_addr), payload);
    }
});

fn udp_roundtrip(src: IpAddr, dst: IpAddr, bytes: &[u8]) {
    let Ok(p) = udp::Packet::new_checked(bytes) else {
        return;
    };
    let _ = p.verify_checksum(src, dst);
    let Ok(r) = udp::Repr::parse(&p) else {
        return;
    };
    let mut out = Vec::new();
    r.append_to(&mut out);
    out.extend_from_slice(&p.payload()[..r.payload_len]);
    let mut p2 = udp::Packet::new_checked(&mut out[..]).expect("emitted UDP checks");
    p2.fill_checksum(src, dst);
    let p2 = udp::Packet::new_checked(&out[..]).expect("emitted UDP checks");
    assert!(
        p2.verify_checksum(src, dst),
        "a filled-in UDP checksum verifies"
    );
    assert_eq!(udp::Repr::parse(&p2), Ok(r));
}
