//! Mirroring the userspace switch into the fast path's maps: the seed of
//! "the userspace switch installs fast-path entries". It will move next to
//! the daemon's XDP loader (`dataplane/src/io/xdp.rs`) once the daemon
//! depends on this crate; it lives with the tests until then because
//! `tunterm-ebpf` must not depend on `tunterm` (the daemon will depend on it).

use tunterm::proto::bridge::{PortConfig, PortId, Switch};
use tunterm::proto::l2tp::{DataSession, SessionState};
use tunterm::wire::l2tp::Transport;
use tunterm_ebpf::maps::{EntryError, SessionSpec, tt_fdb_entry, tt_fdb_key, tt_session};

/// Why a session gets no fast-path entry (the slow path keeps all of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFast {
    /// Data is dropped until the session is established.
    NotEstablished,
    /// L2TPv3 over IP (protocol 115) is not in the fast path yet.
    NotUdp,
    /// IPv6 peers are not in the fast path yet.
    NotIpv4,
    /// The session's values do not fit the map layout.
    Entry(EntryError),
}

/// The `sessions` map entry (key, value) of a session whose switch port is
/// configured `port`.
pub fn session_entry(
    s: &DataSession,
    port: &PortConfig,
    trunk_ifindex: u32,
) -> Result<(u32, tt_session), NotFast> {
    if s.state != SessionState::Established {
        return Err(NotFast::NotEstablished);
    }
    if s.transport != Transport::Udp {
        return Err(NotFast::NotUdp);
    }
    let std::net::SocketAddr::V4(peer) = s.peer else {
        return Err(NotFast::NotIpv4);
    };
    let spec = SessionSpec {
        peer,
        cookie: s.cookie_rx.as_slice(),
        sublayer: s.sublayer,
        // By the switch's convention a session's port id is its local id.
        port: s.local_sid,
        untagged_vlan: port.untagged_vlan,
        trunk_ifindex,
    };
    let value = tt_session::new(&spec, port.vlans.iter()).map_err(NotFast::Entry)?;
    Ok((s.local_sid, value))
}

/// The `fdb` map entries of everything the switch has learned, with the
/// egress tagging each (VLAN, port) gets.
pub fn fdb_entries(switch: &Switch) -> impl Iterator<Item = (tt_fdb_key, tt_fdb_entry)> + '_ {
    switch.fdb().map(|(vlan, mac, port)| {
        let untagged = switch.egress_tag(port, vlan).is_none();
        (
            tt_fdb_key::new(vlan, mac),
            tt_fdb_entry::new(port.0, untagged),
        )
    })
}

/// The port id of a session (the switch's convention).
pub fn port_of(s: &DataSession) -> PortId {
    PortId(s.local_sid)
}
