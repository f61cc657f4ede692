//! Packet capture in the daemon: libpcap filters, the pcapng stream, the
//! outer headers of the `wire` point, wall-clock times.
//!
//! The capture points, the matching and the bounded queues are sans-IO, in
//! [`tunterm_core::proto::capture`]; the event loop's side (starting,
//! pumping records out, ending) is in the driver.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use tunterm_core::proto::capture::{CaptureCounters, Direction, Filter, Record};
use tunterm_core::wire::checksum::internet_checksum;

/// A compiled tcpdump expression (libpcap's BPF, run in userspace).
pub struct Bpf(pcap::BpfProgram);

impl Filter for Bpf {
    fn matches(&self, frame: &[u8]) -> bool {
        self.0.filter(frame)
    }
}

/// Compile `expr` for Ethernet frames; the error is libpcap's message.
pub fn compile(expr: &str) -> Result<Bpf, String> {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET)
        .map_err(|e| format!("filter {expr:?}: {e}"))?;
    dead.compile(expr, true)
        .map(Bpf)
        .map_err(|e| format!("filter {expr:?}: {e}"))
}

/// Instants as wall-clock times: one pair taken at the capture's start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    since_epoch: Duration,
}

impl Clock {
    /// Now.
    pub fn now() -> Self {
        Clock {
            instant: Instant::now(),
            since_epoch: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// `t` since the Unix epoch.
    pub fn wall(&self, t: Instant) -> Duration {
        match t.checked_duration_since(self.instant) {
            Some(d) => self.since_epoch + d,
            None => self
                .since_epoch
                .saturating_sub(self.instant.duration_since(t)),
        }
    }
}

/// The pcapng stream of one capture: a section header and one interface
/// per point (`if_name`, `if_tsresol` = 9: nanoseconds), then a packet
/// block per record, then interface statistics. Bytes collect in a buffer
/// the caller takes ([`Pcapng::take`]).
pub struct Pcapng {
    w: PcapNgWriter<Vec<u8>>,
    points: usize,
}

impl Pcapng {
    /// The header: a section, and an Ethernet interface per point.
    pub fn new(points: &[String], snaplen: u32) -> Self {
        let mut w = PcapNgWriter::new(Vec::new()).expect("writing to a Vec does not fail");
        for name in points {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name.clone())),
                    InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                        "tunterm capture point {name}"
                    ))),
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            w.write_pcapng_block(idb)
                .expect("writing to a Vec does not fail");
        }
        Pcapng {
            w,
            points: points.len(),
        }
    }

    /// A packet block for `r` (its time through `clock`).
    pub fn packet(&mut self, r: &Record, clock: &Clock) {
        // Flags: bits 0-1, direction (1 inbound, 2 outbound).
        let dir = match r.direction {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        };
        let mut options = vec![EnhancedPacketOption::Flags(dir)];
        if let Some(c) = r.comment {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(c)));
        }
        let epb = EnhancedPacketBlock {
            interface_id: r.point as u32,
            timestamp: clock.wall(r.time),
            original_len: u32::try_from(r.original_len).unwrap_or(u32::MAX),
            data: Cow::Borrowed(&r.data),
            options,
        };
        let _ = self.w.write_pcapng_block(epb);
    }

    /// Statistics blocks (every interface: the capture's counters, which
    /// are the capture's, not the interface's).
    pub fn statistics(&mut self, c: &CaptureCounters, at: Duration) {
        for i in 0..self.points {
            let isb = InterfaceStatisticsBlock {
                interface_id: i as u32,
                timestamp: at.as_nanos() as u64,
                options: vec![
                    InterfaceStatisticsOption::Comment(Cow::Owned(format!(
                        "tunterm capture: seen {} matched {} written {} dropped {}",
                        c.seen, c.matched, c.written, c.dropped
                    ))),
                    InterfaceStatisticsOption::IsbIfRecv(c.seen),
                    InterfaceStatisticsOption::IsbFilterAccept(c.matched),
                    InterfaceStatisticsOption::IsbIfDrop(c.dropped),
                    InterfaceStatisticsOption::IsbUsrDeliv(c.written),
                ],
            };
            let _ = self.w.write_pcapng_block(isb);
        }
    }

    /// Bytes written since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.w.get_mut())
    }

    /// Bytes waiting.
    pub fn pending(&self) -> usize {
        self.w.get_ref().len()
    }
}

/// IP protocol numbers of the tunnels.
pub const PROTO_UDP: u8 = 17;

