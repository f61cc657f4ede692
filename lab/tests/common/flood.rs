//! Flood fixtures of lab_flood and lab_overload: junk senders at the edge's
//! L2TP/UDP port, and reading the edge's stats and CPU through a flood.

use std::collections::BTreeSet;
use std::time::Duration;

use tunterm_lab::Proc;
use tunterm_lab::topology::Lab;

use super::bins;

/// The counter at `path` in a stats answer.
pub fn u(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{} missing from the stats", path.join(".")))
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
