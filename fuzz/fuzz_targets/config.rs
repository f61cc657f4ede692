//! The configuration parser (tunterm-control): JSON in the Mist API's
//! shapes, then validation. Properties: any input is an `Ok` or a clear
//! error, never a panic; a file that parses serializes to JSON that parses
//! back to the same file, and validates the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tunterm_control::config::{ConfigFile, EdgeConfig};

/// Equal, numbers within a relative 1e-15.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x != y => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = ConfigFile::parse(json) else {
        return;
    };
    let verdict = file.validate();
    let again_json = serde_json::to_string(&file).expect("a parsed file serializes");
    let again = ConfigFile::parse(&again_json).expect("a serialized file parses");
    if again != file {
        // serde_json parses floats best-effort (without its
        // `float_roundtrip` feature, as in the product): a number may come
        // back one unit in the last place off. Anything more is a bug.
        let (a, b) = (
            serde_json::to_value(&file).unwrap(),
            serde_json::to_value(&again).unwrap(),
        );
        assert!(close(&a, &b), "round trip changed the file:\n{a}\n{b}");
    }
    assert_eq!(again.validate().is_ok(), verdict.is_ok());
    if let Ok(cfg) = EdgeConfig::from_raw(file) {
        let _ = (cfg.vlan_addresses(), cfg.ip6_settings(), cfg.monitoring());
        let _ = cfg.tunnel_by_remote_end_id("mxtunnel-1");
    }
});
