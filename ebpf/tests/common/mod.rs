//! Shared by the integration tests.

pub mod mirror;
pub mod packets;
