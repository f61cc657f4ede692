//! `bounce-port` (the Mist API's `bounce_port`): named data ports go down
//! for a hold time and come back.
//!
//! A port goes down as a link does (`ip link set DEV down`, through
//! netlink), not by tunterm ignoring it: what a bounce is for is the
//! device at the other end seeing the carrier go (a switch re-runs its
//! port's state, an AP's tunnel notices), which no amount of dropping
//! frames inside tunterm shows. Only the ports tunterm forwards on may be
//! bounced — the trunk, the AP-facing ports, the edge's host ports — never
//! another port of the `ports` map (the management port would cut the
//! agent off from the cloud) nor the loopback. What the kernel forgets
//! when a link goes down (IPv6 addresses, routes through a gateway on it)
//! is noted first and put back when it comes up; ports still down when
//! tunterm stops are brought up on the way out.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tracing::{info, warn};

use super::Dataplane;
use crate::api::{
    BOUNCE_MAX_HOLD_MS, BOUNCE_MAX_PORTS, BouncePortReport, BouncePortRequest, BouncedPort,
};
use crate::io::netlink::Rtnl;
use tunterm_core::proto::bridge::host_port;

/// A port that is down for a bounce.
#[derive(Debug)]
pub(super) struct Bounce {
    port: String,
    ifname: String,
    up_at: Instant,
    /// What the kernel drops with the link, put back at the end.
    addresses: Vec<(IpAddr, u8)>,
    routes: Vec<(IpNet, IpAddr)>,
}

/// The ports down for a bounce (at most the ports tunterm has).
#[derive(Debug, Default)]
pub(super) struct Bounces {
    down: Vec<Bounce>,
    /// Ports bounced, and bounces that failed (see the log).
    pub(super) counters: BounceCounters,
}

/// `bounce-port` counters, for the stats.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BounceCounters {
    /// Ports taken down by `bounce-port`.
    pub port_bounces: u64,
    /// Ports that could not be taken down or brought back (see the log).
    pub port_bounce_errors: u64,
    /// Ports down for a bounce now.
    pub ports_down: usize,
}

impl Bounces {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.down.iter().map(|b| b.up_at).min()
    }
}

impl Dataplane {
    /// The interface a `bounce-port` name stands for, or why none.
    fn bounce_target(&self, name: &str) -> Result<String, String> {
        let data = |iface: &str| {
            *iface == self.upstream || self.cfg.downstream_interfaces.iter().any(|d| d == iface)
        };
        if name == "trunk" {
            return Ok(self.upstream.clone());
        }
        if let Some(v) = name.strip_prefix("host:") {
            let vid: u16 = v
                .parse()
                .map_err(|_| format!("port {name:?}: not a VLAN id"))?;
            if self.switch.port_config(host_port(vid)).is_none() {
                return Err(format!(
                    "port {name:?}: the edge has no host port on VLAN {vid}"
                ));
            }
            return Ok(format!("tt-v{vid}"));
        }
        if let Some(ports) = &self.cfg.raw.ports {
            let mist = name.strip_prefix("port").filter(|m| ports.contains_key(*m));
            if let Some(iface) = ports.get(mist.unwrap_or(name)) {
                if !data(iface) {
                    return Err(format!(
                        "port {name:?} ({iface}) is not a tunterm data port (upstream or downstream)"
                    ));
                }
                return Ok(iface.clone());
            }
        }
        if data(name) {
            return Ok(name.to_string());
        }
        let mut known = vec!["trunk".to_string()];
        if let Some(ports) = &self.cfg.raw.ports {
            known.extend(
                ports
                    .iter()
                    .filter(|(_, i)| data(i))
                    .map(|(m, _)| m.clone()),
            );
        }
        known.push(self.upstream.clone());
        known.extend(self.cfg.downstream_interfaces.iter().cloned());
        known.dedup();
        Err(format!(
            "unknown port {name:?} (data ports: {}, host:<vlan>)",
            known.join(", ")
        ))
    }

