//! A subject's referrers, a page at a time. A subject may gather any number of signatures,
//! SBOMs and attestations, each descriptor carrying its manifest's annotations, so one answer
//! holds at most `limits.referrers_page` descriptors and about `limits.referrers_page_bytes` of
//! them, and names the page after it (the spec's `Link`): clients read every page, and none
//! meets a list larger than it accepts (oras refuses one over 4 MiB).

use berth_core::oci::{Digest, RepoName};

use super::error::Result;
use super::registry::Registry;
use crate::meta::{Page, Referrer};

/// One page of referrers, sorted by digest, and the digest the next page starts after.
#[derive(Debug)]
pub struct ReferrerPage {
    pub items: Vec<Referrer>,
    pub next: Option<Digest>,
}

/// Rows read by the first query of a page: few, since each may carry up to a manifest's size of
/// annotations; later queries read as many as the bytes left to fill can take.
const FIRST_BATCH: usize = 16;
const MOST_BATCH: usize = 256;

/// What a descriptor adds to a referrers list, near enough: its fields and their JSON.
fn listed_bytes(r: &Referrer) -> usize {
    96 + r.digest.as_str().len()
        + r.media_type.len()
        + r.artifact_type.as_deref().map_or(0, str::len)
        + r.annotations.as_deref().map_or(0, str::len)
}

impl Registry {
    /// The referrers of `subject` in `repo` (of `artifact_type`, if given) after the digest
    /// `after`: as many as fit one page.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
    ) -> Result<ReferrerPage> {
        self.referrers_page(repo, subject, artifact_type, after, self.limits.referrers_page).await
    }

    /// The first `most` referrers of `subject` in `repo` at most (fewer if their bytes fill a
    /// page first), for those that show a few.
    pub async fn first_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        most: usize,
    ) -> Result<ReferrerPage> {
        self.referrers_page(repo, subject, None, None, most.min(self.limits.referrers_page)).await
    }

    async fn referrers_page(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        most: usize,
    ) -> Result<ReferrerPage> {
        let (most, budget) = (most.max(1), self.limits.referrers_page_bytes);
        let (mut items, mut bytes, mut widest) = (Vec::new(), 0usize, 1usize);
        let mut page = Page { limit: FIRST_BATCH.min(most), last: after.map(|d| d.to_string()) };
        loop {
            let rows = self.meta.referrers(repo, subject, artifact_type, &page).await?;
            let more = rows.len() > page.limit;
            for r in rows.into_iter().take(page.limit) {
                let cost = listed_bytes(&r);
                if items.len() == most || (!items.is_empty() && bytes + cost > budget) {
                    let next = items.last().map(|r: &Referrer| r.digest.clone());
                    return Ok(ReferrerPage { items, next });
                }
                (bytes, widest) = (bytes + cost, widest.max(cost));
                items.push(r);
            }
            if !more {
                return Ok(ReferrerPage { items, next: None });
            }
            let room = budget.saturating_sub(bytes) / widest;
            page = Page {
                limit: room.min(most - items.len()).clamp(1, MOST_BATCH),
                last: items.last().map(|r| r.digest.to_string()),
            };
        }
    }

    /// Every referrer of `subject` in `repo`, page after page (for those that must see all).
    pub async fn all_referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>> {
        let mut all: Vec<Referrer> = Vec::new();
        loop {
            let page = self.referrers(repo, subject, None, all.last().map(|r| &r.digest)).await?;
            all.extend(page.items);
            if page.next.is_none() {
                return Ok(all);
            }
        }
    }
}
