//! The control socket's protocol: JSON lines, typed on both ends.
//!
//! A client writes one request per line and reads one response line per
//! request, on as many requests as it likes per connection. Every line
//! carries the protocol version `v` ([`VERSION`]):
//!
//! ```text
//! → {"v":1,"type":"stats"}
//! ← {"v":1,"result":{"stats":{"name":"edge1","version":"0.1.0 (…)","config_digest":"sha256:…",…}}}
//! → {"v":1,"type":"fdb","vlan":10,"limit":2}
//! ← {"v":1,"result":{"fdb":{"total":1742,"offset":0,"next_offset":2,"entries":[…]}}}
//! → {"v":1,"type":"disconnect-aps","macs":["5c5b35000001"]}
//! ← {"v":1,"result":{"disconnect-aps":{"disconnected_aps":["5c5b35000001"]}}}
//! → {"v":1,"type":"preempt","site_id":"…","mxtunnel_id":"…"}
//! → {"v":7,"type":"stats"}
//! ← {"v":1,"error":"protocol version 7: this tunterm speaks version 1"}
//! → {"v":1,"type":"subscribe"}
//! ← {"v":1,"result":"subscribed"}
//! ← {"v":1,"event":{"time":1764668400.25,"kind":"tunnel-up","tunnel_id":7,"peer":"10.99.0.2:1701","ap":"ap1"}}
//! → {"v":1,"type":"capture-points"}
//! ← {"v":1,"result":{"capture-points":[{"name":"trunk","description":"…"},…]}}
//! → {"v":1,"type":"capture","points":[{"name":"trunk","filter":"vlan 10"}],"num_packets":100}
//! ← {"v":1,"result":{"capture":{"id":1,"points":["trunk"],"num_packets":100,"duration":600,"max_pkt_len":512,"format":"pcapng"}}}
//! ← (pcapng bytes until a limit ends the capture, then the end of the connection)
//! ```
//!
//! A response has either `result` (under the request's `type`) or
//! `error` (a message for a person). After `subscribe` the connection
//! carries only events until the client closes it; a subscriber too slow
//! for the stream loses events and is told how many (`lagged`). After an
//! accepted `capture` it carries the capture: pcapng bytes, or for
//! `format: tzsp` (UDP datagrams elsewhere) one `capture-ended` line at the
//! end; closing it stops the capture.
//!
//! The daemon bounds what a client can take: a request line is at most
//! [`MAX_REQUEST_LINE`] bytes, a connection that sends no complete request
//! for a while is closed (subscriptions are not), and connections beyond a
//! cap are answered with an error and closed. [`client::Client`] is the
//! one client (the CLI, the lab and the benches use it).

pub mod client;

use serde::{Deserialize, Serialize};

pub use crate::driver::clients::{
    ApStormDrops, CLIENTS_DEFAULT_LIMIT, CLIENTS_MAX_LIMIT, ClientEntry, ClientPage, ClientQuery,
    ClientStats,
};
pub use crate::driver::{FdbEntry, GrePeerStats, IoCounters, RestartStats, Stats};
pub use crate::operations::{DisconnectRequest, PreemptReport, PreemptRequest};
/// The rows of [`Stats::tunnels`] and their sessions.
pub use tunterm_core::proto::l2tp::{ConnStats, SessionStats};

/// The protocol version this tunterm speaks.
pub const VERSION: u32 = 1;

/// Longest request line, newline included.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Entries an `fdb` request returns when it gives no `limit`.
pub const FDB_DEFAULT_LIMIT: usize = 1000;

/// Most entries one `fdb` page may hold.
pub const FDB_MAX_LIMIT: usize = 10_000;

/// The daemon's version: the package's, and `git describe` of the tree it
/// was built from when that was known at build time.
pub const DAEMON_VERSION: &str = env!("TUNTERM_VERSION");

