//! `tunterm run --workers 2`: one forwarding worker beside the event loop,
//! with APs on L2TPv3/UDP, L2TPv3/IP and mGRE. Pings cross both ways; UDP
//! from many flows crosses both ways, none lost or duplicated, and the
//! worker forwards some of it in each direction itself; what the stats
//! count read on the trunk and the AP link is what the kernel counted on
//! those interfaces, not more (a frame a worker hands to the loop is
//! counted once, and over raw IP the loop's data socket does not also get
//! what the worker's gets). `mxedge.tunterm_workers` in the configuration file
//! starts them too; a reload that changes it says it waits for a restart.
//!
//! Needs root (CI runs as root). See `tunterm_lab::topology` for the map.

mod common;

use std::time::Duration;

use tunterm_lab::topology::{Encap, Lab, Options, sessions_up, workers_args};
use tunterm_lab::{self as lab, Netns};

use common::{bins, ping_ok};

/// A 2-second UDP transfer, 16 streams of 1 Mbit/s, from `client` to
/// `server_ip` upstream (`reverse`: upstream sends). With `exact`, none
/// lost, none out of order (a packet delivered twice counts as out of
/// order at the receiver).
fn udp_streams(lab: &Lab, client: &Netns, server_ip: &str, reverse: bool, exact: bool) {
    let log = lab.dir.join(format!("iperf-{server_ip}-{reverse}.log"));
    let mut server = lab
        .up
        .spawn(
            &["iperf3", "-s", "-1", "--forceflush", "-B", server_ip],
            &log,
        )
        .unwrap();
    assert!(
        lab::wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("listening"))),
        "iperf3 server did not start"
    );
    let mut args = vec![
        "iperf3",
        "-c",
        server_ip,
        "-u",
        "-b",
        "1M",
        "-P",
        "16",
        "-t",
        "2",
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if reverse {
        args.push("-R");
    }
    let out = client
        .run(&args)
        .unwrap_or_else(|e| panic!("iperf3 {args:?}: {e:#}\n{}", lab.logs()));
    let _ = server.wait_exit(Duration::from_secs(3));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("error").is_none(), "iperf3: {}", v["error"]);
    let received = v["end"]["sum"]["packets"].as_u64().unwrap_or(0)
        - v["end"]["sum"]["lost_packets"].as_u64().unwrap_or(0);
    assert!(
        received > 1000,
        "UDP crossed ({reverse}): {}",
        v["end"]["sum"]
    );
    if exact {
        let sum = &v["end"]["sum"];
        let (lost, late) = (&sum["lost_packets"], &sum["out_of_order"]);
        assert!(
            lost.as_u64() == Some(0) && late.as_u64().is_none_or(|n| n == 0),
            "none lost or duplicated ({reverse}): {sum}"
        );
    }
}

