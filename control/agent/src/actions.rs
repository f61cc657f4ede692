//! The cloud's actions that act on the daemon or its service: `restart`,
//! `service` (tunterm's restart / stop / start), `preempt_aps`, `bounce_port`,
//! `capture_start` / `capture_stop`; and the watch on the daemon that turns
//! its comings and goings into `ME_SERVICE_*` events.
//!
//! The agent only asks: the daemon (its control socket) or the service
//! manager (`systemctl`, when `--daemon-unit` names tunterm's unit). A
//! restart is the daemon's `restart` request: it execs itself again in the
//! same process, keeping its tunnels (the state file and the pinned fast
//! path), so it is hitless under systemd and without it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tunterm::api::client::Client;
use tunterm::api::{CaptureFormat, CapturePoint, CaptureRequest, PreemptRequest};

use crate::pcap::PcapngReader;

/// How long a restart may take before the action says it did not come back.
pub const RESTART_WAIT: Duration = Duration::from_secs(20);
/// Captures running at once, at most.
pub const MAX_CAPTURES: usize = 4;
/// `pcap` messages queued for the cloud, at most (the rest are lost,
/// counted in the next frame's `lost_messages`).
pub const PCAP_QUEUE: usize = 1024;
/// How long a `bounce-port` request may take.
const BOUNCE_TIMEOUT: Duration = Duration::from_secs(9);

/// What the agent asked of the daemon's service, so that its going away
/// reads as asked for, not as a failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: the daemon going away is a failure.
    #[default]
    Nothing,
    /// A restart: its return is `ME_SERVICE_RESTARTED`.
    Restart,
    /// A stop: `ME_SERVICE_STOPPED` was reported; its return is a start.
    Stop,
}

/// The daemon's state as the watch saw it, and what it is to report.
#[derive(Debug, Default)]
pub struct ServiceWatch {
    up: Option<bool>,
    /// What the agent asked for last.
    pub expect: Expect,
}

impl ServiceWatch {
    /// The daemon answered (its event stream is open): the event to report,
    /// if any. At the agent's start, a running daemon is no news.
    pub fn on_up(&mut self) -> Option<&'static str> {
        let was = self.up.replace(true);
        let expect = std::mem::take(&mut self.expect);
        match (was, expect) {
            (Some(false), Expect::Restart) => Some("ME_SERVICE_RESTARTED"),
            (Some(false), _) => Some("ME_SERVICE_STARTED"),
            _ => None,
        }
    }

    /// The daemon went away (its event stream closed, or it does not
    /// answer): the event to report, if any (`ME_SERVICE_FAILED` unless the
    /// agent asked for a stop or a restart).
    pub fn on_down(&mut self) -> Option<&'static str> {
        let was = self.up.replace(false);
        match (was, self.expect) {
            (Some(true), Expect::Nothing) => Some("ME_SERVICE_FAILED"),
            (None, _) => Some("ME_SERVICE_STOPPED"),
            _ => None,
        }
    }
}

/// A running capture.
struct Running {
    task: tokio::task::AbortHandle,
}

/// The captures the cloud started, by its capture id.
#[derive(Clone, Default)]
pub struct Captures {
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// `pcap` messages the queue had no room for.
    pub lost: Arc<AtomicU64>,
}

impl Captures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop one (dropping its connection ends it in the daemon).
    pub fn stop(&self, id: &str) -> bool {
        match self.lock().remove(id) {
            Some(r) => {
                r.task.abort();
                true
            }
            None => false,
        }
    }
}

