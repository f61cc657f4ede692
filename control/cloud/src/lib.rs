//! `tunterm-cloud`: a Mist-shaped cloud emulator for tunterm.
//!
//! It serves, over TLS with a CA it generates at first start:
//! - the org's REST API with the Mist paths and shapes (`/api/v1/orgs/:org_id/
//!   mxedges`, `mxclusters`, `mxtunnels`, `wlans`, `stats/...`, events, actions,
//!   `pcaps/capture`), authenticated by `Authorization: Token <operator token>`;
//! - the edge-facing protocol of `control/agent/PROTOCOL.md` (registration with a claim
//!   code, then the `/api-ws/v1/edge` websocket), see [`edge`];
//! - the `/api-ws/v1/stream` websocket with `subscribe` to
//!   `/orgs/:org_id/mxedges` and `/orgs/:org_id/pcaps`.
//!
//! Its org is persisted in SQLite ([`store`]).

#![warn(missing_docs)]

pub mod edge;
pub mod rest;
pub mod store;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;

use crate::edge::EdgeSessions;
use crate::store::Store;

/// Counters of what the emulator refused, dropped or warned about, served at
/// `GET /api/v1/tunterm-cloud/counters` (an emulator extension).
#[derive(Default)]
pub struct Counters {
    /// Fields the edge sent that the seed's shapes do not have.
    pub unknown_fields: AtomicU64,
    /// edge->cloud messages of an unknown `type`, or that did not parse.
    pub unknown_messages: AtomicU64,
    /// Stream messages a slow subscriber missed.
    pub stream_lagged: AtomicU64,
    /// Events dropped to keep the events table bounded.
    pub events_dropped: AtomicU64,
    /// Messages to an edge dropped because its queue was full.
    pub edge_queue_full: AtomicU64,
    /// Action results that came too late or for an unknown id.
    pub stray_action_results: AtomicU64,
}

impl Counters {
    /// The counters as a JSON object.
    pub fn to_json(&self) -> Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "unknown_fields": g(&self.unknown_fields),
            "unknown_messages": g(&self.unknown_messages),
            "stream_lagged": g(&self.stream_lagged),
            "events_dropped": g(&self.events_dropped),
            "edge_queue_full": g(&self.edge_queue_full),
            "stray_action_results": g(&self.stray_action_results),
        })
    }
}

/// One message on the stream websocket: its channel and the whole JSON text.
#[derive(Clone, Debug)]
pub struct StreamMessage {
    /// `/orgs/:org_id/mxedges` or `/orgs/:org_id/pcaps`.
    pub channel: String,
    /// `{"event":"data","channel":..,"data":..}`.
    pub text: String,
}

/// The emulator's shared state.
pub struct Cloud {
    /// The database.
    pub store: Store,
    /// Hash of the operator token.
    operator_token_hash: String,
    /// Connected edges.
    pub edges: EdgeSessions,
    /// Everything published on the stream websocket.
    pub stream: broadcast::Sender<StreamMessage>,
    /// Counters.
    pub counters: Counters,
    /// Captures running, by org: the capture status object.
    pub captures: Mutex<HashMap<String, Value>>,
}

impl Cloud {
    /// True when `header` is `Token <operator token>`.
    pub fn operator_authorized(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Token ")) else {
            return false;
        };
        use sha2::Digest;
        let hash = store::hex(&sha2::Sha256::digest(token.trim().as_bytes()));
        // Both are hashes of the same length: comparing them leaks nothing useful.
        hash == self.operator_token_hash
    }

    /// Publishes on the stream websocket's `channel`.
    pub fn publish(&self, channel: String, data: Value) {
        let text = json!({"event": "data", "channel": channel, "data": data}).to_string();
        // No subscriber is not an error.
        let _ = self.stream.send(StreamMessage { channel, text });
    }
}

