//! The forwarding pipeline, sans-IO: a frame that came out of a tunnel, off
//! the trunk or from a host port goes in as `(now, ingress port, frame)`;
//! what to send where comes out as [`Actions`] written into a buffer the
//! caller keeps. The daemon, the XDP-vs-userspace table tests
//! (`ebpf/tests/`) and the `switch` bench all run this one code.
//!
//! ```text
//!  (now, ingress, frame)
//!        │
//!        ├─ Tap::ingress
//!  Switch::ingress ── learn the source; VLAN of the frame; drop (reason) ──┐
//!        │                                                                  │
//!  DHCP relay: a client's DHCPDISCOVER/REQUEST from a tunnel on a relayed   │
//!  VLAN goes to the RelayAgent (Out::Relayed), nothing else sees it         │
//!        │                                                                  │
//!  known unicast ─► one port      broadcast / multicast / unknown ─►        │
//!        │                         FloodPolicy::flood_ports (the VLAN's     │
//!        │                         members but the ingress, by default)     │
//!        ▼                                                                  │
//!  egress, per port:                                                        │
//!   trunk     re-tag for the trunk; a SYN from a tunnel: MSS clamped to     │
//!             what that tunnel carries                        Out::Trunk    │
//!   host port untagged                                        Out::HostPort │
//!   tunnel    encapsulation header (L2TP session id, cookie, sublayer;      │
//!             GRE key, sequence), re-tag, MSS clamp, then if too big:       │
//!             ICMP back (IPv4 DF, IPv6) · inner IPv4 fragments (no DF,      │
//!             tunnel MTU below the link's) · outer fragmentation by the     │
//!             kernel (no DF) · drop                       Out::Tunnel       │
//!        │                                                                  │
//!  MACs new or moved behind a tunnel: one RARP each on the trunk            │
//!        │                                                                  │
//!        └─ Tap::output for every Out (egress and drops) ◄──────────────────┘
//! ```
//!
//! The pipeline owns no table: it borrows the [`Switch`], the tunnels
//! (anything that implements [`TunnelPorts`]; the daemon's is
//! [`EdgeTunnels`], the L2TP [`Endpoint`] and the [`GreEndpoint`]) and the
//! DHCP [`RelayAgent`] for one call ([`Ports`]). Its own state is scratch
//! space and [`ForwardCounters`].
//!
//! # Hooks for what comes next
//!
//! - **Capture tap** ([`Tap`]): passed to every call, it sees each ingress
//!   frame and each [`Out`] (egress with its [`Kind`], drop with its
//!   [`Reason`]). [`NoTap`] compiles to nothing. Capture points, the `drop`
//!   point and TZSP mirroring hang here. (What the endpoints refuse before
//!   a frame exists — bad cookie, unknown session — is theirs to report.)
//! - **Flood decisions** ([`FloodPolicy`]): every broadcast, multicast and
//!   unknown unicast frame goes through [`FloodPolicy::flood_ports`] before a
//!   single copy is written; the default [`FloodAll`] floods to every member
//!   of the VLAN but the ingress. IGMP/MLD snooping, ARP/ND proxying and
//!   storm control replace or wrap it. The daemon's is one chain, each
//!   link handing what it does not decide (or a narrowed member list) to
//!   the one it wraps:
//!   [`Containment`](crate::proto::clients::Containment) (storm control per
//!   tunnel port, the client table, ARP/ND requests down the owner's
//!   tunnel only, clients' announcements to the trunk only) →
//!   [`McastPolicy`](crate::proto::mcast::McastPolicy) (IGMP/MLD snooping,
//!   mDNS/SSDP per VLAN) → [`FloodAll`]. It is told when a port goes
//!   ([`Forwarder::remove_port`]) and sees every frame switched or
//!   delivered ([`FloodPolicy::seen`]: the client table learns there).
//!
//! What is not here: reading and writing sockets, batching tunnel sends
//! (`sendmmsg`), the clock, the L2TP/GRE control planes and the XDP fast
//! path (it forwards what the daemon mirrors from the [`Switch`], and hands
//! the rest to this pipeline).

