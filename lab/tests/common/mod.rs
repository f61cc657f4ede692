//! Fixtures the lab tests share (each test binary uses part of them).
#![allow(dead_code)]

pub mod flood;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tunterm::api::ClientPage;
use tunterm_lab::topology::{Binaries, Lab, Options};
use tunterm_lab::{self as lab, LogDir, Netns, Proc};

/// The daemon, simulator and lab binaries this test build runs.
pub fn bins() -> Binaries {
    tunterm_lab::test_binaries!()
}

/// The lab `opts` describe, or the test fails saying why it did not start.
pub fn start(opts: Options) -> Lab {
    let name = opts.name.clone();
    Lab::start(opts).unwrap_or_else(|e| panic!("lab {name} did not start: {e:#}"))
}

/// Three pings from `ns` to `dst`, all of which must come back, after one
/// whose answer does not count: the first packet of a path waits on ARP
/// (or neighbour discovery) at each end and on the edge learning the MACs,
/// which on a loaded machine can take longer than ping's 1 s wait.
pub fn ping_ok(lab: &Lab, ns: &Netns, dst: &str) {
    let _ = lab::ping(ns, dst, 1);
    let r = lab::ping(ns, dst, 3).unwrap();
    assert_eq!(
        r.received,
        3,
        "{} → {dst}: {r:?}\n{}",
        ns.name(),
        lab.logs()
    );
}

/// `tunterm run` in `ns` on `cfg` (written to DIR/edge.json), its control
/// socket DIR/edge.sock, with `extra` arguments after those, logging to
/// DIR/tunterm.log: returned with the socket's path once it says it runs.
pub fn run_daemon(
    ns: &Netns,
    dir: &Path,
    cfg: &serde_json::Value,
    extra: &[&str],
) -> (Proc, PathBuf) {
    let config = dir.join("edge.json");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let sock = dir.join("edge.sock");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (tunterm, config, control) = (s(&bins().tunterm), s(&config), s(&sock));
    let mut args = vec![
        tunterm.as_str(),
        "run",
        "--config",
        &config,
        "--control-socket",
        &control,
    ];
    args.extend_from_slice(extra);
    let mut p = ns.spawn(&args, &dir.join("tunterm.log")).unwrap();
    p.wait_for_log("tunterm running", Duration::from_secs(10))
        .unwrap();
    (p, sock)
}

/// Fails the test if a namespace whose name starts with `prefix` is left
/// behind.
pub fn assert_no_namespaces(prefix: &str) {
    let left: Vec<String> = lab::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// Three namespaces: `edge`, whose ap0 (10.99.0.1/24, fd00:99::1/64) faces
/// `aps` (e0, 10.99.0.2/24) and whose trunk0 faces `up` (t0).
pub fn edge_aps_up(prefix: &str) -> (Netns, Netns, Netns) {
    let edge = Netns::new(&format!("{prefix}edge")).unwrap();
    let aps = Netns::new(&format!("{prefix}aps")).unwrap();
    let up = Netns::new(&format!("{prefix}up")).unwrap();
    lab::veth(&aps, "e0", &edge, "ap0").unwrap();
    lab::addr(&edge, "ap0", "10.99.0.1/24").unwrap();
    lab::addr(&edge, "ap0", "fd00:99::1/64").unwrap();
    lab::addr(&aps, "e0", "10.99.0.2/24").unwrap();
    lab::veth(&edge, "trunk0", &up, "t0").unwrap();
    (edge, aps, up)
}

/// The scale tests' set-up: many APs behind one address (the simulator's,
/// 10.99.0.2 in `aps`) toward tunterm in `edge` ([`edge_aps_up`]); in `up`
/// vlan-host answers as 192.168.10.1 on VLAN 10, the one VLAN of the
/// tunnels. Fields drop in order: the processes, the namespaces, the
/// directory.
pub struct ManyAps {
    pub tunterm: Proc,
    pub host: Proc,
    /// tunterm's control socket.
    pub sock: PathBuf,
    /// The upstream host's MAC: the simulated clients send to it (a
    /// broadcast from each would be flooded to every session).
    pub host_mac: String,
    pub edge: Netns,
    pub aps: Netns,
    pub up: Netns,
    pub dir: LogDir,
}

impl ManyAps {
    /// The namespaces, tunterm (no per-source SCCRQ limit: every AP has
    /// the same address; then `extra` arguments) and the upstream host.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        let (prefix, dir) = lab::begin(name).unwrap();
        let (edge, aps, up) = edge_aps_up(&prefix);
        let mut cfg = tunterm_lab::topology::edge_config(60.0, 7);
        cfg["mxtunnels"][0]["vlan_ids"] = serde_json::json!([10]);
        let mut args = vec!["--sccrq-burst", "0"];
        args.extend_from_slice(extra);
        let (tunterm, sock) = run_daemon(&edge, &dir, &cfg, &args);
        let log = dir.join("vlanhost.log");
        let mut host =
            lab::spawn_vlan_host(&up, &bins().lab, &["10=192.168.10.1/24"], false, &log).unwrap();
        host.wait_for_log(tunterm_lab::vlanhost::READY, Duration::from_secs(10))
            .unwrap();
        let host_mac = up.mac("v10").unwrap().to_string();
        // The host speaks once on the trunk: tunterm learns its MAC there.
        let _ = lab::ping(&up, "192.168.10.99", 1);
        ManyAps {
            tunterm,
            host,
            sock,
            host_mac,
            edge,
            aps,
            up,
            dir,
        }
    }

    /// `count` simulated APs, each with `clients` clients that send to the
    /// upstream host every `interval_ms`.
    pub fn apsim(&self, count: u64, clients: u64, interval_ms: u64) -> Proc {
        let apsim = bins().apsim.to_string_lossy().into_owned();
        let (count, clients, interval) = (
            count.to_string(),
            clients.to_string(),
            interval_ms.to_string(),
        );
        let args = [
            apsim.as_str(),
            "--edge",
            "10.99.0.1",
            "--count",
            &count,
            "--local-ip",
            "10.99.0.2",
            "--synthetic-clients",
            &clients,
            "--synthetic-dst",
            &self.host_mac,
            "--synthetic-interval-ms",
            &interval,
        ];
        self.aps.spawn(&args, &self.dir.join("apsim.log")).unwrap()
    }
}

