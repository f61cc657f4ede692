//! `tunterm`: the tunnel terminator daemon and its small CLI.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tunterm::api::client::Client;
use tunterm::api::{ClientQuery, DisconnectRequest, FdbQuery, PreemptRequest};
use tunterm::driver::{self, DaemonOptions};
use tunterm::io::xdp::Mode as FastPathMode;
use tunterm_core::proto::l2tp::AdmissionConfig;

fn parse_fast_path(s: &str) -> Result<FastPathMode, String> {
    s.parse()
}

fn parse_cookie_len(s: &str) -> Result<usize, String> {
    match s {
        "0" => Ok(0),
        "4" => Ok(4),
        "8" => Ok(8),
        _ => Err(format!("{s}: a cookie is 0, 4 or 8 bytes long (RFC 3931)")),
    }
}

fn parse_fdb_entries(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    Ok(tunterm_ebpf::Capacity::fdb(n)?.fdb)
}

#[derive(Parser)]
#[command(version = tunterm::api::DAEMON_VERSION, about = "Mist Edge-style L2TPv3 tunnel terminator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Configuration file (mxedge / mxcluster / mxtunnels JSON). Without
        /// it, the embedded lab configuration is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Control socket for `tunterm stats` and the other commands:
        /// private to the daemon's user (mode 0600).
        #[arg(long, default_value = "/run/tunterm/tunterm.sock")]
        control_socket: PathBuf,
        /// Group (name or number) whose members may use the control socket
        /// too (mode 0660).
        #[arg(long)]
        control_group: Option<String>,
        /// Upstream trunk interface (overrides tunterm_port_config).
        #[arg(long)]
        upstream: Option<String>,
        /// UDP port for L2TP.
        #[arg(long, default_value_t = 1701)]
        port: u16,
        /// Where tunnel decapsulation runs: xdp-native (XDP in the driver),
        /// xdp-generic (XDP in the kernel's generic hook, any interface) or
        /// off (userspace only).
        #[arg(long, default_value = "off", value_parser = parse_fast_path)]
        fast_path: FastPathMode,
        /// Threads of the userspace data path (1 to 64): 1 runs everything
        /// on one event loop; N adds N-1 forwarding workers beside it,
        /// which forward known unicast between the trunk and L2TPv3/UDP
        /// tunnels and hand everything else to the loop. Overrides the
        /// configuration's `mxedge.tunterm_workers`; default: that, else 1.
        #[arg(long, value_parser = clap::value_parser!(u16)
              .range(1..=i64::from(tunterm_control::MAX_WORKERS)))]
        workers: Option<u16>,
        /// Slots for client MACs (VLAN, MAC pairs) the XDP fast path can
        /// forward between, rounded up to a power of two (32768 to
        /// 4194304). Size it to the clients expected and a sixteenth more:
        /// the table is preallocated (8 bytes a slot), fills past 95% of
        /// its slots, and a smaller one stays in the CPU caches. MACs it
        /// has no room for are forwarded in userspace.
        #[arg(long, default_value_t = tunterm_ebpf::Capacity::DEFAULT_FDB,
              value_parser = parse_fdb_entries)]
        fast_path_fdb_entries: u32,
        /// bpffs directory where the fast path's maps, programs and links
        /// are pinned, so it goes on forwarding while tunterm restarts
        /// (`none`: not pinned). The default is skipped with a warning when
        /// it is not on a bpffs.
        #[arg(long, default_value = driver::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// File where the established tunnels are kept for a restart
        /// (`none`: a restart rebuilds every tunnel). Default: the control
        /// socket's path with the extension `.state`.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Most L2TP control connections half-open (SCCRQ received, not yet
        /// established) at once; further SCCRQs are dropped and counted.
        #[arg(long, default_value_t = AdmissionConfig::default().max_half_open)]
        max_half_open: usize,
        /// SCCRQs per second each source address may send, sustained.
        #[arg(long, default_value_t = AdmissionConfig::default().sccrq_per_second)]
        sccrq_rate: u32,
        /// SCCRQs a source address may send at once (0: no per-source limit).
        #[arg(long, default_value_t = AdmissionConfig::default().sccrq_burst)]
        sccrq_burst: u32,
        /// Source addresses whose SCCRQ rate is tracked (least recently
        /// seen evicted beyond it).
        #[arg(long, default_value_t = AdmissionConfig::default().rate_table_size)]
        sccrq_sources: usize,
        /// StopCCNs a second (and at once) answering control messages for a
        /// control connection this edge does not have (an AP still holding a
        /// tunnel to an edge that restarted without its state), so the AP
        /// reconnects at its next hello instead of after its dead-peer time;
        /// 0: no answer.
        #[arg(long, default_value_t = AdmissionConfig::default().stale_stopccn_per_second)]
        stale_stopccn_rate: u32,
        /// Seconds between two probes of each tunterm_monitoring check.
        #[arg(long, default_value_t = 5.0)]
        monitor_interval: f64,
        /// Seconds without a successful probe before a check fails
        /// (overrides every check's `timeout`, e.g. for a lab).
        #[arg(long)]
        monitor_timeout: Option<f64>,
        /// Successful probes in a row before a failed check passes again.
        #[arg(long, default_value_t = 3)]
        monitor_recover: u32,
        /// Length in bytes of the cookie tunterm assigns to each L2TPv3
        /// session: 0, 4 or 8. The cookie is the only thing that
        /// authenticates a data message; 8 random bytes (RFC 3931 §8.2)
        /// make blind insertion hopeless.
        #[arg(long, default_value_t = 8, value_parser = parse_cookie_len)]
        cookie_len: usize,
        /// Serve Prometheus metrics (/metrics) and the status page (/) on
        /// this address, e.g. 127.0.0.1:9717 (off by default). Bind it to a
        /// loopback or management address only: anyone who reaches it can
        /// read the stats (the page's actions need its token).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Most tunnels (and APs) with metrics of their own, lowest tunnel
        /// ids first; the others are counted in
        /// tunterm_metrics_tunnels_omitted.
        #[arg(long, default_value_t = driver::metrics::DEFAULT_METRICS_TUNNELS)]
        metrics_tunnels: usize,
    },
    /// Print a running daemon's stats (JSON): tunnels, counters, health,
    /// its version and configuration digest (the FDB: `tunterm fdb`).
    Stats {
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
        /// Indent the document even when stdout is not a terminal (it is
        /// indented on a terminal; into a pipe or a file it is written on
        /// one line as the daemon sent it, which at 10,000 tunnels takes
        /// half the time).
        #[arg(long)]
        pretty: bool,
    },
    /// Print the forwarding database (JSON), ordered by VLAN and MAC: one
    /// page with its total, or every entry with --all.
    Fdb {
        /// Only this VLAN.
        #[arg(long)]
        vlan: Option<u16>,
        /// Only this MAC.
        #[arg(long)]
        mac: Option<String>,
        /// Only this port: trunk, host:<vlan>, an L2TP session id or an
        /// mGRE peer's port number.
        #[arg(long)]
        port: Option<String>,
        /// Entries to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Entries in the page (at most 10000).
        #[arg(long, default_value_t = tunterm::api::FDB_DEFAULT_LIMIT)]
        limit: usize,
        /// Every matching entry (a JSON array), page after page.
        #[arg(long, conflicts_with_all = ["offset", "limit"])]
        all: bool,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Print the client table (JSON), ordered by VLAN and MAC: each
    /// client behind a tunnel with its AP, addresses (DHCP, ARP, ND),
    /// first/last seen and packets/bytes each way; one page with its total.
    Clients {
        /// Only this VLAN.
        #[arg(long)]
        vlan: Option<u16>,
        /// Only this MAC.
        #[arg(long)]
        mac: Option<String>,
        /// Only clients with this address.
        #[arg(long)]
        ip: Option<String>,
        /// Only clients behind this AP (its name or address).
        #[arg(long)]
        ap: Option<String>,
        /// Entries to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Entries in the page (at most 10000).
        #[arg(long, default_value_t = tunterm::api::CLIENTS_DEFAULT_LIMIT)]
        limit: usize,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Print the multicast state (JSON): IGMP/MLD groups with their member
    /// ports and timers, router ports, queriers, and the counters of
    /// snooping and mDNS/SSDP (the `mcast` section of the stats).
    Mdb {
        /// Only this VLAN.
        #[arg(long)]
        vlan: Option<u16>,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Follow a running daemon's events (JSON lines): tunnels and sessions
    /// up and down, mGRE peers, monitoring health, reloads. Ends when the
    /// daemon stops (or Ctrl-C).
    #[command(alias = "subscribe")]
    Events {
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Close the tunnels of some APs (StopCCN): by MAC, or a percentage of
    /// them chosen at random. Prints the APs disconnected (JSON).
    DisconnectAps {
        /// AP MAC (its L2TP Host Name); repeatable.
        #[arg(long = "mac")]
        macs: Vec<String>,
        /// Share of the APs to disconnect, 0 to 100 (when no --mac).
        #[arg(long, conflicts_with = "macs")]
        percentage: Option<f64>,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Close the tunnels of the APs whose preferred edge (the first of
    /// their tunterm_hosts order) is not this one. Prints them (JSON).
    Preempt {
        /// Site id of the APs (needed with tunterm_hosts_selection
        /// shuffle-by-site).
        #[arg(long)]
        site_id: Option<String>,
        /// Only the tunnels of this mxtunnel (its id, or its name when it
        /// has no id); refused when this edge does not run it.
        #[arg(long)]
        mxtunnel_id: Option<String>,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Take data ports down for --hold-time ms and bring them back (the
    /// Mist `bounce_port` action). Ports: Mist names of the `ports` map
    /// (`0` or `port0`), interfaces, `trunk`, `host:<vlan>`. Prints what
    /// went down (JSON).
    BouncePort {
        /// The ports.
        #[arg(required = true)]
        ports: Vec<String>,
        /// Milliseconds down, 1 to 60000.
        #[arg(long, default_value_t = 1000)]
        hold_time: u64,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Apply a whole configuration file to the running daemon without a
    /// restart (the path SIGHUP takes): validated first (a refusal names
    /// the field's JSON path and changes nothing). Prints what was applied
    /// and what waits for a restart (JSON).
    ApplyConfig {
        /// The configuration (`-`: standard input).
        config: PathBuf,
        /// Also write it to the daemon's --config file (atomically).
        #[arg(long)]
        persist: bool,
        /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
        #[arg(
            long,
            env = "TUNTERM_CONTROL_SOCKET",
            default_value = "/run/tunterm/tunterm.sock"
        )]
        control_socket: PathBuf,
    },
    /// Capture packets at the running edge's capture points: pcapng to a
    /// file, to stdout (`-w - | wireshark -k -i -`) or to one TCP client
    /// (`--listen`, Wireshark's TCP@host:port), or TZSP to a UDP port.
    /// Ends at the first limit (-c, --duration) with status 0, or when
    /// the reader goes. Also a Wireshark extcap (--extcap-interfaces …).
    Capture(Box<CaptureArgs>),
    /// Validate a configuration file and print what tunterm would run:
    /// the file, then the interfaces it names (each must exist on this
    /// host), and its digest (the `config_digest` of `tunterm stats`).
    CheckConfig {
        /// The file.
        config: PathBuf,
        /// Check the file only, not this host's interfaces (for a file
        /// meant for another machine).
        #[arg(long)]
        syntax_only: bool,
    },
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Capture point (repeatable; see --list): trunk, wire, drop,
    /// ap:NAME, session:ID, gre:ADDR, host:VLAN, vlan:ID, portN.
    #[arg(short = 'i', long = "interface", default_values_t = ["trunk".to_string()])]
    points: Vec<String>,
    /// tcpdump filter expression (libpcap), for every point.
    #[arg(short = 'f', long)]
    filter: Option<String>,
    /// Frames to capture (0: no limit). Default 1024, at most 10000.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Seconds to capture (default 600).
    #[arg(long)]
    duration: Option<u64>,
    /// Bytes kept of each frame, 64 to 2048 (default 512).
    #[arg(short = 's', long)]
    snaplen: Option<u32>,
    /// pcapng or tzsp (--tzsp implies tzsp).
    #[arg(long, value_parser = parse_format)]
    format: Option<tunterm::api::CaptureFormat>,
    /// Where TZSP goes: HOST[:PORT] (port 37008 by default).
    #[arg(long)]
    tzsp: Option<String>,
    /// Write pcapng to FILE (`-`: stdout).
    #[arg(short = 'w', long = "write")]
    write: Option<PathBuf>,
    /// Serve pcapng to the first TCP client on ADDR:PORT (Wireshark:
    /// `wireshark -k -i TCP@ADDR:PORT`).
    #[arg(long, conflicts_with = "write")]
    listen: Option<std::net::SocketAddr>,
    /// List the capture points and exit.
    #[arg(long)]
    list: bool,
    /// Control socket of the daemon ($TUNTERM_CONTROL_SOCKET when set).
    #[arg(
        long,
        env = "TUNTERM_CONTROL_SOCKET",
        default_value = "/run/tunterm/tunterm.sock"
    )]
    control_socket: PathBuf,
    /// extcap: list the capture points as interfaces.
    #[arg(long, hide = true)]
    extcap_interfaces: bool,
    /// extcap: the link types of an interface.
    #[arg(long, hide = true)]
    extcap_dlts: bool,
    /// extcap: the settings of an interface.
    #[arg(long, hide = true)]
    extcap_config: bool,
    /// extcap: capture into --fifo.
    #[arg(long, hide = true)]
    capture: bool,
    /// extcap: the interface (a capture point).
    #[arg(long, hide = true)]
    extcap_interface: Option<String>,
    /// extcap: the fifo Wireshark reads.
    #[arg(long, hide = true)]
    fifo: Option<PathBuf>,
    /// extcap: the capture filter.
    #[arg(long, hide = true)]
    extcap_capture_filter: Option<String>,
    /// extcap: Wireshark's version.
    #[arg(long, hide = true)]
    extcap_version: Option<String>,
    /// extcap: toolbar control pipes (not used).
    #[arg(long, hide = true)]
    extcap_control_in: Option<String>,
    #[arg(long, hide = true)]
    extcap_control_out: Option<String>,
}

fn parse_format(s: &str) -> Result<tunterm::api::CaptureFormat, String> {
    match s {
        "pcapng" => Ok(tunterm::api::CaptureFormat::Pcapng),
        "tzsp" => Ok(tunterm::api::CaptureFormat::Tzsp),
        _ => Err(format!("{s}: pcapng or tzsp")),
    }
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<tunterm_control::EdgeConfig> {
    match config {
        Some(path) => Ok(tunterm_control::load_file(path)?),
        None => {
            tracing::info!("no --config: using the embedded lab configuration");
            Ok(tunterm_control::load_str(tunterm_control::LAB_DEFAULT)
                .context("embedded lab configuration")?)
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Wireshark runs an extcap with its own arguments only: they are
    // `capture`'s.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("--extcap") || a == "--capture")
    {
        args.insert(1, "capture".into());
    }
    let cli = Cli::parse_from(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Run {
            config,
            control_socket,
            control_group,
            upstream,
            port,
            fast_path,
            workers,
            fast_path_fdb_entries,
            pin_dir,
            state_file,
            max_half_open,
            sccrq_rate,
            sccrq_burst,
            stale_stopccn_rate,
            sccrq_sources,
            monitor_interval,
            monitor_timeout,
            monitor_recover,
            cookie_len,
            metrics,
            metrics_tunnels,
        } => {
            let secs = |name: &str, v: f64| {
                std::time::Duration::try_from_secs_f64(v)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .with_context(|| format!("--{name} {v}: not a positive number of seconds"))
            };
            let monitor = tunterm::monitoring::MonitorOptions {
                interval: secs("monitor-interval", monitor_interval)?,
                fail_after: monitor_timeout
                    .map(|t| secs("monitor-timeout", t))
                    .transpose()?,
                recover_after: monitor_recover.max(1),
            };
            let cfg = load(config.as_ref())?;
            let config_path = config.clone();
            let none = |p: &PathBuf| p.as_os_str() == "none";
            let state_file = match state_file {
                Some(p) if none(&p) => None,
                Some(p) => Some(p),
                None => Some(control_socket.with_extension("state")),
            };
            let opts = DaemonOptions {
                pin_dir_is_default: pin_dir.as_os_str() == driver::DEFAULT_PIN_DIR,
                pin_dir: (!none(&pin_dir)).then_some(pin_dir),
                state_file,
                control_socket,
                control_group,
                upstream,
                port,
                fast_path,
                fast_path_capacity: tunterm_ebpf::Capacity::fdb(fast_path_fdb_entries)
                    .map_err(anyhow::Error::msg)?,
                admission: AdmissionConfig {
                    max_half_open,
                    sccrq_per_second: sccrq_rate,
                    sccrq_burst,
                    rate_table_size: sccrq_sources,
                    stale_stopccn_per_second: stale_stopccn_rate,
                },
                monitor,
                config: config_path,
                cookie_len,
                metrics,
                metrics_options: driver::metrics::MetricsOptions {
                    tunnels: metrics_tunnels,
                },
                workers: workers.map(usize::from),
            };
            let exit = rt.block_on(driver::run(cfg, opts, shutdown_signal()))?;
            drop(rt);
            if exit == driver::Exit::Reexec {
                return Err(reexec());
            }
            Ok(())
        }
        Cmd::Stats {
            control_socket,
            pretty,
        } => {
            // Passed on as the daemon wrote it (not parsed into Stats and
            // written anew: 10,000 tunnels are 3 MB), indented byte by byte
            // on the way for a person.
            use std::io::{IsTerminal, Write};
            let json = rt.block_on(Client::new(&control_socket).stats_json())?;
            widen_stdout_pipe();
            let mut out = std::io::stdout().lock();
            if pretty || std::io::stdout().is_terminal() {
                tunterm::api::client::write_indented(json.as_bytes(), &mut out)?;
                return Ok(out.flush()?);
            }
            out.write_all(json.trim_end().as_bytes())?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
        Cmd::Fdb {
            vlan,
            mac,
            port,
            offset,
            limit,
            all,
            control_socket,
        } => {
            let client = Client::new(&control_socket);
            let query = FdbQuery {
                vlan,
                mac,
                port,
                offset,
                limit: Some(limit),
            };
            if all {
                let query = FdbQuery {
                    offset: 0,
                    limit: None,
                    ..query
                };
                print_json(&rt.block_on(client.fdb_all(&query))?)
            } else {
                print_json(&rt.block_on(client.fdb(&query))?)
            }
        }
        Cmd::Clients {
            vlan,
            mac,
            ip,
            ap,
            offset,
            limit,
            control_socket,
        } => {
            let query = ClientQuery {
                vlan,
                mac,
                ip,
                ap,
                offset,
                limit: Some(limit),
            };
            print_json(&rt.block_on(Client::new(&control_socket).clients(&query))?)
        }
        Cmd::Mdb {
            vlan,
            control_socket,
        } => {
            let mut m = rt.block_on(Client::new(&control_socket).stats())?.mcast;
            if let Some(v) = vlan {
                m.mdb.groups.retain(|g| g.vlan == v);
                m.mdb.routers.retain(|r| r.vlan == v);
                m.mdb.queriers.retain(|q| q.vlan == v);
            }
            print_json(&m)
        }
        Cmd::Events { control_socket } => rt.block_on(async {
            use std::io::Write;
            let mut events = Client::new(&control_socket).subscribe().await?;
            let mut out = std::io::stdout().lock();
            while let Some(e) = events.next().await? {
                serde_json::to_writer(&mut out, &e)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Ok(())
        }),
        Cmd::DisconnectAps {
            macs,
            percentage,
            control_socket,
        } => {
            anyhow::ensure!(
                !macs.is_empty() || percentage.is_some(),
                "give --mac (repeatable) or --percentage"
            );
            let req = DisconnectRequest { macs, percentage };
            print_json(&rt.block_on(Client::new(&control_socket).disconnect_aps(req))?)
        }
        Cmd::Preempt {
            site_id,
            mxtunnel_id,
            control_socket,
        } => {
            let req = PreemptRequest {
                site_id,
                mxtunnel_id,
            };
            print_json(&rt.block_on(Client::new(&control_socket).preempt(req))?)
        }
        Cmd::BouncePort {
            ports,
            hold_time,
            control_socket,
        } => {
            let req = tunterm::api::BouncePortRequest { ports, hold_time };
            print_json(&rt.block_on(Client::new(&control_socket).bounce_port(req))?)
        }
        Cmd::ApplyConfig {
            config,
            persist,
            control_socket,
        } => {
            // Bounded like `--config`: a wrong file is refused before it
            // is read whole.
            let text = if config.as_os_str() == "-" {
                tunterm_control::read_bounded(std::io::stdin(), "<stdin>")?
            } else {
                tunterm_control::read_file(&config)?
            };
            tunterm_control::check_bounds(&text)?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", config.display()))?;
            let report = rt.block_on(Client::new(&control_socket).apply_config(doc, persist))?;
            print_json(&report)
        }
        Cmd::Capture(args) => rt.block_on(capture::run(*args)),
        Cmd::CheckConfig {
            config,
            syntax_only,
        } => {
            let cfg = load(Some(&config))?;
            if !syntax_only {
                driver::check_ports(&cfg, None)?;
            }
            println!("{cfg:#?}");
            println!("config_digest: {}", tunterm::api::config_digest(&cfg.raw));
            Ok(())
        }
    }
}

mod capture {
    //! `tunterm capture` and the Wireshark extcap.

    use std::io::IsTerminal;
    use std::path::PathBuf;

    use anyhow::{Context, bail};
    use tokio::io::{AsyncWrite, AsyncWriteExt};
    use tunterm::api::client::{CaptureStream, Client};
    use tunterm::api::{CaptureFormat, CapturePoint, CaptureRequest};

    use super::CaptureArgs;

    const DEFAULT_SOCKET: &str = "/run/tunterm/tunterm.sock";

    pub async fn run(a: CaptureArgs) -> anyhow::Result<()> {
        let socket = match std::env::var_os("TUNTERM_CONTROL_SOCKET") {
            Some(s) if a.control_socket.as_os_str() == DEFAULT_SOCKET => PathBuf::from(s),
            _ => a.control_socket.clone(),
        };
        let client = Client::new(&socket);
        if a.extcap_interfaces {
            return extcap_interfaces(&client).await;
        }
        if a.extcap_dlts {
            let i = a.extcap_interface.as_deref().unwrap_or("trunk");
            println!("dlt {{number=1}}{{name=EN10MB}}{{display=Ethernet ({i})}}");
            return Ok(());
        }
        if a.extcap_config {
            println!(
                "arg {{number=0}}{{call=--control-socket}}{{display=tunterm control socket}}\
                 {{type=string}}{{default={}}}{{tooltip=The running edge's control socket}}",
                socket.display()
            );
            println!(
                "arg {{number=1}}{{call=--snaplen}}{{display=Bytes per frame}}{{type=integer}}\
                 {{range=64,2048}}{{default=2048}}"
            );
            return Ok(());
        }
        if a.list {
            for p in client.capture_points().await? {
                println!("{:<24} {}", p.name, p.description);
            }
            return Ok(());
        }
        let format = match (a.format, &a.tzsp) {
            (Some(CaptureFormat::Pcapng), Some(_)) => bail!("--tzsp goes with --format tzsp"),
            (Some(f), _) => f,
            (None, Some(_)) => CaptureFormat::Tzsp,
            (None, None) => CaptureFormat::Pcapng,
        };
        if format == CaptureFormat::Tzsp && a.tzsp.is_none() {
            bail!("--format tzsp needs --tzsp HOST[:PORT]");
        }
        let extcap = a.capture;
        let (points, filter) = if extcap {
            let i = a
                .extcap_interface
                .clone()
                .context("--capture needs --extcap-interface")?;
            (
                vec![i],
                a.extcap_capture_filter.clone().or(a.filter.clone()),
            )
        } else {
            (a.points.clone(), a.filter.clone())
        };
        let req = CaptureRequest {
            points: points
                .into_iter()
                .map(|name| CapturePoint { name, filter: None })
                .collect(),
            filter: filter.filter(|f| !f.trim().is_empty()),
            // Wireshark stops an extcap when it likes: no count, a day.
            num_packets: if extcap { Some(0) } else { a.count },
            duration: if extcap { Some(86_400) } else { a.duration },
            max_pkt_len: if extcap {
                Some(a.snaplen.unwrap_or(2048))
            } else {
                a.snaplen
            },
            format,
            tzsp: a.tzsp.clone(),
        };
        if format == CaptureFormat::Tzsp {
            let mut stream = client.capture(req).await?;
            eprintln!(
                "tunterm: capturing {} to TZSP {} (up to {} frames, {} s)",
                stream.accepted.points.join(", "),
                stream.accepted.tzsp.as_deref().unwrap_or("?"),
                stream.accepted.num_packets,
                stream.accepted.duration
            );
            let summary = stream
                .summary()
                .await?
                .context("the daemon ended the capture without a summary")?;
            println!("{}", serde_json::to_string(&summary)?);
            return Ok(());
        }
        if extcap {
            let fifo = a.fifo.clone().context("--capture needs --fifo")?;
            let stream = client.capture(req).await?;
            let out = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .await
                .with_context(|| format!("opening {}", fifo.display()))?;
            return copy(stream, out).await;
        }
        if let Some(addr) = a.listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            eprintln!("tunterm: waiting for a reader on TCP {addr} (wireshark -k -i TCP@{addr})");
            let (sock, peer) = l.accept().await?;
            eprintln!("tunterm: {peer} reads the capture");
            let stream = client.capture(req).await?;
            return copy(stream, sock).await;
        }
        match a.write.as_deref() {
            Some(p) if p.as_os_str() != "-" => {
                let stream = client.capture(req).await?;
                let f = tokio::fs::File::create(p)
                    .await
                    .with_context(|| format!("creating {}", p.display()))?;
                copy(stream, f).await
            }
            w => {
                if w.is_none() && std::io::stdout().is_terminal() {
                    bail!(
                        "pcapng is binary: give -w FILE, or -w - into a pipe (| wireshark -k -i -)"
                    );
                }
                let stream = client.capture(req).await?;
                copy(stream, tokio::io::stdout()).await
            }
        }
    }

    /// The pcapng bytes into `out`, flushed as they come; the end of the
    /// capture (or of the reader) is a success.
    async fn copy(
        mut stream: CaptureStream,
        mut out: impl AsyncWrite + Unpin,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                let _ = out.flush().await;
                return Ok(());
            }
            if let Err(e) = async {
                out.write_all(&buf[..n]).await?;
                out.flush().await
            }
            .await
            {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }

    async fn extcap_interfaces(client: &Client) -> anyhow::Result<()> {
        println!(
            "extcap {{version={}}}{{help=https://example.invalid/tunterm#capture}}",
            env!("CARGO_PKG_VERSION")
        );
        // No daemon: no interface (Wireshark asks every extcap at start).
        let points = client.capture_points().await.unwrap_or_default();
        for p in points {
            println!(
                "interface {{value={}}}{{display=tunterm {}: {}}}",
                p.name, p.name, p.description
            );
        }
        Ok(())
    }
}

/// Print `v` as a JSON document for people and tools.
fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    // Buffered: stdout alone writes each line of a big document apart.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Into a pipe, the document goes in 1 MiB steps instead of the kernel's
/// default 64 KiB (each step waits for the reader to wake): a few instead
/// of 80 for 10,000 tunnels. Not a pipe, or over the system's limit: as it
/// was.
fn widen_stdout_pipe() {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: fcntl with an integer argument on this process's stdout;
    // it fails harmlessly on anything but a pipe.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Exec this daemon again with the same arguments (a `restart` request):
/// the program at the path it was started as, so an upgraded binary runs.
/// Returns only when the exec failed.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let program = if std::path::Path::new(&argv0).components().count() > 1 {
        PathBuf::from(&argv0)
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&argv0))
    };
    tracing::info!(program = %program.display(), "exec for the restart");
    let e = std::process::Command::new(&program).args(args).exec();
    anyhow::anyhow!("restart: exec {}: {e}", program.display())
}

/// SIGTERM or SIGINT: stop (close the tunnels). SIGQUIT: exit for a
/// restart (keep them).
async fn shutdown_signal() -> driver::Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
    tokio::select! {
        _ = term.recv() => driver::Exit::Stop,
        _ = int.recv() => driver::Exit::Stop,
        _ = quit.recv() => driver::Exit::Restart,
    }
}
