//! The control socket's server ([`crate::api`] is the protocol).
//!
//! Connections are accepted and read beside the event loop: a line is at
//! most [`MAX_REQUEST_LINE`] bytes, a connection that sends no complete
//! request for [`IDLE_TIMEOUT`] is closed, at most [`MAX_CONNECTIONS`] are
//! open (past it, the connection idle longest, with no request in progress
//! and no subscription, is closed to make room; when there is none, the
//! new one is answered with an error and closed), and a failing `accept`
//! (no file descriptor left) backs off instead of spinning. Only a parsed request reaches the loop, as a [`Job`]: the loop
//! takes a snapshot of what it asks for (nothing is built for a connection
//! that asks for nothing) and the answer is serialized and written outside
//! it, on a blocking thread for the big ones, so forwarding does not pause
//! while a client reads. Events go to subscribers through a bounded
//! broadcast channel; a subscriber that falls behind loses events and is
//! told how many.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tracing::{info, warn};
use tunterm_core::proto::bridge::{HOST_PORT_BASE, PortId, TRUNK, is_host_port};
use tunterm_core::proto::l2tp::CloseReason;

use super::clients::{ClientFilter, client_page};
use super::{Dataplane, FdbEntry, Stats};
use crate::api::{
    ApplyConfigRequest, ApplyReport, CONFIG_REFUSED, CaptureFormat, CaptureRequest, ClientEntry,
    ControlStats, DisconnectReport, DisconnectRequest, Event, EventKind, FDB_DEFAULT_LIMIT,
    FDB_MAX_LIMIT, FdbPage, FdbQuery, MAX_REQUEST_LINE, PreemptReport, PreemptRequest, Request,
    Response, ResponseLine, parse_request,
};
use tunterm_core::wire::ether::MacAddr;

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may go without sending a complete request
/// (subscriptions excepted).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer or an event may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an evicted connection's farewell may wait (a new connection
/// waits for its slot).
const EVICTED_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Events kept for the slowest subscriber.
const EVENT_QUEUE: usize = 1024;
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a request asks of the event loop.
pub(super) enum Ask {
    Stats,
    Fdb(FdbFilter),
    Clients(ClientFilter),
    Disconnect(DisconnectRequest),
    Preempt(PreemptRequest),
    CapturePoints,
    /// A capture, checked, and where its TZSP goes (resolved).
    CaptureStart(Box<CaptureRequest>, Option<std::net::SocketAddr>),
    /// The capture's client went.
    CaptureStop(u64),
    /// A configuration, validated (and written when asked): apply it.
    ApplyConfig(Box<tunterm_control::EdgeConfig>),
    /// Take ports down for a while.
    BouncePort(crate::api::BouncePortRequest),
    /// Exit for a restart and exec again.
    Restart,
    /// The traffic counters only (the status page's plots, once a second).
    Rates,
}

/// The loop's answer: a snapshot, rendered outside the loop.
pub(super) enum Answer {
    Stats(Box<Stats>),
    /// The matching entries, unsorted.
    Fdb(Vec<(u16, MacAddr, PortId)>),
    /// The matching clients, unsorted.
    Clients(Vec<ClientEntry>),
    Disconnect(Result<DisconnectReport, String>),
    Preempt(Result<PreemptReport, String>),
    CapturePoints(Vec<crate::api::CapturePointInfo>),
    CaptureStarted(Result<super::capture::Stream, String>),
    Applied(ApplyReport),
    Bounced(Result<crate::api::BouncePortReport, String>),
    Restarting,
    Rates(Box<RateSample>),
    Done,
}

/// The counters the status page plots: packets and bytes in and out of
/// the slow path, and what the fast path forwarded itself.
#[derive(Clone, Debug, Default)]
pub(super) struct RateSample {
    pub io: super::IoCounters,
    /// Frames the XDP programs redirected (forwarded without the loop).
    pub fast_redirect: u64,
}

/// A request for the event loop and where its answer goes.
pub(super) struct Job {
    ask: Ask,
    reply: oneshot::Sender<Answer>,
}

/// An `fdb` query, checked.
#[derive(Debug)]
pub(super) struct FdbFilter {
    vlan: Option<u16>,
    mac: Option<MacAddr>,
    port: Option<PortId>,
    offset: usize,
    limit: usize,
}

impl FdbFilter {
    fn parse(q: &FdbQuery) -> Result<Self, String> {
        let mac = q.mac.as_deref().map(|m| parse_mac("fdb", m)).transpose()?;
        let port = q.port.as_deref().map(parse_port).transpose()?;
        let limit = q.limit.unwrap_or(FDB_DEFAULT_LIMIT);
        if limit == 0 || limit > FDB_MAX_LIMIT {
            return Err(format!("fdb: limit {limit}: expected 1 to {FDB_MAX_LIMIT}"));
        }
        Ok(FdbFilter {
            vlan: q.vlan,
            mac,
            port,
            offset: q.offset,
            limit,
        })
    }

    fn matches(&self, vlan: u16, mac: &MacAddr, port: PortId) -> bool {
        self.vlan.is_none_or(|v| v == vlan)
            && self.mac.is_none_or(|m| &m == mac)
            && self.port.is_none_or(|p| p == port)
    }
}

/// The `mac` of request `req`, any usual spelling.
pub(super) fn parse_mac(req: &str, m: &str) -> Result<MacAddr, String> {
    m.parse()
        .map_err(|_| format!("{req}: mac {m:?} is not a MAC address"))
}

