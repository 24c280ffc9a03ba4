//! Manifests by tag: served as cached while fresh, checked with the upstream (one HEAD) when not,
//! fetched again only when the tag moved, served stale when the upstream fails, and answered 404
//! from memory after the upstream said so (see `freshness` for the policy).

use std::sync::Arc;

use berth_client::Fetched;
use berth_core::oci::{Reference, Tag};
use reqwest::Method;
use tracing::{debug, warn};

use super::error::{ProxyError, Result};
use super::route::Target;
use super::state::{digest_header, Proxy};
use crate::meta::cache::ContentKind;
use crate::meta::{self, ManifestRecord};
use crate::service::ServiceError;

impl Proxy {
    pub(super) async fn tag(self: &Arc<Self>, t: &Target, tag: &Tag) -> Result<ManifestRecord> {
        let up = self.upstream_name(t).to_owned();
        let reference = Reference::Tag(tag.clone());
        let cached = match self.registry.head_manifest(&t.local, &reference).await {
            Ok(rec) => Some(rec),
            Err(ServiceError::ManifestUnknown) => None,
            Err(e) => return Err(e.into()),
        };
        let config = self.upstreams[t.upstream].config();
        let fresh_for = self.freshness.revalidate_after(t).as_secs() as i64;
        let now = meta::now();
        let age = match &cached {
            Some(_) => self.cache.tag_checked_at(&t.local, tag).await?.map(|at| now - at),
            None => None,
        };
        if let (Some(rec), Some(age)) = (&cached, age) {
            if age < fresh_for {
                self.metrics.hit(&up, "manifest");
                return Ok(rec.clone());
            }
        }
        let key = format!("{}:{tag}", t.local);
        if cached.is_none() && self.freshness.known_missing(&key) {
            return Err(ProxyError::NotFound(ContentKind::Manifest));
        }
        let this = self.clone();
        let (t2, tag2, known) = (t.clone(), tag.clone(), cached.clone());
        let outcome = self
            .single_fetch(t, &reference, move || async move { this.refresh_tag(&t2, &tag2, known).await })
            .await;
        match outcome {
            Err(ProxyError::NotFound(kind)) => {
                self.freshness.remember_missing(key, config.negative_ttl);
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
                        self.cache.set_tag_checked(&t.local, tag, meta::now()).await?;
                        debug!(upstream = %up.name, repository = %t.local, %tag, "tag unchanged upstream");
                        return Ok(rec);
                    }
                }
            }
        }
        self.metrics.miss(&up.name, "manifest");
        self.fetch_manifest(t, &Reference::Tag(tag.clone()), Some(tag)).await
    }
}