/// An interface counter of the edge (`rx_packets`, …).
fn counter(lab: &Lab, iface: &str, name: &str) -> u64 {
    let path = format!("/sys/class/net/{iface}/statistics/{name}");
    lab.edge
        .run(&["cat", &path])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_forwarding_worker_forwards_both_ways_and_every_frame_is_counted_once() {
    forwards_both_ways("workers", Encap::L2tpUdp, false);
}

#[test]
fn a_forwarding_worker_forwards_l2tp_over_ip_and_the_loop_does_not_read_it_too() {
    forwards_both_ways("workersip", Encap::L2tpIp, true);
}

#[test]
fn a_forwarding_worker_forwards_mgre_and_the_loop_does_not_read_it_too() {
    forwards_both_ways("workersgre", Encap::Gre, true);
}

/// The APs on `encap`, `--workers 2`: see the module documentation.
/// `exact`: the UDP transfers lose nothing.
fn forwards_both_ways(name: &str, encap: Encap, exact: bool) {
    let lab = common::start(Options {
        daemon_args: vec!["--workers".into(), "2".into()],
        // What the worker forwards is what XDP would forward first: with
        // the fast path on (`TUNTERM_LAB_FAST_PATH`) it would see nothing.
        fast_path: "off".into(),
        encap,
        ..Options::new(name, bins())
    });
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    ping_ok(&lab, &lab.up, "192.168.10.11");
    ping_ok(&lab, lab.client("c2"), "192.168.20.1");
    ping_ok(&lab, &lab.up, "192.168.20.12");
    udp_streams(&lab, lab.client("c1"), "192.168.10.1", false, exact);
    udp_streams(&lab, lab.client("c2"), "192.168.20.1", true, exact);
    std::thread::sleep(Duration::from_millis(500));
    let before = (
        counter(&lab, "trunk0", "rx_packets"),
        counter(&lab, "ap0", "rx_packets"),
    );
    let stats = lab.edge_stats().unwrap();
    let after = (
        counter(&lab, "trunk0", "rx_packets"),
        counter(&lab, "ap0", "rx_packets"),
    );
    let w = &stats["workers"];
    assert_eq!(w["workers"], 1, "{w}");
    let worker = &w["per_worker"][0];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    println!("worker: {worker}; io: {}", stats["io"]);
    assert!(
        n(&worker["forwarded_to_trunk"]) > 1000,
        "the worker forwarded AP → trunk: {w}"
    );
    assert!(
        n(&worker["forwarded_to_tunnels"]) > 100,
        "the worker forwarded trunk → AP (16 flows over 2 fanout sockets): {w}"
    );
    assert!(
        n(&worker["punted"]) > 0,
        "new MACs, ARP, pings' first frames: {w}"
    );
    assert_eq!(n(&worker["punt_dropped"]), 0, "{w}");
    let io = &stats["io"];
    // A frame counted twice (by the worker that read it and again by the
    // loop it handed it to) would put tunterm far above the kernel;
    // a frame or two may still be on its way to a socket.
    let trunk_rx = n(&io["trunk_rx"]) + n(&io["trunk_rx_shed"]);
    assert!(
        trunk_rx <= after.0 && trunk_rx + 5 >= before.0,
        "every frame on the trunk counted once: tunterm {trunk_rx}, kernel {before:?} → {after:?}"
    );
    // The AP link also carries ARP and ICMP for the edge's own address:
    // tunterm reads fewer than the kernel counts, never more.
    let tunnel_rx = n(&io["tunnel_rx"]);
    assert!(
        tunnel_rx <= after.1 && tunnel_rx * 10 >= before.1 * 9,
        "every tunnel packet counted once: tunterm {tunnel_rx}, kernel {before:?} → {after:?}"
    );
    assert_eq!(n(&io["tunnel_rx_shed"]), 0, "{io}");
    assert!(
        n(&stats["switch"]["forwarded"])
            >= n(&worker["forwarded_to_trunk"]) + n(&worker["forwarded_to_tunnels"]),
        "the worker's forwarding is in switch.forwarded"
    );
}

/// `tunterm apply-config FILE` (the CLI), its report as JSON.
fn apply_config(lab: &Lab, cfg: &serde_json::Value, name: &str) -> std::process::Output {
    let file = lab.dir.join(name);
    std::fs::write(&file, cfg.to_string()).unwrap();
    std::process::Command::new(bins().tunterm)
        .args(["apply-config", "--control-socket"])
        .arg(lab.edge_socket())
        .arg(&file)
        .output()
        .unwrap()
}

#[test]
fn the_configuration_file_starts_the_workers_and_a_reload_waits_for_a_restart() {
    let lab = common::start(Options {
        mxedge_extra: vec![("tunterm_workers".into(), 2.into())],
        ..Options::new("workerscfg", bins())
    });
    // `$TUNTERM_LAB_WORKERS` puts `--workers N` on the command line, which
    // wins over the file.
    let cli: Option<u64> = workers_args().get(1).map(|n| n.parse().unwrap());
    let threads = cli.unwrap_or(2);
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    let stats = lab.edge_stats().unwrap();
    assert_eq!(
        stats["workers"]["workers"],
        threads - 1,
        "forwarding workers beside the loop: {}",
        stats["workers"]
    );

    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join("edge.json")).unwrap()).unwrap();
    // Out of range: refused with the field's path.
    cfg["mxedge"]["tunterm_workers"] = 0.into();
    let out = apply_config(&lab, &cfg, "workers-0.json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("mxedge.tunterm_workers: must be between 1 and 64, got 0"),
        "{out:?}"
    );
    // Another count: reported as waiting for a restart; the running
    // workers stay and forward.
    cfg["mxedge"]["tunterm_workers"] = 3.into();
    let out = apply_config(&lab, &cfg, "workers-3.json");
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let waits = doc["needs_restart"].as_array().unwrap();
    assert!(
        waits
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("mxedge.tunterm_workers 3:")),
        "{doc}"
    );
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    assert_eq!(lab.edge_stats().unwrap()["workers"]["workers"], threads - 1);
}

