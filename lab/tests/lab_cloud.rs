//! The edge run from the cloud, end to end: the standard lab (two simulated
//! APs, the real daemon), `tunterm-cloud` (the emulator) and
//! `tunterm-agent` in the edge's namespace on its loopback, and curl as the
//! operator on the emulator's REST API. Each test builds its own lab, so
//! they run in parallel.
//!
//! `tunterm-cloud` and `tunterm-agent` are other packages' binaries: `cargo
//! test --workspace` builds them (for `-p tunterm-lab` alone, build them
//! first, as the daemon).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tunterm_lab::failover::{AP_NAME, FailoverLab, FailoverOptions};
use tunterm_lab::topology::{Lab, Options, query_apsim, sessions_up};
use tunterm_lab::{self as lab, Netns, Proc, wait_until};

/// A binary of another package, beside the daemon the tests run.
fn bin(name: &str) -> PathBuf {
    let p = tunterm_lab::topology::Binaries::daemon_for_tests().with_file_name(name);
    assert!(
        p.exists(),
        "{} is not built: `cargo test --workspace` builds it (or `cargo build -p {name}`)",
        p.display()
    );
    p
}

/// The operator's side of a running emulator: its address, CA, token and
/// org (from its `started.json`), and curl for the REST calls.
struct Operator {
    url: String,
    ca: PathBuf,
    token: String,
    org: String,
    /// The ready mxedge's id and claim code.
    edge_id: String,
    claim: String,
}

impl Operator {
    /// `tunterm-cloud` in `ns`, its data in `data`, listening on `listen`
    /// (`san`: another address its certificate names), logging to `log`.
    fn spawn(ns: &Netns, data: &Path, listen: &str, san: Option<&str>, log: &Path) -> (Proc, Self) {
        let bin = bin("tunterm-cloud");
        let mut args = vec![
            bin.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            listen,
        ];
        if let Some(a) = san {
            args.extend(["--san", a]);
        }
        let mut cloud = ns.spawn(&args, log).unwrap();
        cloud
            .wait_for_log("tunterm-cloud listening", Duration::from_secs(20))
            .unwrap();
        let started: Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("started.json")).unwrap())
                .unwrap();
        let s = |k: &str| started[k].as_str().unwrap().to_string();
        let token = std::fs::read_to_string(s("operator_token_file"))
            .unwrap()
            .trim()
            .to_string();
        let op = Operator {
            url: s("url"),
            ca: PathBuf::from(s("ca")),
            token,
            org: s("org_id"),
            edge_id: s("mxedge_id"),
            claim: s("claim_code"),
        };
        (cloud, op)
    }

    /// `tunterm-agent` in `ns` for the daemon at `socket` running
    /// `daemon_config`, registered with `claim`, its state in `state`,
    /// reporting stats every second; `extra` more arguments.
    #[allow(clippy::too_many_arguments)]
    fn spawn_agent(
        &self,
        ns: &Netns,
        claim: &str,
        state: &Path,
        socket: &Path,
        daemon_config: &Path,
        log: &Path,
        extra: &[&str],
    ) -> Proc {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut args = vec![
            s(&bin("tunterm-agent")),
            "--cloud".into(),
            self.url.clone(),
            "--ca".into(),
            s(&self.ca),
            "--claim-code".into(),
            claim.into(),
            "--state-dir".into(),
            s(state),
            "--control-socket".into(),
            s(socket),
            "--daemon-config".into(),
            s(daemon_config),
            "--persist".into(),
            "--stats-interval".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.spawn(&args, log).unwrap()
    }

    /// A REST call as the operator, curl run in `ns`: (HTTP status, JSON
    /// body).
    fn rest(&self, ns: &Netns, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/v1/orgs/{}/{path}", self.url, self.org);
        let auth = format!("Authorization: Token {}", self.token);
        let ca = self.ca.to_string_lossy().into_owned();
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            "15",
            "--cacert",
            &ca,
            "-H",
            &auth,
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ];
        let body = body.map(|b| b.to_string());
        if let Some(b) = &body {
            args.extend(["-H", "content-type: application/json", "-d", b]);
        }
        args.push(&url);
        let out = ns.run(&args).unwrap();
        let (json, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(json).unwrap_or(Value::Null),
        )
    }

    /// The events of one type (of every edge), oldest first.
    fn events(&self, ns: &Netns, kind: &str) -> Vec<Value> {
        let (_, v) = self.rest(
            ns,
            "GET",
            &format!("mxedges/events/search?type={kind}&limit=1000"),
            None,
        );
        let mut e: Vec<Value> = v["results"].as_array().cloned().unwrap_or_default();
        e.sort_by(|a, b| {
            a["timestamp"]
                .as_f64()
                .partial_cmp(&b["timestamp"].as_f64())
                .unwrap()
        });
        e
    }

    /// Whether edge `id` is connected and runs the configuration the
    /// cloud last pushed to it (the digest it reports is its daemon's,
    /// `daemon` the daemon's stats) and has said so (`ME_CONFIGURED`).
    fn synced(&self, ns: &Netns, id: &str, daemon: anyhow::Result<Value>) -> bool {
        let (_, st) = self.rest(ns, "GET", &format!("stats/mxedges/{id}"), None);
        st["status"] == "connected"
            && daemon.is_ok_and(|d| d["config_digest"] == st["config_digest"])
            && self
                .events(ns, "ME_CONFIGURED")
                .iter()
                .any(|e| e["mxedge_id"] == id)
    }
}

/// The lab with the emulator and the agent.
struct CloudLab {
    lab: Lab,
    cloud: Proc,
    agent: Option<Proc>,
    op: Operator,
    edge_id: String,
    tunnel_id: String,
}

impl CloudLab {
    /// The standard lab, the emulator with its org shaped like the lab's
    /// configuration, and the agent registered with the claim code; returns
    /// once the edge runs the cloud's configuration.
    fn start(name: &str, agent_args: &[&str]) -> CloudLab {
        Self::start_with(Options::new(name, common::bins()), agent_args)
    }

