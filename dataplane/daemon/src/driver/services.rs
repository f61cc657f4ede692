//! The edge's own services on the switch: host ports (the edge's address on
//! each VLAN, a TAP device `tt-v<vid>` per VLAN), `tunterm_extra_routes`,
//! the DHCP relay, and the configuration reload (SIGHUP) that adds and
//! removes them as the configuration file changes.
//!
//! What the configuration asks for is computed as a [`Desired`] and applied
//! as the difference with what runs: unchanged host ports keep their device
//! (and the kernel its ARP cache), changed ones are made anew.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};
use tunterm_control::EdgeConfig;

use super::{Dataplane, trunk_port};
use crate::api::ApplyReport;
use crate::io::hostport::{HostPort, HostPortCounters, HostPortSpec, Readable, Route, stable_mac};
use crate::io::netlink::Rtnl;
use crate::io::tap::Tap;
use tunterm_core::forward::ForwardConfig;
use tunterm_core::proto::bridge::PortId;
use tunterm_core::proto::bridge::{PortConfig, Switch, TRUNK, host_port};
use tunterm_core::proto::dhcp::{RelayAgent, RelayCounters, VlanRelay};
use tunterm_core::wire::l2tp::{pw, stopccn};

/// What the configuration asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Desired {
    hosts: BTreeMap<u16, HostPortSpec>,
    routes: Vec<Route>,
    /// DHCP servers per VLAN where the relay is on.
    relay: BTreeMap<u16, Vec<Ipv4Addr>>,
}

/// The host ports, routes and relay of a configuration. `ip_config_port`:
/// `tunterm_ip_config` gets a host port on the native VLAN (its address is
/// not already on an interface of the host).
pub(super) fn desired(cfg: &EdgeConfig, ip_config_port: bool) -> Desired {
    let mut d = Desired::default();
    for (vid, ip, len) in cfg.vlan_addresses() {
        d.hosts.insert(
            vid,
            HostPortSpec {
                vid,
                mac: stable_mac(&cfg.name, vid),
                v4: Some((ip, len)),
                gateway: None,
                v6: None,
                gateway6: None,
            },
        );
    }
    let native = cfg.upstream_port_vlan_id;
    if ip_config_port {
        use std::collections::btree_map::Entry;
        match (d.hosts.entry(native), cfg.tunnel_ip) {
            (Entry::Occupied(_), _) => warn!(
                vlan = native,
                "tunterm_other_ip_configs has an address on the native VLAN too: \
                 tunterm_ip_config gets no host port"
            ),
            (Entry::Vacant(slot), Some(ip)) => {
                let (len6, gw6) = cfg.ip6_settings();
                slot.insert(HostPortSpec {
                    vid: native,
                    mac: stable_mac(&cfg.name, native),
                    v4: Some((ip, cfg.tunnel_prefix.unwrap_or(32))),
                    gateway: cfg.gateway,
                    v6: cfg.tunnel_ip6.map(|a| (a, len6.unwrap_or(64))),
                    gateway6: gw6,
                });
            }
            (Entry::Vacant(_), None) => {}
        }
    }
    for (dest, r) in cfg.extra_routes() {
        // Both were checked when the configuration loaded.
        let via = r.via.as_deref().and_then(|v| v.parse::<IpAddr>().ok());
        if let (Ok(dest), Some(via)) = (dest.parse::<ipnet::IpNet>(), via) {
            d.routes.push(Route {
                dest: dest.trunc(),
                via,
            });
        }
    }
    if let Some(dhcpd) = cfg.dhcpd_config() {
        for &vid in d.hosts.keys() {
            let v = dhcpd.for_vlan(vid);
            if v.enabled && v.kind == tunterm_control::DEFAULT_DHCPD_TYPE {
                let servers = v.servers.iter().filter_map(|s| s.parse().ok()).collect();
                d.relay.insert(vid, servers);
            }
        }
        for key in dhcpd.vlans.keys() {
            if let Ok(vid) = key.parse::<u16>()
                && dhcpd.for_vlan(vid).enabled
                && !d.hosts.contains_key(&vid)
            {
                warn!(
                    vlan = vid,
                    "DHCP relay enabled on a VLAN where the edge has no address \
                     (tunterm_other_ip_configs): not relayed"
                );
            }
        }
    }
    d
}

/// Whether `ip` is already an address of this host (binding to it works
/// without IP_FREEBIND).
pub(super) fn is_local(ip: Ipv4Addr) -> bool {
    UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0)).is_ok()
}

/// How the interfaces' line of a reload's answer starts.
const INTERFACES: &str = "mxedge.tunterm_port_config / ports (interfaces)";

/// How a configuration change is applied.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Per old mxtunnel (by index), its index in the new configuration;
    /// None: removed (or its protocol changed), its tunnels close.
    moved: Vec<Option<usize>>,
    /// The mxtunnels changed in any way (profiles, MTUs, VLANs to redo).
    tunnels_changed: bool,
    /// `tunterm_ap_subnets` changed.
    ap_subnets: bool,
    /// `tunterm_monitoring` changed.
    monitoring: bool,
    /// The mGRE wlans changed.
    mgre: bool,
    /// The tunnel addresses change live.
    addresses: bool,
    /// The upstream or downstream interfaces change live.
    interfaces: bool,
    /// `mxedge.name` changes.
    name: bool,
    applied: Vec<String>,
    needs_restart: Vec<String>,
}

/// For each of `old`'s mxtunnels, the index of the same mxtunnel in `new`:
/// the one with its id, else — when the old one had no id (a hand-written
/// configuration, its id its name) — the one of the same name whose id no
/// old mxtunnel has (the cloud's copy of it, with the cloud's id).
fn twin_tunnels(old: &EdgeConfig, new: &EdgeConfig) -> Vec<Option<usize>> {
    old.tunnels
        .iter()
        .map(|a| {
            new.tunnels.iter().position(|b| b.id == a.id).or_else(|| {
                a.id_from_name
                    .then(|| {
                        new.tunnels.iter().position(|b| {
                            b.name == a.name && !old.tunnels.iter().any(|x| x.id == b.id)
                        })
                    })
                    .flatten()
            })
        })
        .collect()
}

