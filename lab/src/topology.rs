//! The standard lab: two simulated APs with real client namespaces behind
//! them, tunterm in its own namespace, and an upstream 802.1Q host on the
//! trunk. The integration tests and `tunterm-lab demo` both build it.
//!
//! ```text
//!  c1 192.168.10.11 ─┐ (untagged → VLAN 10)
//!  c5 192.168.99.15 ─┤ (tag 99: not allowed)        edge                 up
//!                    ├─ ap1 10.99.0.2 ─┐      ┌──────────────┐      ┌──────────────┐
//!                    │                  ├─e0──ap0 tunterm trunk0──t0  vlan-host    │
//!  c2 192.168.20.12 ─┤ (tag 20)         │      │ 10.99.0.1    │      │ v10 .10.1    │
//!  c3 192.168.10.13 ─┴─ ap2 10.99.0.3 ─┘      └──────────────┘      │ v20 .20.1    │
//!     (untagged → VLAN 10)        aps namespace (tunterm-apsim ×2)    │ v99 .99.1    │
//!                                                                     └──────────────┘
//! ```
//!
//! L2TPv3 over UDP between the APs and the edge; the trunk carries VLANs 10
//! and 20 tagged (VLAN 1 native). VLAN 99 has a host upstream, so a leak
//! would be answered: the tests check that it never is.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tunterm::api::client::{Client, block_on};
use tunterm::api::{FdbEntry, FdbQuery};

use crate::impair::{ImpairRelay, Impairment};

use super::{BpfFs, Capture, Netns, Proc, addr, spawn_vlan_host, veth};

/// Where the lab's programs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `tunterm`.
    pub tunterm: PathBuf,
    /// `tunterm-apsim`.
    pub apsim: PathBuf,
    /// `tunterm-lab` (for `vlan-host`).
    pub lab: PathBuf,
}

impl Binaries {
    /// The binaries next to the running executable (for `tunterm-lab demo`).
    pub fn beside_current_exe() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("executable has no directory")?;
        let b = Binaries {
            tunterm: dir.join("tunterm"),
            apsim: dir.join("tunterm-apsim"),
            lab: dir.join("tunterm-lab"),
        };
        for p in [&b.tunterm, &b.apsim, &b.lab] {
            anyhow::ensure!(
                p.exists(),
                "{} not found (build the workspace first)",
                p.display()
            );
        }
        Ok(b)
    }

    /// The daemon for an integration test of this crate: `tunterm` in the
    /// test's profile directory (`target/<profile>/`, the parent of the
    /// test executable's `deps/`). It is another package's binary, so
    /// cargo does not build it for `cargo test -p tunterm-lab`: `cargo test
    /// --workspace` does, and so does `cargo build --workspace`.
    pub fn daemon_for_tests() -> PathBuf {
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executables live in target/<profile>/deps");
        let tunterm = profile.join("tunterm");
        assert!(
            tunterm.exists(),
            "{} is not built: run `cargo build --workspace` with this profile first \
             (`cargo test --workspace` builds it)",
            tunterm.display()
        );
        tunterm
    }
}

/// The lab's [`Binaries`] for an integration test of this crate: the
/// simulator and the lab tool from cargo, the daemon from
/// [`Binaries::daemon_for_tests`].
#[macro_export]
macro_rules! test_binaries {
    () => {
        $crate::topology::Binaries {
            tunterm: $crate::topology::Binaries::daemon_for_tests(),
            apsim: env!("CARGO_BIN_EXE_tunterm-apsim").into(),
            lab: env!("CARGO_BIN_EXE_tunterm-lab").into(),
        }
    };
}

/// How the simulated APs reach the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// L2TPv3 over UDP 1701.
    L2tpUdp,
    /// L2TPv3 over IP protocol 115.
    L2tpIp,
    /// mGRE (GRE 0x6558).
    Gre,
}

impl Encap {
    /// The apsim `--transport` value.
    pub fn apsim_arg(self) -> &'static str {
        match self {
            Encap::L2tpUdp => "udp",
            Encap::L2tpIp => "ip",
            Encap::Gre => "gre",
        }
    }
}

