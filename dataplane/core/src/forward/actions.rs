//! What one call of the pipeline asks the driver to do: [`Actions`], a list
//! of [`Out`]s whose bytes live in one buffer the caller keeps (cleared, not
//! freed, between batches: no allocation per packet once it has grown).

use std::net::SocketAddr;

use crate::proto::bridge::{DropReason, PortId};
use crate::wire::l2tp::Transport;

/// What a tunnel socket carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// L2TPv3 data messages over UDP or directly over IP (protocol 115).
    L2tp(Transport),
    /// GRE (protocol 47), transparent Ethernet bridging.
    Gre,
}

impl Carrier {
    /// Bytes of outer IP (+ UDP) header the kernel puts in front of what
    /// the tunnel socket is handed.
    pub fn outer_len(self, v6: bool) -> usize {
        let ip = if v6 { 40 } else { 20 };
        match self {
            Carrier::L2tp(Transport::Udp) => ip + 8,
            _ => ip,
        }
    }
}

/// Why the pipeline emitted a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A frame forwarded or flooded (re-tagged, its MSS clamped).
    Frame,
    /// A broadcast RARP announcing a MAC new (or moved) behind a tunnel.
    Announce,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big", back to the
    /// sender of a frame too big for its tunnel.
    IcmpTooBig,
    /// One fragment of an inner IPv4 packet split to fit its tunnel.
    Fragment,
    /// A frame handed in by [`Forwarder::deliver`](super::Forwarder::deliver)
    /// (a DHCP reply from the relay).
    Delivered,
}

/// Why the pipeline dropped a frame (or one copy of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The switch refused it (counted in the switch's counters).
    Switch(DropReason),
    /// The switch sent it to a tunnel port with no live session or peer
    /// behind it (a teardown raced the frame): `tunnel_tx_no_session`.
    NoTunnel,
    /// Too big for its tunnel and neither answerable with ICMP nor
    /// fragmentable: `too_big_dropped`.
    TooBig,
}

/// Where a span of [`Actions`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Trunk,
    Tunnel {
        port: PortId,
        carrier: Carrier,
        peer: SocketAddr,
        header_len: usize,
    },
    Host {
        port: PortId,
        vlan: u16,
    },
    Relayed {
        port: PortId,
        vlan: u16,
    },
    Drop {
        port: PortId,
        reason: Reason,
    },
}

#[derive(Clone, Copy, Debug)]
struct Action {
    dest: Dest,
    kind: Kind,
    start: usize,
    end: usize,
}

/// One thing to do, as [`Actions::iter`] hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out<'a> {
    /// Send `frame` on the upstream trunk.
    Trunk {
        /// Why.
        kind: Kind,
        /// The Ethernet frame, tagged as the trunk carries its VLAN.
        frame: &'a [u8],
    },
    /// Send `packet` into the tunnel behind `port`: hand it to the
    /// `carrier`'s socket of `peer`'s family, addressed to `peer` (port 0
    /// for the raw sockets). The kernel adds the outer IP (+ UDP) header.
    Tunnel {
        /// The switch port (L2TP session id or mGRE peer port).
        port: PortId,
        /// Which socket.
        carrier: Carrier,
        /// The AP.
        peer: SocketAddr,
        /// Why.
        kind: Kind,
        /// The L2TP data header (or GRE header) and the inner frame.
        packet: &'a [u8],
        /// Bytes of `packet` before the inner frame (the L2TP data header
        /// with cookie and sublayer, or the GRE header).
        header_len: usize,
    },
    /// Write `frame` to the edge's own host port of `vlan` (its TAP).
    HostPort {
        /// The host port's switch port.
        port: PortId,
        /// Its VLAN.
        vlan: u16,
        /// Why.
        kind: Kind,
        /// The frame, untagged (a host port carries its VLAN untagged).
        frame: &'a [u8],
    },
    /// The DHCP relay took a client's message from `port` on `vlan`: send
    /// what its `poll_transmit` has to the servers. Nothing else saw it.
    Relayed {
        /// The tunnel port it came from.
        port: PortId,
        /// Its VLAN.
        vlan: u16,
    },
    /// Dropped (the frame, or its copy for `port`).
    Drop {
        /// The ingress port for the switch's drops, the egress port for the
        /// others.
        port: PortId,
        /// Why.
        reason: Reason,
    },
}

/// The actions of one or more calls of the pipeline, in order. The caller
/// owns it, writes what it says, and clears it; its buffers keep their
/// capacity.
#[derive(Debug, Default)]
pub struct Actions {
    bytes: Vec<u8>,
    list: Vec<Action>,
    tunnel: usize,
    immediate: usize,
}

