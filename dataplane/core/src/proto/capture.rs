//! Packet capture, sans-IO: capture points, the active captures, and the
//! [`Tap`] that feeds them from the forwarding pipeline.
//!
//! A capture watches one or more [`Point`]s, each with an optional
//! [`Filter`] (the daemon's is libpcap's compiled expression), and has
//! [`Limits`]. For every frame at one of its points the [`CaptureSet`]
//! counts it `seen`, runs the filter (`matched`), cuts it to the snap
//! length and queues a [`Record`] (the capture's index of the point, the
//! `now` it was given, the original length, the first bytes, the drop
//! reason for the `drop` point). The queue is bounded: a record that does
//! not fit is `dropped` and counted, never waited for. Whoever writes the
//! records out (pcapng, TZSP) takes them with [`CaptureSet::pop`].
//!
//! Frames reach the set through [`Tap`] (every ingress frame and every
//! egress copy of the pipeline, and the pipeline's drops), and from the
//! driver for what the pipeline does not see: [`CaptureSet::wire`] (the
//! AP-facing link's datagrams, outer headers included) and
//! [`CaptureSet::dropped`] (what the tunnel endpoints refuse before a frame
//! exists: bad cookie, unknown session).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::forward::{Out, Reason, Tap};
use crate::proto::bridge::{DropReason, HOST_PORT_BASE, PortId, TRUNK, is_host_port};
use crate::proto::gre::is_gre_port;
use crate::wire::ether;

/// Most captures at once.
pub const MAX_CAPTURES: usize = 8;
/// Records a capture queues before it drops (a reader that is not keeping
/// up loses frames, the forwarding does not wait).
pub const DEFAULT_QUEUE: usize = 4096;

/// Where a capture looks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// The upstream trunk: frames as it carries them (802.1Q tagged).
    Trunk,
    /// Every L2TP session of the AP of that Host Name: the inner frames.
    Ap(String),
    /// One L2TP session (our session id): the inner frames.
    Session(u32),
    /// The mGRE peer of that address: the inner frames.
    Gre(IpAddr),
    /// The edge's own host port on that VLAN (untagged).
    Host(u16),
    /// Frames entering the switch on that VLAN, from any port.
    Vlan(u16),
    /// The AP-facing link: the tunnel datagrams with their outer headers.
    Wire,
    /// Every frame tunterm drops, with the reason.
    Drop,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Trunk => f.write_str("trunk"),
            Point::Ap(name) => write!(f, "ap:{name}"),
            Point::Session(id) => write!(f, "session:{id}"),
            Point::Gre(addr) => write!(f, "gre:{addr}"),
            Point::Host(vid) => write!(f, "host:{vid}"),
            Point::Vlan(vid) => write!(f, "vlan:{vid}"),
            Point::Wire => f.write_str("wire"),
            Point::Drop => f.write_str("drop"),
        }
    }
}

impl FromStr for Point {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let vid = |v: &str| match v.parse::<u16>() {
            Ok(n @ 1..=4094) => Ok(n),
            _ => Err(format!("{s}: a VLAN id is 1 to 4094")),
        };
        match s {
            "trunk" => return Ok(Point::Trunk),
            "wire" => return Ok(Point::Wire),
            "drop" => return Ok(Point::Drop),
            _ => {}
        }
        let Some((kind, arg)) = s.split_once(':') else {
            return Err(format!("{s}: not a capture point"));
        };
        match kind {
            "ap" if !arg.is_empty() => Ok(Point::Ap(arg.to_string())),
            "session" => arg
                .parse()
                .map(Point::Session)
                .map_err(|_| format!("{s}: a session id is a number")),
            "gre" => arg
                .parse()
                .map(Point::Gre)
                .map_err(|_| format!("{s}: an mGRE peer is an IP address")),
            "host" => vid(arg).map(Point::Host),
            "vlan" => vid(arg).map(Point::Vlan),
            _ => Err(format!("{s}: not a capture point")),
        }
    }
}

/// Which way a frame went at its point, seen from tunterm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by tunterm.
    Inbound,
    /// Sent by tunterm.
    Outbound,
}

/// A capture filter (the daemon's: a libpcap program).
pub trait Filter {
    /// Whether `frame` (an Ethernet frame) passes.
    fn matches(&self, frame: &[u8]) -> bool;
}

impl<T: Fn(&[u8]) -> bool> Filter for T {
    fn matches(&self, frame: &[u8]) -> bool {
        self(frame)
    }
}

