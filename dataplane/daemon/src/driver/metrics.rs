//! The Prometheus exposition of the stats (`GET /metrics` on `--metrics`).
//!
//! Every number of the stats document ([`Stats`]) is exported under its
//! JSON path (`io.trunk_rx` → `tunterm_io_trunk_rx_total`): counters get
//! `_total`, the values that go down (open connections, table sizes,
//! uptime, loop times) are gauges, booleans are 0/1 gauges. Per-entity
//! lists become labelled series: tunnels (`ccid`, `ap`, `remote_ip`),
//! captures (`id`), monitoring checks (`check`), DHCP relay VLANs and host
//! ports (`vlan`), storm drops per AP (`ap`). Tunnels and per-AP series
//! are bounded ([`MetricsOptions::tunnels`], lowest CCIDs first; the rest
//! counted in `tunterm_metrics_tunnels_omitted`): 10,000 tunnels make a
//! scrape of a few hundred kilobytes by default, not megabytes.
//!
//! The document is walked once per scrape, outside the event loop (the
//! loop only takes the snapshot, as for `tunterm stats`).

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::Stats;

/// Per-tunnel series exported when `--metrics-tunnels` is not given.
pub const DEFAULT_METRICS_TUNNELS: usize = 1000;

/// What the exposition exports.
#[derive(Clone, Copy, Debug)]
pub struct MetricsOptions {
    /// Most tunnels (and APs, for per-AP series) with series of their own.
    pub tunnels: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            tunnels: DEFAULT_METRICS_TUNNELS,
        }
    }
}

/// Leaf names whose values go down as well as up: gauges.
const GAUGES: &[&str] = &[
    "uptime",
    "num_tunnels",
    "fdb_entries",
    "active",
    "max_connections",
    "loop_us_max",
    "loop_us_last",
    "subscribers",
    "sessions",
    "gre_peers",
    "templates",
    "templates_long",
    "fdb",
    "fdb_capacity",
    "fdb_overflow",
    "groups",
    "clients",
    "addresses",
    "max_clients",
    "last_change_ago",
    "restored_tunnels",
    "restored_sessions",
    "restored_gre_peers",
    "restored_fdb",
    "restored_fdb_file",
    "capture_bypass",
    "querier",
    "arp_nd_proxy",
    "healthy",
    "ok",
    "up",
    "entries",
    "members",
    "router_ports",
    "in_flight",
    "half_open",
    "rate_table",
    "last_rtt_ms",
    "rtt_ms",
    "failing",
    "pending",
];

/// Sections whose every number is a gauge (current sizes, not events).
const GAUGE_SECTIONS: &[&str] = &["fast_path_slow", "mcast_mdb"];

#[derive(Default)]
struct Family {
    gauge: bool,
    help: String,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

/// The families of one scrape, by name (so each is written in one piece).
#[derive(Default)]
struct Families(BTreeMap<String, Family>);

impl Families {
    fn add(&mut self, name: &str, gauge: bool, help: &str, labels: Vec<(String, String)>, v: f64) {
        let f = self.0.entry(name.to_string()).or_insert_with(|| Family {
            gauge,
            help: help.to_string(),
            samples: Vec::new(),
        });
        // A name seen first as a counter and then as a gauge (or the same
        // series twice) keeps its first meaning.
        if f.gauge == gauge && !f.samples.iter().any(|(l, _)| *l == labels) {
            f.samples.push((labels, v));
        }
    }
}

/// A metric name's part from a JSON key: lowercase letters, digits, `_`.
fn sanitize(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn is_gauge(path: &str, leaf: &str) -> bool {
    GAUGES.contains(&leaf)
        || GAUGE_SECTIONS.iter().any(|s| path.starts_with(s))
        || leaf.ends_with("_len")
        || leaf.ends_with("_size")
        || leaf.ends_with("_pps")
        || leaf.ends_with("_peak")
        || leaf.ends_with("_ago")
}

/// A number or a boolean as a sample value.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Every number under `v` (objects only; lists are handled by their
/// owners), named by its path.
fn walk(out: &mut Families, path: &str, v: &Value, labels: &[(String, String)]) {
    let Value::Object(map) = v else { return };
    for (k, v) in map {
        let key = sanitize(k);
        let p = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}_{key}")
        };
        match v {
            Value::Object(_) => walk(out, &p, v, labels),
            _ => {
                if let Some(x) = number(v) {
                    let gauge = v.is_boolean() || is_gauge(&p, &key);
                    let help = format!(
                        "tunterm stats: {path}{}{k}",
                        if path.is_empty() { "" } else { "." }
                    );
                    let (base, scale) = in_seconds(&p);
                    let name = name_for(&base, gauge);
                    out.add(&name, gauge, &help, labels.to_vec(), x * scale);
                }
            }
        }
    }
}