/// Sort the differences between `old` and `new` into what the running
/// daemon changes live and what waits for a restart.
fn plan(old: &EdgeConfig, new: &EdgeConfig) -> Plan {
    let mut p = Plan {
        tunnels_changed: old.tunnels != new.tunnels,
        ..Plan::default()
    };
    // An mxtunnel is the same one while its id is (a rename keeps its
    // tunnels up); over another protocol its tunnels cannot stay.
    let twins = twin_tunnels(old, new);
    for (a, &j) in old.tunnels.iter().zip(&twins) {
        let b = j.map(|j| &new.tunnels[j]);
        match b {
            None => {
                p.applied.push(format!(
                    "mxtunnel {} removed (its tunnels closed with StopCCN, their MACs flushed)",
                    a.name
                ));
                p.moved.push(None);
                continue;
            }
            Some(b) if b.protocol != a.protocol => {
                p.applied.push(format!(
                    "mxtunnel {}: protocol {:?} -> {:?} (its tunnels closed; the APs reconnect)",
                    b.name, a.protocol, b.protocol
                ));
                p.moved.push(None);
                continue;
            }
            Some(_) => p.moved.push(j),
        }
        let Some(b) = b else { continue };
        if a.name != b.name {
            p.applied.push(format!(
                "mxtunnel {} renamed {} (its tunnels stay up)",
                a.name, b.name
            ));
        }
        if a.mtu != b.mtu {
            p.applied
                .push(format!("mxtunnel {}: mtu {} -> {}", b.name, a.mtu, b.mtu));
        }
        if a.vlans != b.vlans || a.default_vlan != b.default_vlan {
            p.applied.push(format!(
                "mxtunnel {}: vlan_ids {} -> {} (its sessions carry them now)",
                b.name, a.vlans, b.vlans
            ));
        }
        if (a.hello_interval, a.hello_retries) != (b.hello_interval, b.hello_retries) {
            p.applied.push(format!(
                "mxtunnel {}: hello_interval/hello_retries (its running tunnels too)",
                b.name
            ));
        }
    }
    for (k, b) in new.tunnels.iter().enumerate() {
        if !twins.contains(&Some(k)) {
            p.applied.push(format!("mxtunnel {} added", b.name));
        }
    }
    if old.mgre != new.mgre {
        p.mgre = true;
        p.applied.push(match (&old.mgre, &new.mgre) {
            (None, Some(_)) => "wlans: mGRE termination on".into(),
            (Some(_), None) => "wlans: mGRE termination off (its peers removed)".into(),
            _ => "wlans: mGRE VLANs / peer timeout".into(),
        });
    }
    if (old.tunnel_ip, old.tunnel_prefix, old.tunnel_ip6)
        != (new.tunnel_ip, new.tunnel_prefix, new.tunnel_ip6)
    {
        // The fast path follows too: its programs match sessions by their
        // peer, not by our address, and the encapsulation templates are
        // rebuilt with the new source address.
        p.addresses = true;
        p.applied.push(
            "mxedge.tunterm_ip_config (tunnel address): sockets rebound; tunnels to the \
             old address closed"
                .into(),
        );
    }
    if (&old.upstream_interfaces, &old.downstream_interfaces)
        != (&new.upstream_interfaces, &new.downstream_interfaces)
    {
        p.interfaces = true;
        p.applied.push(format!(
            "{INTERFACES}: upstream {:?} -> {:?}, downstream {:?} -> {:?} (the trunk's \
             socket reopened, the fast path moved, the trunk's MACs relearnt)",
            old.upstream_interfaces,
            new.upstream_interfaces,
            old.downstream_interfaces,
            new.downstream_interfaces
        ));
    }
    if old.upstream_port_vlan_id != new.upstream_port_vlan_id {
        p.monitoring = true;
        p.applied.push(format!(
            "mxedge.tunterm_port_config.upstream_port_vlan_id (native VLAN) {} -> {} (the \
             trunk's untagged frames map to it now; the trunk's MACs relearnt)",
            old.upstream_port_vlan_id, new.upstream_port_vlan_id
        ));
    }
    if old.ap_subnets != new.ap_subnets {
        p.ap_subnets = true;
        p.applied.push(
            "tunterm_ap_subnets (tunnels and mGRE peers from addresses now outside closed)".into(),
        );
    }
    if old.monitoring() != new.monitoring() {
        p.monitoring = true;
        p.applied
            .push("tunterm_monitoring (checks restarted with the new settings)".into());
    }
    if old.name != new.name {
        p.name = true;
        // The monitoring's probes take their MAC from the name.
        p.monitoring = true;
        p.applied.push(format!(
            "mxedge.name {} -> {} (stats, events, state file, new tunnels' L2TP Host Name; \
             host ports made anew with MACs from the new name)",
            old.name, new.name
        ));
    }
    let services = |c: &EdgeConfig| {
        (
            c.vlan_addresses(),
            c.extra_routes().clone(),
            c.dhcpd_config().cloned(),
            c.gateway,
        )
    };
    if old.multicast_config() != new.multicast_config()
        || old.raw.mxedge.tunterm_igmp_snooping_config
            != new.raw.mxedge.tunterm_igmp_snooping_config
    {
        p.applied.push(
            "tunterm_multicast_config / tunterm_igmp_snooping_config (snooping, querier, mDNS/SSDP)"
                .into(),
        );
    }
    if old.raw.mxedge.tunterm_client_config != new.raw.mxedge.tunterm_client_config {
        p.applied
            .push("tunterm_client_config (client table, ARP/ND containment, storm control)".into());
    }
    if services(old) != services(new) {
        p.applied
            .push("host ports, tunterm_extra_routes, tunterm_dhcpd_config (DHCP relay)".into());
    }
    p
}

