use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const BASE: &str = r#"{
  "mxedge": {
    "name": "e1",
    "tunterm_ip_config": {"ip": "10.99.0.1", "netmask": "255.255.255.0", "gateway": "10.99.0.254"},
    "tunterm_port_config": {"separate_upstream_downstream": true, "downstream_ports": ["0"], "upstream_ports": ["1"]},
    "mxcluster_id": "c1"
  },
  "mxcluster": {"id": "c1", "tunterm_hosts": ["10.99.0.1"], "tunterm_ap_subnets": ["10.99.0.0/24", "10.98.0.0/24"]},
  "mxtunnels": [
    {"id": "t0", "name": "zero", "vlan_ids": [10]},
    {"id": "t1", "name": "one", "vlan_ids": [20, 21, 22]}
  ],
  "ports": {"0": "ap0", "1": "trunk0"}
}"#;

fn base() -> Value {
    serde_json::from_str(BASE).unwrap()
}

fn load_value(v: &Value) -> Result<EdgeConfig, ConfigError> {
    load_str(&serde_json::to_string_pretty(v).unwrap())
}

/// Sets the value at a JSON pointer, creating missing object members.
fn set(v: &mut Value, pointer: &str, x: Value) {
    let mut cur = v;
    let tokens: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, tok) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        cur = match cur {
            Value::Object(map) => {
                if last {
                    map.insert(tok.to_string(), x);
                    return;
                }
                map.entry(tok.to_string()).or_insert_with(|| json!({}))
            }
            Value::Array(list) => {
                let idx: usize = tok.parse().unwrap();
                if last {
                    list[idx] = x;
                    return;
                }
                &mut list[idx]
            }
            other => panic!("cannot descend into {other} at {tok}"),
        };
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            map.remove(key);
        }
        Value::Array(list) => {
            list.remove(key.parse().unwrap());
        }
        other => panic!("cannot remove from {other}"),
    }
}

fn rejected(v: &Value) -> ConfigError {
    match load_value(v) {
        Ok(cfg) => panic!("accepted: {v:#}\n{cfg:#?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_rejects(v: &Value, path: &str, message_part: &str) {
    let e = rejected(v);
    assert_eq!(e.path, path, "wrong path for error {e}");
    assert!(
        e.message.contains(message_part),
        "message of {e} lacks {message_part:?}"
    );
}

// ---------------------------------------------------------------------------
// The lab default and the documented examples
// ---------------------------------------------------------------------------

#[test]
fn lab_default_validates_and_resolves() {
    let raw = ConfigFile::parse(LAB_DEFAULT).unwrap();
    raw.validate().unwrap();
    let cfg = load_str(LAB_DEFAULT).unwrap();
    assert_eq!(cfg, EdgeConfig::lab_default());
    assert_eq!(cfg.name, "lab-edge");
    assert_eq!(cfg.tunnel_ip, Some(Ipv4Addr::new(10, 99, 0, 1)));
    assert_eq!(cfg.tunnel_prefix, Some(24));
    assert_eq!(cfg.gateway, None);
    assert_eq!(cfg.tunnel_ip6, None);
    assert_eq!(cfg.upstream_interfaces, ["trunk0"]);
    assert_eq!(cfg.downstream_interfaces, ["ap0"]);
    assert_eq!(cfg.upstream_port_vlan_id, 1);
    assert_eq!(cfg.ap_subnets, ["10.99.0.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(
        cfg.raw.ports.as_ref().unwrap().get("0").map(String::as_str),
        Some("ap0")
    );

    assert_eq!(cfg.tunnels.len(), 1);
    let t = &cfg.tunnels[0];
    assert_eq!(t.id, "lab");
    assert_eq!(t.name, "lab");
    assert_eq!(t.protocol, TunnelProtocol::Udp);
    assert_eq!(t.vlans.to_string(), "10,20,30-31");
    assert_eq!(t.vlans.len(), 4);
    assert_eq!(t.default_vlan, 10);
    assert_eq!(t.hello_interval, Duration::from_secs(10));
    assert_eq!(t.hello_retries, 3);
    assert_eq!(t.mtu, 0);

    assert!(cfg.admits("10.99.0.7".parse().unwrap()));
    assert!(cfg.admits("::ffff:10.99.0.7".parse().unwrap()));
    assert!(!cfg.admits("10.98.0.7".parse().unwrap()));
    assert!(!cfg.admits("2001:db8::1".parse().unwrap()));
    assert_eq!(
        cfg.tunnel_by_remote_end_id("lab").map(|t| t.vlans.len()),
        Some(4)
    );
    assert!(cfg.tunnel_by_remote_end_id("nope").is_none());
    assert!(cfg.monitoring().is_empty());
    assert!(cfg.extra_routes().is_empty());
    assert!(cfg.dhcpd_config().is_none());
    assert!(cfg.multicast_config().is_none());
}

#[test]
fn brief_example_loads() {
    let cfg = load_str(
        r#"{
  "mxedge": {
    "name": "lab-edge",
    "tunterm_ip_config": {"ip": "10.99.0.1", "netmask": "255.255.255.0", "gateway": "10.99.0.254"},
    "tunterm_port_config": {"separate_upstream_downstream": true, "downstream_ports": ["0"], "upstream_ports": ["1"], "upstream_port_vlan_id": 1},
    "mxcluster_id": "..."
  },
  "mxcluster": {"name": "lab", "tunterm_ap_subnets": ["10.99.0.0/24"], "tunterm_hosts": ["10.99.0.1"]},
  "mxtunnels": [{"id": "...", "name": "lab", "protocol": "udp", "vlan_ids": [10, 20, "30-31"], "hello_interval": 60, "hello_retries": 7}],
  "ports": {"0": "ap0", "1": "trunk0"}
}"#,
    )
    .unwrap();
    assert_eq!(cfg.gateway, Some(Ipv4Addr::new(10, 99, 0, 254)));
    assert_eq!(cfg.tunnels[0].id, "...");
    assert_eq!(cfg.tunnel_by_remote_end_id("lab").unwrap().id, "...");
    assert_eq!(cfg.tunnels[0].hello_interval, Duration::from_secs(60));
}

/// The mxedge example of the API reference (`GET /orgs/:org_id/mxedges`),
/// with its `//` comments and trailing commas removed.
const MIST_MXEDGE_EXAMPLE: &str = r#"{
    "id": "95ddd29a-6a3c-929e-a431-51a5b09f36a6",
    "name": "Guest",
    "model": "ME-100",
    "magic": "L-NpT5gi-ADR8WTFd4EiQPY3cP5WdSoD",
    "tunterm_registered": true,
    "mxagent_registered": true,

    "mxedge_mgmt": {
        "mist_password": "MIST_PASSWORD",
        "root_password": "ROOT_PASSWORD",
        "config_auto_revert": true
    },

    "oob_ip_config": {
        "type": "static",
        "ip": "10.2.1.10",
        "netmask": "255.255.255.0",
        "gateway": "10.2.1.254",

        "type6": "static",
        "ip6": "2601:1700:43c0:dc0:20c:29ff:fea7:93bc",
        "netmask6": "/64",
        "gateway6": "2601:1700:43c0:dc0::1",

        "dns": ["10.2.1.2", "2601:1700:43c0:dc0::2"]
    },

    "proxy": {
        "url": "http://proxy.internal:8080/"
    },

    "tunterm_ip_config": {
        "ip": "10.2.1.1",
        "netmask": "255.255.255.0",
        "gateway": "10.2.1.254",
        "ip6": "2001:1010:1010:1010::2",
        "netmask6": "/64",
        "gateway6": "2001:1010:1010:1010::1"
    },

    "tunterm_other_ip_configs": {
        "5": {
            "ip": "10.3.3.1",
            "netmask": "255.255.255.0"
        }
    },

    "tunterm_extra_routes": {
        "11.0.0.0/8": {
            "via": "10.3.3.1"
        }
    },

    "tunterm_dhcpd_config": {
        "enabled": false,
        "servers": ["11.2.3.4"],
        "2": {
            "enabled": true,
            "servers": ["11.2.3.44"]
        }
    },

    "tunterm_port_config": {
        "separate_upstream_downstream": true,
        "downstream_ports": ["3"],
        "upstream_ports": [ "0", "1", "2" ],
        "upstream_port_vlan_id": 30
    },

    "tunterm_switch_config": {
        "enabled": true,
        "0": {
            "vlan_ids": [1, 3055],
            "port_vlan_id": 1
        }
    },

    "tunterm_monitoring": [
        {
            "protocol": "ping",
            "host": "10.2.8.15",
            "timeout": 300,

            "port": 80,

            "src_vlan_id": 5
        }
    ],

    "ntp_servers": [],

    "mxcluster_id": "572586b7-f97b-a22b-526c-8b97a3f609c4",

    "tunterm_igmp_snooping_config": {
         "enabled": true,
         "vlan_ids": [2, 3, 5],
         "querier": {
              "query_interval": 125,
              "max_response_time": 10,
              "robustness": 2,
              "version": 3,
              "mtu": 1500
         }
    },

    "tunterm_multicast_config": {
        "mdns": {
            "enabled": true,
            "vlan_ids": [2, 3, 5]
        },
        "ssdp": {
            "enabled": true,
            "vlan_ids": [2, 3, 5]
        }
    }
}"#;

/// The `POST /orgs/:org_id/mxedges` request example (`None` → `null`, a
/// missing comma and trailing commas fixed, comments removed).
const MIST_MXEDGE_CREATE_EXAMPLE: &str = r#"{
    "name": "Guest",
    "model": "ME-100",
    "services": ["tunterm"],
    "versions": {
        "mxagent": "2.4.194",
        "tunterm": "0.1.928-1"
    },
    "ntp_servers": [],
    "mxedge_mgmt": {},
    "oob_ip_config": {},
    "notes": "note for mxedge",
    "proxy": {},
    "tunterm_ip_config": {
        "ip": "10.2.1.1",
        "netmask": "255.255.255.0",
        "gateway": "10.2.1.254"
    },
    "tunterm_port_config": {
        "separate_upstream_downstream": true,
        "downstream_ports": [ "0", "1", "2", "3" ],
        "upstream_ports": [ "0", "1", "2", "3" ],
        "upstream_port_vlan_id": 1
    },
    "tunterm_switch_config": {
        "enabled": true,
        "0": {"vlan_ids": [5, 2, 3], "port_vlan_id": null}
    },
    "mxcluster_id": "572586b7-f97b-a22b-526c-8b97a3f609c4"
}"#;

