//! The event loop's packet inputs — the tunnel sockets and the trunk — and
//! their priority and fairness. Control comes first: every turn, each
//! tunnel address's control socket (L2TP control, GRE keepalives: the
//! kernel sorts them there, see `io::tunnel`) is read before anything
//! else, up to [`CONTROL_BUDGET`]. Then the data sockets and the trunk,
//! each one source polled in rotation, each with a budget of
//! [`SOURCE_BUDGET`] packets or frames per turn, and all of them together
//! with the turn's data budget: [`DATA_WORK_BUDGET`] units of work (a
//! packet read, and each action the forwarding pipeline made of it — one
//! for a unicast frame, one per port for a flooded one: a broadcast from
//! one of 2,000 APs is 2,000 tunnel sends) and [`DATA_TIME_BUDGET`] of
//! wall time, whichever runs out first. A source reads no more at a time
//! than the work left allows at the fan-out its last packets had, and the
//! source after the last one served goes first next turn. So a turn is
//! bounded by the work it does, not by the packets it reads, and the
//! control sockets, the timers (hellos) and the control socket's requests
//! (`tunterm stats`) wait at most about one data budget, whatever the
//! data load.
//!
//! What a source cannot take in its budget waits in the kernel's queue;
//! when input comes faster than the loop can read it, the kernel's queue
//! fills and the excess is dropped there, counted
//! ([`IoCounters::tunnel_rx_shed_data`], [`IoCounters::trunk_rx_shed`]) —
//! at the data sockets, whose buffers are not the control sockets': a
//! data flood sheds data, never control
//! ([`IoCounters::tunnel_rx_shed_control`] stays 0). A socket stays
//! readable while anything is queued, so without a budget one flooded
//! socket would hold the loop and the timers (hellos), the control socket
//! and the other sockets would wait for as long as the flood lasts.

use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::{BATCH, Carrier, Dataplane, IoCounters};
use crate::io::afpacket::PacketSocket;
use crate::io::batch::RecvBatch;
use crate::io::tunnel::TunnelSockets;

/// Most packets (tunnel sockets) or frames (trunk) one source hands the
/// loop per turn: four `recvmmsg` batches. A turn with every source
/// flooded stays around a millisecond or two, so timers and the control
/// socket never wait longer than that.
pub(super) const SOURCE_BUDGET: usize = 4 * BATCH;

/// Most packets one control socket hands the loop per turn, ahead of
/// everything else: sixteen batches, far more than hellos and their acks
/// from thousands of APs bring in a turn, and still a bound should control
/// itself flood.
pub(super) const CONTROL_BUDGET: usize = 16 * BATCH;

/// Most work the data sockets and the trunk together do in one turn: a
/// unit for each packet or frame read and for each action the forwarding
/// pipeline makes of it (a tunnel send, a trunk or host-port frame, a
/// counted drop). Sixteen thousand: eight broadcasts flooded to 2,000
/// tunnels, tens of milliseconds of sends; far above what unicast traffic
/// reaches with the per-source budgets (a few sources × [`SOURCE_BUDGET`]
/// packets, one action each), so it binds only on floods.
pub(super) const DATA_WORK_BUDGET: u64 = 16_384;

/// Longest the data sockets and the trunk are served in one turn, wall
/// time (checked between batches): an edge that gets little CPU (a busy
/// host) still turns often enough for its control and timers.
pub(super) const DATA_TIME_BUDGET: Duration = Duration::from_millis(20);

/// How often a source's drop count is read when it is not overloaded.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// What is left of a turn's data budget.
struct DataBudget {
    /// Work done so far this turn.
    work: u64,
    /// When the time is spent.
    deadline: Instant,
}

impl DataBudget {
    fn new(now: Instant) -> DataBudget {
        DataBudget {
            work: 0,
            deadline: now + DATA_TIME_BUDGET,
        }
    }

    fn spent(&self) -> bool {
        self.work >= DATA_WORK_BUDGET || Instant::now() >= self.deadline
    }

    /// Packets a source with `fanout` work per packet may read now: at
    /// least one, at most `cap`.
    fn take(&self, fanout: u64, cap: usize) -> usize {
        let left = DATA_WORK_BUDGET.saturating_sub(self.work);
        usize::try_from(left / fanout.max(1))
            .unwrap_or(usize::MAX)
            .clamp(1, cap)
    }
}

/// The work per packet a source's packets made lately: what its last
/// batch made, or half the previous figure if that is more (a burst of
/// floods is not forgotten at the first unicast batch).
fn next_fanout(previous: u64, read: usize, work: u64) -> u64 {
    if read == 0 {
        return previous;
    }
    (work / read as u64).max(previous / 2).max(1)
}

/// One tunnel socket as a source.
struct Tunnel {
    carrier: Carrier,
    /// The control socket of its address, or the data one.
    control: bool,
    sock: Rc<TunnelSockets>,
    /// The socket's drop count (`SO_RXQ_OVFL`, `SO_MEMINFO`) as last seen.
    drops_seen: u32,
    /// When its drop count is read next (it is read at once when the
    /// socket was not read dry).
    drops_due: Instant,
    /// Work per packet its data made lately ([`next_fanout`]).
    fanout: u64,
}

