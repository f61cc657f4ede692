//! One control connection and the sessions it carries: the RFC 3931 state
//! machines for both the initiator (AP) and the responder (edge) role.

use std::collections::VecDeque;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::endpoint::{
    CloseReason, DataSession, EndpointConfig, EndpointCounters, Event, SessionRequest,
};
use super::reliable::{Channel, Keepalive, Received};
use super::rng::Rng;
use super::sessions::{SESSION_SLOTS, SessionTable};
use super::snapshot::{ConnSnapshot, SnapTransport};
use crate::wire::l2tp::{
    Avp, ControlHeader, ControlMessage, ControlPacket, Cookie, MessageType, Transport, cdn,
    error_code, pw, stopccn,
};

/// State of a control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Nothing sent or received yet.
    Idle,
    /// Initiator: SCCRQ sent, waiting for SCCRP.
    WaitCtrlReply,
    /// Responder: SCCRP sent, waiting for SCCCN.
    WaitCtrlConn,
    /// Up: sessions may be set up.
    Established,
    /// StopCCN sent, waiting for its acknowledgement.
    Closing,
    /// Gone; kept a little while only to acknowledge retransmissions.
    Closed,
}

/// State of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Initiator: ICRQ sent, waiting for ICRP.
    WaitReply,
    /// Responder: ICRP sent, waiting for ICCN.
    WaitConnect,
    /// Up: data flows.
    Established,
}

impl SessionState {
    /// Name used in stats.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::WaitReply => "wait-reply",
            SessionState::WaitConnect => "wait-connect",
            SessionState::Established => "established",
        }
    }
}

/// What a connection's handlers need from the endpoint.
/// The StopCCN message of an SCCRQ refused while the edge is not taking
/// tunnels.
pub const NOT_ACCEPTING: &str = "not accepting tunnels now (upstream check failing)";

pub(super) struct Ctx<'a> {
    pub now: Instant,
    pub cfg: &'a EndpointConfig,
    pub events: &'a mut VecDeque<Event>,
    pub sessions: &'a mut SessionTable,
    pub rng: &'a mut Rng,
    pub counters: &'a mut EndpointCounters,
}

pub(super) struct ControlConn {
    pub local_ccid: u32,
    pub peer_ccid: u32,
    pub peer: SocketAddr,
    pub transport: Transport,
    pub initiator: bool,
    pub state: ConnState,
    pub chan: Channel,
    pub peer_host_name: String,
    pub peer_router_id: u32,
    pub hello_interval: Duration,
    pub hello_retries: u32,
    pub profile: Option<usize>,
    pub sessions: Vec<u32>,
    pub pending: Vec<SessionRequest>,
    pub established_at: Option<Instant>,
    pub hello_at: Instant,
    pub linger_until: Option<Instant>,
    pub rx_packets: u64,
    pub wake: Option<Instant>,
    /// Answer the SCCRQ with StopCCN instead of SCCRP: the endpoint is not
    /// taking tunnels for now ([`super::Endpoint::set_accepting`]).
    pub refuse: bool,
    next_serial: u32,
}

impl ControlConn {
    pub fn new(
        ctx: &Ctx<'_>,
        local_ccid: u32,
        peer_ccid: u32,
        peer: SocketAddr,
        transport: Transport,
        initiator: bool,
    ) -> Self {
        let cfg = ctx.cfg;
        ControlConn {
            local_ccid,
            peer_ccid,
            peer,
            transport,
            initiator,
            state: ConnState::Idle,
            chan: Channel::new(transport, cfg.retransmit, cfg.rx_window, peer_ccid),
            peer_host_name: String::new(),
            peer_router_id: 0,
            hello_interval: cfg.hello_interval,
            hello_retries: cfg.hello_retries,
            profile: None,
            sessions: Vec::new(),
            pending: Vec::new(),
            established_at: None,
            hello_at: ctx.now + cfg.hello_interval,
            linger_until: None,
            rx_packets: 0,
            wake: None,
            refuse: false,
            next_serial: 1,
        }
    }

