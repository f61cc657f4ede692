//! Packet capture end to end (`tunterm capture`): pcapng on stdout read by
//! tshark at the trunk, an AP's point and the AP wire; TZSP to a UDP port;
//! the `drop` point with its reasons; filters and limits; a reader that
//! stops reading. tshark is the judge.
//!
//! Needs root. See `tunterm_lab::topology` for the map.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tunterm_lab::topology::{Lab, Options};
use tunterm_lab::{self as lab, tshark_fields};

use common::{bins, ping_ok};

fn start(name: &str, capture: bool) -> Lab {
    common::start(Options {
        capture,
        ..Options::new(name, bins())
    })
}

/// `tunterm capture ARGS` against the lab's edge (from the root namespace:
/// the control socket is a path), stdout into `out`, stderr piped.
fn capture(lab: &Lab, args: &[&str], out: &Path) -> Child {
    Command::new(&bins().tunterm)
        .arg("capture")
        .arg("--control-socket")
        .arg(lab.edge_socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the edge runs `n` captures (a capture started before the
/// traffic that it must see).
fn wait_captures(lab: &Lab, n: usize) {
    let ok = lab::wait_until(Duration::from_secs(10), || {
        lab.edge_stats()
            .ok()
            .and_then(|s| s["captures"].as_array().map(|a| a.len() == n))
            .unwrap_or(false)
    });
    assert!(ok, "the edge does not run {n} captures: {}", lab.logs());
}

/// `tunterm capture ARGS` (stdout into `out`) while `traffic` runs, once
/// the edge captures; it must end by itself, with status 0.
fn capture_during(lab: &Lab, args: &[&str], out: &Path, traffic: impl FnOnce()) {
    let mut cap = capture(lab, args, out);
    lab::wait_until(Duration::from_secs(10), || {
        let running = lab
            .edge_stats()
            .ok()
            .and_then(|s| s["captures"].as_array().map(|a| a.len()));
        running == Some(1) || cap.try_wait().unwrap().is_some()
    });
    if cap.try_wait().unwrap().is_some() {
        // Over already (a limit reached), or refused.
        let (status, err) = finish(cap, Duration::from_secs(1));
        assert!(
            status.success(),
            "tunterm capture {args:?}: {status}: {err}"
        );
        traffic();
        return;
    }
    traffic();
    let (status, err) = finish(cap, Duration::from_secs(15));
    assert!(
        status.success(),
        "tunterm capture {args:?}: {status}: {err}"
    );
}

/// Wait for `child` to end (at most `limit`): its exit status and stderr.
fn finish(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("tunterm capture still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No malformed frame nor dissector error in `pcap`.
fn assert_clean(pcap: &Path, extra: &[&str]) {
    let bad = tshark_fields(
        pcap,
        extra,
        "_ws.malformed || _ws.expert.severity == error",
        &["frame.number", "frame.interface_name"],
    )
    .unwrap();
    assert!(bad.is_empty(), "malformed frames: {bad:?}");
}

/// Decode L2TPv3 data without the handshake: tunterm's 8-byte cookies,
/// Ethernet pseudowires.
const L2TP_DATA: [&str; 4] = [
    "-o",
    "l2tp.cookie_size:cookie8",
    "-d",
    "l2tp.pw_type==0,eth",
];

#[test]
fn pcapng_on_stdout_at_the_trunk_an_ap_and_the_wire_with_filters_and_limits() {
    // 8-byte cookies both ways: tshark decodes the data without the
    // handshake with one cookie size.
    let lab = common::start(Options {
        ap_args: vec!["--cookie-len".into(), "8".into()],
        ..Options::new("cappcap", bins())
    });
    let dir = lab.dir.to_path_buf();
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");

    // The points of the running edge.
    let list = Command::new(&bins().tunterm)
        .args(["capture", "--list", "--control-socket"])
        .arg(lab.edge_socket())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    for p in [
        "trunk", "wire", "drop", "ap:ap1", "ap:ap2", "vlan:10", "vlan:20",
    ] {
        assert!(
            list.lines().any(|l| l.split_whitespace().next() == Some(p)),
            "--list has no {p}:\n{list}"
        );
    }

    // Three points, no count, 4 s: c1 pings upstream meanwhile.
    let out = dir.join("three.pcapng");
    capture_during(
        &lab,
        &[
            "-i",
            "trunk",
            "-i",
            "ap:ap1",
            "-i",
            "wire",
            "-c",
            "0",
            "--duration",
            "4",
            "-w",
            "-",
        ],
        &out,
        || {
            ping_ok(&lab, lab.client("c1"), "192.168.10.1");
        },
    );
    assert_clean(&out, &L2TP_DATA);
    let names = tshark_fields(&out, &[], "", &["frame.interface_name"]).unwrap();
    assert!(!names.is_empty(), "no frame in the capture");
    // At the trunk: tagged 10; at ap:ap1: untagged (ap1's pseudowire is
    // Ethernet), both ways.
    let icmp = tshark_fields(
        &out,
        &L2TP_DATA,
        "icmp && !l2tp",
        &[
            "frame.interface_name",
            "vlan.id",
            "ip.src",
            "ip.dst",
            "icmp.type",
        ],
    )
    .unwrap();
    let seen = |point: &str, vid: &str, src: &str, dst: &str, ty: &str| {
        icmp.iter().any(|r| r == &[point, vid, src, dst, ty])
    };
    for (point, vid) in [("trunk", "10"), ("ap:ap1", "")] {
        assert!(
            seen(point, vid, "192.168.10.11", "192.168.10.1", "8"),
            "no echo request at {point}: {icmp:?}"
        );
        assert!(
            seen(point, vid, "192.168.10.1", "192.168.10.11", "0"),
            "no echo reply at {point}: {icmp:?}"
        );
    }
    // At the wire: the outer L2TPv3 (UDP 1701, our session, 8-byte cookie)
    // around the same ICMP, both ways.
    let wire = tshark_fields(
        &out,
        &[&L2TP_DATA[..], &["-E", "occurrence=l"]].concat(),
        "frame.interface_name == \"wire\" && l2tp && icmp",
        &["l2tp.sid", "l2tp.cookie", "ip.src", "icmp.type"],
    )
    .unwrap();
    for (src, ty) in [("192.168.10.11", "8"), ("192.168.10.1", "0")] {
        assert!(
            wire.iter()
                .any(|r| r[2] == src && r[3] == ty && r[1].len() == 16),
            "no L2TPv3 with an 8-byte cookie around ICMP from {src} at the wire: {wire:?}"
        );
    }

    // A filter, and a count: exactly 5 frames, each ICMP on VLAN 10.
    let out = dir.join("filtered.pcapng");
    capture_during(
        &lab,
        &[
            "-i",
            "trunk",
            "-f",
            "vlan 10 and icmp",
            "-c",
            "5",
            "-w",
            "-",
        ],
        &out,
        || {
            let r = lab::ping(lab.client("c1"), "192.168.10.1", 6).unwrap();
            assert_eq!(r.received, 6, "{r:?}");
        },
    );
    let rows = tshark_fields(&out, &[], "", &["vlan.id", "icmp.type"]).unwrap();
    assert_eq!(rows.len(), 5, "-c 5: {rows:?}");
    assert!(
        rows.iter().all(|r| r[0] == "10" && !r[1].is_empty()),
        "not all ICMP on VLAN 10: {rows:?}"
    );

    // A duration: 2 s.
    let t = Instant::now();
    let out = dir.join("two-seconds.pcapng");
    let cap = capture(&lab, &["-i", "trunk", "--duration", "2", "-w", "-"], &out);
    let (status, err) = finish(cap, Duration::from_secs(10));
    let took = t.elapsed();
    assert!(status.success(), "capture --duration 2: {status}: {err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "--duration 2 took {took:?}"
    );
    assert_clean(&out, &[]);

    // Clear errors: libpcap's, the valid points', nothing started.
    let bad = |args: &[&str]| {
        let out = dir.join("refused.pcapng");
        let (status, err) = finish(capture(&lab, args, &out), Duration::from_secs(10));
        assert!(!status.success(), "{args:?} succeeded");
        err
    };
    let err = bad(&["-i", "trunk", "-f", "vlan 10 and icmpp", "-w", "-"]);
    assert!(err.contains("filter \"vlan 10 and icmpp\""), "{err}");
    assert!(err.contains("syntax error"), "not libpcap's message: {err}");
    let err = bad(&["-i", "port9", "-w", "-"]);
    assert!(err.contains("unknown point \"port9\""), "{err}");
    assert!(err.contains("trunk") && err.contains("ap:ap1"), "{err}");
    let err = bad(&["-i", "trunk", "-s", "20", "-w", "-"]);
    assert!(err.contains("64 to 2048"), "{err}");
    let err = bad(&["-i", "trunk", "--tzsp", "no-such-host.invalid"]);
    assert!(err.contains("does not resolve"), "{err}");
    assert_eq!(lab.edge_stats().unwrap()["captures"], serde_json::json!([]));
}

#[test]
fn tzsp_to_a_udp_port_and_the_drop_point_with_reasons() {
    let mut lab = start("captzsp", true);
    let dir = lab.dir.to_path_buf();
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");

    // TZSP to ap1's address, where a socket of the test listens; the AP
    // link's own capture (tcpdump) shows it as the network carried it.
    let rx = lab
        .aps
        .enter(|| UdpSocket::bind("10.99.0.2:37008"))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let out = dir.join("tzsp.json");
    capture_during(
        &lab,
        // The trunk's frames are tagged: libpcap's `icmp` alone looks
        // for an untagged one.
        &[
            "-i",
            "trunk",
            "-f",
            "vlan and icmp",
            "-c",
            "6",
            "--tzsp",
            "10.99.0.2",
        ],
        &out,
        || {
            ping_ok(&lab, lab.client("c1"), "192.168.10.1");
        },
    );
    let summary: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(summary["ended_by"], "num_packets", "{summary}");
    assert_eq!(summary["written"], 6, "{summary}");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got.len(), 6, "TZSP datagrams received");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    for d in &got {
        let t = tunterm_core::wire::tzsp::parse(d).expect("a TZSP datagram");
        assert_eq!((t.version, t.kind, t.encap), (1, 0, 1));
        assert_eq!(t.original_len, Some(t.frame.len() as u16), "uncut frames");
        let (s, ns) = t.timestamp.unwrap();
        let at = Duration::new(u64::from(s), ns);
        assert!(
            now.saturating_sub(at) < Duration::from_secs(5) && at <= now,
            "timestamp {at:?} vs now {now:?}"
        );
    }
    let pcap = lab.ap_capture.take().unwrap().stop().unwrap();
    let rows = tshark_fields(
        &pcap,
        &[],
        "tzsp",
        &[
            "tzsp.encap",
            "tzsp.original_length",
            "frame.len",
            "vlan.id",
            "icmp.type",
            "frame.time_epoch",
        ],
    )
    .unwrap();
    assert_eq!(rows.len(), 6, "tshark's TZSP: {rows:?}");
    for r in &rows {
        // The frame inside: its length is the UDP datagram's less the
        // 42 bytes of Ethernet/IP/UDP and the 19 of TZSP.
        let inner = r[2].parse::<usize>().unwrap() - 42 - 19;
        assert_eq!(r[1], inner.to_string(), "original length: {r:?}");
        assert_eq!((r[0].as_str(), r[3].as_str()), ("1", "10"), "{r:?}");
        assert!(r[4] == "8" || r[4] == "0", "ICMP inside: {r:?}");
    }
    // The time in TZSP is within 1 s of when tcpdump saw it.
    for (d, r) in got.iter().zip(&rows) {
        let (s, ns) = tunterm_core::wire::tzsp::parse(d)
            .unwrap()
            .timestamp
            .unwrap();
        let seen: f64 = r[5].parse().unwrap();
        let stamp = f64::from(s) + f64::from(ns) / 1e9;
        assert!(
            (seen - stamp).abs() < 1.0,
            "TZSP time {stamp} seen at {seen}"
        );
    }
    assert_clean(&pcap, &[]);

    // `drop`: c5's frames come tagged 99 inside ap1's tunnel, a VLAN the
    // tunnel does not carry. (The upstream host on VLAN 99 may put one of
    // its own, an IPv6 multicast say, among the three: the trunk does not
    // carry 99 either.)
    let out = dir.join("drop.pcapng");
    let passed_up = |lab: &Lab| {
        let fp = &lab.edge_stats().unwrap()["fast_path"];
        ["ap_pass_capture", "trunk_pass_capture"]
            .iter()
            .map(|c| fp["counters"][c].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let passed_before = passed_up(&lab);
    capture_during(&lab, &["-i", "drop", "-c", "3", "-w", "-"], &out, || {
        let r = lab::ping(lab.client("c5"), "192.168.99.1", 3).unwrap();
        assert_eq!(r.received, 0, "VLAN 99 leaked: {r:?}");
    });
    assert_clean(&out, &[]);
    let rows = tshark_fields(
        &out,
        &[],
        "",
        &[
            "frame.interface_name",
            "frame.comment",
            "vlan.id",
            "eth.src",
        ],
    )
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert_eq!(
            (r[0].as_str(), r[1].as_str(), r[2].as_str()),
            ("drop", "switch.drop_vlan_not_allowed", "99"),
            "{rows:?}"
        );
    }
    // With the XDP fast path (TUNTERM_LAB_FAST_PATH), the program that
    // would drop these frames passes them up while a capture runs: each
    // of the three the drop point shows, from whichever side it came.
    let fp = &lab.edge_stats().unwrap()["fast_path"];
    if fp["mode"] != "off" {
        let passed = passed_up(&lab) - passed_before;
        assert!(
            passed >= rows.len() as u64,
            "the fast path passed {passed} refused frames up for the capture \
             ({} captured): {fp:#}",
            rows.len()
        );
    }

    // What the L2TP endpoint refuses before a frame exists: a data message
    // for a session that does not exist, shown as the datagram came.
    let out = dir.join("drop-l2tp.pcapng");
    capture_during(
        &lab,
        &["-i", "drop", "-f", "udp port 1701", "-c", "1", "-w", "-"],
        &out,
        || {
            let s = lab
                .aps
                .enter(|| UdpSocket::bind("10.99.0.2:0"))
                .unwrap()
                .unwrap();
            // T=0, version 3; session 0x0badcafe; an Ethernet frame.
            let mut dgram = vec![0x00, 0x03, 0x00, 0x00, 0x0b, 0xad, 0xca, 0xfe];
            dgram.extend_from_slice(&[0xff; 6]);
            dgram.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x88, 0xb5]);
            dgram.extend_from_slice(&[0; 46]);
            s.send_to(&dgram, "10.99.0.1:1701").unwrap();
        },
    );
    let rows = tshark_fields(
        &out,
        &[],
        "",
        &["frame.comment", "ip.src", "udp.dstport", "l2tp.sid"],
    )
    .unwrap();
    assert_eq!(
        rows,
        [[
            "l2tp.rx_data_unknown_session",
            "10.99.0.2",
            "1701",
            "0x0badcafe"
        ]],
        "the endpoint's drop"
    );
}

#[test]
fn a_reader_that_stops_reading_loses_capture_frames_not_pings() {
    let lab = start("capblock", false);
    let dir = lab.dir.to_path_buf();
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    // Four points see every ping: more than the capture may buffer.
    let mut cap = Command::new(&bins().tunterm)
        .arg("capture")
        .arg("--control-socket")
        .arg(lab.edge_socket())
        .args([
            "-i",
            "trunk",
            "-i",
            "ap:ap1",
            "-i",
            "vlan:10",
            "-i",
            "wire",
            "-c",
            "0",
            "-s",
            "2048",
            "--duration",
            "9",
            "-w",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_captures(&lab, 1);
    // 5 s of pings at 100/s, 1400 bytes, while nobody reads the pipe.
    let r = lab
        .client("c1")
        .cmd("ping")
        .args([
            "-n", "-q", "-c", "500", "-i", "0.01", "-s", "1400", "-W", "1",
        ])
        .arg("192.168.10.1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(
        text.contains("500 packets transmitted, 500 received"),
        "pings lost while the capture's reader slept: {text}"
    );
    let stats = lab.edge_stats().unwrap();
    let c = &stats["captures"][0];
    assert!(
        c["dropped"].as_u64().unwrap() > 0,
        "no capture drop counted: {c}"
    );
    assert!(c["written"].as_u64().unwrap() > 0, "{c}");
    // The reader wakes up: it gets a readable capture to the end.
    let out = dir.join("late.pcapng");
    let mut file = std::fs::File::create(&out).unwrap();
    std::io::copy(cap.stdout.as_mut().unwrap(), &mut file).unwrap();
    let status = cap.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_clean(&out, &[]);
    let n = tshark_fields(&out, &[], "icmp", &["frame.number"])
        .unwrap()
        .len();
    assert!(n > 100, "only {n} ICMP frames written");
    let dropped = c["dropped"].as_u64().unwrap();
    eprintln!("blocked reader: {n} ICMP frames written, {dropped} capture records dropped: {c}");
}

/// tshark runs `tunterm` as its extcap (a link in its personal extcap
/// folder): `tshark -D` lists the edge's points, `tshark -i trunk -c 10`
/// captures through it, and its end ends the capture.
#[test]
fn tshark_captures_through_the_extcap() {
    let lab = start("capext", false);
    let dir = lab.dir.to_path_buf();
    let xdg = dir.join("xdg");
    let extcap = xdg.join("wireshark/extcap");
    std::fs::create_dir_all(&extcap).unwrap();
    std::os::unix::fs::symlink(&bins().tunterm, extcap.join("tunterm")).unwrap();
    let tshark = || {
        let mut c = Command::new("tshark");
        c.env("XDG_CONFIG_HOME", &xdg)
            .env("TUNTERM_CONTROL_SOCKET", lab.edge_socket())
            .stdin(Stdio::null());
        c
    };
    let list = tshark().arg("-D").output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    for p in ["trunk", "wire", "drop", "ap:ap1", "vlan:10"] {
        assert!(
            list.lines()
                .any(|l| l.contains(&format!(". {p} (tunterm {p}:"))),
            "tshark -D lists no {p}:\n{list}"
        );
    }
    let out = dir.join("extcap.pcapng");
    let mut t = tshark()
        .args(["-i", "trunk", "-c", "10", "-w"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_captures(&lab, 1);
    let r = lab::ping(lab.client("c1"), "192.168.10.1", 8).unwrap();
    assert_eq!(r.received, 8, "{r:?}");
    let ok = lab::wait_until(Duration::from_secs(10), || t.try_wait().unwrap().is_some());
    if !ok {
        let _ = t.kill();
    }
    let status = t.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    t.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(ok && status.success(), "tshark: {status}: {err}");
    assert_clean(&out, &[]);
    let rows = tshark_fields(&out, &[], "", &["frame.interface_name", "vlan.id"]).unwrap();
    assert_eq!(rows.len(), 10, "{rows:?}");
    // tshark's end (it stops the extcap) is the capture's.
    wait_captures(&lab, 0);
}

/// With the XDP fast path on, a capture still sees every frame: while it
/// runs the fast path's FDB is kept empty (everything goes to the slow
/// path), and it is mirrored back when the capture ends.
#[test]
fn a_capture_sees_what_the_fast_path_would_forward() {
    let lab = common::start(Options {
        fast_path: "xdp-native".into(),
        ..Options::new("capxdp", bins())
    });
    let dir = lab.dir.to_path_buf();
    let redirected = |lab: &Lab| {
        let s = lab.edge_stats().unwrap();
        let c = &s["fast_path"]["counters"];
        c["ap_redirect"].as_u64().unwrap() + c["trunk_redirect"].as_u64().unwrap()
    };
    let fast = |lab: &Lab| {
        ping_ok(lab, lab.client("c1"), "192.168.10.1");
        std::thread::sleep(Duration::from_millis(300));
        let before = redirected(lab);
        let r = lab::ping(lab.client("c1"), "192.168.10.1", 10).unwrap();
        assert_eq!(r.received, 10, "{r:?}");
        redirected(lab) - before
    };
    assert!(fast(&lab) >= 20, "the fast path does not forward the pings");

    let out = dir.join("xdp.pcapng");
    capture_during(
        &lab,
        &[
            "-i",
            "trunk",
            "-f",
            "vlan 10 and icmp",
            "-c",
            "0",
            "--duration",
            "5",
            "-w",
            "-",
        ],
        &out,
        || {
            let bypassed = lab::wait_until(Duration::from_secs(5), || {
                let s = lab.edge_stats().unwrap();
                s["fast_path"]["capture_bypass"] == true && s["fast_path"]["fdb"] == 0
            });
            assert!(bypassed, "{:#}", lab.edge_stats().unwrap()["fast_path"]);
            let before = redirected(&lab);
            let r = lab::ping(lab.client("c1"), "192.168.10.1", 10).unwrap();
            assert_eq!(r.received, 10, "{r:?}");
            assert_eq!(redirected(&lab), before, "XDP forwarded during the capture");
        },
    );
    let rows = tshark_fields(&out, &[], "", &["icmp.type"]).unwrap();
    assert_eq!(rows.len(), 20, "10 requests and 10 replies: {rows:?}");

    // Done: back in XDP.
    let back = lab::wait_until(Duration::from_secs(5), || {
        let s = lab.edge_stats().unwrap();
        s["fast_path"]["capture_bypass"] == false && s["fast_path"]["fdb"].as_u64() > Some(0)
    });
    assert!(back, "{:#}", lab.edge_stats().unwrap()["fast_path"]);
    assert!(fast(&lab) >= 20, "the fast path does not forward again");
}

/// Four captures at once, each with its own counters; one of them served
/// to a TCP reader (`--listen`, as Wireshark's TCP@host:port reads it).
#[test]
fn four_captures_at_once_one_to_a_tcp_reader() {
    let lab = start("capfour", false);
    let dir = lab.dir.to_path_buf();
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    let mut caps = Vec::new();
    for p in ["trunk", "ap:ap1", "vlan:10"] {
        let out = dir.join(format!("{}.pcapng", p.replace(':', "-")));
        // vlan:10 sees frames as they came in: untagged from ap1, tagged
        // from the trunk.
        let filter = match p {
            "trunk" => "vlan and icmp",
            "vlan:10" => "icmp or (vlan and icmp)",
            _ => "icmp",
        };
        caps.push((
            out.clone(),
            Some(capture(
                &lab,
                &["-i", p, "-f", filter, "-c", "4", "-w", "-"],
                &out,
            )),
        ));
    }
    // The fourth waits for its reader, then captures for it (a second
    // capture on the trunk; on the wire, the APs' hellos would fill it
    // before the pings).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let tcp_log = dir.join("tcp.log");
    let served = capture(
        &lab,
        &[
            "-i",
            "trunk",
            "-f",
            "vlan 10 and icmp",
            "-c",
            "4",
            "--listen",
            &listen,
        ],
        &tcp_log,
    );
    let mut sock = None;
    lab::wait_until(Duration::from_secs(5), || {
        sock = std::net::TcpStream::connect(&listen).ok();
        sock.is_some()
    });
    let mut sock = sock.expect("tunterm capture --listen accepts a reader");
    wait_captures(&lab, 4);
    let stats = lab.edge_stats().unwrap();
    let ids: Vec<u64> = stats["captures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{stats:#}");
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    let tcp_out = dir.join("tcp.pcapng");
    std::io::copy(&mut sock, &mut std::fs::File::create(&tcp_out).unwrap()).unwrap();
    let (status, err) = finish(served, Duration::from_secs(10));
    assert!(status.success(), "--listen: {status}: {err}");
    caps.push((tcp_out, None));
    for (out, cap) in caps {
        if let Some(cap) = cap {
            let (status, err) = finish(cap, Duration::from_secs(10));
            assert!(status.success(), "{}: {status}: {err}", out.display());
        }
        assert_clean(&out, &[]);
        let n = tshark_fields(&out, &[], "", &["frame.number"])
            .unwrap()
            .len();
        assert_eq!(n, 4, "{}", out.display());
    }
    wait_captures(&lab, 0);
}

/// mGRE: the peer's point shows the inner frames, the wire the GRE packets
/// (tshark decodes GRE 0x6558 and the Ethernet inside by default).
#[test]
fn mgre_peer_and_wire_points() {
    let lab = common::start(Options {
        encap: tunterm_lab::topology::Encap::Gre,
        ..Options::new("capgre", bins())
    });
    let dir = lab.dir.to_path_buf();
    ping_ok(&lab, lab.client("c1"), "192.168.10.1");
    let out = dir.join("gre.pcapng");
    capture_during(
        &lab,
        &[
            "-i",
            "gre:10.99.0.2",
            "-i",
            "wire",
            "-f",
            "icmp or ip proto 47",
            "-c",
            "0",
            "--duration",
            "3",
            "-w",
            "-",
        ],
        &out,
        || ping_ok(&lab, lab.client("c1"), "192.168.10.1"),
    );
    assert_clean(&out, &[]);
    let rows = tshark_fields(
        &out,
        &["-E", "occurrence=l"],
        "icmp",
        &["frame.interface_name", "gre.proto", "ip.src", "icmp.type"],
    )
    .unwrap();
    for (point, gre) in [("gre:10.99.0.2", ""), ("wire", "0x6558")] {
        for (src, ty) in [("192.168.10.11", "8"), ("192.168.10.1", "0")] {
            assert!(
                rows.iter().any(|r| r == &[point, gre, src, ty]),
                "no ICMP type {ty} from {src} at {point}: {rows:?}"
            );
        }
    }
}
