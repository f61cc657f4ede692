//! What the forwarding workers forward with: a read-only snapshot of the
//! switch's known-unicast state (L2TPv3 sessions over UDP and IP, mGRE
//! peers, the trunk's VLANs, the FDB), built by the control thread and
//! swapped in whole, and the
//! two decisions a worker makes with it — trunk frame → tunnel packet,
//! tunnel packet → trunk frame. No I/O here: the same content the daemon
//! gives the XDP maps, and the same rule: forward only between MACs the
//! switch already knows, hand everything else (unchanged) to the control
//! thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tunterm_core::forward::{Carrier, TunnelMtus, gre_overhead, l2tp_overhead};
use tunterm_core::proto::bridge::{PortConfig, PortId, Switch, TRUNK};
use tunterm_core::proto::gre::{GreEndpoint, PeerKey};
use tunterm_core::proto::l2tp::{Endpoint, SessionState};
use tunterm_core::wire::ether::{self, FrameView, MacAddr};
use tunterm_core::wire::gre::{self as gre_wire, GreHeader};
use tunterm_core::wire::l2tp::{self as l2tp_wire, Packet, Transport};

/// One tunnel a worker forwards for: an L2TPv3 session (over UDP or IP)
/// or an mGRE peer, by its switch port.
#[derive(Debug)]
struct Session {
    /// Its socket kind.
    carrier: Carrier,
    /// The AP: data must come from it, and goes to it (port 0 over IP).
    peer: SocketAddr,
    /// L2TP: the cookie the AP must send (GRE: none).
    cookie_rx: Vec<u8>,
    /// L2TP: data carries the default L2-Specific Sublayer.
    sublayer: bool,
    /// The port's VLANs.
    port: PortConfig,
    /// The header of what we send: L2TP, the data header (session id,
    /// cookie, sublayer without sequence number); GRE, the GRE header
    /// (protocol 0x6558, the peer's key if it uses one, no sequence
    /// number). What the control thread's `encap_header` writes.
    hdr: Vec<u8>,
    /// The tunnel's MTU and the bytes around an inner frame (outer IP, UDP,
    /// data or GRE header).
    mtu: u16,
    overhead: usize,
}

/// Where a worker sends a tunnel packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dest {
    /// The socket kind.
    pub carrier: Carrier,
    /// The AP (port 0 over IP).
    pub peer: SocketAddr,
}

