//! Optional HTTPS in the server itself, for deployments without a
//! TLS-terminating proxy (Cobalt delivers only to https URLs).
//!
//! The certificate and key are read from PEM files at start, and read again
//! on SIGHUP or when either file changes, so a renewed certificate is served
//! without a restart. A renewal that fails to load leaves the current
//! certificate in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Accepts TLS connections with the certificate currently loaded.
pub fn acceptor(cert: &Path, key: &Path, check_every: Duration) -> anyhow::Result<TlsAcceptor> {
    let resolver = Arc::new(ReloadingCert::load(cert, key)?);
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(watch(resolver, check_every));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        let this = Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(read(cert_path, key_path)?)),
            loaded: RwLock::new(modified(cert_path, key_path)),
        };
        Ok(this)
    }

    /// Loads the files again if `forced` or if they changed since.
    fn refresh(&self, forced: bool) {
        let stamp = modified(&self.cert_path, &self.key_path);
        if !forced && *self.loaded.read().expect("not poisoned") == stamp {
            return;
        }
        match read(&self.cert_path, &self.key_path) {
            Ok(key) => {
                *self.current.write().expect("not poisoned") = Arc::new(key);
                *self.loaded.write().expect("not poisoned") = stamp;
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "TLS certificate not reloaded; keeping the current one"
                );
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

fn read(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "reading the certificate chain {}: {}",
                cert_path.display(),
                pem_cause(&e)
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        cert_path.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        anyhow::anyhow!(
            "reading the private key {}: {}",
            key_path.display(),
            pem_cause(&e)
        )
    })?;
    let signing_key =
        ring::sign::any_supported_type(&key).context("the private key's type is not supported")?;
    Ok(CertifiedKey::new(certs, signing_key))
}

/// Why a PEM file could not be read, in words. Never the parser's own
/// message: for a malformed file it quotes a line, which in a key file is
/// the secret itself.
fn pem_cause(error: &pem::Error) -> String {
    match error {
        pem::Error::Io(error) => crate::os_error::describe(error),
        pem::Error::NoItemsFound => "it holds no PEM item of that kind".to_owned(),
        _ => "it is not valid PEM".to_owned(),
    }
}

fn modified(cert_path: &Path, key_path: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (time(cert_path), time(key_path))
}

/// Reloads on SIGHUP, and when the files change (checked every `every`).
async fn watch(resolver: Arc<ReloadingCert>, every: Duration) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = match hangup.as_mut() {
            Some(hangup) => tokio::select! {
                _ = hangup.recv() => true,
                () = tokio::time::sleep(every) => false,
            },
            None => {
                tokio::time::sleep(every).await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tokio::time::sleep(every).await;
            false
        };
        let resolver = resolver.clone();
        let _ = tokio::task::spawn_blocking(move || resolver.refresh(forced)).await;
    }
}