/// A request, as the `type` of its line says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Request {
    /// Tunnels, counters, health, the running version and configuration
    /// digest (not the FDB: see [`Request::Fdb`]).
    Stats,
    /// A page of the forwarding database.
    Fdb(FdbQuery),
    /// A page of the client table.
    Clients(ClientQuery),
    /// Close the tunnels of some APs.
    DisconnectAps(DisconnectRequest),
    /// Close the tunnels of APs whose preferred edge is another.
    Preempt(PreemptRequest),
    /// Turn the connection into a stream of [`Event`]s.
    Subscribe,
    /// The capture points of the running edge.
    CapturePoints,
    /// Start a packet capture: one answer line, then (pcapng) the capture
    /// file's bytes until a limit ends it, or (TZSP) a summary line when it
    /// ends. Closing the connection ends it.
    Capture(CaptureRequest),
    /// Validate a whole configuration and apply it the way a reload
    /// (SIGHUP) does; optionally write it to the configuration file.
    ApplyConfig(ApplyConfigRequest),
    /// Take some ports down for a while and bring them back
    /// (`bounce_port`); answered once the request is checked and the ports
    /// are down.
    BouncePort(BouncePortRequest),
    /// Restart without dropping tunnels: answer `"restarting"`, exit the
    /// way SIGQUIT does (state file written, pinned fast path kept) and
    /// exec this daemon again with the same command line, in the same
    /// process (same pid, so a supervisor sees no exit).
    Restart,
}

impl Request {
    /// The request's `type`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Stats => "stats",
            Request::Fdb(_) => "fdb",
            Request::Clients(_) => "clients",
            Request::DisconnectAps(_) => "disconnect-aps",
            Request::Preempt(_) => "preempt",
            Request::Subscribe => "subscribe",
            Request::CapturePoints => "capture-points",
            Request::Capture(_) => "capture",
            Request::ApplyConfig(_) => "apply-config",
            Request::BouncePort(_) => "bounce-port",
            Request::Restart => "restart",
        }
    }
}

/// Which FDB entries, and which page of them. Entries are ordered by VLAN
/// then MAC, so `offset` pages through a table that does not change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FdbQuery {
    /// Only this VLAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Only this MAC (any usual spelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Only this port: `trunk`, `host:<vlan>`, an L2TP session id or an
    /// mGRE peer's port number (as [`FdbEntry::port`] shows them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Entries to skip.
    pub offset: usize,
    /// Entries to return ([`FDB_DEFAULT_LIMIT`] when absent, at most
    /// [`FDB_MAX_LIMIT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One page of the FDB.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FdbPage {
    /// Entries matching the query, over all pages.
    pub total: usize,
    /// The first entry's position among them.
    pub offset: usize,
    /// The `offset` of the next page (None: this is the last).
    pub next_offset: Option<usize>,
    /// The entries.
    pub entries: Vec<FdbEntry>,
}

/// What `disconnect-aps` closed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DisconnectReport {
    /// APs whose tunnel was closed (their Host Names).
    pub disconnected_aps: Vec<String>,
}

/// A successful answer, under its request's `type`: `{"stats": {…}}`,
/// `{"fdb": {…}}`, `"subscribed"`. (The name comes first, so a client
/// reads a big answer in one pass, without buffering it.)
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// To [`Request::Stats`].
    Stats(Box<Stats>),
    /// To [`Request::Fdb`].
    Fdb(FdbPage),
    /// To [`Request::Clients`].
    Clients(ClientPage),
    /// To [`Request::DisconnectAps`].
    DisconnectAps(DisconnectReport),
    /// To [`Request::Preempt`].
    Preempt(PreemptReport),
    /// To [`Request::Subscribe`]: events follow.
    Subscribed,
    /// To [`Request::CapturePoints`].
    CapturePoints(Vec<CapturePointInfo>),
    /// To [`Request::Capture`]: it runs.
    Capture(CaptureAccepted),
    /// A TZSP capture ended (the last line of its connection).
    CaptureEnded(CaptureSummary),
    /// To [`Request::ApplyConfig`]: what changed and what waits for a restart.
    ApplyConfig(ApplyReport),
    /// To [`Request::BouncePort`]: the ports now down, and when they come back.
    BouncePort(BouncePortReport),
    /// To [`Request::Restart`]: the daemon execs itself again now.
    Restarting,
}

impl Response {
    /// The answer's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Stats(_) => "stats",
            Response::Fdb(_) => "fdb",
            Response::Clients(_) => "clients",
            Response::DisconnectAps(_) => "disconnect-aps",
            Response::Preempt(_) => "preempt",
            Response::Subscribed => "subscribed",
            Response::CapturePoints(_) => "capture-points",
            Response::Capture(_) => "capture",
            Response::CaptureEnded(_) => "capture-ended",
            Response::ApplyConfig(_) => "apply-config",
            Response::BouncePort(_) => "bounce-port",
            Response::Restarting => "restarting",
        }
    }
}

