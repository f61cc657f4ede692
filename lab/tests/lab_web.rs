//! The metrics endpoint and the status page (issue 19), end to end: the
//! lab's edge runs with `--metrics 127.0.0.1:9717` (the loopback of its
//! namespace); a headless Chromium (the system's, driven by playwright-core
//! from `lab/web/drive.js`, run inside that namespace) loads the page and
//! finds the lab's tunnels, sees the live plot's data move while a ping
//! runs, downloads a capture with the capture button and closes an AP's
//! tunnel with its disconnect button. The judges are independent: `tunterm
//! stats` for the disconnection, tshark for the pcapng, `promtool check
//! metrics` for the exposition.
//!
//! Needs root, chromium, node with `lab/web/node_modules` (`npm ci` there)
//! and promtool (`.ci/install-deps` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tunterm_lab::topology::{Lab, Options};
use tunterm_lab::{self as lab, tshark_fields};

use common::bins;

/// Mist APs send their MAC as Host Name: `disconnect-aps` selects by it.
const APS: [&str; 2] = ["5c5b35000001", "5c5b35000002"];
const METRICS: &str = "127.0.0.1:9717";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn ccid_of(lab: &Lab, ap: &str) -> Option<u64> {
    let s = lab.edge_stats().ok()?;
    s["tunnels"]
        .as_array()?
        .iter()
        .find(|t| t["ap"] == ap)
        .and_then(|t| t["local_ccid"].as_u64())
}

/// `node drive.js` in the edge's namespace: its JSON report.
fn drive(lab: &Lab, out: &Path) -> serde_json::Value {
    let script = web_dir().join("drive.js");
    assert!(
        web_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in {} (.ci/install-deps does)",
        web_dir().display()
    );
    let log = out.join("drive.log");
    let mut child = lab
        .edge
        .cmd("node")
        .arg(&script)
        .arg(format!("http://{METRICS}/"))
        .arg(APS[0])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting node (is it installed?)");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser run took over 2 minutes\n{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                lab.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        status.success(),
        "drive.js: {status}\n{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        lab.logs()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("drive.js said {stdout:?}: {e}"))
}

