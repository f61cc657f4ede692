//! Operations on the daemon's tunnels, asked for over the control socket
//! ([`crate::api::Request`]; later by the agent, as the Mist API's
//! `disconnect_aps` and `preempt_aps`):
//!
//! - `disconnect-aps` with `"macs": [...]` closes the L2TP tunnels of the
//!   APs whose Host Name is one of these MACs (any usual spelling); with
//!   `"percentage": 25` (used when `macs` is empty) it closes that share of
//!   the established tunnels, rounded up, chosen at random.
//! - `preempt` (optionally with `"site_id": "..."`, and `"mxtunnel_id":
//!   "..."` to act on that mxtunnel's tunnels only) closes the tunnels of APs
//!   for which this edge is not the preferred one: the first of the AP's
//!   own ordering of `mxcluster.tunterm_hosts`
//!   ([`tunterm_control::hosts::host_order`], the function the AP
//!   simulator uses). The AP's MAC is its Host Name; its site is not in
//!   the L2TP exchange, so with `shuffle-by-site` the caller must give
//!   `site_id`, else those APs are reported as `unknown_preference` and
//!   left alone. An `mxtunnel_id` this edge does not run is refused (counted
//!   in `refused`), nothing closed.
//!
//! Tunnels are closed with StopCCN (result 1, clear): the AP moves on at
//! once (to its next edge, or back to its preferred one). mGRE peers carry
//! no AP identity and are not affected.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tunterm_control::hosts::{HostsKey, host_order};
use tunterm_control::mac::MacAddr;
use tunterm_control::{EdgeConfig, HostsSelection};

use crate::api::DisconnectReport;
use tunterm_core::proto::l2tp::Endpoint;
use tunterm_core::wire::l2tp::stopccn;

/// Counters of the operations, in `tunterm stats` (`operations`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OperationCounters {
    /// `disconnect-aps` requests served.
    pub disconnect_requests: u64,
    /// Tunnels closed by them.
    pub aps_disconnected: u64,
    /// `preempt` requests served.
    pub preempt_requests: u64,
    /// Tunnels closed by them.
    pub aps_preempted: u64,
    /// Requests refused (bad arguments, edge not in `tunterm_hosts`, an
    /// `mxtunnel_id` this edge does not run).
    pub refused: u64,
}

/// Arguments of `disconnect-aps`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisconnectRequest {
    /// AP MACs.
    pub macs: Vec<String>,
    /// Share of the APs to disconnect, 0..=100 (used when `macs` is empty).
    pub percentage: Option<f64>,
}

/// Arguments of `preempt`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreemptRequest {
    /// Site of the APs, for `shuffle-by-site`.
    pub site_id: Option<String>,
    /// Only the tunnels of this mxtunnel (its `id`, or its name when it has
    /// none), as the cloud's `mxtunnels/:id/preempt_aps` asks; every
    /// tunnel when absent. Left out of the request line when absent, so a
    /// client also speaks to a daemon that predates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mxtunnel_id: Option<String>,
}

/// What `preempt` did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PreemptReport {
    /// APs whose tunnel was closed (their Host Names).
    pub preempted_aps: Vec<String>,
    /// APs already on their preferred edge.
    pub kept: usize,
    /// APs whose preference cannot be told (Host Name not a MAC, or no
    /// site with `shuffle-by-site`).
    pub unknown_preference: Vec<String>,
}

/// An established tunnel, as the operations see it.
#[derive(Clone, Debug)]
pub struct ApTunnel {
    /// Our CCID.
    pub ccid: u32,
    /// The AP's Host Name.
    pub ap: String,
    /// The mxtunnel id its session is bound to.
    pub tunnel_id: String,
}

