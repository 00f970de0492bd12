//! HTTPS and WSS on both ports (`TLS_CERT_FILE`, `TLS_KEY_FILE`), with rustls. The files are
//! looked at every few seconds and read again when they change (a renewed certificate applies
//! to new connections without a restart); a pair that does not load keeps the last good one,
//! logged once per change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at.
const POLL: Duration = Duration::from_secs(2);

/// The current certificate, and where it comes from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(TlsAcceptor, Option<(SystemTime, SystemTime)>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let acceptor = acceptor(cert, key)?;
        let tls = Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((acceptor, stamps(cert, key))),
        });
        let weak = Arc::downgrade(&tls);
        tokio::spawn(watch(weak));
        Ok(tls)
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Whether the pair loads, without serving it.
    pub fn check(cert: &Path, key: &Path) -> Result<(), String> {
        acceptor(cert, key).map(drop)
    }

    fn refresh(&self) {
        let now = stamps(&self.cert, &self.key);
        {
            let current = self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.1 == now {
                return;
            }
        }
        // Read and parse first: new connections never wait behind the file I/O.
        let loaded = acceptor(&self.cert, &self.key);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.1 = now;
        match loaded {
            Ok(a) => {
                current.0 = a;
                tracing::info!("TLS: {} read again", self.cert.display());
            }
            Err(e) => tracing::warn!("TLS: keeping the previous certificate: {e}"),
        }
    }
}

async fn watch(tls: Weak<Tls>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(tls) = tls.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || tls.refresh()).await;
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("TLS_CERT_FILE={}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS_CERT_FILE={}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS_CERT_FILE={}: no PEM certificate in it",
            cert.display()
        ));
    }
    // The key's bytes never go into a message, only the file's name.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "TLS_KEY_FILE={}: not a PEM private key ({e})",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "TLS_KEY_FILE={}: does not fit the certificate: {e}",
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
