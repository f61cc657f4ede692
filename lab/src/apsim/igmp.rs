//! A synthetic client's IPv4 group membership (`tunterm-apsim --join-group`)
//! and the frames of a group stream, for the multicast scale bench: an
//! IGMPv3 report that joins a group, the recognition of queries and of the
//! group's data in what the edge sends down a tunnel, and a UDP datagram to
//! the group as an upstream sender puts it on the trunk.

use std::net::Ipv4Addr;

use tunterm_core::wire::checksum::internet_checksum;
use tunterm_core::wire::ether::{self, MacAddr};
use tunterm_core::wire::igmp::{self, Repr};

/// UDP destination port of [`data_frame`].
pub const DATA_PORT: u16 = 5001;

/// The Ethernet multicast MAC of an IPv4 group (RFC 1112 §6.4).
pub fn group_mac(group: Ipv4Addr) -> MacAddr {
    let [_, b, c, d] = group.octets();
    MacAddr([0x01, 0x00, 0x5e, b & 0x7f, c, d])
}

/// Ethernet header (tagged with `vlan` if given) and an IPv4 header with
/// `options` to `dst`, TTL `ttl`, for `payload_len` bytes of `proto`.
fn ipv4_frame(
    src: (MacAddr, Ipv4Addr),
    dst: Ipv4Addr,
    vlan: Option<u16>,
    (proto, ttl, options): (u8, u8, &[u8]),
    payload_len: usize,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + payload_len);
    f.extend_from_slice(&group_mac(dst).octets());
    f.extend_from_slice(&src.0.octets());
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let ip = f.len();
    let hl = 20 + options.len();
    f.push(0x40 | (hl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&((hl + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, ttl, proto, 0, 0]);
    f.extend_from_slice(&src.1.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(options);
    let sum = internet_checksum(&f[ip..ip + hl]);
    f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    f
}

/// An IGMPv3 Membership Report from `src` joining `group` (one
/// CHANGE_TO_EXCLUDE record with no source, as Linux sends on a join; the
/// same record answers a query), to 224.0.0.22 with Router Alert.
pub fn report_v3(src: (MacAddr, Ipv4Addr), group: Ipv4Addr, vlan: Option<u16>) -> Vec<u8> {
    let mut msg = vec![igmp::TYPE_REPORT_V3, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
    msg.extend_from_slice(&group.octets());
    let sum = internet_checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = ipv4_frame(
        src,
        igmp::V3_ROUTERS,
        vlan,
        (igmp::PROTOCOL, 1, &[0x94, 0x04, 0, 0]),
        msg.len(),
    );
    f.extend_from_slice(&msg);
    f
}

/// A UDP datagram of `payload_len` bytes from `src` to `group`, port
/// [`DATA_PORT`] (TTL 16, no UDP checksum).
pub fn data_frame(
    src: (MacAddr, Ipv4Addr),
    group: Ipv4Addr,
    vlan: Option<u16>,
    payload_len: usize,
) -> Vec<u8> {
    let mut f = ipv4_frame(src, group, vlan, (17, 16, &[]), 8 + payload_len);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&DATA_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload_len, 0x5a);
    f
}

/// What a frame from the edge is to a member of `group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// An IGMP query that asks about `group` (general or for it).
    Query,
    /// Data to `group` (anything but IGMP).
    Data,
    /// Anything else.
    Other,
}

/// Classify `frame` (tagged or not) for a member of `group`.
pub fn classify(frame: &[u8], group: Ipv4Addr) -> Heard {
    let Some(view) = ether::parse(frame) else {
        return Heard::Other;
    };
    let rest = &frame[view.inner_offset..];
    if rest.len() < 22 || rest[..2] != [0x08, 0x00] || view.dst.0[0] & 1 == 0 {
        return Heard::Other;
    }
    let ip = &rest[2..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    if hl < 20 || ip.len() < hl {
        return Heard::Other;
    }
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if ip[9] != igmp::PROTOCOL {
        return if dst == group {
            Heard::Data
        } else {
            Heard::Other
        };
    }
    match Repr::parse(&ip[hl..]) {
        Ok(Repr::Query { group: g, .. }) if g.is_unspecified() || g == group => Heard::Query,
        _ => Heard::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    const SRC: (MacAddr, Ipv4Addr) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 200, 0, 1));

    #[test]
    fn a_report_is_linux_s_join_in_a_tagged_frame() {
        let f = report_v3(SRC, G, Some(10));
        assert_eq!(&f[..6], &[0x01, 0x00, 0x5e, 0, 0, 22]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0, 10]);
        // IHL 6, router alert, checksum that verifies.
        assert_eq!(f[18], 0x46);
        assert_eq!(internet_checksum(&f[18..42]), 0);
        // The message of wire/igmp's test vector (Linux joining 239.1.2.3).
        assert_eq!(
            &f[42..],
            &[0x22, 0, 0xe8, 0xf9, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 2, 3]
        );
    }

    #[test]
    fn data_and_queries_are_told_apart() {
        let data = data_frame(SRC, G, Some(10), 100);
        assert_eq!(classify(&data, G), Heard::Data);
        assert_eq!(classify(&data, Ipv4Addr::new(239, 1, 2, 4)), Heard::Other);
        let untagged = data_frame(SRC, G, None, 0);
        assert_eq!(classify(&untagged, G), Heard::Data);
        // A report is IGMP, not data, and not a query.
        assert_eq!(classify(&report_v3(SRC, G, None), G), Heard::Other);
        let mut q = ipv4_frame(SRC, igmp::ALL_SYSTEMS, Some(10), (2, 1, &[]), 12);
        igmp::Query {
            version: igmp::Version::V3,
            max_resp: 100,
            group: Ipv4Addr::UNSPECIFIED,
            qrv: 2,
            qqi: 125,
        }
        .append_to(&mut q);
        assert_eq!(classify(&q, G), Heard::Query);
        assert_eq!(classify(&q[..30], G), Heard::Other);
        assert_eq!(classify(&[0u8; 10], G), Heard::Other);
    }
}
