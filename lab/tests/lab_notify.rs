//! systemd's notification protocol, as `tunterm.service` (Type=notify,
//! WatchdogSec) sees it: the test binds the unixgram socket systemd would
//! and starts tunterm with `NOTIFY_SOCKET` and `WATCHDOG_USEC` pointing at
//! it. READY=1 comes once forwarding is up (the control socket answers,
//! the L2TP socket is bound, an AP can build its tunnel), never from a
//! start that fails; WATCHDOG=1 comes from the event loop every half
//! period; STOPPING=1 at a restart (SIGQUIT) and a stop (SIGTERM); the
//! restarted tunterm's READY=1 says which tunnels it took back.
//!
//! Needs root.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{bins, edge_aps_up};
use tunterm_lab::topology::{query, sessions_up};
use tunterm_lab::{self as lab, Netns, Proc};

/// The watchdog period the test's "systemd" sets (tunterm pings every
/// half of it).
const WATCHDOG: Duration = Duration::from_secs(2);

/// `tunterm run` in `ns` with the notify variables set (`watchdog`: also
/// WATCHDOG_USEC), not waiting for anything.
fn spawn(ns: &Netns, dir: &Path, notify: &Path, watchdog: bool, extra: &[&str], log: &str) -> Proc {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let notify_env = format!("NOTIFY_SOCKET={}", s(notify));
    let usec = format!("WATCHDOG_USEC={}", WATCHDOG.as_micros());
    let (tunterm, config, sock, state) = (
        s(&bins().tunterm),
        s(&dir.join("edge.json")),
        s(&dir.join("edge.sock")),
        s(&dir.join("edge.state")),
    );
    let mut args = vec!["env", notify_env.as_str()];
    if watchdog {
        args.push(&usec);
    }
    args.extend([
        tunterm.as_str(),
        "run",
        "--config",
        &config,
        "--control-socket",
        &sock,
        "--state-file",
        &state,
    ]);
    args.extend_from_slice(extra);
    ns.spawn(&args, &dir.join(log)).unwrap()
}

/// The next datagram within `timeout`, as text.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Datagrams until one starts with `what`, within `timeout` (the watchdog
/// pings in between are skipped).
fn recv_until(sock: &UnixDatagram, what: &str, timeout: Duration) -> Option<String> {
    let end = Instant::now() + timeout;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match recv(sock, left) {
            Some(m) if m.starts_with(what) => return Some(m),
            Some(_) => {}
            None => return None,
        }
    }
    None
}

