//! Every setting applies live (issue 16): with both APs' tunnels up and
//! c1 pinging through ap1's tunnel, one `apply-config` adds an mxtunnel
//! over IP protocol 115 (a socket opened live) and shrinks
//! `tunterm_ap_subnets` to exclude ap2 — ap2's tunnel is closed with
//! StopCCN and counted, its new SCCRQs are refused, and c1's pings lose
//! nothing. A second removes that mxtunnel and lets ap2 back in; a third
//! replaces the APs' mxtunnel (another id): their tunnels close, their MACs
//! are flushed, and they come back on the new one; a fourth adds a
//! monitoring check, which runs while every tunnel stays. Then
//! `bounce-port` takes the AP-facing port down (seen with `ip link`),
//! brings it back with its addresses, and forwarding resumes; bad
//! `bounce-port` requests are refused with a clear error.

use std::time::{Duration, Instant};

use tunterm::api::client::{Client, block_on};
use tunterm::api::{BouncePortRequest, FdbQuery};
use tunterm_lab::topology::{Options, sessions_up};
use tunterm_lab::{self as lab};

mod common;
use common::{bins, start};

#[test]
fn settings_apply_live_and_untouched_tunnels_lose_nothing() {
    let lab = start(Options::new("reload", bins()));
    let client = Client::new(lab.edge_socket());
    let file = lab.dir.join("edge.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let c1 = lab.client("c1");
    common::ping_ok(&lab, lab.client("c2"), "192.168.20.1");
    // A capture of the trunk runs through every reload below.
    let pcap = lab.dir.join("reload-trunk.pcap");
    let mut capture = std::process::Command::new(bins().tunterm)
        .args(["capture", "-i", "trunk", "--duration", "600", "-w"])
        .arg(&pcap)
        .arg("--control-socket")
        .arg(lab.edge_socket())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let written = || {
        lab.edge_stats().ok().and_then(|s| {
            let c = s["captures"].as_array()?;
            (c.len() == 1).then(|| c[0]["written"].as_u64().unwrap_or(0))
        })
    };
    assert!(
        lab::wait_until(Duration::from_secs(10), || written().is_some()),
        "the capture did not start\n{}",
        lab.logs()
    );

    // (1) An mxtunnel added (over IP: a new socket), ap2 (10.99.0.3) no
    // longer inside tunterm_ap_subnets; c1 pings through ap1 meanwhile.
    let mut changed = cfg.clone();
    changed["mxtunnels"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "extra", "protocol": "ip", "vlan_ids": [30],
            "hello_interval": 1, "hello_retries": 3
        }));
    changed["mxcluster"]["tunterm_ap_subnets"] = serde_json::json!(["10.99.0.2/32"]);
    let (report, during) = std::thread::scope(|s| {
        let pinger = s.spawn(|| lab::ping(c1, "192.168.10.1", 25).unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        let report = block_on(client.apply_config(changed.clone(), false)).unwrap();
        (report, pinger.join().unwrap())
    });
    let applied = report.applied.join("; ");
    assert!(applied.contains("mxtunnel extra added"), "{report:?}");
    assert!(applied.contains("tunterm_ap_subnets"), "{report:?}");
    assert!(report.needs_restart.is_empty(), "{report:?}");
    assert_eq!(
        (during.sent, during.received),
        (25, 25),
        "c1's pings through ap1's tunnel during the change\n{}",
        lab.logs()
    );
    let stats = block_on(client.stats()).unwrap();
    assert_eq!(stats.config_digest, report.config_digest);
    assert_eq!(
        stats.config_digest,
        tunterm::api::config_digest(&tunterm_control::load_str(&changed.to_string()).unwrap().raw)
    );
    assert_eq!(stats.l2tp.closed_not_admitted, 1, "{stats:?}");
    assert!(stats.services.counters.reload_closed_tunnels >= 1);
    // ap2 knocks again (after its retry delay) and is refused.
    assert!(
        lab::wait_until(Duration::from_secs(10), || {
            lab.edge_stats()
                .is_ok_and(|s| s["l2tp"]["rx_control_not_admitted"].as_u64() > Some(0))
        }),
        "ap2's new SCCRQs are checked against the new list\n{}",
        lab.logs()
    );
    let s = lab.edge_stats().unwrap();
    assert_eq!(sessions_up(&s), 1, "{s}");
    let c2 = lab::ping(lab.client("c2"), "192.168.20.1", 3).unwrap();
    assert_eq!(c2.received, 0, "ap2 is outside: {c2:?}");
    common::ping_ok(&lab, c1, "192.168.10.1");

    // (2) The added mxtunnel removed, ap2 let back in: it comes back, c1
    // loses nothing.
    let back = cfg.clone();
    let (report, during) = std::thread::scope(|s| {
        let pinger = s.spawn(|| lab::ping(c1, "192.168.10.1", 15).unwrap());
        std::thread::sleep(Duration::from_millis(1000));
        let report = block_on(client.apply_config(back.clone(), false)).unwrap();
        (report, pinger.join().unwrap())
    });
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("mxtunnel extra removed")),
        "{report:?}"
    );
    assert_eq!((during.sent, during.received), (15, 15), "{}", lab.logs());
    assert!(
        lab::wait_until(Duration::from_secs(15), || lab
            .edge_stats()
            .is_ok_and(|s| sessions_up(&s) == 2)),
        "ap2 back\n{}",
        lab.logs()
    );
    common::ping_ok(&lab, lab.client("c2"), "192.168.20.1");

    // (2b) The APs' mxtunnel replaced (another id): its tunnels close with
    // StopCCN, their MACs are flushed at once, and the APs come back on
    // the new one.
    let old_sids: Vec<String> = block_on(client.stats())
        .unwrap()
        .tunnels
        .iter()
        .flat_map(|t| t.sessions.iter().map(|s| s.local_sid.to_string()))
        .collect();
    assert_eq!(old_sids.len(), 2);
    let closed_before = block_on(client.stats())
        .unwrap()
        .services
        .counters
        .reload_closed_tunnels;
    let fdb = |sids: &[String]| {
        block_on(client.fdb(&FdbQuery::default()))
            .unwrap()
            .entries
            .iter()
            .filter(|e| sids.contains(&e.port))
            .count()
    };
    assert!(fdb(&old_sids) > 0, "the APs' clients are learnt");
    let mut replaced = cfg.clone();
    // The id-less mxtunnel given an id, as a cloud's copy of it has: the
    // same mxtunnel, its tunnels stay.
    replaced["mxtunnels"][0]["id"] = "lab-v1".into();
    let report = block_on(client.apply_config(replaced.clone(), false)).unwrap();
    assert!(!report.applied.join("; ").contains("removed"), "{report:?}");
    assert!(fdb(&old_sids) > 0, "adopting an id keeps the tunnels");
    // Another id: another mxtunnel (the same name, which the APs ask for).
    replaced["mxtunnels"][0]["id"] = "lab-v2".into();
    let report = block_on(client.apply_config(replaced.clone(), false)).unwrap();
    let applied = report.applied.join("; ");
    assert!(
        applied.contains("mxtunnel lab removed") && applied.contains("mxtunnel lab added"),
        "{applied}"
    );
    assert_eq!(fdb(&old_sids), 0, "the removed mxtunnel's MACs are flushed");
    let s = block_on(client.stats()).unwrap();
    assert_eq!(s.services.counters.reload_closed_tunnels, closed_before + 2);
    assert!(
        lab::wait_until(Duration::from_secs(15), || lab
            .edge_stats()
            .is_ok_and(|s| sessions_up(&s) == 2)),
        "the APs back on the new mxtunnel\n{}",
        lab.logs()
    );
    common::ping_ok(&lab, c1, "192.168.10.1");

    // (2c) Monitoring: the new check runs (ap1's address answers pings
    // from the edge), the tunnels stay.
    let mut monitored = replaced.clone();
    monitored["mxedge"]["tunterm_monitoring"] =
        serde_json::json!([{"protocol": "ping", "host": "10.99.0.2", "timeout": 60}]);
    let report = block_on(client.apply_config(monitored, false)).unwrap();
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("tunterm_monitoring")),
        "{report:?}"
    );
    assert!(
        lab::wait_until(Duration::from_secs(15), || {
            let m = block_on(client.stats()).unwrap().monitoring;
            m.checks.len() == 1
                && m.checks[0].name == "ping 10.99.0.2"
                && m.checks[0].probes > 0
                && m.checks[0].probe_failures == 0
                && m.state == "healthy"
        }),
        "{:?}\n{}",
        block_on(client.stats()).unwrap().monitoring,
        lab.logs()
    );
    assert_eq!(
        block_on(client.stats())
            .unwrap()
            .services
            .counters
            .reload_closed_tunnels,
        closed_before + 2,
        "the monitoring change closed nothing"
    );
    assert_eq!(sessions_up(&lab.edge_stats().unwrap()), 2);

    // The capture survived the four reloads: still running, and it writes
    // what crosses the trunk now.
    let before = written().expect("the capture ended during the reloads");
    common::ping_ok(&lab, c1, "192.168.10.1");
    let after = written().expect("the capture ended");
    assert!(
        after >= before + 6,
        "the capture wrote {before} then {after}"
    );
    assert!(
        capture.try_wait().unwrap().is_none(),
        "tunterm capture exited"
    );
    capture.kill().unwrap();
    let _ = capture.wait();

    // (3) bounce-port: refused requests first, nothing goes down.
    let bad = |ports: &[&str], hold_time: u64| {
        block_on(client.bounce_port(BouncePortRequest {
            ports: ports.iter().map(|p| p.to_string()).collect(),
            hold_time,
        }))
        .unwrap_err()
        .to_string()
    };
    let e = bad(&["7"], 1000);
    assert!(e.contains("unknown port \"7\""), "{e}");
    let e = bad(&["0"], 0);
    assert!(e.contains("hold_time 0 ms"), "{e}");
    let e = bad(&["0"], 60_001);
    assert!(e.contains("1 to 60000"), "{e}");
    let link_up = |ifname: &str| {
        let out = lab.edge.run(&["ip", "-o", "link", "show", ifname]).unwrap();
        out.contains(",UP") || out.contains("<UP")
    };
    assert!(link_up("ap0"));

    // Mist port "0" is ap0: down for 1.5 s, then up with its addresses.
    let t0 = Instant::now();
    let r = block_on(client.bounce_port(BouncePortRequest {
        ports: vec!["0".into()],
        hold_time: 1500,
    }))
    .unwrap();
    assert_eq!(r.ports[0].ifname, "ap0", "{r:?}");
    assert!(!link_up("ap0"), "ap0 is down during the bounce");
    assert_eq!(
        lab.edge_stats().unwrap()["bounce"]["ports_down"].as_u64(),
        Some(1)
    );
    assert!(
        lab::wait_until(Duration::from_secs(5), || link_up("ap0")),
        "ap0 back up\n{}",
        lab.logs()
    );
    let down_for = t0.elapsed();
    assert!(down_for >= Duration::from_millis(1400), "{down_for:?}");
    let addrs = lab.edge.run(&["ip", "-o", "addr", "show", "ap0"]).unwrap();
    assert!(
        addrs.contains("10.99.0.1/24") && addrs.contains("fd00:99::1/64"),
        "ap0's addresses after the bounce:\n{addrs}"
    );
    // Forwarding resumes (the APs may rebuild their tunnels first).
    assert!(
        lab::wait_until(Duration::from_secs(15), || {
            lab::ping(c1, "192.168.10.1", 2).is_ok_and(|p| p.received == 2)
        }),
        "c1 after the bounce\n{}",
        lab.logs()
    );
    let s = lab.edge_stats().unwrap();
    assert_eq!(s["bounce"]["port_bounces"].as_u64(), Some(1), "{s}");
    assert_eq!(s["bounce"]["ports_down"].as_u64(), Some(0), "{s}");

    // The CLI: the trunk by its name.
    let out = std::process::Command::new(bins().tunterm)
        .args([
            "bounce-port",
            "trunk",
            "--hold-time",
            "300",
            "--control-socket",
        ])
        .arg(lab.edge_socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ports"][0]["ifname"], "trunk0", "{doc}");
    assert!(lab::wait_until(Duration::from_secs(3), || link_up(
        "trunk0"
    )));
    assert!(
        lab::wait_until(Duration::from_secs(10), || {
            lab::ping(c1, "192.168.10.1", 2).is_ok_and(|p| p.received == 2)
        }),
        "c1 after the trunk's bounce\n{}",
        lab.logs()
    );
}

