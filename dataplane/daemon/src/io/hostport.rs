//! Host ports: the edge's own address on a VLAN, as a TAP device
//! (`tt-v<vid>`) in tunterm's network namespace. The kernel answers ARP,
//! ICMP and routes through it; tunterm moves its frames into and out of
//! the switch. Also the DHCP relay's UDP socket bound to that address,
//! and the `tunterm_extra_routes`.
//!
//! Links, addresses and routes are set over rtnetlink
//! ([`crate::io::netlink`]); an error names the device, the address or
//! route, and the kernel's reason. A host port's device, and with it its
//! addresses and routes, goes when the [`HostPort`] is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::rc::Rc;
use std::task::Poll;

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Serialize;
use tokio::io::unix::AsyncFd;

use crate::io::netlink::Rtnl;
use crate::io::tap::Tap;
use tunterm_core::wire::ether::MacAddr;

/// What a host port should be: its VLAN and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPortSpec {
    /// VLAN (untagged on the port; the switch tags toward the trunk).
    pub vid: u16,
    /// The device's MAC: stable for an edge and VLAN ([`stable_mac`]), so
    /// that neighbours' ARP caches stay right across a restart or reload.
    pub mac: MacAddr,
    /// IPv4 address and prefix length.
    pub v4: Option<(Ipv4Addr, u8)>,
    /// IPv4 default gateway through this port.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 address and prefix length.
    pub v6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default gateway through this port.
    pub gateway6: Option<Ipv6Addr>,
}

/// A locally administered MAC for `edge`'s host port on `vid`:
/// `02:74:` and 32 bits of an FNV-1a hash of the edge name and the VLAN.
pub fn stable_mac(edge: &str, vid: u16) -> MacAddr {
    let mut h: u32 = 0x811c_9dc5;
    for b in edge.bytes().chain(vid.to_be_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let [a, b, c, d] = h.to_be_bytes();
    MacAddr([0x02, 0x74, a, b, c, d])
}

impl HostPortSpec {
    /// The device name: `tt-v<vid>`.
    pub fn ifname(&self) -> String {
        format!("tt-v{}", self.vid)
    }
}

/// Per host port counters.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct HostPortCounters {
    /// Frames the kernel sent out of the device (into the switch).
    pub rx: u64,
    /// Frames written into the device (to the kernel).
    pub tx: u64,
    /// Frames that could not be written (dropped).
    pub tx_drops: u64,
    /// Read errors other than "nothing queued".
    pub rx_errors: u64,
}

/// A host port: the TAP device and its settings.
#[derive(Debug)]
pub struct HostPort {
    /// What it was made from.
    pub spec: HostPortSpec,
    /// The device's MAC (the edge's on this VLAN).
    pub mac: MacAddr,
    /// The device.
    pub tap: Rc<AsyncFd<Tap>>,
    /// Counters.
    pub counters: HostPortCounters,
}

