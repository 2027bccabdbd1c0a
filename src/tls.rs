//! https and wss: the TLS configuration of the web, REST and WebSocket ports. The one module
//! that calls rustls and rcgen.
//!
//! A browser offers the camera only to a secure page (https, or http on localhost), so a user who
//! opens the demo from another machine needs https: WCS serves its pages on 8888 and its
//! WebSocket as wss on 8443 for that reason, and so do we. The certificate is the operator's
//! (`--tls-cert`/`--tls-key`, PEM) or, by default, a self-signed one generated at first start and
//! kept in the data folder (`<data>/tls/cert.pem`, `key.pem`), reused after.
//!
//! The operator's files are watched: when either changes (an ACME client renewed them), the new
//! pair is loaded for the next handshakes; a pair that does not load is logged and the old one
//! kept. The check runs on a thread of its own every [`RELOAD_CHECK`], never on an arbiter.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tracing::{info, warn};

/// How often the operator's certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, String),
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("unusable private key in {0}: {1}")]
    Key(PathBuf, String),
    #[error("cannot write the generated certificate to {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Where the certificate in use comes from.
#[derive(Debug, Clone)]
pub struct CertSource {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True for the generated self-signed certificate.
    pub self_signed: bool,
}

/// The certificate for every handshake, swapped when the files change.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// The TLS server configuration (HTTP/1.1 only: actix serves WebSocket upgrades over it).
pub struct Tls {
    pub config: ServerConfig,
    pub source: CertSource,
}

/// Load the operator's pair, or generate (first start) or reuse the self-signed one in
/// `data_dir`. `names`: the addresses the self-signed certificate is made out to.
pub fn setup(files: Option<(PathBuf, PathBuf)>, data_dir: &Path, names: &[IpAddr]) -> Result<Tls, TlsError> {
    let source = match files {
        Some((cert, key)) => CertSource { cert, key, self_signed: false },
        None => self_signed(data_dir, names)?,
    };
    let key = load(&source.cert, &source.key)?;
    let resolver = Arc::new(Resolver { current: RwLock::new(Arc::new(key)) });
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !source.self_signed {
        watch(source.clone(), resolver);
    }
    Ok(Tls { config, source })
}

/// A certificate and key from PEM files.
fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Read(cert.into(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read(cert.into(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(key.into(), e.to_string()))?;
    let signing =
        aws_lc_rs::sign::any_supported_type(&der).map_err(|e| TlsError::Key(key.into(), e.to_string()))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The self-signed pair in `<data_dir>/tls/`, generated when missing.
fn self_signed(data_dir: &Path, names: &[IpAddr]) -> Result<CertSource, TlsError> {
    let dir = data_dir.join("tls");
    let source = CertSource { cert: dir.join("cert.pem"), key: dir.join("key.pem"), self_signed: true };
    if source.cert.exists() && source.key.exists() {
        return Ok(source);
    }
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    sans.extend(names.iter().map(|ip| ip.to_string()));
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && host.is_ascii() {
            sans.push(host.to_string());
        }
    }
    sans.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| TlsError::Generate(e.to_string()))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "sluice self-signed");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let cert = params.self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::create_dir_all(&dir).map_err(|e| TlsError::Write(dir.clone(), e))?;
    write_private(&source.key, key.serialize_pem().as_bytes())?;
    std::fs::write(&source.cert, cert.pem()).map_err(|e| TlsError::Write(source.cert.clone(), e))?;
    info!(cert = %source.cert.display(), "generated a self-signed TLS certificate (browsers will warn once)");
    Ok(source)
}

/// Write a file only its owner can read.
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TlsError::Write(path.into(), e))?;
    f.write_all(data).map_err(|e| TlsError::Write(path.into(), e))
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reload the pair into `resolver` whenever either file's modification time changes.
fn watch(source: CertSource, resolver: Arc<Resolver>) {
    let spawned = std::thread::Builder::new().name("tls-reload".into()).spawn(move || {
        let stamp = || (modified(&source.cert), modified(&source.key));
        let mut seen = stamp();
        loop {
            std::thread::sleep(RELOAD_CHECK);
            let now = stamp();
            if now == seen {
                continue;
            }
            seen = now;
            match load(&source.cert, &source.key) {
                Ok(key) => {
                    if let Ok(mut current) = resolver.current.write() {
                        *current = Arc::new(key);
                        info!(cert = %source.cert.display(), "TLS certificate reloaded");
                    }
                }
                // Half-written files during a renewal: the next change completes them.
                Err(e) => warn!(error = %e, "TLS certificate changed but does not load; keeping the old one"),
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the TLS certificate watcher; renewed certificates need a restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let dir = temp("gen");
        let ip: IpAddr = "198.18.0.100".parse().unwrap();
        let a = setup(None, &dir, &[ip]).unwrap();
        assert!(a.source.self_signed);
        let pem = std::fs::read(&a.source.cert).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&a.source.key).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "key readable by others");
        let b = setup(None, &dir, &[ip]).unwrap();
        assert_eq!(std::fs::read(&b.source.cert).unwrap(), pem, "regenerated instead of reused");
        // The operator's files: the generated pair loads as one; garbage is a clear error.
        let c = setup(Some((a.source.cert.clone(), a.source.key.clone())), &dir, &[]).unwrap();
        assert!(!c.source.self_signed);
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = setup(Some((bad.clone(), a.source.key.clone())), &dir, &[]).err().unwrap();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = setup(Some((a.source.cert.clone(), bad)), &dir, &[]).err().unwrap();
        assert!(e.to_string().contains("private key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
