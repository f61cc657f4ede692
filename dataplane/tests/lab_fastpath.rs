//! The XDP fast path in the netns lab: `tunterm run --fast-path xdp-native`
//! (and xdp-generic) forwards established sessions' known unicast in XDP,
//! mirrors sessions and MACs into its maps as they come and go, keeps the
//! switch's aging fed, and refuses clearly what the interface cannot do.
//! (The rest of the lab suite runs with the fast path on when
//! `TUNTERM_LAB_FAST_PATH=xdp-native` is set; `.ci/run` does both.)
//!
//! Needs root (CI runs as root).

use std::time::Duration;

use tunterm::lab::topology::{Binaries, Encap, Lab, Options};
use tunterm::lab::{self, wait_until};

fn bins() -> Binaries {
    Binaries {
        tunterm: env!("CARGO_BIN_EXE_tunterm").into(),
        apsim: env!("CARGO_BIN_EXE_tunterm-apsim").into(),
        lab: env!("CARGO_BIN_EXE_tunterm-lab").into(),
    }
}

fn start(name: &str, fast_path: &str, encap: Encap) -> Lab {
    Lab::start(Options {
        fast_path: fast_path.into(),
        encap,
        ..Options::new(name, bins())
    })
    .unwrap_or_else(|e| panic!("lab {name} did not start: {e:#}"))
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

/// Pings from `client` to `dst`; how many went through XDP each way.
fn fast_both_ways(lab: &Lab, client: &str, dst: &str, n: u32) -> (u64, u64) {
    let _ = ping_all(lab, client, dst, 2);
    std::thread::sleep(Duration::from_millis(200));
    let before = lab.edge_stats().unwrap();
    let after = ping_all(lab, client, dst, n);
    let d = |c: &str| counter(&after, c) - counter(&before, c);
    // A redirected frame is consumed in XDP: userspace never sees it.
    (d("ap_redirect"), d("trunk_redirect"))
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
    let (up, down) = fast_both_ways(&lab, "c1", "192.168.10.1", 10);
    assert!(
        up >= 10 && down >= 10,
        "AP→trunk {up}, trunk→AP {down} in XDP"
    );
    let stats = lab.edge_stats().unwrap();
    let fp = &stats["fast_path"];
    assert_eq!(fp["templates"], 2, "{fp:#}");
    assert!(fp["fdb"].as_u64().unwrap() >= 2);
    assert_eq!(fp["map_errors"], 0);

    // Tagged VLAN 20 behind ap2 too.
    let (up, down) = fast_both_ways(&lab, "c2", "192.168.20.1", 5);
    assert!(
        up >= 5 && down >= 5,
        "AP→trunk {up}, trunk→AP {down} in XDP"
    );

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
    let (up, down) = fast_both_ways(&lab, "c1", "192.168.10.1", 3);
    assert!(up >= 3 && down >= 3);
}

#[test]
fn mgre_peers_forward_in_xdp() {
    let lab = start("fpgre", "xdp-native", Encap::Gre);
    // mGRE peers appear with their first packet.
    let _ = ping_all(&lab, "c1", "192.168.10.1", 2);
    let _ = ping_all(&lab, "c2", "192.168.20.1", 2);
    let (up, down) = fast_both_ways(&lab, "c1", "192.168.10.1", 10);
    assert!(
        up >= 10 && down >= 10,
        "AP→trunk {up}, trunk→AP {down} in XDP"
    );
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