/// Seconds since the epoch, as Mist's timestamps.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// A random version-4 UUID from the thread's CSPRNG.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = store::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A random secret: 32 bytes from the CSPRNG, hex.
pub fn secret() -> String {
    store::hex(&rand::random::<[u8; 32]>())
}

/// What a user needs to talk to a started emulator.
#[derive(Clone, Debug)]
pub struct Started {
    /// The bound address.
    pub addr: SocketAddr,
    /// The CA certificate (PEM) to trust.
    pub ca_path: PathBuf,
    /// The operator token for the REST API and the stream websocket.
    pub operator_token: String,
    /// The ready org's id.
    pub org_id: String,
    /// The ready mxedge's claim code (`magic`).
    pub claim_code: String,
    /// The ready mxedge's id.
    pub mxedge_id: String,
}

/// Opens (or creates) the data directory: TLS files, database, the operator
/// token (0600 file), and on first start a ready org.
pub fn open(
    data_dir: &Path,
    extra_names: &[String],
) -> Result<(Arc<Cloud>, Arc<rustls::ServerConfig>, Started)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // The database holds claim codes: the directory is the owner's only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", data_dir.display()))?;
    }
    let tls = tls::TlsFiles::new(data_dir);
    tls.ensure(extra_names)?;
    let server_config = tls.server_config()?;
    let store = Store::open(&data_dir.join("cloud.sqlite3"))?;

    let token_path = data_dir.join("operator-token");
    let operator_token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = secret();
            tls::write_private(&token_path, t.as_bytes())?;
            t
        }
    };
    use sha2::Digest;
    let operator_token_hash = store::hex(&sha2::Sha256::digest(operator_token.as_bytes()));

    let org_id = match store.meta("org_id")? {
        Some(id) => id,
        None => seed_org(&store)?,
    };
    let edge = store
        .list("mxedges", &org_id)?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let (stream, _) = broadcast::channel(1024);
    let cloud = Arc::new(Cloud {
        store,
        operator_token_hash,
        edges: EdgeSessions::default(),
        stream,
        counters: Counters::default(),
        captures: Mutex::new(HashMap::new()),
    });
    let started = Started {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        ca_path: tls.ca_cert.clone(),
        operator_token,
        org_id,
        claim_code: edge["magic"].as_str().unwrap_or_default().to_string(),
        mxedge_id: edge["id"].as_str().unwrap_or_default().to_string(),
    };
    Ok((cloud, server_config, started))
}

/// A ready org: one mxcluster, one mxtunnel with vlan_ids [10, 20], one mxedge
/// with a claim code.
fn seed_org(store: &Store) -> Result<String> {
    let org_id = uuid();
    let t = now() as u64;
    let cluster_id = uuid();
    let tunnel_id = uuid();
    let stamp = |mut v: Value| {
        v["org_id"] = json!(org_id);
        v["created_time"] = json!(t);
        v["modified_time"] = json!(t);
        v
    };
    store.put(
        "mxclusters",
        &stamp(json!({"id": cluster_id, "name": "cluster-1",
            "tunterm_ap_subnets": ["0.0.0.0/0"]})),
    )?;
    store.put(
        "mxtunnels",
        &stamp(
            json!({"id": tunnel_id, "name": "tunnel-1", "protocol": "udp",
            "mxcluster_ids": [cluster_id], "vlan_ids": [10, 20]}),
        ),
    )?;
    store.put(
        "mxedges",
        &stamp(json!({"id": uuid(), "name": "edge-1", "model": "ME-VM",
            "services": ["tunterm"], "mxcluster_id": cluster_id,
            "magic": rest::claim_code(), "tunterm_registered": false,
            "mxagent_registered": false})),
    )?;
    store.set_meta("org_id", &org_id)?;
    Ok(org_id)
}

/// Serves TLS connections from `listener` until the task is dropped.
pub async fn serve(cloud: Arc<Cloud>, tls: Arc<rustls::ServerConfig>, listener: TcpListener) {
    let app = rest::router(cloud);
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
