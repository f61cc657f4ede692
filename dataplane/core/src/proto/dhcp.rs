//! The DHCP relay agent (RFC 2131 §4.1, RFC 1542, option 82 of RFC 3046)
//! for the VLANs where `tunterm_dhcpd_config` enables it. Sans-IO: the
//! driver hands in client messages taken off tunnel ports and server
//! replies read from the edge's address on the VLAN, with `now`; the agent
//! says what to send to the servers ([`RelayAgent::poll_transmit`]) and
//! which frame to deliver to which port.
//!
//! A client's broadcast (or a message to the edge's own address on the
//! VLAN) is consumed: it is relayed as unicast to every server of the VLAN
//! with `giaddr` = the edge's address there, `hops` + 1 and option 82:
//!
//! - sub-option 1, Agent Circuit ID: `<ap>:<vlan>:<port>` in ASCII, where
//!   `<ap>` is the AP's name (its L2TP Host Name; its tunnel address when it
//!   has none, e.g. mGRE), `<vlan>` the VLAN id and `<port>` the switch
//!   port of the tunnel (the L2TP session id) — e.g. `ap1:10:3735928559`;
//! - sub-option 2, Agent Remote ID: the AP's tunnel address in ASCII, e.g.
//!   `10.99.0.2`.
//!
//! The request is remembered by (VLAN, xid, chaddr) with the port it came
//! from and the option 82 sent. A server's reply is delivered only if it
//! answers such a request, comes from one of the VLAN's servers, carries our
//! `giaddr`, and carries back the same option 82 (a server that does not
//! echo option 82 is tolerated and counted); option 82 is removed and the
//! reply is sent as a frame to the client through the port its request came
//! from: broadcast when the client asked for it (flags) or there is no
//! address to unicast to (DHCPNAK), else unicast to `chaddr` / `yiaddr`
//! (`ciaddr` when the client has one). Everything else is dropped and
//! counted in [`RelayCounters`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::proto::bridge::PortId;
use crate::wire::dhcp::{
    self, BOOTREPLY, BOOTREQUEST, CLIENT_PORT, FLAG_BROADCAST, Packet, SERVER_PORT, UdpFrame,
};
use crate::wire::ether::MacAddr;

/// How long a relayed request is remembered after the client's last
/// message of that exchange.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(60);
/// Most exchanges remembered at once; new ones beyond are dropped.
pub const MAX_PENDING: usize = 8192;
/// A message that has crossed this many relays is not relayed again.
pub const MAX_HOPS: u8 = 16;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Relay settings of one VLAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanRelay {
    /// The edge's address on the VLAN: `giaddr`, and where replies come.
    pub addr: Ipv4Addr,
    /// The MAC of the edge's host port on the VLAN (source of replies
    /// delivered to clients).
    pub mac: MacAddr,
    /// Servers every request is relayed to.
    pub servers: Vec<Ipv4Addr>,
}

/// Counters of the relay agent (monotonic, except `pending`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RelayCounters {
    /// Client messages taken to be relayed.
    pub client_rx: u64,
    /// Messages sent to servers (one per server per client message).
    pub relayed: u64,
    /// Replies read from servers.
    pub server_rx: u64,
    /// Replies delivered to clients.
    pub delivered: u64,
    /// Replies delivered although the server did not echo option 82.
    pub reply_without_option82: u64,
    /// Dropped: a client message that is not a valid DHCP request.
    pub drop_request_malformed: u64,
    /// Dropped: a client message already carrying option 82 or a `giaddr`
    /// (RFC 3046 §2.1: not trusted from a client port).
    pub drop_request_relayed: u64,
    /// Dropped: `hops` already at the limit.
    pub drop_request_hops: u64,
    /// Dropped: too many exchanges in progress.
    pub drop_pending_full: u64,
    /// Dropped: a server reply that is not a valid DHCP reply.
    pub drop_reply_malformed: u64,
    /// Dropped: a reply from an address that is not a server of the VLAN.
    pub drop_reply_unknown_server: u64,
    /// Dropped: a reply that answers no relayed request (xid, chaddr,
    /// giaddr), or one that has expired.
    pub drop_reply_unmatched: u64,
    /// Dropped: a reply whose option 82 is not the one sent.
    pub drop_reply_bad_option82: u64,
    /// Exchanges forgotten after [`PENDING_TIMEOUT`].
    pub expired: u64,
    /// Exchanges remembered now.
    pub pending: usize,
}

