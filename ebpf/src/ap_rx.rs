//! Loading `xdp_ap_rx` (aya 0.14), its maps, and running it on a packet
//! through `BPF_PROG_TEST_RUN` (aya's `TestRun::test_run`). Attaching to an
//! interface is the daemon's job and is not done here yet.

use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfError, TestRun, TestRunOptions};

use crate::XDP_AP_RX_OBJ;
use crate::maps::{COUNTERS, Counters, tt_fdb_entry, tt_fdb_key, tt_session};

/// Why loading or using the program failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object could not be parsed or its maps created.
    #[error("loading the XDP object: {0}")]
    Object(#[from] EbpfError),
    /// The object lacks a program or map this code expects.
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    /// The kernel refused the program (verifier, permissions) or a run.
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    /// A map operation failed.
    #[error("map: {0}")]
    Map(#[from] MapError),
}

/// What an XDP program returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// XDP_ABORTED: a program error (counted, packet dropped).
    Aborted,
    /// XDP_DROP.
    Drop,
    /// XDP_PASS: on to the kernel stack and the slow path.
    Pass,
    /// XDP_TX.
    Tx,
    /// XDP_REDIRECT.
    Redirect,
    /// Anything else (a program bug).
    Other(u32),
}

impl From<u32> for Action {
    fn from(v: u32) -> Self {
        match v {
            0 => Action::Aborted,
            1 => Action::Drop,
            2 => Action::Pass,
            3 => Action::Tx,
            4 => Action::Redirect,
            v => Action::Other(v),
        }
    }
}

/// The result of one test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// What the program returned.
    pub action: Action,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

/// The AP-facing port's program, loaded into the kernel with its maps.
#[derive(Debug)]
pub struct ApRx {
    ebpf: Ebpf,
}

impl ApRx {
    /// Name of the program (its C function and ELF symbol).
    pub const PROGRAM: &'static str = "xdp_ap_rx";

    /// Create the maps and load (verify) the program. Needs CAP_BPF (root).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(XDP_AP_RX_OBJ)?;
        let prog: &mut Xdp = ebpf
            .program_mut(Self::PROGRAM)
            .ok_or(Error::Missing("program xdp_ap_rx"))?
            .try_into()?;
        prog.load()?;
        Ok(ApRx { ebpf })
    }

    /// The loaded program (to attach, or to run).
    pub fn program(&self) -> Result<&Xdp, Error> {
        Ok(self
            .ebpf
            .program(Self::PROGRAM)
            .ok_or(Error::Missing("program xdp_ap_rx"))?
            .try_into()?)
    }

    /// The loaded program, to attach or detach.
    pub fn program_mut(&mut self) -> Result<&mut Xdp, Error> {
        Ok(self
            .ebpf
            .program_mut(Self::PROGRAM)
            .ok_or(Error::Missing("program xdp_ap_rx"))?
            .try_into()?)
    }

    /// The `sessions` map: local session id → [`tt_session`].
    pub fn sessions(&mut self) -> Result<HashMap<&mut MapData, u32, tt_session>, Error> {
        let m = self
            .ebpf
            .map_mut("sessions")
            .ok_or(Error::Missing("map sessions"))?;
        Ok(HashMap::try_from(m)?)
    }

    /// The `fdb` map: (VLAN, MAC) → [`tt_fdb_entry`].
    pub fn fdb(&mut self) -> Result<HashMap<&mut MapData, tt_fdb_key, tt_fdb_entry>, Error> {
        let m = self.ebpf.map_mut("fdb").ok_or(Error::Missing("map fdb"))?;
        Ok(HashMap::try_from(m)?)
    }

    /// The per-CPU counters, summed.
    pub fn counters(&self) -> Result<Counters, Error> {
        let m = self
            .ebpf
            .map("counters")
            .ok_or(Error::Missing("map counters"))?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(m)?;
        let mut sums = [0u64; COUNTERS];
        for (i, sum) in sums.iter_mut().enumerate() {
            // COUNTERS is the map's max_entries, a small u32 in the header.
            let idx = i as u32;
            *sum = arr.get(&idx, 0)?.iter().copied().fold(0, u64::wrapping_add);
        }
        Ok(Counters(sums))
    }

    /// Run the program once on `packet` (BPF_PROG_TEST_RUN, nothing is sent:
    /// a redirect only reports XDP_REDIRECT).
    pub fn test_run(&self, packet: &[u8]) -> Result<TestOutcome, Error> {
        // The program only ever shrinks the packet; the kernel's headroom
        // (256 bytes) bounds any growth anyway.
        let mut out = vec![0u8; packet.len() + 256];
        let res = self.program()?.test_run(TestRunOptions {
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
