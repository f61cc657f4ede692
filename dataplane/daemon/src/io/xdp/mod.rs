//! The XDP fast path as the daemon drives it: load both programs
//! (`xdp_ap_rx` on the AP-facing interfaces, `xdp_trunk_rx` on the trunk),
//! and keep their maps a mirror of the userspace switch, which stays the
//! source of truth.
//!
//! - Tunnels: every established L2TPv3 session (UDP or IP, IPv4 or IPv6) and
//!   every live mGRE peer gets a decap entry, and a header template for the
//!   trunk → AP direction when its next hop's MAC is known (the kernel's
//!   ARP and IPv6 neighbour tables and main routing table, read over
//!   netlink; L2TPv3/UDP-over-IPv6 encapsulation stays on the slow path).
//!   Sequenced tunnels stay slow. See [`mirror`] for the conversions.
//! - FDB: every switch FDB entry behind the trunk or a tunnel with a port
//!   index is mirrored (egress tagging is the templates' and sessions'). The
//!   programs forward only between MACs the switch already knows; anything
//!   they do not handle is passed up unchanged and the switch learns from it.
//! - Aging: the programs set the seen mark of a source's FDB slot (and
//!   stamp an mGRE peer's `last_seen_ns`) when they forward from it;
//!   [`FastPath::handle`] carries those into the switch and the mGRE
//!   endpoint every 2 s (`REFRESH_EVERY`), so what only the fast path sees
//!   does not age out or time out.
//!
//! A native `XDP_REDIRECT` into a veth is dropped silently unless the veth's
//! peer runs an XDP program or has GRO on: [`FastPath::start`] warns when a
//! redirect target is a veth.

pub mod mirror;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use tracing::{debug, info, warn};
use tunterm_ebpf::aya::programs::XdpMode;
use tunterm_ebpf::aya::programs::xdp::XdpLinkId;
use tunterm_ebpf::fdb::monotonic_ns;
use tunterm_ebpf::maps::{
    COUNTERS, Counters, Session, tt_counter, tt_fdb_entry, tt_fdb_key, tt_gre_key, tt_gre_peer,
    tt_template,
};
use tunterm_ebpf::tables::slot_of;
use tunterm_ebpf::{
    Attached, Capacity, Error, FastPath as Programs, Pins, PortIndex, Program, Table,
};

use self::mirror::{ApLink, NotFast, TrunkLink};
use crate::io::netlink::{self, NextHops, Rtnl};
use tunterm_core::proto::bridge::{PortConfig, PortId, Switch, TRUNK};
use tunterm_core::proto::gre::GreEndpoint;
use tunterm_core::proto::l2tp::{DataSession, Endpoint};
use tunterm_core::wire::ether::MacAddr;

/// How often the fast path's seen bits and "last seen" stamps are carried
/// into the switch and the mGRE endpoint, and tunnel entries are checked
/// again (neighbour MACs, sequencing): a MAC only XDP forwards from counts
/// as seen at most this late.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Least time between two FDB mirrors (each compares the whole table), so a
/// learning storm costs a bounded share of the loop. New MACs are forwarded
/// by the slow path meanwhile.
const FDB_SYNC_EVERY: Duration = Duration::from_millis(50);
/// Outer TTL / hop limit of fast-path encapsulation (the kernel's default
/// for the slow path's sockets).
const OUTER_TTL: u8 = 64;

/// `--fast-path`: where tunnel encapsulation and decapsulation run.
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

/// The counters' names in stats, from the one enum of the map header. A
/// counter added to the header without a name here fails to compile.
macro_rules! counter_names {
    ($($v:ident => $n:literal,)*) => {
        const COUNTER_NAMES: &[(tt_counter, &str)] = &[$((tt_counter::$v, $n)),*];
        #[allow(dead_code)]
        fn every_counter_is_named(c: tt_counter) {
            match c {
                $(tt_counter::$v)|* | tt_counter::TT_CNT_MAX => {}
            }
        }
    };
}

