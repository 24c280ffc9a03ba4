//! Building the registry from its config and serving it: accept loop (plain or TLS, HTTP/1.1 and
//! HTTP/2) within the connection bounds of [`connection`], an optional listener of its own for
//! `/metrics`, graceful shutdown (readiness off and connections still accepted for the shutdown
//! delay, then requests in flight may finish within the grace period), and
//! the background work: the purge of expired upload sessions and the re-reading of credential
//! files (so that requests only ever read memory).

mod activity;
mod build;
mod connection;
mod unread;
mod watch;

pub use build::{build_state, contract_schema, unpack_small_objects, ServeError};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::gc::review::Reviews;
use crate::service::Registry;
use crate::tls;
use berth_core::config::{Config, StorageConfig};

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
    let metrics_listener = match &config.metrics.listen {
        Some(addr) => {
            let addr = berth_core::config::parse_listen(addr).map_err(ServeError::Config)?;
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Config(format!("metrics.listen {addr}: {e}")))?;
            info!(address = %addr, "metrics on their own listener");
            Some(l)
        }
        None => None,
    };
    let mut background = vec![
        tokio::spawn(purge_uploads(state.registry.clone())),
        tokio::spawn(sweep_multiparts(state.registry.clone())),
        tokio::spawn(purge_released(state.registry.clone())),
        tokio::spawn(write_pull_times(state.registry.clone())),
    ];
    if let (StorageConfig::Filesystem { .. }, Some(path)) = (&config.storage, config.storage_path()) {
        background.push(tokio::spawn(watch::volume(path, state.metrics.volume.clone())));
    }
    let stored = state.metrics.stored.clone();
    background.extend(state.usage.clone().map(|u| tokio::spawn(watch::stored(u, stored))));
    background.extend(state.proxy.clone().map(|p| tokio::spawn(p.maintain())));
    background.extend(state.notifier.clone().map(|n| tokio::spawn(n.run())));
    let r = &config.retention;
    let reviews = Reviews::new(r.review_every, r.review_grace, r.review_keep_untagged);
    background.extend(state.collector.clone().map(|c| tokio::spawn(c.review(reviews))));
    background.extend(state.auth.clone().map(|a| tokio::spawn(refresh_credentials(a))));
    let connections =
        connection::Connections::new(config.limits.max_connections, state.metrics.connections.clone());
    let metrics = metrics_listener.map(|listener| (listener, api::metrics_router(state.clone())));
    let stopping = state.stopping.clone();
    let registry = state.registry.clone();
    let notifier = state.notifier.clone();
    let ui = if state.ui { crate::ui::router() } else { axum::Router::new() };
    // Connections watch this; at shutdown each is asked to finish, and all are gone once every
    // receiver is.
    let (stop_connections, stopping_connections) = tokio::sync::watch::channel(false);
    let limits = &config.limits;
    let serving = connection::Serving {
        tls: tls.clone(),
        builder: http_builder(config),
        app: api::router(state, ui),
        timeouts: connection::Timeouts {
            handshake: limits.tls_handshake_timeout,
            body_idle: limits.body_idle_timeout,
            quiet: limits.idle_timeout,
        },
        stopping: stopping_connections,
        metrics: connections.metrics.clone(),
    };
    if let Some((listener, app)) = metrics {
        // The same bounds as the registry's own connections, without TLS, and not counted in its
        // connection metrics.
        let metrics_serving =
            connection::Serving { tls: None, app, metrics: Default::default(), ..serving.clone() };
        background.push(tokio::spawn(serve_metrics(listener, metrics_serving)));
    }
    tokio::pin!(shutdown);
    // After the signal: readiness off and connections still accepted until `stop_accepting`.
    let mut signalled = false;
    let stop_accepting = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(stop_accepting);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown, if !signalled => {
                signalled = true;
                stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                let delay = config.limits.shutdown_delay;
                if delay.is_zero() {
                    break;
                }
                info!(?delay, "shutdown signal: not ready, still accepting while load balancers notice");
                stop_accepting.as_mut().reset(tokio::time::Instant::now() + delay);
                continue;
            }
            _ = &mut stop_accepting, if signalled => break,
            accepted = accept(&listener) => match accepted {
                Some(c) => c,
                None => continue,
            },
        };
        let Some((stream, slot)) = connections.admit(stream, tls.is_none()) else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serving.clone().serve(stream, slot, peer));
    }
    drop(listener);
    for task in background {
        task.abort();
    }
    info!("shutting down: waiting for requests in flight");
    drop(serving);
    stop_connections.send_replace(true);
    tokio::select! {
        () = stop_connections.closed() => info!("all connections closed"),
        _ = tokio::time::sleep(config.limits.shutdown_grace) => {
            warn!(grace = ?config.limits.shutdown_grace, "grace period over, closing remaining connections");
        }
    }
    if let Err(e) = registry.flush_behind().await {
        warn!(error = %e, "could not write the last pull times and changes");
    }
    if let Some(n) = notifier {
        n.write_audit().await;
    }
    registry.meta().leave().await;
    Ok(())
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client gets as long to send its request headers as a connection may go without a
    // request (slow-loris protection; see `connection::StallGuard`), and the head may be only so
    // large (431 above); bodies are streamed and bounded by their own limits.
    let max_head = usize::try_from(config.limits.max_header_bytes).unwrap_or(usize::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.idle_timeout)
        .max_buf_size(max_head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
    builder
}

/// A connection from `listener`; `None` after a failure (out of file descriptors and the like),
/// once a short pause has passed, so the loop backs off instead of spinning.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Connections the metrics listener serves at once: scrapers and probes need a handful; a client
/// that opens more must not take the file descriptors the registry serves with.
const METRICS_CONNECTIONS: usize = 64;

/// `/metrics` on a listener of its own: plain HTTP, no access control (keep it off the network
/// clients reach, or scrape it from inside the cluster), within the registry's connection bounds.
async fn serve_metrics(listener: TcpListener, serving: connection::Serving) {
    let connections = connection::Connections::new(METRICS_CONNECTIONS, Default::default());
    loop {
        let Some((stream, peer)) = accept(&listener).await else { continue };
        let Some((stream, slot)) = connections.admit(stream, true) else { continue };
        tokio::spawn(serving.clone().serve(stream, slot, peer));
    }
}

/// Re-reads changed credential files (htpasswd, robot secrets, a configured token key), off the
/// async threads, so a request never touches the disk for them.
async fn refresh_credentials(auth: Arc<Authenticator>) {
    let mut tick = tokio::time::interval(crate::auth::htpasswd::CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let a = auth.clone();
        let _ = tokio::task::spawn_blocking(move || a.refresh_files()).await;
    }
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

/// Aborts the multipart uploads that writers on any replica left behind when they crashed.
async fn sweep_multiparts(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match registry.sweep_multiparts().await {
            None => return,
            Some(Ok(0)) => {}
            Some(Ok(n)) => info!(uploads = n, "aborted multipart uploads left by writers that are gone"),
            Some(Err(e)) => warn!(error = %e, "sweeping abandoned multipart uploads failed"),
        }
    }
}

/// Deletes the bytes of released blobs once their readers' grace is over (on any replica).
async fn purge_released(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match registry.purge_released().await {
            Ok(0) => {}
            Ok(n) => info!(blobs = n, "deleted the bytes of released blobs"),
            Err(e) => warn!(error = %e, "deleting released blobs failed; retrying later"),
        }
    }
}

/// Writes the pull times noted since the last write (retention reads them).
async fn write_pull_times(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = registry.flush_behind().await {
            warn!(error = %e, "writing pull times and changes failed; retrying later");
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