/// The tunnel address changed live, with the fast path off or on: the new
/// sockets are bound, the tunnels to the old address closed with StopCCN,
/// and the APs (whose edge list holds both addresses, as a cluster's
/// tunterm_hosts would) come up again on the new one and forward — with
/// the fast path on, in XDP both ways (the encapsulation templates carry
/// the new source address). An address that is not this host's is refused
/// with the old sockets kept.
#[test]
fn the_tunnel_address_changes_live() {
    let mut opts = Options::new("readdr", bins());
    opts.ap_args = vec!["--edge".into(), "10.99.0.5".into()];
    let lab = start(opts);
    let client = Client::new(lab.edge_socket());
    let file = lab.dir.join("edge.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let fast = lab.edge_stats().unwrap()["fast_path"]["mode"] != "off";

    // Not an address of this host: refused, the sockets and tunnels stay.
    let mut nowhere = cfg.clone();
    nowhere["mxedge"]["tunterm_ip_config"]["ip"] = "10.99.0.77".into();
    let report = block_on(client.apply_config(nowhere, false)).unwrap();
    let restart = report.needs_restart.join("; ");
    assert!(restart.contains("10.99.0.77"), "{report:?}");
    common::ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    assert_eq!(sessions_up(&lab.edge_stats().unwrap()), 2);

    // An address of this host: rebound; the APs' tunnels (to 10.99.0.1)
    // are closed, and the APs move to 10.99.0.5, the next edge they know.
    lab.edge
        .run(&["ip", "addr", "add", "10.99.0.5/24", "dev", "ap0"])
        .unwrap();
    let mut moved = cfg.clone();
    moved["mxedge"]["tunterm_ip_config"]["ip"] = "10.99.0.5".into();
    let report = block_on(client.apply_config(moved, false)).unwrap();
    assert!(report.needs_restart.is_empty(), "{report:?}");
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("tunterm_ip_config")),
        "{report:?}"
    );
    // When apply-config answers the new sockets are bound and the old ones
    // closed: with `--workers`, it waits for the forwarding workers to
    // take the new set and let go of the old.
    let listening = lab.edge.run(&["ss", "-Hunl"]).unwrap();
    assert!(
        listening.contains("10.99.0.5:1701") && !listening.contains("10.99.0.1:1701"),
        "{listening}"
    );
    let s = block_on(client.stats()).unwrap();
    assert_eq!(s.services.counters.reload_closed_tunnels, 2, "{s:?}");
    on_edge(&lab, "10.99.0.5:1701", fast);

    // Back: the APs move to 10.99.0.1 again.
    let report = block_on(client.apply_config(cfg, false)).unwrap();
    assert!(report.needs_restart.is_empty(), "{report:?}");
    on_edge(&lab, "10.99.0.1:1701", fast);
}

