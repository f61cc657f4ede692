//! The userspace path on more than one core (`tunterm run --workers N`):
//! the control thread (the event loop of [`crate::driver`], which alone
//! mutates the protocol state) plus N-1 forwarding workers, each a thread
//! of its own with a current-thread tokio runtime.
//!
//! ```text
//!  trunk ── PACKET_FANOUT (hash) ──┬─ control thread's trunk socket: the
//!                                  │   whole pipeline, as with --workers 1
//!                                  └─ worker k's trunk socket
//!  addr:1701 ─ SO_REUSEPORT group ─┬─ 0 control socket   (T bit set)
//!    (cBPF selector)               ├─ 1 control thread's data socket (idle)
//!                                  └─ 2 + k: worker k    (data: session
//!                                       id mod (N-1), one session's
//!                                       packets on one worker, in order)
//!  addr, proto 115 ─ raw sockets, each with its own socket filter
//!  (L2TPv3/IP)    ─┬─ control socket   (session id 0)
//!                  ├─ control thread's data socket: filter drops all
//!                  └─ worker k: session id ≠ 0, session id mod (N-1) = k
//!  addr, proto 47 ─┬─ control socket   (protocol type ≠ 0x6558)
//!  (mGRE)          ├─ control thread's data socket: filter drops all
//!                  └─ worker k: protocol type 0x6558, last 32 bits of the
//!                       source address mod (N-1) = k (one AP's packets,
//!                       keyed or not, on one worker, in order)
//!
//!  worker: known unicast between the trunk and an L2TPv3 session (UDP or
//!          IP) or an mGRE peer (the read-only [`Table`], swapped whole by
//!          the control thread)
//!          → forwarded here: trunk frame written, tunnel packet sendmmsg'd
//!            on the worker's own socket of that carrier and family
//!          anything else → the punt queue (bounded; full: counted drop)
//!          → the control thread's pipeline, as if read by it
//! ```
//!
//! A raw socket has no reuseport group (every raw socket of a protocol
//! gets a copy of every packet), so each worker opens its own raw socket
//! per raw tunnel address whose filter keeps only its share of the data,
//! and the control thread's data socket of that address gets a filter that
//! keeps nothing while the workers run (given back when they stop).
//!
//! What a worker forwards is what the XDP fast path forwards (the same
//! content as its maps, [`Table::build`]), and like it a worker marks the
//! FDB entries of the sources it forwards from and the mGRE peers it hears
//! from; the control thread carries the marks into the switch and the mGRE
//! endpoint, so those MACs do not age out and those peers do not time
//! out.

mod table;

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use tunterm_core::forward::{Carrier, TunnelMtus};
use tunterm_core::proto::bridge::{Switch, SwitchCounters};
use tunterm_core::proto::gre::GreEndpoint;
use tunterm_core::proto::l2tp::Endpoint;

use crate::driver::IoCounters;
use crate::io::afpacket::PacketSocket;
use crate::io::batch::RecvBatch;
use crate::io::raw::{RawIpSocket, udp_socket_with};
use crate::io::sockopt::attach_cbpf;
use crate::io::tunnel::{SEND_BATCH, TunnelSocket, TunnelSockets, raw_worker_filter};

use table::{Dest, Table};

