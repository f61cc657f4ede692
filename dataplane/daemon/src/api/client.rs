//! The one client of the control socket: the CLI, the lab and the benches
//! use it. Async (tokio); [`block_on`] runs one call from synchronous code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

mod indent;
pub use indent::write_indented;

use super::{
    ApplyConfigRequest, ApplyReport, BouncePortReport, BouncePortRequest, CaptureAccepted,
    CapturePointInfo, CaptureRequest, CaptureSummary, ClientPage, ClientQuery, DisconnectReport,
    DisconnectRequest, Event, FDB_MAX_LIMIT, FdbEntry, FdbPage, FdbQuery, PreemptReport,
    PreemptRequest, Request, Response, ResponseLine, Stats, VERSION,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens there (or it may not be reached).
    #[error(
        "connecting to {path} (is tunterm running, and may this user use its socket?): {source}"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("control socket {path}: no answer within {timeout:?}")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
    /// The answer is not what this client understands.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// A control socket to talk to.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// The daemon listening on `path`; calls wait up to 10 s for an answer.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Client {
            path: path.as_ref().to_path_buf(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The same with another answer timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One request on a connection of its own.
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let mut conn = self.connect().await?;
        conn.call(req).await
    }

    /// The stats (no FDB: see [`Client::fdb`]).
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        match self.call(&Request::Stats).await? {
            Response::Stats(s) => Ok(*s),
            other => Err(unexpected("stats", &other)),
        }
    }

    /// The stats document as the daemon wrote it (compact JSON), for a
    /// program that passes it on unread (the CLI prints it): the same
    /// document [`Client::stats`] parses, without building a [`Stats`].
    pub async fn stats_json(&self) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Line<'a> {
            v: u32,
            #[serde(borrow, default)]
            result: Option<Answer<'a>>,
            #[serde(default)]
            error: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            stats: &'a serde_json::value::RawValue,
        }
        let mut conn = self.connect().await?;
        conn.send(&Request::Stats).await?;
        let timeout = conn.timeout;
        let bytes = conn.read_raw(Some(timeout)).await?.ok_or_else(|| {
            ClientError::Protocol("the daemon closed the connection without answering stats".into())
        })?;
        let line: Line =
            serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if line.v != VERSION {
            return Err(ClientError::Protocol(format!(
                "the daemon speaks protocol version {}, this client {VERSION}",
                line.v
            )));
        }
        match (line.result, line.error) {
            (Some(a), _) => Ok(a.stats.get().to_string()),
            (None, Some(e)) => Err(ClientError::Daemon(e)),
            (None, None) => Err(ClientError::Protocol(
                "a line with neither result nor error".into(),
            )),
        }
    }

    /// One page of the FDB.
    pub async fn fdb(&self, query: &FdbQuery) -> Result<FdbPage, ClientError> {
        self.connect().await?.fdb(query).await
    }

    /// Every FDB entry matching `query` (its `offset` and `limit` are the
    /// start and the page size), page after page on one connection.
    /// Entries that come or go meanwhile may be missed or seen twice.
    pub async fn fdb_all(&self, query: &FdbQuery) -> Result<Vec<FdbEntry>, ClientError> {
        let mut conn = self.connect().await?;
        let mut q = query.clone();
        q.limit = Some(q.limit.unwrap_or(FDB_MAX_LIMIT));
        let mut out = Vec::new();
        loop {
            let page = conn.fdb(&q).await?;
            out.extend(page.entries);
            match page.next_offset {
                Some(next) if next > q.offset => q.offset = next,
                _ => return Ok(out),
            }
        }
    }

    /// One page of the client table.
    pub async fn clients(&self, query: &ClientQuery) -> Result<ClientPage, ClientError> {
        match self.call(&Request::Clients(query.clone())).await? {
            Response::Clients(p) => Ok(p),
            other => Err(unexpected("clients", &other)),
        }
    }

    /// Close the tunnels of some APs.
    pub async fn disconnect_aps(
        &self,
        req: DisconnectRequest,
    ) -> Result<DisconnectReport, ClientError> {
        match self.call(&Request::DisconnectAps(req)).await? {
            Response::DisconnectAps(r) => Ok(r),
            other => Err(unexpected("disconnect-aps", &other)),
        }
    }

    /// Close the tunnels of APs whose preferred edge is another.
    pub async fn preempt(&self, req: PreemptRequest) -> Result<PreemptReport, ClientError> {
        match self.call(&Request::Preempt(req)).await? {
            Response::Preempt(r) => Ok(r),
            other => Err(unexpected("preempt", &other)),
        }
    }

    /// Restart the daemon without dropping tunnels (it execs itself again;
    /// its control socket is back once it runs).
    pub async fn restart(&self) -> Result<(), ClientError> {
        match self.call(&Request::Restart).await? {
            Response::Restarting => Ok(()),
            other => Err(unexpected("restart", &other)),
        }
    }

    /// Validate and apply a whole configuration (`persist`: also write it
    /// to the daemon's `--config` file). A refusal is
    /// [`ClientError::Daemon`] with `config refused: <path>: <message>`.
    pub async fn apply_config(
        &self,
        config: serde_json::Value,
        persist: bool,
    ) -> Result<ApplyReport, ClientError> {
        let req = Request::ApplyConfig(ApplyConfigRequest { config, persist });
        match self.call(&req).await? {
            Response::ApplyConfig(r) => Ok(r),
            other => Err(unexpected("apply-config", &other)),
        }
    }

    /// Take ports down for `hold_time` ms and bring them back. An unknown
    /// port or a hold time out of range is [`ClientError::Daemon`] and
    /// nothing is bounced.
    pub async fn bounce_port(
        &self,
        req: BouncePortRequest,
    ) -> Result<BouncePortReport, ClientError> {
        match self.call(&Request::BouncePort(req)).await? {
            Response::BouncePort(r) => Ok(r),
            other => Err(unexpected("bounce-port", &other)),
        }
    }

    /// The running edge's capture points.
    pub async fn capture_points(&self) -> Result<Vec<CapturePointInfo>, ClientError> {
        match self.call(&Request::CapturePoints).await? {
            Response::CapturePoints(p) => Ok(p),
            other => Err(unexpected("capture-points", &other)),
        }
    }

    /// Start a capture: the daemon's answer, and the connection its bytes
    /// (pcapng) or its summary (TZSP) come on. Dropping it stops the
    /// capture.
    pub async fn capture(&self, req: CaptureRequest) -> Result<CaptureStream, ClientError> {
        let mut conn = self.connect().await?;
        match conn.call(&Request::Capture(req)).await? {
            Response::Capture(accepted) => Ok(CaptureStream { accepted, conn }),
            other => Err(unexpected("capture", &other)),
        }
    }

    /// Subscribe to the daemon's events.
    pub async fn subscribe(&self) -> Result<Subscription, ClientError> {
        let mut conn = self.connect().await?;
        match conn.call(&Request::Subscribe).await? {
            Response::Subscribed => Ok(Subscription { conn }),
            other => Err(unexpected("subscribe", &other)),
        }
    }

    async fn connect(&self) -> Result<Connection, ClientError> {
        let s = UnixStream::connect(&self.path)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let (rd, wr) = s.into_split();
        Ok(Connection {
            rd: BufReader::with_capacity(64 * 1024, rd),
            wr,
            path: self.path.clone(),
            timeout: self.timeout,
            line: Vec::new(),
        })
    }
}

