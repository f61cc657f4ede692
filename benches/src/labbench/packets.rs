//! The frames the generator sends, and trafgen's configuration format.
//!
//! A *client frame* of length `L` is the untagged Ethernet frame a client
//! sends or receives (no FCS): IPv4/UDP, zero payload. Around it:
//!
//! ```text
//! AP→trunk, L2TPv3: | Eth 14 | IPv4 20 | UDP 20→1701 8 | L2TP 8 + cookie | client frame L |
//! AP→trunk, L2TPv3/IP (`--transport ip`): | Eth 14 | IPv4 20, protocol 115 | session id 4 + cookie | client frame L |
//! AP→trunk, VXLAN:  | Eth 14 | IPv4 20 | UDP →4789 8   | VXLAN 8         | client frame L |
//! trunk→AP, tunterm: client frame with an 802.1Q tag (L + 4)
//! trunk→AP, VXLAN bridge: the client frame untagged (L)
//! ```

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, SingleVlanHeader, UdpHeader, VlanId,
};
use tunterm_core::wire::ether::{self, MacAddr};

/// IPv4 of the edge on the AP-facing link.
pub const EDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// IPv4 of the simulated APs (all of them share it, one UDP port each).
pub const AP_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// MAC of the host on the trunk the clients talk to.
pub const TRUNK_HOST_MAC: [u8; 6] = [0x02, 0x74, 0x74, 0x00, 0x00, 0x01];
/// IPv4 of that host (inner destination of the clients' packets).
pub const TRUNK_HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
/// The clients' VLAN: the mxtunnel's first (default) VLAN, tagged on the
/// trunk (native VLAN 1).
pub const CLIENT_VLAN: u16 = 10;
/// The VXLAN network identifier of case 2.
pub const VNI: u32 = 10;
/// IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// L2TP over UDP.
pub const L2TP_PORT: u16 = 1701;
/// The shortest client frame: Ethernet + IPv4 + UDP headers.
pub const MIN_CLIENT_FRAME: usize = 14 + 20 + 8;
/// The longest client frame the lab's 1500-byte links carry in a tunnel.
pub const MAX_CLIENT_FRAME: usize = 1500 - 20 - 8 - 16;

/// One session as the generator needs it to speak for its AP.
#[derive(Clone, Debug)]
pub struct SessionKey {
    /// The AP's UDP source port.
    pub ap_port: u16,
    /// The edge's session id (data messages to the edge carry it).
    pub edge_sid: u32,
    /// The cookie the edge expects.
    pub cookie: Vec<u8>,
    /// L2TPv3 over IP (protocol 115) rather than over UDP.
    pub over_ip: bool,
}

/// A client behind a session.
#[derive(Clone, Debug)]
pub struct Client {
    /// The client's MAC.
    pub mac: [u8; 6],
    /// Index into the session table.
    pub session: usize,
}

/// The MAC apsim gives client `c` of AP `index`.
pub fn apsim_client_mac(index: u64, c: u32) -> [u8; 6] {
    tunterm_lab::apsim::synthetic_client_mac(index, c).0
}

/// The IPv4 address a client MAC stands for (inner source / destination).
fn client_ip(mac: &[u8; 6]) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, mac[4] ^ mac[3], mac[5])
}

