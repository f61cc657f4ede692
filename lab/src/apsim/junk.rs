//! Junk flood: as many packets a second as one core can send to the edge's
//! L2TP/UDP port, of one kind — data messages for session ids that do not
//! exist, random bytes, or control messages (HELLOs) for tunnel ids that do
//! not exist — each from the next spoofed (address, port) of a range. The
//! load for the edge's event-loop fairness: the edge must read and count
//! what it can, shed the rest, and keep its timers, control socket and
//! tunnels going. Whole IPv4/UDP datagrams on a raw socket (`IPPROTO_RAW`),
//! or, faster, whole Ethernet frames on a packet socket that bypasses the
//! qdisc ([`JunkOptions::link`]); a pool of them prebuilt and sent with
//! `sendmmsg`. IPv4 only.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::Ipv4Net;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use etherparse::{EtherType, Ethernet2Header};
use tunterm_core::wire::ether::MacAddr;
use tunterm_core::wire::l2tp::{ControlHeader, ControlMessage, MessageType, Transport};
use tunterm_core::wire::{ipv4, udp};

use super::flood::FloodReport;

/// What the junk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JunkKind {
    /// L2TPv3/UDP data messages for unknown session ids (4-byte cookie, a
    /// 64-byte frame).
    UnknownSession,
    /// Random bytes, 1 to 160 of them.
    Random,
    /// HELLOs on control connections that do not exist.
    UnknownTunnel,
}

impl std::str::FromStr for JunkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<JunkKind, String> {
        match s {
            "unknown-session" => Ok(JunkKind::UnknownSession),
            "random" => Ok(JunkKind::Random),
            "unknown-tunnel" => Ok(JunkKind::UnknownTunnel),
            _ => Err(format!("{s:?}: unknown-session, random or unknown-tunnel")),
        }
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub struct JunkOptions {
    /// The edge (IPv4, UDP port).
    pub edge: SocketAddrV4,
    /// The kind of junk.
    pub kind: JunkKind,
    /// How long.
    pub duration: Duration,
    /// Source prefixes (every host address, in turn).
    pub sources: Vec<Ipv4Net>,
    /// First source UDP port (the pool uses 64 from there).
    pub first_port: u16,
    /// Send Ethernet frames on this interface to this MAC (the edge's)
    /// instead of IP datagrams through the routing table: no IP output
    /// path, no qdisc, about twice the rate per core.
    pub link: Option<(String, MacAddr)>,
}

/// Datagrams prebuilt and sent in turn.
const POOL: usize = 1024;
/// Datagrams per `sendmmsg`.
const BURST: usize = 64;

/// An IPv4/UDP datagram around `payload` (UDP checksum 0: none, as IPv4
/// allows; id 0, DF, TTL 64, the IP checksum filled, which a raw socket's
/// kernel path rewrites anyway).
fn datagram(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp = udp::Repr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: payload.len(),
    };
    let ip = ipv4::Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        protocol: ipv4::Protocol::Udp,
        payload_len: udp.buffer_len() + payload.len(),
        ttl: 64,
        ident: 0,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut p = Vec::with_capacity(ip.buffer_len() + ip.payload_len);
    ip.append_to(&mut p);
    udp.append_to(&mut p);
    p.extend_from_slice(payload);
    p
}

/// `PACKET_QDISC_BYPASS` (linux/if_packet.h; not exported by the libc
/// crate for Linux).
const PACKET_QDISC_BYPASS: libc::c_int = 20;

/// A send-only packet socket bound to `ifname` that bypasses the qdisc.
fn packet_socket(ifname: &str) -> anyhow::Result<Socket> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: `name` is a valid C string for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface {ifname}");
    // Protocol 0: the socket receives nothing.
    let sock = Socket::new(Domain::PACKET, Type::RAW, None)
        .context("packet socket for the junk (needs CAP_NET_RAW)")?;
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "PACKET_QDISC_BYPASS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a valid sockaddr_ll that outlives the call, and the
    // length passed is its size.
    let rc = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "binding to {ifname}: {}",
        std::io::Error::last_os_error()
    );
    Ok(sock)
}

