//! The review queue: repositories whose content changed (a manifest pushed or deleted, a tag moved
//! or deleted, a blob linked or unlinked) since a collection last looked at them. Changes are
//! noted in memory and written behind in batches ([`super::MetaStore::queue_reviews`]); a
//! collection over the queue ([`ReviewQueue`]) looks only at those repositories, so frequent
//! collections cost what changed, not what is stored. A note lost with a replica only waits for
//! the next full collection, which looks at everything and then empties the queue of what it
//! looked at (in one statement, not one per repository).

use super::Result;
use berth_core::oci::RepoName;

#[async_trait::async_trait]
pub trait ReviewQueue: Send + Sync {
    /// Repositories queued before `before` (unix seconds), sorted after `after`, at most `limit`.
    async fn queued(&self, before: i64, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// A collection looked at `repo` with everything changed before `before` in view: it leaves
    /// the queue, unless it changed since (then it waits for a later look).
    async fn reviewed(&self, repo: &RepoName, before: i64) -> Result<()>;
    /// A collection looked at every repository named after `after` (from the start: `None`) up
    /// to `through`, with everything changed before `before` in view: as [`Self::reviewed`] for
    /// each.
    async fn reviewed_range(&self, after: Option<&str>, through: &str, before: i64) -> Result<()>;
    /// How many repositories are queued, and how many of them since before `overdue_before`.
    async fn queue_depth(&self, overdue_before: i64) -> Result<(u64, u64)>;
}

/// Parameters: repository, first change, last change (unix seconds).
pub(crate) const QUEUE_REVIEW: &str = "INSERT INTO gc_queue (repository, queued_at, touched_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (repository) DO UPDATE SET touched_at = excluded.touched_at
     WHERE gc_queue.touched_at < excluded.touched_at";

/// Parameters: before, after ('' for the start), limit.
pub(crate) const QUEUED: &str = "SELECT repository FROM gc_queue
     WHERE queued_at < $1 AND repository > $2 ORDER BY repository LIMIT $3";

/// Parameters: repository, before.
pub(crate) const REVIEWED: &str = "DELETE FROM gc_queue WHERE repository = $1 AND touched_at < $2";
/// A repository that changed during its review waits from its last change. Parameter: repository.
pub(crate) const REQUEUE: &str = "UPDATE gc_queue SET queued_at = touched_at WHERE repository = $1";
/// Parameters: after ('' for the start), through, before.
pub(crate) const REVIEWED_RANGE: &str =
    "DELETE FROM gc_queue WHERE repository > $1 AND repository <= $2 AND touched_at < $3";
/// What is left in the range changed after the cutoff. Parameters: after, through.
pub(crate) const REQUEUE_RANGE: &str = "UPDATE gc_queue SET queued_at = touched_at
     WHERE repository > $1 AND repository <= $2 AND queued_at < touched_at";

/// Parameter: overdue before.
pub(crate) const QUEUE_DEPTH: &str = "SELECT count(*),
     CAST(coalesce(sum(CASE WHEN queued_at < $1 THEN 1 ELSE 0 END), 0) AS BIGINT) FROM gc_queue";