/// Both APs' tunnels up to `edge`; c1 and c2 reach upstream through them,
/// in XDP both ways when `fast`.
fn on_edge(lab: &tunterm_lab::topology::Lab, edge: &str, fast: bool) {
    let there = || {
        ["ap1", "ap2"].iter().all(|ap| {
            lab.ap_stats(ap).is_ok_and(|s| {
                s["per_ap"][ap]["edge"] == edge && s["per_ap"][ap]["session_up"] == true
            })
        }) && lab.edge_stats().is_ok_and(|s| sessions_up(&s) == 2)
    };
    assert!(
        lab::wait_until(Duration::from_secs(20), there),
        "the APs are not up on {edge}\n{}",
        lab.logs()
    );
    for (c, dst) in [("c1", "192.168.10.1"), ("c2", "192.168.20.1")] {
        assert!(
            lab::wait_until(Duration::from_secs(5), || {
                lab::ping(lab.client(c), dst, 1).is_ok_and(|p| p.received == 1)
            }),
            "{c} through the tunnel to {edge}\n{}",
            lab.logs()
        );
    }
    if !fast {
        return;
    }
    // The mirror follows the switch within 50 ms; then every ping goes
    // through XDP both ways, encapsulated from the new address (an AP's
    // session takes data from its edge's address alone).
    let after = in_xdp(lab, lab.client("c1"), "192.168.10.1");
    assert_eq!(
        after["fast_path"]["templates"], 2,
        "{:#}",
        after["fast_path"]
    );
}

