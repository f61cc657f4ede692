//! L2TPv3 headers and AVPs (RFC 3931, RFC 4719).
//!
//! Control message header over UDP (RFC 3931 §3.2.1, §4.1.2.1):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |T|L|x|x|S|x|x|x|x|x|x|x|  Ver  |             Length            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Control Connection ID                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Ns              |               Nr              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Over IP (protocol 115) the same header follows a 32-bit zero Session ID.
//!
//! Data message over UDP: 16 bits of flags (T=0, Ver=3), 16 reserved bits,
//! then the 32-bit Session ID and the 0, 4 or 8-byte cookie. Over IP the
//! Session ID (never zero) comes first, then the cookie.
//!
//! AVP (RFC 3931 §5.1):
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |M|H| rsvd  |      Length       |           Vendor ID           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Attribute Type        |        Attribute Value ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::fmt;

/// UDP port of L2TP.
pub const L2TP_PORT: u16 = 1701;
/// IP protocol number of L2TPv3 over IP.
pub const IP_PROTO_L2TP: u8 = 115;
/// Control header length (flags..Nr), not counting the IP-mode zero session id.
pub const CONTROL_HEADER_LEN: usize = 12;
/// Length of an AVP header (M/H/length, vendor, attribute type).
pub const AVP_HEADER_LEN: usize = 6;

/// What carries the L2TP packet; it changes the header layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (port 1701 on the responder).
    Udp,
    /// Directly over IP, protocol 115.
    Ip,
}

/// Why bytes are not a well-formed L2TPv3 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet is shorter than its headers or its own length field.
    #[error("truncated")]
    Truncated,
    /// Version field is not 3.
    #[error("version {0} is not L2TPv3")]
    BadVersion(u8),
    /// The flag bits of a control message are not T=1 L=1 S=1.
    #[error("bad control flags {0:#06x}")]
    BadFlags(u16),
    /// An AVP's length is below 6 or runs past the message.
    #[error("bad AVP length")]
    BadAvpLength,
    /// A known AVP has a value of the wrong size or a reserved value.
    #[error("bad value for AVP {attr}")]
    BadAvpValue {
        /// Attribute type of the offending AVP.
        attr: u16,
    },
    /// The first AVP is not a Message Type AVP.
    #[error("first AVP is not Message Type")]
    NoMessageType,
    /// An AVP has the H (hidden) bit set; hiding needs a shared secret.
    #[error("hidden AVP {attr} without a shared secret")]
    HiddenAvp {
        /// Attribute type of the offending AVP.
        attr: u16,
    },
    /// A data message's session id is zero (over IP that means control).
    #[error("session id 0 in a data message")]
    ZeroSessionId,
}

/// Control message types (RFC 3931 §3.1, §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Start-Control-Connection-Request.
    Sccrq,
    /// Start-Control-Connection-Reply.
    Sccrp,
    /// Start-Control-Connection-Connected.
    Scccn,
    /// Stop-Control-Connection-Notification.
    StopCcn,
    /// Hello (keepalive).
    Hello,
    /// Incoming-Call-Request.
    Icrq,
    /// Incoming-Call-Reply.
    Icrp,
    /// Incoming-Call-Connected.
    Iccn,
    /// Call-Disconnect-Notify.
    Cdn,
    /// WAN-Error-Notify.
    Wen,
    /// Set-Link-Info.
    Sli,
    /// Explicit Acknowledgement.
    Ack,
    /// Any other code.
    Unknown(u16),
}

impl MessageType {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            MessageType::Sccrq => 1,
            MessageType::Sccrp => 2,
            MessageType::Scccn => 3,
            MessageType::StopCcn => 4,
            MessageType::Hello => 6,
            MessageType::Icrq => 10,
            MessageType::Icrp => 11,
            MessageType::Iccn => 12,
            MessageType::Cdn => 14,
            MessageType::Wen => 15,
            MessageType::Sli => 16,
            MessageType::Ack => 20,
            MessageType::Unknown(c) => c,
        }
    }
}

impl From<u16> for MessageType {
    fn from(code: u16) -> Self {
        match code {
            1 => MessageType::Sccrq,
            2 => MessageType::Sccrp,
            3 => MessageType::Scccn,
            4 => MessageType::StopCcn,
            6 => MessageType::Hello,
            10 => MessageType::Icrq,
            11 => MessageType::Icrp,
            12 => MessageType::Iccn,
            14 => MessageType::Cdn,
            15 => MessageType::Wen,
            16 => MessageType::Sli,
            20 => MessageType::Ack,
            c => MessageType::Unknown(c),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageType::Unknown(c) => write!(f, "type-{c}"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

/// Attribute types of the IETF AVPs tunterm knows (vendor 0).
pub mod attr {
    /// Message Type.
    pub const MESSAGE_TYPE: u16 = 0;
    /// Result Code.
    pub const RESULT_CODE: u16 = 1;
    /// Tie Breaker.
    pub const TIE_BREAKER: u16 = 5;
    /// Firmware Revision.
    pub const FIRMWARE_REVISION: u16 = 6;
    /// Host Name.
    pub const HOST_NAME: u16 = 7;
    /// Vendor Name.
    pub const VENDOR_NAME: u16 = 8;
    /// Receive Window Size.
    pub const RECEIVE_WINDOW_SIZE: u16 = 10;
    /// Serial Number.
    pub const SERIAL_NUMBER: u16 = 15;
    /// Router ID.
    pub const ROUTER_ID: u16 = 60;
    /// Assigned Control Connection ID.
    pub const ASSIGNED_CCID: u16 = 61;
    /// Pseudowire Capabilities List.
    pub const PW_CAPABILITIES: u16 = 62;
    /// Local Session ID.
    pub const LOCAL_SESSION_ID: u16 = 63;
    /// Remote Session ID.
    pub const REMOTE_SESSION_ID: u16 = 64;
    /// Assigned Cookie.
    pub const ASSIGNED_COOKIE: u16 = 65;
    /// Remote End ID.
    pub const REMOTE_END_ID: u16 = 66;
    /// Pseudowire Type.
    pub const PW_TYPE: u16 = 68;
    /// L2-Specific Sublayer.
    pub const L2_SPECIFIC_SUBLAYER: u16 = 69;
    /// Data Sequencing.
    pub const DATA_SEQUENCING: u16 = 70;
    /// Circuit Status.
    pub const CIRCUIT_STATUS: u16 = 71;
}

/// Pseudowire types (RFC 4446 / RFC 4719).
pub mod pw {
    /// Ethernet VLAN (tagged mode): every frame carries a service tag.
    pub const ETHERNET_VLAN: u16 = 0x0004;
    /// Ethernet (raw mode).
    pub const ETHERNET: u16 = 0x0005;
}

/// StopCCN result codes (RFC 3931 §5.4.2).
pub mod stopccn {
    /// General request to clear control connection.
    pub const CLEAR: u16 = 1;
    /// General error, Error Code indicates the problem.
    pub const GENERAL_ERROR: u16 = 2;
    /// Control connection already exists.
    pub const ALREADY_EXISTS: u16 = 3;
    /// Requester is not authorized to establish a control connection.
    pub const NOT_AUTHORIZED: u16 = 4;
    /// Requester is being shut down.
    pub const SHUTTING_DOWN: u16 = 6;
    /// Finite state machine error or timeout.
    pub const FSM_ERROR: u16 = 7;
}

/// CDN result codes (RFC 3931 §5.4.2).
pub mod cdn {
    /// Session disconnected due to loss of carrier or circuit disconnect.
    pub const LOST_CARRIER: u16 = 1;
    /// Session disconnected for the reason indicated in Error Code.
    pub const GENERAL_ERROR: u16 = 2;
    /// Session disconnected for administrative reasons.
    pub const ADMINISTRATIVE: u16 = 3;
    /// Session not established due to lack of appropriate facilities.
    pub const NO_FACILITIES: u16 = 4;
    /// Finite state machine error or timeout.
    pub const FSM_ERROR: u16 = 10;
    /// Pseudowire type not supported.
    pub const PW_TYPE_NOT_SUPPORTED: u16 = 14;
}

/// General error codes carried in a Result Code AVP (RFC 3931 §5.4.2).
pub mod error_code {
    /// No general error.
    pub const NONE: u16 = 0;
    /// No control connection exists yet for this pair of LCCEs.
    pub const NO_CONTROL_CONNECTION: u16 = 1;
    /// Length is wrong.
    pub const BAD_LENGTH: u16 = 2;
    /// One of the field values was out of range.
    pub const BAD_VALUE: u16 = 3;
    /// Insufficient resources to handle this operation now.
    pub const NO_RESOURCES: u16 = 4;
    /// Invalid Session ID.
    pub const INVALID_SESSION_ID: u16 = 5;
    /// A generic vendor-specific error occurred.
    pub const VENDOR_ERROR: u16 = 6;
    /// Try another.
    pub const TRY_ANOTHER: u16 = 7;
    /// Receipt of an unknown AVP with the M bit set.
    pub const UNKNOWN_MANDATORY_AVP: u16 = 8;
}

/// A 0, 4 or 8-byte L2TPv3 cookie, stored inline so the data path never
/// allocates.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cookie {
    len: u8,
    bytes: [u8; 8],
}

impl Cookie {
    /// The empty cookie.
    pub const NONE: Cookie = Cookie {
        len: 0,
        bytes: [0; 8],
    };

    /// A cookie from 0, 4 or 8 bytes; any other length is `None`.
    pub fn new(value: &[u8]) -> Option<Cookie> {
        match value.len() {
            0 | 4 | 8 => {
                let mut bytes = [0; 8];
                bytes[..value.len()].copy_from_slice(value);
                Some(Cookie {
                    len: value.len() as u8,
                    bytes,
                })
            }
            _ => None,
        }
    }

    /// The cookie's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Its length: 0, 4 or 8.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether this is the empty cookie.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie(")?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The fixed fields of a control message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlHeader {
    /// Control Connection ID of the receiver (0 in an SCCRQ).
    pub ccid: u32,
    /// Sequence number of this message.
    pub ns: u16,
    /// Next sequence number expected from the peer.
    pub nr: u16,
}

/// One L2TPv3 packet, classified as control or data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A control message (or a ZLB acknowledgement).
    Control(ControlPacket<'a>),
    /// A data message.
    Data(DataPacket<'a>),
}

/// A control message whose header has been checked; AVPs are not parsed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    /// The header.
    pub header: ControlHeader,
    /// The AVP area (header's Length field bounds it); empty for a ZLB.
    pub avps: &'a [u8],
}

/// A data message: the session id, then cookie + payload as one slice
/// (the cookie's length is per session, so only the session knows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPacket<'a> {
    /// Session ID (never 0).
    pub session_id: u32,
    /// Cookie (if any) followed by the payload.
    pub rest: &'a [u8],
}

/// One AVP as it is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAvp<'a> {
    /// The M (mandatory) bit.
    pub mandatory: bool,
    /// The H (hidden) bit.
    pub hidden: bool,
    /// Vendor ID (0 for IETF).
    pub vendor: u16,
    /// Attribute type.
    pub attr: u16,
    /// Attribute value.
    pub value: &'a [u8],
}

/// Iterator over the AVPs of a control message.
#[derive(Clone, Debug)]
pub struct AvpIter<'a> {
    rest: &'a [u8],
}

