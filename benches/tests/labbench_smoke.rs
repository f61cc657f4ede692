//! The lab benchmark runs end to end with tiny settings (10 sessions, 100
//! MACs, 64-byte frames, 1-second windows): every case delivers frames,
//! counted at the receiver, and the table has every row. No rate is
//! asserted: speed is what the benchmark itself reports.
//!
//! Needs root, trafgen and the `tunterm` binaries (built by
//! `cargo test --workspace`, or `cargo build -p tunterm`).

use std::process::Command;

#[test]
fn labbench_smoke() {
    // A smoke test that did not run must not pass.
    if let Err(e) = tunterm_lab::require_root() {
        panic!("labbench_smoke: {e}");
    }
    let dir = std::env::temp_dir().join(format!("labbench-smoke-{}", std::process::id()));
    let json = dir.join("table.json");
    let out = Command::new(env!("CARGO_BIN_EXE_labbench"))
        .args([
            "--sessions",
            "10",
            "--macs",
            "100",
            "--frames",
            "64",
            "--seconds",
            "1",
            "--warmup",
            "0.5",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--work-dir")
        .arg(dir.join("work"))
        .output()
        .expect("running labbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "labbench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON table"))
            .expect("JSON");
    let rows = report["rows"].as_array().expect("rows");
    let cases = ["raw", "vxlan", "tunterm-xdp", "tunterm-userspace"];
    for case in cases {
        for dir in ["ap-to-trunk", "trunk-to-ap"] {
            let row = rows
                .iter()
                .find(|r| r["case"] == case && r["direction"] == dir && r["frame_len"] == 64)
                .unwrap_or_else(|| panic!("no row {case} {dir} in\n{stdout}"));
            // A row without a rate says why (a generator that stopped);
            // frames still arrived through every case.
            if row["pps"].is_null() {
                assert!(
                    row["note"].is_string(),
                    "{case} {dir}: no rate, no reason\n{stdout}"
                );
            }
            let received = row["received"].as_u64().unwrap_or(0);
            assert!(
                received > 0,
                "{case} {dir}: nothing arrived at the receiver\n{stdout}\n{stderr}"
            );
        }
    }
    // Case 5 (`--workers`) is not among the default cases: listed, and
    // says why it has no rate.
    for dir in ["ap-to-trunk", "trunk-to-ap"] {
        let row = rows
            .iter()
            .find(|r| r["case"] == "tunterm-workers" && r["direction"] == dir)
            .unwrap_or_else(|| panic!("no row for case 5 {dir} in\n{stdout}"));
        assert!(row["pps"].is_null(), "{row}");
        assert_eq!(row["note"], "skipped (--cases)", "{row}");
    }
    assert_eq!(rows.len(), (cases.len() + 1) * 2, "{stdout}");
    // 3/1, 3/2, 4/2, 5/2, 5/4 each way; those of case 5 without a value.
    let ratios = report["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 10, "{stdout}");
    assert_eq!(
        ratios.iter().filter(|r| r["value"].is_null()).count(),
        4,
        "{stdout}"
    );
    for line in [
        "1 raw",
        "2 kernel VXLAN",
        "3 tunterm, XDP",
        "4 tunterm, userspace",
    ] {
        assert!(stdout.contains(line), "table lacks {line:?}:\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
