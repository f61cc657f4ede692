//! The XDP fast path as the daemon drives it: load `xdp_ap_rx`, attach it to
//! the AP-facing interfaces, and keep its maps a mirror of the userspace
//! switch, which stays the source of truth.
//!
//! - Sessions: every established L2TPv3 session over UDP/IPv4 gets a
//!   `sessions` entry (peer, cookie, sublayer, VLANs, trunk ifindex); others
//!   stay on the slow path (counted by reason in [`FastPathStats`]).
//! - FDB: every switch FDB entry is mirrored with its egress tagging. The
//!   program forwards only between MACs the switch already knows; anything
//!   it does not handle is passed up unchanged and the switch learns from it.
//! - Aging: the program stamps `last_seen_ns` on sources it forwards from;
//!   [`FastPath::refresh`] carries those stamps into the switch so MACs that
//!   only the fast path sees do not age out.
//!
//! A native `XDP_REDIRECT` into a veth is dropped silently unless the veth's
//! peer runs an XDP program or has GRO on: [`FastPath::start`] warns when
//! the trunk is a veth.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::ffi::CString;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustc_hash::FxHashMap;
use serde::Serialize;
use tracing::{info, warn};
use tunterm_ebpf::ApRx;
use tunterm_ebpf::aya::programs::XdpMode;
use tunterm_ebpf::aya::programs::xdp::XdpLinkId;
use tunterm_ebpf::maps::{
    Counters, EntryError, SessionSpec, tt_counter, tt_fdb_entry, tt_fdb_key, tt_session,
};

use crate::proto::bridge::{PortConfig, PortId, Switch};
use crate::proto::l2tp::{DataSession, Endpoint, SessionState};
use crate::wire::l2tp::Transport;

/// How often fast-path "last seen" stamps are carried into the switch.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Least time between two FDB mirrors (each compares the whole table), so a
/// learning storm costs a bounded share of the loop. New MACs are forwarded
/// by the slow path meanwhile.
const FDB_SYNC_EVERY: Duration = Duration::from_millis(50);

/// `--fast-path`: where tunnel decapsulation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Everything in userspace.
    #[default]
    Off,
    /// XDP in the driver (veth, most NICs): the fast one.
    Native,
    /// XDP in the kernel's generic hook (any interface; slower, for
    /// drivers without XDP).
    Generic,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Mode::Off),
            "xdp-native" => Ok(Mode::Native),
            "xdp-generic" => Ok(Mode::Generic),
            other => Err(format!(
                "unknown fast path {other:?}: xdp-native, xdp-generic or off"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Off => "off",
            Mode::Native => "xdp-native",
            Mode::Generic => "xdp-generic",
        })
    }
}

/// Why a session is not in the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFast {
    /// Data is dropped until the session is established.
    NotEstablished,
    /// L2TPv3 over IP (protocol 115) is not in the fast path yet.
    NotUdp,
    /// IPv6 peers are not in the fast path yet.
    NotIpv4,
    /// The session's values do not fit the map layout.
    Entry(EntryError),
}

/// The `sessions` map entry (key, value) of `s`, whose switch port is
/// configured `port`.
pub fn session_entry(
    s: &DataSession,
    port: &PortConfig,
    trunk_ifindex: u32,
) -> Result<(u32, tt_session), NotFast> {
    if s.state != SessionState::Established {
        return Err(NotFast::NotEstablished);
    }
    if s.transport != Transport::Udp {
        return Err(NotFast::NotUdp);
    }
    let SocketAddr::V4(peer) = s.peer else {
        return Err(NotFast::NotIpv4);
    };
    let spec = SessionSpec {
        peer,
        cookie: s.cookie_rx.as_slice(),
        sublayer: s.sublayer,
        // By the switch's convention a session's port id is its local id.
        port: s.local_sid,
        untagged_vlan: port.untagged_vlan,
        trunk_ifindex,
    };
    let value = tt_session::new(&spec, port.vlans.iter()).map_err(NotFast::Entry)?;
    Ok((s.local_sid, value))
}

/// The `fdb` map entries of everything the switch has learned, with the
/// egress tagging each (VLAN, port) gets.
pub fn fdb_entries(switch: &Switch) -> impl Iterator<Item = (tt_fdb_key, tt_fdb_entry)> + '_ {
    switch.fdb().map(|(vlan, mac, port)| {
        let untagged = switch.egress_tag(port, vlan).is_none();
        (
            tt_fdb_key::new(vlan, mac),
            tt_fdb_entry::new(port.0, untagged),
        )
    })
}

