//! One websocket session with the cloud, and the loop around it
//! (reconnects with [`crate::backoff`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tracing::{info, warn};
use tunterm::api::client::Client;
use tunterm::api::{DisconnectRequest, PreemptRequest};

use crate::cloudcfg;
use crate::report::{self, Ids};
use crate::spool::Spool;
use crate::state::State;

/// Websocket ping period.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Silence after which the session is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(60);

/// What the agent works with.
pub struct Agent {
    /// Registration.
    pub state: State,
    /// TLS to the cloud.
    pub tls: Arc<rustls::ClientConfig>,
    /// The daemon.
    pub daemon: Client,
    /// The daemon's configuration file (its `ports` are kept; read only).
    pub daemon_config: Option<PathBuf>,
    /// Where the last good configuration is kept.
    pub last_good: PathBuf,
    /// Ask the daemon to persist applied configurations to its file.
    pub persist: bool,
    /// Stats period.
    pub stats_every: Duration,
    /// Events waiting for the cloud.
    pub spool: Arc<Mutex<Spool>>,
    /// Signalled when the spool has something new.
    pub spooled: Arc<tokio::sync::Notify>,
    /// When the agent started.
    pub started: Instant,
}

/// How a session ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// The cloud unregistered this edge: stop syncing.
    Unregistered,
    /// It worked for a while, then closed (reset the backoff).
    Closed,
}

impl Agent {
    fn ids(&self) -> Ids {
        let local = self.running_doc();
        Ids {
            mxedge_id: self.state.mxedge_id.clone(),
            org_id: self.state.org_id.clone(),
            mxcluster_id: local
                .as_ref()
                .and_then(|d| d["mxedge"]["mxcluster_id"].as_str().map(str::to_string)),
            mxtunnel_id: local
                .as_ref()
                .and_then(|d| d["mxtunnels"][0]["id"].as_str().map(str::to_string)),
        }
    }

    /// The configuration document running: the last good, else the
    /// daemon's file.
    fn running_doc(&self) -> Option<Value> {
        cloudcfg::read(&self.last_good)
            .or_else(|| self.daemon_config.as_deref().and_then(cloudcfg::read))
    }

    /// Queue an event for the cloud.
    pub fn spool_event(&self, event: Value) {
        let mut s = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = s.push(event) {
            warn!(error = %e, "event spool not written");
        }
        drop(s);
        self.spooled.notify_one();
    }

    /// Connect and serve one session.
    pub async fn session(&self) -> anyhow::Result<Ended> {
        let (host, port) = crate::tls::host_port(&self.state.cloud)?;
        let url = format!("wss://{host}:{port}/api-ws/v1/edge");
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut().insert(
            "Authorization",
            format!("Token {}", self.state.token).parse()?,
        );
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let ws =
            tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
                .await;
        let (mut ws, _) = match ws {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(r)) if r.status() == 410 => {
                return Ok(Ended::Unregistered);
            }
            Err(tungstenite::Error::Http(r)) if r.status() == 401 => {
                anyhow::bail!(
                    "{url}: 401: the cloud does not know this edge's token (register again)"
                )
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {url}")),
        };
        info!(%url, "connected to the cloud");
        let digest = self.daemon.stats().await.ok().map(|s| s.config_digest);
        let hello = json!({"type": "hello", "mxedge_id": self.state.mxedge_id,
            "version": format!("tunterm {}", env!("CARGO_PKG_VERSION")), "config_digest": digest});
        ws.send(Message::text(hello.to_string())).await?;
        let mut stats = tokio::time::interval(self.stats_every);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut heard = Instant::now();
        self.flush_spool(&mut ws).await?;
        loop {
            tokio::select! {
                m = ws.next() => {
                    let Some(m) = m else { return Ok(Ended::Closed) };
                    heard = Instant::now();
                    match m? {
                        Message::Text(t) => {
                            let msg: Value = match serde_json::from_str(t.as_str()) {
                                Ok(v) => v,
                                Err(e) => { warn!(error = %e, "cloud message not JSON: ignored"); continue }
                            };
                            if msg["type"] == "unregistered" {
                                return Ok(Ended::Unregistered);
                            }
                            for out in self.handle(&msg).await {
                                ws.send(Message::text(out.to_string())).await?;
                            }
                            self.flush_spool(&mut ws).await?;
                        }
                        Message::Close(_) => return Ok(Ended::Closed),
                        _ => {}
                    }
                }
                _ = stats.tick() => {
                    let msg = self.stats_message().await;
                    ws.send(Message::text(msg.to_string())).await?;
                }
                _ = ping.tick() => {
                    anyhow::ensure!(heard.elapsed() < DEAD_AFTER, "no traffic from the cloud for {DEAD_AFTER:?}");
                    ws.send(Message::Ping(Vec::new().into())).await?;
                }
                _ = self.spooled.notified() => self.flush_spool(&mut ws).await?,
            }
        }
    }

