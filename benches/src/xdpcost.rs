//! `xdpcost`: what tunterm's XDP programs cost per frame, without the
//! veths around them.
//!
//! labbench measures whole paths (generator, veth, program, redirect,
//! receiver); the difference between case 3 and case 1 there is the
//! program's own work, hidden in the noise of everything else. Here each
//! program runs through `BPF_PROG_TEST_RUN` on the very frames labbench
//! sends (`labbench::packets`), with the maps filled the way the daemon
//! fills them for the same table (sessions, their templates, the FDB), and
//! the kernel's own per-run timer gives the nanoseconds. The baseline is
//! labbench's case 1 program, `bench_redirect`, timed the same way in the
//! same passes, so `extra_ns` is what tunterm's program costs on top of
//! the raw redirect.
//!
//! Every frame runs once per call (a repeat would run the program again on
//! the frame it already rewrote), one call after the other, in one of
//! three orders ([`Order`]):
//!
//! - `round-robin` (the first, and labbench's): client 0 of session 0, 1,
//!   …, S-1, then client 1 of every session, …: every client once per
//!   pass, in the same order every pass. Consecutive frames belong to
//!   different sessions, but sessions and their templates are visited in
//!   slot order, i.e. in address order, which a hardware prefetcher can
//!   follow: friendlier to the caches than real traffic.
//! - `uniform`: every frame a client drawn uniformly at random (so a
//!   uniformly random session, each session having as many clients ±1):
//!   no locality at all, the honest worst case.
//! - `zipf`: clients drawn with Zipf's law, s = 1 (the k-th most active
//!   client sends ∝ 1/k of the frames), the ranks given to the clients in
//!   random order (a busy client can be behind any AP): a realistic skew.
//!
//! The random orders are drawn before timing (a fixed seed, so every run
//! and every program sees the same sequence of max(MACs, 2,000) frames):
//! no random number generator in the measured loop. Each frame must come
//! out as `XDP_REDIRECT` with the expected size: a frame that takes
//! another way fails the run instead of being timed.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use aya::Ebpf;
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use serde::Serialize;
use tunterm_ebpf::bench::BENCH_REDIRECT_OBJ;
use tunterm_ebpf::maps::{
    Session, SessionSpec, TemplateSpec, TunnelHeader, tt_fdb_entry, tt_fdb_key, tt_template,
    tt_trunk,
};
use tunterm_ebpf::{FastPath, PortIndex, Program, Table as _};

use crate::labbench::packets::{self, ApLink, Client, SessionKey};

/// The trunk's ifindex in the maps (nothing is sent: a test run only
/// reports the redirect).
const TRUNK_IFINDEX: u32 = 7;
/// The AP-facing ifindex in the templates.
const AP_IFINDEX: u32 = 9;
/// Session ids start here and go up by one, so their slots (the id's low 16
/// bits) are packed like the daemon's, which gives each new id the lowest
/// free slot (from a per-endpoint base) under 16 random high bits.
const SID_BASE: u32 = 0x1000_0000;
/// The APs' first UDP port (one AP per session, as in labbench).
const AP_PORT_BASE: u16 = 20_000;
/// L2TPv3/UDP/IPv4 header with a 4-byte cookie: what a template adds.
const ENCAP_LEN: usize = 14 + 20 + 8 + 8 + 4;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Client frame length, bytes.
    pub frame_len: usize,
    /// Table sizes: (sessions, client MACs).
    pub tables: Vec<(usize, usize)>,
    /// Passes over each table; each figure is the median of its passes.
    pub passes: usize,
    /// Traffic orders, each measured on every table.
    pub orders: Vec<Order>,
}

/// The order frames are sent in (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// labbench's: every client once per pass, round robin over sessions.
    RoundRobin,
    /// A uniformly random client per frame.
    Uniform,
    /// Clients drawn by Zipf's law (s = 1), ranks in random order.
    Zipf,
}

