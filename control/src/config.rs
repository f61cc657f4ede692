//! The configuration file: the Mist API's `mxedge`, `mxcluster` and `mxtunnel`
//! objects (with the API's own field names), validation with JSON paths, and
//! the resolved view ([`EdgeConfig`]) the daemon runs from.
//!
//! ```json
//! {
//!   "mxedge": { "tunterm_ip_config": { "ip": "10.99.0.1", "netmask": "255.255.255.0" }, ... },
//!   "mxcluster": { "tunterm_ap_subnets": ["10.99.0.0/24"], ... },
//!   "mxtunnels": [ { "name": "lab", "vlan_ids": [10, 20, "30-31"] } ],
//!   "ports": { "0": "ap0", "1": "trunk0" }
//! }
//! ```
//!
//! Loading is two steps: [`ConfigFile::parse`] deserializes (type errors carry
//! the JSON path of the offending value) and [`EdgeConfig::from_raw`] checks the
//! values and resolves them; [`load_str`] and [`load_file`] do both.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::vlan::{VLAN_MAX, VLAN_MIN, VlanEntry, VlanSet};

/// The embedded default configuration for the netns lab demo: tunnel address
/// 10.99.0.1/24, AP port `"0"` → `ap0`, upstream trunk port `"1"` → `trunk0`
/// (native VLAN 1), APs admitted from 10.99.0.0/24, and one UDP mxtunnel
/// `"lab"` carrying VLANs 10, 20, 30-31 with a 10 s hello and 3 retries.
pub const LAB_DEFAULT: &str = include_str!("lab-default.json");

/// Name of the edge when `mxedge.name` is absent or empty.
pub const DEFAULT_EDGE_NAME: &str = "tunterm";
/// Default `mxtunnel.hello_interval`, in seconds.
pub const DEFAULT_HELLO_INTERVAL: f64 = 60.0;
/// Default `mxtunnel.hello_retries`.
pub const DEFAULT_HELLO_RETRIES: u32 = 7;
/// Default `tunterm_port_config.upstream_port_vlan_id`.
pub const DEFAULT_UPSTREAM_PORT_VLAN_ID: u32 = 1;
/// Default `tunterm_monitoring[].timeout`, in seconds.
pub const DEFAULT_MONITORING_TIMEOUT: u32 = 300;
/// Default DHCP `type` (per the API, the only documented one).
pub const DEFAULT_DHCPD_TYPE: &str = "relay";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A configuration error, located by the JSON path of the offending field.
///
/// Paths use the same notation as `serde_path_to_error`: object keys joined by
/// `.`, array indices in brackets, e.g. `mxtunnels[1].vlan_ids[2]` or
/// `mxedge.tunterm_dhcpd_config.2.servers[0]`. The path is empty for errors
/// about the file as a whole (unreadable file, malformed JSON at the top
/// level); such errors display as the bare message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending field, `""` for the whole file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

// ---------------------------------------------------------------------------
// The file and the Mist objects, as written
// ---------------------------------------------------------------------------

/// The configuration file as written: the Mist objects plus the local `ports`
/// map. Unknown fields are ignored at this level and kept in the `other` map
/// of [`MxEdge`], [`MxCluster`] and [`MxTunnel`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigFile {
    /// This edge.
    pub mxedge: MxEdge,
    /// The cluster this edge belongs to; its settings apply where `mxedge`
    /// does not set its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mxcluster: Option<MxCluster>,
    /// The Mist Tunnels. Tunnels whose `mxcluster_ids` name other clusters
    /// are kept here but not terminated (see [`EdgeConfig::tunnels`]).
    pub mxtunnels: Vec<MxTunnel>,
    /// Local extension: Mist port name (`"0"`, `"1"`, …) → Linux interface.
    /// When absent, port names are used as interface names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<BTreeMap<String, String>>,
    /// Tunneled WLANs. Those with `"tunnel_protocol": "mgre"` make this
    /// edge an mGRE endpoint for their VLANs (see [`EdgeConfig::mgre`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wlans: Vec<Wlan>,
}

/// A WLAN (`wlans` object): the fields of a tunneled SSID tunterm reads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Wlan {
    /// The SSID.
    pub ssid: String,
    /// VLANs of the WLAN; the first carries untagged frames.
    pub vlan_ids: Vec<VlanEntry>,
    /// `mgre` for mGRE tunnels to Mist Edges; anything else is not ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_protocol: Option<String>,
    /// The edge clusters (mxcluster name or id) that terminate it; empty:
    /// every edge.
    pub mist_edges: Vec<String>,
    /// Local extension: seconds of silence after which an mGRE peer (AP) is
    /// removed (default [`DEFAULT_MGRE_PEER_TIMEOUT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mgre_peer_timeout: Option<f64>,
    /// Fields tunterm does not interpret, kept as written.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Default seconds of silence before an mGRE peer is removed (three missed
/// 10 s keepalives).
pub const DEFAULT_MGRE_PEER_TIMEOUT: f64 = 30.0;

/// A Mist Edge (`mxedge`): the fields tunterm interprets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MxEdge {
    /// Object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Edge name; the resolved name defaults to [`DEFAULT_EDGE_NAME`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address of the tunnel interface (untagged, VLAN `upstream_port_vlan_id`).
    /// `ip` is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_ip_config: Option<TuntermIpConfig>,
    /// The edge's own addresses on tunneled VLANs, keyed by VLAN id (a string).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tunterm_other_ip_configs: BTreeMap<String, VlanIpConfig>,
    /// Extra routes for tunneled VLANs, keyed by destination CIDR; overrides
    /// the cluster's when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_extra_routes: Option<BTreeMap<String, ExtraRoute>>,
    /// DHCP relay settings; overrides the cluster's when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_dhcpd_config: Option<TuntermDhcpdConfig>,
    /// Which ports face the APs and which face the LAN.
    pub tunterm_port_config: TuntermPortConfig,
    /// Upstream health checks; overrides the cluster's when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_monitoring: Option<Vec<MonitoringCheck>>,
    /// IGMP snooping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_igmp_snooping_config: Option<IgmpSnoopingConfig>,
    /// mDNS / SSDP forwarding; overrides the cluster's when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_multicast_config: Option<MulticastConfig>,
    /// The client table, ARP/ND containment and storm control (local
    /// extension; absent: the defaults, all on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_client_config: Option<ClientTableConfig>,
    /// Threads of the userspace data path, 1 to [`MAX_WORKERS`] (local
    /// extension; absent: 1). `tunterm run --workers` overrides it; a
    /// change waits for a restart. See [`EdgeConfig::workers`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_workers: Option<u32>,
    /// The cluster this edge belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mxcluster_id: Option<String>,
    /// Every other field of the object, kept as written (`model`,
    /// `oob_ip_config`, `proxy`, `tunterm_switch_config`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Most threads of the userspace data path (`mxedge.tunterm_workers`,
/// `tunterm run --workers`): the event loop plus 63 forwarding workers.
pub const MAX_WORKERS: u16 = 64;

