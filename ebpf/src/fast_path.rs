//! Both XDP programs, loaded from one object so they share one set of maps:
//! `xdp_ap_rx` for the AP-facing port and `xdp_trunk_rx` for the trunk.
//! The daemon loads a [`FastPath`], attaches each program to its interface,
//! and keeps the maps in step with the userspace switch.
//!
//! Hitless restart: [`FastPath::load_pinned`] keeps the maps in a bpffs
//! directory of tunterm's own (opened again, entries and all, when an
//! earlier run left them there and their layout still fits), pins both
//! programs there, and [`FastPath::attach_pinned`] attaches through bpf
//! links pinned there too. A pinned link outlives the process that made it,
//! so the programs go on forwarding while the daemon is down (even after
//! SIGKILL); the next daemon takes the link over and swaps its own program
//! in atomically. [`unpin_all`] removes everything (a clean shutdown).
//!
//! ```text
//! DIR/maps/{sessions,session_vlans,gre_peers,fdb,templates,template_bases,long_templates,trunk,counters}
//! DIR/layout/ID               empty directory: the maps' MAPS_LAYOUT
//! DIR/progs/{xdp_ap_rx,xdp_trunk_rx}
//! DIR/links/IFACE:MODE        MODE: native, generic ('.' in IFACE as '%')
//! ```

use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, MapInfo, MapType, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions};

use crate::TUNTERM_XDP_OBJ;
use crate::ap_rx::{Action, Error, TestOutcome};
use crate::fdb::{Fdb, FdbMem};
use crate::maps::{
    COUNTERS, Counters, TT_FDB_BUCKET_SLOTS, TT_FDB_MAX_BITS, TT_FDB_MIN_BITS, TT_MAX_GRE_PEERS,
    TT_MAX_PORTS, TT_MAX_SESSIONS, TT_TEMPLATE_BASES, tt_fdb_bucket, tt_globals, tt_gre_key,
    tt_gre_peer, tt_session, tt_template, tt_template_short, tt_trunk, tt_vlans,
};
use crate::tables::{Bases, SessionSlots, TemplateSlots};

/// One of the two programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// `xdp_ap_rx`: the AP-facing port (decapsulate → trunk).
    ApRx,
    /// `xdp_trunk_rx`: the trunk port (encapsulate → AP).
    TrunkRx,
}

impl Program {
    /// Both, in load order.
    pub const ALL: [Program; 2] = [Program::ApRx, Program::TrunkRx];

    /// The program's name (its C function and ELF symbol).
    pub fn name(self) -> &'static str {
        match self {
            Program::ApRx => "xdp_ap_rx",
            Program::TrunkRx => "xdp_trunk_rx",
        }
    }
}

/// Names of the maps, as in the object and as pinned.
pub const MAP_NAMES: [&str; 9] = [
    "sessions",
    "session_vlans",
    "gre_peers",
    "fdb",
    "templates",
    "template_bases",
    "long_templates",
    "trunk",
    "counters",
];

/// How many entries the tables the deployment sizes hold (the others are
/// fixed by the layout: 65,536 session slots, 65,536 mGRE peers).
///
/// The FDB is tunterm's own hash table ([`crate::fdb`]): 8 bytes a slot,
/// preallocated, a power of two of 8-slot buckets (the smallest, 32,768
/// slots, is 256 KiB; the default, 131,072, is 1 MiB). Each key may go into one of two
/// buckets, so it fills up before every slot is taken: past 95% of them
/// (see the `fdb_fills_most_of_its_slots` test), and a MAC refused stays
/// on the slow path. So it is sized to the deployment with headroom
/// ([`Capacity::for_macs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Slots of the FDB: (VLAN, MAC) pairs XDP can forward between. A
    /// power of two, [`Capacity::MIN_FDB`] to [`Capacity::MAX_FDB`]. MACs
    /// beyond it stay on the slow path.
    pub fdb: u32,
}

impl Capacity {
    /// Fewest FDB slots (2^12 buckets: the slot holds a unicast MAC's 47
    /// bits beyond its bucket's, at most 35).
    pub const MIN_FDB: u32 = TT_FDB_BUCKET_SLOTS << TT_FDB_MIN_BITS;
    /// Most FDB slots.
    pub const MAX_FDB: u32 = TT_FDB_BUCKET_SLOTS << TT_FDB_MAX_BITS;
    /// The default (1 MiB): room for about 123,000 client MACs at the
    /// headroom [`Capacity::for_macs`] gives.
    pub const DEFAULT_FDB: u32 = 1 << 17;

