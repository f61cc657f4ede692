//! Overload must not kill control (issue 18), end to end: the standard lab
//! plus 200 simulated APs (hello 1 s × 3, L2TPv3/UDP), then 20 s of a data
//! flood at the edge's UDP port 1701 — L2TP data messages for unknown
//! session ids, the cheapest kind for the edge to refuse — from more
//! `tunterm-apsim --junk` senders than the edge can read (at least two,
//! one per core: on a 2-core machine they also take the edge's CPU away).
//! Before control and data had their own sockets, the kernel shed the
//! single socket's input — AP hellos and their acks with the junk — and
//! tunnels timed out (lab_flood's notes: ~15% shed at ~546,000 packets/s).
//! Now the data socket's buffer overflows and its drops are counted
//! (`io.tunnel_rx_shed_data` > 0: the flood was big enough to matter),
//! while the control socket sheds nothing (`io.tunnel_rx_shed_control`
//! stays 0), no tunnel is lost, no AP fails over, the edge keeps sending
//! its hellos, and `stats` answers promptly.
//!
//! Needs root. See `tunterm_lab::topology` for the map.

mod common;

use std::time::{Duration, Instant};

use common::bins;
use common::flood::{cpu, established, junk, load, report, u};
use tunterm_lab::topology::{Lab, Options, query_apsim, sessions_up};
use tunterm_lab::{self as lab, Proc};

/// APs of the extra simulator.
const MANY: u64 = 200;
/// Seconds of the flood.
const SECS: u64 = 20;
/// Longest a `stats` may take during the flood: the requirement is 1 s,
/// the margin is for a machine shared with builds (as lab_flood's).
const STATS_LIMIT: Duration = Duration::from_secs(2);

#[test]
fn a_data_flood_is_shed_at_the_data_socket_and_control_loses_nothing() {
    let mut opts = Options::new("ovl", bins());
    // The 200 APs share one address: no per-source limit on their SCCRQs.
    opts.daemon_args = vec!["--sccrq-burst".into(), "0".into()];
    let lab = Lab::start(opts).unwrap_or_else(|e| panic!("lab did not start: {e:#}"));
    lab.aps
        .run(&["ip", "addr", "add", "10.99.0.4/24", "dev", "e0"])
        .unwrap();
    let many_sock = lab.dir.join("many.sock");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let _many = lab
        .aps
        .spawn(
            &[
                &s(&bins().apsim),
                "--edge",
                "10.99.0.1",
                "--count",
                &MANY.to_string(),
                "--local-ip",
                "10.99.0.4",
                "--hello-interval",
                "1",
                "--hello-retries",
                "3",
                "--control-socket",
                &s(&many_sock),
                "--events",
            ],
            &lab.dir.join("many.log"),
        )
        .unwrap();
    let total = MANY as usize + 2;
    let up = lab::wait_until(Duration::from_secs(60), || {
        lab.edge_stats().is_ok_and(|st| sessions_up(&st) == total)
    });
    assert!(up, "{total} sessions did not come up\n{}", lab.logs());
    let tunnels = established(&lab.edge_stats().unwrap());
    assert_eq!(tunnels.len(), total);

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let senders = cores.max(2);
    let edge_mac = lab.edge.mac("ap0").unwrap().to_string();
    let before = lab.edge_stats().unwrap();
    let cpu0 = cpu(lab.tunterm.pid());
    let t0 = Instant::now();
    let junk: Vec<Proc> = (0..senders)
        .map(|i| junk(&lab, "unknown-session", i, SECS, &edge_mac))
        .collect();
    let (mut worst, mut samples) = (Duration::ZERO, 0u32);
    while t0.elapsed() < Duration::from_secs(SECS) {
        let q = Instant::now();
        let st = lab.edge_stats();
        let took = q.elapsed();
        let st = st.unwrap_or_else(|e| panic!("stats failed after {took:?}: {e:#}\n{}", lab.logs()));
        worst = worst.max(took);
        samples += 1;
        assert_eq!(
            established(&st),
            tunnels,
            "the same tunnels stay up, at {:?}\n{}",
            t0.elapsed(),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let reports: Vec<serde_json::Value> = junk.into_iter().map(report).collect();
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu(lab.tunterm.pid());
    let sent: u64 = reports.iter().map(|r| r["sent"].as_u64().unwrap()).sum();
    let after = lab.edge_stats().unwrap();
    let d = |path: &[&str]| u(&after, path) - u(&before, path);
    let read = d(&["io", "tunnel_rx"]);
    let (shed_data, shed_control) = (
        d(&["io", "tunnel_rx_shed_data"]),
        d(&["io", "tunnel_rx_shed_control"]),
    );
    let hellos = d(&["l2tp", "hellos_sent"]);
    let line = format!(
        "{senders} senders, {sent} data packets in {secs:.1} s ({:.0}/s); edge read {read}, \
         shed {shed_data} data and {shed_control} control; hellos sent {hellos} ({:.0}/s for \
         {total} tunnels); stats worst {worst:?} over {samples}; tunterm ran {:.1} s and waited \
         {:.1} s for a CPU; load {}",
        sent as f64 / secs,
        hellos as f64 / secs,
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        load()
    );
    println!("{line}");
    assert!(
        shed_data > 0,
        "the flood did not overload the edge: this test proves nothing\n{line}"
    );
    assert_eq!(
        shed_control, 0,
        "control shed in a data flood\n{line}\n{}",
        lab.logs()
    );
    assert_eq!(d(&["io", "tunnel_rx_shed"]), shed_data + shed_control);
    assert!(worst <= STATS_LIMIT, "{line}\n{}", lab.logs());
    // Every tunnel kept saying hello: a tunnel says hello only when its
    // channel is idle, a little under one a second each (lab_flood).
    assert!(hellos as f64 >= 0.6 * total as f64 * secs, "{line}");

    let many = query_apsim(&many_sock).unwrap();
    let (mut failovers, mut rebuilt) = (0, 0);
    for (ap, a) in many["per_ap"].as_object().unwrap() {
        failovers += a["failovers"].as_u64().unwrap();
        if a["tunnels_up"] != 1 {
            rebuilt += 1;
            eprintln!("{ap}: {a}");
        }
    }
    for ap in ["ap1", "ap2"] {
        let a = &lab.ap_stats(ap).unwrap()["per_ap"][ap];
        failovers += a["failovers"].as_u64().unwrap();
        rebuilt += u64::from(a["tunnels_up"] != 1);
    }
    assert_eq!(
        (failovers, rebuilt),
        (0, 0),
        "no AP failed over or rebuilt its tunnel\n{line}"
    );
    assert_eq!(established(&lab.edge_stats().unwrap()), tunnels);
}
