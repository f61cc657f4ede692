//! SCCRQ flood: the hostile load for the edge's admission control. SCCRQs
//! at a fixed rate, each from the next (address, port) of a range and with
//! its own Assigned CCID, so every one looks like a new AP to the edge. The
//! sources are spoofed: the packets are whole IPv4/UDP datagrams written on
//! a raw socket (`IPPROTO_RAW`), so no address needs to exist anywhere and
//! the edge's answers go nowhere, as in a real spoofed flood. IPv4 only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use tunterm_core::wire::l2tp::{Avp, ControlHeader, ControlMessage, MessageType, Transport, pw};

/// What to flood with.
#[derive(Clone, Debug)]
pub struct FloodOptions {
    /// The edge (IPv4, UDP port).
    pub edge: SocketAddrV4,
    /// SCCRQs per second.
    pub rate: u32,
    /// How long.
    pub duration: Duration,
    /// Source prefixes; every host address of each is used in turn.
    pub sources: Vec<Ipv4Net>,
    /// Source UDP ports, used in turn for each address.
    pub ports: RangeInclusive<u16>,
}

/// What a flood sent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloodReport {
    /// SCCRQs sent.
    pub sent: u64,
    /// Sends the kernel refused (e.g. no buffer space).
    pub send_errors: u64,
    /// Distinct (address, port) sources used.
    pub sources: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

/// Every (address, port) of the options, addresses first.
fn source_list(opts: &FloodOptions) -> Vec<SocketAddrV4> {
    let addrs: Vec<Ipv4Addr> = opts.sources.iter().flat_map(|n| n.hosts()).collect();
    let mut out = Vec::new();
    for port in opts.ports.clone() {
        out.extend(addrs.iter().map(|&a| SocketAddrV4::new(a, port)));
    }
    out
}

/// An IPv4/UDP datagram carrying an SCCRQ with Assigned CCID `ccid`
/// (checksums filled in; the kernel fills the IP id).
pub fn sccrq_datagram(src: SocketAddrV4, dst: SocketAddrV4, ccid: u32) -> Vec<u8> {
    let msg = ControlMessage {
        msg_type: MessageType::Sccrq,
        avps: vec![
            Avp::HostName(format!("flood-{ccid:08x}").into_bytes()),
            Avp::RouterId(ccid),
            Avp::AssignedCcid(ccid),
            Avp::PwCapabilities(vec![pw::ETHERNET, pw::ETHERNET_VLAN]),
            Avp::ReceiveWindowSize(4),
        ],
    };
    let mut l2tp = Vec::with_capacity(96);
    msg.emit(
        Transport::Udp,
        ControlHeader {
            ccid: 0,
            ns: 0,
            nr: 0,
        },
        &mut l2tp,
    );
    let mut p = Vec::with_capacity(20 + 8 + l2tp.len());
    // An SCCRQ is ~100 bytes: far from IPv4's length limit.
    etherparse::PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port())
        .write(&mut p, &l2tp)
        .expect("an SCCRQ fits a datagram");
    p
}

/// Send the flood; returns when `duration` is over.
pub fn run(opts: &FloodOptions) -> anyhow::Result<FloodReport> {
    let sources = source_list(opts);
    anyhow::ensure!(!sources.is_empty(), "the flood has no source address");
    anyhow::ensure!(opts.rate > 0, "a flood rate of 0");
    let sock = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .context("raw socket for the SCCRQ flood (needs CAP_NET_RAW)")?;
    let dst = SockAddr::from(SocketAddr::new(IpAddr::V4(*opts.edge.ip()), 0));
    let start = Instant::now();
    let mut report = FloodReport {
        sources: sources.len() as u64,
        ..FloodReport::default()
    };
    let mut next = 0usize;
    // The CCIDs start from the clock so two floods do not repeat each other.
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ccid = (clock.as_nanos() as u32 ^ std::process::id()) | 1;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= opts.duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * f64::from(opts.rate)) as u64;
        while report.sent + report.send_errors < due {
            let src = sources[next % sources.len()];
            next += 1;
            ccid = ccid.wrapping_add(1).max(1);
            let pkt = sccrq_datagram(src, opts.edge, ccid);
            match sock.send_to(&pkt, &dst) {
                Ok(_) => report.sent += 1,
                Err(_) => report.send_errors += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunterm_core::wire::l2tp::{self, Packet};

    #[test]
    fn the_datagram_is_an_sccrq_from_the_source() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 200), 20001);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 1701);
        let p = sccrq_datagram(src, dst, 0x1234);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(&p[12..16], &[10, 99, 0, 200]);
        assert_eq!(&p[16..20], &[10, 99, 0, 1]);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 20001);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 1701);
        assert_eq!(
            usize::from(u16::from_be_bytes([p[24], p[25]])),
            p.len() - 20
        );
        let Ok(Packet::Control(c)) = l2tp::parse(Transport::Udp, &p[28..]) else {
            panic!("not a control message");
        };
        let m = ControlMessage::parse(&c).unwrap();
        assert_eq!(m.msg_type, MessageType::Sccrq);
        assert_eq!(m.assigned_ccid(), Some(0x1234));
        assert_eq!(c.header.ccid, 0);
    }

    #[test]
    fn sources_cover_every_host_and_port() {
        let opts = FloodOptions {
            edge: "10.99.0.1:1701".parse().unwrap(),
            rate: 1,
            duration: Duration::ZERO,
            sources: vec![
                "10.99.0.128/30".parse().unwrap(),
                "10.98.0.5/32".parse().unwrap(),
            ],
            ports: 20000..=20002,
        };
        let s = source_list(&opts);
        // /30: two hosts; /32: itself.
        assert_eq!(s.len(), 3 * 3);
        assert_eq!(s[0], "10.99.0.129:20000".parse().unwrap());
        assert_eq!(s[2], "10.98.0.5:20000".parse().unwrap());
        assert_eq!(s[8], "10.98.0.5:20002".parse().unwrap());
    }
}