/// The established tunnels of `endpoint`.
pub fn ap_tunnels(endpoint: &Endpoint, cfg: &EdgeConfig, now: Instant) -> Vec<ApTunnel> {
    endpoint
        .stats(now)
        .into_iter()
        .filter(|c| c.state.starts_with("established"))
        .map(|c| ApTunnel {
            ccid: c.local_ccid,
            tunnel_id: c
                .sessions
                .iter()
                .find_map(|s| endpoint.session(s.local_sid)?.profile)
                .and_then(|i| cfg.tunnels.get(i))
                .map(|t| t.id.clone())
                .unwrap_or_default(),
            ap: c.ap,
        })
        .collect()
}

/// Which tunnels `disconnect-aps` closes. `pick` chooses for a percentage
/// (an index below its argument).
pub fn select_disconnect(
    tunnels: &[ApTunnel],
    req: &DisconnectRequest,
    mut pick: impl FnMut(usize) -> usize,
) -> Result<Vec<usize>, String> {
    if !req.macs.is_empty() {
        let mut wanted = Vec::new();
        for m in &req.macs {
            wanted.push(m.parse::<MacAddr>().map_err(|e| e.to_string())?);
        }
        return Ok(tunnels
            .iter()
            .enumerate()
            .filter(|(_, t)| t.ap.parse().is_ok_and(|m| wanted.contains(&m)))
            .map(|(i, _)| i)
            .collect());
    }
    let Some(p) = req.percentage else {
        return Err("give macs or a percentage".into());
    };
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("percentage {p}: expected 0 to 100"));
    }
    let n = ((tunnels.len() as f64) * p / 100.0).ceil() as usize;
    let mut left: Vec<usize> = (0..tunnels.len()).collect();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.min(left.len()) {
        out.push(left.swap_remove(pick(left.len())));
    }
    out.sort_unstable();
    Ok(out)
}

/// This edge's index in `tunterm_hosts`: the entry that is its name or
/// one of its tunnel addresses.
pub fn own_host_index(cfg: &EdgeConfig) -> Option<usize> {
    let hosts = &cfg.raw.mxcluster.as_ref()?.tunterm_hosts;
    let mine = [
        Some(cfg.name.clone()),
        cfg.tunnel_ip.map(|i| i.to_string()),
        cfg.tunnel_ip6.map(|i| i.to_string()),
    ];
    hosts.iter().position(|h| {
        mine.iter()
            .flatten()
            .any(|m| m.eq_ignore_ascii_case(h.trim()))
    })
}

/// Which tunnels `preempt` closes, and the report (without the closing).
pub fn select_preempt(
    tunnels: &[ApTunnel],
    cfg: &EdgeConfig,
    req: &PreemptRequest,
) -> Result<(Vec<usize>, PreemptReport), String> {
    let cluster = cfg
        .raw
        .mxcluster
        .as_ref()
        .filter(|c| !c.tunterm_hosts.is_empty())
        .ok_or("no mxcluster.tunterm_hosts: no edge is preferred")?;
    let me = own_host_index(cfg).ok_or_else(|| {
        format!(
            "this edge ({}) is not in mxcluster.tunterm_hosts {:?}",
            cfg.name, cluster.tunterm_hosts
        )
    })?;
    if let Some(id) = req.mxtunnel_id.as_deref()
        && !cfg.tunnels.iter().any(|t| t.id == id)
    {
        let running: Vec<&str> = cfg.tunnels.iter().map(|t| t.id.as_str()).collect();
        return Err(format!(
            "mxtunnel {id:?} is not run by this edge (its mxtunnels: {running:?})"
        ));
    }
    let mut report = PreemptReport::default();
    let mut close = Vec::new();
    let wanted = |t: &ApTunnel| {
        req.mxtunnel_id
            .as_deref()
            .is_none_or(|id| t.tunnel_id == id)
    };
    for (i, t) in tunnels.iter().enumerate().filter(|(_, t)| wanted(t)) {
        let by_site = cluster.tunterm_hosts_selection == HostsSelection::ShuffleBySite;
        let mac = t.ap.parse::<MacAddr>().ok();
        let site = req.site_id.as_deref();
        let known = match (by_site, mac, site) {
            (true, _, Some(site)) => Some((MacAddr::ZERO, site)),
            (true, _, None) | (false, None, _) => None,
            (false, Some(mac), _) => Some((mac, "")),
        };
        let Some((ap_mac, site_id)) = known else {
            report.unknown_preference.push(t.ap.clone());
            continue;
        };
        let order = host_order(
            cluster.tunterm_hosts.len(),
            cluster.tunterm_hosts_selection,
            &cluster.tunterm_hosts_order,
            HostsKey {
                ap_mac,
                site_id,
                tunnel_id: &t.tunnel_id,
            },
        );
        if order.first() == Some(&me) {
            report.kept += 1;
        } else {
            report.preempted_aps.push(t.ap.clone());
            close.push(i);
        }
    }
    Ok((close, report))
}