/// Write into `out` (cleared) what a datagram looked like on the AP link:
/// an Ethernet header (zero MACs), the outer IPv4 or IPv6 header from
/// `src` to `dst` with `proto`, a UDP header when `proto` is UDP (the
/// addresses' ports), and `payload` (the L2TP or GRE packet, as a tunnel
/// socket reads or writes it).
pub fn outer_frame(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, proto: u8, payload: &[u8]) {
    out.clear();
    let udp = proto == PROTO_UDP;
    let l4 = if udp { 8 } else { 0 } + payload.len();
    out.extend_from_slice(&[0; 12]);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = u16::try_from(20 + l4).unwrap_or(u16::MAX);
            let at = out.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let sum = internet_checksum(&out[at..at + 20]);
            out[at + 10..at + 12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&u16::try_from(l4).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    if udp {
        out.extend_from_slice(&src.port().to_be_bytes());
        out.extend_from_slice(&dst.port().to_be_bytes());
        out.extend_from_slice(&u16::try_from(l4).unwrap_or(u16::MAX).to_be_bytes());
        // Checksum 0: none (IPv4); for IPv6 this is a capture, not a send.
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_carry_libpcaps_message_and_good_ones_filter() {
        let e = compile("vlan 10 and icmpp").err().unwrap();
        assert!(e.starts_with("filter \"vlan 10 and icmpp\": "), "{e}");
        assert!(e.contains("syntax error") || e.contains("icmpp"), "{e}");
        let f = compile("vlan 10 and icmp").ok().unwrap();
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x81, 0, 0, 10, 0x08, 0]);
        // IPv4, protocol 1 (ICMP).
        frame.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0]);
        frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        assert!(f.matches(&frame));
        frame[15] = 20;
        assert!(!f.matches(&frame), "VLAN 20");
    }

    #[test]
    fn outer_frames_carry_a_valid_ip_header() {
        let mut out = Vec::new();
        let (ap, edge) = (
            "10.99.0.2:1701".parse().unwrap(),
            "10.99.0.1:1701".parse().unwrap(),
        );
        outer_frame(&mut out, ap, edge, PROTO_UDP, &[0, 0, 0, 7]);
        assert_eq!(out.len(), 14 + 20 + 8 + 4);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(internet_checksum(&out[14..34]), 0, "checksum verifies");
        assert_eq!(&out[16..18], &(32u16).to_be_bytes());
        assert_eq!(&out[34..42], &[0x06, 0xa5, 0x06, 0xa5, 0, 12, 0, 0]);
        let v6 = "[2001:db8::2]:0".parse().unwrap();
        outer_frame(
            &mut out,
            v6,
            "[2001:db8::1]:0".parse().unwrap(),
            115,
            &[1; 10],
        );
        assert_eq!(out.len(), 14 + 40 + 10);
        assert_eq!((out[18], out[19], out[20]), (0, 10, 115));
    }

    #[test]
    fn times_map_through_one_pair() {
        let c = Clock::now();
        let later = c.instant + Duration::from_millis(1500);
        assert_eq!(c.wall(later) - c.since_epoch, Duration::from_millis(1500));
        if let Some(earlier) = c.instant.checked_sub(Duration::from_secs(1)) {
            assert_eq!(c.since_epoch - c.wall(earlier), Duration::from_secs(1));
        }
    }

    #[test]
    fn the_pcapng_stream_reads_back() {
        use pcap_file::pcapng::{Block, PcapNgReader};
        let mut p = Pcapng::new(&["trunk".into(), "drop".into()], 512);
        let clock = Clock::now();
        let r = Record {
            point: 1,
            time: clock.instant,
            direction: Direction::Inbound,
            original_len: 100,
            data: vec![0xab; 60],
            comment: Some("switch.drop_vlan_not_allowed"),
        };
        p.packet(&r, &clock);
        p.statistics(&CaptureCounters::default(), clock.since_epoch);
        let bytes = p.take();
        assert_eq!(p.pending(), 0);
        let mut rd = PcapNgReader::new(&bytes[..]).unwrap();
        let mut names = Vec::new();
        let mut packets = 0;
        while let Some(b) = rd.next_block() {
            match b.unwrap() {
                Block::InterfaceDescription(i) => {
                    assert!(
                        i.options
                            .contains(&InterfaceDescriptionOption::IfTsResol(9))
                    );
                    for o in i.options {
                        if let InterfaceDescriptionOption::IfName(n) = o {
                            names.push(n.to_string());
                        }
                    }
                }
                Block::EnhancedPacket(e) => {
                    packets += 1;
                    assert_eq!((e.interface_id, e.original_len, e.data.len()), (1, 100, 60));
                    assert_eq!(e.timestamp, clock.since_epoch);
                    assert!(e.options.contains(&EnhancedPacketOption::Comment(
                        "switch.drop_vlan_not_allowed".into()
                    )));
                }
                _ => {}
            }
        }
        assert_eq!((names, packets), (vec!["trunk".into(), "drop".into()], 1));
    }
}
