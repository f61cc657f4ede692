//! Fixtures the lab tests share (each test binary uses part of them).
#![allow(dead_code)]

use tunterm_lab::topology::{Binaries, Lab, Options};
use tunterm_lab::{self as lab, Netns};

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