/// A relayed request, to send as UDP from `src`:67 to `dst`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToServer {
    /// The VLAN it was relayed for.
    pub vlan: u16,
    /// Source address (the edge's on the VLAN).
    pub src: Ipv4Addr,
    /// The server, port 67.
    pub dst: SocketAddrV4,
    /// The DHCP message.
    pub payload: Vec<u8>,
}

/// A reply to deliver: an untagged Ethernet frame for `port` on `vlan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToClient {
    /// The tunnel port the request came from.
    pub port: PortId,
    /// Its VLAN.
    pub vlan: u16,
    /// Ethernet / IPv4 / UDP 67 → 68 / DHCP, option 82 removed.
    pub frame: Vec<u8>,
}

/// Who a client message came through (for option 82).
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// The switch port (tunnel) it arrived on.
    pub port: PortId,
    /// Its VLAN.
    pub vlan: u16,
    /// The AP's name, or "" when it has none.
    pub ap_name: &'a str,
    /// The AP's tunnel address.
    pub ap_addr: IpAddr,
}

#[derive(Clone, Debug)]
struct Pending {
    port: PortId,
    agent_info: Vec<u8>,
    expires: Instant,
}

/// (VLAN, xid, chaddr).
type Key = (u16, u32, [u8; 16]);

/// The relay agent. See the module documentation.
#[derive(Debug, Default)]
pub struct RelayAgent {
    vlans: BTreeMap<u16, VlanRelay>,
    pending: HashMap<Key, Pending>,
    out: VecDeque<ToServer>,
    next_sweep: Option<Instant>,
    counters: RelayCounters,
}

impl RelayAgent {
    /// An agent relaying on `vlans`.
    pub fn new(vlans: BTreeMap<u16, VlanRelay>) -> Self {
        RelayAgent {
            vlans,
            ..RelayAgent::default()
        }
    }

    /// New settings (a configuration reload). Exchanges in progress on a
    /// VLAN whose address changed or that no longer relays are forgotten.
    pub fn set_vlans(&mut self, vlans: BTreeMap<u16, VlanRelay>) {
        self.pending.retain(|(vlan, _, _), _| {
            let (old, new) = (self.vlans.get(vlan), vlans.get(vlan));
            new.is_some() && old.map(|o| o.addr) == new.map(|n| n.addr)
        });
        self.vlans = vlans;
        self.counters.pending = self.pending.len();
    }

    /// The settings of `vlan`, when the agent relays there.
    pub fn vlan(&self, vlan: u16) -> Option<&VlanRelay> {
        self.vlans.get(&vlan)
    }

    /// The VLANs relayed on, and their settings.
    pub fn vlans(&self) -> &BTreeMap<u16, VlanRelay> {
        &self.vlans
    }