/// `tunterm_ip_config`: the tunnel interface's addresses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TuntermIpConfig {
    /// IPv4 address (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// IPv4 netmask, dotted (`"255.255.255.0"`; `"/24"` is accepted too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// IPv4 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    /// IPv6 prefix length, written `"/64"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask6: Option<String>,
    /// IPv6 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

/// One entry of `tunterm_other_ip_configs`: the edge's address on a VLAN.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VlanIpConfig {
    /// IPv4 address (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// IPv4 netmask (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
}

/// One entry of `tunterm_extra_routes` (the key is the destination CIDR).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtraRoute {
    /// Next hop (required), of the same address family as the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// `tunterm_dhcpd_config`: global DHCP relay settings plus per-VLAN overrides
/// under VLAN-id keys:
///
/// ```json
/// { "enabled": false, "servers": ["11.2.3.4"],
///   "2": { "enabled": true, "servers": ["11.2.3.44"] } }
/// ```
///
/// Deserialization is hand-written rather than `#[serde(flatten)]`ed so that
/// errors inside a per-VLAN object keep their exact path and unknown
/// non-numeric keys are ignored like unknown fields elsewhere; every key made
/// of digits is taken as a VLAN key (and checked to be in `1..=4094`).
/// Serialization flattens `vlans` back next to the global fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuntermDhcpdConfig {
    /// Whether DHCP relay is enabled on VLANs without their own entry
    /// (default false).
    pub enabled: bool,
    /// `"relay"` (default).
    #[serde(rename = "type")]
    pub kind: String,
    /// DHCP servers; required when enabled with type `relay`.
    pub servers: Vec<String>,
    /// Per-VLAN settings, keyed by VLAN id as written.
    #[serde(flatten)]
    pub vlans: BTreeMap<String, DhcpdVlanConfig>,
}

impl Default for TuntermDhcpdConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            kind: DEFAULT_DHCPD_TYPE.to_string(),
            servers: Vec::new(),
            vlans: BTreeMap::new(),
        }
    }
}

impl TuntermDhcpdConfig {
    /// The settings that apply on `vlan`: its own entry if it has one, else
    /// the global ones.
    pub fn for_vlan(&self, vlan: u16) -> DhcpdVlanConfig {
        self.vlans
            .iter()
            .find(|(key, _)| key.parse::<u16>() == Ok(vlan))
            .map(|(_, cfg)| cfg.clone())
            .unwrap_or_else(|| DhcpdVlanConfig {
                enabled: self.enabled,
                kind: self.kind.clone(),
                servers: self.servers.clone(),
            })
    }
}

impl<'de> Deserialize<'de> for TuntermDhcpdConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DhcpdVisitor;

        impl<'de> Visitor<'de> for DhcpdVisitor {
            type Value = TuntermDhcpdConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tunterm_dhcpd_config object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut cfg = TuntermDhcpdConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "enabled" => cfg.enabled = map.next_value()?,
                        "type" => cfg.kind = map.next_value()?,
                        "servers" => cfg.servers = map.next_value()?,
                        k if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => {
                            let vlan = map.next_value()?;
                            cfg.vlans.insert(key, vlan);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(cfg)
            }
        }

        deserializer.deserialize_map(DhcpdVisitor)
    }
}

/// Per-VLAN DHCP relay settings (a VLAN-id key of `tunterm_dhcpd_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DhcpdVlanConfig {
    /// Whether DHCP relay is enabled on this VLAN (default false).
    pub enabled: bool,
    /// `"relay"` (default).
    #[serde(rename = "type")]
    pub kind: String,
    /// DHCP servers; required when enabled with type `relay`.
    pub servers: Vec<String>,
}

impl Default for DhcpdVlanConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            kind: DEFAULT_DHCPD_TYPE.to_string(),
            servers: Vec::new(),
        }
    }
}

/// `tunterm_port_config`: the roles of the edge's Ethernet ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuntermPortConfig {
    /// Whether upstream and downstream ports are separate (default false:
    /// every port is used for both).
    pub separate_upstream_downstream: bool,
    /// Ports toward the APs (default: all ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_ports: Option<Vec<String>>,
    /// Ports toward the LAN, 802.1Q trunks (default: all ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ports: Option<Vec<String>>,
    /// Native (untagged) VLAN of the upstream ports, 1..=4094 (default 1).
    pub upstream_port_vlan_id: u32,
}

impl Default for TuntermPortConfig {
    fn default() -> Self {
        Self {
            separate_upstream_downstream: false,
            downstream_ports: None,
            upstream_ports: None,
            upstream_port_vlan_id: DEFAULT_UPSTREAM_PORT_VLAN_ID,
        }
    }
}

/// Protocol of a [`MonitoringCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitoringProtocol {
    /// ARP for an IPv4 host.
    Arp,
    /// ICMP echo (tunterm's default when `protocol` is absent).
    #[default]
    Ping,
    /// TCP connect to `port`.
    Tcp,
}

/// One entry of `tunterm_monitoring`: an upstream health check. While checks
/// fail the edge stops taking tunnels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringCheck {
    /// `arp` / `ping` / `tcp` (default `ping`).
    pub protocol: MonitoringProtocol,
    /// IP, IPv6 or hostname to check (required; an IPv4 address for `arp`).
    pub host: String,
    /// Seconds, 60..=3600 (default 300).
    pub timeout: u32,
    /// TCP port, required when `protocol` is `tcp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// VLAN (configured in `tunterm_other_ip_configs`) to source the check from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_vlan_id: Option<u32>,
}

impl Default for MonitoringCheck {
    fn default() -> Self {
        Self {
            protocol: MonitoringProtocol::default(),
            host: String::new(),
            timeout: DEFAULT_MONITORING_TIMEOUT,
            port: None,
            src_vlan_id: None,
        }
    }
}

/// `tunterm_igmp_snooping_config`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IgmpSnoopingConfig {
    /// Whether IGMP snooping is enabled (default false).
    pub enabled: bool,
    /// VLANs on which tunterm snoops.
    pub vlan_ids: VlanSet,
    /// Querier settings; without it tunterm does not act as querier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub querier: Option<IgmpQuerier>,
}

/// `tunterm_igmp_snooping_config.querier`. The API documents no defaults;
/// absent fields take the RFC 3376 defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IgmpQuerier {
    /// Query interval in seconds (default 125).
    pub query_interval: u32,
    /// Max response time in tenths of seconds (default 100).
    pub max_response_time: u32,
    /// Robustness variable, 1..=7 (default 2).
    pub robustness: u32,
    /// Highest IGMP version spoken, 1..=3 (default 3).
    pub version: u32,
    /// MTU for building large IGMPv3 reports (default 1500).
    pub mtu: u32,
}

impl Default for IgmpQuerier {
    fn default() -> Self {
        Self {
            query_interval: 125,
            max_response_time: 100,
            robustness: 2,
            version: 3,
            mtu: 1500,
        }
    }
}

/// `tunterm_multicast_config`: mDNS / SSDP forwarding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MulticastConfig {
    /// mDNS forwarding.
    pub mdns: MulticastService,
    /// SSDP forwarding.
    pub ssdp: MulticastService,
    /// Forward all multicast (default false).
    pub multicast_all: bool,
}

