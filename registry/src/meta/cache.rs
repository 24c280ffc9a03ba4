//! The pull-through cache's bookkeeping, apart from the repository model in [`super::MetaStore`]:
//! when a cached tag was last confirmed with its upstream, and when each piece of cached content
//! was last pulled, which the cache's size limit and TTL evict by (least recently pulled first).

use super::Result;
use berth_core::oci::{Digest, RepoName, Tag};

/// The name range `[prefix/, prefix0)`: every repository under `prefix/` (`0` follows `/`).
pub(crate) fn prefix_bounds(prefix: &str) -> (String, String) {
    (format!("{prefix}/"), format!("{prefix}0"))
}

/// Cached content an upstream's pull just used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPull {
    pub repo: RepoName,
    pub digest: Digest,
    pub kind: ContentKind,
    pub size: u64,
    /// Unix milliseconds (pulls within one second must still order).
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    Blob,
    Manifest,
}

impl ContentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Blob => "blob",
            ContentKind::Manifest => "manifest",
        }
    }
}

impl ContentKind {
    /// The kind as stored (`blob` or `manifest`; the schema allows no other).
    pub fn from_stored(s: &str) -> ContentKind {
        match s {
            "manifest" => ContentKind::Manifest,
            _ => ContentKind::Blob,
        }
    }
}

impl std::fmt::Display for ContentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of cached content picked for eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedItem {
    pub repo: RepoName,
    pub digest: Digest,
    pub kind: ContentKind,
    pub size: u64,
}

#[async_trait::async_trait]
pub trait CacheIndex: Send + Sync + 'static {
    /// When a cached tag was last confirmed with its upstream.
    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>>;
    async fn set_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()>;
    /// Records pulls of cached content, many at once.
    async fn record_pulls(&self, pulls: Vec<CachedPull>) -> Result<()>;
    /// Total size of the cached content in repositories under `prefix/`.
    async fn cached_size(&self, prefix: &str) -> Result<u64>;
    /// Cached content under `prefix/`, least recently pulled first, pulled before `before` (unix
    /// milliseconds).
    async fn least_recently_pulled(&self, prefix: &str, before: i64, limit: usize)
        -> Result<Vec<CachedItem>>;
    /// Forgets cached content: the manifest (with its tags) or the blob link, and its pull record.
    /// Returns whether any repository still links the bytes.
    async fn evict(&self, item: &CachedItem) -> Result<bool>;
}