/// A path in microseconds or milliseconds (`loop_us_max`, `rtt_ms`) in
/// Prometheus' base unit: its name with `seconds`, and the factor.
fn in_seconds(path: &str) -> (String, f64) {
    for (unit, scale) in [("us", 1e-6), ("ms", 1e-3)] {
        let parts: Vec<&str> = path.split('_').collect();
        if parts.contains(&unit) {
            let named: Vec<&str> = parts
                .iter()
                .map(|p| if *p == unit { "seconds" } else { p })
                .collect();
            return (named.join("_"), scale);
        }
    }
    if path == "uptime" || path.ends_with("_ago") {
        return (format!("{path}_seconds"), 1.0);
    }
    (path.to_string(), 1.0)
}

/// The family name: `tunterm_` and the path; a counter's `_total` is added
/// by the encoder, and a path ending in a reserved suffix is moved off it.
fn name_for(path: &str, gauge: bool) -> String {
    let mut name = format!("tunterm_{path}");
    for reserved in ["_total", "_count", "_sum", "_bucket", "_created", "_info"] {
        if name.ends_with(reserved) {
            name.push_str("_value");
        }
    }
    if !gauge && name.ends_with("_total_value") {
        name.truncate(name.len() - "_total_value".len());
    }
    name
}

fn label(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// The families of a stats document.
fn families(stats: &Stats, opts: MetricsOptions, extra: &[(&str, bool, &str, f64)]) -> Families {
    let mut out = Families::default();
    let mut doc = serde_json::to_value(stats).unwrap_or(Value::Null);
    let Value::Object(map) = &mut doc else {
        return out;
    };
    out.add(
        "tunterm_build_info",
        true,
        "The running tunterm: edge name, version, configuration digest",
        vec![
            label("name", &stats.name),
            label("version", &stats.version),
            label("config_digest", &stats.config_digest),
        ],
        1.0,
    );
    out.add(
        "tunterm_fast_path_mode",
        true,
        "Where tunnel decapsulation runs (1 for the mode in force)",
        vec![label("mode", &stats.fast_path.mode)],
        1.0,
    );
    out.add(
        "tunterm_monitoring_state",
        true,
        "Upstream monitoring's verdict (1 for the state in force)",
        vec![label("state", &stats.monitoring.state)],
        1.0,
    );

    // Tunnels: bounded, lowest CCIDs first (stable between scrapes).
    let mut tunnels: Vec<_> = stats.tunnels.iter().collect();
    tunnels.sort_unstable_by_key(|t| t.local_ccid);
    let shown = tunnels.len().min(opts.tunnels);
    for t in &tunnels[..shown] {
        let labels = vec![
            label("ccid", t.local_ccid),
            label("ap", &t.ap),
            label("remote_ip", &t.remote_ip),
        ];
        let mut state = labels.clone();
        state.push(label("state", &t.state));
        out.add(
            "tunterm_tunnel_state",
            true,
            "An L2TP tunnel and its state (Mist's names)",
            state,
            1.0,
        );
        let per = [
            (
                "tunterm_tunnel_uptime_seconds",
                true,
                "Seconds since the tunnel was established",
                t.uptime,
            ),
            (
                "tunterm_tunnel_sessions",
                true,
                "Sessions of the tunnel",
                t.sessions.len() as u64,
            ),
            (
                "tunterm_tunnel_control_tx_packets",
                false,
                "Control packets sent on the tunnel",
                t.tx_control_pkts,
            ),
            (
                "tunterm_tunnel_control_rx_packets",
                false,
                "Control packets received on the tunnel",
                t.rx_control_pkts,
            ),
            (
                "tunterm_tunnel_retransmits",
                false,
                "Control messages retransmitted on the tunnel",
                t.retransmits,
            ),
        ];
        for (name, gauge, help, v) in per {
            out.add(name, gauge, help, labels.clone(), v as f64);
        }
    }
    out.add(
        "tunterm_metrics_tunnels_omitted",
        true,
        "Tunnels without series of their own (beyond --metrics-tunnels)",
        vec![],
        (tunnels.len() - shown) as f64,
    );
    out.add(
        "tunterm_metrics_tunnels_limit",
        true,
        "Most tunnels with series of their own (--metrics-tunnels)",
        vec![],
        opts.tunnels as f64,
    );
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &stats.tunnels {
        *by_state.entry(&t.state).or_default() += 1;
    }
    for (state, n) in by_state {
        out.add(
            "tunterm_tunnels_by_state",
            true,
            "L2TP tunnels in each state (all of them, whatever the bound)",
            vec![label("state", state)],
            n as f64,
        );
    }
    out.add(
        "tunterm_gre_peers_active",
        true,
        "mGRE peers (APs) now",
        vec![],
        stats.gre_peers.len() as f64,
    );
    out.add(
        "tunterm_captures_running",
        true,
        "Packet captures running now (their counters: tunterm_captures_*{id})",
        vec![],
        stats.captures.len() as f64,
    );
    map.remove("tunnels");
    map.remove("gre_peers");

    // Lists of other entities, each with its label.
    let lists = [
        ("/captures", "captures", "id", usize::MAX),
        (
            "/monitoring/checks",
            "monitoring_checks",
            "name",
            usize::MAX,
        ),
        (
            "/services/dhcp_relay_vlans",
            "services_dhcp_relay_vlans",
            "vlan",
            usize::MAX,
        ),
        (
            "/services/host_ports",
            "services_host_ports",
            "vlan",
            usize::MAX,
        ),
        (
            "/clients/storm_dropped_per_ap",
            "clients_storm_dropped_per_ap",
            "ap",
            opts.tunnels,
        ),
    ];
    for (at, prefix, key, max) in lists {
        let Some(Value::Array(items)) = doc.pointer_mut(at).map(Value::take) else {
            continue;
        };
        for item in items.iter().take(max) {
            let id = match item.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => continue,
            };
            let label_key = if key == "name" { "check" } else { key };
            walk(&mut out, prefix, item, &[label(label_key, id)]);
        }
    }
    walk(&mut out, "", &doc, &[]);
    for &(name, gauge, help, v) in extra {
        out.add(name, gauge, help, vec![], v);
    }
    out
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Families({})", self.0.len())
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, fam) in &self.0 {
            let ty = if fam.gauge {
                MetricType::Gauge
            } else {
                MetricType::Counter
            };
            let mut m = encoder.encode_descriptor(name, &fam.help, None, ty)?;
            for (labels, v) in &fam.samples {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let fm = m.encode_family(&labels)?;
                if fam.gauge {
                    ConstGauge::new(*v).encode(fm)?;
                } else {
                    ConstCounter::new(*v).encode(fm)?;
                }
            }
        }
        Ok(())
    }
}