fn with_tunnel(mxedge: &str) -> String {
    format!(
        r#"{{"mxedge": {mxedge}, "mxtunnels": [{{"name": "HQ", "protocol": "udp", "vlan_ids": [3, 4, 5, "7-9"], "mxcluster_ids": ["572586b7-f97b-a22b-526c-8b97a3f609c4"], "hello_interval": 60, "hello_retries": 3}}]}}"#
    )
}

#[test]
fn mist_mxedge_example_parses_and_resolves() {
    let edge: MxEdge = serde_json::from_str(MIST_MXEDGE_EXAMPLE).unwrap();
    assert_eq!(edge.name.as_deref(), Some("Guest"));
    assert_eq!(edge.other["model"], "ME-100");
    assert_eq!(edge.other["oob_ip_config"]["netmask6"], "/64");
    assert_eq!(
        edge.other["tunterm_switch_config"]["0"]["vlan_ids"],
        json!([1, 3055])
    );

    let text = with_tunnel(MIST_MXEDGE_EXAMPLE);
    let cfg = load_str(&text).unwrap();
    assert_eq!(cfg.name, "Guest");
    assert_eq!(cfg.tunnel_ip, Some(Ipv4Addr::new(10, 2, 1, 1)));
    assert_eq!(cfg.tunnel_prefix, Some(24));
    assert_eq!(cfg.gateway, Some(Ipv4Addr::new(10, 2, 1, 254)));
    assert_eq!(
        cfg.tunnel_ip6,
        Some("2001:1010:1010:1010::2".parse().unwrap())
    );
    // No `ports` map: port names are the interface names.
    assert_eq!(cfg.upstream_interfaces, ["0", "1", "2"]);
    assert_eq!(cfg.downstream_interfaces, ["3"]);
    assert_eq!(cfg.upstream_port_vlan_id, 30);
    assert!(cfg.admits("192.0.2.1".parse().unwrap()));
    assert!(cfg.admits("2001:db8::1".parse().unwrap()));

    let t = &cfg.tunnels[0];
    assert_eq!((t.id.as_str(), t.name.as_str()), ("HQ", "HQ"));
    assert_eq!(t.vlans.to_string(), "3-5,7-9");
    assert_eq!(t.default_vlan, 3);
    assert_eq!(t.hello_retries, 3);

    let dhcpd = cfg.dhcpd_config().unwrap();
    assert!(!dhcpd.enabled);
    assert_eq!(dhcpd.kind, "relay");
    let v2 = dhcpd.for_vlan(2);
    assert!(v2.enabled);
    assert_eq!(v2.servers, ["11.2.3.44"]);
    let v3 = dhcpd.for_vlan(3);
    assert!(!v3.enabled);
    assert_eq!(v3.servers, ["11.2.3.4"]);

    assert_eq!(
        cfg.extra_routes()["11.0.0.0/8"].via.as_deref(),
        Some("10.3.3.1")
    );
    let mon = cfg.monitoring();
    assert_eq!(mon.len(), 1);
    assert_eq!(mon[0].protocol, MonitoringProtocol::Ping);
    assert_eq!(mon[0].src_vlan_id, Some(5));
    let igmp = cfg
        .raw
        .mxedge
        .tunterm_igmp_snooping_config
        .as_ref()
        .unwrap();
    assert!(igmp.enabled);
    assert_eq!(igmp.vlan_ids.to_string(), "2-3,5");
    assert_eq!(igmp.querier.as_ref().unwrap().max_response_time, 10);
    let mc = cfg.multicast_config().unwrap();
    assert!(mc.mdns.enabled && mc.ssdp.enabled && !mc.multicast_all);
    assert!(mc.mdns.vlan_ids.contains(5));

    // The raw objects round-trip through serialization, unknown fields included.
    let again = ConfigFile::parse(&serde_json::to_string(&cfg.raw).unwrap()).unwrap();
    assert_eq!(again, cfg.raw);
    let rejson = serde_json::to_value(&cfg.raw.mxedge).unwrap();
    assert_eq!(
        rejson["tunterm_dhcpd_config"]["2"]["servers"],
        json!(["11.2.3.44"])
    );
    assert_eq!(rejson["tunterm_switch_config"]["enabled"], true);
}

