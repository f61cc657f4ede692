//! The XDP fast path in the netns lab: `tunterm run --fast-path xdp-native`
//! (and xdp-generic) forwards established sessions' known unicast in XDP,
//! mirrors sessions and MACs into its maps as they come and go, keeps the
//! switch's aging fed, and refuses clearly what the interface cannot do.
//! (The rest of the lab suite runs with the fast path on when
//! `TUNTERM_LAB_FAST_PATH=xdp-native` is set; `.ci/run` does both.)
//!
//! Needs root (CI runs as root).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::bins;
use tunterm_lab::topology::{Encap, Lab, Options};
use tunterm_lab::{self as lab, wait_until};

fn start(name: &str, fast_path: &str, encap: Encap) -> Lab {
    common::start(Options {
        fast_path: fast_path.into(),
        encap,
        ..Options::new(name, bins())
    })
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["fast_path"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no fast-path counter {name}: {:#}", stats["fast_path"]))
}

/// Pings that must all come back, then the edge's stats.
fn ping_all(lab: &Lab, client: &str, dst: &str, n: u32) -> serde_json::Value {
    let r = lab::ping(lab.client(client), dst, n).unwrap();
    assert_eq!(r.received, n, "{client} → {dst}: {r:?}\n{}", lab.logs());
    lab.edge_stats().unwrap()
}

/// `n` pings from `client` to `dst`, each of which must go through XDP
/// both ways.
fn fast_both_ways(lab: &Lab, client: &str, dst: &str, n: u32) {
    let _ = ping_all(lab, client, dst, 2);
    std::thread::sleep(Duration::from_millis(200));
    let before = lab.edge_stats().unwrap();
    let after = ping_all(lab, client, dst, n);
    let d = |c: &str| counter(&after, c) - counter(&before, c);
    // A redirected frame is consumed in XDP: userspace never sees it.
    let (up, down) = (d("ap_redirect"), d("trunk_redirect"));
    assert!(
        up >= u64::from(n) && down >= u64::from(n),
        "AP→trunk {up}, trunk→AP {down} in XDP for {n} pings {client} → {dst}"
    );
}

fn forwards_in_xdp(name: &str, mode: &str) {
    let mut lab = start(name, mode, Encap::L2tpUdp);
    let stats = lab.edge_stats().unwrap();
    let fp = &stats["fast_path"];
    assert_eq!(fp["mode"], mode);
    assert_eq!(
        fp["attached"],
        serde_json::json!(["ap0: xdp_ap_rx", "trunk0: xdp_trunk_rx"])
    );
    assert_eq!(fp["sessions"], 2, "both APs' sessions installed: {fp:#}");

    // The first packets teach the switch both MACs (slow path); the mirror
    // follows within 50 ms; the rest goes through XDP, both ways.
    fast_both_ways(&lab, "c1", "192.168.10.1", 10);
    let stats = lab.edge_stats().unwrap();
    let fp = &stats["fast_path"];
    assert_eq!(fp["templates"], 2, "{fp:#}");
    assert!(fp["fdb"].as_u64().unwrap() >= 2);
    assert_eq!(fp["map_errors"], 0);

    // Tagged VLAN 20 behind ap2 too.
    fast_both_ways(&lab, "c2", "192.168.20.1", 5);

    // Fast-path traffic keeps the switch's entries alive (refreshed every
    // 2 s from the program's last-seen stamps).
    let r = lab::ping(lab.client("c1"), "192.168.10.1", 4).unwrap();
    assert_eq!(r.received, 4);
    let stats = lab.edge_stats().unwrap();
    assert!(
        stats["fast_path"]["refreshed"].as_u64().unwrap() >= 1,
        "{:#}",
        stats["fast_path"]
    );

    // A session that goes away leaves the map at once.
    lab.ap2.signal(libc::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .edge_stats()
            .is_ok_and(|s| s["fast_path"]["sessions"] == 1)),
        "ap2's session still installed: {:#}",
        lab.edge_stats().unwrap()["fast_path"]
    );
    // ap1 still forwards in XDP.
    fast_both_ways(&lab, "c1", "192.168.10.1", 3);
}

#[test]
fn mgre_peers_forward_in_xdp() {
    let lab = start("fpgre", "xdp-native", Encap::Gre);
    // mGRE peers appear with their first packet.
    let _ = ping_all(&lab, "c1", "192.168.10.1", 2);
    let _ = ping_all(&lab, "c2", "192.168.20.1", 2);
    fast_both_ways(&lab, "c1", "192.168.10.1", 10);
    let stats = lab.edge_stats().unwrap();
    let fp = &stats["fast_path"];
    assert_eq!(fp["gre_peers"], 2, "{fp:#}");
    assert_eq!(fp["templates"], 2, "{fp:#}");
}

#[test]
fn native_fast_path_forwards_and_follows_the_switch() {
    forwards_in_xdp("fpnat", "xdp-native");
}

#[test]
fn generic_fast_path_forwards_and_follows_the_switch() {
    forwards_in_xdp("fpgen", "xdp-generic");
}

#[test]
fn native_mode_on_a_jumbo_veth_is_refused_with_the_reason() {
    let err = Lab::start(Options {
        fast_path: "xdp-native".into(),
        ap_link_mtu: 9000,
        ..Options::new("fpmtu", bins())
    })
    .err()
    .expect("tunterm must refuse native XDP on a 9000-byte veth");
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot attach XDP to ap0") && text.contains("MTU is 9000"),
        "{text}"
    );
}

