//! `xdp_ap_rx` on its own terms (the first API, kept): load, its maps, and a
//! run on a packet through `BPF_PROG_TEST_RUN`. It is a [`FastPath`] (both
//! programs, one set of maps) seen from the AP side; the errors and
//! outcomes here are shared by both.

use aya::EbpfError;
use aya::maps::MapError;
use aya::programs::{ProgramError, Xdp};

use crate::fast_path::{FastPath, Program};
use crate::maps::Counters;
use crate::tables::SessionSlots;

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
    /// Pinning in, or reading from, the bpffs directory failed.
    #[error("{0}")]
    Pin(String),
    /// An FDB entry's port index is past the 15 bits a slot holds
    /// (`tunterm_ebpf::PortIndex` hands out none).
    #[error("port index {0} is past the FDB's 15 bits")]
    PortIndex(u16),
    /// A session's (or its template's) array slot holds another session:
    /// two live ids with the same low 16 bits (the slow path carries this
    /// one).
    #[error("slot of {id:#x} holds {held:#x}")]
    SlotTaken {
        /// The id being installed.
        id: u32,
        /// The id the slot holds.
        held: u32,
    },
    /// Both FDB buckets of (VLAN, MAC) are full, and no occupant could move
    /// to its other bucket (or the key is VLAN 0 with the zero MAC, which
    /// marks an empty slot): the MAC stays on the slow path.
    #[error("no room in the fast-path FDB for {mac:02x?} on VLAN {vlan}")]
    FdbFull {
        /// The key's VLAN.
        vlan: u16,
        /// The key's MAC.
        mac: [u8; 6],
    },
    /// A group (multicast or broadcast) MAC: the FDB holds unicast MACs
    /// only (XDP passes frames from and to group addresses to the slow
    /// path before any lookup).
    #[error("{0:02x?} is a group address: the fast-path FDB holds unicast MACs only")]
    GroupMac([u8; 6]),
    /// Not a length of cookie and sublayer an L2TPv3 session can have.
    #[error("{0} bytes of cookie and sublayer: 0, 4, 8 or 12")]
    L2tpExtra(u8),
    /// An array entry installed under an id it does not carry (or 0, or an
    /// mGRE port, which no session has).
    #[error("entry for {id:#x} says {entry:#x}")]
    SlotId {
        /// The key given.
        id: u32,
        /// The id in the entry.
        entry: u32,
    },
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

/// The AP-facing port's program, loaded into the kernel with its maps: a
/// [`FastPath`] seen from the AP side (the trunk program is loaded too and
/// shares the maps; see [`ApRx::fast_path`]).
#[derive(Debug)]
pub struct ApRx {
    fp: FastPath,
}

impl ApRx {
    /// Name of the program (its C function and ELF symbol).
    pub const PROGRAM: &'static str = "xdp_ap_rx";

    /// Create the maps and load (verify) the programs. Needs CAP_BPF (root).
    pub fn load() -> Result<Self, Error> {
        Ok(ApRx {
            fp: FastPath::load()?,
        })
    }

    /// The loaded program (to attach, or to run).
    pub fn program(&self) -> Result<&Xdp, Error> {
        self.fp.program(Program::ApRx)
    }

    /// The `sessions` and `session_vlans` arrays, as a map: local session
    /// id → [`Session`](crate::maps::Session).
    pub fn sessions(&mut self) -> Result<SessionSlots<'_>, Error> {
        self.fp.sessions()
    }

    /// The FDB: (VLAN, MAC) → [`tt_fdb_entry`](crate::maps::tt_fdb_entry).
    pub fn fdb(&mut self) -> Result<crate::fdb::Fdb<'_>, Error> {
        self.fp.fdb()
    }

    /// The per-CPU counters, summed.
    pub fn counters(&self) -> Result<Counters, Error> {
        self.fp.counters()
    }

    /// Run the program once on `packet` (BPF_PROG_TEST_RUN, nothing is sent:
    /// a redirect only reports XDP_REDIRECT).
    pub fn test_run(&self, packet: &[u8]) -> Result<TestOutcome, Error> {
        self.fp.test_run(Program::ApRx, packet)
    }

    /// Everything else: GRE peers, templates, the trunk program.
    pub fn fast_path(&mut self) -> &mut FastPath {
        &mut self.fp
    }

    /// The [`FastPath`] this was.
    pub fn into_fast_path(self) -> FastPath {
        self.fp
    }
}
