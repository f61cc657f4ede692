//! End to end in network namespaces: the edge's own addresses on VLANs 10
//! and 20 (host ports), an extra route, and the DHCP relay between real
//! udhcpc clients behind the simulated APs and real dnsmasq servers
//! upstream; then a configuration reload (SIGHUP).
//!
//! ```text
//!  c1 (udhcpc, untagged → VLAN 10) ─ ap1 ─┐        edge                   up                  srv2
//!  c2 (udhcpc, tag 20)             ─ ap2 ─┴─ tunterm, tt-v10 .10.2 ── trunk ── v10 .10.1 ─ s2 ─── eth0 172.16.2.2
//!                                                   tt-v20 .20.2             v20 .20.1        dnsmasq #2 (VLAN 10)
//!                                                                            dnsmasq #1 (VLANs 10, 20)
//! ```
//!
//! VLAN 10 relays to two servers, 192.168.10.1 and 172.16.2.2 (reached
//! through `tunterm_extra_routes` 172.16.2.0/24 via 192.168.10.1); VLAN 20
//! to the global default, 192.168.20.1. Needs root; needs `dnsmasq` and
//! `udhcpc` (`.ci/install-deps`).

mod common;

use std::time::Duration;

use common::{bins, clients, dnsmasq, udhcpc};
use tunterm_lab::topology::{Lab, Options};
use tunterm_lab::{self as lab, Capture, Netns, tshark_fields};

fn mxedge_services(with_vlan20: bool) -> Vec<(String, serde_json::Value)> {
    let mut addrs = serde_json::json!({
        "10": {"ip": "192.168.10.2", "netmask": "255.255.255.0"}
    });
    if with_vlan20 {
        addrs["20"] = serde_json::json!({"ip": "192.168.20.2", "netmask": "255.255.255.0"});
    }
    vec![
        ("tunterm_other_ip_configs".into(), addrs),
        (
            "tunterm_extra_routes".into(),
            serde_json::json!({"172.16.2.0/24": {"via": "192.168.10.1"}}),
        ),
        // An upstream check sourced from the edge's VLAN-10 address (its
        // host port), through the extra route: it must pass.
        (
            "tunterm_monitoring".into(),
            serde_json::json!([
                {"protocol": "ping", "host": "172.16.2.2", "src_vlan_id": 10, "timeout": 60}
            ]),
        ),
        (
            "tunterm_dhcpd_config".into(),
            serde_json::json!({
                "enabled": true, "type": "relay", "servers": ["192.168.20.1"],
                "10": {"enabled": true, "type": "relay", "servers": ["192.168.10.1", "172.16.2.2"]}
            }),
        ),
    ]
}

fn in_range(ip: &str, net: &str, lo: u8, hi: u8) -> bool {
    ip.strip_prefix(net)
        .and_then(|h| h.parse::<u8>().ok())
        .is_some_and(|h| (lo..=hi).contains(&h))
}

fn link_exists(ns: &Netns, ifname: &str) -> bool {
    ns.run(&["ip", "link", "show", ifname]).is_ok()
}