counter_names! {
    TT_CNT_RX => "ap_rx",
    TT_CNT_REDIRECT => "ap_redirect",
    TT_CNT_PASS_NOT_IPV4 => "ap_pass_not_ip",
    TT_CNT_PASS_IP_OPTIONS => "ap_pass_ip_options",
    TT_CNT_PASS_FRAGMENT => "ap_pass_fragment",
    TT_CNT_PASS_NOT_L2TP => "ap_pass_not_tunnel",
    TT_CNT_PASS_MALFORMED => "ap_pass_malformed",
    TT_CNT_PASS_CONTROL => "ap_pass_control",
    TT_CNT_PASS_UNKNOWN_SESSION => "ap_pass_unknown_tunnel",
    TT_CNT_PASS_SEQUENCED => "ap_pass_sequenced",
    TT_CNT_PASS_SRC_NOT_LEARNED => "ap_pass_src_not_learned",
    TT_CNT_PASS_BUM => "ap_pass_bum",
    TT_CNT_PASS_UNKNOWN_DST => "ap_pass_unknown_dst",
    TT_CNT_PASS_NOT_TRUNK => "ap_pass_not_trunk",
    TT_CNT_DROP_BAD_SOURCE => "ap_drop_bad_source",
    TT_CNT_DROP_BAD_COOKIE => "ap_drop_bad_cookie",
    TT_CNT_DROP_BAD_SUBLAYER => "ap_drop_bad_sublayer",
    TT_CNT_DROP_VLAN_NOT_ALLOWED => "ap_drop_vlan_not_allowed",
    TT_CNT_DROP_UNTAGGED_NOT_ALLOWED => "ap_drop_untagged_not_allowed",
    TT_CNT_ABORTED => "ap_aborted",
    TT_CNT_PASS_IPV6_EXT => "ap_pass_ipv6_ext",
    TT_CNT_PASS_GRE_OTHER => "ap_pass_gre_other",
    TT_CNT_PASS_UDP6_ZERO_CSUM => "ap_pass_udp6_zero_csum",
    TT_CNT_PASS_TCP_SYN => "ap_pass_tcp_syn",
    TT_CNT_TRUNK_RX => "trunk_rx",
    TT_CNT_TRUNK_REDIRECT => "trunk_redirect",
    TT_CNT_TRUNK_PASS_NOT_CONFIGURED => "trunk_pass_not_configured",
    TT_CNT_TRUNK_PASS_NO_TEMPLATE => "trunk_pass_no_template",
    TT_CNT_TRUNK_PASS_TOO_BIG => "trunk_pass_too_big",
    TT_CNT_TRUNK_PASS_MALFORMED => "trunk_pass_malformed",
    TT_CNT_TRUNK_PASS_BUM => "trunk_pass_bum",
    TT_CNT_TRUNK_PASS_UNKNOWN_DST => "trunk_pass_unknown_dst",
    TT_CNT_TRUNK_PASS_NOT_TUNNEL => "trunk_pass_not_tunnel",
    TT_CNT_TRUNK_PASS_SRC_NOT_LEARNED => "trunk_pass_src_not_learned",
    TT_CNT_TRUNK_PASS_TCP_SYN => "trunk_pass_tcp_syn",
    TT_CNT_TRUNK_PASS_DHCP => "trunk_pass_dhcp",
    TT_CNT_TRUNK_DROP_VLAN_NOT_ALLOWED => "trunk_drop_vlan_not_allowed",
    TT_CNT_TRUNK_DROP_UNTAGGED_NOT_ALLOWED => "trunk_drop_untagged_not_allowed",
    TT_CNT_TRUNK_ABORTED => "trunk_aborted",
    TT_CNT_PASS_CAPTURE => "ap_pass_capture",
    TT_CNT_TRUNK_PASS_CAPTURE => "trunk_pass_capture",
    TT_CNT_PASS_ARP_ND => "ap_pass_arp_nd",
}

/// The fast path in the stats document.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct FastPathStats {
    /// `off`, `xdp-native` or `xdp-generic`.
    pub mode: String,
    /// `interface: program` for each attachment.
    pub attached: Vec<String>,
    /// L2TPv3 sessions in the `sessions` map (decapsulated in XDP).
    pub sessions: usize,
    /// mGRE peers in the `gre_peers` map.
    pub gre_peers: usize,
    /// Tunnels with a header template (encapsulated in XDP).
    pub templates: usize,
    /// Of those, templates held whole in `long_templates`, one more cold
    /// load a frame than a short one over a shared base: IPv6 tunnels,
    /// and IPv4 ones once all 256 bases (distinct interface, source
    /// address, MTU, TTL, header kind…) are in use.
    #[serde(default)]
    pub templates_long: usize,
    /// Entries in the `fdb` map.
    pub fdb: usize,
    /// Slots of the XDP FDB (`--fast-path-fdb-entries`).
    pub fdb_capacity: u32,
    /// MACs the switch has learned that the XDP FDB has no room for
    /// (beyond its slots, or both of the MAC's buckets full): forwarded by
    /// the slow path; raise `--fast-path-fdb-entries`.
    pub fdb_overflow: usize,
    /// Tunnels kept (wholly or in one direction) on the slow path, by
    /// reason: `not_established`, `sequenced`, `family`, `no_neighbor`,
    /// `unfit` (values the maps cannot hold, e.g. L2TPv3/UDP over IPv6
    /// encapsulation, whose UDP checksum XDP does not compute),
    /// `slot_taken` (another live session's id has the same low 16 bits,
    /// the index of the fast path's session arrays), `no_port_index` (all
    /// 32,767 port indexes are taken, or given back and not yet free).
    pub slow: BTreeMap<Cow<'static, str>, usize>,
    /// Map writes or deletes the kernel refused.
    pub map_errors: u64,
    /// A packet capture runs: the `fdb` map is kept empty and the programs
    /// drop nothing, so they pass every frame to the slow path (where the
    /// capture sees it, a frame refused by policy at its `drop` point:
    /// counted `ap_pass_capture` / `trunk_pass_capture`); the switch's
    /// entries come back when the last capture ends.
    #[serde(default)]
    pub capture_bypass: bool,
    /// Where programs, links and maps are pinned (empty: not pinned, no
    /// hitless restart).
    pub pin_dir: String,
    /// How this run started: `fresh` (nothing pinned before), `adopted`
    /// (an earlier run's pinned maps and links taken over: forwarding went
    /// on through the restart), `replaced: WHY` (pins of another layout
    /// removed), or `unpinned`.
    pub start: String,
    /// Switch entries and mGRE peers kept alive by fast-path traffic.
    pub refreshed: u64,
    /// The programs' per-CPU counters, summed: `ap_*` of `xdp_ap_rx`,
    /// `trunk_*` of `xdp_trunk_rx`; `*_rx` every packet, `*_redirect`
    /// forwarded in XDP, `*_pass_*` handed to the slow path and why,
    /// `*_drop_*` dropped and why.
    pub counters: BTreeMap<Cow<'static, str>, u64>,
}

fn slow_reason(r: NotFast) -> &'static str {
    match r {
        NotFast::NotEstablished => "not_established",
        NotFast::Sequenced => "sequenced",
        NotFast::Family => "family",
        NotFast::Entry(_) => "unfit",
    }
}