impl HostPort {
    /// Create the device, give it its addresses and gateways, bring it up.
    /// A device of the same name left by a crashed run is replaced.
    pub fn create(spec: &HostPortSpec) -> anyhow::Result<HostPort> {
        let name = spec.ifname();
        let tap = match Tap::create(&name) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // A persistent device of that name (not one of ours: ours
                // vanish with their process).
                bail!("host port {name}: the name is taken by another device ({e})")
            }
            Err(e) => return Err(e).with_context(|| format!("creating host port {name}")),
        };
        let mut rtnl = Rtnl::open().with_context(|| format!("host port {name}"))?;
        rtnl.set_mac(&name, spec.mac.0)?;
        // Announce the address (gratuitous ARP) when the link comes up, so
        // that neighbours holding another MAC for it learn this one.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/arp_notify"), "1");
        if spec.v6.is_some() {
            // The address is ours by configuration (it is added without
            // duplicate detection too): no detection holding the link's
            // addresses back.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"), "0");
        }
        let link = rtnl.link(&name)?;
        let mac = link
            .mac
            .with_context(|| format!("host port {name}: the kernel gives it no MAC"))?;
        let v4 = spec.v4.map(|(a, len)| (IpAddr::V4(a), len));
        let v6 = spec.v6.map(|(a, len)| (IpAddr::V6(a), len));
        for (addr, len) in v4.into_iter().chain(v6) {
            rtnl.add_address(&link, addr, len)?;
        }
        rtnl.set_up(&name)?;
        let defaults = [spec.gateway.map(IpAddr::V4), spec.gateway6.map(IpAddr::V6)];
        for gw in defaults.into_iter().flatten() {
            let any = match gw {
                IpAddr::V4(_) => IpNet::V4(Default::default()),
                IpAddr::V6(_) => IpNet::V6(Default::default()),
            };
            rtnl.replace_route(any, gw, Some(&link))?;
        }
        // SAFETY: a Tap owns its descriptor (a File) for its whole life and
        // `as_raw_fd` always returns that same descriptor.
        let tap = unsafe { AsyncFd::register(tap) }
            .map_err(std::io::Error::from)
            .with_context(|| format!("registering {name}"))?;
        Ok(HostPort {
            spec: spec.clone(),
            mac: MacAddr(mac),
            tap: Rc::new(tap),
            counters: HostPortCounters::default(),
        })
    }

    /// Write one frame to the kernel; counted.
    pub fn send(&mut self, frame: &[u8]) {
        match self.tap.get_ref().write(frame) {
            Ok(_) => self.counters.tx += 1,
            Err(_) => self.counters.tx_drops += 1,
        }
    }
}

/// An extra route: destination and next hop.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Destination.
    pub dest: IpNet,
    /// Next hop.
    pub via: IpAddr,
}

impl Route {
    /// Install (or replace) the route, in the main table, out of the
    /// interface the kernel reaches the next hop through.
    pub fn install(&self, rtnl: &mut Rtnl) -> anyhow::Result<()> {
        Ok(rtnl.replace_route(self.dest, self.via, None)?)
    }

    /// Remove the route (gone already is fine: its device may have gone).
    pub fn remove(&self, rtnl: &mut Rtnl) {
        let _ = rtnl.delete_route(self.dest, self.via);
    }
}

/// The DHCP relay's socket on a VLAN: UDP bound to the edge's address
/// there, port 67 (the address need not exist yet: IP_FREEBIND).
pub fn relay_socket(addr: Ipv4Addr) -> anyhow::Result<Rc<AsyncFd<UdpSocket>>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_freebind_v4(true)?;
    s.set_nonblocking(true)?;
    let at = SocketAddrV4::new(addr, tunterm_core::wire::dhcp::SERVER_PORT);
    s.bind(&SocketAddr::V4(at).into())
        .with_context(|| format!("binding the DHCP relay socket to {at}"))?;
    let s: UdpSocket = s.into();
    // SAFETY: a UdpSocket owns its descriptor for its whole life and
    // `as_raw_fd` always returns that same descriptor.
    let s = unsafe { AsyncFd::register(s) }.map_err(std::io::Error::from)?;
    Ok(Rc::new(s))
}

/// What became readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readable {
    /// The host port of this VLAN.
    Tap(u16),
    /// The relay socket of this VLAN.
    Relay(u16),
}

/// Wait until one of the devices or sockets is readable (the first in
/// the order given); its readiness stays set until a read through
/// `AsyncFd::try_io` would block, so the caller may read a budget at a
/// time. Never resolves when there is nothing to wait for.
pub async fn readable(
    taps: &[(u16, Rc<AsyncFd<Tap>>)],
    relays: &[(u16, Rc<AsyncFd<UdpSocket>>)],
) -> Readable {
    std::future::poll_fn(|cx| {
        for (vid, t) in taps {
            // The readiness stays set: the reader clears it when a read
            // would block (it reads a budget at a time).
            if let Poll::Ready(r) = t.poll_read_ready(cx) {
                if let Ok(mut g) = r {
                    g.retain_ready();
                }
                return Poll::Ready(Readable::Tap(*vid));
            }
        }
        for (vid, s) in relays {
            if let Poll::Ready(r) = s.poll_read_ready(cx) {
                if let Ok(mut g) = r {
                    g.retain_ready();
                }
                return Poll::Ready(Readable::Relay(*vid));
            }
        }
        Poll::Pending
    })
    .await
}
