//! The agent's session against an in-test cloud (TLS with an rcgen
//! certificate, tokio-tungstenite): the hello, a configuration refused with
//! its field's path, an unknown action, and `unregistered`. No daemon runs:
//! the hello's digest is null and nothing is applied.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tunterm_agent::session::{Agent, Ended};
use tunterm_agent::spool::Spool;
use tunterm_agent::state::State;

#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn a_session_says_hello_refuses_a_bad_config_and_stops_when_unregistered() {
    let dir = std::env::temp_dir().join(format!("tunterm-agent-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let cloud = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut auth = None;
        let mut ws = tokio_tungstenite::accept_hdr_async(
            tls,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                Ok(resp)
            },
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        // The hello.
        while got.is_empty() {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                got.push(serde_json::from_str::<Value>(t.as_str()).unwrap());
            }
        }
        let mut cfg: Value = serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap();
        cfg["mxtunnels"][0]["hello_interval"] = json!(0.1);
        let msg = json!({"type": "config", "id": 1, "mxedge": cfg["mxedge"],
                         "mxcluster": cfg["mxcluster"], "mxtunnels": cfg["mxtunnels"], "wlans": []});
        ws.send(Message::text(msg.to_string())).await.unwrap();
        ws.send(Message::text(
            json!({"type": "action", "id": 2, "action": "reboot_the_moon"}).to_string(),
        ))
        .await
        .unwrap();
        ws.send(Message::text(json!({"type": "frobnicate"}).to_string()))
            .await
            .unwrap();
        let mut events = Vec::new();
        while got.len() < 3 || events.is_empty() {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("stats") => {}
                    Some("event") => events.push(v["event"].clone()),
                    _ => got.push(v),
                }
            }
        }
        ws.send(Message::text(json!({"type": "unregistered"}).to_string()))
            .await
            .unwrap();
        (auth, got, events)
    });

    let mut agent = Agent::new(
        State {
            cloud: format!("https://localhost:{port}"),
            mxedge_id: "edge-1".into(),
            org_id: "org-1".into(),
            token: "t0ken".into(),
        },
        tunterm_agent::tls::client_config(Some(&dir.join("ca.pem"))).unwrap(),
        tunterm::api::client::Client::new(dir.join("no-daemon.sock")),
        dir.join("last-good.json"),
        Spool::open(&dir.join("events.jsonl"), 10).unwrap(),
    );
    agent.stats_every = Duration::from_secs(3600);
    let ended = tokio::time::timeout(Duration::from_secs(10), agent.session())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended, Ended::Unregistered);
    let (auth, got, events) = cloud.await.unwrap();
    assert_eq!(events[0]["type"], "TT_CONFIG_REFUSED", "{events:?}");
    assert_eq!(
        events[0]["errors"][0]["path"],
        "mxtunnels[0].hello_interval"
    );
    assert_eq!(auth.as_deref(), Some("Token t0ken"));
    assert_eq!(got[0]["type"], "hello");
    assert_eq!(got[0]["mxedge_id"], "edge-1");
    assert_eq!(got[0]["config_digest"], Value::Null, "no daemon: no digest");
    assert_eq!(got[1]["type"], "config_result");
    assert_eq!(
        (got[1]["id"].as_u64(), got[1]["applied"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(got[1]["errors"][0]["path"], "mxtunnels[0].hello_interval");
    assert!(
        !dir.join("last-good.json").exists(),
        "a refused configuration is not kept"
    );
    assert_eq!(
        got[2],
        json!({"type": "action_result", "id": 2, "ok": false, "error": "unknown action"})
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