/// When a capture ends, and how much of each frame it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Records to take before it is done (0: no limit).
    pub num_packets: u64,
    /// Bytes kept of each frame.
    pub snaplen: usize,
}

/// A capture's counters (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCounters {
    /// Frames at its points.
    pub seen: u64,
    /// Frames its filters passed.
    pub matched: u64,
    /// Records written out (counted by the writer: handed to the reader's
    /// buffer, or sent as TZSP).
    pub written: u64,
    /// Records lost: its queue or its reader's buffer was full.
    pub dropped: u64,
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The point, as an index into the capture's list.
    pub point: usize,
    /// When it was seen (the `now` given with it).
    pub time: Instant,
    /// Received or sent by tunterm.
    pub direction: Direction,
    /// The frame's length.
    pub original_len: usize,
    /// Its first `snaplen` bytes.
    pub data: Vec<u8>,
    /// Why it was dropped (the counter's name), at the `drop` point.
    pub comment: Option<&'static str>,
}

/// What the capture set knows of a switch port, for the points named
/// after APs and peers and for `vlan:` on untagged frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// The AP's Host Name (an L2TP session).
    pub ap: Option<String>,
    /// The AP's address.
    pub peer: Option<IpAddr>,
    /// The VLAN of its untagged frames.
    pub untagged_vlan: Option<u16>,
}

struct Capture {
    id: u64,
    points: Vec<(Point, Option<Box<dyn Filter>>)>,
    limits: Limits,
    counters: CaptureCounters,
    queue: VecDeque<Record>,
    taken: u64,
}

impl Capture {
    fn done(&self) -> bool {
        self.limits.num_packets > 0 && self.taken >= self.limits.num_packets
    }
}

/// Where a frame was seen.
#[derive(Clone, Copy, Debug)]
enum Site {
    /// On a switch port; true: entering the switch.
    Port(PortId, bool),
    Wire,
    Drop,
}

/// Why a capture could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// [`MAX_CAPTURES`] are running.
    Full,
    /// No point given.
    NoPoint,
    /// The id is taken.
    Duplicate,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Full => write!(f, "{MAX_CAPTURES} captures are running; try again later"),
            StartError::NoPoint => f.write_str("no capture point"),
            StartError::Duplicate => f.write_str("capture id in use"),
        }
    }
}

/// The active captures.
pub struct CaptureSet {
    captures: Vec<Capture>,
    ports: HashMap<PortId, PortInfo>,
    queue_len: usize,
    /// The frame of the last ingress, for the pipeline's drops (which do
    /// not carry it), kept only while a capture watches `drop`.
    ingress: Vec<u8>,
    watch_drop: bool,
}

impl fmt::Debug for CaptureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureSet")
            .field("captures", &self.captures.len())
            .field("ports", &self.ports.len())
            .finish()
    }
}

impl Default for CaptureSet {
    fn default() -> Self {
        CaptureSet::new(DEFAULT_QUEUE)
    }
}

impl CaptureSet {
    /// No capture; each will queue at most `queue_len` records.
    pub fn new(queue_len: usize) -> Self {
        CaptureSet {
            captures: Vec::new(),
            ports: HashMap::new(),
            queue_len: queue_len.max(1),
            ingress: Vec::new(),
            watch_drop: false,
        }
    }

    /// Some capture runs.
    pub fn is_active(&self) -> bool {
        !self.captures.is_empty()
    }

    /// Some capture watches `point`.
    pub fn watches(&self, point: &Point) -> bool {
        self.captures
            .iter()
            .any(|c| c.points.iter().any(|(p, _)| p == point))
    }

    /// Start capture `id` on `points` (each with its filter).
    pub fn start(
        &mut self,
        id: u64,
        points: Vec<(Point, Option<Box<dyn Filter>>)>,
        limits: Limits,
    ) -> Result<(), StartError> {
        if points.is_empty() {
            return Err(StartError::NoPoint);
        }
        if self.captures.len() >= MAX_CAPTURES {
            return Err(StartError::Full);
        }
        if self.captures.iter().any(|c| c.id == id) {
            return Err(StartError::Duplicate);
        }
        self.captures.push(Capture {
            id,
            points,
            limits,
            counters: CaptureCounters::default(),
            queue: VecDeque::new(),
            taken: 0,
        });
        self.watch_drop = self.watches(&Point::Drop);
        Ok(())
    }

