//! The two-edge lab: one simulated AP (named by its MAC) with a client
//! behind it, two tunterm edges of one cluster, both reachable from the AP
//! and both trunked into one upstream L2 segment.
//!
//! ```text
//!                         aps ns                 edge-a ns              up ns
//!  c1 192.168.10.11 ── c1 ┐  br0 10.99.0.2 ─ ea0 ── ap0 tunterm A trunk0 ── ta ┐ br0
//!  (untagged, VLAN 10)    │  (Linux bridge)                10.99.0.1           ├── th ═ t0 vlan-host
//!     tunterm-apsim ──────┘               └─ eb0 ── ap0 tunterm B trunk0 ── tb ┘     v10 .10.1
//!                                                          10.99.0.4               v20 .20.1
//! ```
//!
//! `tunterm_hosts` is `[10.99.0.1, 10.99.0.4]`, selection `ordered`: the AP
//! prefers A. Both edges monitor the upstream with an ARP check for
//! 192.168.10.1 on VLAN 10, each edge's own probes from its own MAC.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::topology::{Binaries, edge_config, query, query_apsim, query_fdb};
use super::{Netns, Proc, addr, spawn_vlan_host, veth};

/// The AP's name: its MAC (what preemption orders the edges by).
pub const AP_NAME: &str = "5c5b35000001";
/// The edges' tunnel addresses, in `tunterm_hosts` order.
pub const EDGES: [&str; 2] = ["10.99.0.1", "10.99.0.4"];
/// The monitored (and pinged) host upstream, on VLAN 10.
pub const UPSTREAM_HOST: &str = "192.168.10.1";

/// Knobs of the two-edge lab.
#[derive(Clone, Debug)]
pub struct FailoverOptions {
    /// Test name (namespace prefix and directory).
    pub name: String,
    /// Programs to run.
    pub bins: Binaries,
    /// HELLO interval, seconds (edges and AP).
    pub hello_interval: f64,
    /// Missed hellos before the AP moves on.
    pub hello_retries: u32,
    /// `--monitor-interval` of the edges, seconds.
    pub monitor_interval: f64,
    /// `--monitor-timeout` of the edges, seconds.
    pub monitor_timeout: f64,
    /// tunterm's `--fast-path` (default: `$TUNTERM_LAB_FAST_PATH`, else off).
    pub fast_path: String,
    /// mGRE instead of L2TPv3/UDP: the AP sends keepalives every hello
    /// interval and gives an edge up after hello_retries unanswered.
    pub gre: bool,
}

impl FailoverOptions {
    /// Hello 0.5 s (the API's least) × 3, monitoring every 0.1 s, failed after 0.5 s.
    pub fn new(name: &str, bins: Binaries) -> FailoverOptions {
        FailoverOptions {
            name: name.into(),
            bins,
            hello_interval: 0.5,
            hello_retries: 3,
            monitor_interval: 0.1,
            monitor_timeout: 0.5,
            fast_path: std::env::var("TUNTERM_LAB_FAST_PATH").unwrap_or_else(|_| "off".into()),
            gre: false,
        }
    }
}

/// A running two-edge lab; dropping it stops everything and removes every
/// namespace.
pub struct FailoverLab {
    /// What it was built with.
    pub opts: FailoverOptions,
    /// The edges' daemons (A, B); None once killed.
    pub edges: [Option<Proc>; 2],
    /// The AP simulator.
    pub ap: Proc,
    /// The upstream VLAN host.
    pub vlanhost: Proc,
    /// Pass-through XDP programs (fast path on only).
    pub xdp_pass: Vec<Proc>,
    /// Namespaces of the edges (A, B).
    pub edge_ns: [Netns; 2],
    /// Namespace of the AP.
    pub aps: Netns,
    /// Namespace of the upstream segment and host.
    pub up: Netns,
    /// The client behind the AP.
    pub client: Netns,
    /// Logs and configurations.
    pub dir: super::LogDir,
}

