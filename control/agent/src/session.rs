//! One websocket session with the cloud, and the loop around it
//! (reconnects with [`crate::backoff`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tracing::{info, warn};
use tunterm::api::DisconnectRequest;
use tunterm::api::client::Client;

use crate::actions::{self, Captures, Expect, ServiceWatch};
use crate::cloudcfg;
use crate::net::{self, Proxy};
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
    /// tunterm's systemd unit (`--daemon-unit`): how `service` stop and
    /// start are done; none: they are refused.
    pub daemon_unit: Option<String>,
    /// `config_auto_revert`: how long the cloud has to be reachable again
    /// after a configuration was applied before the previous one is put
    /// back.
    pub auto_revert_after: Duration,
    /// A configuration applied with `config_auto_revert` and not yet
    /// confirmed by the cloud being reachable.
    pub pending_revert: Mutex<Option<PendingRevert>>,
    /// The daemon's service as the watch saw it, and what was asked of it.
    pub service: Mutex<ServiceWatch>,
    /// Captures the cloud started.
    pub captures: Captures,
    /// `pcap` messages for the session (bounded: [`actions::PCAP_QUEUE`]).
    pub pcap_tx: tokio::sync::mpsc::Sender<Value>,
    pcap_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Value>>,
    /// End the session after the current message (the proxy changed).
    reconnect: std::sync::atomic::AtomicBool,
    /// The digest of a configuration auto-reverted: the same one pushed
    /// again is refused (it would cut the edge off again).
    reverted: Mutex<Option<String>>,
}

/// A configuration waiting for the cloud to be reachable again.
#[derive(Clone, Debug)]
pub struct PendingRevert {
    /// Put `previous` back after this.
    pub deadline: Instant,
    /// What ran before (last-good document).
    pub previous: Value,
    /// The digest applied.
    pub applied: String,
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
    /// An agent with the defaults (stats every 60 s, no systemd unit,
    /// auto-revert after 120 s, no persistence).
    pub fn new(
        state: State,
        tls: Arc<rustls::ClientConfig>,
        daemon: Client,
        last_good: PathBuf,
        spool: Spool,
    ) -> Agent {
        let (pcap_tx, pcap_rx) = tokio::sync::mpsc::channel(actions::PCAP_QUEUE);
        Agent {
            state,
            tls,
            daemon,
            daemon_config: None,
            last_good,
            persist: false,
            stats_every: Duration::from_secs(60),
            spool: Arc::new(Mutex::new(spool)),
            spooled: Arc::new(tokio::sync::Notify::new()),
            started: Instant::now(),
            daemon_unit: None,
            auto_revert_after: Duration::from_secs(120),
            pending_revert: Mutex::new(None),
            service: Mutex::new(ServiceWatch::default()),
            captures: Captures::default(),
            pcap_tx,
            pcap_rx: tokio::sync::Mutex::new(pcap_rx),
            reconnect: Default::default(),
            reverted: Mutex::new(None),
        }
    }

    /// The ids for events and rows.
    pub fn ids(&self) -> Ids {
        let local = self.running_doc();
        Ids {
            mxedge_id: self.state.mxedge_id.clone(),
            org_id: self.state.org_id.clone(),
            mxcluster_id: local
                .as_ref()
                .and_then(|d| d["mxedge"]["mxcluster_id"].as_str().map(str::to_string)),
        }
    }

    /// The configuration document running: the last good, else the
    /// daemon's file.
    fn running_doc(&self) -> Option<Value> {
        cloudcfg::read(&self.last_good)
            .or_else(|| self.daemon_config.as_deref().and_then(cloudcfg::read))
    }

    /// The HTTP proxy to the cloud the running configuration names.
    pub fn proxy(&self) -> anyhow::Result<Option<Proxy>> {
        self.running_doc()
            .as_ref()
            .and_then(net::proxy_of)
            .map(|u| Proxy::parse(&u))
            .transpose()
    }

