//! The kernel's network configuration over rtnetlink (`NETLINK_ROUTE`):
//! links (index, MTU, MAC; setting the MAC and bringing one up),
//! addresses, routes and the neighbour tables (ARP and IPv6 ND). The
//! daemon runs no `ip` subprocess: iproute2 is not needed at run time.
//!
//! This module owns the one way the daemon reads a link's MTU and MAC
//! ([`mtu`], [`mac`], [`link`]): from the kernel over netlink, which works
//! in whatever network namespace the calling thread is in (sysfs shows the
//! namespace it was mounted in).
//!
//! Synchronous on purpose. Each call is one request on a `NETLINK_ROUTE`
//! socket that the kernel handles inside `sendmsg` (under the rtnl lock)
//! and answers before `recv` is called: microseconds, as cheap as the BPF
//! map writes the event loop already makes. The callers (host ports and
//! routes on start and reload, the fast path's periodic sync) are
//! synchronous code in the event loop; rtnetlink's async handle would need
//! a connection task on the runtime and async callers for no gain. A
//! receive timeout bounds the wait should the kernel ever not answer.
//!
//! Errors name what was asked (interface, address, route) and carry the
//! kernel's errno text and, when it gives one, its extended-ack message.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How long to wait for the kernel's answer (it answers at once; this
/// only bounds a stall that should never happen).
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Receive buffer: a dump part is at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// `NLMSG_ERROR` payload flags (`linux/netlink.h`): the request echoed
/// back is only its header; extended-ack attributes follow.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A request the kernel refused, or a socket that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {errno}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct Error {
    /// What was asked, with its interface and addresses.
    what: String,
    /// The errno (its text is the message).
    errno: io::Error,
    /// The kernel's extended-ack message, if it gave one.
    detail: Option<String>,
}

impl Error {
    fn new(what: String, errno: io::Error) -> Error {
        Error {
            what,
            errno,
            detail: None,
        }
    }

    /// The errno, if the kernel or a system call gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno.raw_os_error()
    }
}

/// What the kernel says of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// MTU.
    pub mtu: u32,
    /// Hardware address, if it is an Ethernet-like (6-byte) one.
    pub mac: Option<[u8; 6]>,
    /// Administratively up.
    pub up: bool,
}

/// A route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination (`0.0.0.0/0`, `::/0`: the default route).
    pub dest: IpNet,
    /// Gateway, if not on-link.
    pub via: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
}

/// A usable neighbour entry: its state is one of `NUD_VALID`
/// (reachable, stale, delay, probe, permanent, noarp), its address not a
/// multicast one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: [u8; 6],
}