/// The snapshot. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// A capture runs: the workers forward nothing (the capture sees what
    /// the control thread forwards).
    pub capture: bool,
    trunk: Option<PortConfig>,
    /// By switch port: L2TP session ids, mGRE peer ports.
    sessions: FxHashMap<u32, Session>,
    /// mGRE peers: (address, key) → index into `gre_ports` and `gre_seen`.
    gre: FxHashMap<PeerKey, u32>,
    gre_ports: Vec<PortId>,
    /// Set by a worker that took data from the peer; taken by the control
    /// thread, which refreshes the peer (so it does not time out while
    /// only the workers hear it).
    gre_seen: Vec<AtomicBool>,
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
    /// bad cookie or sublayer, or sequenced; not GRE Ethernet data of a
    /// peer in the table, or sequenced: the endpoint's to judge.
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
    /// established L2TPv3 session (over UDP or IP) and every mGRE peer,
    /// without sequencing, the trunk's VLANs, and the FDB entries on the
    /// trunk and on those tunnels.
    pub(crate) fn build(
        now: Instant,
        endpoint: &Endpoint,
        gre: &GreEndpoint,
        switch: &Switch,
        mtus: &TunnelMtus,
        capture: bool,
    ) -> Table {
        let mut sessions = FxHashMap::default();
        for s in endpoint.sessions() {
            if s.state != SessionState::Established || s.send_seq || s.drop_out_of_order {
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
                    carrier: Carrier::L2tp(s.transport),
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
        let (mut gre_keys, mut gre_ports) = (FxHashMap::default(), Vec::new());
        for p in gre.peers(now) {
            if p.sequenced {
                continue;
            }
            let (Some(port), Some(mtu)) = (switch.port_config(p.port), mtus.of(endpoint, p.port))
            else {
                continue;
            };
            let key = PeerKey {
                addr: p.addr,
                key: p.key,
            };
            // What `GreEndpoint::encap_header` writes for an unsequenced
            // peer.
            let header = GreHeader::data(p.key, None);
            let mut hdr = vec![0; header.header_len()];
            gre_wire::emit(&header, &mut hdr);
            gre_keys.insert(key, gre_ports.len() as u32);
            gre_ports.push(p.port);
            sessions.insert(
                p.port.0,
                Session {
                    carrier: Carrier::Gre,
                    peer: SocketAddr::new(p.addr, 0),
                    cookie_rx: Vec::new(),
                    sublayer: false,
                    port: port.clone(),
                    hdr,
                    mtu,
                    overhead: gre_overhead(&key),
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
            gre: gre_keys,
            gre_seen: gre_ports.iter().map(|_| AtomicBool::new(false)).collect(),
            gre_ports,
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
        take_marks(&self.entries, &self.seen)
    }

    /// The mGRE peers (ports) a worker took data from since the last
    /// call, the marks cleared.
    pub(crate) fn take_gre_seen(&self) -> impl Iterator<Item = PortId> + '_ {
        take_marks(&self.gre_ports, &self.gre_seen)
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
        mark(&self.seen[src]);
        Ok((view, vlan, to))
    }

    /// A frame off the trunk: its tunnel packet (L2TP data header or GRE
    /// header, re-tagged frame) appended to `out`, and where it goes; or
    /// why not.
    pub(crate) fn forward_trunk(&self, frame: &[u8], out: &mut Vec<u8>) -> Result<Dest, Punt> {
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
        Ok(Dest {
            carrier: s.carrier,
            peer: s.peer,
        })
    }

    /// A packet from a tunnel socket of `carrier` from `from` (port 0 over
    /// IP): its frame, re-tagged for the trunk, appended to `out`; or why
    /// not.
    pub(crate) fn forward_tunnel(
        &self,
        carrier: Carrier,
        from: SocketAddr,
        pkt: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Punt> {
        if self.capture {
            return Err(Punt::Capture);
        }
        let (port, s, frame) = match carrier {
            Carrier::L2tp(t) => self.l2tp_data(t, from, pkt)?,
            Carrier::Gre => self.gre_data(from.ip(), pkt)?,
        };
        let (view, vlan, to) = self.switch(port, &s.port, frame)?;
        if to != TRUNK {
            return Err(Punt::Destination);
        }
        let trunk = self.trunk.as_ref().ok_or(Punt::Frame)?;
        let tag = (trunk.untagged_vlan != Some(vlan)).then_some(vlan);
        ether::append_retagged(frame, &view, tag, out);
        Ok(())
    }

    /// An L2TPv3 data packet over `t` from `from`: its session's port, the
    /// session and the frame, checked as the endpoint checks them.
    fn l2tp_data<'a>(
        &self,
        t: Transport,
        from: SocketAddr,
        pkt: &'a [u8],
    ) -> Result<(PortId, &Session, &'a [u8]), Punt> {
        let Ok(Packet::Data(d)) = l2tp_wire::parse(t, pkt) else {
            return Err(Punt::Tunnel);
        };
        let s = self.sessions.get(&d.session_id).ok_or(Punt::Tunnel)?;
        let source_ok = s.carrier == Carrier::L2tp(t)
            && match t {
                Transport::Udp => s.peer == from,
                Transport::Ip => s.peer.ip() == from.ip(),
            };
        if !source_ok {
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
        Ok((PortId(d.session_id), s, frame))
    }

    /// A GRE packet from `from`: Ethernet data without a sequence number
    /// from a peer in the table (its address and key), which is marked
    /// heard from; its port, its session and the frame.
    fn gre_data<'a>(
        &self,
        from: IpAddr,
        pkt: &'a [u8],
    ) -> Result<(PortId, &Session, &'a [u8]), Punt> {
        let p = gre_wire::parse(pkt).map_err(|_| Punt::Tunnel)?;
        if p.header.protocol != gre_wire::PROTO_TEB || p.header.seq.is_some() {
            return Err(Punt::Tunnel);
        }
        let key = PeerKey {
            addr: from.to_canonical(),
            key: p.header.key,
        };
        let i = *self.gre.get(&key).ok_or(Punt::Tunnel)? as usize;
        let port = self.gre_ports[i];
        let s = self.sessions.get(&port.0).ok_or(Punt::Tunnel)?;
        mark(&self.gre_seen[i]);
        Ok((port, s, p.payload))
    }
}

/// Set a "seen" mark (a load first: most are set already, and a store
/// would take the cache line from the other workers).
fn mark(m: &AtomicBool) {
    if !m.load(Ordering::Relaxed) {
        m.store(true, Ordering::Relaxed);
    }
}

/// The items whose mark is set, the marks cleared.
fn take_marks<'a, T: Copy>(
    items: &'a [T],
    marks: &'a [AtomicBool],
) -> impl Iterator<Item = T> + 'a {
    items
        .iter()
        .zip(marks)
        .filter(|(_, s)| s.load(Ordering::Relaxed) && s.swap(false, Ordering::Relaxed))
        .map(|(e, _)| *e)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tunterm_control::VlanSet;
    use tunterm_core::wire::l2tp::Cookie;

    const UDP: Carrier = Carrier::L2tp(Transport::Udp);
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
                carrier: Carrier::L2tp(Transport::Udp),
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
            ..Table::default()
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
        assert_eq!(
            t.forward_trunk(&f, &mut out),
            Ok(Dest {
                carrier: Carrier::L2tp(Transport::Udp),
                peer: peer()
            })
        );
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
        assert_eq!(t.forward_tunnel(UDP, peer(), &pkt, &mut out), Ok(()));
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
            t.forward_tunnel(UDP, from, p, &mut out).err()
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
            t.forward_tunnel(UDP, peer(), &up(&f), &mut out),
            Err(Punt::Capture)
        );
        assert!(out.is_empty());
    }

    /// An IPv4 UDP packet (5000 → 6000) with valid lengths and checksums,
    /// as etherparse builds it.
    fn valid_udp() -> Vec<u8> {
        let payload = [1, 2, 3, 4, 5, 6, 7, 8];
        let b = etherparse::PacketBuilder::ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64).udp(5000, 6000);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, &payload).unwrap();
        out
    }

    /// What the control thread holds with one tunnel to the AP at `ap`:
    /// an L2TPv3 session over `carrier` restored established (local id
    /// SID, cookies, sublayer, no sequencing), or an mGRE peer (keyed with
    /// `key`) heard from; the trunk (tagged 10 and 20, untagged 1) and the
    /// tunnel (untagged 10) on the switch, CLIENT learned behind the
    /// tunnel and SERVER on the trunk.
    struct Edge {
        now: Instant,
        endpoint: Endpoint,
        gre: GreEndpoint,
        switch: Switch,
        mtus: TunnelMtus,
        port: PortId,
        from: SocketAddr,
    }

    fn edge(carrier: Carrier, ap: IpAddr, key: Option<u32>) -> Edge {
        use tunterm_core::proto::gre::{GreConfig, GreIncoming};
        use tunterm_core::proto::l2tp::{
            ConnSnapshot, EndpointConfig, SessionSnapshot, SnapTransport,
        };
        let now = Instant::now();
        let mut endpoint = Endpoint::new(EndpointConfig::default(), 7u64);
        let mut gre = GreEndpoint::new(GreConfig::default());
        let (port, from) = match carrier {
            Carrier::L2tp(t) => {
                let from = SocketAddr::new(ap, if t == Transport::Udp { 1701 } else { 0 });
                let report = endpoint.restore(
                    now,
                    vec![ConnSnapshot {
                        local_ccid: 1,
                        peer_ccid: 2,
                        peer: from,
                        transport: match t {
                            Transport::Udp => SnapTransport::Udp,
                            Transport::Ip => SnapTransport::Ip,
                        },
                        initiator: false,
                        host_name: "ap".into(),
                        router_id: 1,
                        hello_interval_ms: 60_000,
                        hello_retries: 3,
                        next_ns: 0,
                        expected_ns: 0,
                        peer_window: 4,
                        uptime_secs: 0,
                        sessions: vec![SessionSnapshot {
                            local_sid: SID,
                            remote_sid: REMOTE_SID,
                            remote_end_id: "ap".into(),
                            pw_type: 5,
                            cookie_rx: COOKIE_RX.to_vec(),
                            cookie_tx: vec![0xaa, 0xbb, 0xcc, 0xdd],
                            sublayer: true,
                            send_seq: false,
                            drop_out_of_order: false,
                            tx_seq: 0,
                        }],
                    }],
                );
                assert_eq!(report.sessions, 1, "{report:?}");
                (PortId(SID), from)
            }
            Carrier::Gre => {
                let local = if ap.is_ipv4() {
                    "10.0.0.1".parse().unwrap()
                } else {
                    "fd00::1".parse().unwrap()
                };
                let hello = gre_packet(key, None, &frame(SERVER, CLIENT, None, 0x0800, &[0; 28]));
                let GreIncoming::Data { port, .. } = gre.handle_packet(now, ap, local, &hello)
                else {
                    panic!("the peer is admitted")
                };
                (port, SocketAddr::new(ap, 0))
            }
        };
        let mut switch = Switch::new(std::time::Duration::from_secs(300));
        switch.add_port(
            TRUNK,
            PortConfig {
                vlans: vlans(&[10, 20]),
                untagged_vlan: Some(1),
            },
        );
        switch.add_port(
            port,
            PortConfig {
                vlans: vlans(&[10]),
                untagged_vlan: Some(10),
            },
        );
        assert!(switch.restore_entry(10, &MacAddr(CLIENT), port, now));
        assert!(switch.restore_entry(10, &MacAddr(SERVER), TRUNK, now));
        Edge {
            now,
            endpoint,
            gre,
            switch,
            mtus: TunnelMtus {
                link: 1500,
                profiles: Vec::new(),
            },
            port,
            from,
        }
    }

    impl Edge {
        fn table(&self) -> Table {
            Table::build(
                self.now,
                &self.endpoint,
                &self.gre,
                &self.switch,
                &self.mtus,
                false,
            )
        }
    }

    /// A GRE packet: the header (Ethernet, `key`, `seq`) and `frame`.
    fn gre_packet(key: Option<u32>, seq: Option<u32>, frame: &[u8]) -> Vec<u8> {
        let h = GreHeader::data(key, seq);
        let mut p = vec![0; h.header_len()];
        gre_wire::emit(&h, &mut p);
        p.extend_from_slice(frame);
        p
    }

    /// The VLAN etherparse reads in `f`, and its UDP ports.
    fn etherparse_vlan_and_ports(f: &[u8]) -> (Option<u16>, (u16, u16)) {
        use etherparse::{LinkExtHeader, PacketHeaders, TransportHeader};
        let h = PacketHeaders::from_ethernet_slice(f).expect("etherparse reads it");
        let vid = h.link_exts.iter().find_map(|e| match e {
            LinkExtHeader::Vlan(v) => Some(v.vlan_id.value()),
            _ => None,
        });
        let Some(TransportHeader::Udp(u)) = h.transport else {
            panic!("UDP inside: {h:?}")
        };
        (vid, (u.source_port, u.destination_port))
    }

    /// Every encapsulation, IPv4 and IPv6 (mGRE keyed and not).
    fn every_encapsulation() -> Vec<(Carrier, IpAddr, Option<u32>)> {
        let mut all = Vec::new();
        for ap in ["10.0.0.2", "fd00::2"] {
            let ap: IpAddr = ap.parse().unwrap();
            all.push((Carrier::L2tp(Transport::Udp), ap, None));
            all.push((Carrier::L2tp(Transport::Ip), ap, None));
            all.push((Carrier::Gre, ap, None));
            all.push((Carrier::Gre, ap, Some(0x0102_0304)));
        }
        all
    }

    #[test]
    fn a_worker_encapsulates_exactly_as_the_control_thread_for_every_encapsulation() {
        use tunterm_core::forward::{EdgeTunnels, TunnelPorts};
        for (carrier, ap, key) in every_encapsulation() {
            let what = format!("{carrier:?} {ap} key {key:?}");
            let mut e = edge(carrier, ap, key);
            let t = e.table();
            let inner = valid_udp();
            let f = frame(CLIENT, SERVER, Some(10), 0x0800, &inner);
            let mut out = Vec::new();
            let dest = t.forward_trunk(&f, &mut out).expect(&what);
            // The control thread: its tunnel's header, then the frame
            // re-tagged for the port (untagged on VLAN 10).
            let mut hdr = Vec::new();
            let enc = EdgeTunnels {
                l2tp: &mut e.endpoint,
                gre: &mut e.gre,
                mtus: &e.mtus,
            }
            .encap(e.port, &mut hdr)
            .expect(&what);
            assert_eq!(
                dest,
                Dest {
                    carrier: enc.carrier,
                    peer: enc.peer
                },
                "{what}"
            );
            assert_eq!(dest.carrier, carrier, "{what}");
            let mut want = hdr.clone();
            want.extend_from_slice(&frame(CLIENT, SERVER, None, 0x0800, &inner));
            assert_eq!(out, want, "{what}: the same bytes");
            // What the AP reads: its session id and our cookie, or the
            // GRE header with its key; then the frame, untagged.
            match carrier {
                Carrier::L2tp(tr) => {
                    let Ok(Packet::Data(d)) = l2tp_wire::parse(tr, &out) else {
                        panic!("{what}: L2TP data")
                    };
                    assert_eq!(d.session_id, REMOTE_SID, "{what}");
                    assert_eq!(&d.rest[..4], &[0xaa, 0xbb, 0xcc, 0xdd], "{what}");
                    assert_eq!(l2tp_wire::parse_sublayer(&d.rest[4..]), Some(None));
                }
                Carrier::Gre => {
                    let g = gre_wire::parse(&out).expect(&what);
                    assert_eq!(g.header.protocol, gre_wire::PROTO_TEB, "{what}");
                    assert_eq!((g.header.key, g.header.seq), (key, None), "{what}");
                }
            }
            assert_eq!(
                etherparse_vlan_and_ports(&out[hdr.len()..]),
                (None, (5000, 6000)),
                "{what}"
            );
        }
    }

    #[test]
    fn a_worker_decapsulates_exactly_as_the_control_thread_for_every_encapsulation() {
        use tunterm_core::proto::gre::GreIncoming;
        use tunterm_core::proto::l2tp::Incoming;
        for (carrier, ap, key) in every_encapsulation() {
            let what = format!("{carrier:?} {ap} key {key:?}");
            let mut e = edge(carrier, ap, key);
            let t = e.table();
            let inner = valid_udp();
            let f = frame(SERVER, CLIENT, None, 0x0800, &inner);
            let pkt = match carrier {
                Carrier::L2tp(tr) => {
                    let mut p = vec![0; 4 + 4 + if tr == Transport::Udp { 4 } else { 0 }];
                    let cookie = tunterm_core::wire::l2tp::Cookie::new(&COOKIE_RX).unwrap();
                    let n = l2tp_wire::emit_data_header(tr, SID, &cookie, &mut p);
                    p.truncate(n);
                    p.extend_from_slice(&[0; 4]);
                    p.extend_from_slice(&f);
                    p
                }
                Carrier::Gre => gre_packet(key, None, &f),
            };
            let mut out = Vec::new();
            assert_eq!(
                t.forward_tunnel(carrier, e.from, &pkt, &mut out),
                Ok(()),
                "{what}"
            );
            // The control thread: the endpoint's payload, re-tagged for
            // the trunk (VLAN 10 is tagged there).
            let payload = match carrier {
                Carrier::L2tp(tr) => match e.endpoint.handle_datagram(e.now, tr, e.from, &pkt) {
                    Incoming::Data { payload, .. } => payload,
                    other => panic!("{what}: {other:?}"),
                },
                Carrier::Gre => match e.gre.handle_packet(e.now, ap, ap, &pkt) {
                    GreIncoming::Data { payload, .. } => payload,
                    other => panic!("{what}: {other:?}"),
                },
            };
            let mut want = Vec::new();
            let view = ether::parse(payload).unwrap();
            ether::append_retagged(payload, &view, Some(10), &mut want);
            assert_eq!(out, want, "{what}: the same bytes");
            assert_eq!(
                etherparse_vlan_and_ports(&out),
                (Some(10), (5000, 6000)),
                "{what}"
            );
            assert_eq!(
                t.take_gre_seen().collect::<Vec<_>>(),
                if carrier == Carrier::Gre {
                    vec![e.port]
                } else {
                    vec![]
                },
                "{what}: the peer is marked heard from"
            );
            // Another carrier's socket, another source, a sequenced GRE
            // packet, another key: the endpoint's.
            let other = match carrier {
                Carrier::L2tp(Transport::Udp) => Carrier::L2tp(Transport::Ip),
                _ => Carrier::L2tp(Transport::Udp),
            };
            let mut o = Vec::new();
            assert_eq!(
                t.forward_tunnel(other, e.from, &pkt, &mut o),
                Err(Punt::Tunnel),
                "{what}"
            );
            let elsewhere = SocketAddr::new(
                if ap.is_ipv4() {
                    "10.0.0.9".parse().unwrap()
                } else {
                    "fd00::9".parse().unwrap()
                },
                e.from.port(),
            );
            assert_eq!(
                t.forward_tunnel(carrier, elsewhere, &pkt, &mut o),
                Err(Punt::Tunnel),
                "{what}"
            );
            if carrier == Carrier::Gre {
                for p in [
                    gre_packet(key, Some(1), &f),
                    gre_packet(Some(key.unwrap_or(0) ^ 1), None, &f),
                ] {
                    assert_eq!(
                        t.forward_tunnel(carrier, e.from, &p, &mut o),
                        Err(Punt::Tunnel),
                        "{what}"
                    );
                }
            }
            assert!(o.is_empty());
        }
    }

    #[test]
    fn sequenced_gre_peers_stay_with_the_control_thread() {
        let ap: IpAddr = "10.0.0.2".parse().unwrap();
        let mut e = edge(Carrier::Gre, ap, None);
        assert_eq!(e.table().session_count(), 1);
        let f = frame(SERVER, CLIENT, None, 0x0800, &valid_udp());
        let _ = e
            .gre
            .handle_packet(e.now, ap, ap, &gre_packet(None, Some(0), &f));
        let t = e.table();
        assert_eq!(t.session_count(), 0, "sequence numbers: the endpoint's");
        let mut out = Vec::new();
        assert_eq!(
            t.forward_trunk(
                &frame(CLIENT, SERVER, Some(10), 0x0800, &valid_udp()),
                &mut out
            ),
            Err(Punt::Destination)
        );
    }
}
