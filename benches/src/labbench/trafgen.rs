//! The traffic generator: trafgen (netsniff-ng) on one CPU.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;
use tunterm_lab::{Netns, wait_until};

/// The CPU trafgen's one worker runs on: with `-P 1` trafgen binds its
/// worker to CPU 0 itself, and `taskset -c 0` keeps the parent there too.
pub const GEN_CPU: u32 = 0;

/// The send buffer trafgen's socket gets for a measurement (through
/// `net.core.wmem_default`, raised while it starts).
///
/// trafgen fills its TX_RING and flushes it with a non-blocking send; once
/// the frames in flight exceed the socket's send buffer that send fails
/// with EAGAIN and trafgen gives up. On veth the frames in flight are the
/// ones the receiving peer has not processed yet: when the peer runs an XDP
/// program (in the sender's softirq) slower than trafgen, up to the peer's
/// 256-entry ring of them, about 210 KB of 64-byte frames (their skbs'
/// truesize), which is the default wmem_default (212,992) already. With 4
/// MiB (trafgen's own suggestion when it tunes memory itself) the ring
/// fills first: the sending veth then drops on transmit (counted in
/// `offered_pps`) and trafgen carries on.
pub const SNDBUF: u64 = 4 << 20;

/// Set by `labbench --realtime`: trafgen, tunterm and the capture reader
/// run under `chrt -f` [`RT_PRIORITY`], so other work on the machine
/// (builds, other tests) cannot take their CPUs between wake-ups.
pub static REALTIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The SCHED_FIFO priority of `--realtime` (the kernel's RT throttling
/// still leaves other tasks 5% of each CPU).
pub const RT_PRIORITY: &str = "10";

/// `chrt -f PRIORITY` when [`REALTIME`] is set, else nothing: the start of
/// a command line.
pub fn rt_prefix() -> Vec<&'static str> {
    if REALTIME.load(std::sync::atomic::Ordering::Relaxed) {
        vec!["chrt", "-f", RT_PRIORITY]
    } else {
        Vec::new()
    }
}

fn trafgen_args<'a>(ifname: &'a str, cfg: &'a str) -> Vec<&'a str> {
    // -P 1: one worker process; -Q: leave IRQ affinities alone;
    // --no-sock-mem: leave the machine's socket memory sysctls alone (they
    // are the root namespace's, and a namespace cannot set them; the
    // harness raises the one that matters briefly, see SNDBUF); -C: no CPU
    // statistics. No -b / -t: as fast as it goes. Its output line-buffered
    // (stdbuf): "Running!" in the log is when it starts sending.
    let mut args = rt_prefix();
    args.extend([
        "taskset",
        "-c",
        "0",
        "stdbuf",
        "-oL",
        "trafgen",
        "-o",
        ifname,
        "-i",
        cfg,
        "-P",
        "1",
        "-Q",
        "--no-sock-mem",
        "-C",
    ]);
    args
}

/// What trafgen writes to its log once it has read its configuration and
/// starts sending.
pub const RUNNING: &str = "Running!";

/// A running trafgen, sending its configuration round robin until dropped
/// (SIGINT to its process group, as a terminal's Ctrl-C would, then
/// SIGKILL).
pub struct Generator {
    child: Child,
}

impl Generator {
    /// Starts trafgen in `ns` on `ifname` with configuration `cfg`, output
    /// to `log`.
    pub fn start(ns: &Netns, ifname: &str, cfg: &Path, log: &Path) -> anyhow::Result<Generator> {
        let cfg = cfg.to_str().context("config path is not UTF-8")?;
        let args = trafgen_args(ifname, cfg);
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = ns.cmd(args[0]);
        cmd.args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting trafgen in {}", ns.name()))?;
        Ok(Generator { child })
    }

    /// Whether trafgen has exited (it should not before it is dropped).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn signal_group(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is
        // our unreaped child's own (process_group(0)).
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), sig) };
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group(libc::SIGINT);
            let exited = wait_until(Duration::from_secs(3), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            });
            if !exited {
                self.signal_group(libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// Sends every packet of `cfg` `rounds` times from `ifname` in `ns`, `gap`
/// apart (trafgen's `-t`, e.g. `20us`), and waits for it to finish.
pub fn send_rounds(
    ns: &Netns,
    ifname: &str,
    cfg: &Path,
    packets: usize,
    rounds: usize,
    gap: &str,
) -> anyhow::Result<()> {
    let cfg = cfg.to_str().context("config path is not UTF-8")?;
    let n = (packets * rounds).to_string();
    let mut args = trafgen_args(ifname, cfg);
    args.extend(["-n", &n, "-t", gap]);
    ns.run(&args).map(drop)
}

/// Frames the interface sent plus frames it dropped on transmit: what the
/// generator offered.
pub fn offered(ns: &Netns, ifname: &str) -> anyhow::Result<u64> {
    let out = ns.run(&["ip", "-j", "-s", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let tx = &v[0]["stats64"]["tx"];
    Ok(tx["packets"].as_u64().unwrap_or(0) + tx["dropped"].as_u64().unwrap_or(0))
}