/// One service of [`MulticastConfig`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MulticastService {
    /// Whether forwarding is enabled (default false).
    pub enabled: bool,
    /// VLANs on which it is enabled.
    pub vlan_ids: VlanSet,
}

/// `mxedge.tunterm_client_config` (local extension): the client table,
/// ARP/ND containment and storm control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTableConfig {
    /// Clients in the table, at most (default 200,000).
    pub max_clients: u32,
    /// Seconds a silent client stays in the table (default 300).
    pub max_age: u32,
    /// ARP requests and neighbour solicitations for a known client only
    /// down its tunnel; clients' announcements to the trunk only (default
    /// true).
    pub arp_nd_proxy: bool,
    /// VLANs where that is off all the same.
    pub arp_nd_proxy_off_vlan_ids: VlanSet,
    /// Per tunnel (AP session) rate limits.
    pub storm_control: StormControlConfig,
}

impl Default for ClientTableConfig {
    fn default() -> Self {
        Self {
            max_clients: 200_000,
            max_age: 300,
            arp_nd_proxy: true,
            arp_nd_proxy_off_vlan_ids: VlanSet::new(),
            storm_control: StormControlConfig::default(),
        }
    }
}

/// `tunterm_client_config.storm_control`: frames per second each tunnel
/// may send into the switch, per class (0: unlimited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StormControlConfig {
    /// Whether storm control is on (default true).
    pub enabled: bool,
    /// Broadcast frames per second (default 200).
    pub broadcast_pps: u32,
    /// Multicast frames per second (default 500).
    pub multicast_pps: u32,
    /// Unknown-unicast frames per second (default 200).
    pub unknown_unicast_pps: u32,
    /// Tunnel copies of flooded frames per second, from every ingress and
    /// VLAN together (default 200,000; 0: unlimited).
    pub flood_copies_pps: u32,
}

impl Default for StormControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            broadcast_pps: 200,
            multicast_pps: 500,
            unknown_unicast_pps: 200,
            flood_copies_pps: 200_000,
        }
    }
}

/// `mxcluster.tunterm_hosts_selection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostsSelection {
    /// Order randomized by the AP's MAC (default).
    #[default]
    Shuffle,
    /// Order randomized by site id + tunnel id.
    ShuffleBySite,
    /// Order given by `tunterm_hosts_order`.
    Ordered,
}

/// A Mist Edge Cluster (`mxcluster`): the fields tunterm interprets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MxCluster {
    /// Object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Cluster name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hostnames or IPs the APs use as tunnel peers.
    pub tunterm_hosts: Vec<String>,
    /// Subnets APs may build tunnels from (default: any, `0.0.0.0/0` and `::/0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_ap_subnets: Option<Vec<String>>,
    /// How APs order `tunterm_hosts` (default `shuffle`).
    pub tunterm_hosts_selection: HostsSelection,
    /// Indices into `tunterm_hosts`, used when `ordered`.
    pub tunterm_hosts_order: Vec<u32>,
    /// Upstream health checks for every edge of the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_monitoring: Option<Vec<MonitoringCheck>>,
    /// The cluster's `tunterm_monitoring` is off (an edge's own list still
    /// applies).
    pub tunterm_monitoring_disabled: bool,
    /// Extra routes for tunneled VLANs, keyed by destination CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_extra_routes: Option<BTreeMap<String, ExtraRoute>>,
    /// DHCP relay settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_dhcpd_config: Option<TuntermDhcpdConfig>,
    /// mDNS / SSDP forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunterm_multicast_config: Option<MulticastConfig>,
    /// Every other field of the object, kept as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Transport of a Mist Tunnel's L2TPv3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProtocol {
    /// L2TPv3 over UDP port 1701 (default).
    #[default]
    Udp,
    /// L2TPv3 directly over IP (protocol 115).
    Ip,
}

impl fmt::Display for TunnelProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Ip => "ip",
        })
    }
}

/// A Mist Tunnel (`mxtunnel`): the fields tunterm interprets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MxTunnel {
    /// Object id; the resolved id falls back to `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tunnel name (required, unique).
    pub name: String,
    /// `udp` (default) or `ip`.
    pub protocol: TunnelProtocol,
    /// VLAN ids and ranges carried, in the order written (at least one; the
    /// first is the sessions' default VLAN).
    pub vlan_ids: Vec<VlanEntry>,
    /// Clusters the tunnel is deployed to (empty: all).
    pub mxcluster_ids: Vec<String>,
    /// Anchor tunnels for edge-to-edge tunnels.
    pub anchor_mxtunnel_ids: Vec<String>,
    /// Hello interval in seconds, 0.5..=300 (default 60).
    pub hello_interval: f64,
    /// Hellos missed before the peer is declared dead, 1..=30 (default 7).
    pub hello_retries: u32,
    /// Tunnel MTU: 0 (automatic, default) or 552..=1500.
    pub mtu: u32,
    /// IPsec settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<MxTunnelIpsec>,
    /// Scheduled preemption of APs to their preferred peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_preemption: Option<AutoPreemption>,
    /// Every other field of the object, kept as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Default for MxTunnel {
    fn default() -> Self {
        Self {
            id: None,
            name: String::new(),
            protocol: TunnelProtocol::default(),
            vlan_ids: Vec::new(),
            mxcluster_ids: Vec::new(),
            anchor_mxtunnel_ids: Vec::new(),
            hello_interval: DEFAULT_HELLO_INTERVAL,
            hello_retries: DEFAULT_HELLO_RETRIES,
            mtu: 0,
            ipsec: None,
            auto_preemption: None,
            other: Map::new(),
        }
    }
}

/// `mxtunnel.ipsec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MxTunnelIpsec {
    /// Whether IPsec is enabled (default false).
    pub enabled: bool,
    /// Split tunnel (default false).
    pub split_tunnel: bool,
    /// DNS servers (IP addresses).
    pub dns_servers: Vec<String>,
    /// DNS search suffixes.
    pub dns_suffix: Vec<String>,
    /// Routes pushed to the client.
    pub extra_routes: Vec<IpsecRoute>,
}

/// One entry of `mxtunnel.ipsec.extra_routes`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IpsecRoute {
    /// Destination CIDR.
    pub dest: String,
    /// Next hop address.
    pub next_hop: String,
}

/// `mxtunnel.auto_preemption`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoPreemption {
    /// Whether auto preemption happens (default false).
    pub enabled: bool,
    /// `any` or `HH:MM` (24-hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<String>,
    /// `any` / `mon` / `tue` / `wed` / `thu` / `fri` / `sat` / `sun`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<String>,
}

impl ConfigFile {
    /// Deserializes a configuration file without checking its values. Type
    /// errors (a string where a number belongs, …) and malformed JSON come
    /// back with the JSON path where they were found; text over the bounds
    /// of [`check_bounds`] is refused first.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        check_bounds(json)?;
        let mut de = serde_json::Deserializer::from_str(json);
        let file: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                // Malformed JSON: the line and column say where, and the
                // path so far would end in an unknown `?` segment.
                return ConfigError::new("", format!("invalid JSON: {inner}"));
            }
            let path = if path == "." { String::new() } else { path };
            ConfigError::new(path, inner.to_string())
        })?;
        de.end()
            .map_err(|e| ConfigError::new("", format!("invalid JSON: {e}")))?;
        Ok(file)
    }

    /// Checks every value (see the crate README for the rules); the first
    /// problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        EdgeConfig::from_raw(self.clone()).map(drop)
    }
}

