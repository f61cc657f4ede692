//! Reliable delivery of control messages (RFC 3931 §4.2): Ns/Nr sequence
//! numbers, a send window from the peer's Receive Window Size, retransmission
//! with exponential backoff, in-order delivery with a reorder buffer, and
//! acknowledgements (piggybacked on the next message, or a ZLB).
//!
//! The channel owns no socket and no clock: the caller passes `now` in and
//! takes encoded packets out.
//!
//! Two retransmission regimes:
//! - while a connection is being set up, [`RetransmitConfig`]: backoff from
//!   `rto_initial`, doubling, capped at `rto_max`, given up after
//!   `max_retries` retransmissions (RFC 3931 §4.2);
//! - once it is established, [`Channel::set_keepalive`]: liveness is the
//!   channel's (RFC 3931 §4.4: a Hello is a reliably delivered message, the
//!   peer is dead when what we sent is not acknowledged after the
//!   retransmissions). The channel gives up (the hello timeout) when the
//!   oldest unacknowledged message has gone
//!   `window = max(hello_retries − 1, 1) × hello_interval` since its first
//!   transmission without any acknowledgement ([`Keepalive::window`]), and
//!   retransmits often enough for that window to hold at least
//!   [`KEEPALIVE_ATTEMPTS`] attempts: backoff from `min(rto_initial, cap)`,
//!   doubling, capped at `cap = min(rto_max, window / 16)` (not under
//!   50 ms).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::l2tp::{ControlHeader, Transport, emit_zlb};

/// `a` comes before `b` in 16-bit sequence space.
pub fn seq_lt(a: u16, b: u16) -> bool {
    (b.wrapping_sub(a) as i16) > 0
}

/// Retransmission settings.
#[derive(Clone, Copy, Debug)]
pub struct RetransmitConfig {
    /// First retransmission timeout.
    pub rto_initial: Duration,
    /// Cap of the exponential backoff.
    pub rto_max: Duration,
    /// Retransmissions of one message before the channel gives up.
    pub max_retries: u32,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        // RFC 3931 §4.2 recommends 1 s initial, 8 s cap, 5 retries.
        RetransmitConfig {
            rto_initial: Duration::from_secs(1),
            rto_max: Duration::from_secs(8),
            max_retries: 5,
        }
    }
}

/// Transmissions of one message a keepalive window holds at least (when
/// the cap is not `rto_max`): a round trip that fails 36% of the time
/// (20% loss each way) fails all of them about once in 10^7 (0.36^16 =
/// 8e-8).
pub const KEEPALIVE_ATTEMPTS: u32 = 16;

/// The least retransmission timeout of the keepalive regime.
const KEEPALIVE_RTO_FLOOR: Duration = Duration::from_millis(50);

/// The established regime of retransmission (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// The hello interval: a hello is sent when nothing was heard for it.
    pub interval: Duration,
    /// hello_retries: hello intervals unanswered before the peer is dead,
    /// the first one being the silence before our hello (the peer sends
    /// its own hello after an interval of silence, as we do).
    pub retries: u32,
}

impl Keepalive {
    /// How long the oldest unacknowledged message may wait for an
    /// acknowledgement after its first transmission:
    /// `max(retries − 1, 1) × interval`. On an idle connection the hello is
    /// sent one interval after the last packet heard, so a cut link is
    /// found dead `max(retries, 2) × interval` after that packet.
    pub fn window(&self) -> Duration {
        self.interval * self.retries.saturating_sub(1).max(1)
    }

    /// The cap of the backoff: `min(rto_max, window / 16)`, at least 50 ms.
    pub fn rto_max(&self, cfg: &RetransmitConfig) -> Duration {
        cfg.rto_max
            .min(self.window() / KEEPALIVE_ATTEMPTS)
            .max(KEEPALIVE_RTO_FLOOR)
    }

    /// The first retransmission timeout: `min(rto_initial, cap)`.
    pub fn rto_initial(&self, cfg: &RetransmitConfig) -> Duration {
        cfg.rto_initial.min(self.rto_max(cfg))
    }
}

/// What became of a received control message's sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// It was the next expected one: deliver it (and then any buffered
    /// successors returned by [`Channel::take_buffered`]).
    InOrder,
    /// Already delivered: the peer missed our acknowledgement.
    Duplicate,
    /// Ahead of the expected one and inside our window: kept for later.
    Buffered,
    /// Ahead of our receive window: dropped.
    OutOfWindow,
}

