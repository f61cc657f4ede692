//! The event loop's packet inputs — the tunnel sockets and the trunk — and
//! their priority and fairness. Control comes first: every turn, each
//! tunnel address's control socket (L2TP control, GRE keepalives: the
//! kernel sorts them there, see `io::tunnel`) is read before anything
//! else, up to [`CONTROL_BUDGET`]. Then the data sockets and the trunk,
//! each one source polled in rotation, each with a budget of
//! [`SOURCE_BUDGET`] packets or frames per turn. What a source cannot take
//! in its budget waits in the kernel's queue; when input comes faster than
//! the loop can read it, the kernel's queue fills and the excess is dropped
//! there, counted ([`IoCounters::tunnel_rx_shed_data`],
//! [`IoCounters::trunk_rx_shed`]) — at the data sockets, whose buffers are
//! not the control sockets': a data flood sheds data, never control
//! ([`IoCounters::tunnel_rx_shed_control`] stays 0). A socket stays
//! readable while anything is queued, so without a budget one flooded
//! socket would hold the loop and the timers (hellos), the control socket
//! and the other sockets would wait for as long as the flood lasts.
//!
//! [`IoCounters::tunnel_rx_shed_data`]: super::IoCounters::tunnel_rx_shed_data
//! [`IoCounters::tunnel_rx_shed_control`]: super::IoCounters::tunnel_rx_shed_control
//! [`IoCounters::trunk_rx_shed`]: super::IoCounters::trunk_rx_shed

use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::{BATCH, Carrier, Dataplane};
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

/// How often the trunk's drop count is read when it is not overloaded.
const TRUNK_DROPS_EVERY: Duration = Duration::from_secs(1);

/// One tunnel socket as a source.
struct Tunnel {
    carrier: Carrier,
    /// The control socket of its address, or the data one.
    control: bool,
    sock: Rc<TunnelSockets>,
    /// The socket's drop count (`SO_RXQ_OVFL`) as last seen.
    drops_seen: u32,
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
    /// each other readable source up to [`SOURCE_BUDGET`], starting one
    /// further along each turn. True when some source spent its whole
    /// budget and still has input (the loop is overloaded).
    pub(super) async fn serve(
        &mut self,
        dp: &mut Dataplane,
        rx: &mut RecvBatch,
    ) -> io::Result<bool> {
        std::future::poll_fn(|cx| Poll::Ready(self.poll_ready(cx))).await?;
        for i in 0..self.controls {
            if self.ready & (1 << i) != 0 && self.serve_tunnel(i, CONTROL_BUDGET, dp, rx) {
                self.ready &= !(1 << i);
            }
        }
        let n = self.sources() - self.controls;
        if n == 0 {
            return Ok(self.ready != 0);
        }
        for k in 0..n {
            let i = self.controls + (self.next + k) % n;
            if self.ready & (1 << i) == 0 {
                continue;
            }
            let dry = if i < self.tunnels.len() {
                self.serve_tunnel(i, SOURCE_BUDGET, dp, rx)
            } else {
                self.serve_trunk(dp, rx)
            };
            if dry {
                self.ready &= !(1 << i);
            }
        }
        self.next = (self.next + 1) % n;
        Ok(self.ready != 0)
    }

    /// Up to `budget` packets from tunnel socket `i`; true once it is read
    /// dry.
    fn serve_tunnel(
        &mut self,
        i: usize,
        budget: usize,
        dp: &mut Dataplane,
        rx: &mut RecvBatch,
    ) -> bool {
        let t = &mut self.tunnels[i];
        let pair = Rc::clone(&t.sock);
        let sock = pair.get(t.control);
        let mut dry = false;
        for _ in 0..budget.div_ceil(rx.capacity()) {
            dry = dp.drain_tunnel(t.carrier, sock, rx);
            if let Some(d) = rx.kernel_drops() {
                let shed = u64::from(d.wrapping_sub(t.drops_seen));
                t.drops_seen = d;
                dp.io.tunnel_rx_shed += shed;
                if t.control {
                    dp.io.tunnel_rx_shed_control += shed;
                } else {
                    dp.io.tunnel_rx_shed_data += shed;
                }
            }
            if dry {
                break;
            }
        }
        dry
    }

    /// Up to the budget from the trunk; true once it is read dry.
    fn serve_trunk(&mut self, dp: &mut Dataplane, rx: &mut RecvBatch) -> bool {
        let mut dry = false;
        for _ in 0..SOURCE_BUDGET.div_ceil(rx.capacity()) {
            dry = dp.drain_trunk(rx);
            if dry {
                break;
            }
        }
        // Overloaded (budget spent): read the drops now; else now and then.
        let now = Instant::now();
        if !dry || now >= self.trunk_drops_due {
            self.trunk_drops_due = now + TRUNK_DROPS_EVERY;
            if let Ok(d) = dp.trunk.get_ref().take_drops() {
                dp.io.trunk_rx_shed += u64::from(d);
            }
        }
        dry
    }
}