    /// FDB entries asked for as `n`, rounded up to a power of two (whole
    /// buckets of 8 slots, a power of two of them); outside the limits,
    /// an error that says them.
    pub fn fdb(n: u32) -> Result<Capacity, String> {
        if !(Self::MIN_FDB..=Self::MAX_FDB).contains(&n) {
            return Err(format!(
                "{n} FDB entries: from {} to {}",
                Self::MIN_FDB,
                Self::MAX_FDB
            ));
        }
        Ok(Capacity {
            fdb: n.next_power_of_two(),
        })
    }

    /// Room for `macs` client MACs with a sixteenth as many again spare
    /// (a full table refuses keys whose buckets are both full, and MACs
    /// come and go), rounded up to a power of two, within the limits.
    pub fn for_macs(macs: usize) -> Capacity {
        let want = macs.saturating_add(macs / 16).saturating_add(1);
        let n = u32::try_from(want).unwrap_or(Self::MAX_FDB);
        Capacity {
            fdb: n.clamp(Self::MIN_FDB, Self::MAX_FDB).next_power_of_two(),
        }
    }

    /// Buckets of the `fdb` array (its `max_entries`).
    pub fn fdb_buckets(self) -> u32 {
        self.fdb / TT_FDB_BUCKET_SLOTS
    }

    /// log2 of [`fdb_buckets`](Self::fdb_buckets): the programs'
    /// `tt_fdb_bits`.
    pub fn fdb_bits(self) -> u32 {
        self.fdb_buckets().trailing_zeros()
    }

    /// The loader for these sizes: the `fdb` array's length and the
    /// programs' `tt_fdb_bits` ([`Capacity::fdb_bits`], in `bits`).
    fn loader(self, bits: &u32) -> Result<EbpfLoader<'_>, Error> {
        if !(self.fdb.is_power_of_two() && (Self::MIN_FDB..=Self::MAX_FDB).contains(&self.fdb)) {
            return Err(Error::Pin(format!(
                "an FDB of {} slots: a power of two from {} to {}",
                self.fdb,
                Self::MIN_FDB,
                Self::MAX_FDB
            )));
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("fdb", self.fdb_buckets());
        loader.override_global("tt_fdb_bits", bits, true);
        Ok(loader)
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            fdb: Self::DEFAULT_FDB,
        }
    }
}

/// The kernel's shape of each map: (name, type, key size, value size,
/// entries). Pinned maps that differ (an older layout, another size) are
/// not reused.
fn map_shapes(cap: Capacity) -> [(&'static str, MapType, usize, usize, u32); 9] {
    use std::mem::size_of;
    [
        (
            "sessions",
            MapType::Array,
            4,
            size_of::<tt_session>(),
            TT_MAX_SESSIONS,
        ),
        (
            "session_vlans",
            MapType::Array,
            4,
            size_of::<tt_vlans>(),
            TT_MAX_SESSIONS,
        ),
        (
            "gre_peers",
            MapType::Hash,
            size_of::<tt_gre_key>(),
            size_of::<tt_gre_peer>(),
            TT_MAX_GRE_PEERS,
        ),
        (
            "fdb",
            MapType::Array,
            4,
            size_of::<tt_fdb_bucket>(),
            cap.fdb_buckets(),
        ),
        (
            "templates",
            MapType::Array,
            4,
            size_of::<tt_template_short>(),
            TT_MAX_PORTS,
        ),
        (
            "template_bases",
            MapType::Array,
            4,
            size_of::<tt_template>(),
            TT_TEMPLATE_BASES,
        ),
        (
            "long_templates",
            MapType::Hash,
            4,
            size_of::<tt_template>(),
            TT_MAX_PORTS,
        ),
        ("trunk", MapType::Array, 4, size_of::<tt_trunk>(), 1),
        ("counters", MapType::PerCpuArray, 4, 8, COUNTERS as u32),
    ]
}

/// Several maps of `ebpf` at once, in the order of `names` (a borrow of
/// `ebpf` alone, so the caller may borrow its other fields beside them).
fn maps_mut<'a, const N: usize>(
    ebpf: &'a mut Ebpf,
    names: [&'static str; N],
) -> Result<[&'a mut aya::maps::Map; N], Error> {
    let mut found: [Option<&'a mut aya::maps::Map>; N] = std::array::from_fn(|_| None);
    for (name, m) in ebpf.maps_mut() {
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i] = Some(m);
        }
    }
    if let Some(i) = found.iter().position(Option::is_none) {
        return Err(Error::Missing(names[i]));
    }
    Ok(found.map(|m| m.expect("every map was found (checked above)")))
}

