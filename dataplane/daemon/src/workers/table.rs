//! What the forwarding workers forward with: a read-only snapshot of the
//! switch's known-unicast state (L2TPv3/UDP sessions, the trunk's VLANs,
//! the FDB), built by the control thread and swapped in whole, and the
//! two decisions a worker makes with it — trunk frame → tunnel packet,
//! tunnel packet → trunk frame. No I/O here: the same content the daemon
//! gives the XDP maps, and the same rule: forward only between MACs the
//! switch already knows, hand everything else (unchanged) to the control
//! thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashMap;
use tunterm_core::forward::{Carrier, TunnelMtus, l2tp_overhead};
use tunterm_core::proto::bridge::{PortConfig, PortId, Switch, TRUNK};
use tunterm_core::proto::l2tp::{Endpoint, SessionState};
use tunterm_core::wire::ether::{self, FrameView, MacAddr};
use tunterm_core::wire::l2tp::{self as l2tp_wire, Packet, Transport};

/// One L2TPv3/UDP session a worker forwards for.
#[derive(Debug)]
struct Session {
    /// The AP: data must come from it, and goes to it.
    peer: SocketAddr,
    /// The cookie the AP must send.
    cookie_rx: Vec<u8>,
    /// Data carries the default L2-Specific Sublayer.
    sublayer: bool,
    /// The port's VLANs.
    port: PortConfig,
    /// The data header of what we send (session id, cookie, sublayer
    /// without sequence number).
    hdr: Vec<u8>,
    /// The tunnel's MTU and the bytes around an inner frame (outer IP, UDP,
    /// data header).
    mtu: u16,
    overhead: usize,
}

/// The snapshot. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// A capture runs: the workers forward nothing (the capture sees what
    /// the control thread forwards).
    pub capture: bool,
    trunk: Option<PortConfig>,
    sessions: FxHashMap<u32, Session>,
    /// (VLAN, MAC) → index into `entries` and `seen`.
    fdb: FxHashMap<(u16, [u8; 6]), u32>,
    entries: Vec<(u16, MacAddr, PortId)>,
    /// Set by a worker that forwarded a frame from the entry's MAC; taken
    /// by the control thread, which refreshes the switch's entry (so what
    /// only the workers see does not age out).
    seen: Vec<AtomicBool>,
}

/// Why a worker hands a frame to the control thread (for the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Punt {
    /// Not L2TPv3 data of a session in the table, or from elsewhere, or a
    /// bad cookie or sublayer, or sequenced: the endpoint's to judge.
    Tunnel,
    /// Not Ethernet, or a VLAN the port does not carry, or a bad source.
    Frame,
    /// Broadcast or multicast destination.
    Bum,
    /// The source is not learned on the ingress port (new, or moved).
    Source,
    /// The destination is not known, or not behind a port the workers
    /// forward to (the trunk from a tunnel, a table session from the trunk).
    Destination,
    /// DHCP, a TCP SYN (MSS clamp), ARP, ICMPv6, IPv6 extension headers:
    /// the control thread's pipeline looks into these.
    Inspect,
    /// Bigger than the tunnel's MTU (ICMP, fragmentation).
    TooBig,
    /// A capture runs.
    Capture,
}

impl Table {
    /// The snapshot of what the control thread holds now: every
    /// established L2TPv3/UDP session without sequencing, the trunk's
    /// VLANs, and the FDB entries on the trunk and on those sessions.
    pub(crate) fn build(
        endpoint: &Endpoint,
        switch: &Switch,
        mtus: &TunnelMtus,
        capture: bool,
    ) -> Table {
        let mut sessions = FxHashMap::default();
        for s in endpoint.sessions() {
            if s.state != SessionState::Established
                || s.transport != Transport::Udp
                || s.send_seq
                || s.drop_out_of_order
            {
                continue;
            }
            let (Some(port), Some(mtu)) = (
                switch.port_config(PortId(s.local_sid)),
                mtus.of(endpoint, PortId(s.local_sid)),
            ) else {
                continue;
            };
            let mut hdr = vec![0; s.header_len()];
            let n = l2tp_wire::emit_data_header(s.transport, s.remote_sid, &s.cookie_tx, &mut hdr);
            if s.sublayer {
                l2tp_wire::emit_sublayer(None, &mut hdr[n..]);
            }
            sessions.insert(
                s.local_sid,
                Session {
                    peer: s.peer,
                    cookie_rx: s.cookie_rx.as_slice().to_vec(),
                    sublayer: s.sublayer,
                    port: port.clone(),
                    hdr,
                    mtu,
                    overhead: l2tp_overhead(s),
                },
            );
        }
        let entries: Vec<(u16, MacAddr, PortId)> = switch
            .fdb()
            .filter(|(_, _, p)| *p == TRUNK || sessions.contains_key(&p.0))
            .collect();
        let fdb = entries
            .iter()
            .enumerate()
            .map(|(i, (v, m, _))| ((*v, m.0), i as u32))
            .collect();
        Table {
            capture,
            trunk: switch.port_config(TRUNK).cloned(),
            sessions,
            fdb,
            seen: entries.iter().map(|_| AtomicBool::new(false)).collect(),
            entries,
        }
    }

