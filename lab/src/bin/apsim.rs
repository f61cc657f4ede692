//! `tunterm-apsim`: simulated Wi-Fi APs that build L2TPv3 tunnels to an edge.

// The options' doc comments are their --help text, where `ip[:port]` and
// `[,bridge=IF[:tag]]` are syntax, not links to resolve.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tunterm_core::wire::ether::MacAddr;
use tunterm_core::wire::l2tp::pw;
use tunterm_lab::apsim::{self, ApSpec, ApTransport, SimOptions};

#[derive(Parser)]
#[command(
    version,
    about = "Simulated Wi-Fi APs for tunterm: L2TPv3 initiators with real or synthetic clients"
)]
struct Cli {
    /// Edge to connect to, ip[:port]: the cluster's tunterm_hosts, in
    /// their written order (repeatable, or comma-separated). Each AP orders
    /// them per --hosts-selection and moves to the next one when its tunnel
    /// is closed or hello_retries hellos go unanswered.
    #[arg(long = "edge", required = true, value_delimiter = ',')]
    edges: Vec<String>,
    /// How each AP orders the edges (tunterm_hosts_selection): ordered
    /// (--hosts-order, else as given), shuffle (by the AP's MAC: APs must
    /// be named by their MAC) or shuffle-by-site (by --site-id and the
    /// tunnel, --remote-end-id).
    #[arg(long, default_value = "ordered", value_parser = parse_selection)]
    hosts_selection: tunterm_control::HostsSelection,
    /// tunterm_hosts_order: indices into the --edge list, comma-separated.
    #[arg(long, value_delimiter = ',')]
    hosts_order: Vec<u32>,
    /// Site id of the APs (shuffle-by-site).
    #[arg(long, default_value = "")]
    site_id: String,
    /// One AP: name=ap1[,ip=10.99.0.2][,bridge=IF[:tag]]... (repeatable).
    #[arg(long = "ap")]
    aps: Vec<String>,
    /// Add this many APs named ap-00000… with synthetic clients only.
    #[arg(long, default_value_t = 0)]
    count: u32,
    /// Number of the first --count AP (ap-NNNNN; its synthetic clients'
    /// MACs follow from it): a second simulator beside a first takes
    /// numbers after the first's.
    #[arg(long, default_value_t = 0)]
    first_index: u32,
    /// Source address of the --count APs.
    #[arg(long)]
    local_ip: Option<IpAddr>,
    /// Encapsulation: udp (L2TPv3/UDP), ip (L2TPv3 over IP 115) or gre (mGRE).
    #[arg(long, default_value = "udp")]
    transport: String,
    /// GRE key (with --transport gre).
    #[arg(long)]
    gre_key: Option<u32>,
    /// Remote End ID of the sessions: the mxtunnel name.
    #[arg(long, default_value = "lab")]
    remote_end_id: String,
    /// Pseudowire type: ethernet or ethernet-vlan.
    #[arg(long, default_value = "ethernet")]
    pw_type: String,
    /// Cookie length the APs assign: 0, 4 or 8.
    #[arg(long, default_value_t = 4)]
    cookie_len: usize,
    /// Ask for the default L2-Specific Sublayer (RFC 4719) on the sessions.
    #[arg(long)]
    l2_sublayer: bool,
    /// Require sequence numbers on data messages (implies --l2-sublayer);
    /// out-of-order and duplicate packets are then dropped.
    #[arg(long)]
    sequencing: bool,
    /// HELLO interval in seconds (GRE: keepalive interval).
    #[arg(long, default_value_t = 60.0)]
    hello_interval: f64,
    /// Missed hellos before moving to the next edge.
    #[arg(long, default_value_t = 7)]
    hello_retries: u32,
    /// Seconds to wait after losing a tunnel before connecting again.
    #[arg(long, default_value_t = 1.0)]
    retry_delay: f64,
    /// Synthetic clients per AP (each sends a gratuitous ARP every --synthetic-interval-ms).
    #[arg(long, default_value_t = 0)]
    synthetic_clients: u32,
    /// VLAN tag of synthetic frames.
    #[arg(long)]
    synthetic_vlan: Option<u16>,
    /// Interval of synthetic frames, ms.
    #[arg(long, default_value_t = 1000)]
    synthetic_interval_ms: u64,
    /// Destination MAC of synthetic frames, aa:bb:cc:dd:ee:ff (default
    /// broadcast, which floods to every session on the VLAN).
    #[arg(long)]
    synthetic_dst: Option<MacAddr>,
    /// Rounds of synthetic frames each AP sends once its session is up,
    /// then it stops (0: no limit). The lab benchmark teaches the edge its
    /// clients with a few rounds and then keeps the links quiet.
    #[arg(long, default_value_t = 0)]
    synthetic_bursts: u32,
    /// IPv4 group the first AP's member client joins (IGMPv3 report on
    /// session up and on every query, tagged --synthetic-vlan); every AP
    /// counts the group's data it receives (rx_group_frames in stats).
    #[arg(long, value_name = "GROUP")]
    join_group: Option<std::net::Ipv4Addr>,
    /// Control socket answering `stats` with JSON.
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Print one JSON line per event on stdout.
    #[arg(long)]
    events: bool,
    /// Instead of APs: flood the first --edge with this many SCCRQs a
    /// second, each from the next spoofed source (--flood-src ×
    /// --flood-ports) with its own Assigned CCID. IPv4; needs CAP_NET_RAW.
    #[arg(long, value_name = "RATE")]
    sccrq_flood: Option<u32>,
    /// Source prefix of the flood, e.g. 10.99.0.128/25 (repeatable).
    #[arg(long, value_name = "CIDR")]
    flood_src: Vec<ipnet::Ipv4Net>,
    /// Source UDP ports of the flood, FIRST-LAST.
    #[arg(long, default_value = "20000-20099", value_parser = parse_ports)]
    flood_ports: std::ops::RangeInclusive<u16>,
    /// Seconds the flood lasts; then a JSON report is printed.
    #[arg(long, default_value_t = 10.0)]
    flood_seconds: f64,
    /// Instead of APs: send junk to the first --edge's UDP port as fast as
    /// one core can, for --flood-seconds, from the --flood-src addresses:
    /// unknown-session (data for session ids that do not exist), random
    /// (random bytes) or unknown-tunnel (HELLOs for tunnel ids that do not
    /// exist). IPv4; needs CAP_NET_RAW.
    #[arg(long, value_name = "KIND")]
    junk: Option<apsim::junk::JunkKind>,
    /// With --junk: send Ethernet frames on this interface to
    /// --junk-dst-mac (the edge's MAC), bypassing the IP output path and
    /// the qdisc: about twice the rate.
    #[arg(long, value_name = "IF", requires = "junk_dst_mac")]
    junk_iface: Option<String>,
    /// The edge's MAC on the --junk-iface link, aa:bb:cc:dd:ee:ff.
    #[arg(long)]
    junk_dst_mac: Option<MacAddr>,
}