/// The exposition of `stats` in the Prometheus text format (0.0.4), with
/// `extra` unlabelled series (the HTTP server's own counters).
pub fn render(stats: &Stats, opts: MetricsOptions, extra: &[(&str, bool, &str, f64)]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families(stats, opts, extra)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// The Content-Type of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_names_in_base_units() {
        assert_eq!(sanitize("ap_rx"), "ap_rx");
        assert_eq!(sanitize("not-established"), "not_established");
        assert_eq!(sanitize("10"), "_10");
        assert_eq!(
            in_seconds("control_loop_us_max"),
            ("control_loop_seconds_max".into(), 1e-6)
        );
        assert_eq!(in_seconds("uptime"), ("uptime_seconds".into(), 1.0));
        assert_eq!(in_seconds("io_trunk_rx"), ("io_trunk_rx".into(), 1.0));
        assert_eq!(name_for("l2tp_rx_data", false), "tunterm_l2tp_rx_data");
        assert_eq!(name_for("x_count", true), "tunterm_x_count_value");
        assert_eq!(name_for("x_total", false), "tunterm_x");
        assert!(is_gauge("control_active", "active"));
        assert!(is_gauge("fast_path_slow_sequenced", "sequenced"));
        assert!(!is_gauge("io_trunk_rx", "trunk_rx"));
    }

    #[test]
    fn a_family_is_written_once_with_its_samples() {
        let mut f = Families::default();
        let l = |v: &str| vec![label("ap", v)];
        f.add("tunterm_a", false, "A", l("x"), 1.0);
        f.add("tunterm_b", true, "B", vec![], 2.5);
        f.add("tunterm_a", false, "A", l("y"), 3.0);
        f.add("tunterm_a", false, "A", l("y"), 4.0);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(f));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert_eq!(
            out.matches("# TYPE tunterm_a_total counter").count(),
            1,
            "{out}"
        );
        assert!(out.contains("tunterm_a_total{ap=\"x\"} 1"), "{out}");
        assert!(out.contains("tunterm_a_total{ap=\"y\"} 3"), "{out}");
        assert!(!out.contains("} 4"), "{out}");
        assert!(
            out.contains("# TYPE tunterm_b gauge\ntunterm_b 2.5"),
            "{out}"
        );
    }
}