#[derive(Debug)]
struct Unacked {
    ns: u16,
    packet: Vec<u8>,
    sent: bool,
}

/// One direction-pair of reliable control delivery.
#[derive(Debug)]
pub struct Channel {
    transport: Transport,
    cfg: RetransmitConfig,
    /// Set once the connection is established: liveness from the
    /// acknowledgements instead of `max_retries`.
    keepalive: Option<Keepalive>,
    /// First transmission of the oldest message still unacknowledged (reset
    /// by every acknowledgement that moves the window).
    waiting_since: Option<Instant>,
    peer_ccid: u32,
    next_ns: u16,
    expected_ns: u16,
    peer_window: u16,
    rx_window: u16,
    queue: VecDeque<Unacked>,
    reorder: BTreeMap<u16, Vec<u8>>,
    ack_pending: bool,
    rto: Duration,
    retries: u32,
    retransmit_at: Option<Instant>,
    failed: bool,
    /// Restored from a snapshot: take the sequence numbers from the next
    /// packet the peer sends ([`Channel::resync`]).
    resync: bool,
    /// Control packets handed out for transmission (including ZLBs and
    /// retransmissions).
    pub tx_packets: u64,
    /// Retransmissions.
    pub retransmits: u64,
}

impl Channel {
    /// A channel that advertises `rx_window` and sends to `peer_ccid`
    /// (0 until the peer has assigned one).
    pub fn new(
        transport: Transport,
        cfg: RetransmitConfig,
        rx_window: u16,
        peer_ccid: u32,
    ) -> Self {
        Channel {
            transport,
            cfg,
            keepalive: None,
            waiting_since: None,
            peer_ccid,
            next_ns: 0,
            expected_ns: 0,
            peer_window: 4,
            rx_window: rx_window.max(1),
            queue: VecDeque::new(),
            reorder: BTreeMap::new(),
            ack_pending: false,
            rto: cfg.rto_initial,
            retries: 0,
            retransmit_at: None,
            failed: false,
            resync: false,
            tx_packets: 0,
            retransmits: 0,
        }
    }

    /// A channel of a connection restored after a restart: `next_ns` and
    /// `expected_ns` as last written, to be corrected by the peer's next
    /// packet ([`Channel::resync`]).
    pub fn restored(
        transport: Transport,
        cfg: RetransmitConfig,
        rx_window: u16,
        peer_ccid: u32,
        (next_ns, expected_ns, peer_window): (u16, u16, u16),
    ) -> Self {
        let mut ch = Channel::new(transport, cfg, rx_window, peer_ccid);
        ch.next_ns = next_ns;
        ch.expected_ns = expected_ns;
        ch.peer_window = peer_window.max(1);
        ch.resync = true;
        ch
    }

    /// Our next Ns, the Ns expected from the peer, the peer's window (for a
    /// snapshot).
    pub fn sequence_state(&self) -> (u16, u16, u16) {
        (self.next_ns, self.expected_ns, self.peer_window)
    }

    /// A restored channel's first packet from the peer (any, ZLB
    /// included) carries the truth: its `ns` is what we expect next (a
    /// ZLB's Ns is the sender's next), its `nr` what we send next. What we
    /// queued meanwhile is renumbered from `nr` and sent again. Does
    /// nothing on a channel that is not waiting to resynchronise.
    pub fn resync(&mut self, ns: u16, nr: u16) {
        if !std::mem::take(&mut self.resync) {
            return;
        }
        self.expected_ns = ns;
        self.reorder.clear();
        let mut next = nr;
        for m in &mut self.queue {
            m.ns = next;
            m.sent = false;
            next = next.wrapping_add(1);
        }
        self.next_ns = next;
        self.retransmit_at = None;
        self.waiting_since = None;
        self.retries = 0;
        self.rto = self.rto_initial();
    }

    /// Set the peer's Control Connection ID once it is known.
    pub fn set_peer_ccid(&mut self, ccid: u32) {
        self.peer_ccid = ccid;
    }

    /// Set the peer's receive window (its Receive Window Size AVP).
    pub fn set_peer_window(&mut self, window: u16) {
        self.peer_window = window.max(1);
    }

    /// Established: liveness by [`Keepalive`] (`None`: back to the setup
    /// regime, `max_retries`, as for a StopCCN). Takes effect from the next
    /// (re)transmission.
    pub fn set_keepalive(&mut self, keepalive: Option<Keepalive>) {
        self.keepalive = keepalive;
        self.retries = 0;
        self.rto = self.rto_initial();
    }