/// One line from the daemon: a result, an error or an event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResponseLine {
    /// Protocol version.
    pub v: u32,
    /// The answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Response>,
    /// Why there is no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An event of a subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

impl ResponseLine {
    /// A result line.
    pub fn result(r: Response) -> Self {
        ResponseLine {
            v: VERSION,
            result: Some(r),
            error: None,
            event: None,
        }
    }

    /// An error line.
    pub fn error(e: impl Into<String>) -> Self {
        ResponseLine {
            v: VERSION,
            result: None,
            error: Some(e.into()),
            event: None,
        }
    }

    /// An event line.
    pub fn event(e: Event) -> Self {
        ResponseLine {
            v: VERSION,
            result: None,
            error: None,
            event: Some(e),
        }
    }

    /// The line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self)
            .unwrap_or_else(|e| format!(r#"{{"v":{VERSION},"error":"{e}"}}"#).into_bytes());
        out.push(b'\n');
        out
    }
}

/// The digest of a configuration as tunterm read it: SHA-256 of its
/// canonical JSON (keys sorted, no spaces), `sha256:<hex>`. Stats carry the
/// running one; another process computes the same from the same file.
pub fn config_digest(cfg: &tunterm_control::ConfigFile) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's maps are sorted by key (no `preserve_order`): the value's
    // text is canonical.
    match serde_json::to_value(cfg).and_then(|v| serde_json::to_vec(&v)) {
        Ok(bytes) => {
            let sum = Sha256::digest(&bytes);
            let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        }
        Err(e) => format!("unavailable: {e}"),
    }
}

/// Parse one request line (without its newline). The error is the message
/// the daemon answers with.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request: not UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            r#"empty request; send one JSON object per line, e.g. {{"v":{VERSION},"type":"stats"}}"#
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(r#"request: not JSON ({e}); send e.g. {{"v":{VERSION},"type":"stats"}}"#)
    })?;
    let serde_json::Value::Object(mut map) = value else {
        return Err("request: expected a JSON object".into());
    };
    match map.remove("v") {
        None => {
            return Err(format!(
                r#"request: no protocol version "v" (this tunterm speaks {VERSION})"#
            ));
        }
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(format!(
                "protocol version {v}: this tunterm speaks version {VERSION}"
            ));
        }
    }
    if !map.contains_key("type") {
        return Err(
            r#"request: no "type" (stats, fdb, clients, disconnect-aps, preempt, subscribe, capture-points, capture, apply-config)"#
                .into(),
        );
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| format!("request: {e}"))
}

/// An `apply-config` request: the whole configuration document, as the
/// configuration file holds it (`mxedge`, `mxcluster`, `mxtunnels`,
/// `wlans`, `ports`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfigRequest {
    /// The configuration.
    pub config: serde_json::Value,
    /// Also write it to the daemon's `--config` file (atomically: a
    /// temporary file, fsync, rename), so a restart runs it too.
    #[serde(default)]
    pub persist: bool,
}

/// What an `apply-config` (or a reload) did. A refused configuration is an
/// `error` line instead (`config refused: <json path>: <message>`), and
/// nothing changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The digest of the configuration now loaded ([`config_digest`]); the
    /// stats carry it from now on.
    pub config_digest: String,
    /// Changes applied live, each naming its settings.
    pub applied: Vec<String>,
    /// Changes the running daemon cannot make live: they take effect at the
    /// next (hitless) restart; until then the old values run.
    pub needs_restart: Vec<String>,
    /// The file the configuration was written to (`persist`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<String>,
}

/// Longest `hold_time` of a `bounce-port`, in milliseconds.
pub const BOUNCE_MAX_HOLD_MS: u64 = 60_000;

/// Most ports one `bounce-port` names.
pub const BOUNCE_MAX_PORTS: usize = 64;