    /// As [`CloudLab::start`], the lab as `opts` say.
    fn start_with(opts: Options, agent_args: &[&str]) -> CloudLab {
        let lab = common::start(opts);
        let (cloud, op) = Operator::spawn(
            &lab.edge,
            &lab.dir.join("cloud"),
            "127.0.0.1:0",
            None,
            &lab.dir.join("cloud.log"),
        );
        let mut c = CloudLab {
            edge_id: op.edge_id.clone(),
            op,
            tunnel_id: String::new(),
            agent: None,
            cloud,
            lab,
        };
        // The org's objects as the lab's edge runs them.
        let cfg = tunterm_lab::topology::edge_config(1.0, 3);
        let (_, tunnels) = c.rest("GET", "mxtunnels", None);
        c.tunnel_id = tunnels[0]["id"].as_str().unwrap().to_string();
        let (_, clusters) = c.rest("GET", "mxclusters", None);
        let cluster = clusters[0]["id"].as_str().unwrap().to_string();
        let mut edge = cfg["mxedge"].clone();
        edge["mxedge_mgmt"] = json!({"config_auto_revert": true});
        c.ok("PUT", &format!("mxedges/{}", c.edge_id), edge);
        c.ok(
            "PUT",
            &format!("mxclusters/{cluster}"),
            cfg["mxcluster"].clone(),
        );
        c.ok(
            "PUT",
            &format!("mxtunnels/{}", c.tunnel_id),
            cfg["mxtunnels"][0].clone(),
        );
        let dir = &c.lab.dir;
        c.agent = Some(c.op.spawn_agent(
            &c.lab.edge,
            &c.op.claim,
            &dir.join("agent"),
            &c.lab.edge_socket,
            &dir.join("edge.json"),
            &dir.join("agent.log"),
            agent_args,
        ));
        let synced = wait_until(Duration::from_secs(20), || {
            c.op.synced(&c.lab.edge, &c.edge_id, c.lab.edge_stats())
        });
        assert!(
            synced,
            "the edge did not take the cloud's configuration\n{}",
            c.logs()
        );
        c
    }

    /// A REST call as the operator: (HTTP status, JSON body).
    fn rest(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.op.rest(&self.lab.edge, method, path, body)
    }

    /// A REST call that must answer 200.
    fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (code, v) = self.rest(method, path, Some(body));
        assert_eq!(code, 200, "{method} {path}: {v}\n{}", self.logs());
        v
    }

    /// This edge's events of one type, oldest first.
    fn events(&self, kind: &str) -> Vec<Value> {
        self.op.events(&self.lab.edge, kind)
    }

    fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- agent\n{}\n--- cloud\n{}\n{}",
            read(&self.lab.dir.join("agent.log")),
            read(self.cloud.log()),
            self.lab.logs()
        )
    }

    fn tunnels_up(&self, ap: &str) -> u64 {
        self.lab.ap_stats(ap).unwrap()["per_ap"][ap]["tunnels_up"]
            .as_u64()
            .unwrap_or(0)
    }
}