/// Frames (or packets) one worker reads per `recvmmsg`.
const BATCH: usize = 64;
/// Most a worker reads from one source before it looks at the others.
const BUDGET: usize = 4 * BATCH;
/// Batches of punted frames waiting for the control thread: up to
/// `PUNT_QUEUE * BATCH` frames. Full: the batch is dropped and counted.
pub(crate) const PUNT_QUEUE: usize = 256;
/// How long a worker waits for input before it looks at its stop flag and
/// its sockets again.
const IDLE: Duration = Duration::from_millis(50);
/// Longest a reload waits for every worker to take its new tunnel sockets
/// (a worker looks at least every [`IDLE`]).
const RESOCKET_WAIT: Duration = Duration::from_millis(500);
/// Least time between two table rebuilds (each copies the FDB), so a
/// learning storm costs a bounded share of the control thread. New MACs
/// are forwarded by the control thread meanwhile.
const REBUILD_EVERY: Duration = Duration::from_millis(50);
/// The table is rebuilt at least this often (what changes without an FDB
/// or session change: a port's VLANs on a reload, a bounce).
const REBUILD_ANYWAY: Duration = Duration::from_secs(2);
/// How often the workers' "seen" marks are carried into the switch.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A worker's counters, by index (summed into `tunterm stats` under the
/// control thread's names).
#[derive(Clone, Copy)]
enum C {
    TrunkRx,
    TrunkRxBytes,
    TrunkRxTruncated,
    TrunkRxShed,
    TrunkTx,
    TrunkTxBytes,
    TrunkTxErrors,
    TunnelRx,
    TunnelRxBytes,
    TunnelRxTruncated,
    TunnelRxShed,
    TunnelTx,
    TunnelTxBytes,
    TunnelTxErrors,
    TunnelTxCalls,
    /// Tunnel → trunk.
    ForwardedUp,
    /// Trunk → tunnel.
    ForwardedDown,
    Punted,
    PuntDropped,
}
const COUNTERS: usize = C::PuntDropped as usize + 1;

/// One worker's side of the stats.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Frames it forwarded itself (known unicast) from a tunnel to the
    /// trunk.
    pub forwarded_to_trunk: u64,
    /// Frames it forwarded itself from the trunk into a tunnel.
    pub forwarded_to_tunnels: u64,
    /// Frames and packets it handed to the control thread.
    pub punted: u64,
    /// Of those, dropped because the punt queue was full.
    pub punt_dropped: u64,
}

/// `workers` in the stats document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkersStats {
    /// Forwarding workers beside the control thread (`--workers` - 1).
    pub workers: usize,
    /// Sessions in the table they forward with.
    pub table_sessions: usize,
    /// FDB entries in that table.
    pub table_fdb: usize,
    /// Tables published.
    pub tables: u64,
    /// FDB entries kept from aging by the workers' marks.
    pub refreshed: u64,
    /// Per worker.
    pub per_worker: Vec<WorkerStats>,
}

/// What the control thread and the workers share.
struct Shared {
    table: RwLock<Arc<Table>>,
    sockets: RwLock<Arc<SocketSet>>,
    stop: AtomicBool,
    counters: Vec<[AtomicU64; COUNTERS]>,
    /// Per worker, the [`SocketSet`] generation it has taken (and so let
    /// go of every socket of earlier ones).
    taken: Vec<AtomicU64>,
}

/// The workers' tunnel sockets: `per_worker[k]` are worker k's, one per
/// tunnel address (and carrier).
#[derive(Default)]
struct SocketSet {
    generation: u64,
    per_worker: Vec<Vec<Arc<WorkerSocket>>>,
}

/// One worker's tunnel socket (a UDP socket in a reuseport group, or a raw
/// socket with the worker's filter), with the kernel's drop count for it
/// already counted: kept with the socket, so a worker that takes it again
/// (a new socket set, the threads started again when the trunk moved)
/// counts only new drops.
struct WorkerSocket {
    carrier: Carrier,
    sock: WorkerSock,
    drops_seen: std::sync::atomic::AtomicU32,
}

enum WorkerSock {
    Udp(std::net::UdpSocket),
    Raw(RawIpSocket),
}

impl WorkerSocket {
    /// A handle of its own for a worker's runtime, and its family.
    fn open(&self) -> std::io::Result<(TunnelSocket, bool)> {
        Ok(match &self.sock {
            WorkerSock::Udp(u) => (
                TunnelSocket::Udp(tokio::net::UdpSocket::from_std(u.try_clone()?)?),
                u.local_addr()?.is_ipv6(),
            ),
            WorkerSock::Raw(r) => (
                TunnelSocket::Raw(r.try_clone()?.into_async()?),
                r.local().is_ipv6(),
            ),
        })
    }
}