    /// An mxedge event of this edge, now, queued for the cloud.
    pub fn report(&self, kind: &str, extra: Value) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.spool_event(report::event(&self.ids(), kind, now, extra));
    }

    fn service(&self) -> std::sync::MutexGuard<'_, ServiceWatch> {
        self.service.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<PendingRevert>> {
        self.pending_revert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The cloud answered since a configuration was applied: it stays.
    fn confirmed(&self) {
        if let Some(p) = self.pending().take() {
            info!(config_digest = %p.applied, "the cloud is reachable with the new configuration: no revert");
        }
    }

    /// When an unconfirmed configuration is due to be reverted.
    pub fn revert_deadline(&self) -> Option<Instant> {
        self.pending().as_ref().map(|p| p.deadline)
    }

    /// `config_auto_revert`: the cloud was not reachable within the time
    /// after a configuration was applied: put the previous one back (as the
    /// last good and in the daemon) and report `TT_CONFIG_REVERTED` (a
    /// tunterm event) for when the cloud is back.
    pub async fn revert_if_due(&self) {
        let due = {
            let mut p = self.pending();
            match &*p {
                Some(r) if Instant::now() >= r.deadline => p.take(),
                _ => None,
            }
        };
        let Some(r) = due else { return };
        *self.reverted.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.applied.clone());
        warn!(config_digest = %r.applied, after = ?self.auto_revert_after,
              "the cloud was not reachable after this configuration: reverting to the previous one");
        let back = cloudcfg::validate(r.previous.clone());
        let (digest, error) = match back {
            Ok(v) => {
                let written = cloudcfg::write_last_good(&self.last_good, &v.doc);
                let applied = self.daemon.apply_config(v.doc.clone(), self.persist).await;
                match (written, applied) {
                    (Ok(()), Ok(_)) => (Some(v.digest), None),
                    (Err(e), _) => (Some(v.digest), Some(format!("last-good not written: {e}"))),
                    (_, Err(e)) => (Some(v.digest), Some(format!("daemon: {e}"))),
                }
            }
            Err(errors) => (
                None,
                Some(format!("previous configuration invalid: {errors:?}")),
            ),
        };
        self.report(
            "TT_CONFIG_REVERTED",
            json!({"reverted_config_digest": r.applied, "config_digest": digest,
                   "reason": format!("cloud not reachable within {} s of applying the configuration", self.auto_revert_after.as_secs()),
                   "error": error}),
        );
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
        let proxy = self.proxy()?;
        let tcp = net::dial(&host, port, proxy.as_ref()).await?;
        let ws =
            tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)).await;
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
        self.reconnect.store(false, Ordering::Relaxed);
        self.confirmed();
        info!(%url, "connected to the cloud");
        let digest = self.daemon.stats().await.ok().map(|s| s.config_digest);
        let hello = json!({"type": "hello", "mxedge_id": self.state.mxedge_id,
            "version": format!("tunterm {}", env!("CARGO_PKG_VERSION")), "config_digest": digest});
        ws.send(Message::text(hello.to_string())).await?;
        let mut stats = tokio::time::interval(self.stats_every);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut heard = Instant::now();
        self.flush_spool(&mut ws).await?;
        let mut pcaps = self.pcap_rx.lock().await;
        loop {
            tokio::select! {
                m = ws.next() => {
                    let Some(m) = m else { return Ok(Ended::Closed) };
                    heard = Instant::now();
                    self.confirmed();
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
                            if self.reconnect.swap(false, Ordering::Relaxed) {
                                info!("the proxy to the cloud changed: reconnecting through it");
                                let _ = ws.close(None).await;
                                return Ok(Ended::Closed);
                            }
                            if self.pending().is_some() {
                                // The cloud's answer confirms the new configuration.
                                ws.send(Message::Ping(Vec::new().into())).await?;
                            }
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
                Some(p) = pcaps.recv() => ws.send(Message::text(p.to_string())).await?,
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
            "tunnels": daemon.as_ref().map(|d| {
                let running = self.running_doc().and_then(|doc| cloudcfg::validate(doc).ok());
                report::tunnel_rows(&ids, &d.tunnels, running.as_ref().map(|v| &v.cfg))
            }).unwrap_or_default(),
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
                self.report(
                    "TT_CONFIG_REFUSED",
                    json!({"errors": errors, "config_digest": running}),
                );
                return refused(errors, running);
            }
        };
        let reverted = self
            .reverted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if reverted.as_deref() == Some(v.digest.as_str()) {
            let errors = vec![cloudcfg::FieldError {
                path: String::new(),
                message: format!(
                    "configuration {} was reverted (config_auto_revert): the cloud was not \
                     reachable after it was applied; not applied again",
                    v.digest
                ),
            }];
            self.report(
                "TT_CONFIG_REFUSED",
                json!({"errors": errors, "config_digest": running}),
            );
            return refused(errors, running);
        }
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
        let auto_revert = v.doc["mxedge"]["mxedge_mgmt"]["config_auto_revert"] == json!(true);
        if prev.as_ref().and_then(net::proxy_of) != net::proxy_of(&v.doc) {
            self.reconnect.store(true, Ordering::Relaxed);
        }
        let changed = |p: &Value| cloudcfg::validate(p.clone()).is_ok_and(|p| p.digest != v.digest);
        if let Some(previous) = prev.filter(|p| auto_revert && changed(p)) {
            *self.pending() = Some(PendingRevert {
                deadline: Instant::now() + self.auto_revert_after,
                previous,
                applied: v.digest.clone(),
            });
        }
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
            Some("preempt_aps") => match actions::preempt_request(msg) {
                Ok(req) => match self.daemon.preempt(req).await {
                    Ok(r) => ok(json!({"preempted_aps": r.preempted_aps})),
                    Err(e) => no(e.to_string()),
                },
                Err(e) => no(e),
            },
            Some("restart") => self.restart_daemon().await.map_or_else(no, ok),
            Some("service") => match (msg["name"].as_str(), msg["op"].as_str()) {
                (Some("tunterm"), Some("restart")) => {
                    self.restart_daemon().await.map_or_else(no, ok)
                }
                (Some("tunterm"), Some("stop")) => self.stop_daemon().await.map_or_else(no, ok),
                (Some("tunterm"), Some("start")) => self.start_daemon().await.map_or_else(no, ok),
                (Some("tunterm"), op) => no(format!("service tunterm: no operation {op:?}")),
                (name, _) => no(format!(
                    "service {name:?}: not a service of this edge (tunterm only)"
                )),
            },
            Some("bounce_port") => {
                actions::bounce_port(self.daemon.path(), &msg["ports"], &msg["hold_time"])
                    .await
                    .map_or_else(no, ok)
            }
            Some("capture_start") => actions::capture_start(
                &self.daemon,
                &self.captures,
                self.pcap_tx.clone(),
                &self.state.mxedge_id,
                &msg["capture"],
            )
            .await
            .map_or_else(no, ok),
            Some("capture_stop") => {
                let id = msg["capture_id"].as_str().unwrap_or_default();
                if self.captures.stop(id) {
                    ok(json!({"capture_id": id, "stopped": true,
                              "lost_messages": self.captures.lost.load(Ordering::Relaxed)}))
                } else {
                    no(format!("no capture {id:?} runs on this edge"))
                }
            }
            _ => no("unknown action".into()),
        }
    }
}