impl Order {
    /// The name `--order` takes and the report prints.
    pub fn name(self) -> &'static str {
        match self {
            Order::RoundRobin => "round-robin",
            Order::Uniform => "uniform",
            Order::Zipf => "zipf",
        }
    }
}

impl std::str::FromStr for Order {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Order> {
        [Order::RoundRobin, Order::Uniform, Order::Zipf]
            .into_iter()
            .find(|o| o.name() == s)
            .with_context(|| format!("order {s:?}: round-robin, uniform or zipf"))
    }
}

/// The seed of the random orders: fixed, so runs compare.
const SEED: u64 = 0x7475_6e74_6572_6d17;

/// splitmix64: small, fast, good enough to shuffle a bench's frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1; the modulo bias is below 2^-40 here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The frames of one pass, as indices into a table's frames (which are
/// in round-robin order), for `clients` clients.
fn sequence(order: Order, clients: usize) -> Vec<usize> {
    let n = clients.max(MIN_RUNS_PER_PASS);
    let mut rng = Rng(SEED);
    match order {
        Order::RoundRobin => (0..n).map(|i| i % clients).collect(),
        Order::Uniform => (0..n).map(|_| rng.below(clients)).collect(),
        Order::Zipf => {
            // Rank k (from 1) weighs 1/k; rank k is client rank_to[k-1].
            let mut rank_to: Vec<usize> = (0..clients).collect();
            for i in (1..clients).rev() {
                rank_to.swap(i, rng.below(i + 1));
            }
            let mut cdf = Vec::with_capacity(clients);
            let mut sum = 0.0;
            for k in 1..=clients {
                sum += 1.0 / k as f64;
                cdf.push(sum);
            }
            (0..n)
                .map(|_| {
                    let u = rng.unit() * sum;
                    let k = cdf.partition_point(|&c| c <= u).min(clients - 1);
                    rank_to[k]
                })
                .collect()
        }
    }
}

/// One program on one table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `bench_redirect`, `xdp_ap_rx` or `xdp_trunk_rx`.
    pub program: &'static str,
    /// What it does.
    pub what: &'static str,
    /// Sessions in the maps.
    pub sessions: usize,
    /// Client MACs in the FDB (plus the trunk host).
    pub macs: usize,
    /// The order frames were sent in.
    pub order: Order,
    /// Median over the passes of the mean nanoseconds per frame.
    pub ns: f64,
    /// Every pass's mean.
    pub ns_passes: Vec<f64>,
    /// `ns` minus the baseline's on the same table (None for the
    /// baseline).
    pub extra_ns: Option<f64>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Client frame length, bytes.
    pub frame_len: usize,
    /// Passes per figure.
    pub passes: usize,
    /// Every program on every table.
    pub rows: Vec<Row>,
}

fn cookie(i: usize) -> Vec<u8> {
    // Distinct per session, never all zero.
    ((i as u32) ^ 0x5a5a_0001).to_be_bytes().to_vec()
}

fn link() -> ApLink {
    ApLink {
        edge_mac: [0x02, 0xed, 0, 0, 0, 1],
        ap_mac: [0x02, 0xa9, 0, 0, 0, 1],
    }
}

/// The frames of one table, in labbench's order: (decap, encap) per
/// client.
struct Table {
    sessions: usize,
    macs: usize,
    decap: Vec<Vec<u8>>,
    encap: Vec<Vec<u8>>,
}

impl Table {
    fn new(sessions: usize, macs: usize, frame_len: usize) -> Table {
        let clients: Vec<Client> = (0..macs)
            .map(|m| Client {
                mac: packets::apsim_client_mac((m % sessions) as u64, (m / sessions) as u32),
                session: m % sessions,
            })
            .collect();
        let order = packets::interleave(&clients, sessions);
        let link = link();
        let decap = order
            .iter()
            .map(|c| {
                let key = SessionKey {
                    ap_port: AP_PORT_BASE + c.session as u16,
                    edge_sid: SID_BASE + c.session as u32,
                    cookie: cookie(c.session),
                    over_ip: false,
                };
                packets::l2tp_data(&link, &key, &packets::uplink_frame(frame_len, &c.mac))
            })
            .collect();
        let encap = order
            .iter()
            .map(|c| packets::downlink_frame(frame_len, &c.mac, true))
            .collect();
        Table {
            sessions,
            macs,
            decap,
            encap,
        }
    }

