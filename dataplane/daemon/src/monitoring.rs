//! The daemon's side of upstream monitoring: turns `tunterm_monitoring`
//! into [`Monitor`] checks, runs their probes and hands the results back.
//!
//! - `ping` and `tcp` go through the kernel ([`crate::io::probe`]), from the
//!   edge's address on `src_vlan_id` (`tunterm_other_ip_configs`) when one
//!   is given — that address must exist on the host (a host port), else the
//!   probe fails saying it cannot bind it.
//! - `arp` goes out on the trunk itself, on `src_vlan_id` (tagged as the
//!   trunk carries that VLAN) or the native VLAN: an ARP request for the
//!   host from a MAC of the monitor's own, with the edge's VLAN address as
//!   sender, or 0.0.0.0 (an RFC 5227 probe) when it has none. The reply,
//!   unicast to that MAC, is taken off the trunk before the switch sees it.
//!   This checks exactly the path the tunnels' traffic takes.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tunterm_control::{EdgeConfig, MonitoringProtocol};

use tunterm_core::proto::monitor::{CheckSpec, Monitor, MonitorConfig, MonitorEvent, MonitorStats};
use tunterm_core::wire::ether::{self, MacAddr};

/// Daemon settings of the monitoring (`tunterm run` flags).
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// Time between probes of a check (`--monitor-interval`).
    pub interval: Duration,
    /// Replaces every check's `timeout` (`--monitor-timeout`); None: the
    /// configured one.
    pub fail_after: Option<Duration>,
    /// Successful probes in a row before a failed check passes again
    /// (`--monitor-recover`).
    pub recover_after: u32,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        let d = MonitorConfig::default();
        MonitorOptions {
            interval: d.interval,
            fail_after: None,
            recover_after: d.recover_after,
        }
    }
}

#[derive(Clone, Debug)]
enum Probe {
    Ping {
        host: String,
        src: Option<IpAddr>,
    },
    Tcp {
        host: String,
        port: u16,
        src: Option<IpAddr>,
    },
    Arp {
        target: Ipv4Addr,
        sender: Ipv4Addr,
        /// The 802.1Q tag on the trunk (None: the native VLAN).
        tag: Option<u16>,
    },
}

/// A probe result: the check's index and its outcome.
pub type ProbeResult = (usize, Result<(), String>);

/// Upstream monitoring as the driver runs it.
pub struct UpstreamMonitor {
    monitor: Monitor,
    probes: Vec<Probe>,
    results_tx: mpsc::UnboundedSender<ProbeResult>,
    /// ARP probes waiting for their reply: check, target, deadline.
    arp_pending: Vec<(usize, Ipv4Addr, Instant)>,
    /// Source MAC of the ARP probes (locally administered, from the
    /// edge's name, so two edges on one segment differ).
    arp_mac: MacAddr,
    seq: u16,
    /// Changes of health not yet taken (for the event stream): healthy,
    /// and the failing checks.
    changes: Vec<(bool, Vec<String>)>,
}