/// `tunterm clients ARGS` against the lab's edge: the page it printed.
pub fn clients(lab: &Lab, args: &[&str]) -> ClientPage {
    let out = std::process::Command::new(&bins().tunterm)
        .arg("clients")
        .arg("--control-socket")
        .arg(lab.edge_socket())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "tunterm clients {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `/etc/netns/NS/resolv.conf`, so that a DHCP client in NS cannot touch
/// the machine's resolver; removed on drop.
pub struct ResolvGuard(PathBuf);

impl ResolvGuard {
    pub fn new(ns: &Netns) -> ResolvGuard {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        ResolvGuard(dir)
    }
}

impl Drop for ResolvGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn dnsmasq(ns: &Netns, dir: &Path, name: &str, ranges: &[&str]) -> Proc {
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let leases = format!("--dhcp-leasefile={}", s(dir.join(format!("{name}.leases"))));
    let pid = format!("--pid-file={}", s(dir.join(format!("{name}.pid"))));
    let mut args = vec![
        "dnsmasq",
        "--keep-in-foreground",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--port=0",
        "--user=root",
        "--log-dhcp",
        "--log-facility=-",
        &leases,
        &pid,
    ];
    let ranges: Vec<String> = ranges.iter().map(|r| format!("--dhcp-range={r}")).collect();
    args.extend(ranges.iter().map(String::as_str));
    let mut p = ns
        .spawn(&args, &dir.join(format!("{name}.log")))
        .expect("dnsmasq starts");
    p.wait_for_log("DHCP, IP range", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("dnsmasq {name}: {e:#}"));
    p
}

/// Lease obtained by udhcpc in `ns`: (address, server id), from its
/// script's record. The script writes only that file.
pub fn udhcpc(ns: &Netns, dir: &Path, name: &str) -> Option<(String, String)> {
    udhcpc_with(ns, dir, name, false)
}

/// As [`udhcpc`], and the leased address is added to `eth0` (as a /32:
/// the clients' own subnet route stays as it is). The script still writes
/// no resolv.conf.
pub fn udhcpc_bind(ns: &Netns, dir: &Path, name: &str) -> Option<(String, String)> {
    udhcpc_with(ns, dir, name, true)
}

fn udhcpc_with(ns: &Netns, dir: &Path, name: &str, bind: bool) -> Option<(String, String)> {
    let record = dir.join(format!("{name}.lease"));
    let script = dir.join(format!("{name}.udhcpc.sh"));
    let add = if bind {
        "ip addr add \"$ip/32\" dev \"$interface\"; "
    } else {
        ""
    };
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && {{ {add}echo \"$ip $serverid $subnet\" > {}; }}\nexit 0\n",
            record.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["755"])
        .arg(&script)
        .status()
        .unwrap();
    let _resolv = ResolvGuard::new(ns);
    let out = ns
        .cmd("udhcpc")
        .args(["-f", "-q", "-n", "-t", "6", "-T", "2", "-i", "eth0", "-s"])
        .arg(&script)
        .output()
        .unwrap();
    std::fs::write(dir.join(format!("{name}.udhcpc.log")), {
        let mut b = out.stdout.clone();
        b.extend_from_slice(&out.stderr);
        b
    })
    .unwrap();
    let text = std::fs::read_to_string(&record).ok()?;
    let mut f = text.split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}