/// What a reload says of `mxedge.tunterm_workers` (from `old` to `new`
/// in the file) when the daemon runs `running` threads, `cli` given by
/// `--workers`: the threads start with the daemon, so a new count waits
/// for a restart — and never applies while `--workers` overrides it.
fn workers_change(
    old: Option<usize>,
    new: Option<usize>,
    running: usize,
    cli: Option<usize>,
) -> Option<String> {
    match cli {
        Some(n) => (old != new).then(|| {
            format!(
                "mxedge.tunterm_workers {}: not used while --workers {n} is given on the \
                 command line",
                new.map_or("absent".into(), |n| n.to_string())
            )
        }),
        None => {
            let want = new.unwrap_or(1);
            (want != running).then(|| {
                format!(
                    "mxedge.tunterm_workers {want}: the daemon runs {running} data path \
                     thread(s) until a restart (the forwarding workers start with it)"
                )
            })
        }
    }
}

/// Errors and reloads, for the stats.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceCounters {
    /// Host ports that could not be made (see the log).
    pub host_port_errors: u64,
    /// Routes that could not be installed (see the log).
    pub route_errors: u64,
    /// Relayed requests the kernel refused to send.
    pub relay_send_errors: u64,
    /// Replies whose client port is gone (the tunnel went down).
    pub relay_deliver_no_port: u64,
    /// Configuration reloads applied.
    pub reloads: u64,
    /// Reloads refused (the file did not load; the old configuration runs).
    pub reload_errors: u64,
    /// Why the last refused reload was refused.
    pub last_reload_error: Option<String>,
    /// L2TP tunnels a reload closed with StopCCN (their mxtunnel removed,
    /// their address outside new `tunterm_ap_subnets`, the tunnel address
    /// changed).
    #[serde(default)]
    pub reload_closed_tunnels: u64,
    /// L2TP sessions a reload closed with CDN (their mxtunnel removed, on a
    /// tunnel that stays).
    #[serde(default)]
    pub reload_closed_sessions: u64,
    /// mGRE peers a reload removed.
    #[serde(default)]
    pub reload_removed_gre_peers: u64,
}

/// One host port in the stats.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostPortStats {
    /// VLAN.
    pub vlan: u16,
    /// Device name.
    pub ifname: String,
    /// MAC.
    pub mac: String,
    /// IPv4 address/prefix.
    pub ipv4: Option<String>,
    /// IPv6 address/prefix.
    pub ipv6: Option<String>,
    /// Frame counters.
    #[serde(flatten)]
    pub counters: HostPortCounters,
}

/// One relayed VLAN in the stats.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayVlanStats {
    /// VLAN.
    pub vlan: u16,
    /// The `giaddr`.
    pub giaddr: String,
    /// Servers.
    pub servers: Vec<String>,
}

/// The `services` section of `tunterm stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServicesStats {
    /// Host ports.
    pub host_ports: Vec<HostPortStats>,
    /// Extra routes installed, `dest via next-hop`.
    pub routes: Vec<String>,
    /// VLANs the DHCP relay serves.
    pub dhcp_relay_vlans: Vec<RelayVlanStats>,
    /// The relay's counters.
    pub dhcp_relay: RelayCounters,
    /// Errors and reloads.
    #[serde(flatten)]
    pub counters: ServiceCounters,
}

/// What runs.
#[derive(Debug)]
pub(super) struct Services {
    hosts: BTreeMap<u16, HostPort>,
    routes: Vec<Route>,
    relay: RelayAgent,
    relay_socks: BTreeMap<u16, Rc<AsyncFd<UdpSocket>>>,
    /// `tunterm_ip_config` has a host port (decided at start).
    ip_config_port: bool,
    applied: Desired,
    counters: ServiceCounters,
    buf: Vec<u8>,
}

impl Services {
    pub(super) fn new(ip_config_port: bool) -> Self {
        Services {
            hosts: BTreeMap::new(),
            routes: Vec::new(),
            relay: RelayAgent::default(),
            relay_socks: BTreeMap::new(),
            ip_config_port,
            applied: Desired::default(),
            counters: ServiceCounters::default(),
            buf: vec![0; 65_536],
        }
    }

    /// Whether `tunterm_ip_config` has a host port.
    pub(super) fn ip_config_port(&self) -> bool {
        self.ip_config_port
    }

    /// The fds to wait on, for [`crate::io::hostport::readable`].
    #[allow(clippy::type_complexity)]
    pub(super) fn poll_set(
        &self,
    ) -> (
        Vec<(u16, Rc<AsyncFd<Tap>>)>,
        Vec<(u16, Rc<AsyncFd<UdpSocket>>)>,
    ) {
        (
            self.hosts
                .iter()
                .map(|(v, h)| (*v, h.tap.clone()))
                .collect(),
            self.relay_socks
                .iter()
                .map(|(v, s)| (*v, s.clone()))
                .collect(),
        )
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.relay.poll_timeout()
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.relay.handle_timeout(now);
    }

    /// The DHCP relay, for the forwarding pipeline's intercept.
    pub(super) fn relay_mut(&mut self) -> &mut RelayAgent {
        &mut self.relay
    }

    /// A frame the switch sends to the host port of `vid`: to the kernel.
    pub(super) fn send_to_host_port(&mut self, vid: u16, frame: &[u8]) {
        if let Some(h) = self.hosts.get_mut(&vid) {
            h.send(frame);
        }
    }

    /// Send what the relay took from a client to its servers.
    pub(super) fn send_relayed(&mut self) {
        while let Some(t) = self.relay.poll_transmit() {
            let sent = self
                .relay_socks
                .get(&t.vlan)
                .map(|s| s.get_ref().send_to(&t.payload, t.dst));
            if !matches!(sent, Some(Ok(_))) {
                self.counters.relay_send_errors += 1;
                warn!(vlan = t.vlan, server = %t.dst, result = ?sent, "DHCP relay: send failed");
            }
        }
    }