/// An AVP, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Avp {
    /// Result Code: result, optional error code, optional message.
    ResultCode {
        /// Result code (meaning depends on StopCCN vs CDN).
        result: u16,
        /// General error code.
        error: Option<u16>,
        /// Human-readable error message.
        message: Option<String>,
    },
    /// Tie Breaker (8 bytes).
    TieBreaker([u8; 8]),
    /// Firmware Revision.
    FirmwareRevision(u16),
    /// Host Name.
    HostName(Vec<u8>),
    /// Vendor Name.
    VendorName(Vec<u8>),
    /// Receive Window Size.
    ReceiveWindowSize(u16),
    /// Serial Number.
    SerialNumber(u32),
    /// Router ID.
    RouterId(u32),
    /// Assigned Control Connection ID.
    AssignedCcid(u32),
    /// Pseudowire Capabilities List.
    PwCapabilities(Vec<u16>),
    /// Local Session ID.
    LocalSessionId(u32),
    /// Remote Session ID.
    RemoteSessionId(u32),
    /// Assigned Cookie (4 or 8 bytes).
    AssignedCookie(Cookie),
    /// Remote End ID.
    RemoteEndId(Vec<u8>),
    /// Pseudowire Type.
    PwType(u16),
    /// L2-Specific Sublayer (0 none, 1 default).
    L2SpecificSublayer(u16),
    /// Data Sequencing (0 none, 1 non-IP, 2 all).
    DataSequencing(u16),
    /// Circuit Status: A (active) and N (new) bits.
    CircuitStatus {
        /// A bit: the circuit is up.
        active: bool,
        /// N bit: this is a new circuit.
        new: bool,
    },
    /// An AVP tunterm does not know (or a vendor AVP).
    Unknown {
        /// M bit.
        mandatory: bool,
        /// Vendor ID.
        vendor: u16,
        /// Attribute type.
        attr: u16,
        /// Raw value.
        value: Vec<u8>,
    },
}

/// A control message, typed: its type and the AVPs after Message Type,
/// in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlMessage {
    /// Message Type (the first AVP on the wire).
    pub msg_type: MessageType,
    /// The other AVPs.
    pub avps: Vec<Avp>,
}

/// T (type) bit of the first header word: set on control messages.
const FLAG_T: u16 = 0x8000;
/// T, L and S: the flag bits every control message carries.
const CONTROL_FLAGS: u16 = 0xC800;
/// Version nibble of the first header word.
const VERSION_MASK: u16 = 0x000F;
/// L2TPv3.
const VERSION: u8 = 3;
/// First header word of every control message tunterm sends: T, L, S, ver 3.
const CONTROL_FLAGS_WORD: u16 = CONTROL_FLAGS | VERSION as u16;
/// First header word of a data message over UDP: T clear, ver 3.
const DATA_FLAGS_WORD: u16 = VERSION as u16;
/// Data header over UDP before the cookie: flags, reserved, session id.
const UDP_DATA_HEADER_LEN: usize = 8;
/// Session ID that prefixes every packet over IP (0 for control).
const IP_SESSION_ID_LEN: usize = 4;

/// AVP header bits (RFC 3931 §5.1).
const AVP_M: u16 = 0x8000;
const AVP_H: u16 = 0x4000;
const AVP_LENGTH_MASK: u16 = 0x03FF;
/// The largest AVP the 10-bit Length field can describe.
const AVP_MAX_LEN: usize = AVP_LENGTH_MASK as usize;

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes
        .get(at..)?
        .first_chunk::<2>()
        .map(|b| u16::from_be_bytes(*b))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..)?
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b))
}

/// Split an L2TPv3 packet: `bytes` is the UDP payload ([`Transport::Udp`]) or
/// the IP payload of protocol 115 ([`Transport::Ip`]).
///
/// Control messages must be T=1 L=1 S=1, version 3; their Length field bounds
/// the message (bytes after it are ignored). Data messages must not carry
/// session id 0; their cookie and payload are left together in
/// [`DataPacket::rest`]. Never allocates, never panics.
pub fn parse(transport: Transport, bytes: &[u8]) -> Result<Packet<'_>, WireError> {
    match transport {
        Transport::Udp => {
            let flags = read_u16(bytes, 0).ok_or(WireError::Truncated)?;
            if flags & FLAG_T != 0 {
                return parse_control(bytes).map(Packet::Control);
            }
            let ver = (flags & VERSION_MASK) as u8;
            if ver != VERSION {
                return Err(WireError::BadVersion(ver));
            }
            let session_id = read_u32(bytes, 4).ok_or(WireError::Truncated)?;
            let rest = bytes
                .get(UDP_DATA_HEADER_LEN..)
                .ok_or(WireError::Truncated)?;
            data_packet(session_id, rest)
        }
        Transport::Ip => {
            let session_id = read_u32(bytes, 0).ok_or(WireError::Truncated)?;
            let rest = bytes.get(IP_SESSION_ID_LEN..).ok_or(WireError::Truncated)?;
            if session_id == 0 {
                parse_control(rest).map(Packet::Control)
            } else {
                data_packet(session_id, rest)
            }
        }
    }
}

fn data_packet(session_id: u32, rest: &[u8]) -> Result<Packet<'_>, WireError> {
    if session_id == 0 {
        return Err(WireError::ZeroSessionId);
    }
    Ok(Packet::Data(DataPacket { session_id, rest }))
}

/// The control header at the start of `bytes` (after the IP-mode zero
/// session id). The version is checked before the flags: another version may
/// lay its flags out differently.
fn parse_control(bytes: &[u8]) -> Result<ControlPacket<'_>, WireError> {
    let flags = read_u16(bytes, 0).ok_or(WireError::Truncated)?;
    let ver = (flags & VERSION_MASK) as u8;
    if ver != VERSION {
        return Err(WireError::BadVersion(ver));
    }
    // Reserved bits are ignored on receipt (RFC 3931 §3.2.1).
    if flags & CONTROL_FLAGS != CONTROL_FLAGS {
        return Err(WireError::BadFlags(flags));
    }
    let length = usize::from(read_u16(bytes, 2).ok_or(WireError::Truncated)?);
    if length < CONTROL_HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let msg = bytes.get(..length).ok_or(WireError::Truncated)?;
    let (Some(ccid), Some(ns), Some(nr), Some(avps)) = (
        read_u32(msg, 4),
        read_u16(msg, 8),
        read_u16(msg, 10),
        msg.get(CONTROL_HEADER_LEN..),
    ) else {
        return Err(WireError::Truncated);
    };
    Ok(ControlPacket {
        header: ControlHeader { ccid, ns, nr },
        avps,
    })
}

impl<'a> ControlPacket<'a> {
    /// Whether this is a Zero-Length Body acknowledgement (no AVPs at all).
    pub fn is_zlb(&self) -> bool {
        self.avps.is_empty()
    }

    /// The AVPs, Message Type included, as they are on the wire.
    pub fn avps(&self) -> AvpIter<'a> {
        AvpIter::new(self.avps)
    }
}

impl<'a> DataPacket<'a> {
    /// Split [`rest`](Self::rest) into the session's `cookie_len`-byte cookie
    /// and the payload; `Truncated` if the packet is shorter than the cookie.
    pub fn split_cookie(&self, cookie_len: usize) -> Result<(&'a [u8], &'a [u8]), WireError> {
        self.rest
            .split_at_checked(cookie_len)
            .ok_or(WireError::Truncated)
    }
}

impl<'a> AvpIter<'a> {
    /// Iterate over the AVPs packed in `bytes` (a control message's AVP area).
    pub fn new(bytes: &'a [u8]) -> AvpIter<'a> {
        AvpIter { rest: bytes }
    }
}

impl<'a> Iterator for AvpIter<'a> {
    type Item = Result<RawAvp<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(parsed) = split_avp(self.rest) else {
            // AVP lengths chain the whole area: after a bad one nothing
            // further can be located.
            self.rest = &[];
            return Some(Err(WireError::BadAvpLength));
        };
        let (raw, rest) = parsed;
        self.rest = rest;
        Some(Ok(raw))
    }
}

impl std::iter::FusedIterator for AvpIter<'_> {}

/// The AVP at the front of `bytes` and what follows it; `None` if its
/// Length field is below the header size or runs past `bytes`.
fn split_avp(bytes: &[u8]) -> Option<(RawAvp<'_>, &[u8])> {
    let word = read_u16(bytes, 0)?;
    let vendor = read_u16(bytes, 2)?;
    let attr = read_u16(bytes, 4)?;
    let len = usize::from(word & AVP_LENGTH_MASK);
    if len < AVP_HEADER_LEN {
        return None;
    }
    let (avp, rest) = bytes.split_at_checked(len)?;
    let value = avp.get(AVP_HEADER_LEN..)?;
    let raw = RawAvp {
        mandatory: word & AVP_M != 0,
        hidden: word & AVP_H != 0,
        vendor,
        attr,
        value,
    };
    Some((raw, rest))
}