/// Where a punted frame came from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    Trunk,
    Tunnel(Carrier, SocketAddr),
}

/// Frames a worker hands the control thread, from one receive batch.
#[derive(Default)]
pub(crate) struct PuntBatch {
    items: Vec<(Source, Range<usize>)>,
    buf: Vec<u8>,
}

impl PuntBatch {
    /// Each frame and where it came from.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Source, &[u8])> + '_ {
        self.items.iter().map(|(s, r)| (*s, &self.buf[r.clone()]))
    }

    fn push(&mut self, src: Source, bytes: &[u8]) {
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.items.push((src, at..self.buf.len()));
    }
}

/// The control thread's handle on the workers.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The trunk interface the workers' packet sockets are bound to.
    upstream: String,
    /// The punt queue's sending end, for the threads (started again when
    /// the trunk moves).
    tx: mpsc::Sender<PuntBatch>,
    /// The tunnel addresses the workers have sockets on, by the control
    /// thread's pair.
    joined: Vec<(Rc<TunnelSockets>, Vec<Arc<WorkerSocket>>)>,
    socket_generation: u64,
    /// The published table's inputs.
    fdb_generation: u64,
    capture: bool,
    dirty: bool,
    rebuild_due: Instant,
    rebuild_anyway: Instant,
    refresh_due: Instant,
    tables: u64,
    refreshed: u64,
}

