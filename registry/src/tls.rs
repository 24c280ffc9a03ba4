//! TLS with certificate hot reload: the certificate and key files are checked every
//! `reload_interval` and, when they changed, parse, and the key belongs to the certificate, new
//! handshakes use them. Anything else (a half-written Secret update, a certificate replaced before
//! its key) is logged and the old pair kept, so no reload can break every handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError(format!("unsupported private key: {e}")))?;
    let pair = CertifiedKey::new(certs, signing);
    match pair.keys_match() {
        // A key type that cannot show its public half is taken on trust, as rustls does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(e) => Err(TlsError(format!("the private key does not belong to the certificate: {e}"))),
    }
}

fn stamp(paths: &[&Path]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// Builds the acceptor and starts the task that watches the files.
pub fn acceptor(cert: PathBuf, key: PathBuf, every: Duration) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let first = load(&cert, &key)?;
    let resolver = Arc::new(Reloading { current: RwLock::new(Arc::new(first)) });
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(async move {
        let mut seen = stamp(&[&cert, &key]);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (c, k, before) = (cert.clone(), key.clone(), seen.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let now = stamp(&[&c, &k]);
                let fresh = (now != before).then(|| load(&c, &k));
                (now, fresh)
            })
            .await;
            let Ok((now, Some(fresh))) = checked else { continue };
            match fresh {
                Ok(fresh) => {
                    if let Ok(mut cur) = resolver.current.write() {
                        *cur = Arc::new(fresh);
                    }
                    seen = now;
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                }
                // Possibly caught mid-update: keep serving the old pair and look again next tick.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but is not usable; serving the old one")
                }
            }
        }
    });
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