/// Whether tunterm has a typed [`Avp`] variant for this IETF attribute.
fn is_known_attr(attr: u16) -> bool {
    matches!(
        attr,
        attr::RESULT_CODE
            | attr::TIE_BREAKER
            | attr::FIRMWARE_REVISION
            | attr::HOST_NAME
            | attr::VENDOR_NAME
            | attr::RECEIVE_WINDOW_SIZE
            | attr::SERIAL_NUMBER
            | attr::ROUTER_ID
            | attr::ASSIGNED_CCID
            | attr::PW_CAPABILITIES
            | attr::LOCAL_SESSION_ID
            | attr::REMOTE_SESSION_ID
            | attr::ASSIGNED_COOKIE
            | attr::REMOTE_END_ID
            | attr::PW_TYPE
            | attr::L2_SPECIFIC_SUBLAYER
            | attr::DATA_SEQUENCING
            | attr::CIRCUIT_STATUS
    )
}

/// Circuit Status bits (RFC 3931 §5.4.5).
const CIRCUIT_ACTIVE: u16 = 0x0001;
const CIRCUIT_NEW: u16 = 0x0002;

impl Avp {
    /// Typed view of a raw AVP.
    ///
    /// Known IETF attributes get their value size checked (`BadAvpValue`)
    /// and may not be hidden (`HiddenAvp`: unhiding needs the shared secret).
    /// A vendor AVP, an unknown attribute or Message Type (which
    /// [`ControlMessage::parse`] consumes first) comes back as
    /// [`Avp::Unknown`] with its value as on the wire, hidden or not, so the
    /// caller can still honour its M bit.
    pub fn from_raw(raw: &RawAvp<'_>) -> Result<Avp, WireError> {
        if raw.vendor != 0 || !is_known_attr(raw.attr) {
            return Ok(Avp::Unknown {
                mandatory: raw.mandatory,
                vendor: raw.vendor,
                attr: raw.attr,
                value: raw.value.to_vec(),
            });
        }
        let attr = raw.attr;
        if raw.hidden {
            return Err(WireError::HiddenAvp { attr });
        }
        let bad = WireError::BadAvpValue { attr };
        let v = raw.value;
        let u16_value = || {
            <[u8; 2]>::try_from(v)
                .map(u16::from_be_bytes)
                .map_err(|_| bad)
        };
        let u32_value = || {
            <[u8; 4]>::try_from(v)
                .map(u32::from_be_bytes)
                .map_err(|_| bad)
        };
        Ok(match attr {
            attr::RESULT_CODE => {
                let result = read_u16(v, 0).ok_or(bad)?;
                // The error code is optional, but not half of one.
                let error = match v.len() {
                    2 => None,
                    3 => return Err(bad),
                    _ => read_u16(v, 2),
                };
                let message = v
                    .get(4..)
                    .filter(|m| !m.is_empty())
                    .map(|m| String::from_utf8_lossy(m).into_owned());
                Avp::ResultCode {
                    result,
                    error,
                    message,
                }
            }
            attr::TIE_BREAKER => Avp::TieBreaker(<[u8; 8]>::try_from(v).map_err(|_| bad)?),
            attr::FIRMWARE_REVISION => Avp::FirmwareRevision(u16_value()?),
            attr::HOST_NAME => Avp::HostName(v.to_vec()),
            attr::VENDOR_NAME => Avp::VendorName(v.to_vec()),
            attr::RECEIVE_WINDOW_SIZE => Avp::ReceiveWindowSize(u16_value()?),
            attr::SERIAL_NUMBER => Avp::SerialNumber(u32_value()?),
            attr::ROUTER_ID => Avp::RouterId(u32_value()?),
            attr::ASSIGNED_CCID => Avp::AssignedCcid(u32_value()?),
            attr::PW_CAPABILITIES => {
                let (pairs, odd) = v.as_chunks::<2>();
                if !odd.is_empty() {
                    return Err(bad);
                }
                Avp::PwCapabilities(pairs.iter().map(|p| u16::from_be_bytes(*p)).collect())
            }
            attr::LOCAL_SESSION_ID => Avp::LocalSessionId(u32_value()?),
            attr::REMOTE_SESSION_ID => Avp::RemoteSessionId(u32_value()?),
            attr::ASSIGNED_COOKIE => match v.len() {
                4 | 8 => Avp::AssignedCookie(Cookie::new(v).ok_or(bad)?),
                _ => return Err(bad),
            },
            attr::REMOTE_END_ID => Avp::RemoteEndId(v.to_vec()),
            attr::PW_TYPE => Avp::PwType(u16_value()?),
            attr::L2_SPECIFIC_SUBLAYER => Avp::L2SpecificSublayer(u16_value()?),
            attr::DATA_SEQUENCING => Avp::DataSequencing(u16_value()?),
            attr::CIRCUIT_STATUS => {
                let bits = u16_value()?;
                Avp::CircuitStatus {
                    active: bits & CIRCUIT_ACTIVE != 0,
                    new: bits & CIRCUIT_NEW != 0,
                }
            }
            // is_known_attr and this match list the same attributes.
            _ => {
                return Ok(Avp::Unknown {
                    mandatory: raw.mandatory,
                    vendor: raw.vendor,
                    attr,
                    value: v.to_vec(),
                });
            }
        })
    }

    /// (Vendor ID, attribute type) of this AVP.
    pub fn id(&self) -> (u16, u16) {
        let attr = match self {
            Avp::ResultCode { .. } => attr::RESULT_CODE,
            Avp::TieBreaker(_) => attr::TIE_BREAKER,
            Avp::FirmwareRevision(_) => attr::FIRMWARE_REVISION,
            Avp::HostName(_) => attr::HOST_NAME,
            Avp::VendorName(_) => attr::VENDOR_NAME,
            Avp::ReceiveWindowSize(_) => attr::RECEIVE_WINDOW_SIZE,
            Avp::SerialNumber(_) => attr::SERIAL_NUMBER,
            Avp::RouterId(_) => attr::ROUTER_ID,
            Avp::AssignedCcid(_) => attr::ASSIGNED_CCID,
            Avp::PwCapabilities(_) => attr::PW_CAPABILITIES,
            Avp::LocalSessionId(_) => attr::LOCAL_SESSION_ID,
            Avp::RemoteSessionId(_) => attr::REMOTE_SESSION_ID,
            Avp::AssignedCookie(_) => attr::ASSIGNED_COOKIE,
            Avp::RemoteEndId(_) => attr::REMOTE_END_ID,
            Avp::PwType(_) => attr::PW_TYPE,
            Avp::L2SpecificSublayer(_) => attr::L2_SPECIFIC_SUBLAYER,
            Avp::DataSequencing(_) => attr::DATA_SEQUENCING,
            Avp::CircuitStatus { .. } => attr::CIRCUIT_STATUS,
            Avp::Unknown { vendor, attr, .. } => return (*vendor, *attr),
        };
        (0, attr)
    }

    /// The M bit this AVP is sent with: what RFC 3931 §5.4 gives each
    /// attribute; an [`Avp::Unknown`] keeps its own.
    pub fn mandatory(&self) -> bool {
        match self {
            Avp::TieBreaker(_) | Avp::FirmwareRevision(_) | Avp::VendorName(_) => false,
            Avp::Unknown { mandatory, .. } => *mandatory,
            _ => true,
        }
    }

    /// Append this AVP (header + value) to `out`, H bit clear.
    ///
    /// A value longer than the 10-bit Length field allows (1017 bytes) is cut
    /// short; a PW Capabilities list keeps its first 508 entries.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let (vendor, attr) = self.id();
        push_avp(out, self.mandatory(), vendor, attr, |out| match self {
            Avp::ResultCode {
                result,
                error,
                message,
            } => {
                out.extend_from_slice(&result.to_be_bytes());
                // A message can only follow an error code.
                if error.is_some() || message.is_some() {
                    out.extend_from_slice(&error.unwrap_or(error_code::NONE).to_be_bytes());
                }
                if let Some(m) = message {
                    out.extend_from_slice(m.as_bytes());
                }
            }
            Avp::TieBreaker(t) => out.extend_from_slice(t),
            Avp::HostName(b) | Avp::VendorName(b) | Avp::RemoteEndId(b) => out.extend_from_slice(b),
            Avp::Unknown { value, .. } => out.extend_from_slice(value),
            Avp::FirmwareRevision(x)
            | Avp::ReceiveWindowSize(x)
            | Avp::PwType(x)
            | Avp::L2SpecificSublayer(x)
            | Avp::DataSequencing(x) => out.extend_from_slice(&x.to_be_bytes()),
            Avp::SerialNumber(x)
            | Avp::RouterId(x)
            | Avp::AssignedCcid(x)
            | Avp::LocalSessionId(x)
            | Avp::RemoteSessionId(x) => out.extend_from_slice(&x.to_be_bytes()),
            Avp::PwCapabilities(caps) => {
                for c in caps.iter().take((AVP_MAX_LEN - AVP_HEADER_LEN) / 2) {
                    out.extend_from_slice(&c.to_be_bytes());
                }
            }
            Avp::AssignedCookie(c) => out.extend_from_slice(c.as_slice()),
            Avp::CircuitStatus { active, new } => {
                let bits =
                    if *active { CIRCUIT_ACTIVE } else { 0 } | if *new { CIRCUIT_NEW } else { 0 };
                out.extend_from_slice(&bits.to_be_bytes());
            }
        });
    }
}

/// Append one AVP whose value `value` writes, then fill in its Length.
fn push_avp(
    out: &mut Vec<u8>,
    mandatory: bool,
    vendor: u16,
    attr: u16,
    value: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&vendor.to_be_bytes());
    out.extend_from_slice(&attr.to_be_bytes());
    value(out);
    out.truncate(start + AVP_MAX_LEN);
    let len = (out.len() - start) as u16;
    let word = if mandatory { AVP_M } else { 0 } | len;
    out[start..start + 2].copy_from_slice(&word.to_be_bytes());
}

/// Append the IP-mode prefix (if any) and a control header with Length 0;
/// returns where the control header starts, for [`set_control_length`].
fn push_control_header(transport: Transport, header: ControlHeader, out: &mut Vec<u8>) -> usize {
    if transport == Transport::Ip {
        out.extend_from_slice(&[0; IP_SESSION_ID_LEN]);
    }
    let start = out.len();
    out.extend_from_slice(&CONTROL_FLAGS_WORD.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&header.ccid.to_be_bytes());
    out.extend_from_slice(&header.ns.to_be_bytes());
    out.extend_from_slice(&header.nr.to_be_bytes());
    start
}