    /// Fills the fast path's maps as the daemon would for this table:
    /// trunk tagged on VLAN 10, each session untagged on VLAN 10 with its
    /// template, every client behind its session, the trunk host on the
    /// trunk.
    fn install(&self, fp: &mut FastPath) -> anyhow::Result<()> {
        fp.set_trunk(&tt_trunk::new(None, [packets::CLIENT_VLAN])?)?;
        let link = link();
        // Port indexes as the daemon hands them out: in turn, from 1.
        let mut ports = PortIndex::new();
        let mut idx = Vec::with_capacity(self.sessions);
        for i in 0..self.sessions {
            idx.push(
                ports
                    .assign(SID_BASE + i as u32)
                    .context("more sessions than port indexes")?,
            );
        }
        {
            let mut sessions = fp.sessions()?;
            for (i, &port_idx) in idx.iter().enumerate() {
                let c = cookie(i);
                let s = Session::new(
                    &SessionSpec {
                        peer: SocketAddrV4::new(packets::AP_IP, AP_PORT_BASE + i as u16),
                        cookie: &c,
                        sublayer: false,
                        port: SID_BASE + i as u32,
                        port_idx,
                        untagged_vlan: Some(packets::CLIENT_VLAN),
                        trunk_ifindex: TRUNK_IFINDEX,
                        // The trunk carries the clients' VLAN tagged.
                        trunk_untagged_vlan: None,
                    },
                    [],
                )?;
                sessions.put(SID_BASE + i as u32, s)?;
            }
        }
        {
            let mut templates = fp.templates()?;
            for (i, &port_idx) in idx.iter().enumerate() {
                let c = cookie(i);
                let t = tt_template::new(&TemplateSpec {
                    untagged_vlan: Some(packets::CLIENT_VLAN),
                    ifindex: AP_IFINDEX,
                    src_mac: link.edge_mac,
                    dst_mac: link.ap_mac,
                    local: IpAddr::V4(packets::EDGE_IP),
                    peer: IpAddr::V4(packets::AP_IP),
                    ttl: 64,
                    dont_fragment: false,
                    mtu: 1500,
                    header: TunnelHeader::L2tpUdp {
                        local_port: packets::L2TP_PORT,
                        peer_port: AP_PORT_BASE + i as u16,
                        session_id: 0x2000_0000 + i as u32,
                        cookie: &c,
                        sublayer: false,
                    },
                })?;
                templates.put(u32::from(port_idx), t)?;
            }
        }
        // Every session has a 4-byte cookie and no sublayer: the daemon
        // tells the programs so (the most common length).
        fp.expect_l2tp_extra(4)?;
        let mut fdb = fp.fdb()?;
        fdb.put(
            tt_fdb_key::new(packets::CLIENT_VLAN, packets::TRUNK_HOST_MAC),
            tt_fdb_entry::new(0),
        )?;
        for m in 0..self.macs {
            let s = m % self.sessions;
            let mac = packets::apsim_client_mac(s as u64, (m / self.sessions) as u32);
            fdb.put(
                tt_fdb_key::new(packets::CLIENT_VLAN, mac),
                tt_fdb_entry::new(idx[s]),
            )?;
        }
        Ok(())
    }
}

