//! Host ports: the edge's own address on a VLAN, as a TAP device
//! (`tt-v<vid>`) in tunterm's network namespace. The kernel answers ARP,
//! ICMP and routes through it; tunterm moves its frames into and out of
//! the switch. Also the DHCP relay's UDP socket bound to that address,
//! and the `tunterm_extra_routes`.
//!
//! Addresses and routes are set with iproute2 (`ip`), whose errors are
//! passed on with the command that failed. A host port's device, and with
//! it its addresses and routes, goes when the [`HostPort`] is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::rc::Rc;
use std::task::Poll;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::unix::AsyncFd;

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
    [0x02, 0x74, a, b, c, d]
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

/// Run `ip` with `args`; its stderr in the error.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {} (is iproute2 installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn read_mac(ifname: &str) -> anyhow::Result<MacAddr> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .with_context(|| format!("reading the MAC of {ifname}"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        bail!("{ifname}: MAC {text:?} unreadable");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("{ifname}: MAC {text:?}"))?;
    }
    Ok(mac)
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
        let m = spec.mac;
        let mac_text = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        ip(&["link", "set", "dev", &name, "address", &mac_text])?;
        let mac = read_mac(&name)?;
        // Announce the address (gratuitous ARP) when the link comes up, so
        // that neighbours holding another MAC for it learn this one.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/arp_notify"), "1");
        if spec.v6.is_some() {
            // The address is ours by configuration: no duplicate detection
            // holding it back.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"), "0");
        }
        if let Some((a, len)) = spec.v4 {
            ip(&["addr", "add", &format!("{a}/{len}"), "dev", &name])?;
        }
        if let Some((a, len)) = spec.v6 {
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/{len}"),
                "dev",
                &name,
                "nodad",
            ])?;
        }
        ip(&["link", "set", "dev", &name, "up"])?;
        for (family, gw) in [
            ("-4", spec.gateway.map(IpAddr::V4)),
            ("-6", spec.gateway6.map(IpAddr::V6)),
        ] {
            if let Some(gw) = gw {
                let gw = gw.to_string();
                ip(&[
                    family, "route", "replace", "default", "via", &gw, "dev", &name,
                ])?;
            }
        }
        // SAFETY: a Tap owns its descriptor (a File) for its whole life and
        // `as_raw_fd` always returns that same descriptor.
        let tap = unsafe { AsyncFd::register(tap) }
            .map_err(std::io::Error::from)
            .with_context(|| format!("registering {name}"))?;
        Ok(HostPort {
            spec: spec.clone(),
            mac,
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
    /// Destination, CIDR as written in the configuration.
    pub dest: String,
    /// Next hop.
    pub via: IpAddr,
}

impl Route {
    /// Install (or replace) the route.
    pub fn install(&self) -> anyhow::Result<()> {
        let fam = if self.via.is_ipv6() { "-6" } else { "-4" };
        ip(&[
            fam,
            "route",
            "replace",
            &self.dest,
            "via",
            &self.via.to_string(),
        ])
    }

    /// Remove the route (gone already is fine: its device may have gone).
    pub fn remove(&self) {
        let fam = if self.via.is_ipv6() { "-6" } else { "-4" };
        let _ = ip(&[
            fam,
            "route",
            "del",
            &self.dest,
            "via",
            &self.via.to_string(),
        ]);
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

/// Wait until one of the devices or sockets is readable; its readiness is
/// cleared, so the caller must read it until it would block. Never
/// resolves when there is nothing to wait for.
pub async fn readable(
    taps: &[(u16, Rc<AsyncFd<Tap>>)],
    relays: &[(u16, Rc<AsyncFd<UdpSocket>>)],
) -> Readable {
    std::future::poll_fn(|cx| {
        for (vid, t) in taps {
            if let Poll::Ready(r) = t.poll_read_ready(cx) {
                if let Ok(mut g) = r {
                    g.clear_ready();
                }
                return Poll::Ready(Readable::Tap(*vid));
            }
        }
        for (vid, s) in relays {
            if let Poll::Ready(r) = s.poll_read_ready(cx) {
                if let Ok(mut g) = r {
                    g.clear_ready();
                }
                return Poll::Ready(Readable::Relay(*vid));
            }
        }
        Poll::Pending
    })
    .await
}
