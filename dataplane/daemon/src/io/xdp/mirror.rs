//! The userspace state as fast-path map entries: sessions, mGRE peers, the
//! trunk's VLANs, per-tunnel header templates and the FDB. Pure conversions
//! (no I/O): the daemon installs what they return, and the table tests in
//! `ebpf/tests/` run the programs on exactly these entries.
//!
//! The maps name a tunnel port by its port index (`tunterm_ebpf::ports`),
//! which the caller assigns: the entries of a tunnel carry it, its template
//! is keyed by it, and the FDB holds it ([`fdb_entries`] leaves out MACs
//! behind ports without one).

use std::net::IpAddr;

use tunterm_core::proto::bridge::{PortConfig, PortId, Switch};
use tunterm_core::proto::gre::PeerStats;
use tunterm_core::proto::l2tp::{DataSession, SessionState};
use tunterm_core::wire::l2tp::{L2TP_PORT, Transport};
use tunterm_ebpf::PortIndex;
use tunterm_ebpf::maps::{
    EntryError, GrePeerSpec, L2tpSessionSpec, L2tpTransport, Session, TemplateSpec, TunnelHeader,
    tt_fdb_entry, tt_fdb_key, tt_gre_key, tt_gre_peer, tt_template, tt_trunk,
};

/// Why a tunnel gets no fast-path entry (the slow path keeps all of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFast {
    /// Data is dropped until the session is established.
    NotEstablished,
    /// We put sequence numbers on what we send (L2TPv3 sublayer with
    /// sequencing, or a GRE peer that sequences): only the slow path counts.
    Sequenced,
    /// The local address is of the other family than the peer's.
    Family,
    /// The session's values do not fit the map layout (or, for a template,
    /// L2TPv3/UDP over IPv6, whose UDP checksum the program does not make).
    Entry(EntryError),
}

fn transport(t: Transport) -> L2tpTransport {
    match t {
        Transport::Udp => L2tpTransport::Udp,
        Transport::Ip => L2tpTransport::Ip,
    }
}

/// The `sessions` map entry (key, value) of a session whose switch port is
/// configured `port` and holds port index `idx`, toward the trunk
/// `trunk`.
pub fn session_entry(
    s: &DataSession,
    port: &PortConfig,
    idx: u16,
    trunk: &TrunkLink,
) -> Result<(u32, Session), NotFast> {
    if s.state != SessionState::Established {
        return Err(NotFast::NotEstablished);
    }
    let spec = L2tpSessionSpec {
        peer: s.peer,
        transport: transport(s.transport),
        cookie: s.cookie_rx.as_slice(),
        sublayer: s.sublayer,
        // By the switch's convention a session's port id is its local id.
        port: s.local_sid,
        port_idx: idx,
        untagged_vlan: port.untagged_vlan,
        trunk_ifindex: trunk.ifindex,
        trunk_untagged_vlan: trunk.untagged_vlan,
    };
    let value = Session::for_l2tp(&spec, port.vlans.iter()).map_err(NotFast::Entry)?;
    Ok((s.local_sid, value))
}

/// The cookie and sublayer bytes
/// ([`l2tp_extra`](tunterm_ebpf::maps::tt_session::l2tp_extra)) most of
/// `sessions` carry in their data, the smallest on a tie; `None` for no
/// session. `xdp_ap_rx` looks for the inner frame there before it has a
/// packet's session (`FastPath::expect_l2tp_extra`).
pub fn most_common_l2tp_extra<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> Option<u8> {
    // 0, 4, 8 or 12 bytes.
    let mut n = [0usize; 4];
    for s in sessions {
        n[usize::from(s.entry.l2tp_extra() / 4).min(3)] += 1;
    }
    let (i, most) = n.iter().enumerate().rev().max_by_key(|&(_, c)| *c)?;
    (*most > 0).then_some(i as u8 * 4)
}