    /// An established connection taken back from a snapshot (the caller
    /// has checked its ids and restores its sessions). Its channel
    /// resynchronises on the peer's next packet; the peer counts as heard
    /// from now.
    pub fn restored(ctx: &Ctx<'_>, snap: &ConnSnapshot, transport: Transport) -> Self {
        let cfg = ctx.cfg;
        let hello_interval = Duration::from_millis(snap.hello_interval_ms);
        let mut chan = Channel::restored(
            transport,
            cfg.retransmit,
            cfg.rx_window,
            snap.peer_ccid,
            (snap.next_ns, snap.expected_ns, snap.peer_window),
        );
        chan.set_keepalive(Some(Keepalive {
            interval: hello_interval,
            retries: snap.hello_retries,
        }));
        ControlConn {
            local_ccid: snap.local_ccid,
            peer_ccid: snap.peer_ccid,
            peer: snap.peer,
            transport,
            initiator: snap.initiator,
            state: ConnState::Established,
            chan,
            peer_host_name: snap.host_name.clone(),
            peer_router_id: snap.router_id,
            hello_interval,
            hello_retries: snap.hello_retries,
            profile: None,
            sessions: Vec::new(),
            pending: Vec::new(),
            established_at: Some(
                ctx.now
                    .checked_sub(Duration::from_secs(snap.uptime_secs))
                    .unwrap_or(ctx.now),
            ),
            hello_at: ctx.now + hello_interval,
            linger_until: None,
            rx_packets: 0,
            wake: None,
            refuse: false,
            next_serial: 1,
        }
    }

    /// This connection as a snapshot (sessions left for the caller).
    pub fn snapshot(&self, now: Instant) -> ConnSnapshot {
        let (next_ns, expected_ns, peer_window) = self.chan.sequence_state();
        ConnSnapshot {
            local_ccid: self.local_ccid,
            peer_ccid: self.peer_ccid,
            peer: self.peer,
            transport: match self.transport {
                Transport::Udp => SnapTransport::Udp,
                Transport::Ip => SnapTransport::Ip,
            },
            initiator: self.initiator,
            host_name: self.peer_host_name.clone(),
            router_id: self.peer_router_id,
            hello_interval_ms: self.hello_interval.as_millis() as u64,
            hello_retries: self.hello_retries,
            next_ns,
            expected_ns,
            peer_window,
            uptime_secs: self.established_at.map_or(0, |t| (now - t).as_secs()),
            sessions: Vec::new(),
        }
    }

