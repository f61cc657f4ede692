//! End to end in network namespaces: simulated APs bring up L2TPv3 tunnels
//! to tunterm; real client namespaces behind them reach an upstream host on
//! two VLANs of the trunk; tshark judges what is on the wire.
//!
//! Needs root (CI runs as root). See `tunterm_lab::topology` for the map.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tunterm_lab::topology::{Lab, Options};
use tunterm_lab::{self as lab, tshark_fields};

use common::{ManyAps, bins, ping_ok};

fn start(name: &str, capture: bool) -> Lab {
    common::start(Options {
        capture,
        ..Options::new(name, bins())
    })
}

fn fdb_ports_of(fdb: &[tunterm::api::FdbEntry], mac: &str) -> Vec<String> {
    fdb.iter()
        .filter(|e| e.mac == mac)
        .map(|e| e.port.clone())
        .collect()
}

fn tunnel_of<'a>(stats: &'a serde_json::Value, ap: &str) -> Option<&'a serde_json::Value> {
    stats["tunnels"].as_array()?.iter().find(|t| t["ap"] == ap)
}

#[test]
fn ping_both_ways_on_two_vlans_and_client_to_client_across_aps() {
    let mut lab = start("ping", true);
    // VLAN 10: c1 (behind ap1, untagged) ↔ the upstream host.
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    ping_ok(&lab, &lab.up, "192.168.10.11");
    // VLAN 20: c2 (behind ap2, tagged 20 inside the tunnel) ↔ upstream.
    ping_ok(&lab, lab.client("c2"), "192.168.20.1");
    ping_ok(&lab, &lab.up, "192.168.20.12");
    // Client to client across two APs on VLAN 10: c3 (ap2) → c1 (ap1).
    ping_ok(&lab, lab.client("c3"), "192.168.10.11");

    let stats = lab.edge_stats().unwrap();
    assert_eq!(stats["num_tunnels"], 2, "{stats:#}");
    for ap in ["ap1", "ap2"] {
        let t = tunnel_of(&stats, ap).unwrap_or_else(|| panic!("{ap} tunnel: {stats:#}"));
        assert_eq!(t["state"], "established_with_sessions");
        assert_eq!(t["remote_port"].as_u64().map(|p| p > 0), Some(true));
        assert!(t["rx_control_pkts"].as_u64().unwrap() >= 4);
        assert_eq!(t["sessions"][0]["state"], "established");
        assert_eq!(t["sessions"][0]["remote_id"], "lab");
    }
    assert_eq!(tunnel_of(&stats, "ap1").unwrap()["remote_ip"], "10.99.0.2");
    assert_eq!(tunnel_of(&stats, "ap2").unwrap()["remote_ip"], "10.99.0.3");

    // The judge: tshark on the AP-facing link decodes every control message
    // and, having seen the handshake, the inner Ethernet frames.
    let ap_pcap = lab.ap_capture.take().unwrap().stop().unwrap();
    let types: BTreeSet<String> = tshark_fields(
        &ap_pcap,
        &[],
        "l2tp.avp.message_type",
        &["l2tp.avp.message_type"],
    )
    .unwrap()
    .into_iter()
    .flatten()
    .collect();
    for (code, name) in [
        ("1", "SCCRQ"),
        ("2", "SCCRP"),
        ("3", "SCCCN"),
        ("10", "ICRQ"),
        ("11", "ICRP"),
        ("12", "ICCN"),
    ] {
        assert!(types.contains(code), "tshark saw no {name}: {types:?}");
    }
    // tunterm assigns 8-byte cookies by default (RFC 3931 §8.2), and the
    // APs' data carries them.
    let bytes = |hex: &str| hex.replace(':', "").len() / 2;
    for (filter, field) in [
        (
            "l2tp.avp.message_type == 11 && ip.src == 10.99.0.1",
            "l2tp.avp.assigned_cookie",
        ),
        ("l2tp.cookie && ip.dst == 10.99.0.1", "l2tp.cookie"),
    ] {
        let cookies = tshark_fields(&ap_pcap, &[], filter, &[field]).unwrap();
        assert!(!cookies.is_empty(), "tshark saw no {field}");
        assert!(
            cookies.iter().all(|c| bytes(&c[0]) == 8),
            "{field} not 8 bytes: {cookies:?}"
        );
    }
    let malformed = tshark_fields(
        &ap_pcap,
        &[],
        "_ws.malformed || _ws.expert.severity == error",
        &["frame.number"],
    )
    .unwrap();
    assert!(
        malformed.is_empty(),
        "malformed frames on the AP link: {malformed:?}"
    );
    // Outer and inner IP headers both have ip.src: take the inner one.
    let inner = tshark_fields(
        &ap_pcap,
        &["-E", "occurrence=l"],
        "l2tp.sid && icmp",
        &["l2tp.sid", "ip.src", "ip.dst", "icmp.type"],
    )
    .unwrap();
    let pairs: BTreeSet<(String, String)> =
        inner.iter().map(|r| (r[1].clone(), r[2].clone())).collect();
    for (src, dst) in [
        ("192.168.10.11", "192.168.10.1"),
        ("192.168.10.1", "192.168.10.11"),
        ("192.168.20.12", "192.168.20.1"),
        ("192.168.20.1", "192.168.20.12"),
        ("192.168.10.13", "192.168.10.11"),
    ] {
        assert!(
            pairs.contains(&(src.to_string(), dst.to_string())),
            "tshark decoded no ICMP {src} → {dst} inside L2TP: {pairs:?}"
        );
    }
    // On the trunk the same traffic is 802.1Q-tagged with the right VLAN.
    let trunk_pcap = lab.trunk_capture.take().unwrap().stop().unwrap();
    let tagged: BTreeSet<(String, String)> =
        tshark_fields(&trunk_pcap, &[], "icmp", &["vlan.id", "ip.src"])
            .unwrap()
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
    for (vlan, src) in [
        ("10", "192.168.10.11"),
        ("10", "192.168.10.1"),
        ("20", "192.168.20.12"),
        ("20", "192.168.20.1"),
    ] {
        assert!(
            tagged.contains(&(vlan.into(), src.into())),
            "no VLAN {vlan} frame from {src} on the trunk: {tagged:?}"
        );
    }
    // Client-to-client stays inside the edge: it never touches the trunk.
    assert!(
        !tagged.iter().any(|(_, src)| src == "192.168.10.13"),
        "c3 → c1 leaked to the trunk: {tagged:?}"
    );
}