#[test]
fn mist_mxedge_create_example_resolves() {
    let cfg = load_str(&with_tunnel(MIST_MXEDGE_CREATE_EXAMPLE)).unwrap();
    assert_eq!(cfg.upstream_interfaces, ["0", "1", "2", "3"]);
    assert!(cfg.raw.mxedge.other["tunterm_switch_config"]["0"]["port_vlan_id"].is_null());
}

#[test]
fn mist_mxtunnel_example_parses() {
    let t: MxTunnel = serde_json::from_str(
        r#"{
    "name": "HQ",
    "protocol": "udp",
    "vlan_ids": [3, 4, 5, "7-9"],
    "mxcluster_ids": ["572586b7-f97b-a22b-526c-8b97a3f609c4"],
    "anchor_mxtunnel_ids": ["1e970fec-0a7a-4d73-a472-3ef3b6a456aa"],
    "hello_interval": 60,
    "hello_retries": 3,
    "ipsec": {
        "enabled": true,
        "split_tunnel": true,
        "dns_servers": [ "172.16.0.8" ],
        "dns_suffix": ["corp.juniper.com", "juniper.internal"],
        "extra_routes": [
            {"dest": "172.16.0.0/12", "next_hop": "172.16.0.1" }
        ]
    },
    "auto_preemption": {
        "enabled": true,
        "time_of_day": "23:00",
        "day_of_week": "sun"
    }
}"#,
    )
    .unwrap();
    assert_eq!(t.vlan_ids.len(), 4);
    assert_eq!(
        t.ipsec.as_ref().unwrap().extra_routes[0].next_hop,
        "172.16.0.1"
    );
    assert_eq!(
        t.auto_preemption.as_ref().unwrap().day_of_week.as_deref(),
        Some("sun")
    );
    let mut v = base();
    set(&mut v, "/mxtunnels/0", serde_json::to_value(&t).unwrap());
    set(&mut v, "/mxtunnels/0/mxcluster_ids", json!([]));
    load_value(&v).unwrap();
}

// ---------------------------------------------------------------------------
// Defaults, overrides and resolution
// ---------------------------------------------------------------------------

#[test]
fn defaults() {
    let cfg = load_str(
        r#"{"mxedge": {"tunterm_ip_config": {"ip": "10.0.0.1"}},
            "mxtunnels": [{"name": "t", "vlan_ids": ["5"]}]}"#,
    )
    .unwrap();
    assert_eq!(cfg.name, "tunterm");
    assert_eq!(cfg.tunnel_prefix, None);
    assert_eq!(cfg.upstream_port_vlan_id, 1);
    assert!(cfg.upstream_interfaces.is_empty() && cfg.downstream_interfaces.is_empty());
    assert_eq!(
        cfg.ap_subnets,
        [
            "0.0.0.0/0".parse::<IpNet>().unwrap(),
            "::/0".parse().unwrap()
        ]
    );
    assert!(cfg.admits(IpAddr::from([203, 0, 113, 9])));
    let t = &cfg.tunnels[0];
    assert_eq!(t.id, "t");
    assert_eq!(t.protocol, TunnelProtocol::Udp);
    assert_eq!(t.hello_interval, Duration::from_secs(60));
    assert_eq!(t.hello_retries, 7);
    assert_eq!(t.mtu, 0);
    assert_eq!(t.default_vlan, 5);

    let raw = &cfg.raw.mxtunnels[0];
    assert_eq!(raw.hello_interval, DEFAULT_HELLO_INTERVAL);
    assert_eq!(MonitoringCheck::default().timeout, 300);
    assert_eq!(TuntermDhcpdConfig::default().kind, "relay");
    assert_eq!(
        MxCluster::default().tunterm_hosts_selection,
        HostsSelection::Shuffle
    );
}