    /// End capture `id`: its counters (None: no such capture). Records
    /// still queued are gone.
    pub fn stop(&mut self, id: u64) -> Option<CaptureCounters> {
        let i = self.captures.iter().position(|c| c.id == id)?;
        let c = self.captures.swap_remove(i);
        self.watch_drop = self.watches(&Point::Drop);
        Some(c.counters)
    }

    /// The ids of the running captures.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.captures.iter().map(|c| c.id)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Capture> {
        self.captures.iter_mut().find(|c| c.id == id)
    }

    /// Capture `id`'s counters.
    pub fn counters(&self, id: u64) -> Option<CaptureCounters> {
        self.captures
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.counters)
    }

    /// The writer wrote `written` records of capture `id` out, and had no
    /// room for `dropped` more.
    pub fn count_output(&mut self, id: u64, written: u64, dropped: u64) {
        if let Some(c) = self.get_mut(id) {
            c.counters.written += written;
            c.counters.dropped += dropped;
        }
    }

    /// Capture `id` took its `num_packets` and its queue is empty.
    pub fn is_done(&self, id: u64) -> bool {
        self.captures
            .iter()
            .find(|c| c.id == id)
            .is_some_and(|c| c.done() && c.queue.is_empty())
    }

    /// The oldest queued record of capture `id`.
    pub fn pop(&mut self, id: u64) -> Option<Record> {
        self.get_mut(id)?.queue.pop_front()
    }

    /// What `port` is (an AP's session, an mGRE peer, its untagged VLAN).
    pub fn set_port(&mut self, port: PortId, info: PortInfo) {
        self.ports.insert(port, info);
    }

    /// `port` is gone.
    pub fn remove_port(&mut self, port: PortId) {
        self.ports.remove(&port);
    }

    /// Forget the last ingress frame: the pipeline's drops that follow
    /// (from [`Forwarder::deliver`](crate::forward::Forwarder::deliver),
    /// which has no ingress) have no frame to show and are not recorded.
    pub fn forget_ingress(&mut self) {
        self.ingress.clear();
    }

    /// A datagram on the AP-facing link (`frame`: Ethernet, outer IP and
    /// UDP headers and the L2TP or GRE packet).
    pub fn wire(&mut self, now: Instant, direction: Direction, frame: &[u8]) {
        self.offer(now, Site::Wire, frame, direction, None);
    }

    /// Something tunterm dropped, with the counter that counted it.
    pub fn dropped(&mut self, now: Instant, reason: &'static str, frame: &[u8]) {
        self.offer(now, Site::Drop, frame, Direction::Inbound, Some(reason));
    }

    fn vlan_of(&self, port: PortId, frame: &[u8]) -> Option<u16> {
        let view = ether::parse(frame)?;
        match view.tag {
            Some(t) if t.vid() != 0 => Some(t.vid()),
            _ if is_host_port(port) => Some((port.0 - HOST_PORT_BASE) as u16),
            _ => self.ports.get(&port)?.untagged_vlan,
        }
    }

    fn at(&self, point: &Point, site: Site, frame: &[u8]) -> bool {
        let info = |p: PortId| self.ports.get(&p);
        match (point, site) {
            (Point::Trunk, Site::Port(p, _)) => p == TRUNK,
            (Point::Session(id), Site::Port(p, _)) => {
                p.0 == *id && p != TRUNK && !is_gre_port(p) && !is_host_port(p)
            }
            (Point::Ap(name), Site::Port(p, _)) => {
                !is_gre_port(p) && info(p).and_then(|i| i.ap.as_deref()) == Some(name.as_str())
            }
            (Point::Gre(addr), Site::Port(p, _)) => {
                is_gre_port(p) && info(p).and_then(|i| i.peer) == Some(*addr)
            }
            (Point::Host(vid), Site::Port(p, _)) => p.0 == HOST_PORT_BASE + u32::from(*vid),
            (Point::Vlan(vid), Site::Port(p, true)) => self.vlan_of(p, frame) == Some(*vid),
            (Point::Wire, Site::Wire) | (Point::Drop, Site::Drop) => true,
            _ => false,
        }
    }

    fn offer(
        &mut self,
        now: Instant,
        site: Site,
        frame: &[u8],
        direction: Direction,
        comment: Option<&'static str>,
    ) {
        let mut captures = std::mem::take(&mut self.captures);
        for c in &mut captures {
            for (i, (point, filter)) in c.points.iter().enumerate() {
                if !self.at(point, site, frame) {
                    continue;
                }
                c.counters.seen += 1;
                if !filter.as_ref().is_none_or(|f| f.matches(frame)) {
                    continue;
                }
                c.counters.matched += 1;
                if c.limits.num_packets > 0 && c.taken >= c.limits.num_packets {
                    continue;
                }
                if c.queue.len() >= self.queue_len {
                    c.counters.dropped += 1;
                    continue;
                }
                c.taken += 1;
                c.queue.push_back(Record {
                    point: i,
                    time: now,
                    direction,
                    original_len: frame.len(),
                    data: frame[..frame.len().min(c.limits.snaplen)].to_vec(),
                    comment,
                });
            }
        }
        self.captures = captures;
    }
}

