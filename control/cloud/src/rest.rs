//! The REST API (Mist's paths under `/api/v1`), the registration endpoint and
//! both websockets' upgrade handlers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::sync::broadcast::error::RecvError;

use crate::edge::{self, ActionError};
use crate::store::{EventFilter, KINDS, TokenStanding};
use crate::{Cloud, now, uuid};

type S = State<Arc<Cloud>>;
type Reply = Result<Response, ApiError>;

/// An error answer: its status and `{"detail": ..}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"detail": self.1}))).into_response()
    }
}

fn err(code: StatusCode, detail: impl std::fmt::Display) -> ApiError {
    ApiError(code, detail.to_string())
}

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "internal error");
    err(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn ok(v: Value) -> Reply {
    Ok(Json(v).into_response())
}

/// A claim code in Mist's `magic` shape: 32 characters from a CSPRNG.
pub fn claim_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let bytes: [u8; 32] = rand::random();
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The whole router.
pub fn router(cloud: Arc<Cloud>) -> Router {
    let operator = Router::new()
        .route("/api/v1/orgs/{org_id}/{kind}", get(list).post(create))
        .route(
            "/api/v1/orgs/{org_id}/{kind}/{id}",
            get(read).put(update).delete(remove),
        )
        .route(
            "/api/v1/orgs/{org_id}/mxedges/{id}/unregister",
            post(unregister),
        )
        .route("/api/v1/orgs/{org_id}/mxedges/{id}/restart", post(restart))
        .route(
            "/api/v1/orgs/{org_id}/mxedges/{id}/services/{name}/{action}",
            post(service),
        )
        .route(
            "/api/v1/orgs/{org_id}/mxtunnels/{id}/preempt_aps",
            post(preempt),
        )
        .route("/api/v1/orgs/{org_id}/stats/mxedges", get(stats_list))
        .route("/api/v1/orgs/{org_id}/stats/mxedges/{id}", get(stats_one))
        .route(
            "/api/v1/orgs/{org_id}/stats/tunnels/search",
            get(tunnels_search),
        )
        .route(
            "/api/v1/orgs/{org_id}/mxedges/events/search",
            get(events_search),
        )
        .route(
            "/api/v1/orgs/{org_id}/pcaps/capture",
            get(capture_status).post(capture_start).delete(capture_stop),
        )
        .route("/api/v1/orgs/{org_id}/pcaps", get(capture_list))
        .route("/api/v1/const/mxedge_events", get(const_events))
        .route("/api/v1/tunterm-cloud/counters", get(counters))
        .route("/api-ws/v1/stream", get(stream))
        .route_layer(middleware::from_fn_with_state(cloud.clone(), operator_auth));
    Router::new()
        .route("/api/v1/edge/register", post(register))
        .route("/api-ws/v1/edge", get(edge_ws))
        .merge(operator)
        .with_state(cloud)
}

async fn operator_auth(State(cloud): S, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if !cloud.operator_authorized(auth) {
        return err(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    }
    next.run(req).await
}

fn org_exists(cloud: &Cloud, org_id: &str) -> Result<(), ApiError> {
    match cloud.store.meta("org_id").map_err(internal)? {
        Some(o) if o == org_id => Ok(()),
        _ => Err(err(StatusCode::NOT_FOUND, "org not found")),
    }
}

fn org_and_kind(cloud: &Cloud, org_id: &str, kind: &str) -> Result<(), ApiError> {
    org_exists(cloud, org_id)?;
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(err(StatusCode::NOT_FOUND, "not found"))
    }
}

/// Pushes the configuration to the connected edges an object change concerns.
fn push_after_change(cloud: &Cloud, org_id: &str, kind: &str, obj: &Value) {
    match kind {
        "mxedges" => {
            let id = obj["id"].as_str().unwrap_or_default().to_string();
            edge::push_config(cloud, org_id, |e| e == id);
        }
        "mxclusters" => {
            let cluster = obj["id"].as_str().unwrap_or_default().to_string();
            edge::push_config(cloud, org_id, |e| {
                cloud
                    .store
                    .mxedge(e)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m["mxcluster_id"].as_str() == Some(cluster.as_str()))
            });
        }
        // mxtunnels and wlans are the org's, sent to every edge.
        _ => edge::push_config(cloud, org_id, |_| true),
    }
}

