//! Building the registry from its config and serving it: accept loop (plain or TLS, HTTP/1.1 and
//! HTTP/2), graceful shutdown that lets requests in flight finish within the grace period, and the
//! background purge of expired upload sessions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::MetaError;
use crate::proxy::Proxy;
use crate::service::{Limits, Registry};
use crate::storage::fs::FsStorage;
use crate::storage::memory::MemoryStorage;
use crate::storage::Storage;
use crate::telemetry::Metrics;
use crate::tls::{self, TlsError};
use berth_core::config::{Config, StorageConfig};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage at {path}: {source}")]
    Storage { path: String, source: std::io::Error },
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("auth: {0}")]
    Auth(String),
}

/// Opens storage and metadata as configured and wires up the application state.
pub fn build_state(config: &Config) -> Result<AppState, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let storage: Arc<dyn Storage> = match (&config.storage, config.storage_path()) {
        (StorageConfig::Filesystem { .. }, Some(path)) => {
            let fs = FsStorage::open(&path)
                .map_err(|source| ServeError::Storage { path: path.display().to_string(), source })?;
            Arc::new(fs)
        }
        _ => Arc::new(MemoryStorage::new()),
    };
    let meta = Arc::new(SqliteMeta::open(config.sqlite_path())?);
    let limits = Limits {
        max_manifest_bytes: usize::try_from(config.limits.max_manifest_bytes).unwrap_or(usize::MAX),
        upload_ttl: config.limits.upload_ttl,
        ..Limits::default()
    };
    let registry = Arc::new(Registry::new(metrics.instrument(storage), meta.clone(), limits));
    let proxy = if config.proxy.is_empty() {
        None
    } else {
        let spool = config.data_dir.join("proxy-spool");
        Some(
            Proxy::new(&config.proxy, registry.clone(), meta, spool, metrics.proxy.clone())
                .map_err(ServeError::Proxy)?,
        )
    };
    let auth = match &config.auth {
        Some(a) => Some(Arc::new(Authenticator::new(a, &config.data_dir).map_err(ServeError::Auth)?)),
        None => None,
    };
    Ok(AppState {
        registry,
        metrics,
        proxy,
        auth,
        tls: config.tls.is_some(),
        body_idle_timeout: config.limits.body_idle_timeout,
        uploads: Arc::new(api::UploadsPerClient::new(
            config.limits.max_uploads_per_client,
            config.limits.upload_ttl,
        )),
    })
}

/// Serves until `shutdown` resolves, then drains for at most the configured grace period.
pub async fn serve(
    config: &Config,
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let tls = match &config.tls {
        Some(t) => Some(tls::acceptor(t.cert.clone(), t.key.clone(), t.reload_interval)?),
        None => None,
    };
    let purge = tokio::spawn(purge_uploads(state.registry.clone()));
    let maintain = state.proxy.clone().map(|p| tokio::spawn(p.maintain()));
    let app = api::router(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client gets this long to send its request headers (slow-loris protection); bodies are
    // streamed and bounded by their own limits.
    // and the head may be only so large (431 above).
    let max_head = usize::try_from(config.limits.max_header_bytes).unwrap_or(usize::MAX);
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(max_head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let client = api::ClientAddr(peer.ip());
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(client);
                req
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        watcher.watch(builder.serve_connection(TokioIo::new(s), service).into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, peer = %peer, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    purge.abort();
    if let Some(m) = maintain {
        m.abort();
    }
    info!("shutting down: waiting for requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => info!("all connections closed"),
        _ = tokio::time::sleep(config.limits.shutdown_grace) => {
            warn!(grace = ?config.limits.shutdown_grace, "grace period over, closing remaining connections");
        }
    }
    Ok(())
}

async fn purge_uploads(registry: Arc<Registry>) {
    let every = (registry.limits().upload_ttl / 4).min(Duration::from_secs(600));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match registry.purge_stale_uploads().await {
            Ok(0) => {}
            Ok(n) => info!(sessions = n, "removed expired upload sessions"),
            Err(e) => warn!(error = %e, "purging expired upload sessions failed"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