/// A `NETLINK_ROUTE` socket, connected to the kernel.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").field("seq", &self.seq).finish()
    }
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl, Error> {
        let fail = |e| Error::new("opening a NETLINK_ROUTE socket".into(), e);
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(fail)?;
        sock.bind_auto().map_err(fail)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(fail)?;
        // Best effort: older kernels lack these, and requests work without
        // them (errors then come without the kernel's text; dumps are
        // filtered here as well).
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        socket2::SockRef::from(&sock)
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(fail)?;
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The link called `name`.
    pub fn link(&mut self, name: &str) -> Result<Link, Error> {
        let what = || format!("interface {name}");
        let replies = self.exchange(&what, get_link(name), NLM_F_REQUEST | NLM_F_ACK)?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            })
            .ok_or_else(|| {
                Error::new(
                    what(),
                    io::Error::new(io::ErrorKind::InvalidData, "the kernel sent no link"),
                )
            })
    }

    /// Set the MAC of link `name`.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<(), Error> {
        let what = || format!("setting the MAC of {name} to {}", fmt_mac(&mac));
        self.exchange(
            &what,
            set_link(name, Some(mac), None),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Bring link `name` up.
    pub fn set_up(&mut self, name: &str) -> Result<(), Error> {
        let what = || format!("bringing {name} up");
        self.exchange(
            &what,
            set_link(name, None, Some(true)),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Take link `name` down (`ip link set NAME down`).
    pub fn set_down(&mut self, name: &str) -> Result<(), Error> {
        let what = || format!("taking {name} down");
        self.exchange(
            &what,
            set_link(name, None, Some(false)),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Put `addr/prefix` on `link` (replacing it if there). IPv6 addresses
    /// skip duplicate address detection: they are ours by configuration.
    pub fn add_address(&mut self, link: &Link, addr: IpAddr, prefix: u8) -> Result<(), Error> {
        let what = || format!("adding address {addr}/{prefix} to {}", link.name);
        self.exchange(
            &what,
            new_address(link.index, addr, prefix),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// The addresses on `link`, with their prefix lengths.
    pub fn addresses(&mut self, link: &Link) -> Result<Vec<(IpAddr, u8)>, Error> {
        let what = || format!("listing the addresses of {}", link.name);
        let replies = self.exchange(
            &what,
            dump_addresses(link.index),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == link.index => {
                    let ip = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })?;
                    Some((ip, a.header.prefix_len))
                }
                _ => None,
            })
            .collect())
    }

    /// `ip route replace DEST via VIA [dev LINK]`: in the main table. With
    /// no link the kernel finds the one that reaches `via`.
    pub fn replace_route(
        &mut self,
        dest: IpNet,
        via: IpAddr,
        link: Option<&Link>,
    ) -> Result<(), Error> {
        let what = || match link {
            Some(l) => format!("route {dest} via {via} dev {}", l.name),
            None => format!("route {dest} via {via}"),
        };
        let msg = route_message(dest, via, link.map(|l| l.index), false)
            .map_err(|e| Error::new(what(), e))?;
        self.exchange(
            &what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// `ip route del DEST via VIA`, main table.
    pub fn delete_route(&mut self, dest: IpNet, via: IpAddr) -> Result<(), Error> {
        let what = || format!("deleting route {dest} via {via}");
        let msg = route_message(dest, via, None, true).map_err(|e| Error::new(what(), e))?;
        self.exchange(
            &what,
            RouteNetlinkMessage::DelRoute(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
    }

    /// The main table's unicast routes (both families), those out of
    /// interface `index` only if given.
    pub fn routes(&mut self, index: Option<u32>) -> Result<Vec<Route>, Error> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let what = || "listing the routes".to_string();
            let replies = self.exchange(&what, dump_routes(family), NLM_F_REQUEST | NLM_F_DUMP)?;
            out.extend(replies.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_of(r),
                _ => None,
            }));
        }
        out.retain(|r| index.is_none() || r.oif == index);
        Ok(out)
    }

    /// The usable neighbours (both families) on interface `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>, Error> {
        let what = || format!("listing the neighbours of interface {index}");
        let replies = self.exchange(&what, dump_neighbours(index), NLM_F_REQUEST | NLM_F_DUMP)?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    neighbour_of(n)
                }
                _ => None,
            })
            .collect())
    }

    /// Send `msg` and collect the replies up to the ack (a request) or the
    /// end of the dump. A dump the kernel marks interrupted (the table
    /// changed under it) is taken again, up to three times.
    fn exchange(
        &mut self,
        what: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (out, interrupted) = self.exchange_once(what, msg.clone(), flags)?;
            if !interrupted || tries >= 3 {
                return Ok(out);
            }
        }
    }

    fn exchange_once(
        &mut self,
        what: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = frame(msg, flags, seq);
        self.sock
            .send(&bytes, 0)
            .map_err(|e| Error::new(what(), e))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let n = self
                .sock
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        Error::new(
                            what(),
                            io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel"),
                        )
                    } else {
                        Error::new(what(), e)
                    }
                })?;
            if n > self.buf.len() {
                return Err(Error::new(
                    what(),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a reply of {n} bytes overflowed the {RECV_BUF}-byte buffer"),
                    ),
                ));
            }
            let mut at = 0;
            while at < n {
                let part = &self.buf[at..n];
                let Ok(header) = NetlinkBuffer::new_checked(part) else {
                    break;
                };
                let len = header.length() as usize;
                let (msg_seq, msg_flags) = (header.sequence_number(), header.flags());
                at += len.next_multiple_of(4).max(16);
                if msg_seq != seq {
                    // An answer to an earlier request that timed out.
                    continue;
                }
                interrupted |= msg_flags & NLM_F_DUMP_INTR != 0;
                // A message this crate cannot parse (a kernel newer than
                // it) is skipped; acks and errors always parse.
                let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&part[..len]) else {
                    continue;
                };
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok((out, interrupted)),
                        Some(code) => {
                            return Err(Error {
                                what: what(),
                                errno: io::Error::from_raw_os_error(-code.get()),
                                detail: ext_ack_message(msg_flags, &e.header),
                            });
                        }
                    },
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(Error {
                                what: what(),
                                errno: io::Error::from_raw_os_error(-d.code),
                                detail: ext_ack_tlvs(&d.extended_ack),
                            });
                        }
                        return Ok((out, interrupted));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The link called `name` (its index, MTU, MAC), asked of the kernel.