/// `bounce-port`: the Mist API's `bounce_port` action. Each port is named
/// as the `ports` map names it (`"0"`, or `"port0"` as the capture points
/// say), by its interface, as `trunk` (the upstream trunk) or `host:<vlan>`
/// (the edge's own host port on a VLAN). Every named port goes down (its
/// link set down through netlink: the switch or AP behind it sees the
/// carrier go) for `hold_time` milliseconds (1 to
/// [`BOUNCE_MAX_HOLD_MS`]), then comes back up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BouncePortRequest {
    /// The ports.
    pub ports: Vec<String>,
    /// How long they stay down, in milliseconds.
    pub hold_time: u64,
}

/// One port a `bounce-port` took down.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BouncedPort {
    /// The name the request gave.
    pub port: String,
    /// The interface taken down.
    pub ifname: String,
}

/// What a `bounce-port` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BouncePortReport {
    /// The ports now down.
    pub ports: Vec<BouncedPort>,
    /// When they come back up, milliseconds from now.
    pub hold_time: u64,
}

/// The prefix of an `apply-config` refusal, before `<path>: <message>`.
pub const CONFIG_REFUSED: &str = "config refused: ";

/// `num_packets` when a capture gives none (Mist's default).
pub const CAPTURE_DEFAULT_PACKETS: u64 = 1024;
/// Most `num_packets` (0, no limit, aside).
pub const CAPTURE_MAX_PACKETS: u64 = 10_000;
/// `duration` (seconds) when a capture gives none.
pub const CAPTURE_DEFAULT_DURATION: u64 = 600;
/// Longest `duration` (seconds): a day.
pub const CAPTURE_MAX_DURATION: u64 = 86_400;
/// `max_pkt_len` when a capture gives none.
pub const CAPTURE_DEFAULT_SNAPLEN: u32 = 512;
/// The range of `max_pkt_len`.
pub const CAPTURE_SNAPLEN: std::ops::RangeInclusive<u32> = 64..=2048;

/// What a capture writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    /// A pcapng stream on the connection.
    #[default]
    Pcapng,
    /// TZSP datagrams to `tzsp` (UDP).
    Tzsp,
}

/// One capture point of a request, with its own filter (which wins over
/// the request's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturePoint {
    /// Its name: `trunk`, `ap:<name>`, `session:<id>`, `gre:<addr>`,
    /// `host:<vlan>`, `vlan:<id>`, `wire`, `drop`, or a Mist port name
    /// (`port0`, …).
    pub name: String,
    /// A tcpdump expression for this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A `capture` request, in the shape of Mist's edge capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureRequest {
    /// Where (at least one).
    pub points: Vec<CapturePoint>,
    /// A tcpdump expression for every point without its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Frames to take before it ends ([`CAPTURE_DEFAULT_PACKETS`]; 0: no
    /// limit; at most [`CAPTURE_MAX_PACKETS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_packets: Option<u64>,
    /// Seconds before it ends ([`CAPTURE_DEFAULT_DURATION`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Bytes kept of each frame ([`CAPTURE_DEFAULT_SNAPLEN`], 64 to 2048).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pkt_len: Option<u32>,
    /// Output.
    pub format: CaptureFormat,
    /// Where TZSP goes: `host:port` (port 37008 when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tzsp: Option<String>,
}

/// A capture point of the running edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapturePointInfo {
    /// Its name.
    pub name: String,
    /// What it sees.
    pub description: String,
}

/// A capture that runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptureAccepted {
    /// Its id (in the stats).
    pub id: u64,
    /// Its points, in the order of the pcapng interfaces.
    pub points: Vec<String>,
    /// The limits in force.
    pub num_packets: u64,
    /// Seconds.
    pub duration: u64,
    /// Bytes kept of each frame.
    pub max_pkt_len: u32,
    /// Output.
    pub format: CaptureFormat,
    /// Where TZSP goes (the resolved address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tzsp: Option<String>,
}

/// A capture's counters.
pub use tunterm_core::proto::capture::CaptureCounters;

/// How a capture ended, and its counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptureSummary {
    /// Its id.
    pub id: u64,
    /// `num_packets`, `duration`, `client` (the connection closed) or
    /// `shutdown`.
    pub ended_by: String,
    /// Its counters.
    #[serde(flatten)]
    pub counters: CaptureCounters,
}