mod actions;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use actions::{Actions, Carrier, Kind, Out, Reason};

use crate::proto::bridge::{DropReason, PortId, Switch, TRUNK, Verdict, is_host_port};
use crate::proto::dhcp::{Origin, RelayAgent};
use crate::proto::gre::{GreEndpoint, PeerKey, is_gre_port};
use crate::proto::l2tp::{DataSession, Endpoint};
use crate::proto::pmtu::{self, ClampResult, TooBig};
use crate::wire::dhcp::client_message;
use crate::wire::ether::{self, FrameView, MacAddr};

/// Counters of the pipeline (monotonic). In `tunterm stats` they appear in
/// the `io` section, under these names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardCounters {
    /// Frames for a tunnel port that is gone (raced a teardown).
    pub tunnel_tx_no_session: u64,
    /// Frames too big for their tunnel answered with ICMP (DF set / IPv6).
    pub too_big_icmp: u64,
    /// Frames too big for their tunnel, IPv4 without DF, sent fragmented:
    /// the outer packet by the kernel at the path MTU, or the inner packet
    /// by tunterm below it ([`ForwardCounters::inner_fragments`]).
    pub too_big_fragmented: u64,
    /// Frames too big for their tunnel dropped (no ICMP allowed).
    pub too_big_dropped: u64,
    /// IPv4 fragments sent through tunnels whose configured MTU is below
    /// the path's (the inner packet split by tunterm).
    pub inner_fragments: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// MACs announced on the trunk (new or moved behind a tunnel).
    pub mac_announcements: u64,
}

/// Settings of a [`Forwarder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    /// MTU of the AP-facing link (the path): a tunnel whose MTU is below it
    /// gets IPv4 packets without DF split here (the kernel fragments the
    /// outer packet only above it).
    pub link_mtu: u16,
    /// Source of ICMP "fragmentation needed" (None: the original
    /// destination).
    pub icmp_src4: Option<Ipv4Addr>,
    /// Source of ICMPv6 "packet too big" (None: the original destination).
    pub icmp_src6: Option<Ipv6Addr>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            link_mtu: 1500,
            icmp_src4: None,
            icmp_src6: None,
        }
    }
}

/// Where a frame for a tunnel goes, as [`TunnelPorts::encap`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encap {
    /// The socket kind.
    pub carrier: Carrier,
    /// The AP.
    pub peer: SocketAddr,
    /// The tunnel's MTU (outer IP packet).
    pub mtu: u16,
}

/// The tunnels behind the switch's tunnel ports.
pub trait TunnelPorts {
    /// Write the encapsulation header (L2TP data header with cookie and
    /// sublayer, or GRE header) for a frame to `port` into `hdr` (cleared
    /// first); where it goes. None when no live tunnel is behind `port`.
    /// A call may advance the tunnel's sequence number: call once per packet.
    fn encap(&mut self, port: PortId, hdr: &mut Vec<u8>) -> Option<Encap>;

    /// Bytes the tunnel behind `port` puts around an inner frame (outer
    /// IP, UDP, L2TP or GRE header) and its MTU; None when `port` is not a
    /// live tunnel (the trunk, a host port).
    fn overhead(&self, port: PortId) -> Option<(usize, u16)>;

    /// The AP behind tunnel `port`, for the DHCP relay's option 82: its
    /// name ("" when it has none) and address.
    fn ap(&self, port: PortId) -> Option<(&str, IpAddr)>;
}

/// MTUs of the edge's tunnels: a session's mxtunnel `mtu` (by profile
/// index), the link's where that is 0 and for mGRE peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelMtus {
    /// MTU of the AP-facing link.
    pub link: u16,
    /// Per L2TP profile (mxtunnel), its configured MTU (0: the link's).
    pub profiles: Vec<u16>,
}

