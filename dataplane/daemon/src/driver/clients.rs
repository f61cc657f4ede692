//! The client table, ARP/ND containment and storm control in the daemon:
//! the core's [`Containment`] (the outermost flood policy, around the
//! multicast one) configured from `mxedge.tunterm_client_config` (a local
//! extension; absent, everything on with its defaults), its aging run by the
//! loop, its counts in `tunterm stats` (`clients`: the table's size and
//! counters, storm drops in total and per AP) and its entries served by the
//! paged `clients` request (`tunterm clients`), each named with its AP.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tunterm_control::EdgeConfig;
use tunterm_core::forward::ap_of;
use tunterm_core::proto::bridge::PortId;
use tunterm_core::proto::clients::{
    ClientConfig, ClientCounters, ClientRecord, FloodDrops, StormConfig, StormDrops,
};
use tunterm_core::wire::ether::MacAddr;

use super::Dataplane;
use super::control::parse_mac;

/// Entries a `clients` request returns when it gives no `limit`.
pub const CLIENTS_DEFAULT_LIMIT: usize = 1000;
/// Most entries one `clients` page may hold.
pub const CLIENTS_MAX_LIMIT: usize = 10_000;

/// The client table and storm control in `tunterm stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientStats {
    /// Clients in the table (`tunterm clients` lists them).
    pub clients: usize,
    /// Their addresses.
    pub addresses: usize,
    /// The table's bound.
    pub max_clients: usize,
    /// Whether ARP/ND containment is on.
    pub arp_nd_proxy: bool,
    /// VLANs where it is off all the same.
    pub arp_nd_proxy_off_vlans: String,
    /// Storm control limits (None: off).
    pub storm_control: Option<StormConfig>,
    /// The table's and containment's counters.
    pub counters: ClientCounters,
    /// Frames storm control dropped, in total.
    pub storm_dropped: StormDrops,
    /// Frames storm control dropped, per tunnel still up that had any.
    pub storm_dropped_per_ap: Vec<ApStormDrops>,
    /// Floods kept from the tunnels by `flood_copies_pps`.
    pub flood_dropped: FloodDrops,
}

/// Storm drops of one tunnel port, with its AP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApStormDrops {
    /// The AP's name ("" when it gave none, and for mGRE peers).
    pub ap: String,
    /// The AP's address.
    pub ap_ip: Option<IpAddr>,
    /// The tunnel port (L2TP session id, mGRE peer's port).
    pub port: u32,
    /// What was dropped.
    #[serde(flatten)]
    pub dropped: StormDrops,
}

/// Which clients, and which page of them (ordered by VLAN then MAC).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientQuery {
    /// Only this VLAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Only this MAC (any usual spelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Only clients with this address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Only clients behind this AP: its name or its address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ap: Option<String>,
    /// Entries to skip.
    pub offset: usize,
    /// Entries to return ([`CLIENTS_DEFAULT_LIMIT`] when absent, at most
    /// [`CLIENTS_MAX_LIMIT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One client with its AP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// The AP's name ("" when it gave none, and for mGRE peers).
    pub ap: String,
    /// The AP's address (None: its tunnel just went).
    pub ap_ip: Option<IpAddr>,
    /// The client.
    #[serde(flatten)]
    pub client: ClientRecord,
}

/// One page of the client table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientPage {
    /// Clients matching the query, over all pages.
    pub total: usize,
    /// The first entry's position among them.
    pub offset: usize,
    /// The `offset` of the next page (None: this is the last).
    pub next_offset: Option<usize>,
    /// The entries.
    pub entries: Vec<ClientEntry>,
}

/// A `clients` query, checked.
#[derive(Debug)]
pub(super) struct ClientFilter {
    vlan: Option<u16>,
    mac: Option<MacAddr>,
    ip: Option<IpAddr>,
    ap: Option<String>,
    pub(super) offset: usize,
    pub(super) limit: usize,
}

impl ClientFilter {
    pub(super) fn parse(q: &ClientQuery) -> Result<Self, String> {
        let mac = q
            .mac
            .as_deref()
            .map(|m| parse_mac("clients", m))
            .transpose()?;
        let ip =
            q.ip.as_deref()
                .map(|a| {
                    a.parse::<IpAddr>()
                        .map_err(|_| format!("clients: ip {a:?} is not an IP address"))
                })
                .transpose()?;
        let limit = q.limit.unwrap_or(CLIENTS_DEFAULT_LIMIT);
        if limit == 0 || limit > CLIENTS_MAX_LIMIT {
            return Err(format!(
                "clients: limit {limit}: expected 1 to {CLIENTS_MAX_LIMIT}"
            ));
        }
        Ok(ClientFilter {
            vlan: q.vlan,
            mac,
            ip,
            ap: q.ap.clone(),
            offset: q.offset,
            limit,
        })
    }

