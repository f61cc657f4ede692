//! The edge-facing side (control/agent/PROTOCOL.md): registration with a claim code,
//! the `/api-ws/v1/edge` websocket session, config pushes and actions that
//! wait for the edge's `action_result`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::{Cloud, now};

/// How long an action waits for the edge's `action_result`.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A session with no traffic for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages queued to one edge at most.
const EDGE_QUEUE: usize = 64;
/// Actions waiting for a result at most.
const MAX_PENDING: usize = 1024;

/// The seed's `stats/mxedges` fields an edge may report (plus tunterm's
/// `config_digest` extension).
pub const MXEDGE_STATS_FIELDS: &[&str] = &[
    "memory_stat",
    "cpu_stat",
    "ip_stat",
    "oob_ip_stat",
    "port_stat",
    "lag_stat",
    "service_stat",
    "tunterm_stat",
    "num_tunnels",
    "uptime",
    "versions",
    "virtualization_type",
    "distro",
    "idrac_version",
    "fwupdate",
    "fips_enabled",
    "mac",
    "model",
    "proxy",
    "last_seen",
    "config_digest",
];

/// The seed's `stats/tunnels/search` row fields.
pub const TUNNEL_ROW_FIELDS: &[&str] = &[
    "org_id",
    "site_id",
    "mxedge_id",
    "mxcluster_id",
    "mxtunnel_id",
    "ap",
    "remote_ip",
    "remote_port",
    "state",
    "last_seen",
    "uptime",
    "tx_control_pkts",
    "rx_control_pkts",
    "peer_mxedge_id",
    "mtu",
    "sessions",
];

/// The seed's `pcap_dict` fields.
pub const PCAP_DICT_FIELDS: &[&str] = &[
    "dst_mac",
    "src_mac",
    "vlan",
    "src_ip",
    "dst_ip",
    "dst_port",
    "src_port",
    "protocol",
    "mxedge_id",
    "direction",
    "timestamp",
    "length",
    "lost_messages",
    "info",
    "interface",
];

/// A connected edge.
struct Session {
    conn: u64,
    org_id: String,
    tx: mpsc::Sender<String>,
    version: Option<String>,
    config_digest: Option<String>,
    connected_at: f64,
}

/// The connected edges and the actions waiting for their results.
#[derive(Default)]
pub struct EdgeSessions {
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

/// Why an action did not get a result.
#[derive(Debug)]
pub enum ActionError {
    /// The edge has no session.
    NotConnected,
    /// No result within [`ACTION_TIMEOUT`].
    Timeout,
    /// Too many actions waiting.
    Busy,
}

impl EdgeSessions {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the edge has a session now, and since when.
    pub fn connected_since(&self, mxedge_id: &str) -> Option<f64> {
        self.lock().get(mxedge_id).map(|s| s.connected_at)
    }

    /// The version and config digest the edge's `hello` announced.
    pub fn hello(&self, mxedge_id: &str) -> (Option<String>, Option<String>) {
        self.lock()
            .get(mxedge_id)
            .map(|s| (s.version.clone(), s.config_digest.clone()))
            .unwrap_or_default()
    }

    /// Connected edges of an org.
    pub fn connected_in(&self, org_id: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.org_id == org_id)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Queues a message to an edge; false when it is not connected or its
    /// queue is full.
    fn send(&self, cloud: &Cloud, mxedge_id: &str, msg: Value) -> bool {
        let Some(tx) = self.lock().get(mxedge_id).map(|s| s.tx.clone()) else {
            return false;
        };
        match tx.try_send(msg.to_string()) {
            Ok(()) => true,
            Err(_) => {
                cloud
                    .counters
                    .edge_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(mxedge_id, "edge queue full, message dropped");
                false
            }
        }
    }

