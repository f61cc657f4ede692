//! Multicast containment in the daemon: the core's [`McastPolicy`] (IGMP/MLD
//! snooping, the querier, mDNS/SSDP per VLAN) configured from
//! `mxedge.tunterm_igmp_snooping_config` and `tunterm_multicast_config`,
//! its timers run by the loop, its queries delivered to every port of their
//! VLAN (trunk, tunnels, host port), its state in `tunterm stats`
//! (`mcast`, which `tunterm mdb` prints).
//!
//! Local choices (control/README.md): the trunk is a static router port on
//! every VLAN it carries; unregistered groups go to router ports only; the
//! querier's `mtu` is unused (tunterm forwards the hosts' reports, it forms
//! none of its own).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tunterm_control::EdgeConfig;
use tunterm_core::proto::bridge::{TRUNK, host_port};
use tunterm_core::proto::mcast::{
    McastConfig, McastCounters, MdbSnapshot, QuerierConfig, QueryOut,
};
use tunterm_core::wire::igmp::Version;

use super::Dataplane;
use crate::io::hostport::stable_mac;

/// Multicast containment in `tunterm stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct McastStats {
    /// VLANs snooped ("" when snooping is off).
    pub snooping_vlans: String,
    /// Whether tunterm runs a querier on them.
    pub querier: bool,
    /// VLANs where mDNS is forwarded (None: normal switch rules).
    pub mdns_vlans: Option<String>,
    /// VLANs where SSDP is forwarded (None: normal switch rules).
    pub ssdp_vlans: Option<String>,
    /// Groups in the MDB.
    pub groups: usize,
    /// Counters.
    pub counters: McastCounters,
    /// The MDB, router ports and queriers.
    pub mdb: MdbSnapshot,
}

/// The policy's settings from the configuration. `ip_config_port`: the
/// native VLAN's host port has `tunterm_ip_config`'s address.
pub(super) fn mcast_config(cfg: &EdgeConfig, ip_config_port: bool) -> McastConfig {
    let mut c = McastConfig {
        static_router_ports: vec![TRUNK],
        mac: stable_mac(&cfg.name, 0),
        ..McastConfig::default()
    };
    if let Some(igmp) = cfg.raw.mxedge.tunterm_igmp_snooping_config.as_ref()
        && igmp.enabled
    {
        c.snoop_vlans = igmp.vlan_ids.clone();
        c.querier = igmp.querier.as_ref().map(|q| QuerierConfig {
            query_interval: Duration::from_secs(u64::from(q.query_interval.max(1))),
            max_resp: q.max_response_time.max(1),
            robustness: q.robustness.clamp(1, 7) as u8,
            version: match q.version {
                1 => Version::V1,
                2 => Version::V2,
                _ => Version::V3,
            },
        });
    }
    if let Some(m) = cfg.multicast_config() {
        c.mdns = m.mdns.enabled.then(|| m.mdns.vlan_ids.clone());
        c.ssdp = m.ssdp.enabled.then(|| m.ssdp.vlan_ids.clone());
    }
    let mut addr4: HashMap<u16, _> = cfg
        .vlan_addresses()
        .into_iter()
        .map(|(vid, ip, _)| (vid, ip))
        .collect();
    if ip_config_port && let Some(ip) = cfg.tunnel_ip {
        addr4.entry(cfg.upstream_port_vlan_id).or_insert(ip);
    }
    c.addr4 = addr4;
    c
}

impl Dataplane {
    /// Run the policy's timers and send the queries they made.
    pub(super) fn run_mcast(&mut self, now: Instant) {
        self.fwd.policy_mut().inner_mut().handle_timeout(now);
        while let Some(q) = self.fwd.policy_mut().inner_mut().poll_query() {
            self.send_query(now, &q);
        }
    }

    /// One query to its port, or to every port of its VLAN.
    fn send_query(&mut self, now: Instant, q: &QueryOut) {
        let ports: Vec<_> = match q.to {
            Some(p) => vec![p],
            None => self.switch.vlan_ports(q.vlan).to_vec(),
        };
        for p in ports {
            self.deliver(now, host_port(q.vlan), p, q.vlan, &q.frame);
        }
    }

    /// Apply a (re)loaded configuration.
    pub(super) fn reconfigure_mcast(&mut self, cfg: &EdgeConfig, now: Instant) {
        let c = mcast_config(cfg, self.svc.ip_config_port());
        self.fwd.policy_mut().inner_mut().reconfigure(c, now);
    }

    /// The `mcast` section of the stats.
    pub(super) fn mcast_stats(&self, now: Instant) -> McastStats {
        let p = self.fwd.policy().inner();
        let c = p.config();
        McastStats {
            snooping_vlans: c.snoop_vlans.to_string(),
            querier: c.querier.is_some() && !c.snoop_vlans.is_empty(),
            mdns_vlans: c.mdns.as_ref().map(ToString::to_string),
            ssdp_vlans: c.ssdp.as_ref().map(ToString::to_string),
            groups: p.len(),
            counters: p.counters().clone(),
            mdb: p.snapshot(now),
        }
    }
}
