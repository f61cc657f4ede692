//! Test packet builders, independent of the code under test: the IPv4 and
//! IPv6 headers from etherparse; the L2TPv3 data header over UDP (RFC 3931
//! §4.1.2.1), the default L2-Specific Sublayer (RFC 4719) and GRE
//! (RFC 2784, 2890) written from the RFCs; the one Internet checksum
//! (RFC 1071) from tunterm-core.

use std::net::SocketAddrV4;

use etherparse::{
    IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, Ipv6Header, TcpHeader, UdpHeader,
};
pub use tunterm_core::wire::checksum::internet_checksum as checksum;
use tunterm_core::wire::udp;

pub type Mac = [u8; 6];

/// The edge's MAC on the AP-facing port, and the next hop's toward the APs.
pub const EDGE_MAC: Mac = [0x02, 0xed, 0, 0, 0, 1];
pub const GW_MAC: Mac = [0x02, 0x9a, 0, 0, 0, 1];

/// An Ethernet frame: `tci` is the whole Tag Control Information, so PCP
/// and DEI are explicit.
pub fn ether(dst: Mac, src: Mac, tci: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = tci {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client frame (IPv4 ethertype, `len` bytes of pattern after it).
pub fn client(dst: Mac, src: Mac, tci: Option<u16>, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    ether(dst, src, tci, 0x0800, &payload)
}

/// IPv4 header fields a case may vary.
#[derive(Clone, Copy, Debug)]
pub struct Ip {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Flags and fragment offset word (0x4000: DF).
    pub frag: u16,
    /// Bytes of IP options (multiple of 4).
    pub options: usize,
    pub protocol: u8,
}

impl Ip {
    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Ip {
            src,
            dst,
            frag: 0x4000,
            options: 0,
            protocol: 17,
        }
    }
}

/// Ethernet + IPv4 + UDP around `payload`, lengths and IP checksum right,
/// UDP checksum 0 (allowed over IPv4, and what L2TPv3 senders use).
pub fn udp4(ip: Ip, payload: &[u8]) -> Vec<u8> {
    let mut header = Ipv4Header::new(
        (8 + payload.len()) as u16,
        64,
        IpNumber(ip.protocol),
        ip.src.ip().octets(),
        ip.dst.ip().octets(),
    )
    .expect("a test packet fits IPv4");
    header.identification = 0x1234;
    header.dont_fragment = ip.frag & 0x4000 != 0;
    header.more_fragments = ip.frag & 0x2000 != 0;
    header.fragment_offset = IpFragOffset::try_new(ip.frag & 0x1fff).unwrap();
    // NOP options.
    header.options = Ipv4Options::try_from(&vec![1u8; ip.options][..]).expect("options ≤ 40 bytes");
    header
        .set_payload_len(8 + payload.len())
        .expect("a test packet fits IPv4");
    let mut h = Vec::with_capacity(60 + 8 + payload.len());
    header.write(&mut h).expect("writing to a Vec");
    let udp = UdpHeader {
        source_port: ip.src.port(),
        destination_port: ip.dst.port(),
        length: (8 + payload.len()) as u16,
        checksum: 0,
    };
    h.extend_from_slice(&udp.to_bytes());
    h.extend_from_slice(payload);
    ether(EDGE_MAC, GW_MAC, None, 0x0800, &h)
}

/// A client frame holding an IPv4 (id 1, DF, TTL 64) TCP segment without
/// options or payload from `ips.0` to `ips.1`, its checksums right.
pub fn tcp4(
    dst: Mac,
    src: Mac,
    tci: Option<u16>,
    ips: (std::net::Ipv4Addr, std::net::Ipv4Addr),
    mut tcp: TcpHeader,
) -> Vec<u8> {
    let mut ip = Ipv4Header::new(
        tcp.header_len() as u16,
        64,
        IpNumber::TCP,
        ips.0.octets(),
        ips.1.octets(),
    )
    .expect("a TCP header fits IPv4");
    ip.identification = 1;
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    tcp.checksum = tcp
        .calc_checksum_ipv4(&ip, &[])
        .expect("a TCP header fits IPv4");
    let mut p = ip.to_bytes().to_vec();
    p.extend_from_slice(&tcp.to_bytes());
    ether(dst, src, tci, 0x0800, &p)
}

/// An L2TPv3-over-UDP data message: flags 0x0003 (T clear, version 3),
/// reserved, session id, cookie, optional sublayer word, frame.
pub fn l2tp_data(sid: u32, cookie: &[u8], sublayer: Option<u32>, frame: &[u8]) -> Vec<u8> {
    let mut m = vec![0x00, 0x03, 0, 0];
    m.extend_from_slice(&sid.to_be_bytes());
    m.extend_from_slice(cookie);
    if let Some(w) = sublayer {
        m.extend_from_slice(&w.to_be_bytes());
    }
    m.extend_from_slice(frame);
    m
}

/// Rewrite the IP and UDP lengths (and the IP checksum) of a `udp4` packet
/// to match its current length: a short datagram sent as such, not a
/// truncated one.
pub fn fix_lengths(p: &mut [u8]) {
    let ip_len = p.len() - 14;
    let ihl = usize::from(p[14] & 0x0f) * 4;
    p[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
    p[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&p[14..14 + ihl]);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    let udp = 14 + ihl;
    p[udp + 4..udp + 6].copy_from_slice(&((ip_len - ihl) as u16).to_be_bytes());
}

/// What the kernel's receive path hands a UDP socket bound to port 1701,
/// modelled: the source and the datagram, or `None` when no datagram
/// reaches the socket as it stands (not IPv4/UDP to 1701, a bad header or
/// checksum, truncated, or a fragment waiting for reassembly).
pub fn kernel_udp_rx(p: &[u8]) -> Option<(SocketAddrV4, &[u8])> {
    if p.len() < 14 || p[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &p[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || ip.len() < ihl || total < ihl + 8 || total > ip.len() {
        return None;
    }
    if checksum(&ip[..ihl]) != 0 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || ip[9] != 17 {
        return None;
    }
    let udp = &ip[ihl..total];
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if u16::from_be_bytes([udp[2], udp[3]]) != 1701 || ulen < 8 || ulen > udp.len() {
        return None;
    }
    let src = SocketAddrV4::new(
        [ip[12], ip[13], ip[14], ip[15]].into(),
        u16::from_be_bytes([udp[0], udp[1]]),
    );
    Some((src, &udp[8..ulen]))
}

/// The outer source of a tunnel packet, as the kernel reports it to the
/// socket of protocol `proto` (17, 115 or 47).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rx<'a> {
    pub proto: u8,
    pub src: std::net::SocketAddr,
    pub dst: std::net::IpAddr,
    /// The UDP payload, or the IP payload for 115 and 47.
    pub payload: &'a [u8],
}

/// IPv6 header fields a case may vary.
#[derive(Clone, Copy, Debug)]
pub struct Ip6 {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    /// Extension headers to put first, as (next header, 8 bytes each).
    pub ext: Option<u8>,
}

/// Ethernet + IPv6 (+ one extension header of type `ip.ext`, 8 bytes,
/// whose next header is `next`) around `l4`.
pub fn ip6(ip: Ip6, next: u8, l4: &[u8]) -> Vec<u8> {
    let ext_len = if ip.ext.is_some() { 8 } else { 0 };
    let header = Ipv6Header {
        payload_length: (ext_len + l4.len()) as u16,
        next_header: IpNumber(ip.ext.unwrap_or(next)),
        hop_limit: 64,
        source: ip.src.octets(),
        destination: ip.dst.octets(),
        ..Default::default()
    };
    let mut h = header.to_bytes().to_vec();
    if ip.ext.is_some() {
        // A Destination Options header with one PadN option (RFC 8200 §4.2).
        h.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    h.extend_from_slice(l4);
    ether(EDGE_MAC, GW_MAC, None, 0x86dd, &h)
}

/// UDP over IPv6 with its (mandatory) checksum.
pub fn udp6(ip: Ip6, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    udp::Packet::new_unchecked(&mut u[..]).fill_checksum(ip.src.into(), ip.dst.into());
    ip6(ip, 17, &u)
}

/// Ethernet + IPv4 (no options, DF) of protocol `proto` around `payload`.
pub fn ip4(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = udp4(
        Ip {
            src: SocketAddrV4::new(src, 0),
            dst: SocketAddrV4::new(dst, 0),
            frag: 0x4000,
            options: 0,
            protocol: proto,
        },
        payload,
    );
    // udp4 put a UDP header in: take it out again.
    p.drain(34..42);
    fix_any_lengths(&mut p);
    p
}

/// An L2TPv3-over-IP data message (RFC 3931 §4.1.1.1): session id, cookie,
/// optional sublayer word, frame.
pub fn l2tp_ip_data(sid: u32, cookie: &[u8], sublayer: Option<u32>, frame: &[u8]) -> Vec<u8> {
    l2tp_data(sid, cookie, sublayer, frame).split_off(4)
}

/// A GRE packet (RFC 2784, RFC 2890): flags from the optional fields,
/// protocol, [checksum], [key], [sequence number], payload.
pub fn gre(proto: u16, csum: bool, key: Option<u32>, seq: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let mut flags = 0u16;
    if csum {
        flags |= 0x8000;
    }
    if key.is_some() {
        flags |= 0x2000;
    }
    if seq.is_some() {
        flags |= 0x1000;
    }
    let mut g = Vec::new();
    g.extend_from_slice(&flags.to_be_bytes());
    g.extend_from_slice(&proto.to_be_bytes());
    if csum {
        g.extend_from_slice(&[0; 4]);
    }
    for w in [key, seq].into_iter().flatten() {
        g.extend_from_slice(&w.to_be_bytes());
    }
    g.extend_from_slice(payload);
    if csum {
        let c = checksum(&g);
        g[4..6].copy_from_slice(&c.to_be_bytes());
    }
    g
}

/// Rewrite the lengths (and checksums) of an IPv4 or IPv6 packet from
/// these builders to match its current length.
pub fn fix_any_lengths(p: &mut [u8]) {
    if p[12..14] == [0x08, 0x00] {
        if p[23] == 17 {
            fix_lengths(p);
        } else {
            let ip_len = p.len() - 14;
            p[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
            p[24..26].copy_from_slice(&[0, 0]);
            let c = checksum(&p[14..34]);
            p[24..26].copy_from_slice(&c.to_be_bytes());
        }
        return;
    }
    let pl = p.len() - 54;
    p[18..20].copy_from_slice(&(pl as u16).to_be_bytes());
    if p[20] == 17 && pl >= 8 {
        p[58..60].copy_from_slice(&(pl as u16).to_be_bytes());
        let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&p[22..38]).unwrap());
        let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&p[38..54]).unwrap());
        udp::Packet::new_unchecked(&mut p[54..]).fill_checksum(src.into(), dst.into());
    }
}

/// What the kernel's receive path hands the tunnel sockets (UDP bound to
/// 1701, raw IP of protocols 115 and 47; IPv4 and IPv6), modelled: `None`
/// when nothing reaches them as the packet stands (not for them, a bad
/// header or checksum, truncated, a fragment waiting for reassembly). IPv6
/// extension headers the kernel walks (hop-by-hop, destination options)
/// are skipped, as it does; UDP over IPv6 needs a right, non-zero checksum.
pub fn kernel_rx(p: &[u8]) -> Option<Rx<'_>> {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    if p.len() < 14 {
        return None;
    }
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match [p[12], p[13]] {
        [0x08, 0x00] => {
            if let Some((src, payload)) = kernel_udp_rx(p) {
                let d = &p[30..34];
                return Some(Rx {
                    proto: 17,
                    src: SocketAddr::V4(src),
                    dst: IpAddr::from([d[0], d[1], d[2], d[3]]),
                    payload,
                });
            }
            let ip = &p[14..];
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ihl < 20 || ip.len() < ihl || total < ihl || total > ip.len() {
                return None;
            }
            if checksum(&ip[..ihl]) != 0 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return None;
            }
            if ip[9] != 115 && ip[9] != 47 {
                return None;
            }
            (
                IpAddr::from([ip[12], ip[13], ip[14], ip[15]]),
                IpAddr::from([ip[16], ip[17], ip[18], ip[19]]),
                ip[9],
                &ip[ihl..total],
            )
        }
        [0x86, 0xdd] => {
            let ip = &p[14..];
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let pl = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + pl > ip.len() {
                return None;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            let mut next = ip[6];
            let mut rest = &ip[40..40 + pl];
            while next == 0 || next == 60 {
                if rest.len() < 8 {
                    return None;
                }
                let len = (usize::from(rest[1]) + 1) * 8;
                if rest.len() < len {
                    return None;
                }
                next = rest[0];
                rest = &rest[len..];
            }
            if next == 17 {
                if rest.len() < 8 {
                    return None;
                }
                let ulen = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
                let csum = u16::from_be_bytes([rest[6], rest[7]]);
                if u16::from_be_bytes([rest[2], rest[3]]) != 1701 || ulen < 8 || ulen > rest.len() {
                    return None;
                }
                let datagram = udp::Packet::new_unchecked(&rest[..ulen]);
                if csum == 0 || !datagram.verify_checksum(src.into(), dst.into()) {
                    return None;
                }
                return Some(Rx {
                    proto: 17,
                    src: SocketAddr::new(IpAddr::V6(src), u16::from_be_bytes([rest[0], rest[1]])),
                    dst: IpAddr::V6(dst),
                    payload: &rest[8..ulen],
                });
            }
            if next != 115 && next != 47 {
                return None;
            }
            (IpAddr::V6(src), IpAddr::V6(dst), next, rest)
        }
        _ => return None,
    };
    Some(Rx {
        proto,
        src: SocketAddr::new(src, 0),
        dst,
        payload: l4,
    })
}