#[test]
fn frames_on_a_vlan_outside_vlan_ids_never_reach_the_trunk() {
    let mut lab = start("vlan99", true);
    // c5 sits behind ap1 with tag 99, which the mxtunnel does not allow. A
    // host answers on VLAN 99 upstream, so any leak would show.
    let r = lab::ping(lab.client("c5"), "192.168.99.1", 3).unwrap();
    assert_eq!(r.received, 0, "VLAN 99 must not cross");
    // Allowed VLANs still work beside it.
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    // The other way: the upstream host's ARP for c5 on VLAN 99 is on the
    // trunk (so the capture can see VLAN 99), but no session carries it.
    let r = lab::ping(&lab.up, "192.168.99.15", 2).unwrap();
    assert_eq!(r.received, 0);
    let trunk_pcap = lab.trunk_capture.take().unwrap().stop().unwrap();
    // The upstream host's own VLAN 99 chatter is on the trunk too; nothing
    // from c5 may be.
    let c5_mac = lab.client("c5").mac("eth0").unwrap().to_string();
    let filter = format!(
        "eth.src == {c5_mac} || arp.src.proto_ipv4 == 192.168.99.15 || ip.src == 192.168.99.15"
    );
    let leaked = tshark_fields(&trunk_pcap, &[], &filter, &["frame.number", "vlan.id"]).unwrap();
    assert!(
        leaked.is_empty(),
        "c5's VLAN 99 frames on the trunk: {leaked:?}"
    );
    let upstream99 = tshark_fields(
        &trunk_pcap,
        &[],
        "vlan.id == 99 && arp.dst.proto_ipv4 == 192.168.99.15",
        &["frame.number"],
    )
    .unwrap();
    assert!(
        !upstream99.is_empty(),
        "the capture saw the upstream's VLAN 99 ARP"
    );
    // Counted where they were dropped: by the switch, or (fast path on) by
    // xdp_trunk_rx before the switch could see them.
    let stats = lab.edge_stats().unwrap();
    let switch = stats["switch"]["drop_vlan_not_allowed"].as_u64().unwrap();
    let xdp = stats["fast_path"]["counters"]["trunk_drop_vlan_not_allowed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        switch + xdp >= 1,
        "trunk frames on VLAN 99 dropped and counted: {:#} {:#}",
        stats["switch"],
        stats["fast_path"]["counters"]
    );
}