/// One timed run of `prog` on `frame`: (return value, output length,
/// nanoseconds).
fn run_once(prog: &Xdp, frame: &[u8], out: &mut [u8]) -> anyhow::Result<(u32, usize, Duration)> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ..TestRunOptions::default()
    })?;
    Ok((r.return_value, r.data_size_out as usize, r.duration))
}

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// Frames timed per pass at least: a small table is gone over again until
/// this many ran (the kernel reports whole nanoseconds per run, at the
/// clock's granularity, so one run of a 1 × 1 table says little).
const MIN_RUNS_PER_PASS: usize = 2_000;

/// Mean nanoseconds per frame of `prog` over `frames` in the order `seq`
/// (indices into `frames`), checking each result: `want` is (return
/// value, output length minus input length).
fn pass_over(
    prog: &Xdp,
    frames: &[Vec<u8>],
    seq: &[usize],
    want: (u32, isize),
    name: &str,
) -> anyhow::Result<f64> {
    let mut out = vec![0u8; 2048];
    let mut total = Duration::ZERO;
    for &i in seq {
        let f = &frames[i];
        let (ret, len, took) = run_once(prog, f, &mut out)?;
        let grew = len as isize - f.len() as isize;
        if (ret, grew) != want {
            bail!(
                "{name}: frame {i} returned {ret} and grew by {grew} bytes, not {} and {}: \
                 it did not take the path being measured",
                want.0,
                want.1
            );
        }
        total += took;
    }
    Ok(total.as_nanos() as f64 / seq.len().max(1) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs every program on every table. Needs root (loading programs).
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    ensure!(opts.passes >= 1, "at least one pass");
    ensure!(
        (packets::MIN_CLIENT_FRAME.max(60)..=packets::MAX_CLIENT_FRAME).contains(&opts.frame_len),
        "frame length {}: from 60 to {} bytes",
        opts.frame_len,
        packets::MAX_CLIENT_FRAME
    );
    let mut baseline = Ebpf::load(BENCH_REDIRECT_OBJ).context("loading bench_redirect")?;
    let redirect: &mut Xdp = baseline
        .program_mut("bench_redirect")
        .context("no program bench_redirect")?
        .try_into()?;
    redirect.load().context("verifying bench_redirect")?;
    let mut rows = Vec::new();
    for &(sessions, macs) in &opts.tables {
        ensure!(
            sessions >= 1 && macs >= sessions && sessions <= 40_000,
            "table {sessions} sessions × {macs} MACs: 1 to 40,000 sessions, at least one MAC each"
        );
        let table = Table::new(sessions, macs, opts.frame_len);
        // A fresh fast path per table: nothing left from a bigger one.
        // The FDB sized for the table, as labbench's daemon sizes it.
        let cap = tunterm_ebpf::Capacity::for_macs(macs + 1);
        let mut fp = FastPath::load_sized(cap).context("loading the fast path")?;
        table.install(&mut fp).context("filling the maps")?;
        let ap_rx = fp.program(Program::ApRx)?;
        let trunk_rx = fp.program(Program::TrunkRx)?;
        let strip = ENCAP_LEN as isize;
        // The decap frame loses its outer headers and gains the VLAN tag.
        let decap_want = (XDP_REDIRECT, -strip + 4);
        let encap_want = (XDP_REDIRECT, strip - 4);
        for &order in &opts.orders {
            let seq = sequence(order, table.decap.len());
            let mut base = Vec::new();
            let mut dec = Vec::new();
            let mut enc = Vec::new();
            for _ in 0..opts.passes {
                // Programs in turn within a pass: a disturbance hits all.
                base.push(pass_over(
                    redirect,
                    &table.decap,
                    &seq,
                    (XDP_PASS, 0),
                    "bench_redirect",
                )?);
                dec.push(pass_over(
                    ap_rx,
                    &table.decap,
                    &seq,
                    decap_want,
                    "xdp_ap_rx",
                )?);
                enc.push(pass_over(
                    trunk_rx,
                    &table.encap,
                    &seq,
                    encap_want,
                    "xdp_trunk_rx",
                )?);
            }
            let b = median(base.clone());
            for (program, what, v) in [
                (
                    "bench_redirect",
                    "case 1: redirect, no parsing (baseline)",
                    base,
                ),
                ("xdp_ap_rx", "case 3 AP→trunk: decapsulate", dec),
                ("xdp_trunk_rx", "case 3 trunk→AP: encapsulate", enc),
            ] {
                let ns = median(v.clone());
                rows.push(Row {
                    program,
                    what,
                    sessions,
                    macs,
                    order,
                    ns,
                    ns_passes: v,
                    extra_ns: (program != "bench_redirect").then_some(ns - b),
                });
            }
        }
    }
    Ok(Report {
        frame_len: opts.frame_len,
        passes: opts.passes,
        rows,
    })
}

impl Report {
    /// The table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "xdpcost: {}-byte client frames; BPF_PROG_TEST_RUN, one frame per run, \
             at least {MIN_RUNS_PER_PASS} runs per pass, median of {} passes",
            self.frame_len, self.passes
        );
        let _ = writeln!(
            out,
            "\n{:<15} {:<40} {:>9} {:>7} {:<11} {:>10} {:>10}",
            "program", "what", "sessions", "MACs", "order", "ns/frame", "extra ns"
        );
        for r in &self.rows {
            let extra = r.extra_ns.map_or(String::new(), |e| format!("{e:+.0}"));
            let _ = writeln!(
                out,
                "{:<15} {:<40} {:>9} {:>7} {:<11} {:>10.0} {:>10}",
                r.program,
                r.what,
                r.sessions,
                r.macs,
                r.order.name(),
                r.ns,
                extra
            );
        }
        out.push_str(
            "\nextra ns: the program's cost over the raw redirect on the same frames. At a raw\n\
             rate of R frames/s on a veth, a path that adds E ns per frame can reach at most\n\
             1 / (1 + E·R/1e9) of it (E = 100 ns at R = 450,000: 0.957).\n",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_what_labbench_sends() {
        let t = Table::new(3, 7, 64);
        assert_eq!(t.decap.len(), 7);
        assert_eq!(t.encap.len(), 7);
        // Decap frames carry the outer headers the encap template adds,
        // minus the VLAN tag the trunk frame has.
        assert_eq!(t.decap[0].len(), 64 + ENCAP_LEN);
        assert_eq!(t.encap[0].len(), 64 + 4);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }

    #[test]
    fn orders_cover_the_table_as_documented() {
        let clients = 3_000;
        let rr = sequence(Order::RoundRobin, clients);
        assert_eq!(rr.len(), clients);
        assert!(rr.iter().enumerate().all(|(i, &c)| c == i));
        // Small tables are gone over again up to the minimum of runs.
        assert_eq!(sequence(Order::RoundRobin, 7).len(), MIN_RUNS_PER_PASS);
        let count = |seq: &[usize]| {
            let mut n = vec![0usize; clients];
            for &c in seq {
                n[c] += 1;
            }
            n
        };
        // Uniform: no client far above its share, most clients present.
        let u = count(&sequence(Order::Uniform, clients));
        assert!(*u.iter().max().unwrap() < 12, "{:?}", u.iter().max());
        assert!(u.iter().filter(|&&n| n > 0).count() > clients / 2);
        // Zipf s = 1: the busiest client sends ~1/H(3000) ≈ 12% of the
        // frames, and it is not client 0 (ranks are shuffled).
        let z = count(&sequence(Order::Zipf, clients));
        let (top, &most) = z.iter().enumerate().max_by_key(|(_, n)| **n).unwrap();
        assert!((250..500).contains(&most), "{most}");
        assert_ne!(top, 0);
        // The same sequence every time: runs and programs compare.
        assert_eq!(sequence(Order::Zipf, 50), sequence(Order::Zipf, 50));
        assert_eq!("zipf".parse::<Order>().unwrap(), Order::Zipf);
        assert!("random".parse::<Order>().is_err());
    }
}
