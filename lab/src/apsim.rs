//! The AP simulator: N access points in one process, each with its own UDP
//! socket and its own initiator [`Endpoint`]. Each AP brings up a control
//! connection and one session to an edge, answers and sends HELLOs, and
//! either bridges real interfaces (client namespaces, optionally pushing a
//! VLAN tag) into its session or sends frames from synthetic clients.
//!
//! When its tunnel goes down (StopCCN, missed hellos) an AP moves to the
//! next edge in its list after `retry_delay`, as a Mist AP does.
//!
//! It is the load generator of the lab: one tokio task per AP, so thousands
//! of APs run in one process.

pub mod flood;
pub mod igmp;
pub mod junk;
pub mod keepalive;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use tunterm::io::afpacket::PacketSocket;
use tunterm::io::tunnel::TunnelSocket;
use tunterm_control::HostsSelection;
use tunterm_control::hosts::{HostsKey, host_order};
use tunterm_core::proto::l2tp::{
    AdmissionConfig, Endpoint, EndpointConfig, Event, Incoming, SessionRequest,
};
use tunterm_core::wire::ether::{self, MacAddr};
use tunterm_core::wire::gre;
use tunterm_core::wire::l2tp::{self as wire, Transport};

/// One interface an AP bridges into its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Interface name (in the simulator's namespace).
    pub ifname: String,
    /// VLAN tag pushed on frames from this interface (and stripped on the
    /// way back). None: frames cross untagged.
    pub tag: Option<u16>,
}

/// One simulated AP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApSpec {
    /// Host Name sent in the SCCRQ (the AP's name / MAC).
    pub name: String,
    /// Source address; None lets the kernel choose.
    pub local_ip: Option<IpAddr>,
    /// Interfaces bridged into the session.
    pub bridges: Vec<BridgeSpec>,
}

impl ApSpec {
    /// Parse `name=ap1,ip=10.99.0.2,bridge=c1,bridge=c2:20`.
    pub fn parse(s: &str) -> anyhow::Result<ApSpec> {
        let mut spec = ApSpec {
            name: String::new(),
            local_ip: None,
            bridges: vec![],
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("{part:?}: expected key=value"))?;
            match k {
                "name" => spec.name = v.to_string(),
                "ip" => spec.local_ip = Some(v.parse().with_context(|| format!("ip={v}"))?),
                "bridge" => {
                    let (ifname, tag) = match v.split_once(':') {
                        Some((i, t)) => {
                            let tag: u16 =
                                t.parse().with_context(|| format!("bridge tag {t:?}"))?;
                            anyhow::ensure!(
                                (1..=4094).contains(&tag),
                                "bridge tag {tag} out of 1..=4094"
                            );
                            (i, Some(tag))
                        }
                        None => (v, None),
                    };
                    spec.bridges.push(BridgeSpec {
                        ifname: ifname.to_string(),
                        tag,
                    });
                }
                other => anyhow::bail!("unknown AP key {other:?} (name, ip, bridge)"),
            }
        }
        anyhow::ensure!(!spec.name.is_empty(), "AP spec {s:?} has no name=");
        Ok(spec)
    }
}

/// How the simulated APs reach the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApTransport {
    /// L2TPv3 over UDP.
    L2tpUdp,
    /// L2TPv3 over IP protocol 115.
    L2tpIp,
    /// mGRE: GRE 0x6558, with this key if any; keepalives every
    /// `hello_interval`, the edge given up after `hello_retries` missed.
    Gre(Option<u32>),
}