    pub(super) fn stats(&self) -> ServicesStats {
        ServicesStats {
            host_ports: self
                .hosts
                .values()
                .map(|h| HostPortStats {
                    vlan: h.spec.vid,
                    ifname: h.spec.ifname(),
                    mac: h.mac.to_string(),
                    ipv4: h.spec.v4.map(|(a, l)| format!("{a}/{l}")),
                    ipv6: h.spec.v6.map(|(a, l)| format!("{a}/{l}")),
                    counters: h.counters.clone(),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| format!("{} via {}", r.dest, r.via))
                .collect(),
            dhcp_relay_vlans: self
                .relay
                .vlans()
                .iter()
                .map(|(v, r)| RelayVlanStats {
                    vlan: *v,
                    giaddr: r.addr.to_string(),
                    servers: r.servers.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            dhcp_relay: self.relay.counters().clone(),
            counters: self.counters.clone(),
        }
    }
}

impl Services {
    /// Make the host ports, routes and relay what `want` says, changing
    /// only what differs. Host-port VLANs join the trunk.
    pub(super) fn apply(&mut self, switch: &mut Switch, cfg: &EdgeConfig, want: Desired) {
        let svc = self;
        // Host ports that went or changed.
        let stale: Vec<u16> = svc
            .hosts
            .iter()
            .filter(|(v, h)| want.hosts.get(v) != Some(&h.spec))
            .map(|(v, _)| *v)
            .collect();
        for vid in stale {
            svc.hosts.remove(&vid);
            svc.relay_socks.remove(&vid);
            let flushed = switch.remove_port(host_port(vid));
            info!(vlan = vid, flushed_macs = flushed, "host port removed");
        }
        for (vid, spec) in &want.hosts {
            if svc.hosts.contains_key(vid) {
                continue;
            }
            match HostPort::create(spec) {
                Ok(h) => {
                    info!(vlan = vid, ifname = %spec.ifname(), mac = %h.mac,
                          ipv4 = ?spec.v4, ipv6 = ?spec.v6, "host port up");
                    svc.hosts.insert(*vid, h);
                    switch.add_port(
                        host_port(*vid),
                        PortConfig {
                            vlans: tunterm_control::VlanSet::default(),
                            untagged_vlan: Some(*vid),
                        },
                    );
                }
                Err(e) => {
                    svc.counters.host_port_errors += 1;
                    warn!(vlan = vid, error = %format!("{e:#}"), "host port not made");
                }
            }
        }
        // The trunk carries the host ports' VLANs too.
        let mut trunk = trunk_port(cfg);
        for &vid in svc.hosts.keys() {
            if Some(vid) != trunk.untagged_vlan {
                let _ = trunk.vlans.insert(vid);
            }
        }
        switch.add_port(TRUNK, trunk);

        // Routes: a removed device took its routes with it; put every wanted
        // one back (replace is idempotent), remove the ones no longer wanted.
        let mut rtnl = match Rtnl::open() {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "routes not changed");
                None
            }
        };
        for r in &svc.routes {
            if !want.routes.contains(r) {
                if let Some(rtnl) = &mut rtnl {
                    r.remove(rtnl);
                }
                info!(dest = %r.dest, via = %r.via, "route removed");
            }
        }
        svc.routes.clear();
        for r in &want.routes {
            let done = match &mut rtnl {
                Some(rtnl) => r.install(rtnl),
                None => Err(anyhow::anyhow!("no netlink socket")),
            };
            match done {
                Ok(()) => {
                    if !svc.applied.routes.contains(r) {
                        info!(dest = %r.dest, via = %r.via, "route installed");
                    }
                    svc.routes.push(r.clone());
                }
                Err(e) => {
                    svc.counters.route_errors += 1;
                    warn!(dest = %r.dest, via = %r.via, error = %format!("{e:#}"), "route not installed");
                }
            }
        }

        // The relay: on VLANs with a host port and an IPv4 address.
        let mut vlans = BTreeMap::new();
        for (&vid, servers) in &want.relay {
            let Some(h) = svc.hosts.get(&vid) else {
                continue;
            };
            let Some((addr, _)) = h.spec.v4 else { continue };
            if let std::collections::btree_map::Entry::Vacant(slot) = svc.relay_socks.entry(vid) {
                match crate::io::hostport::relay_socket(addr) {
                    Ok(s) => {
                        slot.insert(s);
                    }
                    Err(e) => {
                        svc.counters.host_port_errors += 1;
                        warn!(vlan = vid, error = %format!("{e:#}"), "DHCP relay socket not opened");
                        continue;
                    }
                }
            }
            vlans.insert(
                vid,
                VlanRelay {
                    addr,
                    mac: h.mac,
                    servers: servers.clone(),
                },
            );
        }
        svc.relay_socks.retain(|v, _| vlans.contains_key(v));
        if vlans != *svc.relay.vlans() {
            for (vid, v) in &vlans {
                info!(vlan = vid, giaddr = %v.addr, servers = ?v.servers, "DHCP relay on");
            }
        }
        svc.relay.set_vlans(vlans);
        svc.applied = want;
    }
}

impl Dataplane {
    /// Re-read the configuration file (SIGHUP) and apply what changed in
    /// host ports, routes and the DHCP relay. A file that does not load
    /// changes nothing: the error is logged and counted.
    pub(super) fn reload(&mut self, path: Option<&Path>) {
        let Some(path) = path else {
            self.reload_failed("no --config file to re-read (the embedded lab configuration runs)");
            return;
        };
        let new = match tunterm_control::load_file(path) {
            Ok(c) => c,
            Err(e) => {
                self.reload_failed(&format!("{}: {e}", path.display()));
                return;
            }
        };
        let report = self.apply_config(new);
        info!(file = %path.display(), config_digest = %report.config_digest,
              applied = ?report.applied, needs_restart = ?report.needs_restart,
              "configuration reloaded");
    }

    /// Threads of the userspace data path now (the event loop and the
    /// forwarding workers).
    fn threads(&self) -> usize {
        self.workers.as_ref().map_or(1, |w| w.workers() + 1)
    }