impl TunnelMtus {
    /// The MTU of the tunnel behind `port` (None for the trunk).
    pub fn of(&self, l2tp: &Endpoint, port: PortId) -> Option<u16> {
        if port == TRUNK {
            return None;
        }
        let configured = l2tp
            .session(port.0)
            .and_then(|s| s.profile)
            .and_then(|i| self.profiles.get(i).copied())
            .unwrap_or(0);
        Some(if configured == 0 {
            self.link
        } else {
            configured
        })
    }
}

/// Bytes an L2TP session puts around an inner frame: the outer IP (+ UDP)
/// header and its data header (cookie, sublayer).
pub fn l2tp_overhead(s: &DataSession) -> usize {
    Carrier::L2tp(s.transport).outer_len(s.peer.is_ipv6()) + s.header_len()
}

/// Bytes an mGRE peer's packets put around an inner frame: the outer IP
/// header and the GRE header (with the key when the peer uses one).
pub fn gre_overhead(p: &PeerKey) -> usize {
    let hdr = crate::wire::gre::header_len(false, p.key.is_some(), false);
    Carrier::Gre.outer_len(p.addr.is_ipv6()) + hdr
}

/// The edge's tunnels: L2TPv3 sessions (port = local session id) and mGRE
/// peers (ports from [`GRE_PORT_BASE`](crate::proto::gre::GRE_PORT_BASE)).
pub struct EdgeTunnels<'a> {
    /// The L2TP endpoint.
    pub l2tp: &'a mut Endpoint,
    /// The mGRE endpoint.
    pub gre: &'a mut GreEndpoint,
    /// Their MTUs.
    pub mtus: &'a TunnelMtus,
}

impl TunnelPorts for EdgeTunnels<'_> {
    fn encap(&mut self, port: PortId, hdr: &mut Vec<u8>) -> Option<Encap> {
        let mtu = self.mtus.of(self.l2tp, port)?;
        if is_gre_port(port) {
            let ip = self.gre.encap_header(port, hdr)?;
            return Some(Encap {
                carrier: Carrier::Gre,
                peer: SocketAddr::new(ip, 0),
                mtu,
            });
        }
        let (t, peer) = self.l2tp.encap_header(port.0, hdr)?;
        Some(Encap {
            carrier: Carrier::L2tp(t),
            peer,
            mtu,
        })
    }

    fn overhead(&self, port: PortId) -> Option<(usize, u16)> {
        let mtu = self.mtus.of(self.l2tp, port)?;
        if is_gre_port(port) {
            return Some((gre_overhead(&self.gre.peer(port)?), mtu));
        }
        Some((l2tp_overhead(self.l2tp.session(port.0)?), mtu))
    }

    fn ap(&self, port: PortId) -> Option<(&str, IpAddr)> {
        ap_of(self.l2tp, self.gre, port)
    }
}

/// The AP behind tunnel `port` of the edge's endpoints: its name ("" when
/// it has none, and for mGRE peers) and address.
pub fn ap_of<'a>(l2tp: &'a Endpoint, gre: &GreEndpoint, port: PortId) -> Option<(&'a str, IpAddr)> {
    if is_gre_port(port) {
        return gre.peer(port).map(|p| ("", p.addr));
    }
    let s = l2tp.session(port.0)?;
    Some((l2tp.peer_host_name(s.ccid).unwrap_or(""), s.peer.ip()))
}

/// What the pipeline borrows for one call.
#[derive(Debug)]
pub struct Ports<'a, T> {
    /// The learning switch.
    pub switch: &'a mut Switch,
    /// The tunnels behind its tunnel ports.
    pub tunnels: T,
    /// The DHCP relay, when one runs.
    pub relay: Option<&'a mut RelayAgent>,
}

