//! Manifests of proxied repositories: by digest from the cache or fetched once, by tag through
//! `tags`. Concurrent requests for one manifest share one upstream fetch.

use std::sync::Arc;

use berth_client::{Fetched, UpstreamError};
use berth_core::oci::{Algorithm, Digest, Reference, Tag};
use futures_util::future::{BoxFuture, FutureExt};
use reqwest::Method;
use tracing::info;

use super::error::{ProxyError, Result};
use super::route::Target;
use super::state::{digest_header, Proxy};
use crate::meta::cache::ContentKind;
use crate::meta::{self, ManifestRecord};
use crate::service::ServiceError;

impl Proxy {
    /// The record of a proxied repository's manifest: from the cache, or fetched once. Its bytes
    /// are read from the cache like any manifest's.
    pub async fn manifest(self: &Arc<Self>, t: &Target, r: &Reference) -> Result<ManifestRecord> {
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
        self.pulls.record(&t.local, &record.digest, ContentKind::Manifest, record.size);
        Ok(record)
    }

    /// GETs a manifest, verifies it against its digest, and caches it (under `tag`, if given).
    pub(super) async fn fetch_manifest(
        &self,
        t: &Target,
        r: &Reference,
        tag: Option<&Tag>,
    ) -> Result<ManifestRecord> {
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
        let body = up.read_limited(resp, "manifest", limit).await?;
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
            None => Digest::of(Algorithm::Sha256, &body),
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
            self.cache.set_tag_checked(&t.local, tag, meta::now()).await?;
        }
        info!(upstream = %up.name, repository = %t.local, reference = %r, digest = %digest, "cached manifest");
        Ok(record)
    }

    /// Runs `fetch` once for concurrent requests of the same manifest; the others wait for it.
    /// The fetch runs in its own task, which also retires the entry when done, so it completes and
    /// is forgotten even if every client that waited for it has left.
    pub(super) async fn single_fetch<F, Fut>(
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