async fn list(State(cloud): S, Path((org_id, kind)): Path<(String, String)>) -> Reply {
    org_and_kind(&cloud, &org_id, &kind)?;
    ok(json!(cloud.store.list(&kind, &org_id).map_err(internal)?))
}

async fn read(State(cloud): S, Path((org_id, kind, id)): Path<(String, String, String)>) -> Reply {
    org_and_kind(&cloud, &org_id, &kind)?;
    match cloud.store.get(&kind, &org_id, &id).map_err(internal)? {
        Some(v) => ok(v),
        None => Err(err(StatusCode::NOT_FOUND, "not found")),
    }
}

/// Fields the cloud owns: a request cannot set them.
const READ_ONLY: &[&str] = &[
    "id",
    "org_id",
    "created_time",
    "modified_time",
    "tunterm_registered",
    "mxagent_registered",
];

/// Stores a created or updated object and pushes the configuration it concerns.
fn save(cloud: &Cloud, org_id: &str, kind: &str, obj: serde_json::Map<String, Value>) -> Reply {
    let obj = Value::Object(obj);
    cloud.store.put(kind, &obj).map_err(internal)?;
    push_after_change(cloud, org_id, kind, &obj);
    ok(obj)
}

fn body_object(body: Value) -> Result<serde_json::Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(err(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
    }
}

async fn create(
    State(cloud): S,
    Path((org_id, kind)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    org_and_kind(&cloud, &org_id, &kind)?;
    let mut obj = body_object(body)?;
    for k in READ_ONLY {
        obj.remove(*k);
    }
    let t = now() as u64;
    obj.insert("id".into(), json!(uuid()));
    obj.insert("org_id".into(), json!(org_id));
    obj.insert("created_time".into(), json!(t));
    obj.insert("modified_time".into(), json!(t));
    if kind == "mxedges" {
        obj.insert("magic".into(), json!(claim_code()));
        obj.insert("tunterm_registered".into(), json!(false));
        obj.insert("mxagent_registered".into(), json!(false));
    }
    save(&cloud, &org_id, &kind, obj)
}

async fn update(
    State(cloud): S,
    Path((org_id, kind, id)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    org_and_kind(&cloud, &org_id, &kind)?;
    let Some(Value::Object(mut obj)) = cloud.store.get(&kind, &org_id, &id).map_err(internal)?
    else {
        return Err(err(StatusCode::NOT_FOUND, "not found"));
    };
    // Mist's PUT updates the fields given; `null` removes one.
    for (k, v) in body_object(body)? {
        if READ_ONLY.contains(&k.as_str()) || (kind == "mxedges" && k == "magic") {
            continue;
        }
        if v.is_null() {
            obj.remove(&k);
        } else {
            obj.insert(k, v);
        }
    }
    obj.insert("modified_time".into(), json!(now() as u64));
    save(&cloud, &org_id, &kind, obj)
}

async fn remove(
    State(cloud): S,
    Path((org_id, kind, id)): Path<(String, String, String)>,
) -> Reply {
    org_and_kind(&cloud, &org_id, &kind)?;
    let obj = cloud.store.get(&kind, &org_id, &id).map_err(internal)?;
    let Some(obj) = obj else {
        return Err(err(StatusCode::NOT_FOUND, "not found"));
    };
    if kind == "mxedges" {
        cloud.store.revoke_tokens(&id).map_err(internal)?;
        cloud.edges.unregister(&cloud, &id);
    }
    cloud.store.delete(&kind, &org_id, &id).map_err(internal)?;
    if kind != "mxedges" {
        push_after_change(&cloud, &org_id, &kind, &obj);
    }
    ok(json!({}))
}

async fn unregister(State(cloud): S, Path((org_id, id)): Path<(String, String)>) -> Reply {
    org_exists(&cloud, &org_id)?;
    let Some(Value::Object(mut obj)) =
        cloud.store.get("mxedges", &org_id, &id).map_err(internal)?
    else {
        return Err(err(StatusCode::NOT_FOUND, "not found"));
    };
    cloud.store.revoke_tokens(&id).map_err(internal)?;
    obj.insert("tunterm_registered".into(), json!(false));
    obj.insert("mxagent_registered".into(), json!(false));
    cloud
        .store
        .put("mxedges", &Value::Object(obj))
        .map_err(internal)?;
    cloud.edges.unregister(&cloud, &id);
    ok(json!({}))
}

/// `POST /api/v1/edge/register` (control/agent/PROTOCOL.md): a claim code for an edge
/// identity and token.
async fn register(State(cloud): S, Json(body): Json<Value>) -> Reply {
    let refused = || err(StatusCode::FORBIDDEN, "claim code not recognised");
    let code = body["claim_code"].as_str().ok_or_else(refused)?;
    let Some(Value::Object(mut edge)) = cloud.store.mxedge_by_magic(code).map_err(internal)? else {
        return Err(refused());
    };
    if edge.get("tunterm_registered") == Some(&json!(true)) {
        return Err(err(
            StatusCode::FORBIDDEN,
            "claim code already used: unregister the mxedge first",
        ));
    }
    let token = crate::secret();
    let id = edge["id"].as_str().unwrap_or_default().to_string();
    let org_id = edge["org_id"].as_str().unwrap_or_default().to_string();
    cloud.store.add_token(&token, &id).map_err(internal)?;
    edge.insert("tunterm_registered".into(), json!(true));
    edge.insert("mxagent_registered".into(), json!(true));
    cloud
        .store
        .put("mxedges", &Value::Object(edge))
        .map_err(internal)?;
    tracing::info!(mxedge_id = id, "edge registered");
    ok(json!({"mxedge_id": id, "org_id": org_id, "token": token}))
}

async fn edge_ws(State(cloud): S, headers: HeaderMap, ws: WebSocketUpgrade) -> Reply {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Token "))
        .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "authentication required"))?;
    let mxedge_id = match cloud.store.token(token.trim()).map_err(internal)? {
        TokenStanding::Valid(id) => id,
        TokenStanding::Unregistered => return Err(err(StatusCode::GONE, "mxedge unregistered")),
        TokenStanding::Unknown => return Err(err(StatusCode::UNAUTHORIZED, "unknown token")),
    };
    let Some(edge) = cloud.store.mxedge(&mxedge_id).map_err(internal)? else {
        return Err(err(StatusCode::GONE, "mxedge deleted"));
    };
    let org_id = edge["org_id"].as_str().unwrap_or_default().to_string();
    Ok(ws
        .max_message_size(16 << 20)
        .on_upgrade(move |socket| edge::session(cloud, mxedge_id, org_id, socket)))
}