pub fn link(name: &str) -> Result<Link, Error> {
    Rtnl::open()?.link(name)
}

/// The MTU of interface `name`.
pub fn mtu(name: &str) -> Result<u32, Error> {
    link(name).map(|l| l.mtu)
}

/// The MAC of interface `name` (an error if it has no Ethernet address).
pub fn mac(name: &str) -> Result<[u8; 6], Error> {
    link(name)?.mac.ok_or_else(|| {
        Error::new(
            format!("the MAC of {name}"),
            io::Error::new(io::ErrorKind::InvalidData, "not an Ethernet interface"),
        )
    })
}

/// Next-hop MACs out of one interface: a snapshot of its neighbours
/// (ARP and IPv6 ND) and the main table's routes through it.
#[derive(Clone, Debug, Default)]
pub struct NextHops {
    neighbours: HashMap<IpAddr, [u8; 6]>,
    /// (destination, gateway if not on-link).
    routes: Vec<(IpNet, Option<IpAddr>)>,
}

impl NextHops {
    /// Read them for interface `index`: two dumps, whatever the number of
    /// peers later looked up.
    pub fn read(rtnl: &mut Rtnl, index: u32) -> Result<NextHops, Error> {
        let neighbours = rtnl.neighbours(index)?;
        let routes = rtnl.routes(Some(index))?;
        Ok(NextHops::new(neighbours, routes))
    }

    /// From a neighbour list and the routes out of the interface.
    pub fn new(neighbours: Vec<Neighbour>, routes: Vec<Route>) -> NextHops {
        NextHops {
            neighbours: neighbours.into_iter().map(|n| (n.ip, n.mac)).collect(),
            routes: routes.into_iter().map(|r| (r.dest, r.via)).collect(),
        }
    }

    /// The MAC to send to `peer` with: its own if it is a known neighbour,
    /// else that of the gateway of the longest route covering it (if that
    /// route has a gateway and the gateway is a known neighbour; an
    /// on-link peer not yet resolved has none). IPv4-mapped IPv6 counts as
    /// IPv4.
    pub fn mac_for(&self, peer: IpAddr) -> Option<[u8; 6]> {
        let peer = peer.to_canonical();
        if let Some(mac) = self.neighbours.get(&peer) {
            return Some(*mac);
        }
        let (_, gw) = self
            .routes
            .iter()
            .filter(|(dest, _)| dest.contains(&peer))
            .max_by_key(|(dest, _)| dest.prefix_len())?;
        self.neighbours.get(&gw.as_ref()?.to_canonical()).copied()
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// One request as the kernel reads it: header (length, type, `flags`,
/// `seq`; port 0, the kernel) and `msg`.
fn frame(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    bytes
}

/// `RTM_GETLINK` by name.
fn get_link(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    RouteNetlinkMessage::GetLink(m)
}

/// `RTM_NEWLINK` (no create flag: changes an existing link) for the link
/// called `name`: its MAC, and/or the up flag.
fn set_link(name: &str, mac: Option<[u8; 6]>, up: Option<bool>) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    if let Some(up) = up {
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.header.change_mask = LinkFlags::Up;
    }
    m.attributes.push(LinkAttribute::IfName(name.into()));
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    RouteNetlinkMessage::NewLink(m)
}

/// `RTM_NEWADDR` of `addr/prefix` on interface `index` (IPv6: no DAD).
fn new_address(index: u32, addr: IpAddr, prefix: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(addr);
    m.header.prefix_len = prefix;
    m.header.index = index;
    if addr.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    // As `ip addr add`: the local address and the (peer) address alike.
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    RouteNetlinkMessage::NewAddress(m)
}

fn dump_addresses(index: u32) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    RouteNetlinkMessage::GetAddress(m)
}

fn dump_routes(family: AddressFamily) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    RouteNetlinkMessage::GetRoute(m)
}

/// The kernel filters a neighbour dump by `NDA_IFINDEX` (with strict
/// checking the header's index must be 0).
fn dump_neighbours(index: u32) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.attributes.push(NeighbourAttribute::IfIndex(index));
    RouteNetlinkMessage::GetNeighbour(m)
}