fn parse_selection(s: &str) -> Result<tunterm_control::HostsSelection, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?}: ordered, shuffle or shuffle-by-site"))
}

fn parse_ports(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let bad = |p: &str| format!("{s:?}: {p:?} is not a port");
    let a: u16 = a.parse().map_err(|_| bad(a))?;
    let b: u16 = b.parse().map_err(|_| bad(b))?;
    if a == 0 || b < a {
        return Err(format!("{s:?}: expected FIRST-LAST with 0 < FIRST <= LAST"));
    }
    Ok(a..=b)
}

fn parse_edge(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .parse()
        .with_context(|| format!("--edge {s:?}: expected ip or ip:port"))?;
    Ok(SocketAddr::new(ip, 1701))
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{name} {v}: not a valid duration"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let edges = cli
        .edges
        .iter()
        .map(|e| parse_edge(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(kind) = cli.junk {
        let edge = match edges[0] {
            SocketAddr::V4(e) => e,
            SocketAddr::V6(e) => anyhow::bail!("--junk: {e} is not IPv4"),
        };
        let opts = apsim::junk::JunkOptions {
            edge,
            kind,
            duration: secs("flood-seconds", cli.flood_seconds)?,
            sources: cli.flood_src,
            first_port: *cli.flood_ports.start(),
            link: cli.junk_iface.zip(cli.junk_dst_mac),
        };
        println!("junk: {kind:?} to {edge} for {:?}", opts.duration);
        let report = apsim::junk::run(&opts)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Some(rate) = cli.sccrq_flood {
        let edge = match edges[0] {
            SocketAddr::V4(e) => e,
            SocketAddr::V6(e) => anyhow::bail!("--sccrq-flood: {e} is not IPv4"),
        };
        let opts = apsim::flood::FloodOptions {
            edge,
            rate,
            duration: secs("flood-seconds", cli.flood_seconds)?,
            sources: cli.flood_src,
            ports: cli.flood_ports,
        };
        println!("flood: {rate}/s to {edge} for {:?}", opts.duration);
        let report = apsim::flood::run(&opts)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let mut aps = cli
        .aps
        .iter()
        .map(|s| ApSpec::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        cli.aps.is_empty() || cli.first_index == 0,
        "--first-index goes with --count only"
    );
    for i in (0..cli.count).map(|i| cli.first_index + i) {
        aps.push(ApSpec {
            name: format!("ap-{i:05}"),
            local_ip: cli.local_ip,
            bridges: vec![],
        });
    }
    anyhow::ensure!(!aps.is_empty(), "no AP: give --ap or --count");
    anyhow::ensure!(
        matches!(cli.cookie_len, 0 | 4 | 8),
        "--cookie-len must be 0, 4 or 8"
    );
    let pw_type = match cli.pw_type.as_str() {
        "ethernet" => pw::ETHERNET,
        "ethernet-vlan" => pw::ETHERNET_VLAN,
        other => anyhow::bail!("--pw-type {other:?}: ethernet or ethernet-vlan"),
    };
    let transport = match cli.transport.as_str() {
        "udp" => ApTransport::L2tpUdp,
        "ip" => ApTransport::L2tpIp,
        "gre" => ApTransport::Gre(cli.gre_key),
        other => anyhow::bail!("--transport {other:?}: udp, ip or gre"),
    };
    anyhow::ensure!(
        cli.gre_key.is_none() || matches!(transport, ApTransport::Gre(_)),
        "--gre-key goes with --transport gre"
    );
    anyhow::ensure!(
        cli.join_group.is_none_or(|g| g.is_multicast()),
        "--join-group must be an IPv4 multicast group"
    );
    for &i in &cli.hosts_order {
        anyhow::ensure!(
            (i as usize) < edges.len(),
            "--hosts-order {i}: only {} edges given",
            edges.len()
        );
    }
    let opts = SimOptions {
        edges,
        hosts_selection: cli.hosts_selection,
        hosts_order: cli.hosts_order,
        site_id: cli.site_id,
        transport,
        remote_end_id: cli.remote_end_id,
        pw_type,
        cookie_len: cli.cookie_len,
        l2_sublayer: cli.l2_sublayer,
        sequencing: cli.sequencing,
        hello_interval: secs("hello-interval", cli.hello_interval)?,
        hello_retries: cli.hello_retries,
        retry_delay: secs("retry-delay", cli.retry_delay)?,
        synthetic_clients: cli.synthetic_clients,
        synthetic_vlan: cli.synthetic_vlan,
        synthetic_interval: Duration::from_millis(cli.synthetic_interval_ms.max(1)),
        synthetic_dst: cli.synthetic_dst,
        synthetic_bursts: cli.synthetic_bursts,
        join_group: cli.join_group,
        control_socket: cli.control_socket,
        print_events: cli.events,
        first_index: u64::from(cli.first_index),
    };
    for ap in &aps {
        apsim::edge_order(&ap.name, &opts)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(apsim::run(aps, opts, async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    }))
}