/// The capture tap: sees every frame the pipeline takes and everything it
/// does with it. Methods have empty defaults; see [`NoTap`].
pub trait Tap {
    /// False for a tap that does nothing: the pipeline then skips the calls
    /// (and the walk over the actions) altogether.
    const ACTIVE: bool = true;

    /// A frame entered the pipeline on `port`.
    fn ingress(&mut self, now: Instant, port: PortId, frame: &[u8]) {
        let _ = (now, port, frame);
    }

    /// The pipeline emitted `out` (an egress with its [`Kind`], a drop
    /// with its [`Reason`], or a frame taken by the relay).
    fn output(&mut self, now: Instant, out: &Out<'_>) {
        let _ = (now, out);
    }
}

/// No capture: costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTap;

impl Tap for NoTap {
    const ACTIVE: bool = false;
}

/// Where broadcast, multicast and unknown unicast frames go: the one place
/// such decisions are made before anything is flooded (IGMP snooping, ARP
/// proxying and storm control belong here).
pub trait FloodPolicy {
    /// A frame on `vlan` from `ingress` is to be flooded at `now`;
    /// `members` is every member port of the VLAN (the ingress included),
    /// or the part of them a wrapping policy narrowed it to. Push the ports
    /// that get a copy onto `to` (empty on entry); none is a drop.
    #[allow(clippy::too_many_arguments)]
    fn flood_ports(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
        members: &[PortId],
        to: &mut Vec<PortId>,
    );

    /// `port` is gone (session down, peer removed): forget what is known
    /// of it at once. A wrapping policy passes the call on.
    fn remove_port(&mut self, port: PortId) {
        let _ = port;
    }

    /// Every frame the switch took on `vlan` from `ingress` (before its
    /// flood decision, if any), and every frame delivered: `to` is the one
    /// port of a forwarded or delivered frame, None for a flood or a frame
    /// the DHCP relay took. For policies that learn from traffic (the
    /// client table); the default does nothing. A wrapping policy passes
    /// the call on.
    fn seen(
        &mut self,
        now: Instant,
        ingress: PortId,
        vlan: u16,
        view: &FrameView,
        frame: &[u8],
        to: Option<PortId>,
    ) {
        let _ = (now, ingress, vlan, view, frame, to);
    }
}

/// Flood to every member of the VLAN but the ingress port.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodAll;

impl FloodPolicy for FloodAll {
    fn flood_ports(
        &mut self,
        _now: Instant,
        ingress: PortId,
        _vlan: u16,
        _view: &FrameView,
        _frame: &[u8],
        members: &[PortId],
        to: &mut Vec<PortId>,
    ) {
        to.extend(members.iter().copied().filter(|&p| p != ingress));
    }
}

/// What the switch decided for a frame (its copies are in the actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// To one port.
    Forward {
        /// The frame's VLAN.
        vlan: u16,
        /// The port.
        to: PortId,
    },
    /// To the ports the [`FloodPolicy`] chose.
    Flood {
        /// The frame's VLAN.
        vlan: u16,
    },
    /// Taken by the DHCP relay.
    Relayed {
        /// The frame's VLAN.
        vlan: u16,
    },
    /// Dropped by the switch.
    Drop(Reason),
}

/// The forwarding pipeline. See the module documentation.
#[derive(Debug)]
pub struct Forwarder<P = FloodAll> {
    cfg: ForwardConfig,
    policy: P,
    counters: ForwardCounters,
    /// Scratch, kept for their capacity: flood targets, MACs to announce,
    /// an encapsulation header, the fragments of an inner packet.
    flood: Vec<PortId>,
    macs: Vec<(u16, MacAddr)>,
    hdr: Vec<u8>,
    frags: Vec<Vec<u8>>,
}

impl Forwarder<FloodAll> {
    /// A pipeline that floods to every VLAN member.
    pub fn new(cfg: ForwardConfig) -> Self {
        Forwarder::with_policy(cfg, FloodAll)
    }
}

