//! What every request handler shares: the registry, the cache, access control, metrics, limits,
//! and who is asking.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use axum::http::HeaderMap;
use berth_core::config::Config;
use berth_core::net::{self, Cidr, ExternalUrl};

use crate::auth::{Authenticator, Caller, Identity};
use crate::gc::Collector;
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
    /// Where clients reach this registry, when configured.
    pub external_url: Option<Arc<ExternalUrl>>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// A request body silent for this long is cut off.
    pub body_idle_timeout: Duration,
    /// Open upload sessions per client.
    pub uploads: Arc<UploadsPerClient>,
    /// `/metrics` is served here (false when it has a listener of its own).
    pub serve_metrics: bool,
    /// Set once a shutdown has begun: `/readyz` fails and responses close their connections.
    pub stopping: Arc<AtomicBool>,
    /// Garbage collection, for the admin API (the server sets it).
    pub collector: Option<Arc<Collector>>,
    /// Storage usage, for the admin API (the server sets it).
    pub usage: Option<Arc<dyn crate::meta::usage::Usage>>,
    /// Webhook deliveries (the server sets it and runs it).
    pub notifier: Option<Arc<crate::notify::deliver::Notifier>>,
    /// Denied requests, noted for the audit log.
    pub audit: Arc<crate::notify::audit::AuditNotes>,
    /// Pulls, noted for the webhooks that ask for them.
    pub pulls: Arc<crate::notify::audit::AuditNotes>,
    /// The event log, for the admin API's audit listing (the server sets it).
    pub events: Option<Arc<dyn crate::meta::outbox::EventLog>>,
    /// The web UI is served (`ui.enabled`).
    pub ui: bool,
    /// How long a web UI login lasts.
    pub ui_session: Duration,
}

impl AppState {
    /// The state for `config`, without a cache or access control (the server adds those).
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, config: &Config) -> Result<AppState, String> {
        let external_url = match &config.external_url {
            Some(u) => Some(Arc::new(ExternalUrl::parse(u)?)),
            None => None,
        };
        let trusted_proxies =
            config.trusted_proxies.iter().map(|p| p.parse::<Cidr>()).collect::<Result<Vec<_>, _>>()?;
        Ok(AppState {
            registry,
            metrics,
            proxy: None,
            auth: None,
            tls: config.tls.is_some(),
            external_url,
            trusted_proxies: Arc::new(trusted_proxies),
            body_idle_timeout: config.limits.body_idle_timeout,
            uploads: Arc::new(UploadsPerClient::new(
                config.limits.max_uploads_per_client,
                config.limits.upload_ttl,
            )),
            serve_metrics: config.metrics.listen.is_none(),
            stopping: Arc::new(AtomicBool::new(false)),
            collector: None,
            usage: None,
            notifier: None,
            audit: Default::default(),
            pulls: Default::default(),
            events: None,
            ui: config.ui.enabled,
            ui_session: config.ui.session,
        })
    }
}

/// The address a connection came from (set by the server for each connection).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub IpAddr);

impl AppState {
    /// Whether a shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The peer, or the client a trusted proxy forwarded the request for.
    pub fn client(&self, req: &Parts) -> IpAddr {
        let peer = req.extensions.get::<PeerAddr>().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
        let forwarded = req.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        net::client_address(peer, forwarded, &self.trusted_proxies)
    }

    /// Who makes a change, for its events: the caller, the client's address, and the request's
    /// `X-Request-Id` (a proxy's or the client's, when it is a short printable token) or a new id.
    pub fn origin(&self, req: &Parts, caller: &Caller) -> crate::notify::Origin {
        let request_id = req
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        crate::notify::Origin {
            actor: caller.identity.name().to_owned(),
            address: self.client(req).to_string(),
            request_id,
        }
    }

