//! The multicast scale bench runs end to end with tiny settings (20 APs):
//! with snooping on, one AP (the member's) gets the stream and the edge
//! sends about one tunnel packet per frame; with it off, every AP gets it.
//! The ARP scenario keeps every tunnel up and times `tunterm stats`. No
//! speed is asserted.
//!
//! Needs root and the `tunterm` binaries (`cargo build --release -p tunterm
//! -p tunterm-lab`).

use std::process::Command;

fn bench(args: &[&str], name: &str) -> (serde_json::Value, String) {
    // A smoke test that did not run must not pass.
    if let Err(e) = tunterm_lab::require_root() {
        panic!("mcastbench_smoke: {e}");
    }
    let json = std::env::temp_dir().join(format!("mcastbench-{name}-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_mcastbench"))
        .args(args)
        .args(["--aps", "20", "--bring-up", "60", "--json"])
        .arg(&json)
        .output()
        .expect("running mcastbench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mcastbench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON")).expect("JSON");
    let _ = std::fs::remove_file(&json);
    (report, stdout)
}

fn row<'a>(report: &'a serde_json::Value, mode: &str, out: &str) -> &'a serde_json::Value {
    report["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["mode"] == mode))
        .unwrap_or_else(|| panic!("no row {mode} in\n{out}"))
}

#[test]
fn stream_reaches_the_member_only_with_snooping() {
    let (report, out) = bench(&["stream", "--pps", "200", "--seconds", "2"], "stream");
    let on = row(&report, "on", &out);
    let off = row(&report, "off", &out);
    for r in [on, off] {
        assert_eq!(r["sessions_up"], 20, "{out}");
    }
    let sent = on["sent"].as_u64().unwrap();
    assert!(sent >= 200, "{out}");
    assert_eq!(on["aps_with_stream"], 1, "{out}");
    assert_eq!(on["mdb_member_ports"], 1, "{out}");
    assert_eq!(off["mdb_member_ports"], 0, "{out}");
    let copies = on["copies_received"].as_u64().unwrap();
    assert!(copies * 10 >= sent * 9 && copies <= sent, "{out}");
    assert!(
        on["edge_tunnel_tx_per_frame"].as_f64().unwrap() < 1.5,
        "{out}"
    );
    assert_eq!(off["aps_with_stream"], 20, "{out}");
    assert!(
        off["edge_tunnel_tx_per_frame"].as_f64().unwrap() > 15.0,
        "{out}"
    );
    assert!(out.contains("tx/frame"), "{out}");
}

#[test]
fn garp_keeps_the_tunnels_and_times_stats() {
    let (report, out) = bench(
        &[
            "garp",
            "--synthetic-clients",
            "2",
            "--synthetic-interval-ms",
            "1000",
            "--seconds",
            "3",
            "--stats-calls",
            "3",
        ],
        "garp",
    );
    for mode in ["on", "off"] {
        let r = row(&report, mode, &out);
        assert_eq!(r["sessions_up_after"], 20, "{out}");
        assert_eq!(r["failovers"], 0, "{out}");
        assert!(r["stats_ms_median"].as_f64().is_some(), "{out}");
        assert_eq!(r["stats_failed"], 0, "{out}");
        // 40 clients learned (and the edge's own addresses).
        assert!(r["fdb_entries"].as_u64().unwrap() >= 40, "{out}");
    }
    assert!(out.contains("stats med"), "{out}");
}
