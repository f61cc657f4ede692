//! A userspace impairment relay for the AP-facing link (the kernel here has
//! no netem): two veths in a namespace of their own, every frame read from
//! one with `AF_PACKET` and written to the other after loss, duplication,
//! reordering, delay and jitter, each settable while it runs.
//!
//! ```text
//!  aps: e0 ══ ra  [wan: relay]  rb ══ ap0 :edge
//! ```
//!
//! Neighbour discovery (ARP, IPv6 ND) passes unimpaired, unless the link
//! is cut: the relay stands for a lossy path between an AP and the edge,
//! not for a lossy Ethernet between two neighbours. Impaired, a run of
//! lost ARP probes (3 unicast probes fail together 0.36³ ≈ 5% of the time
//! at 20% loss each way) left a neighbour entry FAILED and the edge unable
//! to send to an AP for seconds: longer than a 1 s × 3 hello budget
//! (a CI run's `lab_impair` lost a tunnel so).
//!
//! The settings are a JSON file the relay re-reads when it changes
//! ([`ImpairRelay::set`]); what it did is counted and written every 200 ms
//! to a stats file ([`ImpairRelay::stats`]), so a test can check that the
//! impairment it asked for really happened. Lab code, never product API.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tunterm::io::afpacket::{PacketSocket, RECV_BUF_LEN};

use crate::{LogDir, Netns, Proc, veth};

/// What the relay does to frames, in both directions. Percentages are per
/// frame, drawn independently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Impairment {
    /// Frames lost, percent.
    pub loss: f64,
    /// Frames delivered twice, percent (the copy follows `jitter` apart).
    pub duplicate: f64,
    /// Frames held back by `reorder_hold` so later ones overtake them,
    /// percent.
    pub reorder: f64,
    /// How long a reordered frame is held back, ms.
    pub reorder_hold_ms: u64,
    /// Delay added to every frame, ms.
    pub delay_ms: u64,
    /// Random extra delay, 0 up to this, ms.
    pub jitter_ms: u64,
    /// The link is cut: every frame is lost.
    pub cut: bool,
}

/// What the relay did (both directions together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// Frames read.
    pub received: u64,
    /// Frames written (duplicates included).
    pub sent: u64,
    /// Frames lost on purpose (loss or cut).
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames held back to be overtaken.
    pub reordered: u64,
    /// Frames dropped because the delay queue was full.
    pub queue_full: u64,
    /// Frames the kernel refused to send.
    pub send_errors: u64,
    /// Neighbour discovery frames (ARP, IPv6 NS/NA/RS/RA/redirect) passed
    /// through unimpaired.
    pub neighbour_discovery: u64,
}

/// An ARP or IPv6 neighbour discovery frame (ICMPv6 types 133–137 right
/// after the IPv6 header; the AP link carries no VLAN tag).
fn is_neighbour_discovery(frame: &[u8]) -> bool {
    const ICMPV6: u8 = 58;
    match frame.get(12..14) {
        Some([0x08, 0x06]) => true,
        Some([0x86, 0xdd]) => {
            frame.get(14 + 6) == Some(&ICMPV6)
                && frame.get(14 + 40).is_some_and(|t| (133..=137).contains(t))
        }
        _ => false,
    }
}

/// A frame waiting for its time: (due, arrival order, to which socket,
/// frame); the heap gives the earliest first, FIFO among equals.
type Queued = Reverse<(Instant, u64, usize, Vec<u8>)>;

/// Frames waiting for their time, at most.
const MAX_QUEUED: usize = 65_536;

/// Run the relay between interfaces `a` and `b` (in the caller's
/// namespace) until killed: settings from `settings` (re-read when its
/// modification time changes), stats written to `stats`. `seed` makes the
/// random choices repeatable.
pub fn run_relay(a: &str, b: &str, settings: &Path, stats: &Path, seed: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(relay(a, b, settings, stats, seed))
}

fn read_settings(path: &Path) -> Option<(std::time::SystemTime, Impairment)> {
    let mtime = std::fs::metadata(path).ok()?.modified().ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    Some((mtime, serde_json::from_str(&text).ok()?))
}