/// Sends an action to one edge and turns its result into the REST answer.
async fn act(cloud: &Cloud, mxedge_id: &str, action: Value) -> Result<Value, ApiError> {
    match cloud.edges.action(cloud, mxedge_id, action).await {
        Ok(r) if r["ok"] == json!(true) => Ok(r.get("result").cloned().unwrap_or(json!({}))),
        Ok(r) => Err(err(
            StatusCode::BAD_REQUEST,
            r["error"]
                .as_str()
                .unwrap_or("the mxedge refused the action"),
        )),
        Err(ActionError::NotConnected) => {
            Err(err(StatusCode::SERVICE_UNAVAILABLE, "mxedge not connected"))
        }
        Err(ActionError::Timeout) => Err(err(
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the mxedge within 10 s",
        )),
        Err(ActionError::Busy) => Err(err(
            StatusCode::TOO_MANY_REQUESTS,
            "too many actions pending",
        )),
    }
}

fn edge_in_org(cloud: &Cloud, org_id: &str, id: &str) -> Result<Value, ApiError> {
    org_exists(cloud, org_id)?;
    cloud
        .store
        .get("mxedges", org_id, id)
        .map_err(internal)?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "mxedge not found"))
}

async fn restart(State(cloud): S, Path((org_id, id)): Path<(String, String)>) -> Reply {
    edge_in_org(&cloud, &org_id, &id)?;
    ok(act(&cloud, &id, json!({"action": "restart"})).await?)
}

