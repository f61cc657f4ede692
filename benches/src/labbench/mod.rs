//! The lab benchmark (issue 4): packets per second through four ways of
//! terminating the APs' overlay, on the same veths, measured the same way.
//!
//! ```text
//!  aps ns                       edge ns                       up ns
//!  trafgen, tunterm-apsim       the case under test           trafgen
//!  e0 10.99.0.2 ─────────── ap0 10.99.0.1    trunk0 ─────────── t0
//!  [bench_count]                                              [bench_count]
//! ```
//!
//! 1. `raw`: `bench_redirect` on ap0 and trunk0, XDP_REDIRECT with no
//!    parsing: the physical limit of these veths.
//! 2. `vxlan`: the kernel's own overlay, VXLAN (VNI 10) into a Linux bridge
//!    with trunk0; it forwards untagged (the kernel here has no VLAN
//!    filtering), an easier job than tunterm's.
//! 3. `tunterm-xdp`: tunterm with `--fast-path xdp-native`, when the build
//!    has the flag.
//! 4. `tunterm-userspace`: tunterm with the userspace path only.
//! 5. `tunterm-workers`: as 4 with `--workers N` (`--workers 1,2`: cases
//!    4 and 5 with N = 2), tunterm on every CPU (the generator shares one).
//!
//! For tunterm the sessions are real: `tunterm-apsim` brings up one L2TPv3
//! session per simulated AP and teaches the edge its clients' MACs with a
//! few rounds of frames through the tunnels; the generator then speaks for
//! those sessions (their UDP ports, session ids and cookies, read from the
//! edge's and apsim's stats) and to those MACs (read from the edge's FDB).
//!
//! Each direction is measured by trafgen on one CPU sending round robin
//! over all clients, and counted at the receiver by `bench_count` (XDP,
//! per-CPU counter, drop): the rate over a fixed window after a warm-up.

pub mod packets;
mod sysctl;
mod trafgen;
mod xdp;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tunterm_core::wire::ether::MacAddr;
use tunterm_lab::{self as lab, Netns, Proc, topology};

use packets::{ApLink, Client, SessionKey};
use xdp::{Counter, Redirect};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Client frame lengths, bytes.
    pub frames: Vec<usize>,
    /// L2TPv3 sessions (simulated APs); VXLAN: UDP source ports.
    pub sessions: usize,
    /// Client MACs, spread evenly over the sessions.
    pub macs: usize,
    /// Measurement window per row.
    pub window: Duration,
    /// Traffic before the window opens.
    pub warmup: Duration,
    /// Directory holding `tunterm` and `tunterm-apsim`.
    pub bin_dir: PathBuf,
    /// Where logs, configurations and generator files go.
    pub work_dir: PathBuf,
    /// The cases to run (the others get rows saying they were skipped).
    pub cases: Vec<Case>,
    /// How many times every case is run, in turn (1, 2, 3, 4, 1, 2, …):
    /// each row is the median of its rounds, so one disturbed window (a
    /// noisy neighbour on a VM) does not make the table.
    pub rounds: usize,
    /// The cookie length tunterm assigns (`tunterm run --cookie-len`);
    /// None: the daemon's default (8 bytes). 4 compares with builds from
    /// before 8 became the default on the same packets.
    pub cookie_len: Option<u8>,
    /// Cases 3 and 4 with a packet capture running on the trunk for the
    /// whole measurement (`tunterm capture -i trunk -f FILTER -c 0`, into
    /// /dev/null): the cost of capturing. An expression that matches
    /// nothing measures the capture's steering and filtering alone; `len >
    /// 0` matches everything. None: no capture.
    pub capture_filter: Option<String>,
    /// Cases 3 and 4 measured three times on the same edge and sessions:
    /// without a capture, with a capture on the trunk whose filter matches
    /// nothing ([`CAPTURE_NOTHING`]) and with one that matches everything
    /// ([`CAPTURE_EVERYTHING`]); the report gives each capture's rate as a
    /// ratio of the capture-off rate of the same round.
    pub capture_compare: bool,
    /// Run trafgen, tunterm and the capture reader under SCHED_FIFO
    /// (`trafgen::REALTIME`): on a machine shared with other work.
    pub realtime: bool,
    /// `tunterm run --workers` in case 5 (≥ 2).
    pub workers: usize,
    /// tunterm's sessions are L2TPv3 over IP (protocol 115), not over UDP
    /// (cases 1, 3, 4 and 5; case 2 stays VXLAN over UDP).
    pub l2tp_ip: bool,
}

/// A filter no frame on the trunk matches (an EtherType nobody sends).
pub const CAPTURE_NOTHING: &str = "ether proto 0x88b6";
/// A filter every frame matches.
pub const CAPTURE_EVERYTHING: &str = "len > 0";

/// One capture's cost: a rate with the capture running as a ratio of the
/// rate without it, on the same edge and sessions, per round.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureCost {
    /// Case 3 or 4.
    pub case: Case,
    /// The direction.
    pub direction: Direction,
    /// Client frame length, bytes.
    pub frame_len: usize,
    /// The capture's filter.
    pub filter: &'static str,
    /// Capture-off frames per second, per round.
    pub off_pps: Vec<Option<f64>>,
    /// Capture-on frames per second, per round.
    pub on_pps: Vec<Option<f64>>,
    /// on / off per round.
    pub ratios: Vec<Option<f64>>,
    /// The median of `ratios`.
    pub ratio: Option<f64>,
    /// The capture's own counters at its end (last round): frames seen at
    /// the trunk, matched by the filter, written to the reader, dropped.
    pub capture: serde_json::Value,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// 1: XDP_REDIRECT, no parsing.
    Raw,
    /// 2: kernel VXLAN into a Linux bridge.
    Vxlan,
    /// 3: tunterm, XDP fast path.
    TuntermXdp,
    /// 4: tunterm, userspace path.
    TuntermUserspace,
    /// 5: tunterm, userspace path with forwarding workers.
    TuntermWorkers,
}

impl Case {
    /// The case numbered `n` (1–5).
    pub fn from_number(n: u8) -> Option<Case> {
        Case::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// Every case, in order.
    pub const ALL: [Case; 5] = [
        Case::Raw,
        Case::Vxlan,
        Case::TuntermXdp,
        Case::TuntermUserspace,
        Case::TuntermWorkers,
    ];

    /// Its number in the issue (1–4).
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// A line of the table.
    pub fn label(self) -> &'static str {
        match self {
            Case::Raw => "raw XDP_REDIRECT, no parsing",
            Case::Vxlan => "kernel VXLAN + bridge (untagged)",
            Case::TuntermXdp => "tunterm, XDP fast path",
            Case::TuntermUserspace => "tunterm, userspace path",
            Case::TuntermWorkers => "tunterm, userspace, --workers N",
        }
    }
}

