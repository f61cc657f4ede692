//! L2TPv3 control connections and sessions (RFC 3931, RFC 4719), both roles.
//!
//! [`Endpoint`] owns every control connection and session of one L2TP
//! socket. tunterm runs it as the responder for AP tunnels; the AP simulator
//! (and later edge-to-edge anchor tunnels) runs the same code as initiator.
//!
//! Sans-IO: the driver feeds datagrams with [`Endpoint::handle_datagram`],
//! calls [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] has
//! passed, and drains [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`].

mod admission;
mod conn;
mod endpoint;
pub mod reliable;
mod rng;
mod sessions;
pub mod snapshot;

#[cfg(test)]
mod tests;

pub use admission::{AdmissionConfig, DEFAULT_MAX_HALF_OPEN, DEFAULT_STALE_STOPCCN_PER_SECOND};
pub use conn::{ConnState, SessionState};
pub use endpoint::{
    CloseReason, ConnStats, DataDrop, DataSession, Endpoint, EndpointConfig, EndpointCounters,
    Event, Incoming, PwProfile, STALE_MESSAGE, SessionRequest, SessionStats, Transmit,
};
pub use reliable::RetransmitConfig;
pub use rng::Seed;
pub use sessions::{SESSION_SLOTS, session_slot};
pub use snapshot::{ConnSnapshot, RestoreReport, SessionSnapshot, SnapTransport};