// ---------------------------------------------------------------------------
// The resolved view
// ---------------------------------------------------------------------------

/// The validated configuration in the form the daemon uses. Settings that
/// exist on both the mxedge and the mxcluster are taken from the mxedge when
/// it sets them (the API's rule), else from the mxcluster.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// `mxedge.name`, or [`DEFAULT_EDGE_NAME`].
    pub name: String,
    /// `tunterm_ip_config.ip`.
    pub tunnel_ip: Option<Ipv4Addr>,
    /// Prefix length of `tunterm_ip_config.netmask`.
    pub tunnel_prefix: Option<u8>,
    /// `tunterm_ip_config.gateway`.
    pub gateway: Option<Ipv4Addr>,
    /// `tunterm_ip_config.ip6`.
    pub tunnel_ip6: Option<Ipv6Addr>,
    /// Interfaces of the upstream ports, mapped through `ports`.
    pub upstream_interfaces: Vec<String>,
    /// Interfaces of the downstream (AP-facing) ports, mapped through `ports`.
    pub downstream_interfaces: Vec<String>,
    /// Native VLAN of the upstream ports.
    pub upstream_port_vlan_id: u16,
    /// Subnets APs may build tunnels from (truncated to their network).
    pub ap_subnets: Vec<IpNet>,
    /// The tunnels this edge terminates: those deployed to its cluster.
    pub tunnels: Vec<TunnelConfig>,
    /// mGRE termination, when some WLAN for this edge has
    /// `"tunnel_protocol": "mgre"`.
    pub mgre: Option<MgreConfig>,
    /// The parsed Mist objects, as written.
    pub raw: ConfigFile,
}

/// Resolved mGRE termination: the union of the mGRE WLANs for this edge.
#[derive(Debug, Clone, PartialEq)]
pub struct MgreConfig {
    /// SSIDs of the WLANs.
    pub ssids: Vec<String>,
    /// VLANs an AP may send over mGRE.
    pub vlans: VlanSet,
    /// VLAN of untagged frames: the first VLAN of the first mGRE WLAN.
    pub default_vlan: u16,
    /// A peer (AP) silent this long is removed and its MACs flushed.
    pub peer_timeout: Duration,
}

/// A resolved Mist Tunnel.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelConfig {
    /// `mxtunnel.id`, or the name when there is no id.
    pub id: String,
    /// The mxtunnel had no id (`id` is its name): a hand-written
    /// configuration, which a cloud's copy with ids may replace.
    pub id_from_name: bool,
    /// `mxtunnel.name`.
    pub name: String,
    /// L2TPv3 transport.
    pub protocol: TunnelProtocol,
    /// VLANs the tunnel carries.
    pub vlans: VlanSet,
    /// First VLAN id of `vlan_ids` in the order written: the VLAN of untagged
    /// frames from the AP.
    pub default_vlan: u16,
    /// Hello interval.
    pub hello_interval: Duration,
    /// Hellos missed before the peer is declared dead.
    pub hello_retries: u32,
    /// Tunnel MTU, 0 for automatic.
    pub mtu: u16,
}

static NO_ROUTES: BTreeMap<String, ExtraRoute> = BTreeMap::new();

impl EdgeConfig {
    /// The embedded lab configuration, [`LAB_DEFAULT`], resolved. (It cannot
    /// fail: the constant is checked by the unit tests.)
    pub fn lab_default() -> Self {
        // LAB_DEFAULT is a constant checked by the unit tests.
        load_str(LAB_DEFAULT).unwrap_or_else(|e| panic!("LAB_DEFAULT is invalid: {e}"))
    }

    /// Validates `raw` and resolves it.
    pub fn from_raw(raw: ConfigFile) -> Result<Self, ConfigError> {
        resolve(raw)
    }

    /// The tunnel an AP names by its L2TPv3 remote end id: matched against
    /// tunnel ids first, then names.
    pub fn tunnel_by_remote_end_id(&self, id: &str) -> Option<&TunnelConfig> {
        self.tunnels
            .iter()
            .find(|t| t.id == id)
            .or_else(|| self.tunnels.iter().find(|t| t.name == id))
    }

    /// Whether an AP at `ip` may build tunnels (its address is inside one of
    /// the `ap_subnets`). IPv4-mapped IPv6 addresses count as IPv4.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ap_subnets.iter().any(|net| net.contains(&ip))
    }

    /// `mxedge.tunterm_workers`: threads of the userspace data path, when
    /// the file sets them (validated: 1 to [`MAX_WORKERS`]); None: the
    /// daemon's default, 1.
    pub fn workers(&self) -> Option<usize> {
        self.raw.mxedge.tunterm_workers.map(|n| n as usize)
    }

    fn cluster(&self) -> Option<&MxCluster> {
        self.raw.mxcluster.as_ref()
    }

    /// Effective `tunterm_monitoring` (mxedge's, else mxcluster's unless
    /// `tunterm_monitoring_disabled`, else none).
    pub fn monitoring(&self) -> &[MonitoringCheck] {
        self.raw
            .mxedge
            .tunterm_monitoring
            .as_deref()
            .or_else(|| {
                let c = self.cluster()?;
                (!c.tunterm_monitoring_disabled)
                    .then_some(c.tunterm_monitoring.as_deref())
                    .flatten()
            })
            .unwrap_or(&[])
    }

    /// Effective `tunterm_extra_routes`, keyed by destination CIDR.
    pub fn extra_routes(&self) -> &BTreeMap<String, ExtraRoute> {
        self.raw
            .mxedge
            .tunterm_extra_routes
            .as_ref()
            .or_else(|| self.cluster()?.tunterm_extra_routes.as_ref())
            .unwrap_or(&NO_ROUTES)
    }

    /// The edge's IPv4 addresses on VLANs (`tunterm_other_ip_configs`):
    /// VLAN id, address, prefix length, in VLAN order. (Validated when the
    /// configuration was loaded.)
    pub fn vlan_addresses(&self) -> Vec<(u16, Ipv4Addr, u8)> {
        self.raw
            .mxedge
            .tunterm_other_ip_configs
            .iter()
            .filter_map(|(key, c)| {
                let vlan = key.parse().ok()?;
                let ip = given(&c.ip)?.parse().ok()?;
                let len = parse_netmask4("", given(&c.netmask)?).ok()?;
                Some((vlan, ip, len))
            })
            .collect()
    }

    /// `tunterm_ip_config`'s IPv6 prefix length and gateways:
    /// (`netmask6`, `gateway6`). (Validated when loaded.)
    pub fn ip6_settings(&self) -> (Option<u8>, Option<Ipv6Addr>) {
        let Some(c) = self.raw.mxedge.tunterm_ip_config.as_ref() else {
            return (None, None);
        };
        let len = given(&c.netmask6).and_then(|s| parse_netmask6("", s).ok());
        let gw = given(&c.gateway6).and_then(|s| s.parse().ok());
        (len, gw)
    }

    /// Effective `tunterm_dhcpd_config` (`None`: no DHCP relay).
    pub fn dhcpd_config(&self) -> Option<&TuntermDhcpdConfig> {
        self.raw
            .mxedge
            .tunterm_dhcpd_config
            .as_ref()
            .or_else(|| self.cluster()?.tunterm_dhcpd_config.as_ref())
    }

    /// Effective `tunterm_multicast_config` (`None`: no mDNS / SSDP forwarding).
    pub fn multicast_config(&self) -> Option<&MulticastConfig> {
        self.raw
            .mxedge
            .tunterm_multicast_config
            .as_ref()
            .or_else(|| self.cluster()?.tunterm_multicast_config.as_ref())
    }
}