#[test]
fn clients_on_two_vlans_get_leases_through_the_relay() {
    let mut lab = common::start(Options {
        capture: true,
        mxedge_extra: mxedge_services(true),
        ..Options::new("dhcp", bins())
    });
    let dir = lab.dir.to_path_buf();

    // The second VLAN-10 server, one routed hop behind the upstream host.
    let srv2 = Netns::new(&format!("{}srv2", lab.prefix())).unwrap();
    lab::veth(&lab.up, "s2", &srv2, "eth0").unwrap();
    lab::addr(&lab.up, "s2", "172.16.2.1/24").unwrap();
    lab::addr(&srv2, "eth0", "172.16.2.2/24").unwrap();
    srv2.run(&["ip", "route", "add", "default", "via", "172.16.2.1"])
        .unwrap();
    lab.up
        .run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();

    // Host ports: up, addressed, in the stats.
    let s = lab.edge_stats().unwrap();
    let hosts = s["services"]["host_ports"].as_array().unwrap();
    let vlans: Vec<u64> = hosts.iter().map(|h| h["vlan"].as_u64().unwrap()).collect();
    assert_eq!(vlans, [10, 20], "{s:#}");
    let a = lab
        .edge
        .run(&["ip", "-4", "-o", "addr", "show", "tt-v10"])
        .unwrap();
    assert!(a.contains("192.168.10.2/24"), "{a}");
    // The kernel answers on the edge's VLAN addresses, through the trunk.
    assert_eq!(lab::ping(&lab.up, "192.168.10.2", 3).unwrap().received, 3);
    assert_eq!(lab::ping(&lab.up, "192.168.20.2", 3).unwrap().received, 3);
    // The switch learned the host port's MAC on it; frames went both ways.
    let s = lab.edge_stats().unwrap();
    let mac10 = s["services"]["host_ports"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mac10.starts_with("02:74:"), "{mac10}");
    let fdb = lab.edge_fdb().unwrap();
    assert!(
        fdb.iter()
            .any(|e| e.mac == mac10 && e.vlan == 10 && e.port == "host:10"),
        "{fdb:?}"
    );
    for h in s["services"]["host_ports"].as_array().unwrap() {
        assert!(
            h["rx"].as_u64().unwrap() >= 3 && h["tx"].as_u64().unwrap() >= 3,
            "{h}"
        );
        assert_eq!(h["tx_drops"], 0, "{h}");
    }
    // The extra route: the edge reaches 172.16.2.2 via 192.168.10.1.
    let route = lab
        .edge
        .run(&["ip", "route", "show", "172.16.2.0/24"])
        .unwrap();
    assert!(route.contains("via 192.168.10.1 dev tt-v10"), "{route}");
    assert_eq!(lab::ping(&lab.edge, "172.16.2.2", 2).unwrap().received, 2);

    // The upstream check, pinged from 192.168.10.2 (tt-v10) through the
    // extra route, passes: the edge stays healthy and takes tunnels.
    let probed = lab::wait_until(Duration::from_secs(12), || {
        lab.edge_stats().is_ok_and(|s| {
            let c = &s["monitoring"]["checks"][0];
            c["last_result"] == "ok" && c["probes"].as_u64().is_some_and(|n| n >= 1)
        })
    });
    let m = &lab.edge_stats().unwrap()["monitoring"];
    assert!(probed, "the VLAN-sourced ping check: {m:#}\n{}", lab.logs());
    assert_eq!(m["state"], "healthy", "{m:#}");
    assert_eq!(m["checks"][0]["state"], "ok", "{m:#}");

    let _d1 = dnsmasq(
        &lab.up,
        &dir,
        "dnsmasq-up",
        &[
            "192.168.10.100,192.168.10.149,255.255.255.0,5m",
            "192.168.20.100,192.168.20.149,255.255.255.0,5m",
        ],
    );
    let _d2 = dnsmasq(
        &srv2,
        &dir,
        "dnsmasq-srv2",
        &["192.168.10.150,192.168.10.199,255.255.255.0,5m"],
    );

    // The clients start without addresses.
    let c1 = lab.client("c1");
    let c2 = lab.client("c2");
    for c in [c1, c2] {
        c.run(&["ip", "addr", "flush", "dev", "eth0"]).unwrap();
    }
    let c1_cap = Capture::start(c1, "eth0", &dir.join("c1.pcap")).unwrap();

    let lease1 = udhcpc(c1, &dir, "c1");
    let lease2 = udhcpc(c2, &dir, "c2");
    let stats = lab.edge_stats().unwrap();
    let ctx = || format!("{:#}\n{}", stats["services"], lab.logs());
    let (ip1, sid1) = lease1.unwrap_or_else(|| panic!("c1 got no lease\n{}", ctx()));
    let (ip2, sid2) = lease2.unwrap_or_else(|| panic!("c2 got no lease\n{}", ctx()));
    println!("c1 (VLAN 10) lease {ip1} from {sid1}; c2 (VLAN 20) lease {ip2} from {sid2}");
    assert!(
        in_range(&ip1, "192.168.10.", 100, 199),
        "c1: {ip1}\n{}",
        ctx()
    );
    assert!(["192.168.10.1", "172.16.2.2"].contains(&sid1.as_str()));
    assert!(in_range(&ip2, "192.168.20.", 100, 149), "c2: {ip2}");
    assert_eq!(sid2, "192.168.20.1");

    // The client table learned the leases from the relayed ACKs (c1 has
    // not used its address yet), each client behind its AP.
    for (c, ip, ap) in [(c1, &ip1, "ap1"), (c2, &ip2, "ap2")] {
        let page = clients(&lab, &["--ip", ip]);
        let mac = c.mac("eth0").unwrap();
        assert!(
            page.total == 1 && page.entries[0].client.mac == mac && page.entries[0].ap == ap,
            "{ip}: {page:#?}"
        );
    }

    // With the leased address, c1 reaches the edge's own address.
    c1.run(&["ip", "addr", "add", &format!("{ip1}/24"), "dev", "eth0"])
        .unwrap();
    assert_eq!(lab::ping(c1, "192.168.10.2", 2).unwrap().received, 2);

    // A reply that answers nothing: dropped and counted.
    lab.up
        .enter(|| {
            let mut m = [0u8; 300];
            m[..3].copy_from_slice(&[2, 1, 6]);
            m[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            m[24..28].copy_from_slice(&[192, 168, 10, 2]);
            m[236..240].copy_from_slice(&[99, 130, 83, 99]);
            m[240] = 255;
            let s = std::net::UdpSocket::bind("192.168.10.1:6767")?;
            s.send_to(&m, "192.168.10.2:67")
        })
        .unwrap()
        .unwrap();
    let unmatched_counted = lab::wait_until(Duration::from_secs(3), || {
        lab.edge_stats()
            .is_ok_and(|s| s["services"]["dhcp_relay"]["drop_reply_unmatched"] == 1)
    });
    assert!(
        unmatched_counted,
        "{:#}",
        lab.edge_stats().unwrap()["services"]
    );

    let relay = lab.edge_stats().unwrap()["services"]["dhcp_relay"].clone();
    println!("relay counters: {relay}");
    // c1: DISCOVER and REQUEST to two servers; c2: to one.
    assert!(relay["relayed"].as_u64().unwrap() >= 6, "{relay}");
    assert!(relay["delivered"].as_u64().unwrap() >= 4, "{relay}");
    for k in [
        "drop_reply_bad_option82",
        "drop_reply_malformed",
        "drop_reply_unknown_server",
        "drop_request_malformed",
    ] {
        assert_eq!(relay[k], 0, "{k}: {relay}");
    }

    // tshark on the trunk: relayed requests to both VLAN-10 servers and to
    // the VLAN-20 one, giaddr the edge's address, option 82 present; no
    // client broadcast (UDP source port 68) ever reaches the trunk.
    let trunk = lab.trunk_capture.take().unwrap().stop().unwrap();
    let relayed = tshark_fields(
        &trunk,
        &[],
        "dhcp.option.dhcp == 1 || dhcp.option.dhcp == 3",
        &[
            "vlan.id",
            "ip.dst",
            "dhcp.ip.relay",
            "dhcp.hops",
            "dhcp.option.agent_information_option.agent_circuit_id",
            "dhcp.option.agent_information_option.agent_remote_id",
        ],
    )
    .unwrap();
    for r in &relayed {
        println!("trunk: {}", r.join(" | "));
    }
    let to = |vlan: &str, dst: &str| {
        relayed
            .iter()
            .filter(|r| r[0] == vlan && r[1] == dst)
            .collect::<Vec<_>>()
    };
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for (vlan, dst, giaddr, ap, remote) in [
        ("10", "192.168.10.1", "192.168.10.2", "ap1:10:", "10.99.0.2"),
        ("10", "172.16.2.2", "192.168.10.2", "ap1:10:", "10.99.0.2"),
        ("20", "192.168.20.1", "192.168.20.2", "ap2:20:", "10.99.0.3"),
    ] {
        let rows = to(vlan, dst);
        assert!(
            rows.len() >= 2,
            "DISCOVER and REQUEST to {dst}: {relayed:?}"
        );
        for r in rows {
            assert_eq!(r[2], giaddr, "{r:?}");
            assert_eq!(r[3], "1", "hops {r:?}");
            let circuit = r[4].replace(':', "");
            assert!(circuit.starts_with(&hex(ap)), "circuit id {r:?}");
            assert_eq!(r[5].replace(':', ""), hex(remote), "remote id {r:?}");
        }
    }
    let leaked = tshark_fields(&trunk, &[], "udp.srcport == 68", &["frame.number"]).unwrap();
    assert!(leaked.is_empty(), "client DHCP on the trunk: {leaked:?}");

    // On the client's side: server messages arrive, none with option 82.
    let c1_pcap = c1_cap.stop().unwrap();
    let seen = tshark_fields(
        &c1_pcap,
        &[],
        "dhcp.option.dhcp == 2 || dhcp.option.dhcp == 5",
        &["dhcp.option.dhcp", "ip.src", "dhcp.ip.relay"],
    )
    .unwrap();
    println!("c1 received: {seen:?}");
    assert!(seen.iter().any(|r| r[0] == "2"), "no OFFER at c1");
    assert!(seen.iter().any(|r| r[0] == "5"), "no ACK at c1");
    let with82 = tshark_fields(&c1_pcap, &[], "dhcp.option.type == 82", &["frame.number"]).unwrap();
    assert!(
        with82.is_empty(),
        "option 82 reached the client: {with82:?}"
    );

    // Reload: VLAN 20's address goes, its host port and relay with it.
    let config = dir.join("edge.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let hup = |lab: &mut Lab| lab.tunterm.signal(libc::SIGHUP).unwrap();
    for (k, v) in mxedge_services(false) {
        cfg["mxedge"][k] = v;
    }
    std::fs::write(&config, cfg.to_string()).unwrap();
    hup(&mut lab);
    let reloaded = lab::wait_until(Duration::from_secs(5), || {
        lab.edge_stats()
            .is_ok_and(|s| s["services"]["reloads"] == 1)
    });
    assert!(reloaded, "{}", lab.logs());
    let s = lab.edge_stats().unwrap();
    assert_eq!(s["services"]["host_ports"].as_array().unwrap().len(), 1);
    assert!(!link_exists(&lab.edge, "tt-v20"));
    assert!(link_exists(&lab.edge, "tt-v10"));
    let relay_vlans: Vec<u64> = s["services"]["dhcp_relay_vlans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vlan"].as_u64().unwrap())
        .collect();
    assert_eq!(relay_vlans, [10]);

    // A broken file is refused, counted, and changes nothing.
    std::fs::write(&config, "{\"mxedge\": ").unwrap();
    hup(&mut lab);
    let refused = lab::wait_until(Duration::from_secs(5), || {
        lab.edge_stats()
            .is_ok_and(|s| s["services"]["reload_errors"] == 1)
    });
    assert!(refused, "{}", lab.logs());
    let s = lab.edge_stats().unwrap();
    assert!(
        s["services"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("edge.json"),
        "{s:#}"
    );
    assert!(link_exists(&lab.edge, "tt-v10"));
    assert_eq!(lab::ping(&lab.up, "192.168.10.2", 2).unwrap().received, 2);

    // VLAN 20 back: its host port comes back and answers.
    for (k, v) in mxedge_services(true) {
        cfg["mxedge"][k] = v;
    }
    std::fs::write(&config, cfg.to_string()).unwrap();
    hup(&mut lab);
    let back = lab::wait_until(Duration::from_secs(5), || {
        lab.edge_stats()
            .is_ok_and(|s| s["services"]["reloads"] == 2)
    });
    assert!(back, "{}", lab.logs());
    assert!(link_exists(&lab.edge, "tt-v20"));
    assert_eq!(lab::ping(&lab.up, "192.168.20.2", 3).unwrap().received, 3);
    let c2_again = udhcpc(lab.client("c2"), &dir, "c2-again");
    assert!(
        c2_again.is_some_and(|(ip, _)| in_range(&ip, "192.168.20.", 100, 149)),
        "{}",
        lab.logs()
    );
}
