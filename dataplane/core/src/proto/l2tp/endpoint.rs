//! All control connections and sessions of one L2TP socket: demultiplexing
//! by Control Connection ID and Session ID, the data-message checks, timers.

use std::collections::{BTreeSet, HashMap, VecDeque};

use ipnet::IpNet;
use rustc_hash::FxHashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::admission::{AdmissionConfig, RateLimiter, SourceLimiter};
use super::conn::{ConnState, ControlConn, Ctx, SessionState};
use super::reliable::RetransmitConfig;
use super::rng::{Rng, Seed};
use super::sessions::SessionTable;
use super::snapshot::{ConnSnapshot, RestoreReport, SEQ_JUMP, SessionSnapshot, SnapTransport};
use crate::wire::l2tp::{self, Avp, ControlMessage, Cookie, MessageType, Packet, Transport};

/// A tunnel profile sessions can bind to (one per mxtunnel).
#[derive(Clone, Debug)]
pub struct PwProfile {
    /// Remote End IDs that select this profile (the mxtunnel's id and name).
    pub names: Vec<String>,
    /// Hello interval for connections bound to this profile.
    pub hello_interval: Duration,
    /// Missed hellos before the peer is declared dead.
    pub hello_retries: u32,
    /// The encapsulation sessions must arrive over to bind to this profile
    /// (mxtunnel `protocol`); None: any.
    pub transport: Option<Transport>,
}

/// The Result Code message of a StopCCN for a connection this endpoint
/// does not have.
pub const STALE_MESSAGE: &str = "no such control connection here (restarted without its state?)";

/// Settings of an [`Endpoint`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Our Host Name AVP.
    pub host_name: String,
    /// Our Router ID AVP.
    pub router_id: u32,
    /// Receive window we advertise (and our reorder buffer size).
    pub rx_window: u16,
    /// Length of the cookies we assign: 0, 4 or 8 (default 8: RFC 3931
    /// §8.2's 64-bit random cookie against blind insertion of data; any
    /// other value gives 8).
    pub cookie_len: usize,
    /// Initiator: ask for the default L2-Specific Sublayer. (A responder
    /// uses it when the initiator asks.)
    pub l2_sublayer: bool,
    /// Require sequencing (Data Sequencing AVP = 2, with the sublayer). A
    /// responder also sequences every session whose initiator asks for it.
    pub sequencing: bool,
    /// Accept SCCRQs (responder role).
    pub accept_incoming: bool,
    /// Hello settings before a session binds a connection to a profile.
    pub hello_interval: Duration,
    /// Missed hellos before the peer is declared dead.
    pub hello_retries: u32,
    /// Retransmission of control messages.
    pub retransmit: RetransmitConfig,
    /// Tunnel profiles, matched by Remote End ID.
    pub profiles: Vec<PwProfile>,
    /// Source prefixes control and data messages may come from
    /// (`tunterm_ap_subnets`); anything else is dropped and counted before
    /// it is parsed further. Empty: any source.
    pub admit: Vec<IpNet>,
    /// Limits on new control connections (half-open cap, per-source SCCRQ
    /// rate).
    pub admission: AdmissionConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            host_name: "tunterm".into(),
            router_id: 1,
            rx_window: 16,
            cookie_len: 8,
            l2_sublayer: false,
            sequencing: false,
            accept_incoming: true,
            hello_interval: Duration::from_secs(60),
            hello_retries: 7,
            retransmit: RetransmitConfig::default(),
            profiles: Vec::new(),
            admit: Vec::new(),
            admission: AdmissionConfig::default(),
        }
    }
}

impl EndpointConfig {
    /// Whether `ip` is inside [`admit`](Self::admit) (or it is empty).
    /// IPv4-mapped IPv6 addresses count as IPv4.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.admit.is_empty() || self.admit.iter().any(|n| n.contains(&ip))
    }

    /// The profile a Remote End ID selects for a session arriving over
    /// `transport`. An empty id selects the only profile when there is
    /// exactly one.
    pub fn profile_for(&self, remote_end_id: &str, transport: Transport) -> Option<usize> {
        let fits = |p: &PwProfile| p.transport.is_none_or(|t| t == transport);
        if let Some(i) = self
            .profiles
            .iter()
            .position(|p| fits(p) && p.names.iter().any(|n| n == remote_end_id))
        {
            return Some(i);
        }
        (remote_end_id.is_empty() && self.profiles.len() == 1 && fits(&self.profiles[0]))
            .then_some(0)
    }
}

/// Why a tunnel or session went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent StopCCN.
    PeerStopCcn {
        /// Result code.
        result: u16,
        /// Error code.
        error: Option<u16>,
        /// Error message.
        message: Option<String>,
    },
    /// The peer sent CDN.
    PeerCdn {
        /// Result code.
        result: u16,
        /// Error code.
        error: Option<u16>,
        /// Error message.
        message: Option<String>,
    },
    /// Established, and what we sent (a hello when idle) went
    /// unacknowledged through hello_retries hello intervals: on a cut link,
    /// `max(hello_retries, 2) × hello_interval` after the last packet heard
    /// (see [`super::reliable::Keepalive`]).
    HelloTimeout,
    /// A control message went unacknowledged through every retransmission.
    RetransmitTimeout,
    /// Closed by us (operator, shutdown).
    Local,
    /// The peer broke the protocol.
    ProtocolError(String),
}

