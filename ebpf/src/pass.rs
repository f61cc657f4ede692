//! `xdp_pass`: a program that passes every packet, for the receiving end of
//! a veth that native `XDP_REDIRECT`s target (without an XDP program there,
//! the kernel drops them silently).

use aya::Ebpf;
use aya::programs::{Xdp, XdpMode};

use crate::{Error, XDP_PASS_OBJ};

/// `xdp_pass` attached to an interface; detached when dropped.
#[derive(Debug)]
pub struct PassThrough {
    _ebpf: Ebpf,
}

impl PassThrough {
    /// Load `xdp_pass` and attach it to `iface` in native (driver) mode.
    pub fn attach(iface: &str) -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(XDP_PASS_OBJ)?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .ok_or(Error::Missing("program xdp_pass"))?
            .try_into()?;
        prog.load()?;
        prog.attach(iface, XdpMode::Driver)?;
        Ok(PassThrough { _ebpf: ebpf })
    }
}