impl Actions {
    /// Empty, with room for `bytes` bytes of frames.
    pub fn with_capacity(bytes: usize) -> Self {
        Actions {
            bytes: Vec::with_capacity(bytes),
            list: Vec::with_capacity(64),
            tunnel: 0,
            immediate: 0,
        }
    }

    /// Forget every action, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.list.clear();
        self.tunnel = 0;
        self.immediate = 0;
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// No actions.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Number of [`Out::Tunnel`] actions (what a batched send will take).
    pub fn tunnel_count(&self) -> usize {
        self.tunnel
    }

    /// Number of [`Out::Trunk`], [`Out::HostPort`] and [`Out::Relayed`]
    /// actions: what a caller writes at once rather than queues for a
    /// batched send ([`Out::Tunnel`]) or only counts ([`Out::Drop`]). When
    /// a call leaves it unchanged, there is nothing to write now.
    pub fn immediate_count(&self) -> usize {
        self.immediate
    }

    /// Bytes held by all actions.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The `i`th action.
    pub fn get(&self, i: usize) -> Option<Out<'_>> {
        self.list.get(i).map(|a| self.out(a))
    }

    /// Every action, in order.
    pub fn iter(&self) -> impl Iterator<Item = Out<'_>> + '_ {
        self.iter_from(0)
    }

    /// The actions from the `mark`th on (a mark is [`len`](Self::len) taken
    /// before a call: what that call added).
    pub fn iter_from(&self, mark: usize) -> impl Iterator<Item = Out<'_>> + '_ {
        self.list
            .get(mark..)
            .unwrap_or(&[])
            .iter()
            .map(|a| self.out(a))
    }

    fn out(&self, a: &Action) -> Out<'_> {
        let bytes = &self.bytes[a.start..a.end];
        match a.dest {
            Dest::Trunk => Out::Trunk {
                kind: a.kind,
                frame: bytes,
            },
            Dest::Tunnel {
                port,
                carrier,
                peer,
                header_len,
            } => Out::Tunnel {
                port,
                carrier,
                peer,
                kind: a.kind,
                packet: bytes,
                header_len,
            },
            Dest::Host { port, vlan } => Out::HostPort {
                port,
                vlan,
                kind: a.kind,
                frame: bytes,
            },
            Dest::Relayed { port, vlan } => Out::Relayed { port, vlan },
            Dest::Drop { port, reason } => Out::Drop { port, reason },
        }
    }

    /// Where the next span starts (the caller appends bytes from here on,
    /// then pushes an action for them, or [`truncate`](Self::truncate)s).
    pub(super) fn mark(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    pub(super) fn truncate(&mut self, at: usize) {
        self.bytes.truncate(at);
    }

    fn push(&mut self, dest: Dest, kind: Kind, start: usize) {
        match dest {
            Dest::Tunnel { .. } => self.tunnel += 1,
            Dest::Drop { .. } => {}
            Dest::Trunk | Dest::Host { .. } | Dest::Relayed { .. } => self.immediate += 1,
        }
        let end = self.bytes.len();
        self.list.push(Action {
            dest,
            kind,
            start,
            end,
        });
    }

    /// The bytes from `start` to the end go to the trunk.
    pub(super) fn trunk(&mut self, kind: Kind, start: usize) {
        self.push(Dest::Trunk, kind, start);
    }

    /// The bytes from `start` to the end go into a tunnel; the first
    /// `header_len` of them are the encapsulation header.
    pub(super) fn tunnel(
        &mut self,
        port: PortId,
        (carrier, peer): (Carrier, SocketAddr),
        kind: Kind,
        start: usize,
        header_len: usize,
    ) {
        self.push(
            Dest::Tunnel {
                port,
                carrier,
                peer,
                header_len,
            },
            kind,
            start,
        );
    }

    /// The bytes from `start` to the end go to a host port.
    pub(super) fn host(&mut self, port: PortId, vlan: u16, kind: Kind, start: usize) {
        self.push(Dest::Host { port, vlan }, kind, start);
    }

    pub(super) fn relayed(&mut self, port: PortId, vlan: u16) {
        let at = self.bytes.len();
        self.push(Dest::Relayed { port, vlan }, Kind::Frame, at);
    }

    pub(super) fn drop(&mut self, port: PortId, reason: Reason) {
        let at = self.bytes.len();
        self.push(Dest::Drop { port, reason }, Kind::Frame, at);
    }
}