/// Fill in the Length of the control header at `start`: everything from
/// there to the end of `out` (callers keep it within 16 bits).
fn set_control_length(out: &mut [u8], start: usize) {
    let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

impl ControlMessage {
    /// Type the AVPs of a checked control packet. The first AVP must be
    /// Message Type (vendor 0, attribute 0, 2-byte value), else
    /// `NoMessageType` (a ZLB has none); the others go through
    /// [`Avp::from_raw`], in wire order, and the first error wins.
    pub fn parse(packet: &ControlPacket<'_>) -> Result<ControlMessage, WireError> {
        let mut avps = packet.avps();
        let first = avps.next().ok_or(WireError::NoMessageType)??;
        if first.vendor != 0 || first.attr != attr::MESSAGE_TYPE {
            return Err(WireError::NoMessageType);
        }
        if first.hidden {
            return Err(WireError::HiddenAvp {
                attr: attr::MESSAGE_TYPE,
            });
        }
        let code = <[u8; 2]>::try_from(first.value)
            .map(u16::from_be_bytes)
            .map_err(|_| WireError::NoMessageType)?;
        let avps = avps
            .map(|raw| raw.and_then(|raw| Avp::from_raw(&raw)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ControlMessage {
            msg_type: MessageType::from(code),
            avps,
        })
    }

    /// Append the whole packet to `out`: over IP the zero session id, then
    /// the control header (T, L, S, version 3; ccid, Ns and Nr from
    /// `header`; Length counting from the control header), the Message Type
    /// AVP and the other AVPs in order. AVPs that would push the message
    /// past the 16-bit Length are left out.
    pub fn emit(&self, transport: Transport, header: ControlHeader, out: &mut Vec<u8>) {
        let start = push_control_header(transport, header, out);
        push_avp(out, true, 0, attr::MESSAGE_TYPE, |out| {
            out.extend_from_slice(&self.msg_type.code().to_be_bytes())
        });
        for avp in &self.avps {
            let before = out.len();
            avp.emit(out);
            if out.len() - start > usize::from(u16::MAX) {
                out.truncate(before);
                break;
            }
        }
        set_control_length(out, start);
    }

    /// The first AVP with the M bit set that tunterm does not understand, as
    /// (vendor, attribute): RFC 3931 §5.2 says to tear down the session or
    /// control connection that carried it.
    pub fn unknown_mandatory(&self) -> Option<(u16, u16)> {
        self.avps.iter().find_map(|a| match a {
            Avp::Unknown {
                mandatory: true,
                vendor,
                attr,
                ..
            } => Some((*vendor, *attr)),
            _ => None,
        })
    }

    /// The first AVP for which `f` returns `Some`, e.g.
    /// `msg.get(|a| match a { Avp::AssignedCcid(v) => Some(*v), _ => None })`.
    pub fn get<T>(&self, f: impl Fn(&Avp) -> Option<T>) -> Option<T> {
        self.avps.iter().find_map(f)
    }
}

/// Typed accessors: the value of the first AVP of each kind.
macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident -> $ty:ty = $pat:pat => $val:expr;)*) => {
        impl ControlMessage {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Option<$ty> {
                    self.get(|a| match a {
                        $pat => Some($val),
                        _ => None,
                    })
                }
            )*
        }
    };
}

accessors! {
    /// Host Name, lossy UTF-8.
    host_name -> String = Avp::HostName(h) => String::from_utf8_lossy(h).into_owned();
    /// Router ID.
    router_id -> u32 = Avp::RouterId(r) => *r;
    /// Assigned Control Connection ID.
    assigned_ccid -> u32 = Avp::AssignedCcid(c) => *c;
    /// Pseudowire Capabilities List.
    pw_capabilities -> Vec<u16> = Avp::PwCapabilities(c) => c.clone();
    /// Receive Window Size.
    receive_window_size -> u16 = Avp::ReceiveWindowSize(w) => *w;
    /// Local Session ID (the sender's session id).
    local_session_id -> u32 = Avp::LocalSessionId(s) => *s;
    /// Remote Session ID (the receiver's session id).
    remote_session_id -> u32 = Avp::RemoteSessionId(s) => *s;
    /// Pseudowire Type.
    pw_type -> u16 = Avp::PwType(t) => *t;
    /// Remote End ID, lossy UTF-8.
    remote_end_id -> String = Avp::RemoteEndId(r) => String::from_utf8_lossy(r).into_owned();
    /// Assigned Cookie.
    assigned_cookie -> Cookie = Avp::AssignedCookie(c) => *c;
    /// L2-Specific Sublayer (0 none, 1 default).
    l2_specific_sublayer -> u16 = Avp::L2SpecificSublayer(v) => *v;
    /// Data Sequencing (0 none, 1 non-IP, 2 all).
    data_sequencing -> u16 = Avp::DataSequencing(v) => *v;
    /// Result Code: (result, error, message).
    result_code -> (u16, Option<u16>, Option<String>) =
        Avp::ResultCode { result, error, message } => (*result, *error, message.clone());
}

/// Append a ZLB acknowledgement: the control header alone (over IP after
/// the zero session id), Length 12.
pub fn emit_zlb(transport: Transport, header: ControlHeader, out: &mut Vec<u8>) {
    let start = push_control_header(transport, header, out);
    set_control_length(out, start);
}

/// Length of the default L2-Specific Sublayer (RFC 4719 §3.2).
pub const SUBLAYER_LEN: usize = 4;

/// Mask of the 24-bit sequence number space of the default sublayer.
pub const SUBLAYER_SEQ_MASK: u32 = 0x00ff_ffff;

/// Write the default L2-Specific Sublayer into `out[..4]`:
///
/// ```text
/// |x|S|x|x|x|x|x|x|              Sequence Number                  |
/// ```
///
/// `seq: Some(n)` sets the S bit with sequence number `n` (24 bits);
/// `None` sends the sublayer without sequencing. Returns 4, or 0 when `out`
/// is too short.
pub fn emit_sublayer(seq: Option<u32>, out: &mut [u8]) -> usize {
    let Some(b) = out.get_mut(..SUBLAYER_LEN) else {
        return 0;
    };
    let word = match seq {
        Some(n) => 0x4000_0000 | (n & SUBLAYER_SEQ_MASK),
        None => 0,
    };
    b.copy_from_slice(&word.to_be_bytes());
    SUBLAYER_LEN
}

/// Read the default L2-Specific Sublayer at the start of `b`: the sequence
/// number when the S bit is set. `None` if `b` is shorter than 4 bytes.
pub fn parse_sublayer(b: &[u8]) -> Option<Option<u32>> {
    let w = u32::from_be_bytes(b.get(..SUBLAYER_LEN)?.try_into().ok()?);
    Some((w & 0x4000_0000 != 0).then_some(w & SUBLAYER_SEQ_MASK))
}

/// Bytes of data-message header before the payload: over UDP 8 + cookie,
/// over IP 4 + cookie.
pub fn data_header_len(transport: Transport, cookie_len: usize) -> usize {
    let fixed = match transport {
        Transport::Udp => UDP_DATA_HEADER_LEN,
        Transport::Ip => IP_SESSION_ID_LEN,
    };
    fixed.saturating_add(cookie_len)
}

