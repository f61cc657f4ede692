//! AP admission end to end: the standard lab (two simulated APs with their
//! tunnels up) while `tunterm-apsim --sccrq-flood` sends SCCRQs from
//! thousands of spoofed sources inside `tunterm_ap_subnets`, and then from
//! sources outside them.
//!
//! Needs root. See `tunterm_lab::topology` for the map.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_no_namespaces, bins};
use tunterm_lab::topology::{Lab, Options};
use tunterm_lab::{self as lab, Proc};

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["l2tp"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter l2tp.{name} missing: {stats:#}"))
}

/// (AP name → (our CCID, state)) of every tunnel, and how many are not
/// established.
fn tunnels(stats: &serde_json::Value) -> (BTreeMap<String, (u64, String)>, usize) {
    let mut aps = BTreeMap::new();
    let mut half_open = 0;
    for t in stats["tunnels"].as_array().into_iter().flatten() {
        let state = t["state"].as_str().unwrap_or_default().to_string();
        if state.starts_with("established") {
            let ccid = t["local_ccid"].as_u64().unwrap_or_default();
            aps.insert(
                t["ap"].as_str().unwrap_or_default().to_string(),
                (ccid, state),
            );
        } else {
            half_open += 1;
        }
    }
    (aps, half_open)
}

fn flood(lab: &Lab, name: &str, rate: u32, secs: u32, srcs: &[&str], ports: &str) -> Proc {
    let apsim = bins().apsim.to_string_lossy().into_owned();
    let (rate, secs) = (rate.to_string(), secs.to_string());
    let mut args = vec![
        apsim.as_str(),
        "--edge",
        "10.99.0.1",
        "--sccrq-flood",
        &rate,
        "--flood-seconds",
        &secs,
        "--flood-ports",
        ports,
    ];
    for s in srcs {
        args.extend(["--flood-src", s]);
    }
    lab.aps
        .spawn(&args, &lab.dir.join(format!("{name}.log")))
        .expect("flood starts")
}

/// The flood's JSON report (its last line) once it has exited.
fn flood_report(mut p: Proc) -> serde_json::Value {
    let status = p.wait_exit(Duration::from_secs(30)).expect("flood ends");
    let log = std::fs::read_to_string(p.log()).unwrap_or_default();
    assert!(status.success(), "flood failed: {log}");
    let last = log.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("flood report {last:?}: {e}"))
}