/// The `gre_peers` map entry of a live mGRE peer whose switch port is
/// configured `port` and holds port index `idx`, toward the trunk `trunk`.
/// A sequenced peer gets one too (flagged, so its data goes slow and the
/// slow path sees it stop sequencing).
pub fn gre_peer_entry(
    p: &PeerStats,
    port: &PortConfig,
    idx: u16,
    trunk: &TrunkLink,
) -> Result<(tt_gre_key, tt_gre_peer), NotFast> {
    let spec = GrePeerSpec {
        port: p.port.0,
        port_idx: idx,
        untagged_vlan: port.untagged_vlan,
        sequenced: p.sequenced,
        trunk_ifindex: trunk.ifindex,
        trunk_untagged_vlan: trunk.untagged_vlan,
    };
    let value = tt_gre_peer::new(&spec, port.vlans.iter()).map_err(NotFast::Entry)?;
    Ok((tt_gre_key::new(p.addr, p.key), value))
}

/// What a tunnel's entry says of the trunk: where frames to it go, and
/// which VLAN leaves it untagged (its switch port's untagged VLAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrunkLink {
    /// The trunk interface.
    pub ifindex: u32,
    /// The trunk port's untagged VLAN.
    pub untagged_vlan: Option<u16>,
}

/// The trunk port's VLANs.
pub fn trunk_entry(trunk: &PortConfig) -> Result<tt_trunk, NotFast> {
    tt_trunk::new(trunk.untagged_vlan, trunk.vlans.iter()).map_err(NotFast::Entry)
}

/// How the edge reaches the APs: the AP-facing interface, our MAC and the
/// next hop's, our address of each family, and the outer IP header's
/// settings (what the kernel uses for the slow path's sockets).
#[derive(Clone, Copy, Debug)]
pub struct ApLink {
    /// The AP-facing interface.
    pub ifindex: u32,
    /// Its MAC.
    pub src_mac: [u8; 6],
    /// The MAC of the next hop toward the AP (the AP, or a router).
    pub next_hop_mac: [u8; 6],
    /// Our tunnel address, IPv4.
    pub local4: Option<std::net::Ipv4Addr>,
    /// Our tunnel address, IPv6.
    pub local6: Option<std::net::Ipv6Addr>,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Set DF on outer IPv4.
    pub dont_fragment: bool,
    /// Largest outer packet; bigger ones go to the slow path.
    pub mtu: u16,
}

impl ApLink {
    fn local_for(&self, peer: IpAddr) -> Result<IpAddr, NotFast> {
        match peer.to_canonical() {
            IpAddr::V4(_) => self.local4.map(IpAddr::V4),
            IpAddr::V6(_) => self.local6.map(IpAddr::V6),
        }
        .ok_or(NotFast::Family)
    }

    fn spec<'a>(
        &self,
        port: &PortConfig,
        peer: IpAddr,
        header: TunnelHeader<'a>,
    ) -> Result<TemplateSpec<'a>, NotFast> {
        Ok(TemplateSpec {
            untagged_vlan: port.untagged_vlan,
            ifindex: self.ifindex,
            src_mac: self.src_mac,
            dst_mac: self.next_hop_mac,
            local: self.local_for(peer)?,
            peer,
            ttl: self.ttl,
            dont_fragment: self.dont_fragment,
            mtu: self.mtu,
            header,
        })
    }
}

/// The `templates` entry of a session whose switch port is configured
/// `port` and holds port index `idx` (the key): what
/// `Endpoint::encap_header` writes (the AP's session id, the cookie it
/// assigned, a sublayer word without a sequence number) behind the outer
/// headers the kernel would build, and the VLAN that enters untagged.
pub fn session_template(
    s: &DataSession,
    port: &PortConfig,
    idx: u16,
    link: &ApLink,
) -> Result<(u32, tt_template), NotFast> {
    if s.state != SessionState::Established {
        return Err(NotFast::NotEstablished);
    }
    if s.sublayer && s.send_seq {
        return Err(NotFast::Sequenced);
    }
    let cookie = s.cookie_tx.as_slice();
    let header = match s.transport {
        Transport::Udp => TunnelHeader::L2tpUdp {
            local_port: L2TP_PORT,
            peer_port: s.peer.port(),
            session_id: s.remote_sid,
            cookie,
            sublayer: s.sublayer,
        },
        Transport::Ip => TunnelHeader::L2tpIp {
            session_id: s.remote_sid,
            cookie,
            sublayer: s.sublayer,
        },
    };
    let t = tt_template::new(&link.spec(port, s.peer.ip(), header)?).map_err(NotFast::Entry)?;
    Ok((u32::from(idx), t))
}