#[test]
fn stopccn_from_an_ap_tears_down_its_tunnel_and_flushes_its_macs() {
    let mut lab = start("stopccn", false);
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    ping_ok(&lab, lab.client("c3"), "192.168.10.1");
    let c1_mac = lab.client("c1").mac("eth0").unwrap().to_string();
    let before = lab.edge_stats().unwrap();
    let ap1_sid = tunnel_of(&before, "ap1").unwrap()["sessions"][0]["local_sid"].to_string();
    assert_eq!(
        fdb_ports_of(&lab.edge_fdb().unwrap(), &c1_mac),
        vec![ap1_sid.clone()],
        "c1 learned behind ap1"
    );

    // SIGTERM: the simulator sends StopCCN for ap1 and exits.
    lab.ap1.signal(libc::SIGTERM).unwrap();
    let gone = lab::wait_until(Duration::from_secs(3), || {
        lab.edge_stats()
            .is_ok_and(|s| tunnel_of(&s, "ap1").is_none())
    });
    assert!(gone, "ap1's tunnel still there\n{}", lab.logs());
    let after = lab.edge_stats().unwrap();
    let fdb = lab.edge_fdb().unwrap();
    assert!(
        fdb_ports_of(&fdb, &c1_mac).is_empty(),
        "c1's MAC flushed: {fdb:#?}"
    );
    assert!(
        !fdb.iter().any(|e| e.port == ap1_sid),
        "no MAC left behind ap1's session"
    );
    assert!(
        lab.tunterm.wait_exit(Duration::from_millis(1)).is_none(),
        "tunterm still running"
    );
    // The StopCCN was a clean close (result 1), seen by tunterm.
    let log = std::fs::read_to_string(lab.dir.join("tunterm.log")).unwrap();
    assert!(
        log.contains("PeerStopCcn"),
        "tunterm logged the StopCCN:\n{log}"
    );
    // ap2 is untouched.
    assert!(tunnel_of(&after, "ap2").is_some());
    ping_ok(&lab, lab.client("c3"), "192.168.10.1");
}

#[test]
fn a_silent_ap_is_torn_down_after_hello_interval_times_retries() {
    let mut lab = start("silent", false);
    ping_ok(&lab, lab.client("c2"), "192.168.20.1");
    let c2_mac = lab.client("c2").mac("eth0").unwrap().to_string();
    assert_eq!(fdb_ports_of(&lab.edge_fdb().unwrap(), &c2_mac).len(), 1);

    // SIGKILL: ap2 goes silent without a StopCCN. hello 1 s × 3 retries.
    lab.ap2.kill9().unwrap();
    let killed = Instant::now();
    let gone = lab::wait_until(Duration::from_secs(8), || {
        lab.edge_stats()
            .is_ok_and(|s| tunnel_of(&s, "ap2").is_none())
    });
    let took = killed.elapsed();
    assert!(gone, "ap2 not torn down within 8 s\n{}", lab.logs());
    // Dead = 3 s after the last packet heard; that packet came at most one
    // hello interval before the kill.
    assert!(
        took >= Duration::from_millis(1_900) && took <= Duration::from_millis(3_500),
        "torn down after {took:?}, expected hello_interval × hello_retries = 3 s after the last packet"
    );
    println!("silent AP torn down {took:?} after SIGKILL (hello 1 s × 3)");
    assert!(
        fdb_ports_of(&lab.edge_fdb().unwrap(), &c2_mac).is_empty(),
        "c2's MAC flushed"
    );
    let log = std::fs::read_to_string(lab.dir.join("tunterm.log")).unwrap();
    assert!(
        log.contains("HelloTimeout"),
        "tunterm logged the hello timeout"
    );
    // ap1 is untouched.
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
}

