//! The cloud's `config` message made into the daemon's configuration
//! document, validated with tunterm-control, and the last-good copy on
//! disk.
//!
//! The cloud sends this edge's `mxedge`, its `mxcluster`, the org's
//! `mxtunnels` and `wlans`; the local `ports` map (Mist port name → Linux
//! interface) is this host's and is kept from the running configuration.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One refusal, as `config_result` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON path of the field (`mxtunnels[0].hello_interval`; empty for the
    /// whole document).
    pub path: String,
    /// Why.
    pub message: String,
}

/// A configuration ready to apply.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The document (what the daemon's file holds).
    pub doc: Value,
    /// What the daemon runs from it.
    pub cfg: tunterm_control::EdgeConfig,
    /// Its digest, as the daemon's stats will show it.
    pub digest: String,
}

/// The document for a `config` message: its objects, plus `ports` from
/// `local` (the running configuration document) when the cloud sends none.
pub fn document(msg: &Value, local: Option<&Value>) -> Value {
    let mut doc = Map::new();
    for key in ["mxedge", "mxcluster", "mxtunnels", "wlans"] {
        match msg.get(key) {
            Some(Value::Null) | None => {}
            Some(v) => {
                doc.insert(key.into(), v.clone());
            }
        }
    }
    let ports = msg
        .get("ports")
        .filter(|p| !p.is_null())
        .or_else(|| local.and_then(|l| l.get("ports")));
    if let Some(p) = ports {
        doc.insert("ports".into(), p.clone());
    }
    Value::Object(doc)
}

/// Validate a document the way the daemon will.
pub fn validate(doc: Value) -> Result<Validated, Vec<FieldError>> {
    match tunterm_control::load_str(&doc.to_string()) {
        Ok(cfg) => Ok(Validated {
            digest: tunterm::api::config_digest(&cfg.raw),
            cfg,
            doc,
        }),
        Err(e) => Err(vec![FieldError {
            path: e.path,
            message: e.message,
        }]),
    }
}

/// Read a configuration document (the last-good or the daemon's file).
pub fn read(path: &Path) -> Option<Value> {
    // Bounded like the daemon's own read: a wrong file is not read whole.
    let text = tunterm_control::read_file(path).ok()?;
    tunterm_control::check_bounds(&text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Keep `doc` as the last-good configuration (atomically).
pub fn write_last_good(path: &Path, doc: &Value) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
    text.push(b'\n');
    tunterm_control::write_atomically(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lab() -> Value {
        serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap()
    }

    fn message(from: &Value) -> Value {
        json!({"type": "config", "id": 7, "mxedge": from["mxedge"],
               "mxcluster": from["mxcluster"], "mxtunnels": from["mxtunnels"], "wlans": []})
    }

    #[test]
    fn a_good_config_keeps_the_local_ports_and_has_the_daemons_digest() {
        let local = lab();
        let v = validate(document(&message(&local), Some(&local))).unwrap();
        assert_eq!(v.doc["ports"], local["ports"]);
        let direct = tunterm_control::load_str(tunterm_control::LAB_DEFAULT).unwrap();
        assert_eq!(v.digest, tunterm::api::config_digest(&direct.raw));
        assert_eq!(v.cfg.tunnels[0].vlans.to_string(), "10,20,30-31");
    }

    #[test]
    fn a_bad_config_is_refused_with_the_fields_path() {
        let local = lab();
        let mut msg = message(&local);
        msg["mxtunnels"][0]["hello_interval"] = json!(0.1);
        let e = validate(document(&msg, Some(&local))).unwrap_err();
        assert_eq!(e[0].path, "mxtunnels[0].hello_interval");
        assert!(!e[0].message.is_empty());
        msg["mxtunnels"][0]["hello_interval"] = json!(10);
        msg["mxtunnels"][0]["vlan_ids"] = json!([4095]);
        let e = validate(document(&msg, Some(&local))).unwrap_err();
        assert!(e[0].path.starts_with("mxtunnels[0].vlan_ids"), "{e:?}");
    }

    #[test]
    fn the_last_good_is_written_whole() {
        let dir = std::env::temp_dir().join(format!("tunterm-agent-lg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("last-good.json");
        write_last_good(&path, &lab()).unwrap();
        assert_eq!(read(&path), Some(lab()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
