//! `tunterm-cloud`: runs the emulator. With no arguments: data in
//! `$XDG_DATA_HOME/tunterm-cloud` (else `./tunterm-cloud-data`), listening on
//! 127.0.0.1:8443.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "A Mist-shaped cloud emulator for tunterm")]
struct Args {
    /// Where the CA, certificates, database and operator token live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Extra DNS names or IP addresses for the server certificate (only used
    /// when the certificate is first created).
    #[arg(long = "san")]
    san: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let data_dir = args.data_dir.unwrap_or_else(|| {
        std::env::var_os("XDG_DATA_HOME")
            .map(|d| PathBuf::from(d).join("tunterm-cloud"))
            .unwrap_or_else(|| PathBuf::from("tunterm-cloud-data"))
    });
    let (cloud, tls, started) = tunterm_cloud::open(&data_dir, &args.san)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // For scripts and lab tests: what the lines below say, as JSON.
    let info = serde_json::json!({
        "url": format!("https://{addr}"),
        "ca": started.ca_path,
        "org_id": started.org_id,
        "mxedge_id": started.mxedge_id,
        "claim_code": started.claim_code,
        "operator_token_file": data_dir.join("operator-token"),
    });
    tunterm_cloud::tls::write_private(&data_dir.join("started.json"), info.to_string().as_bytes())?;
    println!("tunterm-cloud listening on https://{addr}");
    println!("  CA certificate:  {}", started.ca_path.display());
    println!("  operator token:  {}", started.operator_token);
    println!("  org_id:          {}", started.org_id);
    println!("  mxedge_id:       {}", started.mxedge_id);
    println!("  claim code:      {}", started.claim_code);
    println!("Point an agent at it: cloud URL https://{addr}, the CA above, the claim code above");
    println!("  (registration: POST https://{addr}/api/v1/edge/register {{\"claim_code\": ..}})");
    println!("Operator REST, e.g.:");
    println!(
        "  curl --cacert {} -H 'Authorization: Token {}' https://{addr}/api/v1/orgs/{}/stats/mxedges",
        started.ca_path.display(),
        started.operator_token,
        started.org_id
    );
    tokio::select! {
        _ = tunterm_cloud::serve(cloud, tls, listener) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