/// A main-table unicast route to `dest` via `via` (out of `oif` if
/// given), as `ip route replace`/`del` sends it.
fn route_message(
    dest: IpNet,
    via: IpAddr,
    oif: Option<u32>,
    delete: bool,
) -> io::Result<RouteMessage> {
    let dest = dest.trunc();
    if dest.addr().is_ipv4() != via.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the gateway is not of the destination's address family",
        ));
    }
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(via);
    m.header.destination_prefix_length = dest.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    if delete {
        // Match any protocol and type; scope "nowhere" matches any scope.
        m.header.scope = RouteScope::NoWhere;
    } else {
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
    }
    if dest.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(route_address(dest.addr())));
    }
    m.attributes
        .push(RouteAttribute::Gateway(route_address(via)));
    if let Some(oif) = oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    Ok(m)
}

fn link_of(l: &LinkMessage) -> Link {
    let mut link = Link {
        name: String::new(),
        index: l.header.index,
        mtu: 0,
        mac: None,
        up: l.header.flags.contains(LinkFlags::Up),
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => {}
        }
    }
    link
}

fn route_of(r: &RouteMessage) -> Option<Route> {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    };
    let mut dest = None;
    let mut via = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = ip(d),
            RouteAttribute::Gateway(g) => via = ip(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            _ => {}
        }
    }
    let any = match r.header.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let dest = IpNet::new(dest.unwrap_or(any), r.header.destination_prefix_length).ok()?;
    Some(Route { dest, via, oif })
}

fn neighbour_of(n: &NeighbourMessage) -> Option<Neighbour> {
    let valid = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if !valid {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => {}
        }
    }
    let ip = ip?;
    // The kernel's multicast mappings (NOARP entries for ff02::1:ff..)
    // are never a next hop.
    (!ip.is_multicast()).then_some(Neighbour { ip, mac: mac? })
}

/// The kernel's text in an `NLMSG_ERROR`'s extended ack. `payload`: what
/// follows the errno (the request echoed back, whole or capped to its
/// header, then attributes if `flags` has `NLM_F_ACK_TLVS`).
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
    };
    ext_ack_tlvs(payload.get(echoed.next_multiple_of(4)..)?)
}

