//! `tunterm-lab`: helpers the netns lab runs inside its namespaces.
//!
//! - `vlan-host`: an 802.1Q end station on a trunk, one TAP and address per
//!   VLAN, without the kernel's 8021q module (see `tunterm::lab::vlanhost`).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tunterm::lab::vlanhost::{READY, VlanAddr, VlanHost};

/// Helpers for the tunterm network-namespace lab.
#[derive(Debug, Parser)]
#[command(name = "tunterm-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Be an 802.1Q end station on a trunk: a TAP `vN` with an address per
    /// VLAN, frames tagged and untagged in userspace (the lab's upstream
    /// switch + router).
    VlanHost(VlanHostArgs),
}

#[derive(Debug, Args)]
struct VlanHostArgs {
    /// The trunk interface (802.1Q tagged frames).
    #[arg(long, value_name = "IF")]
    trunk: String,
    /// A VLAN to serve, with the host's address on it (repeatable).
    #[arg(long = "vlan", value_name = "VID=ADDR/PREFIX")]
    vlans: Vec<VlanAddr>,
    /// The trunk's untagged VLAN: its TAP is named after VID, its frames
    /// are sent untagged.
    #[arg(long, value_name = "VID=ADDR/PREFIX")]
    native: Option<VlanAddr>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::VlanHost(args) => vlan_host(args),
    }
}

fn vlan_host(args: VlanHostArgs) -> anyhow::Result<()> {
    let mut host = VlanHost::open(&args.trunk, &args.vlans, args.native.as_ref())
        .context("vlan-host: setting up")?;
    println!("{READY}: {}", host.describe());
    match host.run().context("vlan-host")? {}
}
