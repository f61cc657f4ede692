//! `tunterm-agent`: the edge's side of tunterm's edge <-> cloud protocol
//! (docs: control/agent/PROTOCOL.md; tunterm's own protocol, not
//! Mist's private one). It holds one outbound TLS websocket to the cloud,
//! applies the configuration the cloud pushes through the daemon's
//! `apply-config`, and reports stats and events in the Mist API's shapes.
//! The daemon never waits on it: killing the agent changes nothing in
//! forwarding.
//!
//! Sans-IO parts with unit tests: [`backoff`], [`spool`], [`state`],
//! [`cloudcfg`], [`report`], [`pcap`]; the I/O: [`tls`], [`net`] (direct
//! or through an HTTP CONNECT proxy), [`register`], [`session`],
//! [`actions`].

#![warn(missing_docs)]

pub mod actions;
pub mod backoff;
pub mod cloudcfg;
pub mod net;
pub mod pcap;
pub mod register;
pub mod report;
pub mod session;
pub mod spool;
pub mod state;
pub mod tls;
