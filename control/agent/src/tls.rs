//! The TLS client configuration: the cloud's CA (`--ca FILE`), else the
//! bundled web PKI roots. One crypto provider: ring.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ClientConfig;

/// A client configuration trusting `ca` (PEM), or the web PKI roots.
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                roots
                    .add(cert.with_context(|| format!("--ca {}: bad PEM", path.display()))?)
                    .with_context(|| format!("--ca {}", path.display()))?;
                n += 1;
            }
            anyhow::ensure!(n > 0, "--ca {}: no certificate in it", path.display());
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// `https://host:port` → (host, port).
pub fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("{url}: the cloud URL must be https://HOST[:PORT]"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => Ok((
            h.trim_matches(['[', ']']).to_string(),
            p.parse().with_context(|| format!("{url}: bad port"))?,
        )),
        _ => Ok((authority.trim_matches(['[', ']']).to_string(), 443)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_cas() {
        assert_eq!(
            host_port("https://127.0.0.1:8443").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            host_port("https://cloud.example/").unwrap(),
            ("cloud.example".into(), 443)
        );
        assert!(host_port("http://x").is_err());
        assert!(client_config(None).is_ok());
        let e = client_config(Some(Path::new("/nonexistent.pem"))).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent.pem"));
        let dir = std::env::temp_dir().join(format!("tunterm-agent-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "not a certificate").unwrap();
        let e = client_config(Some(&dir.join("ca.pem"))).unwrap_err();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