/// The edge's address on `vlan` (`tunterm_other_ip_configs`).
fn vlan_address(cfg: &EdgeConfig, vlan: u32) -> Option<Ipv4Addr> {
    cfg.raw
        .mxedge
        .tunterm_other_ip_configs
        .get(&vlan.to_string())
        .and_then(|c| c.ip.as_deref())
        .and_then(|ip| ip.parse().ok())
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across runs and builds.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl UpstreamMonitor {
    /// The monitor of `cfg`'s checks (none: always healthy) and the
    /// receiver the driver reads probe results from.
    pub fn new(
        now: Instant,
        cfg: &EdgeConfig,
        opts: &MonitorOptions,
    ) -> (UpstreamMonitor, mpsc::UnboundedReceiver<ProbeResult>) {
        let mut specs = Vec::new();
        let mut probes = Vec::new();
        for c in cfg.monitoring() {
            let src = c.src_vlan_id.and_then(|v| vlan_address(cfg, v));
            let (name, probe) = match c.protocol {
                MonitoringProtocol::Ping => (
                    format!("ping {}", c.host),
                    Probe::Ping {
                        host: c.host.clone(),
                        src: src.map(IpAddr::V4),
                    },
                ),
                MonitoringProtocol::Tcp => {
                    let port = c.port.unwrap_or(0) as u16;
                    (
                        format!("tcp {}:{port}", c.host),
                        Probe::Tcp {
                            host: c.host.clone(),
                            port,
                            src: src.map(IpAddr::V4),
                        },
                    )
                }
                MonitoringProtocol::Arp => {
                    // Validated: an IPv4 address, a VLAN in range.
                    let target = c.host.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
                    let vlan = c
                        .src_vlan_id
                        .map_or(cfg.upstream_port_vlan_id, |v| v as u16);
                    let tag = (vlan != cfg.upstream_port_vlan_id).then_some(vlan);
                    (
                        format!("arp {} vlan {vlan}", c.host),
                        Probe::Arp {
                            target,
                            sender: src.unwrap_or(Ipv4Addr::UNSPECIFIED),
                            tag,
                        },
                    )
                }
            };
            specs.push(CheckSpec {
                name,
                fail_after: opts
                    .fail_after
                    .unwrap_or(Duration::from_secs(u64::from(c.timeout))),
            });
            probes.push(probe);
        }
        let h = name_hash(&cfg.name).to_be_bytes();
        let (tx, rx) = mpsc::unbounded_channel();
        let monitor = Monitor::new(
            now,
            MonitorConfig {
                interval: opts.interval,
                recover_after: opts.recover_after,
            },
            specs,
        );
        (
            UpstreamMonitor {
                monitor,
                probes,
                results_tx: tx,
                arp_pending: Vec::new(),
                arp_mac: MacAddr([0x02, 0x7e, h[0], h[1], h[2], h[3]]),
                seq: 0,
                changes: Vec::new(),
            },
            rx,
        )
    }

    /// Start over with `cfg`'s checks (a configuration reload): the new
    /// monitor starts healthy and its checks run from now; an edge that
    /// was refusing tunnels because the old checks failed takes them
    /// again (the new checks close them again if they fail). Returns the
    /// receiver of the new checks' results; the old checks' results go
    /// nowhere.
    pub fn replace(
        &mut self,
        now: Instant,
        cfg: &EdgeConfig,
        opts: &MonitorOptions,
        endpoint: &mut tunterm_core::proto::l2tp::Endpoint,
        gre: &mut tunterm_core::proto::gre::GreEndpoint,
    ) -> mpsc::UnboundedReceiver<ProbeResult> {
        let was_healthy = self.healthy();
        let changes = std::mem::take(&mut self.changes);
        let (mut new, rx) = UpstreamMonitor::new(now, cfg, opts);
        new.changes = changes;
        if !was_healthy && new.healthy() {
            new.note_change(true, Vec::new());
            tracing::info!("monitoring reconfigured: taking tunnels again");
            endpoint.set_accepting(true);
            gre.set_accepting(true);
        }
        *self = new;
        rx
    }

    /// Whether the edge may take tunnels.
    pub fn healthy(&self) -> bool {
        self.monitor.healthy()
    }

    /// For `tunterm stats`.
    pub fn stats(&self, now: Instant) -> MonitorStats {
        self.monitor.stats(now)
    }

    /// When [`UpstreamMonitor::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let arp = self.arp_pending.iter().map(|&(_, _, d)| d).min();
        [self.monitor.poll_timeout(), arp]
            .into_iter()
            .flatten()
            .min()
    }

    /// A probe's result came back (from the channel).
    pub fn handle_result(&mut self, now: Instant, (index, result): ProbeResult) {
        self.monitor.handle_result(now, index, result);
    }

    /// Expire unanswered ARP probes, run the monitor's deadlines and start
    /// the probes that are due: ping/tcp as tasks (results come through
    /// the channel), ARP requests through `send_trunk`.
    pub fn handle_timeout(&mut self, now: Instant, mut send_trunk: impl FnMut(&[u8])) {
        let timeout = self.monitor.probe_timeout();
        let mut expired = Vec::new();
        self.arp_pending.retain(|&(i, target, deadline)| {
            let keep = deadline > now;
            if !keep {
                expired.push((i, target));
            }
            keep
        });
        for (i, target) in expired {
            self.monitor
                .handle_result(now, i, Err(format!("no ARP reply from {target}")));
        }
        self.monitor.handle_timeout(now);
        while let Some(i) = self.monitor.poll_probe(now) {
            self.seq = self.seq.wrapping_add(1);
            let tx = self.results_tx.clone();
            match self.probes[i].clone() {
                Probe::Ping { host, src } => {
                    let (ident, seq) = (std::process::id() as u16, self.seq);
                    tokio::spawn(async move {
                        let r = crate::io::probe::ping(&host, src, ident, seq, timeout).await;
                        let _ = tx.send((i, r));
                    });
                }
                Probe::Tcp { host, port, src } => {
                    tokio::spawn(async move {
                        let r = crate::io::probe::tcp(&host, port, src, timeout).await;
                        let _ = tx.send((i, r));
                    });
                }
                Probe::Arp {
                    target,
                    sender,
                    tag,
                } => {
                    send_trunk(&ether::arp_request(
                        (self.arp_mac, sender),
                        target,
                        MacAddr::BROADCAST,
                        tag,
                    ));
                    self.arp_pending.push((i, target, now + timeout));
                }
            }
        }
    }

    /// A frame from the trunk: true if it is the reply to one of our ARP
    /// probes (consumed: the switch does not see it).
    /// Anything else sent to the probes' MAC (a reply after its probe gave
    /// up) is consumed too: it is for no one behind a tunnel.
    pub fn take_trunk_frame(&mut self, now: Instant, frame: &[u8]) -> bool {
        if frame.get(..6) != Some(&self.arp_mac.0[..]) {
            return false;
        }
        let Some(view) = ether::parse(frame) else {
            return false;
        };
        let Some((_, sender)) = ether::arp_reply_sender(frame, &view) else {
            return true;
        };
        if let Some(pos) = self.arp_pending.iter().position(|&(_, t, _)| t == sender) {
            let (i, _, _) = self.arp_pending.swap_remove(pos);
            self.monitor.handle_result(now, i, Ok(()));
        }
        true
    }
}