/// A port as [`FdbEntry::port`] names it.
fn parse_port(s: &str) -> Result<PortId, String> {
    let bad = || format!("fdb: port {s:?}: expected trunk, host:<vlan> or a port number");
    if s == "trunk" {
        return Ok(TRUNK);
    }
    if let Some(vlan) = s.strip_prefix("host:") {
        let v: u16 = vlan.parse().map_err(|_| bad())?;
        return Ok(PortId(HOST_PORT_BASE + u32::from(v)));
    }
    s.parse().map(PortId).map_err(|_| bad())
}

/// An FDB entry as the `fdb` request and the state file show it.
pub(super) fn fdb_entry(vlan: u16, mac: &MacAddr, port: PortId) -> FdbEntry {
    FdbEntry {
        vlan,
        mac: mac.to_string(),
        port: port_name(port),
    }
}

/// An FDB entry read back: (VLAN, MAC, port), or why it is none.
pub(super) fn fdb_key(e: &FdbEntry) -> Result<(u16, MacAddr, PortId), String> {
    Ok((e.vlan, parse_mac("fdb", &e.mac)?, parse_port(&e.port)?))
}

/// A port's name in the FDB's entries.
pub(super) fn port_name(port: PortId) -> String {
    if port == TRUNK {
        "trunk".into()
    } else if is_host_port(port) {
        format!("host:{}", port.0 - HOST_PORT_BASE)
    } else {
        port.0.to_string()
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    refused_busy: AtomicU64,
    idle_evicted: AtomicU64,
    requests: AtomicU64,
    bad_requests: AtomicU64,
    lines_too_long: AtomicU64,
    idle_closed: AtomicU64,
    write_timeouts: AtomicU64,
    accept_errors: AtomicU64,
    loop_us_max: AtomicU64,
    loop_us_last: AtomicU64,
    subscribers: AtomicU64,
    events: AtomicU64,
    events_lagged: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// What the connection tasks share.
struct Shared {
    jobs: mpsc::Sender<Job>,
    events: broadcast::Sender<Event>,
    counters: Arc<Counters>,
    idle: Idle,
    /// Told each time a connection ends.
    left: Notify,
    /// The `--config` file `apply-config` writes when asked to persist.
    config_file: Option<PathBuf>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The connections waiting for a request (none in progress, not
/// subscribed): since when, and how to tell each to go.
#[derive(Default)]
struct Idle {
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, (Instant, Arc<Notify>)>>,
}

impl Idle {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, Arc<Notify>)>> {
        // The map stays consistent whatever panicked while holding it.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell the connection idle longest to close; false when none waits.
    fn evict_longest(&self) -> bool {
        let mut waiting = self.waiting();
        let Some(id) = waiting
            .iter()
            .min_by_key(|(_, (since, _))| *since)
            .map(|(&id, _)| id)
        else {
            return false;
        };
        if let Some((_, go)) = waiting.remove(&id) {
            go.notify_one();
        }
        true
    }
}

/// A connection's place in [`Idle`]: marked waiting between requests,
/// unmarked when a request arrives or it ends.
struct IdleMark<'a> {
    idle: &'a Idle,
    id: u64,
    go: Arc<Notify>,
}

impl<'a> IdleMark<'a> {
    /// A connection just accepted: waiting for its first request, and
    /// evictable already (before its task first runs).
    fn accepted(idle: &Idle) -> (u64, Arc<Notify>) {
        let id = idle.next_id.fetch_add(1, Relaxed);
        let go = Arc::new(Notify::new());
        idle.waiting().insert(id, (Instant::now(), go.clone()));
        (id, go)
    }

    /// Waiting for a request from now on.
    fn wait(&self) {
        self.idle
            .waiting()
            .insert(self.id, (Instant::now(), self.go.clone()));
    }

    /// A request arrived: false when the connection was evicted meanwhile.
    fn busy(&self) -> bool {
        self.idle.waiting().remove(&self.id).is_some()
    }
}

impl Drop for IdleMark<'_> {
    fn drop(&mut self) {
        self.idle.waiting().remove(&self.id);
    }
}

/// The loop's side of the control socket: the event publisher, the
/// counters, the running configuration's digest.
#[derive(Debug)]
pub(super) struct Control {
    events: broadcast::Sender<Event>,
    counters: Arc<Counters>,
    pub(super) config_digest: String,
    /// What the connection tasks share (for the HTTP server's requests).
    shared: Arc<Shared>,
}

impl Control {
    /// Publish an event (built only when someone subscribes).
    pub(super) fn emit(&self, kind: impl FnOnce() -> EventKind) {
        if self.events.receiver_count() == 0 {
            return;
        }
        bump(&self.counters.events);
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = self.events.send(Event { time, kind: kind() });
    }

    /// The same request paths as the control socket's, for another server
    /// in this runtime (the HTTP status page and metrics).
    pub(super) fn local_api(&self) -> LocalApi {
        LocalApi(self.shared.clone())
    }

    /// The counters for the stats.
    pub(super) fn stats(&self) -> ControlStats {
        let c = &*self.counters;
        ControlStats {
            connections: c.connections.load(Relaxed),
            active: c.active.load(Relaxed),
            refused_busy: c.refused_busy.load(Relaxed),
            idle_evicted: c.idle_evicted.load(Relaxed),
            max_connections: MAX_CONNECTIONS as u64,
            requests: c.requests.load(Relaxed),
            bad_requests: c.bad_requests.load(Relaxed),
            lines_too_long: c.lines_too_long.load(Relaxed),
            idle_closed: c.idle_closed.load(Relaxed),
            write_timeouts: c.write_timeouts.load(Relaxed),
            accept_errors: c.accept_errors.load(Relaxed),
            loop_us_max: c.loop_us_max.load(Relaxed),
            loop_us_last: c.loop_us_last.load(Relaxed),
            subscribers: c.subscribers.load(Relaxed),
            events: c.events.load(Relaxed),
            events_lagged: c.events_lagged.load(Relaxed),
        }
    }
}

/// Bind the control socket at `path`, private to its owner (0600) whatever
/// the umask, or 0660 with `group`: bound under a restrictive umask at a
/// temporary name, its mode and group set, then renamed into place, so it
/// is never reachable with a wider mode.
pub(super) fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    let gid = group.map(group_id).transpose()?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("control socket {}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    // SAFETY: umask only swaps the process's file-mode mask; no memory is
    // involved. The daemon is still starting (no other thread creates files).
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(&tmp);
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding control socket {}", tmp.display()))?;
    let finish = || -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mode = if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", tmp.display()))?;
            0o660
        } else {
            0o600
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

/// A group's id, by name or number (`--control-group`).
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let cname = std::ffi::CString::new(name)
        .with_context(|| format!("--control-group {name:?}: not a group name"))?;
    let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to a live buffer of the given size; on
    // success `found` points at `grp`, which getgrnam_r filled in.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            grp.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        anyhow::bail!(
            "--control-group {name}: looking it up: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    if found.is_null() {
        anyhow::bail!("--control-group {name}: no such group");
    }
    // SAFETY: getgrnam_r succeeded and found the group: `grp` is initialized.
    Ok(unsafe { grp.assume_init() }.gr_gid)
}

/// Serve `listener` beside the loop: the loop's [`Control`], and the
/// [`Job`]s it must answer.
pub(super) fn serve(
    listener: UnixListener,
    config_digest: String,
    config_file: Option<PathBuf>,
) -> (Control, mpsc::Receiver<Job>) {
    let (jobs, jobs_rx) = mpsc::channel(MAX_CONNECTIONS);
    let (events, _) = broadcast::channel(EVENT_QUEUE);
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        jobs,
        events: events.clone(),
        counters: counters.clone(),
        idle: Idle::default(),
        left: Notify::new(),
        config_file,
    });
    tokio::spawn(accept_loop(listener, shared.clone()));
    (
        Control {
            events,
            counters,
            config_digest,
            shared,
        },
        jobs_rx,
    )
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let c = &shared.counters;
                let full = || c.active.load(Relaxed) >= MAX_CONNECTIONS as u64;
                if full() && shared.idle.evict_longest() {
                    // Room is made by the connection idle longest: wait
                    // for it to go (its farewell is bounded in time).
                    let gone = async {
                        while full() {
                            shared.left.notified().await;
                        }
                    };
                    let _ = tokio::time::timeout(2 * EVICTED_WRITE_TIMEOUT, gone).await;
                }
                if full() {
                    bump(&c.refused_busy);
                    let line = ResponseLine::error(format!(
                        "too many control connections ({MAX_CONNECTIONS} open); try again"
                    ))
                    .to_line();
                    // A fresh socket's buffer takes the line at once (tokio's
                    // try_write would wait for a readiness not yet polled).
                    // What the client already sent is read first: closing on
                    // unread bytes would reset the connection under the line.
                    if let Ok(s) = stream.into_std() {
                        let _ = std::io::Write::write(&mut &s, &line);
                        let mut sink = [0u8; 4096];
                        for _ in 0..16 {
                            if !matches!(std::io::Read::read(&mut &s, &mut sink), Ok(n) if n > 0) {
                                break;
                            }
                        }
                    }
                    continue;
                }
                bump(&c.connections);
                bump(&c.active);
                let mark = IdleMark::accepted(&shared.idle);
                tokio::spawn(serve_connection(stream, shared.clone(), mark));
            }
            Err(e) => {
                bump(&shared.counters.accept_errors);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(error = %e, retry_in = ?backoff, "control socket: accept failed; backing off");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// A connection's end: the count of open ones goes down, the accept loop
/// (maybe waiting for room) is told.
struct Leaving<'a>(&'a Shared);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Relaxed);
        self.0.left.notify_one();
    }
}

