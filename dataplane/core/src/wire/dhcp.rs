//! DHCPv4 messages (RFC 2131, BOOTP layout of RFC 951), their options
//! (RFC 2132) and the Relay Agent Information option 82 (RFC 3046), plus the
//! IPv4/UDP framing a relay agent needs around them.
//!
//! ```text
//!  0       1       2       3
//! +-------+-------+-------+-------+
//! |  op   | htype | hlen  | hops  |   0
//! +-------+-------+-------+-------+
//! |             xid               |   4
//! +---------------+---------------+
//! |     secs      |     flags     |   8   flags: bit 15 = broadcast
//! +---------------+---------------+
//! | ciaddr | yiaddr | siaddr | giaddr (4 bytes each)  12..28
//! | chaddr (16) | sname (64) | file (128)              28..236
//! | magic cookie 99.130.83.99                          236..240
//! | options: code, len, value …; 0 = pad, 255 = end     240..
//! ```
//!
//! Option 82's value is itself a list of sub-options (code, len, value):
//! 1 = Agent Circuit ID, 2 = Agent Remote ID.
//!
//! Options overloaded into `sname` / `file` (option 52) are left where they
//! are: a relay agent neither reads nor changes them.

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::ether::MacAddr;
use crate::wire::{ipv4, udp};

/// UDP port of DHCP servers and relay agents.
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// `op` of a client's message.
pub const BOOTREQUEST: u8 = 1;
/// `op` of a server's message.
pub const BOOTREPLY: u8 = 2;
/// The broadcast bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// `htype` of Ethernet.
pub const HTYPE_ETHERNET: u8 = 1;
/// Length of the fixed part, magic cookie included.
pub const HEADER_LEN: usize = 240;
/// The magic cookie that starts the options.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Shortest BOOTP message (RFC 1542 §2.1): shorter ones are padded.
pub const MIN_LEN: usize = 300;

/// Option codes used here.
pub mod opt {
    /// Padding.
    pub const PAD: u8 = 0;
    /// DHCP Message Type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Relay Agent Information (RFC 3046).
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// End of options.
    pub const END: u8 = 255;
}

/// Sub-options of option 82.
pub mod agent {
    /// Agent Circuit ID.
    pub const CIRCUIT_ID: u8 = 1;
    /// Agent Remote ID.
    pub const REMOTE_ID: u8 = 2;
}

mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Range<usize> = 4..8;
    pub const FLAGS: Range<usize> = 10..12;
    pub const CIADDR: Range<usize> = 12..16;
    pub const YIADDR: Range<usize> = 16..20;
    pub const GIADDR: Range<usize> = 24..28;
    pub const CHADDR: Range<usize> = 28..44;
    pub const MAGIC: Range<usize> = 236..240;
}

/// Why bytes are not a usable DHCP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the fixed header.
    Truncated,
    /// No magic cookie (plain BOOTP).
    NoMagicCookie,
    /// An option runs past the end of the message.
    BadOption,
}

/// A checked view of a DHCP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the fixed header, the magic cookie and that every option
    /// lies inside the message.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::MAGIC] != MAGIC_COOKIE {
            return Err(Error::NoMagicCookie);
        }
        let p = Packet { buffer };
        for o in p.options() {
            o?;
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn addr(&self, r: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.b()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }

    /// `op`: [`BOOTREQUEST`] or [`BOOTREPLY`].
    pub fn op(&self) -> u8 {
        self.b()[field::OP]
    }

    /// Relay hops so far.
    pub fn hops(&self) -> u8 {
        self.b()[field::HOPS]
    }

    /// Transaction id.
    pub fn xid(&self) -> u32 {
        let b = &self.b()[field::XID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Flags ([`FLAG_BROADCAST`]).
    pub fn flags(&self) -> u16 {
        let b = &self.b()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Client address (set by a client that has one).
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.addr(field::CIADDR)
    }

    /// "Your" address: what the server gives.
    pub fn yiaddr(&self) -> Ipv4Addr {
        self.addr(field::YIADDR)
    }

    /// Relay agent address.
    pub fn giaddr(&self) -> Ipv4Addr {
        self.addr(field::GIADDR)
    }

    /// The client's MAC, when `htype`/`hlen` say Ethernet.
    pub fn chaddr_mac(&self) -> Option<MacAddr> {
        let b = self.b();
        if b[field::HTYPE] != HTYPE_ETHERNET || b[field::HLEN] != 6 {
            return None;
        }
        MacAddr::try_from(&b[field::CHADDR][..6]).ok()
    }

    /// The 16 bytes of `chaddr`, as written.
    pub fn chaddr(&self) -> [u8; 16] {
        let mut c = [0; 16];
        c.copy_from_slice(&self.b()[field::CHADDR]);
        c
    }

    /// Options in order, pads skipped, up to `END` (or the end of the
    /// message when `END` is missing).
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.b()[HEADER_LEN..],
        }
    }

    /// The value of the first option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options()
            .filter_map(Result::ok)
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v)
    }

    /// Option 53, the DHCP message type.
    pub fn message_type(&self) -> Option<u8> {
        self.option(opt::MESSAGE_TYPE)?.first().copied()
    }
}