/// Something the driver should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A control connection reached established.
    TunnelUp {
        /// Our CCID.
        ccid: u32,
        /// The peer's address.
        peer: SocketAddr,
        /// The peer's Host Name.
        host_name: String,
    },
    /// A control connection is gone (its sessions' `SessionDown` came first).
    TunnelDown {
        /// Our CCID.
        ccid: u32,
        /// The peer's address.
        peer: SocketAddr,
        /// Whether it had been established.
        was_up: bool,
        /// Why.
        reason: CloseReason,
    },
    /// A session can carry data.
    SessionUp {
        /// Our CCID.
        ccid: u32,
        /// Our (local) session id.
        session_id: u32,
    },
    /// An established session is gone.
    SessionDown {
        /// Our CCID.
        ccid: u32,
        /// Our (local) session id.
        session_id: u32,
        /// Why.
        reason: CloseReason,
    },
    /// The peer refused or closed one of our sessions with a CDN.
    PeerCdn {
        /// Our CCID.
        ccid: u32,
        /// Our (local) session id.
        session_id: u32,
        /// Result code.
        result: u16,
        /// Error code.
        error: Option<u16>,
        /// Error message.
        message: Option<String>,
    },
}

/// A session as the data path sees it.
#[derive(Clone, Debug)]
pub struct DataSession {
    /// Our session id (data messages to us carry it).
    pub local_sid: u32,
    /// The peer's session id (data messages we send carry it).
    pub remote_sid: u32,
    /// Our CCID of the connection carrying it.
    pub ccid: u32,
    /// Where data goes and must come from.
    pub peer: SocketAddr,
    /// UDP or IP.
    pub transport: Transport,
    /// Cookie the peer must send (we assigned it).
    pub cookie_rx: Cookie,
    /// Cookie we send (the peer assigned it).
    pub cookie_tx: Cookie,
    /// Pseudowire type.
    pub pw_type: u16,
    /// Profile (mxtunnel) the session is bound to, if any.
    pub profile: Option<usize>,
    /// Remote End ID of the session.
    pub remote_end_id: String,
    /// State.
    pub state: SessionState,
    /// Data messages carry the default L2-Specific Sublayer (RFC 4719).
    pub sublayer: bool,
    /// We put sequence numbers on what we send (the peer asked for them).
    pub send_seq: bool,
    /// Sequencing was negotiated: out-of-order and duplicate data packets
    /// are dropped, not only counted.
    pub drop_out_of_order: bool,
    /// Next sequence number we send.
    pub tx_seq: u32,
    /// Next sequence number expected from the peer (None before the first).
    pub rx_seq: Option<u32>,
}

impl DataSession {
    /// Bytes of data header this session puts before each frame.
    pub fn header_len(&self) -> usize {
        l2tp::data_header_len(self.transport, self.cookie_tx.len())
            + if self.sublayer { l2tp::SUBLAYER_LEN } else { 0 }
    }
}

/// Why a data message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDrop {
    /// Not a well-formed L2TPv3 packet.
    Malformed,
    /// No session with that id.
    UnknownSession,
    /// The session is not established yet.
    NotEstablished,
    /// Sent from an address that is not the session's peer.
    BadSource,
    /// The cookie does not match.
    BadCookie,
    /// Too short for the negotiated sublayer.
    BadSublayer,
    /// Behind the expected sequence number on a sequenced session.
    OutOfOrder,
    /// The source is outside the admitted subnets (`tunterm_ap_subnets`).
    NotAdmitted,
}

/// What a received datagram was.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A data message for an established session, checked.
    Data {
        /// Our session id.
        session_id: u32,
        /// The inner Ethernet frame.
        payload: &'a [u8],
    },
    /// A control message (consumed).
    Control,
    /// Dropped and counted.
    Dropped(DataDrop),
}

/// A control packet to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// UDP or IP: which socket sends it.
    pub transport: Transport,
    /// Destination (port 0 over IP).
    pub dst: SocketAddr,
    /// The L2TP packet (UDP payload, or IP payload for protocol 115).
    pub payload: Vec<u8>,
}

/// What to ask for when opening a session (initiator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// Remote End ID: the mxtunnel name or id on the edge.
    pub remote_end_id: String,
    /// Pseudowire type ([`l2tp::pw::ETHERNET`] or `ETHERNET_VLAN`).
    pub pw_type: u16,
}

