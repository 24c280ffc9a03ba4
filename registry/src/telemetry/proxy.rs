//! The pull-through cache's metrics (`berth_proxy_*`), per upstream; the upstream client reports
//! its errors and the upstream's rate limit into them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamKindLabels {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    class: &'static str,
}

/// What the pull-through cache did, per upstream.
#[derive(Default)]
pub struct ProxyMetrics {
    hits: Family<UpstreamKindLabels, Counter>,
    misses: Family<UpstreamKindLabels, Counter>,
    coalesced: Family<UpstreamLabels, Counter>,
    upstream_bytes: Family<UpstreamLabels, Counter>,
    cache_bytes: Family<UpstreamLabels, Counter>,
    revalidations: Family<UpstreamLabels, Counter>,
    stale_serves: Family<UpstreamLabels, Counter>,
    errors: Family<UpstreamErrorLabels, Counter>,
    ratelimit_remaining: Family<UpstreamLabels, Gauge>,
    evictions: Family<UpstreamLabels, Counter>,
}

/// One upstream's figures since this process started, for the UI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamFigures {
    pub hits: u64,
    pub misses: u64,
    /// Content bytes fetched from the upstream.
    pub fetched_bytes: u64,
    /// Blob bytes served from the cache: what the upstream was spared.
    pub served_bytes: u64,
    /// The upstream's last reported rate limit remaining, if it reports one.
    pub ratelimit_remaining: Option<i64>,
}

/// A kind of cached content: `manifest` or `blob`.
pub type ContentLabel = &'static str;

impl ProxyMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("proxy");
        r.register("hits", "Pulls served from the cache", self.hits.clone());
        r.register("misses", "Pulls that needed the upstream", self.misses.clone());
        r.register(
            "coalesced_waits",
            "Pulls that joined a fetch already running instead of starting another",
            self.coalesced.clone(),
        );
        r.register(
            "upstream_received_bytes",
            "Content bytes fetched from the upstream",
            self.upstream_bytes.clone(),
        );
        r.register("cache_served_bytes", "Blob bytes served from the cache", self.cache_bytes.clone());
        r.register("revalidations", "Tag checks against the upstream (HEAD)", self.revalidations.clone());
        r.register(
            "stale_serves",
            "Cached tags served because the upstream failed",
            self.stale_serves.clone(),
        );
        r.register("upstream_errors", "Failed upstream requests by class", self.errors.clone());
        r.register(
            "upstream_ratelimit_remaining",
            "The upstream's last reported ratelimit-remaining",
            self.ratelimit_remaining.clone(),
        );
        r.register("evictions", "Cached manifests and blobs evicted", self.evictions.clone());
    }

    /// What the cache did for `upstream`; nothing is created for an upstream not seen yet.
    pub fn figures(&self, upstream: &str) -> UpstreamFigures {
        let up = Self::up(upstream);
        let by_kind = |f: &Family<UpstreamKindLabels, Counter>| -> u64 {
            ["manifest", "blob"]
                .into_iter()
                .map(|kind| {
                    f.get(&UpstreamKindLabels { upstream: upstream.to_owned(), kind }).map_or(0, |c| c.get())
                })
                .sum()
        };
        let bytes = |f: &Family<UpstreamLabels, Counter>| f.get(&up).map_or(0, |c| c.get());
        UpstreamFigures {
            hits: by_kind(&self.hits),
            misses: by_kind(&self.misses),
            fetched_bytes: bytes(&self.upstream_bytes),
            served_bytes: bytes(&self.cache_bytes),
            ratelimit_remaining: self.ratelimit_remaining.get(&up).map(|g| g.get()),
        }
    }

    fn up(upstream: &str) -> UpstreamLabels {
        UpstreamLabels { upstream: upstream.to_owned() }
    }

    pub fn hit(&self, upstream: &str, kind: ContentLabel) {
        self.hits.get_or_create(&UpstreamKindLabels { upstream: upstream.to_owned(), kind }).inc();
    }

    pub fn miss(&self, upstream: &str, kind: ContentLabel) {
        self.misses.get_or_create(&UpstreamKindLabels { upstream: upstream.to_owned(), kind }).inc();
    }

    pub fn coalesced(&self, upstream: &str) {
        self.coalesced.get_or_create(&Self::up(upstream)).inc();
    }

    pub fn upstream_bytes(&self, upstream: &str, n: u64) {
        self.upstream_bytes.get_or_create(&Self::up(upstream)).inc_by(n);
    }

    pub fn cache_bytes(&self, upstream: &str, n: u64) {
        self.cache_bytes.get_or_create(&Self::up(upstream)).inc_by(n);
    }

    pub fn revalidated(&self, upstream: &str) {
        self.revalidations.get_or_create(&Self::up(upstream)).inc();
    }

    pub fn stale_serve(&self, upstream: &str) {
        self.stale_serves.get_or_create(&Self::up(upstream)).inc();
    }

    pub fn error(&self, upstream: &str, class: &'static str) {
        self.errors.get_or_create(&UpstreamErrorLabels { upstream: upstream.to_owned(), class }).inc();
    }

    pub fn ratelimit_remaining(&self, upstream: &str, n: i64) {
        self.ratelimit_remaining.get_or_create(&Self::up(upstream)).set(n);
    }

    pub fn evicted(&self, upstream: &str, n: u64) {
        self.evictions.get_or_create(&Self::up(upstream)).inc_by(n);
    }
}

/// What the upstream client reports lands in the same metrics.
impl berth_client::Observer for ProxyMetrics {
    fn error(&self, upstream: &str, class: &'static str) {
        ProxyMetrics::error(self, upstream, class);
    }

    fn ratelimit_remaining(&self, upstream: &str, remaining: i64) {
        ProxyMetrics::ratelimit_remaining(self, upstream, remaining);
    }
}