async fn service(
    State(cloud): S,
    Path((org_id, id, name, action)): Path<(String, String, String, String)>,
    body: Option<Json<Value>>,
) -> Reply {
    edge_in_org(&cloud, &org_id, &id)?;
    let body = body.map(|Json(b)| b).unwrap_or(json!({}));
    let msg = match (name.as_str(), action.as_str()) {
        ("tunterm", "disconnect_aps") => {
            let mut m = json!({"action": "disconnect_aps",
                "macs": body.get("macs").cloned().unwrap_or(json!([]))});
            if let Some(p) = body.get("percentage") {
                m["percentage"] = p.clone();
            }
            m
        }
        ("tunterm", "bounce_port") => json!({"action": "bounce_port",
            "ports": body.get("ports").cloned().unwrap_or(json!([])),
            "hold_time": body.get("hold_time").cloned().unwrap_or(json!(0))}),
        (_, "restart" | "start" | "stop") => {
            json!({"action": "service", "name": name, "op": action})
        }
        _ => return Err(err(StatusCode::BAD_REQUEST, "unknown service action")),
    };
    ok(act(&cloud, &id, msg).await?)
}

async fn preempt(State(cloud): S, Path((org_id, id)): Path<(String, String)>) -> Reply {
    org_exists(&cloud, &org_id)?;
    let tunnel = cloud
        .store
        .get("mxtunnels", &org_id, &id)
        .map_err(internal)?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "mxtunnel not found"))?;
    let clusters: Vec<&str> = tunnel["mxcluster_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // Every edge of the mxtunnel's clusters is asked, even after one
    // refuses or does not answer (an AP another edge already closed must be
    // in the answer): those edges are listed in `errors` (a tunterm
    // extension), and only when no edge acted is the answer an error.
    let mut preempted = Vec::new();
    let mut errors = Vec::new();
    let mut acted = 0;
    for edge_id in cloud.edges.connected_in(&org_id) {
        let serves = cloud
            .store
            .mxedge(&edge_id)
            .map_err(internal)?
            .is_some_and(|e| {
                clusters.is_empty()
                    || e["mxcluster_id"]
                        .as_str()
                        .is_some_and(|c| clusters.contains(&c))
            });
        if serves {
            match act(
                &cloud,
                &edge_id,
                json!({"action": "preempt_aps", "mxtunnel_id": id}),
            )
            .await
            {
                Ok(r) => {
                    acted += 1;
                    preempted.extend(r["preempted_aps"].as_array().cloned().unwrap_or_default());
                }
                Err(ApiError(code, detail)) => errors.push((edge_id, code, detail)),
            }
        }
    }
    if acted == 0
        && let Some((_, code, _)) = errors.first()
    {
        let all: Vec<String> = errors
            .iter()
            .map(|(edge, _, detail)| format!("mxedge {edge}: {detail}"))
            .collect();
        return Err(err(*code, all.join("; ")));
    }
    let mut answer = json!({"preempted_aps": preempted});
    if !errors.is_empty() {
        answer["errors"] = errors
            .iter()
            .map(|(edge, _, detail)| json!({"mxedge_id": edge, "detail": detail}))
            .collect();
    }
    ok(answer)
}

/// Fields of the mxedge object left out of its stats (secrets and the claim code).
const NOT_IN_STATS: &[&str] = &["magic", "mxedge_mgmt"];

/// The `stats/mxedges` object of one edge: its configuration, overlaid with
/// what it reported, with `status` and `last_seen` computed here.
pub fn mxedge_stats(cloud: &Cloud, org_id: &str, id: &str) -> anyhow::Result<Option<Value>> {
    let Some(Value::Object(mut obj)) = cloud.store.get("mxedges", org_id, id)? else {
        return Ok(None);
    };
    for k in NOT_IN_STATS {
        obj.remove(*k);
    }
    let mut last_seen = Value::Null;
    if let Some((Value::Object(reported), _, at)) = cloud.store.stats(id)? {
        for (k, v) in reported {
            obj.insert(k, v);
        }
        last_seen = json!(at);
    }
    let connected = cloud.edges.connected_since(id);
    if let Some(since) = connected
        && last_seen.is_null()
    {
        last_seen = json!(since);
    }
    let (version, digest) = cloud.edges.hello(id);
    if let Some(d) = digest {
        obj.insert("config_digest".into(), json!(d));
    }
    if let Some(v) = version {
        obj.entry("versions")
            .or_insert(json!({}))
            .as_object_mut()
            .map(|m| m.entry("tunterm").or_insert(json!(v)));
    }
    obj.insert("last_seen".into(), last_seen);
    obj.insert(
        "status".into(),
        json!(if connected.is_some() {
            "connected"
        } else {
            "disconnected"
        }),
    );
    obj.insert("for_site".into(), json!(false));
    Ok(Some(Value::Object(obj)))
}

