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
            assert!(err.contains("from 1024 to 4194304"), "{bad}: {err}");
        }
    }
}