    /// Notes a pull of `record` (as `reference` asked) where a webhook wants pulls of `repo`;
    /// written behind with the audit log's entries.
    pub fn pulled(
        &self,
        req: &Parts,
        caller: &Caller,
        repo: &berth_core::oci::RepoName,
        reference: &berth_core::oci::Reference,
        record: &crate::meta::ManifestRecord,
    ) {
        if !self.registry.wants_event(berth_core::config::notifications::EventKind::Pull, repo.as_str()) {
            return;
        }
        let tag = match reference {
            berth_core::oci::Reference::Tag(t) => Some(t.to_string()),
            berth_core::oci::Reference::Digest(_) => None,
        };
        let what = crate::notify::audit::Pulled {
            digest: record.digest.clone(),
            tag,
            media_type: record.media_type.clone(),
            size: record.size,
        };
        self.pulls.pulled(caller.identity.name(), &self.client(req).to_string(), repo.as_str(), what);
    }

    /// A forwarded header's first value, if the peer is a trusted proxy.
    pub fn forwarded<'a>(&self, req: &'a Parts, name: &str) -> Option<&'a str> {
        let peer = req.extensions.get::<PeerAddr>()?.0;
        if !net::is_trusted(peer, &self.trusted_proxies) {
            return None;
        }
        first_value(&req.headers, name)
    }
}

fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()?.split(',').next().map(str::trim).filter(|v| !v.is_empty())
}

/// Whose upload sessions count together: a user's or robot's wherever they connect from (behind
/// a load balancer every client has the same address); anonymous clients by the network they
/// hold (an IPv4 address, an IPv6 /64: [`berth_core::net::client_network`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Uploader {
    Named(String),
    Address(IpAddr),
}

impl Uploader {
    pub fn of(caller: &Caller, client: IpAddr) -> Uploader {
        match &caller.identity {
            Identity::Anonymous => Uploader::Address(berth_core::net::client_network(client)),
            named => Uploader::Named(named.name().to_owned()),
        }
    }
}

impl std::fmt::Display for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uploader::Named(n) => f.write_str(n),
            Uploader::Address(a @ IpAddr::V6(_)) => write!(f, "{a}/64"),
            Uploader::Address(a) => write!(f, "{a}"),
        }
    }
}

/// Upload sessions each client holds open, so one client cannot exhaust them. Sessions are
/// forgotten when finished or cancelled, or after the upload TTL (when they expire anyway).
pub struct UploadsPerClient {
    limit: usize,
    ttl: Duration,
    open: Mutex<HashMap<Uploader, Vec<(String, Instant)>>>,
}

impl UploadsPerClient {
    pub fn new(limit: usize, ttl: Duration) -> UploadsPerClient {
        UploadsPerClient { limit, ttl, open: Default::default() }
    }

    /// Whether `who` may open another session.
    pub(super) fn admits(&self, who: &Uploader) -> bool {
        let Ok(mut open) = self.open.lock() else { return true };
        let ttl = self.ttl;
        let sessions = open.entry(who.clone()).or_default();
        sessions.retain(|(_, at)| at.elapsed() < ttl);
        sessions.len() < self.limit
    }

    pub(super) fn opened(&self, who: Uploader, id: String) {
        if let Ok(mut open) = self.open.lock() {
            open.entry(who).or_default().push((id, Instant::now()));
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

impl AppState {
    /// Writes an admin action to the audit log at once (they are few): who, from where, what.
    pub async fn record_admin_action(&self, req: &Parts, caller: &Caller, what: String) {
        let Some(log) = &self.events else { return };
        let origin = self.origin(req, caller);
        let kind = berth_core::config::notifications::EventKind::Admin;
        let event = crate::meta::NewEvent { detail: Some(what), ..crate::notify::event(kind, "", &origin) };
        if let Err(e) = log.record_audit(vec![event]).await {
            tracing::warn!(error = %e, "an admin action was not written to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_uploaders_count_by_the_network_they_hold() {
        let of = |ip: &str| Uploader::of(&Caller::open(), ip.parse().unwrap());
        assert_eq!(of("2001:db8:5:5::1"), of("2001:db8:5:5:ffff::9"), "one /64, one uploader");
        assert_ne!(of("2001:db8:5:5::1"), of("2001:db8:5:6::1"));
        assert_ne!(of("192.0.2.1"), of("192.0.2.2"));
        assert_eq!(of("2001:db8:5:5::1").to_string(), "2001:db8:5:5::/64");
    }
}