/// The operations' state in the daemon: counters, and the generator that
/// picks APs for a percentage.
#[derive(Debug)]
pub struct Operations {
    counters: OperationCounters,
    rng: u64,
}

impl Operations {
    /// Operations whose random choices start from `seed`.
    pub fn new(seed: u64) -> Self {
        Operations {
            counters: OperationCounters::default(),
            rng: seed | 1,
        }
    }

    /// The counters.
    pub fn counters(&self) -> &OperationCounters {
        &self.counters
    }

    /// `disconnect-aps`: close the chosen APs' tunnels (StopCCN). The
    /// caller then flushes the endpoint's StopCCNs and events.
    pub fn disconnect(
        &mut self,
        req: &DisconnectRequest,
        now: Instant,
        endpoint: &mut Endpoint,
        cfg: &EdgeConfig,
    ) -> Result<DisconnectReport, String> {
        let tunnels = ap_tunnels(endpoint, cfg, now);
        let rng = &mut self.rng;
        let close = select_disconnect(&tunnels, req, |n| (xorshift(rng) % n as u64) as usize)
            .inspect_err(|_| self.counters.refused += 1)?;
        self.counters.disconnect_requests += 1;
        self.counters.aps_disconnected += close.len() as u64;
        let report = DisconnectReport {
            disconnected_aps: close.iter().map(|&i| tunnels[i].ap.clone()).collect(),
        };
        close_tunnels(
            &tunnels,
            &close,
            now,
            endpoint,
            "disconnected by the operator",
        );
        Ok(report)
    }

    /// `preempt`: close the tunnels of APs whose preferred edge is another.
    /// The caller then flushes the endpoint's StopCCNs and events.
    pub fn preempt(
        &mut self,
        req: &PreemptRequest,
        now: Instant,
        endpoint: &mut Endpoint,
        cfg: &EdgeConfig,
    ) -> Result<PreemptReport, String> {
        let tunnels = ap_tunnels(endpoint, cfg, now);
        let (close, report) =
            select_preempt(&tunnels, cfg, req).inspect_err(|_| self.counters.refused += 1)?;
        self.counters.preempt_requests += 1;
        self.counters.aps_preempted += close.len() as u64;
        let why = "preempted: the AP's preferred edge is another";
        close_tunnels(&tunnels, &close, now, endpoint, why);
        Ok(report)
    }
}