/// A running capture in the stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Its id.
    pub id: u64,
    /// Its points.
    pub points: Vec<String>,
    /// Output.
    pub format: CaptureFormat,
    /// Its counters.
    #[serde(flatten)]
    pub counters: CaptureCounters,
}

/// Something that happened in the daemon, as a subscription streams it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, in seconds since the Unix epoch.
    pub time: f64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    /// An L2TP control connection reached established.
    TunnelUp {
        /// Our CCID.
        tunnel_id: u32,
        /// The AP's address and port.
        peer: String,
        /// The AP's Host Name.
        ap: String,
    },
    /// An L2TP control connection is gone.
    TunnelDown {
        /// Our CCID.
        tunnel_id: u32,
        /// The AP's address and port.
        peer: String,
        /// Whether it had been established.
        was_up: bool,
        /// Why.
        reason: String,
    },
    /// An L2TP session can carry data.
    SessionUp {
        /// Our CCID.
        tunnel_id: u32,
        /// Our session id (its switch port).
        session_id: u32,
    },
    /// An L2TP session is gone.
    SessionDown {
        /// Our CCID.
        tunnel_id: u32,
        /// Our session id.
        session_id: u32,
        /// Why.
        reason: String,
        /// MACs flushed from the FDB with it.
        flushed_macs: usize,
    },
    /// An mGRE peer became a switch port.
    PeerAdded {
        /// Its switch port.
        port: u32,
        /// The AP's address.
        ap: String,
        /// Its GRE key.
        key: Option<u32>,
    },
    /// An mGRE peer is gone.
    PeerRemoved {
        /// Its switch port.
        port: u32,
        /// The AP's address.
        ap: String,
        /// Why (`timeout`, `removed`).
        reason: String,
        /// MACs flushed from the FDB with it.
        flushed_macs: usize,
    },
    /// Upstream monitoring changed its verdict.
    Health {
        /// `healthy` (tunnels taken) or `failed` (refused and closed).
        state: String,
        /// The failing checks.
        failing: Vec<String>,
    },
    /// A reload (SIGHUP) was applied or refused.
    Reload {
        /// Applied.
        ok: bool,
        /// Why not.
        error: Option<String>,
        /// The running configuration's digest afterwards.
        config_digest: String,
    },
    /// This subscriber was too slow: `missed` events were dropped for it.
    Lagged {
        /// Events lost.
        missed: u64,
    },
}

