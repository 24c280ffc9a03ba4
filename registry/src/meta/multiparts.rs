//! Multipart uploads that requests write straight into object storage (a pushed or proxied blob,
//! a copy too large for one request), recorded by id while they run: one that a crash leaves
//! behind is aborted by that id, never found by listing the bucket. A row lives while its writer
//! renews it and goes when the upload is completed or aborted; the sweep aborts those whose lease
//! ran out. Upload sessions record their own multipart upload on the session instead.

use super::Result;

#[async_trait::async_trait]
pub trait MultipartLog: Send + Sync + 'static {
    /// Records the multipart upload `id` at `key` as running until `expires_at` (unix
    /// milliseconds), or moves its lease on.
    async fn record_multipart(&self, key: &str, id: &str, expires_at: i64) -> Result<()>;
    /// Forgets it: completed or aborted.
    async fn forget_multipart(&self, key: &str, id: &str) -> Result<()>;
    /// Up to `limit` uploads (key, id) whose lease ran out before `now`, oldest first.
    async fn lapsed_multiparts(&self, now: i64, limit: usize) -> Result<Vec<(String, String)>>;
}

/// Parameters: key, id, expires_at.
pub(crate) const RECORD_MULTIPART: &str = "INSERT INTO multipart_uploads (key, upload_id, expires_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (key, upload_id) DO UPDATE SET expires_at = excluded.expires_at";

/// Parameters: key, id.
pub(crate) const FORGET_MULTIPART: &str = "DELETE FROM multipart_uploads WHERE key = $1 AND upload_id = $2";

/// Parameters: now, limit.
pub(crate) const LAPSED_MULTIPARTS: &str =
    "SELECT key, upload_id FROM multipart_uploads WHERE expires_at < $1 ORDER BY expires_at LIMIT $2";
