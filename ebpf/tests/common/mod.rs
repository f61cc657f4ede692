//! Shared by the integration tests (each test binary uses part of it).
#![allow(dead_code)]

pub mod lab;
pub mod mirror;
pub mod packets;
