//! Compiles every `src/*.bpf.c` into `$OUT_DIR/NAME.bpf.o` with clang
//! (`-O2 -g -target bpf`), and generates `$OUT_DIR/tunterm_maps.rs` from
//! `include/tunterm_maps.h` with bindgen.
//!
//! Needs clang, libbpf's headers and libclang (Debian: `clang libbpf-dev
//! libclang1`, installed by `.ci/install-deps`). `CLANG` overrides the
//! compiler, `LIBBPF_INCLUDE` the directory holding `bpf/bpf_helpers.h`.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fail(msg: impl Display) -> ! {
    eprintln!("\nerror: tunterm-ebpf: {msg}\n");
    std::process::exit(1);
}

fn env(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The multiarch include directory (`asm/types.h` lives there on Debian).
fn multiarch_include() -> PathBuf {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    PathBuf::from(format!("/usr/include/{arch}-linux-gnu"))
}

fn check_clang(clang: &str) {
    match Command::new(clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => fail(format_args!(
            "`{clang} --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => fail(format_args!(
            "clang is needed to compile the XDP programs, and `{clang}` could not be run ({e}). \
             Install it (Debian: `apt-get install clang libbpf-dev libclang1`, or run \
             `bash .ci/install-deps` as root), or point CLANG at a clang binary."
        )),
    }
}

fn libbpf_include() -> PathBuf {
    let dir = env("LIBBPF_INCLUDE").map_or_else(|| PathBuf::from("/usr/include"), PathBuf::from);
    if !dir.join("bpf/bpf_helpers.h").is_file() {
        fail(format_args!(
            "libbpf's headers are needed to compile the XDP programs and {} is missing. \
             Install them (Debian: `apt-get install libbpf-dev`, or run `bash .ci/install-deps` \
             as root), or point LIBBPF_INCLUDE at the directory holding bpf/bpf_helpers.h.",
            dir.join("bpf/bpf_helpers.h").display()
        ));
    }
    dir
}

fn compile(clang: &str, src: &Path, out: &Path, includes: &[&Path]) {
    let mut cmd = Command::new(clang);
    cmd.args(["-O2", "-g", "-target", "bpf"])
        // Map layouts must have no implicit padding: the Rust side is
        // generated from the same header and must mean the same bytes.
        .args(["-Wall", "-Wextra", "-Werror", "-Wpadded"]);
    for dir in includes {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-c").arg(src).arg("-o").arg(out);
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(format_args!(
            "clang failed on {} ({}):\n{}",
            src.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(format_args!("could not run {clang}: {e}")),
    }
}

fn bindings(header: &Path, out: &Path, multiarch: &Path) {
    let result = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", multiarch.display()))
        .allowlist_type("tt_.*")
        .allowlist_var("TT_.*")
        .rustified_enum("tt_counter")
        .derive_debug(true)
        .derive_copy(true)
        .derive_eq(true)
        .derive_partialeq(true)
        .derive_hash(true)
        .derive_default(false)
        .layout_tests(true)
        .generate_comments(true)
        .generate();
    let b = match result {
        Ok(b) => b,
        Err(e) => fail(format_args!(
            "bindgen failed on {} ({e}). It needs libclang (Debian: `apt-get install \
             libclang1`; LIBCLANG_PATH points at another one).",
            header.display()
        )),
    };
    if let Err(e) = b.write_to_file(out) {
        fail(format_args!("writing {}: {e}", out.display()));
    }
}

/// The maps' layout id: FNV-1a (64 bits) of the map header with its
/// comments and whitespace taken out, so that editing a comment keeps the
/// id and a changed field, type or constant changes it. A daemon that
/// finds maps pinned under another id replaces them (not hitless) rather
/// than reading old bytes with new meanings.
fn layout_id(header: &Path) -> String {
    let text = match std::fs::read_to_string(header) {
        Ok(t) => t,
        Err(e) => fail(format_args!("reading {}: {e}", header.display())),
    };
    let mut code = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |end| &r[end + 2..]);
            code.push(' ');
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |end| &r[end..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for token in code.split_whitespace() {
        for b in token.bytes().chain([b' ']) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let out_dir = match std::env::var("OUT_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => fail("OUT_DIR is not set (run through cargo)"),
    };
    let include = manifest.join("include");
    let header = include.join("tunterm_maps.h");
    let src_dir = manifest.join("src");
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed={}", src_dir.display());

    let clang = env("CLANG").unwrap_or_else(|| "clang".into());
    check_clang(&clang);
    let libbpf = libbpf_include();
    let multiarch = multiarch_include();

    let mut sources: Vec<PathBuf> = match std::fs::read_dir(&src_dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
            .collect(),
        Err(e) => fail(format_args!("reading {}: {e}", src_dir.display())),
    };
    sources.sort();
    if sources.is_empty() {
        fail(format_args!("no *.bpf.c in {}", src_dir.display()));
    }
    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().replace(".bpf.c", ".bpf.o"));
        let Some(name) = name else { continue };
        compile(
            &clang,
            src,
            &out_dir.join(name),
            &[&include, &multiarch, &libbpf],
        );
    }
    bindings(&header, &out_dir.join("tunterm_maps.rs"), &multiarch);
    println!("cargo:rustc-env=TUNTERM_MAPS_LAYOUT={}", layout_id(&header));
}
