//! The daemon's stats and events in the Mist API's shapes: the
//! `stats/mxedges` object, `stats/tunnels/search` rows, and mxedge events.
//! Events of tunterm's own (`TT_*`) are extensions, not Mist's.

use serde_json::{Value, json};
use tunterm::api::{ConnStats, Event, EventKind, Stats};
use tunterm_control::EdgeConfig;

/// Who this edge is, for every object.
#[derive(Clone, Debug, Default)]
pub struct Ids {
    /// mxedge id.
    pub mxedge_id: String,
    /// org id.
    pub org_id: String,
    /// mxcluster id (from the configuration), if any.
    pub mxcluster_id: Option<String>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `stats/mxedges` object from the daemon's stats (`None`: the daemon
/// does not answer — service_stat says so).
pub fn mxedge_stats(daemon: Option<&Stats>, agent_uptime: u64) -> Value {
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |k: &str| {
        mem.lines()
            .find_map(|l| {
                l.strip_prefix(k)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let (total, avail) = (kb("MemTotal:"), kb("MemAvailable:"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<f64> = load
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(agent_uptime, |u| u as u64);
    let service = match daemon {
        Some(s) => json!({"running": true, "version": s.version, "uptime": s.uptime}),
        None => json!({"running": false}),
    };
    json!({
        "uptime": uptime,
        "last_seen": now(),
        "cpu_stat": {"load_avg": load},
        "memory_stat": {"total": total * 1024, "available": avail * 1024,
                        "usage": if total > 0 { 100.0 * (total - avail.min(total)) as f64 / total as f64 } else { 0.0 }},
        "service_stat": {"tunterm": service},
        "tunterm_stat": {"monitoring_failed": daemon.is_some_and(|s| s.monitoring.state == "failed")},
        "num_tunnels": daemon.map_or(0, |s| s.num_tunnels),
        "versions": {"tunterm": daemon.map(|s| s.version.clone()), "tunterm-agent": env!("CARGO_PKG_VERSION")},
        "config_digest": daemon.map(|s| s.config_digest.clone()),
    })
}

/// The `stats/tunnels/search` rows. A row's `mxtunnel_id` is the id of
/// the mxtunnel its session's Remote End ID names in `running` (the
/// configuration the daemon runs: ids first, then names, as the daemon
/// matches them; an empty one names the only mxtunnel), else null.
pub fn tunnel_rows(ids: &Ids, tunnels: &[ConnStats], running: Option<&EdgeConfig>) -> Vec<Value> {
    let mxtunnel = |remote_id: &str| {
        let cfg = running?;
        match (remote_id, cfg.tunnels.as_slice()) {
            ("", [only]) => Some(only),
            (id, _) => cfg.tunnel_by_remote_end_id(id),
        }
        .filter(|t| !t.id_from_name)
        .map(|t| t.id.clone())
    };
    let t = now();
    tunnels
        .iter()
        .map(|c| {
            json!({
                "mxedge_id": ids.mxedge_id,
                "mxcluster_id": ids.mxcluster_id,
                "mxtunnel_id": c.sessions.first().and_then(|s| mxtunnel(&s.remote_id)),
                "org_id": ids.org_id,
                "ap": c.ap,
                "remote_ip": c.remote_ip,
                "remote_port": c.remote_port,
                "state": c.state,
                "last_seen": t,
                "uptime": c.uptime,
                "tx_control_pkts": c.tx_control_pkts,
                "rx_control_pkts": c.rx_control_pkts,
                "mtu": Value::Null, // the daemon reports no per-tunnel MTU yet
                "sessions": c.sessions,
            })
        })
        .collect()
}

/// An mxedge event (`type`, `timestamp`, ids, extension fields).
pub fn event(ids: &Ids, kind: &str, timestamp: f64, extra: Value) -> Value {
    let mut e = json!({
        "type": kind,
        "timestamp": timestamp,
        "mxedge_id": ids.mxedge_id,
        "org_id": ids.org_id,
    });
    if let Some(c) = &ids.mxcluster_id {
        e["mxcluster_id"] = c.clone().into();
    }
    if let (Value::Object(e), Value::Object(x)) = (&mut e, extra) {
        e.extend(x);
    }
    e
}

/// A daemon event as an mxedge event of tunterm's own (`TT_*`), or `None`
/// for what the cloud does not need (sessions, lag notices).
pub fn daemon_event(ids: &Ids, e: &Event) -> Option<Value> {
    let (kind, extra) = match &e.kind {
        EventKind::TunnelUp { ap, peer, .. } => ("TT_TUNNEL_UP", json!({"ap": ap, "remote": peer})),
        EventKind::TunnelDown { peer, reason, .. } => {
            ("TT_TUNNEL_DOWN", json!({"remote": peer, "reason": reason}))
        }
        EventKind::PeerAdded { ap, .. } => ("TT_MGRE_PEER_UP", json!({"ap": ap})),
        EventKind::PeerRemoved { ap, reason, .. } => {
            ("TT_MGRE_PEER_DOWN", json!({"ap": ap, "reason": reason}))
        }
        EventKind::Health { state, failing } => (
            if state == "healthy" {
                "TT_MONITORING_OK"
            } else {
                "TT_MONITORING_FAILED"
            },
            json!({"failing": failing}),
        ),
        EventKind::Reload {
            ok,
            error,
            config_digest,
        } => (
            "TT_CONFIG_RELOAD",
            json!({"ok": ok, "error": error, "config_digest": config_digest}),
        ),
        EventKind::SessionUp { .. } | EventKind::SessionDown { .. } | EventKind::Lagged { .. } => {
            return None;
        }
    };
    Some(event(ids, kind, e.time, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_stats_carry_the_seeds_names() {
        let ids = Ids {
            mxedge_id: "e".into(),
            org_id: "o".into(),
            mxcluster_id: Some("c".into()),
        };
        let e = daemon_event(
            &ids,
            &Event {
                time: 5.5,
                kind: EventKind::TunnelUp {
                    tunnel_id: 1,
                    peer: "10.99.0.2:1701".into(),
                    ap: "ap1".into(),
                },
            },
        )
        .unwrap();
        assert_eq!(
            e,
            json!({"type": "TT_TUNNEL_UP", "timestamp": 5.5, "mxedge_id": "e", "org_id": "o",
                   "mxcluster_id": "c", "ap": "ap1", "remote": "10.99.0.2:1701"})
        );
        let lagged = Event {
            time: 1.0,
            kind: EventKind::Lagged { missed: 3 },
        };
        assert_eq!(daemon_event(&ids, &lagged), None);
        let s = mxedge_stats(None, 7);
        for k in [
            "uptime",
            "cpu_stat",
            "memory_stat",
            "service_stat",
            "tunterm_stat",
            "num_tunnels",
            "versions",
        ] {
            assert!(s.get(k).is_some(), "{k}: {s}");
        }
        assert_eq!(s["service_stat"]["tunterm"]["running"], false);
        assert!(
            s.get("id").is_none(),
            "not a field of the seed's stats object"
        );
    }

    #[test]
    fn each_row_names_the_mxtunnel_of_its_session() {
        let mut doc: Value = serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap();
        let mut second = doc["mxtunnels"][0].clone();
        doc["mxtunnels"][0]["id"] = json!("id-one");
        second["id"] = json!("id-two");
        second["name"] = json!("lab2");
        doc["mxtunnels"].as_array_mut().unwrap().push(second);
        let cfg = tunterm_control::load_str(&doc.to_string()).unwrap();
        let name = cfg.tunnels[0].name.clone();
        let conn = |ap: &str, remote_id: &str| {
            json!({"local_ccid": 1, "remote_ccid": 2, "ap": ap, "remote_ip": "10.99.0.2",
                   "remote_port": 1701, "state": "established_with_sessions", "uptime": 3,
                   "tx_control_pkts": 1, "rx_control_pkts": 1, "retransmits": 0,
                   "sessions": [{"local_sid": 5, "remote_sid": 6, "state": "established",
                                 "remote_id": remote_id, "pw_type": 5}]})
        };
        let tunnels: Vec<ConnStats> = serde_json::from_value(json!([
            conn("ap1", &name),
            conn("ap2", "lab2"),
            conn("ap3", "id-two"),
            conn("ap4", "unknown")
        ]))
        .unwrap();
        let rows = tunnel_rows(&Ids::default(), &tunnels, Some(&cfg));
        let ids: Vec<&Value> = rows.iter().map(|r| &r["mxtunnel_id"]).collect();
        assert_eq!(
            ids,
            [
                &json!("id-one"),
                &json!("id-two"),
                &json!("id-two"),
                &Value::Null
            ]
        );
        let rows = tunnel_rows(&Ids::default(), &tunnels, None);
        assert!(rows.iter().all(|r| r["mxtunnel_id"].is_null()));
    }
}