/// A stream of the daemon's events.
pub struct Subscription {
    conn: Connection,
}

impl Subscription {
    /// The next event; None when the daemon closed the stream. A
    /// [`super::EventKind::Lagged`] event says this subscriber lost some.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        match self.conn.read_line(None).await? {
            None => Ok(None),
            Some(line) => match line.event {
                Some(e) => Ok(Some(e)),
                None => Err(line_error(line)),
            },
        }
    }
}

/// A capture that runs.
pub struct CaptureStream {
    /// What the daemon accepted.
    pub accepted: CaptureAccepted,
    conn: Connection,
}

impl CaptureStream {
    /// The next bytes of a pcapng capture into `buf`; 0 when it ended.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        use tokio::io::AsyncReadExt;
        self.conn.rd.read(buf).await.map_err(|e| self.conn.io(e))
    }

    /// A TZSP capture's end: its summary (None if the daemon went first).
    pub async fn summary(&mut self) -> Result<Option<CaptureSummary>, ClientError> {
        match self.conn.read_line(None).await? {
            None => Ok(None),
            Some(line) => match line.result {
                Some(Response::CaptureEnded(s)) => Ok(Some(s)),
                Some(other) => Err(unexpected("capture", &other)),
                None => Err(line_error(line)),
            },
        }
    }
}

struct Connection {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    path: PathBuf,
    timeout: Duration,
    line: Vec<u8>,
}

impl Connection {
    async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut body =
            serde_json::to_value(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        body["v"] = VERSION.into();
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        self.wr.write_all(&bytes).await.map_err(|e| self.io(e))
    }

    async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.send(req).await?;
        let timeout = self.timeout;
        let line = self.read_line(Some(timeout)).await?.ok_or_else(|| {
            ClientError::Protocol(format!(
                "the daemon closed the connection without answering {}",
                req.name()
            ))
        })?;
        match line.result {
            Some(r) => Ok(r),
            None => Err(line_error(line)),
        }
    }

    async fn fdb(&mut self, query: &FdbQuery) -> Result<FdbPage, ClientError> {
        match self.call(&Request::Fdb(query.clone())).await? {
            Response::Fdb(p) => Ok(p),
            other => Err(unexpected("fdb", &other)),
        }
    }

    /// The next line (None at the end of the stream).
    async fn read_line(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<ResponseLine>, ClientError> {
        if self.read_raw(timeout).await?.is_none() {
            return Ok(None);
        }
        let line: ResponseLine = serde_json::from_slice(&self.line).map_err(|e| {
            let start = String::from_utf8_lossy(&self.line[..self.line.len().min(200)]);
            ClientError::Protocol(format!("{e}: {start}"))
        })?;
        if line.v != VERSION {
            return Err(ClientError::Protocol(format!(
                "the daemon speaks protocol version {}, this client {VERSION}",
                line.v
            )));
        }
        Ok(Some(line))
    }

    /// The next line's bytes (None at the end of the stream).
    async fn read_raw(&mut self, timeout: Option<Duration>) -> Result<Option<&[u8]>, ClientError> {
        self.line.clear();
        let read = self.rd.read_until(b'\n', &mut self.line);
        let n = match timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| ClientError::Timeout {
                    path: self.path.clone(),
                    timeout: t,
                })?,
            None => read.await,
        }
        .map_err(|e| self.io(e))?;
        Ok((n > 0).then_some(self.line.as_slice()))
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn line_error(line: ResponseLine) -> ClientError {
    match line.error {
        Some(e) => ClientError::Daemon(e),
        None => ClientError::Protocol("a line with neither result, error nor event".into()),
    }
}

fn unexpected(asked: &str, got: &Response) -> ClientError {
    ClientError::Protocol(format!("asked for {asked}, got {}", got.name()))
}

/// Run one client call from synchronous code (on a runtime of its own:
/// not from inside a tokio runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the control-socket client")
        .block_on(f)
}
