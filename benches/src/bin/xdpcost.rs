//! `xdpcost`: nanoseconds per frame of tunterm's XDP programs against the
//! raw redirect, through BPF_PROG_TEST_RUN on labbench's frames and tables
//! (see `tunterm_benches::xdpcost`). Needs root; sends nothing.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tunterm_benches::xdpcost::{self, Options};

#[derive(Parser)]
#[command(
    about = "Per-frame cost of tunterm's XDP programs (BPF_PROG_TEST_RUN) against the raw redirect"
)]
struct Cli {
    /// Client frame length in bytes (untagged Ethernet, no FCS).
    #[arg(long, default_value_t = 64)]
    frame: usize,
    /// Tables as SESSIONSxMACS, e.g. 1x1,1000x10000.
    #[arg(long, value_delimiter = ',', default_value = "1x1,1000x10000")]
    tables: Vec<String>,
    /// Passes over each table; each figure is the median.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Orders to send each table's frames in: round-robin (labbench's),
    /// uniform (a random client per frame), zipf (Zipf s=1 over clients).
    #[arg(long, value_delimiter = ',', default_value = "round-robin")]
    order: Vec<String>,
    /// Where to write the table as JSON.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/xdpcost.json"))]
    json: PathBuf,
}

fn parse_table(s: &str) -> anyhow::Result<(usize, usize)> {
    let (a, b) = s
        .split_once('x')
        .with_context(|| format!("--tables {s}: SESSIONSxMACS"))?;
    Ok((
        a.parse()
            .with_context(|| format!("--tables {s}: sessions"))?,
        b.parse().with_context(|| format!("--tables {s}: MACs"))?,
    ))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = Options {
        frame_len: cli.frame,
        tables: cli
            .tables
            .iter()
            .map(|t| parse_table(t))
            .collect::<anyhow::Result<_>>()?,
        passes: cli.passes,
        orders: cli
            .order
            .iter()
            .map(|o| o.parse())
            .collect::<anyhow::Result<_>>()?,
    };
    let report = xdpcost::run(&opts)?;
    print!("{}", report.table());
    if let Some(dir) = cli.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", cli.json.display()))?;
    println!("\nJSON: {}", cli.json.display());
    Ok(())
}
