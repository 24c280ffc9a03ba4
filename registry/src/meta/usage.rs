//! What the registry holds, per repository and in all: the admin API's storage usage.
//!
//! A repository's bytes are what a pull of all of it would read (its manifests and the blobs
//! linked to it); blobs shared between repositories count in each, and once in the stored total.

use serde::Serialize;

use super::{Page, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoUsage {
    pub name: String,
    pub tags: u64,
    pub manifests: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTotal {
    /// Blobs stored (manifests included), each once.
    pub blobs: u64,
    pub bytes: u64,
}

#[async_trait::async_trait]
pub trait Usage: Send + Sync + 'static {
    /// A page of repositories (by name, after `page.last`), at most `page.limit` + 1 of them.
    async fn repo_usage(&self, page: &Page) -> Result<Vec<RepoUsage>>;
    async fn stored_total(&self) -> Result<StoredTotal>;
}

/// Parameters: after (name, '' for the start), limit.
pub(crate) const REPO_USAGE: &str = "SELECT r.name,
        (SELECT count(*) FROM tags t WHERE t.repository_id = r.id),
        (SELECT count(*) FROM manifests m WHERE m.repository_id = r.id),
        CAST((SELECT coalesce(sum(m.size), 0) FROM manifests m WHERE m.repository_id = r.id)
           + (SELECT coalesce(sum(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
              WHERE rb.repository_id = r.id) AS BIGINT)
     FROM repositories r WHERE r.name > $1 ORDER BY r.name LIMIT $2";

pub(crate) const STORED_TOTAL: &str =
    "SELECT count(*), CAST(coalesce(sum(size), 0) AS BIGINT) FROM blobs WHERE state = 'live'";

impl RepoUsage {
    pub(crate) fn from_row(name: String, tags: i64, manifests: i64, bytes: i64) -> RepoUsage {
        RepoUsage {
            name,
            tags: tags.max(0) as u64,
            manifests: manifests.max(0) as u64,
            bytes: bytes.max(0) as u64,
        }
    }
}