/// `NLMSGERR_ATTR_MSG` among netlink attributes.
fn ext_ack_tlvs(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([tlvs[0], tlvs[1]]));
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let text = String::from_utf8_lossy(&text[..end]).trim().to_string();
            return (!text.is_empty()).then_some(text);
        }
        tlvs = tlvs.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::deserialize(bytes).unwrap()
    }

    #[test]
    fn a_link_is_asked_for_by_name() {
        let bytes = frame(get_link("tt-v10"), NLM_F_REQUEST | NLM_F_ACK, 7);
        #[rustfmt::skip]
        let want: &[u8] = &[
            // nlmsghdr: length 44, RTM_GETLINK (18), REQUEST|ACK, seq 7, port 0
            44, 0, 0, 0,  18, 0,  5, 0,  7, 0, 0, 0,  0, 0, 0, 0,
            // ifinfomsg: any family, any type, index 0 (by name), no flags
            0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
            // IFLA_IFNAME (3), "tt-v10\0", one byte of padding
            11, 0, 3, 0,  b't', b't', b'-', b'v', b'1', b'0', 0, 0,
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn a_route_is_replaced_as_ip_route_replace_sends_it() {
        let msg = route_message(
            "172.16.0.0/12".parse().unwrap(),
            "192.168.10.1".parse().unwrap(),
            None,
            false,
        )
        .unwrap();
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let bytes = frame(RouteNetlinkMessage::NewRoute(msg), flags, 1);
        #[rustfmt::skip]
        let want: &[u8] = &[
            // nlmsghdr: length 44, RTM_NEWROUTE (24), flags 0x505, seq 1
            44, 0, 0, 0,  24, 0,  0x05, 0x05,  1, 0, 0, 0,  0, 0, 0, 0,
            // rtmsg: AF_INET, /12, src /0, tos 0, main (254), boot (3),
            // universe (0), unicast (1), no flags
            2, 12, 0, 0,  254, 3, 0, 1,  0, 0, 0, 0,
            // RTA_DST (1) 172.16.0.0
            8, 0, 1, 0,  172, 16, 0, 0,
            // RTA_GATEWAY (5) 192.168.10.1
            8, 0, 5, 0,  192, 168, 10, 1,
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn default_routes_have_no_destination_and_a_device_when_given() {
        let msg = route_message(
            "::/0".parse().unwrap(),
            "fd00:1::1".parse().unwrap(),
            Some(9),
            false,
        )
        .unwrap();
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(msg.header.destination_prefix_length, 0);
        assert_eq!(
            msg.attributes,
            [
                RouteAttribute::Gateway(RouteAddress::Inet6("fd00:1::1".parse().unwrap())),
                RouteAttribute::Oif(9),
            ]
        );
        // Host bits are dropped, as the kernel would refuse them.
        let msg = route_message(
            "10.1.2.3/16".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            None,
            true,
        )
        .unwrap();
        assert_eq!(
            msg.attributes[0],
            RouteAttribute::Destination(RouteAddress::Inet("10.1.0.0".parse().unwrap()))
        );
        // A delete matches any protocol, type and scope.
        assert_eq!(msg.header.scope, RouteScope::NoWhere);
        assert_eq!(msg.header.protocol, RouteProtocol::Unspec);
        assert_eq!(msg.header.kind, RouteType::Unspec);
        let mixed = route_message(
            "10.0.0.0/8".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            None,
            false,
        );
        assert_eq!(mixed.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn addresses_and_link_changes_survive_the_round_trip() {
        let bytes = frame(
            new_address(5, "fd00:1::5".parse().unwrap(), 64),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            3,
        );
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) =
            parse(&bytes).payload
        else {
            panic!("not RTM_NEWADDR");
        };
        assert_eq!(a.header.family, AddressFamily::Inet6);
        assert_eq!((a.header.index, a.header.prefix_len), (5, 64));
        assert!(a.header.flags.contains(AddressHeaderFlags::Nodad));
        // IPv4: no DAD flag, local and address alike.
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = parse(&frame(
            new_address(5, "192.168.10.2".parse().unwrap(), 24),
            NLM_F_REQUEST,
            4,
        ))
        .payload
        else {
            panic!("not RTM_NEWADDR");
        };
        assert!(a.header.flags.is_empty());
        let ip: IpAddr = "192.168.10.2".parse().unwrap();
        assert_eq!(
            a.attributes,
            [AddressAttribute::Local(ip), AddressAttribute::Address(ip)]
        );

        let mac = [0x02, 0x74, 1, 2, 3, 4];
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = parse(&frame(
            set_link("tt-v10", Some(mac), Some(true)),
            NLM_F_REQUEST,
            5,
        ))
        .payload
        else {
            panic!("not RTM_NEWLINK");
        };
        assert_eq!(l.header.index, 0);
        assert_eq!(l.header.flags, LinkFlags::Up);
        assert_eq!(l.header.change_mask, LinkFlags::Up);
        let link = link_of(&l);
        assert_eq!(
            (link.name.as_str(), link.mac, link.up),
            ("tt-v10", Some(mac), true)
        );
        // Changing only the MAC leaves the flags alone (change mask 0).
        let RouteNetlinkMessage::NewLink(l) = set_link("tt-v10", Some(mac), None) else {
            panic!()
        };
        assert!(l.header.change_mask.is_empty());
        // Down: the Up bit in the mask, clear in the flags.
        let RouteNetlinkMessage::NewLink(l) = set_link("tt-v10", None, Some(false)) else {
            panic!()
        };
        assert_eq!(l.header.change_mask, LinkFlags::Up);
        assert!(l.header.flags.is_empty());
    }

    fn neighbour(ip: &str, state: NeighbourState, mac: Option<[u8; 6]>) -> NeighbourMessage {
        let ip: IpAddr = ip.parse().unwrap();
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(ip);
        m.header.ifindex = 3;
        m.header.state = state;
        m.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        if let Some(mac) = mac {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        m
    }

    #[test]
    fn only_valid_neighbour_entries_with_a_mac_count() {
        let mac = Some([2, 0, 0, 0, 0, 1]);
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            let n = neighbour_of(&neighbour("fe80::1", state, mac)).unwrap();
            assert_eq!(n.ip, "fe80::1".parse::<IpAddr>().unwrap());
        }
        for state in [
            NeighbourState::Incomplete,
            NeighbourState::Failed,
            NeighbourState::None,
        ] {
            assert_eq!(neighbour_of(&neighbour("10.0.0.1", state, mac)), None);
        }
        assert_eq!(
            neighbour_of(&neighbour("10.0.0.1", NeighbourState::Reachable, None)),
            None
        );
        let mcast = Some([0x33, 0x33, 0xff, 0, 0, 2]);
        assert_eq!(
            neighbour_of(&neighbour("ff02::1:ff00:2", NeighbourState::Noarp, mcast)),
            None
        );
    }

    #[test]
    fn routes_of_other_tables_and_kinds_are_not_next_hops() {
        let mut m = route_message(
            "::/0".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            Some(3),
            false,
        )
        .unwrap();
        assert_eq!(
            route_of(&m),
            Some(Route {
                dest: "::/0".parse().unwrap(),
                via: Some("fe80::1".parse().unwrap()),
                oif: Some(3),
            })
        );
        m.attributes.push(RouteAttribute::Table(255));
        assert_eq!(route_of(&m), None);
        m.attributes.pop();
        m.header.kind = RouteType::Local;
        assert_eq!(route_of(&m), None);
    }

    #[test]
    fn next_hops_are_the_neighbour_or_the_longest_routes_gateway() {
        let a = [2, 0, 0, 0, 0, 0xa];
        let g4 = [2, 0, 0, 0, 0, 0x41];
        let g4b = [2, 0, 0, 0, 0, 0x42];
        let g6 = [2, 0, 0, 0, 0, 0x61];
        let n = |ip: &str, mac| Neighbour {
            ip: ip.parse().unwrap(),
            mac,
        };
        let r = |dest: &str, via: Option<&str>| Route {
            dest: dest.parse().unwrap(),
            via: via.map(|v| v.parse().unwrap()),
            oif: Some(3),
        };
        let hops = NextHops::new(
            vec![
                n("10.0.0.7", a),
                n("10.0.0.1", g4),
                n("10.0.0.2", g4b),
                n("fe80::1", g6),
            ],
            vec![
                r("10.0.0.0/24", None),
                r("0.0.0.0/0", Some("10.0.0.1")),
                r("172.16.0.0/12", Some("10.0.0.2")),
                r("::/0", Some("fe80::1")),
                r("2001:db8::/32", Some("fe80::99")),
            ],
        );
        let mac = |ip: &str| hops.mac_for(ip.parse().unwrap());
        assert_eq!(mac("10.0.0.7"), Some(a));
        assert_eq!(mac("::ffff:10.0.0.7"), Some(a));
        assert_eq!(mac("198.51.100.1"), Some(g4));
        assert_eq!(mac("172.16.5.5"), Some(g4b));
        assert_eq!(mac("2001:db9::5"), Some(g6));
        // The longest route's gateway is not a known neighbour: none (not
        // the default route's gateway).
        assert_eq!(mac("2001:db8::5"), None);
        // On-link (the /24 beats the default route) but not resolved yet.
        assert_eq!(mac("10.0.0.8"), None);
        assert_eq!(
            NextHops::default().mac_for("10.0.0.7".parse().unwrap()),
            None
        );
    }

    #[test]
    fn the_kernels_error_text_is_read_from_the_extended_ack() {
        #[rustfmt::skip]
        let payload: &[u8] = &[
            // the request's header, echoed (capped)
            44, 0, 0, 0,  24, 0,  0x05, 0x05,  1, 0, 0, 0,  0, 0, 0, 0,
            // NLMSGERR_ATTR_MSG (1): "Nexthop has invalid gateway\0"
            32, 0, 1, 0,
            b'N', b'e', b'x', b't', b'h', b'o', b'p', b' ', b'h', b'a', b's', b' ',
            b'i', b'n', b'v', b'a', b'l', b'i', b'd', b' ', b'g', b'a', b't', b'e',
            b'w', b'a', b'y', 0,
            // NLMSGERR_ATTR_OFFS (2)
            8, 0, 2, 0,  36, 0, 0, 0,
        ];
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, payload).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, payload), None);
        // Truncated or junk attributes: no text, no panic.
        for cut in 0..payload.len() {
            let _ = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload[..cut]);
            let _ = ext_ack_message(NLM_F_ACK_TLVS, &payload[..cut]);
        }
        let e = Error {
            what: "route 10.9.0.0/16 via 10.0.0.9".into(),
            errno: io::Error::from_raw_os_error(libc::ENETUNREACH),
            detail: Some("Nexthop has invalid gateway".into()),
        };
        assert_eq!(
            e.to_string(),
            "route 10.9.0.0/16 via 10.0.0.9: Network is unreachable (os error 101) \
             (Nexthop has invalid gateway)"
        );
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
    }
}