/// The counter's name in stats.
fn counter_name(c: tt_counter) -> &'static str {
    use tt_counter::*;
    match c {
        TT_CNT_RX => "rx",
        TT_CNT_REDIRECT => "redirect",
        TT_CNT_PASS_NOT_IPV4 => "pass_not_ipv4",
        TT_CNT_PASS_IP_OPTIONS => "pass_ip_options",
        TT_CNT_PASS_FRAGMENT => "pass_fragment",
        TT_CNT_PASS_NOT_L2TP => "pass_not_l2tp",
        TT_CNT_PASS_MALFORMED => "pass_malformed",
        TT_CNT_PASS_CONTROL => "pass_control",
        TT_CNT_PASS_UNKNOWN_SESSION => "pass_unknown_session",
        TT_CNT_PASS_SEQUENCED => "pass_sequenced",
        TT_CNT_PASS_SRC_NOT_LEARNED => "pass_src_not_learned",
        TT_CNT_PASS_BUM => "pass_bum",
        TT_CNT_PASS_UNKNOWN_DST => "pass_unknown_dst",
        TT_CNT_PASS_NOT_TRUNK => "pass_not_trunk",
        TT_CNT_PASS_TCP_SYN => "pass_tcp_syn",
        TT_CNT_DROP_BAD_SOURCE => "drop_bad_source",
        TT_CNT_DROP_BAD_COOKIE => "drop_bad_cookie",
        TT_CNT_DROP_BAD_SUBLAYER => "drop_bad_sublayer",
        TT_CNT_DROP_VLAN_NOT_ALLOWED => "drop_vlan_not_allowed",
        TT_CNT_DROP_UNTAGGED_NOT_ALLOWED => "drop_untagged_not_allowed",
        TT_CNT_ABORTED => "aborted",
        TT_CNT_MAX => "max",
    }
}

/// Every counter but the end marker, in enum order.
const ALL_COUNTERS: [tt_counter; tt_counter::TT_CNT_MAX as usize] = {
    use tt_counter::*;
    [
        TT_CNT_RX,
        TT_CNT_REDIRECT,
        TT_CNT_PASS_NOT_IPV4,
        TT_CNT_PASS_IP_OPTIONS,
        TT_CNT_PASS_FRAGMENT,
        TT_CNT_PASS_NOT_L2TP,
        TT_CNT_PASS_MALFORMED,
        TT_CNT_PASS_CONTROL,
        TT_CNT_PASS_UNKNOWN_SESSION,
        TT_CNT_PASS_SEQUENCED,
        TT_CNT_PASS_SRC_NOT_LEARNED,
        TT_CNT_PASS_BUM,
        TT_CNT_PASS_UNKNOWN_DST,
        TT_CNT_PASS_NOT_TRUNK,
        TT_CNT_PASS_TCP_SYN,
        TT_CNT_DROP_BAD_SOURCE,
        TT_CNT_DROP_BAD_COOKIE,
        TT_CNT_DROP_BAD_SUBLAYER,
        TT_CNT_DROP_VLAN_NOT_ALLOWED,
        TT_CNT_DROP_UNTAGGED_NOT_ALLOWED,
        TT_CNT_ABORTED,
    ]
};

/// The fast path in the stats document.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FastPathStats {
    /// `off`, `xdp-native` or `xdp-generic`.
    pub mode: String,
    /// Interfaces the program is attached to.
    pub attached: Vec<String>,
    /// Sessions in the `sessions` map.
    pub sessions: usize,
    /// Entries in the `fdb` map.
    pub fdb: usize,
    /// Sessions kept on the slow path: not established yet.
    pub slow_not_established: usize,
    /// Sessions kept on the slow path: L2TPv3 over IP.
    pub slow_not_udp: usize,
    /// Sessions kept on the slow path: IPv6 peer.
    pub slow_not_ipv4: usize,
    /// Sessions kept on the slow path: values that do not fit the maps.
    pub slow_unfit: usize,
    /// Map writes or deletes the kernel refused.
    pub map_errors: u64,
    /// Switch entries kept alive by fast-path traffic.
    pub refreshed: u64,
    /// The program's per-CPU counters, summed: `rx`, `redirect`, then one
    /// per reason to pass a packet up (`pass_*`) or drop it (`drop_*`).
    pub counters: BTreeMap<&'static str, u64>,
}

/// The loaded, attached program and what was written into its maps.
pub struct FastPath {
    mode: Mode,
    prog: ApRx,
    links: Vec<(String, XdpLinkId)>,
    trunk_ifindex: u32,
    sessions: FxHashMap<u32, tt_session>,
    fdb: FxHashMap<tt_fdb_key, tt_fdb_entry>,
    fdb_generation: Option<u64>,
    /// Earliest next FDB mirror, and whether one is waiting for it.
    fdb_due: Instant,
    fdb_pending: bool,
    next_refresh: Instant,
    stats: FastPathStats,
}