#[test]
fn explicit_values_resolve() {
    let mut v = base();
    set(&mut v, "/mxtunnels/1/protocol", json!("ip"));
    set(&mut v, "/mxtunnels/1/hello_interval", json!(0.5));
    set(&mut v, "/mxtunnels/1/hello_retries", json!(30));
    set(&mut v, "/mxtunnels/1/mtu", json!(552));
    set(&mut v, "/mxtunnels/1/vlan_ids", json!(["30-31", 10, 30]));
    set(&mut v, "/mxedge/tunterm_ip_config/netmask", json!("/20"));
    set(
        &mut v,
        "/mxedge/tunterm_ip_config/ip6",
        json!("2001:db8::1"),
    );
    set(&mut v, "/mxedge/tunterm_ip_config/netmask6", json!("/64"));
    set(
        &mut v,
        "/mxedge/tunterm_port_config/upstream_port_vlan_id",
        json!(4094),
    );
    let cfg = load_value(&v).unwrap();
    let t = cfg.tunnel_by_remote_end_id("t1").unwrap();
    assert_eq!(t.name, "one");
    assert_eq!(t.protocol, TunnelProtocol::Ip);
    assert_eq!(t.hello_interval, Duration::from_millis(500));
    assert_eq!(t.hello_retries, 30);
    assert_eq!(t.mtu, 552);
    // The default VLAN is the first one written, not the lowest.
    assert_eq!(t.default_vlan, 30);
    assert_eq!(t.vlans.first(), Some(10));
    assert_eq!(t.vlans.to_string(), "10,30-31");
    assert_eq!(cfg.tunnel_by_remote_end_id("one").unwrap().id, "t1");
    assert_eq!(cfg.tunnel_prefix, Some(20));
    assert_eq!(cfg.tunnel_ip6, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(cfg.upstream_port_vlan_id, 4094);
    assert!(cfg.admits("10.98.0.1".parse().unwrap()));
    assert!(!cfg.admits("10.97.0.1".parse().unwrap()));
}

#[test]
fn empty_strings_are_absent() {
    let mut v = base();
    set(&mut v, "/mxedge/tunterm_ip_config/ip6", json!(""));
    set(&mut v, "/mxedge/tunterm_ip_config/gateway", json!(""));
    set(&mut v, "/mxedge/name", json!(""));
    let cfg = load_value(&v).unwrap();
    assert_eq!((cfg.tunnel_ip6, cfg.gateway), (None, None));
    assert_eq!(cfg.name, "tunterm");
}

#[test]
fn mxedge_overrides_mxcluster() {
    let mut v = base();
    set(
        &mut v,
        "/mxcluster/tunterm_monitoring",
        json!([{"protocol": "tcp", "host": "10.0.0.9", "port": 443}]),
    );
    set(
        &mut v,
        "/mxcluster/tunterm_extra_routes",
        json!({"11.0.0.0/8": {"via": "10.99.0.254"}}),
    );
    set(
        &mut v,
        "/mxcluster/tunterm_dhcpd_config",
        json!({"enabled": true, "servers": ["10.0.0.53"]}),
    );
    set(
        &mut v,
        "/mxcluster/tunterm_multicast_config",
        json!({"multicast_all": true}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.monitoring()[0].protocol, MonitoringProtocol::Tcp);
    assert_eq!(cfg.monitoring()[0].timeout, 300);
    // The cluster's checks can be turned off for the cluster as a whole.
    set(
        &mut v,
        "/mxcluster/tunterm_monitoring_disabled",
        json!(true),
    );
    assert!(load_value(&v).unwrap().monitoring().is_empty());
    set(
        &mut v,
        "/mxcluster/tunterm_monitoring_disabled",
        json!(false),
    );
    assert!(cfg.extra_routes().contains_key("11.0.0.0/8"));
    assert_eq!(
        cfg.dhcpd_config().unwrap().for_vlan(7).servers,
        ["10.0.0.53"]
    );
    assert!(cfg.multicast_config().unwrap().multicast_all);

    set(&mut v, "/mxedge/tunterm_monitoring", json!([]));
    set(
        &mut v,
        "/mxedge/tunterm_extra_routes",
        json!({"12.0.0.0/8": {"via": "10.99.0.253"}}),
    );
    set(
        &mut v,
        "/mxedge/tunterm_dhcpd_config",
        json!({"enabled": false}),
    );
    set(&mut v, "/mxedge/tunterm_multicast_config", json!({}));
    let cfg = load_value(&v).unwrap();
    assert!(cfg.monitoring().is_empty());
    assert_eq!(
        cfg.extra_routes().keys().collect::<Vec<_>>(),
        ["12.0.0.0/8"]
    );
    assert!(!cfg.dhcpd_config().unwrap().enabled);
    assert!(!cfg.multicast_config().unwrap().multicast_all);
}

#[test]
fn port_roles() {
    // Not separated, no lists: every port of `ports` plays both roles, in
    // numeric order.
    let mut v = base();
    set(&mut v, "/mxedge/tunterm_port_config", json!({}));
    set(
        &mut v,
        "/ports",
        json!({"10": "eth10", "2": "eth2", "a": "ethA"}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.upstream_interfaces, ["eth2", "eth10", "ethA"]);
    assert_eq!(cfg.downstream_interfaces, cfg.upstream_interfaces);

    // Separated with one list: the other role defaults to all ports.
    set(
        &mut v,
        "/mxedge/tunterm_port_config",
        json!({"separate_upstream_downstream": true, "upstream_ports": ["10"]}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.upstream_interfaces, ["eth10"]);
    assert_eq!(cfg.downstream_interfaces, ["eth2", "eth10", "ethA"]);

    // Not separated with lists: the union, for both roles.
    set(
        &mut v,
        "/mxedge/tunterm_port_config",
        json!({"upstream_ports": ["10"], "downstream_ports": ["2", "10"]}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.upstream_interfaces, ["eth10", "eth2"]);
    assert_eq!(cfg.downstream_interfaces, ["eth10", "eth2"]);

    // No `ports`: names are interface names.
    remove(&mut v, "/ports");
    set(
        &mut v,
        "/mxedge/tunterm_port_config",
        json!({"separate_upstream_downstream": true, "upstream_ports": ["eth1", "eth1"], "downstream_ports": ["veth-ap"]}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.upstream_interfaces, ["eth1"]);
    assert_eq!(cfg.downstream_interfaces, ["veth-ap"]);
}

#[test]
fn tunnels_of_other_clusters_are_not_terminated() {
    let mut v = base();
    set(&mut v, "/mxtunnels/0/mxcluster_ids", json!(["c2"]));
    set(&mut v, "/mxtunnels/1/mxcluster_ids", json!(["c2", "c1"]));
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.tunnels.len(), 1);
    assert_eq!(cfg.tunnels[0].name, "one");
    assert_eq!(cfg.raw.mxtunnels.len(), 2);
    assert!(cfg.tunnel_by_remote_end_id("zero").is_none());

    set(&mut v, "/mxtunnels/1/mxcluster_ids", json!(["c3"]));
    assert_rejects(
        &v,
        "mxtunnels",
        "none of the 2 mxtunnels is deployed to mxcluster \"c1\"",
    );
}

#[test]
fn unknown_fields_are_tolerated_and_kept() {
    let mut v = base();
    set(&mut v, "/future_top_level", json!({"x": 1}));
    set(&mut v, "/mxedge/some_new_field", json!([1, 2]));
    set(&mut v, "/mxedge/tunterm_ip_config/vrrp", json!(true));
    set(&mut v, "/mxedge/tunterm_port_config/lacp", json!("fast"));
    set(
        &mut v,
        "/mxedge/tunterm_dhcpd_config",
        json!({"enabled": false, "option82": {"a": 1}, "2": {"enabled": false, "relay_agent": "x"}}),
    );
    set(&mut v, "/mxcluster/radsec", json!({"enabled": true}));
    set(
        &mut v,
        "/mxcluster/tunterm_monitoring",
        json!([{"host": "h", "weird": 1}]),
    );
    set(&mut v, "/mxtunnels/0/for_site", json!(false));
    set(
        &mut v,
        "/mxtunnels/0/ipsec",
        json!({"enabled": false, "ike": {}}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.raw.mxedge.other["some_new_field"], json!([1, 2]));
    assert_eq!(
        cfg.raw.mxcluster.as_ref().unwrap().other["radsec"]["enabled"],
        true
    );
    assert_eq!(cfg.raw.mxtunnels[0].other["for_site"], false);
    assert_eq!(cfg.dhcpd_config().unwrap().vlans.len(), 1);
}

#[test]
fn load_file_reads_and_reports_io_errors() {
    let path =
        std::env::temp_dir().join(format!("tunterm-control-test-{}.json", std::process::id()));
    std::fs::write(&path, LAB_DEFAULT).unwrap();
    let cfg = load_file(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(cfg.unwrap().name, "lab-edge");

    let e = load_file(&path).unwrap_err();
    assert_eq!(e.path, "");
    assert!(e.message.contains(&path.display().to_string()), "{e}");
    assert!(e.message.starts_with("cannot read config file "), "{e}");
    assert_eq!(e.to_string(), e.message);
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[test]
fn base_config_is_valid() {
    let cfg = load_value(&base()).unwrap();
    assert_eq!(cfg.tunnels.len(), 2);
}

#[test]
fn hello_interval_range() {
    let mut v = base();
    set(&mut v, "/mxtunnels/0/hello_interval", json!(0.1));
    let e = rejected(&v);
    assert_eq!(e.path, "mxtunnels[0].hello_interval");
    assert_eq!(e.message, "must be between 0.5 and 300, got 0.1");
    assert_eq!(
        e.to_string(),
        "mxtunnels[0].hello_interval: must be between 0.5 and 300, got 0.1"
    );
    set(&mut v, "/mxtunnels/0/hello_interval", json!(300.5));
    assert_rejects(&v, "mxtunnels[0].hello_interval", "got 300.5");
    set(&mut v, "/mxtunnels/0/hello_interval", json!(300));
    load_value(&v).unwrap();
}

#[test]
fn workers_setting() {
    // Absent: the daemon's default (None here).
    assert_eq!(load_value(&base()).unwrap().workers(), None);
    let mut v = base();
    for n in [1, 2, 64] {
        set(&mut v, "/mxedge/tunterm_workers", json!(n));
        assert_eq!(load_value(&v).unwrap().workers(), Some(n));
    }
    set(&mut v, "/mxedge/tunterm_workers", json!(0));
    let e = rejected(&v);
    assert_eq!(
        e.to_string(),
        "mxedge.tunterm_workers: must be between 1 and 64, got 0"
    );
    set(&mut v, "/mxedge/tunterm_workers", json!(65));
    assert_rejects(&v, "mxedge.tunterm_workers", "between 1 and 64, got 65");
    for bad in [json!(-1), json!(2.5), json!("2")] {
        set(&mut v, "/mxedge/tunterm_workers", bad);
        assert_rejects(&v, "mxedge.tunterm_workers", "invalid");
    }
    // Kept on a round trip (apply-config --persist writes the file back).
    set(&mut v, "/mxedge/tunterm_workers", json!(3));
    let cfg = load_value(&v).unwrap();
    let again = load_str(&serde_json::to_string(&cfg.raw).unwrap()).unwrap();
    assert_eq!(again.workers(), Some(3));
}

#[test]
fn tunnel_rules() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "/mxtunnels/1/hello_retries",
            json!(0),
            "mxtunnels[1].hello_retries",
            "must be between 1 and 30, got 0",
        ),
        (
            "/mxtunnels/1/hello_retries",
            json!(31),
            "mxtunnels[1].hello_retries",
            "got 31",
        ),
        (
            "/mxtunnels/0/protocol",
            json!("tcp"),
            "mxtunnels[0].protocol",
            "unknown variant `tcp`",
        ),
        (
            "/mxtunnels/0/mtu",
            json!(551),
            "mxtunnels[0].mtu",
            "must be 0 (automatic) or between 552 and 1500, got 551",
        ),
        (
            "/mxtunnels/0/mtu",
            json!(1501),
            "mxtunnels[0].mtu",
            "got 1501",
        ),
        (
            "/mxtunnels/1/vlan_ids/2",
            json!(4095),
            "mxtunnels[1].vlan_ids[2]",
            "VLAN id 4095 is out of range 1..=4094",
        ),
        (
            "/mxtunnels/1/vlan_ids/2",
            json!(0),
            "mxtunnels[1].vlan_ids[2]",
            "VLAN id 0 is out of range",
        ),
        (
            "/mxtunnels/1/vlan_ids/2",
            json!(-3),
            "mxtunnels[1].vlan_ids[2]",
            "VLAN id -3 is out of range",
        ),
        (
            "/mxtunnels/1/vlan_ids/2",
            json!("9-7"),
            "mxtunnels[1].vlan_ids[2]",
            "VLAN range 9-7 is reversed",
        ),
        (
            "/mxtunnels/1/vlan_ids/2",
            json!("1-5000"),
            "mxtunnels[1].vlan_ids[2]",
            "VLAN id 5000 is out of range",
        ),
        (
            "/mxtunnels/1/vlan_ids/2",
            json!("seven"),
            "mxtunnels[1].vlan_ids[2]",
            "invalid VLAN id or range \"seven\"",
        ),
        (
            "/mxtunnels/1/vlan_ids/1",
            json!(2.5),
            "mxtunnels[1].vlan_ids[1]",
            "invalid type: floating point",
        ),
        (
            "/mxtunnels/1/vlan_ids",
            json!([]),
            "mxtunnels[1].vlan_ids",
            "at least one VLAN",
        ),
        (
            "/mxtunnels/1/name",
            json!(""),
            "mxtunnels[1].name",
            "required",
        ),
        (
            "/mxtunnels/1/name",
            json!("  "),
            "mxtunnels[1].name",
            "required",
        ),
        (
            "/mxtunnels/1/name",
            json!("zero"),
            "mxtunnels[1].name",
            "duplicate tunnel name \"zero\" (also mxtunnels[0].name)",
        ),
        (
            "/mxtunnels/1/id",
            json!("t0"),
            "mxtunnels[1].id",
            "duplicate tunnel id \"t0\"",
        ),
        (
            "/mxtunnels",
            json!([]),
            "mxtunnels",
            "at least one mxtunnel (or an mGRE WLAN in wlans) is required",
        ),
        (
            "/mxtunnels/0/ipsec",
            json!({"dns_servers": ["dns.example"]}),
            "mxtunnels[0].ipsec.dns_servers[0]",
            "expected an IP address",
        ),
        (
            "/mxtunnels/0/ipsec",
            json!({"extra_routes": [{"dest": "10.0.0.0", "next_hop": "10.0.0.1"}]}),
            "mxtunnels[0].ipsec.extra_routes[0].dest",
            "expected a CIDR",
        ),
        (
            "/mxtunnels/0/auto_preemption",
            json!({"time_of_day": "24:00"}),
            "mxtunnels[0].auto_preemption.time_of_day",
            "HH:MM",
        ),
        (
            "/mxtunnels/0/auto_preemption",
            json!({"day_of_week": "sunday"}),
            "mxtunnels[0].auto_preemption.day_of_week",
            "any / mon",
        ),
    ];
    for (pointer, value, path, message) in cases {
        let mut v = base();
        set(&mut v, pointer, value);
        assert_rejects(&v, path, message);
    }
    let mut v = base();
    remove(&mut v, "/mxtunnels");
    assert_rejects(
        &v,
        "mxtunnels",
        "at least one mxtunnel (or an mGRE WLAN in wlans) is required",
    );
    let mut v = base();
    remove(&mut v, "/mxtunnels/1/name");
    assert_rejects(&v, "mxtunnels[1].name", "required");
    // Tunnels without ids may share nothing but are fine.
    let mut v = base();
    remove(&mut v, "/mxtunnels/0/id");
    remove(&mut v, "/mxtunnels/1/id");
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.tunnels[1].id, "one");
    // Boundaries accepted.
    let mut v = base();
    set(&mut v, "/mxtunnels/0/mtu", json!(1500));
    set(&mut v, "/mxtunnels/0/hello_retries", json!(1));
    set(
        &mut v,
        "/mxtunnels/0/vlan_ids",
        json!([1, "4094", "1-4094", 1]),
    );
    set(
        &mut v,
        "/mxtunnels/0/auto_preemption",
        json!({"time_of_day": "00:59", "day_of_week": "any"}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.tunnels[0].vlans.len(), 4094);
}

#[test]
fn mxedge_address_rules() {
    let p = "mxedge.tunterm_ip_config";
    let cases: Vec<(&str, Value, String, &str)> = vec![
        (
            "/mxedge/tunterm_ip_config/ip",
            json!("10.0.0.300"),
            format!("{p}.ip"),
            "expected an IPv4 address, got \"10.0.0.300\"",
        ),
        (
            "/mxedge/tunterm_ip_config/ip",
            json!("2001:db8::1"),
            format!("{p}.ip"),
            "expected an IPv4 address",
        ),
        (
            "/mxedge/tunterm_ip_config/ip",
            json!(""),
            format!("{p}.ip"),
            "required",
        ),
        (
            "/mxedge/tunterm_ip_config/netmask",
            json!("255.0.255.0"),
            format!("{p}.netmask"),
            "not contiguous",
        ),
        (
            "/mxedge/tunterm_ip_config/netmask",
            json!("255.255.255.1"),
            format!("{p}.netmask"),
            "not contiguous",
        ),
        (
            "/mxedge/tunterm_ip_config/netmask",
            json!("24"),
            format!("{p}.netmask"),
            "expected a netmask like \"255.255.255.0\"",
        ),
        (
            "/mxedge/tunterm_ip_config/netmask",
            json!("/33"),
            format!("{p}.netmask"),
            "prefix length",
        ),
        (
            "/mxedge/tunterm_ip_config/gateway",
            json!("gw"),
            format!("{p}.gateway"),
            "expected an IPv4 address",
        ),
        (
            "/mxedge/tunterm_ip_config/ip6",
            json!("10.0.0.1"),
            format!("{p}.ip6"),
            "expected an IPv6 address",
        ),
        (
            "/mxedge/tunterm_ip_config/netmask6",
            json!("/129"),
            format!("{p}.netmask6"),
            "like \"/64\"",
        ),
        (
            "/mxedge/tunterm_ip_config/netmask6",
            json!("ffff::"),
            format!("{p}.netmask6"),
            "like \"/64\"",
        ),
        (
            "/mxedge/tunterm_ip_config/gateway6",
            json!("fe80::1::2"),
            format!("{p}.gateway6"),
            "expected an IPv6 address",
        ),
        (
            "/mxedge/tunterm_other_ip_configs",
            json!({"5000": {"ip": "10.5.0.1", "netmask": "255.255.255.0"}}),
            "mxedge.tunterm_other_ip_configs.5000".into(),
            "not a VLAN id",
        ),
        (
            "/mxedge/tunterm_other_ip_configs",
            json!({"5": {"ip": "10.5.0.1"}}),
            "mxedge.tunterm_other_ip_configs.5.netmask".into(),
            "required",
        ),
        (
            "/mxedge/tunterm_other_ip_configs",
            json!({"5": {"ip": "10.5.0.x", "netmask": "255.255.255.0"}}),
            "mxedge.tunterm_other_ip_configs.5.ip".into(),
            "IPv4",
        ),
        (
            "/mxedge/tunterm_extra_routes",
            json!({"11.0.0.0/33": {"via": "10.99.0.254"}}),
            "mxedge.tunterm_extra_routes.11.0.0.0/33".into(),
            "expected a CIDR",
        ),
        (
            "/mxedge/tunterm_extra_routes",
            json!({"11.0.0.0/8": {}}),
            "mxedge.tunterm_extra_routes.11.0.0.0/8.via".into(),
            "required",
        ),
        (
            "/mxedge/tunterm_extra_routes",
            json!({"2001:db8::/32": {"via": "10.99.0.254"}}),
            "mxedge.tunterm_extra_routes.2001:db8::/32.via".into(),
            "same address family",
        ),
        (
            "/mxedge/tunterm_dhcpd_config",
            json!({"2": {"enabled": true, "servers": ["dhcp.example"]}}),
            "mxedge.tunterm_dhcpd_config.2.servers[0]".into(),
            "expected an IP address",
        ),
        (
            "/mxedge/tunterm_dhcpd_config",
            json!({"2": {"enabled": true}}),
            "mxedge.tunterm_dhcpd_config.2.servers".into(),
            "required when enabled",
        ),
        (
            "/mxedge/tunterm_dhcpd_config",
            json!({"enabled": true}),
            "mxedge.tunterm_dhcpd_config.servers".into(),
            "required when enabled",
        ),
        (
            "/mxedge/tunterm_dhcpd_config",
            json!({"0": {}}),
            "mxedge.tunterm_dhcpd_config.0".into(),
            "not a VLAN id",
        ),
        (
            "/mxedge/tunterm_monitoring",
            json!([{"host": "10.0.0.1", "timeout": 59}]),
            "mxedge.tunterm_monitoring[0].timeout".into(),
            "must be between 60 and 3600, got 59",
        ),
        (
            "/mxedge/tunterm_monitoring",
            json!([{"protocol": "tcp", "host": "10.0.0.1"}]),
            "mxedge.tunterm_monitoring[0].port".into(),
            "required when protocol is tcp",
        ),
        (
            "/mxedge/tunterm_monitoring",
            json!([{"protocol": "arp", "host": "gw.example"}]),
            "mxedge.tunterm_monitoring[0].host".into(),
            "IPv4",
        ),
        (
            "/mxedge/tunterm_monitoring",
            json!([{"protocol": "dns", "host": "h"}]),
            "mxedge.tunterm_monitoring[0].protocol".into(),
            "unknown variant",
        ),
        (
            "/mxedge/tunterm_monitoring",
            json!([{"host": ""}]),
            "mxedge.tunterm_monitoring[0].host".into(),
            "required",
        ),
        (
            "/mxedge/tunterm_igmp_snooping_config",
            json!({"querier": {"robustness": 8}}),
            "mxedge.tunterm_igmp_snooping_config.querier.robustness".into(),
            "between 1 and 7",
        ),
        (
            "/mxedge/tunterm_igmp_snooping_config",
            json!({"vlan_ids": [1, "3-2"]}),
            "mxedge.tunterm_igmp_snooping_config.vlan_ids[1]".into(),
            "reversed",
        ),
        (
            "/mxedge/tunterm_client_config",
            json!({"max_age": 5}),
            "mxedge.tunterm_client_config.max_age".into(),
            "between 10 and 86400",
        ),
        (
            "/mxedge/tunterm_client_config",
            json!({"arp_nd_proxy_off_vlan_ids": [0]}),
            "mxedge.tunterm_client_config.arp_nd_proxy_off_vlan_ids[0]".into(),
            "out of range",
        ),
        (
            "/mxedge/tunterm_multicast_config",
            json!({"mdns": {"vlan_ids": [4095]}}),
            "mxedge.tunterm_multicast_config.mdns.vlan_ids[0]".into(),
            "out of range",
        ),
    ];
    for (pointer, value, path, message) in cases {
        let mut v = base();
        set(&mut v, pointer, value);
        assert_rejects(&v, &path, message);
    }
    for pointer in [
        "/mxedge/tunterm_ip_config/ip",
        "/mxedge/tunterm_ip_config",
        "/mxedge",
    ] {
        let mut v = base();
        remove(&mut v, pointer);
        assert_rejects(&v, "mxedge.tunterm_ip_config.ip", "required");
    }
    // Accepted netmask forms.
    for mask in ["255.255.255.255", "0.0.0.0", "255.255.128.0", "/16"] {
        let mut v = base();
        set(&mut v, "/mxedge/tunterm_ip_config/netmask", json!(mask));
        load_value(&v).unwrap();
    }
}

#[test]
fn port_rules() {
    let p = "mxedge.tunterm_port_config";
    let cases: Vec<(&str, Value, String, &str)> = vec![
        (
            "/mxedge/tunterm_port_config/upstream_port_vlan_id",
            json!(0),
            format!("{p}.upstream_port_vlan_id"),
            "must be between 1 and 4094, got 0",
        ),
        (
            "/mxedge/tunterm_port_config/upstream_port_vlan_id",
            json!(4095),
            format!("{p}.upstream_port_vlan_id"),
            "got 4095",
        ),
        (
            "/mxedge/tunterm_port_config/upstream_ports",
            json!(["1", "7"]),
            format!("{p}.upstream_ports[1]"),
            "port \"7\" is not defined in ports (defined: \"0\", \"1\")",
        ),
        (
            "/mxedge/tunterm_port_config/downstream_ports",
            json!(["x"]),
            format!("{p}.downstream_ports[0]"),
            "not defined in ports",
        ),
        (
            "/ports/1",
            json!("trunk/0"),
            "ports.1".into(),
            "not a valid interface name",
        ),
        (
            "/ports/1",
            json!("a-very-long-interface-name"),
            "ports.1".into(),
            "not a valid interface name",
        ),
        (
            "/ports/1",
            json!(""),
            "ports.1".into(),
            "not a valid interface name",
        ),
    ];
    for (pointer, value, path, message) in cases {
        let mut v = base();
        set(&mut v, pointer, value);
        assert_rejects(&v, &path, message);
    }
    // Without `ports`, the names themselves must be interface names.
    let mut v = base();
    remove(&mut v, "/ports");
    set(
        &mut v,
        "/mxedge/tunterm_port_config/upstream_ports",
        json!(["eth 1"]),
    );
    assert_rejects(
        &v,
        &format!("{p}.upstream_ports[0]"),
        "not a valid interface name",
    );
}

#[test]
fn mxcluster_rules() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "/mxcluster/tunterm_ap_subnets/1",
            json!("10.98.0.0/33"),
            "mxcluster.tunterm_ap_subnets[1]",
            "expected a CIDR",
        ),
        (
            "/mxcluster/tunterm_ap_subnets/1",
            json!("10.98.0.0"),
            "mxcluster.tunterm_ap_subnets[1]",
            "expected a CIDR",
        ),
        (
            "/mxcluster/tunterm_hosts_order",
            json!([0, 1]),
            "mxcluster.tunterm_hosts_order[1]",
            "past the end of tunterm_hosts (1 entries)",
        ),
        (
            "/mxcluster/tunterm_hosts_selection",
            json!("random"),
            "mxcluster.tunterm_hosts_selection",
            "unknown variant",
        ),
        (
            "/mxcluster/tunterm_hosts/0",
            json!(""),
            "mxcluster.tunterm_hosts[0]",
            "must not be empty",
        ),
        (
            "/mxcluster/id",
            json!("c2"),
            "mxcluster.id",
            "\"c2\" does not match mxedge.mxcluster_id \"c1\"",
        ),
        (
            "/mxcluster/tunterm_monitoring",
            json!([{"host": "h", "timeout": 4000}]),
            "mxcluster.tunterm_monitoring[0].timeout",
            "between 60 and 3600",
        ),
        (
            "/mxcluster/tunterm_extra_routes",
            json!({"x": {"via": "10.0.0.1"}}),
            "mxcluster.tunterm_extra_routes.x",
            "expected a CIDR",
        ),
        (
            "/mxcluster/tunterm_dhcpd_config",
            json!({"9": {"enabled": true, "servers": []}}),
            "mxcluster.tunterm_dhcpd_config.9.servers",
            "required when enabled",
        ),
    ];
    for (pointer, value, path, message) in cases {
        let mut v = base();
        set(&mut v, pointer, value);
        assert_rejects(&v, path, message);
    }
    // An empty list of AP subnets means the default (any).
    let mut v = base();
    set(&mut v, "/mxcluster/tunterm_ap_subnets", json!([]));
    set(
        &mut v,
        "/mxcluster/tunterm_hosts_selection",
        json!("shuffle-by-site"),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.ap_subnets.len(), 2);
    // Host bits in a subnet are dropped.
    set(
        &mut v,
        "/mxcluster/tunterm_ap_subnets",
        json!(["10.99.0.77/24"]),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.ap_subnets[0].to_string(), "10.99.0.0/24");
}

#[test]
fn type_errors_carry_their_path() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "/mxtunnels/0/hello_retries",
            json!("7"),
            "mxtunnels[0].hello_retries",
            "invalid type: string \"7\", expected u32",
        ),
        (
            "/mxtunnels/1/hello_interval",
            json!("60"),
            "mxtunnels[1].hello_interval",
            "invalid type: string",
        ),
        (
            "/mxtunnels/1/hello_retries",
            json!(-1),
            "mxtunnels[1].hello_retries",
            "invalid value: integer `-1`",
        ),
        (
            "/mxtunnels/0/vlan_ids",
            json!("10,x"),
            "mxtunnels[0].vlan_ids",
            "invalid type: string",
        ),
        (
            "/mxedge/tunterm_ip_config/ip",
            json!(10),
            "mxedge.tunterm_ip_config.ip",
            "invalid type: integer",
        ),
        (
            "/mxedge/tunterm_port_config/upstream_ports",
            json!([1]),
            "mxedge.tunterm_port_config.upstream_ports[0]",
            "invalid type: integer",
        ),
        (
            "/mxedge/tunterm_port_config/separate_upstream_downstream",
            json!("yes"),
            "mxedge.tunterm_port_config.separate_upstream_downstream",
            "expected a boolean",
        ),
        (
            "/mxedge/tunterm_dhcpd_config",
            json!({"2": {"servers": "11.2.3.4"}}),
            "mxedge.tunterm_dhcpd_config.2.servers",
            "invalid type: string",
        ),
        (
            "/mxedge/tunterm_dhcpd_config",
            json!({"enabled": "true"}),
            "mxedge.tunterm_dhcpd_config.enabled",
            "invalid type: string",
        ),
        (
            "/mxedge/tunterm_other_ip_configs",
            json!({"5": "10.5.0.1"}),
            "mxedge.tunterm_other_ip_configs.5",
            "invalid type: string",
        ),
        (
            "/mxcluster/tunterm_ap_subnets",
            json!("10.0.0.0/8"),
            "mxcluster.tunterm_ap_subnets",
            "invalid type: string",
        ),
        ("/ports/0", json!(0), "ports.0", "invalid type: integer"),
        (
            "/mxtunnels/0",
            json!("lab"),
            "mxtunnels[0]",
            "invalid type: string",
        ),
    ];
    for (pointer, value, path, message) in cases {
        let mut v = base();
        set(&mut v, pointer, value);
        assert_rejects(&v, path, message);
    }

    // Whole-file problems have an empty path and display as the bare message.
    let e = load_str("42").unwrap_err();
    assert_eq!(e.path, "");
    assert!(e.message.starts_with("invalid type: integer `42`"), "{e}");
    assert_eq!(e.to_string(), e.message);
    let e = load_str(&format!("{BASE} x")).unwrap_err();
    assert_eq!(e.path, "");
    assert!(e.message.contains("trailing characters"), "{e}");
    // Malformed JSON is located by line and column.
    let e = load_str("{\"mxedge\": {\"name\": \"a\",}}").unwrap_err();
    assert_eq!(e.path, "");
    assert_eq!(
        e.message,
        "invalid JSON: trailing comma at line 1 column 25"
    );
    let e = load_str("{\"mxedge\": {").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid JSON: EOF while parsing an object at line 1 column 12"
    );
}