/// Decrements a gauge when dropped.
struct Gauge<'a>(&'a AtomicU64);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

enum Read {
    Line,
    Eof,
    TooLong,
    /// Closed to make room for a new connection.
    Evicted,
}

/// One request line into `line` (without its newline), at most
/// [`MAX_REQUEST_LINE`] bytes read.
async fn read_request(
    rd: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> std::io::Result<Read> {
    line.clear();
    let n = (&mut *rd)
        .take(MAX_REQUEST_LINE as u64 + 1)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Ok(Read::Eof);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Read::Line);
    }
    // No newline: the line was cut at the cap, or the client's last
    // request ends the stream.
    if line.len() > MAX_REQUEST_LINE {
        return Ok(Read::TooLong);
    }
    Ok(Read::Line)
}

async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8], c: &Counters) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            bump(&c.write_timeouts);
            false
        }
    }
}

async fn serve_connection(stream: UnixStream, shared: Arc<Shared>, (id, go): (u64, Arc<Notify>)) {
    let c = &*shared.counters;
    let _leaving = Leaving(&shared);
    let mark = IdleMark {
        idle: &shared.idle,
        id,
        go,
    };
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(4096, rd);
    let mut line = Vec::new();
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout(IDLE_TIMEOUT, read_request(&mut rd, &mut line)) => read,
            () = mark.go.notified() => Ok(Ok(Read::Evicted)),
        };
        let read = match read {
            Ok(Ok(Read::Line)) if !mark.busy() => Ok(Ok(Read::Evicted)),
            read => read,
        };
        match read {
            Ok(Ok(Read::Evicted)) => {
                bump(&c.idle_evicted);
                let msg = format!(
                    "closing this idle connection to make room for another \
                     ({MAX_CONNECTIONS} open)"
                );
                let line = ResponseLine::error(msg).to_line();
                let _ = tokio::time::timeout(EVICTED_WRITE_TIMEOUT, wr.write_all(&line)).await;
                return;
            }
            Err(_) => {
                bump(&c.idle_closed);
                let msg = format!("no complete request within {IDLE_TIMEOUT:?}; closing");
                let _ = write(&mut wr, &ResponseLine::error(msg).to_line(), c).await;
                return;
            }
            Ok(Err(_)) | Ok(Ok(Read::Eof)) => return,
            Ok(Ok(Read::TooLong)) => {
                bump(&c.lines_too_long);
                let msg = format!("request line longer than {MAX_REQUEST_LINE} bytes; closing");
                let _ = write(&mut wr, &ResponseLine::error(msg).to_line(), c).await;
                return;
            }
            Ok(Ok(Read::Line)) => {}
        }
        bump(&c.requests);
        let reply = match parse_request(&line) {
            Err(e) => {
                bump(&c.bad_requests);
                ResponseLine::error(e).to_line()
            }
            Ok(Request::Subscribe) => {
                drop(line);
                return stream_events(rd, wr, &shared).await;
            }
            Ok(Request::Capture(req)) => {
                drop(line);
                return run_capture(req, rd, wr, &shared).await;
            }
            Ok(req) => answer(req, &shared).await,
        };
        if !write(&mut wr, &reply, c).await {
            return;
        }
        mark.wait();
        // Give back a big line's memory before waiting for the next.
        if line.capacity() > 4096 {
            line = Vec::new();
        }
    }
}