#[test]
fn ready_once_forwarding_is_up_watchdog_from_the_loop_and_stopping_at_exit() {
    let (prefix, dir) = lab::begin("notify").unwrap();
    let (edge, aps, _up) = edge_aps_up(&prefix);
    let notify = dir.join("notify");
    let manager = UnixDatagram::bind(&notify).unwrap();
    let cfg = tunterm_lab::topology::edge_config(1.0, 3);
    std::fs::write(dir.join("edge.json"), cfg.to_string()).unwrap();
    let sock = dir.join("edge.sock");

    // A start that fails (no such trunk) never says READY.
    let mut failed = spawn(
        &edge,
        &dir,
        &notify,
        true,
        &["--upstream", "nosuch0"],
        "failed.log",
    );
    let status = failed.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success(), "{status}");
    assert_eq!(recv(&manager, Duration::from_millis(200)), None);

    // READY=1 is the first word, and when it comes tunterm forwards: its
    // control socket answers and its L2TP socket is bound.
    let mut tunterm = spawn(&edge, &dir, &notify, true, &[], "tunterm.log");
    let ready = recv(&manager, Duration::from_secs(15));
    let ready_at = Instant::now();
    let log = || std::fs::read_to_string(dir.join("tunterm.log")).unwrap_or_default();
    let ready = ready.unwrap_or_else(|| panic!("no READY=1 within 15 s: {}", log()));
    assert_eq!(
        ready,
        "READY=1\nSTATUS=forwarding: 0 tunnels, 0 mGRE peers taken back",
        "{}",
        log()
    );
    let stats = query(&sock).expect("the control socket answers at READY=1");
    assert_eq!(stats["tunnels"].as_array().map(Vec::len), Some(0));
    let bound = edge.run(&["ss", "-Hlun", "sport = :1701"]).unwrap();
    assert!(bound.contains("10.99.0.1:1701"), "{bound}");

    // The watchdog: pings every half period, from the loop, while an AP
    // builds its tunnel.
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let _ap = aps
        .spawn(
            &[
                &s(&bins().apsim),
                "--edge",
                "10.99.0.1",
                "--count",
                "1",
                "--local-ip",
                "10.99.0.2",
                "--hello-interval",
                "1",
            ],
            &dir.join("apsim.log"),
        )
        .unwrap();
    // From READY=1 on: pings sent while the test looked at the sockets
    // wait in the socket and count from there.
    let window = Duration::from_secs(5);
    let t0 = ready_at;
    let mut pings = vec![];
    while let Some(left) = window.checked_sub(t0.elapsed()) {
        match recv(&manager, left) {
            Some(m) => {
                assert_eq!(m, "WATCHDOG=1", "only pings while running");
                pings.push(Instant::now());
            }
            None => break,
        }
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let expected = window.as_millis() / (WATCHDOG / 2).as_millis();
    assert!(
        pings.len() as u128 >= expected - 1,
        "{} pings in {window:?}, every {:?} expected: {gaps:?}",
        pings.len(),
        WATCHDOG / 2
    );
    // Not more often than every half period (two read back to back are
    // the test's own delay, not tunterm's)...
    assert!(
        pings.len() as u128 <= expected + 2,
        "{} pings in {window:?}: {gaps:?}",
        pings.len()
    );
    // ...and never a period apart: systemd would restart tunterm.
    assert!(gaps.iter().all(|g| *g < WATCHDOG), "{gaps:?}");
    let mut last = serde_json::Value::Null;
    let up = lab::wait_until(Duration::from_secs(10), || {
        last = query(&sock).unwrap_or_default();
        sessions_up(&last) == 1
    });
    assert!(up, "the AP's session: {:#}", last["tunnels"]);

    // A restart (systemctl restart: SIGQUIT) says STOPPING=1; the next
    // tunterm, without a watchdog, takes the tunnel back before READY=1.
    tunterm.signal(libc::SIGQUIT).unwrap();
    let stopping = recv_until(&manager, "STOPPING=1", Duration::from_secs(5));
    assert_eq!(
        stopping.as_deref(),
        Some("STOPPING=1\nSTATUS=exiting for a restart: tunnels kept")
    );
    assert!(tunterm.wait_exit(Duration::from_secs(5)).is_some());
    let mut tunterm = spawn(&edge, &dir, &notify, false, &[], "tunterm2.log");
    let ready = recv(&manager, Duration::from_secs(15));
    assert_eq!(
        ready.as_deref(),
        Some("READY=1\nSTATUS=forwarding: 1 tunnels, 0 mGRE peers taken back"),
        "{}",
        std::fs::read_to_string(dir.join("tunterm2.log")).unwrap_or_default()
    );
    assert_eq!(recv(&manager, WATCHDOG), None, "no WATCHDOG_USEC, no pings");

    // A stop (systemctl stop: SIGTERM) says STOPPING=1 too.
    tunterm.signal(libc::SIGTERM).unwrap();
    let stopping = recv(&manager, Duration::from_secs(5));
    assert_eq!(
        stopping.as_deref(),
        Some("STOPPING=1\nSTATUS=shutting down: closing tunnels")
    );
    let status = tunterm.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "{status}");
    println!(
        "READY at forwarding, {} watchdog pings in {window:?} (gaps {gaps:?}), STOPPING at restart and stop",
        pings.len()
    );
}