    /// The established regime, if set.
    pub fn keepalive(&self) -> Option<Keepalive> {
        self.keepalive
    }

    fn rto_initial(&self) -> Duration {
        match &self.keepalive {
            Some(k) => k.rto_initial(&self.cfg),
            None => self.cfg.rto_initial,
        }
    }

    fn rto_max(&self) -> Duration {
        match &self.keepalive {
            Some(k) => k.rto_max(&self.cfg),
            None => self.cfg.rto_max,
        }
    }

    /// When the channel gives up on the peer (keepalive regime, something
    /// outstanding).
    pub fn dead_at(&self) -> Option<Instant> {
        Some(self.waiting_since? + self.keepalive?.window())
    }

    /// Our receive window, as advertised.
    pub fn rx_window(&self) -> u16 {
        self.rx_window
    }

    /// True once the channel gave up: a message retransmitted
    /// `max_retries` times unacked, or (established) unacknowledged for the
    /// keepalive window.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// True when nothing we sent is waiting for an acknowledgement.
    pub fn all_acked(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queue an encoded message (built with `ccid/ns/nr` of 0; they are
    /// written at transmission). Returns the Ns it was given.
    pub fn queue_message(&mut self, packet: Vec<u8>) -> u16 {
        let ns = self.next_ns;
        self.next_ns = self.next_ns.wrapping_add(1);
        self.queue.push_back(Unacked {
            ns,
            packet,
            sent: false,
        });
        ns
    }

    /// Process the Nr of any received control packet (ZLB included):
    /// everything before it is acknowledged.
    pub fn on_ack(&mut self, now: Instant, nr: u16) {
        let mut progressed = false;
        while let Some(front) = self.queue.front() {
            if front.sent && seq_lt(front.ns, nr) {
                self.queue.pop_front();
                progressed = true;
            } else {
                break;
            }
        }
        if progressed {
            self.retries = 0;
            self.rto = self.rto_initial();
            let waiting = self.queue.iter().any(|m| m.sent);
            self.waiting_since = waiting.then_some(now);
            self.retransmit_at = waiting.then(|| now + self.rto);
        }
    }

    /// Classify a received non-ZLB message by its Ns. For `Buffered`, the
    /// packet bytes are kept.
    pub fn on_message(&mut self, ns: u16, packet: &[u8]) -> Received {
        if ns == self.expected_ns {
            self.expected_ns = self.expected_ns.wrapping_add(1);
            self.ack_pending = true;
            Received::InOrder
        } else if seq_lt(ns, self.expected_ns) {
            self.ack_pending = true;
            Received::Duplicate
        } else if ns.wrapping_sub(self.expected_ns) < self.rx_window {
            self.reorder.entry(ns).or_insert_with(|| packet.to_vec());
            self.ack_pending = true;
            Received::Buffered
        } else {
            Received::OutOfWindow
        }
    }

    /// The next buffered message that is now in order, if any.
    pub fn take_buffered(&mut self) -> Option<Vec<u8>> {
        let packet = self.reorder.remove(&self.expected_ns)?;
        self.expected_ns = self.expected_ns.wrapping_add(1);
        self.ack_pending = true;
        Some(packet)
    }

    /// When [`Channel::handle_timeout`] wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit_at, self.dead_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Retransmit what is due. Call when `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if self.dead_at().is_some_and(|t| now >= t) {
            self.failed = true;
            self.retransmit_at = None;
            self.waiting_since = None;
            return;
        }
        let Some(at) = self.retransmit_at else { return };
        if now < at {
            return;
        }
        if self.keepalive.is_none() && self.retries >= self.cfg.max_retries {
            self.failed = true;
            self.retransmit_at = None;
            return;
        }
        self.retries += 1;
        self.rto = (self.rto * 2).min(self.rto_max());
        for m in self.queue.iter_mut().filter(|m| m.sent) {
            m.sent = false;
            self.retransmits += 1;
        }
        self.retransmit_at = None;
    }