/// Ask the loop, then render its answer outside it.
async fn answer(req: Request, shared: &Shared) -> Vec<u8> {
    let c = &*shared.counters;
    let mut persisted = None;
    let (ask, fdb) = match req {
        Request::Stats => (Ask::Stats, None),
        Request::Fdb(q) => match FdbFilter::parse(&q) {
            Ok(f) => {
                let page = (f.offset, f.limit);
                (Ask::Fdb(f), Some(page))
            }
            Err(e) => {
                bump(&c.bad_requests);
                return ResponseLine::error(e).to_line();
            }
        },
        Request::Clients(q) => match ClientFilter::parse(&q) {
            Ok(f) => {
                let page = (f.offset, f.limit);
                (Ask::Clients(f), Some(page))
            }
            Err(e) => {
                bump(&c.bad_requests);
                return ResponseLine::error(e).to_line();
            }
        },
        Request::DisconnectAps(r) => (Ask::Disconnect(r), None),
        Request::Preempt(r) => (Ask::Preempt(r), None),
        Request::BouncePort(r) => (Ask::BouncePort(r), None),
        Request::CapturePoints => (Ask::CapturePoints, None),
        Request::Restart => (Ask::Restart, None),
        Request::ApplyConfig(r) => match prepare_config(r, shared.config_file.clone()).await {
            Ok((cfg, file)) => {
                persisted = file;
                (Ask::ApplyConfig(cfg), None)
            }
            Err(e) => {
                bump(&c.bad_requests);
                return ResponseLine::error(e).to_line();
            }
        },
        Request::Subscribe | Request::Capture(_) => {
            unreachable!("subscriptions and captures are served apart")
        }
    };
    let (tx, rx) = oneshot::channel();
    let stopping = || ResponseLine::error("tunterm is stopping").to_line();
    if shared.jobs.send(Job { ask, reply: tx }).await.is_err() {
        return stopping();
    }
    let Ok(answer) = rx.await else {
        return stopping();
    };
    let render = move || {
        let response = match answer {
            Answer::Stats(s) => Response::Stats(s),
            Answer::Fdb(entries) => {
                let (offset, limit) = fdb.unwrap_or((0, FDB_DEFAULT_LIMIT));
                Response::Fdb(fdb_page(entries, offset, limit))
            }
            Answer::Clients(entries) => {
                let (offset, limit) = fdb.unwrap_or((0, FDB_DEFAULT_LIMIT));
                Response::Clients(client_page(entries, offset, limit))
            }
            Answer::Disconnect(Ok(r)) => Response::DisconnectAps(r),
            Answer::Preempt(Ok(r)) => Response::Preempt(r),
            Answer::Bounced(Ok(r)) => Response::BouncePort(r),
            Answer::Disconnect(Err(e)) | Answer::Preempt(Err(e)) | Answer::Bounced(Err(e)) => {
                return ResponseLine::error(e).to_line();
            }
            Answer::CapturePoints(p) => Response::CapturePoints(p),
            Answer::Applied(mut r) => {
                r.persisted = persisted;
                Response::ApplyConfig(r)
            }
            Answer::Restarting => Response::Restarting,
            Answer::CaptureStarted(_) | Answer::Rates(_) | Answer::Done => {
                return ResponseLine::error("unexpected answer").to_line();
            }
        };
        ResponseLine::result(response).to_line()
    };
    tokio::task::spawn_blocking(render)
        .await
        .unwrap_or_else(|e| ResponseLine::error(format!("rendering the answer: {e}")).to_line())
}

/// The control socket's request paths for the HTTP server ([`super::http`]):
/// the same jobs for the loop, the same rendering outside it.
#[derive(Clone)]
pub(super) struct LocalApi(Arc<Shared>);