/// Simulator-wide options.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Edges to connect to (`tunterm_hosts`), ordered per AP by
    /// `hosts_selection`.
    pub edges: Vec<SocketAddr>,
    /// How each AP orders `edges` (`tunterm_hosts_selection`).
    pub hosts_selection: HostsSelection,
    /// Indices into `edges` for `ordered` (`tunterm_hosts_order`).
    pub hosts_order: Vec<u32>,
    /// Site id of the APs (`shuffle-by-site`).
    pub site_id: String,
    /// Encapsulation.
    pub transport: ApTransport,
    /// Remote End ID of the sessions (the mxtunnel name).
    pub remote_end_id: String,
    /// Pseudowire type.
    pub pw_type: u16,
    /// Cookie length the APs assign.
    pub cookie_len: usize,
    /// Ask for the default L2-Specific Sublayer.
    pub l2_sublayer: bool,
    /// Require sequence numbers on data (implies the sublayer).
    pub sequencing: bool,
    /// HELLO interval.
    pub hello_interval: Duration,
    /// Missed hellos before the AP moves on.
    pub hello_retries: u32,
    /// Wait after a tunnel loss before connecting again.
    pub retry_delay: Duration,
    /// Synthetic clients per AP (0: none).
    pub synthetic_clients: u32,
    /// VLAN tag of synthetic frames (None: untagged).
    pub synthetic_vlan: Option<u16>,
    /// Each synthetic client sends a frame this often.
    pub synthetic_interval: Duration,
    /// Destination MAC of synthetic frames (broadcast when None: every
    /// frame is then flooded to every session on the VLAN).
    pub synthetic_dst: Option<MacAddr>,
    /// Rounds of synthetic frames each AP sends, then stops (0: no limit).
    /// A load generator teaches the edge its clients this way and then
    /// keeps the measured links quiet.
    pub synthetic_bursts: u32,
    /// A group the first AP's member client joins (an IGMPv3 report when
    /// the session comes up and on each query for it); every AP counts the
    /// group's data it receives (`rx_group_frames`).
    pub join_group: Option<Ipv4Addr>,
    /// Control socket answering `stats`.
    pub control_socket: Option<PathBuf>,
    /// Print one JSON line per event on stdout.
    pub print_events: bool,
    /// Index of the first AP (its synthetic clients' MACs and its router
    /// id follow from it): a second simulator beside a first one takes
    /// indices after the first's, so their clients do not clash.
    pub first_index: u64,
}

/// What one AP reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApStatus {
    /// Edge it is connected (or connecting) to.
    pub edge: String,
    /// Tunnel state, Mist names.
    pub state: String,
    /// Whether the session is up.
    pub session_up: bool,
    /// Tunnels brought up so far (reconnects count).
    pub tunnels_up: u64,
    /// Position of `edge` in this AP's order of the edges (0: preferred).
    pub edge_rank: usize,
    /// Moves to the next edge (tunnel lost, or never came up).
    pub failovers: u64,
    /// Frames sent into the tunnel.
    pub tx_frames: u64,
    /// Frames received from the tunnel.
    pub rx_frames: u64,
    /// Frames from the tunnel no bridge took (tag with no bridge).
    pub rx_unbridged: u64,
    /// Data messages the endpoint dropped.
    pub rx_dropped: u64,
    /// Data frames to `--join-group`'s group received from the edge.
    pub rx_group_frames: u64,
    /// Unicast frames from the edge addressed to one of this AP's
    /// synthetic clients (what a sender on the trunk sent them arrives
    /// here: loss is counted at the receiver).
    pub rx_client_frames: u64,
    /// IGMP reports the member client sent (first AP, `--join-group`).
    pub igmp_reports: u64,
    /// The data session while it is up: what a load generator needs to
    /// send data messages the edge accepts as this AP's.
    pub session: Option<ApSession>,
}

/// The data parameters of an AP's session.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApSession {
    /// The AP's session id (the edge's data messages carry it).
    pub local_sid: u32,
    /// The edge's session id (the AP's data messages carry it).
    pub remote_sid: u32,
    /// The cookie the AP sends (the edge assigned it), hex.
    pub cookie_tx: String,
    /// The cookie the edge sends (the AP assigned it), hex.
    pub cookie_rx: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Summary plus per-AP status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SimStats {
    /// APs simulated.
    pub aps: usize,
    /// APs whose tunnel is established.
    pub tunnels_up: usize,
    /// APs whose session is up.
    pub sessions_up: usize,
    /// When the APs came up (a bench's setup rate).
    pub setup: SetupTimes,
    /// Per AP (left out of the answer to `summary`).
    pub per_ap: BTreeMap<String, ApStatus>,
}

/// When the simulated APs started connecting and when their tunnels and
/// sessions came up, in seconds since the Unix epoch (the machine's clock,
/// as the edge's log and events): what a bench needs for the setup rate
/// without asking for every AP's status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupTimes {
    /// The first SCCRQ an AP sent (its first connect).
    pub first_connect_unix: f64,
    /// Tunnels come up at the APs so far (reconnects count).
    pub tunnel_up_events: u64,
    /// When the last of them came up.
    pub last_tunnel_up_unix: f64,
    /// Sessions come up at the APs so far.
    pub session_up_events: u64,
    /// When the last of them came up.
    pub last_session_up_unix: f64,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

type Shared = Rc<RefCell<SimStats>>;

/// Update one AP's status.
fn status(shared: &Shared, ap: &str, f: impl FnOnce(&mut ApStatus)) {
    let mut st = shared.borrow_mut();
    match st.per_ap.get_mut(ap) {
        Some(s) => f(s),
        None => f(st.per_ap.entry(ap.to_string()).or_default()),
    }
}