/// `ping -i 0.01 -c COUNT DST` from `client` in the background; its log.
/// `-w` keeps ping until COUNT replies are in (sending more meanwhile if
/// some are missing), or 20 s: without it, ping stops waiting twice the
/// longest round trip after its last request, and on a busy machine a
/// last reply that the upstream host (a userspace process) answers a few
/// ms later than that counts as lost although it came.
fn steady_ping(lab: &Lab, client: &str, dst: &str, count: u32, name: &str) -> lab::Proc {
    let log = lab.dir.join(format!("{name}.log"));
    let count = count.to_string();
    lab.client(client)
        .spawn(
            &["ping", "-n", "-i", "0.01", "-w", "20", "-c", &count, dst],
            &log,
        )
        .unwrap()
}

/// Which of the first `count` echo requests of a finished ping got no
/// reply, from its per-reply lines (`icmp_seq=N`, duplicates aside).
fn unanswered(p: &mut lab::Proc, count: u32) -> Vec<u32> {
    p.wait_exit(Duration::from_secs(30))
        .expect("ping did not finish");
    let text = std::fs::read_to_string(p.log()).unwrap();
    let answered: std::collections::BTreeSet<u32> = text
        .lines()
        .filter(|l| l.contains(" bytes from ") && !l.contains("DUP!"))
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    (1..=count).filter(|seq| !answered.contains(seq)).collect()
}