/// The daemon's request for a Mist capture (`capture_start`'s `capture`)
/// on this edge: the interfaces named under `mxedges.<id>` are the points
/// (each with its `tcpdump_expression`), else `trunk`.
pub fn capture_request(capture: &Value, mxedge_id: &str) -> Result<CaptureRequest, String> {
    let mut points: Vec<CapturePoint> = capture["mxedges"][mxedge_id]["interfaces"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, v)| CapturePoint {
                    name: name.clone(),
                    filter: v["tcpdump_expression"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        points.push(CapturePoint {
            name: "trunk".into(),
            filter: None,
        });
    }
    let (format, tzsp) = match capture["format"].as_str().unwrap_or("stream") {
        "stream" => (CaptureFormat::Pcapng, None),
        "tzsp" => {
            let host = capture["tzsp_host"]
                .as_str()
                .ok_or("format tzsp needs tzsp_host")?;
            let port = capture["tzsp_port"].as_u64().unwrap_or(37008);
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            (CaptureFormat::Tzsp, Some(format!("{host}:{port}")))
        }
        other => return Err(format!("format {other:?}: stream or tzsp")),
    };
    Ok(CaptureRequest {
        points,
        filter: capture["tcpdump_expression"].as_str().map(str::to_string),
        num_packets: capture["num_packets"].as_u64(),
        duration: capture["duration"].as_u64(),
        max_pkt_len: capture["max_pkt_len"]
            .as_u64()
            .map(|n| n.clamp(64, 2048) as u32),
        format,
        tzsp,
    })
}

/// Start a capture in the daemon; its frames (format stream) go to `out`
/// as `pcap` messages. The answer for `action_result`.
pub async fn capture_start(
    daemon: &Client,
    captures: &Captures,
    out: mpsc::Sender<Value>,
    mxedge_id: &str,
    capture: &Value,
) -> Result<Value, String> {
    let id = capture["id"]
        .as_str()
        .ok_or("capture without an id")?
        .to_string();
    let req = capture_request(capture, mxedge_id)?;
    let tzsp = req.format == CaptureFormat::Tzsp;
    captures.stop(&id);
    if captures.lock().len() >= MAX_CAPTURES {
        return Err(format!("{MAX_CAPTURES} captures already run on this edge"));
    }
    let mut stream = daemon.capture(req).await.map_err(|e| e.to_string())?;
    let accepted = serde_json::to_value(&stream.accepted).unwrap_or_default();
    let (cid, edge, lost, map) = (
        id.clone(),
        mxedge_id.to_string(),
        captures.lost.clone(),
        captures.clone(),
    );
    let task = tokio::spawn(async move {
        if tzsp {
            let _ = stream.summary().await;
        } else {
            let mut reader = PcapngReader::default();
            let mut buf = vec![0u8; 64 * 1024];
            'read: while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                reader.push(&buf[..n]);
                loop {
                    match reader.next_frame() {
                        Ok(Some(f)) => {
                            let missed = lost.load(Ordering::Relaxed);
                            let msg = crate::pcap::message(&cid, &f, &edge, missed);
                            if out.try_send(msg).is_err() {
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(capture_id = %cid, error = %e, "capture stream unreadable");
                            break 'read;
                        }
                    }
                }
            }
        }
        map.lock().remove(&cid);
        tracing::info!(capture_id = %cid, "capture ended");
    });
    captures.lock().insert(
        id.clone(),
        Running {
            task: task.abort_handle(),
        },
    );
    Ok(json!({"capture_id": id, "capture": accepted}))
}

/// The daemon's `preempt` request for a `preempt_aps` action: only the
/// tunnels of its `mxtunnel_id` (the daemon refuses an id it does not run,
/// counting it in `operations.refused`); every tunnel when the action names
/// none. An id that is not a non-empty string is refused here.
pub fn preempt_request(action: &Value) -> Result<PreemptRequest, String> {
    let mxtunnel_id = match &action["mxtunnel_id"] {
        Value::Null => None,
        Value::String(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
        other => {
            return Err(format!(
                "preempt_aps: mxtunnel_id {other}: expected an mxtunnel's id"
            ));
        }
    };
    Ok(PreemptRequest {
        site_id: None,
        mxtunnel_id,
    })
}

/// The daemon's `bounce-port` request (`{"ports": [...], "hold_time": ms}`):
/// its result, or its error.
pub async fn bounce_port(socket: &Path, ports: &Value, hold_time: &Value) -> Result<Value, String> {
    let ports: Vec<&str> = ports
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if ports.is_empty() {
        return Err("bounce_port: ports must name at least one port".into());
    }
    let hold = hold_time.as_u64().unwrap_or(0);
    let req = json!({"v": tunterm::api::VERSION, "type": "bounce-port", "ports": ports, "hold_time": hold});
    let answer = tokio::time::timeout(BOUNCE_TIMEOUT, raw_request(socket, &req))
        .await
        .map_err(|_| format!("bounce-port: no answer from tunterm within {BOUNCE_TIMEOUT:?}"))??;
    if let Some(e) = answer["error"].as_str() {
        return Err(format!("tunterm: {e}"));
    }
    Ok(answer["result"]
        .get("bounce-port")
        .cloned()
        .unwrap_or_else(|| answer["result"].clone()))
}

/// One request line to the daemon, one answer line back, untyped (for
/// requests this build's client does not know).
async fn raw_request(socket: &Path, req: &Value) -> Result<Value, String> {
    let s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("tunterm's control socket {}: {e}", socket.display()))?;
    let (rd, mut wr) = s.into_split();
    let mut line = req.to_string();
    line.push('\n');
    wr.write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    // One line, at most 1 MiB.
    BufReader::new(tokio::io::AsyncReadExt::take(rd, 1 << 20))
        .read_line(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("tunterm's answer: {e}"))
}

/// `systemctl OP UNIT`: what was run, or why it failed.
pub async fn systemctl(op: &str, unit: &str) -> Result<String, String> {
    let what = format!("systemctl {op} {unit}");
    let out = tokio::process::Command::new("systemctl")
        .args([op, unit])
        .output()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(what)
    } else {
        Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Restart the daemon without dropping tunnels and wait until it answers
/// again: what the `restart` action answers.
pub async fn restart(daemon: &Client, unit: Option<&str>) -> Result<Value, String> {
    let t0 = Instant::now();
    let how = match daemon.restart().await {
        Ok(()) => "tunterm restart request (exec keeping the tunnels)".to_string(),
        // A daemon that does not answer: its service manager, if any.
        Err(e) => match unit {
            Some(u) => systemctl("restart", u).await?,
            None => return Err(format!("tunterm did not take the restart: {e}")),
        },
    };
    // The socket goes while the new process starts; then it answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    loop {
        if let Ok(s) = daemon.stats().await {
            return Ok(json!({"restarted": true, "how": how,
                "took_ms": t0.elapsed().as_millis() as u64,
                "num_tunnels": s.num_tunnels, "config_digest": s.config_digest}));
        }
        if t0.elapsed() > RESTART_WAIT {
            return Err(format!(
                "{how}: tunterm did not answer within {RESTART_WAIT:?} after it"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_events_follow_what_was_asked() {
        let mut w = ServiceWatch::default();
        assert_eq!(w.on_up(), None, "running at the agent's start: no news");
        assert_eq!(w.on_down(), Some("ME_SERVICE_FAILED"), "gone unasked");
        assert_eq!(w.on_up(), Some("ME_SERVICE_STARTED"));
        w.expect = Expect::Restart;
        assert_eq!(w.on_down(), None);
        assert_eq!(w.on_up(), Some("ME_SERVICE_RESTARTED"));
        w.expect = Expect::Stop;
        assert_eq!(w.on_down(), None, "the stop action reports it");
        assert_eq!(w.on_up(), Some("ME_SERVICE_STARTED"));
        let mut w = ServiceWatch::default();
        assert_eq!(
            w.on_down(),
            Some("ME_SERVICE_STOPPED"),
            "not running at the agent's start"
        );
        assert_eq!(w.on_down(), None, "said once");
    }

    #[test]
    fn mist_captures_become_daemon_captures() {
        let c = json!({"id": "c1", "format": "tzsp", "tzsp_host": "192.0.2.50",
            "num_packets": 100, "duration": 60, "max_pkt_len": 32,
            "tcpdump_expression": "icmp",
            "mxedges": {"e1": {"interfaces": {"port0": {"tcpdump_expression": "udp port 67"}}}}});
        let r = capture_request(&c, "e1").unwrap();
        assert_eq!(r.points.len(), 1);
        assert_eq!(r.points[0].name, "port0");
        assert_eq!(r.points[0].filter.as_deref(), Some("udp port 67"));
        assert_eq!(r.filter.as_deref(), Some("icmp"));
        assert_eq!(r.tzsp.as_deref(), Some("192.0.2.50:37008"));
        assert_eq!(r.max_pkt_len, Some(64), "the daemon's smallest snap length");
        let r = capture_request(&json!({"id": "c2"}), "e1").unwrap();
        assert_eq!(
            (r.format, r.points[0].name.as_str()),
            (CaptureFormat::Pcapng, "trunk")
        );
        let e = capture_request(&json!({"format": "tzsp"}), "e1").unwrap_err();
        assert!(e.contains("tzsp_host"), "{e}");
    }

    #[test]
    fn preempt_aps_names_its_mxtunnel_to_the_daemon() {
        let id = "7f3c2a10-0000-4000-8000-000000000001";
        let r = preempt_request(&json!({"action": "preempt_aps", "mxtunnel_id": id})).unwrap();
        assert_eq!(r.mxtunnel_id.as_deref(), Some(id));
        // What goes down the control socket carries it.
        let line = serde_json::to_value(tunterm::api::Request::Preempt(r)).unwrap();
        assert_eq!(line["mxtunnel_id"], id, "{line}");
        // No id: every tunnel, and the line stays what older daemons read.
        let r = preempt_request(&json!({"action": "preempt_aps"})).unwrap();
        assert_eq!(r, PreemptRequest::default());
        let line = serde_json::to_value(tunterm::api::Request::Preempt(r)).unwrap();
        assert!(line.get("mxtunnel_id").is_none(), "{line}");
        for bad in [json!(""), json!(7), json!(["a"])] {
            let e = preempt_request(&json!({"mxtunnel_id": bad})).unwrap_err();
            assert!(e.contains("mxtunnel_id"), "{e}");
        }
    }

    /// The `bounce-port` contract (helper "live"'s request), against a
    /// mocked daemon socket.
    #[tokio::test]
    async fn bounce_port_sends_the_contract_and_passes_the_answer_on() {
        let dir = std::env::temp_dir().join(format!("tunterm-agent-bounce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let daemon = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in [
                r#"{"v":1,"result":{"bounce-port":{"bounced":["port0"],"hold_time":500}}}"#,
                r#"{"v":1,"error":"bounce-port: port9: no such port"}"#,
            ] {
                let (s, _) = listener.accept().await.unwrap();
                let (rd, mut wr) = s.into_split();
                let mut line = String::new();
                BufReader::new(rd).read_line(&mut line).await.unwrap();
                seen.push(serde_json::from_str::<Value>(&line).unwrap());
                wr.write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
            }
            seen
        });
        let r = bounce_port(&path, &json!(["port0"]), &json!(500))
            .await
            .unwrap();
        assert_eq!(r, json!({"bounced": ["port0"], "hold_time": 500}));
        let e = bounce_port(&path, &json!(["port9"]), &json!(0))
            .await
            .unwrap_err();
        assert!(e.contains("port9: no such port"), "{e}");
        let e = bounce_port(&path, &json!([]), &json!(0)).await.unwrap_err();
        assert!(e.contains("at least one port"), "{e}");
        let seen = daemon.await.unwrap();
        assert_eq!(
            seen[0],
            json!({"v": 1, "type": "bounce-port", "ports": ["port0"], "hold_time": 500})
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
