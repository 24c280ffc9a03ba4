//! What a scrub reads and records ([`Scrub`]): which stored objects the metadata knows, the
//! adoption of an object it does not know as a released blob (so it leaves on the one safe
//! delete path, [`super::sweep`], and a push of its digest meanwhile keeps it), the live blobs to
//! verify, and what the pull-through cache holds of a digest (evicted when its bytes are corrupt,
//! so the next pull fetches them again).

use super::cache::{CacheIndex, CachedItem};
use super::Result;
use berth_core::oci::Digest;

#[async_trait::async_trait]
pub trait Scrub: CacheIndex {
    /// The digests recorded, in any state, from `from` up to (not including) `to`, sorted.
    async fn recorded_blobs(&self, from: &str, to: &str) -> Result<Vec<String>>;
    /// Records an object no row knows as a released blob, unless a row for its digest appeared
    /// meanwhile; whether it did. `now` in unix milliseconds.
    async fn adopt_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool>;
    /// Live blobs sorted after `after`, at most `limit`, with their recorded sizes.
    async fn live_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>>;
    /// Whether a blob's row names `key` as its object's location (the object is a blob, not
    /// what an upload left).
    async fn is_location(&self, key: &str) -> Result<bool>;
    /// What the pull-through cache holds of the digest, in every repository.
    async fn cached_items(&self, digest: &Digest) -> Result<Vec<CachedItem>>;
}

/// Parameters: from, to.
pub(crate) const RECORDED_BLOBS: &str =
    "SELECT digest FROM blobs WHERE digest >= $1 AND digest < $2 ORDER BY digest";

/// Parameters: digest, size, created at (unix seconds), released at (unix milliseconds).
pub(crate) const ADOPT_ORPHAN: &str = "INSERT INTO blobs (digest, size, created_at, state, state_at)
     VALUES ($1, $2, $3, 'deleting', $4) ON CONFLICT (digest) DO NOTHING";

/// Parameters: after ('' for the start), limit.
pub(crate) const LIVE_BLOBS: &str =
    "SELECT digest, size FROM blobs WHERE state = 'live' AND digest > $1 ORDER BY digest LIMIT $2";

/// Parameter: the key.
pub(crate) const IS_LOCATION: &str = "SELECT count(*) FROM blobs WHERE location = $1";

/// Parameter: digest.
pub(crate) const CACHED_ITEMS: &str = "SELECT r.name, p.digest, p.kind, p.size FROM proxy_content p
     JOIN repositories r ON r.id = p.repository_id WHERE p.digest = $1 ORDER BY r.name";