    /// Sends `action` (its `type` and `id` are filled in) and waits for the
    /// edge's `action_result`.
    pub async fn action(
        &self,
        cloud: &Cloud,
        mxedge_id: &str,
        mut action: Value,
    ) -> Result<Value, ActionError> {
        if self.connected_since(mxedge_id).is_none() {
            return Err(ActionError::NotConnected);
        }
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending();
            if pending.len() >= MAX_PENDING {
                return Err(ActionError::Busy);
            }
            pending.insert(id, (mxedge_id.to_string(), tx));
        }
        action["type"] = json!("action");
        action["id"] = json!(id);
        if !self.send(cloud, mxedge_id, with_type_first(action)) {
            self.pending().remove(&id);
            return Err(ActionError::NotConnected);
        }
        let result = tokio::time::timeout(ACTION_TIMEOUT, rx).await;
        self.pending().remove(&id);
        match result {
            Ok(Ok(v)) => Ok(v),
            // The session ended and dropped the waiting sender.
            Ok(Err(_)) => Err(ActionError::NotConnected),
            Err(_) => Err(ActionError::Timeout),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells a connected edge it was unregistered; its session then ends.
    pub fn unregister(&self, cloud: &Cloud, mxedge_id: &str) {
        self.send(cloud, mxedge_id, json!({"type": "unregistered"}));
    }
}

type Pending = (String, oneshot::Sender<Value>);

/// Re-orders an object so that `type` comes first (the protocol's rule).
fn with_type_first(v: Value) -> Value {
    let Value::Object(mut m) = v else { return v };
    let mut out = Map::new();
    if let Some(t) = m.remove("type") {
        out.insert("type".into(), t);
    }
    out.extend(m);
    Value::Object(out)
}

/// The `config` message for one edge: its mxedge, its mxcluster, the org's
/// mxtunnels and wlans.
pub fn config_for(cloud: &Cloud, mxedge_id: &str, id: u64) -> anyhow::Result<Option<Value>> {
    let Some(edge) = cloud.store.mxedge(mxedge_id)? else {
        return Ok(None);
    };
    let org = edge["org_id"].as_str().unwrap_or_default().to_string();
    let cluster = match edge["mxcluster_id"].as_str() {
        Some(c) => cloud.store.get("mxclusters", &org, c)?,
        None => None,
    };
    Ok(Some(with_type_first(json!({
        "type": "config",
        "id": id,
        "mxedge": edge,
        "mxcluster": cluster,
        "mxtunnels": cloud.store.list("mxtunnels", &org)?,
        "wlans": cloud.store.list("wlans", &org)?,
    }))))
}

/// Pushes the current configuration to each connected edge of `org_id` that
/// `concerns` picks.
pub fn push_config(cloud: &Cloud, org_id: &str, concerns: impl Fn(&str) -> bool) {
    for mxedge_id in cloud.edges.connected_in(org_id) {
        if !concerns(&mxedge_id) {
            continue;
        }
        match config_for(cloud, &mxedge_id, cloud.edges.next_id()) {
            Ok(Some(msg)) => {
                cloud.edges.send(cloud, &mxedge_id, msg);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(mxedge_id, error = %e, "building config failed"),
        }
    }
}

/// Counts and logs the fields of `obj` that are not in `known`.
fn check_fields(cloud: &Cloud, what: &str, obj: &Value, known: &[&str]) {
    let Some(m) = obj.as_object() else { return };
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        cloud
            .counters
            .unknown_fields
            .fetch_add(unknown.len() as u64, Ordering::Relaxed);
        tracing::warn!(what, ?unknown, "fields the seed's shape does not have");
    }
}

/// Runs one edge's websocket session until it closes, goes idle or is
/// replaced by a newer session of the same edge.
pub async fn session(cloud: Arc<Cloud>, mxedge_id: String, org_id: String, mut ws: WebSocket) {
    let (tx, mut rx) = mpsc::channel::<String>(EDGE_QUEUE);
    let conn = cloud.edges.next_id();
    let replaced = cloud.edges.lock().insert(
        mxedge_id.clone(),
        Session {
            conn,
            org_id: org_id.clone(),
            tx,
            version: None,
            config_digest: None,
            connected_at: now(),
        },
    );
    if replaced.is_some() {
        tracing::info!(mxedge_id, "a new session replaces the previous one");
    }
    tracing::info!(mxedge_id, "edge connected");
    publish_status(&cloud, &org_id, &mxedge_id, "connected");
    // Only what the edge sends keeps the session alive.
    let mut deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(text) = out else { break }; // replaced
                let last = text.starts_with(r#"{"type":"unregistered""#);
                if ws.send(Message::Text(text.into())).await.is_err() || last {
                    break;
                }
            }
            inbound = tokio::time::timeout_at(deadline, ws.recv()) => {
                deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                match inbound {
                    Err(_) => {
                        tracing::info!(mxedge_id, "edge silent for 60 s: session dead");
                        break;
                    }
                    Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
                    Ok(Some(Ok(Message::Text(t)))) => on_message(&cloud, &mxedge_id, &org_id, t.as_str()),
                    Ok(Some(Ok(_))) => {} // ping/pong/binary: traffic, nothing to do
                }
            }
        }
    }
    let _ = ws.send(Message::Close(None)).await;
    let mut sessions = cloud.edges.lock();
    if sessions.get(&mxedge_id).is_some_and(|s| s.conn == conn) {
        sessions.remove(&mxedge_id);
        drop(sessions);
        cloud
            .edges
            .pending()
            .retain(|_, (edge, _)| *edge != mxedge_id);
        publish_status(&cloud, &org_id, &mxedge_id, "disconnected");
        tracing::info!(mxedge_id, "edge disconnected");
    }
}

fn publish_status(cloud: &Cloud, org_id: &str, mxedge_id: &str, status: &str) {
    cloud.publish(
        format!("/orgs/{org_id}/mxedges"),
        json!({"device_id": mxedge_id, "event_type": "status",
               "detail": {"timestamp": now(), "status": status}}),
    );
}