#[test]
fn an_mxtunnel_put_reaches_the_edge_and_a_bad_one_is_refused_with_its_path() {
    lab::require_root().unwrap();
    let c = CloudLab::start("cldvlan", &[]);
    let before = c.lab.edge_stats().unwrap()["config_digest"].clone();
    // VLAN 99 is not allowed: c5 (tag 99 behind ap1) does not get through.
    assert_eq!(
        lab::ping(c.lab.client("c5"), "192.168.99.1", 2)
            .unwrap()
            .received,
        0
    );

    let configured = c.events("ME_CONFIGURED").len();
    let t0 = Instant::now();
    c.ok(
        "PUT",
        &format!("mxtunnels/{}", c.tunnel_id),
        json!({"vlan_ids": [10, 20, 99]}),
    );
    let reached = wait_until(Duration::from_secs(5), || {
        c.lab
            .edge_stats()
            .is_ok_and(|d| d["config_digest"] != before)
    });
    assert!(
        reached,
        "the PUT did not reach the daemon within 5 s\n{}",
        c.logs()
    );
    println!("PUT vlan_ids -> daemon runs it after {:?}", t0.elapsed());
    assert!(
        wait_until(Duration::from_secs(5), || c.events("ME_CONFIGURED").len()
            > configured),
        "no ME_CONFIGURED for the PUT\n{}",
        c.logs()
    );
    let configured = c.events("ME_CONFIGURED");
    let last = configured.last().unwrap();
    let needs_restart = last["needs_restart"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !needs_restart.is_empty() {
        // What this daemon cannot change live waits for its (hitless)
        // restart: the operator's restart through the cloud.
        println!("needs a restart: {needs_restart:?}");
        let (code, r) = c.rest("POST", &format!("mxedges/{}/restart", c.edge_id), None);
        assert_eq!(code, 200, "{r}\n{}", c.logs());
    }
    let pinged = wait_until(Duration::from_secs(10), || {
        lab::ping(c.lab.client("c5"), "192.168.99.1", 1).is_ok_and(|r| r.received == 1)
    });
    assert!(
        pinged,
        "c5 on the added VLAN 99 does not reach upstream\n{}",
        c.logs()
    );
    let r = lab::ping(c.lab.client("c5"), "192.168.99.1", 5).unwrap();
    assert_eq!(r.received, 5, "{r:?}");
    assert_eq!(sessions_up(&c.lab.edge_stats().unwrap()), 2);
    for ap in ["ap1", "ap2"] {
        assert_eq!(
            c.tunnels_up(ap),
            1,
            "{ap}'s tunnel went down and came up again"
        );
    }
    assert!(
        c.events("TT_TUNNEL_DOWN").is_empty(),
        "{:?}",
        c.events("TT_TUNNEL_DOWN")
    );

    // hello_interval 0.1 is refused at the edge, with the field's path.
    let running = c.lab.edge_stats().unwrap()["config_digest"].clone();
    c.ok(
        "PUT",
        &format!("mxtunnels/{}", c.tunnel_id),
        json!({"hello_interval": 0.1}),
    );
    let refused = wait_until(Duration::from_secs(5), || {
        !c.events("TT_CONFIG_REFUSED").is_empty()
    });
    assert!(refused, "no TT_CONFIG_REFUSED\n{}", c.logs());
    let e = &c.events("TT_CONFIG_REFUSED")[0];
    assert_eq!(e["errors"][0]["path"], "mxtunnels[0].hello_interval", "{e}");
    assert_eq!(
        c.lab.edge_stats().unwrap()["config_digest"],
        running,
        "the running config changed"
    );
    let (_, st) = c.rest("GET", &format!("stats/mxedges/{}", c.edge_id), None);
    assert_eq!(st["config_digest"], running);
}

#[test]
fn restart_disconnect_and_stats_through_rest_act_on_the_lab() {
    lab::require_root().unwrap();
    let mut c = CloudLab::start("cldact", &[]);
    // Stats and tunnel rows in the seed's names.
    let ok = wait_until(Duration::from_secs(5), || {
        let (_, rows) = c.rest("GET", "stats/tunnels/search", None);
        rows["results"].as_array().is_some_and(|r| r.len() == 2)
    });
    assert!(ok, "no tunnel rows\n{}", c.logs());
    let (_, rows) = c.rest("GET", "stats/tunnels/search", None);
    let (_, st) = c.rest("GET", &format!("stats/mxedges/{}", c.edge_id), None);
    assert_eq!(st["num_tunnels"], 2, "{st}");
    for row in rows["results"].as_array().unwrap() {
        for k in [
            "mxedge_id",
            "org_id",
            "ap",
            "remote_ip",
            "state",
            "sessions",
            "uptime",
        ] {
            assert!(row.get(k).is_some(), "{k} missing in {row}");
        }
        assert_eq!(row["mxedge_id"], json!(c.edge_id));
    }
    let mut aps: Vec<&str> = rows["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["ap"].as_str())
        .collect();
    aps.sort();
    assert_eq!(aps, ["ap1", "ap2"]);
    let (_, counters) = c.rest("GET", "../../tunterm-cloud/counters", None);
    assert_eq!(counters["unknown_fields"], 0, "{counters}");

    // restart: the daemon execs itself again; the tunnels stay.
    let pid = c.lab.tunterm.pid();
    let t0 = Instant::now();
    let (code, r) = c.rest("POST", &format!("mxedges/{}/restart", c.edge_id), None);
    assert_eq!(code, 200, "{r}\n{}", c.logs());
    println!("restart through REST answered in {:?}: {r}", t0.elapsed());
    assert_eq!(r["restarted"], true, "{r}");
    assert_eq!(r["num_tunnels"], 2, "{r}");
    assert_eq!(c.lab.tunterm.pid(), pid);
    assert_eq!(sessions_up(&c.lab.edge_stats().unwrap()), 2);
    for ap in ["ap1", "ap2"] {
        assert_eq!(c.tunnels_up(ap), 1, "{ap}'s tunnel was rebuilt");
    }
    common::ping_ok(&c.lab, c.lab.client("c1"), "192.168.10.1");
    let restarted = wait_until(Duration::from_secs(5), || {
        !c.events("ME_SERVICE_RESTARTED").is_empty()
    });
    assert!(restarted, "no ME_SERVICE_RESTARTED\n{}", c.logs());
    assert!(c.events("ME_SERVICE_FAILED").is_empty());
    // No systemd here: stop is refused, saying why, and nothing stops.
    let (code, r) = c.rest(
        "POST",
        &format!("mxedges/{}/services/tunterm/stop", c.edge_id),
        None,
    );
    assert_eq!(code, 400, "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("nothing stopped"),
        "{r}"
    );
    assert_eq!(sessions_up(&c.lab.edge_stats().unwrap()), 2);

    // A daemon that dies unasked: ME_SERVICE_FAILED, then STARTED when it
    // runs again (the lab starts it as a service manager would).
    c.lab
        .restart_edge(libc::SIGKILL, Duration::from_millis(500))
        .unwrap();
    let seen = wait_until(Duration::from_secs(10), || {
        !c.events("ME_SERVICE_FAILED").is_empty() && !c.events("ME_SERVICE_STARTED").is_empty()
    });
    assert!(seen, "no ME_SERVICE_FAILED / STARTED\n{}", c.logs());
    let failed = &c.events("ME_SERVICE_FAILED")[0];
    assert_eq!(failed["service"], "tunterm", "{failed}");
    assert!(failed["timestamp"].as_f64() < c.events("ME_SERVICE_STARTED")[0]["timestamp"].as_f64());
    assert!(wait_until(Duration::from_secs(5), || c
        .lab
        .edge_stats()
        .is_ok_and(|s| sessions_up(&s) == 2)));

    // preempt_aps reaches the daemon (this lab names no other edge: it
    // closes nothing, or is refused for want of tunterm_hosts, and says so).
    let ops = |k: &str| {
        c.lab.edge_stats().unwrap()["operations"][k]
            .as_u64()
            .unwrap()
    };
    let asked = ops("preempt_requests") + ops("refused");
    let (code, r) = c.rest(
        "POST",
        &format!("mxtunnels/{}/preempt_aps", c.tunnel_id),
        None,
    );
    println!("preempt_aps: {code} {r}");
    match code {
        200 => assert_eq!(r["preempted_aps"], json!([]), "{r}"),
        400 => assert!(r["detail"].as_str().is_some_and(|d| !d.is_empty()), "{r}"),
        _ => panic!("preempt_aps: {code} {r}\n{}", c.logs()),
    }
    assert_eq!(ops("preempt_requests") + ops("refused"), asked + 1);
    assert_eq!(sessions_up(&c.lab.edge_stats().unwrap()), 2);

    // disconnect_aps: every AP's tunnel is closed (they come back).
    let (code, r) = c.rest(
        "POST",
        &format!("mxedges/{}/services/tunterm/disconnect_aps", c.edge_id),
        Some(json!({"percentage": 100})),
    );
    assert_eq!(code, 200, "{r}\n{}", c.logs());
    let mut gone: Vec<&str> = r["disconnected_aps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    gone.sort();
    assert_eq!(gone, ["ap1", "ap2"], "{r}");
    assert_eq!(
        c.lab.edge_stats().unwrap()["operations"]["aps_disconnected"],
        2
    );
    // The APs saw their tunnels closed and built new ones.
    let back = wait_until(Duration::from_secs(15), || {
        ["ap1", "ap2"].iter().all(|ap| c.tunnels_up(ap) >= 2)
            && c.lab.edge_stats().is_ok_and(|s| sessions_up(&s) == 2)
    });
    assert!(back, "the APs did not reconnect\n{}", c.logs());
    common::ping_ok(&c.lab, c.lab.client("c1"), "192.168.10.1");
}

/// The tunnel (its CCID on the edge) of `ap` in an edge's stats, if up.
fn ccid_of(stats: &Value, ap: &str) -> Option<u64> {
    stats["tunnels"].as_array()?.iter().find(|t| {
        t["ap"] == ap
            && t["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("established"))
    })?["local_ccid"]
        .as_u64()
}

/// `preempt_aps` through the cloud with two edges of one cluster
/// (`lab::failover`'s lab: `tunterm_hosts` [A, B], `ordered`, so every AP
/// prefers A), two mxtunnels, the emulator on the APs' segment and an
/// agent per edge. AP 1 (tunnel 1) is on A; APs 2 (tunnel 1) and 3
/// (tunnel 2) were pointed at B first. `preempt_aps` of tunnel 1 answers
/// exactly AP 2: B closes its tunnel, it reconnects to A (A's stats and
/// the emulator's tunnel rows say so); AP 3 (the other mxtunnel) stays on
/// B and AP 1 keeps its tunnel. Then tunnel 2's sends AP 3 to A, and an
/// mxtunnel the edge does not run is refused and counted.
#[test]
fn preempt_aps_through_rest_sends_that_mxtunnels_aps_to_their_preferred_edge() {
    lab::require_root().unwrap();
    let t0 = Instant::now();
    // No outage is timed here: hellos and the upstream check are given
    // room, so a loaded machine moves no AP but the operator's preempts.
    let opts = FailoverOptions {
        hello_interval: 1.0,
        hello_retries: 5,
        monitor_interval: 0.5,
        monitor_timeout: 5.0,
        ..FailoverOptions::new("cldpre", common::bins())
    };
    let lab =
        FailoverLab::start(opts).unwrap_or_else(|e| panic!("lab cldpre did not start: {e:#}"));
    let (_cloud, op) = Operator::spawn(
        &lab.aps,
        &lab.dir.join("cloud"),
        "10.99.0.2:0",
        Some("10.99.0.2"),
        &lab.dir.join("cloud.log"),
    );
    let logs = || {
        let read = |n: &str| std::fs::read_to_string(lab.dir.join(n)).unwrap_or_default();
        format!(
            "--- agent-a\n{}\n--- agent-b\n{}\n--- cloud\n{}\n--- ap2\n{}\n--- ap3\n{}\n{}",
            read("agent-a.log"),
            read("agent-b.log"),
            read("cloud.log"),
            read("ap2.log"),
            read("ap3.log"),
            lab.logs()
        )
    };
    let rest =
        |method: &str, path: &str, body: Option<Value>| op.rest(&lab.aps, method, path, body);
    let ok = |method: &str, path: &str, body: Value| {
        let (code, v) = rest(method, path, Some(body));
        assert_eq!(code, 200, "{method} {path}: {v}\n{}", logs());
        v
    };

    // The org as the lab runs it: the cluster of A and B, tunnel 1 (the
    // seed's, named "lab" as the APs' Remote End ID), tunnel 2 ("lab2"),
    // edge A (the seed's) and edge B (created here, with its claim code).
    let doc = |i| tunterm_lab::failover::edge_document(&lab.opts, i);
    let (_, clusters) = rest("GET", "mxclusters", None);
    let cluster = clusters[0]["id"].as_str().unwrap().to_string();
    let (_, tunnels) = rest("GET", "mxtunnels", None);
    let one = tunnels[0]["id"].as_str().unwrap().to_string();
    ok(
        "PUT",
        &format!("mxclusters/{cluster}"),
        doc(0)["mxcluster"].clone(),
    );
    ok(
        "PUT",
        &format!("mxtunnels/{one}"),
        doc(0)["mxtunnels"][0].clone(),
    );
    let mut lab2 = doc(0)["mxtunnels"][0].clone();
    lab2["name"] = json!("lab2");
    lab2["mxcluster_ids"] = json!([cluster]);
    let two = ok("POST", "mxtunnels", lab2)["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        "PUT",
        &format!("mxedges/{}", op.edge_id),
        doc(0)["mxedge"].clone(),
    );
    let mut b = doc(1)["mxedge"].clone();
    b["mxcluster_id"] = json!(cluster);
    b["services"] = json!(["tunterm"]);
    let b = ok("POST", "mxedges", b);
    let edge_ids = [op.edge_id.clone(), b["id"].as_str().unwrap().to_string()];
    let claims = [op.claim.clone(), b["magic"].as_str().unwrap().to_string()];
    let _agents: Vec<Proc> = (0..2)
        .map(|i| {
            let letter = ["a", "b"][i];
            op.spawn_agent(
                &lab.edge_ns[i],
                &claims[i],
                &lab.dir.join(format!("agent-{letter}")),
                &lab.edge_socket(i),
                &lab.dir.join(format!("edge-{letter}.json")),
                &lab.dir.join(format!("agent-{letter}.log")),
                &[],
            )
        })
        .collect();
    let synced = wait_until(Duration::from_secs(30), || {
        (0..2).all(|i| op.synced(&lab.aps, &edge_ids[i], lab.edge_stats(i)))
    });
    assert!(
        synced,
        "the edges did not take the cloud's configuration\n{}",
        logs()
    );
    assert_eq!(lab.ap_edge().unwrap(), (0, true), "AP 1 is on A");

    // APs 2 and 3 come up on B (their simulators try B first).
    const AP2: &str = "5c5b35000002";
    const AP3: &str = "5c5b35000003";
    let _ap2 = lab
        .spawn_ap(
            "ap2",
            &format!("name={AP2},ip=10.99.0.5"),
            &["--hosts-order", "1,0"],
        )
        .unwrap();
    let _ap3 = lab
        .spawn_ap(
            "ap3",
            &format!("name={AP3},ip=10.99.0.6"),
            &["--hosts-order", "1,0", "--remote-end-id", "lab2"],
        )
        .unwrap();
    let on =
        |tag: &str, ap: &str, edge: usize| lab.ap_edge_of(tag, ap).is_ok_and(|e| e == (edge, true));
    let up = wait_until(Duration::from_secs(10), || {
        on("ap2", AP2, 1) && on("ap3", AP3, 1)
    });
    assert!(up, "APs 2 and 3 did not come up on B\n{}", logs());
    // The emulator's rows: who is where, on which mxtunnel.
    let row = |ap: &str| {
        let (_, rows) = rest("GET", &format!("stats/tunnels/search?ap={ap}"), None);
        rows["results"][0].clone()
    };
    let placed = |ap: &str, edge: usize, tunnel: &str| {
        let r = row(ap);
        r["mxedge_id"] == edge_ids[edge].as_str() && r["mxtunnel_id"] == tunnel
    };
    let rows = wait_until(Duration::from_secs(10), || {
        placed(AP_NAME, 0, &one) && placed(AP2, 1, &one) && placed(AP3, 1, &two)
    });
    let all_rows = || rest("GET", "stats/tunnels/search", None).1;
    assert!(
        rows,
        "tunnel rows (edges {edge_ids:?}, tunnels {one} {two}): {:#}\n{}",
        all_rows(),
        logs()
    );
    let ap1_ccid = ccid_of(&lab.edge_stats(0).unwrap(), AP_NAME);
    let ap3_ccid = ccid_of(&lab.edge_stats(1).unwrap(), AP3);
    assert!(ap1_ccid.is_some() && ap3_ccid.is_some());

    // The operator preempts tunnel 1: exactly AP 2, which goes to A.
    let t = Instant::now();
    let (code, r) = rest("POST", &format!("mxtunnels/{one}/preempt_aps"), None);
    assert_eq!(
        (code, r.clone()),
        (200, json!({"preempted_aps": [AP2]})),
        "{}",
        logs()
    );
    let moved = wait_until(Duration::from_secs(10), || on("ap2", AP2, 0));
    assert!(moved, "AP 2 did not reconnect to A\n{}", logs());
    println!(
        "preempt_aps of tunnel 1: {r}; AP 2 on A after {:?}",
        t.elapsed()
    );
    let a = lab.edge_stats(0).unwrap();
    assert!(
        ccid_of(&a, AP2).is_some(),
        "AP 2 not in A's tunnels: {:#}",
        a["tunnels"]
    );
    assert_eq!(
        ccid_of(&a, AP_NAME),
        ap1_ccid,
        "AP 1's tunnel on A was rebuilt"
    );
    assert_eq!(
        ccid_of(&lab.edge_stats(1).unwrap(), AP3),
        ap3_ccid,
        "AP 3 was touched"
    );
    assert!(on("ap3", AP3, 1), "AP 3 (the other mxtunnel) left B");
    let ops = |i: usize| lab.edge_stats(i).unwrap()["operations"].clone();
    let (oa, ob) = (ops(0), ops(1));
    assert_eq!(
        (
            &oa["preempt_requests"],
            &oa["aps_preempted"],
            &ob["preempt_requests"],
            &ob["aps_preempted"]
        ),
        (&json!(1), &json!(0), &json!(1), &json!(1)),
        "A: {oa}, B: {ob}"
    );
    let tunnels_up = |tag: &str, ap: &str| {
        query_apsim(&lab.dir.join(format!("{tag}.sock"))).unwrap()["per_ap"][ap]["tunnels_up"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        (
            tunnels_up("ap", AP_NAME),
            tunnels_up("ap2", AP2),
            tunnels_up("ap3", AP3)
        ),
        (1, 2, 1),
        "tunnels each AP brought up"
    );
    let rows = wait_until(Duration::from_secs(10), || {
        placed(AP_NAME, 0, &one) && placed(AP2, 0, &one) && placed(AP3, 1, &two)
    });
    assert!(
        rows,
        "tunnel rows (edges {edge_ids:?}, tunnels {one} {two}): {:#}\n{}",
        all_rows(),
        logs()
    );

    // Tunnel 2's turn: AP 3 goes to A.
    let (code, r) = rest("POST", &format!("mxtunnels/{two}/preempt_aps"), None);
    assert_eq!(
        (code, r),
        (200, json!({"preempted_aps": [AP3]})),
        "{}",
        logs()
    );
    let moved = wait_until(Duration::from_secs(10), || on("ap3", AP3, 0));
    assert!(moved, "AP 3 did not reconnect to A\n{}", logs());
    assert_eq!(ccid_of(&lab.edge_stats(0).unwrap(), AP_NAME), ap1_ccid);

    // An mxtunnel the edge does not run: refused with the reason, counted.
    let refused = ops(1)["refused"].as_u64().unwrap();
    let sock = lab.edge_socket(1);
    let e = lab.edge_ns[1]
        .run(&[
            common::bins().tunterm.to_str().unwrap(),
            "preempt",
            "--mxtunnel-id",
            "no-such-tunnel",
            "--control-socket",
            sock.to_str().unwrap(),
        ])
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(r#"mxtunnel "no-such-tunnel" is not run by this edge"#),
        "{e}"
    );
    assert_eq!(ops(1)["refused"].as_u64().unwrap(), refused + 1);
    println!(
        "two edges, preempt_aps through REST: {:?} in all",
        t0.elapsed()
    );
}

/// A `ping -D -O` of `c1` to the upstream host every `interval`, as many
/// as fit in `seconds`, while `during` runs: its output once every reply
/// came back or 2 s after the last request.
fn ping_during(c: &CloudLab, interval: &str, seconds: u32, during: impl FnOnce()) -> String {
    let log = c.lab.dir.join("ping-during.log");
    // A count, after whose last request ping waits up to 2 s (`-W`) for
    // the replies still out: `-w SECONDS` stops at the deadline and counts
    // the request then in flight as lost (a run failed on one ping "lost"
    // that way).
    let count = (f64::from(seconds) / interval.parse::<f64>().unwrap()).round() as u64;
    let count = count.to_string();
    let mut ping = c
        .lab
        .client("c1")
        .spawn(
            &[
                "ping",
                "-n",
                "-D",
                "-O",
                "-i",
                interval,
                "-c",
                &count,
                "-W",
                "2",
                "192.168.10.1",
            ],
            &log,
        )
        .unwrap();
    during();
    // The count can take longer than `seconds`: this machine's timers
    // stretch short intervals (0.01 s came out at 0.016 s).
    let done = ping.wait_exit(Duration::from_secs(2 * u64::from(seconds) + 5));
    assert!(done.is_some(), "ping did not end");
    std::fs::read_to_string(&log).unwrap()
}

/// `(transmitted, received)` of a ping's summary line.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in\n{out}"));
    let n = |i: usize| {
        line.split(", ")
            .nth(i)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (n(0), n(1))
}

/// With the XDP fast path on: `restart` through REST loses not one of
/// c1's 100 pings a second (counted at the sender: each is a frame through
/// XDP to the upstream host and one back) and rebuilds no tunnel; then
/// `bounce_port` through REST takes ap0 down for its hold_time (the
/// answer names it, the link is down, the pings stop for about that long)
/// and brings it back.
#[test]
fn restart_with_the_fast_path_and_bounce_port_through_rest() {
    lab::require_root().unwrap();
    let opts = Options {
        fast_path: "xdp-native".into(),
        ..Options::new("cldfast", common::bins())
    };
    let c = CloudLab::start_with(opts, &[]);
    let fp = |k: &str| {
        c.lab.edge_stats().unwrap()["fast_path"]["counters"][k]
            .as_u64()
            .unwrap()
    };
    // Both MACs learned and mirrored: from here c1's pings go through XDP.
    let warm = wait_until(Duration::from_secs(10), || {
        lab::ping(c.lab.client("c1"), "192.168.10.1", 2).is_ok_and(|p| p.received == 2)
    });
    assert!(warm, "c1 does not reach upstream\n{}", c.logs());
    std::thread::sleep(Duration::from_millis(300));

    let redirected = (fp("ap_redirect"), fp("trunk_redirect"));
    let pid = c.lab.tunterm.pid();
    let mut answer = Value::Null;
    let out = ping_during(&c, "0.01", 6, || {
        std::thread::sleep(Duration::from_secs(2));
        let (code, r) = c.rest("POST", &format!("mxedges/{}/restart", c.edge_id), None);
        assert_eq!(code, 200, "{r}\n{}", c.logs());
        answer = r;
    });
    println!("restart through REST: {answer}");
    assert_eq!(answer["restarted"], true, "{answer}");
    assert_eq!(c.lab.tunterm.pid(), pid);
    let (sent, received) = ping_counts(&out);
    println!("pings during the restart: {sent} sent, {received} answered");
    assert!(sent >= 300, "{out}");
    assert_eq!(received, sent, "pings lost across the restart:\n{out}");
    // They went through XDP, both ways (the ping's own frames, at least).
    let (up, down) = (
        fp("ap_redirect") - redirected.0,
        fp("trunk_redirect") - redirected.1,
    );
    assert!(
        up >= sent && down >= sent,
        "AP→trunk {up}, trunk→AP {down} in XDP for {sent} pings"
    );
    let st = c.lab.edge_stats().unwrap();
    assert!(
        st["fast_path"]["start"]
            .as_str()
            .is_some_and(|s| s.starts_with("adopted")),
        "{:#}",
        st["fast_path"]
    );
    for ap in ["ap1", "ap2"] {
        assert_eq!(c.tunnels_up(ap), 1, "{ap}'s tunnel was rebuilt");
    }

    // bounce_port: Mist port "0" (ap0, the APs' link) down for 2 s.
    let link_up = || {
        let out = c
            .lab
            .edge
            .run(&["ip", "-o", "link", "show", "ap0"])
            .unwrap();
        out.contains(",UP") || out.contains("<UP")
    };
    assert!(link_up());
    let mut down_at = None;
    let out = ping_during(&c, "0.05", 8, || {
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        let (code, r) = c.rest(
            "POST",
            &format!("mxedges/{}/services/tunterm/bounce_port", c.edge_id),
            Some(json!({"ports": ["0"], "hold_time": 2000})),
        );
        assert_eq!(code, 200, "{r}\n{}", c.logs());
        println!(
            "bounce_port through REST answered in {:?}: {r}",
            t0.elapsed()
        );
        assert_eq!(r["ports"][0]["ifname"], "ap0", "{r}");
        assert_eq!(r["ports"][0]["port"], "0", "{r}");
        assert_eq!(r["hold_time"], 2000, "{r}");
        assert!(!link_up(), "ap0 is down during the bounce");
        assert!(
            wait_until(Duration::from_secs(5), link_up),
            "ap0 back up\n{}",
            c.logs()
        );
        down_at = Some(t0.elapsed());
    });
    let down_for = down_at.unwrap();
    assert!(down_for >= Duration::from_millis(1900), "{down_for:?}");
    let replies = tunterm_lab::failover::ping_replies(&out);
    let (gap, a, b) = tunterm_lab::failover::longest_gap(&replies).unwrap();
    println!(
        "bounce_port 2000 ms: ap0 up again after {down_for:?}; longest ping gap {gap:.2} s (seq {a} -> {b})"
    );
    assert!(
        (1.8..6.0).contains(&gap),
        "the pings' gap ({gap:.2} s) is not about the hold time:\n{out}"
    );
    let back = wait_until(Duration::from_secs(15), || {
        lab::ping(c.lab.client("c1"), "192.168.10.1", 1).is_ok_and(|p| p.received == 1)
    });
    assert!(back, "c1 after the bounce\n{}", c.logs());
    let st = c.lab.edge_stats().unwrap();
    assert_eq!(st["bounce"]["port_bounces"], 1, "{}", st["bounce"]);
    assert_eq!(st["bounce"]["ports_down"], 0, "{}", st["bounce"]);
}

/// A CONNECT proxy on the edge's loopback that counts its tunnels.
fn connect_proxy(c: &CloudLab) -> (u16, Arc<AtomicU32>) {
    let count = Arc::new(AtomicU32::new(0));
    let n = count.clone();
    // Threads started in the namespace stay in it: the proxy's outbound
    // connections reach the emulator on the edge's loopback.
    let port = c
        .lab
        .edge
        .enter(move || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let n = n.clone();
                    std::thread::spawn(move || proxy_one(conn, &n));
                }
            });
            port
        })
        .unwrap();
    (port, count)
}

/// One CONNECT: read the request head, connect, answer 200, relay.
fn proxy_one(conn: std::net::TcpStream, n: &AtomicU32) {
    let mut rd = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    let target = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let Ok(mut up) = std::net::TcpStream::connect(&target) else {
        return;
    };
    n.fetch_add(1, Ordering::Relaxed);
    let mut down = conn;
    down.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    let mut to_up = up.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut rd, &mut to_up);
        let _ = to_up.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up, &mut down);
    let _ = down.shutdown(std::net::Shutdown::Write);
}