/// Count a socket's drops up to `d` (its count, now or as a message
/// carried it; `seen`: the count last seen) as shed at a control socket
/// or at a data socket. A count older than the last seen is no news.
fn note_drops(seen: &mut u32, control: bool, d: u32, io: &mut IoCounters) {
    let shed = d.wrapping_sub(*seen);
    if shed == 0 || shed > u32::MAX / 2 {
        return;
    }
    *seen = d;
    let shed = u64::from(shed);
    io.tunnel_rx_shed += shed;
    if control {
        io.tunnel_rx_shed_control += shed;
    } else {
        io.tunnel_rx_shed_data += shed;
    }
}

/// The packet inputs of the loop: the tunnel sockets and the trunk.
pub(super) struct Inputs {
    /// The control sockets first (`controls` of them), then the data ones.
    tunnels: Vec<Tunnel>,
    controls: usize,
    /// None: not read (the shutdown waits on the tunnels only).
    trunk: Option<Rc<AsyncFd<PacketSocket>>>,
    /// Sources seen readable and not yet read dry: bit i is tunnel i, bit
    /// `tunnels.len()` the trunk.
    ready: u64,
    /// The source served first next turn (of the data sockets and the
    /// trunk).
    next: usize,
    /// When the trunk's drop count is read next.
    trunk_drops_due: Instant,
    /// Work per frame the trunk's frames made lately ([`next_fanout`]).
    trunk_fanout: u64,
}

impl Inputs {
    /// Every tunnel socket of `dp`, and the trunk when `with_trunk`.
    pub(super) fn new(dp: &Dataplane, with_trunk: bool) -> Inputs {
        let tunnels: Vec<Tunnel> = [true, false]
            .into_iter()
            .flat_map(|control| {
                dp.socks.slots.iter().map(move |(carrier, _, sock)| Tunnel {
                    carrier: *carrier,
                    control,
                    sock: sock.clone(),
                    drops_seen: 0,
                    drops_due: Instant::now(),
                    fanout: 1,
                })
            })
            .collect();
        assert!(tunnels.len() < 64, "one bit per source");
        Inputs {
            controls: tunnels.len() / 2,
            tunnels,
            trunk: with_trunk.then(|| dp.trunk.clone()),
            ready: 0,
            next: 0,
            trunk_drops_due: Instant::now(),
            trunk_fanout: 1,
        }
    }

    fn sources(&self) -> usize {
        self.tunnels.len() + usize::from(self.trunk.is_some())
    }