impl fmt::Debug for FastPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastPath")
            .field("mode", &self.mode)
            .field("links", &self.links)
            .field("sessions", &self.sessions.len())
            .field("fdb", &self.fdb.len())
            .finish()
    }
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).context("interface name with a NUL byte")?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name}");
    }
    Ok(i)
}

/// The kernel driver of `iface` (ETHTOOL_GDRVINFO), e.g. "veth".
fn driver_of(iface: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    let n = iface.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&iface.as_bytes()[..n]);
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCETHTOOL reads the ifreq and writes `info` through its data
    // pointer; both live until the call returns.
    let r = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    if r < 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Largest MTU a veth accepts a native (non-multi-buffer) XDP program at:
/// a 4 KiB page less the XDP headroom and the skb tail, less the Ethernet
/// header (kernel `veth_xdp_set`).
const VETH_XDP_MAX_MTU: u32 = 3506;

fn mtu_of(iface: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns` and of
/// `Instant`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

impl FastPath {
    /// Load `xdp_ap_rx` and attach it to each of `ap_ifaces` in `mode`,
    /// redirecting to `trunk`. `Ok(None)` when `mode` is off. Errors say
    /// what the kernel or the interface could not do.
    pub fn start(mode: Mode, ap_ifaces: &[String], trunk: &str) -> anyhow::Result<Option<Self>> {
        let xdp_mode = match mode {
            Mode::Off => return Ok(None),
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        };
        if ap_ifaces.is_empty() {
            bail!(
                "--fast-path {mode}: no AP-facing interface (tunterm_port_config.downstream_ports)"
            );
        }
        let trunk_ifindex = ifindex(trunk).with_context(|| format!("upstream trunk {trunk}"))?;
        let mut prog = ApRx::load().map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "--fast-path {mode}: the kernel refused the XDP program; tunterm needs root \
                 (CAP_BPF, CAP_NET_ADMIN) and a kernel with XDP; --fast-path off forwards in \
                 userspace"
            ))
        })?;
        let mut links = Vec::new();
        for iface in ap_ifaces {
            let link = prog.program_mut()?.attach(iface, xdp_mode).map_err(|e| {
                let hint = match (mode, mtu_of(iface)) {
                    (Mode::Native, Some(m)) if m > VETH_XDP_MAX_MTU => format!(
                        "; its MTU is {m}: a veth takes a native XDP program only up to \
                             MTU {VETH_XDP_MAX_MTU} on both ends"
                    ),
                    (Mode::Native, _) => "; its driver may lack native XDP support".into(),
                    _ => String::new(),
                };
                anyhow::Error::new(e).context(format!(
                    "--fast-path {mode}: cannot attach XDP to {iface}{hint} \
                         (--fast-path xdp-generic or off work everywhere)"
                ))
            })?;
            links.push((iface.clone(), link));
        }
        if mode == Mode::Native && driver_of(trunk).as_deref() == Some("veth") {
            warn!(
                trunk,
                "the upstream trunk is a veth: native XDP redirects into it are dropped \
                 silently unless its peer has an XDP program attached or GRO on \
                 (ethtool -K <peer> gro on)"
            );
        }
        info!(%mode, attached = ?ap_ifaces, trunk, trunk_ifindex, "XDP fast path attached");
        Ok(Some(FastPath {
            mode,
            prog,
            links,
            trunk_ifindex,
            sessions: FxHashMap::default(),
            fdb: FxHashMap::default(),
            fdb_generation: None,
            fdb_due: Instant::now(),
            fdb_pending: false,
            next_refresh: Instant::now() + REFRESH_EVERY,
            stats: FastPathStats::default(),
        }))
    }

    /// Keep the maps a mirror of the switch: the sessions when
    /// `sessions_changed` (a session or port came or went), the FDB when it
    /// changed (at most every 50 ms), and the switch's aging fed with what
    /// the fast path forwarded.
    pub fn handle(
        &mut self,
        now: Instant,
        endpoint: &Endpoint,
        switch: &mut Switch,
        sessions_changed: bool,
    ) {
        if sessions_changed {
            self.sync_sessions(endpoint, switch);
        }
        self.fdb_pending = self.fdb_generation != Some(switch.fdb_generation());
        if self.fdb_pending && now >= self.fdb_due {
            self.sync_fdb(switch);
            self.fdb_due = now + FDB_SYNC_EVERY;
            self.fdb_pending = self.fdb_generation != Some(switch.fdb_generation());
        }
        self.refresh(now, switch);
    }

    /// Make the `sessions` map what the endpoint and the switch say: add
    /// new established sessions, rewrite changed ones, delete gone ones.
    /// Cheap enough to call after every control event.
    pub fn sync_sessions(&mut self, endpoint: &Endpoint, switch: &Switch) {
        let mut want: FxHashMap<u32, tt_session> = FxHashMap::default();
        let (mut not_est, mut not_udp, mut not_v4, mut unfit) = (0, 0, 0, 0);
        for s in endpoint.sessions() {
            let Some(cfg) = switch.port_config(PortId(s.local_sid)) else {
                not_est += 1;
                continue;
            };
            match session_entry(s, cfg, self.trunk_ifindex) {
                Ok((k, v)) => {
                    want.insert(k, v);
                }
                Err(NotFast::NotEstablished) => not_est += 1,
                Err(NotFast::NotUdp) => not_udp += 1,
                Err(NotFast::NotIpv4) => not_v4 += 1,
                Err(NotFast::Entry(_)) => unfit += 1,
            }
        }
        self.stats.slow_not_established = not_est;
        self.stats.slow_not_udp = not_udp;
        self.stats.slow_not_ipv4 = not_v4;
        self.stats.slow_unfit = unfit;
        let Ok(mut map) = self.prog.sessions() else {
            self.stats.map_errors += 1;
            return;
        };
        let gone: Vec<u32> = self
            .sessions
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            // Removed first, so a reused id never sees the old peer.
            if map.remove(&k).is_err() {
                self.stats.map_errors += 1;
            }
            self.sessions.remove(&k);
        }
        for (k, v) in want {
            match self.sessions.entry(k) {
                Entry::Occupied(e) if *e.get() == v => continue,
                Entry::Occupied(mut e) => {
                    e.insert(v);
                }
                Entry::Vacant(e) => {
                    e.insert(v);
                }
            }
            if map.insert(k, v, 0).is_err() {
                self.stats.map_errors += 1;
                self.sessions.remove(&k);
            }
        }
        self.stats.sessions = self.sessions.len();
    }

    /// Make the `fdb` map the switch's FDB, if the FDB changed since the
    /// last call.
    pub fn sync_fdb(&mut self, switch: &Switch) {
        let generation = switch.fdb_generation();
        if self.fdb_generation == Some(generation) {
            return;
        }
        let Ok(mut map) = self.prog.fdb() else {
            self.stats.map_errors += 1;
            return;
        };
        let want: FxHashMap<tt_fdb_key, tt_fdb_entry> = fdb_entries(switch).collect();
        let gone: Vec<tt_fdb_key> = self
            .fdb
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if map.remove(&k).is_err() {
                self.stats.map_errors += 1;
            }
            self.fdb.remove(&k);
        }
        let mut failed = false;
        for (k, v) in want {
            let same = self
                .fdb
                .get(&k)
                .is_some_and(|o| o.port == v.port && o.flags == v.flags);
            if same {
                continue;
            }
            if map.insert(k, v, 0).is_ok() {
                self.fdb.insert(k, v);
            } else {
                self.stats.map_errors += 1;
                self.fdb.remove(&k);
                failed = true;
            }
        }
        // A failed write is retried on the next call.
        self.fdb_generation = (!failed).then_some(generation);
        self.stats.fdb = self.fdb.len();
    }

    /// When due, carry the program's "last seen" stamps into the switch so
    /// MACs that only the fast path forwards from do not age out.
    pub fn refresh(&mut self, now: Instant, switch: &mut Switch) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + REFRESH_EVERY;
        let Ok(map) = self.prog.fdb() else {
            self.stats.map_errors += 1;
            return;
        };
        let now_ns = monotonic_ns();
        for k in self.fdb.keys() {
            let Ok(e) = map.get(k, 0) else { continue };
            if e.last_seen_ns == 0 || e.last_seen_ns > now_ns {
                continue;
            }
            let at = now
                .checked_sub(Duration::from_nanos(now_ns - e.last_seen_ns))
                .unwrap_or(now);
            if switch.refresh(k.vlan, &k.mac, PortId(e.port), at) {
                self.stats.refreshed += 1;
            }
        }
    }

    /// When [`handle`](Self::handle) has work again without new events.
    pub fn poll_timeout(&self) -> Instant {
        if self.fdb_pending {
            self.next_refresh.min(self.fdb_due)
        } else {
            self.next_refresh
        }
    }

    /// The stats document's `fast_path` section.
    pub fn stats(&self) -> FastPathStats {
        let mut s = self.stats.clone();
        s.mode = self.mode.to_string();
        s.attached = self.links.iter().map(|(i, _)| i.clone()).collect();
        let c = self
            .prog
            .counters()
            .unwrap_or(Counters([0; tunterm_ebpf::maps::COUNTERS]));
        s.counters = ALL_COUNTERS
            .iter()
            .map(|&k| (counter_name(k), c.get(k)))
            .collect();
        s
    }
}