#[test]
fn the_status_page_in_chromium_and_the_metrics_in_promtool() {
    lab::require_root().unwrap();
    let lab = common::start(Options {
        daemon_args: vec!["--metrics".into(), METRICS.into()],
        ap_names: APS.map(String::from),
        ..Options::new("web", bins())
    });
    let out = lab.dir.to_path_buf();
    let old_ccid = ccid_of(&lab, APS[0]).expect("the AP's tunnel");

    // Traffic for the plot and the capture: c1 (behind the first AP) pings
    // the upstream host five times a second.
    let mut ping = lab
        .client("c1")
        .spawn(
            &["ping", "-n", "-i", "0.2", "-w", "90", "192.168.10.1"],
            &out.join("ping.log"),
        )
        .unwrap();

    let report = drive(&lab, &out);
    let _ = ping.signal(libc::SIGINT);
    let get = |k: &str| report[k].clone();

    // The page shows the lab's tunnels, and the filter finds one.
    assert_eq!(get("tunnel_aps"), serde_json::json!(APS), "{report:#}");
    assert_eq!(get("filtered_rows"), 1, "{report:#}");
    // The plot's data moved within a few seconds of the page opening, and
    // it was drawn.
    assert!(
        get("plot_ms").as_u64().is_some_and(|ms| ms < 10_000),
        "{report:#}"
    );
    let pps: Vec<f64> = serde_json::from_value(get("pps_in")).unwrap();
    assert!(pps.iter().any(|&p| p >= 2.0), "pps in: {pps:?}");
    let bps: Vec<f64> = serde_json::from_value(get("bps_in")).unwrap();
    if lab.xdp_pass.is_some() {
        // With the fast path on (TUNTERM_LAB_FAST_PATH), XDP forwards the
        // pings: the page's fast-path series carries them, and the
        // userspace bytes only what the slow path still sees.
        let fast: Vec<f64> = serde_json::from_value(get("pps_fast")).unwrap();
        assert!(fast.iter().any(|&p| p >= 2.0), "fast path pps: {fast:?}");
    } else {
        assert!(bps.iter().any(|&b| b >= 100.0), "bytes in: {bps:?}");
    }
    assert!(get("plot_pixels").as_u64().unwrap_or(0) > 20, "{report:#}");
    assert_eq!(get("page_errors"), serde_json::json!([]), "{report:#}");

    // Cross-site attempts refused: no token, a foreign Origin, a foreign
    // Host (DNS rebinding); the token is 128 bits in hex.
    assert_eq!(get("no_token_status"), 403, "{report:#}");
    assert_eq!(get("foreign_origin_status"), 403, "{report:#}");
    assert_eq!(get("foreign_host_status"), 421, "{report:#}");
    assert_eq!(get("token_length"), 32, "{report:#}");
    // The caps: 8 event streams, the ninth refused; 32 connections, the
    // 33rd refused; both counted.
    let caps = get("caps");
    assert_eq!(
        caps["streams"],
        serde_json::json!(vec!["HTTP/1.1 200 OK"; 8]),
        "{caps:#}"
    );
    assert_eq!(
        caps["ninth_stream"], "HTTP/1.1 503 Service Unavailable",
        "{caps:#}"
    );
    assert_eq!(
        caps["connection_33"], "HTTP/1.1 503 Service Unavailable",
        "{caps:#}"
    );
    let after = std::fs::read_to_string(out.join("metrics-after.txt")).unwrap();
    for series in [
        "tunterm_http_event_streams_refused_total 1",
        "tunterm_http_refused_busy_total 1",
        "tunterm_http_refused_token_total 2",
        "tunterm_http_refused_host_total 1",
    ] {
        assert!(after.contains(series), "no {series} in\n{after}");
    }

    // The capture button's download is a pcapng tshark reads: the four
    // ICMP frames asked for.
    let pcap = out.join("capture.pcapng");
    let frames = tshark_fields(&pcap, &[], "icmp", &["frame.number", "vlan.id"]).unwrap();
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert!(frames.iter().all(|f| f[1] == "10"), "{frames:?}");
    assert!(
        get("capture_name")
            .as_str()
            .is_some_and(|n| n.ends_with(".pcapng")),
        "{report:#}"
    );

    // The disconnect button closed that AP's tunnel (the AP comes back on
    // a new one), and only that one.
    assert!(
        get("disconnect_message")
            .as_str()
            .is_some_and(|m| m.contains(APS[0])),
        "{report:#}"
    );
    let stats = lab.edge_stats().unwrap();
    assert_eq!(stats["operations"]["aps_disconnected"], 1, "{stats:#}");
    assert!(
        lab::wait_until(Duration::from_secs(5), || ccid_of(&lab, APS[0])
            != Some(old_ccid)),
        "the AP's tunnel {old_ccid} is still open\n{}",
        lab.logs()
    );

    // The scrape: well-formed for promtool, every section there.
    let metrics = std::fs::read_to_string(out.join("metrics.txt")).unwrap();
    assert_eq!(get("metrics_status"), 200, "{metrics}");
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(out.join("metrics.txt")).unwrap())
        .output()
        .expect("running promtool (Debian package prometheus)");
    assert!(
        promtool.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    for series in [
        "tunterm_io_trunk_rx_total ",
        "tunterm_io_tunnel_rx_bytes_total ",
        "tunterm_l2tp_",
        "tunterm_switch_forwarded_total ",
        "tunterm_fast_path_mode{mode=\"",
        "tunterm_mcast_counters_",
        "tunterm_clients_counters_",
        "tunterm_control_active ",
        "tunterm_http_requests_total ",
        "tunterm_metrics_tunnels_omitted 0",
        &format!(
            "tunterm_tunnel_state{{ccid=\"{old_ccid}\",ap=\"{}\"",
            APS[0]
        ),
        &format!("tunterm_tunnel_control_rx_packets_total{{ccid=\"{old_ccid}\""),
    ] {
        assert!(metrics.contains(series), "no {series} in\n{metrics}");
    }

    // The per-tunnel bound: the same document with 10,000 tunnels.
    let mut big: tunterm::api::Stats = serde_json::from_value(stats).unwrap();
    let one = big.tunnels[0].clone();
    big.tunnels = (0..10_000u32)
        .map(|i| {
            let mut t = one.clone();
            t.local_ccid = 1_000_000 + i;
            t.ap = format!("5c5b35{i:06x}");
            t
        })
        .collect();
    let opts = tunterm::driver::metrics::MetricsOptions::default();
    let text = tunterm::driver::metrics::render(&big, opts, &[]);
    assert!(text.len() < 1_500_000, "{} bytes", text.len());
    assert!(
        text.contains("tunterm_metrics_tunnels_omitted 9000"),
        "{} tunnels shown",
        opts.tunnels
    );
    let all = tunterm::driver::metrics::render(
        &big,
        tunterm::driver::metrics::MetricsOptions { tunnels: 10_000 },
        &[],
    );
    assert!(
        all.len() > 5 * text.len(),
        "{} vs {}",
        all.len(),
        text.len()
    );
    eprintln!(
        "scrape: {} bytes in the lab; 10,000 tunnels: {} bytes (default bound), {} bytes (all)",
        metrics.len(),
        text.len(),
        all.len()
    );
}
