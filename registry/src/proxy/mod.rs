//! The pull-through cache: a read-through layer over [`crate::service`] for repositories an
//! upstream serves.
//!
//! ```text
//! manifest by digest ─► cached? serve : fetch once (single flight), verify, cache, serve
//! manifest by tag    ─► checked within revalidate_after? serve
//!                       : HEAD upstream ─► same digest: serve │ new digest: GET, cache, serve
//!                                       └► failed: serve the cached tag if within stale_if_error
//!                       404 upstream ─► remembered for negative_ttl
//! blob               ─► cached? serve : join or start the one fetch (see [`flight`])
//! ```
//! Content addressed by digest never changes, so it is never revalidated. Proxied repositories
//! are read-only; every other repository is an ordinary one (the hybrid registry).

pub mod challenge;
pub mod client;
pub mod flight;
pub mod route;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::StreamExt;
use reqwest::Method;
use tracing::{debug, info, warn};

use crate::config::ProxyConfig;
use crate::meta::{self, CachedPull, ContentKind, ManifestRecord, MetaError};
use crate::oci::range::{span, ByteRange};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::service::{BlobRead, Registry, ServiceError};
use crate::telemetry::ProxyMetrics;
use client::{Fetched, Upstream, UpstreamError};
use flight::{Answer, FlightFailure, Flights, Joined};
pub use route::Target;
use route::{Glob, Routes};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("{0} unknown to the upstream")]
    NotFound(ContentKind),
    #[error(transparent)]
    Upstream(Arc<UpstreamError>),
    #[error(transparent)]
    Local(Arc<ServiceError>),
    /// A blob fetch failed after it started.
    #[error("{message}")]
    Fetch { class: &'static str, message: String },
}

impl From<ServiceError> for ProxyError {
    fn from(e: ServiceError) -> Self {
        ProxyError::Local(Arc::new(e))
    }
}

impl From<MetaError> for ProxyError {
    fn from(e: MetaError) -> Self {
        ProxyError::Local(Arc::new(ServiceError::from(e)))
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        ProxyError::Upstream(Arc::new(e))
    }
}

impl std::fmt::Display for ContentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Result<T> = std::result::Result<T, ProxyError>;

type SharedFetch = Shared<BoxFuture<'static, Result<ManifestRecord>>>;

/// Most remembered upstream 404s; older ones are dropped first when full.
const NEGATIVE_CAPACITY: usize = 10_000;
/// How often pull times are written and the size limits enforced.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);
const EVICT_BATCH: usize = 256;