/// Ethernet (802.1Q-tagged with `vid` if given), IPv4 (no options, id 0,
/// DF, TTL 64, header checksum) and UDP (checksum 0: none, allowed over
/// IPv4 and what L2TPv3 senders use) around `payload`, built with
/// etherparse.
fn eth_ipv4_udp(
    (dst, src): ([u8; 6], [u8; 6]),
    vid: Option<u16>,
    (ip_src, ip_dst): (Ipv4Addr, Ipv4Addr),
    (sport, dport): (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + 20 + 8 + payload.len());
    let ipv4 = EtherType::IPV4;
    let eth = Ethernet2Header {
        source: src,
        destination: dst,
        ether_type: if vid.is_some() {
            EtherType::VLAN_TAGGED_FRAME
        } else {
            ipv4
        },
    };
    f.extend_from_slice(&eth.to_bytes());
    if let Some(vid) = vid {
        let tag = SingleVlanHeader {
            vlan_id: VlanId::try_new(vid).expect("a VLAN id below 4096"),
            ether_type: ipv4,
            ..Default::default()
        };
        f.extend_from_slice(&tag.to_bytes());
    }
    let udp_len = (UdpHeader::LEN + payload.len()) as u16;
    let ip = Ipv4Header::new(udp_len, 64, IpNumber::UDP, ip_src.octets(), ip_dst.octets())
        .expect("a frame fits IPv4");
    ip.write(&mut f).expect("writing to a Vec");
    let udp = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: udp_len,
        checksum: 0,
    };
    f.extend_from_slice(&udp.to_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client frame of `len` bytes from `src` to `dst` (IPv4/UDP to the
/// discard port), with an 802.1Q tag after the addresses if `tag`.
pub fn client_frame(
    len: usize,
    dst: [u8; 6],
    src: [u8; 6],
    (ip_src, ip_dst): (Ipv4Addr, Ipv4Addr),
    tag: Option<u16>,
) -> Vec<u8> {
    let zeros = vec![0; len - MIN_CLIENT_FRAME];
    eth_ipv4_udp((dst, src), tag, (ip_src, ip_dst), (5000, 9), &zeros)
}

/// The client frame a client sends to the trunk host.
pub fn uplink_frame(len: usize, client: &[u8; 6]) -> Vec<u8> {
    client_frame(
        len,
        TRUNK_HOST_MAC,
        *client,
        (client_ip(client), TRUNK_HOST_IP),
        None,
    )
}

/// The trunk host's frame to a client: tagged with the clients' VLAN for
/// tunterm, untagged for the VXLAN bridge.
pub fn downlink_frame(len: usize, client: &[u8; 6], tagged: bool) -> Vec<u8> {
    client_frame(
        len,
        *client,
        TRUNK_HOST_MAC,
        (TRUNK_HOST_IP, client_ip(client)),
        tagged.then_some(CLIENT_VLAN),
    )
}

/// Addresses of the AP-facing link: (edge's MAC, generator's MAC).
#[derive(Clone, Copy, Debug)]
pub struct ApLink {
    /// The edge's interface (destination of what the APs send).
    pub edge_mac: [u8; 6],
    /// The generator's interface.
    pub ap_mac: [u8; 6],
}

fn outer(link: &ApLink, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    eth_ipv4_udp(
        (link.edge_mac, link.ap_mac),
        None,
        (AP_IP, EDGE_IP),
        (sport, dport),
        payload,
    )
}

/// An L2TPv3 data message of `session` carrying `frame` to the edge, over
/// UDP or (`session.over_ip`) directly over IP.
pub fn l2tp_data(link: &ApLink, session: &SessionKey, frame: &[u8]) -> Vec<u8> {
    let mut l2tp = Vec::with_capacity(8 + session.cookie.len() + frame.len());
    if session.over_ip {
        l2tp.extend_from_slice(&session.edge_sid.to_be_bytes());
        l2tp.extend_from_slice(&session.cookie);
        l2tp.extend_from_slice(frame);
        let mut f = Ethernet2Header {
            source: link.ap_mac,
            destination: link.edge_mac,
            ether_type: EtherType::IPV4,
        }
        .to_bytes()
        .to_vec();
        let ip = Ipv4Header::new(
            l2tp.len() as u16,
            64,
            IpNumber(115),
            AP_IP.octets(),
            EDGE_IP.octets(),
        )
        .expect("a frame fits IPv4");
        ip.write(&mut f).expect("writing to a Vec");
        f.extend_from_slice(&l2tp);
        return f;
    }
    l2tp.extend_from_slice(&[0x00, 0x03, 0x00, 0x00]);
    l2tp.extend_from_slice(&session.edge_sid.to_be_bytes());
    l2tp.extend_from_slice(&session.cookie);
    l2tp.extend_from_slice(frame);
    outer(link, session.ap_port, L2TP_PORT, &l2tp)
}

/// A VXLAN packet (VNI [`VNI`]) from UDP port `sport` carrying `frame`.
pub fn vxlan_data(link: &ApLink, sport: u16, frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + frame.len());
    v.extend_from_slice(&[0x08, 0, 0, 0]);
    v.extend_from_slice(&(VNI << 8).to_be_bytes());
    v.extend_from_slice(frame);
    outer(link, sport, VXLAN_PORT, &v)
}

/// A gratuitous ARP of the trunk host (broadcast), tagged with the
/// clients' VLAN or not: teaches a switch where the host is.
pub fn trunk_host_announce(tagged: bool) -> Vec<u8> {
    ether::arp_request(
        (MacAddr(TRUNK_HOST_MAC), TRUNK_HOST_IP),
        TRUNK_HOST_IP,
        MacAddr::BROADCAST,
        tagged.then_some(CLIENT_VLAN),
    )
}

/// The clients in the order the generator cycles over them: round robin
/// over the sessions, so consecutive packets belong to different sessions.
pub fn interleave(clients: &[Client], sessions: usize) -> Vec<Client> {
    let mut per: Vec<Vec<&Client>> = vec![Vec::new(); sessions];
    for c in clients {
        per[c.session].push(c);
    }
    let depth = per.iter().map(Vec::len).max().unwrap_or(0);
    (0..depth)
        .flat_map(|k| per.iter().filter_map(move |s| s.get(k).copied()))
        .cloned()
        .collect()
}

/// A trafgen configuration sending `packets` round robin: one `{ … }` per
/// packet, bytes in hex, a trailing run of zeros as `fill(0x00, N)`.
pub fn trafgen_config(packets: &[Vec<u8>]) -> String {
    let mut out = String::with_capacity(packets.len() * 400);
    for p in packets {
        let zeros = p.iter().rev().take_while(|&&b| b == 0).count();
        let (head, fill) = if zeros > 8 {
            (&p[..p.len() - zeros], zeros)
        } else {
            (&p[..], 0)
        };
        out.push('{');
        for (i, b) in head.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}0x{b:02x}");
        }
        if fill > 0 {
            let _ = write!(out, ",fill(0x00,{fill})");
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunterm_core::wire::checksum::internet_checksum as checksum;

    #[test]
    fn client_frames_have_their_length_and_a_valid_ip_checksum() {
        let c = apsim_client_mac(3, 7);
        for len in [64, 1400] {
            let up = uplink_frame(len, &c);
            assert_eq!(up.len(), len);
            assert_eq!(checksum(&up[14..34]), 0);
            assert_eq!(downlink_frame(len, &c, true).len(), len + 4);
            assert_eq!(downlink_frame(len, &c, false).len(), len);
        }
    }

    #[test]
    fn l2tp_and_vxlan_wrap_the_frame() {
        let link = ApLink {
            edge_mac: [2, 0, 0, 0, 0, 1],
            ap_mac: [2, 0, 0, 0, 0, 2],
        };
        let s = SessionKey {
            ap_port: 40000,
            edge_sid: 0x1234_5678,
            cookie: vec![1, 2, 3, 4],
            over_ip: false,
        };
        let frame = uplink_frame(64, &apsim_client_mac(1, 1));
        let p = l2tp_data(&link, &s, &frame);
        assert_eq!(p.len(), 14 + 20 + 8 + 12 + 64);
        assert_eq!(checksum(&p[14..34]), 0);
        assert_eq!(&p[34..36], &40000u16.to_be_bytes());
        assert_eq!(
            &p[42..54],
            &[0, 3, 0, 0, 0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4]
        );
        assert_eq!(&p[54..], &frame[..]);
        let ip = l2tp_data(
            &link,
            &SessionKey {
                over_ip: true,
                ..s.clone()
            },
            &frame,
        );
        assert_eq!(ip.len(), 14 + 20 + 8 + 64);
        assert_eq!(checksum(&ip[14..34]), 0);
        assert_eq!(ip[14 + 9], 115, "IP protocol");
        assert_eq!(&ip[34..42], &[0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4]);
        assert_eq!(&ip[42..], &frame[..]);
        let v = vxlan_data(&link, 30000, &frame);
        assert_eq!(v.len(), 14 + 20 + 8 + 8 + 64);
        assert_eq!(&v[42..50], &[8, 0, 0, 0, 0, 0, 10, 0]);
    }

    #[test]
    fn interleave_goes_round_robin_over_sessions() {
        let clients: Vec<Client> = (0..6)
            .map(|i| Client {
                mac: apsim_client_mac(i / 3, (i % 3) as u32),
                session: (i / 3) as usize,
            })
            .collect();
        let order: Vec<usize> = interleave(&clients, 2).iter().map(|c| c.session).collect();
        assert_eq!(order, [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn trafgen_config_folds_trailing_zeros() {
        let cfg = trafgen_config(&[vec![1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], vec![0xab, 0]]);
        assert_eq!(cfg, "{0x01,0x02,fill(0x00,10)}\n{0xab,0x00}\n");
    }
}