/// Iterator over `(code, value)` of a message's options.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, tail) = self.rest.split_first()?;
            match code {
                opt::PAD => self.rest = tail,
                opt::END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    let Some((&len, tail)) = tail.split_first() else {
                        self.rest = &[];
                        return Some(Err(Error::BadOption));
                    };
                    let Some((value, tail)) = tail.split_at_checked(usize::from(len)) else {
                        self.rest = &[];
                        return Some(Err(Error::BadOption));
                    };
                    self.rest = tail;
                    return Some(Ok((code, value)));
                }
            }
        }
    }
}

/// Append option `code` with `value` (at most 255 bytes; longer is cut).
pub fn push_option(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    let value = &value[..value.len().min(255)];
    out.push(code);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// The value of an option 82 holding `circuit_id` and `remote_id`. Each is
/// cut to 120 bytes so the whole stays within an option's 255.
pub fn agent_info(circuit_id: &[u8], remote_id: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + circuit_id.len() + remote_id.len());
    push_option(
        &mut v,
        agent::CIRCUIT_ID,
        &circuit_id[..circuit_id.len().min(120)],
    );
    push_option(
        &mut v,
        agent::REMOTE_ID,
        &remote_id[..remote_id.len().min(120)],
    );
    v
}

/// Write `msg` into `out` (cleared) with its options rewritten: every
/// option but 82 (and the pads) copied, then `extra` (an option's code and
/// value) if given, then `END`, padded to [`MIN_LEN`]. The fixed header is
/// copied unchanged.
pub fn rewrite_options<T: AsRef<[u8]>>(
    msg: &Packet<T>,
    extra: Option<(u8, &[u8])>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&msg.as_bytes()[..HEADER_LEN]);
    for (code, value) in msg.options().filter_map(Result::ok) {
        if code != opt::RELAY_AGENT_INFO {
            push_option(out, code, value);
        }
    }
    if let Some((code, value)) = extra {
        push_option(out, code, value);
    }
    out.push(opt::END);
    if out.len() < MIN_LEN {
        out.resize(MIN_LEN, 0);
    }
}

/// Set `hops` and `giaddr` of a message in `buf`.
pub fn set_relay_fields(buf: &mut [u8], hops: u8, giaddr: Ipv4Addr) {
    if buf.len() >= HEADER_LEN {
        buf[field::HOPS] = hops;
        buf[field::GIADDR].copy_from_slice(&giaddr.octets());
    }
}

/// A DHCP client message inside an untagged-remainder frame: the frame
/// from its ethertype on (`FrameView::inner_offset`). Returns the IPv4
/// destination and the UDP payload when it is IPv4, unfragmented, UDP from
/// port 68 to port 67.
pub fn client_message(l3: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let (ports, dst, payload) = udp_in(l3)?;
    (ports == (CLIENT_PORT, SERVER_PORT)).then_some((dst, payload))
}

/// A server's DHCPACK on its way to a client (IPv4, UDP 67 → 68), in an
/// untagged-remainder frame as for [`client_message`]: the client's MAC
/// (`chaddr`) and the address it was given (`yiaddr`, not 0.0.0.0).
pub fn server_ack(l3: &[u8]) -> Option<(MacAddr, Ipv4Addr)> {
    /// DHCPACK (RFC 2132 §9.6).
    const ACK: u8 = 5;
    // The client table asks this of every frame to a client: turn the
    // others away on two bytes (IPv4 protocol UDP, source port 67) before
    // the headers are checked in full.
    let ihl = usize::from(*l3.get(2)? & 0x0f) * 4;
    if l3.get(11) != Some(&17) || l3.get(2 + ihl..4 + ihl)? != SERVER_PORT.to_be_bytes() {
        return None;
    }
    let (ports, _, payload) = udp_in(l3)?;
    if ports != (SERVER_PORT, CLIENT_PORT) {
        return None;
    }
    let p = Packet::new_checked(payload).ok()?;
    let yiaddr = p.yiaddr();
    if p.op() != BOOTREPLY || p.message_type() != Some(ACK) || yiaddr.is_unspecified() {
        return None;
    }
    Some((p.chaddr_mac()?, yiaddr))
}