/// One mirrored map: what was written, to write only what changed.
struct Mirror<K, V> {
    installed: FxHashMap<K, V>,
}

impl<K: Copy + Eq + Hash + tunterm_ebpf::aya::Pod, V: Copy + tunterm_ebpf::aya::Pod> Mirror<K, V> {
    fn new() -> Self {
        Mirror {
            installed: FxHashMap::default(),
        }
    }

    /// Take what an earlier run left in `map` as installed, so the next
    /// [`sync`](Self::sync) removes what is no longer wanted and rewrites
    /// only what differs.
    fn adopt(&mut self, map: &impl Table<K, V>) {
        self.installed = map.entries().into_iter().collect();
    }

    /// At most `cap` of `want`: those installed first, then others (the
    /// table keeps what it forwards now, and what does not fit is not
    /// retried in vain); and how many were left out.
    fn keep_within(&self, want: FxHashMap<K, V>, cap: usize) -> (FxHashMap<K, V>, usize) {
        let left_out = want.len().saturating_sub(cap);
        if left_out == 0 {
            return (want, 0);
        }
        let (old, new): (Vec<_>, Vec<_>) = want
            .into_iter()
            .partition(|(k, _)| self.installed.contains_key(k));
        (old.into_iter().chain(new).take(cap).collect(), left_out)
    }

    /// Make `map` hold `want` (as far as this mirror wrote it): delete what
    /// is gone first (a reused key never sees its old value), then write
    /// what is new or different by `same`.
    fn sync(
        &mut self,
        map: &mut impl Table<K, V>,
        want: FxHashMap<K, V>,
        same: impl Fn(&V, &V) -> bool,
    ) -> Synced {
        let mut done = Synced::default();
        let gone: Vec<K> = self
            .installed
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if map.delete(&k).is_err() {
                done.errors += 1;
            }
            self.installed.remove(&k);
        }
        for (k, v) in want {
            if self.installed.get(&k).is_some_and(|o| same(o, &v)) {
                continue;
            }
            match map.put(k, v) {
                Ok(()) => {
                    self.installed.insert(k, v);
                }
                Err(e) => {
                    if matches!(e, Error::FdbFull { .. }) {
                        done.no_room += 1;
                    } else {
                        done.errors += 1;
                    }
                    self.installed.remove(&k);
                }
            }
        }
        done
    }
}

/// What a [`Mirror::sync`] could not do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Synced {
    /// Writes and removals the kernel refused (retried on the next sync).
    errors: u64,
    /// Entries the table had no room for ([`Error::FdbFull`]): they stay
    /// on the slow path.
    no_room: usize,
}

fn bytes_eq<T: tunterm_ebpf::aya::Pod>(a: &T, b: &T) -> bool {
    // SAFETY: `Pod` types are plain bytes with no padding (the map header's
    // layouts are asserted padding-free), so viewing them as bytes is sound.
    let view =
        |t: &T| unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), size_of::<T>()) };
    view(a) == view(b)
}

/// The AP-facing interface as templates need it.
#[derive(Clone, Debug)]
struct ApIface {
    name: String,
    ifindex: u32,
    mac: [u8; 6],
}

impl ApIface {
    fn of(name: &str) -> anyhow::Result<ApIface> {
        let link = netlink::link(name)?;
        Ok(ApIface {
            name: name.to_string(),
            ifindex: link.index,
            mac: link
                .mac
                .with_context(|| format!("{name}: not an Ethernet interface"))?,
        })
    }
}

/// The loaded, attached programs and what was written into their maps.
pub struct FastPath {
    mode: Mode,
    progs: Programs,
    attached: Vec<String>,
    /// What is attached where: the link's id when not pinned (a pinned
    /// one is found by its pin).
    links: Vec<(String, Program, Option<XdpLinkId>)>,
    trunk_ifindex: u32,
    ap: ApIface,
    local4: Option<Ipv4Addr>,
    local6: Option<Ipv6Addr>,
    sessions: Mirror<u32, Session>,
    gre_peers: Mirror<tt_gre_key, tt_gre_peer>,
    /// Tunnels' templates, by port index.
    templates: Mirror<u32, tt_template>,
    fdb: Mirror<tt_fdb_key, tt_fdb_entry>,
    /// The port index of each tunnel in the maps (`tunterm_ebpf::ports`).
    ports: PortIndex,
    fdb_generation: Option<u64>,
    /// Earliest next FDB mirror, and whether one is waiting for it.
    fdb_due: Instant,
    fdb_pending: bool,
    next_refresh: Instant,
    stats: FastPathStats,
    pin_dir: Option<PathBuf>,
    /// FDB entries found in adopted maps, for the switch to take back.
    adopted_fdb: Vec<(tt_fdb_key, tt_fdb_entry)>,
    /// A capture runs: mirror no FDB entry (everything goes slow).
    capture_bypass: bool,
    /// The cookie and sublayer bytes `xdp_ap_rx` expects
    /// (`expect_l2tp_extra`): the programs' default until sessions say.
    l2tp_extra: u8,
}

impl fmt::Debug for FastPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastPath")
            .field("mode", &self.mode)
            .field("attached", &self.attached)
            .field("sessions", &self.sessions.installed.len())
            .field("fdb", &self.fdb.installed.len())
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

/// Where the fast path's maps live and how big they are.
#[derive(Clone, Copy, Debug)]
pub struct MapOptions<'a> {
    /// A bpffs directory to pin them (and the programs and links) in, for
    /// a hitless restart; None: not pinned.
    pub pin_dir: Option<&'a Path>,
    /// Table sizes.
    pub capacity: Capacity,
}