#[test]
fn config_error_display() {
    assert_eq!(ConfigError::new("a.b[1]", "bad").to_string(), "a.b[1]: bad");
    assert_eq!(ConfigError::new("", "bad").to_string(), "bad");
}

#[test]
fn mgre_wlans_make_an_mgre_endpoint() {
    let mut v = base();
    v["wlans"] = json!([
        {"ssid": "Corp-Tunneled", "vlan_ids": [210, "212-213"], "auth": {"type": "eap"},
         "mist_edges": [], "tunnel_protocol": "mgre"},
        {"ssid": "Guest", "vlan_ids": [300], "tunnel_protocol": "mgre", "mgre_peer_timeout": 45},
        {"ssid": "Local", "vlan_ids": [5]},
        {"ssid": "Elsewhere", "vlan_ids": [7], "tunnel_protocol": "mgre", "mist_edges": ["some-other-cluster"]}
    ]);
    let cfg = EdgeConfig::from_raw(serde_json::from_value(v).unwrap()).unwrap();
    let m = cfg.mgre.expect("mGRE configured");
    assert_eq!(m.ssids, ["Corp-Tunneled", "Guest"]);
    assert_eq!(m.vlans.to_string(), "210,212-213,300");
    assert_eq!(m.default_vlan, 210);
    assert_eq!(m.peer_timeout, std::time::Duration::from_secs(45));
}