impl Workers {
    /// Start `n` workers (n ≥ 1) on the trunk `upstream` (its sockets join
    /// `trunk`'s fanout group) and the tunnel addresses of `socks`.
    /// Returns them and the receiving end of their punt queue.
    pub(crate) fn start(
        n: usize,
        upstream: &str,
        trunk: &PacketSocket,
        socks: &[(Carrier, IpAddr, Rc<TunnelSockets>)],
    ) -> anyhow::Result<(Workers, mpsc::Receiver<PuntBatch>)> {
        let (tx, rx) = mpsc::channel(PUNT_QUEUE);
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(Table::default())),
            sockets: RwLock::new(Arc::new(SocketSet::default())),
            stop: AtomicBool::new(false),
            counters: (0..n)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            taken: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        let now = Instant::now();
        let mut w = Workers {
            shared,
            threads: Vec::new(),
            upstream: upstream.to_owned(),
            tx,
            joined: Vec::new(),
            socket_generation: 0,
            fdb_generation: 0,
            capture: false,
            dirty: true,
            rebuild_due: now,
            rebuild_anyway: now,
            refresh_due: now + REFRESH_EVERY,
            tables: 0,
            refreshed: 0,
        };
        w.set_sockets(n, socks)?;
        w.spawn(trunk)?;
        Ok((w, rx))
    }

    /// Start the threads on `self.upstream`: a packet socket each, in one
    /// fanout group with the control thread's `trunk`.
    fn spawn(&mut self, trunk: &PacketSocket) -> anyhow::Result<()> {
        // One fanout group per daemon (the id is per network namespace),
        // a new one each time: a group is bound to one interface, and the
        // control thread's socket on the old trunk may not have closed
        // yet when the trunk moves.
        static STARTS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let group = ((std::process::id() & 0xffff) as u16)
            .wrapping_add(STARTS.fetch_add(1, Ordering::Relaxed));
        let upstream = self.upstream.clone();
        trunk
            .join_fanout(group)
            .with_context(|| format!("{upstream}: PACKET_FANOUT"))?;
        for k in 0..self.workers() {
            let sock = PacketSocket::bind(&upstream)
                .with_context(|| format!("worker {k}: opening the trunk {upstream}"))?;
            sock.join_fanout(group)
                .with_context(|| format!("worker {k}: {upstream}: PACKET_FANOUT"))?;
            let (shared, tx) = (self.shared.clone(), self.tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("tunterm-w{k}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            if let Err(e) = rt.block_on(run(k, &shared, sock, tx)) {
                                warn!(worker = k, error = %e, "forwarding worker stopped");
                            }
                        }
                        Err(e) => warn!(worker = k, error = %e, "forwarding worker: no runtime"),
                    }
                })
                .context("starting a forwarding worker")?;
            self.threads.push(t);
        }
        Ok(())
    }

    /// Stop the threads (each within its idle wait).
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.shared.stop.store(false, Ordering::Relaxed);
    }

    /// The trunk interface the workers read and write.
    pub(crate) fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The trunk moved to `upstream` (a reload), the control thread's
    /// socket on it being `trunk`: the threads stop and start again with
    /// packet sockets on it; their tunnel sockets, table and counters stay.
    /// Punted frames already queued stay queued. On an error no thread
    /// runs: drop the workers (their tunnel sockets leave the reuseport
    /// groups) and the control thread forwards alone.
    pub(crate) fn move_trunk(
        &mut self,
        upstream: &str,
        trunk: &PacketSocket,
    ) -> anyhow::Result<()> {
        self.stop();
        self.upstream = upstream.to_owned();
        self.spawn(trunk)
    }

    /// Forwarding workers (beside the control thread).
    pub fn workers(&self) -> usize {
        self.shared.counters.len()
    }

    /// The tunnel sockets the control thread has now (at start and after
    /// a reload rebound them). L2TP/UDP: the workers join the reuseport
    /// group of each new one, and the group's selector spreads data over
    /// them. Raw IP (L2TPv3/IP, mGRE): each worker opens a raw socket with
    /// its filter on each new address, then the control thread's data
    /// socket there stops taking data. The workers close the sockets of
    /// addresses gone.
    pub(crate) fn set_sockets(
        &mut self,
        n: usize,
        socks: &[(Carrier, IpAddr, Rc<TunnelSockets>)],
    ) -> anyhow::Result<()> {
        let mut joined = Vec::new();
        let mut new_raw = Vec::new();
        for (carrier, ip, pair) in socks {
            if let Some(j) = self.joined.iter().find(|(p, _)| Rc::ptr_eq(p, pair)) {
                joined.push(j.clone());
                continue;
            }
            if let Some(raw) = pair.raw_socket() {
                let (local, protocol) = (raw.local(), raw.protocol());
                let mut mine = Vec::new();
                for k in 0..n {
                    let filter = raw_worker_filter(protocol, local.is_ipv4(), n as u32, k as u32);
                    let sock = RawIpSocket::bind_filtered(local, protocol, &filter)
                        .with_context(|| format!("worker {k}: raw socket on {local}"))?;
                    sock.set_fragmentation(true)?;
                    mine.push(Arc::new(WorkerSocket {
                        carrier: *carrier,
                        sock: WorkerSock::Raw(sock),
                        drops_seen: Default::default(),
                    }));
                }
                new_raw.push(pair.clone());
                joined.push((pair.clone(), mine));
                continue;
            }
            let TunnelSocket::Udp(control) = &pair.control else {
                continue;
            };
            let local = control.local_addr()?;
            let mut mine = Vec::new();
            for _ in 0..n {
                let sock = udp_socket_with(local, true, true).with_context(|| {
                    format!("worker socket on {ip}: joining the reuseport group")
                })?;
                mine.push(Arc::new(WorkerSocket {
                    carrier: *carrier,
                    sock: WorkerSock::Udp(sock),
                    drops_seen: Default::default(),
                }));
            }
            attach_cbpf(
                control.as_fd(),
                libc::SO_ATTACH_REUSEPORT_CBPF,
                &selector(n as u32),
            )
            .with_context(|| format!("{local}: SO_ATTACH_REUSEPORT_CBPF"))?;
            joined.push((pair.clone(), mine));
        }
        // Every worker hears its share of a new raw address now: the
        // control thread's data socket lets go of the data (a packet
        // arriving in between is read twice, once by each).
        for pair in new_raw {
            if let Err(e) = pair.data_to_workers(true) {
                warn!(error = %e, "raw tunnel socket: the forwarding workers stay off its data");
                joined.retain(|(p, _)| !Rc::ptr_eq(p, &pair));
            }
        }
        self.joined = joined;
        self.socket_generation += 1;
        let set = SocketSet {
            generation: self.socket_generation,
            per_worker: (0..n)
                .map(|k| self.joined.iter().map(|(_, s)| s[k].clone()).collect())
                .collect(),
        };
        *self
            .shared
            .sockets
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// The control thread's tunnel sockets, again (a reload).
    /// Returns once every running worker has taken the new set and so
    /// closed its sockets on addresses that went away (at most
    /// [`RESOCKET_WAIT`]): a reload's answer then means the old addresses
    /// are free.
    pub(crate) fn resocket(&mut self, socks: &[(Carrier, IpAddr, Rc<TunnelSockets>)]) {
        if let Err(e) = self.set_sockets(self.workers(), socks) {
            warn!(error = %format!("{e:#}"), "forwarding workers: new tunnel sockets");
            return;
        }
        if self.threads.is_empty() {
            return;
        }
        let want = self.socket_generation;
        let until = Instant::now() + RESOCKET_WAIT;
        while self
            .shared
            .taken
            .iter()
            .any(|t| t.load(Ordering::Acquire) < want)
        {
            if Instant::now() >= until {
                warn!(
                    "forwarding workers: a worker has not taken the new tunnel sockets within {RESOCKET_WAIT:?}"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn table(&self) -> Arc<Table> {
        self.shared
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Carry the workers' marks into the switch and the mGRE endpoint, and
    /// publish a new table when what it holds changed. Call every turn of
    /// the loop; `sessions_changed`: a session or mGRE peer came or went
    /// since the last call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sync(
        &mut self,
        now: Instant,
        endpoint: &Endpoint,
        gre: &mut GreEndpoint,
        switch: &mut Switch,
        mtus: &TunnelMtus,
        capture: bool,
        sessions_changed: bool,
    ) {
        self.dirty |= sessions_changed || switch.fdb_generation() != self.fdb_generation;
        let rebuild = capture != self.capture
            || (self.dirty && now >= self.rebuild_due)
            || now >= self.rebuild_anyway;
        if now >= self.refresh_due || rebuild {
            self.refresh_due = now + REFRESH_EVERY;
            let table = self.table();
            for (vlan, mac, port) in table.take_seen() {
                if switch.refresh(vlan, &mac, port, now) {
                    self.refreshed += 1;
                }
            }
            for port in table.take_gre_seen() {
                if gre.refresh(port, now) {
                    self.refreshed += 1;
                }
            }
        }
        if !rebuild {
            return;
        }
        let t = Table::build(now, endpoint, gre, switch, mtus, capture);
        *self.shared.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
        self.tables += 1;
        self.capture = capture;
        self.dirty = false;
        self.fdb_generation = switch.fdb_generation();
        self.rebuild_due = now + REBUILD_EVERY;
        self.rebuild_anyway = now + REBUILD_ANYWAY;
    }

    /// When [`sync`](Self::sync) has work again without new events.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let due = self.refresh_due.min(self.rebuild_anyway);
        if self.dirty {
            due.min(self.rebuild_due)
        } else {
            due
        }
    }

    /// Add the workers' counters to the control thread's.
    pub(crate) fn add_counters(&self, io: &mut IoCounters, switch: &mut SwitchCounters) {
        for c in &self.shared.counters {
            let g = |i: C| c[i as usize].load(Ordering::Relaxed);
            io.trunk_rx += g(C::TrunkRx);
            io.trunk_rx_bytes += g(C::TrunkRxBytes);
            io.trunk_rx_truncated += g(C::TrunkRxTruncated);
            io.trunk_rx_shed += g(C::TrunkRxShed);
            io.trunk_tx += g(C::TrunkTx);
            io.trunk_tx_bytes += g(C::TrunkTxBytes);
            io.trunk_tx_errors += g(C::TrunkTxErrors);
            io.tunnel_rx += g(C::TunnelRx);
            io.tunnel_rx_bytes += g(C::TunnelRxBytes);
            io.tunnel_rx_truncated += g(C::TunnelRxTruncated);
            io.tunnel_rx_shed += g(C::TunnelRxShed);
            io.tunnel_rx_shed_data += g(C::TunnelRxShed);
            io.tunnel_tx += g(C::TunnelTx);
            io.tunnel_tx_bytes += g(C::TunnelTxBytes);
            io.tunnel_tx_errors += g(C::TunnelTxErrors);
            io.tunnel_tx_calls += g(C::TunnelTxCalls);
            switch.forwarded += g(C::ForwardedUp) + g(C::ForwardedDown);
        }
    }

    /// The `workers` section of the stats.
    pub(crate) fn stats(&self) -> WorkersStats {
        let t = self.table();
        WorkersStats {
            workers: self.workers(),
            table_sessions: t.session_count(),
            table_fdb: t.fdb_len(),
            tables: self.tables,
            refreshed: self.refreshed,
            per_worker: self
                .shared
                .counters
                .iter()
                .map(|c| {
                    let g = |i: C| c[i as usize].load(Ordering::Relaxed);
                    WorkerStats {
                        forwarded_to_trunk: g(C::ForwardedUp),
                        forwarded_to_tunnels: g(C::ForwardedDown),
                        punted: g(C::Punted),
                        punt_dropped: g(C::PuntDropped),
                    }
                })
                .collect(),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
        // The raw addresses' data is the control thread's again.
        for (pair, _) in &self.joined {
            if let Err(e) = pair.data_to_workers(false) {
                warn!(error = %e, "raw tunnel socket: its data socket not given its filter back");
            }
        }
    }
}

/// The reuseport selector with `n` workers: T bit set (control) → 0, the
/// control socket; data → 2 + session id mod n, worker k's socket (index
/// 1, the control thread's data socket, is left out). A datagram too short
/// for a session id fails the load, which returns 0: the control socket
/// counts it malformed.
fn selector(n: u32) -> [libc::sock_filter; 8] {
    use libc::{
        BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MOD,
        BPF_RET, BPF_W,
    };
    let insn = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    [
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),
        insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x80),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0),
        insn(BPF_RET | BPF_K, 0, 0, 0),
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4),
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, n.max(1)),
        insn(BPF_ALU | BPF_ADD | BPF_K, 0, 0, 2),
        insn(BPF_RET | BPF_A, 0, 0, 0),
    ]
}

