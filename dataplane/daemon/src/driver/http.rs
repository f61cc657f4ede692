//! The HTTP server on `--metrics ADDR` (off by default): Prometheus
//! metrics (`/metrics`, [`super::metrics`]), the status page (`/` and its
//! script, embedded in the binary), the JSON and the server-sent events
//! the page reads, and its two actions (disconnect an AP, a pcapng
//! capture).
//!
//! It runs beside the event loop like the control socket and asks the loop
//! through the same request paths ([`super::control::LocalApi`]): the loop
//! only takes snapshots; nothing here touches the per-packet path.
//!
//! Security, for a socket any local process (or, bound elsewhere, the
//! network) can reach: it listens only where `--metrics` says. Every
//! request's `Host` must name that address (a DNS-rebinding page cannot
//! read it). The actions change state, so they must not be triggerable
//! from another site: POST only, with a JSON body, the header
//! `X-Tunterm-Token` equal to a random token drawn from the OS at start
//! and embedded in the page (a cross-site page can neither read it nor
//! send a custom header without a CORS preflight, which is never granted),
//! and an `Origin`, when sent, of this address. At most
//! [`MAX_HTTP_CONNECTIONS`] connections and [`MAX_EVENT_STREAMS`] event
//! streams are open; the ones past that are refused and counted, as are
//! refused hosts and tokens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rand::TryRngCore;
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::control::LocalApi;
use super::metrics::{self, MetricsOptions};
use crate::api::{CaptureRequest, ClientQuery, DisconnectRequest, Request as ApiRequest};

/// Most HTTP connections open at once; more are answered 503 and closed.
pub const MAX_HTTP_CONNECTIONS: usize = 32;
/// Most event streams (`/api/events`, the page's live plots) at once.
pub const MAX_EVENT_STREAMS: usize = 8;
/// Longest request body (the actions' JSON).
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most rows of a `/api/tunnels` page.
const MAX_PAGE: usize = 1000;
/// Most mGRE peers and per-AP entries in `/api/summary`.
const SUMMARY_LIST: usize = 200;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");

/// The HTTP server's own counters (in `/metrics` and `/api/summary`).
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    refused_busy: AtomicU64,
    accept_errors: AtomicU64,
    requests: AtomicU64,
    refused_host: AtomicU64,
    refused_token: AtomicU64,
    bad_requests: AtomicU64,
    not_found: AtomicU64,
    event_streams: AtomicU64,
    event_streams_refused: AtomicU64,
    actions: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Decrements a gauge when dropped.
struct Gauge(Arc<Server>, fn(&Counters) -> &AtomicU64);

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(&self.0.counters).fetch_sub(1, Relaxed);
    }
}

struct Server {
    api: LocalApi,
    /// The page's token for the actions (hex, 128 bits from the OS).
    token: String,
    /// The `Host` values that name this server.
    hosts: Vec<String>,
    /// Bound to every address: any IP literal with the right port is a
    /// `Host` of ours.
    any_ip_port: Option<u16>,
    metrics: MetricsOptions,
    counters: Counters,
    started: Instant,
}

/// Bind `addr` for [`serve`] (at start, so a taken port is an error then).
pub(super) fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    let std = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics {addr}: binding the HTTP server"))?;
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}

/// Serve `listener` beside the loop.
pub(super) fn serve(
    listener: TcpListener,
    api: LocalApi,
    metrics: MetricsOptions,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let addr = listener.local_addr()?;
    let mut raw = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut raw)
        .context("reading the page's token from the OS")?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    let any_ip_port = addr.ip().is_unspecified().then_some(addr.port());
    if !addr.ip().is_loopback() {
        warn!(%addr, "the metrics and status page listen beyond this machine (--metrics): anyone who reaches it can read the stats");
    }
    info!(
        %addr,
        max_connections = MAX_HTTP_CONNECTIONS,
        max_event_streams = MAX_EVENT_STREAMS,
        metrics_tunnels = metrics.tunnels,
        "metrics and status page ready"
    );
    let server = Arc::new(Server {
        api,
        token,
        hosts,
        any_ip_port,
        metrics,
        counters: Counters::default(),
        started: Instant::now(),
    });
    tokio::spawn(accept_loop(listener, server));
    Ok(())
}

