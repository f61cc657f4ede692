//! Event-loop fairness end to end (issue 13, 5d): the standard lab plus 200
//! simulated APs (hello 1 s × 3, L2TPv3/UDP), then 20 s of each kind of
//! junk to the edge's UDP port 1701 — data for unknown session ids, random
//! bytes, HELLOs for unknown tunnel ids — from one `tunterm-apsim --junk`
//! sender per core the lab can spare: every core but one, which the edge
//! needs (at least one sender). On a 2-core machine that is one sender
//! (~330,000 packets/s here); two senders there also take the edge's own
//! CPU away (it waited ~8 s of 20 for a CPU), and at ~546,000 packets/s the
//! kernel then shed ~15% of the L2TP socket's input, AP hellos and their
//! acks included, so a few tunnels could time out, until control and data
//! got sockets of their own (issue 18, lab_overload): "unknown-session"
//! junk now fills the data socket only, while "unknown-tunnel" junk (HELLOs:
//! control) still shares the control socket with the APs' hellos. Through
//! each flood: no tunnel is lost (the edge keeps
//! the same ones, no AP fails over), the edge keeps sending its hellos, a
//! ping from the trunk to a client behind an AP gets answers, `stats`
//! answers promptly, and the junk is read and counted or shed and counted.
//!
//! Needs root. See `tunterm_lab::topology` for the map.

mod common;

use std::time::{Duration, Instant};

use common::flood::{ManyAps, cpu, established, junk, punt_dropped, report, u};
use tunterm_lab::Proc;

/// Seconds of each flood.
const SECS: u64 = 20;
/// Longest a `stats` may take during a flood. The requirement is 1 s:
/// measured worst 41–420 ms on two cores shared with builds (load 10,
/// tunterm on a CPU 3 s of every 20); the margin is for a busier machine.
/// Before the budgets, stats went unanswered for the whole flood.
const STATS_LIMIT: Duration = Duration::from_secs(2);