async fn relay(
    a: &str,
    b: &str,
    settings: &Path,
    stats_path: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    let socks = [
        PacketSocket::bind(a)?.into_async()?,
        PacketSocket::bind(b)?.into_async()?,
    ];
    let (mut mtime, mut imp) =
        read_settings(settings).context("reading the impairment settings")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stats = RelayStats::default();
    let mut queue: BinaryHeap<Queued> = BinaryHeap::new();
    let mut order = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let pct = |rng: &mut rand::rngs::StdRng, p: f64| p > 0.0 && rng.random_range(0.0..100.0) < p;
    loop {
        let next_due = queue.peek().map(|Reverse((t, ..))| *t);
        let sleep = async {
            match next_due {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let from = tokio::select! {
            r = socks[0].readable() => { r?.clear_ready(); Some(0) }
            r = socks[1].readable() => { r?.clear_ready(); Some(1) }
            _ = sleep => None,
            _ = tick.tick() => {
                if let Some((m, s)) = read_settings(settings)
                    && m != mtime
                {
                    (mtime, imp) = (m, s);
                }
                // Write then rename, so a reader never finds the file
                // empty or half written (std::fs::write truncates first:
                // lab_impair read "" once in CI).
                let tmp = stats_path.with_extension("tmp");
                if std::fs::write(&tmp, serde_json::to_vec(&stats)?).is_ok() {
                    let _ = std::fs::rename(&tmp, stats_path);
                }
                continue;
            }
        };
        if let Some(from) = from {
            let to = 1 - from;
            loop {
                let n = match socks[from].get_ref().recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                stats.received += 1;
                if imp.cut {
                    stats.lost += 1;
                    continue;
                }
                if is_neighbour_discovery(&buf[..n]) {
                    stats.neighbour_discovery += 1;
                    match socks[to].get_ref().send(&buf[..n]) {
                        Ok(_) => stats.sent += 1,
                        Err(_) => stats.send_errors += 1,
                    }
                    continue;
                }
                if pct(&mut rng, imp.loss) {
                    stats.lost += 1;
                    continue;
                }
                let copies = if pct(&mut rng, imp.duplicate) {
                    stats.duplicated += 1;
                    2
                } else {
                    1
                };
                let now = Instant::now();
                for _ in 0..copies {
                    let mut due = now + Duration::from_millis(imp.delay_ms);
                    if imp.jitter_ms > 0 {
                        due += Duration::from_micros(rng.random_range(0..imp.jitter_ms * 1000));
                    }
                    if pct(&mut rng, imp.reorder) {
                        stats.reordered += 1;
                        due += Duration::from_millis(imp.reorder_hold_ms.max(1));
                    }
                    if queue.len() >= MAX_QUEUED {
                        stats.queue_full += 1;
                        continue;
                    }
                    order += 1;
                    queue.push(Reverse((due, order, to, buf[..n].to_vec())));
                }
            }
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((t, ..))| *t <= now) {
            let Reverse((_, _, to, frame)) = queue.pop().expect("peeked");
            match socks[to].get_ref().send(&frame) {
                Ok(_) => stats.sent += 1,
                Err(_) => stats.send_errors += 1,
            }
        }
    }
}

/// A running relay on the AP-facing link: its namespace, process and files.
/// Dropping it stops the relay and removes the namespace.
pub struct ImpairRelay {
    /// The relay process (`lab impair`).
    pub proc: Proc,
    /// The namespace between the APs and the edge.
    pub ns: Netns,
    settings: PathBuf,
    stats: PathBuf,
}

impl ImpairRelay {
    /// Build the AP-facing link through a relay: `aps_if` in `aps` ══ `ra`
    /// in a new namespace `{prefix}wan`, whose `rb` ══ `edge_if` in `edge`;
    /// start `lab impair` there with `imp`, its files in `dir`.
    pub fn start(
        prefix: &str,
        (aps, aps_if): (&Netns, &str),
        (edge, edge_if): (&Netns, &str),
        lab_bin: &Path,
        dir: &LogDir,
        imp: &Impairment,
    ) -> anyhow::Result<ImpairRelay> {
        let ns = Netns::new(&format!("{prefix}wan"))?;
        veth(aps, aps_if, &ns, "ra")?;
        veth(&ns, "rb", edge, edge_if)?;
        // Whole frames with finished checksums through a userspace relay:
        // a veth's TX checksum offload leaves UDP checksums partial (the
        // peer veth would accept them, the far end of the relay does not),
        // and segmentation offload would hand it super-frames.
        let off = ["tx", "off", "gso", "off", "gro", "off", "tso", "off"];
        for (n, i) in [(aps, aps_if), (&ns, "ra"), (&ns, "rb"), (edge, edge_if)] {
            let mut args = vec!["ethtool", "-K", i];
            args.extend(off);
            n.run(&args)?;
        }
        let settings = dir.join("impair.json");
        let stats = dir.join("impair-stats.json");
        std::fs::write(&settings, serde_json::to_vec(imp)?)?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let proc = ns.spawn(
            &[
                &s(lab_bin),
                "impair",
                "--a",
                "ra",
                "--b",
                "rb",
                "--settings",
                &s(&settings),
                "--stats",
                &s(&stats),
            ],
            &dir.join("impair.log"),
        )?;
        Ok(ImpairRelay {
            proc,
            ns,
            settings,
            stats,
        })
    }

    /// Change the impairment; the relay applies it within 200 ms.
    pub fn set(&self, imp: &Impairment) -> anyhow::Result<()> {
        // Write then rename: the relay never reads half a file.
        let tmp = self.settings.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(imp)?)?;
        std::fs::rename(&tmp, &self.settings)?;
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    }

    /// What the relay has done so far (as of its last write, ≤ 200 ms ago).
    pub fn stats(&self) -> anyhow::Result<RelayStats> {
        let text = std::fs::read_to_string(&self.stats)
            .with_context(|| format!("reading {}", self.stats.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::is_neighbour_discovery;

    fn frame(ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(payload);
        f
    }

    fn ipv6(next_header: u8, first_byte: u8) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[6] = next_header;
        p[40] = first_byte;
        frame([0x86, 0xdd], &p)
    }

    #[test]
    fn neighbour_discovery_is_arp_and_icmpv6_nd_only() {
        assert!(is_neighbour_discovery(&frame([0x08, 0x06], &[0; 28])));
        for t in 133..=137 {
            assert!(is_neighbour_discovery(&ipv6(58, t)), "ICMPv6 type {t}");
        }
        // Echo request, UDP (an L2TP packet), IPv4, a runt: impaired.
        assert!(!is_neighbour_discovery(&ipv6(58, 128)));
        assert!(!is_neighbour_discovery(&ipv6(17, 135)));
        assert!(!is_neighbour_discovery(&frame([0x08, 0x00], &[0; 28])));
        assert!(!is_neighbour_discovery(&[0x08; 13]));
        assert!(!is_neighbour_discovery(&ipv6(58, 135)[..50]));
    }
}