/// Which way the client frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the APs to the trunk: decapsulation.
    ApToTrunk,
    /// From the trunk to the APs: encapsulation.
    TrunkToAp,
}

impl Direction {
    /// Both, in the order they run.
    pub const ALL: [Direction; 2] = [Direction::ApToTrunk, Direction::TrunkToAp];

    /// A column heading.
    pub fn label(self) -> &'static str {
        match self {
            Direction::ApToTrunk => "AP→trunk (decap)",
            Direction::TrunkToAp => "trunk→AP (encap)",
        }
    }
}

/// One measurement: a case, a direction, a frame length.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The case.
    pub case: Case,
    /// The direction.
    pub direction: Direction,
    /// Client frame length, bytes.
    pub frame_len: usize,
    /// Frames per second counted at the receiver; None when not measured.
    /// With several rounds, the median of the rounds that have a number.
    pub pps: Option<f64>,
    /// Every round's frames per second, in order (None: that round has no
    /// number).
    pub pps_rounds: Vec<Option<f64>>,
    /// Frames per second the generator put on its link (sent + dropped
    /// on transmit), over the same window.
    pub offered_pps: Option<f64>,
    /// Frames counted at the receiver in the window.
    pub received: Option<u64>,
    /// Why there is no number, or what to know about it.
    pub note: Option<String>,
}

/// One ratio of two cases at one frame length and direction.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// "3/1", "3/2", "4/2", "5/2" or "5/4".
    pub name: &'static str,
    /// The direction.
    pub direction: Direction,
    /// Client frame length, bytes.
    pub frame_len: usize,
    /// The ratio, when both rates exist.
    pub value: Option<f64>,
    /// The issue's target (for 64-byte frames).
    pub target: Option<f64>,
}

/// Everything one run measured, and under which conditions.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// The filter of the capture running on the trunk in cases 3 and 4
    /// (None: no capture).
    pub capture_filter: Option<String>,
    /// trafgen, tunterm and the capture reader ran under SCHED_FIFO.
    pub realtime: bool,
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Sessions asked for.
    pub sessions: usize,
    /// Client MACs asked for.
    pub macs: usize,
    /// Per case with an edge that learns: MACs it had learned when the
    /// measurement started.
    pub macs_learned: Vec<(Case, usize)>,
    /// Entries of the XDP FDB in case 3 (`--fast-path-fdb-entries`).
    pub fdb_entries: u32,
    /// Rounds each row is the median of.
    pub rounds: usize,
    /// Window, seconds.
    pub window_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// The CPU the generator runs on.
    pub generator_cpu: u32,
    /// The CPU tunterm is pinned to.
    pub tunterm_cpu: u32,
    /// Every row: case × direction × frame length.
    pub rows: Vec<Row>,
    /// 3/1, 3/2 and 4/2 per direction and frame length.
    pub ratios: Vec<Ratio>,
    /// With `capture_compare`: cases 3 and 4 with a capture on the trunk,
    /// as ratios of the same round's capture-off rates.
    pub capture_costs: Vec<CaptureCost>,
}

/// The CPU tunterm runs on (trafgen and the softirq work it triggers run
/// on `trafgen::GEN_CPU`).
pub const TUNTERM_CPU: u32 = 1;

/// Fails with what to install unless trafgen is there.
pub fn require_trafgen() -> anyhow::Result<()> {
    match Command::new("trafgen").arg("-v").output() {
        Ok(_) => Ok(()),
        Err(e) => {
            bail!("trafgen is needed ({e}): apt-get install netsniff-ng (or bash .ci/install-deps)")
        }
    }
}

/// Whether this tunterm has the XDP fast path (`--fast-path` in its help).
pub fn has_fast_path(tunterm: &Path) -> bool {
    has_run_flag(tunterm, "--fast-path")
}

/// Whether `tunterm run` of this build takes `flag` (in its help).
fn has_run_flag(tunterm: &Path, flag: &str) -> bool {
    [&["--help"][..], &["run", "--help"][..]]
        .iter()
        .any(|args| {
            Command::new(tunterm)
                .args(*args)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        })
}

/// The name prefix of every labbench namespace: `tt` + 4 hex + this.
const NS_TAG: &str = "labbench-";

fn is_labbench_ns(name: &str) -> bool {
    name.len() > 6
        && name.starts_with("tt")
        && name[2..6].chars().all(|c| c.is_ascii_hexdigit())
        && name[6..].starts_with(NS_TAG)
}

/// One benchmark at a time on a machine (two would measure each other):
/// an exclusive lock on a file in /run/lock, held while it lives. Holding
/// it, every labbench namespace that exists is a leftover of a run that
/// died, and is removed.
struct RunLock {
    _file: File,
}

impl RunLock {
    fn take() -> anyhow::Result<RunLock> {
        let path = Path::new("/run/lock/tunterm-labbench.lock");
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("labbench: another run holds {}; waiting", path.display());
            // SAFETY: as above, blocking.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error()).context("flock");
            }
        }
        sysctl::restore_leftover();
        let names = Command::new("ip").args(["netns", "list"]).output()?;
        for line in String::from_utf8_lossy(&names.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if is_labbench_ns(name) {
                eprintln!("labbench: removing leftover namespace {name}");
                lab::cleanup_prefix(name);
            }
        }
        Ok(RunLock { _file: file })
    }
}

/// (ifindex, MAC) of `ifname` in `ns`, as the daemon reads them.
fn link_info(ns: &Netns, ifname: &str) -> anyhow::Result<(u32, [u8; 6])> {
    let link = ns.enter(|| tunterm::io::netlink::link(ifname))??;
    let mac = link
        .mac
        .with_context(|| format!("{ifname} in {}: no Ethernet address", ns.name()))?;
    Ok((link.index, mac))
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex {s:?}")))
        .collect()
}

/// What a case gives the generator: a session table and its clients.
struct Traffic {
    sessions: Vec<SessionKey>,
    clients: Vec<Client>,
}

impl Traffic {
    /// A made-up table in apsim's shape (for the cases that do not parse
    /// L2TP): session `i` from UDP port 20000 + i, clients by apsim's MAC
    /// formula.
    fn synthetic(sessions: usize, macs: usize, over_ip: bool) -> Traffic {
        let per = macs.div_ceil(sessions.max(1));
        let sessions_v = (0..sessions)
            .map(|i| SessionKey {
                ap_port: 20_000 + i as u16,
                edge_sid: i as u32 + 1,
                cookie: (i as u32).to_be_bytes().to_vec(),
                over_ip,
            })
            .collect();
        let clients = (0..sessions)
            .flat_map(|s| {
                (0..per).map(move |c| Client {
                    mac: packets::apsim_client_mac(s as u64, c as u32),
                    session: s,
                })
            })
            .collect();
        Traffic {
            sessions: sessions_v,
            clients,
        }
    }
}

