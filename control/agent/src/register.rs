//! Registration: the claim code (the mxedge's `magic`) exchanged once for
//! this edge's ids and token. One HTTP/1.1 request over TLS.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::State;

/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// POST the claim code; the state to keep, or why not (a 403 says the
/// claim code was not recognised).
pub async fn register(
    cloud: &str,
    claim_code: &str,
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<&crate::net::Proxy>,
) -> anyhow::Result<State> {
    let (host, port) = crate::tls::host_port(cloud)?;
    let tcp = crate::net::dial(&host, port, proxy)
        .await
        .with_context(|| format!("registering with {cloud}"))?;
    let name = ServerName::try_from(host.clone()).context("cloud host name")?;
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {cloud} (is --ca the cloud's CA?)"))?;
    let body = serde_json::json!({ "claim_code": claim_code }).to_string();
    let req = format!(
        "POST /api/v1/edge/register HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    // A server may close without TLS close_notify: keep what came.
    let _ = (&mut s).take(MAX_ANSWER).read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{cloud}: no HTTP answer to the registration"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{cloud}: bad HTTP status line"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let doc: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    match status {
        200 => {
            let field = |k: &str| {
                doc[k]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("registration answer without {k}"))
            };
            Ok(State {
                cloud: cloud.to_string(),
                mxedge_id: field("mxedge_id")?,
                org_id: field("org_id")?,
                token: field("token")?,
            })
        }
        403 => anyhow::bail!(
            "registration refused by {cloud}: {} (check the claim code: the mxedge's magic)",
            doc["detail"]
                .as_str()
                .unwrap_or("claim code not recognised")
        ),
        s => anyhow::bail!("registration with {cloud}: HTTP {s}: {}", body.trim()),
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            super::dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"),
            "{\"a\":1}"
        );
    }
}
