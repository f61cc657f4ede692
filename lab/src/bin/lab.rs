//! `tunterm-lab`: helpers the netns lab runs inside its namespaces.
//!
//! - `vlan-host`: an 802.1Q end station on a trunk, one TAP and address per
//!   VLAN, without the kernel's 8021q module (see `tunterm_lab::vlanhost`).
//! - `demo`: build the standard lab (two simulated APs with client
//!   namespaces, tunterm, an upstream VLAN host), send traffic across it and
//!   print tunnel states and counters.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tunterm_lab as lab;
use tunterm_lab::topology::{Binaries, Lab, Options};
use tunterm_lab::vlanhost::{READY, VlanAddr, VlanHost};

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
    /// Run the lab demo (needs root): tunnels up, pings across them on two
    /// VLANs, then tunnel states and counters.
    Demo(DemoArgs),
    /// Hold a pass-through XDP program on an interface until killed, so that
    /// native XDP redirects from its veth peer are delivered.
    XdpPass {
        /// The interface.
        #[arg(long, value_name = "IF")]
        iface: String,
    },
    /// Relay frames between two interfaces with loss, duplication,
    /// reordering, delay and jitter (the AP-facing link's impairment; see
    /// `tunterm_lab::impair`), until killed.
    Impair {
        /// One interface.
        #[arg(long, value_name = "IF")]
        a: String,
        /// The other.
        #[arg(long, value_name = "IF")]
        b: String,
        /// The settings, JSON (`Impairment`), re-read when the file changes.
        #[arg(long, value_name = "PATH")]
        settings: std::path::PathBuf,
        /// Where to write the counters (JSON, every 200 ms).
        #[arg(long, value_name = "PATH")]
        stats: std::path::PathBuf,
        /// Seed of the random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Keep the lab running this many seconds after the report (explore it
    /// with `ip netns exec <prefix>c1 ping 192.168.10.1`, `tunterm stats
    /// --control-socket <dir>/edge.sock`).
    #[arg(long, default_value_t = 0)]
    hold: u64,
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
    /// Attach a pass-through XDP program to the trunk, so that native XDP
    /// redirects from its veth peer (tunterm's fast path) are delivered.
    #[arg(long)]
    xdp_pass: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::VlanHost(args) => vlan_host(args),
        Cmd::Demo(args) => demo(args),
        Cmd::Impair {
            a,
            b,
            settings,
            stats,
            seed,
        } => lab::impair::run_relay(&a, &b, &settings, &stats, seed),
        Cmd::XdpPass { iface } => {
            let _pass = tunterm_ebpf::pass::PassThrough::attach(&iface)
                .with_context(|| format!("xdp-pass on {iface}"))?;
            println!("{READY}: xdp_pass on {iface}");
            loop {
                std::thread::park();
            }
        }
    }
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    println!(
        "tunterm lab demo: building namespaces, starting tunterm, two simulated APs and an upstream VLAN host..."
    );
    let lab = Lab::start(Options {
        hello_interval: 10.0,
        ..Options::new("demo", Binaries::beside_current_exe()?)
    })?;
    println!(
        "lab up in namespaces {}*, logs in {}\n",
        lab.prefix(),
        lab.dir.display()
    );
    let stats = lab.edge_stats()?;
    println!(
        "{:<6} {:<16} {:<27} {:>9} {:>9} {:>6}  sessions (local/remote sid: state, mxtunnel)",
        "ap", "remote", "state", "tx_ctrl", "rx_ctrl", "uptime"
    );
    for t in stats["tunnels"].as_array().into_iter().flatten() {
        let sessions: Vec<String> = t["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{}/{}: {}, {}",
                    s["local_sid"],
                    s["remote_sid"],
                    s["state"].as_str().unwrap_or("?"),
                    s["remote_id"].as_str().unwrap_or("?")
                )
            })
            .collect();
        println!(
            "{:<6} {:<16} {:<27} {:>9} {:>9} {:>5}s  {}",
            t["ap"].as_str().unwrap_or("?"),
            format!(
                "{}:{}",
                t["remote_ip"].as_str().unwrap_or("?"),
                t["remote_port"]
            ),
            t["state"].as_str().unwrap_or("?"),
            t["tx_control_pkts"].as_u64().unwrap_or(0),
            t["rx_control_pkts"].as_u64().unwrap_or(0),
            t["uptime"].as_u64().unwrap_or(0),
            sessions.join("; ")
        );
    }
    println!();
    let pings = [
        (
            "c1",
            "192.168.10.1",
            "c1 (ap1, untagged → VLAN 10) → upstream VLAN 10",
        ),
        ("c2", "192.168.20.1", "c2 (ap2, tag 20) → upstream VLAN 20"),
        (
            "c3",
            "192.168.10.11",
            "c3 (ap2) → c1 (ap1), client to client on VLAN 10",
        ),
        (
            "c5",
            "192.168.99.1",
            "c5 (ap1, tag 99: not in vlan_ids) → upstream VLAN 99",
        ),
    ];
    for (client, dst, what) in pings {
        let r = lab::ping(lab.client(client), dst, 3)?;
        println!("ping {what}: {}/{} replies", r.received, r.sent);
    }
    let r = lab::ping(&lab.up, "192.168.20.12", 3)?;
    println!(
        "ping upstream VLAN 20 → c2: {}/{} replies",
        r.received, r.sent
    );
    let stats = lab.edge_stats()?;
    let l2tp = &stats["l2tp"];
    let sw = &stats["switch"];
    let io = &stats["io"];
    println!();
    println!(
        "l2tp:   data rx {}  control rx {}  dropped: unknown session {}, bad cookie {}, bad source {}",
        l2tp["rx_data"],
        l2tp["rx_control"],
        l2tp["rx_data_unknown_session"],
        l2tp["rx_data_bad_cookie"],
        l2tp["rx_data_bad_source"]
    );
    println!(
        "switch: forwarded {}  flooded {}  learned {}  dropped: VLAN not allowed {}, untagged {}",
        sw["forwarded"],
        sw["flooded"],
        sw["learned"],
        sw["drop_vlan_not_allowed"],
        sw["drop_untagged_not_allowed"]
    );
    println!(
        "io:     trunk rx {} tx {}  tunnel tx {}",
        io["trunk_rx"], io["trunk_tx"], io["tunnel_tx"]
    );
    let fdb = lab.edge_fdb()?;
    println!("fdb:    {} MACs", fdb.len());
    for e in &fdb {
        println!("        vlan {:>4}  {}  port {}", e.vlan, e.mac, e.port);
    }
    if args.hold > 0 {
        println!(
            "\nholding the lab for {} s (Ctrl-C ends it and cleans up)...",
            args.hold
        );
        std::thread::sleep(std::time::Duration::from_secs(args.hold));
    }
    println!("\ntearing the lab down");
    drop(lab);
    Ok(())
}

fn vlan_host(args: VlanHostArgs) -> anyhow::Result<()> {
    let _pass = args
        .xdp_pass
        .then(|| tunterm_ebpf::pass::PassThrough::attach(&args.trunk))
        .transpose()
        .with_context(|| format!("vlan-host: XDP pass-through on {}", args.trunk))?;
    let mut host = VlanHost::open(&args.trunk, &args.vlans, args.native.as_ref())
        .context("vlan-host: setting up")?;
    println!("{READY}: {}", host.describe());
    match host.run().context("vlan-host")? {}
}
