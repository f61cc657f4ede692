//! tunterm-lab: the network-namespace lab, the AP simulator
//! ([`apsim`], `tunterm-apsim`) and the upstream VLAN host ([`vlanhost`],
//! `tunterm-lab vlan-host`). Test and demo infrastructure: it runs `setns`,
//! kills processes and shells out to tshark, so it is never product API.
//!
//! This module: throwaway namespaces, veth links, processes, captures and
//! the tshark judge, for integration tests and the demo.
//!
//! Everything here shells out (`ip`, `tcpdump`, `tshark`, `ping`) and needs
//! root. Every resource is a guard: dropping a [`Netns`] kills what runs in
//! it and deletes it, dropping a [`Proc`] stops the process. A test makes its
//! namespace names from [`unique_prefix`] and calls [`cleanup_prefix`] first,
//! so parallel tests and leftovers of a crashed run never meet:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tunterm_lab::{self as lab, Netns};
//! lab::require_root()?;
//! let prefix = lab::unique_prefix("smoke");
//! lab::cleanup_prefix(&prefix);
//! let a = Netns::new(&format!("{prefix}a"))?;
//! let b = Netns::new(&format!("{prefix}b"))?;
//! lab::veth(&a, "e0", &b, "e0")?; // interface names need no prefix
//! lab::addr(&a, "e0", "10.0.0.1/24")?;
//! lab::addr(&b, "e0", "10.0.0.2/24")?;
//! assert_eq!(lab::ping(&a, "10.0.0.2", 3)?.received, 3);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod apsim;
pub mod failover;
pub mod impair;
pub mod topology;
pub mod vlanhost;

use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tunterm_core::wire::ether::MacAddr;

/// Fails with a clear message unless the process runs as root (namespaces,
/// veth, AF_PACKET and TAP all need it).
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "the netns lab needs root (euid is {euid}): it creates network namespaces, \
             veth pairs and TAP devices; run the tests as root"
        );
    }
    Ok(())
}