/// Raw sockets of IP protocol `proto` bound to `ip` in the edge's
/// namespace (`/proc/net/raw` and `raw6`: the local "port" is the
/// protocol).
fn raw_sockets(lab: &Lab, ip: std::net::Ipv4Addr, proto: u8) -> usize {
    let table = lab.edge.run(&["cat", "/proc/net/raw"]).unwrap();
    let want = format!("{:08X}:{proto:04X}", u32::from_le_bytes(ip.octets()));
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .count()
}

/// The tunnel address of L2TPv3/IP changes live with a forwarding worker:
/// the worker opens its raw socket on the new address (it forwards the
/// APs' data there, none lost or duplicated) and closes the one on the
/// old address with the loop's pair.
#[test]
fn a_reload_moves_the_workers_raw_sockets_with_the_tunnel_address() {
    use std::net::Ipv4Addr;
    const L2TP_IP: u8 = 115;
    let (old, new) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 5));
    let lab = common::start(Options {
        daemon_args: vec!["--workers".into(), "2".into()],
        encap: Encap::L2tpIp,
        ap_args: vec!["--edge".into(), new.to_string()],
        // The worker's forwarding is checked: XDP would take it first.
        fast_path: "off".into(),
        ..Options::new("workersreaddr", bins())
    });
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    // The loop's control and data sockets, and the worker's.
    assert_eq!(raw_sockets(&lab, old, L2TP_IP), 3);

    lab.edge
        .run(&["ip", "addr", "add", "10.99.0.5/24", "dev", "ap0"])
        .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join("edge.json")).unwrap()).unwrap();
    cfg["mxedge"]["tunterm_ip_config"]["ip"] = new.to_string().into();
    let out = apply_config(&lab, &cfg, "moved.json");
    assert!(out.status.success(), "{out:?}");
    assert!(
        lab::wait_until(Duration::from_secs(3), || {
            raw_sockets(&lab, new, L2TP_IP) == 3 && raw_sockets(&lab, old, L2TP_IP) == 0
        }),
        "raw sockets on {new}: {}, on {old}: {}",
        raw_sockets(&lab, new, L2TP_IP),
        raw_sockets(&lab, old, L2TP_IP)
    );
    // The APs come up again on the new address (their tunnels to the old
    // one were closed) and the worker forwards for them there.
    assert!(
        lab::wait_until(Duration::from_secs(20), || lab
            .edge_stats()
            .is_ok_and(|s| sessions_up(&s) == 2)),
        "the APs are not up on {new}\n{}",
        lab.logs()
    );
    let forwarded = |lab: &Lab| {
        let w = &lab.edge_stats().unwrap()["workers"]["per_worker"][0];
        w["forwarded_to_trunk"].as_u64().unwrap()
    };
    let before = forwarded(&lab);
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    udp_streams(&lab, lab.client("c1"), "192.168.10.1", false, true);
    assert!(
        forwarded(&lab) > before + 1000,
        "the worker forwards from {new}: {before} → {}",
        forwarded(&lab)
    );
}
