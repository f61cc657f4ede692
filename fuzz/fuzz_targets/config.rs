//! The configuration parser (tunterm-control): JSON in the Mist API's
//! shapes, then validation. Properties: any input is an `Ok` or a clear
//! error, never a panic; a file that parses serializes to JSON that parses
//! back to the same file, and validates the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunterm_control::config::{ConfigFile, EdgeConfig};

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
    assert_eq!(again, file);
    assert_eq!(again.validate().is_ok(), verdict.is_ok());
    if let Ok(cfg) = EdgeConfig::from_raw(file) {
        let _ = (cfg.vlan_addresses(), cfg.ip6_settings(), cfg.monitoring());
        let _ = cfg.tunnel_by_remote_end_id("mxtunnel-1");
    }
});