/// Parses, validates and resolves a configuration file's text.
pub fn load_str(json: &str) -> Result<EdgeConfig, ConfigError> {
    EdgeConfig::from_raw(ConfigFile::parse(json)?)
}

/// Reads, parses, validates and resolves a configuration file. I/O errors
/// have an empty path and name the file in the message; a file over
/// [`MAX_CONFIG_BYTES`] is refused without being read (see [`read_file`]).
pub fn load_file(path: &Path) -> Result<EdgeConfig, ConfigError> {
    load_str(&read_file(path)?)
}

// ---------------------------------------------------------------------------
// Bounds on local input
// ---------------------------------------------------------------------------

/// Largest configuration accepted, in bytes (4 MiB). The lab default is
/// under 2 KiB and a full Mist configuration with a hundred mxtunnels and
/// their VLAN lists is well under 1 MiB; anything near the cap is a wrong
/// file, not a configuration.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting of JSON arrays and objects accepted (the documented
/// fields need 5 levels; unknown fields are kept as JSON, and this bounds
/// them too). Lower than `serde_json`'s own recursion limit (128) so the
/// error is ours and names the line.
pub const MAX_CONFIG_DEPTH: usize = 64;

/// Reads a configuration file of at most [`MAX_CONFIG_BYTES`]: a regular
/// file whose size says it is bigger is refused before any byte is read,
/// and a stream (a pipe, `/dev/zero`) is read at most one byte past the cap,
/// so memory stays bounded whatever the path names.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    let name = path.display();
    let io =
        |e: std::io::Error| ConfigError::new("", format!("cannot read config file {name}: {e}"));
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_CONFIG_BYTES as u64 {
        return Err(too_big(&name.to_string(), Some(len)));
    }
    read_bounded(file, &name.to_string())
}

/// Reads at most [`MAX_CONFIG_BYTES`] of configuration from `input` (a file
/// or standard input), named `what` in errors.
pub fn read_bounded(input: impl std::io::Read, what: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    input
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::new("", format!("cannot read config file {what}: {e}")))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_big(what, None));
    }
    String::from_utf8(bytes).map_err(|e| {
        ConfigError::new(
            "",
            format!(
                "config file {what} is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The refusal of `what`: `len` is its size when known, `None` when a
/// stream went past the cap.
fn too_big(what: &str, len: Option<u64>) -> ConfigError {
    let size = match len {
        Some(len) => format!("{len} bytes"),
        None => format!("more than {MAX_CONFIG_BYTES} bytes"),
    };
    ConfigError::new(
        "",
        format!(
            "config file {what} is too large: {size}; the limit is {MAX_CONFIG_BYTES} bytes \
             ({} MiB)",
            MAX_CONFIG_BYTES >> 20
        ),
    )
}

/// Refuses text over [`MAX_CONFIG_BYTES`] or nested deeper than
/// [`MAX_CONFIG_DEPTH`], naming the line and column where the limit is
/// crossed. One pass over the bytes, no allocation: it runs before the
/// parser so neither the parser nor the kept unknown fields see such input.
pub fn check_bounds(json: &str) -> Result<(), ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return Err(too_big("text", Some(json.len() as u64)));
    }
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in json.as_bytes().iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_CONFIG_DEPTH {
                    let column = json[line_start..=i].chars().count();
                    return Err(ConfigError::new(
                        "",
                        format!(
                            "configuration nested deeper than {MAX_CONFIG_DEPTH} levels at line \
                             {line} column {column}"
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// An optional string field, treating `""` as absent (the API often sends
/// empty strings for unset addresses).
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.is_empty())
}

fn check_between<T: PartialOrd + fmt::Display>(
    path: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(err(
            path,
            format!("must be between {lo} and {hi}, got {value}"),
        ));
    }
    Ok(())
}

fn parse_ipv4(path: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.parse()
        .map_err(|_| err(path, format!("expected an IPv4 address, got {s:?}")))
}

fn parse_ipv6(path: &str, s: &str) -> Result<Ipv6Addr, ConfigError> {
    s.parse()
        .map_err(|_| err(path, format!("expected an IPv6 address, got {s:?}")))
}

fn parse_ip(path: &str, s: &str) -> Result<IpAddr, ConfigError> {
    s.parse()
        .map_err(|_| err(path, format!("expected an IP address, got {s:?}")))
}

fn parse_cidr(path: &str, s: &str) -> Result<IpNet, ConfigError> {
    s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
        err(
            path,
            format!("expected a CIDR like \"10.0.0.0/24\" or \"2001:db8::/32\", got {s:?}"),
        )
    })
}

fn parse_prefix_len(s: &str, max: u8) -> Option<u8> {
    let digits = s.strip_prefix('/').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u8>().ok().filter(|&len| len <= max)
}

/// A dotted IPv4 netmask (contiguous) or `"/N"`; returns the prefix length.
fn parse_netmask4(path: &str, s: &str) -> Result<u8, ConfigError> {
    if s.starts_with('/') {
        return parse_prefix_len(s, 32)
            .ok_or_else(|| err(path, format!("expected a prefix length /0../32, got {s:?}")));
    }
    let mask: Ipv4Addr = s.parse().map_err(|_| {
        err(
            path,
            format!("expected a netmask like \"255.255.255.0\", got {s:?}"),
        )
    })?;
    let bits = u32::from(mask);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(err(
            path,
            format!("netmask {s:?} is not contiguous (ones then zeros)"),
        ));
    }
    Ok(bits.leading_ones() as u8)
}

/// An IPv6 prefix length written `"/64"` (or `"64"`).
fn parse_netmask6(path: &str, s: &str) -> Result<u8, ConfigError> {
    parse_prefix_len(s, 128).ok_or_else(|| {
        err(
            path,
            format!("expected an IPv6 prefix length like \"/64\" (/0../128), got {s:?}"),
        )
    })
}

/// A VLAN id written as an object key.
fn parse_vlan_key(path: &str, key: &str) -> Result<u16, ConfigError> {
    key.parse::<u16>()
        .ok()
        .filter(|id| (VLAN_MIN..=VLAN_MAX).contains(id))
        .ok_or_else(|| err(path, format!("key {key:?} is not a VLAN id in 1..=4094")))
}

/// A Linux interface name as the kernel accepts it (`dev_valid_name`).
fn check_ifname(path: &str, name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(err(
            path,
            format!("{name:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"),
        ));
    }
    Ok(())
}