/// The lab: three namespaces, two veth pairs, a counter at each end.
struct Bed {
    // Fields drop in order: programs before the namespaces.
    aps_count: Counter,
    up_count: Counter,
    /// The APs' side: apsim and the generator toward the edge.
    aps: Netns,
    /// The case under test.
    edge: Netns,
    /// The trunk's far end: the generator toward the clients.
    up: Netns,
    link: ApLink,
    ap0_index: u32,
    trunk0_index: u32,
    opts: Options,
    _lock: RunLock,
}

/// Which end sends.
#[derive(Clone, Copy)]
enum From {
    Ap,
    Trunk,
}

struct Measured {
    pps: f64,
    offered_pps: f64,
    received: u64,
    /// trafgen died during the window: the figure is not a rate.
    generator_stopped: bool,
}

impl Bed {
    fn new(opts: Options) -> anyhow::Result<Bed> {
        lab::require_root()?;
        require_trafgen()?;
        let lock = RunLock::take()?;
        let prefix = lab::unique_prefix(NS_TAG);
        debug_assert!(is_labbench_ns(&prefix));
        std::fs::create_dir_all(&opts.work_dir)?;
        let aps = Netns::new(&format!("{prefix}aps"))?;
        let edge = Netns::new(&format!("{prefix}edge"))?;
        let up = Netns::new(&format!("{prefix}up"))?;
        for ns in [&aps, &edge, &up] {
            // No router solicitations, MLD or DAD on the measured links.
            ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            ns.run(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        lab::veth(&aps, "e0", &edge, "ap0")?;
        lab::veth(&edge, "trunk0", &up, "t0")?;
        lab::addr(&aps, "e0", &format!("{}/24", packets::AP_IP))?;
        lab::addr(&edge, "ap0", &format!("{}/24", packets::EDGE_IP))?;
        let (_, ap_mac) = link_info(&aps, "e0")?;
        let (ap0_index, edge_mac) = link_info(&edge, "ap0")?;
        let (trunk0_index, _) = link_info(&edge, "trunk0")?;
        let aps_count = Counter::attach(&aps, "e0")?;
        let up_count = Counter::attach(&up, "t0")?;
        Ok(Bed {
            aps_count,
            up_count,
            aps,
            edge,
            up,
            link: ApLink { edge_mac, ap_mac },
            ap0_index,
            trunk0_index,
            opts,
            _lock: lock,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.opts.work_dir.join(name)
    }

    fn write_config(&self, name: &str, packets: &[Vec<u8>]) -> anyhow::Result<PathBuf> {
        let p = self.path(name);
        std::fs::write(&p, packets::trafgen_config(packets))
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// Runs trafgen with `cfg` from one end and counts at the other.
    fn measure(&self, from: From, cfg: &Path, log: &str) -> anyhow::Result<Measured> {
        let (ns, ifname, counter) = match from {
            From::Ap => (&self.aps, "e0", &self.up_count),
            From::Trunk => (&self.up, "t0", &self.aps_count),
        };
        let log = self.path(log);
        // trafgen's socket gets its send buffer from wmem_default when it
        // is made: raised for that moment only (see trafgen::SNDBUF).
        let sndbuf = sysctl::Raised::at_least("net.core.wmem_default", trafgen::SNDBUF)?;
        let mut sender = trafgen::Generator::start(ns, ifname, cfg, &log)?;
        // trafgen reads its configuration first: the warm-up starts once
        // it says it sends. 100,000 frames (10,000 sessions × 100,000
        // MACs) take it 20–22 s to read on the 2-core lab machine, even
        // alone on its CPU. Not "the first frame through", nor a rate on
        // its interface: with apsim's sessions other frames cross too (the
        // edge's paced MAC announcements to the trunk, apsim's synthetic
        // clients' bursts), which opened the window of case 4 rows while
        // trafgen was still reading — nothing of them was measured.
        let sending = || std::fs::read_to_string(&log).is_ok_and(|l| l.contains(trafgen::RUNNING));
        if !lab::wait_until(Duration::from_secs(120), || sender.exited() || sending()) {
            bail!(
                "trafgen did not start sending within 120 s (see {})",
                log.display()
            );
        }
        drop(sndbuf);
        if sender.exited() {
            bail!(
                "trafgen exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            );
        }
        thread::sleep(self.opts.warmup);
        let (c0, o0, t0) = (
            counter.frames()?,
            trafgen::offered(ns, ifname)?,
            Instant::now(),
        );
        thread::sleep(self.opts.window);
        let (c1, o1, t1) = (
            counter.frames()?,
            trafgen::offered(ns, ifname)?,
            Instant::now(),
        );
        let generator_stopped = sender.exited();
        drop(sender);
        let dt = (t1 - t0).as_secs_f64();
        Ok(Measured {
            pps: (c1 - c0) as f64 / dt,
            offered_pps: o1.saturating_sub(o0) as f64 / dt,
            received: c1 - c0,
            generator_stopped,
        })
    }

    /// Measures every frame length both ways; `decap`/`encap` give the
    /// generator's packets for a frame length.
    fn run_directions(
        &self,
        case: Case,
        variant: &str,
        traffic: &Traffic,
        decap: &dyn Fn(usize, &SessionKey, &Client) -> Vec<u8>,
        encap: &dyn Fn(usize, &Client) -> Vec<u8>,
        rows: &mut Vec<Row>,
    ) -> anyhow::Result<()> {
        let order = packets::interleave(&traffic.clients, traffic.sessions.len());
        let tag = format!("case{}{variant}", case.number());
        for &len in &self.opts.frames {
            for dir in Direction::ALL {
                let (from, pkts): (From, Vec<Vec<u8>>) = match dir {
                    Direction::ApToTrunk => (
                        From::Ap,
                        order
                            .iter()
                            .map(|c| decap(len, &traffic.sessions[c.session], c))
                            .collect(),
                    ),
                    Direction::TrunkToAp => {
                        (From::Trunk, order.iter().map(|c| encap(len, c)).collect())
                    }
                };
                let name = format!("{tag}-{dir:?}-{len}");
                let cfg = self.write_config(&format!("{name}.trafgen"), &pkts)?;
                let m = self.measure(from, &cfg, &format!("{name}.trafgen.log"))?;
                eprintln!(
                    "labbench: case {}{variant} {} {len} B: {:.0} pps (offered {:.0})",
                    case.number(),
                    dir.label(),
                    m.pps,
                    m.offered_pps
                );
                // trafgen exits when a TX_RING flush fails with EAGAIN: on
                // veth that is backpressure from a receiver (an XDP program
                // in the sender's softirq) slower than trafgen.
                let note = if m.generator_stopped {
                    Some(format!(
                        "trafgen stopped during the window (receiver slower than the \
                         generator: veth backpressure; see {name}.trafgen.log)"
                    ))
                } else {
                    (m.received == 0).then(|| "nothing arrived".to_owned())
                };
                let pps = (!m.generator_stopped).then_some(m.pps);
                rows.push(Row {
                    case,
                    direction: dir,
                    frame_len: len,
                    pps,
                    pps_rounds: vec![pps],
                    offered_pps: Some(m.offered_pps),
                    received: Some(m.received),
                    note,
                });
            }
        }
        Ok(())
    }

    fn case_raw(&self, rows: &mut Vec<Row>) -> anyhow::Result<()> {
        let _redirect = Redirect::attach(
            &self.edge,
            ("ap0", self.ap0_index),
            ("trunk0", self.trunk0_index),
        )?;
        let traffic = Traffic::synthetic(self.opts.sessions, self.opts.macs, self.opts.l2tp_ip);
        let link = self.link;
        self.run_directions(
            Case::Raw,
            "",
            &traffic,
            &|len, s, c| packets::l2tp_data(&link, s, &packets::uplink_frame(len, &c.mac)),
            &|len, c| packets::downlink_frame(len, &c.mac, true),
            rows,
        )
    }

    /// Bridge fdb entries of vx0 that point at the AP.
    fn vxlan_learned(&self) -> anyhow::Result<usize> {
        let out = self.edge.run(&["bridge", "fdb", "show", "dev", "vx0"])?;
        Ok(out
            .lines()
            .filter(|l| l.contains(&format!("dst {}", packets::AP_IP)))
            .count())
    }

    fn case_vxlan(
        &self,
        rows: &mut Vec<Row>,
        learned: &mut Vec<(Case, usize)>,
    ) -> anyhow::Result<()> {
        let edge = &self.edge;
        let vni = packets::VNI.to_string();
        let port = packets::VXLAN_PORT.to_string();
        let local = packets::EDGE_IP.to_string();
        edge.run(&[
            "ip", "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", &local, "dstport",
            &port, "dev", "ap0", "learning",
        ])?;
        edge.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
        edge.run(&["ip", "link", "set", "vx0", "master", "br0"])?;
        edge.run(&["ip", "link", "set", "trunk0", "master", "br0"])?;
        edge.run(&["ip", "link", "set", "vx0", "up"])?;
        edge.run(&["ip", "link", "set", "br0", "up"])?;
        let result = (|| {
            let traffic = Traffic::synthetic(self.opts.sessions, self.opts.macs, self.opts.l2tp_ip);
            let link = self.link;
            let decap = move |len: usize, s: &SessionKey, c: &Client| {
                packets::vxlan_data(&link, s.ap_port, &packets::uplink_frame(len, &c.mac))
            };
            // Teach the bridge and VXLAN's FDB: the trunk host, then one
            // frame from every client.
            let announce = self.write_config(
                "case2-announce.trafgen",
                &[packets::trunk_host_announce(false)],
            )?;
            trafgen::send_rounds(&self.up, "t0", &announce, 1, 3, "1ms")?;
            let order = packets::interleave(&traffic.clients, traffic.sessions.len());
            let teach: Vec<Vec<u8>> = order
                .iter()
                .map(|c| {
                    decap(
                        packets::MIN_CLIENT_FRAME.max(64),
                        &traffic.sessions[c.session],
                        c,
                    )
                })
                .collect();
            let teach_cfg = self.write_config("case2-learn.trafgen", &teach)?;
            let mut n = 0;
            for _ in 0..3 {
                trafgen::send_rounds(&self.aps, "e0", &teach_cfg, teach.len(), 1, "20us")?;
                n = self.vxlan_learned()?;
                if n >= traffic.clients.len() {
                    break;
                }
            }
            learned.push((Case::Vxlan, n));
            self.run_directions(
                Case::Vxlan,
                "",
                &traffic,
                &decap,
                &|len, c| packets::downlink_frame(len, &c.mac, false),
                rows,
            )
        })();
        let _ = edge.run(&["ip", "link", "del", "br0"]);
        let _ = edge.run(&["ip", "link", "del", "vx0"]);
        result
    }

    /// Cases 3 and 4: tunterm with `fast_path` (None: the build has no
    /// flag), real sessions from apsim.
    fn case_tunterm(
        &self,
        case: Case,
        fast_path: Option<&str>,
        rows: &mut Vec<Row>,
        learned: &mut Vec<(Case, usize)>,
        costs: &mut Vec<CaptureCost>,
    ) -> anyhow::Result<()> {
        let n = case.number();
        let tunterm_bin = self.opts.bin_dir.join("tunterm");
        let apsim_bin = self.opts.bin_dir.join("tunterm-apsim");
        let config = self.path(&format!("case{n}-edge.json"));
        std::fs::write(&config, edge_config(self.opts.l2tp_ip).to_string())?;
        let edge_sock = self.path(&format!("case{n}-edge.sock"));
        let ap_sock = self.path(&format!("case{n}-apsim.sock"));
        let s = |p: &Path| p.to_string_lossy().into_owned();
        // With workers, every CPU (the generator's included: it shares).
        let cpu = if case == Case::TuntermWorkers {
            format!(
                "0-{}",
                thread::available_parallelism().map_or(1, |n| n.get()) - 1
            )
        } else {
            TUNTERM_CPU.to_string()
        };
        let mut args: Vec<String> = trafgen::rt_prefix().into_iter().map(Into::into).collect();
        args.extend([
            "taskset".to_owned(),
            "-c".into(),
            cpu,
            s(&tunterm_bin),
            "run".into(),
            "--config".into(),
            s(&config),
            "--control-socket".into(),
            s(&edge_sock),
        ]);
        if let Some(mode) = fast_path {
            args.extend(["--fast-path".into(), mode.into()]);
            // The XDP FDB sized for this table, as an operator sizes it
            // for theirs (builds that have the flag).
            if has_run_flag(&tunterm_bin, "--fast-path-fdb-entries") {
                args.extend([
                    "--fast-path-fdb-entries".into(),
                    fdb_entries(self.opts.macs).to_string(),
                ]);
            }
        }
        // Every simulated AP comes from one address: no per-source SCCRQ
        // limit (builds that have one).
        if has_run_flag(&tunterm_bin, "--sccrq-burst") {
            args.extend(["--sccrq-burst".into(), "0".into()]);
        }
        if case == Case::TuntermWorkers {
            anyhow::ensure!(
                has_run_flag(&tunterm_bin, "--workers"),
                "--workers: {} has no such option (a build from before it)",
                tunterm_bin.display()
            );
            args.extend(["--workers".into(), self.opts.workers.to_string()]);
        }
        if let Some(len) = self.opts.cookie_len {
            anyhow::ensure!(
                has_run_flag(&tunterm_bin, "--cookie-len"),
                "--cookie-len: {} has no such option (a build from before it)",
                tunterm_bin.display()
            );
            args.extend(["--cookie-len".into(), len.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tunterm = self
            .edge
            .spawn(&args, &self.path(&format!("case{n}-tunterm.log")))?;
        tunterm
            .wait_for_log("tunterm running", Duration::from_secs(20))
            .context("tunterm did not start")?;
        // The trunk host first, so the clients' frames are unicast to it
        // rather than flooded.
        let announce = self.write_config(
            &format!("case{n}-announce.trafgen"),
            &[packets::trunk_host_announce(true)],
        )?;
        trafgen::send_rounds(&self.up, "t0", &announce, 1, 3, "1ms")
            .context("announcing the trunk host")?;
        let per_ap = self.opts.macs.div_ceil(self.opts.sessions.max(1));
        let apsim = self
            .start_apsim(&apsim_bin, &ap_sock, per_ap, n)
            .context("starting apsim")?;
        let traffic = self
            .wait_sessions(&edge_sock, &ap_sock, &tunterm, &apsim, per_ap)
            .context("bringing up the sessions")?;
        learned.push((case, traffic.clients.len()));
        let capture = match &self.opts.capture_filter {
            Some(f) => Some(
                start_capture(
                    &tunterm_bin,
                    &edge_sock,
                    f,
                    &self.path(&format!("case{n}-capture.log")),
                )
                .context("starting the capture")?,
            ),
            None => None,
        };
        let link = self.link;
        let result = self.run_directions(
            case,
            "",
            &traffic,
            &|len, s, c| packets::l2tp_data(&link, s, &packets::uplink_frame(len, &c.mac)),
            &|len, c| packets::downlink_frame(len, &c.mac, true),
            rows,
        );
        if let Ok(stats) = topology::query(&edge_sock) {
            let _ = std::fs::write(
                self.path(&format!("case{n}-edge-stats-end.json")),
                serde_json::to_string_pretty(&serde_json::json!({
                    "l2tp": stats["l2tp"], "switch": stats["switch"], "io": stats["io"],
                    "fast_path": stats["fast_path"], "captures": stats["captures"],
                    "workers": stats["workers"],
                }))?,
            );
        }
        if let Some(mut c) = capture {
            let _ = c.kill();
            let _ = c.wait();
        }
        if result.is_ok() && self.opts.capture_compare {
            let off: Vec<Row> = rows.iter().filter(|r| r.case == case).cloned().collect();
            for (label, filter) in [
                ("nothing", CAPTURE_NOTHING),
                ("everything", CAPTURE_EVERYTHING),
            ] {
                let log = self.path(&format!("case{n}-capture-{label}.log"));
                let mut c = start_capture(&tunterm_bin, &edge_sock, filter, &log)
                    .with_context(|| format!("starting the capture matching {label}"))?;
                let mut on = Vec::new();
                let measured = self.run_directions(
                    case,
                    &format!("-capture-{label}"),
                    &traffic,
                    &|len, s, c| packets::l2tp_data(&link, s, &packets::uplink_frame(len, &c.mac)),
                    &|len, c| packets::downlink_frame(len, &c.mac, true),
                    &mut on,
                );
                let stats = topology::query(&edge_sock).unwrap_or_default();
                let counters = stats["captures"].clone();
                let _ = std::fs::write(
                    self.path(&format!("case{n}-capture-{label}-edge-stats-end.json")),
                    serde_json::to_string_pretty(&serde_json::json!({
                        "l2tp": stats["l2tp"], "switch": stats["switch"], "io": stats["io"],
                        "fast_path": stats["fast_path"], "captures": stats["captures"],
                    "workers": stats["workers"],
                    }))?,
                );
                let _ = c.kill();
                let _ = c.wait();
                measured?;
                for r in on {
                    let base = off
                        .iter()
                        .find(|o| o.direction == r.direction && o.frame_len == r.frame_len)
                        .and_then(|o| o.pps);
                    let ratio = match (r.pps, base) {
                        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                        _ => None,
                    };
                    costs.push(CaptureCost {
                        case,
                        direction: r.direction,
                        frame_len: r.frame_len,
                        filter,
                        off_pps: vec![base],
                        on_pps: vec![r.pps],
                        ratios: vec![ratio],
                        ratio,
                        capture: counters.clone(),
                    });
                }
                // The fast path's FDB is mirrored back when the capture
                // ends: let it be full again before the next window.
                thread::sleep(Duration::from_secs(1));
            }
        }
        drop(apsim);
        drop(tunterm);
        result
    }

    fn start_apsim(&self, bin: &Path, sock: &Path, per_ap: usize, n: u8) -> anyhow::Result<Proc> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let count = self.opts.sessions.to_string();
        let per_ap = per_ap.to_string();
        let dst = MacAddr(packets::TRUNK_HOST_MAC).to_string();
        let edge = packets::EDGE_IP.to_string();
        let local = packets::AP_IP.to_string();
        let args = [
            s(bin),
            "--edge".into(),
            edge,
            "--count".into(),
            count,
            "--local-ip".into(),
            local,
            "--hello-interval".into(),
            "60".into(),
            "--hello-retries".into(),
            "7".into(),
            "--synthetic-clients".into(),
            per_ap,
            "--synthetic-dst".into(),
            dst,
            "--synthetic-interval-ms".into(),
            "1000".into(),
            "--transport".into(),
            if self.opts.l2tp_ip { "ip" } else { "udp" }.into(),
            "--synthetic-bursts".into(),
            "3".into(),
            "--control-socket".into(),
            s(sock),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.aps
            .spawn(&args, &self.path(&format!("case{n}-apsim.log")))
    }

    /// Waits for every session and the clients' MACs, and reads the table
    /// the generator needs from the edge's and apsim's stats.
    fn wait_sessions(
        &self,
        edge_sock: &Path,
        ap_sock: &Path,
        tunterm: &Proc,
        apsim: &Proc,
        per_ap: usize,
    ) -> anyhow::Result<Traffic> {
        let want = self.opts.sessions;
        let limit = Duration::from_secs(30 + want as u64 / 50);
        let up = lab::wait_until(limit, || {
            topology::query(edge_sock).is_ok_and(|s| topology::sessions_up(&s) >= want)
        });
        if !up {
            bail!(
                "{want} sessions did not come up in {limit:?} (logs: {}, {})",
                tunterm.log().display(),
                apsim.log().display()
            );
        }
        // Three rounds of client frames, a second apart, once each
        // session is up; the learning is over when the count stops moving.
        let macs = |f: Vec<tunterm::api::FdbEntry>| f.iter().filter(|e| e.port != "trunk").count();
        let mut last = (0, Instant::now());
        lab::wait_until(Duration::from_secs(30), || {
            let n = topology::query_fdb(edge_sock).map_or(0, macs);
            if n != last.0 {
                last = (n, Instant::now());
            }
            n >= want * per_ap || last.1.elapsed() > Duration::from_secs(5)
        });
        let edge = topology::query(edge_sock).context("the edge's stats")?;
        let fdb = topology::query_fdb(edge_sock).context("the edge's FDB")?;
        let sims = topology::query_apsim(ap_sock).context("apsim's stats")?;
        // edge session id → (AP name, AP's UDP port)
        let mut by_sid: HashMap<u32, (String, u16)> = HashMap::new();
        for t in edge["tunnels"].as_array().into_iter().flatten() {
            let ap = t["ap"].as_str().unwrap_or_default().to_owned();
            let port = t["remote_port"].as_u64().unwrap_or(0) as u16;
            for s in t["sessions"].as_array().into_iter().flatten() {
                if s["state"] == "established"
                    && let Some(sid) = s["local_sid"].as_u64()
                {
                    by_sid.insert(sid as u32, (ap.clone(), port));
                }
            }
        }
        let mut sessions = Vec::new();
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut clients = Vec::new();
        for e in &fdb {
            let Ok(sid) = e.port.parse::<u32>() else {
                continue;
            };
            let Some((ap, port)) = by_sid.get(&sid) else {
                continue;
            };
            let i = match index.get(&sid) {
                Some(&i) => i,
                None => {
                    let sess = &sims["per_ap"][ap]["session"];
                    anyhow::ensure!(
                        sess["remote_sid"].as_u64() == Some(u64::from(sid)),
                        "apsim's {ap} does not know edge session {sid}: {sess}"
                    );
                    let cookie = parse_hex(sess["cookie_tx"].as_str().unwrap_or_default())?;
                    sessions.push(SessionKey {
                        ap_port: *port,
                        edge_sid: sid,
                        cookie,
                        over_ip: self.opts.l2tp_ip,
                    });
                    index.insert(sid, sessions.len() - 1);
                    sessions.len() - 1
                }
            };
            let mac = e.mac.parse::<MacAddr>()?.0;
            clients.push(Client { mac, session: i });
        }
        anyhow::ensure!(
            !clients.is_empty(),
            "the edge learned no client MAC (logs: {}, {})",
            tunterm.log().display(),
            apsim.log().display()
        );
        Ok(Traffic { sessions, clients })
    }
}

/// The edge's configuration: one mxtunnel carrying VLAN 10 (the clients'
/// untagged frames), native VLAN 1 on the trunk, hellos every minute.
fn edge_config(l2tp_ip: bool) -> serde_json::Value {
    serde_json::json!({
        "mxedge": {
            "name": "labbench-edge",
            "tunterm_ip_config": {"ip": packets::EDGE_IP.to_string(), "netmask": "255.255.255.0"},
            "tunterm_port_config": {
                "separate_upstream_downstream": true,
                "downstream_ports": ["0"],
                "upstream_ports": ["1"],
                "upstream_port_vlan_id": 1
            }
        },
        "mxcluster": {"name": "labbench", "tunterm_ap_subnets": ["10.99.0.0/24"]},
        "mxtunnels": [{
            "name": "lab",
            "protocol": if l2tp_ip { "ip" } else { "udp" },
            "vlan_ids": [packets::CLIENT_VLAN],
            "hello_interval": 60,
            "hello_retries": 7
        }],
        "ports": {"0": "ap0", "1": "trunk0"}
    })
}

/// Runs every case and returns the report. A case that fails to run gets
/// rows without numbers and the error as their note; the others still run.
pub fn run(opts: Options) -> anyhow::Result<Report> {
    for &len in &opts.frames {
        anyhow::ensure!(
            (packets::MIN_CLIENT_FRAME.max(60)..=packets::MAX_CLIENT_FRAME).contains(&len),
            "frame length {len}: from {} to {} bytes",
            packets::MIN_CLIENT_FRAME.max(60),
            packets::MAX_CLIENT_FRAME
        );
    }
    anyhow::ensure!(opts.sessions >= 1, "at least one session");
    anyhow::ensure!(
        opts.sessions <= 40_000,
        "at most 40,000 sessions (UDP ports)"
    );
    anyhow::ensure!(opts.macs >= opts.sessions, "at least one MAC per session");
    anyhow::ensure!((1..=20).contains(&opts.rounds), "from 1 to 20 rounds");
    let tunterm = opts.bin_dir.join("tunterm");
    for bin in [&tunterm, &opts.bin_dir.join("tunterm-apsim")] {
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build it (cargo build --release -p tunterm) or pass --bin-dir",
            bin.display()
        );
    }
    let fast_path = has_fast_path(&tunterm);
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    trafgen::REALTIME.store(opts.realtime, std::sync::atomic::Ordering::Relaxed);
    let bed = Bed::new(opts.clone())?;
    let mut rounds = Vec::new();
    let mut learned = Vec::new();
    let mut costs = Vec::new();
    for round in 1..=opts.rounds {
        if opts.rounds > 1 {
            eprintln!("labbench: round {round} of {}", opts.rounds);
        }
        let mut rows = Vec::new();
        learned.clear();
        for case in Case::ALL {
            let before = rows.len();
            if !opts.cases.contains(&case) {
                not_measured(&opts, case, "skipped (--cases)", &mut rows);
                continue;
            }
            let result = match case {
                Case::Raw => bed.case_raw(&mut rows),
                Case::Vxlan => bed.case_vxlan(&mut rows, &mut learned),
                Case::TuntermXdp if !fast_path => {
                    not_measured(&opts, case, "n/a (no fast path in this build)", &mut rows);
                    Ok(())
                }
                Case::TuntermXdp => bed.case_tunterm(
                    case,
                    Some("xdp-native"),
                    &mut rows,
                    &mut learned,
                    &mut costs,
                ),
                Case::TuntermUserspace | Case::TuntermWorkers => {
                    let mode = fast_path.then_some("off");
                    bed.case_tunterm(case, mode, &mut rows, &mut learned, &mut costs)
                }
            };
            if let Err(e) = result {
                eprintln!("labbench: case {} failed: {e:#}", case.number());
                rows.truncate(before);
                not_measured(&opts, case, &format!("failed: {e:#}"), &mut rows);
            }
        }
        rounds.push(rows);
    }
    let rows = merge_rounds(rounds);
    let ratios = ratios(&opts, &rows);
    let capture_costs = merge_costs(costs);
    Ok(Report {
        capture_costs,
        capture_filter: opts.capture_filter.clone(),
        realtime: opts.realtime,
        started_unix,
        kernel,
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        sessions: opts.sessions,
        macs: opts.macs,
        macs_learned: learned,
        fdb_entries: fdb_entries(opts.macs),
        rounds: opts.rounds,
        window_s: opts.window.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        generator_cpu: trafgen::GEN_CPU,
        tunterm_cpu: TUNTERM_CPU,
        rows,
        ratios,
    })
}

/// `tunterm capture` on the trunk with `filter`, no count, a day long,
/// into /dev/null (its stderr into `log`), pinned to tunterm's CPU, once
/// the edge runs it.
fn start_capture(
    tunterm: &Path,
    sock: &Path,
    filter: &str,
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    // On tunterm's CPU: the reader's work is the capture's cost, charged
    // to the edge, not to the generator's CPU.
    let mut child = Command::new("chrt");
    match trafgen::rt_prefix().as_slice() {
        [_, rest @ ..] => child.args(rest),
        [] => child.args(["-o", "0"]),
    };
    let mut child = child
        .args(["taskset", "-c", &TUNTERM_CPU.to_string()])
        .arg(tunterm)
        .arg("capture")
        .arg("--control-socket")
        .arg(sock)
        .args([
            "-i",
            "trunk",
            "-f",
            filter,
            "-c",
            "0",
            "--duration",
            "86400",
        ])
        .args(["-s", "2048", "-w", "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("running tunterm capture")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let running = topology::query(sock)
            .ok()
            .and_then(|s| s["captures"].as_array().map(|a| !a.is_empty()))
            .unwrap_or(false);
        if running {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "tunterm capture exited {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the capture did not start within 10 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One [`CaptureCost`] per case × direction × frame length × filter from
/// every round's: the rounds' rates and ratios in order, the median ratio,
/// the last round's capture counters.
fn merge_costs(costs: Vec<CaptureCost>) -> Vec<CaptureCost> {
    let mut out: Vec<CaptureCost> = Vec::new();
    for c in costs {
        let same = |m: &&mut CaptureCost| {
            m.case == c.case
                && m.direction == c.direction
                && m.frame_len == c.frame_len
                && m.filter == c.filter
        };
        match out.iter_mut().find(same) {
            Some(m) => {
                m.off_pps.extend(c.off_pps);
                m.on_pps.extend(c.on_pps);
                m.ratios.extend(c.ratios);
                m.capture = c.capture;
            }
            None => out.push(c),
        }
    }
    for m in &mut out {
        m.ratio = median(m.ratios.iter().flatten().copied().collect());
    }
    out
}

/// The XDP FDB size for `macs` client MACs (and the trunk host).
fn fdb_entries(macs: usize) -> u32 {
    tunterm_ebpf::Capacity::for_macs(macs + 1).fdb
}

/// The median of some numbers (the mean of the middle two for an even
/// count); None for none.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One row per case × direction × frame length from every round's rows
/// (all rounds have the same rows in the same order): rates are the
/// medians of the rounds that have one, `received` the sum, the note the
/// first round's that has one, marked with its round.
fn merge_rounds(rounds: Vec<Vec<Row>>) -> Vec<Row> {
    let n = rounds.len();
    let mut iter = rounds.into_iter();
    let Some(first) = iter.next() else {
        return Vec::new();
    };
    let mut merged: Vec<(Row, Vec<Option<f64>>)> = first
        .into_iter()
        .map(|r| {
            let offered = vec![r.offered_pps];
            (r, offered)
        })
        .collect();
    for (i, rows) in iter.enumerate() {
        for (m, r) in merged.iter_mut().zip(rows) {
            debug_assert!(m.0.case == r.case && m.0.direction == r.direction);
            m.0.pps_rounds.extend(r.pps_rounds);
            m.1.push(r.offered_pps);
            m.0.received = match (m.0.received, r.received) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            if m.0.note.is_none()
                && let Some(note) = r.note
            {
                m.0.note = Some(format!("round {}: {note}", i + 2));
            }
        }
    }
    merged
        .into_iter()
        .map(|(mut row, offered)| {
            if n > 1 {
                if let Some(note) = row.note.take() {
                    let note = if note.starts_with("round ") {
                        note
                    } else {
                        format!("round 1: {note}")
                    };
                    row.note = Some(note);
                }
                // A case skipped or without a fast path says so once.
                if row.pps_rounds.iter().all(Option::is_none)
                    && let Some(note) = &row.note
                {
                    row.note = Some(note.trim_start_matches("round 1: ").to_owned());
                }
            }
            row.pps = median(row.pps_rounds.iter().flatten().copied().collect());
            row.offered_pps = median(offered.into_iter().flatten().collect());
            row
        })
        .collect()
}

/// How far apart a row's rounds are: (max − min) / median, when at least
/// two rounds have a number.
fn spread(row: &Row) -> Option<f64> {
    let v: Vec<f64> = row.pps_rounds.iter().flatten().copied().collect();
    let med = row.pps?;
    if v.len() < 2 || med <= 0.0 {
        return None;
    }
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    Some((max - min) / med)
}

fn not_measured(opts: &Options, case: Case, why: &str, rows: &mut Vec<Row>) {
    for &len in &opts.frames {
        for dir in Direction::ALL {
            rows.push(Row {
                case,
                direction: dir,
                frame_len: len,
                pps: None,
                pps_rounds: vec![None],
                offered_pps: None,
                received: None,
                note: Some(why.to_owned()),
            });
        }
    }
}

fn pps(rows: &[Row], case: Case, dir: Direction, len: usize) -> Option<f64> {
    rows.iter()
        .find(|r| r.case == case && r.direction == dir && r.frame_len == len)
        .and_then(|r| r.pps)
}

fn ratios(opts: &Options, rows: &[Row]) -> Vec<Ratio> {
    // 0: no target.
    let defs: [(&str, Case, Case, f64); 5] = [
        ("3/1", Case::TuntermXdp, Case::Raw, 0.9),
        ("3/2", Case::TuntermXdp, Case::Vxlan, 1.8),
        ("4/2", Case::TuntermUserspace, Case::Vxlan, 1.0),
        ("5/2", Case::TuntermWorkers, Case::Vxlan, 0.0),
        ("5/4", Case::TuntermWorkers, Case::TuntermUserspace, 0.0),
    ];
    let mut out = Vec::new();
    for &len in &opts.frames {
        for dir in Direction::ALL {
            for (name, a, b, target) in defs {
                let value = match (pps(rows, a, dir, len), pps(rows, b, dir, len)) {
                    (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                    _ => None,
                };
                out.push(Ratio {
                    name,
                    direction: dir,
                    frame_len: len,
                    value,
                    target: (len == 64 && target > 0.0).then_some(target),
                });
            }
        }
    }
    out
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl Report {
    /// The table for a terminal: pps per case × direction × frame length,
    /// then the ratios.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let learned: Vec<String> = self
            .macs_learned
            .iter()
            .map(|(c, n)| format!("case {} {n}", c.number()))
            .collect();
        let _ = writeln!(
            out,
            "labbench: {} sessions, {} client MACs (learned: {}); {:.1} s window after {:.1} s warm-up",
            self.sessions,
            self.macs,
            learned.join(", "),
            self.window_s,
            self.warmup_s
        );
        let _ = writeln!(
            out,
            "kernel {}, {} CPUs; trafgen (1 worker) on CPU {}, tunterm on CPU {}; counted by XDP at the receiver",
            self.kernel, self.cpus, self.generator_cpu, self.tunterm_cpu
        );
        let _ = writeln!(
            out,
            "case 3: --fast-path-fdb-entries {} (the MACs and 1/16 more, a power of two)",
            self.fdb_entries
        );
        if self.realtime {
            let _ = writeln!(
                out,
                "trafgen, tunterm and the capture reader under SCHED_FIFO {} (--realtime)",
                trafgen::RT_PRIORITY
            );
        }
        if let Some(f) = &self.capture_filter {
            let _ = writeln!(
                out,
                "cases 3 and 4 with `tunterm capture -i trunk -f {f:?}` running (compare with a run without)"
            );
        }
        let lens: Vec<usize> = {
            let mut v: Vec<usize> = self.rows.iter().map(|r| r.frame_len).collect();
            v.dedup();
            v.sort_unstable();
            v.dedup();
            v
        };
        let multi = self.rounds > 1;
        if multi {
            let _ = writeln!(
                out,
                "each rate: the median of {} rounds (cases in turn); spread: (max − min) / median",
                self.rounds
            );
        }
        let _ = write!(out, "\n{:<38} {:<18}", "case", "direction");
        for l in &lens {
            let _ = write!(out, " {:>14}", format!("{l} B pps"));
            if multi {
                let _ = write!(out, " {:>7}", "spread");
            }
        }
        out.push('\n');
        let mut notes: Vec<String> = Vec::new();
        for case in Case::ALL {
            for dir in Direction::ALL {
                let _ = write!(
                    out,
                    "{:<38} {:<18}",
                    format!("{} {}", case.number(), case.label()),
                    dir.label()
                );
                let mut line_note = None;
                for &l in &lens {
                    let row = self
                        .rows
                        .iter()
                        .find(|r| r.case == case && r.direction == dir && r.frame_len == l);
                    let cell = match row {
                        Some(Row {
                            pps: Some(p), note, ..
                        }) => {
                            // Some round had no number (it says which).
                            if let Some(n) = note {
                                line_note = Some(n.clone());
                            }
                            thousands(*p)
                        }
                        Some(Row { note: Some(n), .. }) => {
                            line_note = Some(n.clone());
                            "n/a".into()
                        }
                        _ => "-".into(),
                    };
                    let _ = write!(out, " {cell:>14}");
                    if multi {
                        let sp = row
                            .and_then(spread)
                            .map_or(String::new(), |v| format!("{:.0}%", v * 100.0));
                        let _ = write!(out, " {sp:>7}");
                    }
                }
                if let Some(n) = line_note {
                    let _ = write!(out, "  {n}");
                    if !notes.contains(&n) {
                        notes.push(n);
                    }
                }
                out.push('\n');
            }
        }
        out.push_str(
            "\ncase 2 forwards untagged frames (no VLAN filtering here) and needs no session or\n\
             cookie check: an easier job than tunterm's, which tags every frame onto VLAN 10.\n",
        );
        let _ = writeln!(
            out,
            "\n{:<6} {:<18} {:>7} {:>8} {:>8}",
            "ratio", "direction", "frame", "value", "target"
        );
        for r in &self.ratios {
            let value = r.value.map_or("n/a".into(), |v| format!("{v:.2}"));
            let target = match (r.target, r.value) {
                (Some(t), Some(v)) => {
                    format!("≥ {t:.1} {}", if v >= t { "met" } else { "MISSED" })
                }
                (Some(t), None) => format!("≥ {t:.1}"),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<6} {:<18} {:>5} B {value:>8}   {target}",
                r.name,
                r.direction.label(),
                r.frame_len
            );
        }
        if !self.capture_costs.is_empty() {
            let _ = writeln!(
                out,
                "\ncapture on the trunk (`tunterm capture -i trunk -f FILTER -c 0 -s 2048 -w /dev/null`),\n\
                 rate as a ratio of the same round's capture-off rate (same edge, same sessions):"
            );
            let _ = writeln!(
                out,
                "{:<6} {:<18} {:>7} {:<22} {:>7}  rounds",
                "case", "direction", "frame", "filter", "ratio"
            );
            for c in &self.capture_costs {
                let v = c.ratio.map_or("n/a".into(), |v| format!("{v:.2}"));
                let rounds: Vec<String> = c
                    .ratios
                    .iter()
                    .map(|r| r.map_or("n/a".into(), |v| format!("{v:.2}")))
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<6} {:<18} {:>5} B {:<22} {v:>7}  {}",
                    c.case.number(),
                    c.direction.label(),
                    c.frame_len,
                    format!("{:?}", c.filter),
                    rounds.join(" ")
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labbench_namespaces_are_recognised() {
        let p = lab::unique_prefix(NS_TAG);
        assert!(is_labbench_ns(&format!("{p}gen")), "{p}");
        assert!(!is_labbench_ns("tt12absmoke-a"));
        assert!(!is_labbench_ns("ttzzzzlabbench-gen"));
    }

    fn row(case: Case, pps: Option<f64>, note: Option<&str>) -> Row {
        Row {
            case,
            direction: Direction::ApToTrunk,
            frame_len: 64,
            pps,
            pps_rounds: vec![pps],
            offered_pps: pps.map(|p| p + 1.0),
            received: pps.map(|p| p as u64),
            note: note.map(str::to_owned),
        }
    }

    #[test]
    fn rounds_merge_into_medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let rounds = vec![
            vec![
                row(Case::Raw, Some(400.0), None),
                row(Case::TuntermXdp, Some(100.0), None),
                row(Case::Vxlan, None, Some("skipped (--cases)")),
            ],
            vec![
                row(Case::Raw, Some(500.0), None),
                row(Case::TuntermXdp, None, Some("trafgen stopped")),
                row(Case::Vxlan, None, Some("skipped (--cases)")),
            ],
            vec![
                row(Case::Raw, Some(450.0), None),
                row(Case::TuntermXdp, Some(300.0), None),
                row(Case::Vxlan, None, Some("skipped (--cases)")),
            ],
        ];
        let rows = merge_rounds(rounds);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].pps, Some(450.0));
        assert_eq!(
            rows[0].pps_rounds,
            vec![Some(400.0), Some(500.0), Some(450.0)]
        );
        assert_eq!(rows[0].received, Some(1350));
        assert_eq!(rows[0].note, None);
        assert!((spread(&rows[0]).unwrap() - 100.0 / 450.0).abs() < 1e-9);
        // A round without a number: the median of the others, and a note
        // naming the round.
        assert_eq!(rows[1].pps, Some(200.0));
        assert_eq!(rows[1].note.as_deref(), Some("round 2: trafgen stopped"));
        assert_eq!(rows[2].pps, None);
        assert_eq!(rows[2].note.as_deref(), Some("skipped (--cases)"));
        assert_eq!(spread(&rows[2]), None);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(355_123.4), "355,123");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000.0), "1,000");
    }
}
