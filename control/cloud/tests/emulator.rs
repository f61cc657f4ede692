//! The emulator as an edge and an operator see it: a real TLS server on
//! 127.0.0.1:0, reqwest (rustls) as the operator, tokio-tungstenite (rustls)
//! as the edge and the stream subscriber.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

const POST: Method = Method::POST;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Cloud {
    dir: PathBuf,
    base: String,
    wss: String,
    ca: Vec<u8>,
    info: tunterm_cloud::Started,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> Cloud {
    let dir = std::env::temp_dir().join(format!("tunterm-cloud-test-{}", tunterm_cloud::uuid()));
    let (cloud, tls, info) = tunterm_cloud::open(&dir, &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(tunterm_cloud::serve(cloud, tls, listener));
    let ca = std::fs::read(&info.ca_path).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    Cloud {
        dir,
        base: format!("https://127.0.0.1:{port}"),
        wss: format!("wss://127.0.0.1:{port}"),
        ca,
        info,
        http,
        task,
    }
}

impl Cloud {
    fn org(&self, path: &str) -> String {
        format!("{}/api/v1/orgs/{}/{path}", self.base, self.info.org_id)
    }

    async fn op(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        self.spawn_op(method, url.to_string(), body).await.unwrap()
    }

    /// A REST call running in the background while the test answers as the edge.
    fn spawn_op(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let mut req = self.http.request(method, url).header(
            "Authorization",
            format!("Token {}", self.info.operator_token),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        })
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.op(reqwest::Method::GET, &self.org(path), None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn register(&self, code: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/edge/register", self.base))
            .json(&json!({"claim_code": code}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    fn connector(&self) -> Connector {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Connector::Rustls(Arc::new(cfg))
    }

    async fn ws(&self, path: &str, token: &str) -> Result<Ws, WsError> {
        let mut req = format!("{}{path}", self.wss).into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Token {token}").parse().unwrap());
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(self.connector()))
            .await
            .map(|(ws, _)| ws)
    }

    /// Registers the ready edge and opens its session with a hello; returns
    /// the session and the first config.
    async fn edge(&self) -> (Ws, Value) {
        self.edge_claimed_with(&self.info.claim_code).await
    }

    /// An edge registered with claim code `code`, connected, its first
    /// configuration read.
    async fn edge_claimed_with(&self, code: &str) -> (Ws, Value) {
        let (status, reg) = self.register(code).await;
        assert_eq!(status, 200, "{reg}");
        let mut ws = self
            .ws("/api-ws/v1/edge", reg["token"].as_str().unwrap())
            .await
            .unwrap();
        send(
            &mut ws,
            json!({"type": "hello", "mxedge_id": reg["mxedge_id"],
            "version": "tunterm 0.1.0", "config_digest": null}),
        )
        .await;
        let config = recv(&mut ws).await;
        (ws, config)
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next action sent to this edge (configuration pushes skipped).
async fn recv_action(ws: &mut Ws) -> Value {
    loop {
        let m = recv(ws).await;
        if m["type"] == "action" {
            return m;
        }
    }
}

#[tokio::test]
async fn preempt_asks_every_edge_and_names_those_that_refused() {
    let cloud = start().await;
    let (mut a, _) = cloud.edge().await;
    let first = cloud.get("mxedges").await[0].clone();
    let (s, created) = cloud
        .op(
            POST,
            &cloud.org("mxedges"),
            Some(json!({"name": "edge-b", "mxcluster_id": first["mxcluster_id"]})),
        )
        .await;
    assert_eq!(s, 200, "{created}");
    let (mut b, _) = cloud
        .edge_claimed_with(created["magic"].as_str().unwrap())
        .await;
    let b_id = created["id"].as_str().unwrap().to_string();
    let tunnel = cloud.get("mxtunnels").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = cloud.org(&format!("mxtunnels/{tunnel}/preempt_aps"));

    // A preempts an AP, B refuses: both are asked (one after the other, in
    // either order), the answer has A's AP and names B with its reason.
    let answer_both = |a_ok: bool| {
        move |action: &Value, edge_is_a: bool| {
            if edge_is_a && a_ok {
                json!({"type": "action_result", "id": action["id"], "ok": true,
                       "result": {"preempted_aps": ["5c5b35000001"]}})
            } else {
                json!({"type": "action_result", "id": action["id"], "ok": false,
                       "error": "this edge refuses"})
            }
        }
    };
    for (a_ok, want) in [
        (
            true,
            (
                200,
                json!({"preempted_aps": ["5c5b35000001"],
                       "errors": [{"mxedge_id": b_id, "detail": "this edge refuses"}]}),
            ),
        ),
        (false, (400, Value::Null)),
    ] {
        let answer = answer_both(a_ok);
        let op = cloud.spawn_op(POST, url.clone(), None);
        for _ in 0..2 {
            tokio::select! {
                m = recv_action(&mut a) => {
                    assert_eq!(m["action"], "preempt_aps");
                    send(&mut a, answer(&m, true)).await;
                }
                m = recv_action(&mut b) => {
                    assert_eq!(m["action"], "preempt_aps");
                    send(&mut b, answer(&m, false)).await;
                }
            }
        }
        let (status, body) = op.await.unwrap();
        if want.0 == 200 {
            assert_eq!((status, body), want);
        } else {
            // No edge acted: an error that names every edge's reason.
            assert_eq!(status, 400, "{body}");
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains(&b_id) && detail.matches("this edge refuses").count() == 2,
                "{detail}"
            );
        }
    }
}

#[tokio::test]
async fn registration_takes_the_claim_code_once_and_refuses_a_wrong_one() {
    let cloud = start().await;
    let (status, body) = cloud.register("not-a-claim-code").await;
    assert_eq!(status, 403);
    assert_eq!(body["detail"], "claim code not recognised");

    let (status, body) = cloud.register(&cloud.info.claim_code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mxedge_id"], cloud.info.mxedge_id);
    assert_eq!(body["org_id"], cloud.info.org_id);
    assert!(body["token"].as_str().unwrap().len() >= 64);
    let edge = cloud
        .get(&format!("mxedges/{}", cloud.info.mxedge_id))
        .await;
    assert_eq!(edge["tunterm_registered"], true);

    let (status, _) = cloud.register(&cloud.info.claim_code).await;
    assert_eq!(status, 403, "a registered edge's code is not taken twice");

    // Neither a bad edge token nor a missing operator token gets in.
    match cloud.ws("/api-ws/v1/edge", "bogus").await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let r = cloud.http.get(cloud.org("mxedges")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn config_on_connect_and_on_change() {
    let cloud = start().await;
    let (mut ws, config) = cloud.edge().await;
    assert_eq!(config["type"], "config");
    assert_eq!(config["mxedge"]["id"], cloud.info.mxedge_id);
    assert_eq!(config["mxcluster"]["id"], config["mxedge"]["mxcluster_id"]);
    assert_eq!(config["mxtunnels"][0]["vlan_ids"], json!([10, 20]));
    assert_eq!(config["wlans"], json!([]));

    let tunnel = config["mxtunnels"][0]["id"].as_str().unwrap();
    let (s, v) = cloud
        .op(
            reqwest::Method::PUT,
            &cloud.org(&format!("mxtunnels/{tunnel}")),
            Some(json!({"vlan_ids": [10, 20, 30]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let pushed = recv(&mut ws).await;
    assert_eq!(pushed["type"], "config");
    assert_eq!(pushed["mxtunnels"][0]["vlan_ids"], json!([10, 20, 30]));
    assert_ne!(pushed["id"], config["id"]);

    // A new wlan is the org's: pushed too.
    let (s, _) = cloud
        .op(
            reqwest::Method::POST,
            &cloud.org("wlans"),
            Some(json!({"ssid": "guest", "mxtunnel_ids": [tunnel], "vlan_id": 30})),
        )
        .await;
    assert_eq!(s, 200);
    let pushed = recv(&mut ws).await;
    assert_eq!(pushed["wlans"][0]["ssid"], "guest");
    send(
        &mut ws,
        json!({"type": "config_result", "id": pushed["id"], "applied": true,
        "config_digest": "ab12", "errors": []}),
    )
    .await;
}

#[tokio::test]
async fn actions_round_trip_through_the_edge() {
    let cloud = start().await;
    let (mut ws, _) = cloud.edge().await;
    let url = cloud.org(&format!(
        "mxedges/{}/services/tunterm/disconnect_aps",
        cloud.info.mxedge_id
    ));
    let op = cloud.spawn_op(POST, url, Some(json!({"macs": ["5c5b353e4eb1"]})));
    let action = recv(&mut ws).await;
    assert_eq!(action["type"], "action");
    assert_eq!(action["action"], "disconnect_aps");
    assert_eq!(action["macs"], json!(["5c5b353e4eb1"]));
    send(
        &mut ws,
        json!({"type": "action_result", "id": action["id"], "ok": true,
        "result": {"disconnected": ["5c5b353e4eb1"]}}),
    )
    .await;
    let (status, body) = op.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], json!(["5c5b353e4eb1"]));

    // preempt_aps answers in the seed's shape; a refusal is a 400 with the reason.
    let tunnel = cloud.get("mxtunnels").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = cloud.org(&format!("mxtunnels/{tunnel}/preempt_aps"));
    let op = cloud.spawn_op(POST, url, None);
    let action = recv(&mut ws).await;
    assert_eq!(action["action"], "preempt_aps");
    assert_eq!(action["mxtunnel_id"], tunnel);
    send(
        &mut ws,
        json!({"type": "action_result", "id": action["id"], "ok": true,
        "result": {"preempted_aps": ["5c5b35000001"]}}),
    )
    .await;
    let (status, body) = op.await.unwrap();
    assert_eq!(
        (status, body),
        (200, json!({"preempted_aps": ["5c5b35000001"]}))
    );

    let url = cloud.org(&format!(
        "mxedges/{}/services/tunterm/stop",
        cloud.info.mxedge_id
    ));
    let op = cloud.spawn_op(POST, url, None);
    let action = recv(&mut ws).await;
    assert_eq!(
        (&action["action"], &action["name"], &action["op"]),
        (&json!("service"), &json!("tunterm"), &json!("stop"))
    );
    send(
        &mut ws,
        json!({"type": "action_result", "id": action["id"], "ok": false,
        "error": "not supported"}),
    )
    .await;
    let (status, body) = op.await.unwrap();
    assert_eq!((status, &body["detail"]), (400, &json!("not supported")));
}

#[tokio::test]
async fn an_unanswered_action_is_a_504_and_an_absent_edge_a_503() {
    let cloud = start().await;
    let url = cloud.org(&format!("mxedges/{}/restart", cloud.info.mxedge_id));
    let (s, _) = cloud.op(reqwest::Method::POST, &url, None).await;
    assert_eq!(s, 503);
    let (_ws, _) = cloud.edge().await;
    let started = std::time::Instant::now();
    let (s, body) = cloud.op(reqwest::Method::POST, &url, None).await;
    assert_eq!(s, 504, "{body}");
    assert!(started.elapsed() >= Duration::from_secs(10));
}

#[tokio::test]
async fn stats_events_and_the_stream() {
    let cloud = start().await;
    let mut stream = cloud
        .ws("/api-ws/v1/stream", &cloud.info.operator_token)
        .await
        .unwrap();
    let channel = format!("/orgs/{}/mxedges", cloud.info.org_id);
    send(&mut stream, json!({"subscribe": channel})).await;
    assert_eq!(recv(&mut stream).await["event"], "channel_subscribed");
    let pcaps = format!("/orgs/{}/pcaps", cloud.info.org_id);
    send(&mut stream, json!({"subscribe": pcaps})).await;
    assert_eq!(recv(&mut stream).await["event"], "channel_subscribed");

    let before = cloud
        .get(&format!("stats/mxedges/{}", cloud.info.mxedge_id))
        .await;
    assert_eq!(before["status"], "disconnected");

    let (mut ws, _) = cloud.edge().await;
    let connected = recv(&mut stream).await;
    assert_eq!(connected["channel"], channel);
    assert_eq!(connected["data"]["event_type"], "status");
    assert_eq!(connected["data"]["detail"]["status"], "connected");

    // An unknown message type is counted, and the session goes on (the
    // stats after it are taken, in order).
    send(&mut ws, json!({"type": "no_such_type"})).await;
    send(
        &mut ws,
        json!({"type": "stats",
        "mxedge": {"uptime": 120, "num_tunnels": 1,
            "cpu_stat": {"usage": 3}, "memory_stat": {"total": 1000, "usage": 48},
            "port_stat": {"port0": {"up": true, "rx_pkts": 5}},
            "service_stat": {"tunterm": {"running_state": "Running", "uptime": 100}},
            "tunterm_stat": {"monitoring_failed": false},
            "not_a_seed_field": 1},
        "tunnels": [{"mxtunnel_id": "t1", "ap": "5c5b35000010", "remote_ip": "10.0.0.2",
            "remote_port": 1701, "state": "established_with_sessions", "uptime": 5,
            "tx_control_pkts": 3, "rx_control_pkts": 4, "mtu": 1400,
            "sessions": [{"remote_id": "mxtunnel", "state": "established",
                          "remote_sid": 13, "local_sid": 31}]}]}),
    )
    .await;
    let update = recv(&mut stream).await;
    assert_eq!(update["event"], "data");
    assert_eq!(update["data"]["device_id"], cloud.info.mxedge_id);
    assert_eq!(update["data"]["event_type"], "stats");
    assert_eq!(update["data"]["detail"]["num_tunnels"], 1);

    let stats = cloud
        .get(&format!("stats/mxedges/{}", cloud.info.mxedge_id))
        .await;
    assert_eq!(stats["status"], "connected");
    assert_eq!(stats["uptime"], 120);
    assert_eq!(stats["port_stat"]["port0"]["up"], true);
    assert_eq!(stats["service_stat"]["tunterm"]["running_state"], "Running");
    assert!(stats["last_seen"].as_f64().unwrap() > 1.7e9);
    assert_eq!(stats["org_id"], cloud.info.org_id);
    assert!(
        stats.get("magic").is_none(),
        "the claim code is not in stats"
    );
    let all = cloud.get("stats/mxedges").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let counters: Value = cloud
        .op(
            reqwest::Method::GET,
            &format!("{}/api/v1/tunterm-cloud/counters", cloud.base),
            None,
        )
        .await
        .1;
    assert_eq!(counters["unknown_fields"], 1);
    assert_eq!(counters["unknown_messages"], 1);

    let rows = cloud.get("stats/tunnels/search?ap=5c5b35000010").await;
    assert_eq!(rows["total"], 1);
    let row = &rows["results"][0];
    assert_eq!(row["mxedge_id"], cloud.info.mxedge_id);
    assert_eq!(row["state"], "established_with_sessions");
    assert_eq!(row["sessions"][0]["local_sid"], 31);
    assert!(!row["mxcluster_id"].is_null());
    assert_eq!(
        cloud.get("stats/tunnels/search?ap=000000000000").await["total"],
        0
    );

    send(
        &mut ws,
        json!({"type": "event", "event": {"type": "ME_CONFIGURED",
        "timestamp": tunterm_cloud::now(), "mxedge_id": "spoofed"}}),
    )
    .await;
    let ev = recv(&mut stream).await;
    assert_eq!(ev["data"]["event_type"], "event");
    let found = cloud.get("mxedges/events/search?type=ME_CONFIGURED").await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["results"][0]["mxedge_id"], cloud.info.mxedge_id);
    assert_eq!(found["results"][0]["org_id"], cloud.info.org_id);
    let consts = cloud
        .op(
            reqwest::Method::GET,
            &format!("{}/api/v1/const/mxedge_events", cloud.base),
            None,
        )
        .await
        .1;
    assert!(
        consts
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "ME_CONFIGURED")
    );

    send(
        &mut ws,
        json!({"type": "pcap", "capture_id": "c1",
        "pcap_dict": {"interface": "port0", "length": 60}, "pcap_raw": "1MOyoQIABAA="}),
    )
    .await;
    let pcap = recv(&mut stream).await;
    assert_eq!(pcap["channel"], pcaps);
    assert_eq!(pcap["data"]["capture_id"], "c1");
    assert_eq!(pcap["data"]["pcap_raw"], "1MOyoQIABAA=");
    assert_eq!(pcap["data"]["pcap_dict"]["mxedge_id"], cloud.info.mxedge_id);

    drop(ws);
    let gone = recv(&mut stream).await;
    assert_eq!(gone["data"]["detail"]["status"], "disconnected");
}

#[tokio::test]
async fn capture_start_and_stop_reach_the_edge() {
    let cloud = start().await;
    let (mut ws, _) = cloud.edge().await;
    let body = json!({"type": "mxedge", "format": "tzsp", "tzsp_host": "192.0.2.9",
        "mxedges": {cloud.info.mxedge_id.clone(): {"interfaces": {"port1": {}}}}});
    let op = cloud.spawn_op(POST, cloud.org("pcaps/capture"), Some(body));
    let action = recv(&mut ws).await;
    assert_eq!(action["action"], "capture_start");
    assert_eq!(action["capture"]["tzsp_host"], "192.0.2.9");
    assert_eq!(action["capture"]["num_packets"], 1024, "the seed's default");
    let id = action["capture"]["id"].clone();
    send(
        &mut ws,
        json!({"type": "action_result", "id": action["id"], "ok": true}),
    )
    .await;
    let (s, status) = op.await.unwrap();
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["id"], id);
    assert_eq!(status["enabled"], true);
    assert_eq!(cloud.get("pcaps/capture").await["id"], id);

    let op = cloud.spawn_op(reqwest::Method::DELETE, cloud.org("pcaps/capture"), None);
    let action = recv(&mut ws).await;
    assert_eq!(action["action"], "capture_stop");
    assert_eq!(action["capture_id"], id);
    send(
        &mut ws,
        json!({"type": "action_result", "id": action["id"], "ok": true}),
    )
    .await;
    assert_eq!(op.await.unwrap().0, 200);
    let (s, _) = cloud
        .op(reqwest::Method::GET, &cloud.org("pcaps/capture"), None)
        .await;
    assert_eq!(s, 404);
    assert_eq!(cloud.get("pcaps").await["results"][0]["id"], id);
}

#[tokio::test]
async fn unregister_ends_the_session_and_the_token() {
    let cloud = start().await;
    let (status, reg) = cloud.register(&cloud.info.claim_code).await;
    assert_eq!(status, 200);
    let token = reg["token"].as_str().unwrap();
    let mut ws = cloud.ws("/api-ws/v1/edge", token).await.unwrap();
    send(
        &mut ws,
        json!({"type": "hello", "mxedge_id": reg["mxedge_id"],
        "version": "tunterm 0.1.0", "config_digest": null}),
    )
    .await;
    recv(&mut ws).await; // config
    let url = cloud.org(&format!("mxedges/{}/unregister", cloud.info.mxedge_id));
    let (s, _) = cloud.op(reqwest::Method::POST, &url, None).await;
    assert_eq!(s, 200);
    assert_eq!(recv(&mut ws).await, json!({"type": "unregistered"}));
    match cloud.ws("/api-ws/v1/edge", token).await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 410),
        other => panic!("expected 410, got {other:?}"),
    }
    // The same claim code registers a replacement.
    let (status, again) = cloud.register(&cloud.info.claim_code).await;
    assert_eq!(status, 200);
    assert_ne!(again["token"], reg["token"]);
}

#[tokio::test]
async fn the_org_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("tunterm-cloud-test-{}", tunterm_cloud::uuid()));
    let (_, _, first) = tunterm_cloud::open(&dir, &[]).unwrap();
    let (_, _, second) = tunterm_cloud::open(&dir, &[]).unwrap();
    assert_eq!(first.org_id, second.org_id);
    assert_eq!(first.claim_code, second.claim_code);
    assert_eq!(first.operator_token, second.operator_token);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the data directory");
    for f in ["operator-token", "ca.key", "server.key"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_tls() {
    let cloud = start().await;
    let other = start().await; // another emulator: another CA
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&other.ca).unwrap())
        .build()
        .unwrap();
    let e = http
        .post(format!("{}/api/v1/edge/register", cloud.base))
        .json(&json!({"claim_code": cloud.info.claim_code}))
        .send()
        .await
        .unwrap_err();
    let mut chain = format!("{e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    // Nothing was registered.
    let edge = cloud
        .get(&format!("mxedges/{}", cloud.info.mxedge_id))
        .await;
    assert_eq!(edge["tunterm_registered"], false);
}