    /// Apply a validated configuration: what can change live does, the
    /// rest is listed as waiting for a restart (and keeps its old value).
    /// The one path of SIGHUP and `apply-config`. Tunnels the change does
    /// not touch stay up and keep forwarding.
    pub(super) fn apply_config(&mut self, new: EdgeConfig) -> ApplyReport {
        let now = Instant::now();
        let mut plan = plan(&self.cfg, &new);
        plan.needs_restart.extend(workers_change(
            self.cfg.workers(),
            new.workers(),
            self.threads(),
            self.workers_override,
        ));
        let old = self.cfg.clone();
        let mut running = new.clone();
        // The interfaces first: what cannot be opened keeps the old ones.
        if plan.interfaces
            && let Err(e) = self.move_interfaces(&running)
        {
            let why = format!("{e:#}");
            warn!(error = %why, "reload: interfaces not changed");
            plan.interfaces = false;
            plan.applied.retain(|a| !a.starts_with(INTERFACES));
            plan.needs_restart
                .push(format!("{INTERFACES}: {why}; the old ones stay"));
            running.upstream_interfaces = old.upstream_interfaces.clone();
            running.downstream_interfaces = old.downstream_interfaces.clone();
        }
        if plan.name {
            self.name = running.name.clone();
            self.endpoint.set_host_name(running.name.clone());
            // The state file names the edge: written anew at once.
            self.state_dirty = true;
            self.state_due = now;
        }
        if !plan.addresses {
            running.tunnel_ip = old.tunnel_ip;
            running.tunnel_prefix = old.tunnel_prefix;
            running.tunnel_ip6 = old.tunnel_ip6;
        }
        // Host ports first: the tunnel address may live on one. The trunk
        // port too (its native VLAN, the tunnels' VLANs): a change flushes
        // its MACs, and the fast path's trunk entry follows.
        let want = desired(&running, self.svc.ip_config_port);
        self.svc.apply(&mut self.switch, &running, want);
        self.sync_trunk_port();
        // New sockets first (those that stay are kept), then the old ones
        // close. One that cannot be opened leaves every socket as it was.
        let socks = if super::socket_keys(&running) != self.socks.keys() {
            match super::open_sockets(&running, self.port, Some(&self.socks)) {
                Ok(s) => Some(s),
                Err(e) => {
                    let why = format!("{e:#}");
                    warn!(error = %why, "reload: tunnel sockets not changed");
                    plan.needs_restart.push(format!(
                        "tunnel sockets (mxtunnels' protocols, mGRE, tunnel address): {why}; \
                         the old ones stay"
                    ));
                    if plan.addresses {
                        plan.addresses = false;
                        plan.applied
                            .retain(|a| !a.starts_with("mxedge.tunterm_ip_config"));
                        running.tunnel_ip = old.tunnel_ip;
                        running.tunnel_prefix = old.tunnel_prefix;
                        running.tunnel_ip6 = old.tunnel_ip6;
                        let want = desired(&running, self.svc.ip_config_port);
                        self.svc.apply(&mut self.switch, &running, want);
                        self.sync_trunk_port();
                    }
                    None
                }
            }
        } else {
            None
        };
        // What the change closes, for the stats.
        let mut c = ServiceCounters::default();
        if plan.addresses {
            // The APs address the old address: their tunnels cannot move.
            let gone4 = old.tunnel_ip != running.tunnel_ip;
            let gone6 = old.tunnel_ip6 != running.tunnel_ip6;
            c.reload_closed_tunnels += self.endpoint.close_peers(
                now,
                |peer| if peer.is_ipv6() { gone6 } else { gone4 },
                stopccn::CLEAR,
                "tunnel address changed",
            ) as u64;
            let peers: Vec<PortId> = self
                .gre
                .peers(now)
                .filter(|p| if p.addr.is_ipv6() { gone6 } else { gone4 })
                .map(|p| p.port)
                .collect();
            for port in peers {
                c.reload_removed_gre_peers += 1;
                self.gre.remove_peer(port);
            }
            self.fwd.set_config(ForwardConfig {
                icmp_src4: running.tunnel_ip,
                icmp_src6: running.tunnel_ip6,
                ..self.fwd.config().clone()
            });
            if let Some(f) = &mut self.fast {
                f.set_local_addresses(running.tunnel_ip, running.tunnel_ip6);
            }
        }
        if plan.tunnels_changed {
            let (conns, sessions) = self.endpoint.replace_profiles(
                now,
                super::profiles(&running),
                &plan.moved,
                stopccn::CLEAR,
                "mxtunnel removed",
            );
            c.reload_closed_tunnels += conns as u64;
            c.reload_closed_sessions += sessions as u64;
            self.mtus = super::tunnel_mtus(&running, self.link_mtu);
            self.retag_sessions(&running);
        }
        if plan.ap_subnets {
            let n = self.endpoint.set_admit(
                now,
                running.ap_subnets.clone(),
                stopccn::CLEAR,
                "outside tunterm_ap_subnets",
            );
            c.reload_closed_tunnels += n as u64;
        }
        if plan.ap_subnets || plan.mgre {
            let timeout = running
                .mgre
                .as_ref()
                .map_or(self.gre.config().peer_timeout, |m| m.peer_timeout);
            c.reload_removed_gre_peers +=
                self.gre.reconfigure(running.ap_subnets.clone(), timeout) as u64;
        }
        if plan.mgre {
            match &running.mgre {
                None => {
                    c.reload_removed_gre_peers += self.gre.peer_count() as u64;
                    self.gre.remove_all();
                }
                Some(m) => {
                    let ports: Vec<PortId> = self.gre.peers(now).map(|p| p.port).collect();
                    for port in ports {
                        self.switch.add_port(
                            port,
                            PortConfig {
                                vlans: m.vlans.clone(),
                                untagged_vlan: Some(m.default_vlan),
                            },
                        );
                    }
                }
            }
        }
        if plan.monitoring {
            let rx = self.monitor.replace(
                now,
                &running,
                &self.monitor_opts,
                &mut self.endpoint,
                &mut self.gre,
            );
            self.rewired.get_or_insert_with(Default::default).probes = Some(rx);
        }
        self.reconfigure_mcast(&running, now);
        self.reconfigure_clients(&running, now);
        self.cfg = running;
        // The StopCCNs go out of the sockets the APs know, then those close.
        self.flush_control();
        self.handle_events();
        if let Some(socks) = socks {
            self.flush_tunnel_tx();
            self.socks = socks;
            self.rewired.get_or_insert_with(Default::default).sockets = true;
            // The forwarding workers take theirs (and close those of
            // addresses gone) before this returns: a reload's answer
            // means the old addresses are free.
            self.resocket_workers();
        }
        self.sessions_changed = true;
        let counters = &mut self.svc.counters;
        counters.reloads += 1;
        counters.reload_closed_tunnels += c.reload_closed_tunnels;
        counters.reload_closed_sessions += c.reload_closed_sessions;
        counters.reload_removed_gre_peers += c.reload_removed_gre_peers;
        if c.reload_closed_tunnels + c.reload_closed_sessions + c.reload_removed_gre_peers > 0 {
            info!(
                tunnels = c.reload_closed_tunnels,
                sessions = c.reload_closed_sessions,
                gre_peers = c.reload_removed_gre_peers,
                "reload closed what the new configuration has no place for"
            );
        }
        // The digest of what was applied (what waits for a restart is in
        // the report), as the agent compares it with what it sent.
        self.control.config_digest = crate::api::config_digest(&new.raw);
        let digest = &self.control.config_digest;
        self.control.emit(|| crate::api::EventKind::Reload {
            ok: true,
            error: None,
            config_digest: digest.clone(),
        });
        ApplyReport {
            config_digest: self.control.config_digest.clone(),
            applied: plan.applied,
            needs_restart: plan.needs_restart,
            persisted: None,
        }
    }