/// Counters of the endpoint (monotonic).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EndpointCounters {
    /// Control packets received (ZLBs included).
    pub rx_control: u64,
    /// Control packets that failed to parse.
    pub rx_control_malformed: u64,
    /// Control packets for a CCID we do not know.
    pub rx_control_unknown_ccid: u64,
    /// Of those, control messages answered with a StopCCN for the stale
    /// connection (header CCID 0, the Assigned CCID AVP naming the one the
    /// peer used): the peer holds a connection this endpoint has lost
    /// (restarted without its state), and tears it down now instead of
    /// after its dead-peer time.
    #[serde(default)]
    pub stale_stopccn_sent: u64,
    /// Of `rx_control_unknown_ccid`, messages that would have been
    /// answered so but the answers' rate limit was reached (or is 0).
    #[serde(default)]
    pub stale_stopccn_limited: u64,
    /// StopCCNs with header CCID 0 accepted for a connection named by
    /// their Assigned CCID AVP and the peer's address (a peer that lost
    /// the connection, answering us).
    #[serde(default)]
    pub rx_stale_stopccn: u64,
    /// Control packets from an address other than the connection's peer.
    pub rx_control_bad_source: u64,
    /// Control packets from a source outside the admitted subnets
    /// (dropped before parsing: no state, no reply).
    pub rx_control_not_admitted: u64,
    /// Data packets from a source outside the admitted subnets (dropped).
    pub rx_data_not_admitted: u64,
    /// Connections closed (StopCCN) because `tunterm_ap_subnets` changed
    /// and their peer's address is no longer inside.
    #[serde(default)]
    pub closed_not_admitted: u64,
    /// SCCRQs from admitted sources (new and retransmitted). Each ends in
    /// exactly one of `sccrq_accepted`, `sccrq_retransmits`,
    /// `sccrq_refused`, `sccrq_rate_limited` and `sccrq_half_open_full`.
    pub sccrq_received: u64,
    /// SCCRQs that opened a new control connection.
    pub sccrq_accepted: u64,
    /// SCCRQs of a connection that exists (retransmissions).
    pub sccrq_retransmits: u64,
    /// SCCRQs refused (not accepting, or missing Assigned CCID).
    pub sccrq_refused: u64,
    /// Of `sccrq_refused`: while not accepting (upstream monitoring failed).
    pub sccrq_not_accepting: u64,
    /// SCCRQs refused: their source is over its SCCRQ rate (no state, no
    /// reply).
    pub sccrq_rate_limited: u64,
    /// SCCRQs refused: as many connections as allowed are half-open (no
    /// state, no reply).
    pub sccrq_half_open_full: u64,
    /// Source addresses dropped from the SCCRQ rate table to make room for
    /// new ones.
    pub sccrq_sources_evicted: u64,
    /// Most connections half-open (not yet established) at once.
    pub half_open_peak: u64,
    /// Duplicate control messages (acknowledged again).
    pub control_duplicates: u64,
    /// Out-of-order control messages buffered.
    pub control_reordered: u64,
    /// Control messages beyond our receive window.
    pub control_out_of_window: u64,
    /// Unknown AVPs with the M bit.
    pub unknown_mandatory_avps: u64,
    /// Protocol errors (unexpected messages, missing AVPs).
    pub protocol_errors: u64,
    /// Sessions refused with a CDN.
    pub sessions_refused: u64,
    /// HELLOs sent.
    pub hellos_sent: u64,
    /// Data messages accepted.
    pub rx_data: u64,
    /// Data drops: malformed.
    pub rx_data_malformed: u64,
    /// Data drops: unknown session.
    pub rx_data_unknown_session: u64,
    /// Data drops: session not established.
    pub rx_data_not_established: u64,
    /// Data drops: wrong source address.
    pub rx_data_bad_source: u64,
    /// Data drops: wrong cookie.
    pub rx_data_bad_cookie: u64,
    /// Data messages too short for their negotiated sublayer (dropped).
    pub rx_data_bad_sublayer: u64,
    /// Data messages behind the expected sequence number (late or
    /// duplicate); dropped on sequenced sessions.
    pub rx_data_out_of_order: u64,
    /// Of those, exact repeats of the last sequence number.
    pub rx_data_duplicate: u64,
    /// Sequence numbers skipped (lost or still in flight).
    pub rx_data_seq_gap: u64,
}

/// Stats of one session, Mist-shaped.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionStats {
    /// Our session id.
    pub local_sid: u32,
    /// Peer's session id.
    pub remote_sid: u32,
    /// State name.
    pub state: std::borrow::Cow<'static, str>,
    /// Remote End ID (mxtunnel).
    pub remote_id: String,
    /// Pseudowire type.
    pub pw_type: u16,
}

/// Stats of one control connection, Mist-shaped.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnStats {
    /// Our CCID.
    pub local_ccid: u32,
    /// Peer's CCID.
    pub remote_ccid: u32,
    /// Peer's Host Name (the AP).
    pub ap: String,
    /// Peer IP.
    pub remote_ip: String,
    /// Peer port.
    pub remote_port: u16,
    /// idle / wait-ctrl-reply / wait-ctrl-conn / established / established_with_sessions.
    pub state: std::borrow::Cow<'static, str>,
    /// Seconds since established (0 before).
    pub uptime: u64,
    /// Control packets sent.
    pub tx_control_pkts: u64,
    /// Control packets received.
    pub rx_control_pkts: u64,
    /// Retransmitted control messages.
    pub retransmits: u64,
    /// Sessions.
    pub sessions: Vec<SessionStats>,
}

/// Every control connection and session behind one L2TP socket.
pub struct Endpoint {
    cfg: EndpointConfig,
    conns: HashMap<u32, ControlConn>,
    by_peer: HashMap<(Transport, SocketAddr, u32), u32>,
    sessions: SessionTable,
    timers: BTreeSet<(Instant, u32)>,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    rng: Rng,
    counters: EndpointCounters,
    /// Responder connections that have not reached established (whatever
    /// their state, until they are gone): what the half-open cap counts.
    half_open: FxHashSet<u32>,
    /// Per-source SCCRQ rate.
    limiter: SourceLimiter,
    /// Rate of StopCCNs for connections this endpoint does not have.
    stale_limiter: RateLimiter,
    /// Not taking new tunnels for now ([`Endpoint::set_accepting`]).
    paused: bool,
}

macro_rules! ctx {
    ($self:ident, $now:expr) => {
        Ctx {
            now: $now,
            cfg: &$self.cfg,
            events: &mut $self.events,
            sessions: &mut $self.sessions,
            rng: &mut $self.rng,
            counters: &mut $self.counters,
        }
    };
}