/// Knobs of the standard lab.
#[derive(Clone, Debug)]
pub struct Options {
    /// Test or demo name (namespace prefix and directory).
    pub name: String,
    /// Programs to run.
    pub bins: Binaries,
    /// HELLO interval, seconds (edge config and APs).
    pub hello_interval: f64,
    /// Missed hellos before a peer is dead (edge config and APs).
    pub hello_retries: u32,
    /// Capture the AP-facing link (edge side, `ap0`) and the trunk.
    pub capture: bool,
    /// Encapsulation between the APs and the edge.
    pub encap: Encap,
    /// Carry the tunnels over IPv6 (fd00:99::/64) instead of IPv4.
    pub ipv6: bool,
    /// MTU of the AP-facing link (the tunnels' path MTU).
    pub ap_link_mtu: u16,
    /// The mxtunnel `mtu` of the L2TP tunnel profile (0: the path's).
    pub tunnel_mtu: u16,
    /// tunterm's `--fast-path` (default: `$TUNTERM_LAB_FAST_PATH`, else
    /// `off`). When not off, the upstream host's end of the trunk gets a
    /// pass-through XDP program so native redirects into it are delivered.
    pub fast_path: String,
    /// Extra arguments for both AP simulators (e.g. `--sequencing`).
    pub ap_args: Vec<String>,
    /// Extra arguments for tunterm (e.g. `--sccrq-burst 0`).
    pub daemon_args: Vec<String>,
    /// Fields set on the edge configuration's `mxedge` object (e.g.
    /// `tunterm_other_ip_configs`, `tunterm_dhcpd_config`).
    pub mxedge_extra: Vec<(String, serde_json::Value)>,
    /// The Host Names ap1 and ap2 send (`ap1`, `ap2`; a Mist AP sends its
    /// MAC, e.g. `5c5b35000001`, which is what `disconnect-aps` selects by).
    pub ap_names: [String; 2],
    /// Run the AP-facing link through a userspace impairment relay (loss,
    /// duplication, reordering, delay, jitter; changeable while the lab
    /// runs through [`Lab::set_impairment`]). None: a plain veth pair.
    pub impair: Option<Impairment>,
}

impl Options {
    /// The standard lab: L2TPv3/UDP over IPv4, a 3000-byte AP link (room for
    /// the encapsulation of 1500-byte frames), hello 1 s × 3, no capture.
    pub fn new(name: &str, bins: Binaries) -> Options {
        Options {
            name: name.into(),
            bins,
            hello_interval: 1.0,
            hello_retries: 3,
            capture: false,
            encap: Encap::L2tpUdp,
            ipv6: false,
            ap_link_mtu: 3000,
            tunnel_mtu: 0,
            fast_path: std::env::var("TUNTERM_LAB_FAST_PATH").unwrap_or_else(|_| "off".into()),
            ap_args: Vec::new(),
            daemon_args: Vec::new(),
            mxedge_extra: Vec::new(),
            ap_names: ["ap1".into(), "ap2".into()],
            impair: None,
        }
    }
}

/// `--workers N` for tunterm when `$TUNTERM_LAB_WORKERS` says N (the
/// whole lab suite can run with forwarding workers); nothing otherwise.
pub fn workers_args() -> Vec<String> {
    match std::env::var("TUNTERM_LAB_WORKERS") {
        Ok(n) if !n.is_empty() && n != "1" => vec!["--workers".into(), n],
        _ => Vec::new(),
    }
}

/// Client namespaces of the lab, with their addresses.
pub const CLIENTS: [(&str, &str, &str); 4] = [
    ("c1", "ap1", "192.168.10.11/24"),
    ("c5", "ap1", "192.168.99.15/24"),
    ("c2", "ap2", "192.168.20.12/24"),
    ("c3", "ap2", "192.168.10.13/24"),
];

