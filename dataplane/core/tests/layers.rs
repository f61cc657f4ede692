//! The layering rule, checked on the dependency graph: tunterm-core is
//! sans-IO, so nothing it links may open a file descriptor or reach the OS
//! (`#![forbid(unsafe_code)]` in its lib.rs covers its own code).

use std::process::Command;

/// Crates that would let the core do I/O, directly or by a back door.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "libc",
    "nix",
    "socket2",
    "aya",
    "aya-obj",
    "memmap2",
    "getrandom",
    "tunterm",
    "tunterm-ebpf",
    "tunterm-lab",
];

#[test]
fn the_core_depends_on_no_io_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--package",
            "tunterm-core",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"tunterm-core"), "unexpected tree:\n{tree}");
    let bad: Vec<&&str> = names.iter().filter(|n| FORBIDDEN.contains(n)).collect();
    assert!(
        bad.is_empty(),
        "tunterm-core must stay sans-IO, but links {bad:?}:\n{tree}"
    );
}