fn check_ip_list(path: &str, list: &[String]) -> Result<(), ConfigError> {
    for (i, s) in list.iter().enumerate() {
        parse_ip(&format!("{path}[{i}]"), s)?;
    }
    Ok(())
}

fn check_ip_config(path: &str, c: &TuntermIpConfig) -> Result<(), ConfigError> {
    // `ip` itself is checked (and required) by the caller.
    if let Some(s) = given(&c.netmask) {
        parse_netmask4(&format!("{path}.netmask"), s)?;
    }
    if let Some(s) = given(&c.gateway) {
        parse_ipv4(&format!("{path}.gateway"), s)?;
    }
    if let Some(s) = given(&c.ip6) {
        parse_ipv6(&format!("{path}.ip6"), s)?;
    }
    if let Some(s) = given(&c.netmask6) {
        parse_netmask6(&format!("{path}.netmask6"), s)?;
    }
    if let Some(s) = given(&c.gateway6) {
        parse_ipv6(&format!("{path}.gateway6"), s)?;
    }
    Ok(())
}

fn check_other_ip_configs(
    path: &str,
    configs: &BTreeMap<String, VlanIpConfig>,
) -> Result<(), ConfigError> {
    for (key, c) in configs {
        let p = format!("{path}.{key}");
        parse_vlan_key(&p, key)?;
        let ip = given(&c.ip).ok_or_else(|| err(format!("{p}.ip"), "required"))?;
        parse_ipv4(&format!("{p}.ip"), ip)?;
        let mask = given(&c.netmask).ok_or_else(|| err(format!("{p}.netmask"), "required"))?;
        parse_netmask4(&format!("{p}.netmask"), mask)?;
    }
    Ok(())
}

fn check_extra_routes(
    path: &str,
    routes: &BTreeMap<String, ExtraRoute>,
) -> Result<(), ConfigError> {
    for (dest, route) in routes {
        let p = format!("{path}.{dest}");
        let net = parse_cidr(&p, dest)?;
        let via_path = format!("{p}.via");
        let via = given(&route.via).ok_or_else(|| err(&via_path, "required"))?;
        let via = parse_ip(&via_path, via)?;
        if via.is_ipv4() != matches!(net, IpNet::V4(_)) {
            return Err(err(
                via_path,
                format!("next hop {via} is not of the same address family as {dest}"),
            ));
        }
    }
    Ok(())
}

fn check_dhcp_servers(
    path: &str,
    enabled: bool,
    kind: &str,
    servers: &[String],
) -> Result<(), ConfigError> {
    if enabled && kind == DEFAULT_DHCPD_TYPE && servers.is_empty() {
        return Err(err(
            format!("{path}.servers"),
            "required when enabled with type \"relay\"",
        ));
    }
    check_ip_list(&format!("{path}.servers"), servers)
}

fn check_dhcpd(path: &str, c: &TuntermDhcpdConfig) -> Result<(), ConfigError> {
    check_dhcp_servers(path, c.enabled, &c.kind, &c.servers)?;
    for (key, v) in &c.vlans {
        let p = format!("{path}.{key}");
        parse_vlan_key(&p, key)?;
        check_dhcp_servers(&p, v.enabled, &v.kind, &v.servers)?;
    }
    Ok(())
}

fn check_monitoring(path: &str, checks: &[MonitoringCheck]) -> Result<(), ConfigError> {
    for (i, c) in checks.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if c.host.trim().is_empty() {
            return Err(err(format!("{p}.host"), "required"));
        }
        if c.protocol == MonitoringProtocol::Arp {
            parse_ipv4(&format!("{p}.host"), &c.host)?;
        }
        check_between(&format!("{p}.timeout"), c.timeout, 60, 3600)?;
        match (c.protocol, c.port) {
            (MonitoringProtocol::Tcp, None) => {
                return Err(err(format!("{p}.port"), "required when protocol is tcp"));
            }
            (MonitoringProtocol::Tcp, Some(port)) => {
                check_between(&format!("{p}.port"), port, 1, 65535)?;
            }
            _ => {}
        }
        if let Some(vlan) = c.src_vlan_id {
            check_between(
                &format!("{p}.src_vlan_id"),
                vlan,
                u32::from(VLAN_MIN),
                u32::from(VLAN_MAX),
            )?;
        }
    }
    Ok(())
}

fn check_igmp(path: &str, c: &IgmpSnoopingConfig) -> Result<(), ConfigError> {
    if let Some(q) = &c.querier {
        let p = format!("{path}.querier");
        check_between(&format!("{p}.query_interval"), q.query_interval, 1, 31744)?;
        check_between(&format!("{p}.robustness"), q.robustness, 1, 7)?;
        check_between(&format!("{p}.version"), q.version, 1, 3)?;
    }
    Ok(())
}

fn check_clients(path: &str, c: &ClientTableConfig) -> Result<(), ConfigError> {
    check_between(&format!("{path}.max_clients"), c.max_clients, 1, 2_000_000)?;
    check_between(&format!("{path}.max_age"), c.max_age, 10, 86_400)?;
    let s = &c.storm_control;
    let p = format!("{path}.storm_control");
    for (name, v) in [
        ("broadcast_pps", s.broadcast_pps),
        ("multicast_pps", s.multicast_pps),
        ("unknown_unicast_pps", s.unknown_unicast_pps),
        ("flood_copies_pps", s.flood_copies_pps),
    ] {
        check_between(&format!("{p}.{name}"), v, 0, 10_000_000)?;
    }
    Ok(())
}