fn emit_event(opts: &SimOptions, ap: &str, event: &str, detail: serde_json::Value) {
    if opts.print_events {
        let line = serde_json::json!({"ap": ap, "event": event, "detail": detail});
        println!("{line}");
    }
}

/// Run every AP until `shutdown` fires; then each AP sends StopCCN and
/// waits (briefly) for it to be acknowledged.
pub async fn run(
    aps: Vec<ApSpec>,
    opts: SimOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!opts.edges.is_empty(), "no edge to connect to");
    let local = tokio::task::LocalSet::new();
    let shared: Shared = Rc::new(RefCell::new(SimStats {
        aps: aps.len(),
        ..SimStats::default()
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let opts = Rc::new(opts);
    local
        .run_until(async move {
            let mut tasks = Vec::new();
            for (i, spec) in aps.into_iter().enumerate() {
                let (opts, shared, stop) = (opts.clone(), shared.clone(), stop_rx.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let name = spec.name.clone();
                    let index = opts.first_index + i as u64;
                    if let Err(e) = run_ap(index, spec, opts, shared, stop).await {
                        eprintln!("apsim: AP {name}: {e:#}");
                    }
                }));
            }
            if let Some(path) = opts.control_socket.clone() {
                let shared = shared.clone();
                tokio::task::spawn_local(async move {
                    if let Err(e) = serve_stats(path, shared).await {
                        eprintln!("apsim: control socket: {e:#}");
                    }
                });
            }
            shutdown.await;
            let _ = stop_tx.send(true);
            for t in tasks {
                let _ = t.await;
            }
            if let Some(path) = &opts.control_socket {
                let _ = std::fs::remove_file(path);
            }
        })
        .await;
    Ok(())
}

