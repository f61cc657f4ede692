//! The command line as an operator meets it: broken configuration is refused
//! with the JSON path of the offending field, before anything starts.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tunterm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tunterm"))
}

fn check(name: &str, json: &str) -> (bool, String) {
    check_with(name, json, &[])
}

/// `json` in DIR/edge.json, DIR a directory of its own (removed on drop).
struct ConfigFile {
    dir: PathBuf,
}

impl ConfigFile {
    fn new(name: &str, json: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tunterm-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("edge.json"), json).unwrap();
        ConfigFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("edge.json")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tunterm run` on `json` with a control socket beside it: how it ended,
/// and whether it bound the socket.
fn run_on(name: &str, json: &str) -> (Output, bool) {
    let file = ConfigFile::new(name, json);
    let sock = file.dir.join("s.sock");
    let out = tunterm()
        .args(["run", "--control-socket"])
        .arg(&sock)
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    (out, sock.exists())
}

/// `tunterm run OPTION VALUE`, which must fail: its error.
fn run_refuses(option: &str, value: &str) -> String {
    let out = tunterm().args(["run", option, value]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{option} {value}: {err}");
    err
}

fn check_with(name: &str, json: &str, args: &[&str]) -> (bool, String) {
    let file = ConfigFile::new(name, json);
    let out = tunterm()
        .arg("check-config")
        .args(args)
        .arg(file.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn lab_config() -> serde_json::Value {
    serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap()
}

/// The lab configuration with its two ports on these interfaces.
fn with_ports(downstream: &str, upstream: &str) -> String {
    let mut c = lab_config();
    c["ports"] = serde_json::json!({"0": downstream, "1": upstream});
    c.to_string()
}

#[test]
fn the_embedded_lab_configuration_is_valid() {
    // Its interfaces (ap0, trunk0) exist only in the lab's namespaces.
    let (ok, text) = check_with("lab", tunterm_control::LAB_DEFAULT, &["--syntax-only"]);
    assert!(ok, "{text}");
    assert!(text.contains("10.99.0.1"), "{text}");
}

#[test]
fn an_interface_missing_on_this_host_is_refused_with_its_name() {
    let (ok, text) = check("ports-lo", &with_ports("lo", "lo"));
    assert!(ok, "interfaces that exist: {text}");
    for (name, cfg, role) in [
        ("down", with_ports("tt-no-such-ap", "lo"), "downstream"),
        ("up", with_ports("lo", "tt-no-such-up"), "upstream"),
    ] {
        let (ok, text) = check(name, &cfg);
        assert!(!ok, "{name}: accepted:\n{text}");
        let missing = format!("tt-no-such-{name}").replace("down", "ap");
        assert!(
            text.contains(&format!("{role} port \"{missing}\""))
                && text.contains("no interface of that name on this host"),
            "{name}: the error names the {role} port {missing}:\n{text}"
        );
        let (ok, text) = check_with(name, &cfg, &["--syntax-only"]);
        assert!(ok, "{name}: --syntax-only looks at the file only:\n{text}");
    }
}

#[test]
fn run_refuses_a_missing_downstream_interface_before_binding_anything() {
    let (out, bound) = run_on("run-port", &with_ports("tt-no-such-ap", "lo"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("downstream port \"tt-no-such-ap\""),
        "the error names the port:\n{err}"
    );
    assert!(!bound, "the control socket was bound before the check");
}

#[test]
fn the_cookie_length_is_0_4_or_8() {
    for bad in ["2", "16", "eight"] {
        let err = run_refuses("--cookie-len", bad);
        assert!(
            err.contains("--cookie-len") && err.contains("0, 4 or 8 bytes"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn invalid_values_are_rejected_with_their_json_path() {
    let mut cases = vec![];
    let mut c = lab_config();
    c["mxtunnels"][0]["hello_interval"] = serde_json::json!(0.1);
    cases.push(("hello", c, "mxtunnels[0].hello_interval"));
    let mut c = lab_config();
    c["mxtunnels"][0]["vlan_ids"] = serde_json::json!([10, "30-20"]);
    cases.push(("range", c, "mxtunnels[0].vlan_ids[1]"));
    let mut c = lab_config();
    c["mxedge"]["tunterm_ip_config"]["ip"] = serde_json::json!("10.99.0.300");
    cases.push(("ip", c, "mxedge.tunterm_ip_config.ip"));
    let mut c = lab_config();
    c["mxtunnels"][0]["hello_retries"] = serde_json::json!("seven");
    cases.push(("type", c, "mxtunnels[0].hello_retries"));
    for (name, cfg, path) in cases {
        let (ok, text) = check(name, &cfg.to_string());
        assert!(!ok, "{name}: accepted:\n{text}");
        assert!(text.contains(path), "{name}: error names {path}:\n{text}");
    }
}

#[test]
fn unknown_fields_are_tolerated() {
    let mut c = lab_config();
    c["mxedge"]["some_future_field"] = serde_json::json!({"x": 1});
    c["mxtunnels"][0]["ipsec"] = serde_json::json!({"enabled": false});
    let (ok, text) = check_with("unknown", &c.to_string(), &["--syntax-only"]);
    assert!(ok, "{text}");
}

#[test]
fn broken_json_is_a_clear_error() {
    let (ok, text) = check("json", "{\"mxedge\": ");
    assert!(!ok);
    assert!(text.contains("JSON"), "{text}");
}

#[test]
fn run_refuses_a_bad_file_before_binding_anything() {
    let mut c = lab_config();
    c["mxtunnels"][0]["protocol"] = serde_json::json!("carrier-pigeon");
    let (out, bound) = run_on("run", &c.to_string());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mxtunnels[0].protocol"), "{err}");
    assert!(!bound, "the control socket was bound before the check");
}

#[test]
fn a_fast_path_fdb_size_out_of_range_is_refused_with_the_limits() {
    for bad in ["5", "99999999", "lots"] {
        let err = run_refuses("--fast-path-fdb-entries", bad);
        assert!(err.contains("--fast-path-fdb-entries"), "{bad}: {err}");
        if bad != "lots" {
            assert!(err.contains("from 32768 to 4194304"), "{bad}: {err}");
        }
    }
}

/// Runs `cmd` (stdin from `stdin`) to its end: its stderr, whether it
/// succeeded, its peak RSS in KiB (from `wait4`) and how long it took.
#[allow(clippy::zombie_processes)] // reaped by wait4, for its rusage
fn measured(mut cmd: Command, stdin: std::process::Stdio) -> (bool, String, i64, f64) {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut child = cmd
        .env("RUST_BACKTRACE", "0")
        .stdin(stdin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain integers: all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own unreaped child, writing into locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, err, usage.ru_maxrss, start.elapsed().as_secs_f64())
}

/// Peak RSS a refusal may use, in KiB: the binary's own start (about 8 MiB)
/// with room to spare, far below the 50 MB a file read whole would take.
const REFUSAL_RSS_KIB: i64 = 32 * 1024;

#[test]
fn a_50_mb_configuration_is_refused_without_being_read() {
    let limit = tunterm_control::MAX_CONFIG_BYTES;
    // A sparse 50 MB file: its size alone refuses it.
    let file = ConfigFile::new("big", "");
    std::fs::File::options()
        .write(true)
        .open(file.path())
        .unwrap()
        .set_len(50 << 20)
        .unwrap();
    let mut runs = vec![];
    for args in [
        &["check-config", "--syntax-only"][..],
        &["check-config"][..],
        &["run", "--config"][..],
    ] {
        let mut cmd = tunterm();
        cmd.args(args).arg(file.path());
        runs.push((
            format!("{args:?}"),
            cmd,
            std::process::Stdio::null(),
            "52428800 bytes",
        ));
    }
    // Streams have no size: the read stops one byte past the limit.
    let mut cmd = tunterm();
    cmd.args(["check-config", "/dev/zero"]);
    runs.push((
        "check-config /dev/zero".into(),
        cmd,
        std::process::Stdio::null(),
        "more than",
    ));
    let mut cmd = tunterm();
    cmd.args(["apply-config", "-", "--control-socket"])
        .arg(file.dir.join("none.sock"));
    let zero = std::fs::File::open("/dev/zero").unwrap();
    runs.push((
        "apply-config - < /dev/zero".into(),
        cmd,
        zero.into(),
        "more than",
    ));
    for (what, cmd, stdin, size) in runs {
        let (ok, err, rss, secs) = measured(cmd, stdin);
        eprintln!("{what}: refused in {secs:.3} s, peak RSS {rss} KiB");
        assert!(!ok, "{what}: accepted: {err}");
        assert!(
            err.contains("is too large")
                && err.contains(size)
                && err.contains(&format!("the limit is {limit} bytes (4 MiB)")),
            "{what}: the error says why: {err}"
        );
        assert!(
            rss < REFUSAL_RSS_KIB,
            "{what}: peak RSS {rss} KiB: the file was read"
        );
    }
}

#[test]
fn a_100000_level_nesting_is_refused_with_its_line() {
    let deep = 100_000;
    let arrays = "[".repeat(deep) + &"]".repeat(deep);
    // Deep objects inside an unknown field (kept as JSON), on line 3.
    let mut unknown = String::from("{\n\"mxedge\": {\"name\": \"a\",\n  \"future\": ");
    unknown += &"{\"a\": ".repeat(deep);
    unknown += "1";
    unknown += &"}".repeat(deep);
    unknown += "}}";
    // Brackets inside strings are not nesting.
    let mut quoted = lab_config();
    quoted["mxedge"]["note"] = serde_json::json!("[".repeat(deep));
    let max = tunterm_control::MAX_CONFIG_DEPTH;
    for (name, text, at) in [
        ("arrays", arrays, format!("line 1 column {}", max + 1)),
        (
            "objects",
            unknown,
            format!("line 3 column {}", 13 + 6 * (max - 2)),
        ),
    ] {
        let file = ConfigFile::new(name, &text);
        let mut cmd = tunterm();
        cmd.args(["check-config", "--syntax-only"]).arg(file.path());
        let (ok, err, rss, secs) = measured(cmd, std::process::Stdio::null());
        eprintln!("{name}: refused in {secs:.3} s, peak RSS {rss} KiB");
        assert!(!ok, "{name}: accepted: {err}");
        let want = format!("configuration nested deeper than {max} levels at {at}");
        assert!(err.contains(&want), "{name}: wanted {want:?}: {err}");
        assert!(rss < REFUSAL_RSS_KIB, "{name}: peak RSS {rss} KiB");
    }
    let (ok, text) = check_with("quoted", &quoted.to_string(), &["--syntax-only"]);
    assert!(ok, "brackets in a string are text: {text}");
}
