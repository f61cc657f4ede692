//! The AP side of Cisco-style GRE keepalives: the probe an mGRE AP sends and
//! the test that a packet is the edge's reflection of one. The edge side
//! (reflecting to the sender only) is `tunterm_core::proto::gre`.
//!
//! A probe is a GRE packet of protocol type 0x0800 (0x86DD over IPv6) whose
//! payload is an IP packet from the edge's address to the AP's, carrying a
//! GRE header of protocol type 0: the edge decapsulates and routes the inner
//! packet, which takes it back to the AP.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Header, Ipv6Header};
use tunterm_core::wire::gre::{self, GreHeader};

/// TTL / hop limit of the inner packet.
const PROBE_TTL: u8 = 255;

/// The keepalive an AP at `local` sends to the edge at `remote`: a GRE
/// packet to hand to a raw IP socket of protocol 47. Inside: an IPv4 packet
/// (an IPv6 one if either address is IPv6, an IPv4 address then written
/// IPv4-mapped) from `remote` to `local` carrying a GRE header of protocol
/// type 0. `key` goes in both GRE headers.
pub fn keepalive_probe(local: IpAddr, remote: IpAddr, key: Option<u32>) -> Vec<u8> {
    let mut reply = Vec::with_capacity(gre::MAX_HEADER_LEN);
    let reply_header = GreHeader {
        key,
        ..GreHeader::new(gre::PROTO_KEEPALIVE)
    };
    gre::emit_packet(&reply_header, &[], &mut reply);
    let mut ip = Vec::with_capacity(Ipv6Header::LEN + reply.len());
    // The inner header is at most 40 + 12 bytes: never too big to build.
    let protocol = match (local.to_canonical(), remote.to_canonical()) {
        (IpAddr::V4(local), IpAddr::V4(remote)) => {
            let mut h = Ipv4Header::new(
                reply.len() as u16,
                PROBE_TTL,
                IpNumber::GRE,
                remote.octets(),
                local.octets(),
            )
            .expect("a 52-byte packet fits IPv4");
            h.dont_fragment = false;
            h.write(&mut ip).expect("writing to a Vec");
            gre::PROTO_IPV4
        }
        _ => {
            let v6 = |a: IpAddr| -> Ipv6Addr {
                match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                    IpAddr::V6(a) => a,
                }
            };
            let h = Ipv6Header {
                payload_length: reply.len() as u16,
                next_header: IpNumber::GRE,
                hop_limit: PROBE_TTL,
                source: v6(remote).octets(),
                destination: v6(local).octets(),
                ..Default::default()
            };
            ip.extend_from_slice(&h.to_bytes());
            gre::PROTO_IPV6
        }
    };
    ip.extend_from_slice(&reply);
    let outer = GreHeader {
        key,
        ..GreHeader::new(protocol)
    };
    let mut out = Vec::with_capacity(outer.header_len() + ip.len());
    gre::emit_packet(&outer, &ip, &mut out);
    out
}

/// Whether a GRE packet (IP payload) is a reflected keepalive: a valid GRE
/// header of protocol type 0.
pub fn is_keepalive_reply(bytes: &[u8]) -> bool {
    matches!(gre::parse(bytes), Ok(p) if p.header.protocol == gre::PROTO_KEEPALIVE)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tunterm_core::proto::gre::{GreConfig, GreEndpoint, GreEvent, GreIncoming, PeerKey};

    use tunterm_core::wire::{ipv4, ipv6};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Read back with tunterm-core's views (the edge-side test in
    /// `proto/gre.rs` pins the same probe to a byte literal).
    #[test]
    fn probe_reads_back_as_gre_around_ip_around_gre_0() {
        let probe = keepalive_probe(ip("198.51.100.10"), ip("192.0.2.1"), Some(9));
        let outer = gre::parse(&probe).unwrap();
        assert_eq!(
            (outer.header.protocol, outer.header.key),
            (gre::PROTO_IPV4, Some(9))
        );
        let inner = ipv4::Packet::new_checked(outer.payload).unwrap();
        let r = ipv4::Repr::parse(&inner).unwrap();
        assert_eq!(
            (r.src_addr, r.dst_addr),
            (
                "192.0.2.1".parse().unwrap(),
                "198.51.100.10".parse().unwrap()
            )
        );
        assert_eq!(
            (r.protocol, r.ttl, r.dont_frag),
            (ipv4::Protocol::Gre, 255, false)
        );
        let reply = gre::parse(inner.payload()).unwrap();
        assert_eq!(
            (reply.header.protocol, reply.header.key),
            (gre::PROTO_KEEPALIVE, Some(9))
        );
        assert!(reply.payload.is_empty());

        let probe = keepalive_probe(ip("2001:db8:1::5"), ip("2001:db8::1"), None);
        let outer = gre::parse(&probe).unwrap();
        assert_eq!(outer.header.protocol, gre::PROTO_IPV6);
        let inner = ipv6::Repr::parse(&ipv6::Packet::new_checked(outer.payload).unwrap()).unwrap();
        assert_eq!(
            (inner.src_addr, inner.dst_addr),
            (
                "2001:db8::1".parse().unwrap(),
                "2001:db8:1::5".parse().unwrap()
            )
        );
        assert_eq!(
            (inner.next_header, inner.hop_limit, inner.payload_len),
            (ipv6::Protocol::Gre, 255, 4)
        );
        // An IPv4 AP behind an IPv6 edge: the inner packet is IPv6, mapped.
        let mixed = keepalive_probe(ip("198.51.100.10"), ip("2001:db8::1"), None);
        assert_eq!(gre::parse(&mixed).unwrap().header.protocol, gre::PROTO_IPV6);
    }

    /// The probe goes through the edge's endpoint and comes back as a
    /// reply the AP recognises; the probe itself is not one.
    #[test]
    fn the_edge_reflects_a_probe_as_a_reply() {
        let t0 = Instant::now();
        for (ap, edge, key) in [
            ("198.51.100.10", "192.0.2.1", None),
            ("198.51.100.10", "192.0.2.1", Some(0x1234)),
            ("2001:db8:1::5", "2001:db8::1", None),
            ("2001:db8:1::5", "2001:db8::1", Some(7)),
        ] {
            let mut e = GreEndpoint::new(GreConfig::default());
            let probe = keepalive_probe(ip(ap), ip(edge), key);
            assert!(!is_keepalive_reply(&probe));
            assert_eq!(
                e.handle_packet(t0, ip(ap), ip(edge), &probe),
                GreIncoming::Keepalive
            );
            let ev: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
            assert!(
                matches!(ev[..], [GreEvent::PeerUp { peer, .. }] if peer == PeerKey { addr: ip(ap), key }),
                "{ev:?}"
            );
            let (dst, reply) = e.poll_transmit().unwrap();
            assert_eq!(dst, ip(ap));
            assert!(is_keepalive_reply(&reply));
            assert_eq!(gre::parse(&reply).unwrap().header.key, key);
        }
        assert!(!is_keepalive_reply(&[0, 0]));
    }
}