/// xorshift64: spread, not secrecy.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn close_tunnels(
    tunnels: &[ApTunnel],
    close: &[usize],
    now: Instant,
    endpoint: &mut Endpoint,
    why: &str,
) {
    for &i in close {
        let t = &tunnels[i];
        tracing::info!(tunnel_id = t.ccid, ap = %t.ap, "{why}");
        endpoint.close(now, t.ccid, stopccn::CLEAR, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnels(names: &[&str]) -> Vec<ApTunnel> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| ApTunnel {
                ccid: i as u32 + 1,
                ap: n.to_string(),
                tunnel_id: "lab".into(),
            })
            .collect()
    }

    fn cfg(selection: &str, edge_ip: &str) -> EdgeConfig {
        let mut v: serde_json::Value = serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap();
        v["mxedge"]["tunterm_ip_config"]["ip"] = edge_ip.into();
        v["mxcluster"]["tunterm_hosts"] = serde_json::json!(["10.99.0.1", "10.99.0.4"]);
        v["mxcluster"]["tunterm_hosts_selection"] = selection.into();
        v["mxcluster"]["tunterm_hosts_order"] = serde_json::json!([1, 0]);
        tunterm_control::load_str(&v.to_string()).unwrap()
    }

    #[test]
    fn disconnect_by_mac_matches_any_spelling_and_rejects_junk() {
        let t = tunnels(&["5c5b35000001", "5c:5b:35:00:00:02", "ap3"]);
        let req = DisconnectRequest {
            macs: vec!["5C-5B-35-00-00-02".into(), "5c5b35000001".into()],
            percentage: None,
        };
        assert_eq!(select_disconnect(&t, &req, |_| 0).unwrap(), vec![0, 1]);
        let bad = DisconnectRequest {
            macs: vec!["nope".into()],
            percentage: None,
        };
        assert!(select_disconnect(&t, &bad, |_| 0).is_err());
    }

    #[test]
    fn disconnect_by_percentage_rounds_up_and_checks_the_range() {
        let t = tunnels(&["a", "b", "c", "d", "e", "f", "g"]);
        let req = |p| DisconnectRequest {
            macs: vec![],
            percentage: Some(p),
        };
        assert_eq!(select_disconnect(&t, &req(30.0), |_| 0).unwrap().len(), 3);
        assert_eq!(select_disconnect(&t, &req(100.0), |_| 0).unwrap().len(), 7);
        assert!(select_disconnect(&t, &req(0.0), |_| 0).unwrap().is_empty());
        assert!(select_disconnect(&t, &req(150.0), |_| 0).is_err());
        assert!(select_disconnect(&t, &DisconnectRequest::default(), |_| 0).is_err());
    }

    #[test]
    fn preempt_closes_the_aps_whose_first_edge_is_another() {
        // ordered [1, 0]: everyone prefers 10.99.0.4.
        let t = tunnels(&["5c5b35000001", "ap-without-mac"]);
        let on_a = cfg("ordered", "10.99.0.1");
        let (close, report) = select_preempt(&t, &on_a, &PreemptRequest::default()).unwrap();
        assert_eq!(close, vec![0]);
        assert_eq!(report.preempted_aps, vec!["5c5b35000001"]);
        assert_eq!(report.unknown_preference, vec!["ap-without-mac"]);
        let on_b = cfg("ordered", "10.99.0.4");
        let (close, report) = select_preempt(&t, &on_b, &PreemptRequest::default()).unwrap();
        assert!(close.is_empty());
        assert_eq!(report.kept, 1);
        // shuffle: A keeps exactly the APs B would preempt.
        let many: Vec<String> = (0..40).map(|i| format!("5c5b350000{i:02x}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = tunnels(&names);
        let req = PreemptRequest::default();
        let (a, _) = select_preempt(&t, &cfg("shuffle", "10.99.0.1"), &req).unwrap();
        let (b, _) = select_preempt(&t, &cfg("shuffle", "10.99.0.4"), &req).unwrap();
        assert_eq!(a.len() + b.len(), 40);
        assert!(a.iter().all(|i| !b.contains(i)));
        assert!(!a.is_empty() && !b.is_empty());
    }

    #[test]
    fn preempt_needs_the_site_with_shuffle_by_site_and_this_edge_in_the_list() {
        let t = tunnels(&["5c5b35000001"]);
        let c = cfg("shuffle-by-site", "10.99.0.1");
        let (close, report) = select_preempt(&t, &c, &PreemptRequest::default()).unwrap();
        assert!(close.is_empty());
        assert_eq!(report.unknown_preference.len(), 1);
        let with_site = PreemptRequest {
            site_id: Some("s1".into()),
            ..PreemptRequest::default()
        };
        let (_, report) = select_preempt(&t, &c, &with_site).unwrap();
        assert_eq!(report.preempted_aps.len() + report.kept, 1);
        let stranger = cfg("ordered", "10.99.0.9");
        let e = select_preempt(&t, &stranger, &PreemptRequest::default()).unwrap_err();
        assert!(e.contains("not in mxcluster.tunterm_hosts"), "{e}");
    }

    #[test]
    fn preempt_of_one_mxtunnel_leaves_the_others_and_refuses_an_unknown_one() {
        // Two mxtunnels; every AP prefers 10.99.0.4 (ordered [1, 0]), this
        // edge is 10.99.0.1: without an id, all three would be closed.
        let mut v: serde_json::Value = serde_json::from_str(tunterm_control::LAB_DEFAULT).unwrap();
        v["mxedge"]["tunterm_ip_config"]["ip"] = "10.99.0.1".into();
        v["mxcluster"]["tunterm_hosts"] = serde_json::json!(["10.99.0.1", "10.99.0.4"]);
        v["mxcluster"]["tunterm_hosts_selection"] = "ordered".into();
        v["mxcluster"]["tunterm_hosts_order"] = serde_json::json!([1, 0]);
        let mut second = v["mxtunnels"][0].clone();
        v["mxtunnels"][0]["id"] = "t-one".into();
        second["id"] = "t-two".into();
        second["name"] = "two".into();
        v["mxtunnels"].as_array_mut().unwrap().push(second);
        let c = tunterm_control::load_str(&v.to_string()).unwrap();
        let mut t = tunnels(&["5c5b35000001", "5c5b35000002", "5c5b35000003"]);
        t[1].tunnel_id = "t-two".into();
        t[0].tunnel_id = "t-one".into();
        t[2].tunnel_id = "t-one".into();
        let only = |id: &str| PreemptRequest {
            mxtunnel_id: Some(id.into()),
            ..PreemptRequest::default()
        };
        let (close, report) = select_preempt(&t, &c, &only("t-one")).unwrap();
        assert_eq!(close, vec![0, 2]);
        assert_eq!(report.preempted_aps, vec!["5c5b35000001", "5c5b35000003"]);
        assert_eq!(report.kept, 0, "the other mxtunnel's AP is not counted");
        let (close, report) = select_preempt(&t, &c, &only("t-two")).unwrap();
        assert_eq!(close, vec![1]);
        assert_eq!(report.preempted_aps, vec!["5c5b35000002"]);
        let (close, _) = select_preempt(&t, &c, &PreemptRequest::default()).unwrap();
        assert_eq!(close, vec![0, 1, 2]);
        let e = select_preempt(&t, &c, &only("t-three")).unwrap_err();
        assert!(
            e.contains(r#"mxtunnel "t-three" is not run by this edge"#) && e.contains("t-two"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_mxtunnel_is_refused_counted_and_closes_nothing() {
        let c = cfg("ordered", "10.99.0.1");
        let mut endpoint =
            Endpoint::new(tunterm_core::proto::l2tp::EndpointConfig::default(), 7u64);
        let mut ops = Operations::new(1);
        let req = PreemptRequest {
            mxtunnel_id: Some("nope".into()),
            ..PreemptRequest::default()
        };
        let e = ops
            .preempt(&req, Instant::now(), &mut endpoint, &c)
            .unwrap_err();
        assert!(e.contains("not run by this edge"), "{e}");
        assert_eq!(
            (ops.counters().refused, ops.counters().preempt_requests),
            (1, 0)
        );
        let lab = PreemptRequest {
            mxtunnel_id: Some(c.tunnels[0].id.clone()),
            ..PreemptRequest::default()
        };
        let r = ops
            .preempt(&lab, Instant::now(), &mut endpoint, &c)
            .unwrap();
        assert_eq!(r, PreemptReport::default());
        assert_eq!(ops.counters().preempt_requests, 1);
    }
}
