//! What every request handler shares: the registry, the cache, access control, metrics, limits.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::proxy::Proxy;
use crate::service::Registry;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The pull-through cache, when upstreams are configured.
    pub proxy: Option<Arc<Proxy>>,
    /// Access control, when `auth` is configured.
    pub auth: Option<Arc<Authenticator>>,
    /// Whether clients reach this server over TLS (for the token realm).
    pub tls: bool,
    /// A request body silent for this long is cut off.
    pub body_idle_timeout: std::time::Duration,
    /// Open upload sessions per client address.
    pub uploads: Arc<UploadsPerClient>,
}

/// The address a request came from (set by the server for each connection).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Upload sessions each client address holds open, so one client cannot exhaust them. Sessions
/// are forgotten when finished or cancelled, or after the upload TTL (when they expire anyway).
pub struct UploadsPerClient {
    limit: usize,
    ttl: std::time::Duration,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Vec<(String, std::time::Instant)>>>,
}

impl UploadsPerClient {
    pub fn new(limit: usize, ttl: std::time::Duration) -> UploadsPerClient {
        UploadsPerClient { limit, ttl, open: Default::default() }
    }

    /// Whether `client` may open another session.
    pub(super) fn admits(&self, client: std::net::IpAddr) -> bool {
        let Ok(mut open) = self.open.lock() else { return true };
        let ttl = self.ttl;
        let sessions = open.entry(client).or_default();
        sessions.retain(|(_, at)| at.elapsed() < ttl);
        sessions.len() < self.limit
    }

    pub(super) fn opened(&self, client: std::net::IpAddr, id: String) {
        if let Ok(mut open) = self.open.lock() {
            open.entry(client).or_default().push((id, std::time::Instant::now()));
        }
    }

    pub(super) fn closed(&self, id: &str) {
        if let Ok(mut open) = self.open.lock() {
            for sessions in open.values_mut() {
                sessions.retain(|(s, _)| s != id);
            }
            open.retain(|_, s| !s.is_empty());
        }
    }
}