    /// Counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// A DHCP client message (UDP payload, 68 → 67, sent to `dst`) arrived
    /// from a tunnel port. Returns false when it is not the agent's to
    /// handle (relay off on the VLAN, or unicast to another host): the
    /// switch forwards it as any frame. True when it is consumed: relayed
    /// (see [`poll_transmit`](Self::poll_transmit)) or dropped and counted.
    #[must_use]
    pub fn handle_client(
        &mut self,
        now: Instant,
        from: Origin<'_>,
        dst: Ipv4Addr,
        msg: &[u8],
    ) -> bool {
        let Some(v) = self.vlans.get(&from.vlan) else {
            return false;
        };
        if dst != Ipv4Addr::BROADCAST && dst != v.addr {
            return false;
        }
        self.counters.client_rx += 1;
        let p = match Packet::new_checked(msg) {
            Ok(p) if p.op() == BOOTREQUEST => p,
            _ => {
                self.counters.drop_request_malformed += 1;
                return true;
            }
        };
        if !p.giaddr().is_unspecified() || p.option(dhcp::opt::RELAY_AGENT_INFO).is_some() {
            self.counters.drop_request_relayed += 1;
            return true;
        }
        if p.hops() >= MAX_HOPS {
            self.counters.drop_request_hops += 1;
            return true;
        }
        let key = (from.vlan, p.xid(), p.chaddr());
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            self.counters.drop_pending_full += 1;
            return true;
        }
        let ap = if from.ap_name.is_empty() {
            from.ap_addr.to_string()
        } else {
            from.ap_name.to_string()
        };
        let circuit = format!("{ap}:{}:{}", from.vlan, from.port.0);
        let remote = from.ap_addr.to_canonical().to_string();
        let info = dhcp::agent_info(circuit.as_bytes(), remote.as_bytes());
        let mut payload = Vec::with_capacity(msg.len() + info.len() + 2);
        dhcp::rewrite_options(&p, Some((dhcp::opt::RELAY_AGENT_INFO, &info)), &mut payload);
        dhcp::set_relay_fields(&mut payload, p.hops() + 1, v.addr);
        for &server in &v.servers {
            self.out.push_back(ToServer {
                vlan: from.vlan,
                src: v.addr,
                dst: SocketAddrV4::new(server, SERVER_PORT),
                payload: payload.clone(),
            });
            self.counters.relayed += 1;
        }
        self.pending.insert(
            key,
            Pending {
                port: from.port,
                agent_info: info,
                expires: now + PENDING_TIMEOUT,
            },
        );
        self.counters.pending = self.pending.len();
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        true
    }

    /// The next relayed request to send. Call after
    /// [`handle_client`](Self::handle_client) until None.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<ToServer> {
        self.out.pop_front()
    }

    /// A UDP datagram arrived from `from` at the edge's address on `vlan`
    /// port 67. Returns the frame to deliver to the client, or None when
    /// it was dropped (and counted).
    #[must_use]
    pub fn handle_server(
        &mut self,
        now: Instant,
        vlan: u16,
        from: SocketAddrV4,
        msg: &[u8],
    ) -> Option<ToClient> {
        self.counters.server_rx += 1;
        let Some(v) = self.vlans.get(&vlan) else {
            self.counters.drop_reply_unmatched += 1;
            return None;
        };
        let p = match Packet::new_checked(msg) {
            Ok(p) if p.op() == BOOTREPLY => p,
            _ => {
                self.counters.drop_reply_malformed += 1;
                return None;
            }
        };
        if !v.servers.contains(from.ip()) {
            self.counters.drop_reply_unknown_server += 1;
            return None;
        }
        let pending = self
            .pending
            .get(&(vlan, p.xid(), p.chaddr()))
            .filter(|e| p.giaddr() == v.addr && now < e.expires);
        let Some(pending) = pending else {
            self.counters.drop_reply_unmatched += 1;
            return None;
        };
        match p.option(dhcp::opt::RELAY_AGENT_INFO) {
            Some(info) if info != pending.agent_info.as_slice() => {
                self.counters.drop_reply_bad_option82 += 1;
                return None;
            }
            Some(_) => {}
            None => self.counters.reply_without_option82 += 1,
        }
        let mut payload = Vec::with_capacity(msg.len());
        dhcp::rewrite_options(&p, None, &mut payload);
        let mac = p.chaddr_mac();
        let to = if !p.ciaddr().is_unspecified() {
            p.ciaddr()
        } else {
            p.yiaddr()
        };
        let (dst_mac, dst_ip) = match mac {
            Some(m) if p.flags() & FLAG_BROADCAST == 0 && !to.is_unspecified() => (m, to),
            _ => (MacAddr::BROADCAST, Ipv4Addr::BROADCAST),
        };
        let mut frame = Vec::with_capacity(payload.len() + 42);
        dhcp::emit_udp_frame(
            &UdpFrame {
                src_mac: v.mac,
                dst_mac,
                src: (v.addr, SERVER_PORT),
                dst: (dst_ip, CLIENT_PORT),
            },
            &payload,
            &mut frame,
        );
        self.counters.delivered += 1;
        Some(ToClient {
            port: pending.port,
            vlan,
            frame,
        })
    }

    /// Forget expired exchanges. Call at [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        let before = self.pending.len();
        self.pending.retain(|_, e| now < e.expires);
        self.counters.expired += (before - self.pending.len()) as u64;
        self.counters.pending = self.pending.len();
        self.next_sweep = (!self.pending.is_empty()).then_some(now + SWEEP_EVERY);
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dhcp::{HEADER_LEN, MAGIC_COOKIE, MIN_LEN};

    const EDGE10: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 2);
    const S1: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
    const S2: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
    const EDGE_MAC: MacAddr = MacAddr([2, 0xee, 0, 0, 0, 10]);
    const PORT: PortId = PortId(77);

    fn agent() -> RelayAgent {
        RelayAgent::new(BTreeMap::from([(
            10,
            VlanRelay {
                addr: EDGE10,
                mac: EDGE_MAC,
                servers: vec![S1, S2],
            },
        )]))
    }

    fn origin() -> Origin<'static> {
        Origin {
            port: PORT,
            vlan: 10,
            ap_name: "ap1",
            ap_addr: "10.99.0.2".parse().unwrap(),
        }
    }

    fn message(op: u8, msg_type: u8, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN];
        m[0] = op;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&0xabcd_0001u32.to_be_bytes());
        m[28..34].copy_from_slice(&MAC.0);
        m[236..240].copy_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[53, 1, msg_type]);
        m.extend_from_slice(extra);
        m.push(255);
        m
    }

    fn offer(yiaddr: Ipv4Addr, giaddr: Ipv4Addr, option82: Option<&[u8]>) -> Vec<u8> {
        let mut extra = vec![54, 4, 192, 168, 10, 1];
        if let Some(v) = option82 {
            extra.extend_from_slice(&[82, v.len() as u8]);
            extra.extend_from_slice(v);
        }
        let mut m = message(BOOTREPLY, 2, &extra);
        m[3] = 1;
        m[16..20].copy_from_slice(&yiaddr.octets());
        m[24..28].copy_from_slice(&giaddr.octets());
        m
    }

    const INFO: &[u8] = b"\x01\x09ap1:10:77\x02\x0910.99.0.2";

    fn relay_discover(a: &mut RelayAgent, now: Instant) -> Vec<ToServer> {
        let d = message(BOOTREQUEST, 1, &[55, 2, 1, 3]);
        assert!(a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &d));
        std::iter::from_fn(|| a.poll_transmit()).collect()
    }

    #[test]
    fn a_discover_goes_to_every_server_with_giaddr_hops_and_option_82() {
        let mut a = agent();
        let out = relay_discover(&mut a, crate::test_t0());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].dst, SocketAddrV4::new(S1, 67));
        assert_eq!(out[1].dst, SocketAddrV4::new(S2, 67));
        let m = &out[0].payload;
        assert_eq!(out[0].src, EDGE10);
        assert_eq!(m.len(), MIN_LEN);
        assert_eq!(m[3], 1, "hops");
        assert_eq!(&m[24..28], &EDGE10.octets(), "giaddr");
        let want = [
            &[53, 1, 1, 55, 2, 1, 3, 82, INFO.len() as u8][..],
            INFO,
            &[255],
        ]
        .concat();
        assert_eq!(&m[HEADER_LEN..HEADER_LEN + want.len()], &want[..]);
        assert_eq!(out[1].payload, *m);
        let c = a.counters();
        assert_eq!((c.client_rx, c.relayed, c.pending), (1, 2, 1));
    }

    #[test]
    fn a_matching_reply_loses_option_82_and_reaches_the_port_unicast() {
        let now = crate::test_t0();
        let mut a = agent();
        relay_discover(&mut a, now);
        let yi = Ipv4Addr::new(192, 168, 10, 100);
        let o = offer(yi, EDGE10, Some(INFO));
        let got = a
            .handle_server(now, 10, SocketAddrV4::new(S1, 67), &o)
            .unwrap();
        assert_eq!((got.port, got.vlan), (PORT, 10));
        let f = &got.frame;
        assert_eq!(&f[..6], &MAC.0, "unicast to chaddr");
        assert_eq!(&f[6..12], &EDGE_MAC.0);
        assert_eq!(&f[26..30], &EDGE10.octets(), "from the edge's address");
        assert_eq!(&f[30..34], &yi.octets(), "to yiaddr");
        assert_eq!(&f[34..38], &[0, 67, 0, 68]);
        let dhcp_msg = Packet::new_checked(&f[42..]).unwrap();
        assert_eq!(dhcp_msg.option(82), None);
        assert_eq!(dhcp_msg.option(54), Some(&[192, 168, 10, 1][..]));
        assert_eq!(dhcp_msg.yiaddr(), yi);
        assert_eq!(a.counters().delivered, 1);
    }

    #[test]
    fn broadcast_flag_and_nak_are_broadcast() {
        let now = crate::test_t0();
        let mut a = agent();
        relay_discover(&mut a, now);
        let mut o = offer(Ipv4Addr::new(192, 168, 10, 100), EDGE10, Some(INFO));
        o[10] = 0x80;
        let f = a
            .handle_server(now, 10, SocketAddrV4::new(S2, 67), &o)
            .unwrap()
            .frame;
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[30..34], &[255; 4]);
        let nak = offer(Ipv4Addr::UNSPECIFIED, EDGE10, Some(INFO));
        let f = a
            .handle_server(now, 10, SocketAddrV4::new(S1, 67), &nak)
            .unwrap()
            .frame;
        assert_eq!(&f[..6], &[0xff; 6]);
    }

    #[test]
    fn replies_that_match_nothing_are_dropped_and_counted() {
        let now = crate::test_t0();
        let mut a = agent();
        let yi = Ipv4Addr::new(192, 168, 10, 100);
        let from = SocketAddrV4::new(S1, 67);
        // Nothing relayed yet.
        assert!(
            a.handle_server(now, 10, from, &offer(yi, EDGE10, Some(INFO)))
                .is_none()
        );
        relay_discover(&mut a, now);
        // Another xid.
        let mut other = offer(yi, EDGE10, Some(INFO));
        other[7] ^= 1;
        assert!(a.handle_server(now, 10, from, &other).is_none());
        // Another giaddr.
        let wrong_gi = offer(yi, S1, Some(INFO));
        assert!(a.handle_server(now, 10, from, &wrong_gi).is_none());
        // Another VLAN.
        assert!(
            a.handle_server(now, 20, from, &offer(yi, EDGE10, Some(INFO)))
                .is_none()
        );
        // Option 82 changed.
        let bad = offer(yi, EDGE10, Some(b"\x01\x09ap9:10:77\x02\x0910.99.0.2"));
        assert!(a.handle_server(now, 10, from, &bad).is_none());
        // Not a configured server.
        let stranger = SocketAddrV4::new(Ipv4Addr::new(192, 168, 10, 66), 67);
        assert!(
            a.handle_server(now, 10, stranger, &offer(yi, EDGE10, Some(INFO)))
                .is_none()
        );
        // A request, not a reply.
        let req = message(BOOTREQUEST, 3, &[]);
        assert!(a.handle_server(now, 10, from, &req).is_none());
        // Expired.
        let late = now + PENDING_TIMEOUT;
        assert!(
            a.handle_server(late, 10, from, &offer(yi, EDGE10, Some(INFO)))
                .is_none()
        );
        let c = a.counters();
        assert_eq!(c.drop_reply_unmatched, 5);
        assert_eq!(c.drop_reply_bad_option82, 1);
        assert_eq!(c.drop_reply_unknown_server, 1);
        assert_eq!(c.drop_reply_malformed, 1);
        assert_eq!(c.delivered, 0);
        // Without option 82: tolerated, counted.
        assert!(
            a.handle_server(now, 10, from, &offer(yi, EDGE10, None))
                .is_some()
        );
        assert_eq!(a.counters().reply_without_option82, 1);
    }

    #[test]
    fn what_is_not_the_relays_passes_and_bad_requests_are_dropped() {
        let now = crate::test_t0();
        let mut a = agent();
        let d = message(BOOTREQUEST, 1, &[]);
        // Relay off on VLAN 20; unicast to a server directly.
        let o20 = Origin {
            vlan: 20,
            ..origin()
        };
        assert!(!a.handle_client(now, o20, Ipv4Addr::BROADCAST, &d));
        assert!(!a.handle_client(now, origin(), S1, &d));
        // To the edge's own address: relayed.
        assert!(a.handle_client(now, origin(), EDGE10, &d));
        assert_eq!(a.counters().relayed, 2);
        // Already relayed by someone (giaddr), or carrying option 82.
        let mut gi = d.clone();
        gi[24] = 10;
        assert!(a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &gi));
        let with82 = message(BOOTREQUEST, 1, &[82, 3, 1, 1, b'x']);
        assert!(a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &with82));
        let mut hops = d.clone();
        hops[3] = MAX_HOPS;
        assert!(a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &hops));
        assert!(a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &d[..100]));
        let c = a.counters();
        assert_eq!(
            (
                c.drop_request_relayed,
                c.drop_request_hops,
                c.drop_request_malformed
            ),
            (2, 1, 1)
        );
        assert_eq!(c.relayed, 2);
    }

    #[test]
    fn exchanges_expire_and_a_reload_forgets_vlans_that_went() {
        let now = crate::test_t0();
        let mut a = agent();
        relay_discover(&mut a, now);
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        assert_eq!(a.counters().pending, 1);
        // Not swept before its sweep time, whatever the clock says.
        a.handle_timeout(now);
        assert_eq!(a.counters().pending, 1);
        a.handle_timeout(now + PENDING_TIMEOUT);
        assert_eq!((a.counters().pending, a.counters().expired), (0, 1));
        assert_eq!(a.poll_timeout(), None);
        relay_discover(&mut a, now);
        a.set_vlans(BTreeMap::new());
        assert_eq!(a.counters().pending, 0);
        let d = message(BOOTREQUEST, 1, &[]);
        assert!(!a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &d));
    }

    #[test]
    fn the_pending_table_is_bounded() {
        let now = crate::test_t0();
        let mut a = agent();
        let mut d = message(BOOTREQUEST, 1, &[]);
        for i in 0..=MAX_PENDING as u32 {
            d[4..8].copy_from_slice(&i.to_be_bytes());
            assert!(a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &d));
        }
        assert_eq!(a.counters().pending, MAX_PENDING);
        assert_eq!(a.counters().drop_pending_full, 1);
    }

    #[test]
    fn garbage_never_panics() {
        let now = crate::test_t0();
        let mut a = agent();
        let base = offer(Ipv4Addr::new(192, 168, 10, 100), EDGE10, Some(INFO));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3000 {
            let mut b = base.clone();
            b.truncate((round * 7) % (base.len() + 1));
            for byte in &mut b {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(5) {
                    *byte = x as u8;
                }
            }
            let _ = a.handle_client(now, origin(), Ipv4Addr::BROADCAST, &b);
            while a.poll_transmit().is_some() {}
            let _ = a.handle_server(now, 10, SocketAddrV4::new(S1, 67), &b);
        }
    }
}