impl Endpoint {
    /// An endpoint; `seed` drives CCID, session id and cookie choice: 32
    /// bytes from the OS for an endpoint facing real peers, a number for a
    /// test that wants the same choices every run ([`Seed`]).
    pub fn new(cfg: EndpointConfig, seed: impl Into<Seed>) -> Self {
        let mut rng = Rng::new(seed.into());
        // Where this endpoint's sessions start in the fast path's arrays.
        let slot_base = rng.next_u32();
        Endpoint {
            limiter: SourceLimiter::new(&cfg.admission),
            stale_limiter: RateLimiter::new(cfg.admission.stale_stopccn_per_second),
            half_open: FxHashSet::default(),
            paused: false,
            cfg,
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            sessions: SessionTable::with_base(slot_base),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            rng,
            counters: EndpointCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// The Host Name sent in SCCRPs from now on (the edge was renamed);
    /// established tunnels keep theirs (RFC 3931 has no way to change it).
    pub fn set_host_name(&mut self, name: String) {
        self.cfg.host_name = name;
    }

    /// Replace the tunnel profiles (configuration change). Existing sessions
    /// keep the index they were bound to; the caller closes sessions whose
    /// profile went away.
    pub fn set_profiles(&mut self, profiles: Vec<PwProfile>) {
        self.cfg.profiles = profiles;
    }

    /// Replace the tunnel profiles when profiles were added, removed or
    /// moved: `moved[i]` is the new index of old profile `i`, None where it
    /// is gone. Connections bound to a removed profile are closed with
    /// StopCCN (`result`, `message`); a session of a removed profile on a
    /// connection that stays is closed with CDN. Every other connection and
    /// session keeps running, bound to its profile's new index. Returns the
    /// connections and the sessions closed (a connection already closing is
    /// neither closed again nor counted).
    pub fn replace_profiles(
        &mut self,
        now: Instant,
        profiles: Vec<PwProfile>,
        moved: &[Option<usize>],
        result: u16,
        message: &str,
    ) -> (usize, usize) {
        let remap = |p: Option<usize>| p.map(|i| moved.get(i).copied().flatten());
        let mut gone_conns = Vec::new();
        for (ccid, c) in &mut self.conns {
            match remap(c.profile) {
                Some(None) => gone_conns.push(*ccid),
                Some(Some(i)) => c.profile = Some(i),
                None => {}
            }
        }
        let mut gone_sessions = Vec::new();
        let sids: Vec<u32> = self.sessions.keys().copied().collect();
        for sid in sids {
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            match remap(s.profile) {
                // Those of a closing connection go with it.
                Some(None) if !gone_conns.contains(&s.ccid) => gone_sessions.push(sid),
                Some(Some(i)) => s.profile = Some(i),
                _ => {}
            }
        }
        self.cfg.profiles = profiles;
        // The connections that stay take their mxtunnel's hello settings
        // as they are now.
        for (ccid, c) in &mut self.conns {
            if gone_conns.contains(ccid) {
                continue;
            }
            if let Some(p) = c.profile.and_then(|i| self.cfg.profiles.get(i)) {
                c.set_hello(now, p.hello_interval, p.hello_retries);
            }
        }
        let ccids: Vec<u32> = self.conns.keys().copied().collect();
        for ccid in ccids {
            self.after(now, ccid);
        }
        gone_conns.sort_unstable();
        // A connection already closing (an earlier change or the peer
        // closed it) is on its way out: not closed or counted again.
        let mut closed = 0;
        for &ccid in &gone_conns {
            if self
                .conns
                .get(&ccid)
                .is_some_and(|c| !matches!(c.state, ConnState::Closing | ConnState::Closed))
            {
                self.close(now, ccid, result, message);
                closed += 1;
            }
        }
        for &sid in &gone_sessions {
            self.close_session(now, sid, l2tp::cdn::ADMINISTRATIVE);
        }
        (closed, gone_sessions.len())
    }

    /// Replace the admitted source prefixes (`tunterm_ap_subnets`, a
    /// configuration change): connections from addresses now outside are
    /// closed with StopCCN (`result`, `message`) and counted
    /// (`closed_not_admitted`); new SCCRQs are checked against the new
    /// list. Returns the connections closed.
    pub fn set_admit(
        &mut self,
        now: Instant,
        admit: Vec<IpNet>,
        result: u16,
        message: &str,
    ) -> usize {
        self.cfg.admit = admit;
        let cfg = self.cfg.clone();
        let n = self.close_peers(now, |peer| !cfg.admits(peer.ip()), result, message);
        self.counters.closed_not_admitted += n as u64;
        n
    }

    /// Close with StopCCN (`result`, `message`) every connection not
    /// already closing whose peer `which` picks; returns how many.
    pub fn close_peers(
        &mut self,
        now: Instant,
        which: impl Fn(SocketAddr) -> bool,
        result: u16,
        message: &str,
    ) -> usize {
        let mut picked: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state != ConnState::Closing && which(c.peer))
            .map(|(ccid, _)| *ccid)
            .collect();
        picked.sort_unstable();
        for &ccid in &picked {
            self.close(now, ccid, result, message);
        }
        picked.len()
    }

    /// Whether new control connections (SCCRQs) are taken. Off while
    /// upstream monitoring fails: an SCCRQ is answered with StopCCN
    /// (result 1, `NOT_ACCEPTING`; counted as
    /// `sccrq_not_accepting`), so the AP moves on to its next edge at once;
    /// established connections are left to the caller. An endpoint whose
    /// configuration does not accept SCCRQs at all (`accept_incoming`
    /// false: the AP side) keeps ignoring them.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.paused = !accepting;
    }

    /// Counters.
    pub fn counters(&self) -> &EndpointCounters {
        &self.counters
    }

    /// Responder connections not yet established (closing and lingering
    /// ones that never were included): at most `admission.max_half_open`.
    pub fn half_open_count(&self) -> usize {
        self.half_open.len()
    }

    /// Source addresses in the SCCRQ rate table: at most
    /// `admission.rate_table_size`.
    pub fn rate_table_len(&self) -> usize {
        self.limiter.len()
    }