/// Write a data-message header into the front of `out` and return its
/// length ([`data_header_len`]). Over UDP: flags 0x0003 (T=0, version 3),
/// 16 reserved bits, session id, cookie; over IP: session id, cookie. The
/// session id must not be 0 (over IP that would read as control).
///
/// If `out` is shorter than the header nothing is written and 0 is returned.
pub fn emit_data_header(
    transport: Transport,
    session_id: u32,
    cookie: &Cookie,
    out: &mut [u8],
) -> usize {
    let len = data_header_len(transport, cookie.len());
    let Some(hdr) = out.get_mut(..len) else {
        return 0;
    };
    let after_sid = match transport {
        Transport::Udp => {
            hdr[0..2].copy_from_slice(&DATA_FLAGS_WORD.to_be_bytes());
            hdr[2..4].copy_from_slice(&[0, 0]);
            hdr[4..8].copy_from_slice(&session_id.to_be_bytes());
            UDP_DATA_HEADER_LEN
        }
        Transport::Ip => {
            hdr[0..4].copy_from_slice(&session_id.to_be_bytes());
            IP_SESSION_ID_LEN
        }
    };
    hdr[after_sid..].copy_from_slice(cookie.as_slice());
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    // Control messages over UDP, built by hand from RFC 3931 §3.2.1, §5 and
    // §6. Each must survive parse → emit unchanged.

    /// SCCRQ, ccid 0, Ns 0, Nr 0: Host Name "lac1", Router ID 10.0.0.1,
    /// Assigned CCID 0x12345678, PW Capabilities [Ethernet, Ethernet VLAN],
    /// Receive Window Size 4.
    static SCCRQ: [u8; 68] = [
        0xc8, 0x03, 0x00, 0x44, // T L S, ver 3, Length 68
        0x00, 0x00, 0x00, 0x00, // ccid 0
        0x00, 0x00, 0x00, 0x00, // Ns 0, Nr 0
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // Message Type SCCRQ
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x07, b'l', b'a', b'c', b'1', // Host Name
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3c, 0x0a, 0x00, 0x00, 0x01, // Router ID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3d, 0x12, 0x34, 0x56, 0x78, // Assigned CCID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3e, 0x00, 0x05, 0x00, 0x04, // PW Capabilities
        0x80, 0x08, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x04, // Receive Window Size
    ];

    /// SCCRP, ccid 0x12345678, Ns 0, Nr 1, with the M=0 AVPs and a vendor
    /// AVP: Host Name "lns", Router ID 10.0.0.2, Assigned CCID 0xabcd,
    /// PW Capabilities [Ethernet], Tie Breaker, Firmware Revision 0x0102,
    /// Vendor Name "tunterm", and attribute 1 of vendor 32473 (the RFC 5612
    /// documentation enterprise number), M=0.
    static SCCRP: [u8; 100] = [
        0xc8, 0x03, 0x00, 0x64, // Length 100
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x00, 0x00, 0x01, // Ns 0, Nr 1
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // Message Type SCCRP
        0x80, 0x09, 0x00, 0x00, 0x00, 0x07, b'l', b'n', b's', // Host Name
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3c, 0x0a, 0x00, 0x00, 0x02, // Router ID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0xab, 0xcd, // Assigned CCID
        0x80, 0x08, 0x00, 0x00, 0x00, 0x3e, 0x00, 0x05, // PW Capabilities
        0x00, 0x0e, 0x00, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, // Tie Breaker
        0x00, 0x08, 0x00, 0x00, 0x00, 0x06, 0x01, 0x02, // Firmware Revision
        0x00, 0x0d, 0x00, 0x00, 0x00, 0x08, b't', b'u', b'n', b't', b'e', b'r',
        b'm', // Vendor Name
        0x00, 0x08, 0x7e, 0xd9, 0x00, 0x01, 0x01, 0x02, // vendor 32473 attr 1
    ];

    /// ICRQ, ccid 0x12345678, Ns 1, Nr 1: Local Session ID 0xaabbccdd,
    /// Remote Session ID 0, Serial Number 7, PW Type Ethernet, Remote End ID
    /// "lab", Circuit Status A=1 N=1, Assigned Cookie deadbeef, L2-Specific
    /// Sublayer 0, Data Sequencing 0.
    static ICRQ: [u8; 101] = [
        0xc8, 0x03, 0x00, 0x65, // Length 101
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x01, 0x00, 0x01, // Ns 1, Nr 1
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // Message Type ICRQ
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3f, 0xaa, 0xbb, 0xcc, 0xdd, // Local Session ID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, // Remote Session ID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x07, // Serial Number
        0x80, 0x08, 0x00, 0x00, 0x00, 0x44, 0x00, 0x05, // PW Type
        0x80, 0x09, 0x00, 0x00, 0x00, 0x42, b'l', b'a', b'b', // Remote End ID
        0x80, 0x08, 0x00, 0x00, 0x00, 0x47, 0x00, 0x03, // Circuit Status
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x41, 0xde, 0xad, 0xbe, 0xef, // Assigned Cookie
        0x80, 0x08, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, // L2-Specific Sublayer
        0x80, 0x08, 0x00, 0x00, 0x00, 0x46, 0x00, 0x00, // Data Sequencing
    ];

    /// ICRP with an 8-byte Assigned Cookie and Circuit Status A=1 N=0.
    static ICRP: [u8; 62] = [
        0xc8, 0x03, 0x00, 0x3e, // Length 62
        0x00, 0x00, 0xab, 0xcd, // ccid
        0x00, 0x01, 0x00, 0x02, // Ns 1, Nr 2
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0b, // Message Type ICRP
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x10, 0x01, // Local Session ID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x40, 0xaa, 0xbb, 0xcc, 0xdd, // Remote Session ID
        0x80, 0x08, 0x00, 0x00, 0x00, 0x47, 0x00, 0x01, // Circuit Status
        0x80, 0x0e, 0x00, 0x00, 0x00, 0x41, 1, 2, 3, 4, 5, 6, 7, 8, // Assigned Cookie
    ];

    /// StopCCN, ccid 0x12345678, Ns 2, Nr 3: Assigned CCID 0xabcd, Result
    /// Code 2 (general error), error 6 (vendor error), message "bye".
    static STOPCCN: [u8; 43] = [
        0xc8, 0x03, 0x00, 0x2b, // Length 43
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x02, 0x00, 0x03, // Ns 2, Nr 3
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, // Message Type StopCCN
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0xab, 0xcd, // Assigned CCID
        0x80, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x06, b'b', b'y',
        b'e', // Result Code
    ];

    /// CDN, Result Code 3 (administrative) without error code, session ids.
    static CDN: [u8; 48] = [
        0xc8, 0x03, 0x00, 0x30, // Length 48
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x04, 0x00, 0x05, // Ns 4, Nr 5
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0e, // Message Type CDN
        0x80, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, // Result Code
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x01, // Local Session ID
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x02, // Remote Session ID
    ];

    /// Hello: Message Type alone.
    static HELLO: [u8; 20] = [
        0xc8, 0x03, 0x00, 0x14, // Length 20
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x05, 0x00, 0x06, // Ns 5, Nr 6
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, // Message Type Hello
    ];

    /// ICCN carrying IETF attribute 99 (TDM Pseudowire, RFC 5611, which
    /// tunterm does not know) with M=1 and a vendor AVP (vendor 32473,
    /// attribute 2) without.
    static ICCN_UNKNOWN_M: [u8; 56] = [
        0xc8, 0x03, 0x00, 0x38, // Length 56
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x02, 0x00, 0x02, // Ns 2, Nr 2
        0x80, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, // Message Type ICCN
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x3f, 0xaa, 0xbb, 0xcc, 0xdd, // Local Session ID
        0x00, 0x09, 0x7e, 0xd9, 0x00, 0x02, 0x61, 0x62, 0x63, // vendor 32473 attr 2, M=0
        0x80, 0x07, 0x00, 0x00, 0x00, 0x63, 0x01, // attr 99, M=1
        0x80, 0x0a, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x10, 0x01, // Remote Session ID
    ];

    /// ZLB acknowledgement, ccid 0x12345678, Ns 3, Nr 5.
    static ZLB: [u8; 12] = [
        0xc8, 0x03, 0x00, 0x0c, // Length 12
        0x12, 0x34, 0x56, 0x78, // ccid
        0x00, 0x03, 0x00, 0x05, // Ns 3, Nr 5
    ];

    /// Start of an Ethernet frame: broadcast ARP from 02:00:00:00:00:01.
    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Data over UDP, session 0x2a, no cookie.
    static DATA_UDP: [u8; 24] = [
        0x00, 0x03, 0x00, 0x00, // T=0, ver 3, reserved
        0x00, 0x00, 0x00, 0x2a, // session id
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Data over UDP, session 0x2a, cookie deadbeef.
    static DATA_UDP_COOKIE4: [u8; 28] = [
        0x00, 0x03, 0x00, 0x00, // T=0, ver 3, reserved
        0x00, 0x00, 0x00, 0x2a, // session id
        0xde, 0xad, 0xbe, 0xef, // cookie
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Data over UDP, session 0xaabbccdd, cookie 0102030405060708.
    static DATA_UDP_COOKIE8: [u8; 32] = [
        0x00, 0x03, 0x00, 0x00, // T=0, ver 3, reserved
        0xaa, 0xbb, 0xcc, 0xdd, // session id
        1, 2, 3, 4, 5, 6, 7, 8, // cookie
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Data over IP, session 0x2a, no cookie.
    static DATA_IP: [u8; 20] = [
        0x00, 0x00, 0x00, 0x2a, // session id
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Data over IP, session 0x2a, cookie deadbeef.
    static DATA_IP_COOKIE4: [u8; 24] = [
        0x00, 0x00, 0x00, 0x2a, // session id
        0xde, 0xad, 0xbe, 0xef, // cookie
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Data over IP, session 0xaabbccdd, cookie 0102030405060708.
    static DATA_IP_COOKIE8: [u8; 28] = [
        0xaa, 0xbb, 0xcc, 0xdd, // session id
        1, 2, 3, 4, 5, 6, 7, 8, // cookie
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    /// Every control literal above (over UDP).
    fn control_vectors() -> [&'static [u8]; 9] {
        [
            &SCCRQ,
            &SCCRP,
            &ICRQ,
            &ICRP,
            &STOPCCN,
            &CDN,
            &HELLO,
            &ICCN_UNKNOWN_M,
            &ZLB,
        ]
    }

    /// Data literals: (transport, bytes, session id, cookie).
    fn data_vectors() -> [(Transport, &'static [u8], u32, Cookie); 6] {
        let c4 = Cookie::new(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
        let c8 = Cookie::new(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        [
            (Transport::Udp, &DATA_UDP, 0x2a, Cookie::NONE),
            (Transport::Udp, &DATA_UDP_COOKIE4, 0x2a, c4),
            (Transport::Udp, &DATA_UDP_COOKIE8, 0xaabbccdd, c8),
            (Transport::Ip, &DATA_IP, 0x2a, Cookie::NONE),
            (Transport::Ip, &DATA_IP_COOKIE4, 0x2a, c4),
            (Transport::Ip, &DATA_IP_COOKIE8, 0xaabbccdd, c8),
        ]
    }

    /// The IP-mode form of a UDP control literal: the zero session id first.
    fn over_ip(udp: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(udp);
        v
    }

    fn control(transport: Transport, bytes: &[u8]) -> ControlPacket<'_> {
        match parse(transport, bytes) {
            Ok(Packet::Control(c)) => c,
            other => panic!("not a control packet: {other:?}"),
        }
    }

    fn message(transport: Transport, bytes: &[u8]) -> (ControlHeader, ControlMessage) {
        let c = control(transport, bytes);
        (c.header, ControlMessage::parse(&c).unwrap())
    }

    fn emitted(transport: Transport, header: ControlHeader, msg: &ControlMessage) -> Vec<u8> {
        let mut out = Vec::new();
        msg.emit(transport, header, &mut out);
        out
    }

    /// The parse outcome for `bytes`, down to the typed message, without
    /// panicking on errors.
    fn parse_all(transport: Transport, bytes: &[u8]) -> Result<Option<ControlMessage>, WireError> {
        match parse(transport, bytes)? {
            Packet::Control(c) if c.is_zlb() => Ok(None),
            Packet::Control(c) => ControlMessage::parse(&c).map(Some),
            Packet::Data(_) => Ok(None),
        }
    }

    /// `bytes` with its first `n` bytes replaced by `prefix`.
    fn patched(bytes: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[at..at + patch.len()].copy_from_slice(patch);
        v
    }

    #[test]
    fn control_vectors_round_trip_over_both_transports() {
        for udp in control_vectors() {
            for (transport, bytes) in [
                (Transport::Udp, udp.to_vec()),
                (Transport::Ip, over_ip(udp)),
            ] {
                let c = control(transport, &bytes);
                let mut out = Vec::new();
                if c.is_zlb() {
                    assert_eq!(ControlMessage::parse(&c), Err(WireError::NoMessageType));
                    emit_zlb(transport, c.header, &mut out);
                } else {
                    ControlMessage::parse(&c)
                        .unwrap()
                        .emit(transport, c.header, &mut out);
                }
                assert_eq!(out, bytes, "{transport:?} {udp:02x?}");
            }
        }
    }

    #[test]
    fn emit_appends_after_existing_bytes() {
        let (header, msg) = message(Transport::Udp, &HELLO);
        let mut out = vec![0xee; 3];
        msg.emit(Transport::Ip, header, &mut out);
        assert_eq!(out[..3], [0xee; 3]);
        assert_eq!(out[3..], over_ip(&HELLO)[..]);
        let mut out = vec![0xee];
        emit_zlb(
            Transport::Udp,
            control(Transport::Udp, &ZLB).header,
            &mut out,
        );
        assert_eq!(out[1..], ZLB);
    }

    #[test]
    fn sccrq_fields() {
        let (header, msg) = message(Transport::Udp, &SCCRQ);
        assert_eq!(
            header,
            ControlHeader {
                ccid: 0,
                ns: 0,
                nr: 0
            }
        );
        assert_eq!(msg.msg_type, MessageType::Sccrq);
        assert_eq!(
            msg.avps,
            vec![
                Avp::HostName(b"lac1".to_vec()),
                Avp::RouterId(0x0a00_0001),
                Avp::AssignedCcid(0x1234_5678),
                Avp::PwCapabilities(vec![pw::ETHERNET, pw::ETHERNET_VLAN]),
                Avp::ReceiveWindowSize(4),
            ]
        );
        assert_eq!(
            msg.get(|a| match a {
                Avp::AssignedCcid(v) => Some(*v),
                _ => None,
            }),
            Some(0x1234_5678)
        );
        assert_eq!(
            msg.get(|a| match a {
                Avp::TieBreaker(t) => Some(*t),
                _ => None,
            }),
            None
        );
        assert_eq!(msg.unknown_mandatory(), None);
    }

    #[test]
    fn sccrp_fields_and_non_mandatory_avps() {
        let (header, msg) = message(Transport::Udp, &SCCRP);
        assert_eq!(
            header,
            ControlHeader {
                ccid: 0x1234_5678,
                ns: 0,
                nr: 1
            }
        );
        assert_eq!(msg.msg_type, MessageType::Sccrp);
        assert_eq!(
            msg.avps,
            vec![
                Avp::HostName(b"lns".to_vec()),
                Avp::RouterId(0x0a00_0002),
                Avp::AssignedCcid(0xabcd),
                Avp::PwCapabilities(vec![pw::ETHERNET]),
                Avp::TieBreaker([1, 2, 3, 4, 5, 6, 7, 8]),
                Avp::FirmwareRevision(0x0102),
                Avp::VendorName(b"tunterm".to_vec()),
                Avp::Unknown {
                    mandatory: false,
                    vendor: 32473,
                    attr: 1,
                    value: vec![1, 2],
                },
            ]
        );
        assert_eq!(msg.unknown_mandatory(), None);
    }

    #[test]
    fn icrq_and_icrp_fields() {
        let (_, icrq) = message(Transport::Udp, &ICRQ);
        assert_eq!(icrq.msg_type, MessageType::Icrq);
        assert_eq!(
            icrq.avps,
            vec![
                Avp::LocalSessionId(0xaabb_ccdd),
                Avp::RemoteSessionId(0),
                Avp::SerialNumber(7),
                Avp::PwType(pw::ETHERNET),
                Avp::RemoteEndId(b"lab".to_vec()),
                Avp::CircuitStatus {
                    active: true,
                    new: true
                },
                Avp::AssignedCookie(Cookie::new(&[0xde, 0xad, 0xbe, 0xef]).unwrap()),
                Avp::L2SpecificSublayer(0),
                Avp::DataSequencing(0),
            ]
        );
        let (_, icrp) = message(Transport::Udp, &ICRP);
        assert_eq!(icrp.msg_type, MessageType::Icrp);
        assert_eq!(
            icrp.avps,
            vec![
                Avp::LocalSessionId(0x1001),
                Avp::RemoteSessionId(0xaabb_ccdd),
                Avp::CircuitStatus {
                    active: true,
                    new: false
                },
                Avp::AssignedCookie(Cookie::new(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap()),
            ]
        );
    }

    #[test]
    fn result_codes() {
        let (header, stop) = message(Transport::Udp, &STOPCCN);
        assert_eq!(
            header,
            ControlHeader {
                ccid: 0x1234_5678,
                ns: 2,
                nr: 3
            }
        );
        assert_eq!(stop.msg_type, MessageType::StopCcn);
        assert_eq!(
            stop.avps[1],
            Avp::ResultCode {
                result: stopccn::GENERAL_ERROR,
                error: Some(error_code::VENDOR_ERROR),
                message: Some("bye".into()),
            }
        );
        let (_, cdn_msg) = message(Transport::Udp, &CDN);
        assert_eq!(cdn_msg.msg_type, MessageType::Cdn);
        assert_eq!(
            cdn_msg.avps[0],
            Avp::ResultCode {
                result: cdn::ADMINISTRATIVE,
                error: None,
                message: None,
            }
        );
        // Error code without a message: 4-byte value.
        let raw = RawAvp {
            mandatory: true,
            hidden: false,
            vendor: 0,
            attr: attr::RESULT_CODE,
            value: &[0, 2, 0, 8],
        };
        let avp = Avp::from_raw(&raw).unwrap();
        assert_eq!(
            avp,
            Avp::ResultCode {
                result: 2,
                error: Some(error_code::UNKNOWN_MANDATORY_AVP),
                message: None
            }
        );
        let mut out = Vec::new();
        avp.emit(&mut out);
        assert_eq!(out, [0x80, 0x0a, 0, 0, 0, 1, 0, 2, 0, 8]);
        // A message that is not UTF-8 is kept, lossily.
        let raw = RawAvp {
            value: &[0, 2, 0, 0, b'o', 0xff, b'k'],
            ..raw
        };
        assert_eq!(
            Avp::from_raw(&raw).unwrap(),
            Avp::ResultCode {
                result: 2,
                error: Some(0),
                message: Some("o\u{fffd}k".into())
            }
        );
    }

    #[test]
    fn hello_and_zlb() {
        let (header, hello) = message(Transport::Udp, &HELLO);
        assert_eq!(hello.msg_type, MessageType::Hello);
        assert!(hello.avps.is_empty());
        assert_eq!(header.ns, 5);
        for (transport, bytes) in [
            (Transport::Udp, ZLB.to_vec()),
            (Transport::Ip, over_ip(&ZLB)),
        ] {
            let zlb = control(transport, &bytes);
            assert!(zlb.is_zlb());
            assert_eq!(zlb.avps().next(), None);
            assert_eq!(
                zlb.header,
                ControlHeader {
                    ccid: 0x1234_5678,
                    ns: 3,
                    nr: 5
                }
            );
        }
        assert!(!control(Transport::Udp, &HELLO).is_zlb());
    }

    #[test]
    fn unknown_avps_are_kept_and_mandatory_ones_reported() {
        let (header, msg) = message(Transport::Udp, &ICCN_UNKNOWN_M);
        assert_eq!(msg.msg_type, MessageType::Iccn);
        assert_eq!(
            msg.avps,
            vec![
                Avp::LocalSessionId(0xaabb_ccdd),
                Avp::Unknown {
                    mandatory: false,
                    vendor: 32473,
                    attr: 2,
                    value: b"abc".to_vec()
                },
                Avp::Unknown {
                    mandatory: true,
                    vendor: 0,
                    attr: 99,
                    value: vec![1]
                },
                Avp::RemoteSessionId(0x1001),
            ]
        );
        assert_eq!(msg.unknown_mandatory(), Some((0, 99)));
        assert_eq!(emitted(Transport::Udp, header, &msg), ICCN_UNKNOWN_M);

        // A mandatory vendor AVP counts too; the first one wins.
        let mut msg = msg;
        msg.avps.insert(
            0,
            Avp::Unknown {
                mandatory: true,
                vendor: 9,
                attr: 7,
                value: vec![],
            },
        );
        assert_eq!(msg.unknown_mandatory(), Some((9, 7)));
    }

    #[test]
    fn unknown_message_type_is_kept() {
        let bytes = patched(&HELLO, 18, &[0x00, 0x63]);
        let (header, msg) = message(Transport::Udp, &bytes);
        assert_eq!(msg.msg_type, MessageType::Unknown(99));
        assert_eq!(emitted(Transport::Udp, header, &msg), bytes);
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        // Reserved control flag bits and AVP header bits set: accepted, and
        // sent clear.
        let bytes = patched(&SCCRQ, 0, &[0xfb, 0xf3]);
        let bytes = patched(&bytes, 20, &[0xbc, 0x0a]);
        let (header, msg) = message(Transport::Udp, &bytes);
        assert_eq!(emitted(Transport::Udp, header, &msg), SCCRQ);
        // Reserved data header bits and the reserved word.
        let bytes = patched(&DATA_UDP, 0, &[0x7f, 0xf3, 0xff, 0xff]);
        assert_eq!(
            parse(Transport::Udp, &bytes),
            Ok(Packet::Data(DataPacket {
                session_id: 0x2a,
                rest: &FRAME
            }))
        );
    }

    #[test]
    fn trailing_bytes_after_length_are_ignored() {
        for udp in control_vectors() {
            let mut bytes = over_ip(udp);
            bytes.extend_from_slice(&[0x80, 0x08, 0, 0, 0, 0x0a, 0, 9]);
            assert_eq!(
                parse(Transport::Ip, &bytes),
                parse(Transport::Ip, &over_ip(udp))
            );
        }
    }

    #[test]
    fn data_vectors_round_trip() {
        for (transport, bytes, session_id, cookie) in data_vectors() {
            let Ok(Packet::Data(d)) = parse(transport, bytes) else {
                panic!("not data: {bytes:02x?}");
            };
            assert_eq!(d.session_id, session_id);
            let (c, payload) = d.split_cookie(cookie.len()).unwrap();
            assert_eq!(c, cookie.as_slice());
            assert_eq!(payload, FRAME);

            let hlen = data_header_len(transport, cookie.len());
            assert_eq!(hlen + FRAME.len(), bytes.len());
            let mut out = vec![0xee; hlen + FRAME.len()];
            assert_eq!(
                emit_data_header(transport, session_id, &cookie, &mut out),
                hlen
            );
            out[hlen..].copy_from_slice(payload);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn data_header_sizes_and_short_buffers() {
        assert_eq!(data_header_len(Transport::Udp, 0), 8);
        assert_eq!(data_header_len(Transport::Udp, 8), 16);
        assert_eq!(data_header_len(Transport::Ip, 0), 4);
        assert_eq!(data_header_len(Transport::Ip, 4), 8);
        assert_eq!(data_header_len(Transport::Ip, usize::MAX), usize::MAX);
        let cookie = Cookie::new(&[1, 2, 3, 4]).unwrap();
        let mut out = [0xee; 11];
        assert_eq!(emit_data_header(Transport::Udp, 1, &cookie, &mut out), 0);
        assert_eq!(out, [0xee; 11]);
        assert_eq!(emit_data_header(Transport::Ip, 1, &cookie, &mut out), 8);
        assert_eq!(out[..8], [0, 0, 0, 1, 1, 2, 3, 4]);
        // Header only, no payload: a valid (empty) data message.
        let mut out = [0; 8];
        emit_data_header(Transport::Udp, 7, &Cookie::NONE, &mut out);
        assert_eq!(
            parse(Transport::Udp, &out),
            Ok(Packet::Data(DataPacket {
                session_id: 7,
                rest: &[]
            }))
        );
        let Ok(Packet::Data(d)) = parse(Transport::Udp, &DATA_UDP) else {
            panic!()
        };
        assert_eq!(d.split_cookie(17), Err(WireError::Truncated));
    }

    #[test]
    fn every_prefix_is_an_error_or_a_shorter_packet() {
        let mut vectors: Vec<(Transport, Vec<u8>)> = Vec::new();
        for udp in control_vectors() {
            vectors.push((Transport::Udp, udp.to_vec()));
            vectors.push((Transport::Ip, over_ip(udp)));
        }
        for (transport, bytes, ..) in data_vectors() {
            vectors.push((transport, bytes.to_vec()));
        }
        for (transport, bytes) in &vectors {
            let full = parse(*transport, bytes).unwrap();
            for n in 0..bytes.len() {
                let prefix = &bytes[..n];
                match (full, parse(*transport, prefix)) {
                    (Packet::Control(_), r) => assert_eq!(r, Err(WireError::Truncated)),
                    (Packet::Data(f), Ok(Packet::Data(d))) => {
                        assert_eq!(d.session_id, f.session_id);
                        assert_eq!(d.rest, &f.rest[..d.rest.len()]);
                        assert!(d.rest.len() < f.rest.len());
                    }
                    (Packet::Data(_), r) => assert_eq!(r, Err(WireError::Truncated)),
                }
            }
        }
    }

    #[test]
    fn every_prefix_of_the_avp_area_fails_cleanly() {
        for udp in control_vectors() {
            let c = control(Transport::Udp, udp);
            for n in 0..c.avps.len() {
                let cut = ControlPacket {
                    header: c.header,
                    avps: &c.avps[..n],
                };
                // Cut at an AVP boundary it is a valid shorter message;
                // anywhere else the last AVP runs past the end.
                match ControlMessage::parse(&cut) {
                    Ok(m) => {
                        let full = ControlMessage::parse(&c).unwrap();
                        assert_eq!(m.avps[..], full.avps[..m.avps.len()]);
                    }
                    Err(e) => assert!(
                        matches!(e, WireError::BadAvpLength | WireError::NoMessageType),
                        "{e:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn bit_flips_never_panic() {
        let mut vectors: Vec<(Transport, Vec<u8>)> = Vec::new();
        for udp in control_vectors() {
            vectors.push((Transport::Udp, udp.to_vec()));
            vectors.push((Transport::Ip, over_ip(udp)));
        }
        for (transport, bytes, ..) in data_vectors() {
            vectors.push((transport, bytes.to_vec()));
        }
        for (transport, bytes) in vectors {
            for bit in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[bit / 8] ^= 0x80 >> (bit % 8);
                if let Ok(Some(msg)) = parse_all(transport, &b) {
                    // Whatever parses must emit and parse back to itself.
                    let header = control(transport, &b).header;
                    let out = emitted(transport, header, &msg);
                    assert_eq!(parse_all(transport, &out), Ok(Some(msg)));
                }
            }
        }
    }

    #[test]
    fn bad_version() {
        // L2TPv2 control and data headers.
        let v2 = patched(&SCCRQ, 0, &[0xc8, 0x02]);
        assert_eq!(parse(Transport::Udp, &v2), Err(WireError::BadVersion(2)));
        assert_eq!(
            parse(Transport::Ip, &over_ip(&v2)),
            Err(WireError::BadVersion(2))
        );
        let v2 = patched(&DATA_UDP, 0, &[0x40, 0x02]);
        assert_eq!(parse(Transport::Udp, &v2), Err(WireError::BadVersion(2)));
        // The version is read from two bytes alone.
        assert_eq!(
            parse(Transport::Udp, &[0xc8, 0x0f]),
            Err(WireError::BadVersion(15))
        );
        assert_eq!(
            parse(Transport::Udp, &[0x00, 0x00]),
            Err(WireError::BadVersion(0))
        );
    }

    #[test]
    fn bad_flags() {
        for flags in [0x8803_u16, 0xc003, 0x8003, 0x4803] {
            let bytes = patched(&SCCRQ, 0, &flags.to_be_bytes());
            // T clear: read as data, so IP mode (where T is not a selector)
            // is what reports a missing T.
            if flags & 0x8000 != 0 {
                assert_eq!(
                    parse(Transport::Udp, &bytes),
                    Err(WireError::BadFlags(flags))
                );
            }
            assert_eq!(
                parse(Transport::Ip, &over_ip(&bytes)),
                Err(WireError::BadFlags(flags))
            );
        }
    }

    #[test]
    fn bad_control_length() {
        for len in [0_u16, 11] {
            let bytes = patched(&ZLB, 2, &len.to_be_bytes());
            assert_eq!(parse(Transport::Udp, &bytes), Err(WireError::Truncated));
        }
        let bytes = patched(&HELLO, 2, &21_u16.to_be_bytes());
        assert_eq!(parse(Transport::Udp, &bytes), Err(WireError::Truncated));
        assert_eq!(
            parse(Transport::Ip, &over_ip(&bytes)),
            Err(WireError::Truncated)
        );
        // A Length that stops inside an AVP cuts it.
        let bytes = patched(&HELLO, 2, &19_u16.to_be_bytes());
        let c = control(Transport::Udp, &bytes);
        assert_eq!(c.avps.len(), 7);
        assert_eq!(ControlMessage::parse(&c), Err(WireError::BadAvpLength));
    }

    #[test]
    fn ip_mode_control_and_data() {
        assert_eq!(parse(Transport::Ip, &[]), Err(WireError::Truncated));
        assert_eq!(parse(Transport::Ip, &[0, 0, 0]), Err(WireError::Truncated));
        // Zero session id and nothing after it: a control header is missing.
        assert_eq!(
            parse(Transport::Ip, &[0, 0, 0, 0]),
            Err(WireError::Truncated)
        );
        // A UDP-mode data header over IP reads as control without T.
        assert_eq!(
            parse(Transport::Ip, &patched(&DATA_UDP, 0, &[0, 0, 0, 0])),
            Err(WireError::BadVersion(0))
        );
        // A control header without the zero prefix over IP is data.
        assert!(matches!(
            parse(Transport::Ip, &SCCRQ),
            Ok(Packet::Data(DataPacket {
                session_id: 0xc803_0044,
                ..
            }))
        ));
        // Over UDP the control header carries no session id prefix.
        assert_eq!(
            parse(Transport::Udp, &over_ip(&SCCRQ)),
            Err(WireError::BadVersion(0))
        );
    }

    #[test]
    fn zero_session_id() {
        let bytes = patched(&DATA_UDP_COOKIE4, 4, &[0, 0, 0, 0]);
        assert_eq!(parse(Transport::Udp, &bytes), Err(WireError::ZeroSessionId));
        assert_eq!(
            parse(Transport::Udp, &[0x00, 0x03, 0, 0, 0, 0, 0, 0]),
            Err(WireError::ZeroSessionId)
        );
    }

    #[test]
    fn short_data_headers() {
        for n in 0..8 {
            assert_eq!(
                parse(Transport::Udp, &DATA_UDP[..n]),
                Err(WireError::Truncated),
                "{n}"
            );
        }
    }

    #[test]
    fn avp_iter_lengths() {
        // Length below the header size: 0..=5.
        for len in 0..6_u8 {
            let area = [0x80, len, 0, 0, 0, 0, 0, 1];
            let mut it = AvpIter::new(&area);
            assert_eq!(it.next(), Some(Err(WireError::BadAvpLength)));
            assert_eq!(it.next(), None);
        }
        // Length past the end, and a lone partial header.
        for area in [&[0x80, 0x09, 0, 0, 0, 0, 0, 1][..], &[0x80, 0x08, 0, 0][..]] {
            let mut it = AvpIter::new(area);
            assert_eq!(it.next(), Some(Err(WireError::BadAvpLength)));
            assert_eq!(it.next(), None);
            assert_eq!(it.next(), None);
        }
        // A good AVP, then a bad one: the good one is yielded first.
        let area = [0x80, 0x08, 0, 0, 0, 0, 0, 1, 0x80, 0x05, 0, 0, 0, 1];
        let mut it = AvpIter::new(&area);
        assert!(matches!(it.next(), Some(Ok(RawAvp { attr: 0, .. }))));
        assert_eq!(it.next(), Some(Err(WireError::BadAvpLength)));
        assert_eq!(it.next(), None);
        // A header-only AVP (empty value) is fine.
        let area = [0x00, 0x06, 0x00, 0x09, 0x00, 0x03];
        assert_eq!(
            AvpIter::new(&area).collect::<Vec<_>>(),
            vec![Ok(RawAvp {
                mandatory: false,
                hidden: false,
                vendor: 9,
                attr: 3,
                value: &[]
            })]
        );
        // In a message, the same errors surface from ControlMessage::parse.
        let bytes = patched(&SCCRQ, 20, &[0x80, 0x05]);
        let c = control(Transport::Udp, &bytes);
        assert_eq!(ControlMessage::parse(&c), Err(WireError::BadAvpLength));
        let bytes = patched(&SCCRQ, 60, &[0x80, 0x09]);
        let c = control(Transport::Udp, &bytes);
        assert_eq!(ControlMessage::parse(&c), Err(WireError::BadAvpLength));
    }

    #[test]
    fn message_type_must_come_first() {
        let header = ControlHeader {
            ccid: 1,
            ns: 0,
            nr: 0,
        };
        let cases: [(&[u8], WireError); 6] = [
            // Host Name first.
            (&SCCRQ[20..], WireError::NoMessageType),
            // Vendor 9, attribute 0.
            (&[0x80, 0x08, 0, 9, 0, 0, 0, 1], WireError::NoMessageType),
            // Value of 1 and of 3 bytes.
            (&[0x80, 0x07, 0, 0, 0, 0, 1], WireError::NoMessageType),
            (&[0x80, 0x09, 0, 0, 0, 0, 0, 1, 0], WireError::NoMessageType),
            // Hidden.
            (
                &[0xc0, 0x08, 0, 0, 0, 0, 0, 1],
                WireError::HiddenAvp { attr: 0 },
            ),
            // A broken first AVP.
            (&[0x80, 0x04, 0, 0], WireError::BadAvpLength),
        ];
        for (avps, err) in cases {
            let c = ControlPacket { header, avps };
            assert_eq!(ControlMessage::parse(&c), Err(err), "{avps:02x?}");
        }
        // A second Message Type is an unknown AVP like any other.
        let avps = [0x80, 0x08, 0, 0, 0, 0, 0, 6, 0x80, 0x08, 0, 0, 0, 0, 0, 1];
        let msg = ControlMessage::parse(&ControlPacket {
            header,
            avps: &avps,
        })
        .unwrap();
        assert_eq!(msg.unknown_mandatory(), Some((0, attr::MESSAGE_TYPE)));
    }

    #[test]
    fn hidden_avps() {
        // H set on Host Name inside a message.
        let bytes = patched(&SCCRQ, 20, &[0xc0, 0x0a]);
        let c = control(Transport::Udp, &bytes);
        assert_eq!(
            ControlMessage::parse(&c),
            Err(WireError::HiddenAvp {
                attr: attr::HOST_NAME
            })
        );
        let raw = RawAvp {
            mandatory: true,
            hidden: true,
            vendor: 0,
            attr: attr::ASSIGNED_CCID,
            value: &[0; 4],
        };
        assert_eq!(
            Avp::from_raw(&raw),
            Err(WireError::HiddenAvp {
                attr: attr::ASSIGNED_CCID
            })
        );
        // A hidden AVP tunterm does not know stays opaque, M bit and all.
        let raw = RawAvp {
            vendor: 9,
            attr: 1,
            value: &[0xaa; 5],
            ..raw
        };
        assert_eq!(
            Avp::from_raw(&raw),
            Ok(Avp::Unknown {
                mandatory: true,
                vendor: 9,
                attr: 1,
                value: vec![0xaa; 5]
            })
        );
    }

    #[test]
    fn wrong_value_sizes() {
        // (attribute, sizes that are wrong)
        let cases: &[(u16, &[usize])] = &[
            (attr::RESULT_CODE, &[0, 1, 3]),
            (attr::TIE_BREAKER, &[0, 4, 7, 9, 16]),
            (attr::FIRMWARE_REVISION, &[0, 1, 3, 4]),
            (attr::RECEIVE_WINDOW_SIZE, &[0, 1, 3, 4]),
            (attr::SERIAL_NUMBER, &[0, 2, 3, 5, 8]),
            (attr::ROUTER_ID, &[0, 2, 3, 5, 8]),
            (attr::ASSIGNED_CCID, &[0, 2, 3, 5, 8]),
            (attr::PW_CAPABILITIES, &[1, 3, 5]),
            (attr::LOCAL_SESSION_ID, &[0, 2, 3, 5, 8]),
            (attr::REMOTE_SESSION_ID, &[0, 2, 3, 5, 8]),
            (attr::ASSIGNED_COOKIE, &[0, 1, 2, 3, 5, 6, 7, 9, 12, 16]),
            (attr::PW_TYPE, &[0, 1, 3, 4]),
            (attr::L2_SPECIFIC_SUBLAYER, &[0, 1, 3, 4]),
            (attr::DATA_SEQUENCING, &[0, 1, 3, 4]),
            (attr::CIRCUIT_STATUS, &[0, 1, 3, 4]),
        ];
        let value = [0x11; 16];
        for &(attr, sizes) in cases {
            for &n in sizes {
                let raw = RawAvp {
                    mandatory: true,
                    hidden: false,
                    vendor: 0,
                    attr,
                    value: &value[..n],
                };
                assert_eq!(
                    Avp::from_raw(&raw),
                    Err(WireError::BadAvpValue { attr }),
                    "attr {attr} len {n}"
                );
            }
        }
        // The same in a message: Receive Window Size of 3 bytes.
        let mut bytes = SCCRQ.to_vec();
        bytes[3] += 1;
        bytes[61] = 0x09;
        bytes.push(0);
        let c = control(Transport::Udp, &bytes);
        assert_eq!(
            ControlMessage::parse(&c),
            Err(WireError::BadAvpValue {
                attr: attr::RECEIVE_WINDOW_SIZE
            })
        );
        // Empty strings and an empty capability list are allowed.
        for attr in [
            attr::HOST_NAME,
            attr::VENDOR_NAME,
            attr::REMOTE_END_ID,
            attr::PW_CAPABILITIES,
        ] {
            let raw = RawAvp {
                mandatory: true,
                hidden: false,
                vendor: 0,
                attr,
                value: &[],
            };
            assert!(Avp::from_raw(&raw).is_ok(), "{attr}");
        }
    }

    #[test]
    fn vendor_avps_with_ietf_numbers_are_unknown() {
        let raw = RawAvp {
            mandatory: false,
            hidden: false,
            vendor: 311,
            attr: attr::ASSIGNED_CCID,
            value: &[1, 2, 3],
        };
        assert_eq!(
            Avp::from_raw(&raw),
            Ok(Avp::Unknown {
                mandatory: false,
                vendor: 311,
                attr: attr::ASSIGNED_CCID,
                value: vec![1, 2, 3]
            })
        );
    }

    #[test]
    fn emit_uses_rfc_m_bits_and_survives_from_raw() {
        let avps = [
            Avp::ResultCode {
                result: 1,
                error: None,
                message: Some("m".into()),
            },
            Avp::TieBreaker([9; 8]),
            Avp::FirmwareRevision(1),
            Avp::HostName(b"h".to_vec()),
            Avp::VendorName(b"v".to_vec()),
            Avp::ReceiveWindowSize(8),
            Avp::SerialNumber(1),
            Avp::RouterId(2),
            Avp::AssignedCcid(3),
            Avp::PwCapabilities(vec![]),
            Avp::LocalSessionId(4),
            Avp::RemoteSessionId(5),
            Avp::AssignedCookie(Cookie::new(&[1; 8]).unwrap()),
            Avp::RemoteEndId(b"r".to_vec()),
            Avp::PwType(pw::ETHERNET_VLAN),
            Avp::L2SpecificSublayer(1),
            Avp::DataSequencing(2),
            Avp::CircuitStatus {
                active: false,
                new: true,
            },
            Avp::Unknown {
                mandatory: true,
                vendor: 0,
                attr: 1000,
                value: vec![7],
            },
        ];
        for avp in &avps {
            let mut out = Vec::new();
            avp.emit(&mut out);
            let mut it = AvpIter::new(&out);
            let raw = it.next().unwrap().unwrap();
            assert_eq!(it.next(), None);
            assert_eq!(raw.mandatory, avp.mandatory(), "{avp:?}");
            assert_eq!((raw.vendor, raw.attr), avp.id());
            assert!(!raw.hidden);
            let back = Avp::from_raw(&raw).unwrap();
            // A message implies an error code: it comes back as 0.
            if let Avp::ResultCode { .. } = avp {
                assert_eq!(
                    back,
                    Avp::ResultCode {
                        result: 1,
                        error: Some(0),
                        message: Some("m".into())
                    }
                );
            } else {
                assert_eq!(&back, avp);
            }
        }
        let m_clear: Vec<_> = avps.iter().filter(|a| !a.mandatory()).collect();
        assert_eq!(
            m_clear,
            [
                &Avp::TieBreaker([9; 8]),
                &Avp::FirmwareRevision(1),
                &Avp::VendorName(b"v".to_vec())
            ]
        );
    }

    #[test]
    fn oversized_values_are_cut_to_fit() {
        let mut out = Vec::new();
        Avp::HostName(vec![b'x'; 2000]).emit(&mut out);
        assert_eq!(out.len(), 1023);
        assert_eq!(out[..2], [0x83, 0xff]);
        let mut out = Vec::new();
        Avp::PwCapabilities(vec![5; 600]).emit(&mut out);
        assert_eq!(out.len(), 6 + 2 * 508);
        let raw = AvpIter::new(&out).next().unwrap().unwrap();
        assert_eq!(Avp::from_raw(&raw), Ok(Avp::PwCapabilities(vec![5; 508])));
        // A message that would overflow the 16-bit Length loses its tail.
        let msg = ControlMessage {
            msg_type: MessageType::Hello,
            avps: vec![Avp::HostName(vec![b'x'; 1017]); 70],
        };
        let header = ControlHeader {
            ccid: 1,
            ns: 0,
            nr: 0,
        };
        let out = emitted(Transport::Ip, header, &msg);
        let (_, back) = message(Transport::Ip, &out);
        assert_eq!(back.avps.len(), 64);
        assert_eq!(out.len(), 4 + 12 + 8 + 64 * 1023);
    }

    #[test]
    fn message_type_codes() {
        for code in 0..=u16::MAX {
            assert_eq!(MessageType::from(code).code(), code);
        }
        assert_eq!(MessageType::from(20), MessageType::Ack);
        assert_eq!(MessageType::Unknown(99).to_string(), "type-99");
        assert_eq!(MessageType::Icrq.to_string(), "Icrq");
    }

    #[test]
    fn sublayer_round_trips() {
        let mut b = [0u8; 4];
        assert_eq!(emit_sublayer(Some(0x01_0203), &mut b), 4);
        assert_eq!(b, [0x40, 0x01, 0x02, 0x03]);
        assert_eq!(parse_sublayer(&b), Some(Some(0x01_0203)));
        assert_eq!(emit_sublayer(Some(0x1ff_ffff), &mut b), 4);
        assert_eq!(parse_sublayer(&b), Some(Some(0xff_ffff)), "24 bits");
        emit_sublayer(None, &mut b);
        assert_eq!(b, [0; 4]);
        assert_eq!(parse_sublayer(&b), Some(None));
        assert_eq!(parse_sublayer(&b[..3]), None);
        assert_eq!(emit_sublayer(Some(1), &mut [0u8; 3]), 0);
    }
}
