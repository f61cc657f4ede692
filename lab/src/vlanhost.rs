//! The lab's upstream "VLAN host": an 802.1Q end station built without the
//! kernel's 8021q module, standing in for a VLAN-aware upstream switch plus a
//! router with one address per VLAN.
//!
//! It owns the trunk interface through a [`PacketSocket`] and makes a TAP
//! `vN` per VLAN in the current namespace, with the VLAN's address, so the
//! namespace's own stack (ARP, ping, dnsmasq, …) talks on each VLAN:
//!
//! ```text
//!  trunk --tag N--> strip --> TAP vN        TAP vN --> push tag N --> trunk
//!  trunk --untagged / VID 0--> native TAP   native TAP --untagged--> trunk
//! ```
//!
//! Deliberately small: a poll(2) loop, one frame at a time, no learning,
//! frames for VLANs it does not serve are dropped. Run it as
//! `tunterm-lab vlan-host --trunk IF --vlan 10=192.168.10.1/24 …`; it prints
//! [`READY`] once the TAPs are up.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, bail};
use ipnet::IpNet;

use tunterm::io::afpacket::{PacketSocket, RECV_BUF_LEN};
use tunterm::io::tap::Tap;

/// Creates TAP `name`, waiting up to 5 s while the kernel still has one of
/// that name attached (EBUSY): a vlan-host started in the namespace of one
/// just killed can find its TAPs not yet gone.
fn create_tap(name: &str) -> io::Result<Tap> {
    let mut made = Tap::create(name);
    crate::wait_until(std::time::Duration::from_secs(5), || {
        if !matches!(&made, Err(e) if e.kind() == io::ErrorKind::ResourceBusy) {
            return true;
        }
        made = Tap::create(name);
        false
    });
    made
}

/// The line the vlan-host prints on stdout once it forwards frames.
pub const READY: &str = "vlan-host ready";

const TPID_8021Q: u16 = 0x8100;
const ETH_ADDRS_LEN: usize = 12;
const VLAN_TAG_LEN: usize = 4;
/// Frames handled per descriptor per poll round, so one busy port cannot
/// starve the others.
const BURST: usize = 64;
/// Forwarding errors reported on stderr before the host goes quiet.
const MAX_REPORTED_ERRORS: u32 = 20;

/// One VLAN served by the host: `VID=ADDRESS/PREFIX` on the command line,
/// e.g. `10=192.168.10.1/24`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanAddr {
    /// The VLAN id, 1 to 4094; also names the TAP (`v10`).
    pub vid: u16,
    /// The host's address and prefix on that VLAN.
    pub addr: IpNet,
}

impl FromStr for VlanAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (vid, addr) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected VID=ADDRESS/PREFIX, e.g. 10=192.168.10.1/24")
        })?;
        let vid: u16 = vid
            .parse()
            .map_err(|_| format!("{s:?}: VLAN id {vid:?} is not a number"))?;
        if !(1..=4094).contains(&vid) {
            return Err(format!("{s:?}: VLAN id {vid} is outside 1..=4094"));
        }
        let addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: address {addr:?}: {e}"))?;
        Ok(VlanAddr { vid, addr })
    }
}

impl fmt::Display for VlanAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.vid, self.addr)
    }
}

/// A TAP serving one VLAN.
struct Port {
    tap: Tap,
    /// The tag pushed on frames read from the TAP; `None` for the native
    /// port (sent untagged).
    tag: Option<u16>,
}

/// The running host: the trunk socket and one TAP per VLAN.
pub struct VlanHost {
    trunk: PacketSocket,
    ports: Vec<Port>,
    /// Index in `ports` per VID (4096 entries); the native port under VID 0.
    by_vid: Vec<Option<usize>>,
    errors: u32,
}

impl VlanHost {
    /// Opens `trunk`, creates a TAP `vN` per VLAN (and one for `native`,
    /// which carries the trunk's untagged frames), gives each its address and
    /// sets it up, all in the current network namespace.
    ///
    /// The trunk itself gets ARP off and IPv6 disabled: it is a switch port,
    /// and the kernel must not answer ARP for the TAPs' addresses on it.
    pub fn open(
        trunk: &str,
        vlans: &[VlanAddr],
        native: Option<&VlanAddr>,
    ) -> anyhow::Result<Self> {
        if vlans.is_empty() && native.is_none() {
            bail!("vlan-host: nothing to serve: give --vlan and/or --native");
        }
        let trunk_sock = PacketSocket::bind(trunk)?;
        ip(&["link", "set", "dev", trunk, "arp", "off"])?;
        // Best effort: fails harmlessly where IPv6 is off altogether.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{trunk}/disable_ipv6"), "1");

        let mut host = VlanHost {
            trunk: trunk_sock,
            ports: Vec::new(),
            by_vid: vec![None; 4096],
            errors: 0,
        };
        let all = vlans
            .iter()
            .map(|v| (v, true))
            .chain(native.map(|v| (v, false)));
        for (vlan, tagged) in all {
            if host
                .ports
                .iter()
                .any(|p| p.tap.name() == format!("v{}", vlan.vid))
            {
                bail!("vlan-host: VLAN {} given twice", vlan.vid);
            }
            let tap = create_tap(&format!("v{}", vlan.vid))?;
            ip(&["addr", "add", &vlan.addr.to_string(), "dev", tap.name()])?;
            ip(&["link", "set", "dev", tap.name(), "up"])?;
            let index = host.ports.len();
            if tagged {
                host.by_vid[usize::from(vlan.vid)] = Some(index);
                host.ports.push(Port {
                    tap,
                    tag: Some(vlan.vid),
                });
            } else {
                // Untagged and priority-tagged (VID 0) frames; tagged frames
                // with the native VID too, as a switch port would accept them.
                host.by_vid[0] = Some(index);
                host.by_vid[usize::from(vlan.vid)].get_or_insert(index);
                host.ports.push(Port { tap, tag: None });
            }
        }
        Ok(host)
    }