    /// Sessions in the table.
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// FDB entries in the table.
    pub(crate) fn fdb_len(&self) -> usize {
        self.entries.len()
    }

    /// The entries a worker marked seen since the last call, the marks
    /// cleared: (VLAN, MAC, port).
    pub(crate) fn take_seen(&self) -> impl Iterator<Item = (u16, MacAddr, PortId)> + '_ {
        self.entries
            .iter()
            .zip(&self.seen)
            .filter(|(_, s)| s.load(Ordering::Relaxed) && s.swap(false, Ordering::Relaxed))
            .map(|(e, _)| *e)
    }

    /// The frame's VLAN on `port` and its view, its source learned there
    /// (marked seen) and its destination known: where it goes.
    fn switch(
        &self,
        port: PortId,
        cfg: &PortConfig,
        frame: &[u8],
    ) -> Result<(FrameView, u16, PortId), Punt> {
        let view = ether::parse(frame).ok_or(Punt::Frame)?;
        let vlan = match view.tag.map(|t| t.vid()) {
            Some(0) | None => cfg.untagged_vlan.ok_or(Punt::Frame)?,
            Some(v) if cfg.vlans.contains(v) => v,
            Some(_) => return Err(Punt::Frame),
        };
        if view.src.is_multicast() || view.src == MacAddr::ZERO {
            return Err(Punt::Frame);
        }
        if view.dst.is_multicast() {
            return Err(Punt::Bum);
        }
        let src = *self.fdb.get(&(vlan, view.src.0)).ok_or(Punt::Source)? as usize;
        if self.entries[src].2 != port {
            return Err(Punt::Source);
        }
        let dst = *self.fdb.get(&(vlan, view.dst.0)).ok_or(Punt::Destination)? as usize;
        let to = self.entries[dst].2;
        if to == port {
            return Err(Punt::Destination);
        }
        inspect(frame, &view)?;
        if !self.seen[src].load(Ordering::Relaxed) {
            self.seen[src].store(true, Ordering::Relaxed);
        }
        Ok((view, vlan, to))
    }

    /// A frame off the trunk: its tunnel packet (data header, re-tagged
    /// frame) appended to `out`, and where it goes; or why not.
    pub(crate) fn forward_trunk(
        &self,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<SocketAddr, Punt> {
        if self.capture {
            return Err(Punt::Capture);
        }
        let trunk = self.trunk.as_ref().ok_or(Punt::Frame)?;
        let (view, vlan, to) = self.switch(TRUNK, trunk, frame)?;
        let s = self.sessions.get(&to.0).ok_or(Punt::Destination)?;
        let tag = (s.port.untagged_vlan != Some(vlan)).then_some(vlan);
        let inner = frame.len() - (view.inner_offset - 12) + if tag.is_some() { 4 } else { 0 };
        if s.overhead + inner > usize::from(s.mtu) {
            return Err(Punt::TooBig);
        }
        out.extend_from_slice(&s.hdr);
        ether::append_retagged(frame, &view, tag, out);
        Ok(s.peer)
    }

    /// A packet from a tunnel socket (L2TPv3/UDP) from `from`: its frame,
    /// re-tagged for the trunk, appended to `out`; or why not.
    pub(crate) fn forward_tunnel(
        &self,
        from: SocketAddr,
        pkt: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Punt> {
        if self.capture {
            return Err(Punt::Capture);
        }
        let Ok(Packet::Data(d)) = l2tp_wire::parse(Transport::Udp, pkt) else {
            return Err(Punt::Tunnel);
        };
        let s = self.sessions.get(&d.session_id).ok_or(Punt::Tunnel)?;
        if s.peer != from {
            return Err(Punt::Tunnel);
        }
        let mut frame = match d.rest.split_at_checked(s.cookie_rx.len()) {
            Some((c, rest)) if c == s.cookie_rx.as_slice() => rest,
            _ => return Err(Punt::Tunnel),
        };
        if s.sublayer {
            match l2tp_wire::parse_sublayer(frame) {
                Some(None) => frame = &frame[l2tp_wire::SUBLAYER_LEN..],
                _ => return Err(Punt::Tunnel),
            }
        }
        let (view, vlan, to) = self.switch(PortId(d.session_id), &s.port, frame)?;
        if to != TRUNK {
            return Err(Punt::Destination);
        }
        let trunk = self.trunk.as_ref().ok_or(Punt::Frame)?;
        let tag = (trunk.untagged_vlan != Some(vlan)).then_some(vlan);
        ether::append_retagged(frame, &view, tag, out);
        Ok(())
    }
}

/// Frames the pipeline looks into, which a worker leaves to it: DHCP (the
/// relay), TCP SYNs (the MSS clamp), ARP and ICMPv6 (the client table's
/// ARP/ND containment), IPv6 with extension headers (what follows is not
/// seen here).
fn inspect(frame: &[u8], view: &FrameView) -> Result<(), Punt> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    let at = view.inner_offset;
    let Some(ty) = frame.get(at..at + 2) else {
        return Err(Punt::Frame);
    };
    let ip = &frame[at + 2..];
    let (proto, l4) = match u16::from_be_bytes([ty[0], ty[1]]) {
        0x0800 => {
            let ihl = usize::from(ip.first().ok_or(Punt::Frame)? & 0x0f) * 4;
            let proto = *ip.get(9).ok_or(Punt::Frame)?;
            let frag_off = u16::from_be_bytes([
                ip.get(6).copied().unwrap_or(0),
                ip.get(7).copied().unwrap_or(0),
            ]) & 0x1fff;
            if frag_off != 0 {
                // A later fragment: no transport header to look at.
                return Ok(());
            }
            (proto, ip.get(ihl..).unwrap_or(&[]))
        }
        0x86dd => match ip.get(6).copied() {
            Some(p @ (TCP | UDP)) => (p, ip.get(40..).unwrap_or(&[])),
            _ => return Err(Punt::Inspect),
        },
        0x0806 => return Err(Punt::Inspect),
        _ => return Ok(()),
    };
    match proto {
        // Flags at 13: SYN.
        TCP if l4.get(13).is_none_or(|f| f & 0x02 != 0) => Err(Punt::Inspect),
        UDP => {
            let port = |i: usize| l4.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            let dhcp = |p: Option<u16>| matches!(p, None | Some(67 | 68 | 546 | 547));
            if dhcp(port(0)) || dhcp(port(2)) {
                Err(Punt::Inspect)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Carrier of what the workers read and send.
pub(crate) const CARRIER: Carrier = Carrier::L2tp(Transport::Udp);

#[cfg(test)]
mod tests {
    use super::*;
    use tunterm_control::VlanSet;
    use tunterm_core::wire::l2tp::Cookie;

    const SID: u32 = 7;
    const REMOTE_SID: u32 = 0x1234;
    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const COOKIE_RX: [u8; 4] = [0xc0, 0x0c, 0x1e, 0x01];

    fn peer() -> SocketAddr {
        "10.0.0.2:1701".parse().unwrap()
    }

    fn vlans(ids: &[u16]) -> VlanSet {
        let mut v = VlanSet::default();
        for &id in ids {
            v.insert(id).unwrap();
        }
        v
    }

    /// The trunk (tagged 10 and 20, untagged 1), session 7 (untagged 10,
    /// cookie, sublayer, MTU 1500), CLIENT behind the session and SERVER
    /// behind the trunk, both on VLAN 10.
    fn table() -> Table {
        let cookie_tx = Cookie::new(&[0xaa, 0xbb, 0xcc, 0xdd]).unwrap();
        let mut hdr = vec![0; 12 + l2tp_wire::SUBLAYER_LEN];
        let n = l2tp_wire::emit_data_header(Transport::Udp, REMOTE_SID, &cookie_tx, &mut hdr);
        l2tp_wire::emit_sublayer(None, &mut hdr[n..]);
        let mut sessions = FxHashMap::default();
        sessions.insert(
            SID,
            Session {
                peer: peer(),
                cookie_rx: COOKIE_RX.to_vec(),
                sublayer: true,
                port: PortConfig {
                    vlans: vlans(&[]),
                    untagged_vlan: Some(10),
                },
                hdr,
                mtu: 1500,
                overhead: 20 + 8 + 12 + 4,
            },
        );
        let entries = vec![
            (10, MacAddr(CLIENT), PortId(SID)),
            (10, MacAddr(SERVER), TRUNK),
        ];
        Table {
            capture: false,
            trunk: Some(PortConfig {
                vlans: vlans(&[10, 20]),
                untagged_vlan: Some(1),
            }),
            sessions,
            fdb: entries
                .iter()
                .enumerate()
                .map(|(i, (v, m, _))| ((*v, m.0), i as u32))
                .collect(),
            seen: entries.iter().map(|_| AtomicBool::new(false)).collect(),
            entries,
        }
    }

    /// An Ethernet frame dst, src, optional tag, ethertype, payload.
    fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = [dst, src].concat();
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An IPv4 header (20 bytes) for `proto`, then `l4`.
    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&[10, 1, 0, 1, 10, 1, 0, 2]);
        ip.extend_from_slice(l4);
        ip
    }

    /// UDP ports 5000 → 6000 and some bytes: plain data.
    fn udp_payload() -> Vec<u8> {
        ipv4(17, &[0x13, 0x88, 0x17, 0x70, 0, 12, 0, 0, 1, 2, 3, 4])
    }

    /// The L2TPv3/UDP data packet session 7 gets from the AP.
    fn data_packet(cookie: &[u8], sublayer: [u8; 4], inner: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 3, 0, 0];
        p.extend_from_slice(&SID.to_be_bytes());
        p.extend_from_slice(cookie);
        p.extend_from_slice(&sublayer);
        p.extend_from_slice(inner);
        p
    }

    fn seen(t: &Table) -> Vec<(u16, MacAddr, PortId)> {
        t.take_seen().collect()
    }

    #[test]
    fn a_known_unicast_frame_off_the_trunk_leaves_encapsulated_untagged_and_marks_its_source() {
        let t = table();
        let inner = udp_payload();
        let f = frame(CLIENT, SERVER, Some(10), 0x0800, &inner);
        let mut out = Vec::new();
        assert_eq!(t.forward_trunk(&f, &mut out), Ok(peer()));
        let mut want = vec![0, 3, 0, 0];
        want.extend_from_slice(&REMOTE_SID.to_be_bytes());
        want.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0]);
        // The session's untagged VLAN: the tag goes.
        want.extend_from_slice(&frame(CLIENT, SERVER, None, 0x0800, &inner));
        assert_eq!(out, want);
        assert_eq!(seen(&t), [(10, MacAddr(SERVER), TRUNK)]);
        assert!(seen(&t).is_empty(), "a mark is taken once");
    }

    #[test]
    fn a_known_unicast_packet_from_the_ap_leaves_on_the_trunk_tagged() {
        let t = table();
        let inner = udp_payload();
        let pkt = data_packet(
            &COOKIE_RX,
            [0; 4],
            &frame(SERVER, CLIENT, None, 0x0800, &inner),
        );
        let mut out = Vec::new();
        assert_eq!(t.forward_tunnel(peer(), &pkt, &mut out), Ok(()));
        assert_eq!(out, frame(SERVER, CLIENT, Some(10), 0x0800, &inner));
        assert_eq!(seen(&t), [(10, MacAddr(CLIENT), PortId(SID))]);
    }

    #[test]
    fn everything_else_goes_to_the_control_thread() {
        let t = table();
        let data = udp_payload();
        let up = |f: &[u8]| data_packet(&COOKIE_RX, [0; 4], f);
        let down = |f: &[u8]| {
            let mut out = Vec::new();
            t.forward_trunk(f, &mut out).err()
        };
        let from_ap = |from: SocketAddr, p: &[u8]| {
            let mut out = Vec::new();
            t.forward_tunnel(from, p, &mut out).err()
        };
        let bcast = [0xff; 6];
        let other = [0x02, 0, 0, 0, 0, 0x42];
        let syn = ipv4(
            6,
            &[0, 80, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0, 0],
        );
        let ack = ipv4(
            6,
            &[0, 80, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0, 0],
        );
        let dhcp = ipv4(17, &[0, 68, 0, 67, 0, 8, 0, 0]);
        // Off the trunk.
        assert_eq!(
            down(&frame(bcast, SERVER, Some(10), 0x0800, &data)),
            Some(Punt::Bum)
        );
        assert_eq!(
            down(&frame(CLIENT, other, Some(10), 0x0800, &data)),
            Some(Punt::Source)
        );
        assert_eq!(
            down(&frame(other, SERVER, Some(10), 0x0800, &data)),
            Some(Punt::Destination)
        );
        assert_eq!(
            down(&frame(CLIENT, SERVER, Some(30), 0x0800, &data)),
            Some(Punt::Frame)
        );
        // VLAN 20: not where either MAC was learned.
        assert_eq!(
            down(&frame(CLIENT, SERVER, Some(20), 0x0800, &data)),
            Some(Punt::Source)
        );
        assert_eq!(
            down(&frame(CLIENT, SERVER, Some(10), 0x0800, &syn)),
            Some(Punt::Inspect)
        );
        assert_eq!(down(&frame(CLIENT, SERVER, Some(10), 0x0800, &ack)), None);
        assert_eq!(
            down(&frame(CLIENT, SERVER, Some(10), 0x0800, &dhcp)),
            Some(Punt::Inspect)
        );
        assert_eq!(
            down(&frame(CLIENT, SERVER, Some(10), 0x0806, &[0; 28])),
            Some(Punt::Inspect)
        );
        let big = ipv4(17, &[0x13, 0x88, 0x17, 0x70].repeat(400));
        assert_eq!(
            down(&frame(CLIENT, SERVER, Some(10), 0x0800, &big)),
            Some(Punt::TooBig)
        );
        // From the AP.
        let f = frame(SERVER, CLIENT, None, 0x0800, &data);
        assert_eq!(from_ap(peer(), &up(&f)), None);
        assert_eq!(
            from_ap("10.0.0.3:1701".parse().unwrap(), &up(&f)),
            Some(Punt::Tunnel)
        );
        assert_eq!(
            from_ap(peer(), &data_packet(&[0; 4], [0; 4], &f)),
            Some(Punt::Tunnel)
        );
        // A sequence number (S bit): the endpoint tracks those.
        let seq = data_packet(&COOKIE_RX, [0x40, 0, 0, 1], &f);
        assert_eq!(from_ap(peer(), &seq), Some(Punt::Tunnel));
        let control = [0xc8, 0x03, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(from_ap(peer(), &control), Some(Punt::Tunnel));
        // Frames between APs, and to unknown MACs, are the switch's.
        let to_ap = frame(CLIENT, CLIENT, None, 0x0800, &data);
        assert_eq!(from_ap(peer(), &up(&to_ap)), Some(Punt::Destination));
        let dhcp_up = frame(SERVER, CLIENT, None, 0x0800, &dhcp);
        assert_eq!(from_ap(peer(), &up(&dhcp_up)), Some(Punt::Inspect));
        // Nothing forwarded above marked anything but the two that were.
        assert_eq!(seen(&t).len(), 2);
        // A capture: nothing is forwarded here.
        let t = Table {
            capture: true,
            ..table()
        };
        let mut out = Vec::new();
        let ok = frame(CLIENT, SERVER, Some(10), 0x0800, &data);
        assert_eq!(t.forward_trunk(&ok, &mut out), Err(Punt::Capture));
        assert_eq!(
            t.forward_tunnel(peer(), &up(&f), &mut out),
            Err(Punt::Capture)
        );
        assert!(out.is_empty());
    }
}