async fn serve_stats(path: PathBuf, shared: Shared) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let shared = shared.clone();
        // Read the request first (closing with it unread would reset the
        // connection under the reply): `summary` answers without the per-AP
        // part, which is most of the work with thousands of APs; anything
        // else gets everything.
        tokio::task::spawn_local(async move {
            let mut line = Vec::new();
            let mut rd = tokio::io::BufReader::new(&mut s);
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncBufReadExt::read_until(&mut rd, b'\n', &mut line),
            )
            .await;
            let summary = line.trim_ascii() == b"summary";
            let body = {
                let mut st = shared.borrow_mut();
                st.tunnels_up = st
                    .per_ap
                    .values()
                    .filter(|a| a.state.starts_with("established"))
                    .count();
                st.sessions_up = st.per_ap.values().filter(|a| a.session_up).count();
                if summary {
                    serde_json::json!({
                        "aps": st.aps, "tunnels_up": st.tunnels_up,
                        "sessions_up": st.sessions_up, "setup": st.setup,
                    })
                    .to_string()
                } else {
                    serde_json::to_string_pretty(&*st).unwrap_or_default()
                }
            };
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

/// The edges in the order this AP tries them: `opts.edges` ordered per
/// `hosts_selection` exactly as the daemon computes an AP's preferred edge
/// ([`tunterm_control::hosts::host_order`]). `shuffle` needs the AP's name
/// to be its MAC.
pub fn edge_order(ap_name: &str, opts: &SimOptions) -> anyhow::Result<Vec<SocketAddr>> {
    let ap_mac = match opts.hosts_selection {
        HostsSelection::Shuffle => ap_name.parse().with_context(|| {
            format!("AP {ap_name:?}: --hosts-selection shuffle needs APs named by their MAC")
        })?,
        _ => MacAddr::ZERO,
    };
    let key = HostsKey {
        ap_mac,
        site_id: &opts.site_id,
        tunnel_id: &opts.remote_end_id,
    };
    Ok(host_order(
        opts.edges.len(),
        opts.hosts_selection,
        &opts.hosts_order,
        key,
    )
    .into_iter()
    .map(|i| opts.edges[i])
    .collect())
}

struct Bridge {
    fd: Rc<AsyncFd<PacketSocket>>,
    tag: Option<u16>,
}

fn bind_socket(
    transport: ApTransport,
    local: Option<IpAddr>,
    edge: SocketAddr,
) -> io::Result<TunnelSocket> {
    let any = if edge.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let local = local.unwrap_or(any);
    match transport {
        ApTransport::L2tpUdp => TunnelSocket::udp(SocketAddr::new(local, 0), true),
        ApTransport::L2tpIp => TunnelSocket::raw(local, wire::IP_PROTO_L2TP, true),
        ApTransport::Gre(_) => {
            TunnelSocket::raw(local, tunterm_core::wire::gre::IP_PROTO_GRE, true)
        }
    }
}

type FrameRx = mpsc::Receiver<(usize, Vec<u8>)>;

/// Open the bridged interfaces; their frames arrive on the receiver.
fn open_bridges(spec: &ApSpec) -> anyhow::Result<(Vec<Bridge>, FrameRx)> {
    let (frame_tx, frame_rx) = mpsc::channel::<(usize, Vec<u8>)>(1024);
    let mut bridges = Vec::new();
    for (i, b) in spec.bridges.iter().enumerate() {
        let ps = PacketSocket::bind(&b.ifname).with_context(|| format!("bridging {}", b.ifname))?;
        let fd = Rc::new(ps.into_async()?);
        let (fd2, tx) = (fd.clone(), frame_tx.clone());
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 65_600];
            loop {
                let Ok(mut guard) = fd2.readable().await else {
                    return;
                };
                loop {
                    match fd2.get_ref().recv(&mut buf) {
                        Ok(n) => {
                            if tx.send((i, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                }
                guard.clear_ready();
            }
        });
        bridges.push(Bridge { fd, tag: b.tag });
    }
    Ok((bridges, frame_rx))
}

async fn run_ap(
    index: u64,
    spec: ApSpec,
    opts: Rc<SimOptions>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let edges = edge_order(&spec.name, &opts)?;
    let sock = bind_socket(opts.transport, spec.local_ip, edges[0])
        .with_context(|| format!("binding {:?} for {:?}", spec.local_ip, opts.transport))?;
    let (bridges, mut frame_rx) = open_bridges(&spec)?;
    let transport = match opts.transport {
        ApTransport::L2tpUdp => Transport::Udp,
        ApTransport::L2tpIp => Transport::Ip,
        ApTransport::Gre(key) => {
            return run_gre_ap(
                index, spec, opts, edges, shared, stop, sock, bridges, frame_rx, key,
            )
            .await;
        }
    };

    // From the OS, as the daemon does: an AP's ids and cookies tell nothing
    // about another's.
    let mut seed = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
        .context("reading a random seed from the OS")?;
    let cfg = EndpointConfig {
        host_name: spec.name.clone(),
        router_id: index as u32 + 1,
        cookie_len: opts.cookie_len,
        l2_sublayer: opts.l2_sublayer,
        sequencing: opts.sequencing,
        accept_incoming: false,
        hello_interval: opts.hello_interval,
        hello_retries: opts.hello_retries,
        admission: AdmissionConfig {
            // Over IP every simulated AP's raw socket on a shared address
            // sees every AP's packets: one answering another's hello with
            // a StopCCN for a connection "it does not have" would close
            // that AP's tunnel at the edge. A real AP is alone on its
            // address and answers (the simulator does over UDP).
            stale_stopccn_per_second: match transport {
                Transport::Ip => 0,
                Transport::Udp => AdmissionConfig::default().stale_stopccn_per_second,
            },
            ..AdmissionConfig::default()
        },
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(cfg, seed);
    let mut edge_idx = 0usize;
    let mut edge = edges[edge_idx];
    {
        let mut st = shared.borrow_mut();
        if st.setup.first_connect_unix == 0.0 {
            st.setup.first_connect_unix = unix_now();
        }
    }
    let mut ccid = connect(&mut ep, transport, edge, &opts);
    let mut session: Option<u32> = None;
    let mut reconnect_at: Option<Instant> = None;
    let mut stopping = false;
    let mut stop_deadline = None;
    let mut synthetic = Synthetic::new(index, &opts);
    let member = Member::new(index, &opts);
    let mut next_synth = Instant::now() + opts.synthetic_interval;
    let mut buf = vec![0u8; 65_600];
    let mut out = Vec::with_capacity(2048);
    {
        let mut st = shared.borrow_mut();
        let s = st.per_ap.entry(spec.name.clone()).or_default();
        s.edge = edge.to_string();
        s.state = "wait-ctrl-reply".into();
    }
    loop {
        // Send what the endpoint produced.
        while let Some(t) = ep.poll_transmit() {
            let _ = send_now(&sock, &t.payload, t.dst);
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                Event::TunnelUp {
                    peer, host_name, ..
                } => {
                    emit_event(
                        &opts,
                        &spec.name,
                        "tunnel_up",
                        serde_json::json!({"edge": peer.to_string(), "edge_name": host_name}),
                    );
                    let mut st = shared.borrow_mut();
                    st.setup.tunnel_up_events += 1;
                    st.setup.last_tunnel_up_unix = unix_now();
                    let s = st.per_ap.entry(spec.name.clone()).or_default();
                    s.tunnels_up += 1;
                }
                Event::SessionUp { session_id, .. } => {
                    session = Some(session_id);
                    emit_event(
                        &opts,
                        &spec.name,
                        "session_up",
                        serde_json::json!({"session_id": session_id}),
                    );
                    let info = ep.session(session_id).map(|d| ApSession {
                        local_sid: d.local_sid,
                        remote_sid: d.remote_sid,
                        cookie_tx: hex(d.cookie_tx.as_slice()),
                        cookie_rx: hex(d.cookie_rx.as_slice()),
                    });
                    {
                        let mut st = shared.borrow_mut();
                        st.setup.session_up_events += 1;
                        st.setup.last_session_up_unix = unix_now();
                    }
                    status(&shared, &spec.name, |s| {
                        s.session_up = true;
                        s.session = info;
                    });
                    if let Some(report) = member.as_ref().and_then(|m| m.report.as_deref())
                        && send_frame(&mut ep, &sock, session_id, report, None, &mut out)
                    {
                        status(&shared, &spec.name, |s| s.igmp_reports += 1);
                    }
                }
                Event::SessionDown {
                    session_id, reason, ..
                } => {
                    if session == Some(session_id) {
                        session = None;
                    }
                    emit_event(
                        &opts,
                        &spec.name,
                        "session_down",
                        serde_json::json!({"reason": format!("{reason:?}")}),
                    );
                    status(&shared, &spec.name, |s| {
                        s.session_up = false;
                        s.session = None;
                    });
                }
                Event::PeerCdn {
                    result,
                    error,
                    message,
                    ..
                } => {
                    emit_event(
                        &opts,
                        &spec.name,
                        "session_refused",
                        serde_json::json!({"result": result, "error": error, "message": message}),
                    );
                }
                Event::TunnelDown { reason, .. } => {
                    session = None;
                    emit_event(
                        &opts,
                        &spec.name,
                        "tunnel_down",
                        serde_json::json!({"edge": edge.to_string(), "reason": format!("{reason:?}")}),
                    );
                    status(&shared, &spec.name, |s| {
                        s.session_up = false;
                        s.session = None;
                    });
                    if !stopping {
                        reconnect_at = Some(Instant::now() + opts.retry_delay);
                    }
                }
            }
        }
        {
            let mut st = shared.borrow_mut();
            let s = st.per_ap.entry(spec.name.clone()).or_default();
            let state = ep
                .stats(Instant::now())
                .into_iter()
                .find(|c| c.local_ccid == ccid)
                .map_or("idle".into(), |c| c.state);
            if s.state != state {
                s.state = state.into_owned();
            }
            s.rx_dropped = ep.counters().rx_data_unknown_session
                + ep.counters().rx_data_bad_cookie
                + ep.counters().rx_data_bad_source
                + ep.counters().rx_data_not_established;
        }
        if stopping && (ep.conn_count() == 0 || ep.stats(Instant::now()).is_empty()) {
            return Ok(());
        }
        if let Some(at) = reconnect_at
            && Instant::now() >= at
            && !stopping
        {
            reconnect_at = None;
            let from = edge;
            edge_idx = (edge_idx + 1) % edges.len();
            edge = edges[edge_idx];
            emit_event(
                &opts,
                &spec.name,
                "failover",
                serde_json::json!({"from": from.to_string(), "to": edge.to_string()}),
            );
            status(&shared, &spec.name, |s| {
                s.edge = edge.to_string();
                s.edge_rank = edge_idx;
                s.failovers += 1;
            });
            ccid = connect(&mut ep, transport, edge, &opts);
            continue;
        }
        let now = Instant::now();
        let mut wake = ep.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        if let Some(at) = reconnect_at {
            wake = wake.min(at);
        }
        if synthetic.as_ref().is_some_and(Synthetic::active) {
            wake = wake.min(next_synth);
        }
        if let Some(d) = stop_deadline {
            wake = wake.min(d);
        }
        tokio::select! {
            _ = stop.changed(), if !stopping => {
                stopping = true;
                stop_deadline = Some(Instant::now() + Duration::from_secs(1));
                ep.close_all(Instant::now(), wire::stopccn::CLEAR, "AP shutting down");
            }
            r = sock.readable() => {
                r?;
                for _ in 0..64 {
                    let (n, from) = match sock.try_recv(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    };
                    if let Incoming::Data { payload, .. } = ep.handle_datagram(Instant::now(), transport, from, &buf[..n]) {
                        let delivered = deliver(&bridges, payload, &mut out);
                        let mut st = shared.borrow_mut();
                        let s = st.per_ap.entry(spec.name.clone()).or_default();
                        s.rx_frames += 1;
                        if !delivered && synthetic.is_none() {
                            s.rx_unbridged += 1;
                        }
                        if synthetic.is_some() && is_synthetic_client_of(index, payload) {
                            s.rx_client_frames += 1;
                        }
                        let report = member.as_ref().and_then(|m| m.heard(payload, s));
                        drop(st);
                        if let (Some(report), Some(sid)) = (report, session)
                            && send_frame(&mut ep, &sock, sid, report, None, &mut out)
                        {
                            status(&shared, &spec.name, |s| s.igmp_reports += 1);
                        }
                    }
                }
            }
            Some((i, frame)) = frame_rx.recv() => {
                if let Some(sid) = session
                    && send_frame(&mut ep, &sock, sid, &frame, bridges[i].tag, &mut out)
                {
                    status(&shared, &spec.name, |s| s.tx_frames += 1);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                ep.handle_timeout(now);
                if let Some(d) = stop_deadline && now >= d {
                    return Ok(());
                }
                if let (Some(syn), Some(sid)) = (&mut synthetic, session)
                    && now >= next_synth
                    && syn.active()
                {
                    let mut sent = 0;
                    for f in &syn.frames {
                        if send_frame(&mut ep, &sock, sid, f, None, &mut out) {
                            sent += 1;
                        }
                    }
                    syn.burst_sent();
                    status(&shared, &spec.name, |s| s.tx_frames += sent);
                }
                if now >= next_synth {
                    next_synth = now + opts.synthetic_interval;
                }
            }
        }
    }
}

fn connect(ep: &mut Endpoint, transport: Transport, edge: SocketAddr, opts: &SimOptions) -> u32 {
    let now = Instant::now();
    let ccid = ep.connect(
        now,
        transport,
        edge,
        opts.hello_interval,
        opts.hello_retries,
    );
    ep.open_session(
        now,
        ccid,
        SessionRequest {
            remote_end_id: opts.remote_end_id.clone(),
            pw_type: opts.pw_type,
        },
    );
    ccid
}

/// Frame from the tunnel → the bridge whose tag it carries (tag stripped),
/// or the untagged bridge.
fn deliver(bridges: &[Bridge], frame: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(view) = ether::parse(frame) else {
        return false;
    };
    let vid = view.tag.map(|t| t.vid());
    let Some(b) = bridges.iter().find(|b| b.tag == vid) else {
        return false;
    };
    let bytes: &[u8] = if vid.is_some() {
        ether::write_retagged(frame, &view, None, out);
        out
    } else {
        frame
    };
    b.fd.get_ref().send(bytes).is_ok()
}

fn send_frame(
    ep: &mut Endpoint,
    sock: &TunnelSocket,
    sid: u32,
    frame: &[u8],
    tag: Option<u16>,
    out: &mut Vec<u8>,
) -> bool {
    let Some(view) = ether::parse(frame) else {
        return false;
    };
    let Some((_, peer)) = ep.encap_header(sid, out) else {
        return false;
    };
    let tag = tag.or(view.tag.map(|t| t.vid()));
    ether::append_retagged(frame, &view, tag, out);
    send_now(sock, out, peer).is_ok()
}

/// Send `payload` to `dst` now. Over UDP `TunnelSocket::try_send` is
/// tokio's `try_send_to`, which answers `WouldBlock` without trying while
/// the runtime has not yet seen the socket writable — as for every AP's
/// first SCCRQ, sent right after its socket is made: each then waited for
/// its retransmission a second later. The system call itself says whether
/// the kernel takes the packet.
fn send_now(sock: &TunnelSocket, payload: &[u8], dst: SocketAddr) -> io::Result<usize> {
    match sock {
        TunnelSocket::Udp(u) => socket2::SockRef::from(u).send_to(payload, &dst.into()),
        TunnelSocket::Raw(_) => sock.try_send(payload, dst),
    }
}

/// The MAC of synthetic client `c` of AP `index`: locally administered,
/// the AP's index and the client's number in it.
pub fn synthetic_client_mac(index: u64, c: u32) -> MacAddr {
    let [.., i2, i1, i0] = index.to_be_bytes();
    let [.., c1, c0] = c.to_be_bytes();
    MacAddr([0x02, i2, i1, i0, c1, c0])
}

/// Whether `frame`'s destination is a synthetic client of AP `index`
/// (see [`synthetic_client_mac`]).
fn is_synthetic_client_of(index: u64, frame: &[u8]) -> bool {
    let [.., i2, i1, i0] = index.to_be_bytes();
    frame.len() >= 6 && frame[..4] == [0x02, i2, i1, i0]
}

/// Frames of the synthetic clients of one AP: an ARP announcement from
/// each (broadcast, or unicast to `synthetic_dst`), so the edge learns every
/// client MAC.
struct Synthetic {
    frames: Vec<Vec<u8>>,
    /// Rounds still to send (None: no limit).
    bursts_left: Option<u32>,
}

impl Synthetic {
    fn new(index: u64, opts: &SimOptions) -> Option<Synthetic> {
        if opts.synthetic_clients == 0 {
            return None;
        }
        let frames = (0..opts.synthetic_clients)
            .map(|c| {
                let ip = Ipv4Addr::new(10, 200, (c >> 8) as u8, c as u8);
                ether::arp_request(
                    (synthetic_client_mac(index, c), ip),
                    ip,
                    opts.synthetic_dst.unwrap_or(MacAddr::BROADCAST),
                    opts.synthetic_vlan,
                )
            })
            .collect();
        Some(Synthetic {
            frames,
            bursts_left: (opts.synthetic_bursts > 0).then_some(opts.synthetic_bursts),
        })
    }

    /// Whether another round is to be sent.
    fn active(&self) -> bool {
        self.bursts_left != Some(0)
    }

    /// One round was sent.
    fn burst_sent(&mut self) {
        if let Some(n) = &mut self.bursts_left {
            *n = n.saturating_sub(1);
        }
    }
}

/// Address of the member client's reports (`--join-group`).
pub const MEMBER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);

/// An AP's part in `--join-group`: every AP counts the group's data; the
/// first one's member client (synthetic client 0's MAC, [`MEMBER_IP`],
/// the synthetic VLAN) reports the group when its tunnel comes up and
/// answers every query for it at once.
struct Member {
    group: Ipv4Addr,
    /// The member's report (first AP only).
    report: Option<Vec<u8>>,
}

impl Member {
    fn new(index: u64, opts: &SimOptions) -> Option<Member> {
        let group = opts.join_group?;
        let report = (index == 0).then(|| {
            igmp::report_v3(
                (synthetic_client_mac(0, 0), MEMBER_IP),
                group,
                opts.synthetic_vlan,
            )
        });
        Some(Member { group, report })
    }

    /// Count `frame` from the edge in `st` if it is the group's data; the
    /// report to send if it is a query the member answers.
    fn heard(&self, frame: &[u8], st: &mut ApStatus) -> Option<&[u8]> {
        match igmp::classify(frame, self.group) {
            igmp::Heard::Data => {
                st.rx_group_frames += 1;
                None
            }
            igmp::Heard::Query => self.report.as_deref(),
            igmp::Heard::Other => None,
        }
    }
}

/// An mGRE AP: frames from its bridges go to the edge in GRE 0x6558 (with
/// its key, if any); keepalives (Cisco-style, reflected by the edge) every
/// `hello_interval`; after `hello_retries` unanswered ones the AP moves to
/// the next edge.
#[allow(clippy::too_many_arguments)]
async fn run_gre_ap(
    index: u64,
    spec: ApSpec,
    opts: Rc<SimOptions>,
    edges: Vec<SocketAddr>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
    sock: TunnelSocket,
    bridges: Vec<Bridge>,
    mut frame_rx: FrameRx,
    key: Option<u32>,
) -> anyhow::Result<()> {
    let Some(local) = spec.local_ip else {
        anyhow::bail!("a GRE AP needs its address (ip=) for keepalives");
    };
    let mut edge_idx = 0usize;
    let mut edge = edges[edge_idx];
    let dead_after = opts.hello_interval * opts.hello_retries;
    let mut last_rx: Option<Instant> = None;
    let mut up = false;
    let mut next_keepalive = Instant::now();
    let mut started = Instant::now();
    let mut synthetic = Synthetic::new(index, &opts);
    let member = Member::new(index, &opts);
    let mut next_synth = Instant::now() + opts.synthetic_interval;
    let mut buf = vec![0u8; 65_600];
    let mut out = Vec::with_capacity(2048);
    status(&shared, &spec.name, |s| {
        s.edge = edge.to_string();
        s.state = "wait-ctrl-reply".into();
    });
    loop {
        // The edge is given up exactly `dead_after` after it was last
        // heard, not at the next keepalive.
        let mut wake = next_keepalive.min(last_rx.unwrap_or(started) + dead_after);
        if synthetic.as_ref().is_some_and(Synthetic::active) {
            wake = wake.min(next_synth);
        }
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = sock.readable() => {
                r?;
                for _ in 0..64 {
                    let (n, from) = match sock.try_recv(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    };
                    if from.ip() != edge.ip() {
                        continue;
                    }
                    let pkt = &buf[..n];
                    if keepalive::is_keepalive_reply(pkt) {
                        last_rx = Some(Instant::now());
                        if !up {
                            up = true;
                            emit_event(&opts, &spec.name, "tunnel_up", serde_json::json!({"edge": edge.to_string(), "transport": "gre"}));
                            status(&shared, &spec.name, |s| {
                                s.tunnels_up += 1;
                                s.session_up = true;
                                s.state = "established_with_sessions".into();
                            });
                            if let Some(report) = member.as_ref().and_then(|m| m.report.as_deref())
                                && gre_send(&sock, edge, key, report, None, &mut out)
                            {
                                status(&shared, &spec.name, |s| s.igmp_reports += 1);
                            }
                        }
                        continue;
                    }
                    if let Some(frame) = gre_payload(pkt) {
                        last_rx = Some(Instant::now());
                        let delivered = deliver(&bridges, frame, &mut out);
                        let mut report = None;
                        status(&shared, &spec.name, |s| {
                            s.rx_frames += 1;
                            if !delivered && synthetic.is_none() {
                                s.rx_unbridged += 1;
                            }
                            if synthetic.is_some() && is_synthetic_client_of(index, frame) {
                                s.rx_client_frames += 1;
                            }
                            report = member.as_ref().and_then(|m| m.heard(frame, s));
                        });
                        if let Some(report) = report
                            && gre_send(&sock, edge, key, report, None, &mut out)
                        {
                            status(&shared, &spec.name, |s| s.igmp_reports += 1);
                        }
                    } else {
                        status(&shared, &spec.name, |s| s.rx_dropped += 1);
                    }
                }
            }
            Some((i, frame)) = frame_rx.recv() => {
                if gre_send(&sock, edge, key, &frame, bridges[i].tag, &mut out) {
                    status(&shared, &spec.name, |s| s.tx_frames += 1);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                let heard = last_rx.unwrap_or(started);
                if now.duration_since(heard) >= dead_after {
                        if up {
                            emit_event(&opts, &spec.name, "tunnel_down", serde_json::json!({"edge": edge.to_string(), "reason": "keepalive timeout"}));
                        }
                        up = false;
                        status(&shared, &spec.name, |s| {
                            s.session_up = false;
                            s.state = "idle".into();
                        });
                        let from = edge;
                        edge_idx = (edge_idx + 1) % edges.len();
                        edge = edges[edge_idx];
                        started = now;
                        last_rx = None;
                        next_keepalive = now;
                        emit_event(&opts, &spec.name, "failover", serde_json::json!({"from": from.to_string(), "to": edge.to_string()}));
                        status(&shared, &spec.name, |s| {
                            s.edge = edge.to_string();
                            s.edge_rank = edge_idx;
                            s.failovers += 1;
                        });
                }
                if now >= next_keepalive {
                    let probe = keepalive::keepalive_probe(local, edge.ip(), key);
                    let _ = sock.try_send(&probe, edge);
                    next_keepalive = now + opts.hello_interval;
                }
                if let Some(syn) = &mut synthetic && now >= next_synth && syn.active() {
                    let mut sent = 0;
                    for f in &syn.frames {
                        if gre_send(&sock, edge, key, f, None, &mut out) {
                            sent += 1;
                        }
                    }
                    syn.burst_sent();
                    status(&shared, &spec.name, |s| s.tx_frames += sent);
                    next_synth = now + opts.synthetic_interval;
                }
            }
        }
    }
}

/// The Ethernet frame inside a GRE 0x6558 packet.
fn gre_payload(pkt: &[u8]) -> Option<&[u8]> {
    let p = gre::parse(pkt).ok()?;
    (p.header.protocol == gre::PROTO_TEB).then_some(p.payload)
}

/// Send `frame` to the edge in GRE (pushing `tag` when given).
fn gre_send(
    sock: &TunnelSocket,
    edge: SocketAddr,
    key: Option<u32>,
    frame: &[u8],
    tag: Option<u16>,
    out: &mut Vec<u8>,
) -> bool {
    let Some(view) = ether::parse(frame) else {
        return false;
    };
    let header = gre::GreHeader {
        key,
        ..gre::GreHeader::new(gre::PROTO_TEB)
    };
    out.clear();
    out.resize(header.header_len(), 0);
    gre::emit(&header, out);
    let tag = tag.or(view.tag.map(|t| t.vid()));
    ether::append_retagged(frame, &view, tag, out);
    sock.try_send(out, edge).is_ok()
}