/// Handles one text frame from an edge.
fn on_message(cloud: &Cloud, mxedge_id: &str, org_id: &str, text: &str) {
    let msg: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            cloud
                .counters
                .unknown_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(mxedge_id, error = %e, "edge sent a frame that is not JSON");
            return;
        }
    };
    let channel = format!("/orgs/{org_id}/mxedges");
    match msg["type"].as_str().unwrap_or_default() {
        "hello" => {
            if msg["mxedge_id"].as_str().is_some_and(|id| id != mxedge_id) {
                tracing::warn!(mxedge_id, claimed = %msg["mxedge_id"], "hello names another mxedge; the token decides");
            }
            if let Some(s) = cloud.edges.lock().get_mut(mxedge_id) {
                s.version = msg["version"].as_str().map(str::to_string);
                s.config_digest = msg["config_digest"].as_str().map(str::to_string);
            }
            push_config(cloud, org_id, |e| e == mxedge_id);
        }
        "config_result" => {
            if let Some(s) = cloud.edges.lock().get_mut(mxedge_id)
                && msg["applied"] == json!(true)
            {
                s.config_digest = msg["config_digest"].as_str().map(str::to_string);
            }
            if msg["applied"] != json!(true) {
                tracing::warn!(mxedge_id, errors = %msg["errors"], "edge refused the config");
            }
            cloud.publish(
                channel,
                json!({"device_id": mxedge_id, "event_type": "config_result", "detail": msg}),
            );
        }
        "stats" => {
            let stats = &msg["mxedge"];
            check_fields(cloud, "stats.mxedge", stats, MXEDGE_STATS_FIELDS);
            let mut rows = Vec::new();
            for row in msg["tunnels"].as_array().into_iter().flatten() {
                check_fields(cloud, "stats.tunnels[]", row, TUNNEL_ROW_FIELDS);
                let mut row = row.clone();
                row["org_id"] = json!(org_id);
                row["mxedge_id"] = json!(mxedge_id);
                rows.push(row);
            }
            if let Some(s) = stats["config_digest"].as_str()
                && let Some(sess) = cloud.edges.lock().get_mut(mxedge_id)
            {
                sess.config_digest = Some(s.to_string());
            }
            if let Err(e) = cloud.store.put_stats(mxedge_id, stats, &json!(rows), now()) {
                tracing::error!(mxedge_id, error = %e, "storing stats failed");
            }
            if let Ok(Some(full)) = crate::rest::mxedge_stats(cloud, org_id, mxedge_id) {
                cloud.publish(
                    channel,
                    json!({"device_id": mxedge_id, "event_type": "stats", "detail": full}),
                );
            }
        }
        "event" => {
            let mut event = msg["event"].clone();
            if !event.is_object() || !event["type"].is_string() {
                cloud
                    .counters
                    .unknown_messages
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(mxedge_id, "event without an event.type");
                return;
            }
            // The session says who sent it, whatever the event claims.
            event["mxedge_id"] = json!(mxedge_id);
            event["org_id"] = json!(org_id);
            if !event["timestamp"].is_number() {
                event["timestamp"] = json!(now());
            }
            match cloud.store.add_event(org_id, mxedge_id, &event) {
                Ok(n) => {
                    cloud
                        .counters
                        .events_dropped
                        .fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(mxedge_id, error = %e, "storing event failed"),
            }
            cloud.publish(
                channel,
                json!({"device_id": mxedge_id, "event_type": "event", "detail": event}),
            );
        }
        "action_result" => {
            let waiter = msg["id"]
                .as_u64()
                .and_then(|id| cloud.edges.pending().remove(&id));
            match waiter {
                Some((edge, tx)) if edge == mxedge_id => {
                    let _ = tx.send(msg);
                }
                _ => {
                    cloud
                        .counters
                        .stray_action_results
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(mxedge_id, id = %msg["id"], "action_result for no waiting action");
                }
            }
        }
        "pcap" => {
            let mut data = Map::new();
            for k in ["capture_id", "pcap_dict", "pcap_raw"] {
                data.insert(k.into(), msg[k].clone());
            }
            check_fields(
                cloud,
                "pcap.pcap_dict",
                &data["pcap_dict"],
                PCAP_DICT_FIELDS,
            );
            if let Some(d) = data.get_mut("pcap_dict").and_then(Value::as_object_mut) {
                d.entry("mxedge_id").or_insert(json!(mxedge_id));
            }
            cloud.publish(format!("/orgs/{org_id}/pcaps"), Value::Object(data));
        }
        other => {
            cloud
                .counters
                .unknown_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                mxedge_id,
                r#type = other,
                "unknown edge->cloud message type"
            );
        }
    }
}