fn tunnels_up(lab: &Lab, ap: &str) -> u64 {
    lab.ap_stats(ap).unwrap()["per_ap"][ap]["tunnels_up"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tunnels_up in {ap}'s stats"))
}

/// Restart the edge with `signal` (`what`; down a second) while c1 sends
/// the upstream host [`PINGS`] echo requests, 100 a second: every one must
/// be answered.
fn restart_under_ping(lab: &mut Lab, signal: i32, what: &str, name: &str) {
    let mut ping = steady_ping(lab, "c1", "192.168.10.1", PINGS, name);
    std::thread::sleep(Duration::from_millis(800));
    // Down for a second: everything in between is the pinned programs'.
    let down = lab
        .restart_edge(signal, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    let lost = unanswered(&mut ping, PINGS);
    println!(
        "{what} and restart: {PINGS} echo requests at 100/s, unanswered {lost:?}, edge down {down:?}"
    );
    // An AP gives up an edge that acknowledges nothing for its hello
    // budget: its hello goes one interval after the last packet it heard
    // (0–1 interval before the signal) and is given up (retries − 1)
    // intervals later. An edge down (signal to "tunterm running") for
    // longer than that, on a loaded machine, outlasts it: the AP rebuilds
    // its tunnel and pings are lost meanwhile. Say so rather than blame
    // the fast path.
    let rebuilt: Vec<&str> = ["ap1", "ap2"]
        .into_iter()
        .filter(|ap| tunnels_up(lab, ap) != 1)
        .collect();
    assert!(
        rebuilt.is_empty(),
        "{rebuilt:?} rebuilt their tunnels across {what}: the edge was down {down:?} \
         (more than the APs' hello budget?); unanswered pings {lost:?}\n{}",
        lab.logs()
    );
    assert!(
        lost.is_empty(),
        "lost across {what} (no AP rebuilt its tunnel; edge down {down:?}): {lost:?}\n{}",
        lab.logs()
    );
}

const PINGS: u32 = 300;

#[test]
fn a_killed_edge_restarts_without_loss_or_rebuilt_tunnels() {
    // Hello 1 s × 5: the APs give an edge that acknowledges nothing 4–5 s
    // after the signal (1 s × 3: 2–3 s). The edge is down for the test's
    // second plus its start: 1.2–2.2 s here at load 4–6, and under
    // load 5–7 sometimes past 2 s by enough for the APs to give up and
    // rebuild their tunnels (likely the 2 of 13 runs that lost pings: with
    // the edge kept down 2 s, both APs logged HelloTimeout and 56 pings
    // were lost; at 1 s × 5 the same run passes).
    // The claim, no loss and no rebuilt tunnel across a restart that
    // fits in the hello budget, is the same.
    let mut lab = common::start(Options {
        fast_path: "xdp-native".into(),
        encap: Encap::L2tpUdp,
        hello_retries: 5,
        ..Options::new("fprst", bins())
    });
    let stats = lab.edge_stats().unwrap();
    assert_eq!(
        stats["fast_path"]["start"], "fresh",
        "{:#}",
        stats["fast_path"]
    );
    // Both MACs learned and mirrored, and the flow in XDP both ways.
    fast_both_ways(&lab, "c1", "192.168.10.1", 5);
    let _ = ping_all(&lab, "c2", "192.168.20.1", 2);
    let sessions_before: Vec<u64> = (0..2)
        .map(|i| {
            stats["tunnels"][i]["sessions"][0]["local_sid"]
                .as_u64()
                .unwrap()
        })
        .collect();

    // kill -9 mid-flow: the pinned programs go on forwarding while no
    // tunterm runs, and the next one takes over maps, links and tunnels.
    restart_under_ping(&mut lab, libc::SIGKILL, "kill -9", "ping-kill");
    let stats = lab.edge_stats().unwrap();
    let r = &stats["restart"];
    assert_eq!(
        stats["fast_path"]["start"], "adopted",
        "{:#}",
        stats["fast_path"]
    );
    assert_eq!(r["restored_tunnels"], 2, "{r:#}");
    assert_eq!(r["restored_sessions"], 2, "{r:#}");
    assert!(r["restored_fdb"].as_u64().unwrap() >= 2, "{r:#}");
    assert_eq!(r["refused"], serde_json::json!([]), "{r:#}");
    let mut sessions_after: Vec<u64> = (0..2)
        .map(|i| {
            stats["tunnels"][i]["sessions"][0]["local_sid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    sessions_after.sort();
    let mut sb = sessions_before.clone();
    sb.sort();
    assert_eq!(sessions_after, sb, "the same sessions, not new ones");

    // The control connections go on: past hello_interval × hello_retries
    // (5 s) both sides still hold the same tunnel, hellos acknowledged.
    let rx_before: Vec<u64> = (0..2)
        .map(|i| stats["tunnels"][i]["rx_control_pkts"].as_u64().unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(6));
    let stats = lab.edge_stats().unwrap();
    assert_eq!(lab::topology::sessions_up(&stats), 2, "{}", lab.logs());
    for i in 0..2 {
        let rx = stats["tunnels"][i]["rx_control_pkts"].as_u64().unwrap();
        assert!(
            rx >= rx_before[i] + 2,
            "tunnel {i}: hellos {} → {rx}",
            rx_before[i]
        );
        assert_eq!(
            stats["tunnels"][i]["retransmits"], 0,
            "{:#}",
            stats["tunnels"][i]
        );
    }
    for ap in ["ap1", "ap2"] {
        assert_eq!(
            tunnels_up(&lab, ap),
            1,
            "{ap} rebuilt its tunnel\n{}",
            lab.logs()
        );
    }
    // Slow-path traffic works again too (ARP broadcast across APs).
    let _ = ping_all(&lab, "c1", "192.168.10.13", 3);

    // A planned restart (SIGQUIT: exit keeping everything) the same way.
    restart_under_ping(&mut lab, libc::SIGQUIT, "SIGQUIT", "ping-quit");
    for ap in ["ap1", "ap2"] {
        assert_eq!(tunnels_up(&lab, ap), 1, "{ap} rebuilt its tunnel");
    }

    // SIGTERM stops for good: StopCCN to the APs, pins and state removed.
    let pins = lab.bpffs.as_ref().unwrap().path().join("tunterm");
    assert!(pins.join("links").exists());
    lab.tunterm.signal(libc::SIGTERM).unwrap();
    assert!(lab.tunterm.wait_exit(Duration::from_secs(5)).is_some());
    assert!(!pins.exists(), "pins left after SIGTERM");
    assert!(
        !lab.dir.join("edge.state").exists(),
        "state file left after SIGTERM"
    );
    assert!(
        wait_until(Duration::from_secs(3), || lab
            .ap_stats("ap1")
            .is_ok_and(|s| s["per_ap"]["ap1"]["session_up"] == false)),
        "ap1 did not see the StopCCN"
    );
}

/// The FDB entries behind the trunk and the tunnels (not tunterm's own
/// host ports'), as (VLAN, MAC, port).
fn fdb_keys(lab: &Lab) -> BTreeSet<(u16, String, String)> {
    lab.edge_fdb()
        .unwrap()
        .into_iter()
        .filter(|e| !e.port.starts_with("host:"))
        .map(|e| (e.vlan, e.mac, e.port))
        .collect()
}

#[test]
fn an_upgrade_across_a_map_layout_change_keeps_the_macs() {
    let mut lab = start("fplay", "xdp-native", Encap::L2tpUdp);
    fast_both_ways(&lab, "c1", "192.168.10.1", 3);
    let _ = ping_all(&lab, "c2", "192.168.20.1", 2);
    let before = fdb_keys(&lab);
    assert!(
        before.iter().any(|(_, _, p)| p == "trunk") && before.len() >= 3,
        "the clients and the trunk hosts learned: {before:?}"
    );
    // An exit for a restart, then pins that look like another build's
    // maps (their layout marker changed): the new tunterm replaces them,
    // its fast path starts with empty maps, and the MACs come from the
    // state file.
    let layout = lab
        .bpffs
        .as_ref()
        .unwrap()
        .path()
        .join("tunterm")
        .join("layout");
    lab.restart_edge_with(libc::SIGQUIT, |_| {
        for e in std::fs::read_dir(&layout).unwrap() {
            std::fs::remove_dir(e.unwrap().path()).unwrap();
        }
        std::fs::create_dir(layout.join("0123456789abcdef")).unwrap();
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    let stats = lab.edge_stats().unwrap();
    let start = stats["fast_path"]["start"].as_str().unwrap();
    assert!(start.starts_with("replaced"), "{start}");
    let r = &stats["restart"];
    assert_eq!(r["restored_fdb"], 0, "{r:#}");
    assert!(
        r["restored_fdb_file"].as_u64().unwrap() >= before.len() as u64,
        "{r:#}"
    );
    let after = fdb_keys(&lab);
    let missing: Vec<_> = before.difference(&after).collect();
    assert!(
        missing.is_empty(),
        "not taken back: {missing:?} of {before:?}"
    );
    // The new maps got them from the switch: XDP forwards both ways.
    fast_both_ways(&lab, "c1", "192.168.10.1", 3);
}

#[test]
fn a_killed_userspace_edge_keeps_its_tunnels() {
    let mut lab = start("usrst", "off", Encap::L2tpUdp);
    let _ = ping_all(&lab, "c1", "192.168.10.1", 2);
    let down = lab
        .restart_edge(libc::SIGKILL, Duration::ZERO)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    println!("userspace edge down {down:?}");
    let stats = lab.edge_stats().unwrap();
    assert_eq!(
        stats["restart"]["restored_sessions"], 2,
        "{:#}",
        stats["restart"]
    );
    // Without the fast path nothing forwards while it is down, but once
    // back every tunnel works without being rebuilt.
    let _ = ping_all(&lab, "c1", "192.168.10.1", 3);
    let _ = ping_all(&lab, "c2", "192.168.20.1", 3);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lab::topology::sessions_up(&lab.edge_stats().unwrap()), 2);
    for ap in ["ap1", "ap2"] {
        assert_eq!(
            tunnels_up(&lab, ap),
            1,
            "{ap} rebuilt its tunnel\n{}",
            lab.logs()
        );
    }

    // SIGQUIT exits for a restart and writes the switch's MACs into the
    // state file (SIGKILL above could not): the next tunterm knows the
    // clients and the trunk's hosts before any frame, where it would
    // flood to find them. Its own host ports' MACs are not carried.
    let before = fdb_keys(&lab);
    assert!(
        before.iter().any(|(_, _, p)| p == "trunk") && before.len() >= 3,
        "the clients and the trunk hosts learned: {before:?}"
    );
    lab.restart_edge(libc::SIGQUIT, Duration::ZERO)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.logs()));
    let after = fdb_keys(&lab);
    let missing: Vec<_> = before.difference(&after).collect();
    assert!(
        missing.is_empty(),
        "not taken back: {missing:?} of {before:?}"
    );
    let r = &lab.edge_stats().unwrap()["restart"];
    assert!(
        r["restored_fdb_file"].as_u64().unwrap() >= before.len() as u64,
        "{r:#}"
    );
    assert_eq!(r["restored_fdb"], 0, "no fast path: {r:#}");
    assert_eq!(r["refused"], serde_json::json!([]), "{r:#}");
}
