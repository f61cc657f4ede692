//! What survives a restart of the daemon: the established control
//! connections and sessions, as plain data to write to a file and read back
//! ([`Endpoint::snapshot`](super::Endpoint::snapshot),
//! [`Endpoint::restore`](super::Endpoint::restore)).
//!
//! Sequence numbers go stale the moment the file is written (every hello
//! moves them), so a restored connection resynchronises on the first
//! control packet it gets: the peer's Ns is what we expect next, its Nr is
//! what we send next. A session's data sequence number jumps ahead by
//! [`SEQ_JUMP`], which a receiver takes as a gap, not as old packets.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How far a restored sequenced session moves its next data sequence
/// number (of 2^24): past anything sent since the snapshot, inside the
/// half of the space a receiver takes as ahead.
pub const SEQ_JUMP: u32 = 1 << 20;

/// UDP or IP, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapTransport {
    /// L2TPv3 over UDP.
    Udp,
    /// L2TPv3 over IP protocol 115.
    Ip,
}

/// One established control connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSnapshot {
    /// Our CCID.
    pub local_ccid: u32,
    /// The peer's CCID.
    pub peer_ccid: u32,
    /// The peer (port 0 over IP).
    pub peer: SocketAddr,
    /// UDP or IP.
    pub transport: SnapTransport,
    /// We opened it (the AP side).
    pub initiator: bool,
    /// The peer's Host Name.
    pub host_name: String,
    /// The peer's Router ID.
    pub router_id: u32,
    /// Hello interval, milliseconds.
    pub hello_interval_ms: u64,
    /// Missed hellos before the peer is dead.
    pub hello_retries: u32,
    /// Our next Ns when written.
    pub next_ns: u16,
    /// The Ns expected from the peer when written.
    pub expected_ns: u16,
    /// The peer's receive window.
    pub peer_window: u16,
    /// Seconds it had been established when written.
    pub uptime_secs: u64,
    /// Its established sessions.
    pub sessions: Vec<SessionSnapshot>,
}

/// One established session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// Our session id.
    pub local_sid: u32,
    /// The peer's session id.
    pub remote_sid: u32,
    /// Remote End ID (selects the tunnel profile again).
    pub remote_end_id: String,
    /// Pseudowire type.
    pub pw_type: u16,
    /// The cookie the peer sends (0, 4 or 8 bytes).
    pub cookie_rx: Vec<u8>,
    /// The cookie we send.
    pub cookie_tx: Vec<u8>,
    /// Default L2-Specific Sublayer.
    pub sublayer: bool,
    /// We put sequence numbers on data.
    pub send_seq: bool,
    /// Out-of-order data is dropped.
    pub drop_out_of_order: bool,
    /// Our next data sequence number when written.
    pub tx_seq: u32,
}

/// What [`Endpoint::restore`](super::Endpoint::restore) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Connections restored.
    pub tunnels: usize,
    /// Sessions restored.
    pub sessions: usize,
    /// Entries refused, and why (duplicate or zero ids, bad cookies, a
    /// hello interval of 0).
    pub refused: Vec<String>,
}