async fn accept_loop(listener: TcpListener, server: Arc<Server>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let c = &server.counters;
                if c.active.load(Relaxed) >= MAX_HTTP_CONNECTIONS as u64 {
                    bump(&c.refused_busy);
                    refuse(stream);
                    continue;
                }
                bump(&c.connections);
                bump(&c.active);
                let guard = Gauge(server.clone(), |c| &c.active);
                tokio::spawn(serve_connection(stream, server.clone(), guard));
            }
            Err(e) => {
                bump(&server.counters.accept_errors);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(error = %e, "HTTP server: accept failed; backing off");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection past the cap: told so at once and closed.
fn refuse(stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
        Content-Length: 27\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many HTTP connections\r\n";
    // A fresh socket's buffer takes it at once (tokio's try_write would
    // wait for a readiness not yet polled).
    if let Ok(s) = stream.into_std() {
        let _ = std::io::Write::write(&mut &s, BUSY);
    }
}

async fn serve_connection(stream: TcpStream, server: Arc<Server>, _guard: Gauge) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let svc = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.handle(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc);
    let _ = conn.await;
}

/// A response body: whole, or chunks as they come (events, a capture).
pub(super) enum Body {
    Full(Option<Bytes>),
    Chunks(mpsc::Receiver<Vec<u8>>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Chunks(rx) => rx
                .poll_recv(cx)
                .map(|c| c.map(|v| Ok(Frame::data(Bytes::from(v))))),
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(body.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    m.push('\n');
    respond(status, "text/plain; charset=utf-8", m)
}

fn json(body: impl Into<Bytes>) -> Response<Body> {
    respond(StatusCode::OK, "application/json", body)
}

/// The query string's `key=value` pairs, decoded.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// One row of the tunnels table.
#[derive(Serialize)]
struct TunnelRow {
    kind: &'static str,
    id: u32,
    ap: String,
    remote: String,
    state: String,
    uptime: u64,
    sessions: usize,
    tx_control_pkts: u64,
    rx_control_pkts: u64,
    retransmits: u64,
}

#[derive(Serialize)]
struct TunnelPage {
    total: usize,
    matching: usize,
    offset: usize,
    rows: Vec<TunnelRow>,
}

impl Server {
    fn host_ok(&self, req: &Request<Incoming>) -> bool {
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return false;
        };
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return true;
        }
        self.any_ip_port
            .is_some_and(|port| host.parse::<SocketAddr>().is_ok_and(|a| a.port() == port))
    }