#[test]
fn the_agent_goes_through_a_proxy_and_reverts_one_that_leads_nowhere() {
    lab::require_root().unwrap();
    let c = CloudLab::start("cldproxy", &["--auto-revert-after", "4"]);
    let (port, connects) = connect_proxy(&c);
    let edge = format!("mxedges/{}", c.edge_id);
    // Through the test's proxy: the agent reconnects through it.
    c.ok(
        "PUT",
        &edge,
        json!({"proxy": {"url": format!("http://127.0.0.1:{port}/")}}),
    );
    let through = wait_until(Duration::from_secs(10), || {
        connects.load(Ordering::Relaxed) >= 1
            && c.rest("GET", &format!("stats/mxedges/{}", c.edge_id), None)
                .1["status"]
                == "connected"
    });
    assert!(
        through,
        "the agent did not reconnect through the proxy\n{}",
        c.logs()
    );
    let good = c.lab.edge_stats().unwrap()["config_digest"].clone();

    // A proxy that leads nowhere: applied, the cloud is lost, and after 4 s
    // the previous configuration is back; the revert is reported.
    c.ok(
        "PUT",
        &edge,
        json!({"proxy": {"url": "http://127.0.0.1:9/"}}),
    );
    let reverted = wait_until(Duration::from_secs(20), || {
        !c.events("TT_CONFIG_REVERTED").is_empty()
    });
    assert!(reverted, "no TT_CONFIG_REVERTED\n{}", c.logs());
    let e = &c.events("TT_CONFIG_REVERTED")[0];
    assert_eq!(e["config_digest"], good, "{e}");
    assert_eq!(c.lab.edge_stats().unwrap()["config_digest"], good);
    // The same configuration pushed again (at the reconnect) is refused.
    let refused = wait_until(Duration::from_secs(5), || {
        c.events("TT_CONFIG_REFUSED").iter().any(|e| {
            e["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("reverted"))
        })
    });
    assert!(refused, "{}", c.logs());
    assert_eq!(c.lab.edge_stats().unwrap()["config_digest"], good);
    assert_eq!(sessions_up(&c.lab.edge_stats().unwrap()), 2);
}

#[test]
fn with_the_cloud_gone_30_s_pings_go_on_and_spooled_events_arrive_in_order() {
    lab::require_root().unwrap();
    let mut c = CloudLab::start("cldgone", &[]);
    let port = c.op.url.rsplit(':').next().unwrap().to_string();
    let pinger = c
        .lab
        .client("c1")
        .spawn(
            &[
                "ping",
                "-n",
                "-c",
                "300",
                "-i",
                "0.1",
                "-W",
                "1",
                "192.168.10.1",
            ],
            &c.lab.dir.join("ping.log"),
        )
        .unwrap();
    let mut pinger = pinger;
    let reloads_before = c.events("TT_CONFIG_RELOAD").len();
    c.cloud.kill9().unwrap();
    let gone = Instant::now();
    // Meanwhile the daemon reloads its configuration three times: events
    // to spool (SIGHUP touches no tunnel).
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        c.lab.tunterm.signal(libc::SIGHUP).unwrap();
    }
    std::thread::sleep(Duration::from_secs(30).saturating_sub(gone.elapsed()));
    (c.cloud, _) = Operator::spawn(
        &c.lab.edge,
        &c.lab.dir.join("cloud"),
        &format!("127.0.0.1:{port}"),
        None,
        &c.lab.dir.join("cloud-2.log"),
    );
    let status = pinger
        .wait_exit(Duration::from_secs(40))
        .expect("ping did not end");
    let log = std::fs::read_to_string(pinger.log()).unwrap();
    assert!(
        status.success() && log.contains("300 received"),
        "pings lost while the cloud was away:\n{log}"
    );
    // The agent's backoff (at most 60 s) brings it back; the spooled
    // events arrive, in the order they happened.
    let arrived = wait_until(Duration::from_secs(70), || {
        c.events("TT_CONFIG_RELOAD").len() >= reloads_before + 3
    });
    assert!(arrived, "spooled events did not arrive\n{}", c.logs());
    let reloads = c.events("TT_CONFIG_RELOAD");
    let times: Vec<f64> = reloads[reloads_before..]
        .iter()
        .map(|e| e["timestamp"].as_f64().unwrap())
        .collect();
    let away = gone_epoch(gone);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(
        times[0] > away && times[2] < away + 30.0,
        "{times:?} not while the cloud was away ({away})"
    );
    assert!(
        reloads[reloads_before..].iter().all(|e| e["ok"] == true),
        "{reloads:?}"
    );
}

