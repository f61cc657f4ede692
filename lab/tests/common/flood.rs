//! Flood fixtures of lab_flood and lab_overload: junk senders at the edge's
//! L2TP/UDP port, and reading the edge's stats and CPU through a flood.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use tunterm_lab::topology::{Lab, Options, query_apsim, sessions_up};
use tunterm_lab::{self as lab, Proc};

use super::bins;

/// APs of the extra simulator.
pub const MANY: u64 = 200;

/// The standard lab (namespace prefix from `name`) plus [`MANY`] simulated
/// APs on 10.99.0.4 (hello 1 s × 3, L2TPv3/UDP), every tunnel up.
pub struct ManyAps {
    pub lab: Lab,
    /// The simulator's control socket.
    pub sock: PathBuf,
    pub _apsim: Proc,
    /// The edge's established tunnels (local CCIDs) once all are up.
    pub tunnels: BTreeSet<u64>,
}

impl ManyAps {
    pub fn start(name: &str) -> ManyAps {
        let mut opts = Options::new(name, bins());
        // The APs share one address: no per-source limit on their SCCRQs.
        opts.daemon_args = vec!["--sccrq-burst".into(), "0".into()];
        let lab = Lab::start(opts).unwrap_or_else(|e| panic!("lab did not start: {e:#}"));
        lab.aps
            .run(&["ip", "addr", "add", "10.99.0.4/24", "dev", "e0"])
            .unwrap();
        let sock = lab.dir.join("many.sock");
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let apsim = lab
            .aps
            .spawn(
                &[
                    &s(&bins().apsim),
                    "--edge",
                    "10.99.0.1",
                    "--count",
                    &MANY.to_string(),
                    "--local-ip",
                    "10.99.0.4",
                    "--hello-interval",
                    "1",
                    "--hello-retries",
                    "3",
                    "--control-socket",
                    &s(&sock),
                    "--events",
                ],
                &lab.dir.join("many.log"),
            )
            .unwrap();
        let total = MANY as usize + 2;
        let up = lab::wait_until(Duration::from_secs(60), || {
            lab.edge_stats().is_ok_and(|st| sessions_up(&st) == total)
        });
        assert!(up, "{total} sessions did not come up\n{}", lab.logs());
        let tunnels = established(&lab.edge_stats().unwrap());
        assert_eq!(tunnels.len(), total);
        ManyAps {
            lab,
            sock,
            _apsim: apsim,
            tunnels,
        }
    }

    /// Failovers, and APs whose tunnel is not the one they had, over
    /// every AP (the simulator's and ap1, ap2).
    pub fn failovers_and_rebuilt(&self) -> (u64, u64) {
        let many = query_apsim(&self.sock).unwrap();
        let (mut failovers, mut rebuilt) = (0, 0);
        for (ap, a) in many["per_ap"].as_object().unwrap() {
            failovers += a["failovers"].as_u64().unwrap();
            if a["tunnels_up"] != 1 {
                rebuilt += 1;
                eprintln!("{ap}: {a}");
            }
        }
        for ap in ["ap1", "ap2"] {
            let a = &self.lab.ap_stats(ap).unwrap()["per_ap"][ap];
            failovers += a["failovers"].as_u64().unwrap();
            rebuilt += u64::from(a["tunnels_up"] != 1);
        }
        (failovers, rebuilt)
    }
}

/// The counter at `path` in a stats answer.
pub fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{} missing from the stats", path.join(".")))
}

/// Frames and packets the forwarding workers dropped at the full hand-over
/// queue to the event loop, all workers (0 without workers).
pub fn punt_dropped(stats: &serde_json::Value) -> u64 {
    stats["workers"]["per_worker"]
        .as_array()
        .map_or(0, |w| w.iter().map(|k| u(k, &["punt_dropped"])).sum())
}

/// The local CCIDs of the established tunnels.
pub fn established(stats: &serde_json::Value) -> BTreeSet<u64> {
    stats["tunnels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["state"]
                .as_str()
                .unwrap_or_default()
                .starts_with("established")
        })
        .map(|t| t["local_ccid"].as_u64().unwrap_or_default())
        .collect()
}

/// Junk sender `i` of `kind` for `secs` seconds (Ethernet frames straight
/// onto the AP link, to the edge's MAC `edge_mac`).
pub fn junk(lab: &Lab, kind: &str, i: usize, secs: u64, edge_mac: &str) -> Proc {
    let apsim = bins().apsim.to_string_lossy().into_owned();
    let secs = secs.to_string();
    let port = (20000 + 64 * i).to_string();
    let ports = format!("{port}-{port}");
    lab.aps
        .spawn(
            &[
                &apsim,
                "--edge",
                "10.99.0.1",
                "--junk",
                kind,
                "--flood-seconds",
                &secs,
                "--flood-src",
                "10.99.0.128/25",
                "--flood-ports",
                &ports,
                "--junk-iface",
                "e0",
                "--junk-dst-mac",
                edge_mac,
            ],
            &lab.dir.join(format!("junk-{kind}-{i}.log")),
        )
        .expect("junk sender starts")
}

/// Seconds a process has run on a CPU and waited for one
/// (`/proc/PID/schedstat`): how much of the machine it got.
pub fn cpu(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(0.0) / 1e9);
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

/// A sender's JSON report (its last line) once it has exited.
pub fn report(mut p: Proc) -> serde_json::Value {
    let status = p.wait_exit(Duration::from_secs(30)).expect("junk ends");
    let log = std::fs::read_to_string(p.log()).unwrap_or_default();
    assert!(status.success(), "junk sender failed: {log}");
    let last = log.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("junk report {last:?}: {e}"))
}

/// The machine's load averages (`/proc/loadavg`).
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}