/// An edge that crashed and came back without its state file knows none
/// of the tunnels its APs still hold. It answers their next hello with a
/// StopCCN naming the connection they used (header CCID 0, Assigned CCID
/// AVP), so they reconnect within one hello interval instead of after
/// their dead-peer time (hello_interval × hello_retries).
#[test]
fn an_edge_restarted_without_its_state_sends_its_aps_away_at_their_next_hello() {
    // Hello 3 s × 3: dead-peer detection alone takes 9 s.
    let mut lab = common::start(Options {
        hello_interval: 3.0,
        daemon_args: vec!["--state-file".into(), "none".into()],
        ..Options::new("stale", bins())
    });
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    let tunnels_up = |lab: &Lab, ap: &str| {
        lab.ap_stats(ap).unwrap()["per_ap"][ap]["tunnels_up"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((tunnels_up(&lab, "ap1"), tunnels_up(&lab, "ap2")), (1, 1));

    let down = lab
        .restart_edge(libc::SIGKILL, Duration::from_millis(200))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    let started = Instant::now();
    let back = lab::wait_until(Duration::from_secs(15), || {
        lab.edge_stats()
            .is_ok_and(|s| tunterm_lab::topology::sessions_up(&s) == 2)
            && tunnels_up(&lab, "ap1") == 2
            && tunnels_up(&lab, "ap2") == 2
    });
    let took = started.elapsed();
    assert!(
        back,
        "the APs did not come back within 15 s\n{}",
        lab.logs()
    );
    println!("edge down {down:?}; both APs back {took:?} after it started again (hello 3 s × 3)");
    // Their next hello (≤ 3 s), the StopCCN, the AP's retry delay and a new
    // tunnel: well before the 9 s of dead-peer detection.
    assert!(
        took < Duration::from_millis(6_500),
        "back {took:?} after the restart: not before the 9 s dead-peer time\n{}",
        lab.logs()
    );
    let s = lab.edge_stats().unwrap();
    let sent = s["l2tp"]["stale_stopccn_sent"].as_u64().unwrap();
    assert!(sent >= 2, "one StopCCN per AP at least: {:#}", s["l2tp"]);
    assert_eq!(s["l2tp"]["stale_stopccn_limited"], 0, "{:#}", s["l2tp"]);
    // The simulators log each event: the tunnel went down on the edge's
    // StopCCN (not HelloTimeout).
    for ap in ["ap1", "ap2"] {
        let log = std::fs::read_to_string(lab.dir.join(format!("{ap}.log"))).unwrap();
        let down: Vec<&str> = log.lines().filter(|l| l.contains("tunnel_down")).collect();
        assert_eq!(down.len(), 1, "{ap}: {down:?}");
        assert!(
            down[0].contains("PeerStopCcn")
                && down[0].contains(tunterm_core::proto::l2tp::STALE_MESSAGE),
            "{ap} was sent away by the edge's StopCCN: {}",
            down[0]
        );
    }
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    ping_ok(&lab, lab.client("c2"), "192.168.20.1");
}

/// The simulator is the load generator: a thousand APs in one process, each
/// with its own socket, control connection, session and two clients.
#[test]
fn apsim_brings_up_a_thousand_tunnels_in_one_process() {
    const APS: u64 = 1_000;
    let m = ManyAps::start("scale", &[]);
    let sock = &m.sock;
    let started = Instant::now();
    let _sim = m.apsim(APS, 2, 2000);
    let mut last = serde_json::Value::Null;
    let all_up = lab::wait_until(
        Duration::from_secs(60),
        || match tunterm_lab::topology::query(sock) {
            Ok(st) => {
                let ok = tunterm_lab::topology::sessions_up(&st) as u64 == APS;
                last = st;
                ok
            }
            Err(_) => false,
        },
    );
    let took = started.elapsed();
    assert!(
        all_up,
        "{} of {APS} sessions up after 60 s: {:#}",
        tunterm_lab::topology::sessions_up(&last),
        last["l2tp"]
    );
    println!("{APS} APs: every tunnel and session established in {took:?}");
    // Every client MAC learned behind its session.
    let learned = lab::wait_until(Duration::from_secs(20), || {
        let fdb = tunterm_lab::topology::query_fdb(sock).unwrap_or_default();
        let behind = fdb.iter().filter(|e| e.port != "trunk").count() as u64;
        if let Ok(st) = tunterm_lab::topology::query(sock) {
            last = st;
        }
        behind == 2 * APS
    });
    assert!(learned, "client MACs learned: {:#}", last["switch"]);
    assert_eq!(last["num_tunnels"], APS);
}