impl LocalApi {
    async fn ask(&self, ask: Ask) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.0.jobs.send(Job { ask, reply: tx }).await.ok()?;
        rx.await.ok()
    }

    /// The stats, typed.
    pub(super) async fn stats(&self) -> Result<Box<Stats>, String> {
        match self.ask(Ask::Stats).await {
            Some(Answer::Stats(s)) => Ok(s),
            _ => Err("tunterm is stopping".into()),
        }
    }

    /// The traffic counters.
    pub(super) async fn rates(&self) -> Option<Box<RateSample>> {
        match self.ask(Ask::Rates).await {
            Some(Answer::Rates(r)) => Some(r),
            _ => None,
        }
    }

    /// A request answered as on the control socket: one response line.
    /// (Subscriptions and captures are not for this path.)
    pub(super) async fn line(&self, req: Request) -> Vec<u8> {
        if matches!(req, Request::Subscribe | Request::Capture(_)) {
            return ResponseLine::error(format!("{}: not served here", req.name())).to_line();
        }
        answer(req, &self.0).await
    }

    /// Start a pcapng capture: its answer, and its bytes (header, records,
    /// statistics) on a channel of at most `depth` chunks. Dropping the
    /// receiver stops the capture.
    pub(super) async fn capture(
        &self,
        mut req: CaptureRequest,
        depth: usize,
    ) -> Result<(crate::api::CaptureAccepted, mpsc::Receiver<Vec<u8>>), String> {
        req.format = CaptureFormat::Pcapng;
        req.tzsp = None;
        super::capture::check(&req)?;
        let mut stream = match self.ask(Ask::CaptureStart(Box::new(req), None)).await {
            Some(Answer::CaptureStarted(r)) => r?,
            _ => return Err("tunterm is stopping".into()),
        };
        let accepted = stream.accepted.clone();
        let id = accepted.id;
        let (tx, rx) = mpsc::channel(depth.max(1));
        let api = self.clone();
        tokio::spawn(async move {
            let gone = loop {
                let chunk = tokio::select! {
                    c = stream.chunks.recv() => c,
                    () = tx.closed() => break true,
                };
                let Some(chunk) = chunk else { break false };
                let len = chunk.len();
                let sent = tx.send(chunk).await.is_ok();
                stream.in_flight.fetch_sub(len, Relaxed);
                if !sent {
                    break true;
                }
            };
            if gone {
                let _ = api.ask(Ask::CaptureStop(id)).await;
                return;
            }
            if let Ok(end) = stream.end.await {
                let _ = tx.send(end.trailer).await;
            }
        });
        Ok((accepted, rx))
    }
}

/// Validate an `apply-config`'s configuration (beside the loop) and, when
/// asked, write it to the configuration file first: a refusal or a failed
/// write changes nothing.
async fn prepare_config(
    req: ApplyConfigRequest,
    file: Option<PathBuf>,
) -> Result<(Box<tunterm_control::EdgeConfig>, Option<String>), String> {
    let work = move || {
        let text = serde_json::to_string_pretty(&req.config).map_err(|e| e.to_string())?;
        let cfg = tunterm_control::load_str(&text).map_err(|e| format!("{CONFIG_REFUSED}{e}"))?;
        if !req.persist {
            return Ok((Box::new(cfg), None));
        }
        let Some(file) = file else {
            return Err(
                "persist: the daemon runs without --config (the embedded lab \
                        configuration): nothing to write; nothing changed"
                    .to_string(),
            );
        };
        tunterm_control::write_atomically(&file, format!("{text}\n").as_bytes()).map_err(|e| {
            format!(
                "persist: writing {}: {e:#}; nothing changed",
                file.display()
            )
        })?;
        Ok((Box::new(cfg), Some(file.display().to_string())))
    };
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("apply-config: {e}")))
}

/// One page of `entries`, ordered by VLAN and MAC.
fn fdb_page(mut entries: Vec<(u16, MacAddr, PortId)>, offset: usize, limit: usize) -> FdbPage {
    entries.sort_unstable_by_key(|&(vlan, mac, _)| (vlan, mac));
    let total = entries.len();
    let end = offset.saturating_add(limit).min(total);
    let page = entries.get(offset.min(total)..end).unwrap_or_default();
    FdbPage {
        total,
        offset,
        next_offset: (end < total).then_some(end),
        entries: page
            .iter()
            .map(|&(vlan, mac, port)| fdb_entry(vlan, &mac, port))
            .collect(),
    }
}

/// A capture: its answer line, then its pcapng bytes (or, for TZSP,
/// nothing) until a limit ends it, then the pcapng statistics (or the TZSP
/// summary line). The client closing its end stops it.
async fn run_capture(
    req: CaptureRequest,
    rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    shared: &Shared,
) {
    let c = &*shared.counters;
    let refuse = |e: String| {
        bump(&c.bad_requests);
        ResponseLine::error(e).to_line()
    };
    if let Err(e) = super::capture::check(&req) {
        let _ = write(&mut wr, &refuse(e), c).await;
        return;
    }
    let tzsp = match (req.format, req.tzsp.as_deref()) {
        (CaptureFormat::Tzsp, Some(to)) => match super::capture::resolve_tzsp(to).await {
            Ok(a) => Some(a),
            Err(e) => {
                let _ = write(&mut wr, &refuse(e), c).await;
                return;
            }
        },
        _ => None,
    };
    let (tx, rx) = oneshot::channel();
    let ask = Ask::CaptureStart(Box::new(req), tzsp);
    let started = match shared.jobs.send(Job { ask, reply: tx }).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let mut stream = match started {
        Some(Answer::CaptureStarted(Ok(s))) => s,
        Some(Answer::CaptureStarted(Err(e))) => {
            let _ = write(&mut wr, &refuse(e), c).await;
            return;
        }
        _ => {
            let line = ResponseLine::error("tunterm is stopping").to_line();
            let _ = write(&mut wr, &line, c).await;
            return;
        }
    };
    let (id, format) = (stream.accepted.id, stream.accepted.format);
    let line = ResponseLine::result(Response::Capture(stream.accepted.clone())).to_line();
    if !write(&mut wr, &line, c).await {
        return; // The chunks' receiver goes: the loop ends it.
    }
    // The client's end (or anything it sends: nothing is expected) ends it.
    let jobs = shared.jobs.clone();
    let watcher = tokio::spawn(async move {
        let mut rd = rd;
        let mut scratch = [0u8; 256];
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
        let (reply, _) = oneshot::channel();
        let _ = jobs
            .send(Job {
                ask: Ask::CaptureStop(id),
                reply,
            })
            .await;
    });
    while let Some(chunk) = stream.chunks.recv().await {
        let ok = write(&mut wr, &chunk, c).await;
        stream.in_flight.fetch_sub(chunk.len(), Relaxed);
        if !ok {
            watcher.abort();
            return;
        }
    }
    if let Ok(end) = stream.end.await {
        let bytes = match format {
            CaptureFormat::Pcapng => end.trailer,
            CaptureFormat::Tzsp => {
                ResponseLine::result(Response::CaptureEnded(end.summary)).to_line()
            }
        };
        let _ = write(&mut wr, &bytes, c).await;
    }
    watcher.abort();
    let _ = wr.shutdown().await;
}