/// The control socket's own counters (`control` in the stats).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Connections accepted and served.
    pub connections: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections refused because [`ControlStats::max_connections`] were
    /// open and none of them idle (no request in progress, no subscription).
    pub refused_busy: u64,
    /// Idle connections closed to make room for a new one at the cap.
    #[serde(default)]
    pub idle_evicted: u64,
    /// The cap on open connections.
    pub max_connections: u64,
    /// Requests answered (errors included).
    pub requests: u64,
    /// Requests refused: not JSON, wrong version, unknown type, bad arguments.
    pub bad_requests: u64,
    /// Request lines longer than [`MAX_REQUEST_LINE`] (the connection is closed).
    pub lines_too_long: u64,
    /// Connections closed for sending no complete request in time.
    pub idle_closed: u64,
    /// Replies the client did not take in time (the connection is closed).
    pub write_timeouts: u64,
    /// `accept` failures (e.g. no file descriptor left); each backs off.
    pub accept_errors: u64,
    /// Longest time the event loop spent on one request (taking its
    /// snapshot or running its operation), µs: forwarding waits that long.
    pub loop_us_max: u64,
    /// Time the event loop spent on the last request, µs.
    pub loop_us_last: u64,
    /// Subscriptions open now.
    pub subscribers: u64,
    /// Events published.
    pub events: u64,
    /// Events lost by slow subscribers.
    pub events_lagged: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_request(br#"{"v":1,"type":"stats"}"#),
            Ok(Request::Stats)
        );
        assert_eq!(
            parse_request(br#"{"type":"fdb","v":1,"vlan":10,"limit":5}"#),
            Ok(Request::Fdb(FdbQuery {
                vlan: Some(10),
                limit: Some(5),
                ..FdbQuery::default()
            }))
        );
        let e = |line: &[u8]| parse_request(line).unwrap_err();
        assert!(e(br#"{"v":2,"type":"stats"}"#).contains("version 2"));
        assert!(e(br#"{"type":"stats"}"#).contains(r#"no protocol version "v""#));
        assert!(e(br#"{"v":1}"#).contains(r#"no "type""#));
        assert!(e(br#"{"v":1,"type":"reboot"}"#).contains("unknown variant `reboot`"));
        assert!(e(b"stats").contains("not JSON"));
        assert!(e(b"").contains("empty request"));
        assert!(e(b"[1]").contains("expected a JSON object"));
        assert!(e(b"\xff").contains("not UTF-8"));
        assert!(e(br#"{"v":1,"type":"fdb","vlan":"ten"}"#).contains("invalid type"));
        assert!(e(br#"{"v":1,"type":"fdb","colour":1}"#).contains("unknown field"));
        assert!(
            e(br#"{"v":1,"type":"disconnect-aps","percentage":"all"}"#).contains("invalid type")
        );
        // A capture in Mist's shape, its defaults left to the daemon.
        match parse_request(br#"{"v":1,"type":"capture","points":[{"name":"trunk"}]}"#) {
            Ok(Request::Capture(c)) => {
                assert_eq!(c.format, CaptureFormat::Pcapng);
                assert_eq!(
                    (c.num_packets, c.duration, c.max_pkt_len),
                    (None, None, None)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(e(br#"{"v":1,"type":"capture","format":"stream"}"#).contains("unknown variant"));
        assert!(e(br#"{"v":1,"type":"capture","points":[{"nme":"x"}]}"#).contains("unknown field"));
    }

    #[test]
    fn every_request_and_response_round_trips() {
        for r in [
            Request::Stats,
            Request::Subscribe,
            Request::Fdb(FdbQuery {
                mac: Some("02:00:00:00:00:01".into()),
                port: Some("trunk".into()),
                offset: 3,
                ..FdbQuery::default()
            }),
            Request::DisconnectAps(DisconnectRequest {
                macs: vec!["5c5b35000001".into()],
                percentage: None,
            }),
            Request::Preempt(PreemptRequest {
                site_id: Some("s".into()),
                mxtunnel_id: None,
            }),
            Request::Preempt(PreemptRequest {
                site_id: None,
                mxtunnel_id: Some("7f3c2a10-0000-4000-8000-000000000001".into()),
            }),
            Request::CapturePoints,
            Request::ApplyConfig(ApplyConfigRequest {
                config: serde_json::json!({"mxedge": {"name": "e"}}),
                persist: true,
            }),
            Request::Capture(CaptureRequest {
                points: vec![
                    CapturePoint {
                        name: "trunk".into(),
                        filter: Some("vlan 10".into()),
                    },
                    CapturePoint {
                        name: "drop".into(),
                        filter: None,
                    },
                ],
                filter: Some("icmp".into()),
                num_packets: Some(0),
                duration: Some(60),
                max_pkt_len: Some(2048),
                format: CaptureFormat::Tzsp,
                tzsp: Some("192.0.2.50".into()),
            }),
        ] {
            let mut line = serde_json::to_value(&r).unwrap();
            line["v"] = VERSION.into();
            assert_eq!(parse_request(line.to_string().as_bytes()), Ok(r));
        }
        let ev = ResponseLine::event(Event {
            time: 1.5,
            kind: EventKind::TunnelDown {
                tunnel_id: 3,
                peer: "10.0.0.2:1701".into(),
                was_up: true,
                reason: "hello timeout".into(),
            },
        });
        let line = ev.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.contains(r#""kind":"tunnel-down""#), "{text}");
        let back: ResponseLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.event, ev.event);
        let page = ResponseLine::result(Response::Fdb(FdbPage {
            total: 1,
            offset: 0,
            next_offset: None,
            entries: vec![FdbEntry {
                vlan: 10,
                mac: "02:00:00:00:00:01".into(),
                port: "trunk".into(),
            }],
        }));
        let back: ResponseLine = serde_json::from_slice(&page.to_line()).unwrap();
        match back.result {
            Some(Response::Fdb(p)) => assert_eq!(p.entries[0].port, "trunk"),
            other => panic!("{other:?}"),
        }
        let err: ResponseLine =
            serde_json::from_slice(&ResponseLine::error("nope").to_line()).unwrap();
        assert_eq!((err.v, err.error.as_deref()), (VERSION, Some("nope")));
    }
}
