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
