//! Test packet builders, written from the RFCs independently of the code
//! under test: Ethernet II / 802.1Q, IPv4 (RFC 791), UDP (RFC 768), L2TPv3
//! data header over UDP (RFC 3931 §4.1.2.1) and the default L2-Specific
//! Sublayer (RFC 4719).

use std::net::SocketAddrV4;

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

/// The RFC 1071 checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in bytes.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
    let ihl = 20 + ip.options;
    let total = ihl + 8 + payload.len();
    let mut h = vec![0u8; ihl];
    h[0] = 0x40 | (ihl / 4) as u8;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&ip.frag.to_be_bytes());
    h[8] = 64;
    h[9] = ip.protocol;
    h[12..16].copy_from_slice(&ip.src.ip().octets());
    h[16..20].copy_from_slice(&ip.dst.ip().octets());
    for b in &mut h[20..] {
        *b = 1; // NOP options
    }
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(&ip.src.port().to_be_bytes());
    h.extend_from_slice(&ip.dst.port().to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    ether(EDGE_MAC, GW_MAC, None, 0x0800, &h)
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