/// A running standard lab. Dropping it stops every process and removes every
/// namespace.
pub struct Lab {
    /// Capture of the AP-facing link (on the APs' end), if asked for.
    pub ap_capture: Option<Capture>,
    /// Capture of the trunk (on the upstream host's end), if asked for.
    pub trunk_capture: Option<Capture>,
    /// tunterm.
    pub tunterm: Proc,
    /// The simulator playing ap1 (c1 untagged, c5 tagged 99).
    pub ap1: Proc,
    /// The simulator playing ap2 (c2 tagged 20, c3 untagged).
    pub ap2: Proc,
    /// The upstream VLAN host.
    pub vlanhost: Proc,
    /// Pass-through XDP on the APs' end of the AP link (fast path on only):
    /// the edge's trunk program redirects into that veth.
    pub xdp_pass: Option<Proc>,
    /// The impairment relay on the AP-facing link, if asked for.
    pub impair: Option<ImpairRelay>,
    /// Namespace of tunterm.
    pub edge: Netns,
    /// Namespace of the simulated APs.
    pub aps: Netns,
    /// Namespace of the upstream host.
    pub up: Netns,
    /// Client namespaces, in [`CLIENTS`] order.
    pub clients: Vec<Netns>,
    /// tunterm's control socket.
    pub edge_socket: PathBuf,
    prefix: String,
    /// tunterm's command line, to start it again.
    tunterm_args: Vec<String>,
    /// Restarts so far (each logs to `tunterm-N.log`).
    restarts: u32,
    /// The bpffs tunterm pins the fast path in (fast path on only); after
    /// the processes, so it is unmounted after tunterm has stopped.
    pub bpffs: Option<BpfFs>,
    /// Logs, configuration and captures; last, so it is removed once
    /// nothing (the bpffs mounted in it included) is left inside.
    pub dir: super::LogDir,
}