    fn matches(&self, c: &ClientRecord) -> bool {
        self.vlan.is_none_or(|v| v == c.vlan)
            && self.mac.is_none_or(|m| m == c.mac)
            && self.ip.is_none_or(|a| c.ips.contains(&a))
    }

    fn matches_ap(&self, name: &str, addr: Option<IpAddr>) -> bool {
        self.ap
            .as_deref()
            .is_none_or(|a| a == name || addr.is_some_and(|ip| ip.to_string() == a))
    }
}

/// One page of `entries`, ordered by VLAN and MAC.
pub(super) fn client_page(
    mut entries: Vec<ClientEntry>,
    offset: usize,
    limit: usize,
) -> ClientPage {
    entries.sort_unstable_by_key(|e| (e.client.vlan, e.client.mac));
    let total = entries.len();
    let end = offset.saturating_add(limit).min(total);
    let start = offset.min(total);
    ClientPage {
        total,
        offset,
        next_offset: (end < total).then_some(end),
        entries: entries.drain(start..end).collect(),
    }
}

/// The policy's settings from the configuration.
pub(super) fn client_config(cfg: &EdgeConfig) -> ClientConfig {
    let c = cfg
        .raw
        .mxedge
        .tunterm_client_config
        .clone()
        .unwrap_or_default();
    let s = &c.storm_control;
    ClientConfig {
        max_clients: c.max_clients as usize,
        max_age: Duration::from_secs(u64::from(c.max_age)),
        proxy: c.arp_nd_proxy,
        proxy_off_vlans: c.arp_nd_proxy_off_vlan_ids.clone(),
        storm: s.enabled.then_some(StormConfig {
            broadcast_pps: s.broadcast_pps,
            multicast_pps: s.multicast_pps,
            unknown_unicast_pps: s.unknown_unicast_pps,
            flood_copies_pps: s.flood_copies_pps,
        }),
    }
}

impl Dataplane {
    /// Age out silent clients: those the switch no longer has behind
    /// their port either (the fast path refreshes the FDB, not the table).
    pub(super) fn run_clients(&mut self, now: Instant) {
        let switch = &self.switch;
        self.fwd
            .policy_mut()
            .handle_timeout(now, |vlan, mac, port| {
                switch.lookup(vlan, &mac) == Some(port)
            });
    }

    /// Apply a (re)loaded configuration.
    pub(super) fn reconfigure_clients(&mut self, cfg: &EdgeConfig, now: Instant) {
        self.fwd.policy_mut().reconfigure(now, client_config(cfg));
    }

    /// The AP behind tunnel `port`: its name and address.
    fn ap_of(&self, port: PortId) -> (String, Option<IpAddr>) {
        ap_of(&self.endpoint, &self.gre, port)
            .map_or((String::new(), None), |(n, a)| (n.to_string(), Some(a)))
    }

    /// The clients `f` asks for, unsorted, with their APs.
    pub(super) fn client_entries(&self, now: Instant, f: &ClientFilter) -> Vec<ClientEntry> {
        self.fwd
            .policy()
            .table()
            .records(now)
            .filter(|c| f.matches(c))
            .filter_map(|client| {
                let (ap, ap_ip) = self.ap_of(PortId(client.port));
                f.matches_ap(&ap, ap_ip)
                    .then_some(ClientEntry { ap, ap_ip, client })
            })
            .collect()
    }

    /// The `clients` section of the stats.
    pub(super) fn client_stats(&self) -> ClientStats {
        let p = self.fwd.policy();
        let c = p.config();
        let per_port: Vec<(PortId, StormDrops)> = p.storm().per_port().collect();
        let mut stats = ClientStats {
            clients: p.table().len(),
            addresses: p.table().addresses(),
            max_clients: c.max_clients,
            arp_nd_proxy: c.proxy,
            arp_nd_proxy_off_vlans: c.proxy_off_vlans.to_string(),
            storm_control: c.storm,
            counters: p.table().counters().clone(),
            storm_dropped: *p.storm().total(),
            storm_dropped_per_ap: Vec::with_capacity(per_port.len()),
            flood_dropped: *p.storm().flood_dropped(),
        };
        for (port, dropped) in per_port {
            let (ap, ap_ip) = self.ap_of(port);
            stats.storm_dropped_per_ap.push(ApStormDrops {
                ap,
                ap_ip,
                port: port.0,
                dropped,
            });
        }
        stats.storm_dropped_per_ap.sort_by_key(|d| d.port);
        stats
    }
}