    /// The fast path's trunk entry: the switch's trunk port as it is now.
    fn sync_trunk_port(&mut self) {
        if let (Some(f), Some(cfg)) = (&mut self.fast, self.switch.port_config(TRUNK))
            && let Err(e) = f.set_trunk_port(cfg)
        {
            warn!(error = %format!("{e:#}"), "fast path: the trunk's VLANs not written");
        }
    }

    /// Move to the interfaces `cfg` names (a reload): the trunk's packet
    /// socket is opened on the new upstream interface, the fast path's
    /// programs move (maps kept), the AP link's MTU is read again; the
    /// MACs learnt on the trunk are flushed and relearnt. Nothing changes
    /// when one of them cannot be done.
    fn move_interfaces(&mut self, cfg: &EdgeConfig) -> anyhow::Result<()> {
        let upstream = match (&self.upstream_override, cfg.upstream_interfaces.first()) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => u.clone(),
            (None, None) => anyhow::bail!("no upstream interface"),
        };
        super::check_ports(cfg, Some(&upstream))?;
        let link_mtu = super::link_mtu_of(&cfg.downstream_interfaces)?;
        let trunk = if upstream != self.upstream {
            let sock = crate::io::afpacket::PacketSocket::bind_with_rx_ring(&upstream)
                .with_context(|| format!("opening the upstream trunk {upstream}"))?;
            Some(Rc::new(sock.into_async()?))
        } else {
            None
        };
        if let Some(f) = &mut self.fast {
            f.move_to(&cfg.downstream_interfaces, &upstream)?;
        }
        if let Some(trunk) = trunk {
            info!(from = %self.upstream, to = %upstream, "the upstream trunk moved");
            self.trunk = trunk;
            self.upstream = upstream;
            self.rewired.get_or_insert_with(Default::default).sockets = true;
            let flushed = self.switch.flush_port(TRUNK);
            info!(flushed_macs = flushed, "the trunk's MACs flushed");
        }
        if link_mtu != self.link_mtu {
            info!(
                from = self.link_mtu,
                to = link_mtu,
                "the AP link's MTU changed"
            );
            self.link_mtu = link_mtu;
            self.fwd.set_config(ForwardConfig {
                link_mtu,
                ..self.fwd.config().clone()
            });
            self.mtus = super::tunnel_mtus(cfg, link_mtu);
        }
        self.sessions_changed = true;
        Ok(())
    }

    /// Give every L2TP session its mxtunnel's VLANs as they are now (the
    /// tunnel stays up; the session's learnt MACs are relearnt).
    fn retag_sessions(&mut self, cfg: &EdgeConfig) {
        let ports: Vec<(u32, PortConfig)> = self
            .endpoint
            .sessions()
            .filter(|s| self.switch.port_config(PortId(s.local_sid)).is_some())
            .filter_map(|s| {
                let t = cfg.tunnels.get(s.profile?)?;
                let untagged_vlan = (s.pw_type == pw::ETHERNET).then_some(t.default_vlan);
                Some((
                    s.local_sid,
                    PortConfig {
                        vlans: t.vlans.clone(),
                        untagged_vlan,
                    },
                ))
            })
            .collect();
        for (sid, port) in ports {
            info!(session_id = sid, vlans = %port.vlans, "session VLANs changed");
            self.switch.add_port(PortId(sid), port);
        }
    }

    fn reload_failed(&mut self, why: &str) {
        self.svc.counters.reload_errors += 1;
        self.svc.counters.last_reload_error = Some(why.to_string());
        warn!(error = %why, "reload refused; the running configuration stays");
        let digest = &self.control.config_digest;
        self.control.emit(|| crate::api::EventKind::Reload {
            ok: false,
            error: Some(why.to_string()),
            config_digest: digest.clone(),
        });
    }