    /// Check a `bounce-port` and take its ports down. Nothing is bounced
    /// unless every port is known and the hold time in range.
    pub(super) fn bounce_ports(
        &mut self,
        now: Instant,
        req: &BouncePortRequest,
    ) -> Result<BouncePortReport, String> {
        if req.hold_time == 0 || req.hold_time > BOUNCE_MAX_HOLD_MS {
            return Err(format!(
                "hold_time {} ms: must be 1 to {BOUNCE_MAX_HOLD_MS} ms",
                req.hold_time
            ));
        }
        if req.ports.is_empty() {
            return Err("ports: name at least one port".into());
        }
        if req.ports.len() > BOUNCE_MAX_PORTS {
            return Err(format!("ports: at most {BOUNCE_MAX_PORTS}"));
        }
        let mut targets: Vec<(String, String)> = Vec::new();
        for name in &req.ports {
            let ifname = self.bounce_target(name)?;
            if ifname == "lo" {
                return Err(format!("port {name:?} is the loopback: not bounced"));
            }
            if self.bounces.down.iter().any(|b| b.ifname == ifname) {
                return Err(format!(
                    "port {name:?} ({ifname}) is already down for a bounce"
                ));
            }
            if !targets.iter().any(|(_, i)| *i == ifname) {
                targets.push((name.clone(), ifname));
            }
        }
        let mut rtnl = Rtnl::open().map_err(|e| format!("{e}"))?;
        let up_at = now + Duration::from_millis(req.hold_time);
        let mut report = BouncePortReport {
            ports: Vec::new(),
            hold_time: req.hold_time,
        };
        // Down in this request so far: back up if a later one fails.
        let mut taken: Vec<Bounce> = Vec::new();
        for (port, ifname) in targets {
            let link = match rtnl.link(&ifname) {
                Ok(l) => l,
                Err(e) => {
                    self.bounces.counters.port_bounce_errors += 1;
                    self.bring_up(&mut rtnl, taken);
                    return Err(format!("port {port:?}: {e}"));
                }
            };
            // IPv6 link-local addresses the kernel makes again itself.
            let addresses = rtnl
                .addresses(&link)
                .unwrap_or_default()
                .into_iter()
                .filter(|(a, _)| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
                .collect();
            let routes = rtnl
                .routes(Some(link.index))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| Some((r.dest, r.via?)))
                .collect();
            if let Err(e) = rtnl.set_down(&ifname) {
                self.bounces.counters.port_bounce_errors += 1;
                self.bring_up(&mut rtnl, taken);
                return Err(format!("port {port:?}: {e}"));
            }
            warn!(port = %port, ifname = %ifname, hold_ms = req.hold_time, "port bounce: link down");
            self.bounces.counters.port_bounces += 1;
            report.ports.push(BouncedPort {
                port: port.clone(),
                ifname: ifname.clone(),
            });
            taken.push(Bounce {
                port,
                ifname,
                up_at,
                addresses,
                routes,
            });
        }
        self.bounces.down.extend(taken);
        self.bounces.counters.ports_down = self.bounces.down.len();
        Ok(report)
    }

    /// Bring back the bounced ports whose hold time is over (all of them
    /// with `all`: the daemon stopping).
    pub(super) fn end_bounces(&mut self, now: Instant, all: bool) {
        if !self.bounces.down.iter().any(|b| all || b.up_at <= now) {
            return;
        }
        let (due, keep) = std::mem::take(&mut self.bounces.down)
            .into_iter()
            .partition(|b| all || b.up_at <= now);
        self.bounces.down = keep;
        self.bounces.counters.ports_down = self.bounces.down.len();
        let mut rtnl = match Rtnl::open() {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "port bounce: no netlink socket; trying again in a second");
                self.bounces.counters.port_bounce_errors += 1;
                let mut due: Vec<Bounce> = due;
                for b in &mut due {
                    b.up_at = now + Duration::from_secs(1);
                }
                self.bounces.down.extend(due);
                self.bounces.counters.ports_down = self.bounces.down.len();
                return;
            }
        };
        self.bring_up(&mut rtnl, due);
    }

    /// Bring `ports` up, with what the kernel dropped when they went down.
    fn bring_up(&mut self, rtnl: &mut Rtnl, ports: Vec<Bounce>) {
        for b in ports {
            if let Err(e) = rtnl.set_up(&b.ifname) {
                self.bounces.counters.port_bounce_errors += 1;
                warn!(port = %b.port, ifname = %b.ifname, error = %e, "port bounce: link not brought up");
                continue;
            }
            let Ok(link) = rtnl.link(&b.ifname) else {
                continue;
            };
            let had = rtnl.addresses(&link).unwrap_or_default();
            for &(addr, len) in b.addresses.iter().filter(|a| !had.contains(a)) {
                if let Err(e) = rtnl.add_address(&link, addr, len) {
                    warn!(ifname = %b.ifname, error = %e, "port bounce: address not put back");
                }
            }
            for &(dest, via) in &b.routes {
                if let Err(e) = rtnl.replace_route(dest, via, Some(&link)) {
                    warn!(ifname = %b.ifname, error = %e, "port bounce: route not put back");
                }
            }
            info!(port = %b.port, ifname = %b.ifname, "port bounce: link up");
        }
    }
}