/// A subscription: events until the client goes (or falls too far behind
/// to take one within the write timeout).
async fn stream_events(mut rd: BufReader<OwnedReadHalf>, mut wr: OwnedWriteHalf, shared: &Shared) {
    let c = &*shared.counters;
    let mut events = shared.events.subscribe();
    bump(&c.subscribers);
    let _subscribed = Gauge(&c.subscribers);
    if !write(
        &mut wr,
        &ResponseLine::result(Response::Subscribed).to_line(),
        c,
    )
    .await
    {
        return;
    }
    let mut scratch = [0u8; 256];
    loop {
        let line = tokio::select! {
            ev = events.recv() => match ev {
                Ok(e) => ResponseLine::event(e),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    c.events_lagged.fetch_add(missed, Relaxed);
                    ResponseLine::event(Event {
                        time: SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()),
                        kind: EventKind::Lagged { missed },
                    })
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // Whatever the client sends now is ignored; its end is the end.
            n = rd.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        if !write(&mut wr, &line.to_line(), c).await {
            return;
        }
    }
}

impl Dataplane {
    /// A request from the control socket: snapshot what it asks for (or
    /// run the operation) and hand it back; the rendering is not done here.
    pub(super) fn control_job(&mut self, job: Job) {
        let now = Instant::now();
        let answer = match job.ask {
            Ask::Stats => Answer::Stats(Box::new(self.stats(now))),
            Ask::Fdb(f) => Answer::Fdb(
                self.switch
                    .fdb()
                    .filter(|(vlan, mac, port)| f.matches(*vlan, mac, *port))
                    .collect(),
            ),
            Ask::Clients(f) => Answer::Clients(self.client_entries(now, &f)),
            Ask::Disconnect(req) => {
                let r = self
                    .operations
                    .disconnect(&req, now, &mut self.endpoint, &self.cfg);
                Answer::Disconnect(r)
            }
            Ask::Preempt(req) => {
                let r = self
                    .operations
                    .preempt(&req, now, &mut self.endpoint, &self.cfg);
                Answer::Preempt(r)
            }
            Ask::CapturePoints => Answer::CapturePoints(self.capture_points()),
            Ask::CaptureStart(req, tzsp) => Answer::CaptureStarted(self.start_capture(*req, tzsp)),
            Ask::CaptureStop(id) => {
                self.captures.stop(id);
                Answer::Done
            }
            Ask::ApplyConfig(cfg) => Answer::Applied(self.apply_config(*cfg)),
            Ask::BouncePort(req) => Answer::Bounced(self.bounce_ports(now, &req)),
            Ask::Restart => {
                self.reexec = true;
                Answer::Restarting
            }
            Ask::Rates => Answer::Rates(Box::new(RateSample {
                // The workers' traffic too: with --workers they forward
                // most of it.
                io: self.io_counters(&mut Default::default()),
                fast_redirect: self.fast.as_ref().map_or(0, |f| {
                    f.stats()
                        .counters
                        .iter()
                        .filter(|(name, _)| name.ends_with("_redirect"))
                        .map(|(_, n)| *n)
                        .sum()
                }),
            })),
        };
        if matches!(answer, Answer::Disconnect(_) | Answer::Preempt(_)) {
            self.flush_control();
            self.handle_events();
        }
        let _ = job.reply.send(answer);
        let us = now.elapsed().as_micros() as u64;
        let c = &self.control.counters;
        c.loop_us_last.store(us, Relaxed);
        c.loop_us_max.fetch_max(us, Relaxed);
    }
}

/// Why a tunnel or session closed, for an event.
pub(super) fn close_reason(r: &CloseReason) -> String {
    let detail = |result: u16, error: Option<u16>, message: &Option<String>| {
        let mut d = format!("result {result}");
        if let Some(e) = error {
            d.push_str(&format!(", error {e}"));
        }
        if let Some(m) = message.as_deref().filter(|m| !m.is_empty()) {
            d.push_str(&format!(": {m}"));
        }
        d
    };
    match r {
        CloseReason::PeerStopCcn {
            result,
            error,
            message,
        } => format!("StopCCN from the AP ({})", detail(*result, *error, message)),
        CloseReason::PeerCdn {
            result,
            error,
            message,
        } => format!("CDN from the AP ({})", detail(*result, *error, message)),
        CloseReason::HelloTimeout => "hello timeout".into(),
        CloseReason::RetransmitTimeout => "retransmit timeout".into(),
        CloseReason::Local => "closed by this edge".into(),
        CloseReason::ProtocolError(e) => format!("protocol error: {e}"),
    }
}

/// Log the control socket's settings once it listens.
pub(super) fn announce(path: &Path, group: Option<&str>) {
    info!(
        control_socket = %path.display(),
        mode = if group.is_some() { "0660" } else { "0600" },
        group = group.unwrap_or("-"),
        max_connections = MAX_CONNECTIONS,
        max_request_line = MAX_REQUEST_LINE,
        idle_timeout = ?IDLE_TIMEOUT,
        "control socket ready"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_queries_are_checked_and_pages_are_ordered() {
        let q = |json: &str| FdbFilter::parse(&serde_json::from_str::<FdbQuery>(json).unwrap());
        assert!(q(r#"{"mac":"nope"}"#).unwrap_err().contains("not a MAC"));
        assert!(
            q(r#"{"port":"uplink"}"#)
                .unwrap_err()
                .contains("expected trunk")
        );
        assert!(q(r#"{"limit":0}"#).unwrap_err().contains("limit 0"));
        assert!(q(r#"{"limit":10001}"#).is_err());
        let f = q(r#"{"vlan":10,"mac":"02-00-00-00-00-01","port":"host:10"}"#).unwrap();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        assert!(f.matches(10, &mac, PortId(HOST_PORT_BASE + 10)));
        assert!(!f.matches(20, &mac, PortId(HOST_PORT_BASE + 10)));
        assert!(!f.matches(10, &mac, TRUNK));
        assert_eq!(parse_port("trunk"), Ok(TRUNK));
        assert_eq!(parse_port("77"), Ok(PortId(77)));
        for p in [TRUNK, PortId(77), PortId(HOST_PORT_BASE + 20)] {
            assert_eq!(parse_port(&port_name(p)), Ok(p));
        }
        let entries: Vec<_> = (0..5u8)
            .rev()
            .map(|i| {
                (
                    10 + u16::from(i % 2),
                    MacAddr([2, 0, 0, 0, 0, i]),
                    PortId(u32::from(i)),
                )
            })
            .collect();
        let p = fdb_page(entries.clone(), 0, 2);
        assert_eq!((p.total, p.next_offset), (5, Some(2)));
        let macs: Vec<_> = p.entries.iter().map(|e| (e.vlan, e.mac.as_str())).collect();
        assert_eq!(macs, [(10, "02:00:00:00:00:00"), (10, "02:00:00:00:00:02")]);
        let last = fdb_page(entries.clone(), 4, 2);
        assert_eq!((last.entries.len(), last.next_offset), (1, None));
        let past = fdb_page(entries, 9, 2);
        assert_eq!(
            (past.total, past.entries.len(), past.next_offset),
            (5, 0, None)
        );
    }

    /// A server whose loop answers `fdb` from a fixed table, refuses
    /// disconnections and holds `stats` (a request in progress) until a
    /// `preempt`,
    /// talked to by the one client and by raw connections.
    #[test]
    fn the_server_answers_pages_and_errors_and_bounds_its_clients() {
        use crate::api::client::{Client, ClientError};
        let dir = std::env::temp_dir().join(format!("tunterm-srv-{}", std::process::id()));
        let path = dir.join("c.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (control, mut jobs) = serve(bind(&path, None).unwrap(), "sha256:0".into(), None);
            tokio::spawn(async move {
                let table: Vec<_> = (0..5u8)
                    .map(|i| {
                        (
                            10 + u16::from(i % 2),
                            MacAddr([2, 0, 0, 0, 0, i]),
                            PortId(7),
                        )
                    })
                    .collect();
                let mut in_progress = Vec::new();
                while let Some(job) = jobs.recv().await {
                    let a = match job.ask {
                        Ask::Fdb(f) => Answer::Fdb(
                            table
                                .iter()
                                .copied()
                                .filter(|(v, m, p)| f.matches(*v, m, *p))
                                .collect(),
                        ),
                        Ask::Disconnect(_) => Answer::Disconnect(Err("give macs".into())),
                        Ask::Preempt(_) => {
                            // Ends the requests in progress ("stopping").
                            in_progress.clear();
                            Answer::Preempt(Ok(PreemptReport::default()))
                        }
                        Ask::Stats => {
                            in_progress.push(job.reply);
                            continue;
                        }
                        Ask::ApplyConfig(cfg) => Answer::Applied(ApplyReport {
                            config_digest: crate::api::config_digest(&cfg.raw),
                            ..ApplyReport::default()
                        }),
                        Ask::Restart => Answer::Restarting,
                        Ask::CapturePoints
                        | Ask::CaptureStart(..)
                        | Ask::CaptureStop(_)
                        | Ask::BouncePort(_)
                        | Ask::Rates
                        | Ask::Clients(_) => {
                            unreachable!()
                        }
                    };
                    let _ = job.reply.send(a);
                }
            });
            let client = Client::new(&path);
            let page = client
                .fdb(&FdbQuery {
                    vlan: Some(10),
                    limit: Some(2),
                    ..FdbQuery::default()
                })
                .await
                .unwrap();
            assert_eq!((page.total, page.next_offset), (3, Some(2)));
            let all = client
                .fdb_all(&FdbQuery {
                    limit: Some(1),
                    ..FdbQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(all.len(), 5);
            let e = client
                .disconnect_aps(DisconnectRequest::default())
                .await
                .unwrap_err();
            assert!(
                matches!(&e, ClientError::Daemon(m) if m == "give macs"),
                "{e}"
            );
            let e = client
                .fdb(&FdbQuery {
                    port: Some("x".into()),
                    ..FdbQuery::default()
                })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("expected trunk"), "{e}");

            // apply-config: refused with the field's path before the loop
            // sees it; persisting needs a --config file; a good one is
            // applied (digest of the configuration sent).
            let mut cfg: serde_json::Value =
                serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap();
            cfg["mxtunnels"][0]["hello_interval"] = serde_json::json!(0.1);
            let e = client.apply_config(cfg.clone(), false).await.unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("config refused: mxtunnels[0].hello_interval"),
                "{e}"
            );
            cfg["mxtunnels"][0]["hello_interval"] = serde_json::json!(10);
            let e = client.apply_config(cfg.clone(), true).await.unwrap_err();
            assert!(e.to_string().contains("without --config"), "{e}");
            let r = client.apply_config(cfg.clone(), false).await.unwrap();
            let want = tunterm_control::load_str(&cfg.to_string()).unwrap();
            assert_eq!(r.config_digest, crate::api::config_digest(&want.raw));
            assert_eq!(r.persisted, None);

            // Raw lines: a wrong version, then a line over the cap.
            let raw = |req: Vec<u8>| {
                let path = path.clone();
                async move {
                    let mut s = UnixStream::connect(&path).await.unwrap();
                    let _ = s.write_all(&req).await;
                    let _ = s.shutdown().await;
                    // Line by line: the bytes before a reset count.
                    let mut out = String::new();
                    let mut rd = BufReader::new(s);
                    while rd.read_line(&mut out).await.is_ok_and(|n| n > 0) {}
                    out
                }
            };
            let out = raw(b"{\"v\":9,\"type\":\"stats\"}\n".to_vec()).await;
            assert!(out.contains("version 9"), "{out}");
            let out = raw(vec![b'x'; MAX_REQUEST_LINE + 10]).await;
            assert!(out.contains("longer than 65536"), "{out}");
            assert_eq!(control.stats().lines_too_long, 1);

            // Events reach a subscriber; one that falls behind is told.
            let mut sub = client.subscribe().await.unwrap();
            let up = || EventKind::SessionUp {
                tunnel_id: 1,
                session_id: 2,
            };
            control.emit(up);
            assert_eq!(sub.next().await.unwrap().unwrap().kind, up());
            for _ in 0..EVENT_QUEUE + 10 {
                control.emit(up);
            }
            let mut lagged = None;
            while let Some(e) = sub.next().await.unwrap() {
                if let EventKind::Lagged { missed } = e.kind {
                    lagged = Some(missed);
                    break;
                }
            }
            assert_eq!(lagged, Some(10));
            drop(sub);
            while control.stats().active > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }

            // Past the cap, the connection idle longest makes room: a new
            // request is answered at once, the evicted one is told why. The
            // oldest of all has a request in progress: it stays.
            let mut busy = UnixStream::connect(&path).await.unwrap();
            busy.write_all(b"{\"v\":1,\"type\":\"stats\"}\n")
                .await
                .unwrap();
            let requests = control.stats().requests;
            while control.stats().requests == requests {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut held = vec![];
            for _ in 1..MAX_CONNECTIONS {
                held.push(UnixStream::connect(&path).await.unwrap());
                // Distinct idle times: the first is the oldest.
                while control.stats().active < held.len() as u64 + 1 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let t = Instant::now();
            assert_eq!(client.fdb(&FdbQuery::default()).await.unwrap().total, 5);
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            let mut farewell = String::new();
            BufReader::new(&mut held[0])
                .read_line(&mut farewell)
                .await
                .unwrap();
            assert!(farewell.contains("make room"), "{farewell}");
            let mut next = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_millis(50), held[1].read(&mut next)).await;
            assert!(
                n.is_err(),
                "the second oldest is still open and told nothing"
            );
            let n = tokio::time::timeout(Duration::from_millis(50), busy.read(&mut next)).await;
            assert!(n.is_err(), "the one with a request in progress is kept");
            assert_eq!(control.stats().idle_evicted, 1);
            drop((held, busy));
            client.preempt(PreemptRequest::default()).await.unwrap();
            while control.stats().active > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Subscriptions are never evicted: with every slot one, a new
            // connection is answered with an error.
            let mut subs = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                subs.push(client.subscribe().await.unwrap());
            }
            let out = raw(b"{\"v\":1,\"type\":\"fdb\"}\n".to_vec()).await;
            assert!(out.contains("too many control connections"), "{out}");
            drop(subs);
            while control.stats().active > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(client.fdb(&FdbQuery::default()).await.unwrap().total, 5);
            let st = control.stats();
            // Two bad requests above and two refused configurations; one
            // idle connection evicted.
            assert_eq!(
                (st.refused_busy, st.bad_requests, st.idle_evicted),
                (1, 4, 1)
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_socket_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tunterm-ctl-{}", std::process::id()));
        let path = dir.join("t.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // SAFETY: the test only changes the mask around one bind.
        let old = unsafe { libc::umask(0) };
        let bound = rt.block_on(async { bind(&path, None) });
        // SAFETY: restoring the mask.
        unsafe { libc::umask(old) };
        let listener = bound.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "t.sock")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        drop(listener);
        // SAFETY: getgid has no preconditions.
        let gid = unsafe { libc::getgid() };
        let _l = rt
            .block_on(async { bind(&path, Some(&gid.to_string())) })
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert!(
            bind(&path, Some("no-such-group-tunterm"))
                .unwrap_err()
                .to_string()
                .contains("no such group")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