/// A named network namespace (`ip netns add`), removed on drop.
///
/// Drop kills every process left in it (`ip netns pids`, SIGKILL) and then
/// deletes it; its interfaces go with it (a veth's peer too).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name`, deleting a stale one of the same name first,
    /// and brings its `lo` up.
    pub fn new(name: &str) -> anyhow::Result<Netns> {
        if namespaces().iter().any(|n| n == name) {
            destroy(name);
        }
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec NAME program`); add arguments and run it as usual.
    pub fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args` (program first) inside the namespace and returns its
    /// stdout; an error carries the command line and its stderr if it could
    /// not start or exited non-zero.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let (program, rest) = args.split_first().context("Netns::run: empty command")?;
        let mut cmd = self.cmd(program);
        cmd.args(rest);
        output_ok(cmd, &format!("[{}] {}", self.name, args.join(" ")))
    }

    /// Starts `args` (program first) inside the namespace in the background,
    /// stdout and stderr appended to `log` (created or truncated), stdin
    /// closed.
    pub fn spawn(&self, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
        let (program, rest) = args.split_first().context("Netns::spawn: empty command")?;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = self.cmd(program);
        cmd.args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let what = format!("[{}] {}", self.name, args.join(" "));
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what,
            log: log.to_owned(),
        })
    }

    /// The MAC address of interface `ifname` in the namespace (tunterm's
    /// own netlink reader, run inside it).
    pub fn mac(&self, ifname: &str) -> anyhow::Result<MacAddr> {
        let mac = self
            .enter(|| tunterm::io::netlink::mac(ifname))?
            .with_context(|| format!("[{}] the MAC of {ifname}", self.name))?;
        Ok(MacAddr(mac))
    }

    /// Runs `f` on a new thread that has joined the namespace (`setns`), and
    /// returns its result (a panic in `f` is passed on). Sockets and TAPs opened in `f` stay in the
    /// namespace after it returns, so a test can drive tunterm's own I/O
    /// types (e.g. a [`PacketSocket`](tunterm::io::afpacket::PacketSocket)) on
    /// a namespace's interfaces from the test process.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns(2) on a descriptor we own; it changes
                    // only this (scoped, short-lived) thread's namespace.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc < 0 {
                        return Err(std::io::Error::last_os_error())
                            .with_context(|| format!("setns into {}", self.name));
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// A background process started with [`Netns::spawn`].
///
/// Drop stops it: SIGTERM, up to 2 s to exit, then SIGKILL. Because
/// `ip netns exec` execs the program, [`pid`](Self::pid) is the program's
/// own pid.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding its stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Sends signal `sig` (e.g. `libc::SIGHUP`); does nothing if the process
    /// has already exited and been reaped.
    pub fn signal(&mut self, sig: i32) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been reused.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signal {sig} to {}", self.what));
        }
        Ok(())
    }

    /// Kills the process with SIGKILL and reaps it (a crash, for failover
    /// tests).
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        Ok(self.child.wait()?)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Waits up to `timeout` until the log contains `needle` (a readiness
    /// line); fails early, quoting the log, if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut exited = None;
        let found = wait_until(timeout, || {
            if log_text(&self.log).contains(needle) {
                return true;
            }
            exited = self.child.try_wait().ok().flatten();
            exited.is_some()
        });
        if found && exited.is_none() {
            return Ok(());
        }
        let why = match exited {
            Some(status) => format!("exited ({status})"),
            None => format!("did not print {needle:?} within {timeout:?}"),
        };
        bail!(
            "{} {why}; log {}:\n{}",
            self.what,
            self.log.display(),
            log_text(&self.log)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(2)).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Removes every namespace whose name starts with `prefix` (killing what
/// runs in it). Call at the start of a test; errors are ignored.
pub fn cleanup_prefix(prefix: &str) {
    for name in namespaces() {
        if name.starts_with(prefix) {
            destroy(&name);
        }
    }
}

/// A namespace-name prefix unique to this process and `test`: `tt`, four hex
/// digits drawn per process and call, the first 8 ASCII letters and digits
/// of `test`, and `-`, e.g. `tt3fa2smoke-` (at most 15 characters).
///
/// Interface names need no prefix: [`veth`] creates each end directly inside
/// its namespace, so `t0` in one test never meets `t0` in another.
pub fn unique_prefix(test: &str) -> String {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u32(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write(test.as_bytes());
    let tag: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    format!("tt{:04x}{tag}-", hasher.finish() & 0xffff)
}

/// The start of a multi-namespace lab: checks for root, draws the test's
/// [`unique_prefix`], removes a killed run's namespaces of that prefix, and
/// makes an empty directory for logs and configurations
/// (`$TMPDIR/tunterm-lab-<prefix>`).
///
/// It also removes the namespaces of earlier labs whose process is gone
/// without cleaning up (killed, or stopped with Ctrl-C before its guards
/// ran): each lab's directory names its owner ([`OWNER_FILE`]), and a lab
/// whose owner no longer runs has its namespaces removed (its directory,
/// with the logs that may explain it, stays).
pub fn begin(name: &str) -> anyhow::Result<(String, LogDir)> {
    require_root()?;
    sweep_orphans();
    let prefix = unique_prefix(name);
    cleanup_prefix(&prefix);
    let dir =
        std::env::temp_dir().join(format!("{LAB_DIR_PREFIX}{}", prefix.trim_end_matches('-')));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(OWNER_FILE),
        owner_of(std::process::id()).unwrap_or_default(),
    )?;
    Ok((prefix, LogDir(dir)))
}

/// A lab directory's name: this, then its namespace prefix without the `-`.
const LAB_DIR_PREFIX: &str = "tunterm-lab-";

/// The file in a lab's directory that names the process owning the lab:
/// its pid and its start time (so a reused pid is not taken for it).
pub const OWNER_FILE: &str = "owner";

/// `pid`'s identity: "pid starttime" from /proc (None: no such process).
fn owner_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command (which may hold spaces) in parentheses;
    // the start time is field 22, the 20th after it.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Removes the namespaces of every lab whose owner is gone (see [`begin`]),
/// and its owner file. Labs of running processes are left alone.
pub fn sweep_orphans() {
    let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for d in dirs.flatten() {
        let name = d.file_name();
        let Some(tag) = name.to_str().and_then(|n| n.strip_prefix(LAB_DIR_PREFIX)) else {
            continue;
        };
        let owner_file = d.path().join(OWNER_FILE);
        let Ok(owner) = std::fs::read_to_string(&owner_file) else {
            continue;
        };
        let alive = owner
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .and_then(owner_of)
            .is_some_and(|now| now == owner.trim());
        if !alive {
            cleanup_prefix(&format!("{tag}-"));
            let _ = std::fs::remove_file(&owner_file);
        }
    }
}

/// Set to keep every lab's directory, passed or not.
pub const KEEP_ENV: &str = "TUNTERM_LAB_KEEP";

/// A lab's directory of logs, configurations and captures. Dropping it
/// removes it, unless the thread is panicking (a failed test keeps what
/// explains it) or [`KEEP_ENV`] is set: the captures of one run's traffic
/// are hundreds of megabytes, and a suite's worth left behind after every
/// run filled a disk.
#[derive(Debug)]
pub struct LogDir(PathBuf);

impl std::ops::Deref for LogDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for LogDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os(KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Start the upstream VLAN host (`tunterm-lab vlan-host`, the `lab`
/// binary) in `ns` on its trunk `t0`, with an address on each VLAN
/// (`VID=CIDR`); `xdp_pass` attaches a pass-through XDP program to t0, which
/// a native XDP redirect from tunterm's fast path needs to be received.
pub fn spawn_vlan_host(
    ns: &Netns,
    lab: &Path,
    vlans: &[&str],
    xdp_pass: bool,
    log: &Path,
) -> anyhow::Result<Proc> {
    let lab = lab.to_string_lossy();
    let mut args = vec![lab.as_ref(), "vlan-host", "--trunk", "t0"];
    for v in vlans {
        args.extend(["--vlan", v]);
    }
    if xdp_pass {
        args.push("--xdp-pass");
    }
    ns.spawn(&args, log)
}

/// Creates a veth pair with end `a_if` in `a` and end `b_if` in `b` (made
/// directly in their namespaces, never in the root one) and sets both up.
///
/// GRO is left at the kernel default (off on veth). A test that XDP-redirects
/// into a veth must turn it on at the receiver
/// (`ethtool -K IF gro on`) or load an XDP program there, or the kernel drops
/// the redirected frames silently.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    link_up(a, a_if)?;
    link_up(b, b_if)?;
    // Until the kernel has seen the carrier (linkwatch, which a loaded
    // machine runs late) the link has no qdisc and a frame sent on it is
    // dropped without an error: wait for both ends to be operationally up.
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        let up = wait_until(Duration::from_secs(10), || {
            ip(&["-n", &ns.name, "-o", "link", "show", ifname])
                .is_ok_and(|out| out.contains(" state UP "))
        });
        anyhow::ensure!(
            up,
            "veth {ifname} in {} did not come up within 10 s",
            ns.name
        );
    }
    Ok(())
}

/// Sets interface `ifname` in `ns` up.
pub fn link_up(ns: &Netns, ifname: &str) -> anyhow::Result<()> {
    ip(&["-n", &ns.name, "link", "set", ifname, "up"]).map(drop)
}

/// Adds address `cidr` (e.g. `192.168.10.1/24`) to `ifname` in `ns`.
pub fn addr(ns: &Netns, ifname: &str, cidr: &str) -> anyhow::Result<()> {
    if cidr.contains(':') {
        // IPv6: usable at once, without duplicate address detection.
        ip(&["-n", &ns.name, "addr", "add", cidr, "dev", ifname, "nodad"]).map(drop)
    } else {
        ip(&["-n", &ns.name, "addr", "add", cidr, "dev", ifname]).map(drop)
    }
}

/// A bpffs of the lab's own, mounted on a directory in the root mount
/// namespace (`ip netns exec` remounts /sys, so /sys/fs/bpf is no bpffs in
/// there; a mount made here is seen by every process started after it).
/// Drop unmounts it, with every pin in it.
#[derive(Debug)]
pub struct BpfFs {
    dir: PathBuf,
}

impl BpfFs {
    /// Mount a new bpffs on `dir` (created; a stale mount there from a
    /// crashed run is unmounted first).
    pub fn mount(dir: &Path) -> anyhow::Result<BpfFs> {
        let _ = Command::new("umount").arg("-l").arg(dir).output();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "bpf", "bpf"]).arg(dir);
        output_ok(cmd, &format!("mount -t bpf bpf {}", dir.display()))?;
        Ok(BpfFs {
            dir: dir.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A running `tcpdump -w` on one interface of a namespace.
///
/// Dropping it without [`stop`](Self::stop) stops tcpdump too (the pcap is
/// kept).
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns` into `file` (pcap; tcpdump's log
    /// goes beside it as `FILE.log`), and returns once tcpdump is listening.
    ///
    /// Packets are delivered to tcpdump at once (`--immediate-mode`) and
    /// written at once (`-U`); it keeps root (`-Z root`), as Debian's would
    /// otherwise drop to user `tcpdump` before opening `file`. The kernel
    /// buffer is tcpdump's default (2 MiB): under a bulk transfer it drops,
    /// which keeps the file small enough for tshark to read quickly; a test
    /// that must see every packet uses [`start_lossless`](Self::start_lossless).
    pub fn start(ns: &Netns, ifname: &str, file: &Path) -> anyhow::Result<Capture> {
        Self::start_with(ns, ifname, file, &[])
    }

    /// As [`start`](Self::start), with a 16 MiB kernel buffer (`-B`): a
    /// test's burst of large frames on a loaded machine overflowed the
    /// default (a CI run's lab_raw capture: "18 packets dropped by
    /// kernel"). Only for captures of a few packets that must all be
    /// there: under an iperf transfer the file grows to hundreds of MB and
    /// tshark takes minutes to read it (lab_encaps took 10 minutes a case).
    pub fn start_lossless(ns: &Netns, ifname: &str, file: &Path) -> anyhow::Result<Capture> {
        Self::start_with(ns, ifname, file, &["-B", "16384"])
    }

    fn start_with(
        ns: &Netns,
        ifname: &str,
        file: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Capture> {
        let mut log = file.as_os_str().to_owned();
        log.push(".log");
        let file_str = file.to_str().context("capture path is not UTF-8")?;
        let mut args = vec!["tcpdump", "-Z", "root", "-U", "--immediate-mode"];
        args.extend_from_slice(extra);
        args.extend(["-i", ifname, "-w", file_str]);
        let mut proc = ns.spawn(&args, Path::new(&log))?;
        proc.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(Capture {
            proc,
            file: file.to_owned(),
        })
    }

    /// Stops tcpdump, waits for it to flush, and returns the pcap's path.
    ///
    /// First it waits for frames still in flight: at least 100 ms, then
    /// until the file has not grown for 150 ms (at most 2 s). tcpdump writes
    /// each packet as it takes it (`-U`), and a SIGINT while it is behind
    /// loses what is still in its ring: on a loaded machine, a test's last
    /// packets (a CI run missed lab_raw's last UDP fragments so).
    pub fn stop(mut self) -> anyhow::Result<PathBuf> {
        thread::sleep(Duration::from_millis(100));
        let size = |f: &Path| std::fs::metadata(f).map_or(0, |m| m.len());
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut last = size(&self.file);
        while std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(150));
            let now = size(&self.file);
            if now == last {
                break;
            }
            last = now;
        }
        self.proc.signal(libc::SIGINT)?;
        match self.proc.wait_exit(Duration::from_secs(5)) {
            Some(status) if status.success() => Ok(self.file.clone()),
            Some(status) => bail!(
                "tcpdump exited {status}; log:\n{}",
                log_text(self.proc.log())
            ),
            None => bail!("tcpdump did not exit within 5 s of SIGINT"),
        }
    }
}

/// Reads `pcap` with tshark and returns one row per packet matching
/// `display_filter` (all packets if empty), one column per field.
///
/// Runs `tshark -r PCAP -T fields -E separator=/t EXTRA... -Y FILTER -e F...`;
/// `extra_args` is the place for decode options such as
/// `-o l2tp.cookie_size:cookie4`. A field that occurs more than once in a
/// packet (QinQ `vlan.id`) comes as a comma-separated list; an absent one as
/// an empty string. tshark's "running as root" warning is left out of errors.
pub fn tshark_fields(
    pcap: &Path,
    extra_args: &[&str],
    display_filter: &str,
    fields: &[&str],
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .args(["-T", "fields", "-E", "separator=/t"]);
    cmd.args(extra_args);
    if !display_filter.is_empty() {
        cmd.args(["-Y", display_filter]);
    }
    for field in fields {
        cmd.args(["-e", field]);
    }
    let what = format!(
        "tshark on {} (filter {display_filter:?}, fields {fields:?})",
        pcap.display()
    );
    let stdout = output_ok(cmd, &what)?;
    Ok(stdout
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect())
}

/// Calls `f` every 20 ms until it returns true or `timeout` has passed;
/// returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Echo requests sent and replies received by one [`ping`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
}

/// Pings `dst` from `ns`: `ping -c COUNT -i 0.2 -W 1 DST`. Lost replies
/// are not an error (check [`PingResult::received`]); a ping that could not
/// run at all (bad address, no route) is.
pub fn ping(ns: &Netns, dst: &str, count: u32) -> anyhow::Result<PingResult> {
    let count = count.to_string();
    let out = ns
        .cmd("ping")
        .args(["-n", "-c", &count, "-i", "0.2", "-W", "1", dst])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("[{}] running ping", ns.name))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
    let parsed = stdout.lines().find_map(|line| {
        let (sent, rest) = line.split_once(" packets transmitted, ")?;
        let received = rest.split_once(" received")?.0;
        Some(PingResult {
            sent: sent.trim().parse().ok()?,
            received: received.trim().parse().ok()?,
        })
    });
    match parsed {
        Some(result) => Ok(result),
        None => bail!(
            "[{}] ping {dst} failed ({}):\n{stdout}{}",
            ns.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs `ip ARGS` in the root namespace; stdout, or an error with stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    output_ok(cmd, &format!("ip {}", args.join(" ")))
}

/// Runs `cmd` to completion (stdin closed); its stdout if it exited 0.
fn output_ok(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{what}`"))?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("Running as user \"root\""))
            .collect();
        bail!("`{what}` failed ({status}): {}", stderr.join("\n"));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// The names of all named namespaces (`ip netns list`).
pub fn namespaces() -> Vec<String> {
    // "name (id: 3)" or "name"
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills every process in namespace `name` and deletes it; best effort.
fn destroy(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// The log file's text so far (empty if unreadable).
fn log_text(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
