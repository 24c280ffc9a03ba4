//! Blobs of proxied repositories: served from the cache, or from the one upstream fetch (a
//! [`super::flight`]) that every client asking for the digest joins while it streams.
//!
//! One fetch per blob holds across replicas too: a replica fetches only under a claim in the
//! shared database ([`crate::meta::cache::CacheIndex::claim_fetch`]), renewed while it runs. The
//! other replicas stream what the holder has committed to storage — the segments it publishes
//! while the fetch runs, then the stored blob (see [`super::segments`]) — with no upstream
//! request and no traffic between replicas. A claim whose holder died expires and is taken over;
//! a failed fetch is remembered for a moment, so its waiters hear the same answer rather than
//! each asking again.

use std::sync::Arc;
use std::time::Duration;

use berth_client::{Fetched, Upstream};
use berth_core::oci::range::{span, ByteRange};
use berth_core::oci::Digest;
use futures_util::StreamExt;
use reqwest::Method;
use tracing::{info, warn};

use super::error::{failure, ProxyError, Result};
use super::flight::{self, Answer, FlightFailure, Joined};
use super::route::Target;
use super::state::Proxy;
use crate::meta::cache::{ContentKind, FetchClaim, FetchState};
use crate::meta::now_millis;
use crate::service::{BlobRead, ServiceError};

/// How long a fetch claim lasts unless its holder renews it (every third of this).
const CLAIM_TTL_MS: i64 = 30_000;
/// How long a failed fetch's outcome answers the requests that waited on it (a few polls).
const FAILURE_MEMORY_MS: i64 = 5_000;
/// How often a replica waiting on another's fetch looks for its progress: soon, then less.
pub(super) const FOLLOW_POLL_FIRST: Duration = Duration::from_millis(50);
pub(super) const FOLLOW_POLL_MAX: Duration = Duration::from_millis(500);

/// Where a missing blob's bytes come from.
pub(super) enum Source {
    /// This replica's fetch.
    Local(Arc<flight::Flight>),
    /// Another replica's fetch of a blob of this size, followed through storage.
    Elsewhere { size: u64 },
    /// Storage: another replica's fetch stored it.
    Stored,
}