#[test]
fn mgre_only_edge_needs_no_mxtunnel_and_checks_its_fields() {
    let mut v = base();
    v["mxtunnels"] = json!([]);
    v["wlans"] = json!([{"ssid": "Corp", "vlan_ids": [10], "tunnel_protocol": "mgre"}]);
    assert!(EdgeConfig::from_raw(serde_json::from_value(v.clone()).unwrap()).is_ok());
    v["wlans"][0]["vlan_ids"] = json!([]);
    assert_rejects(&v, "wlans[0].vlan_ids", "at least one VLAN");
    v["wlans"][0]["vlan_ids"] = json!([10]);
    v["wlans"][0]["mgre_peer_timeout"] = json!(0.1);
    assert_rejects(&v, "wlans[0].mgre_peer_timeout", "between");
}

#[test]
fn a_check_sourced_from_a_vlan_needs_the_edges_address_there() {
    let mut v = base();
    set(
        &mut v,
        "/mxedge/tunterm_monitoring",
        json!([
            {"protocol": "arp", "host": "10.0.0.1", "src_vlan_id": 30},
            {"protocol": "ping", "host": "10.0.0.9", "src_vlan_id": 30}
        ]),
    );
    let e = load_value(&v).unwrap_err();
    assert_eq!(e.path, "mxedge.tunterm_monitoring[1].src_vlan_id", "{e}");
    assert!(e.to_string().contains("VLAN 30 has no address"), "{e}");
    // With the address, it loads; an ARP check needs none.
    set(
        &mut v,
        "/mxedge/tunterm_other_ip_configs",
        json!({"30": {"ip": "10.30.0.2", "netmask": "255.255.255.0"}}),
    );
    let cfg = load_value(&v).unwrap();
    assert_eq!(cfg.monitoring().len(), 2);
    // The cluster's checks are held to the edge's addresses too.
    let mut v = base();
    set(
        &mut v,
        "/mxcluster/tunterm_monitoring",
        json!([{"protocol": "tcp", "host": "10.0.0.9", "port": 443, "src_vlan_id": 31}]),
    );
    let e = load_value(&v).unwrap_err();
    assert_eq!(e.path, "mxcluster.tunterm_monitoring[0].src_vlan_id", "{e}");
}