impl<P: FloodPolicy> Forwarder<P> {
    /// A pipeline whose flooding `policy` decides.
    pub fn with_policy(cfg: ForwardConfig, policy: P) -> Self {
        Forwarder {
            cfg,
            policy,
            counters: ForwardCounters::default(),
            flood: Vec::new(),
            macs: Vec::new(),
            hdr: Vec::with_capacity(64),
            frags: Vec::new(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &ForwardConfig {
        &self.cfg
    }

    /// Change the settings (a configuration reload: the edge's addresses).
    pub fn set_config(&mut self, cfg: ForwardConfig) {
        self.cfg = cfg;
    }

    /// Counters.
    pub fn counters(&self) -> &ForwardCounters {
        &self.counters
    }

    /// The flood policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The flood policy.
    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    /// `port` left the switch (session down, peer removed): the flood
    /// policy forgets it (multicast memberships go at once).
    pub fn remove_port(&mut self, port: PortId) {
        self.policy.remove_port(port);
    }

    /// A frame entered the switch on `ingress` at `now`: learn, decide,
    /// and append what to send (and what was dropped) to `out`. Call for
    /// every frame out of a tunnel, off the trunk or from a host port.
    pub fn handle<T: TunnelPorts, C: Tap>(
        &mut self,
        now: Instant,
        ingress: PortId,
        frame: &[u8],
        ports: &mut Ports<'_, T>,
        out: &mut Actions,
        tap: &mut C,
    ) -> Outcome {
        let mark = out.len();
        if C::ACTIVE {
            tap.ingress(now, ingress, frame);
        }
        let outcome = self.switch_frame(now, ingress, frame, ports, out);
        if C::ACTIVE {
            for o in out.iter_from(mark) {
                tap.output(now, &o);
            }
        }
        outcome
    }

    /// Send `frame` on `vlan` to `to` as if it came from `from` (the DHCP
    /// relay's reply, from its host port, to the client's tunnel): the
    /// egress half of the pipeline, without the switch.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver<T: TunnelPorts, C: Tap>(
        &mut self,
        now: Instant,
        from: PortId,
        to: PortId,
        vlan: u16,
        frame: &[u8],
        ports: &mut Ports<'_, T>,
        out: &mut Actions,
        tap: &mut C,
    ) {
        let Some(view) = ether::parse(frame) else {
            return;
        };
        let mark = out.len();
        self.policy.seen(now, from, vlan, &view, frame, Some(to));
        self.egress(from, to, vlan, frame, &view, Kind::Delivered, ports, out);
        if C::ACTIVE {
            for o in out.iter_from(mark) {
                tap.output(now, &o);
            }
        }
    }

    fn switch_frame<T: TunnelPorts>(
        &mut self,
        now: Instant,
        ingress: PortId,
        frame: &[u8],
        ports: &mut Ports<'_, T>,
        out: &mut Actions,
    ) -> Outcome {
        let (verdict, view) = ports.switch.ingress(now, ingress, frame);
        let Some(view) = view else {
            // The switch forwards only what it parsed.
            let r = match verdict {
                Verdict::Drop(r) => r,
                _ => DropReason::Malformed,
            };
            out.drop(ingress, Reason::Switch(r));
            return Outcome::Drop(Reason::Switch(r));
        };
        match verdict {
            Verdict::Forward { vlan, to } => {
                self.policy.seen(now, ingress, vlan, &view, frame, Some(to))
            }
            Verdict::Flood { vlan } => self.policy.seen(now, ingress, vlan, &view, frame, None),
            Verdict::Drop(_) => {}
        }
        if let Verdict::Forward { vlan, .. } | Verdict::Flood { vlan } = verdict
            && relay_client(now, ingress, vlan, frame, &view, ports)
        {
            out.relayed(ingress, vlan);
            return Outcome::Relayed { vlan };
        }
        let outcome = match verdict {
            Verdict::Forward { vlan, to } => {
                self.egress(ingress, to, vlan, frame, &view, Kind::Frame, ports, out);
                Outcome::Forward { vlan, to }
            }
            Verdict::Flood { vlan } => {
                let mut to = std::mem::take(&mut self.flood);
                to.clear();
                let members = ports.switch.vlan_ports(vlan);
                self.policy
                    .flood_ports(now, ingress, vlan, &view, frame, members, &mut to);
                for &p in &to {
                    self.egress(ingress, p, vlan, frame, &view, Kind::Frame, ports, out);
                }
                self.flood = to;
                Outcome::Flood { vlan }
            }
            Verdict::Drop(r) => {
                out.drop(ingress, Reason::Switch(r));
                Outcome::Drop(Reason::Switch(r))
            }
        };
        if ingress != TRUNK {
            self.announce_macs(ports.switch, out);
        }
        outcome
    }

    /// Announce on the trunk the MACs that just appeared behind a tunnel
    /// (one broadcast RARP each, on its VLAN as the trunk carries it).
    fn announce_macs(&mut self, switch: &mut Switch, out: &mut Actions) {
        // Empty but after a frame that taught something.
        let mut macs = std::mem::take(&mut self.macs);
        macs.clear();
        macs.extend(switch.take_announcements());
        let mut frame = std::mem::take(&mut self.hdr);
        for (vlan, mac) in &macs {
            let tag = switch.egress_tag(TRUNK, *vlan);
            ether::write_mac_announce(mac, tag, &mut frame);
            let start = out.mark();
            out.buf().extend_from_slice(&frame);
            out.trunk(Kind::Announce, start);
            self.counters.mac_announcements += 1;
        }
        self.hdr = frame;
        self.macs = macs;
    }

    /// Clamp the MSS of a TCP SYN in `frame` (as it leaves, re-tagged) to
    /// what a tunnel of `mtu` with `overhead` bytes of encapsulation carries.
    fn clamp(&mut self, frame: &mut [u8], mtu: u16, overhead: usize) {
        let l2 = ether::parse(frame).map_or(14, |v| v.inner_offset + 2);
        let over = (overhead + l2) as u16;
        let (mss4, mss6) = (
            pmtu::mss_for(mtu, over, false),
            pmtu::mss_for(mtu, over, true),
        );
        if let ClampResult::Clamped { .. } = pmtu::clamp_mss(frame, mss4, mss6) {
            self.counters.mss_clamped += 1;
        }
    }

    /// One copy of `frame` (parsed as `view`, on `vlan`, from `ingress`)
    /// out of `port`.
    #[allow(clippy::too_many_arguments)]
    fn egress<T: TunnelPorts>(
        &mut self,
        ingress: PortId,
        port: PortId,
        vlan: u16,
        frame: &[u8],
        view: &FrameView,
        kind: Kind,
        ports: &mut Ports<'_, T>,
        out: &mut Actions,
    ) {
        let tag = ports.switch.egress_tag(port, vlan);
        let start = out.mark();
        if is_host_port(port) {
            ether::append_retagged(frame, view, tag, out.buf());
            out.host(port, vlan, kind, start);
            return;
        }
        if port == TRUNK {
            ether::append_retagged(frame, view, tag, out.buf());
            // A SYN from an AP announces the MSS the server may send back
            // through the AP's tunnel.
            if let Some((overhead, mtu)) = ports.tunnels.overhead(ingress) {
                self.clamp(&mut out.buf()[start..], mtu, overhead);
            }
            out.trunk(kind, start);
            return;
        }
        let mut hdr = std::mem::take(&mut self.hdr);
        let encap = ports.tunnels.encap(port, &mut hdr);
        out.buf().extend_from_slice(&hdr);
        self.hdr = hdr;
        let Some(Encap { carrier, peer, mtu }) = encap else {
            out.truncate(start);
            self.counters.tunnel_tx_no_session += 1;
            out.drop(port, Reason::NoTunnel);
            return;
        };
        let inner_at = out.mark();
        ether::append_retagged(frame, view, tag, out.buf());
        let overhead = carrier.outer_len(peer.is_ipv6()) + (inner_at - start);
        self.clamp(&mut out.buf()[inner_at..], mtu, overhead);
        let inner_len = out.mark() - inner_at;
        if overhead + inner_len > usize::from(mtu) {
            let inner = &out.buf()[inner_at..];
            let l2 = ether::parse(inner).map_or(14, |v| v.inner_offset + 2);
            let inner_mtu = usize::from(mtu).saturating_sub(overhead + l2) as u16;
            match pmtu::too_big_reply(inner, inner_mtu, self.cfg.icmp_src4, self.cfg.icmp_src6) {
                TooBig::Reply(icmp) => {
                    out.truncate(start);
                    self.counters.too_big_icmp += 1;
                    // Back to the sender, through the port it came from.
                    if let Some(v) = ether::parse(&icmp) {
                        self.egress(port, ingress, vlan, &icmp, &v, Kind::IcmpTooBig, ports, out);
                    }
                    return;
                }
                // The kernel fragments the outer packet only at the path's
                // MTU; below it (a configured tunnel MTU) the inner packet
                // is split here and each piece sent in its own tunnel packet.
                TooBig::Fragment if mtu < self.cfg.link_mtu => {
                    self.counters.too_big_fragmented += 1;
                    let mut frags = std::mem::take(&mut self.frags);
                    frags.clear();
                    let n = pmtu::fragment_v4(&out.buf()[inner_at..], inner_mtu, &mut frags);
                    out.truncate(start);
                    if n == 0 {
                        self.counters.too_big_dropped += 1;
                        out.drop(port, Reason::TooBig);
                    }
                    for f in &frags {
                        let mut hdr = std::mem::take(&mut self.hdr);
                        let encap = ports.tunnels.encap(port, &mut hdr);
                        let at = out.mark();
                        out.buf().extend_from_slice(&hdr);
                        let header_len = hdr.len();
                        self.hdr = hdr;
                        let Some(e) = encap else {
                            out.truncate(at);
                            break;
                        };
                        out.buf().extend_from_slice(f);
                        self.counters.inner_fragments += 1;
                        out.tunnel(port, (e.carrier, e.peer), Kind::Fragment, at, header_len);
                    }
                    self.frags = frags;
                    return;
                }
                TooBig::Fragment => self.counters.too_big_fragmented += 1,
                TooBig::Fits => {}
                TooBig::Drop => {
                    out.truncate(start);
                    self.counters.too_big_dropped += 1;
                    out.drop(port, Reason::TooBig);
                    return;
                }
            }
        }
        out.tunnel(port, (carrier, peer), kind, start, inner_at - start);
    }
}

/// A client's DHCP message from a tunnel port on a relayed VLAN is the
/// relay's: true when it took the frame (nothing else may see it).
fn relay_client<T: TunnelPorts>(
    now: Instant,
    ingress: PortId,
    vlan: u16,
    frame: &[u8],
    view: &FrameView,
    ports: &mut Ports<'_, T>,
) -> bool {
    let Some(relay) = ports.relay.as_deref_mut() else {
        return false;
    };
    if ingress == TRUNK || is_host_port(ingress) || relay.vlan(vlan).is_none() {
        return false;
    }
    let Some((dst, msg)) = client_message(&frame[view.inner_offset..]) else {
        return false;
    };
    let Some((ap_name, ap_addr)) = ports.tunnels.ap(ingress) else {
        return false;
    };
    let origin = Origin {
        port: ingress,
        vlan,
        ap_name,
        ap_addr,
    };
    relay.handle_client(now, origin, dst, msg)
}