#[test]
fn an_sccrq_flood_does_not_starve_established_tunnels_and_outsiders_are_dropped() {
    // Hello 1 s × 3: an AP whose hellos went unanswered for 3 s would be
    // torn down and show up again with a new tunnel.
    let lab = common::start(Options::new("admit", bins()));
    let before = lab.edge_stats().unwrap();
    let (aps_before, _) = tunnels(&before);
    assert_eq!(aps_before.len(), 2, "{before:#}");
    let rx_hellos_before: u64 = before["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rx_control_pkts"].as_u64().unwrap())
        .sum();

    // 3,000 SCCRQs a second for 12 s (4× hello_interval × hello_retries)
    // from 126 addresses × 100 ports inside 10.99.0.0/24, none of which
    // exists: the edge's SCCRPs go unanswered, as for a spoofed flood.
    const RATE: u32 = 3000;
    const SECS: u32 = 12;
    let t0 = Instant::now();
    let p = flood(
        &lab,
        "flood",
        RATE,
        SECS,
        &["10.99.0.128/25"],
        "20000-20099",
    );
    let mut samples = 0;
    let mut most_half_open = 0;
    let mut pings = (0, 0);
    while t0.elapsed() < Duration::from_secs(u64::from(SECS)) {
        std::thread::sleep(Duration::from_millis(500));
        let s = lab
            .edge_stats()
            .expect("the edge answers stats during the flood");
        let (aps, half_open) = tunnels(&s);
        most_half_open = most_half_open.max(half_open);
        assert_eq!(
            aps,
            aps_before,
            "the APs' tunnels stay up, the same ones, at {:?}\n{}",
            t0.elapsed(),
            lab.logs()
        );
        assert!(half_open <= 1024, "{half_open} half-open");
        // A client behind ap1 reaches the trunk through the flood.
        let r = lab::ping(lab.client("c1"), "192.168.10.1", 1).unwrap();
        pings = (pings.0 + r.sent, pings.1 + r.received);
        samples += 1;
    }
    let report = flood_report(p);
    let sent = report["sent"].as_u64().unwrap();
    assert!(
        sent >= u64::from(RATE * SECS) * 9 / 10,
        "the flood sent {sent}: {report}"
    );

    let s = lab.edge_stats().unwrap();
    let (aps, _) = tunnels(&s);
    assert_eq!(aps, aps_before);
    for ap in ["ap1", "ap2"] {
        let a = &lab.ap_stats(ap).unwrap()["per_ap"][ap];
        assert_eq!(a["tunnels_up"], 1, "{ap} never rebuilt its tunnel: {a}");
        assert_eq!(a["session_up"], true, "{a}");
    }
    let rx_hellos: u64 = s["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"].as_str().unwrap().starts_with("established"))
        .map(|t| t["rx_control_pkts"].as_u64().unwrap())
        .sum();
    // Each AP says hello every second; the edge took (and acknowledged,
    // or the APs would have given up) at least 8 s worth from each.
    assert!(
        rx_hellos >= rx_hellos_before + 2 * 8,
        "{rx_hellos_before} → {rx_hellos}"
    );
    // Traffic crosses too (one echo in ten may be late on a loaded machine).
    assert!(
        pings.0 >= 10 && pings.1 * 10 >= pings.0 * 9,
        "pings during the flood: {pings:?}"
    );
    let received = counter(&s, "sccrq_received");
    let accepted = counter(&s, "sccrq_accepted");
    let rate_limited = counter(&s, "sccrq_rate_limited");
    let full = counter(&s, "sccrq_half_open_full");
    let retransmits = counter(&s, "sccrq_retransmits");
    let refused = counter(&s, "sccrq_refused");
    let peak = counter(&s, "half_open_peak");
    assert_eq!(
        accepted + rate_limited + full + retransmits + refused,
        received,
        "every SCCRQ has one outcome: {:#}",
        s["l2tp"]
    );
    // The kernel may drop some under load, never add any.
    // The two APs' own SCCRQs are in there too.
    assert!(received <= sent + 2 && received >= sent * 9 / 10);
    assert_eq!(peak, 1024, "the half-open cap was reached, not passed");
    assert!(accepted <= 1024 + 2, "{accepted} accepted");
    // 126 addresses at ~24 SCCRQs a second each against 4 a second.
    assert!(
        rate_limited > sent / 2,
        "{rate_limited} rate limited of {sent}"
    );
    assert!(full > 0);
    println!(
        "flood {sent} SCCRQs in {:.1} s from {} sources: half-open peak {peak} (most seen in \
         stats {most_half_open}), accepted {accepted}, rate limited {rate_limited}, \
         half-open full {full}; AP tunnels unchanged over {samples} samples, hellos \
         received {}, pings {}/{}",
        report["seconds"].as_f64().unwrap_or_default(),
        report["sources"],
        rx_hellos - rx_hellos_before,
        pings.1,
        pings.0
    );

    // From outside tunterm_ap_subnets: dropped before anything, counted,
    // no tunnel, no reply.
    let not_admitted_before = counter(&s, "rx_control_not_admitted");
    let received_before = received;
    let p = flood(&lab, "outside", 500, 3, &["10.98.0.0/28"], "30000-30009");
    let report = flood_report(p);
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent >= 1300, "{report}");
    let s = lab.edge_stats().unwrap();
    let not_admitted = counter(&s, "rx_control_not_admitted") - not_admitted_before;
    assert!(
        not_admitted <= sent && not_admitted >= sent * 9 / 10,
        "{not_admitted} of {sent} counted\n{}",
        lab.logs()
    );
    assert_eq!(counter(&s, "sccrq_received"), received_before);
    let outsiders: Vec<&serde_json::Value> = s["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["remote_ip"].as_str().unwrap().starts_with("10.98."))
        .collect();
    assert!(outsiders.is_empty(), "{outsiders:?}");
    println!("outside flood: {sent} SCCRQs sent, {not_admitted} counted not admitted");

    let prefix = lab.prefix().to_string();
    drop(lab);
    assert_no_namespaces(&prefix);
}