/// mGRE wlans changed live: turned off (an L2TP mxtunnel instead), the
/// peers are removed and the GRE socket closes; on again, the APs' packets make them peers again and
/// forwarding resumes.
#[test]
fn mgre_wlans_change_live() {
    let mut opts = Options::new("regre", bins());
    opts.encap = tunterm_lab::topology::Encap::Gre;
    let lab = start(opts);
    let client = Client::new(lab.edge_socket());
    let file = lab.dir.join("edge.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let c1 = lab.client("c1");
    common::ping_ok(&lab, c1, "192.168.10.1");

    let gre_socket = |raw: &str| raw.contains("10.99.0.1:gre") || raw.contains("10.99.0.1:47");
    let raw = lab.edge.run(&["ss", "-Hwan"]).unwrap();
    assert!(gre_socket(&raw), "{raw}");

    let mut off = cfg.clone();
    off["wlans"] = serde_json::json!([]);
    // An edge needs something to terminate: an L2TP mxtunnel instead.
    off["mxtunnels"] = serde_json::json!([{
        "name": "lab", "protocol": "udp", "vlan_ids": [10, 20],
        "hello_interval": 1, "hello_retries": 3
    }]);
    let report = block_on(client.apply_config(off, false)).unwrap();
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("mGRE termination off")),
        "{report:?}"
    );
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let s = block_on(client.stats()).unwrap();
    assert!(s.gre_peers.is_empty(), "{:?}", s.gre_peers);
    assert_eq!(s.services.counters.reload_removed_gre_peers, 2);
    // Closed when apply-config answers (with `--workers`, the forwarding
    // workers' raw sockets too: the reload waits for them).
    let raw = lab.edge.run(&["ss", "-Hwan"]).unwrap();
    assert!(!gre_socket(&raw), "the GRE sockets are closed: {raw}");
    assert_eq!(lab::ping(c1, "192.168.10.1", 3).unwrap().received, 0);

    let report = block_on(client.apply_config(cfg, false)).unwrap();
    assert!(report.needs_restart.is_empty(), "{report:?}");
    assert!(
        lab::wait_until(Duration::from_secs(10), || {
            block_on(client.stats()).is_ok_and(|s| s.gre_peers.len() == 2)
        }),
        "the APs are peers again\n{}",
        lab.logs()
    );
    assert!(
        lab::wait_until(Duration::from_secs(10), || {
            lab::ping(c1, "192.168.10.1", 2).is_ok_and(|p| p.received == 2)
        }),
        "c1 over mGRE again\n{}",
        lab.logs()
    );
}

