//! Fixtures the lab tests share (each test binary uses part of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tunterm::api::ClientPage;
use tunterm_lab::topology::{Binaries, Lab, Options};
use tunterm_lab::{self as lab, Netns, Proc};

/// The daemon, simulator and lab binaries this test build runs.
pub fn bins() -> Binaries {
    tunterm_lab::test_binaries!()
}

/// The lab `opts` describe, or the test fails saying why it did not start.
pub fn start(opts: Options) -> Lab {
    let name = opts.name.clone();
    Lab::start(opts).unwrap_or_else(|e| panic!("lab {name} did not start: {e:#}"))
}

/// Three pings from `ns` to `dst`, all of which must come back.
pub fn ping_ok(lab: &Lab, ns: &Netns, dst: &str) {
    let r = lab::ping(ns, dst, 3).unwrap();
    assert_eq!(
        r.received,
        3,
        "{} → {dst}: {r:?}\n{}",
        ns.name(),
        lab.logs()
    );
}

/// `tunterm run` in `ns` on `cfg` (written to DIR/edge.json), its control
/// socket DIR/edge.sock, with `extra` arguments after those, logging to
/// DIR/tunterm.log: returned with the socket's path once it says it runs.
pub fn run_daemon(
    ns: &Netns,
    dir: &Path,
    cfg: &serde_json::Value,
    extra: &[&str],
) -> (Proc, PathBuf) {
    let config = dir.join("edge.json");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let sock = dir.join("edge.sock");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (tunterm, config, control) = (s(&bins().tunterm), s(&config), s(&sock));
    let mut args = vec![
        tunterm.as_str(),
        "run",
        "--config",
        &config,
        "--control-socket",
        &control,
    ];
    args.extend_from_slice(extra);
    let mut p = ns.spawn(&args, &dir.join("tunterm.log")).unwrap();
    p.wait_for_log("tunterm running", Duration::from_secs(10))
        .unwrap();
    (p, sock)
}

/// Fails the test if a namespace whose name starts with `prefix` is left
/// behind.
pub fn assert_no_namespaces(prefix: &str) {
    let left: Vec<String> = lab::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// `tunterm clients ARGS` against the lab's edge: the page it printed.
pub fn clients(lab: &Lab, args: &[&str]) -> ClientPage {
    let out = std::process::Command::new(&bins().tunterm)
        .arg("clients")
        .arg("--control-socket")
        .arg(lab.edge_socket())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "tunterm clients {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}
