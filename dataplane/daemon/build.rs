//! Build-time facts for `tunterm --version` and the stats' `version`: the
//! package version and, when built from a git checkout with git at hand,
//! `git describe` of the commit (TUNTERM_VERSION).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let pkg = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let version = match git(&["describe", "--always", "--tags"]) {
        Some(d) => format!("{pkg} ({d})"),
        None => pkg,
    };
    println!("cargo:rustc-env=TUNTERM_VERSION={version}");
    // Again when a commit moves HEAD (or its branch), and when the sources
    // change (cargo's default, which any rerun-if-changed replaces).
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build.rs");
    // (Only files that exist: a missing one would rerun this every build.)
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = ["HEAD", "packed-refs"]
        .into_iter()
        .map(String::from)
        .chain(branch);
    for p in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &p]).map(PathBuf::from)
            && path.exists()
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