/// bpffs's `statfs` magic.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: all-zero bytes are a valid `statfs` (plain integers).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer,
    // both alive for the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The layout of this build's maps: a hash of `include/tunterm_maps.h`
/// without its comments and whitespace (`build.rs`). Maps are adopted only
/// from a run whose id was the same: a field that moved keeps a map's
/// sizes, so the sizes alone cannot tell.
pub const MAPS_LAYOUT: &str = env!("TUNTERM_MAPS_LAYOUT");

/// What [`FastPath::load_pinned`] found in its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pins {
    /// No maps were pinned there: new ones were made and pinned.
    Fresh,
    /// The maps an earlier run pinned were reused, with their entries.
    Adopted,
    /// Pins of another layout (an older tunterm) were removed, and new maps
    /// made: the reason.
    Replaced(String),
}

/// How [`FastPath::attach_pinned`] attached a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, now pinned.
    New,
    /// The link an earlier run pinned, its program replaced atomically.
    TakenOver,
}

fn pin_err(what: impl std::fmt::Display, path: &Path, e: impl std::error::Error) -> Error {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Pin(format!("{what} {}: {text}", path.display()))
}

fn mode_tag(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "native",
        XdpMode::Skb => "generic",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "default",
    }
}

/// Remove every pin of tunterm's under `dir` (links first: the programs
/// detach once no process holds them), then the directories. What is not
/// there is not an error.
pub fn unpin_all(dir: &Path) -> io::Result<()> {
    for sub in ["links", "progs", "maps", "layout"] {
        let d = dir.join(sub);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let path = e?.path();
            if path.is_dir() {
                std::fs::remove_dir(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        std::fs::remove_dir(&d)?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Both programs, loaded, with their shared maps.
#[derive(Debug)]
pub struct FastPath {
    ebpf: Ebpf,
    /// The `fdb` array, mapped.
    fdb: FdbMem,
    /// Links made by [`FastPath::attach_pinned`] (the pins keep them; these
    /// keep the file descriptors of this run).
    links: Vec<PinnedLink>,
    /// What [`FastPath::set_slow_path_only`] last set.
    slow_path_only: bool,
    /// The template bases in use, once [`FastPath::templates`] read them.
    template_bases: Option<Bases>,
}

impl FastPath {
    /// Create the maps and load (verify) both programs. Needs CAP_BPF and
    /// CAP_NET_ADMIN (root).
    pub fn load() -> Result<Self, Error> {
        Self::load_sized(Capacity::default())
    }

    /// As [`FastPath::load`], with the tables sized `cap`.
    pub fn load_sized(cap: Capacity) -> Result<Self, Error> {
        let bits = cap.fdb_bits();
        Self::from_ebpf(cap.loader(&bits)?.load(TUNTERM_XDP_OBJ)?, cap)
    }

    /// As [`FastPath::load`], with every map pinned as `dir/maps/NAME` (see
    /// [`MAP_NAMES`]) and both programs as `dir/progs/NAME`. Maps an
    /// earlier run pinned there are reused with their entries when their
    /// layout is this build's (the marker `dir/layout/`[`MAPS_LAYOUT`], and
    /// each map's type and sizes); otherwise every pin under `dir` is
    /// removed first ([`Pins::Replaced`]). `dir` must be on a bpffs (`ip netns exec`
    /// remounts /sys: mount one of tunterm's own elsewhere).
    pub fn load_pinned(dir: &Path, cap: Capacity) -> Result<(Self, Pins), Error> {
        let maps = dir.join("maps");
        std::fs::create_dir_all(&maps).map_err(|e| pin_err("creating", &maps, e))?;
        if !is_bpffs(dir) {
            return Err(Error::Pin(format!(
                "{} is not on a bpffs (mount -t bpf bpf {})",
                dir.display(),
                dir.display()
            )));
        }
        let layout = dir.join("layout");
        let pins = match Self::pinned_layout(&maps, cap).and_then(|pinned| {
            Self::pinned_layout_id(&layout, pinned)?;
            Ok(pinned)
        }) {
            Ok(false) => Pins::Fresh,
            Ok(true) => Pins::Adopted,
            Err(why) => {
                unpin_all(dir).map_err(|e| pin_err("removing old pins under", dir, e))?;
                std::fs::create_dir_all(&maps).map_err(|e| pin_err("creating", &maps, e))?;
                Pins::Replaced(why)
            }
        };
        let paths: Vec<_> = MAP_NAMES.iter().map(|n| (*n, maps.join(n))).collect();
        let bits = cap.fdb_bits();
        let mut loader = cap.loader(&bits)?;
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut fp = Self::from_ebpf(loader.load(TUNTERM_XDP_OBJ)?, cap)?;
        if pins == Pins::Fresh {
            // No maps: markers left without them say nothing.
            match std::fs::remove_dir_all(&layout) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(pin_err("removing", &layout, e));
                }
                _ => {}
            }
        }
        let marker = layout.join(MAPS_LAYOUT);
        std::fs::create_dir_all(&marker).map_err(|e| pin_err("creating", &marker, e))?;
        let progs = dir.join("progs");
        std::fs::create_dir_all(&progs).map_err(|e| pin_err("creating", &progs, e))?;
        for p in Program::ALL {
            let path = progs.join(p.name());
            // An earlier run's program stays alive while its link holds it.
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(pin_err("removing", &path, e));
                }
                _ => {}
            }
            fp.program_mut(p)?
                .pin(&path)
                .map_err(|e| pin_err("pinning", &path, e))?;
        }
        Ok((fp, pins))
    }

    /// Whether the maps pinned (`pinned`) carry this build's layout id: an
    /// `Err` naming the ids when they do not (none: pinned by a tunterm
    /// older than the ids).
    fn pinned_layout_id(layout: &Path, pinned: bool) -> Result<(), String> {
        if !pinned || layout.join(MAPS_LAYOUT).is_dir() {
            return Ok(());
        }
        let mut found: Vec<String> = std::fs::read_dir(layout)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        let theirs = if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        };
        Err(format!(
            "the pinned maps have layout {theirs}, this build's is {MAPS_LAYOUT}"
        ))
    }

    /// Whether every map is pinned under `maps` in this build's layout
    /// (`Ok(false)`: none is; `Err`: some are, but not all, or not so).
    fn pinned_layout(maps: &Path, cap: Capacity) -> Result<bool, String> {
        let mut found = 0;
        for (name, ty, key, value, entries) in map_shapes(cap) {
            let path = maps.join(name);
            if !path.exists() {
                continue;
            }
            found += 1;
            let info = MapInfo::from_pin(&path).map_err(|e| format!("{name}: {e}"))?;
            let kind = info.map_type().map_err(|e| format!("{name}: {e}"))?;
            let shape = (
                kind,
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries(),
            );
            if shape != (ty, key, value, entries) {
                return Err(format!(
                    "map {name} is pinned as {shape:?}, this build wants {:?}",
                    (ty, key, value, entries)
                ));
            }
        }
        match found {
            0 => Ok(false),
            n if n == MAP_NAMES.len() => Ok(true),
            n => Err(format!("{n} of {} maps pinned", MAP_NAMES.len())),
        }
    }

    fn from_ebpf(mut ebpf: Ebpf, cap: Capacity) -> Result<Self, Error> {
        for p in Program::ALL {
            let prog: &mut Xdp = ebpf
                .program_mut(p.name())
                .ok_or(Error::Missing(p.name()))?
                .try_into()?;
            prog.load()?;
        }
        let array = |name: &'static str| match ebpf.map(name).ok_or(Error::Missing(name))? {
            aya::maps::Map::Array(m) => Ok(m.fd().as_fd()),
            _ => Err(Error::Missing(name)),
        };
        let fdb = FdbMem::map(array("fdb")?, cap.fdb_bits())?;
        let mut fp = FastPath {
            ebpf,
            fdb,
            links: Vec::new(),
            slow_path_only: false,
            template_bases: None,
        };
        fp.set_globals()?;
        Ok(fp)
    }

    /// Attach `p` to `interface` in `mode` through a bpf link pinned as
    /// `dir/links/INTERFACE:MODE`. A link an earlier run pinned there is
    /// taken over: its program is replaced by this one atomically, so no
    /// packet meets the interface without a program. Links of the same
    /// interface in another mode are removed first (they detach). A link
    /// that no longer works (its interface was deleted) is replaced by a
    /// new one.
    pub fn attach_pinned(
        &mut self,
        p: Program,
        interface: &str,
        mode: XdpMode,
        dir: &Path,
    ) -> Result<Attached, Error> {
        let links = dir.join("links");
        std::fs::create_dir_all(&links).map_err(|e| pin_err("creating", &links, e))?;
        let tag = mode_tag(mode);
        // bpffs reserves names with dots; an interface name has no ':' or
        // '%' (the kernel takes '%' as a format), so neither clashes.
        let stem = interface.replace('.', "%");
        let path: PathBuf = links.join(format!("{stem}:{tag}"));
        let entries = std::fs::read_dir(&links).map_err(|e| pin_err("reading", &links, e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name
                .rsplit_once(':')
                .is_some_and(|(i, m)| i == stem && m != tag)
            {
                std::fs::remove_file(e.path())
                    .map_err(|err| pin_err("removing", &e.path(), err))?;
            }
        }
        if path.exists() {
            let taken = PinnedLink::from_pin(&path)
                .map_err(|e| e.to_string())
                .and_then(|l| XdpLink::try_from(FdLink::from(l)).map_err(|e| e.to_string()))
                .and_then(|l| {
                    self.program_mut(p)
                        .map_err(|e| e.to_string())?
                        .attach_to_link(l)
                        .map_err(|e| e.to_string())
                });
            if taken.is_ok() {
                return Ok(Attached::TakenOver);
            }
            std::fs::remove_file(&path).map_err(|e| pin_err("removing", &path, e))?;
        }
        let prog = self.program_mut(p)?;
        let id = prog.attach(interface, mode)?;
        let link = prog.take_link(id)?;
        let fd = FdLink::try_from(link).map_err(|_| {
            Error::Pin(format!(
                "XDP on {interface} was attached through netlink, not a bpf link: it cannot \
                 be pinned (hitless restart needs Linux 5.9 or later)"
            ))
        })?;
        let pinned = fd
            .pin(&path)
            .map_err(|e| pin_err("pinning the link", &path, e))?;
        self.links.push(pinned);
        Ok(Attached::New)
    }

    /// Take `interface`'s link pinned under `dir` in `mode` (made or taken
    /// over by [`FastPath::attach_pinned`]) off the interface and remove
    /// its pin: `BPF_LINK_DETACH`, so the program leaves the interface
    /// whatever file descriptors still hold the link (they hold a defunct
    /// link then). The maps are not touched. `Ok(false)`: no such pin.
    pub fn detach_pinned(interface: &str, mode: XdpMode, dir: &Path) -> Result<bool, Error> {
        let stem = interface.replace('.', "%");
        let path = dir.join("links").join(format!("{stem}:{}", mode_tag(mode)));
        if !path.exists() {
            return Ok(false);
        }
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| pin_err("naming", &path, e))?;
        // union bpf_attr: obj_get's { __aligned_u64 pathname; .. } and
        // link_detach's { __u32 link_fd; }, the rest zero.
        #[repr(C, align(8))]
        struct Attr([u8; 128]);
        const BPF_OBJ_GET: libc::c_long = 7;
        const BPF_LINK_DETACH: libc::c_long = 34;
        let bpf = |cmd: libc::c_long, attr: &mut Attr| {
            // SAFETY: bpf(2) reads the 128 bytes of `attr`,
            // which lives until it returns; a pathname in it points to `c`,
            // alive for this whole function.
            unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) }
        };
        let mut attr = Attr([0; 128]);
        attr.0[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
        let rc = bpf(BPF_OBJ_GET, &mut attr);
        if rc < 0 {
            return Err(pin_err(
                "opening (BPF_OBJ_GET) the link",
                &path,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: BPF_OBJ_GET returned a new fd, ours to own and close.
        let fd = unsafe { OwnedFd::from_raw_fd(rc as i32) };
        let mut attr = Attr([0; 128]);
        attr.0[..4].copy_from_slice(&fd.as_raw_fd().to_ne_bytes());
        if bpf(BPF_LINK_DETACH, &mut attr) < 0 {
            return Err(pin_err(
                "detaching (BPF_LINK_DETACH) the link",
                &path,
                io::Error::last_os_error(),
            ));
        }
        drop(fd);
        std::fs::remove_file(&path).map_err(|e| pin_err("removing", &path, e))?;
        Ok(true)
    }

    /// Detach a link [`FastPath::attach`] made.
    pub fn detach(&mut self, p: Program, id: XdpLinkId) -> Result<(), Error> {
        Ok(self.program_mut(p)?.detach(id)?)
    }

    /// A loaded program (to attach, pin or run).
    pub fn program(&self, p: Program) -> Result<&Xdp, Error> {
        Ok(self
            .ebpf
            .program(p.name())
            .ok_or(Error::Missing(p.name()))?
            .try_into()?)
    }

    /// A loaded program, mutably (attach, detach, take the link to pin it).
    pub fn program_mut(&mut self, p: Program) -> Result<&mut Xdp, Error> {
        Ok(self
            .ebpf
            .program_mut(p.name())
            .ok_or(Error::Missing(p.name()))?
            .try_into()?)
    }

    /// Attach `p` to `interface`: `XdpMode::Driver` (native) or
    /// `XdpMode::Skb` (generic). The link lives as long as this
    /// [`FastPath`] unless taken with `program_mut(p)?.take_link(id)`.
    pub fn attach(
        &mut self,
        p: Program,
        interface: &str,
        mode: XdpMode,
    ) -> Result<XdpLinkId, Error> {
        Ok(self.program_mut(p)?.attach(interface, mode)?)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        self.ebpf.map_mut(name).ok_or(Error::Missing(name))
    }

    /// The `sessions` and `session_vlans` arrays, as a map: local session
    /// id → [`Session`](crate::maps::Session).
    pub fn sessions(&mut self) -> Result<SessionSlots<'_>, Error> {
        let [sessions, vlans] = maps_mut(&mut self.ebpf, ["sessions", "session_vlans"])?;
        Ok(SessionSlots::sessions(
            Array::try_from(sessions)?,
            Array::try_from(vlans)?,
        ))
    }

    /// The `gre_peers` map: (address, key) → [`tt_gre_peer`].
    pub fn gre_peers(&mut self) -> Result<HashMap<&mut MapData, tt_gre_key, tt_gre_peer>, Error> {
        Ok(HashMap::try_from(self.map_mut("gre_peers")?)?)
    }

    /// The FDB: (VLAN, MAC) → [`tt_fdb_entry`](crate::maps::tt_fdb_entry), read and written through
    /// the mapping.
    pub fn fdb(&mut self) -> Result<Fdb<'_>, Error> {
        Ok(Fdb::new(&self.fdb))
    }

    /// The `templates` array (with `template_bases`, and
    /// `long_templates` for IPv6), as a map: a tunnel's port index
    /// ([`crate::ports`]) → [`tt_template`].
    pub fn templates(&mut self) -> Result<TemplateSlots<'_>, Error> {
        let [lines, bases, long] = maps_mut(
            &mut self.ebpf,
            ["templates", "template_bases", "long_templates"],
        )?;
        Ok(TemplateSlots::templates(
            Array::try_from(lines)?,
            Array::try_from(bases)?,
            HashMap::try_from(long)?,
            &mut self.template_bases,
        ))
    }

    /// Forget the template bases read from the maps, as a new run would
    /// not know them.
    #[cfg(test)]
    pub(crate) fn template_bases_forget(&mut self) {
        self.template_bases = None;
    }

    /// While `on` (a packet capture runs), the programs drop nothing: what
    /// they would drop by policy (wrong source or cookie, a VLAN the port
    /// does not carry, …) goes to the slow path, which drops it too and
    /// shows it at the capture's `drop` point (counted as
    /// `TT_CNT_PASS_CAPTURE` / `TT_CNT_TRUNK_PASS_CAPTURE`).
    pub fn set_slow_path_only(&mut self, on: bool) -> Result<(), Error> {
        self.slow_path_only = on;
        self.set_globals()
    }

    /// Tell `xdp_ap_rx` how many bytes of cookie and sublayer most
    /// sessions' data carries
    /// ([`l2tp_extra`](crate::maps::tt_session::l2tp_extra): 0, 4, 8 or
    /// 12; until called, 8). It looks for a packet's inner source MAC there
    /// before it has looked the session up, to start loading the MAC's FDB
    /// bucket early. Forwarding does not depend on it: a session that
    /// differs is forwarded the same, at the cost of one wasted load.
    pub fn expect_l2tp_extra(&mut self, bytes: u8) -> Result<(), Error> {
        if bytes > 12 || !bytes.is_multiple_of(4) {
            return Err(Error::L2tpExtra(bytes));
        }
        let mut a: Array<&mut MapData, u32> = Array::try_from(self.map_mut(".data")?)?;
        a.set(0, u32::from(bytes), 0)?;
        Ok(())
    }

    fn set_globals(&mut self) -> Result<(), Error> {
        let g = tt_globals {
            slow_path_only: u32::from(self.slow_path_only),
        };
        let mut a: Array<&mut MapData, tt_globals> = Array::try_from(self.map_mut(".bss")?)?;
        a.set(0, g, 0)?;
        Ok(())
    }

    /// Write the trunk port's VLANs (until then `xdp_trunk_rx` passes all).
    pub fn set_trunk(&mut self, t: &tt_trunk) -> Result<(), Error> {
        let mut a: Array<&mut MapData, tt_trunk> = Array::try_from(self.map_mut("trunk")?)?;
        a.set(0, *t, 0)?;
        Ok(())
    }

    /// The per-CPU counters of both programs, summed.
    pub fn counters(&self) -> Result<Counters, Error> {
        let m = self
            .ebpf
            .map("counters")
            .ok_or(Error::Missing("counters"))?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(m)?;
        let mut sums = [0u64; COUNTERS];
        for (i, sum) in sums.iter_mut().enumerate() {
            // COUNTERS is the map's max_entries, a small u32 in the header.
            let idx = i as u32;
            *sum = arr.get(&idx, 0)?.iter().copied().fold(0, u64::wrapping_add);
        }
        Ok(Counters(sums))
    }

    /// Run `p` once on `packet` (BPF_PROG_TEST_RUN, nothing is sent: a
    /// redirect only reports XDP_REDIRECT). BPF_PROG_TEST_RUN refuses
    /// packets shorter than an Ethernet header (EINVAL).
    pub fn test_run(&self, p: Program, packet: &[u8]) -> Result<TestOutcome, Error> {
        // Growth is bounded by the kernel's headroom (256 bytes).
        let mut out = vec![0u8; packet.len() + 256];
        let res = self.program(p)?.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(res.data_size_out as usize);
        Ok(TestOutcome {
            action: Action::from(res.return_value),
            packet: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table as _;
    use crate::maps::{tt_fdb_entry, tt_fdb_key};

    #[test]
    fn fdb_capacity_is_a_power_of_two_within_the_limits() {
        // 2^12 buckets of 8 at least; what is asked for, rounded up.
        assert_eq!(Capacity::MIN_FDB, 32_768);
        assert_eq!(Capacity::MAX_FDB, 1 << 22);
        assert_eq!(Capacity::fdb(32_768).unwrap().fdb, Capacity::MIN_FDB);
        assert_eq!(Capacity::fdb(32_769).unwrap().fdb, 65_536);
        assert_eq!(Capacity::fdb(65_537).unwrap().fdb, 131_072);
        assert_eq!(Capacity::fdb(131_073).unwrap().fdb, 262_144);
        assert_eq!(Capacity::fdb(Capacity::MAX_FDB).unwrap().fdb, 1 << 22);
        assert!(
            Capacity::fdb(32_767)
                .unwrap_err()
                .contains("from 32768 to 4194304")
        );
        assert!(Capacity::fdb(Capacity::MAX_FDB + 1).is_err());
        // A sixteenth spare: 100,000 clients take 1 MiB (76% full),
        // 124,000 the next size, 10,000 the smallest (256 KiB, 32% full).
        assert_eq!(Capacity::for_macs(100_000).fdb, 131_072);
        assert_eq!(Capacity::for_macs(100_000).fdb_buckets(), 16_384);
        assert_eq!(Capacity::for_macs(100_000).fdb_bits(), 14);
        assert_eq!(Capacity::for_macs(124_000).fdb, 262_144);
        assert_eq!(Capacity::for_macs(10_000).fdb, 32_768);
        assert_eq!(Capacity::for_macs(40_000).fdb, 65_536);
        assert_eq!(Capacity::for_macs(0).fdb, Capacity::MIN_FDB);
        assert_eq!(Capacity::for_macs(usize::MAX).fdb, Capacity::MAX_FDB);
    }

    /// A bpffs of the test's own, unmounted (with its pins) on drop.
    struct Bpffs(PathBuf);

    impl Bpffs {
        fn mount(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("tunterm-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success(), "mount -t bpf (root)");
            Bpffs(dir)
        }
    }

    impl Drop for Bpffs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn pinned_maps_are_adopted_only_in_this_builds_layout() {
        let fs = Bpffs::mount("layout");
        let dir = fs.0.join("tunterm");
        let cap = Capacity::default();
        let load = |cap| FastPath::load_pinned(&dir, cap).map(|(_, pins)| pins);
        assert_eq!(load(cap).unwrap(), Pins::Fresh);
        assert!(dir.join("layout").join(MAPS_LAYOUT).is_dir());
        assert_eq!(load(cap).unwrap(), Pins::Adopted);
        // Maps pinned by a build whose header differed, same sizes: the
        // marker tells, and they are replaced.
        std::fs::remove_dir(dir.join("layout").join(MAPS_LAYOUT)).unwrap();
        std::fs::create_dir(dir.join("layout").join("0123456789abcdef")).unwrap();
        let Pins::Replaced(why) = load(cap).unwrap() else {
            panic!("another layout adopted")
        };
        assert_eq!(
            why,
            format!("the pinned maps have layout 0123456789abcdef, this build's is {MAPS_LAYOUT}")
        );
        let markers: Vec<_> = std::fs::read_dir(dir.join("layout"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(markers, [MAPS_LAYOUT]);
        // Maps of a tunterm older than the markers.
        std::fs::remove_dir(dir.join("layout").join(MAPS_LAYOUT)).unwrap();
        let Pins::Replaced(why) = load(cap).unwrap() else {
            panic!("unmarked maps adopted")
        };
        assert!(why.contains("layout none"), "{why}");
        // Another size: the shapes tell.
        let bigger = Capacity { fdb: 2 * cap.fdb };
        let Pins::Replaced(why) = load(bigger).unwrap() else {
            panic!("another fdb size adopted")
        };
        assert!(why.contains("map fdb is pinned as"), "{why}");
        unpin_all(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn fdb_fills_most_of_its_slots() {
        for slots in [Capacity::MIN_FDB, 2 * Capacity::MIN_FDB] {
            fdb_fills_most_of(slots);
        }
    }

    fn fdb_fills_most_of(slots: u32) {
        let mut fp = FastPath::load_sized(Capacity { fdb: slots }).expect("loading (root)");
        let mut fdb = fp.fdb().unwrap();
        assert_eq!(fdb.capacity(), slots as usize);
        let key = |i: u32| {
            let b = i.to_be_bytes();
            tt_fdb_key::new(10, [2, 0, b[0], b[1], b[2], b[3]])
        };
        let port = |i: u32| (i % 0x7fff) as u16;
        // Fill until the first refusal: it comes only when nearly every
        // slot is taken, and says which key.
        let mut n = 0;
        let refused = loop {
            match fdb.put(key(n), tt_fdb_entry::new(port(n))) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(
            (slots * 95 / 100..slots).contains(&n),
            "{n} of {slots} slots filled"
        );
        assert!(
            matches!(refused, Error::FdbFull { vlan: 10, mac } if mac == key(n).mac),
            "{refused}"
        );
        // Every key put (some moved to their other bucket) is there, with
        // its own entry; the refused one is not.
        for i in 0..n {
            assert_eq!(fdb.get(&key(i)).map(|e| e.port), Some(port(i)), "key {i}");
        }
        assert!(fdb.get(&key(n)).is_none());
        assert_eq!(fdb.entries().len(), n as usize);
        // A removal makes room again; a rewrite changes the entry in place.
        fdb.delete(&key(0)).unwrap();
        assert!(fdb.get(&key(0)).is_none());
        fdb.put(key(1), tt_fdb_entry::new(99)).unwrap();
        assert_eq!(fdb.get(&key(1)).map(|e| e.port), Some(99));
        assert_eq!(fdb.entries().len(), n as usize - 1);
    }
}