/// The name of the counter that counts a pipeline drop.
pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::Switch(d) => match d {
            DropReason::Malformed => "switch.drop_malformed",
            DropReason::UnknownPort => "switch.drop_unknown_port",
            DropReason::VlanNotAllowed => "switch.drop_vlan_not_allowed",
            DropReason::UntaggedNotAllowed => "switch.drop_untagged_not_allowed",
            DropReason::BadSourceMac => "switch.drop_bad_source_mac",
            DropReason::Local => "switch.drop_local",
        },
        Reason::NoTunnel => "io.tunnel_tx_no_session",
        Reason::TooBig => "io.too_big_dropped",
    }
}

impl Tap for CaptureSet {
    fn ingress(&mut self, now: Instant, port: PortId, frame: &[u8]) {
        if self.watch_drop {
            self.ingress.clear();
            self.ingress.extend_from_slice(frame);
        }
        self.offer(now, Site::Port(port, true), frame, Direction::Inbound, None);
    }

    fn output(&mut self, now: Instant, out: &Out<'_>) {
        let (port, frame) = match *out {
            Out::Trunk { frame, .. } => (TRUNK, frame),
            Out::HostPort { port, frame, .. } => (port, frame),
            Out::Tunnel {
                port,
                packet,
                header_len,
                ..
            } => (port, packet.get(header_len..).unwrap_or_default()),
            Out::Drop { reason, .. } => {
                if self.watch_drop && !self.ingress.is_empty() {
                    let frame = std::mem::take(&mut self.ingress);
                    self.dropped(now, reason_name(reason), &frame);
                    self.ingress = frame;
                }
                return;
            }
            Out::Relayed { .. } => return,
        };
        self.offer(
            now,
            Site::Port(port, false),
            frame,
            Direction::Outbound,
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        crate::test_t0()
    }

    /// Broadcast ARP-ish frame, tagged with `vid` when given.
    fn frame(vid: Option<u16>, len: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0xc1, 0, 0, 0, 1]);
        if let Some(v) = vid {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x06]);
        f.resize(len, 0xab);
        f
    }

    fn limits(n: u64, snaplen: usize) -> Limits {
        Limits {
            num_packets: n,
            snaplen,
        }
    }

    fn all(points: &[&str]) -> Vec<(Point, Option<Box<dyn Filter>>)> {
        points.iter().map(|p| (p.parse().unwrap(), None)).collect()
    }

    #[test]
    fn points_parse_and_print_back() {
        for s in [
            "trunk",
            "wire",
            "drop",
            "ap:5c5b35000001",
            "session:42",
            "gre:10.99.0.2",
            "gre:2001:db8::2",
            "host:30",
            "vlan:10",
        ] {
            assert_eq!(s.parse::<Point>().unwrap().to_string(), s);
        }
        for (bad, why) in [
            ("port9", "not a capture point"),
            ("vlan:0", "1 to 4094"),
            ("vlan:4095", "1 to 4094"),
            ("host:x", "1 to 4094"),
            ("session:a", "number"),
            ("gre:ap1", "IP address"),
            ("ap:", "not a capture point"),
            ("x:1", "not a capture point"),
        ] {
            let e = bad.parse::<Point>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn points_match_their_ports_and_vlans() {
        let mut set = CaptureSet::new(16);
        let sid = PortId(7);
        let gre = PortId(crate::proto::gre::GRE_PORT_BASE + 1);
        set.set_port(
            sid,
            PortInfo {
                ap: Some("ap1".into()),
                peer: Some("10.0.0.2".parse().unwrap()),
                untagged_vlan: Some(10),
            },
        );
        set.set_port(
            gre,
            PortInfo {
                ap: None,
                peer: Some("10.0.0.3".parse().unwrap()),
                untagged_vlan: Some(20),
            },
        );
        let pts = [
            "trunk",
            "ap:ap1",
            "session:7",
            "gre:10.0.0.3",
            "vlan:10",
            "vlan:20",
            "host:30",
        ];
        set.start(1, all(&pts), limits(0, 2048)).unwrap();
        let f = frame(None, 60);
        set.ingress(t0(), sid, &f); // ap:ap1, session:7, vlan:10
        set.ingress(t0(), gre, &f); // gre, vlan:20
        set.ingress(t0(), TRUNK, &frame(Some(20), 64)); // trunk, vlan:20
        set.ingress(t0(), PortId(HOST_PORT_BASE + 30), &f); // host:30 (vlan 30: none)
        set.ingress(t0(), PortId(99), &f); // nothing
        let mut got = Vec::new();
        while let Some(r) = set.pop(1) {
            got.push(pts[r.point]);
        }
        assert_eq!(
            got,
            [
                "ap:ap1",
                "session:7",
                "vlan:10",
                "gre:10.0.0.3",
                "vlan:20",
                "trunk",
                "vlan:20",
                "host:30"
            ]
        );
        set.remove_port(sid);
        set.ingress(t0(), sid, &f);
        let left: Vec<_> = std::iter::from_fn(|| set.pop(1))
            .map(|r| pts[r.point])
            .collect();
        assert_eq!(left, ["session:7"], "the AP's name went with the port");
    }

    #[test]
    fn filters_limits_and_a_full_queue_are_counted() {
        let mut set = CaptureSet::new(3);
        let only_long: Box<dyn Filter> = Box::new(|f: &[u8]| f.len() > 100);
        set.start(1, vec![(Point::Trunk, Some(only_long))], limits(0, 64))
            .unwrap();
        set.start(2, all(&["trunk"]), limits(2, 2048)).unwrap();
        for len in [60, 200, 300, 400, 500, 600] {
            set.ingress(t0(), TRUNK, &frame(None, len));
        }
        // 1: five long ones matched, three fit the queue, cut to 64 bytes.
        let c = set.counters(1).unwrap();
        assert_eq!((c.seen, c.matched, c.dropped), (6, 5, 2));
        let r = set.pop(1).unwrap();
        assert_eq!((r.original_len, r.data.len()), (200, 64));
        assert_eq!(r.direction, Direction::Inbound);
        // 2: done after two; the rest is seen and matched, not taken.
        assert!(!set.is_done(2), "records still queued");
        let lens: Vec<_> = std::iter::from_fn(|| set.pop(2))
            .map(|r| r.original_len)
            .collect();
        assert_eq!(lens, [60, 200]);
        assert!(set.is_done(2));
        let c = set.counters(2).unwrap();
        assert_eq!((c.seen, c.matched, c.dropped), (6, 6, 0));
        set.count_output(2, 1, 1);
        assert_eq!(set.stop(2).map(|c| (c.written, c.dropped)), Some((1, 1)));
        assert_eq!(set.counters(2), None);
        assert!(set.is_active());
        assert!(set.stop(1).is_some());
        assert!(!set.is_active());
    }

    #[test]
    fn at_most_max_captures_and_each_needs_a_point() {
        let mut set = CaptureSet::default();
        assert_eq!(
            set.start(0, vec![], limits(0, 64)),
            Err(StartError::NoPoint)
        );
        for id in 0..MAX_CAPTURES as u64 {
            set.start(id, all(&["drop"]), limits(0, 64)).unwrap();
        }
        assert_eq!(
            set.start(99, all(&["drop"]), limits(0, 64)),
            Err(StartError::Full)
        );
        set.stop(0);
        assert_eq!(
            set.start(1, all(&["drop"]), limits(0, 64)),
            Err(StartError::Duplicate)
        );
        // Every capture on `drop` gets the endpoints' drops.
        set.dropped(t0(), "l2tp.data_bad_cookie", &[1, 2, 3]);
        for id in set.ids().collect::<Vec<_>>() {
            let r = set.pop(id).unwrap();
            assert_eq!(
                (r.comment, r.data.as_slice()),
                (Some("l2tp.data_bad_cookie"), &[1, 2, 3][..])
            );
        }
    }
}