async fn stats_list(State(cloud): S, Path(org_id): Path<String>) -> Reply {
    org_exists(&cloud, &org_id)?;
    let mut out = Vec::new();
    for e in cloud.store.list("mxedges", &org_id).map_err(internal)? {
        let id = e["id"].as_str().unwrap_or_default();
        if let Some(s) = mxedge_stats(&cloud, &org_id, id).map_err(internal)? {
            out.push(s);
        }
    }
    ok(json!(out))
}

async fn stats_one(State(cloud): S, Path((org_id, id)): Path<(String, String)>) -> Reply {
    org_exists(&cloud, &org_id)?;
    match mxedge_stats(&cloud, &org_id, &id).map_err(internal)? {
        Some(s) => ok(s),
        None => Err(err(StatusCode::NOT_FOUND, "mxedge not found")),
    }
}

fn limit_of(q: &HashMap<String, String>) -> usize {
    q.get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000)
}

async fn tunnels_search(
    State(cloud): S,
    Path(org_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    org_exists(&cloud, &org_id)?;
    let limit = limit_of(&q);
    let mut rows = Vec::new();
    for e in cloud.store.list("mxedges", &org_id).map_err(internal)? {
        let id = e["id"].as_str().unwrap_or_default();
        let Some((_, Value::Array(t), _)) = cloud.store.stats(id).map_err(internal)? else {
            continue;
        };
        for mut row in t {
            if row["mxcluster_id"].is_null() && !e["mxcluster_id"].is_null() {
                row["mxcluster_id"] = e["mxcluster_id"].clone();
            }
            let wanted = [
                "mxedge_id",
                "mxcluster_id",
                "mxtunnel_id",
                "ap",
                "state",
                "remote_ip",
            ]
            .iter()
            .all(|k| {
                q.get(*k)
                    .is_none_or(|v| row[*k].as_str() == Some(v.as_str()))
            });
            if wanted {
                rows.push(row);
            }
        }
    }
    let total = rows.len();
    rows.truncate(limit);
    let t = now();
    ok(json!({"results": rows, "start": t - 86400.0, "end": t, "limit": limit, "total": total}))
}

fn epoch_param(v: Option<&String>, default: f64) -> f64 {
    let Some(v) = v else { return default };
    if let Ok(x) = v.parse::<f64>() {
        return x;
    }
    // Relative times: -1d, -2h, -30m, -1w.
    let (num, unit) = v
        .trim_start_matches('-')
        .split_at(v.trim_start_matches('-').len().saturating_sub(1));
    let secs = match unit {
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 604800.0,
        _ => return default,
    };
    num.parse::<f64>()
        .map(|n| now() - n * secs)
        .unwrap_or(default)
}

async fn events_search(
    State(cloud): S,
    Path(org_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    org_exists(&cloud, &org_id)?;
    let limit = limit_of(&q);
    let t = now();
    let filter = EventFilter {
        mxedge_id: q.get("mxedge_id").cloned(),
        kind: q.get("type").cloned(),
        start: epoch_param(q.get("start"), t - 86400.0),
        end: epoch_param(q.get("end"), t + 1.0),
        limit: limit as i64,
    };
    let mut results = cloud.store.events(&org_id, &filter).map_err(internal)?;
    for k in ["mxcluster_id", "service"] {
        if let Some(v) = q.get(k) {
            results.retain(|e| e[k].as_str() == Some(v.as_str()));
        }
    }
    let total = results.len();
    ok(
        json!({"results": results, "start": filter.start, "end": filter.end,
              "limit": limit, "total": total}),
    )
}

/// `const/mxedge_events`: the seed's events, plus tunterm's own marked as
/// extensions.
async fn const_events() -> Reply {
    let seed = [
        (
            "ME_CONFIG_CHANGED_BY_USER",
            "ME Config changed by user",
            "Config change on ME was triggered as a result of change made by user",
        ),
        (
            "ME_CONFIGURED",
            "ME Configured",
            "ME received and applied a new config",
        ),
        (
            "ME_SERVICE_STARTED",
            "ME Service Started",
            "A service on the ME started",
        ),
        (
            "ME_SERVICE_STOPPED",
            "ME Service Stopped",
            "A service on the ME stopped",
        ),
        (
            "ME_SERVICE_RESTARTED",
            "ME Service Restarted",
            "A service on the ME restarted",
        ),
        (
            "ME_SERVICE_FAILED",
            "ME Service Failed",
            "A service on the ME failed",
        ),
        (
            "ME_PACKAGE_INSTALLED",
            "ME Package Installed",
            "A package was installed on the ME",
        ),
        (
            "ME_POWERINPUT_DISCONNECTED",
            "ME Power Input Disconnected",
            "A power supply of the ME lost its input",
        ),
    ];
    let list: Vec<Value> = seed
        .iter()
        .map(|(key, display, description)| {
            json!({"key": key, "display": display, "description": description,
                   "example": {"type": key, "timestamp": 1552408871,
                               "org_id": "2818e386-8dec-2562-9ede-5b8a0fbbdc71",
                               "mxedge_id": "387804a7-3474-85ce-15a2-f9a9684c9c90"}})
        })
        .collect();
    ok(json!(list))
}

async fn counters(State(cloud): S) -> Reply {
    ok(cloud.counters.to_json())
}

fn capture_key(org_id: &str) -> String {
    org_id.to_string()
}

async fn capture_start(
    State(cloud): S,
    Path(org_id): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    org_exists(&cloud, &org_id)?;
    let edges: Vec<String> = body["mxedges"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if edges.len() != 1 {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "mxedges must name exactly one mxedge",
        ));
    }
    if body["format"] == json!("tzsp") && !body["tzsp_host"].is_string() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "tzsp_host is required when format is tzsp",
        ));
    }
    let pick = |k: &str, default: u64, max: u64| body[k].as_u64().unwrap_or(default).min(max);
    let (num, duration, len) = (
        pick("num_packets", 1024, 10_000),
        pick("duration", 600, 86_400),
        pick("max_pkt_len", 128, 2048),
    );
    let id = uuid();
    let t = now();
    let mut capture = body.clone();
    capture["id"] = json!(id);
    capture["num_packets"] = json!(num);
    capture["duration"] = json!(duration);
    capture["max_pkt_len"] = json!(len);
    let mut status = json!({
        "timestamp": t, "id": id, "org_id": org_id, "site_id": null, "type": "mxedge",
        "max_num_packets": num, "max_pkt_len": len, "duration": duration, "enabled": true,
        "expiry": t + duration as f64, "mxedge_count": edges.len(), "invalid_mxedges": {},
        "format": body["format"].as_str().unwrap_or("stream"), "raw": true,
        "mxedges": body["mxedges"].clone(),
    });
    for k in ["tzsp_host", "tzsp_port", "tcpdump_expression"] {
        if !body[k].is_null() {
            status[k] = body[k].clone();
        }
    }
    for e in &edges {
        edge_in_org(&cloud, &org_id, e)?;
        act(
            &cloud,
            e,
            json!({"action": "capture_start", "capture": capture}),
        )
        .await?;
    }
    cloud.store.put_capture(&status).map_err(internal)?;
    cloud
        .captures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(capture_key(&org_id), status.clone());
    ok(status)
}