impl Proxy {
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
                    self.pulls.record(&t.local, digest, ContentKind::Blob, r.size);
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
        let flight = match self.join_or_claim(t, digest).await? {
            Source::Local(flight) => flight,
            // Another replica fetched it: stored now, served like any cached blob.
            Source::Stored => return Box::pin(self.blob(t, digest, range, head)).await,
            Source::Elsewhere { size } => {
                let span = match span(range, size) {
                    Err(size) => return Ok(Err(size)),
                    Ok(span) => span,
                };
                let (start, end) = span.map_or((0, size), |(s, e)| (s, e + 1));
                let body = Some(self.follow(t, digest, start, end));
                return Ok(Ok(BlobRead { size, range: span, body, size_known: true }));
            }
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

    /// Where to stream `digest` from: this replica's fetch (joined, or started under its claim),
    /// another replica's, or storage once that one has stored the blob.
    pub(super) async fn join_or_claim(self: &Arc<Self>, t: &Target, digest: &Digest) -> Result<Source> {
        let up = self.upstream_name(t).to_owned();
        let mut wait = FOLLOW_POLL_FIRST;
        let mut following = false;
        loop {
            if let Some(running) = self.flights.get(digest) {
                self.metrics.coalesced(&up);
                return Ok(Source::Local(running));
            }
            let now = now_millis();
            // A request that has not waited retries a failed fetch; those that waited on it share
            // its failure.
            match self.cache.claim_fetch(digest, &self.holder, now, now + CLAIM_TTL_MS, !following).await? {
                // A holder stores the blob before it gives its claim up, so a claim won after the
                // last look may follow a fetch that just ended: look once more before fetching.
                FetchClaim::Mine if self.registry.meta().blob_size(digest).await?.is_some() => {
                    self.end_claim(digest, None).await;
                    return Ok(Source::Stored);
                }
                FetchClaim::Mine => {}
                FetchClaim::Failed(f) => return Err(failure(&FlightFailure::from_stored(&f))),
                FetchClaim::Elsewhere => {
                    if !following {
                        following = true;
                        self.metrics.coalesced(&up);
                    }
                    if self.registry.meta().blob_size(digest).await?.is_some() {
                        return Ok(Source::Stored);
                    }
                    // Once the holder knows the size, the bytes can follow as it stores them.
                    if let Some(FetchState { segments: Some(s), failure: None, .. }) =
                        self.cache.follow_fetch(digest).await?
                    {
                        return Ok(Source::Elsewhere { size: s.size });
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(FOLLOW_POLL_MAX);
                    continue;
                }
            }
            return match self.flights.start(&self.spool_dir, digest) {
                Ok(Joined::Started(flight, writer)) => {
                    self.metrics.miss(&up, "blob");
                    let this = self.clone();
                    let (t2, d2, f2) = (t.clone(), digest.clone(), flight.clone());
                    tokio::spawn(async move { this.fetch_blob(&t2, &d2, writer, f2).await });
                    Ok(Source::Local(flight))
                }
                Ok(Joined::Running(running)) => {
                    self.metrics.coalesced(&up);
                    Ok(Source::Local(running))
                }
                Err(e) => {
                    let failed = FlightFailure::Error { class: "storage", message: format!("spool: {e}") };
                    self.end_claim(digest, Some(&failed)).await;
                    Err(ServiceError::Storage(e.into()).into())
                }
            };
        }
    }

    /// Gives up this replica's claim on fetching `digest`: the blob is stored (`None`), or the
    /// fetch failed, which the waiting replicas then hear for a moment.
    async fn end_claim(&self, digest: &Digest, failed: Option<&FlightFailure>) {
        let now = now_millis();
        let stored = failed.map(FlightFailure::to_stored);
        if let Err(e) =
            self.cache.end_fetch(digest, &self.holder, stored.as_deref(), now, now + FAILURE_MEMORY_MS).await
        {
            // The claim then expires by itself; until then other replicas wait for it.
            warn!(%digest, error = %e, "could not end a fetch claim");
        }
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
    /// The claim on the fetch is renewed while it runs and ended when it is over.
    async fn fetch_blob(
        self: Arc<Self>,
        t: &Target,
        digest: &Digest,
        mut writer: flight::FlightWriter,
        flight: Arc<flight::Flight>,
    ) {
        let up = self.upstreams[t.upstream].clone();
        let outcome = {
            let fetch = self.fetch_blob_inner(&up, t, digest, &mut writer, flight);
            tokio::pin!(fetch);
            let mut renew = tokio::time::interval(Duration::from_millis(CLAIM_TTL_MS as u64 / 3));
            renew.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut fetch => break outcome,
                    _ = renew.tick() => {
                        let now = now_millis();
                        match self.cache.claim_fetch(digest, &self.holder, now, now + CLAIM_TTL_MS, false).await {
                            Ok(FetchClaim::Mine) => {}
                            // Another replica may fetch it too now: wasteful, never wrong.
                            other => warn!(%digest, ?other, "lost the claim on a running fetch"),
                        }
                    }
                }
            }
        };
        match outcome {
            Ok(()) => self.end_claim(digest, None).await,
            Err(failure) => {
                if let FlightFailure::Error { class, message } = &failure {
                    self.metrics.error(&up.name, class);
                    warn!(upstream = %up.name, repository = %t.local, %digest, error = %message, "blob fetch failed");
                }
                self.end_claim(digest, Some(&failure)).await;
                writer.fail(failure);
            }
        }
        self.flights.finish(digest);
    }

    async fn fetch_blob_inner(
        self: &Arc<Self>,
        up: &Upstream,
        t: &Target,
        digest: &Digest,
        writer: &mut flight::FlightWriter,
        flight: Arc<flight::Flight>,
    ) -> std::result::Result<(), FlightFailure> {
        let err = |class: &'static str, message: String| FlightFailure::Error { class, message };
        let resp = match up.fetch(Method::GET, &t.remote, "blobs", digest.as_str()).await {
            Ok(Fetched::Found(resp)) => resp,
            Ok(Fetched::NotFound) => return Err(FlightFailure::NotFound),
            Err(e) => return Err(err(e.class(), e.to_string())),
        };
        let declared = resp.content_length();
        writer.begin(declared);
        if let Some(size) = declared {
            tokio::spawn(self.clone().publish(digest.clone(), flight, size));
        }
        // Local storage adopts the spool file once it is verified; any other storage is written
        // alongside the spool.
        let mut store = if self.adopt_spool {
            None
        } else {
            Some(self.registry.blob_writer(digest).await.map_err(|e| err("storage", e.to_string()))?)
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
                self.pulls.record(&t.local, digest, ContentKind::Blob, size);
                info!(upstream = %up.name, repository = %t.local, %digest, size, "cached blob");
            }
            // The clients still get verified bytes; only the cache missed out.
            Err(e) => warn!(upstream = %up.name, %digest, error = %e, "could not cache a fetched blob"),
        }
        writer.verified();
        Ok(())
    }
}