    /// Note which sources are readable; wakes the task when one becomes so.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        for (i, t) in self.tunnels.iter().enumerate() {
            let sock = t.sock.get(t.control);
            if self.ready & (1 << i) == 0
                && let Poll::Ready(r) = sock.poll_readable(cx)
            {
                r?;
                self.ready |= 1 << i;
            }
        }
        let i = self.tunnels.len();
        if let Some(trunk) = &self.trunk
            && self.ready & (1 << i) == 0
            && let Poll::Ready(r) = trunk.poll_read_ready(cx)
        {
            r?.retain_ready();
            self.ready |= 1 << i;
        }
        Ok(())
    }

    /// Resolves once some source is readable (for the loop's `select!`).
    pub(super) async fn readable(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            if let Err(e) = self.poll_ready(cx) {
                return Poll::Ready(Err(e));
            }
            if self.ready != 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// One turn: note what is readable now, without waiting; read every
    /// readable control socket, up to [`CONTROL_BUDGET`] each; then give
    /// each other readable source up to [`SOURCE_BUDGET`], starting with
    /// the one after the last served, until the turn's data budget
    /// ([`DATA_WORK_BUDGET`], [`DATA_TIME_BUDGET`]) is spent. True when
    /// some source still has input (the loop is overloaded).
    pub(super) async fn serve(
        &mut self,
        dp: &mut Dataplane,
        rx: &mut RecvBatch,
    ) -> io::Result<bool> {
        std::future::poll_fn(|cx| Poll::Ready(self.poll_ready(cx))).await?;
        for i in 0..self.controls {
            if self.ready & (1 << i) != 0 && self.serve_tunnel(i, CONTROL_BUDGET, dp, rx, None) {
                self.ready &= !(1 << i);
            }
        }
        let n = self.sources() - self.controls;
        if n == 0 {
            return Ok(self.ready != 0);
        }
        let mut budget = DataBudget::new(Instant::now());
        let mut served = 0;
        for k in 0..n {
            let i = self.controls + (self.next + k) % n;
            if self.ready & (1 << i) == 0 {
                continue;
            }
            if budget.spent() {
                break;
            }
            served = k + 1;
            let dry = if i < self.tunnels.len() {
                self.serve_tunnel(i, SOURCE_BUDGET, dp, rx, Some(&mut budget))
            } else {
                self.serve_trunk(dp, rx, &mut budget)
            };
            if dry {
                self.ready &= !(1 << i);
            }
        }
        rx.set_take(rx.capacity());
        self.next = (self.next + served.max(1)) % n;
        Ok(self.ready != 0)
    }

    /// Up to `limit` packets from tunnel socket `i`, and within `budget`
    /// (a data socket); true once it is read dry.
    fn serve_tunnel(
        &mut self,
        i: usize,
        limit: usize,
        dp: &mut Dataplane,
        rx: &mut RecvBatch,
        mut budget: Option<&mut DataBudget>,
    ) -> bool {
        let t = &mut self.tunnels[i];
        let pair = Rc::clone(&t.sock);
        let sock = pair.get(t.control);
        let mut dry = false;
        let mut left = limit;
        while left > 0 {
            let cap = left.min(rx.capacity());
            rx.set_take(budget.as_ref().map_or(cap, |b| b.take(t.fanout, cap)));
            let made = dp.made;
            dry = dp.drain_tunnel(t.carrier, sock, rx);
            left = left.saturating_sub(rx.take());
            if let Some(b) = budget.as_deref_mut() {
                let work = dp.made - made + rx.len() as u64;
                b.work += work;
                t.fanout = next_fanout(t.fanout, rx.len(), work);
            }
            if let Some(d) = rx.kernel_drops() {
                note_drops(&mut t.drops_seen, t.control, d, &mut dp.io);
            }
            if dry || budget.as_ref().is_some_and(|b| b.spent()) {
                break;
            }
        }
        // Overloaded (not read dry): read the drop count now, else now and
        // then. The messages' counts lag: behind a full queue, what is read
        // was queued before the latest drops.
        let now = Instant::now();
        if !dry || now >= t.drops_due {
            t.drops_due = now + DROPS_EVERY;
            if let Ok(d) = sock.drops() {
                note_drops(&mut t.drops_seen, t.control, d, &mut dp.io);
            }
        }
        dry
    }

    /// Up to [`SOURCE_BUDGET`] frames from the trunk, within `budget`; true
    /// once it is read dry.
    fn serve_trunk(
        &mut self,
        dp: &mut Dataplane,
        rx: &mut RecvBatch,
        budget: &mut DataBudget,
    ) -> bool {
        let mut dry = false;
        let mut left = SOURCE_BUDGET;
        while left > 0 {
            rx.set_take(budget.take(self.trunk_fanout, left.min(rx.capacity())));
            let made = dp.made;
            dry = dp.drain_trunk(rx);
            left = left.saturating_sub(rx.take());
            let work = dp.made - made + rx.len() as u64;
            budget.work += work;
            self.trunk_fanout = next_fanout(self.trunk_fanout, rx.len(), work);
            if dry || budget.spent() {
                break;
            }
        }
        // Overloaded (budget spent): read the drops now; else now and then.
        let now = Instant::now();
        if !dry || now >= self.trunk_drops_due {
            self.trunk_drops_due = now + DROPS_EVERY;
            if let Ok(d) = dp.trunk.get_ref().take_drops() {
                dp.io.trunk_rx_shed += u64::from(d);
            }
        }
        dry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_reads_what_the_work_left_allows_at_its_fanout() {
        let mut b = DataBudget::new(Instant::now() + Duration::from_secs(60));
        // Unicast: a whole batch.
        assert_eq!(b.take(1, BATCH), BATCH);
        // Broadcasts to 2,000 tunnels: eight fit in the turn.
        assert_eq!(b.take(2_001, BATCH), 8);
        b.work = DATA_WORK_BUDGET - 3_000;
        assert_eq!(b.take(2_001, BATCH), 1, "always at least one");
        assert!(!b.spent());
        b.work = DATA_WORK_BUDGET;
        assert!(b.spent(), "work spent");
        let late = DataBudget::new(Instant::now() - DATA_TIME_BUDGET);
        assert!(late.spent(), "time spent");
    }

    #[test]
    fn drops_are_counted_once_and_older_counts_are_no_news() {
        let mut io = IoCounters::default();
        let mut seen = 0;
        note_drops(&mut seen, false, 10, &mut io);
        // A message queued before the latest read carries an older count.
        note_drops(&mut seen, false, 7, &mut io);
        note_drops(&mut seen, false, 10, &mut io);
        note_drops(&mut seen, true, 15, &mut io);
        assert_eq!(
            (
                io.tunnel_rx_shed,
                io.tunnel_rx_shed_data,
                io.tunnel_rx_shed_control
            ),
            (15, 10, 5)
        );
        // The kernel's count wraps at 2^32.
        let mut seen = u32::MAX - 1;
        note_drops(&mut seen, false, 3, &mut io);
        assert_eq!((io.tunnel_rx_shed_data, seen), (15, 3));
    }

    #[test]
    fn the_fanout_follows_floods_up_at_once_and_down_by_halves() {
        assert_eq!(next_fanout(1, 64, 64), 1);
        assert_eq!(next_fanout(1, 8, 8 * 2_001), 2_001, "up at once");
        assert_eq!(next_fanout(2_001, 64, 64), 1_000, "down by half");
        assert_eq!(next_fanout(2_001, 0, 0), 2_001, "nothing read: unchanged");
        assert_eq!(next_fanout(1, 64, 0), 1, "at least one");
    }
}