/// A worker's local counts, added to its shared counters after each pass.
struct Counts([u64; COUNTERS]);

impl Counts {
    fn add(&mut self, c: C, v: u64) {
        self.0[c as usize] += v;
    }

    fn flush(&mut self, to: &[AtomicU64; COUNTERS]) {
        for (v, a) in self.0.iter_mut().zip(to) {
            if *v != 0 {
                a.fetch_add(std::mem::take(v), Ordering::Relaxed);
            }
        }
    }
}

/// One worker's tunnel socket.
struct Sock {
    carrier: Carrier,
    v6: bool,
    sock: TunnelSocket,
    shared: Arc<WorkerSocket>,
}

/// Worker `k`'s loop: until the stop flag, read the trunk and its tunnel
/// sockets, forward what the table knows, punt the rest.
async fn run(
    k: usize,
    shared: &Shared,
    trunk: PacketSocket,
    punts: mpsc::Sender<PuntBatch>,
) -> std::io::Result<()> {
    let trunk = trunk.into_async()?;
    let mut socks: Vec<Sock> = Vec::new();
    let mut generation = u64::MAX;
    let mut rx = RecvBatch::new(BATCH, crate::io::afpacket::RECV_BUF_LEN);
    let mut out: Vec<u8> = Vec::with_capacity(SEND_BATCH * 2048);
    let mut to: Vec<(Dest, Range<usize>)> = Vec::with_capacity(BATCH);
    let mut counts = Counts([0; COUNTERS]);
    let counters = &shared.counters[k];
    while !shared.stop.load(Ordering::Relaxed) {
        let set = shared
            .sockets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if set.generation != generation {
            generation = set.generation;
            socks.clear();
            for s in set.per_worker.get(k).into_iter().flatten() {
                let (sock, v6) = s.open()?;
                socks.push(Sock {
                    carrier: s.carrier,
                    v6,
                    sock,
                    shared: s.clone(),
                });
            }
            // The earlier set's sockets are closed (the control thread
            // dropped its references before publishing this one).
            shared.taken[k].store(generation, Ordering::Release);
        }
        // Wait for input (or the idle timeout).
        let ready = std::future::poll_fn(|cx| {
            let mut any = matches!(trunk.poll_read_ready(cx), Poll::Ready(_));
            for s in &socks {
                any |= s.sock.poll_readable(cx).is_ready();
            }
            if any { Poll::Ready(()) } else { Poll::Pending }
        });
        if tokio::time::timeout(IDLE, ready).await.is_err() {
            continue;
        }
        let table = shared
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The trunk: frames to tunnels.
        for _ in 0..BUDGET / BATCH {
            let got = trunk.try_io(Interest::READABLE, |s| s.recv_batch(&mut rx));
            counts.add(C::TrunkRxTruncated, rx.truncated());
            if got.is_err() {
                break;
            }
            let mut punt = PuntBatch::default();
            out.clear();
            to.clear();
            for (frame, _) in rx.iter() {
                counts.add(C::TrunkRx, 1);
                counts.add(C::TrunkRxBytes, frame.len() as u64);
                let at = out.len();
                match table.forward_trunk(frame, &mut out) {
                    Ok(dest) => to.push((dest, at..out.len())),
                    Err(_) => {
                        out.truncate(at);
                        punt.push(Source::Trunk, frame);
                    }
                }
            }
            send_tunnels(&socks, &out, &to, &mut counts);
            hand_over(&punts, punt, &mut counts);
        }
        if let Ok(d) = trunk.get_ref().take_drops() {
            counts.add(C::TrunkRxShed, u64::from(d));
        }
        // The tunnel sockets: packets to the trunk.
        for s in &mut socks {
            for _ in 0..BUDGET / BATCH {
                let got = s.sock.try_recv_batch(&mut rx);
                counts.add(C::TunnelRxTruncated, rx.truncated());
                if let Some(d) = rx.kernel_drops() {
                    let seen = s.shared.drops_seen.swap(d, Ordering::Relaxed);
                    counts.add(C::TunnelRxShed, u64::from(d.wrapping_sub(seen)));
                }
                if got.is_err() {
                    break;
                }
                let mut punt = PuntBatch::default();
                for (pkt, from) in rx.iter() {
                    counts.add(C::TunnelRx, 1);
                    counts.add(C::TunnelRxBytes, pkt.len() as u64);
                    out.clear();
                    match table.forward_tunnel(s.carrier, from, pkt, &mut out) {
                        Ok(()) => match trunk.get_ref().send(&out) {
                            Ok(_) => {
                                counts.add(C::ForwardedUp, 1);
                                counts.add(C::TrunkTx, 1);
                                counts.add(C::TrunkTxBytes, out.len() as u64);
                            }
                            Err(e) => {
                                counts.add(C::TrunkTxErrors, 1);
                                debug!(error = %e, "worker: trunk send failed");
                            }
                        },
                        Err(_) => punt.push(Source::Tunnel(s.carrier, from), pkt),
                    }
                }
                hand_over(&punts, punt, &mut counts);
            }
        }
        counts.flush(counters);
    }
    Ok(())
}