fn running_capture(cloud: &Cloud, org_id: &str) -> Option<Value> {
    let mut caps = cloud.captures.lock().unwrap_or_else(|e| e.into_inner());
    let expired = caps
        .get(org_id)
        .is_some_and(|c| c["expiry"].as_f64().unwrap_or_default() < now());
    if expired {
        caps.remove(org_id);
    }
    caps.get(org_id).cloned()
}

async fn capture_status(State(cloud): S, Path(org_id): Path<String>) -> Reply {
    org_exists(&cloud, &org_id)?;
    running_capture(&cloud, &org_id)
        .map(|c| Json(c).into_response())
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "no capture running"))
}

async fn capture_stop(State(cloud): S, Path(org_id): Path<String>) -> Reply {
    org_exists(&cloud, &org_id)?;
    let Some(mut status) = running_capture(&cloud, &org_id) else {
        return Err(err(StatusCode::NOT_FOUND, "no capture running"));
    };
    let id = status["id"].clone();
    let edges: Vec<String> = status["mxedges"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for e in &edges {
        // The capture ends here whatever the edge says; its answer is logged.
        if let Err(r) = act(
            &cloud,
            e,
            json!({"action": "capture_stop", "capture_id": id}),
        )
        .await
        {
            tracing::warn!(mxedge_id = e, status = %r.0, detail = r.1, "capture_stop not confirmed");
        }
    }
    cloud
        .captures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&org_id);
    status["enabled"] = json!(false);
    status["termination_reason"] = json!("stopped");
    cloud.store.put_capture(&status).map_err(internal)?;
    cloud.publish(
        format!("/orgs/{org_id}/pcaps"),
        json!({"capture_id": id, "pcap_dict": null}),
    );
    ok(status)
}

