//! The emulator's own CA and server certificate, generated with rcgen at first
//! start into the data directory and loaded from there afterwards.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the PEM files live in the data directory.
pub struct TlsFiles {
    /// The CA certificate an agent is given with `--ca`.
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TlsFiles {
    /// The files' paths under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    /// Creates the CA and a server certificate for `localhost`, 127.0.0.1,
    /// ::1 and `extra_names` when they are not there yet.
    pub fn ensure(&self, extra_names: &[String]) -> Result<()> {
        let all = [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
        ];
        if all.iter().all(|p| p.exists()) {
            return Ok(());
        }
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        // A name of its own: a client holding another emulator's CA then
        // fails with "unknown issuer", not with a bad signature.
        let tag = crate::store::hex(&rand::random::<[u8; 4]>());
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("tunterm-cloud emulator CA {tag}"),
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;

        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        names.extend(extra_names.iter().cloned());
        let server_key = KeyPair::generate().context("generating the server key")?;
        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "tunterm-cloud");
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

        write_private(&self.ca_key, ca_key.serialize_pem().as_bytes())?;
        write_private(&self.server_key, server_key.serialize_pem().as_bytes())?;
        fs::write(&self.server_cert, server_cert.pem())?;
        fs::write(&self.ca_cert, ca_cert.pem())?;
        Ok(())
    }

    /// The rustls server configuration (ring provider) from the files.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut fs::read(&self.server_cert)?.as_slice())
                .collect::<Result<_, _>>()
                .context("reading server.pem")?;
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut fs::read(&self.server_key)?.as_slice())
                .context("reading server.key")?
                .context("server.key holds no key")?;
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Writes a file only its owner can read (0600), replacing it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
