//! The benchmark's XDP programs on the lab's interfaces: the counting
//! receiver and the raw redirect (`tunterm_ebpf::bench`).

use anyhow::Context;
use aya::Ebpf;
use aya::maps::xdp::DevMapHash;
use aya::maps::{MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use tunterm_ebpf::bench::{BENCH_COUNT_OBJ, BENCH_REDIRECT_OBJ};
use tunterm_lab::Netns;

/// Loads program `name` of `obj` and attaches it in native mode to each of
/// `ifnames` in `ns`. Attaching happens inside the namespace; the links
/// live as long as the returned object.
fn load_attached(obj: &[u8], name: &str, ns: &Netns, ifnames: &[&str]) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(obj).with_context(|| format!("loading {name}"))?;
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?;
    prog.load().with_context(|| format!("verifying {name}"))?;
    for ifname in ifnames {
        ns.enter(|| prog.attach(ifname, XdpMode::Driver))?
            .with_context(|| format!("attaching {name} to {ifname} in {}", ns.name()))?;
    }
    Ok(ebpf)
}

/// `bench_count` on one interface: counts and drops what arrives there.
pub struct Counter {
    ebpf: Ebpf,
}

impl Counter {
    /// Attaches a fresh counter to `ifname` in `ns` (native XDP).
    pub fn attach(ns: &Netns, ifname: &str) -> anyhow::Result<Counter> {
        Ok(Counter {
            ebpf: load_attached(BENCH_COUNT_OBJ, "bench_count", ns, &[ifname])?,
        })
    }

    /// Frames counted so far, summed over the CPUs.
    pub fn frames(&self) -> anyhow::Result<u64> {
        let map = self
            .ebpf
            .map("bench_counters")
            .context("no map bench_counters")?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(arr.get(&0, 0)?.iter().sum())
    }
}

/// `bench_redirect` between two interfaces of one namespace, both ways.
/// Dropping it detaches the program.
pub struct Redirect {
    _ebpf: Ebpf,
}

impl Redirect {
    /// Redirects everything arriving on `a` to `b` and back (native XDP).
    pub fn attach(
        ns: &Netns,
        (a, a_index): (&str, u32),
        (b, b_index): (&str, u32),
    ) -> anyhow::Result<Redirect> {
        let mut ebpf = load_attached(BENCH_REDIRECT_OBJ, "bench_redirect", ns, &[a, b])?;
        let map = ebpf.map_mut("bench_ports").context("no map bench_ports")?;
        let mut ports: DevMapHash<&mut MapData> = DevMapHash::try_from(map)?;
        // The kernel resolves a devmap's ifindex in the updater's namespace.
        ns.enter(|| {
            ports.insert(a_index, b_index, None, 0)?;
            ports.insert(b_index, a_index, None, 0)
        })??;
        Ok(Redirect { _ebpf: ebpf })
    }
}