    async fn flush_spool<S>(&self, ws: &mut S) -> anyhow::Result<()>
    where
        S: SinkExt<Message> + Unpin,
        <S as futures_util::Sink<Message>>::Error: std::error::Error + Send + Sync + 'static,
    {
        let pending: Vec<Value> = {
            let s = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            s.pending().cloned().collect()
        };
        for (i, e) in pending.iter().enumerate() {
            let sent = ws
                .send(Message::text(
                    json!({"type": "event", "event": e}).to_string(),
                ))
                .await;
            let mut s = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(err) = sent {
                s.delivered(i)?;
                return Err(err.into());
            }
            if i + 1 == pending.len() {
                s.delivered(pending.len())?;
            }
        }
        Ok(())
    }

    async fn stats_message(&self) -> Value {
        let ids = self.ids();
        let daemon = self.daemon.stats().await.ok();
        let up = self.started.elapsed().as_secs();
        json!({
            "type": "stats",
            "mxedge": report::mxedge_stats(daemon.as_ref(), up),
            "tunnels": daemon.as_ref().map(|d| report::tunnel_rows(&ids, d)).unwrap_or_default(),
        })
    }

    /// A cloud message: the answers to send.
    pub async fn handle(&self, msg: &Value) -> Vec<Value> {
        let id = msg["id"].as_u64().unwrap_or(0);
        match msg["type"].as_str() {
            Some("config") => vec![self.apply(id, msg).await],
            Some("action") => vec![self.action(id, msg).await],
            other => {
                warn!(r#type = ?other, "unknown message from the cloud: ignored");
                Vec::new()
            }
        }
    }

    async fn apply(&self, id: u64, msg: &Value) -> Value {
        let local = self.running_doc();
        let refused = |errors: Vec<cloudcfg::FieldError>, digest: Option<String>| {
            json!({"type": "config_result", "id": id, "applied": false,
                   "config_digest": digest, "errors": errors})
        };
        let running = self.daemon.stats().await.ok().map(|s| s.config_digest);
        let v = match cloudcfg::validate(cloudcfg::document(msg, local.as_ref())) {
            Ok(v) => v,
            Err(errors) => {
                warn!(
                    ?errors,
                    "configuration from the cloud refused; nothing changed"
                );
                return refused(errors, running);
            }
        };
        let prev = local;
        if let Err(e) = cloudcfg::write_last_good(&self.last_good, &v.doc) {
            let errors = vec![cloudcfg::FieldError {
                path: String::new(),
                message: format!("last-good not written: {e}"),
            }];
            return refused(errors, running);
        }
        let fail = |message: String| {
            // Back to what ran.
            if let Some(p) = &prev {
                let _ = cloudcfg::write_last_good(&self.last_good, p);
            }
            refused(
                vec![cloudcfg::FieldError {
                    path: String::new(),
                    message,
                }],
                running.clone(),
            )
        };
        let report = match self.daemon.apply_config(v.doc.clone(), self.persist).await {
            Ok(r) => r,
            Err(e) => return fail(format!("daemon: {e}")),
        };
        // Confirmed by what the daemon's stats say runs.
        match self.daemon.stats().await {
            Ok(s) if s.config_digest == v.digest => {}
            Ok(s) => {
                return fail(format!(
                    "daemon runs {} after applying {}",
                    s.config_digest, v.digest
                ));
            }
            Err(e) => return fail(format!("daemon stats: {e}")),
        }
        info!(config_digest = %v.digest, needs_restart = ?report.needs_restart, "configuration applied");
        let ids = self.ids();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.spool_event(report::event(&ids, "ME_CONFIGURED", now,
            json!({"config_digest": v.digest, "applied": report.applied, "needs_restart": report.needs_restart})));
        json!({"type": "config_result", "id": id, "applied": true, "config_digest": v.digest,
               "errors": [], "needs_restart": report.needs_restart})
    }

    async fn action(&self, id: u64, msg: &Value) -> Value {
        let ok = |result: Value| json!({"type": "action_result", "id": id, "ok": true, "result": result});
        let no =
            |error: String| json!({"type": "action_result", "id": id, "ok": false, "error": error});
        match msg["action"].as_str() {
            Some("disconnect_aps") => {
                let macs: Vec<String> = msg["macs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| m.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let percentage = if macs.is_empty() {
                    msg["percentage"].as_f64()
                } else {
                    None
                };
                match self
                    .daemon
                    .disconnect_aps(DisconnectRequest { macs, percentage })
                    .await
                {
                    Ok(r) => ok(serde_json::to_value(r).unwrap_or_default()),
                    Err(e) => no(e.to_string()),
                }
            }
            Some("preempt_aps") => {
                match self.daemon.preempt(PreemptRequest { site_id: None }).await {
                    Ok(r) => ok(json!({"preempted_aps": r.preempted_aps})),
                    Err(e) => no(e.to_string()),
                }
            }
            Some(
                a @ ("restart" | "service" | "bounce_port" | "capture_start" | "capture_stop"),
            ) => no(format!("{a}: not supported by this tunterm-agent yet")),
            _ => no("unknown action".into()),
        }
    }
}