#[test]
fn junk_from_every_core_loses_no_tunnel_and_stats_and_hellos_stay_on_time() {
    let many = ManyAps::start("flood");
    let (lab, tunnels) = (&many.lab, many.tunnels.clone());
    let total = tunnels.len();

    // The edge's hello rate when nothing disturbs it (a tunnel says hello
    // only when its channel is idle, so it is a little under one a second
    // each).
    let quiet = Duration::from_secs(5);
    // And how long a stats takes on this machine without a flood.
    let h0 = u(&lab.edge_stats().unwrap(), &["l2tp", "hellos_sent"]);
    let (t0, mut quiet_worst) = (Instant::now(), Duration::ZERO);
    while t0.elapsed() < quiet {
        let q = Instant::now();
        lab.edge_stats().unwrap();
        quiet_worst = quiet_worst.max(q.elapsed());
        std::thread::sleep(Duration::from_millis(250));
    }
    let h1 = u(&lab.edge_stats().unwrap(), &["l2tp", "hellos_sent"]);
    let quiet_rate = (h1 - h0) as f64 / t0.elapsed().as_secs_f64();
    let cpu_q = cpu(lab.tunterm.pid());
    println!(
        "quiet: hellos sent {quiet_rate:.0}/s for {total} tunnels; stats worst {quiet_worst:?}; \
         load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let _ = cpu_q;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // Every core but the edge's one (see the module comment).
    let cores = cores.saturating_sub(1).max(1);
    let edge_mac = lab.edge.mac("ap0").unwrap().to_string();
    let mut lines = Vec::new();
    for kind in ["unknown-session", "random", "unknown-tunnel"] {
        let before = lab.edge_stats().unwrap();
        let cpu0 = cpu(lab.tunterm.pid());
        let t0 = Instant::now();
        let senders: Vec<Proc> = (0..cores)
            .map(|i| junk(lab, kind, i, SECS, &edge_mac))
            .collect();
        let (mut worst, mut samples, mut slow) = (Duration::ZERO, 0u32, 0u32);
        let pings = std::thread::scope(|sc| {
            // Trunk → client behind ap1, five a second through the flood.
            let pinger =
                sc.spawn(|| tunterm_lab::ping(&lab.up, "192.168.10.11", (SECS * 5 - 10) as u32));
            while t0.elapsed() < Duration::from_secs(SECS) {
                let q = Instant::now();
                let st = lab.edge_stats();
                let took = q.elapsed();
                let st = st.unwrap_or_else(|e| {
                    panic!("{kind}: stats failed after {took:?}: {e:#}\n{}", lab.logs())
                });
                worst = worst.max(took);
                samples += 1;
                slow += u32::from(took > Duration::from_secs(1));
                assert_eq!(
                    established(&st),
                    tunnels,
                    "{kind}: the same tunnels stay up, at {:?}\n{}",
                    t0.elapsed(),
                    lab.logs()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            pinger.join().unwrap().unwrap()
        });
        let reports: Vec<serde_json::Value> = senders.into_iter().map(report).collect();
        let secs = t0.elapsed().as_secs_f64();
        let cpu1 = cpu(lab.tunterm.pid());
        let (ran, waited) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
        let sent: u64 = reports.iter().map(|r| r["sent"].as_u64().unwrap()).sum();
        let after = lab.edge_stats().unwrap();
        let d = |path: &[&str]| u(&after, path) - u(&before, path);
        let hellos = d(&["l2tp", "hellos_sent"]);
        let (read, shed) = (d(&["io", "tunnel_rx"]), d(&["io", "tunnel_rx_shed"]));
        let shed_control = d(&["io", "tunnel_rx_shed_control"]);
        // With forwarding workers (`TUNTERM_LAB_WORKERS`), junk a worker
        // read and handed to the event loop may be dropped at the full
        // hand-over queue instead, counted there: read, not refused.
        let punt_dropped = punt_dropped(&after) - punt_dropped(&before);
        // Where the edge counted the junk it read as refused.
        let refused: u64 = [
            "rx_data_unknown_session",
            "rx_data_malformed",
            "rx_data_bad_source",
            "rx_data_not_established",
            "rx_control_unknown_ccid",
            "rx_control_malformed",
            "rx_control_bad_source",
        ]
        .iter()
        .map(|c| d(&["l2tp", c]))
        .sum();
        let line = format!(
            "{kind}: {cores} senders, {sent} packets in {secs:.1} s ({:.0}/s); edge read {read} \
             ({:.0}/s), refused {refused}, shed {shed} (control {shed_control}), dropped at \
             the workers' hand-over {punt_dropped}; hellos sent {hellos} ({:.0}/s for {total} tunnels, quiet \
             {quiet_rate:.0}/s); stats worst {worst:?} over {samples} (over 1 s: {slow}); pings \
             {}/{}; tunterm ran {ran:.1} s and waited {waited:.1} s for a CPU; load {}",
            sent as f64 / secs,
            read as f64 / secs,
            hellos as f64 / secs,
            pings.received,
            pings.sent,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        println!("{line}");
        lines.push(line.clone());
        assert!(worst <= STATS_LIMIT, "{line}\n{}", lab.logs());
        // Every tunnel kept saying hello, near the quiet rate (measured:
        // 90–100% of it; before the budgets, 45% at these rates and 3% at
        // the issue's).
        assert!(hellos as f64 >= quiet_rate * secs * 0.6, "{line}");
        // The replies share the flooded socket with the junk: what the
        // kernel sheds of it takes some of them (measured: 85–100% answered).
        assert!(pings.received * 2 >= pings.sent, "{line}");
        // What the edge read plus what the kernel shed is what was sent
        // (plus the APs' own packets; the kernel may lose some before the
        // socket, never add any).
        let legit = 10 * total as u64 * SECS;
        assert!(
            read + shed <= sent + legit && read + shed >= sent * 9 / 10,
            "{line}"
        );
        // And what it read of the junk it counted as refused, each packet
        // once.
        assert!(
            refused <= sent
                && refused + punt_dropped + legit >= read
                && refused + punt_dropped + shed >= sent * 9 / 10,
            "{line}"
        );
    }
    let (failovers, rebuilt) = many.failovers_and_rebuilt();
    assert_eq!(
        (failovers, rebuilt),
        (0, 0),
        "no AP failed over or rebuilt its tunnel\n{}",
        lines.join("\n")
    );
    assert_eq!(established(&lab.edge_stats().unwrap()), tunnels);
}