fn xdp_mode(mode: Mode) -> Option<XdpMode> {
    match mode {
        Mode::Off => None,
        Mode::Native => Some(XdpMode::Driver),
        Mode::Generic => Some(XdpMode::Skb),
    }
}

/// Attach `program` to `iface`: pinned under `pin_dir` (an earlier run's
/// link taken over), else a link of this process, whose id is returned.
fn attach_one(
    progs: &mut Programs,
    mode: Mode,
    pin_dir: Option<&Path>,
    iface: &str,
    program: Program,
) -> anyhow::Result<Option<XdpLinkId>> {
    let xdp = xdp_mode(mode).context("the fast path is off")?;
    let how = match pin_dir {
        None => progs.attach(program, iface, xdp).map(Some),
        Some(dir) => progs.attach_pinned(program, iface, xdp, dir).map(|how| {
            if how == Attached::TakenOver {
                info!(
                    iface,
                    program = program.name(),
                    "fast path: took over the pinned link"
                );
            }
            None
        }),
    };
    let id = how.map_err(|e| {
        let hint = match (mode, netlink::mtu(iface).ok()) {
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
    if mode == Mode::Native && driver_of(iface).as_deref() == Some("veth") {
        warn!(
            iface,
            "a veth: native XDP redirects into it are dropped silently unless its \
             peer has an XDP program attached or GRO on (ethtool -K <peer> gro on)"
        );
    }
    Ok(id)
}

/// Write the trunk port's VLANs (native and tagged) for `xdp_trunk_rx`.
fn set_trunk(progs: &mut Programs, cfg: &PortConfig) -> anyhow::Result<()> {
    let entry = mirror::trunk_entry(cfg)
        .map_err(|e| anyhow::anyhow!("--fast-path: the trunk's VLANs: {e:?}"))?;
    progs.set_trunk(&entry)?;
    Ok(())
}

impl FastPath {
    /// Load both programs, attach `xdp_ap_rx` to each of `ap_ifaces` and
    /// `xdp_trunk_rx` to `trunk` in `mode`, and install the trunk's VLANs
    /// from `switch`. `Ok(None)` when `mode` is off. Errors say what the
    /// kernel or the interface could not do.
    ///
    /// With `maps.pin_dir` (a bpffs directory), maps, programs and links are
    /// pinned there, and what an earlier run pinned is taken over: its maps
    /// with their entries, its links with the new programs swapped in
    /// atomically. Take the FDB entries found with
    /// [`take_adopted_fdb`](Self::take_adopted_fdb).
    pub fn start(
        mode: Mode,
        ap_ifaces: &[String],
        trunk: &str,
        switch: &Switch,
        local4: Option<Ipv4Addr>,
        local6: Option<Ipv6Addr>,
        maps: MapOptions<'_>,
    ) -> anyhow::Result<Option<Self>> {
        let MapOptions { pin_dir, capacity } = maps;
        if mode == Mode::Off {
            return Ok(None);
        }
        let Some(ap_name) = ap_ifaces.first() else {
            bail!(
                "--fast-path {mode}: no AP-facing interface (tunterm_port_config.downstream_ports)"
            );
        };
        if ap_ifaces.len() > 1 {
            warn!(
                used = %ap_name,
                "--fast-path: encapsulation templates use the first AP-facing interface only"
            );
        }
        let trunk_ifindex = ifindex(trunk).with_context(|| format!("upstream trunk {trunk}"))?;
        let ap = ApIface::of(ap_name)?;
        let refused = |e: tunterm_ebpf::Error| {
            anyhow::Error::new(e).context(format!(
                "--fast-path {mode}: the kernel refused the XDP programs; tunterm needs root \
                 (CAP_BPF, CAP_NET_ADMIN) and a kernel with XDP; --fast-path off forwards in \
                 userspace"
            ))
        };
        let (mut progs, pins) = match pin_dir {
            None => (Programs::load_sized(capacity).map_err(refused)?, None),
            Some(dir) => {
                let (p, pins) = Programs::load_pinned(dir, capacity).map_err(|e| match e {
                    tunterm_ebpf::Error::Pin(_) => anyhow::Error::new(e).context(format!(
                        "--pin-dir {}: cannot pin the fast path there (--pin-dir none: no \
                         hitless restart)",
                        dir.display()
                    )),
                    e => refused(e),
                })?;
                (p, Some(pins))
            }
        };
        let start_kind = match &pins {
            None => "unpinned".to_string(),
            Some(Pins::Fresh) => "fresh".into(),
            Some(Pins::Adopted) => "adopted".into(),
            Some(Pins::Replaced(why)) => {
                warn!(why = %why, "fast path: pins of an earlier run did not fit this build; removed them (this start is not hitless)");
                format!("replaced: {why}")
            }
        };
        let mut attached = Vec::new();
        let mut links = Vec::new();
        let targets = ap_ifaces
            .iter()
            .map(|i| (i.as_str(), Program::ApRx))
            .chain([(trunk, Program::TrunkRx)]);
        for (iface, program) in targets {
            let id = attach_one(&mut progs, mode, pin_dir, iface, program)?;
            attached.push(format!("{iface}: {}", program.name()));
            links.push((iface.to_string(), program, id));
        }
        if let Some(cfg) = switch.port_config(TRUNK) {
            set_trunk(&mut progs, cfg)?;
        }
        info!(%mode, attached = ?attached, start = %start_kind, "XDP fast path attached");
        let mut fp = FastPath {
            mode,
            progs,
            attached,
            links,
            trunk_ifindex,
            ap,
            local4,
            local6,
            sessions: Mirror::new(),
            gre_peers: Mirror::new(),
            templates: Mirror::new(),
            ports: PortIndex::new(),
            fdb: Mirror::new(),
            fdb_generation: None,
            fdb_due: Instant::now(),
            fdb_pending: false,
            next_refresh: Instant::now() + REFRESH_EVERY,
            stats: FastPathStats {
                pin_dir: pin_dir.map(|d| d.display().to_string()).unwrap_or_default(),
                start: start_kind,
                fdb_capacity: capacity.fdb,
                ..FastPathStats::default()
            },
            pin_dir: pin_dir.map(Path::to_path_buf),
            adopted_fdb: Vec::new(),
            capture_bypass: false,
            l2tp_extra: 8,
        };
        if pins == Some(Pins::Adopted) {
            fp.adopt()?;
        }
        Ok(Some(fp))
    }

    /// Take the maps' entries as this run's installed state.
    fn adopt(&mut self) -> anyhow::Result<()> {
        self.sessions.adopt(&self.progs.sessions()?);
        self.gre_peers.adopt(&self.progs.gre_peers()?);
        self.templates.adopt(&self.progs.templates()?);
        // Each tunnel keeps the index its entries and template are at (an
        // entry another tunnel's index collides with is left to the next
        // sync, which rewrites it under an index of its own).
        let sessions = self
            .sessions
            .installed
            .values()
            .map(|s| (s.entry.port, s.entry.port_idx));
        let peers = self
            .gre_peers
            .installed
            .values()
            .map(|p| (p.port, p.port_idx));
        for (port, idx) in sessions.chain(peers) {
            if !self.ports.adopt(port, idx) {
                warn!(
                    port,
                    idx, "fast path: an adopted tunnel's port index is taken"
                );
            }
        }
        self.fdb.adopt(&self.progs.fdb()?);
        for e in self.fdb.installed.values() {
            self.ports.hold(e.port);
        }
        self.adopted_fdb = self.fdb.installed.iter().map(|(k, v)| (*k, *v)).collect();
        info!(
            sessions = self.sessions.installed.len(),
            gre_peers = self.gre_peers.installed.len(),
            templates = self.templates.installed.len(),
            fdb = self.fdb.installed.len(),
            "fast path: adopted the pinned maps of an earlier run"
        );
        Ok(())
    }

    /// The FDB entries found in adopted maps (once): VLAN, MAC and switch
    /// port. The driver gives them back to the switch, as seen now (the
    /// table keeps no ages: a restart gives each a full aging time), once
    /// the ports they name exist again.
    pub fn take_adopted_fdb(&mut self) -> Vec<(u16, [u8; 6], PortId)> {
        let ports = &self.ports;
        std::mem::take(&mut self.adopted_fdb)
            .into_iter()
            .filter_map(|(k, e)| Some((k.vlan, k.mac, PortId(ports.port(e.port)?))))
            .collect()
    }

    /// A clean shutdown: remove every pin, so the programs detach and the
    /// maps go once this process lets go of them.
    pub fn unpin(self) {
        if let Some(dir) = &self.pin_dir
            && let Err(e) = tunterm_ebpf::unpin_all(dir)
        {
            warn!(error = %e, dir = %dir.display(), "fast path: removing the pins");
        }
    }

    /// The tunnel addresses changed (a reload): the encapsulation templates
    /// are rebuilt with the new source address at the next sync of the
    /// tunnels (the caller marks them changed). The programs themselves
    /// match a packet by its session and peer, never by our address, so
    /// nothing is re-attached and the per-frame work is the same.
    pub fn set_local_addresses(&mut self, local4: Option<Ipv4Addr>, local6: Option<Ipv6Addr>) {
        if (self.local4, self.local6) != (local4, local6) {
            info!(
                ?local4,
                ?local6,
                "fast path: templates follow the new tunnel address"
            );
        }
        self.local4 = local4;
        self.local6 = local6;
    }

    /// The trunk port's VLANs changed (a reload: the native VLAN, the
    /// VLANs the tunnels carry): `xdp_trunk_rx` takes them at once.
    pub fn set_trunk_port(&mut self, cfg: &PortConfig) -> anyhow::Result<()> {
        set_trunk(&mut self.progs, cfg)
    }

    /// The interfaces changed (a reload): the programs leave the
    /// interfaces no longer named and are attached to the new ones; the
    /// maps (sessions, FDB, peers) are kept, and the tunnels' entries and
    /// templates are rebuilt at the next sync (the caller marks them
    /// changed) for the new trunk and AP interface. New attachments are
    /// made first: on an error the old ones are all still there.
    pub fn move_to(&mut self, ap_ifaces: &[String], trunk: &str) -> anyhow::Result<()> {
        let Some(ap_name) = ap_ifaces.first() else {
            bail!("--fast-path {}: no AP-facing interface", self.mode);
        };
        let trunk_ifindex = ifindex(trunk).with_context(|| format!("upstream trunk {trunk}"))?;
        let ap = ApIface::of(ap_name)?;
        let want: Vec<(String, Program)> = ap_ifaces
            .iter()
            .map(|i| (i.clone(), Program::ApRx))
            .chain([(trunk.to_string(), Program::TrunkRx)])
            .collect();
        // An interface has one XDP program: one that changes role (AP
        // side <-> trunk) would have to go without for a moment.
        if let Some((i, _, _)) = self
            .links
            .iter()
            .find(|(i, p, _)| want.iter().any(|(w, q)| w == i && q != p))
        {
            bail!("{i} changes role (AP-facing <-> trunk) with the fast path on");
        }
        let pin_dir = self.pin_dir.clone();
        let mut added = Vec::new();
        for (iface, program) in &want {
            if self
                .links
                .iter()
                .any(|(i, p, _)| i == iface && p == program)
            {
                continue;
            }
            match attach_one(
                &mut self.progs,
                self.mode,
                pin_dir.as_deref(),
                iface,
                *program,
            ) {
                Ok(id) => added.push((iface.clone(), *program, id)),
                Err(e) => {
                    for (i, p, id) in added {
                        self.detach_one(&i, p, id);
                    }
                    return Err(e);
                }
            }
        }
        let old = std::mem::take(&mut self.links);
        for (iface, program, id) in old {
            if want.iter().any(|(i, p)| *i == iface && *p == program) {
                self.links.push((iface, program, id));
            } else {
                self.detach_one(&iface, program, id);
            }
        }
        self.links.extend(added);
        self.attached = self
            .links
            .iter()
            .map(|(i, p, _)| format!("{i}: {}", p.name()))
            .collect();
        info!(attached = ?self.attached, "fast path: moved to the new interfaces");
        self.trunk_ifindex = trunk_ifindex;
        self.ap = ap;
        Ok(())
    }

    fn detach_one(&mut self, iface: &str, program: Program, id: Option<XdpLinkId>) {
        let done = match (id, &self.pin_dir, xdp_mode(self.mode)) {
            (Some(id), _, _) => self.progs.detach(program, id).map(|()| true),
            (None, Some(dir), Some(xdp)) => Programs::detach_pinned(iface, xdp, dir),
            (None, _, _) => Ok(false),
        };
        match done {
            Ok(_) => info!(iface, program = program.name(), "fast path: detached"),
            Err(e) => warn!(iface, program = program.name(), error = %e,
                            "fast path: could not detach"),
        }
    }

    /// While `on` (a packet capture runs), keep the `fdb` map empty: the
    /// programs forward only between MACs it holds, so every frame goes to
    /// the slow path, where the capture tap sees it. Off again, the
    /// switch's entries are mirrored back at the next sync.
    pub fn set_capture_bypass(&mut self, now: Instant, on: bool) {
        if self.capture_bypass == on {
            return;
        }
        self.capture_bypass = on;
        self.stats.capture_bypass = on;
        // And no policy drop in XDP: the capture's `drop` point is in the
        // slow path.
        if let Err(e) = self.progs.set_slow_path_only(on) {
            warn!(error = %e, "fast path: setting the programs' capture flag");
        }
        // Mirror now, whatever the switch's generation.
        self.fdb_generation = None;
        self.fdb_due = now;
        info!(
            bypass = on,
            "fast path: {}",
            if on {
                "a capture runs; every frame goes to the slow path"
            } else {
                "no capture; forwarding in XDP again"
            }
        );
    }

    /// Keep the maps a mirror of the userspace state: the tunnels when
    /// `tunnels_changed` (a session or peer came or went) and every 2 s,
    /// the FDB when it changed (at most every 50 ms), and the switch's aging
    /// and the mGRE peers' timeouts fed with what the fast path forwarded.
    /// `mtu` is each tunnel port's MTU (bigger frames go slow).
    pub fn handle(
        &mut self,
        now: Instant,
        endpoint: &Endpoint,
        gre: &mut GreEndpoint,
        switch: &mut Switch,
        tunnels_changed: bool,
        mtu: impl Fn(PortId) -> u16,
    ) {
        let due = now >= self.next_refresh;
        if tunnels_changed || due {
            self.sync_tunnels(now, endpoint, gre, switch, mtu);
        }
        self.fdb_pending = self.fdb_generation != Some(switch.fdb_generation());
        if self.fdb_pending && now >= self.fdb_due {
            self.sync_fdb(switch);
            self.fdb_due = now + FDB_SYNC_EVERY;
            self.fdb_pending = self.fdb_generation != Some(switch.fdb_generation());
        }
        if due {
            self.next_refresh = now + REFRESH_EVERY;
            self.refresh(now, gre, switch);
        }
    }

    /// The AP interface's neighbours and routes now. If netlink
    /// fails, none: every tunnel encapsulates on the slow path (counted as
    /// `no_neighbor`) until a later sync reads them.
    fn next_hops(&self) -> NextHops {
        match Rtnl::open().and_then(|mut r| NextHops::read(&mut r, self.ap.ifindex)) {
            Ok(h) => h,
            Err(e) => {
                warn!(iface = %self.ap.name, error = %e,
                      "fast path: next hops not read; tunnels encapsulate on the slow path");
                NextHops::default()
            }
        }
    }

    fn link_for(&self, peer: IpAddr, mtu: u16, hops: &NextHops) -> Option<ApLink> {
        Some(ApLink {
            ifindex: self.ap.ifindex,
            src_mac: self.ap.mac,
            next_hop_mac: hops.mac_for(peer)?,
            local4: self.local4,
            local6: self.local6,
            ttl: OUTER_TTL,
            dont_fragment: false,
            mtu,
        })
    }

    fn sync_tunnels(
        &mut self,
        now: Instant,
        endpoint: &Endpoint,
        gre: &GreEndpoint,
        switch: &Switch,
        mtu: impl Fn(PortId) -> u16,
    ) {
        let mut slow: BTreeMap<&'static str, usize> = BTreeMap::new();
        let hops = self.next_hops();
        let trunk = TrunkLink {
            ifindex: self.trunk_ifindex,
            untagged_vlan: switch.port_config(TRUNK).and_then(|c| c.untagged_vlan),
        };
        let mut sessions = FxHashMap::default();
        let mut peers = FxHashMap::default();
        let mut templates = FxHashMap::default();
        // Tunnels in the maps from now on, by port id: the others give
        // their port index back. `indexed`: one got an index it had not
        // (an index assigned to a tunnel whose entry cannot be made goes
        // back at once, given back as any other: nothing names it).
        let mut wanted = FxHashSet::default();
        let mut indexed = false;
        // A session's entries go in the slot of its id. Ids sharing a slot
        // (restored from an older build, or past 65,536 sessions): the
        // installed one keeps it, the others stay slow.
        let mut by_slot: Vec<&DataSession> = endpoint.sessions().collect();
        by_slot.sort_by_key(|s| {
            (
                !self.sessions.installed.contains_key(&s.local_sid),
                s.local_sid,
            )
        });
        let mut slots = FxHashSet::default();
        for s in by_slot {
            let port = PortId(s.local_sid);
            let Some(cfg) = switch.port_config(port) else {
                *slow.entry("not_established").or_default() += 1;
                continue;
            };
            if !slots.insert(slot_of(s.local_sid)) {
                *slow.entry("slot_taken").or_default() += 1;
                continue;
            }
            let had = self.ports.get(port.0).is_some();
            let Some(idx) = self.ports.assign(port.0) else {
                *slow.entry("no_port_index").or_default() += 1;
                continue;
            };
            match mirror::session_entry(s, cfg, idx, &trunk) {
                Ok((k, v)) => {
                    sessions.insert(k, v);
                    wanted.insert(port.0);
                    indexed |= !had;
                }
                Err(r) => {
                    if !had {
                        // Never written anywhere: back where it came from.
                        self.ports.release(port.0);
                    }
                    *slow.entry(slow_reason(r)).or_default() += 1;
                    continue;
                }
            }
            match self.link_for(s.peer.ip(), mtu(port), &hops) {
                None => *slow.entry("no_neighbor").or_default() += 1,
                Some(link) => match mirror::session_template(s, cfg, idx, &link) {
                    Ok((k, t)) => {
                        templates.insert(k, t);
                    }
                    Err(r) => *slow.entry(slow_reason(r)).or_default() += 1,
                },
            }
        }
        for p in gre.peers(now) {
            let Some(cfg) = switch.port_config(p.port) else {
                continue;
            };
            let had = self.ports.get(p.port.0).is_some();
            let Some(idx) = self.ports.assign(p.port.0) else {
                *slow.entry("no_port_index").or_default() += 1;
                continue;
            };
            match mirror::gre_peer_entry(&p, cfg, idx, &trunk) {
                Ok((k, v)) => {
                    peers.insert(k, v);
                    wanted.insert(p.port.0);
                    indexed |= !had;
                }
                Err(r) => {
                    if !had {
                        self.ports.release(p.port.0);
                    }
                    *slow.entry(slow_reason(r)).or_default() += 1;
                    continue;
                }
            }
            match self.link_for(p.addr, mtu(p.port), &hops) {
                None => *slow.entry("no_neighbor").or_default() += 1,
                Some(link) => match mirror::gre_template(&p, cfg, idx, &link) {
                    Ok((k, t)) => {
                        templates.insert(k, t);
                    }
                    Err(r) => *slow.entry(slow_reason(r)).or_default() += 1,
                },
            }
        }
        self.stats.slow = slow.into_iter().map(|(k, n)| (k.into(), n)).collect();
        let mut errors = 0;
        if let Some(extra) = mirror::most_common_l2tp_extra(sessions.values())
            && extra != self.l2tp_extra
        {
            match self.progs.expect_l2tp_extra(extra) {
                Ok(()) => self.l2tp_extra = extra,
                Err(_) => errors += 1,
            }
        }
        match self.progs.sessions() {
            Ok(mut m) => errors += self.sessions.sync(&mut m, sessions, bytes_eq).errors,
            Err(_) => errors += 1,
        }
        // A peer's entry carries the last-seen stamp XDP writes: compare
        // everything else.
        let peer_same = |a: &tt_gre_peer, b: &tt_gre_peer| {
            let mut a = *a;
            a.last_seen_ns = b.last_seen_ns;
            bytes_eq(&a, b)
        };
        match self.progs.gre_peers() {
            Ok(mut m) => errors += self.gre_peers.sync(&mut m, peers, peer_same).errors,
            Err(_) => errors += 1,
        }
        match self.progs.templates() {
            Ok(mut m) => {
                errors += self.templates.sync(&mut m, templates, bytes_eq).errors;
                self.stats.templates_long = m.long_entries();
            }
            Err(_) => errors += 1,
        }
        // Tunnels gone from the maps give their index back; the FDB may
        // still name it until its next sync, which drops their MACs (and
        // adds those of tunnels that got an index).
        let gone: Vec<u32> = self
            .ports
            .iter()
            .filter(|(p, _)| !wanted.contains(p))
            .map(|(p, _)| p)
            .collect();
        for p in &gone {
            self.ports.release(*p);
        }
        if indexed || !gone.is_empty() {
            self.fdb_generation = None;
        }
        if errors > 0 {
            debug!(errors, "fast path: map writes refused");
        }
        self.stats.map_errors += errors;
        self.stats.sessions = self.sessions.installed.len();
        self.stats.gre_peers = self.gre_peers.installed.len();
        self.stats.templates = self.templates.installed.len();
    }

    /// Make the `fdb` map the switch's FDB.
    fn sync_fdb(&mut self, switch: &Switch) {
        let generation = switch.fdb_generation();
        let want: FxHashMap<tt_fdb_key, tt_fdb_entry> = if self.capture_bypass {
            FxHashMap::default()
        } else {
            mirror::fdb_entries(switch, &self.ports).collect()
        };
        let cap = self.stats.fdb_capacity as usize;
        let (want, too_many) = self.fdb.keep_within(want, cap);
        let done = match self.progs.fdb() {
            Ok(mut m) => self.fdb.sync(&mut m, want, bytes_eq),
            Err(_) => Synced {
                errors: 1,
                no_room: 0,
            },
        };
        // Beyond the slots, or both of a MAC's buckets full: the slow path
        // forwards it; tried again when the switch's FDB next changes.
        let overflow = too_many + done.no_room;
        if overflow > 0 && self.stats.fdb_overflow == 0 {
            warn!(
                capacity = cap,
                overflow,
                "fast path: the XDP FDB has no room for some of the switch's MACs; they are \
                 forwarded in userspace (raise --fast-path-fdb-entries)"
            );
        }
        self.stats.fdb_overflow = overflow;
        let errors = done.errors;
        self.stats.map_errors += errors;
        // A refused write is retried on the next call.
        self.fdb_generation = (errors == 0).then_some(generation);
        if errors == 0 {
            // No entry names an index given back: they may be reused.
            self.ports.fdb_clean();
        }
        self.stats.fdb = self.fdb.installed.len();
    }

    /// Carry the programs' "last seen" stamps into the switch and the mGRE
    /// endpoint.
    fn refresh(&mut self, now: Instant, gre: &mut GreEndpoint, switch: &mut Switch) {
        let now_ns = monotonic_ns();
        let at = |ns: u64| {
            (ns != 0 && ns <= now_ns).then(|| {
                now.checked_sub(Duration::from_nanos(now_ns - ns))
                    .unwrap_or(now)
            })
        };
        let mut refreshed = 0;
        // The MACs XDP forwarded from since the last time: seen now (at
        // most REFRESH_EVERY late), on the port the mirror put them on.
        if let Ok(map) = self.progs.fdb() {
            for k in map.take_seen() {
                let Some(port) = self
                    .fdb
                    .installed
                    .get(&k)
                    .and_then(|e| self.ports.port(e.port))
                else {
                    continue;
                };
                if switch.refresh(k.vlan, &MacAddr(k.mac), PortId(port), now) {
                    refreshed += 1;
                }
            }
        }
        if let Ok(map) = self.progs.gre_peers() {
            for k in self.gre_peers.installed.keys() {
                let Ok(p) = map.get(k, 0) else { continue };
                if let Some(t) = at(p.last_seen_ns)
                    && gre.refresh(PortId(p.port), t)
                {
                    refreshed += 1;
                }
            }
        }
        self.stats.refreshed += refreshed;
    }

    /// When [`handle`](Self::handle) has work again without new events.
    pub fn poll_timeout(&self) -> Instant {
        let next = self.next_refresh;
        if self.fdb_pending {
            next.min(self.fdb_due)
        } else {
            next
        }
    }

    /// The stats document's `fast_path` section.
    pub fn stats(&self) -> FastPathStats {
        let mut s = self.stats.clone();
        s.mode = self.mode.to_string();
        s.attached = self.attached.clone();
        let c = self.progs.counters().unwrap_or(Counters([0; COUNTERS]));
        s.counters = COUNTER_NAMES
            .iter()
            .map(|&(k, name)| (name.into(), c.get(k)))
            .collect();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with room for `room` entries that refuses key 13 outright.
    struct FakeTable {
        held: FxHashMap<u32, u64>,
        room: usize,
    }

    impl Table<u32, u64> for FakeTable {
        fn put(&mut self, key: u32, value: u64) -> Result<(), Error> {
            if key == 13 {
                return Err(Error::SlotTaken { id: 13, held: 1 });
            }
            if !self.held.contains_key(&key) && self.held.len() >= self.room {
                return Err(Error::FdbFull {
                    vlan: 1,
                    mac: [2, 0, 0, 0, 0, key as u8],
                });
            }
            self.held.insert(key, value);
            Ok(())
        }

        fn delete(&mut self, key: &u32) -> Result<(), Error> {
            self.held.remove(key);
            Ok(())
        }

        fn entries(&self) -> Vec<(u32, u64)> {
            self.held.iter().map(|(k, v)| (*k, *v)).collect()
        }
    }

    fn want(keys: impl IntoIterator<Item = u32>) -> FxHashMap<u32, u64> {
        keys.into_iter().map(|k| (k, u64::from(k) * 10)).collect()
    }

    #[test]
    fn a_full_table_is_no_room_not_an_error_and_a_refusal_is_an_error() {
        let mut table = FakeTable {
            held: FxHashMap::default(),
            room: 3,
        };
        let mut m: Mirror<u32, u64> = Mirror::new();
        let done = m.sync(&mut table, want([1, 2, 3, 4, 5, 13]), |a, b| a == b);
        assert_eq!(
            done,
            Synced {
                errors: 1,
                no_room: 2
            }
        );
        // Only what the table took counts as installed.
        assert_eq!(m.installed.len(), 3);
        assert!(m.installed.keys().all(|k| table.held.contains_key(k)));
        // Once room is made (a MAC went), the next sync installs one more;
        // what is already there is not written again.
        let done = m.sync(&mut table, want([2, 3, 4, 5]), |a, b| a == b);
        assert_eq!(done.errors, 0);
        assert_eq!(table.held.len(), 3);
        assert!(!table.held.contains_key(&1), "1 is gone from the switch");
    }

    #[test]
    fn keep_within_keeps_the_installed_first() {
        let mut m: Mirror<u32, u64> = Mirror::new();
        m.installed = want([7, 8]);
        let (kept, left_out) = m.keep_within(want(1..=10), 4);
        assert_eq!(left_out, 6);
        assert_eq!(kept.len(), 4);
        assert!(kept.contains_key(&7) && kept.contains_key(&8), "{kept:?}");
        let (kept, left_out) = m.keep_within(want(1..=3), 4);
        assert_eq!((kept.len(), left_out), (3, 0));
    }
}