/// The `templates` entry of an mGRE peer whose switch port is configured
/// `port` and holds port index `idx` (the key): `GreEndpoint::encap_header`'s
/// header (its key, no sequence number).
pub fn gre_template(
    p: &PeerStats,
    port: &PortConfig,
    idx: u16,
    link: &ApLink,
) -> Result<(u32, tt_template), NotFast> {
    if p.sequenced {
        return Err(NotFast::Sequenced);
    }
    let header = TunnelHeader::Gre { key: p.key };
    let t = tt_template::new(&link.spec(port, p.addr, header)?).map_err(NotFast::Entry)?;
    Ok((u32::from(idx), t))
}

/// The `fdb` map entries of everything the switch has learned behind the
/// trunk or a port holding an index in `ports`. A MAC behind a tunnel
/// outside the fast path has none: frames to it pass to the slow path as
/// to an unknown destination. (Egress tagging is the destination port's:
/// the trunk's entry and the templates carry its untagged VLAN.) A group
/// MAC has none either (the switch learns none; XDP passes frames to and
/// from one before any lookup, and the table has no room for its bit).
pub fn fdb_entries<'a>(
    switch: &'a Switch,
    ports: &'a PortIndex,
) -> impl Iterator<Item = (tt_fdb_key, tt_fdb_entry)> + 'a {
    switch.fdb().filter_map(|(vlan, mac, port)| {
        if mac.is_multicast() {
            return None;
        }
        let idx = ports.get(port.0)?;
        Some((tt_fdb_key::new(vlan, mac.0), tt_fdb_entry::new(idx)))
    })
}

/// The port id of a session (the switch's convention).
pub fn port_of(s: &DataSession) -> PortId {
    PortId(s.local_sid)
}

#[cfg(test)]
mod tests {
    use tunterm_core::proto::gre::GRE_PORT_BASE;
    use tunterm_core::proto::l2tp::{SESSION_SLOTS, session_slot};
    use tunterm_ebpf::maps::{TT_GRE_PORT_BASE, TT_MAX_SESSIONS};
    use tunterm_ebpf::tables::slot_of;

    #[test]
    fn the_most_common_cookie_and_sublayer_length() {
        use super::most_common_l2tp_extra;
        use std::net::SocketAddrV4;
        use tunterm_ebpf::maps::{Session, SessionSpec};
        let session = |cookie: &[u8], sublayer: bool| {
            Session::new(
                &SessionSpec {
                    peer: SocketAddrV4::new([192, 0, 2, 1].into(), 1701),
                    cookie,
                    sublayer,
                    port: 7,
                    port_idx: 1,
                    untagged_vlan: Some(10),
                    trunk_ifindex: 3,
                    trunk_untagged_vlan: None,
                },
                [],
            )
            .unwrap()
        };
        let c4 = session(&[1, 2, 3, 4], false);
        let c8 = session(&[1; 8], false);
        let c8s = session(&[1; 8], true);
        let none = session(&[], false);
        assert_eq!(most_common_l2tp_extra([]), None);
        assert_eq!(most_common_l2tp_extra([&c4]), Some(4));
        assert_eq!(most_common_l2tp_extra([&c8s, &c4, &c8s]), Some(12));
        assert_eq!(most_common_l2tp_extra([&c8, &none, &c4, &c8]), Some(8));
        // A tie: the smallest.
        assert_eq!(most_common_l2tp_extra([&c8, &none]), Some(0));
    }

    #[test]
    fn the_switch_and_the_maps_agree_on_slots_and_port_ranges() {
        assert_eq!(SESSION_SLOTS, TT_MAX_SESSIONS);
        assert_eq!(GRE_PORT_BASE, TT_GRE_PORT_BASE);
        for sid in [1, 0xffff, 0x1_0000, 0x1234_5678, 0xefff_ffff] {
            assert_eq!(session_slot(sid), slot_of(sid));
        }
    }
}
