//! ICMP as tunterm writes it: the "too big" answers (ICMPv4 fragmentation
//! needed, RFC 1191; ICMPv6 packet too big, RFC 4443), IPv4 fragmentation
//! of client frames and TCP MSS clamping, over arbitrary client frames
//! (untagged or 802.1Q). Properties: a reply is a frame an independent
//! parser (etherparse) reads, with valid IPv4 and ICMPv4 checksums;
//! fragments carry valid IPv4 headers and fit the MTU; clamping is
//! idempotent and never raises an MSS.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr};
use tunterm_core::proto::pmtu::{self, ClampResult, TooBig};
use tunterm_core::wire::{checksum, ether, ipv4};

fuzz_target!(|data: &[u8]| {
    let Some((mtu_bytes, frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mtu = u16::from_be_bytes(*mtu_bytes);
    let src4 = Some(Ipv4Addr::new(192, 0, 2, 1));
    let src6 = Some("2001:db8::1".parse::<Ipv6Addr>().unwrap());
    if let TooBig::Reply(reply) = pmtu::too_big_reply(frame, mtu, src4, src6) {
        etherparse::SlicedPacket::from_ethernet(&reply).expect("a too-big reply parses");
        let v = ether::parse(&reply).expect("a reply is Ethernet");
        let l3 = &reply[v.inner_offset + 2..];
        if reply[v.inner_offset..].starts_with(&[0x08, 0x00]) {
            let p = ipv4::Packet::new_checked(l3).expect("the reply's IPv4 header checks");
            ipv4::Repr::parse(&p).expect("the reply's IPv4 checksum verifies");
            assert_eq!(
                checksum::internet_checksum(p.payload()),
                0,
                "ICMPv4 checksum"
            );
        }
    }
    let mut frags = Vec::new();
    let n = pmtu::fragment_v4(frame, mtu, &mut frags);
    assert_eq!(n, frags.len());
    for f in &frags {
        let v = ether::parse(f).expect("a fragment is Ethernet");
        let l3 = &f[v.inner_offset + 2..];
        let p = ipv4::Packet::new_checked(l3).expect("a fragment's IPv4 header checks");
        ipv4::Repr::parse(&p).expect("a fragment's IPv4 checksum verifies");
        assert!(
            p.total_len() <= mtu,
            "fragment of {} over MTU {mtu}",
            p.total_len()
        );
    }
    let mut f = frame.to_vec();
    let (max4, max6) = (mtu.max(256), mtu.max(256).saturating_sub(20));
    if let ClampResult::Clamped { from, to } = pmtu::clamp_mss(&mut f, max4, max6) {
        assert!(to < from);
        assert_eq!(pmtu::clamp_mss(&mut f, max4, max6), ClampResult::Unchanged);
    }
});