/// Send the tunnel packets of one batch (`to`: where to and range of
/// `out`), with one `sendmmsg` per run of one carrier and family, on the
/// worker's socket of that carrier and family (none: counted errors).
fn send_tunnels(socks: &[Sock], out: &[u8], to: &[(Dest, Range<usize>)], counts: &mut Counts) {
    let mut batch: Vec<(SocketAddr, &[u8])> = Vec::with_capacity(to.len());
    let mut unsent = to.len();
    for (i, s) in socks.iter().enumerate() {
        let is_for = |d: &Dest| d.carrier == s.carrier && d.peer.is_ipv6() == s.v6;
        if socks[..i]
            .iter()
            .any(|o| o.carrier == s.carrier && o.v6 == s.v6)
        {
            continue;
        }
        batch.clear();
        batch.extend(
            to.iter()
                .filter(|(d, _)| is_for(d))
                .map(|(d, r)| (d.peer, &out[r.clone()])),
        );
        if batch.is_empty() {
            continue;
        }
        unsent -= batch.len();
        for chunk in batch.chunks(SEND_BATCH) {
            counts.add(C::TunnelTxCalls, 1);
            let sent = s.sock.try_send_batch(chunk).unwrap_or(0);
            counts.add(C::TunnelTx, sent as u64);
            counts.add(C::ForwardedDown, sent as u64);
            counts.add(
                C::TunnelTxBytes,
                chunk[..sent].iter().map(|(_, p)| p.len() as u64).sum(),
            );
            counts.add(C::TunnelTxErrors, (chunk.len() - sent) as u64);
        }
    }
    counts.add(C::TunnelTxErrors, unsent as u64);
}

