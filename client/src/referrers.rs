//! A subject's referrers at another registry: the referrers API's list a page at a time, or,
//! where the registry has no such API (CNCF Distribution), the OCI 1.1 tag scheme's index, tagged
//! `<alg>-<hex of the subject>`. The pull-through cache shows a page of it to a verifier; `berth
//! replicate` reads every page.

use berth_core::oci::{Digest, RepoName};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::Method;

use super::{Fetched, Result, Upstream, UpstreamError};

/// One page of a subject's referrers, as the registry wrote it.
#[derive(Debug, Default)]
pub struct ReferrersPage {
    /// The descriptors.
    pub manifests: Vec<serde_json::Value>,
    /// The registry applied the `artifactType` filter itself.
    pub filtered: bool,
    /// The registry's link to the next page (the API's `Link`; the tag scheme has one page).
    pub next: Option<String>,
}

impl Upstream {
    /// The referrers of `subject` in `repo`: the page `next` names (a link this registry gave),
    /// or the first — the API's, of `artifact_type` only when given (passed on, so the registry
    /// may filter), else the tag scheme's index; an empty page when neither exists. At most
    /// `limit` bytes of the page are read.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        next: Option<&str>,
        limit: usize,
    ) -> Result<ReferrersPage> {
        let listed = match next {
            Some(link) => self.next_page(repo, "referrers", subject.as_str(), link).await?,
            None => {
                let query = artifact_type
                    .map(|at| format!("?artifactType={}", utf8_percent_encode(at, NON_ALPHANUMERIC)))
                    .unwrap_or_default();
                self.fetch(Method::GET, repo, "referrers", &format!("{subject}{query}")).await?
            }
        };
        let (resp, api) = match listed {
            Fetched::Found(resp) => (resp, true),
            Fetched::NotFound if next.is_none() => {
                match self.fetch(Method::GET, repo, "manifests", &subject.referrers_tag()).await? {
                    Fetched::Found(resp) => (resp, false),
                    Fetched::NotFound => return Ok(ReferrersPage::default()),
                }
            }
            Fetched::NotFound => {
                return Err(UpstreamError::Protocol {
                    upstream: self.name.clone(),
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
        let next = if api { super::pages::next_link(resp.headers()) } else { None };
        let body = self.read_limited(resp, "referrers list", limit).await?;
        let mut index: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::Protocol { upstream: self.name.clone(), detail: format!("referrers list: {e}") }
        })?;
        // Taken out of the parsed list, not copied: a page may hold megabytes of annotations.
        let manifests = match index.get_mut("manifests").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(m)) => m,
            _ => Vec::new(),
        };
        Ok(ReferrersPage { manifests, filtered, next })
    }
}