pub struct Proxy {
    registry: Arc<Registry>,
    upstreams: Vec<Arc<Upstream>>,
    routes: Routes,
    revalidate: Vec<Vec<(Glob, Duration)>>,
    flights: Flights,
    spool_dir: PathBuf,
    /// Storage takes finished spool files as they are: each fetched blob is written once.
    adopt_spool: bool,
    manifest_fetches: Mutex<HashMap<String, SharedFetch>>,
    negative: Mutex<HashMap<String, Instant>>,
    pulls: Mutex<HashMap<(RepoName, Digest), CachedPull>>,
    metrics: Arc<ProxyMetrics>,
}

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        registry: Arc<Registry>,
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
        let revalidate = config
            .upstreams
            .iter()
            .map(|u| u.revalidate.iter().map(|r| (Glob::new(&r.repositories), r.after)).collect())
            .collect();
        let adopt_spool = registry.adopts_from(&spool_dir);
        Ok(Arc::new(Proxy {
            adopt_spool,
            registry,
            routes: Routes::new(&config.upstreams),
            upstreams,
            revalidate,
            flights: Flights::default(),
            spool_dir,
            manifest_fetches: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            metrics,
        }))
    }

    /// The upstream that serves this request, if any.
    pub fn resolve(&self, repo: &RepoName, ns: Option<&str>) -> Option<Target> {
        self.routes.resolve(repo, ns)
    }

    pub fn upstream_name(&self, t: &Target) -> &str {
        &self.upstreams[t.upstream].name
    }

    // ---- manifests -------------------------------------------------------------------------

    /// The manifest (bytes unless `head`) for a proxied repository.
    pub async fn manifest(
        self: &Arc<Self>,
        t: &Target,
        r: &Reference,
        head: bool,
    ) -> Result<(ManifestRecord, Bytes)> {
        let up = self.upstream_name(t).to_owned();
        let record = match r {
            Reference::Digest(_) => match self.registry.head_manifest(&t.local, r).await {
                Ok(rec) => {
                    self.metrics.hit(&up, "manifest");
                    rec
                }
                Err(ServiceError::ManifestUnknown) => {
                    self.metrics.miss(&up, "manifest");
                    let this = self.clone();
                    let (t2, r2) = (t.clone(), r.clone());
                    self.single_fetch(t, r, move || async move { this.fetch_manifest(&t2, &r2, None).await })
                        .await?
                }
                Err(e) => return Err(e.into()),
            },
            Reference::Tag(tag) => self.tag(t, tag).await?,
        };
        self.record_pull(&t.local, &record.digest, ContentKind::Manifest, record.size);
        if head {
            return Ok((record, Bytes::new()));
        }
        let bytes = self.registry.manifest_bytes(&record).await?;
        Ok((record, bytes))
    }

    async fn tag(self: &Arc<Self>, t: &Target, tag: &Tag) -> Result<ManifestRecord> {
        let up = self.upstream_name(t).to_owned();
        let reference = Reference::Tag(tag.clone());
        let cached = match self.registry.head_manifest(&t.local, &reference).await {
            Ok(rec) => Some(rec),
            Err(ServiceError::ManifestUnknown) => None,
            Err(e) => return Err(e.into()),
        };
        let config = self.upstreams[t.upstream].config();
        let fresh_for = self.revalidate_after(t).as_secs() as i64;
        let now = meta::now();
        let age = match &cached {
            Some(_) => self.registry.meta().tag_checked_at(&t.local, tag).await?.map(|at| now - at),
            None => None,
        };
        if let (Some(rec), Some(age)) = (&cached, age) {
            if age < fresh_for {
                self.metrics.hit(&up, "manifest");
                return Ok(rec.clone());
            }
        }
        let key = format!("{}:{tag}", t.local);
        if cached.is_none() && self.negative_hit(&key) {
            return Err(ProxyError::NotFound(ContentKind::Manifest));
        }
        let this = self.clone();
        let (t2, tag2, known) = (t.clone(), tag.clone(), cached.clone());
        let outcome = self
            .single_fetch(t, &reference, move || async move { this.refresh_tag(&t2, &tag2, known).await })
            .await;
        match outcome {
            Err(ProxyError::NotFound(kind)) => {
                self.remember_missing(key, config.negative_ttl);
                Err(ProxyError::NotFound(kind))
            }
            Err(ProxyError::Upstream(e)) => {
                let bound = fresh_for + config.stale_if_error.as_secs() as i64;
                match (cached, age) {
                    (Some(rec), Some(age)) if age <= bound => {
                        warn!(upstream = %up, repository = %t.local, %tag, error = %e, "serving cached tag; upstream failed");
                        self.metrics.stale_serve(&up);
                        Ok(rec)
                    }
                    _ => Err(ProxyError::Upstream(e)),
                }
            }
            other => other,
        }
    }

    /// Checks a tag with the upstream (a HEAD when a version is cached), fetching it if it moved.
    async fn refresh_tag(
        &self,
        t: &Target,
        tag: &Tag,
        cached: Option<ManifestRecord>,
    ) -> Result<ManifestRecord> {
        let up = &self.upstreams[t.upstream];
        if let Some(rec) = cached {
            self.metrics.revalidated(&up.name);
            match up.fetch(Method::HEAD, &t.remote, "manifests", tag.as_str()).await? {
                Fetched::NotFound => return Err(ProxyError::NotFound(ContentKind::Manifest)),
                Fetched::Found(resp) => {
                    if digest_header(&resp).as_ref() == Some(&rec.digest) {
                        self.registry.meta().set_tag_checked(&t.local, tag, meta::now()).await?;
                        debug!(upstream = %up.name, repository = %t.local, %tag, "tag unchanged upstream");
                        return Ok(rec);
                    }
                }
            }
        }
        self.metrics.miss(&up.name, "manifest");
        self.fetch_manifest(t, &Reference::Tag(tag.clone()), Some(tag)).await
    }

    /// GETs a manifest, verifies it against its digest, and caches it (under `tag`, if given).
    async fn fetch_manifest(&self, t: &Target, r: &Reference, tag: Option<&Tag>) -> Result<ManifestRecord> {
        let up = &self.upstreams[t.upstream];
        let resp = match up.fetch(Method::GET, &t.remote, "manifests", &r.to_string()).await? {
            Fetched::NotFound => return Err(ProxyError::NotFound(ContentKind::Manifest)),
            Fetched::Found(resp) => resp,
        };
        let limit = self.registry.limits().max_manifest_bytes;
        let claimed = digest_header(&resp);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(up, resp, "manifest", limit).await?;
        self.metrics.upstream_bytes(&up.name, body.len() as u64);
        // The digest the content must have: the one asked for, else the one the upstream named.
        let expected = match r {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => claimed,
        };
        let digest = match expected {
            Some(want) => {
                let actual = Digest::of(want.algorithm(), &body);
                if actual != want {
                    let e = UpstreamError::Corrupt { upstream: up.name.clone(), digest: want.to_string() };
                    self.metrics.error(&up.name, e.class());
                    return Err(e.into());
                }
                actual
            }
            None => Digest::of(crate::oci::Algorithm::Sha256, &body),
        };
        let record = self
            .registry
            .cache_manifest(&t.local, &digest, tag.cloned(), content_type.as_deref(), body)
            .await
            .map_err(|e| match e {
                ServiceError::ManifestInvalid(m) => ProxyError::Upstream(Arc::new(UpstreamError::Protocol {
                    upstream: up.name.clone(),
                    detail: format!("sent a manifest Berth cannot read: {m}"),
                })),
                e => e.into(),
            })?;
        if let Some(tag) = tag {
            self.registry.meta().set_tag_checked(&t.local, tag, meta::now()).await?;
        }
        info!(upstream = %up.name, repository = %t.local, reference = %r, digest = %digest, "cached manifest");
        Ok(record)
    }

    /// Runs `fetch` once for concurrent requests of the same manifest; the others wait for it.
    /// The fetch runs in its own task, which also retires the entry when done, so it completes and
    /// is forgotten even if every client that waited for it has left.
    async fn single_fetch<F, Fut>(
        self: &Arc<Self>,
        t: &Target,
        r: &Reference,
        fetch: F,
    ) -> Result<ManifestRecord>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<ManifestRecord>> + Send + 'static,
    {
        let key = format!("{}@{r}", t.local);
        let shared = {
            let Ok(mut map) = self.manifest_fetches.lock() else {
                return fetch().await;
            };
            if let Some(s) = map.get(&key) {
                self.metrics.coalesced(self.upstream_name(t));
                s.clone()
            } else {
                let fetch = fetch();
                let (this, done_key) = (self.clone(), key.clone());
                // The entry is inserted before this task can take the lock to remove it.
                let task = tokio::spawn(async move {
                    let _retire = Retire(this, done_key);
                    fetch.await
                });
                let fut: BoxFuture<'static, Result<ManifestRecord>> = Box::pin(async move {
                    task.await.unwrap_or_else(|e| {
                        Err(ProxyError::Fetch {
                            class: "aborted",
                            message: format!("fetch task failed: {e}"),
                        })
                    })
                });
                let s = fut.shared();
                map.insert(key, s.clone());
                s
            }
        };
        shared.await
    }

    fn revalidate_after(&self, t: &Target) -> Duration {
        let remote = t.remote.as_str();
        self.revalidate[t.upstream]
            .iter()
            .find(|(g, _)| g.matches(remote))
            .map(|(_, d)| *d)
            .unwrap_or(self.upstreams[t.upstream].config().revalidate_after)
    }

    fn negative_hit(&self, key: &str) -> bool {
        let Ok(mut map) = self.negative.lock() else { return false };
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember_missing(&self, key: String, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.negative.lock() else { return };
        if map.len() >= NEGATIVE_CAPACITY {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
            if map.len() >= NEGATIVE_CAPACITY {
                map.clear();
            }
        }
        map.insert(key, Instant::now() + ttl);
    }

    // ---- blobs -----------------------------------------------------------------------------

    /// A blob (or a range of it) of a proxied repository. `Ok(Err(size))`: the range cannot be
    /// satisfied.
    pub async fn blob(
        self: &Arc<Self>,
        t: &Target,
        digest: &Digest,
        range: Option<ByteRange>,
        head: bool,
    ) -> Result<std::result::Result<BlobRead, u64>> {
        let up = self.upstream_name(t).to_owned();
        match self.registry.get_blob(&t.local, digest, range, !head).await {
            Ok(read) => {
                self.metrics.hit(&up, "blob");
                if let Ok(r) = &read {
                    self.record_pull(&t.local, digest, ContentKind::Blob, r.size);
                    if !head {
                        self.metrics.cache_bytes(&up, r.range.map_or(r.size, |(s, e)| e - s + 1));
                    }
                }
                return Ok(read);
            }
            Err(ServiceError::BlobUnknown) => {}
            Err(e) => return Err(e.into()),
        }
        if head {
            return self.head_blob(t, digest, range).await;
        }
        // Bytes another repository already has: the upstream need only confirm this one holds them.
        let upstream = &self.upstreams[t.upstream];
        if self.flights.get(digest).is_none() && self.registry.meta().blob_size(digest).await?.is_some() {
            if let Fetched::Found(_) =
                upstream.fetch(Method::HEAD, &t.remote, "blobs", digest.as_str()).await?
            {
                if self.registry.link_existing_blob(&t.local, digest).await?.is_some() {
                    // Served from storage now, counted as a hit there.
                    return Box::pin(self.blob(t, digest, range, head)).await;
                }
            }
        }
        let flight = match self.flights.start(&self.spool_dir, digest) {
            Ok(Joined::Started(flight, writer)) => {
                self.metrics.miss(&up, "blob");
                let this = self.clone();
                let (t2, d2) = (t.clone(), digest.clone());
                tokio::spawn(async move { this.fetch_blob(&t2, &d2, writer).await });
                flight
            }
            Ok(Joined::Running(running)) => {
                self.metrics.coalesced(&up);
                running
            }
            Err(e) => return Err(ServiceError::Storage(e.into()).into()),
        };
        let size = match flight.answer().await {
            Answer::Streaming { size } => size,
            Answer::Failed(f) => return Err(failure(&f)),
        };
        let span = match size.map(|size| span(range, size)) {
            Some(Err(size)) => return Ok(Err(size)),
            Some(Ok(span)) => span,
            None => None,
        };
        let body = match span {
            Some((start, end)) => flight.read(start, Some(end + 1)),
            None => flight.read(0, None),
        };
        Ok(Ok(BlobRead {
            size: size.unwrap_or(0),
            range: span,
            body: Some(body),
            size_known: size.is_some(),
        }))
    }

    async fn head_blob(
        &self,
        t: &Target,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<std::result::Result<BlobRead, u64>> {
        let up = &self.upstreams[t.upstream];
        let size = match up.fetch(Method::HEAD, &t.remote, "blobs", digest.as_str()).await? {
            Fetched::NotFound => return Err(ProxyError::NotFound(ContentKind::Blob)),
            Fetched::Found(resp) => resp.content_length(),
        };
        let span = match size.map(|size| span(range, size)) {
            Some(Err(size)) => return Ok(Err(size)),
            Some(Ok(span)) => span,
            None => None,
        };
        Ok(Ok(BlobRead { size: size.unwrap_or(0), range: span, body: None, size_known: size.is_some() }))
    }

    /// The one upstream fetch of a blob: spool for readers, hash, verify, then commit the spool
    /// file to storage (or a copy written alongside it, for storage that cannot adopt files).
    async fn fetch_blob(self: Arc<Self>, t: &Target, digest: &Digest, mut writer: flight::FlightWriter) {
        let up = self.upstreams[t.upstream].clone();
        let outcome = self.fetch_blob_inner(&up, t, digest, &mut writer).await;
        if let Err(failure) = outcome {
            if let FlightFailure::Error { class, message } = &failure {
                self.metrics.error(&up.name, class);
                warn!(upstream = %up.name, repository = %t.local, %digest, error = %message, "blob fetch failed");
            }
            writer.fail(failure);
        }
        self.flights.finish(digest);
    }

    async fn fetch_blob_inner(
        &self,
        up: &Upstream,
        t: &Target,
        digest: &Digest,
        writer: &mut flight::FlightWriter,
    ) -> std::result::Result<(), FlightFailure> {
        let err = |class: &'static str, message: String| FlightFailure::Error { class, message };
        let resp = match up.fetch(Method::GET, &t.remote, "blobs", digest.as_str()).await {
            Ok(Fetched::Found(resp)) => resp,
            Ok(Fetched::NotFound) => return Err(FlightFailure::NotFound),
            Err(e) => return Err(err(e.class(), e.to_string())),
        };
        let declared = resp.content_length();
        writer.begin(declared);
        // Local storage adopts the spool file once it is verified; any other storage is written
        // alongside the spool.
        let mut store = if self.adopt_spool {
            None
        } else {
            Some(self.registry.blob_writer().await.map_err(|e| err("storage", e.to_string()))?)
        };
        let mut hasher = digest.algorithm().hasher();
        // Whatever chunks are ready at once go out as one batch (one spool write, one wake-up).
        let mut batches = resp.bytes_stream().ready_chunks(64);
        while let Some(batch) = batches.next().await {
            let mut chunks = Vec::with_capacity(batch.len());
            for item in batch {
                let chunk = item.map_err(|e| {
                    let e = up.transport_error(&e);
                    err(e.class(), e.to_string())
                })?;
                hasher.update(&chunk);
                chunks.push(chunk);
            }
            let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            if declared.is_some_and(|d| writer.written() + n > d) {
                return Err(err(
                    "corrupt",
                    format!("upstream {} sent more than its Content-Length", up.name),
                ));
            }
            self.metrics.upstream_bytes(&up.name, n);
            let (spooled, stored) = match &mut store {
                None => (writer.append(chunks).await, Ok(())),
                Some(store) => {
                    let to_store = chunks.clone();
                    tokio::join!(writer.append(chunks), async {
                        for c in to_store {
                            store.write(c).await?;
                        }
                        Ok::<_, crate::storage::StorageError>(())
                    })
                }
            };
            spooled.map_err(|e| err("storage", format!("spool: {e}")))?;
            stored.map_err(|e| err("storage", e.to_string()))?;
        }
        let size = writer.written();
        let actual = hasher.finish();
        if actual != *digest || declared.is_some_and(|d| d != size) {
            return Err(err(
                "corrupt",
                format!("upstream {} sent content that does not match {digest}", up.name),
            ));
        }
        // Commit before releasing the last byte: a client that has the whole blob finds it cached.
        let committed = match store {
            Some(store) => self.registry.commit_cached_blob(store, &t.local, digest, size).await,
            None => self.registry.adopt_cached_blob(writer.path(), &t.local, digest, size).await,
        };
        match committed {
            Ok(()) => {
                self.record_pull(&t.local, digest, ContentKind::Blob, size);
                info!(upstream = %up.name, repository = %t.local, %digest, size, "cached blob");
            }
            // The clients still get verified bytes; only the cache missed out.
            Err(e) => warn!(upstream = %up.name, %digest, error = %e, "could not cache a fetched blob"),
        }
        writer.verified();
        Ok(())
    }

    // ---- tags list -------------------------------------------------------------------------

    /// The upstream's tags (pagination passed on) and whether more follow; `None` when the
    /// upstream fails, so the caller lists the cached tags instead.
    pub async fn tags(&self, t: &Target, query: &str) -> Result<Option<(Vec<String>, bool)>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let up = &self.upstreams[t.upstream];
        let listed = match up.tags(&t.remote, query).await {
            Ok(Fetched::NotFound) => return Err(ProxyError::NotFound(ContentKind::Manifest)),
            Ok(Fetched::Found(resp)) => {
                let more = resp.headers().contains_key(reqwest::header::LINK);
                read_limited(up, resp, "tag list", self.registry.limits().max_manifest_bytes).await.and_then(
                    |body| {
                        serde_json::from_slice::<TagList>(&body)
                            .map(|l| (l.tags.unwrap_or_default(), more))
                            .map_err(|e| UpstreamError::Protocol {
                                upstream: up.name.clone(),
                                detail: format!("tag list: {e}"),
                            })
                    },
                )
            }
            Err(e) => Err(e),
        };
        match listed {
            Ok(list) => Ok(Some(list)),
            Err(e) => {
                self.metrics.error(&up.name, e.class());
                warn!(upstream = %up.name, error = %e, "tag list from upstream failed; listing cached tags");
                Ok(None)
            }
        }
    }

    // ---- bookkeeping -----------------------------------------------------------------------

    fn record_pull(&self, repo: &RepoName, digest: &Digest, kind: ContentKind, size: u64) {
        let Ok(mut pulls) = self.pulls.lock() else { return };
        let pull =
            CachedPull { repo: repo.clone(), digest: digest.clone(), kind, size, at: meta::now_millis() };
        pulls.insert((repo.clone(), digest.clone()), pull);
    }

    /// Writes pull times and enforces each upstream's size limit and TTL; runs until dropped.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.maintain_once().await {
                warn!(error = %e, "cache maintenance failed; retrying later");
            }
        }
    }

    /// One pass of [`Proxy::maintain`]; returns how many items were evicted.
    pub async fn maintain_once(&self) -> Result<u64> {
        self.flush_pulls().await?;
        let mut evicted = 0;
        for up in &self.upstreams {
            let c = up.config();
            let now = meta::now_millis();
            if let Some(ttl) = c.unpulled_ttl {
                let before = now - ttl.as_millis() as i64;
                loop {
                    let old =
                        self.registry.meta().least_recently_pulled(&c.name, before, EVICT_BATCH).await?;
                    if old.is_empty() {
                        break;
                    }
                    for item in &old {
                        self.evict(&up.name, item).await?;
                        evicted += 1;
                    }
                }
            }
            if let Some(max) = c.max_size {
                let mut size = self.registry.meta().cached_size(&c.name).await?;
                while size > max {
                    let lru =
                        self.registry.meta().least_recently_pulled(&c.name, now + 1, EVICT_BATCH).await?;
                    if lru.is_empty() {
                        break;
                    }
                    for item in &lru {
                        if size <= max {
                            break;
                        }
                        self.evict(&up.name, item).await?;
                        size = size.saturating_sub(item.size);
                        evicted += 1;
                    }
                }
            }
        }
        Ok(evicted)
    }

    async fn flush_pulls(&self) -> Result<()> {
        let pulls: Vec<CachedPull> = match self.pulls.lock() {
            Ok(mut p) => p.drain().map(|(_, v)| v).collect(),
            Err(_) => return Ok(()),
        };
        if !pulls.is_empty() {
            self.registry.meta().record_pulls(pulls).await?;
        }
        Ok(())
    }

    async fn evict(&self, upstream: &str, item: &meta::CachedItem) -> Result<()> {
        let still_used = self.registry.meta().evict(item).await?;
        if !still_used {
            self.registry.delete_unreferenced_bytes(&item.digest).await?;
        }
        self.metrics.evicted(upstream, 1);
        debug!(repository = %item.repo, digest = %item.digest, kind = %item.kind, "evicted cached content");
        Ok(())
    }
}

/// Forgets a finished manifest fetch, also when its task ends by panic.
struct Retire(Arc<Proxy>, String);

impl Drop for Retire {
    fn drop(&mut self) {
        if let Ok(mut map) = self.0.manifest_fetches.lock() {
            map.remove(&self.1);
        }
    }
}

fn failure(f: &FlightFailure) -> ProxyError {
    match f {
        FlightFailure::NotFound => ProxyError::NotFound(ContentKind::Blob),
        FlightFailure::Error { class, message } => ProxyError::Fetch { class, message: message.clone() },
    }
}

fn digest_header(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers().get("docker-content-digest")?.to_str().ok()?.trim().parse().ok()
}

/// Reads a small body (a manifest, a tag list), refusing more than `limit` bytes.
async fn read_limited(
    up: &Upstream,
    resp: reqwest::Response,
    what: &str,
    limit: usize,
) -> std::result::Result<Bytes, UpstreamError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::Protocol {
            upstream: up.name.clone(),
            detail: format!("{what} is larger than the {limit} bytes accepted"),
        });
    }
    let mut stream = resp.bytes_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| up.transport_error(&e))?;
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::Protocol {
                upstream: up.name.clone(),
                detail: format!("{what} is larger than the {limit} bytes accepted"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