    /// Read what became readable: frames of a host port into the switch,
    /// server replies into the relay.
    pub(super) fn drain_services(&mut self, what: Readable) {
        let mut buf = std::mem::take(&mut self.svc.buf);
        match what {
            // A budget per turn of the loop, as for the tunnel sockets
            // (inputs.rs); the readiness stays set until a read would block.
            Readable::Tap(vid) => {
                for _ in 0..super::inputs::SOURCE_BUDGET {
                    let Some(h) = self.svc.hosts.get_mut(&vid) else {
                        break;
                    };
                    let got = h
                        .tap
                        .try_io(tokio::io::Interest::READABLE, |t| t.read(&mut buf));
                    let n = match got {
                        Ok(n) => n,
                        Err(e) => {
                            if e.kind() != std::io::ErrorKind::WouldBlock {
                                h.counters.rx_errors += 1;
                            }
                            break;
                        }
                    };
                    h.counters.rx += 1;
                    self.switch_frame(Instant::now(), host_port(vid), &buf[..n]);
                }
            }
            Readable::Relay(vid) => {
                for _ in 0..super::inputs::SOURCE_BUDGET {
                    let Some(s) = self.svc.relay_socks.get(&vid) else {
                        break;
                    };
                    let got = s.try_io(tokio::io::Interest::READABLE, |u| u.recv_from(&mut buf));
                    let (n, from) = match got {
                        Ok((n, SocketAddr::V4(from))) => (n, from),
                        Ok(_) => continue,
                        Err(_) => break,
                    };
                    let now = Instant::now();
                    let Some(to) = self.svc.relay.handle_server(now, vid, from, &buf[..n]) else {
                        continue;
                    };
                    let known = self.switch.port_config(to.port).is_some_and(|c| {
                        c.vlans.contains(to.vlan) || c.untagged_vlan == Some(to.vlan)
                    });
                    if known {
                        self.deliver(now, host_port(vid), to.port, to.vlan, &to.frame);
                    } else {
                        self.svc.counters.relay_deliver_no_port += 1;
                    }
                }
            }
        }
        self.svc.buf = buf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mxedge: serde_json::Value) -> EdgeConfig {
        let mut cfg: serde_json::Value =
            serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap();
        for (k, v) in mxedge.as_object().unwrap() {
            cfg["mxedge"][k] = v.clone();
        }
        tunterm_control::load_str(&cfg.to_string()).unwrap()
    }

    #[test]
    fn a_new_worker_count_waits_for_a_restart() {
        // Unchanged, or the same as running: nothing to say.
        assert_eq!(workers_change(None, None, 1, None), None);
        assert_eq!(workers_change(Some(2), Some(2), 2, None), None);
        assert_eq!(workers_change(None, Some(1), 1, None), None);
        // Set back to what runs (an earlier reload changed it): nothing.
        assert_eq!(workers_change(Some(4), Some(2), 2, None), None);
        let s = workers_change(None, Some(4), 1, None).unwrap();
        assert!(s.starts_with("mxedge.tunterm_workers 4:"), "{s}");
        assert!(
            s.contains("runs 1 data path thread(s) until a restart"),
            "{s}"
        );
        // Removed: back to the default, 1.
        let s = workers_change(Some(2), None, 2, None).unwrap();
        assert!(s.starts_with("mxedge.tunterm_workers 1:"), "{s}");
        // --workers on the command line wins: said once, when the file
        // changes.
        assert_eq!(workers_change(Some(4), Some(4), 2, Some(2)), None);
        let s = workers_change(None, Some(4), 2, Some(2)).unwrap();
        assert!(s.contains("not used while --workers 2"), "{s}");
    }