    /// A datagram from `from` (UDP payload, or IP payload of protocol 115).
    /// Data for an established session comes back checked; control messages
    /// are consumed (drain [`Endpoint::poll_transmit`] and
    /// [`Endpoint::poll_event`] afterwards).
    #[must_use]
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        bytes: &'a [u8],
    ) -> Incoming<'a> {
        if !self.cfg.admit.is_empty() && !self.cfg.admits(from.ip()) {
            return self.not_admitted(transport, bytes);
        }
        match l2tp::parse(transport, bytes) {
            Ok(Packet::Data(d)) => self.decap(transport, from, d.session_id, d.rest),
            Ok(Packet::Control(c)) => {
                self.on_control(now, transport, from, &c, bytes);
                Incoming::Control
            }
            Err(_) => {
                self.counters.rx_data_malformed += 1;
                Incoming::Dropped(DataDrop::Malformed)
            }
        }
    }

    #[cold]
    fn not_admitted(&mut self, transport: Transport, bytes: &[u8]) -> Incoming<'static> {
        // Only the header's type is looked at, to count it.
        if matches!(l2tp::parse(transport, bytes), Ok(Packet::Control(_))) {
            self.counters.rx_control_not_admitted += 1;
        } else {
            self.counters.rx_data_not_admitted += 1;
        }
        Incoming::Dropped(DataDrop::NotAdmitted)
    }

    #[inline]
    fn decap<'a>(
        &mut self,
        transport: Transport,
        from: SocketAddr,
        sid: u32,
        rest: &'a [u8],
    ) -> Incoming<'a> {
        let Some(s) = self.sessions.get_mut(&sid) else {
            self.counters.rx_data_unknown_session += 1;
            return Incoming::Dropped(DataDrop::UnknownSession);
        };
        let source_ok = s.transport == transport
            && match transport {
                Transport::Udp => s.peer == from,
                Transport::Ip => s.peer.ip() == from.ip(),
            };
        if !source_ok {
            self.counters.rx_data_bad_source += 1;
            return Incoming::Dropped(DataDrop::BadSource);
        }
        if s.state != SessionState::Established {
            self.counters.rx_data_not_established += 1;
            return Incoming::Dropped(DataDrop::NotEstablished);
        }
        let cookie = s.cookie_rx.as_slice();
        let mut payload = match rest.split_at_checked(cookie.len()) {
            Some((c, payload)) if c == cookie => payload,
            _ => {
                self.counters.rx_data_bad_cookie += 1;
                return Incoming::Dropped(DataDrop::BadCookie);
            }
        };
        if s.sublayer {
            let Some(seq) = l2tp::parse_sublayer(payload) else {
                self.counters.rx_data_bad_sublayer += 1;
                return Incoming::Dropped(DataDrop::BadSublayer);
            };
            payload = &payload[l2tp::SUBLAYER_LEN..];
            if let Some(seq) = seq {
                let c = &mut self.counters;
                match s.rx_seq {
                    None => s.rx_seq = Some((seq + 1) & l2tp::SUBLAYER_SEQ_MASK),
                    Some(expected) => {
                        let ahead = seq.wrapping_sub(expected) & l2tp::SUBLAYER_SEQ_MASK;
                        // Newer than the last one by less than half the
                        // 24-bit space (serial arithmetic, RFC 1982):
                        // exactly half is undefined there, and taken as
                        // late here, so a number never passes after its
                        // own opposite (the l2tp_endpoint fuzz target
                        // found 2,598,823 accepted after 10,987,431).
                        if ahead < (1 << 23) - 1 {
                            // In order, or after a gap (loss): accept.
                            c.rx_data_seq_gap += u64::from(ahead);
                            s.rx_seq = Some((seq + 1) & l2tp::SUBLAYER_SEQ_MASK);
                        } else {
                            c.rx_data_out_of_order += 1;
                            if (seq + 1) & l2tp::SUBLAYER_SEQ_MASK == expected {
                                c.rx_data_duplicate += 1;
                            }
                            if s.drop_out_of_order {
                                return Incoming::Dropped(DataDrop::OutOfOrder);
                            }
                        }
                    }
                }
            }
        }
        self.counters.rx_data += 1;
        Incoming::Data {
            session_id: sid,
            payload,
        }
    }

    /// Write the data header for session `sid` (session id, cookie, and the
    /// sublayer with the next sequence number when negotiated) into `out`,
    /// cleared first; the frame goes after it. Returns where to send it, or
    /// `None` if the session is not established.
    pub fn encap_header(&mut self, sid: u32, out: &mut Vec<u8>) -> Option<(Transport, SocketAddr)> {
        let s = self.sessions.get_mut(&sid)?;
        if s.state != SessionState::Established {
            return None;
        }
        out.clear();
        out.resize(s.header_len(), 0);
        let n = l2tp::emit_data_header(s.transport, s.remote_sid, &s.cookie_tx, out);
        if s.sublayer {
            let seq = s.send_seq.then_some(s.tx_seq);
            if s.send_seq {
                s.tx_seq = (s.tx_seq + 1) & l2tp::SUBLAYER_SEQ_MASK;
            }
            l2tp::emit_sublayer(seq, &mut out[n..]);
        }
        Some((s.transport, s.peer))
    }

    fn on_control(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        c: &l2tp::ControlPacket<'_>,
        raw: &[u8],
    ) {
        self.counters.rx_control += 1;
        let msg = if c.is_zlb() {
            None
        } else {
            match ControlMessage::parse(c) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.counters.rx_control_malformed += 1;
                    return;
                }
            }
        };
        let ccid = if c.header.ccid == 0 {
            match &msg {
                Some(m) if m.msg_type == MessageType::Sccrq => {
                    match self.sccrq_conn(now, transport, from, m) {
                        Some(ccid) => ccid,
                        None => return,
                    }
                }
                // A peer that lost our connection tells us so: it cannot
                // know our CCID, so it names its own old one (RFC 3931
                // §6.4 allows the Assigned CCID AVP in StopCCN).
                Some(m) if m.msg_type == MessageType::StopCcn => {
                    match m
                        .assigned_ccid()
                        .and_then(|peer_ccid| self.by_peer.get(&(transport, from, peer_ccid)))
                    {
                        Some(&ccid) => {
                            self.counters.rx_stale_stopccn += 1;
                            ccid
                        }
                        None => {
                            self.counters.rx_control_unknown_ccid += 1;
                            return;
                        }
                    }
                }
                _ => {
                    self.counters.rx_control_unknown_ccid += 1;
                    return;
                }
            }
        } else {
            c.header.ccid
        };
        let Some(conn) = self.conns.get_mut(&ccid) else {
            self.counters.rx_control_unknown_ccid += 1;
            if let Some(m) = &msg {
                self.answer_stale(now, transport, from, c.header, m);
            }
            return;
        };
        if conn.peer != from || conn.transport != transport {
            self.counters.rx_control_bad_source += 1;
            return;
        }
        let knew_peer = conn.peer_ccid != 0;
        let mut ctx = ctx!(self, now);
        conn.on_packet(&mut ctx, c, msg, raw);
        // An initiator learns the peer's CCID from the SCCRP: from then on
        // it is found by it too (a stale StopCCN names it).
        if !knew_peer && conn.peer_ccid != 0 {
            let key = (conn.transport, conn.peer, conn.peer_ccid);
            self.by_peer.entry(key).or_insert(ccid);
        }
        self.after(now, ccid);
    }

    /// A control message (`header`, `m`) from `from` for a CCID we do not
    /// have: the peer holds a connection we have lost — this endpoint
    /// restarted without its state, or closed it and forgot it. Without an
    /// answer the peer finds out only after its dead-peer time (hello
    /// interval × retries: minutes with the Mist defaults). Answer with a
    /// StopCCN it can match: header CCID 0 (we do not know its CCID), the
    /// Assigned CCID AVP the CCID it addressed (ours, once), Ns the next
    /// it expects from us (its Nr) and Nr after its message; result 2
    /// (general error), error 1 (no control connection exists for this
    /// pair of LCCEs). Nothing is kept. A StopCCN is never answered (no
    /// loop between two endpoints that both lost it), nor an SCCRQ; the
    /// answers share one rate limit, and the caller has already checked
    /// the source against the admitted subnets.
    fn answer_stale(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        header: l2tp::ControlHeader,
        m: &ControlMessage,
    ) {
        if matches!(m.msg_type, MessageType::StopCcn | MessageType::Sccrq) {
            return;
        }
        if !self.stale_limiter.allow(now) {
            self.counters.stale_stopccn_limited += 1;
            return;
        }
        let stop = ControlMessage {
            msg_type: MessageType::StopCcn,
            avps: vec![
                Avp::ResultCode {
                    result: l2tp::stopccn::GENERAL_ERROR,
                    error: Some(l2tp::error_code::NO_CONTROL_CONNECTION),
                    message: Some(STALE_MESSAGE.into()),
                },
                Avp::AssignedCcid(header.ccid),
            ],
        };
        let mut payload = Vec::with_capacity(96);
        let reply = l2tp::ControlHeader {
            ccid: 0,
            ns: header.nr,
            nr: header.ns.wrapping_add(1),
        };
        stop.emit(transport, reply, &mut payload);
        self.transmits.push_back(Transmit {
            transport,
            dst: from,
            payload,
        });
        self.counters.stale_stopccn_sent += 1;
    }

    /// The connection an SCCRQ belongs to: an existing one for a
    /// retransmission, else a new responder connection.
    fn sccrq_conn(
        &mut self,
        now: Instant,
        transport: Transport,
        from: SocketAddr,
        m: &ControlMessage,
    ) -> Option<u32> {
        self.counters.sccrq_received += 1;
        let Some(peer_ccid) = m.assigned_ccid() else {
            self.counters.sccrq_refused += 1;
            return None;
        };
        if let Some(&ccid) = self.by_peer.get(&(transport, from, peer_ccid)) {
            self.counters.sccrq_retransmits += 1;
            return Some(ccid);
        }
        if !self.cfg.accept_incoming {
            self.counters.sccrq_refused += 1;
            return None;
        }
        // A refused SCCRQ leaves nothing behind: a real AP retransmits it
        // and gets in once there is room.
        let allowed = self.limiter.allow(now, from.ip().to_canonical());
        self.counters.sccrq_sources_evicted = self.limiter.evicted;
        if !allowed {
            self.counters.sccrq_rate_limited += 1;
            return None;
        }
        if self.half_open.len() >= self.cfg.admission.max_half_open {
            self.counters.sccrq_half_open_full += 1;
            return None;
        }
        // Not taking tunnels for now (upstream monitoring failed): the
        // SCCRQ gets a StopCCN, from a connection that lives only to
        // deliver it (rate-limited and capped like any other).
        let refuse = self.paused;
        if refuse {
            self.counters.sccrq_refused += 1;
            self.counters.sccrq_not_accepting += 1;
        } else {
            self.counters.sccrq_accepted += 1;
        }
        let ccid = self.alloc_ccid();
        let ctx = ctx!(self, now);
        let mut conn = ControlConn::new(&ctx, ccid, peer_ccid, from, transport, false);
        conn.refuse = refuse;
        self.conns.insert(ccid, conn);
        self.by_peer.insert((transport, from, peer_ccid), ccid);
        Some(ccid)
    }

    fn alloc_ccid(&mut self) -> u32 {
        loop {
            let c = self.rng.next_u32();
            if c != 0 && !self.conns.contains_key(&c) {
                return c;
            }
        }
    }

    /// Initiator: start a control connection to `peer` over `transport`
    /// (port ignored over IP). Returns our CCID.
    pub fn connect(
        &mut self,
        now: Instant,
        transport: Transport,
        peer: SocketAddr,
        hello_interval: Duration,
        hello_retries: u32,
    ) -> u32 {
        let ccid = self.alloc_ccid();
        let ctx = ctx!(self, now);
        let peer = match transport {
            Transport::Udp => peer,
            Transport::Ip => SocketAddr::new(peer.ip(), 0),
        };
        let mut conn = ControlConn::new(&ctx, ccid, 0, peer, transport, true);
        conn.hello_interval = hello_interval;
        conn.hello_retries = hello_retries;
        conn.start(&ctx);
        self.conns.insert(ccid, conn);
        self.after(now, ccid);
        ccid
    }

    /// Initiator: ask for a session on connection `ccid` (sent once the
    /// connection is established). Returns false if there is no such
    /// connection.
    pub fn open_session(&mut self, now: Instant, ccid: u32, req: SessionRequest) -> bool {
        let Some(conn) = self.conns.get_mut(&ccid) else {
            return false;
        };
        let mut ctx = ctx!(self, now);
        conn.open_session(&mut ctx, req);
        self.after(now, ccid);
        true
    }

    /// Close a control connection with StopCCN (result code `result`).
    pub fn close(&mut self, now: Instant, ccid: u32, result: u16, message: &str) {
        let Some(conn) = self.conns.get_mut(&ccid) else {
            return;
        };
        let mut ctx = ctx!(self, now);
        conn.close(
            &mut ctx,
            CloseReason::Local,
            Some((result, l2tp::error_code::NONE, message)),
        );
        self.after(now, ccid);
    }

    /// Close every control connection (shutdown).
    pub fn close_all(&mut self, now: Instant, result: u16, message: &str) {
        let ccids: Vec<u32> = self.conns.keys().copied().collect();
        for ccid in ccids {
            self.close(now, ccid, result, message);
        }
    }

    /// Close one session with a CDN.
    pub fn close_session(&mut self, now: Instant, sid: u32, result: u16) {
        let Some(ccid) = self.sessions.get(&sid).map(|s| s.ccid) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&ccid) else {
            return;
        };
        let mut ctx = ctx!(self, now);
        conn.close_session(&mut ctx, sid, result, CloseReason::Local);
        self.after(now, ccid);
    }

    /// Move a connection's output to the transmit queue and re-arm its timer.
    fn after(&mut self, now: Instant, ccid: u32) {
        let Some(conn) = self.conns.get_mut(&ccid) else {
            return;
        };
        while let Some(payload) = conn.chan.poll_transmit(now) {
            self.transmits.push_back(Transmit {
                transport: conn.transport,
                dst: conn.peer,
                payload,
            });
        }
        if conn.is_gone(now) {
            if let Some(w) = conn.wake.take() {
                self.timers.remove(&(w, ccid));
            }
            let key = (conn.transport, conn.peer, conn.peer_ccid);
            self.conns.remove(&ccid);
            self.half_open.remove(&ccid);
            if self.by_peer.get(&key) == Some(&ccid) {
                self.by_peer.remove(&key);
            }
            return;
        }
        if !conn.initiator && conn.established_at.is_none() {
            if self.half_open.insert(ccid) {
                let n = self.half_open.len() as u64;
                self.counters.half_open_peak = self.counters.half_open_peak.max(n);
            }
        } else {
            self.half_open.remove(&ccid);
        }
        let wake = conn.next_wake();
        if wake != conn.wake {
            if let Some(w) = conn.wake {
                self.timers.remove(&(w, ccid));
            }
            if let Some(w) = wake {
                self.timers.insert((w, ccid));
            }
            conn.wake = wake;
        }
    }

    /// When [`Endpoint::handle_timeout`] wants to be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Run every timer due at `now`: retransmissions, hellos, dead peers,
    /// lingering closed connections.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, ccid)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(conn) = self.conns.get_mut(&ccid) else {
                continue;
            };
            conn.wake = None;
            let mut ctx = ctx!(self, now);
            conn.on_timeout(&mut ctx);
            self.after(now, ccid);
        }
    }

    /// Next control packet to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A session by our id (any state).
    pub fn session(&self, sid: u32) -> Option<&DataSession> {
        self.sessions.get(&sid)
    }

    /// The Host Name the peer of connection `ccid` gave in its SCCRQ/SCCRP.
    pub fn peer_host_name(&self, ccid: u32) -> Option<&str> {
        self.conns.get(&ccid).map(|c| c.peer_host_name.as_str())
    }

    /// Every session (any state), in no order.
    pub fn sessions(&self) -> impl Iterator<Item = &DataSession> + '_ {
        self.sessions.values()
    }

    /// Number of sessions (any state).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of control connections (closing ones included).
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Control connections closing whose StopCCN the peer has not
    /// acknowledged yet (shutdown waits for these).
    pub fn closing_count(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.state == ConnState::Closing)
            .count()
    }

    /// The state of a connection, if it exists.
    pub fn conn_state(&self, ccid: u32) -> Option<ConnState> {
        self.conns.get(&ccid).map(|c| c.state)
    }

    /// Every established connection with its established sessions, to
    /// keep somewhere that survives a restart of the daemon (see
    /// [`snapshot`](super::snapshot)). Sorted by CCID.
    pub fn snapshot(&self, now: Instant) -> Vec<ConnSnapshot> {
        let mut out: Vec<ConnSnapshot> = self
            .conns
            .values()
            .filter(|c| c.state == ConnState::Established)
            .map(|c| {
                let mut snap = c.snapshot(now);
                snap.sessions = c
                    .sessions
                    .iter()
                    .filter_map(|sid| self.sessions.get(sid))
                    .filter(|s| s.state == SessionState::Established)
                    .map(|s| SessionSnapshot {
                        local_sid: s.local_sid,
                        remote_sid: s.remote_sid,
                        remote_end_id: s.remote_end_id.clone(),
                        pw_type: s.pw_type,
                        cookie_rx: s.cookie_rx.as_slice().to_vec(),
                        cookie_tx: s.cookie_tx.as_slice().to_vec(),
                        sublayer: s.sublayer,
                        send_seq: s.send_seq,
                        drop_out_of_order: s.drop_out_of_order,
                        tx_seq: s.tx_seq,
                    })
                    .collect();
                snap
            })
            .collect();
        out.sort_by_key(|c| c.local_ccid);
        out
    }

    /// Take back the connections of a [`snapshot`](Self::snapshot) after a
    /// restart: each comes back established with its sessions, as if the
    /// daemon had never stopped, and [`Event::TunnelUp`] and
    /// [`Event::SessionUp`] follow as for new ones. The peers notice
    /// nothing: the first control packet of each resynchronises its
    /// sequence numbers. A session binds to the profile its Remote End ID
    /// selects now (none: the driver closes it). Entries that clash with
    /// what exists or are malformed (ids of 0, a cookie of another length
    /// than 0, 4 or 8, a hello interval of 0) are refused, not guessed at.
    pub fn restore(&mut self, now: Instant, conns: Vec<ConnSnapshot>) -> RestoreReport {
        let mut report = RestoreReport::default();
        for snap in conns {
            let transport = match snap.transport {
                SnapTransport::Udp => Transport::Udp,
                SnapTransport::Ip => Transport::Ip,
            };
            let key = (transport, snap.peer, snap.peer_ccid);
            let why = if snap.local_ccid == 0 || snap.peer_ccid == 0 {
                Some("a CCID of 0")
            } else if self.conns.contains_key(&snap.local_ccid) || self.by_peer.contains_key(&key) {
                Some("the connection exists")
            } else if snap.hello_interval_ms == 0 {
                Some("a hello interval of 0")
            } else if !self.cfg.admits(snap.peer.ip()) {
                Some("not in tunterm_ap_subnets")
            } else {
                None
            };
            if let Some(why) = why {
                report.refused.push(format!(
                    "tunnel {} from {}: {why}",
                    snap.local_ccid, snap.peer
                ));
                continue;
            }
            let ccid = snap.local_ccid;
            let ctx = ctx!(self, now);
            let mut conn = ControlConn::restored(&ctx, &snap, transport);
            let mut up = Vec::new();
            for s in &snap.sessions {
                let cookies = Cookie::new(&s.cookie_rx).zip(Cookie::new(&s.cookie_tx));
                let why = if s.local_sid == 0
                    || crate::proto::gre::is_gre_port(crate::proto::bridge::PortId(s.local_sid))
                    || crate::proto::bridge::is_host_port(crate::proto::bridge::PortId(s.local_sid))
                {
                    Some("a session id outside the L2TP range")
                } else if self.sessions.contains_key(&s.local_sid) {
                    Some("the session id is taken")
                } else if cookies.is_none() {
                    Some("a cookie that is not 0, 4 or 8 bytes")
                } else {
                    None
                };
                let Some((cookie_rx, cookie_tx)) = cookies.filter(|_| why.is_none()) else {
                    report.refused.push(format!(
                        "session {} of tunnel {ccid}: {}",
                        s.local_sid,
                        why.unwrap_or("refused")
                    ));
                    continue;
                };
                let profile = self.cfg.profile_for(&s.remote_end_id, transport);
                if conn.profile.is_none() {
                    conn.profile = profile;
                }
                self.sessions.insert(
                    s.local_sid,
                    DataSession {
                        local_sid: s.local_sid,
                        remote_sid: s.remote_sid,
                        ccid,
                        peer: snap.peer,
                        transport,
                        cookie_rx,
                        cookie_tx,
                        pw_type: s.pw_type,
                        profile,
                        remote_end_id: s.remote_end_id.clone(),
                        state: SessionState::Established,
                        sublayer: s.sublayer,
                        send_seq: s.send_seq,
                        drop_out_of_order: s.drop_out_of_order,
                        tx_seq: if s.send_seq {
                            s.tx_seq.wrapping_add(SEQ_JUMP) & l2tp::SUBLAYER_SEQ_MASK
                        } else {
                            s.tx_seq
                        },
                        rx_seq: None,
                    },
                );
                conn.sessions.push(s.local_sid);
                up.push(s.local_sid);
            }
            self.events.push_back(Event::TunnelUp {
                ccid,
                peer: snap.peer,
                host_name: snap.host_name.clone(),
            });
            for sid in up {
                report.sessions += 1;
                self.events.push_back(Event::SessionUp {
                    ccid,
                    session_id: sid,
                });
            }
            self.conns.insert(ccid, conn);
            self.by_peer.insert(key, ccid);
            report.tunnels += 1;
            self.after(now, ccid);
        }
        report
    }

    /// Whether no connection has a control message waiting for its
    /// acknowledgement.
    #[cfg(test)]
    pub(super) fn all_acked(&self) -> bool {
        self.conns.values().all(|c| c.chan.all_acked())
    }

    /// Stats of every connection that is not closing or closed, Mist-shaped.
    pub fn stats(&self, now: Instant) -> Vec<ConnStats> {
        let mut out: Vec<ConnStats> = self
            .conns
            .values()
            .filter(|c| !matches!(c.state, ConnState::Closing | ConnState::Closed))
            .map(|c| ConnStats {
                local_ccid: c.local_ccid,
                remote_ccid: c.peer_ccid,
                ap: c.peer_host_name.clone(),
                remote_ip: c.peer.ip().to_string(),
                remote_port: c.peer.port(),
                state: c.mist_state().into(),
                uptime: c.established_at.map_or(0, |t| (now - t).as_secs()),
                tx_control_pkts: c.chan.tx_packets,
                rx_control_pkts: c.rx_packets,
                retransmits: c.chan.retransmits,
                sessions: c
                    .sessions
                    .iter()
                    .filter_map(|sid| self.sessions.get(sid))
                    .map(|s| SessionStats {
                        local_sid: s.local_sid,
                        remote_sid: s.remote_sid,
                        state: s.state.name().into(),
                        remote_id: s.remote_end_id.clone(),
                        pw_type: s.pw_type,
                    })
                    .collect(),
            })
            .collect();
        // Borrowed keys: a cloned address string per comparison made this
        // sort most of a 10,000-tunnel snapshot's time.
        out.sort_unstable_by(|a, b| {
            (&a.remote_ip, a.remote_port, a.local_ccid).cmp(&(
                &b.remote_ip,
                b.remote_port,
                b.local_ccid,
            ))
        });
        out
    }
}
