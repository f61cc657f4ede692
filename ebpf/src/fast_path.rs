//! Both XDP programs, loaded from one object so they share one set of maps:
//! `xdp_ap_rx` for the AP-facing port and `xdp_trunk_rx` for the trunk.
//! The daemon loads a [`FastPath`], attaches each program to its interface,
//! and keeps the maps in step with the userspace switch.
//!
//! Hitless restart: [`FastPath::load_pinned`] keeps the maps in a bpffs
//! directory of tunterm's own (opened again if already there), so a new
//! daemon starts with the old one's entries. Pinning programs and links is
//! not done here yet.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions};

use crate::TUNTERM_XDP_OBJ;
use crate::ap_rx::{Action, Error, TestOutcome};
use crate::maps::{
    COUNTERS, Counters, tt_fdb_entry, tt_fdb_key, tt_gre_key, tt_gre_peer, tt_session, tt_template,
    tt_trunk,
};

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
pub const MAP_NAMES: [&str; 6] = [
    "sessions",
    "gre_peers",
    "fdb",
    "templates",
    "trunk",
    "counters",
];

/// Both programs, loaded, with their shared maps.
#[derive(Debug)]
pub struct FastPath {
    ebpf: Ebpf,
}

impl FastPath {
    /// Create the maps and load (verify) both programs. Needs CAP_BPF and
    /// CAP_NET_ADMIN (root).
    pub fn load() -> Result<Self, Error> {
        Self::from_ebpf(Ebpf::load(TUNTERM_XDP_OBJ)?)
    }

    /// As [`FastPath::load`], with every map pinned as `dir/NAME` (see
    /// [`MAP_NAMES`]): a map already pinned there is reused with its
    /// entries, others are created and pinned. `dir` must be on a bpffs
    /// (inside `ip netns exec`, mount one of tunterm's own).
    pub fn load_pinned(dir: &Path) -> Result<Self, Error> {
        let paths: Vec<_> = MAP_NAMES.iter().map(|n| (*n, dir.join(n))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        Self::from_ebpf(loader.load(TUNTERM_XDP_OBJ)?)
    }

    fn from_ebpf(mut ebpf: Ebpf) -> Result<Self, Error> {
        for p in Program::ALL {
            let prog: &mut Xdp = ebpf
                .program_mut(p.name())
                .ok_or(Error::Missing(p.name()))?
                .try_into()?;
            prog.load()?;
        }
        Ok(FastPath { ebpf })
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

    /// The `sessions` map: local session id → [`tt_session`].
    pub fn sessions(&mut self) -> Result<HashMap<&mut MapData, u32, tt_session>, Error> {
        Ok(HashMap::try_from(self.map_mut("sessions")?)?)
    }

    /// The `gre_peers` map: (address, key) → [`tt_gre_peer`].
    pub fn gre_peers(&mut self) -> Result<HashMap<&mut MapData, tt_gre_key, tt_gre_peer>, Error> {
        Ok(HashMap::try_from(self.map_mut("gre_peers")?)?)
    }

    /// The `fdb` map: (VLAN, MAC) → [`tt_fdb_entry`].
    pub fn fdb(&mut self) -> Result<HashMap<&mut MapData, tt_fdb_key, tt_fdb_entry>, Error> {
        Ok(HashMap::try_from(self.map_mut("fdb")?)?)
    }

    /// The `templates` map: tunnel switch port id → [`tt_template`].
    pub fn templates(&mut self) -> Result<HashMap<&mut MapData, u32, tt_template>, Error> {
        Ok(HashMap::try_from(self.map_mut("templates")?)?)
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