async fn capture_list(
    State(cloud): S,
    Path(org_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    org_exists(&cloud, &org_id)?;
    let limit = limit_of(&q);
    let results: Vec<Value> = cloud
        .store
        .captures(&org_id, limit as i64)
        .map_err(internal)?
        .into_iter()
        .map(|c| {
            json!({"id": c["id"], "timestamp": c["timestamp"], "duration": c["duration"],
                   "org_id": c["org_id"], "format": c["format"], "site_id": null,
                   "type": "mxedge", "termination_reason": c.get("termination_reason").cloned().unwrap_or(json!("default")),
                   "mxedges": c["mxedges"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>())})
        })
        .collect();
    let t = now();
    ok(json!({"start": t - 86400.0, "end": t, "limit": limit, "results": results}))
}

/// `WS /api-ws/v1/stream`: `{"subscribe": channel}` / `{"unsubscribe": channel}`.
async fn stream(State(cloud): S, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| stream_session(cloud, socket))
}

/// At most this many channels per stream connection.
const MAX_SUBSCRIPTIONS: usize = 64;

async fn stream_session(cloud: Arc<Cloud>, mut ws: WebSocket) {
    let mut rx = cloud.stream.subscribe();
    let mut channels: HashSet<String> = HashSet::new();
    let org_id = cloud
        .store
        .meta("org_id")
        .ok()
        .flatten()
        .unwrap_or_default();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(m) if channels.contains(&m.channel) => {
                    if ws.send(Message::Text(m.text.into())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    cloud.counters.stream_lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            },
            m = ws.recv() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let req: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let reply = if let Some(ch) = req["subscribe"].as_str() {
                    let known = [format!("/orgs/{org_id}/mxedges"), format!("/orgs/{org_id}/pcaps")];
                    if known.iter().any(|k| k == ch) && channels.len() < MAX_SUBSCRIPTIONS {
                        channels.insert(ch.to_string());
                        json!({"event": "channel_subscribed", "channel": ch})
                    } else {
                        json!({"event": "channel_not_found", "channel": ch})
                    }
                } else if let Some(ch) = req["unsubscribe"].as_str() {
                    channels.remove(ch);
                    json!({"event": "channel_unsubscribed", "channel": ch})
                } else {
                    json!({"event": "error", "detail": "expected subscribe or unsubscribe"})
                };
                if ws.send(Message::Text(reply.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_epoch_or_relative() {
        let t = now();
        assert_eq!(epoch_param(Some(&"1694678225.5".into()), 0.0), 1694678225.5);
        let day_ago = epoch_param(Some(&"-1d".into()), 0.0);
        assert!((t - 86400.0 - day_ago).abs() < 5.0);
        let two_hours = epoch_param(Some(&"-2h".into()), 0.0);
        assert!((t - 7200.0 - two_hours).abs() < 5.0);
        assert_eq!(epoch_param(Some(&"soon".into()), 7.0), 7.0);
        assert_eq!(epoch_param(None, 7.0), 7.0);
    }

    #[test]
    fn claim_codes_look_like_magic_and_differ() {
        let (a, b) = (claim_code(), claim_code());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
