//! `tunterm-control`: tunterm's configuration model — the Mist API's
//! `mxedge`, `mxcluster` and `mxtunnel` objects as read from a local JSON file,
//! their validation (errors carry the JSON path of the offending field) and
//! the resolved view the daemon runs from ([`EdgeConfig`]) — and, later, the
//! cloud agent that syncs those objects from the Mist cloud.
//!
//! ```
//! let cfg = tunterm_control::load_str(tunterm_control::LAB_DEFAULT).unwrap();
//! assert_eq!(cfg.tunnels[0].vlans.to_string(), "10,20,30-31");
//! assert!(cfg.admits("10.99.0.7".parse().unwrap()));
//! ```

#![warn(missing_docs)]

pub mod config;
mod fsutil;
pub mod hosts;
pub mod mac;
pub mod vlan;

pub use config::*;
pub use fsutil::write_atomically;
pub use vlan::VlanSet;