/// The native VLAN and the upstream interface change live, with the fast
/// path off or on (`TUNTERM_LAB_FAST_PATH=xdp-native`), and the APs'
/// tunnels never go down. The upstream host is replaced by one whose VLAN
/// 10 is its untagged (native) port: c1 (VLAN 10) reaches it only once the
/// edge's native VLAN is 10, while c2 (VLAN 20, tagged) pings through the
/// change without losing a reply. Then the configuration names a second
/// trunk, `trunk1`, to another upstream host with the same addresses, and
/// the first host is stopped: c1 and c2 reach upstream through `trunk1`
/// (its counters show it), with the fast path forwarding both ways in XDP
/// when on.
#[test]
fn the_native_vlan_and_the_upstream_interface_change_live() {
    let mut lab = start(Options::new("reiface", bins()));
    let client = Client::new(lab.edge_socket());
    let file = lab.dir.join("edge.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let fast = lab.edge_stats().unwrap()["fast_path"]["mode"] != "off";
    let tunnels = || {
        let mut ids: Vec<u32> = block_on(client.stats())
            .unwrap()
            .tunnels
            .iter()
            .map(|t| t.local_ccid)
            .collect();
        ids.sort_unstable();
        ids
    };
    let before = tunnels();
    assert_eq!(before.len(), 2);
    lab.vlanhost.kill9().unwrap();
    let (c1, c2) = (lab.client("c1"), lab.client("c2"));
    let vlan_host = |ns: &lab::Netns, log: &str| {
        let bin = bins().lab.to_string_lossy().into_owned();
        let mut args = vec![
            bin.as_str(),
            "vlan-host",
            "--trunk",
            "t0",
            "--vlan",
            "20=192.168.20.1/24",
            "--native",
            "10=192.168.10.1/24",
        ];
        if fast {
            args.push("--xdp-pass");
        }
        let mut p = ns.spawn(&args, &lab.dir.join(log)).unwrap();
        p.wait_for_log(lab::vlanhost::READY, Duration::from_secs(10))
            .unwrap();
        p
    };
    let mut native_host = vlan_host(&lab.up, "vlanhost-native.log");
    common::ping_ok(&lab, c2, "192.168.20.1");
    assert_eq!(
        lab::ping(c1, "192.168.10.1", 2).unwrap().received,
        0,
        "VLAN 10 still leaves tagged: the native host does not answer"
    );

    // (1) The native VLAN 1 -> 10, c2 pinging meanwhile.
    let mut native = cfg.clone();
    native["mxedge"]["tunterm_port_config"]["upstream_port_vlan_id"] = 10.into();
    let (report, during) = std::thread::scope(|s| {
        let pinger = s.spawn(|| lab::ping(c2, "192.168.20.1", 15).unwrap());
        std::thread::sleep(Duration::from_millis(1000));
        let report = block_on(client.apply_config(native.clone(), false)).unwrap();
        (report, pinger.join().unwrap())
    });
    assert!(report.needs_restart.is_empty(), "{report:?}");
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("native VLAN) 1 -> 10")),
        "{report:?}"
    );
    assert_eq!(
        (during.sent, during.received),
        (15, 15),
        "c2's pings during the native VLAN change\n{}",
        lab.logs()
    );
    // Untagged on the trunk is VLAN 10 now, both ways.
    assert!(
        lab::wait_until(Duration::from_secs(5), || {
            lab::ping(c1, "192.168.10.1", 1).is_ok_and(|p| p.received == 1)
        }),
        "c1 (VLAN 10) to the upstream host's untagged port\n{}",
        lab.logs()
    );
    if fast {
        in_xdp(&lab, c1, "192.168.10.1");
    }
    assert_eq!(tunnels(), before, "the tunnels stayed up");

    // (2) A second trunk to another upstream host with the same addresses;
    // the first one stopped: only trunk1 can answer now.
    let up2 = lab::Netns::new(&format!("{}2", lab.up.name())).unwrap();
    lab::veth(&lab.edge, "trunk1", &up2, "t0").unwrap();
    let _second_host = vlan_host(&up2, "vlanhost-2.log");
    let mut moved = native.clone();
    moved["ports"]["2"] = "trunk1".into();
    moved["mxedge"]["tunterm_port_config"]["upstream_ports"] = serde_json::json!(["2"]);
    let (report, during) = std::thread::scope(|s| {
        let pinger = s.spawn(|| lab::ping(c2, "192.168.20.1", 20).unwrap());
        std::thread::sleep(Duration::from_millis(1000));
        let report = block_on(client.apply_config(moved.clone(), false)).unwrap();
        native_host.kill9().unwrap();
        // The new host has other MACs: the clients learn them (a router
        // replaced upstream, as the edge cannot tell them).
        for c in [c1, c2] {
            c.run(&["ip", "neigh", "flush", "all"]).unwrap();
        }
        (report, pinger.join().unwrap())
    });
    assert!(report.needs_restart.is_empty(), "{report:?}");
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("upstream [\"trunk0\"] -> [\"trunk1\"]")),
        "{report:?}"
    );
    // Those on the wire at the move, and until c2 has the new host's MAC,
    // go to the old host: a few may be lost, the others come back through
    // trunk1.
    assert!(
        during.received + 4 >= during.sent,
        "c2's pings during the move: {during:?}\n{}",
        lab.logs()
    );
    let tx_packets = || -> u64 {
        let out = lab
            .edge
            .run(&["cat", "/sys/class/net/trunk1/statistics/tx_packets"])
            .unwrap();
        out.trim().parse().unwrap()
    };
    let sent_before = tx_packets();
    for (c, dst) in [(c1, "192.168.10.1"), (c2, "192.168.20.1")] {
        assert!(
            lab::wait_until(Duration::from_secs(5), || {
                lab::ping(c, dst, 1).is_ok_and(|p| p.received == 1)
            }),
            "{} through trunk1\n{}",
            c.name(),
            lab.logs()
        );
        common::ping_ok(&lab, c, dst);
    }
    assert!(tx_packets() >= sent_before + 8, "the pings left by trunk1");
    let s = lab.edge_stats().unwrap();
    if fast {
        let attached = s["fast_path"]["attached"].to_string();
        assert!(
            attached.contains("trunk1: xdp_trunk_rx") && !attached.contains("trunk0"),
            "{attached}"
        );
        in_xdp(&lab, c2, "192.168.20.1");
    }
    assert_eq!(tunnels(), before, "the tunnels stayed up");
    let listening = lab.edge.run(&["ss", "-H", "-0", "-a"]).unwrap_or_default();
    assert!(
        !listening.contains("trunk0"),
        "the old trunk socket is closed: {listening}"
    );
}

/// 5 pings from `c` to `dst`, all forwarded in XDP both ways; the edge's
/// stats after them.
fn in_xdp(lab: &tunterm_lab::topology::Lab, c: &lab::Netns, dst: &str) -> serde_json::Value {
    std::thread::sleep(Duration::from_millis(300));
    let counter = |s: &serde_json::Value, k: &str| s["fast_path"]["counters"][k].as_u64().unwrap();
    let before = lab.edge_stats().unwrap();
    let r = lab::ping(c, dst, 5).unwrap();
    let after = lab.edge_stats().unwrap();
    assert_eq!(r.received, 5, "{r:?}\n{}", lab.logs());
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    assert!(
        d("ap_redirect") >= 5 && d("trunk_redirect") >= 5,
        "AP→trunk {}, trunk→AP {} in XDP for 5 pings to {dst}: {:#}",
        d("ap_redirect"),
        d("trunk_redirect"),
        after["fast_path"]
    );
    after
}
