//! `xdpcost` runs end to end on small tables: every program forwards every
//! frame of the table (it fails otherwise), and the report has a figure
//! for each program on each table. No cost is asserted: that is what the
//! tool reports.
//!
//! Needs root (loading XDP programs); sends nothing.

use std::process::Command;

#[test]
fn xdpcost_smoke() {
    // A smoke test that did not run must not pass.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "xdpcost needs root (euid is {euid}): it loads XDP programs and runs them \
         with BPF_PROG_TEST_RUN; run the tests as root"
    );
    let json = std::env::temp_dir().join(format!("xdpcost-smoke-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_xdpcost"))
        .args(["--tables", "1x1,7x20", "--passes", "2", "--frame", "128"])
        .args(["--order", "round-robin,uniform,zipf"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running xdpcost");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "xdpcost failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report"))
            .expect("JSON");
    let _ = std::fs::remove_file(&json);
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 18, "{stdout}");
    for (sessions, macs) in [(1, 1), (7, 20)] {
        for (program, order) in ["bench_redirect", "xdp_ap_rx", "xdp_trunk_rx"]
            .into_iter()
            .flat_map(|p| ["round-robin", "uniform", "zipf"].map(|o| (p, o)))
        {
            let row = rows
                .iter()
                .find(|r| {
                    r["program"] == program
                        && r["sessions"] == sessions
                        && r["macs"] == macs
                        && r["order"] == order
                })
                .unwrap_or_else(|| {
                    panic!("no row for {program} on {sessions}x{macs} in {order} order: {stdout}")
                });
            assert!(row["ns"].as_f64().is_some_and(|v| v > 0.0), "{row}");
            assert_eq!(row["ns_passes"].as_array().map(Vec::len), Some(2), "{row}");
            assert_eq!(
                row["extra_ns"].is_null(),
                program == "bench_redirect",
                "only tunterm's programs are compared with the baseline: {row}"
            );
        }
    }
    assert!(stdout.contains("xdp_trunk_rx"), "{stdout}");
}