impl FailoverLab {
    /// Build it, start both edges and the AP, and wait until the AP's
    /// session is up on edge A.
    pub fn start(opts: FailoverOptions) -> anyhow::Result<FailoverLab> {
        let (prefix, dir) = super::begin(&opts.name)?;
        let ns = |n: &str| Netns::new(&format!("{prefix}{n}"));
        let edge_ns = [ns("ea")?, ns("eb")?];
        let aps = ns("aps")?;
        let up = ns("up")?;
        let client = ns("c1")?;

        // The AP side: one L2 segment (a bridge in the APs' namespace).
        aps.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
        aps.run(&["ip", "link", "set", "br0", "up"])?;
        up.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
        up.run(&["ip", "link", "set", "br0", "up"])?;
        for (e, (ap_if, up_if)) in edge_ns.iter().zip([("ea0", "ta"), ("eb0", "tb")]) {
            veth(&aps, ap_if, e, "ap0")?;
            aps.run(&["ip", "link", "set", ap_if, "master", "br0"])?;
            veth(e, "trunk0", &up, up_if)?;
            up.run(&["ip", "link", "set", up_if, "master", "br0"])?;
        }
        addr(&edge_ns[0], "ap0", &format!("{}/24", EDGES[0]))?;
        addr(&edge_ns[1], "ap0", &format!("{}/24", EDGES[1]))?;
        addr(&aps, "br0", "10.99.0.2/24")?;
        veth(&up, "th", &up, "t0")?;
        up.run(&["ip", "link", "set", "th", "master", "br0"])?;
        veth(&aps, "c1", &client, "eth0")?;
        addr(&client, "eth0", "192.168.10.11/24")?;
        // Finished checksums into the tunnel (see topology.rs).
        client.run(&["ethtool", "-K", "eth0", "tx", "off"])?;

        let s = |p: &Path| p.to_string_lossy().into_owned();
        let lab_bin = s(&opts.bins.lab);
        let fast = opts.fast_path != "off";
        let vlanhost = spawn_vlan_host(
            &up,
            &opts.bins.lab,
            &["10=192.168.10.1/24", "20=192.168.20.1/24"],
            fast,
            &dir.join("vlanhost.log"),
        )?;
        let mut xdp_pass = Vec::new();
        let mut edges = [None, None];
        for (i, e) in edge_ns.iter().enumerate() {
            let letter = ["a", "b"][i];
            let config = dir.join(format!("edge-{letter}.json"));
            std::fs::write(&config, edge_document(&opts, i).to_string())?;
            let args = [
                s(&opts.bins.tunterm),
                "run".into(),
                "--config".into(),
                s(&config),
                "--control-socket".into(),
                s(&dir.join(format!("edge-{letter}.sock"))),
                "--state-file".into(),
                "none".into(),
                "--pin-dir".into(),
                "none".into(),
                "--fast-path".into(),
                opts.fast_path.clone(),
                "--monitor-interval".into(),
                opts.monitor_interval.to_string(),
                "--monitor-timeout".into(),
                opts.monitor_timeout.to_string(),
            ];
            let args: Vec<String> = args
                .into_iter()
                .chain(crate::topology::workers_args())
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut p = e.spawn(&args, &dir.join(format!("edge-{letter}.log")))?;
            p.wait_for_log("tunterm running", Duration::from_secs(10))
                .with_context(|| format!("edge {letter} did not start"))?;
            edges[i] = Some(p);
            if fast {
                let mut p = aps.spawn(
                    &[&lab_bin, "xdp-pass", "--iface", ["ea0", "eb0"][i]],
                    &dir.join(format!("xdp-pass-{letter}.log")),
                )?;
                p.wait_for_log("xdp_pass on", Duration::from_secs(10))?;
                xdp_pass.push(p);
            }
        }
        let ap = spawn_apsim(
            &aps,
            &opts,
            &dir,
            "ap",
            &format!("name={AP_NAME},ip=10.99.0.2,bridge=c1"),
            &[],
        )?;
        if fast {
            // The edges' trunk programs redirect into ta/tb.
            for t in ["ta", "tb"] {
                let mut p = up.spawn(
                    &[&lab_bin, "xdp-pass", "--iface", t],
                    &dir.join(format!("xdp-pass-{t}.log")),
                )?;
                p.wait_for_log("xdp_pass on", Duration::from_secs(10))?;
                xdp_pass.push(p);
            }
        }
        let lab = FailoverLab {
            opts,
            edges,
            ap,
            vlanhost,
            xdp_pass,
            edge_ns,
            aps,
            up,
            client,
            dir,
        };
        let up_ok = super::wait_until(Duration::from_secs(15), || {
            lab.ap_edge().is_ok_and(|(e, up)| up && e == 0)
        });
        if !up_ok {
            anyhow::bail!("the AP's session did not come up on edge A\n{}", lab.logs());
        }
        Ok(lab)
    }