    /// A one-line description: trunk and VLANs.
    pub fn describe(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| match p.tag {
                Some(vid) => format!("{} tagged {vid}", p.tap.name()),
                None => format!("{} untagged", p.tap.name()),
            })
            .collect();
        format!("trunk {}: {}", self.trunk.ifname(), ports.join(", "))
    }

    /// Relays frames between the trunk and the TAPs until an unrecoverable
    /// error (stop it with a signal).
    pub fn run(&mut self) -> anyhow::Result<Infallible> {
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.trunk.as_raw_fd())
            .chain(self.ports.iter().map(|p| p.tap.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            // SAFETY: `fds` is a live, correctly sized array of pollfd for
            // the whole call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll");
            }
            if fds[0].revents != 0 {
                self.relay_trunk(&mut buf)?;
            }
            for i in 0..self.ports.len() {
                if fds[i + 1].revents != 0 {
                    self.relay_tap(i, &mut buf)?;
                }
            }
        }
    }

    /// Trunk → TAP: pick the port by VID, strip the tag in place.
    fn relay_trunk(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        for _ in 0..BURST {
            let n = match self.trunk.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // The trunk went down for a moment; frames resume when it is up.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => return Ok(()),
                Err(e) => return Err(e).context("reading the trunk"),
            };
            if n < ETH_ADDRS_LEN + 2 {
                continue;
            }
            let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
            let (vid, frame) = if ethertype == TPID_8021Q && n >= ETH_ADDRS_LEN + VLAN_TAG_LEN + 2 {
                let vid = u16::from_be_bytes([buf[14], buf[15]]) & 0x0fff;
                buf.copy_within(0..ETH_ADDRS_LEN, VLAN_TAG_LEN);
                (vid, &buf[VLAN_TAG_LEN..n])
            } else {
                (0, &buf[..n])
            };
            let Some(index) = self.by_vid[usize::from(vid)] else {
                continue;
            };
            if let Err(e) = self.ports[index].tap.write(frame) {
                let what = format!("writing to {}", self.ports[index].tap.name());
                self.report(&what, &e);
            }
        }
        Ok(())
    }

    /// TAP → trunk: push the port's tag (unless native) and send.
    fn relay_tap(&mut self, index: usize, buf: &mut [u8]) -> anyhow::Result<()> {
        for _ in 0..BURST {
            let port = &self.ports[index];
            // Read past a tag-sized gap so the tag goes in without a copy of
            // the payload.
            let n = match port.tap.read(&mut buf[VLAN_TAG_LEN..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("reading {}", port.tap.name())),
            };
            if n < ETH_ADDRS_LEN + 2 {
                continue;
            }
            let frame = match port.tag {
                Some(vid) => {
                    buf.copy_within(VLAN_TAG_LEN..VLAN_TAG_LEN + ETH_ADDRS_LEN, 0);
                    buf[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
                    buf[14..16].copy_from_slice(&vid.to_be_bytes());
                    &buf[..n + VLAN_TAG_LEN]
                }
                None => &buf[VLAN_TAG_LEN..VLAN_TAG_LEN + n],
            };
            if let Err(e) = self.trunk.send(frame) {
                let what = format!("sending on {}", self.trunk.ifname());
                self.report(&what, &e);
            }
        }
        Ok(())
    }

    /// Reports a dropped frame on stderr, up to a limit.
    fn report(&mut self, what: &str, err: &io::Error) {
        self.errors += 1;
        if self.errors <= MAX_REPORTED_ERRORS {
            eprintln!("vlan-host: frame dropped {what}: {err}");
            if self.errors == MAX_REPORTED_ERRORS {
                eprintln!("vlan-host: further drops not reported");
            }
        }
    }
}

/// Runs `ip ARGS` in the current namespace.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vlan_addr() {
        let v: VlanAddr = "10=192.168.10.1/24".parse().unwrap();
        assert_eq!(v.vid, 10);
        assert_eq!(v.addr.to_string(), "192.168.10.1/24");
        assert_eq!(v.to_string(), "10=192.168.10.1/24");
        assert!("10".parse::<VlanAddr>().is_err());
        assert!("0=10.0.0.1/24".parse::<VlanAddr>().is_err());
        assert!("4095=10.0.0.1/24".parse::<VlanAddr>().is_err());
        assert!("10=10.0.0.1".parse::<VlanAddr>().is_err());
    }
}