impl Agent {
    async fn restart_daemon(&self) -> Result<Value, String> {
        self.service().expect = Expect::Restart;
        let r = actions::restart(&self.daemon, self.daemon_unit.as_deref()).await;
        if r.is_err() {
            self.service().expect = Expect::Nothing;
        }
        r
    }

    async fn stop_daemon(&self) -> Result<Value, String> {
        let Some(unit) = self.daemon_unit.as_deref() else {
            return Err(
                "tunterm is not run by a service manager here (tunterm-agent \
                        --daemon-unit): it could not be started again; nothing stopped"
                    .into(),
            );
        };
        self.service().expect = Expect::Stop;
        match actions::systemctl("stop", unit).await {
            Ok(done) => {
                self.report("ME_SERVICE_STOPPED", json!({"service": "tunterm"}));
                Ok(json!({"service": "tunterm", "op": "stop", "done": done}))
            }
            Err(e) => {
                self.service().expect = Expect::Nothing;
                Err(e)
            }
        }
    }

    async fn start_daemon(&self) -> Result<Value, String> {
        if let Ok(s) = self.daemon.stats().await {
            return Ok(
                json!({"service": "tunterm", "op": "start", "done": "nothing: it runs",
                             "version": s.version}),
            );
        }
        let Some(unit) = self.daemon_unit.as_deref() else {
            return Err(
                "tunterm does not run and is not run by a service manager here \
                        (tunterm-agent --daemon-unit): start it on the edge"
                    .into(),
            );
        };
        let done = actions::systemctl("start", unit).await?;
        Ok(json!({"service": "tunterm", "op": "start", "done": done}))
    }
}

/// Watch the daemon: its events go to the spool as `TT_*` events, its
/// comings and goings as `ME_SERVICE_*` (see [`ServiceWatch`]).
pub async fn watch_daemon(agent: Arc<Agent>) {
    loop {
        if let Ok(mut sub) = agent.daemon.subscribe().await {
            let news = agent.service().on_up();
            if let Some(kind) = news {
                agent.report(kind, json!({"service": "tunterm"}));
            }
            let ids = agent.ids();
            while let Ok(Some(e)) = sub.next().await {
                if let Some(ev) = report::daemon_event(&ids, &e) {
                    agent.spool_event(ev);
                }
            }
        }
        let news = agent.service().on_down();
        if let Some(kind) = news {
            let mut extra = json!({"service": "tunterm"});
            if kind == "ME_SERVICE_FAILED" {
                extra["reason"] = json!(format!(
                    "{}: tunterm's control socket went away without a stop or restart asked for",
                    agent.daemon.path().display()
                ));
            }
            agent.report(kind, extra);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