/// Hand `punt` to the control thread; a full queue drops it, counted.
fn hand_over(punts: &mpsc::Sender<PuntBatch>, punt: PuntBatch, counts: &mut Counts) {
    let n = punt.items.len() as u64;
    if n == 0 {
        return;
    }
    counts.add(C::Punted, n);
    if punts.try_send(punt).is_err() {
        counts.add(C::PuntDropped, n);
    }
}

/// The next batch of the punt queue, when there is one (never, without
/// workers): for the event loop's `select!`.
pub(crate) async fn punted(rx: &mut Option<mpsc::Receiver<PuntBatch>>) -> Option<PuntBatch> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_selector_sends_control_to_the_control_socket_and_spreads_data_by_session() {
        let pair = TunnelSockets::udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let TunnelSocket::Udp(control) = &pair.control else {
            unreachable!()
        };
        let local = control.local_addr().unwrap();
        let workers: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| udp_socket_with(local, false, true).unwrap())
            .collect();
        attach_cbpf(
            control.as_fd(),
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &selector(2),
        )
        .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let data = |sid: u32| [&[0u8, 3, 0, 0][..], &sid.to_be_bytes(), &[0xee]].concat();
        let hello = [0xc8u8, 0x03, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0];
        for p in [data(4), data(5), hello.to_vec(), data(7), data(10)] {
            tx.send_to(&p, local).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let drain = |s: &std::net::UdpSocket| {
            s.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = s.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            got
        };
        let mut buf = [0u8; 64];
        let mut on_control = Vec::new();
        while let Ok(n) = control.try_recv(&mut buf) {
            on_control.push(buf[..n].to_vec());
        }
        assert_eq!(on_control, [hello.to_vec()]);
        let TunnelSocket::Udp(d) = &pair.data else {
            unreachable!()
        };
        assert!(
            d.try_recv(&mut buf).is_err(),
            "the loop's data socket idles"
        );
        assert_eq!(drain(&workers[0]), [data(4), data(10)], "even session ids");
        assert_eq!(drain(&workers[1]), [data(5), data(7)], "odd session ids");
    }
}
