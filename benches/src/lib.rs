//! tunterm benches: criterion micro-benchmarks (`benches/`) and the lab
//! throughput harness (`labbench`, [`labbench`]), and the per-frame cost of
//! the XDP programs alone (`xdpcost`, [`xdpcost`]), and the multicast/ARP
//! containment scale bench (`mcastbench`, [`mcastbench`]), and reconnect
//! storms, hitless restart and soak at scale (`stormbench`, [`stormbench`]).

pub mod labbench;
pub mod mcastbench;
pub mod slowpath;
pub mod stormbench;
pub mod xdpcost;

/// Where the lab benches find `tunterm` and `tunterm-apsim`: the directory
/// of the running program, or its parent when it runs from `target/*/deps`
/// (a test).
pub fn default_bin_dir() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = anyhow::Context::context(exe.parent(), "no directory")?.to_path_buf();
    if dir.join("tunterm").exists() {
        return Ok(dir);
    }
    Ok(dir.parent().map_or(dir.clone(), |p| p.to_path_buf()))
}