    /// Hand out the next packet to send: a queued message inside the peer's
    /// window (carrying the current Nr), or a ZLB if an acknowledgement is
    /// owed and nothing else carries it.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let window = usize::from(self.peer_window);
        let prefix = match self.transport {
            Transport::Udp => 0,
            Transport::Ip => 4,
        };
        let (ccid, nr) = (self.peer_ccid, self.expected_ns);
        if let Some(m) = self.queue.iter_mut().take(window).find(|m| !m.sent) {
            m.sent = true;
            let mut packet = m.packet.clone();
            write_header(&mut packet[prefix..], ccid, m.ns, nr);
            self.ack_pending = false;
            self.tx_packets += 1;
            self.waiting_since.get_or_insert(now);
            if self.retransmit_at.is_none() {
                self.retransmit_at = Some(now + self.rto);
            }
            return Some(packet);
        }
        if self.ack_pending {
            self.ack_pending = false;
            let mut packet = Vec::with_capacity(prefix + 12);
            let header = ControlHeader {
                ccid,
                ns: self.next_ns,
                nr,
            };
            emit_zlb(self.transport, header, &mut packet);
            self.tx_packets += 1;
            return Some(packet);
        }
        None
    }
}

fn write_header(packet: &mut [u8], ccid: u32, ns: u16, nr: u16) {
    packet[4..8].copy_from_slice(&ccid.to_be_bytes());
    packet[8..10].copy_from_slice(&ns.to_be_bytes());
    packet[10..12].copy_from_slice(&nr.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ch: &Channel) -> Vec<u8> {
        let _ = ch;
        // A bare control header with one Message Type AVP (HELLO).
        vec![
            0xc8, 0x03, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 8, 0, 0, 0, 0, 0, 6,
        ]
    }

    fn ns_nr(p: &[u8]) -> (u16, u16) {
        (
            u16::from_be_bytes([p[8], p[9]]),
            u16::from_be_bytes([p[10], p[11]]),
        )
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_lt(1, 2));
        assert!(seq_lt(65535, 0));
        assert!(!seq_lt(0, 65535));
        assert!(!seq_lt(7, 7));
    }

    #[test]
    fn window_limits_in_flight_and_ack_releases() {
        let t0 = crate::test_t0();
        let mut ch = Channel::new(Transport::Udp, RetransmitConfig::default(), 8, 42);
        ch.set_peer_window(2);
        for _ in 0..3 {
            let m = msg(&ch);
            ch.queue_message(m);
        }
        let a = ch.poll_transmit(t0).unwrap();
        let b = ch.poll_transmit(t0).unwrap();
        assert!(
            ch.poll_transmit(t0).is_none(),
            "third message must wait for the window"
        );
        assert_eq!(ns_nr(&a), (0, 0));
        assert_eq!(ns_nr(&b), (1, 0));
        assert_eq!(u32::from_be_bytes([a[4], a[5], a[6], a[7]]), 42);
        ch.on_ack(t0, 1);
        let c = ch.poll_transmit(t0).unwrap();
        assert_eq!(ns_nr(&c).0, 2);
    }

    #[test]
    fn retransmits_with_backoff_then_fails() {
        let t0 = crate::test_t0();
        let cfg = RetransmitConfig {
            rto_initial: Duration::from_secs(1),
            rto_max: Duration::from_secs(4),
            max_retries: 3,
        };
        let mut ch = Channel::new(Transport::Udp, cfg, 8, 1);
        let m = msg(&ch);
        ch.queue_message(m);
        assert!(ch.poll_transmit(t0).is_some());
        let mut now = t0;
        let mut gaps = vec![];
        for _ in 0..3 {
            let at = ch.poll_timeout().unwrap();
            gaps.push(at - now);
            now = at;
            ch.handle_timeout(now);
            assert!(ch.poll_transmit(now).is_some(), "retransmission");
        }
        assert_eq!(
            gaps,
            [1, 2, 4].map(Duration::from_secs).to_vec(),
            "1 s, then doubling"
        );
        let at = ch.poll_timeout().unwrap();
        assert_eq!(at - now, Duration::from_secs(4), "capped at rto_max");
        ch.handle_timeout(at);
        assert!(ch.failed());
        assert_eq!(ch.retransmits, 3);
    }

    #[test]
    fn keepalive_gives_up_after_its_window_having_sent_sixteen_times() {
        let t0 = crate::test_t0();
        let mut ch = Channel::new(Transport::Udp, RetransmitConfig::default(), 8, 1);
        // hello 1 s × 3: window 2 s, cap 2 s / 16 = 125 ms.
        let ka = Keepalive {
            interval: Duration::from_secs(1),
            retries: 3,
        };
        assert_eq!(ka.window(), Duration::from_secs(2));
        assert_eq!(
            ka.rto_max(&RetransmitConfig::default()),
            Duration::from_millis(125)
        );
        ch.set_keepalive(Some(ka));
        let m = msg(&ch);
        ch.queue_message(m);
        let mut sent = vec![];
        let mut now = t0;
        while !ch.failed() {
            if ch.poll_transmit(now).is_some() {
                sent.push(now - t0);
            }
            now = ch.poll_timeout().unwrap();
            ch.handle_timeout(now);
        }
        assert_eq!(
            sent,
            (0..16)
                .map(|i| Duration::from_millis(125) * i)
                .collect::<Vec<_>>(),
            "every 125 ms, past max_retries (5)"
        );
        assert_eq!(now - t0, Duration::from_secs(2), "gave up at the window");
        assert_eq!(ch.retransmits, 15);
        assert_eq!(ch.poll_timeout(), None);
    }

    #[test]
    fn an_acknowledgement_restarts_the_keepalive_window() {
        let t0 = crate::test_t0();
        let mut ch = Channel::new(Transport::Udp, RetransmitConfig::default(), 8, 1);
        ch.set_keepalive(Some(Keepalive {
            interval: Duration::from_secs(10),
            retries: 3,
        }));
        for _ in 0..2 {
            let m = msg(&ch);
            ch.queue_message(m);
        }
        assert!(ch.poll_transmit(t0).is_some());
        assert!(ch.poll_transmit(t0).is_some());
        assert_eq!(ch.dead_at(), Some(t0 + Duration::from_secs(20)));
        // The first is acknowledged at 15 s: the second waits from there.
        let t15 = t0 + Duration::from_secs(15);
        ch.on_ack(t15, 1);
        assert_eq!(ch.dead_at(), Some(t15 + Duration::from_secs(20)));
        ch.on_ack(t15, 2);
        assert_eq!(ch.dead_at(), None, "nothing outstanding");
        assert_eq!(ch.poll_timeout(), None);
        // Back to the setup regime (a StopCCN): max_retries again.
        ch.set_keepalive(None);
        let m = msg(&ch);
        ch.queue_message(m);
        let mut now = t15;
        let mut sent = 0;
        while !ch.failed() {
            sent += u32::from(ch.poll_transmit(now).is_some());
            now = ch.poll_timeout().unwrap();
            ch.handle_timeout(now);
        }
        assert_eq!(sent, 1 + RetransmitConfig::default().max_retries);
    }

    #[test]
    fn receive_in_order_duplicate_and_reorder() {
        let mut ch = Channel::new(Transport::Udp, RetransmitConfig::default(), 4, 1);
        let t0 = crate::test_t0();
        assert_eq!(ch.on_message(0, b"m0"), Received::InOrder);
        assert_eq!(ch.on_message(0, b"m0"), Received::Duplicate);
        assert_eq!(ch.on_message(2, b"m2"), Received::Buffered);
        assert_eq!(ch.on_message(9, b"m9"), Received::OutOfWindow);
        assert_eq!(ch.take_buffered(), None, "1 is still missing");
        assert_eq!(ch.on_message(1, b"m1"), Received::InOrder);
        assert_eq!(ch.take_buffered().as_deref(), Some(&b"m2"[..]));
        assert_eq!(ch.take_buffered(), None);
        // Owed ack goes out as a ZLB with Nr = 3.
        let zlb = ch.poll_transmit(t0).unwrap();
        assert_eq!(zlb.len(), 12);
        assert_eq!(ns_nr(&zlb), (0, 3));
        assert!(ch.poll_transmit(t0).is_none());
    }

    #[test]
    fn piggybacked_ack_replaces_zlb() {
        let t0 = crate::test_t0();
        let mut ch = Channel::new(Transport::Ip, RetransmitConfig::default(), 4, 9);
        assert_eq!(ch.on_message(0, b""), Received::InOrder);
        let mut m = vec![0, 0, 0, 0];
        m.extend(msg(&ch));
        ch.queue_message(m);
        let p = ch.poll_transmit(t0).unwrap();
        assert_eq!(&p[..4], &[0, 0, 0, 0], "IP mode keeps the zero session id");
        assert_eq!(ns_nr(&p[4..]), (0, 1));
        assert!(ch.poll_transmit(t0).is_none(), "no separate ZLB");
    }
}
