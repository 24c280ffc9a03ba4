//! Referrers of mirrored images (signatures, SBOMs, attestations): the upstream's list, a page
//! at a time as the upstream pages it, or its tag scheme's index where it has no referrers API.
//! A verifier reading them through the mirror (cosign, notation, a policy engine) sees what the
//! upstream holds, not only what was pulled through so far; when the upstream cannot answer, the
//! cached referrers are listed instead.

use berth_client::{Fetched, UpstreamError};
use berth_core::oci::Digest;
use reqwest::Method;
use tracing::warn;

use super::error::Result;
use super::route::Target;
use super::state::Proxy;

/// One page of an upstream's referrers.
pub struct UpstreamReferrers {
    /// The descriptors, as the upstream wrote them.
    pub manifests: Vec<serde_json::Value>,
    /// The upstream applied the `artifactType` filter itself.
    pub filtered: bool,
    /// The upstream's link to its next page.
    pub next: Option<String>,
}

impl Proxy {
    /// The upstream's referrers of `subject` (of `artifact_type`, passed on), from the page
    /// `next` names (a link the upstream gave) or the first; `None` when the upstream fails.
    pub async fn referrers(
        &self,
        t: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
        next: Option<&str>,
    ) -> Result<Option<UpstreamReferrers>> {
        let up = &self.upstreams[t.upstream];
        let listed = match next {
            Some(link) => up.next_page(&t.remote, "referrers", subject.as_str(), link).await,
            None => {
                let query = artifact_type
                    .map(|at| {
                        format!(
                            "?artifactType={}",
                            form_urlencoded::byte_serialize(at.as_bytes()).collect::<String>()
                        )
                    })
                    .unwrap_or_default();
                up.fetch(Method::GET, &t.remote, "referrers", &format!("{subject}{query}")).await
            }
        };
        let limit = self.registry.limits().max_manifest_bytes;
        let read = async {
            let (resp, api) = match listed? {
                Fetched::Found(resp) => (resp, true),
                Fetched::NotFound if next.is_none() => {
                    // No referrers API: the tag scheme's index, if the upstream keeps one.
                    match up.fetch(Method::GET, &t.remote, "manifests", &subject.referrers_tag()).await? {
                        Fetched::Found(resp) => (resp, false),
                        Fetched::NotFound => {
                            return Ok(UpstreamReferrers {
                                manifests: Vec::new(),
                                filtered: false,
                                next: None,
                            })
                        }
                    }
                }
                Fetched::NotFound => {
                    return Err(UpstreamError::Protocol {
                        upstream: up.name.clone(),
                        detail: format!("the next page of the referrers of {subject} is gone"),
                    })
                }
            };
            let filtered = api
                && resp
                    .headers()
                    .get_all("oci-filters-applied")
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|f| f.trim() == "artifactType")));
            let next = if api { berth_client::pages::next_link(resp.headers()) } else { None };
            let body = up.read_limited(resp, "referrers list", limit).await?;
            let mut index: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                UpstreamError::Protocol { upstream: up.name.clone(), detail: format!("referrers list: {e}") }
            })?;
            // Taken out of the parsed list, not copied: a page may hold megabytes of annotations.
            let manifests = match index.get_mut("manifests").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(m)) => m,
                _ => Vec::new(),
            };
            Ok(UpstreamReferrers { manifests, filtered, next })
        };
        match read.await {
            Ok(page) => Ok(Some(page)),
            Err(e) => {
                self.metrics.error(&up.name, e.class());
                warn!(upstream = %up.name, error = %e, "referrers from upstream failed; listing cached referrers");
                Ok(None)
            }
        }
    }
}