/// One L2TP payload of `kind`.
pub fn payload(kind: JunkKind, rng: &mut impl Rng) -> Vec<u8> {
    match kind {
        JunkKind::UnknownSession => {
            // Flags/version (T = 0, version 3), reserved, session id,
            // cookie, then an Ethernet frame.
            let mut p = vec![0x00, 0x03, 0, 0];
            p.extend_from_slice(&rng.random_range(1..=u32::MAX).to_be_bytes());
            p.extend_from_slice(&rng.random::<u32>().to_be_bytes());
            p.extend((0..64).map(|_| rng.random::<u8>()));
            p
        }
        JunkKind::Random => {
            let n = rng.random_range(1..=160);
            (0..n).map(|_| rng.random::<u8>()).collect()
        }
        JunkKind::UnknownTunnel => {
            let msg = ControlMessage {
                msg_type: MessageType::Hello,
                avps: vec![],
            };
            let mut p = Vec::with_capacity(32);
            msg.emit(
                Transport::Udp,
                ControlHeader {
                    ccid: rng.random_range(1..=u32::MAX),
                    ns: rng.random(),
                    nr: rng.random(),
                },
                &mut p,
            );
            p
        }
    }
}

/// Send junk until `duration` is over, as fast as the socket takes it.
pub fn run(opts: &JunkOptions) -> anyhow::Result<FloodReport> {
    let addrs: Vec<Ipv4Addr> = opts.sources.iter().flat_map(|n| n.hosts()).collect();
    anyhow::ensure!(!addrs.is_empty(), "the junk has no source address");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let pool: Vec<Vec<u8>> = (0..POOL)
        .map(|i| {
            let port = opts.first_port.wrapping_add((i / addrs.len()) as u16 % 64);
            let src = SocketAddrV4::new(addrs[i % addrs.len()], port);
            datagram(src, opts.edge, &payload(opts.kind, &mut rng))
        })
        .collect();
    let (sock, pool) = match &opts.link {
        None => (
            Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
            .context("raw socket for the junk (needs CAP_NET_RAW)")?,
            pool,
        ),
        Some((ifname, dst_mac)) => {
            let eth = Ethernet2Header {
                source: tunterm::io::netlink::mac(ifname)?,
                destination: dst_mac.octets(),
                ether_type: EtherType::IPV4,
            };
            let frames = pool
                .into_iter()
                .map(|ip| {
                    let mut f = Vec::with_capacity(eth.header_len() + ip.len());
                    f.extend_from_slice(&eth.to_bytes());
                    f.extend_from_slice(&ip);
                    f
                })
                .collect();
            (packet_socket(ifname)?, frames)
        }
    };
    // A packet socket sends on the interface it is bound to (no name).
    let dst = SockAddr::from(SocketAddrV4::new(*opts.edge.ip(), 0));
    let named = opts.link.is_none();
    let mut iovs: Vec<libc::iovec> = pool
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is a valid "no name, no data, no
            // control" header; name and data are set below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            if named {
                h.msg_hdr.msg_name = dst.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = dst.len();
            }
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let start = Instant::now();
    let mut report = FloodReport {
        sources: (addrs.len() * 64).min(POOL) as u64,
        ..FloodReport::default()
    };
    let mut at = 0;
    while start.elapsed() < opts.duration {
        let burst = &mut msgs[at..at + BURST];
        // SAFETY: every header points at `dst`, its iovec and its pooled
        // datagram, all alive and unmoved for the whole loop; the kernel
        // only reads them (and writes msg_len).
        let n = unsafe {
            libc::sendmmsg(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                burst.as_mut_ptr(),
                BURST as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            report.send_errors += 1;
        } else {
            report.sent += n as u64;
        }
        at = (at + BURST) % POOL;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunterm_core::wire::l2tp::{self, Packet};

    #[test]
    fn each_kind_parses_as_what_it_says() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let p = payload(JunkKind::UnknownSession, &mut rng);
            let Ok(Packet::Data(d)) = l2tp::parse(Transport::Udp, &p) else {
                panic!("not a data message: {p:02x?}");
            };
            assert_ne!(d.session_id, 0);
            let p = payload(JunkKind::UnknownTunnel, &mut rng);
            let Ok(Packet::Control(c)) = l2tp::parse(Transport::Udp, &p) else {
                panic!("not a control message: {p:02x?}");
            };
            assert_ne!(c.header.ccid, 0);
            let m = ControlMessage::parse(&c).unwrap();
            assert_eq!(m.msg_type, MessageType::Hello);
            let p = payload(JunkKind::Random, &mut rng);
            assert!((1..=160).contains(&p.len()));
        }
        assert_eq!(POOL % BURST, 0);
    }
}
