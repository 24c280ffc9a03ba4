//! What the cache's concerns share: the upstream clients and routes, the freshness policy, the
//! fetches in flight, and the pulls not yet written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_client::Upstream;
use berth_core::config::ProxyConfig;
use berth_core::oci::{Digest, RepoName};
use futures_util::future::{BoxFuture, Shared};

use super::error::Result;
use super::flight::Flights;
use super::freshness::Freshness;
use super::pulls::PullLog;
use super::route::{Routes, Target};
use crate::meta::cache::CacheIndex;
use crate::meta::ManifestRecord;
use crate::service::Registry;
use crate::telemetry::ProxyMetrics;

/// A manifest fetch that concurrent requests for the same manifest wait on together.
pub(super) type SharedFetch = Shared<BoxFuture<'static, Result<ManifestRecord>>>;

pub struct Proxy {
    pub(super) registry: Arc<Registry>,
    /// The cache's own bookkeeping: tag checks and pull times.
    pub(super) cache: Arc<dyn CacheIndex>,
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) routes: Routes,
    pub(super) freshness: Freshness,
    pub(super) flights: Flights,
    /// This process's name in the fetch claims every replica shares (see `blobs`).
    pub(super) holder: String,
    pub(super) spool_dir: PathBuf,
    /// Storage takes finished spool files as they are: each fetched blob is written once.
    pub(super) adopt_spool: bool,
    pub(super) manifest_fetches: Mutex<HashMap<String, SharedFetch>>,
    pub(super) pulls: PullLog,
    pub(super) metrics: Arc<ProxyMetrics>,
}

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        registry: Arc<Registry>,
        cache: Arc<dyn CacheIndex>,
        spool_dir: PathBuf,
        metrics: Arc<ProxyMetrics>,
    ) -> std::result::Result<Arc<Proxy>, String> {
        std::fs::create_dir_all(&spool_dir)
            .map_err(|e| format!("spool directory {}: {e}", spool_dir.display()))?;
        // Spool files of an earlier run are of no use: their fetches are gone.
        if let Ok(entries) = std::fs::read_dir(&spool_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                Upstream::new(u, metrics.clone())
                    .map(Arc::new)
                    .map_err(|e| format!("upstream {}: {e}", u.name))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let adopt_spool = registry.adopts_from(&spool_dir);
        Ok(Arc::new(Proxy {
            adopt_spool,
            registry,
            cache,
            routes: Routes::new(&config.upstreams),
            freshness: Freshness::new(config),
            upstreams,
            flights: Flights::default(),
            holder: uuid::Uuid::new_v4().simple().to_string(),
            spool_dir,
            manifest_fetches: Mutex::new(HashMap::new()),
            pulls: PullLog::default(),
            metrics,
        }))
    }

    /// The upstream that serves this request, if any.
    pub fn resolve(&self, repo: &RepoName, ns: Option<&str>) -> Option<Target> {
        self.routes.resolve(repo, ns)
    }

    /// The configured upstreams' names.
    pub fn upstream_names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.iter().map(|u| u.name.as_str())
    }

    pub fn upstream_name(&self, t: &Target) -> &str {
        &self.upstreams[t.upstream].name
    }
}

pub(super) fn digest_header(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers().get("docker-content-digest")?.to_str().ok()?.trim().parse().ok()
}