    /// Control socket of edge `i` (0: A, 1: B).
    pub fn edge_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("edge-{}.sock", ["a", "b"][i]))
    }

    /// Stats of edge `i`.
    pub fn edge_stats(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        query(&self.edge_socket(i))
    }

    /// The FDB of edge `i`.
    pub fn edge_fdb(&self, i: usize) -> anyhow::Result<Vec<tunterm::api::FdbEntry>> {
        query_fdb(&self.edge_socket(i))
    }

    /// The AP simulator's stats.
    pub fn ap_stats(&self) -> anyhow::Result<serde_json::Value> {
        query_apsim(&self.dir.join("ap.sock"))
    }

    /// Which edge the AP is on (index into [`EDGES`]) and whether its
    /// session is up.
    pub fn ap_edge(&self) -> anyhow::Result<(usize, bool)> {
        self.ap_edge_of("ap", AP_NAME)
    }

    /// Another simulator beside the lab's AP, in the APs' namespace, with
    /// the lab's edges and hello settings: `ap` is its `--ap` spec (an
    /// address of 10.99.0.0/24 not taken: it is added to the APs' bridge),
    /// `extra` more apsim arguments (`--hosts-order 1,0` starts it on B;
    /// `--remote-end-id` names another mxtunnel). Control socket
    /// DIR/`tag`.sock, log DIR/`tag`.log.
    pub fn spawn_ap(&self, tag: &str, ap: &str, extra: &[&str]) -> anyhow::Result<Proc> {
        let spec = crate::apsim::ApSpec::parse(ap)?;
        if let Some(ip) = spec.local_ip {
            addr(&self.aps, "br0", &format!("{ip}/24"))?;
        }
        spawn_apsim(&self.aps, &self.opts, &self.dir, tag, ap, extra)
    }

    /// Which edge AP `name` of simulator `tag` ("ap": the lab's own) is on
    /// (index into [`EDGES`]) and whether its session is up.
    pub fn ap_edge_of(&self, tag: &str, name: &str) -> anyhow::Result<(usize, bool)> {
        let st = query_apsim(&self.dir.join(format!("{tag}.sock")))?;
        let ap = &st["per_ap"][name];
        let edge = ap["edge"].as_str().unwrap_or_default();
        let i = EDGES
            .iter()
            .position(|e| edge.starts_with(&format!("{e}:")))
            .with_context(|| format!("AP on an unknown edge: {ap}"))?;
        Ok((i, ap["session_up"] == true))
    }

    /// Every log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["edge-a", "edge-b", "ap", "vlanhost"] {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {name}.log\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Edge `i`'s configuration document (0: A, 1: B) as the lab runs it:
/// the standard lab's, with the edge's name and tunnel address, the ARP
/// check upstream, and `tunterm_hosts` [A, B] `ordered`.
pub fn edge_document(opts: &FailoverOptions, i: usize) -> serde_json::Value {
    let mut cfg = edge_config(opts.hello_interval, opts.hello_retries);
    cfg["mxedge"]["name"] = format!("lab-edge-{}", ["a", "b"][i]).into();
    cfg["mxedge"]["tunterm_ip_config"] =
        serde_json::json!({"ip": EDGES[i], "netmask": "255.255.255.0"});
    cfg["mxedge"]["tunterm_monitoring"] = serde_json::json!([{
        "protocol": "arp", "host": UPSTREAM_HOST, "src_vlan_id": 10, "timeout": 60
    }]);
    cfg["mxcluster"]["tunterm_hosts"] = serde_json::json!(EDGES);
    cfg["mxcluster"]["tunterm_hosts_selection"] = "ordered".into();
    if opts.gre {
        cfg["mxtunnels"] = serde_json::json!([]);
        cfg["wlans"] = serde_json::json!([{
            "ssid": "lab-mgre", "vlan_ids": [10, 20], "tunnel_protocol": "mgre",
            "mgre_peer_timeout": opts.hello_interval * f64::from(opts.hello_retries)
        }]);
    }
    cfg
}

/// A simulator in `aps` connecting to the lab's edges, `ordered`, with
/// the lab's hello settings and no retry delay.
fn spawn_apsim(
    aps: &Netns,
    opts: &FailoverOptions,
    dir: &Path,
    tag: &str,
    ap: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let args = [
        s(&opts.bins.apsim),
        "--edge".into(),
        EDGES.join(","),
        "--hosts-selection".into(),
        "ordered".into(),
        "--transport".into(),
        if opts.gre { "gre" } else { "udp" }.into(),
        "--ap".into(),
        ap.into(),
        "--hello-interval".into(),
        opts.hello_interval.to_string(),
        "--hello-retries".into(),
        opts.hello_retries.to_string(),
        "--retry-delay".into(),
        "0".into(),
        "--events".into(),
        "--control-socket".into(),
        s(&dir.join(format!("{tag}.sock"))),
    ];
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    aps.spawn(&args, &dir.join(format!("{tag}.log")))
}

/// Replies of a `ping -D -O` run, from its output: (timestamp in seconds,
/// icmp_seq) per reply received.
pub fn ping_replies(output: &str) -> Vec<(f64, u32)> {
    output
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            let ts = l.strip_prefix('[')?.split_once(']')?.0.parse().ok()?;
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
            Some((ts, seq.parse().ok()?))
        })
        .collect()
}

/// The longest time without a reply, in seconds: the largest gap between
/// two consecutive replies (by arrival), and the sequence numbers around it.
pub fn longest_gap(replies: &[(f64, u32)]) -> Option<(f64, u32, u32)> {
    replies
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[0].1, w[1].1))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_output_gives_replies_and_the_gap() {
        let out = "PING 192.168.10.1 (192.168.10.1) 56(84) bytes of data.\n\
            [1700000000.100000] 64 bytes from 192.168.10.1: icmp_seq=1 ttl=64 time=0.1 ms\n\
            [1700000000.110000] 64 bytes from 192.168.10.1: icmp_seq=2 ttl=64 time=0.1 ms\n\
            [1700000000.130000] no answer yet for icmp_seq=3\n\
            [1700000000.750000] 64 bytes from 192.168.10.1: icmp_seq=65 ttl=64 time=0.1 ms\n\
            [1700000000.760000] 64 bytes from 192.168.10.1: icmp_seq=66 ttl=64 time=0.1 ms\n";
        let r = ping_replies(out);
        assert_eq!(r.len(), 4);
        let (gap, a, b) = longest_gap(&r).unwrap();
        assert!((gap - 0.64).abs() < 1e-6, "{gap}");
        assert_eq!((a, b), (2, 65));
    }
}