    /// An action's request: the page's token, our origin, JSON.
    fn action_ok(&self, req: &Request<Incoming>) -> Result<(), &'static str> {
        let h = req.headers();
        let token = h.get("x-tunterm-token").map(HeaderValue::as_bytes);
        if !token.is_some_and(|t| constant_time_eq(t, self.token.as_bytes())) {
            return Err("missing or wrong X-Tunterm-Token (reload the page)");
        }
        if let Some(origin) = h.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let host = h
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if origin != format!("http://{host}") {
                return Err("cross-origin request refused");
            }
        }
        if h.get("sec-fetch-site")
            .is_some_and(|s| s != "same-origin" && s != "none")
        {
            return Err("cross-site request refused");
        }
        let ct = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/json") {
            return Err("expected Content-Type: application/json");
        }
        Ok(())
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        bump(&self.counters.requests);
        let mut resp = self.route(req).await;
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        resp
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let c = &self.counters;
        if !self.host_ok(&req) {
            bump(&c.refused_host);
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "Host does not name this server (use the address given to --metrics)",
            );
        }
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                INDEX_HTML.replace("{{TOKEN}}", &self.token),
            ),
            (&Method::GET, "/app.js") => {
                respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
            }
            (&Method::GET, "/metrics") => match self.api.stats().await {
                Ok(stats) => {
                    let extra = self.http_series();
                    let text = tokio::task::spawn_blocking({
                        let opts = self.metrics;
                        move || metrics::render(&stats, opts, &extra)
                    })
                    .await
                    .unwrap_or_default();
                    respond(StatusCode::OK, metrics::CONTENT_TYPE, text)
                }
                Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e),
            },
            (&Method::GET, "/api/summary") => self.summary().await,
            (&Method::GET, "/api/tunnels") => self.tunnels(&query(&req)).await,
            (&Method::GET, "/api/clients") => {
                let q = query(&req);
                let cq = ClientQuery {
                    vlan: param(&q, "vlan").and_then(|v| v.parse().ok()),
                    mac: param(&q, "mac").map(str::to_string),
                    ip: param(&q, "ip").map(str::to_string),
                    ap: param(&q, "ap").map(str::to_string),
                    offset: param(&q, "offset")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    limit: Some(
                        param(&q, "limit")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(100)
                            .clamp(1, MAX_PAGE),
                    ),
                };
                json(self.api.line(ApiRequest::Clients(cq)).await)
            }
            (&Method::GET, "/api/events") => self.events(),
            (&Method::POST, "/api/disconnect") | (&Method::POST, "/api/capture") => {
                if let Err(why) = self.action_ok(&req) {
                    bump(&c.refused_token);
                    return text(StatusCode::FORBIDDEN, why);
                }
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        bump(&c.bad_requests);
                        return text(StatusCode::BAD_REQUEST, format!("request body: {e}"));
                    }
                };
                bump(&c.actions);
                if path == "/api/disconnect" {
                    match serde_json::from_slice::<DisconnectRequest>(&body) {
                        Ok(r) => json(self.api.line(ApiRequest::DisconnectAps(r)).await),
                        Err(e) => {
                            bump(&c.bad_requests);
                            text(StatusCode::BAD_REQUEST, format!("disconnect: {e}"))
                        }
                    }
                } else {
                    self.capture(&body).await
                }
            }
            (
                _,
                "/" | "/index.html" | "/app.js" | "/metrics" | "/api/summary" | "/api/tunnels"
                | "/api/clients" | "/api/events" | "/api/disconnect" | "/api/capture",
            ) => {
                bump(&c.bad_requests);
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => {
                bump(&c.not_found);
                text(StatusCode::NOT_FOUND, "not found")
            }
        }
    }

    /// The HTTP server's counters as series.
    fn http_series(&self) -> Vec<(&'static str, bool, &'static str, f64)> {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Relaxed) as f64;
        vec![
            (
                "tunterm_http_connections",
                false,
                "HTTP connections accepted",
                n(&c.connections),
            ),
            (
                "tunterm_http_connections_active",
                true,
                "HTTP connections open",
                n(&c.active),
            ),
            (
                "tunterm_http_connections_max",
                true,
                "Most HTTP connections open at once",
                MAX_HTTP_CONNECTIONS as f64,
            ),
            (
                "tunterm_http_refused_busy",
                false,
                "HTTP connections refused at the cap",
                n(&c.refused_busy),
            ),
            (
                "tunterm_http_accept_errors",
                false,
                "HTTP accept failures",
                n(&c.accept_errors),
            ),
            (
                "tunterm_http_requests",
                false,
                "HTTP requests",
                n(&c.requests),
            ),
            (
                "tunterm_http_refused_host",
                false,
                "HTTP requests refused for their Host header",
                n(&c.refused_host),
            ),
            (
                "tunterm_http_refused_token",
                false,
                "Actions refused: no or wrong token, another origin or site",
                n(&c.refused_token),
            ),
            (
                "tunterm_http_bad_requests",
                false,
                "HTTP requests refused as malformed",
                n(&c.bad_requests),
            ),
            (
                "tunterm_http_not_found",
                false,
                "HTTP requests for no such path",
                n(&c.not_found),
            ),
            (
                "tunterm_http_actions",
                false,
                "Actions (disconnect, capture) accepted for the loop",
                n(&c.actions),
            ),
            (
                "tunterm_http_event_streams",
                true,
                "Event streams open",
                n(&c.event_streams),
            ),
            (
                "tunterm_http_event_streams_refused",
                false,
                "Event streams refused at the cap",
                n(&c.event_streams_refused),
            ),
        ]
    }

    /// The stats for the page: without the tunnel list (paged apart), the
    /// long lists cut, the HTTP server's counters added.
    async fn summary(&self) -> Response<Body> {
        let stats = match self.api.stats().await {
            Ok(s) => s,
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e),
        };
        let mut http = serde_json::Map::new();
        for (name, _, _, v) in self.http_series() {
            http.insert(
                name.trim_start_matches("tunterm_http_").into(),
                (v as u64).into(),
            );
        }
        http.insert("uptime".into(), self.started.elapsed().as_secs().into());
        let render = move || {
            let mut doc = serde_json::to_value(&*stats).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut doc {
                m.remove("tunnels");
                for list in ["gre_peers"] {
                    if let Some(Value::Array(a)) = m.get_mut(list) {
                        a.truncate(SUMMARY_LIST);
                    }
                }
                if let Some(Value::Array(a)) = m
                    .get_mut("clients")
                    .and_then(|c| c.get_mut("storm_dropped_per_ap"))
                {
                    a.truncate(SUMMARY_LIST);
                }
                m.insert("http".into(), Value::Object(http));
            }
            serde_json::to_vec(&doc).unwrap_or_default()
        };
        json(
            tokio::task::spawn_blocking(render)
                .await
                .unwrap_or_default(),
        )
    }

    /// A page of tunnels (L2TP and mGRE): `filter` (a substring of the AP,
    /// the address, the state or the id), `sort` (a column), `desc`,
    /// `offset`, `limit`.
    async fn tunnels(&self, q: &[(String, String)]) -> Response<Body> {
        let stats = match self.api.stats().await {
            Ok(s) => s,
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e),
        };
        let filter = param(q, "filter").unwrap_or("").to_ascii_lowercase();
        let sort = param(q, "sort").unwrap_or("id").to_string();
        let desc = param(q, "desc").is_some_and(|d| d == "1" || d == "true");
        let offset: usize = param(q, "offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit: usize = param(q, "limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(50)
            .clamp(1, MAX_PAGE);
        let render = move || {
            let mut rows: Vec<TunnelRow> = stats
                .tunnels
                .iter()
                .map(|t| TunnelRow {
                    kind: "l2tp",
                    id: t.local_ccid,
                    ap: t.ap.clone(),
                    remote: format!("{}:{}", t.remote_ip, t.remote_port),
                    state: t.state.to_string(),
                    uptime: t.uptime,
                    sessions: t.sessions.len(),
                    tx_control_pkts: t.tx_control_pkts,
                    rx_control_pkts: t.rx_control_pkts,
                    retransmits: t.retransmits,
                })
                .chain(stats.gre_peers.iter().map(|p| TunnelRow {
                    kind: "mgre",
                    id: p.port,
                    ap: String::new(),
                    remote: p.remote_ip.clone(),
                    state: "peer".into(),
                    uptime: 0,
                    sessions: 1,
                    tx_control_pkts: 0,
                    rx_control_pkts: 0,
                    retransmits: 0,
                }))
                .collect();
            let total = rows.len();
            if !filter.is_empty() {
                rows.retain(|r| {
                    r.ap.to_ascii_lowercase().contains(&filter)
                        || r.remote.contains(&filter)
                        || r.state.contains(&filter)
                        || r.kind == filter
                        || r.id.to_string() == filter
                });
            }
            match sort.as_str() {
                "ap" => rows.sort_by(|a, b| a.ap.cmp(&b.ap)),
                "remote" => rows.sort_by(|a, b| a.remote.cmp(&b.remote)),
                "state" => rows.sort_by(|a, b| a.state.cmp(&b.state)),
                "uptime" => rows.sort_by_key(|r| r.uptime),
                "sessions" => rows.sort_by_key(|r| r.sessions),
                "retransmits" => rows.sort_by_key(|r| r.retransmits),
                _ => rows.sort_by_key(|r| (r.kind, r.id)),
            }
            if desc {
                rows.reverse();
            }
            let matching = rows.len();
            let rows: Vec<_> = rows.into_iter().skip(offset).take(limit).collect();
            serde_json::to_vec(&TunnelPage {
                total,
                matching,
                offset,
                rows,
            })
            .unwrap_or_default()
        };
        json(
            tokio::task::spawn_blocking(render)
                .await
                .unwrap_or_default(),
        )
    }

    /// Server-sent events: once a second, packets and bytes per second in
    /// and out (the slow path's sockets, and the fast path's redirects).
    fn events(self: &Arc<Self>) -> Response<Body> {
        let c = &self.counters;
        if c.event_streams.fetch_add(1, Relaxed) >= MAX_EVENT_STREAMS as u64 {
            c.event_streams.fetch_sub(1, Relaxed);
            bump(&c.event_streams_refused);
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many event streams ({MAX_EVENT_STREAMS} open)"),
            );
        }
        let guard = Gauge(self.clone(), |c| &c.event_streams);
        let (tx, rx) = mpsc::channel(4);
        let api = self.api.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last: Option<(Instant, super::control::RateSample)> = None;
            if tx.send(b"retry: 2000\n\n".to_vec()).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tx.closed() => return,
                }
                let Some(s) = api.rates().await else { return };
                let now = Instant::now();
                if let Some((t, prev)) = &last {
                    let dt = (now - *t).as_secs_f64().max(0.001);
                    let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                    let (io, p) = (&s.io, &prev.io);
                    let ev = serde_json::json!({
                        "time": std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()),
                        "pps_in": d(io.tunnel_rx + io.trunk_rx, p.tunnel_rx + p.trunk_rx),
                        "pps_out": d(io.tunnel_tx + io.trunk_tx, p.tunnel_tx + p.trunk_tx),
                        "bps_in": d(io.tunnel_rx_bytes + io.trunk_rx_bytes,
                                    p.tunnel_rx_bytes + p.trunk_rx_bytes),
                        "bps_out": d(io.tunnel_tx_bytes + io.trunk_tx_bytes,
                                     p.tunnel_tx_bytes + p.trunk_tx_bytes),
                        "pps_fast": d(s.fast_redirect, prev.fast_redirect),
                    });
                    let line = format!("event: rates\ndata: {ev}\n\n");
                    if tx.send(line.into_bytes()).await.is_err() {
                        return;
                    }
                }
                last = Some((now, *s));
            }
        });
        let mut r = Response::new(Body::Chunks(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r
    }

    /// A pcapng capture, streamed as a download until a limit ends it.
    async fn capture(&self, body: &[u8]) -> Response<Body> {
        let req: CaptureRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.bad_requests);
                return text(StatusCode::BAD_REQUEST, format!("capture: {e}"));
            }
        };
        match self.api.capture(req, 64).await {
            Ok((accepted, rx)) => {
                let mut r = Response::new(Body::Chunks(rx));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-pcapng"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "attachment; filename=\"tunterm-capture-{}.pcapng\"",
                    accepted.id
                )) {
                    h.insert(header::CONTENT_DISPOSITION, v);
                }
                r
            }
            Err(e) => {
                bump(&self.counters.bad_requests);
                text(StatusCode::BAD_REQUEST, e)
            }
        }
    }
}

/// Equal bytes, compared in a time that does not depend on where they
/// differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_tokens_compare() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