    #[test]
    fn the_configuration_says_which_host_ports_routes_and_relays() {
        let cfg = config(serde_json::json!({
            "tunterm_ip_config": {"ip": "10.1.0.5", "netmask": "/24", "gateway": "10.1.0.1",
                                  "ip6": "fd00:1::5", "netmask6": "/64", "gateway6": "fd00:1::1"},
            "tunterm_other_ip_configs": {
                "10": {"ip": "192.168.10.2", "netmask": "255.255.255.0"},
                "20": {"ip": "192.168.20.2", "netmask": "255.255.254.0"}
            },
            "tunterm_extra_routes": {"172.16.0.0/12": {"via": "192.168.10.1"}},
            "tunterm_dhcpd_config": {
                "enabled": true, "servers": ["192.168.20.1"],
                "10": {"enabled": true, "servers": ["192.168.10.1", "172.16.2.2"]},
                "20": {"enabled": false},
                "30": {"enabled": true, "servers": ["192.168.30.1"]}
            }
        }));
        let d = desired(&cfg, true);
        assert_eq!(d.hosts.keys().copied().collect::<Vec<_>>(), [1, 10, 20]);
        let native = &d.hosts[&1];
        assert_eq!(native.v4, Some(("10.1.0.5".parse().unwrap(), 24)));
        assert_eq!(native.gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(native.v6, Some(("fd00:1::5".parse().unwrap(), 64)));
        assert_eq!(native.gateway6, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(d.hosts[&20].v4, Some(("192.168.20.2".parse().unwrap(), 23)));
        assert_eq!(d.hosts[&10].ifname(), "tt-v10");
        assert_eq!(d.hosts[&10].mac, stable_mac("lab-edge", 10));
        assert_ne!(d.hosts[&10].mac, d.hosts[&20].mac);
        assert_eq!(
            d.routes,
            [Route {
                dest: "172.16.0.0/12".parse().unwrap(),
                via: "192.168.10.1".parse().unwrap()
            }]
        );
        // VLAN 10 its own servers, 1 the global ones, 20 off, 30 has no
        // address to relay from.
        let relay: Vec<(u16, Vec<Ipv4Addr>)> = d.relay.into_iter().collect();
        assert_eq!(
            relay,
            [
                (1, vec!["192.168.20.1".parse().unwrap()]),
                (
                    10,
                    vec![
                        "192.168.10.1".parse().unwrap(),
                        "172.16.2.2".parse().unwrap()
                    ]
                ),
            ]
        );
        // tunterm_ip_config's address already on an interface: no host
        // port for it.
        let d = desired(&cfg, false);
        assert_eq!(d.hosts.keys().copied().collect::<Vec<_>>(), [10, 20]);
    }

    #[test]
    fn a_change_is_sorted_into_live_and_restart() {
        let old = config(serde_json::json!({}));
        let same = plan(&old, &old);
        assert_eq!(
            same,
            Plan {
                moved: vec![Some(0)],
                ..Plan::default()
            }
        );

        let mut raw: serde_json::Value = serde_json::to_value(&old.raw).unwrap();
        raw["mxtunnels"][0]["vlan_ids"] = serde_json::json!([10, 99]);
        raw["mxtunnels"][0]["hello_interval"] = serde_json::json!(5);
        raw["mxedge"]["tunterm_other_ip_configs"] =
            serde_json::json!({"10": {"ip": "192.168.10.2", "netmask": "/24"}});
        let new = tunterm_control::load_str(&raw.to_string()).unwrap();
        let p = plan(&old, &new);
        assert!(p.tunnels_changed && p.moved == [Some(0)], "{p:?}");
        assert!(p.needs_restart.is_empty(), "{p:?}");
        assert!(
            p.applied[0].contains("vlan_ids 10,20,30-31 -> 10,99"),
            "{p:?}"
        );
        assert!(p.applied[1].contains("hello_interval"), "{p:?}");
        assert!(p.applied[2].contains("host ports"), "{p:?}");

        // A second tunnel, a new address, other AP subnets, monitoring,
        // mGRE: all live.
        let mut other = raw["mxtunnels"][0].clone();
        other["name"] = "other".into();
        other["id"] = "other-id".into();
        raw["mxtunnels"].as_array_mut().unwrap().push(other);
        raw["mxedge"]["tunterm_ip_config"]["ip"] = "10.99.0.9".into();
        raw["mxcluster"]["tunterm_ap_subnets"] = serde_json::json!(["10.98.0.0/24"]);
        raw["mxedge"]["tunterm_monitoring"] =
            serde_json::json!([{"protocol": "arp", "host": "10.99.0.1", "timeout": 60}]);
        let new = tunterm_control::load_str(&raw.to_string()).unwrap();
        let p = plan(&old, &new);
        assert!(p.needs_restart.is_empty(), "{p:?}");
        assert_eq!(p.moved, [Some(0)]);
        assert!(p.addresses && p.ap_subnets, "{p:?}");
        let applied = p.applied.join("; ");
        for what in [
            "mxtunnel other added",
            "tunterm_ip_config",
            "tunterm_ap_subnets",
        ] {
            assert!(applied.contains(what), "{what}: {applied}");
        }
    }

    #[test]
    fn mxtunnels_are_matched_by_id_so_a_rename_keeps_its_tunnels() {
        let old = config(serde_json::json!({}));
        let mut raw: serde_json::Value = serde_json::to_value(&old.raw).unwrap();
        let first = raw["mxtunnels"][0].clone();
        let mut second = first.clone();
        second["id"] = "second-id".into();
        second["name"] = "second".into();
        raw["mxtunnels"] = serde_json::json!([first, second]);
        let two = tunterm_control::load_str(&raw.to_string()).unwrap();

        // The first removed: the second moves to index 0, the first's
        // tunnels close.
        let mut raw2 = raw.clone();
        raw2["mxtunnels"].as_array_mut().unwrap().remove(0);
        raw2["mxtunnels"][0]["name"] = "second-renamed".into();
        raw2["mxtunnels"][0]["mtu"] = 1400.into();
        let one = tunterm_control::load_str(&raw2.to_string()).unwrap();
        let p = plan(&two, &one);
        assert_eq!(p.moved, [None, Some(0)]);
        let applied = p.applied.join("; ");
        assert!(
            applied.contains(&format!("mxtunnel {} removed", two.tunnels[0].name)),
            "{applied}"
        );
        assert!(
            applied.contains("mxtunnel second renamed second-renamed"),
            "{applied}"
        );
        assert!(applied.contains("mtu 0 -> 1400"), "{applied}");
        assert!(p.needs_restart.is_empty(), "{p:?}");

        // The cloud's copy of a hand-written (id-less) mxtunnel: the same
        // name with the cloud's id is the same mxtunnel; an explicit id
        // that changes is another one.
        let mut cloud = raw.clone();
        assert!(cloud["mxtunnels"][0].get("id").is_none_or(|v| v.is_null()));
        cloud["mxtunnels"][0]["id"] = "5e1f-cloud-id".into();
        let cloud = tunterm_control::load_str(&cloud.to_string()).unwrap();
        let p = plan(&two, &cloud);
        assert_eq!(p.moved, [Some(0), Some(1)], "{p:?}");
        assert!(!p.applied.join("; ").contains("removed"), "{p:?}");
        let p = plan(&cloud, &two);
        assert_eq!(p.moved, [None, Some(1)], "{p:?}");

        // Another protocol: the same id, but its tunnels cannot stay.
        let mut raw3 = raw.clone();
        raw3["mxtunnels"][1]["protocol"] = "ip".into();
        let proto = tunterm_control::load_str(&raw3.to_string()).unwrap();
        let p = plan(&two, &proto);
        assert_eq!(p.moved, [Some(0), None]);
        assert!(p.applied[0].contains("protocol"), "{p:?}");

        // The name, the native VLAN and the interfaces: live too.
        let mut raw4 = raw.clone();
        raw4["mxedge"]["name"] = "renamed-edge".into();
        raw4["mxedge"]["tunterm_port_config"] = serde_json::json!({
            "separate_upstream_downstream": true,
            "downstream_ports": ["0"], "upstream_ports": ["2"], "upstream_port_vlan_id": 10
        });
        raw4["ports"] = serde_json::json!({"0": "ap0", "1": "trunk0", "2": "trunk1"});
        let renamed = tunterm_control::load_str(&raw4.to_string()).unwrap();
        let p = plan(&two, &renamed);
        assert!(p.needs_restart.is_empty(), "{p:?}");
        assert!(p.name && p.interfaces && p.monitoring, "{p:?}");
        let applied = p.applied.join("; ");
        for what in [
            "mxedge.name lab-edge -> renamed-edge",
            "native VLAN) 1 -> 10",
            "upstream [\"trunk0\"] -> [\"trunk1\"]",
        ] {
            assert!(applied.contains(what), "{what}: {applied}");
        }
    }

    #[test]
    fn no_addresses_no_host_ports() {
        let d = desired(&EdgeConfig::lab_default(), false);
        assert_eq!(d, Desired::default());
    }
}
