//! `fwdcount`: push frames of labbench's mix through exactly what the
//! daemon runs per frame in userspace (L2TPv3 decap, the forwarding
//! pipeline with the daemon's flood policy chain, the writes' walk over
//! the actions, system calls left out), for counting instructions per
//! frame under callgrind, which repeats whatever the machine's load:
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='*fwdcount::run*' \
//!     target/release/fwdcount --frames 200000 --containment on
//! ```
//!
//! Ir collected / frames = instructions per frame (a warm-up outside
//! `run` leaves allocation out). The README's "The userspace path" has the
//! figures.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tunterm_benches::slowpath::{self, Bed};
use tunterm_core::forward::{Actions, FloodPolicy, Forwarder};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mix {
    /// AP→trunk only (decap, switch, re-tag, MSS check).
    Up,
    /// Trunk→AP only (switch, re-tag, encap, MSS and size check).
    Down,
    /// One of each in turn (labbench's bidirectional mix).
    Both,
}

#[derive(Parser, Debug)]
#[command(about = "frames through the userspace path, for callgrind")]
struct Args {
    /// Frames to push (after a warm-up of 2,000).
    #[arg(long, default_value_t = 200_000)]
    frames: usize,
    /// Inner frame size, bytes.
    #[arg(long, default_value_t = 64)]
    len: usize,
    /// Containment (ARP/ND containment and storm control) on or off; the
    /// client table and the multicast policy run either way, as in the
    /// daemon.
    #[arg(long, default_value = "on")]
    containment: String,
    /// Which directions.
    #[arg(long, value_enum, default_value = "both")]
    mix: Mix,
}

/// The measured loop: callgrind's `--toggle-collect` names it.
#[inline(never)]
fn run<P: FloodPolicy>(
    bed: &mut Bed,
    fwd: &mut Forwarder<P>,
    out: &mut Actions,
    t0: Instant,
    frames: usize,
    mix: Mix,
) -> usize {
    go(bed, fwd, out, t0, frames, mix)
}

/// One frame after another, as the daemon's loop takes them.
fn go<P: FloodPolicy>(
    bed: &mut Bed,
    fwd: &mut Forwarder<P>,
    out: &mut Actions,
    t0: Instant,
    frames: usize,
    mix: Mix,
) -> usize {
    let (mut i, mut j, mut sent) = (0usize, 0usize, 0usize);
    for k in 0..frames {
        // The daemon reads the clock per frame; a step per frame here.
        let now = t0 + Duration::from_micros(k as u64);
        let up = match mix {
            Mix::Up => true,
            Mix::Down => false,
            Mix::Both => k % 2 == 0,
        };
        let mark = slowpath::mark(out);
        if up {
            i = (i + 7) % bed.uplink.len();
            bed.up(now, i, fwd, out);
        } else {
            j = (j + 7) % bed.downlink.len();
            bed.down(now, j, fwd, out);
        }
        sent += slowpath::write_actions(out, mark);
    }
    sent + slowpath::flush_tunnels(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let containment = match args.containment.as_str() {
        "on" => true,
        "off" => false,
        other => anyhow::bail!("--containment on|off, not {other:?}"),
    };
    let mut bed = Bed::new(args.len);
    let t0 = Instant::now();
    let mut fwd = Bed::forwarder(slowpath::daemon_policy(t0, containment));
    let mut out = Actions::with_capacity(slowpath::TX_BYTES + 65_600);
    // Outside `run`: the queues' first allocations are not counted.
    go(&mut bed, &mut fwd, &mut out, t0, 2_000, args.mix);
    let t1 = t0 + Duration::from_secs(1);
    let sent = run(&mut bed, &mut fwd, &mut out, t1, args.frames, args.mix);
    println!(
        "frames {} containment {} mix {:?}: packets out {sent}, clients {}",
        args.frames,
        args.containment,
        args.mix,
        fwd.policy().table().len()
    );
    anyhow::ensure!(sent == args.frames, "every frame forwarded once");
    Ok(())
}