/// An `Instant` in the past as epoch seconds.
fn gone_epoch(at: Instant) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    now - at.elapsed().as_secs_f64()
}

#[test]
fn a_tzsp_capture_started_through_rest_is_decoded_by_tshark() {
    lab::require_root().unwrap();
    let mut opts = Options::new("cldcap", common::bins());
    opts.capture = true;
    let mut c = CloudLab::start_with(opts, &[]);
    // The collector: a socket on ap1's address (the AP link's capture shows
    // the datagrams as the network carried them).
    let rx = c
        .lab
        .aps
        .enter(|| std::net::UdpSocket::bind("10.99.0.2:37008"))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut edges = serde_json::Map::new();
    edges.insert(
        c.edge_id.clone(),
        json!({"interfaces": {"trunk": {"tcpdump_expression": "vlan and icmp"}}}),
    );
    let (code, r) = c.rest(
        "POST",
        "pcaps/capture",
        Some(json!({"type": "mxedge", "mxedges": edges, "format": "tzsp",
                    "tzsp_host": "10.99.0.2", "num_packets": 6, "max_pkt_len": 2048})),
    );
    assert_eq!(code, 200, "{r}\n{}", c.logs());
    common::ping_ok(&c.lab, c.lab.client("c1"), "192.168.10.1");
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.recv(&mut buf) {
        let t = tunterm_core::wire::tzsp::parse(&buf[..n]).expect("a TZSP datagram");
        assert_eq!((t.version, t.kind, t.encap), (1, 0, 1));
        got += 1;
    }
    assert_eq!(got, 6, "TZSP datagrams at the collector\n{}", c.logs());
    let (code, _) = c.rest("DELETE", "pcaps/capture", None);
    assert_eq!(code, 200);
    let pcap = c.lab.ap_capture.take().unwrap().stop().unwrap();
    let rows =
        lab::tshark_fields(&pcap, &[], "tzsp", &["tzsp.encap", "vlan.id", "icmp.type"]).unwrap();
    assert_eq!(rows.len(), 6, "tshark's TZSP: {rows:?}");
    for r in &rows {
        assert_eq!((r[0].as_str(), r[1].as_str()), ("1", "10"), "{r:?}");
        assert!(r[2] == "8" || r[2] == "0", "ICMP inside: {r:?}");
    }
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An emulator on the root namespace's loopback: (process, started.json).
fn loopback_cloud(dir: &Path) -> (Child, Value) {
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let child = std::process::Command::new(bin("tunterm-cloud"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = Child(child);
    let file = dir.join("started.json");
    assert!(
        wait_until(Duration::from_secs(20), || file.exists()),
        "no {}",
        file.display()
    );
    std::thread::sleep(Duration::from_millis(100));
    let started = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    (child, started)
}

#[test]
fn a_wrong_claim_code_and_a_wrong_ca_are_refused_clearly() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cldbad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_a, a) = loopback_cloud(&dir.join("a"));
    let (b_proc, b) = loopback_cloud(&dir.join("b"));
    drop(b_proc);
    let agent = |ca: &str, claim: &str| {
        let out = std::process::Command::new(bin("tunterm-agent"))
            .args([
                "--cloud",
                a["url"].as_str().unwrap(),
                "--ca",
                ca,
                "--claim-code",
                claim,
            ])
            .arg("--state-dir")
            .arg(dir.join("agent"))
            .arg("--control-socket")
            .arg(dir.join("no-daemon.sock"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "the agent went on");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = agent(a["ca"].as_str().unwrap(), "not-the-claim-code");
    assert!(
        e.contains("registration refused") && e.contains("claim code not recognised"),
        "{e}"
    );
    let e = agent(b["ca"].as_str().unwrap(), a["claim_code"].as_str().unwrap());
    assert!(
        e.contains("is --ca the cloud's CA?") && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(
        !dir.join("agent/state.json").exists(),
        "no registration kept"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A websocket subscriber to the emulator's `/api-ws/v1/stream` (Python's
/// standard library: no websocket client is packaged here): prints every
/// text frame on a line; exits after `want` `data` messages.
const STREAM_CLIENT: &str = r#"
import base64, json, os, socket, ssl, struct, sys
host, port, token, ca, channel, want = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /api-ws/v1/stream HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Token %s\r\n\r\n"
           % (host, port, key, token)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
head, buf = buf.split(b"\r\n\r\n", 1)
assert b" 101 " in head.split(b"\r\n")[0], head
def send(op, data):
    mask = os.urandom(4)
    n = len(data)
    hdr = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
def exact(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    out, buf = buf[:n], buf[n:]
    return out
def frame():
    b0, b1 = exact(2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    if b1 & 0x80:
        exact(4)
    return b0 & 0x0f, exact(n)
send(1, json.dumps({"subscribe": channel}).encode())
s.settimeout(30)
got = 0
while got < want:
    op, payload = frame()
    if op == 1:
        print(payload.decode(), flush=True)
        if json.loads(payload).get("event") == "data":
            got += 1
    elif op == 9:
        send(10, payload)
    elif op == 8:
        break
"#;

#[test]
fn a_stream_capture_reaches_a_websocket_subscriber_as_pcap_raw_that_decodes() {
    lab::require_root().unwrap();
    let c = CloudLab::start("cldstream", &[]);
    let script = c.lab.dir.join("stream.py");
    std::fs::write(&script, STREAM_CLIENT).unwrap();
    let port = c.op.url.rsplit(':').next().unwrap().to_string();
    let channel = format!("/orgs/{}/pcaps", c.op.org);
    let mut sub = c
        .lab
        .edge
        .spawn(
            &[
                "python3",
                script.to_str().unwrap(),
                "127.0.0.1",
                &port,
                &c.op.token,
                c.op.ca.to_str().unwrap(),
                &channel,
                "6",
            ],
            &c.lab.dir.join("stream.log"),
        )
        .unwrap();
    sub.wait_for_log("channel_subscribed", Duration::from_secs(10))
        .unwrap();
    let mut edges = serde_json::Map::new();
    edges.insert(
        c.edge_id.clone(),
        json!({"interfaces": {"trunk": {"tcpdump_expression": "vlan and icmp"}}}),
    );
    let (code, r) = c.rest(
        "POST",
        "pcaps/capture",
        Some(json!({"type": "mxedge", "mxedges": edges, "num_packets": 6, "max_pkt_len": 2048})),
    );
    assert_eq!(code, 200, "{r}\n{}", c.logs());
    common::ping_ok(&c.lab, c.lab.client("c1"), "192.168.10.1");
    let status = sub.wait_exit(Duration::from_secs(20));
    let text = std::fs::read_to_string(sub.log()).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "subscriber: {text}\n{}",
        c.logs()
    );
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["event"] == "data")
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data.len(), 6, "{text}");
    let mut pcap = Vec::new();
    for d in &data {
        let dict = &d["pcap_dict"];
        assert_eq!(dict["mxedge_id"], json!(c.edge_id), "{d}");
        assert_eq!(
            (dict["vlan"].clone(), dict["protocol"].clone()),
            (json!(10), json!("ICMP")),
            "{d}"
        );
        assert_eq!(dict["interface"], "trunk", "{d}");
        let raw = base64_decode(d["pcap_raw"].as_str().unwrap());
        assert_eq!(&raw[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a pcap file");
        // One file: the first header, then each one's record.
        if pcap.is_empty() {
            pcap.extend_from_slice(&raw[..24]);
        }
        pcap.extend_from_slice(&raw[24..]);
    }
    let file = c.lab.dir.join("stream.pcap");
    std::fs::write(&file, &pcap).unwrap();
    let rows = lab::tshark_fields(
        &file,
        &[],
        "icmp",
        &["vlan.id", "icmp.type", "ip.src", "ip.dst"],
    )
    .unwrap();
    assert_eq!(rows.len(), 6, "tshark on pcap_raw: {rows:?}");
    for r in &rows {
        assert_eq!(r[0], "10", "{r:?}");
        assert!(r[1] == "8" || r[1] == "0", "{r:?}");
    }
}

/// Standard base64 (the test's judge of `pcap_raw`, written apart from the
/// agent's encoder).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