/// The defined port names, quoted, for "not defined" errors.
fn port_names(ports: &BTreeMap<String, String>) -> String {
    sorted_ports(ports)
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Port names in numeric order where they are numbers (`"2"` before `"10"`).
fn sorted_ports(ports: &BTreeMap<String, String>) -> Vec<&str> {
    let mut names: Vec<&str> = ports.keys().map(String::as_str).collect();
    names.sort_by_key(|n| (n.parse::<u64>().map_err(|_| ()), *n));
    names
}

fn push_unique<'a>(list: &mut Vec<&'a str>, item: &'a str) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Checks `tunterm_port_config` against `ports` and resolves the upstream and
/// downstream interface lists.
fn resolve_ports(
    pc: &TuntermPortConfig,
    ports: Option<&BTreeMap<String, String>>,
) -> Result<(Vec<String>, Vec<String>, u16), ConfigError> {
    let path = "mxedge.tunterm_port_config";
    check_between(
        &format!("{path}.upstream_port_vlan_id"),
        pc.upstream_port_vlan_id,
        u32::from(VLAN_MIN),
        u32::from(VLAN_MAX),
    )?;
    let native_vlan = pc.upstream_port_vlan_id as u16;

    for (field, list) in [
        ("upstream_ports", &pc.upstream_ports),
        ("downstream_ports", &pc.downstream_ports),
    ] {
        for (i, name) in list.iter().flatten().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            match ports {
                Some(map) if !map.contains_key(name) => {
                    return Err(err(
                        p,
                        format!(
                            "port {name:?} is not defined in ports (defined: {})",
                            port_names(map)
                        ),
                    ));
                }
                Some(_) => {}
                None => check_ifname(&p, name)?,
            }
        }
    }
    // All available ports: those of `ports`, else every port named.
    let mut available: Vec<&str> = Vec::new();
    match ports {
        Some(map) => available = sorted_ports(map),
        None => {
            for name in pc
                .upstream_ports
                .iter()
                .chain(&pc.downstream_ports)
                .flatten()
            {
                push_unique(&mut available, name);
            }
        }
    }
    fn pick<'a>(list: &'a Option<Vec<String>>, available: &[&'a str]) -> Vec<&'a str> {
        match list {
            Some(list) => {
                let mut out = Vec::new();
                for name in list {
                    push_unique(&mut out, name);
                }
                out
            }
            None => available.to_vec(),
        }
    }
    let mut up = pick(&pc.upstream_ports, &available);
    let mut down = pick(&pc.downstream_ports, &available);
    if !pc.separate_upstream_downstream {
        // Not separated: every port plays both roles.
        for name in down {
            push_unique(&mut up, name);
        }
        down = up.clone();
    }
    let to_ifname = |name: &str| -> String {
        ports
            .and_then(|map| map.get(name))
            .map_or_else(|| name.to_string(), Clone::clone)
    };
    Ok((
        up.into_iter().map(to_ifname).collect(),
        down.into_iter().map(to_ifname).collect(),
        native_vlan,
    ))
}

fn check_cluster(c: &MxCluster) -> Result<Vec<IpNet>, ConfigError> {
    let path = "mxcluster";
    for (i, host) in c.tunterm_hosts.iter().enumerate() {
        if host.trim().is_empty() {
            return Err(err(
                format!("{path}.tunterm_hosts[{i}]"),
                "must not be empty",
            ));
        }
    }
    for (i, &index) in c.tunterm_hosts_order.iter().enumerate() {
        if index as usize >= c.tunterm_hosts.len() {
            return Err(err(
                format!("{path}.tunterm_hosts_order[{i}]"),
                format!(
                    "index {index} is past the end of tunterm_hosts ({} entries)",
                    c.tunterm_hosts.len()
                ),
            ));
        }
    }
    let mut subnets = Vec::new();
    for (i, s) in c.tunterm_ap_subnets.iter().flatten().enumerate() {
        subnets.push(parse_cidr(&format!("{path}.tunterm_ap_subnets[{i}]"), s)?);
    }
    if let Some(m) = &c.tunterm_monitoring {
        check_monitoring(&format!("{path}.tunterm_monitoring"), m)?;
    }
    if let Some(r) = &c.tunterm_extra_routes {
        check_extra_routes(&format!("{path}.tunterm_extra_routes"), r)?;
    }
    if let Some(d) = &c.tunterm_dhcpd_config {
        check_dhcpd(&format!("{path}.tunterm_dhcpd_config"), d)?;
    }
    Ok(subnets)
}

fn check_time_of_day(s: &str) -> bool {
    if s == "any" {
        return true;
    }
    let Some((h, m)) = s.split_once(':') else {
        return false;
    };
    let num = |t: &str, max: u8| {
        t.len() == 2
            && t.bytes().all(|b| b.is_ascii_digit())
            && t.parse::<u8>().is_ok_and(|v| v <= max)
    };
    num(h, 23) && num(m, 59)
}

fn check_tunnel(path: &str, t: &MxTunnel) -> Result<(), ConfigError> {
    if t.name.trim().is_empty() {
        return Err(err(
            format!("{path}.name"),
            "required (tunnel names must not be empty)",
        ));
    }
    if t.vlan_ids.is_empty() {
        return Err(err(
            format!("{path}.vlan_ids"),
            "must list at least one VLAN id",
        ));
    }
    check_between(
        &format!("{path}.hello_interval"),
        t.hello_interval,
        0.5,
        300.0,
    )?;
    check_between(&format!("{path}.hello_retries"), t.hello_retries, 1, 30)?;
    if t.mtu != 0 && !(552..=1500).contains(&t.mtu) {
        return Err(err(
            format!("{path}.mtu"),
            format!(
                "must be 0 (automatic) or between 552 and 1500, got {}",
                t.mtu
            ),
        ));
    }
    if let Some(ipsec) = &t.ipsec {
        let p = format!("{path}.ipsec");
        check_ip_list(&format!("{p}.dns_servers"), &ipsec.dns_servers)?;
        for (i, r) in ipsec.extra_routes.iter().enumerate() {
            parse_cidr(&format!("{p}.extra_routes[{i}].dest"), &r.dest)?;
            parse_ip(&format!("{p}.extra_routes[{i}].next_hop"), &r.next_hop)?;
        }
    }
    if let Some(ap) = &t.auto_preemption {
        let p = format!("{path}.auto_preemption");
        if let Some(tod) = given(&ap.time_of_day)
            && !check_time_of_day(tod)
        {
            return Err(err(
                format!("{p}.time_of_day"),
                format!("expected \"any\" or HH:MM (24-hour), got {tod:?}"),
            ));
        }
        const DAYS: [&str; 8] = ["any", "mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        if let Some(day) = given(&ap.day_of_week)
            && !DAYS.contains(&day)
        {
            return Err(err(
                format!("{p}.day_of_week"),
                format!("expected one of {}, got {day:?}", DAYS.join(" / ")),
            ));
        }
    }
    Ok(())
}

fn resolve_tunnels(raw: &ConfigFile, have_mgre: bool) -> Result<Vec<TunnelConfig>, ConfigError> {
    if raw.mxtunnels.is_empty() && !have_mgre {
        return Err(err(
            "mxtunnels",
            "at least one mxtunnel (or an mGRE WLAN in wlans) is required",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, t) in raw.mxtunnels.iter().enumerate() {
        let path = format!("mxtunnels[{i}]");
        check_tunnel(&path, t)?;
        if let Some(j) = names.insert(&t.name, i) {
            return Err(err(
                format!("{path}.name"),
                format!(
                    "duplicate tunnel name {:?} (also mxtunnels[{j}].name)",
                    t.name
                ),
            ));
        }
        if let Some(id) = given(&t.id)
            && let Some(j) = ids.insert(id, i)
        {
            return Err(err(
                format!("{path}.id"),
                format!("duplicate tunnel id {id:?} (also mxtunnels[{j}].id)"),
            ));
        }
    }

    // The cluster this edge is in, if known: only tunnels deployed to it
    // (or to every cluster: empty mxcluster_ids) are terminated here.
    let cluster_id = given(&raw.mxedge.mxcluster_id)
        .or_else(|| raw.mxcluster.as_ref().and_then(|c| given(&c.id)));
    let deployed = |t: &MxTunnel| match cluster_id {
        Some(cid) => t.mxcluster_ids.is_empty() || t.mxcluster_ids.iter().any(|c| c == cid),
        None => true,
    };
    let tunnels: Vec<TunnelConfig> = raw
        .mxtunnels
        .iter()
        .filter(|t| deployed(t))
        .map(|t| TunnelConfig {
            id: given(&t.id).unwrap_or(&t.name).to_string(),
            id_from_name: given(&t.id).is_none(),
            name: t.name.clone(),
            protocol: t.protocol,
            vlans: VlanSet::from_entries(&t.vlan_ids),
            default_vlan: t.vlan_ids[0].first(),
            hello_interval: Duration::from_secs_f64(t.hello_interval),
            hello_retries: t.hello_retries,
            mtu: t.mtu as u16,
        })
        .collect();
    if tunnels.is_empty() && !have_mgre {
        return Err(err(
            "mxtunnels",
            format!(
                "none of the {} mxtunnels is deployed to mxcluster {:?} (see their mxcluster_ids)",
                raw.mxtunnels.len(),
                cluster_id.unwrap_or_default()
            ),
        ));
    }
    Ok(tunnels)
}

fn resolve(raw: ConfigFile) -> Result<EdgeConfig, ConfigError> {
    let edge = &raw.mxedge;

    // Tunnel interface addresses.
    let p = "mxedge.tunterm_ip_config";
    let required = || err(format!("{p}.ip"), "required");
    let ipc = edge.tunterm_ip_config.as_ref().ok_or_else(required)?;
    let ip = given(&ipc.ip).ok_or_else(required)?;
    let tunnel_ip = parse_ipv4(&format!("{p}.ip"), ip)?;
    check_ip_config(p, ipc)?;
    let tunnel_prefix = match given(&ipc.netmask) {
        Some(s) => Some(parse_netmask4(&format!("{p}.netmask"), s)?),
        None => None,
    };
    let gateway = given(&ipc.gateway).and_then(|s| s.parse().ok());
    let tunnel_ip6 = given(&ipc.ip6).and_then(|s| s.parse().ok());

    check_other_ip_configs(
        "mxedge.tunterm_other_ip_configs",
        &edge.tunterm_other_ip_configs,
    )?;
    if let Some(r) = &edge.tunterm_extra_routes {
        check_extra_routes("mxedge.tunterm_extra_routes", r)?;
    }
    if let Some(d) = &edge.tunterm_dhcpd_config {
        check_dhcpd("mxedge.tunterm_dhcpd_config", d)?;
    }
    if let Some(m) = &edge.tunterm_monitoring {
        check_monitoring("mxedge.tunterm_monitoring", m)?;
    }
    if let Some(igmp) = &edge.tunterm_igmp_snooping_config {
        check_igmp("mxedge.tunterm_igmp_snooping_config", igmp)?;
    }
    if let Some(c) = &edge.tunterm_client_config {
        check_clients("mxedge.tunterm_client_config", c)?;
    }
    if let Some(n) = edge.tunterm_workers {
        check_between("mxedge.tunterm_workers", n, 1, u32::from(MAX_WORKERS))?;
    }

    // Ports.
    if let Some(ports) = &raw.ports {
        for (name, ifname) in ports {
            if name.is_empty() {
                return Err(err("ports", "port names must not be empty"));
            }
            check_ifname(&format!("ports.{name}"), ifname)?;
        }
    }
    let (upstream_interfaces, downstream_interfaces, upstream_port_vlan_id) =
        resolve_ports(&edge.tunterm_port_config, raw.ports.as_ref())?;

    // Cluster.
    let mut ap_subnets = Vec::new();
    if let Some(c) = &raw.mxcluster {
        if let (Some(mine), Some(theirs)) = (given(&edge.mxcluster_id), given(&c.id))
            && mine != theirs
        {
            return Err(err(
                "mxcluster.id",
                format!("{theirs:?} does not match mxedge.mxcluster_id {mine:?}"),
            ));
        }
        ap_subnets = check_cluster(c)?;
    }
    if ap_subnets.is_empty() {
        ap_subnets = vec![
            IpNet::new_assert(Ipv4Addr::UNSPECIFIED.into(), 0),
            IpNet::new_assert(Ipv6Addr::UNSPECIFIED.into(), 0),
        ];
    }

    let mgre = resolve_mgre(&raw)?;
    let tunnels = resolve_tunnels(&raw, mgre.is_some())?;

    let cfg = EdgeConfig {
        name: given(&edge.name).unwrap_or(DEFAULT_EDGE_NAME).to_string(),
        tunnel_ip: Some(tunnel_ip),
        tunnel_prefix,
        gateway,
        tunnel_ip6,
        upstream_interfaces,
        downstream_interfaces,
        upstream_port_vlan_id,
        ap_subnets,
        tunnels,
        mgre,
        raw,
    };
    check_monitoring_sources(&cfg)?;
    Ok(cfg)
}

/// A ping or tcp check sourced from a VLAN (`src_vlan_id`) needs this
/// edge's address on that VLAN: without one it would silently go out from
/// another address (an ARP check can probe without one, RFC 5227).
fn check_monitoring_sources(cfg: &EdgeConfig) -> Result<(), ConfigError> {
    let from_edge = cfg.raw.mxedge.tunterm_monitoring.is_some();
    let path = if from_edge {
        "mxedge.tunterm_monitoring"
    } else {
        "mxcluster.tunterm_monitoring"
    };
    let addressed: Vec<u16> = cfg.vlan_addresses().iter().map(|&(v, _, _)| v).collect();
    for (i, c) in cfg.monitoring().iter().enumerate() {
        if c.protocol == MonitoringProtocol::Arp {
            continue;
        }
        if let Some(vlan) = c.src_vlan_id
            && !addressed.iter().any(|&v| u32::from(v) == vlan)
        {
            return Err(err(
                format!("{path}[{i}].src_vlan_id"),
                format!(
                    "VLAN {vlan} has no address of this edge in mxedge.tunterm_other_ip_configs \
                     to send the check from"
                ),
            ));
        }
    }
    Ok(())
}

fn resolve_mgre(raw: &ConfigFile) -> Result<Option<MgreConfig>, ConfigError> {
    let cluster = raw.mxcluster.as_ref();
    let ours = |edges: &[String]| {
        edges.is_empty()
            || cluster.is_some_and(|c| {
                edges
                    .iter()
                    .any(|e| Some(e.as_str()) == given(&c.id) || Some(e.as_str()) == given(&c.name))
            })
    };
    let mut out: Option<MgreConfig> = None;
    for (i, w) in raw.wlans.iter().enumerate() {
        let path = format!("wlans[{i}]");
        if w.tunnel_protocol.as_deref() != Some("mgre") || !ours(&w.mist_edges) {
            continue;
        }
        let Some(first) = w.vlan_ids.first() else {
            return Err(err(
                format!("{path}.vlan_ids"),
                "an mGRE WLAN needs at least one VLAN",
            ));
        };
        let timeout = w.mgre_peer_timeout.unwrap_or(DEFAULT_MGRE_PEER_TIMEOUT);
        check_between(&format!("{path}.mgre_peer_timeout"), timeout, 1.0, 3600.0)?;
        let m = out.get_or_insert_with(|| MgreConfig {
            ssids: Vec::new(),
            vlans: VlanSet::new(),
            default_vlan: first.first(),
            peer_timeout: Duration::from_secs_f64(timeout),
        });
        m.ssids.push(w.ssid.clone());
        for e in &w.vlan_ids {
            m.vlans.insert_entry(*e);
        }
        m.peer_timeout = m.peer_timeout.max(Duration::from_secs_f64(timeout));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