    /// The Mist stats name of the state.
    pub fn mist_state(&self) -> &'static str {
        match self.state {
            ConnState::Idle | ConnState::Closing | ConnState::Closed => "idle",
            ConnState::WaitCtrlReply => "wait-ctrl-reply",
            ConnState::WaitCtrlConn => "wait-ctrl-conn",
            ConnState::Established if self.sessions.is_empty() => "established",
            ConnState::Established => "established_with_sessions",
        }
    }

    pub fn is_gone(&self, now: Instant) -> bool {
        self.state == ConnState::Closed && self.linger_until.is_none_or(|t| now >= t)
    }

    /// New hello settings (the connection's mxtunnel changed them live):
    /// the next hello goes out within the new interval, and the channel's
    /// liveness regime takes the new interval and retries at once.
    pub fn set_hello(&mut self, now: Instant, interval: Duration, retries: u32) {
        if (self.hello_interval, self.hello_retries) == (interval, retries) {
            return;
        }
        self.hello_interval = interval;
        self.hello_retries = retries;
        self.hello_at = self.hello_at.min(now + interval);
        if self.chan.keepalive().is_some() {
            self.chan.set_keepalive(Some(self.keepalive()));
        }
    }

    /// The channel's liveness regime for our hello settings.
    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: self.hello_interval,
            retries: self.hello_retries,
        }
    }

    pub fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.chan.poll_timeout();
        let mut merge = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        match self.state {
            ConnState::Established => merge(self.hello_at),
            ConnState::Closed => {
                if let Some(t) = self.linger_until {
                    merge(t)
                }
            }
            _ => {}
        }
        wake
    }

    fn send(&mut self, msg_type: MessageType, avps: Vec<Avp>) {
        let msg = ControlMessage { msg_type, avps };
        let mut packet = Vec::with_capacity(128);
        let header = ControlHeader {
            ccid: 0,
            ns: 0,
            nr: 0,
        };
        msg.emit(self.transport, header, &mut packet);
        self.chan.queue_message(packet);
    }

    fn sccrx_avps(&self, ctx: &Ctx<'_>) -> Vec<Avp> {
        vec![
            Avp::HostName(ctx.cfg.host_name.as_bytes().to_vec()),
            Avp::RouterId(ctx.cfg.router_id),
            Avp::AssignedCcid(self.local_ccid),
            Avp::PwCapabilities(vec![pw::ETHERNET, pw::ETHERNET_VLAN]),
            Avp::ReceiveWindowSize(self.chan.rx_window()),
            Avp::VendorName(b"tunterm".to_vec()),
        ]
    }

    /// Initiator: send the SCCRQ.
    pub fn start(&mut self, ctx: &Ctx<'_>) {
        let avps = self.sccrx_avps(ctx);
        self.send(MessageType::Sccrq, avps);
        self.state = ConnState::WaitCtrlReply;
    }

    /// A control packet addressed to this connection (already matched by
    /// CCID and source). `msg` is `None` for a ZLB.
    pub fn on_packet(
        &mut self,
        ctx: &mut Ctx<'_>,
        packet: &ControlPacket<'_>,
        msg: Option<ControlMessage>,
        raw: &[u8],
    ) {
        self.rx_packets += 1;
        if self.state == ConnState::Established {
            self.hello_at = ctx.now + self.hello_interval;
        }
        self.chan.resync(packet.header.ns, packet.header.nr);
        self.chan.on_ack(ctx.now, packet.header.nr);
        let Some(msg) = msg else {
            self.after_ack(ctx);
            return;
        };
        if msg.msg_type == MessageType::Ack {
            // Explicit ACK: its Nr was all it had to say.
            self.after_ack(ctx);
            return;
        }
        match self.chan.on_message(packet.header.ns, raw) {
            Received::InOrder => {
                self.dispatch(ctx, msg);
                while let Some(buffered) = self.chan.take_buffered() {
                    if let Some(m) = reparse(self.transport, &buffered) {
                        self.dispatch(ctx, m);
                    }
                }
            }
            Received::Duplicate => ctx.counters.control_duplicates += 1,
            Received::Buffered => ctx.counters.control_reordered += 1,
            Received::OutOfWindow => ctx.counters.control_out_of_window += 1,
        }
        self.after_ack(ctx);
    }

    fn after_ack(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == ConnState::Closing && self.chan.all_acked() {
            self.state = ConnState::Closed;
            self.linger_until = Some(ctx.now + ctx.cfg.retransmit.rto_max);
        }
    }

    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        self.chan.handle_timeout(now);
        if self.chan.failed() {
            match self.state {
                ConnState::Closing | ConnState::Closed => {
                    self.state = ConnState::Closed;
                    self.linger_until = Some(now);
                }
                // What we sent (a hello, or anything else outstanding) went
                // unacknowledged through hello_retries intervals.
                ConnState::Established => self.close(ctx, CloseReason::HelloTimeout, None),
                _ => self.close(ctx, CloseReason::RetransmitTimeout, None),
            }
            return;
        }
        if self.state == ConnState::Established && now >= self.hello_at {
            if self.chan.all_acked() {
                self.send(MessageType::Hello, vec![]);
                ctx.counters.hellos_sent += 1;
            }
            self.hello_at = now + self.hello_interval;
        }
    }

    /// Close the connection. With `stop`, a StopCCN (result, error, message)
    /// is delivered reliably first.
    pub fn close(
        &mut self,
        ctx: &mut Ctx<'_>,
        reason: CloseReason,
        stop: Option<(u16, u16, &str)>,
    ) {
        if matches!(self.state, ConnState::Closing | ConnState::Closed) {
            return;
        }
        for sid in std::mem::take(&mut self.sessions) {
            if let Some(s) = ctx.sessions.remove(&sid)
                && s.state == SessionState::Established
            {
                ctx.events.push_back(Event::SessionDown {
                    ccid: self.local_ccid,
                    session_id: sid,
                    reason: reason.clone(),
                });
            }
        }
        self.pending.clear();
        ctx.events.push_back(Event::TunnelDown {
            ccid: self.local_ccid,
            peer: self.peer,
            was_up: self.established_at.is_some(),
            reason,
        });
        match stop {
            Some((result, error, message)) => {
                let avps = vec![
                    Avp::AssignedCcid(self.local_ccid),
                    result_code(result, error, message),
                ];
                self.send(MessageType::StopCcn, avps);
                self.chan.set_keepalive(None);
                self.state = ConnState::Closing;
            }
            None => {
                self.state = ConnState::Closed;
                self.linger_until = Some(ctx.now + ctx.cfg.retransmit.rto_max);
            }
        }
    }

    fn fsm_error(&mut self, ctx: &mut Ctx<'_>, what: MessageType) {
        ctx.counters.protocol_errors += 1;
        let text = format!("unexpected {what} in state {:?}", self.state);
        self.close(
            ctx,
            CloseReason::ProtocolError(text.clone()),
            Some((stopccn::FSM_ERROR, error_code::NONE, &text)),
        );
    }

    fn dispatch(&mut self, ctx: &mut Ctx<'_>, msg: ControlMessage) {
        if matches!(self.state, ConnState::Closing | ConnState::Closed) {
            return;
        }
        let is_session_msg = matches!(
            msg.msg_type,
            MessageType::Icrq | MessageType::Icrp | MessageType::Iccn | MessageType::Cdn
        );
        if let Some((vendor, attr)) = msg.unknown_mandatory() {
            ctx.counters.unknown_mandatory_avps += 1;
            let text = format!("unknown mandatory AVP vendor {vendor} type {attr}");
            if is_session_msg && self.state == ConnState::Established {
                let peer_sid = msg.local_session_id().unwrap_or(0);
                let ours = msg.remote_session_id().unwrap_or(0);
                self.session_reject(
                    ctx,
                    ours,
                    peer_sid,
                    cdn::GENERAL_ERROR,
                    error_code::UNKNOWN_MANDATORY_AVP,
                    &text,
                );
            } else {
                self.close(
                    ctx,
                    CloseReason::ProtocolError(text.clone()),
                    Some((
                        stopccn::GENERAL_ERROR,
                        error_code::UNKNOWN_MANDATORY_AVP,
                        &text,
                    )),
                );
            }
            return;
        }
        match (msg.msg_type, self.state) {
            (MessageType::Sccrq, ConnState::Idle) if !self.initiator => self.on_sccrq(ctx, &msg),
            (MessageType::Sccrp, ConnState::WaitCtrlReply) => self.on_sccrp(ctx, &msg),
            (MessageType::Scccn, ConnState::WaitCtrlConn) => self.become_established(ctx),
            (MessageType::StopCcn, _) => {
                // An SCCRQ answered with StopCCN: its Assigned CCID is
                // where our acknowledgement goes (RFC 3931 §6.6).
                if self.peer_ccid == 0
                    && let Some(ccid) = msg.assigned_ccid().filter(|&c| c != 0)
                {
                    self.peer_ccid = ccid;
                    self.chan.set_peer_ccid(ccid);
                }
                let (result, error, message) = msg.result_code().unwrap_or((0, None, None));
                self.close(
                    ctx,
                    CloseReason::PeerStopCcn {
                        result,
                        error,
                        message,
                    },
                    None,
                );
            }
            (MessageType::Hello, _) => {}
            (MessageType::Wen | MessageType::Sli, ConnState::Established) => {}
            (MessageType::Icrq, ConnState::Established) => self.on_icrq(ctx, &msg),
            (MessageType::Icrp, ConnState::Established) => self.on_icrp(ctx, &msg),
            (MessageType::Iccn, ConnState::Established) => self.on_iccn(ctx, &msg),
            (MessageType::Cdn, ConnState::Established) => self.on_cdn(ctx, &msg),
            (t, _) => self.fsm_error(ctx, t),
        }
    }

    fn missing(&mut self, ctx: &mut Ctx<'_>, what: &str) {
        ctx.counters.protocol_errors += 1;
        let text = format!("missing mandatory AVP {what}");
        self.close(
            ctx,
            CloseReason::ProtocolError(text.clone()),
            Some((stopccn::GENERAL_ERROR, error_code::BAD_VALUE, &text)),
        );
    }

    fn learn_peer(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) -> bool {
        let Some(host) = msg.host_name() else {
            self.missing(ctx, "Host Name");
            return false;
        };
        let Some(router_id) = msg.router_id() else {
            self.missing(ctx, "Router ID");
            return false;
        };
        let Some(ccid) = msg.assigned_ccid() else {
            self.missing(ctx, "Assigned Control Connection ID");
            return false;
        };
        let Some(caps) = msg.pw_capabilities() else {
            self.missing(ctx, "Pseudowire Capabilities List");
            return false;
        };
        if !caps
            .iter()
            .any(|&t| t == pw::ETHERNET || t == pw::ETHERNET_VLAN)
        {
            ctx.counters.protocol_errors += 1;
            let text = "no Ethernet pseudowire type in common";
            self.close(
                ctx,
                CloseReason::ProtocolError(text.into()),
                Some((stopccn::GENERAL_ERROR, error_code::BAD_VALUE, text)),
            );
            return false;
        }
        if let Some(w) = msg.receive_window_size() {
            self.chan.set_peer_window(w);
        }
        self.peer_host_name = host;
        self.peer_router_id = router_id;
        self.peer_ccid = ccid;
        self.chan.set_peer_ccid(ccid);
        true
    }

    fn on_sccrq(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) {
        if !self.learn_peer(ctx, msg) {
            return;
        }
        if self.refuse {
            // Said at once, so the AP moves to its next edge now instead
            // of after its SCCRQ retransmissions give up (~31 s).
            self.close(
                ctx,
                CloseReason::Local,
                Some((stopccn::CLEAR, error_code::NONE, NOT_ACCEPTING)),
            );
            return;
        }
        let avps = self.sccrx_avps(ctx);
        self.send(MessageType::Sccrp, avps);
        self.state = ConnState::WaitCtrlConn;
    }

    fn on_sccrp(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) {
        if !self.learn_peer(ctx, msg) {
            return;
        }
        self.send(MessageType::Scccn, vec![]);
        self.become_established(ctx);
        for req in std::mem::take(&mut self.pending) {
            self.send_icrq(ctx, req);
        }
    }

    fn become_established(&mut self, ctx: &mut Ctx<'_>) {
        self.state = ConnState::Established;
        self.established_at = Some(ctx.now);
        self.hello_at = ctx.now + self.hello_interval;
        // From here on liveness is the hello settings' (the keepalive
        // regime), not the setup retry cap.
        self.chan.set_keepalive(Some(self.keepalive()));
        ctx.events.push_back(Event::TunnelUp {
            ccid: self.local_ccid,
            peer: self.peer,
            host_name: self.peer_host_name.clone(),
        });
    }

    fn alloc_session(&mut self, ctx: &mut Ctx<'_>) -> u32 {
        loop {
            // Session ids double as switch port ids: keep them out of the
            // mGRE peer range (0xF000_0000..) and the host ports'.
            // The low 16 bits: the next slot of the fast path's session
            // arrays no live session has, while there is one (see
            // SessionTable); the high 16 random.
            let random = ctx.rng.next_u32();
            let sid = match ctx.sessions.free_slot() {
                Some(slot) => random & !(SESSION_SLOTS - 1) | slot,
                None => random,
            };
            if sid != 0
                && !crate::proto::gre::is_gre_port(crate::proto::bridge::PortId(sid))
                && !crate::proto::bridge::is_host_port(crate::proto::bridge::PortId(sid))
                && !ctx.sessions.contains_key(&sid)
            {
                return sid;
            }
        }
    }

    fn new_cookie(ctx: &mut Ctx<'_>) -> Cookie {
        // A length RFC 3931 has no cookie of gets the longest, not none.
        let len = match ctx.cfg.cookie_len {
            0 => return Cookie::NONE,
            4 => 4,
            _ => 8,
        };
        let mut bytes = [0u8; 8];
        ctx.rng.fill(&mut bytes[..len]);
        Cookie::new(&bytes[..len]).unwrap_or_default()
    }

    /// Initiator: ask for a session (queued until the connection is up).
    pub fn open_session(&mut self, ctx: &mut Ctx<'_>, req: SessionRequest) {
        match self.state {
            ConnState::Established => self.send_icrq(ctx, req),
            ConnState::Idle | ConnState::WaitCtrlReply | ConnState::WaitCtrlConn => {
                self.pending.push(req)
            }
            ConnState::Closing | ConnState::Closed => {}
        }
    }

    fn send_icrq(&mut self, ctx: &mut Ctx<'_>, req: SessionRequest) {
        let sid = self.alloc_session(ctx);
        let cookie_rx = Self::new_cookie(ctx);
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        let mut avps = vec![
            Avp::LocalSessionId(sid),
            Avp::RemoteSessionId(0),
            Avp::SerialNumber(serial),
            Avp::PwType(req.pw_type),
            Avp::RemoteEndId(req.remote_end_id.as_bytes().to_vec()),
            Avp::CircuitStatus {
                active: true,
                new: true,
            },
        ];
        if !cookie_rx.is_empty() {
            avps.push(Avp::AssignedCookie(cookie_rx));
        }
        let (want_sublayer, want_seq) = (
            ctx.cfg.l2_sublayer || ctx.cfg.sequencing,
            ctx.cfg.sequencing,
        );
        if want_sublayer {
            avps.push(Avp::L2SpecificSublayer(1));
        }
        if want_seq {
            avps.push(Avp::DataSequencing(2));
        }
        self.send(MessageType::Icrq, avps);
        ctx.sessions.insert(
            sid,
            DataSession {
                local_sid: sid,
                remote_sid: 0,
                ccid: self.local_ccid,
                peer: self.peer,
                transport: self.transport,
                cookie_rx,
                cookie_tx: Cookie::NONE,
                pw_type: req.pw_type,
                profile: None,
                remote_end_id: req.remote_end_id,
                state: SessionState::WaitReply,
                sublayer: want_sublayer,
                send_seq: false,
                drop_out_of_order: want_seq,
                tx_seq: 0,
                rx_seq: None,
            },
        );
        self.sessions.push(sid);
    }

    fn session_reject(
        &mut self,
        ctx: &mut Ctx<'_>,
        our_sid: u32,
        peer_sid: u32,
        result: u16,
        error: u16,
        text: &str,
    ) {
        ctx.counters.sessions_refused += 1;
        self.send(
            MessageType::Cdn,
            vec![
                result_code(result, error, text),
                Avp::LocalSessionId(our_sid),
                Avp::RemoteSessionId(peer_sid),
            ],
        );
        if our_sid != 0 {
            self.drop_session(ctx, our_sid, CloseReason::ProtocolError(text.into()));
        }
    }

    fn drop_session(&mut self, ctx: &mut Ctx<'_>, sid: u32, reason: CloseReason) {
        self.sessions.retain(|&s| s != sid);
        if let Some(s) = ctx.sessions.remove(&sid)
            && s.state == SessionState::Established
        {
            ctx.events.push_back(Event::SessionDown {
                ccid: self.local_ccid,
                session_id: sid,
                reason,
            });
        }
    }

    fn on_icrq(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) {
        let Some(peer_sid) = msg.local_session_id().filter(|&s| s != 0) else {
            ctx.counters.protocol_errors += 1;
            return self.session_reject(
                ctx,
                0,
                0,
                cdn::GENERAL_ERROR,
                error_code::INVALID_SESSION_ID,
                "missing Local Session ID",
            );
        };
        if self.sessions.iter().any(|s| {
            ctx.sessions
                .get(s)
                .is_some_and(|d| d.remote_sid == peer_sid)
        }) {
            // A second ICRQ for a session we already answered.
            ctx.counters.control_duplicates += 1;
            return;
        }
        let Some(pw_type) = msg.pw_type() else {
            ctx.counters.protocol_errors += 1;
            return self.session_reject(
                ctx,
                0,
                peer_sid,
                cdn::GENERAL_ERROR,
                error_code::BAD_VALUE,
                "missing Pseudowire Type",
            );
        };
        if pw_type != pw::ETHERNET && pw_type != pw::ETHERNET_VLAN {
            return self.session_reject(
                ctx,
                0,
                peer_sid,
                cdn::PW_TYPE_NOT_SUPPORTED,
                error_code::NONE,
                "pseudowire type not supported",
            );
        }
        let remote_end_id = msg.remote_end_id().unwrap_or_default();
        let Some(profile) = ctx.cfg.profile_for(&remote_end_id, self.transport) else {
            let text = format!("no tunnel named {remote_end_id:?}");
            return self.session_reject(
                ctx,
                0,
                peer_sid,
                cdn::GENERAL_ERROR,
                error_code::BAD_VALUE,
                &text,
            );
        };
        if self.profile.is_none() {
            // The first session binds the control connection to its tunnel's
            // hello settings.
            self.profile = Some(profile);
            let p = &ctx.cfg.profiles[profile];
            self.hello_interval = p.hello_interval;
            self.hello_retries = p.hello_retries;
            self.hello_at = ctx.now + self.hello_interval;
            self.chan.set_keepalive(Some(self.keepalive()));
        }
        let cookie_tx = msg.assigned_cookie().unwrap_or_default();
        // Sublayer and sequencing: what the initiator asks for, or what we
        // require; a sequenced session is sequenced both ways.
        let peer_wants_seq = msg.data_sequencing() == Some(2);
        let sequenced = peer_wants_seq || ctx.cfg.sequencing;
        let sublayer = sequenced || msg.l2_specific_sublayer() == Some(1);
        let sid = self.alloc_session(ctx);
        let cookie_rx = Self::new_cookie(ctx);
        let mut avps = vec![
            Avp::LocalSessionId(sid),
            Avp::RemoteSessionId(peer_sid),
            Avp::CircuitStatus {
                active: true,
                new: true,
            },
        ];
        if !cookie_rx.is_empty() {
            avps.push(Avp::AssignedCookie(cookie_rx));
        }
        if sublayer || msg.l2_specific_sublayer().is_some() {
            avps.push(Avp::L2SpecificSublayer(u16::from(sublayer)));
        }
        if sequenced {
            avps.push(Avp::DataSequencing(2));
        }
        self.send(MessageType::Icrp, avps);
        ctx.sessions.insert(
            sid,
            DataSession {
                local_sid: sid,
                remote_sid: peer_sid,
                ccid: self.local_ccid,
                peer: self.peer,
                transport: self.transport,
                cookie_rx,
                cookie_tx,
                pw_type,
                profile: Some(profile),
                remote_end_id,
                state: SessionState::WaitConnect,
                sublayer,
                send_seq: sequenced,
                drop_out_of_order: sequenced,
                tx_seq: 0,
                rx_seq: None,
            },
        );
        self.sessions.push(sid);
    }

    fn own_session<'s>(
        &self,
        sessions: &'s mut SessionTable,
        sid: u32,
    ) -> Option<&'s mut DataSession> {
        sessions.get_mut(&sid).filter(|s| s.ccid == self.local_ccid)
    }

    fn on_icrp(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) {
        let ours = msg.remote_session_id().unwrap_or(0);
        let peer_sid = msg.local_session_id().unwrap_or(0);
        let cookie_tx = msg.assigned_cookie().unwrap_or_default();
        let ccid = self.local_ccid;
        let Some(s) = self.own_session(ctx.sessions, ours) else {
            ctx.counters.protocol_errors += 1;
            return self.session_reject(
                ctx,
                0,
                peer_sid,
                cdn::GENERAL_ERROR,
                error_code::INVALID_SESSION_ID,
                "ICRP for an unknown session",
            );
        };
        if s.state != SessionState::WaitReply || peer_sid == 0 {
            ctx.counters.protocol_errors += 1;
            return;
        }
        s.remote_sid = peer_sid;
        s.cookie_tx = cookie_tx;
        // The responder has the last word on the sublayer; it asks for
        // sequence numbers with Data Sequencing = 2.
        s.sublayer = msg.l2_specific_sublayer() == Some(1);
        s.send_seq = s.sublayer && msg.data_sequencing() == Some(2);
        s.drop_out_of_order &= s.sublayer;
        s.state = SessionState::Established;
        self.send(
            MessageType::Iccn,
            vec![Avp::LocalSessionId(ours), Avp::RemoteSessionId(peer_sid)],
        );
        ctx.events.push_back(Event::SessionUp {
            ccid,
            session_id: ours,
        });
    }

    fn on_iccn(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) {
        let ours = msg.remote_session_id().unwrap_or(0);
        let ccid = self.local_ccid;
        match self.own_session(ctx.sessions, ours) {
            Some(s) if s.state == SessionState::WaitConnect => {
                s.state = SessionState::Established;
                ctx.events.push_back(Event::SessionUp {
                    ccid,
                    session_id: ours,
                });
            }
            _ => {
                ctx.counters.protocol_errors += 1;
                let peer_sid = msg.local_session_id().unwrap_or(0);
                self.session_reject(
                    ctx,
                    0,
                    peer_sid,
                    cdn::GENERAL_ERROR,
                    error_code::INVALID_SESSION_ID,
                    "ICCN for an unknown session",
                );
            }
        }
    }

    fn on_cdn(&mut self, ctx: &mut Ctx<'_>, msg: &ControlMessage) {
        let ours = msg.remote_session_id().unwrap_or(0);
        let peer_sid = msg.local_session_id().unwrap_or(0);
        let sid = if ours != 0 {
            Some(ours)
        } else {
            // Refused before we had told our id: find it by the peer's.
            self.sessions.iter().copied().find(|s| {
                ctx.sessions
                    .get(s)
                    .is_some_and(|d| d.remote_sid == peer_sid)
            })
        };
        let Some(sid) = sid.filter(|s| self.sessions.contains(s)) else {
            ctx.counters.protocol_errors += 1;
            return;
        };
        let (result, error, message) = msg.result_code().unwrap_or((0, None, None));
        ctx.events.push_back(Event::PeerCdn {
            ccid: self.local_ccid,
            session_id: sid,
            result,
            error,
            message: message.clone(),
        });
        self.drop_session(
            ctx,
            sid,
            CloseReason::PeerCdn {
                result,
                error,
                message,
            },
        );
    }

    /// Tear a session down with a CDN.
    pub fn close_session(&mut self, ctx: &mut Ctx<'_>, sid: u32, result: u16, reason: CloseReason) {
        let Some(peer_sid) = ctx.sessions.get(&sid).map(|s| s.remote_sid) else {
            return;
        };
        self.send(
            MessageType::Cdn,
            vec![
                result_code(result, error_code::NONE, ""),
                Avp::LocalSessionId(sid),
                Avp::RemoteSessionId(peer_sid),
            ],
        );
        self.drop_session(ctx, sid, reason);
    }
}

fn result_code(result: u16, error: u16, message: &str) -> Avp {
    Avp::ResultCode {
        result,
        error: Some(error),
        message: (!message.is_empty()).then(|| message.to_string()),
    }
}

fn reparse(transport: Transport, raw: &[u8]) -> Option<ControlMessage> {
    match crate::wire::l2tp::parse(transport, raw).ok()? {
        crate::wire::l2tp::Packet::Control(c) => ControlMessage::parse(&c).ok(),
        crate::wire::l2tp::Packet::Data(_) => None,
    }
}
