//! The pull-through cache's bookkeeping, apart from the repository model in [`super::MetaStore`]:
//! when a cached tag was last confirmed with its upstream, and when each piece of cached content
//! was last pulled, which the cache's size limit and TTL evict by (least recently pulled first);
//! and who is fetching which missing blob, so that one upstream fetch serves every replica.

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

/// The answer to a claim on fetching a missing blob from upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchClaim {
    /// The claimant fetches: the claim was free, expired, or already its own (then renewed).
    Mine,
    /// Another holder is fetching the blob and renewing its claim.
    Elsewhere,
    /// The last fetch failed a moment ago with this outcome (as its holder recorded it), which
    /// stands until the claim expires.
    Failed(String),
}

/// What a running fetch has put in storage for other replicas to stream before it ends (see
/// [`crate::proxy`]'s segments): `published` bytes from the start, in objects of `segment` bytes
/// each named by `fetch_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSegments {
    pub fetch_id: String,
    /// The blob's size, as the upstream declared it.
    pub size: u64,
    pub segment: u64,
    pub published: u64,
}

/// A running (or failed) fetch as the replicas that wait on it see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchState {
    /// Known once the holder has the upstream's answer with a size (never, from replicas too old
    /// to publish segments).
    pub segments: Option<FetchSegments>,
    pub failure: Option<String>,
    /// Unix milliseconds: a running fetch's holder renews it before then, or is gone.
    pub expires_at: i64,
    /// Whether another replica waits for the blob (the holder publishes segments only then).
    pub wanted: bool,
}

impl FetchState {
    /// Reads a row of [`FETCH_STATE`] or [`FOLLOW_FETCH`]'s columns, in their order.
    pub(crate) fn from_columns(
        fetch_id: Option<String>,
        size: Option<i64>,
        segment: Option<i64>,
        published: i64,
        failure: Option<String>,
        expires_at: i64,
        wanted: bool,
    ) -> FetchState {
        let segments = match (fetch_id, size, segment) {
            (Some(fetch_id), Some(size), Some(segment)) if size >= 0 && segment > 0 => Some(FetchSegments {
                fetch_id,
                size: size as u64,
                segment: segment as u64,
                published: published.clamp(0, size) as u64,
            }),
            _ => None,
        };
        FetchState { segments, failure, expires_at, wanted }
    }
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
    /// Returns whether that released the bytes (nothing uses them any more, see
    /// [`super::sweep`]): a purge then deletes them.
    async fn evict(&self, item: &CachedItem) -> Result<bool>;
    /// Claims (or renews) the fetch of `digest` for `holder` until `expires_at` (unix
    /// milliseconds); a claim whose holder stopped renewing it by `now` is taken over, and so is
    /// a failed one if `retry` (a new request), while those that waited on it hear its failure.
    async fn claim_fetch(
        &self,
        digest: &Digest,
        holder: &str,
        now: i64,
        expires_at: i64,
        retry: bool,
    ) -> Result<FetchClaim>;
    /// Ends `holder`'s claim: forgotten when the blob is stored (`failure` = `None`), otherwise
    /// kept with the failure until `expires_at`. Claims expired long before `now` are swept along.
    async fn end_fetch(
        &self,
        digest: &Digest,
        holder: &str,
        failure: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;
    /// Says another replica waits for the fetch of `digest`, and how far it got (`None`: no
    /// claim, so the blob was stored or the fetch is over).
    async fn follow_fetch(&self, digest: &Digest) -> Result<Option<FetchState>>;
    /// How far the fetch of `digest` got, as [`CacheIndex::follow_fetch`] without saying so.
    async fn fetch_state(&self, digest: &Digest) -> Result<Option<FetchState>>;
    /// Records what `holder`'s running fetch of `digest` has published; false when the claim is
    /// no longer its own.
    async fn publish_fetch(&self, digest: &Digest, holder: &str, segments: &FetchSegments) -> Result<bool>;
}

/// Takes a free or expired claim (or a failed one, when retrying), or renews the holder's own
/// running one; changes nothing (0 rows) while another holder's claim or a recent failure stands.
/// Parameters: digest, holder, expires_at, now, retry (SQLite numbers `$n` parameters in order of
/// appearance, as PostgreSQL does).
pub(crate) const CLAIM_FETCH: &str =
    "INSERT INTO proxy_fetches (digest, holder, expires_at) VALUES ($1, $2, $3)
     ON CONFLICT (digest) DO UPDATE
     SET holder = excluded.holder, expires_at = excluded.expires_at, failure = NULL,
         fetch_id = CASE WHEN proxy_fetches.holder = excluded.holder AND proxy_fetches.failure IS NULL
                         THEN proxy_fetches.fetch_id END,
         published = CASE WHEN proxy_fetches.holder = excluded.holder AND proxy_fetches.failure IS NULL
                          THEN proxy_fetches.published ELSE 0 END
     WHERE proxy_fetches.expires_at < $4
        OR (proxy_fetches.holder = excluded.holder AND proxy_fetches.failure IS NULL)
        OR ($5 AND proxy_fetches.failure IS NOT NULL)";

/// A fetch's state, in the columns [`FetchState::from_columns`] reads. Parameter: digest.
pub(crate) const FETCH_STATE: &str = "SELECT fetch_id, size, segment, published, failure, expires_at, wanted
     FROM proxy_fetches WHERE digest = $1";

/// Marks a fetch wanted by another replica, answering [`FETCH_STATE`]'s columns. Parameter: digest.
pub(crate) const FOLLOW_FETCH: &str = "UPDATE proxy_fetches SET wanted = TRUE WHERE digest = $1
     RETURNING fetch_id, size, segment, published, failure, expires_at, wanted";

/// Records a running fetch's segments. Parameters: fetch_id, size, segment, published, digest,
/// holder.
pub(crate) const PUBLISH_FETCH: &str =
    "UPDATE proxy_fetches SET fetch_id = $1, size = $2, segment = $3, published = $4
     WHERE digest = $5 AND holder = $6 AND failure IS NULL";

/// Forgets a stored blob's claim. Parameters: digest, holder.
pub(crate) const FETCH_STORED: &str = "DELETE FROM proxy_fetches WHERE digest = $1 AND holder = $2";
/// Keeps a failed claim with its failure. Parameters (numbered in order of appearance, for
/// SQLite): failure, expires_at, digest, holder.
pub(crate) const FETCH_FAILED: &str =
    "UPDATE proxy_fetches SET failure = $1, expires_at = $2 WHERE digest = $3 AND holder = $4";
/// Removes claims that expired an hour or more before `now`. Parameter: now.
pub(crate) const FETCH_SWEEP: &str =
    "DELETE FROM proxy_fetches WHERE expires_at < CAST($1 AS BIGINT) - 3600000";