#[test]
fn oversized_and_overnested_text_is_refused_before_parsing() {
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    assert!(check_bounds(&deep(MAX_CONFIG_DEPTH)).is_ok());
    let e = load_str(&deep(MAX_CONFIG_DEPTH + 1)).unwrap_err();
    assert_eq!(e.path, "");
    assert_eq!(
        e.message,
        format!(
            "configuration nested deeper than {MAX_CONFIG_DEPTH} levels at line 1 column {}",
            MAX_CONFIG_DEPTH + 1
        )
    );
    // Escaped quotes do not end a string, and brackets in strings are text.
    assert!(check_bounds(&format!("{{\"a\": \"\\\"{}\"}}", "[".repeat(1000))).is_ok());
    let big = " ".repeat(MAX_CONFIG_BYTES + 1);
    let e = load_str(&big).unwrap_err();
    assert!(e.message.contains("too large"), "{e}");
    let e = read_bounded(big.as_bytes(), "<stdin>").unwrap_err();
    assert!(
        e.message.starts_with(&format!(
            "config file <stdin> is too large: more than {MAX_CONFIG_BYTES} bytes"
        )),
        "{e}"
    );
    assert_eq!(read_bounded(&b"{}"[..], "x").unwrap(), "{}");
    let e = read_bounded(&b"\xff{}"[..], "x").unwrap_err();
    assert!(e.message.contains("not UTF-8"), "{e}");
}
