//! Shutdown (issue 13, 5b): SIGTERM closes every tunnel with a StopCCN and
//! waits for the acknowledgements on every tunnel socket — L2TPv3 over UDP
//! and over IP, IPv4 and IPv6, with the mGRE sockets open too (six
//! sockets) — and exits as soon as the last one is in, well before its
//! 2 s limit.
//!
//! Needs root.

mod common;

use std::time::{Duration, Instant};

use common::{bins, run_daemon};
use tunterm_lab::topology::{query, sessions_up};
use tunterm_lab::{self as lab, Proc};

/// APs per simulator (one simulator per transport and address family).
const PER_SIM: usize = 2;

/// `line` without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn sigterm_closes_every_tunnel_on_every_socket_and_exits_once_all_are_acknowledged() {
    let (prefix, dir) = lab::begin("stop").unwrap();
    let (edge, aps, _up) = common::edge_aps_up(&prefix);
    lab::addr(&aps, "e0", "fd00:99::2/64").unwrap();
    // IPv6 duplicate address detection would hold the addresses back.
    for (ns, ifname) in [(&edge, "ap0"), (&aps, "e0")] {
        ns.run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
        ])
        .unwrap();
    }

    // An L2TP/UDP mxtunnel, an L2TP/IP one and an mGRE WLAN: tunterm opens
    // UDP, IP 115 and GRE sockets on IPv4 and on IPv6.
    let mut cfg = tunterm_lab::topology::edge_config(1.0, 3);
    cfg["mxtunnels"] = serde_json::json!([
        {"name": "lab", "protocol": "udp", "vlan_ids": [10], "hello_interval": 1, "hello_retries": 3},
        {"name": "lab-ip", "protocol": "ip", "vlan_ids": [20], "hello_interval": 1, "hello_retries": 3}
    ]);
    cfg["wlans"] = serde_json::json!([{
        "ssid": "lab-mgre", "vlan_ids": [30], "tunnel_protocol": "mgre", "mgre_peer_timeout": 3
    }]);
    let state = dir.join("state");
    let state = state.to_string_lossy();
    let (mut tunterm, sock) = run_daemon(&edge, &dir, &cfg, &["--state-file", &state]);
    let b = bins();
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let log = std::fs::read_to_string(tunterm.log()).unwrap();
    for socket in [
        "L2tp(Udp)/10.99.0.1",
        "L2tp(Ip)/10.99.0.1",
        "Gre/10.99.0.1",
        "L2tp(Udp)/fd00:99::1",
        "L2tp(Ip)/fd00:99::1",
        "Gre/fd00:99::1",
    ] {
        assert!(log.contains(socket), "tunterm listens on {socket}: {log}");
    }

    let mut sims: Vec<(String, Proc)> = Vec::new();
    for (transport, tunnel) in [("udp", "lab"), ("ip", "lab-ip")] {
        for (edge_ip, local) in [("10.99.0.1", "10.99.0.2"), ("fd00:99::1", "fd00:99::2")] {
            let name = format!(
                "{transport}-{}",
                if local.contains(':') { "v6" } else { "v4" }
            );
            let p = aps
                .spawn(
                    &[
                        &s(&b.apsim),
                        "--edge",
                        edge_ip,
                        "--transport",
                        transport,
                        "--remote-end-id",
                        tunnel,
                        "--count",
                        &PER_SIM.to_string(),
                        "--local-ip",
                        local,
                        "--hello-interval",
                        "1",
                        "--hello-retries",
                        "3",
                        // Gone edge: the APs must not knock again before
                        // the test has looked.
                        "--retry-delay",
                        "60",
                        "--events",
                    ],
                    &dir.join(format!("{name}.log")),
                )
                .unwrap();
            sims.push((name, p));
        }
    }
    let total = 4 * PER_SIM;
    let mut last = serde_json::Value::Null;
    let up_ok = lab::wait_until(Duration::from_secs(20), || match query(&sock) {
        Ok(st) => {
            let n = sessions_up(&st);
            last = st;
            n == total
        }
        Err(_) => false,
    });
    assert!(up_ok, "{total} sessions up: {:#}", last["tunnels"]);

    let t0 = Instant::now();
    tunterm.signal(libc::SIGTERM).unwrap();
    let status = tunterm
        .wait_exit(Duration::from_secs(5))
        .expect("tunterm exits after SIGTERM");
    let took = t0.elapsed();
    let log = std::fs::read_to_string(tunterm.log()).unwrap();
    assert!(status.success(), "{status}: {log}");
    let closed = log
        .lines()
        .find(|l| l.contains("tunnels closed"))
        .map(plain)
        .unwrap_or_else(|| panic!("no 'tunnels closed' line: {log}"));
    assert!(
        closed.contains(&format!("tunnels={total}"))
            && closed.contains(&format!("acknowledged={total}"))
            && closed.contains("unacknowledged=0"),
        "every StopCCN acknowledged: {closed}"
    );
    // Well before the 2 s limit (the acks come in milliseconds; the rest
    // is the process ending on a busy machine).
    assert!(took < Duration::from_millis(1500), "{took:?}: {closed}");

    // Every AP heard the StopCCN (result 6: shutting down).
    for (name, p) in &sims {
        let text = std::fs::read_to_string(p.log()).unwrap();
        let stops = text
            .lines()
            .filter(|l| l.contains("\"tunnel_down\"") && l.contains("PeerStopCcn"))
            .count();
        assert_eq!(stops, PER_SIM, "{name}: {text}");
    }
    println!("SIGTERM → exit in {took:?} with {total} tunnels on 4 sockets: {closed}");
    drop(sims);
}