impl Lab {
    /// Build the namespaces and links, start everything, and wait until both
    /// APs have their session up.
    pub fn start(opts: Options) -> anyhow::Result<Lab> {
        let (prefix, dir) = super::begin(&opts.name)?;
        let ns = |n: &str| Netns::new(&format!("{prefix}{n}"));
        let edge = ns("edge")?;
        let aps = ns("aps")?;
        let up = ns("up")?;
        let mut clients = Vec::new();
        for (c, _, _) in CLIENTS {
            clients.push(ns(c)?);
        }

        let impair = match &opts.impair {
            Some(imp) => Some(ImpairRelay::start(
                &prefix,
                (&aps, "e0"),
                (&edge, "ap0"),
                &opts.bins.lab,
                &dir,
                imp,
            )?),
            None => {
                veth(&aps, "e0", &edge, "ap0")?;
                None
            }
        };
        if let Some(relay) = &impair {
            // The relay's own veths carry the AP link's frames whole.
            for i in ["ra", "rb"] {
                relay
                    .ns
                    .run(&["ip", "link", "set", i, "mtu", &opts.ap_link_mtu.to_string()])?;
            }
        }
        let mtu = opts.ap_link_mtu.to_string();
        aps.run(&["ip", "link", "set", "e0", "mtu", &mtu])?;
        edge.run(&["ip", "link", "set", "ap0", "mtu", &mtu])?;
        addr(&edge, "ap0", "10.99.0.1/24")?;
        addr(&aps, "e0", "10.99.0.2/24")?;
        addr(&aps, "e0", "10.99.0.3/24")?;
        addr(&edge, "ap0", "fd00:99::1/64")?;
        addr(&aps, "e0", "fd00:99::2/64")?;
        addr(&aps, "e0", "fd00:99::3/64")?;
        veth(&edge, "trunk0", &up, "t0")?;
        for ((c, _, cidr), cns) in CLIENTS.iter().zip(&clients) {
            veth(&aps, c, cns, "eth0")?;
            addr(cns, "eth0", cidr)?;
            // The simulated AP reads client frames with AF_PACKET off a veth:
            // with TX checksum offload they would carry unfinished (partial)
            // TCP/UDP checksums into the tunnel. A real AP gets finished ones
            // from the air.
            cns.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        }

        let config = dir.join("edge.json");
        let mut cfg = edge_config(opts.hello_interval, opts.hello_retries);
        for (k, v) in &opts.mxedge_extra {
            cfg["mxedge"][k] = v.clone();
        }
        if opts.tunnel_mtu != 0 {
            cfg["mxtunnels"][0]["mtu"] = opts.tunnel_mtu.into();
        }
        match opts.encap {
            Encap::L2tpUdp => {}
            Encap::L2tpIp => cfg["mxtunnels"][0]["protocol"] = "ip".into(),
            Encap::Gre => {
                cfg["mxtunnels"] = serde_json::json!([]);
                cfg["wlans"] = serde_json::json!([{
                    "ssid": "lab-mgre", "vlan_ids": [10, 20], "tunnel_protocol": "mgre",
                    "mgre_peer_timeout": opts.hello_interval * f64::from(opts.hello_retries)
                }]);
            }
        }
        std::fs::write(&config, cfg.to_string())?;
        let edge_socket = dir.join("edge.sock");
        let (ap_capture, trunk_capture) = if opts.capture {
            (
                // At the far ends (the APs' and the upstream host's): the
                // fast path forwards below the edge's own packet taps.
                Some(Capture::start(&aps, "e0", &dir.join("ap-link.pcap"))?),
                Some(Capture::start(&up, "t0", &dir.join("trunk.pcap"))?),
            )
        } else {
            (None, None)
        };
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let lab_bin = s(&opts.bins.lab);
        let vlanhost = spawn_vlan_host(
            &up,
            &opts.bins.lab,
            &[
                "10=192.168.10.1/24",
                "20=192.168.20.1/24",
                "99=192.168.99.1/24",
            ],
            opts.fast_path != "off",
            &dir.join("vlanhost.log"),
        )?;
        let mut tunterm_args: Vec<String> = vec![
            s(&opts.bins.tunterm),
            "run".into(),
            "--config".into(),
            s(&config),
            "--control-socket".into(),
            s(&edge_socket),
            "--fast-path".into(),
            opts.fast_path.clone(),
        ];
        let bpffs = if opts.fast_path != "off" {
            let fs = BpfFs::mount(&dir.join("bpf"))?;
            tunterm_args.extend(["--pin-dir".into(), s(&fs.path().join("tunterm"))]);
            Some(fs)
        } else {
            None
        };
        // A test's own `--workers` wins (clap takes an option once).
        if !opts.daemon_args.iter().any(|a| a == "--workers") {
            tunterm_args.extend(workers_args());
        }
        tunterm_args.extend(opts.daemon_args.iter().cloned());
        let tunterm = {
            let args: Vec<&str> = tunterm_args.iter().map(String::as_str).collect();
            edge.spawn(&args, &dir.join("tunterm.log"))?
        };
        let hello = opts.hello_interval.to_string();
        let retries = opts.hello_retries.to_string();
        let edge_ip = if opts.ipv6 { "fd00:99::1" } else { "10.99.0.1" };
        let ap = |name: &str, spec: &str| -> anyhow::Result<Proc> {
            let sock = s(&dir.join(format!("{name}.sock")));
            let mut args = vec![
                s(&opts.bins.apsim),
                "--edge".into(),
                edge_ip.into(),
                "--transport".into(),
                opts.encap.apsim_arg().into(),
                "--ap".into(),
                spec.into(),
                "--hello-interval".into(),
                hello.clone(),
                "--hello-retries".into(),
                retries.clone(),
                "--events".into(),
                "--control-socket".into(),
                sock,
            ];
            args.extend(opts.ap_args.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            aps.spawn(&args, &dir.join(format!("{name}.log")))
        };
        // The edge must listen before the APs knock (they would retry, but a
        // test should not wait for a retransmission).
        let mut tunterm = tunterm;
        tunterm
            .wait_for_log("tunterm running", Duration::from_secs(10))
            .context("tunterm did not start")?;
        // After tunterm: its own refusal (e.g. of a jumbo veth) comes first.
        // On the peer of ap0, where the fast path's redirects arrive: the
        // APs' e0, or the relay's rb when the link runs through it.
        let xdp_pass = if opts.fast_path != "off" {
            let (ns, iface) = match &impair {
                Some(relay) => (&relay.ns, "rb"),
                None => (&aps, "e0"),
            };
            let mut p = ns.spawn(
                &[&lab_bin, "xdp-pass", "--iface", iface],
                &dir.join("xdp-pass.log"),
            )?;
            p.wait_for_log("xdp_pass on", Duration::from_secs(10))
                .with_context(|| format!("xdp-pass on {iface} did not start"))?;
            Some(p)
        } else {
            None
        };
        let (ip1, ip2) = if opts.ipv6 {
            ("fd00:99::2", "fd00:99::3")
        } else {
            ("10.99.0.2", "10.99.0.3")
        };
        let [n1, n2] = &opts.ap_names;
        let ap1 = ap("ap1", &format!("name={n1},ip={ip1},bridge=c1,bridge=c5:99"))?;
        let ap2 = ap("ap2", &format!("name={n2},ip={ip2},bridge=c2:20,bridge=c3"))?;
        let lab = Lab {
            ap_capture,
            trunk_capture,
            tunterm,
            ap1,
            ap2,
            vlanhost,
            xdp_pass,
            impair,
            edge,
            aps,
            up,
            clients,
            dir,
            edge_socket,
            prefix,
            tunterm_args,
            restarts: 0,
            bpffs,
        };
        let up_ok = super::wait_until(Duration::from_secs(15), || {
            lab.edge_stats().is_ok_and(|s| match opts.encap {
                Encap::Gre => s["gre_peers"].as_array().is_some_and(|p| p.len() == 2),
                _ => sessions_up(&s) == 2,
            })
        });
        if !up_ok {
            anyhow::bail!("tunnels did not come up in 15 s\n{}", lab.logs());
        }
        Ok(lab)
    }

    /// Stop tunterm with `signal` (SIGKILL: a crash; SIGQUIT: an exit for
    /// a restart), wait for it to be gone, leave it down for `down_for`,
    /// and start it again with the same command line. Returns the time from
    /// the signal until the new one said "tunterm running". Its log is
    /// `tunterm-N.log` for the Nth restart.
    pub fn restart_edge(&mut self, signal: i32, down_for: Duration) -> anyhow::Result<Duration> {
        self.restart_edge_with(signal, |_| std::thread::sleep(down_for))
    }

    /// [`restart_edge`](Self::restart_edge), running `while_down` on the
    /// lab between the old tunterm's exit and the new one's start (e.g.
    /// to change what the old one left in its pin directory).
    pub fn restart_edge_with(
        &mut self,
        signal: i32,
        while_down: impl FnOnce(&Lab),
    ) -> anyhow::Result<Duration> {
        let t0 = std::time::Instant::now();
        self.tunterm.signal(signal)?;
        if self.tunterm.wait_exit(Duration::from_secs(5)).is_none() {
            anyhow::bail!("tunterm did not exit within 5 s of signal {signal}");
        }
        while_down(self);
        self.restarts += 1;
        let log = self.dir.join(format!("tunterm-{}.log", self.restarts));
        let args: Vec<&str> = self.tunterm_args.iter().map(String::as_str).collect();
        let mut p = self.edge.spawn(&args, &log)?;
        p.wait_for_log("tunterm running", Duration::from_secs(10))
            .context("tunterm did not start again")?;
        self.tunterm = p;
        Ok(t0.elapsed())
    }

    /// Change the AP-facing link's impairment (applied within 200 ms; this
    /// returns after that). Fails on a lab started without a relay.
    pub fn set_impairment(&self, imp: &Impairment) -> anyhow::Result<()> {
        self.impair
            .as_ref()
            .context("this lab has no impairment relay (Options::impair)")?
            .set(imp)
    }

    /// The namespace-name prefix of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client namespace named `c` (c1, c2, c3, c5).
    pub fn client(&self, c: &str) -> &Netns {
        let i = CLIENTS
            .iter()
            .position(|(n, _, _)| *n == c)
            .expect("known client");
        &self.clients[i]
    }

    /// tunterm's stats document.
    pub fn edge_stats(&self) -> anyhow::Result<serde_json::Value> {
        query(&self.edge_socket)
    }

    /// tunterm's forwarding database, every entry.
    pub fn edge_fdb(&self) -> anyhow::Result<Vec<FdbEntry>> {
        query_fdb(&self.edge_socket)
    }

    /// tunterm's control socket.
    pub fn edge_socket(&self) -> &Path {
        &self.edge_socket
    }

    /// An AP simulator's stats document (`ap1` or `ap2`).
    pub fn ap_stats(&self, ap: &str) -> anyhow::Result<serde_json::Value> {
        query_apsim(&self.dir.join(format!("{ap}.sock")))
    }

    /// Every log of the lab, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let restarts = (1..=self.restarts).map(|i| format!("tunterm-{i}"));
        let names: Vec<String> = ["tunterm"]
            .into_iter()
            .map(String::from)
            .chain(restarts)
            .chain(["ap1", "ap2", "vlanhost"].map(String::from))
            .chain(self.impair.is_some().then(|| "impair".to_string()))
            .collect();
        for name in &names {
            let p = self.dir.join(format!("{name}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {name}.log (last {} lines)\n", tail.len()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Sessions established across all tunnels in a tunterm stats document.
pub fn sessions_up(stats: &serde_json::Value) -> usize {
    stats["tunnels"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .flat_map(|t| t["sessions"].as_array().into_iter().flatten())
                .filter(|s| s["state"] == "established")
                .count()
        })
        .unwrap_or(0)
}

/// tunterm's stats, asked over its control socket at `path` with the
/// daemon's client (typed), as a JSON document for the tests to read.
pub fn query(path: &Path) -> anyhow::Result<serde_json::Value> {
    let client = Client::new(path).with_timeout(Duration::from_secs(5));
    let stats = block_on(client.stats())?;
    Ok(serde_json::to_value(stats)?)
}

/// tunterm's forwarding database (every entry, page after page), over its
/// control socket at `path`.
pub fn query_fdb(path: &Path) -> anyhow::Result<Vec<FdbEntry>> {
    let client = Client::new(path).with_timeout(Duration::from_secs(5));
    Ok(block_on(client.fdb_all(&FdbQuery::default()))?)
}

/// An AP simulator's stats: its socket answers each connection with one
/// JSON document (it is the lab's, not tunterm's protocol).
pub fn query_apsim(path: &Path) -> anyhow::Result<serde_json::Value> {
    apsim_request(path, "stats")
}

/// The counts of a simulator without its per-AP part (`aps`,
/// `tunnels_up`, `sessions_up`, `setup`): cheap to ask for often with
/// thousands of APs.
pub fn query_apsim_summary(path: &Path) -> anyhow::Result<serde_json::Value> {
    apsim_request(path, "summary")
}

fn apsim_request(path: &Path, request: &str) -> anyhow::Result<serde_json::Value> {
    let mut s =
        UnixStream::connect(path).with_context(|| format!("connecting {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    serde_json::from_str(&body).with_context(|| format!("stats from {}: {body}", path.display()))
}

/// The edge configuration of the lab, in the Mist API's shapes.
pub fn edge_config(hello_interval: f64, hello_retries: u32) -> serde_json::Value {
    serde_json::json!({
        "mxedge": {
            "name": "lab-edge",
            "tunterm_ip_config": {"ip": "10.99.0.1", "netmask": "255.255.255.0",
                                  "ip6": "fd00:99::1", "netmask6": "/64"},
            "tunterm_port_config": {
                "separate_upstream_downstream": true,
                "downstream_ports": ["0"],
                "upstream_ports": ["1"],
                "upstream_port_vlan_id": 1
            }
        },
        "mxcluster": {"name": "lab", "tunterm_ap_subnets": ["10.99.0.0/24", "fd00:99::/64"]},
        "mxtunnels": [{
            "name": "lab",
            "protocol": "udp",
            "vlan_ids": [10, 20],
            "hello_interval": hello_interval,
            "hello_retries": hello_retries
        }],
        "ports": {"0": "ap0", "1": "trunk0"}
    })
}