/// (source port, destination port), destination address and payload of an
/// IPv4/UDP packet after an ethertype.
fn udp_in(l3: &[u8]) -> Option<((u16, u16), Ipv4Addr, &[u8])> {
    let (ty, ip) = l3.split_at_checked(2)?;
    if ty != [0x08, 0x00] {
        return None;
    }
    let ip = ipv4::Packet::new_checked(ip).ok()?;
    // More fragments, or an offset: not a whole datagram.
    if ip.protocol() != ipv4::Protocol::Udp || ip.is_fragment() {
        return None;
    }
    let udp = udp::Packet::new_checked(ip.payload()).ok()?;
    let ports = (udp.src_port(), udp.dst_port());
    Some((ports, ip.dst_addr(), udp.payload()))
}

/// Addresses of a frame built by [`emit_udp_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination.
    pub dst_mac: MacAddr,
    /// IPv4 source and UDP source port.
    pub src: (Ipv4Addr, u16),
    /// IPv4 destination and UDP destination port.
    pub dst: (Ipv4Addr, u16),
}

/// Write an untagged Ethernet / IPv4 / UDP frame carrying `payload` into
/// `out` (cleared), checksums filled in, TTL 64.
pub fn emit_udp_frame(f: &UdpFrame, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&f.dst_mac.0);
    out.extend_from_slice(&f.src_mac.0);
    out.extend_from_slice(&[0x08, 0x00]);
    let udp = udp::Repr {
        src_port: f.src.1,
        dst_port: f.dst.1,
        payload_len: payload.len(),
    };
    ipv4::Repr {
        src_addr: f.src.0,
        dst_addr: f.dst.0,
        protocol: ipv4::Protocol::Udp,
        payload_len: udp.buffer_len() + payload.len(),
        ttl: 64,
        ident: 0,
        dont_frag: false,
        dscp_ecn: 0,
    }
    .append_to(out);
    let udp_at = out.len();
    udp.append_to(out);
    out.extend_from_slice(payload);
    udp::Packet::new_unchecked(&mut out[udp_at..])
        .fill_checksum(IpAddr::V4(f.src.0), IpAddr::V4(f.dst.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{fold, sum16};

    /// A DHCPDISCOVER as udhcpc sends it (captured; options: 53 = 1,
    /// 61 client id, 57 max size, 55 parameter list, 60 vendor class).
    pub(crate) fn discover() -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN];
        m[0] = BOOTREQUEST;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&0x3903_f326u32.to_be_bytes());
        m[28..34].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x11]);
        m[236..240].copy_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[53, 1, 1]);
        m.extend_from_slice(&[61, 7, 1, 0x02, 0, 0, 0, 0, 0x11]);
        m.extend_from_slice(&[57, 2, 0x02, 0x40]);
        m.extend_from_slice(&[55, 4, 1, 3, 6, 15]);
        m.extend_from_slice(&[0, 0]);
        m.push(255);
        m
    }

    #[test]
    fn parses_the_fixed_header_and_options() {
        let d = discover();
        let p = Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.op(), BOOTREQUEST);
        assert_eq!(p.xid(), 0x3903_f326);
        assert_eq!(p.message_type(), Some(1));
        assert_eq!(p.chaddr_mac(), Some(MacAddr([2, 0, 0, 0, 0, 0x11])));
        assert_eq!(p.option(55), Some(&[1, 3, 6, 15][..]));
        let codes: Vec<u8> = p.options().map(|o| o.unwrap().0).collect();
        assert_eq!(codes, [53, 61, 57, 55]);
    }

    #[test]
    fn rejects_what_is_not_dhcp() {
        let d = discover();
        assert_eq!(
            Packet::new_checked(&d[..100]).unwrap_err(),
            Error::Truncated
        );
        let mut bootp = d.clone();
        bootp[236] = 0;
        assert_eq!(
            Packet::new_checked(&bootp[..]).unwrap_err(),
            Error::NoMagicCookie
        );
        // Option 55 claims 4 bytes, 2 remain.
        let cut = &d[..d.len() - 5];
        assert_eq!(Packet::new_checked(cut).unwrap_err(), Error::BadOption);
        // A length byte and nothing else.
        let mut lone = d[..HEADER_LEN].to_vec();
        lone.push(12);
        assert_eq!(
            Packet::new_checked(&lone[..]).unwrap_err(),
            Error::BadOption
        );
    }

    #[test]
    fn option_82_is_added_and_stripped_byte_for_byte() {
        let d = discover();
        let p = Packet::new_checked(&d[..]).unwrap();
        let info = agent_info(b"ap1:10:7", b"10.99.0.2");
        assert_eq!(
            info,
            [&[1, 8][..], b"ap1:10:7", &[2, 9][..], b"10.99.0.2"].concat()
        );
        let mut out = Vec::new();
        rewrite_options(&p, Some((opt::RELAY_AGENT_INFO, &info)), &mut out);
        assert_eq!(out.len(), MIN_LEN);
        let opts = &out[HEADER_LEN..];
        let want = [
            &[53, 1, 1][..],
            &[61, 7, 1, 0x02, 0, 0, 0, 0, 0x11],
            &[57, 2, 0x02, 0x40],
            &[55, 4, 1, 3, 6, 15],
            &[82, info.len() as u8],
            &info,
            &[255],
        ]
        .concat();
        assert_eq!(&opts[..want.len()], &want[..]);
        assert!(opts[want.len()..].iter().all(|&b| b == 0));
        let with = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(with.option(82), Some(&info[..]));
        let mut back = Vec::new();
        rewrite_options(&with, None, &mut back);
        let again = Packet::new_checked(&back[..]).unwrap();
        assert_eq!(again.option(82), None);
        assert_eq!(&back[..HEADER_LEN], &d[..HEADER_LEN]);
    }

    #[test]
    fn long_ids_are_cut_to_fit_one_option() {
        let info = agent_info(&[b'c'; 300], &[b'r'; 300]);
        assert_eq!(info.len(), 2 + 120 + 2 + 120);
    }

    #[test]
    fn udp_frames_carry_valid_checksums_and_read_back() {
        let f = UdpFrame {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr::BROADCAST,
            src: (Ipv4Addr::new(0, 0, 0, 0), CLIENT_PORT),
            dst: (Ipv4Addr::BROADCAST, SERVER_PORT),
        };
        let d = discover();
        let mut out = Vec::new();
        emit_udp_frame(&f, &d, &mut out);
        let (dst, payload) = client_message(&out[12..]).unwrap();
        assert_eq!((dst, payload), (Ipv4Addr::BROADCAST, &d[..]));
        // The IPv4 header sums to 0xffff with its checksum.
        assert_eq!(fold(sum16(&out[14..34], 0)), 0);
        // So does the UDP datagram with its pseudo-header.
        let mut acc = sum16(&out[26..34], 0);
        acc += 17 + (8 + d.len()) as u32;
        assert_eq!(fold(sum16(&out[34..], acc)), 0);
        // A server's reply (67 → 68) is not a client message.
        let back = UdpFrame {
            src: (Ipv4Addr::new(192, 168, 10, 2), SERVER_PORT),
            dst: (Ipv4Addr::BROADCAST, CLIENT_PORT),
            ..f
        };
        emit_udp_frame(&back, &d, &mut out);
        assert!(client_message(&out[12..]).is_none());
    }

    #[test]
    fn any_bytes_parse_without_panicking() {
        let d = discover();
        let mut x: u32 = 0x1234_5678;
        for len in 0..d.len() + 40 {
            for _ in 0..50 {
                let mut b: Vec<u8> = d.iter().copied().chain([0; 40]).take(len).collect();
                for byte in b.iter_mut().skip(HEADER_LEN.min(len)) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x.is_multiple_of(3) {
                        *byte = x as u8;
                    }
                }
                if let Ok(p) = Packet::new_checked(&b[..]) {
                    let _ = p.message_type();
                    let mut out = Vec::new();
                    rewrite_options(&p, Some((82, &[1, 0])), &mut out);
                    assert!(Packet::new_checked(&out[..]).is_ok());
                }
                let _ = client_message(&b);
            }
        }
    }
}