/// Why the edge closes its tunnels, in the StopCCN's message.
pub const DOWN_MESSAGE: &str = "upstream monitoring failed";

impl UpstreamMonitor {
    /// Act on the changes of health: on failure stop taking L2TP tunnels and
    /// mGRE peers, close every tunnel with StopCCN (result 2, general
    /// error) and drop every peer, so the APs move to a healthy edge; on
    /// recovery take them again. True if something changed (the caller
    /// flushes the endpoints' output and events).
    pub fn apply(
        &mut self,
        now: Instant,
        endpoint: &mut tunterm_core::proto::l2tp::Endpoint,
        gre: &mut tunterm_core::proto::gre::GreEndpoint,
    ) -> bool {
        let mut changed = false;
        while let Some(ev) = self.monitor.poll_event() {
            changed = true;
            match ev {
                MonitorEvent::Down { failing } => {
                    self.note_change(false, failing.clone());
                    tracing::warn!(
                        failing = %failing.join(", "),
                        tunnels = endpoint.conn_count(),
                        gre_peers = gre.peer_count(),
                        "upstream monitoring failed: refusing tunnels, closing the open ones"
                    );
                    endpoint.set_accepting(false);
                    gre.set_accepting(false);
                    endpoint.close_all(
                        now,
                        tunterm_core::wire::l2tp::stopccn::GENERAL_ERROR,
                        DOWN_MESSAGE,
                    );
                    gre.remove_all();
                }
                MonitorEvent::Up => {
                    self.note_change(true, Vec::new());
                    tracing::info!("upstream monitoring passes again: taking tunnels");
                    endpoint.set_accepting(true);
                    gre.set_accepting(true);
                }
            }
        }
        changed
    }

    /// Keep a change of health for [`UpstreamMonitor::take_health_changes`]
    /// (the last few only: a reader that never comes loses the oldest).
    fn note_change(&mut self, healthy: bool, failing: Vec<String>) {
        if self.changes.len() >= 16 {
            self.changes.remove(0);
        }
        self.changes.push((healthy, failing));
    }

    /// The changes of health since the last call: healthy, and the
    /// failing checks.
    pub fn take_health_changes(&mut self) -> Vec<(bool, Vec<String>)> {
        std::mem::take(&mut self.changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_arp_replies_to_the_probe_mac_are_taken() {
        let cfg = tunterm_control::load_str(tunterm_control::LAB_DEFAULT).unwrap();
        let (mut m, _rx) = UpstreamMonitor::new(Instant::now(), &cfg, &MonitorOptions::default());
        let t = Ipv4Addr::new(192, 168, 10, 1);
        let reply = |dst: MacAddr, op| {
            let mut f = vec![];
            let router = (MacAddr([2, 0, 0, 0, 0, 1]), t);
            ether::write_arp(
                ether::ETHERTYPE_ARP,
                dst,
                Some(10),
                op,
                router,
                (dst, t),
                &mut f,
            );
            f
        };
        let now = Instant::now();
        assert!(m.take_trunk_frame(now, &reply(m.arp_mac, ether::ArpOp::Reply)));
        assert!(m.take_trunk_frame(now, &reply(m.arp_mac, ether::ArpOp::Request)));
        assert!(!m.take_trunk_frame(
            now,
            &reply(MacAddr([2, 0, 0, 0, 0, 9]), ether::ArpOp::Reply)
        ));
    }
}
