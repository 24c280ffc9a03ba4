//! How a blob leaves, so that deleting one never races a push of the same digest.
//!
//! ```text
//! live ──release──► deleting ──begin_purge──► purging ──(object deleted)──end_purge──► gone
//!   ▲                  │                         │                                     │
//!   ├──any write of ───┘              writers of the digest wait           a day later: no row
//!   │  the digest
//!   └──────── a write whose object is seen stored after the purge (Confirmed) ───────────┘
//! ```
//! A blob is released only when nothing uses it (no repository links it, no manifest is made of
//! it); from then on it answers as absent, so clients upload it again, and that write makes it
//! `live` again. Its object is deleted only while its row is `purging`, and only once readers
//! that were handed it may have finished (a presigned URL's lifetime): so a `live` row always has
//! its object. A writer that finds the row `purging` or `gone` cannot tell whether it wrote its
//! object before the delete or after: it waits for the purge to end, looks, and records the
//! object it then sees as [`Stored::Confirmed`] (or writes it again).
//!
//! Every statement locks the blob's row before it looks at what uses the blob (PostgreSQL:
//! `FOR UPDATE`, then a statement of its own, which sees what committed before the lock); the
//! writers' statements below lock it too. On SQLite the one writer serializes them anyway.
//! Parameters are numbered in order of first appearance (SQLite binds `$n` by that order).

use super::error::Result;
use berth_core::oci::Digest;

/// How the object of a blob being recorded is known to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The caller just wrote it.
    Written,
    /// The caller saw it stored after the digest's last purge had ended.
    Confirmed,
    /// The caller relies on it being stored already (a mount, or a blob it found recorded).
    Assumed,
}

/// The steps of a released blob's way out (the diagram above), each a transaction of the store.
#[async_trait::async_trait]
pub trait Purges: Send + Sync {
    /// Released blobs whose objects may be deleted: released before `deleting_before`, or left
    /// purging since before `purging_before` (unix milliseconds).
    async fn purgeable_blobs(
        &self,
        deleting_before: i64,
        purging_before: i64,
        limit: usize,
    ) -> Result<Vec<Digest>>;
    /// Marks each of them purging (now, by the caller; in one transaction) if it still is
    /// purgeable and unused; false for one that is not (a blob something uses again is made live).
    async fn begin_purges(
        &self,
        digests: Vec<Digest>,
        deleting_before: i64,
        purging_before: i64,
    ) -> Result<Vec<bool>>;
    /// [`Purges::begin_purges`] for one blob.
    async fn begin_purge(&self, digest: &Digest, deleting_before: i64, purging_before: i64) -> Result<bool> {
        let began = self.begin_purges(vec![digest.clone()], deleting_before, purging_before).await?;
        Ok(began.first().copied().unwrap_or(false))
    }
    /// Marks purging blobs whose objects are deleted `gone`.
    async fn end_purges(&self, digests: Vec<Digest>) -> Result<()>;
    /// [`Purges::end_purges`] for one blob.
    async fn end_purge(&self, digest: &Digest) -> Result<()> {
        self.end_purges(vec![digest.clone()]).await
    }
    /// Forgets up to `limit` blobs gone since before `before` (unix milliseconds); how many.
    async fn forget_gone(&self, before: i64, limit: usize) -> Result<u64>;
    /// Whether the blob's object is being deleted.
    async fn blob_purging(&self, digest: &Digest) -> Result<bool>;
}

/// Records a blob whose object the caller wrote at its digest's key: inserts it, or makes a
/// `deleting` one `live` again (where it was), and a `gone` one too if `$4` (the object was seen
/// after the purge), at its digest's key. Returns a row only
/// when the row was inserted or changed: its state then. No row: the blob was `live` already.
/// Parameters: digest, size, created_at (unix seconds), confirmed.
pub(crate) const RECORD_WRITTEN: &str =
    "INSERT INTO blobs (digest, size, created_at, state) VALUES ($1, $2, $3, 'live')
     ON CONFLICT (digest) DO UPDATE
     SET state = CASE WHEN blobs.state = 'purging' OR (blobs.state = 'gone' AND NOT $4) THEN blobs.state
                      ELSE 'live' END,
         state_at = CASE WHEN blobs.state = 'purging' OR (blobs.state = 'gone' AND NOT $4) THEN blobs.state_at
                    END,
         location = CASE WHEN blobs.state = 'gone' AND $4 THEN NULL ELSE blobs.location END
     WHERE blobs.state <> 'live'
     RETURNING state";

/// Records a blob whose object the caller wrote at a key of its own, `$4` (a location: see the
/// `blobs.location` column), which no purge ever deletes unless a row names it: so the object is
/// known stored whatever the row's state. Inserts the blob there, or makes a `gone` one `live`
/// there; a `deleting` one becomes `live` where it was (its object is still stored). Returns a
/// row when the row was inserted or changed: its state and location then. No row: the blob was
/// `live` already, elsewhere. Parameters: digest, size, created_at (unix seconds), location.
pub(crate) const RECORD_AT: &str =
    "INSERT INTO blobs (digest, size, created_at, state, location) VALUES ($1, $2, $3, 'live', $4)
     ON CONFLICT (digest) DO UPDATE
     SET state = CASE WHEN blobs.state = 'purging' THEN blobs.state ELSE 'live' END,
         state_at = CASE WHEN blobs.state = 'purging' THEN blobs.state_at END,
         location = CASE WHEN blobs.state = 'gone' THEN $4 ELSE blobs.location END
     WHERE blobs.state <> 'live'
     RETURNING state, location";

/// Records a blob whose object the caller did not write: a `deleting` one becomes `live` again.
/// Returns its state afterwards; no row when there is no blob. Parameter: digest.
pub(crate) const RECORD_ASSUMED: &str = "UPDATE blobs
     SET state = CASE WHEN state = 'deleting' THEN 'live' ELSE state END,
         state_at = CASE WHEN state = 'deleting' THEN NULL ELSE state_at END
     WHERE digest = $1
     RETURNING state";

/// What no repository links and no manifest is made of (`$n` is the digest's parameter).
macro_rules! unused {
    ($n:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = ",
            $n,
            ") AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = ",
            $n,
            ")"
        )
    };
}

/// Releases a `live` blob that nothing uses. Parameters: now (unix milliseconds), digest.
pub(crate) const RELEASE: &str = concat!(
    "UPDATE blobs SET state = 'deleting', state_at = $1 WHERE digest = $2 AND state = 'live' AND ",
    unused!("$2")
);

/// Blobs whose objects may be deleted: released before the readers' grace (`deleting_before`), or
/// left `purging` by a purge that stopped (`purging_before`). Parameters: deleting_before,
/// purging_before, limit.
///
/// Every statement here that looks for blobs by state says `state <> 'live'` first, in the words
/// of the partial index `blobs_leaving`: SQLite uses a partial index only when the query repeats
/// its condition, and otherwise scans every blob, at each purge.
pub(crate) const PURGEABLE: &str = "SELECT digest FROM blobs
     WHERE state <> 'live'
       AND ((state = 'deleting' AND state_at < $1) OR (state = 'purging' AND state_at < $2))
     ORDER BY state_at LIMIT $3";

/// Purges a process began before it stopped, made purgeable at once: for a store only that
/// process writes (SQLite), whose purges all stopped with it. No parameters.
pub(crate) const ABANDON_PURGES: &str =
    "UPDATE blobs SET state_at = 0 WHERE state <> 'live' AND state = 'purging'";

/// Marks one of [`PURGEABLE`]'s blobs `purging`, if nothing uses it (an older berth's writers
/// link blobs without reviving them). Parameters: now, digest, deleting_before, purging_before.
pub(crate) const BEGIN_PURGE: &str = concat!(
    "UPDATE blobs SET state = 'purging', state_at = $1
     WHERE digest = $2
       AND ((state = 'deleting' AND state_at < $3) OR (state = 'purging' AND state_at < $4))
       AND ",
    unused!("$2")
);

/// A released blob something uses after all becomes `live` again. Parameter: digest.
pub(crate) const REVIVE_USED: &str = "UPDATE blobs SET state = 'live', state_at = NULL
     WHERE digest = $1 AND state = 'deleting'
       AND (EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $1)
            OR EXISTS (SELECT 1 FROM manifests WHERE digest = $1))";

/// A purging blob whose object is deleted is `gone`. Parameters: now, digest.
pub(crate) const END_PURGE: &str =
    "UPDATE blobs SET state = 'gone', state_at = $1 WHERE digest = $2 AND state = 'purging'";

/// Forgets `gone` blobs from before `$1` (unix milliseconds) that nothing uses (an older berth's
/// writers may have linked one); at most `$2` of them.
pub(crate) const FORGET_GONE: &str = concat!(
    "DELETE FROM blobs WHERE state = 'gone' AND state_at < $1
       AND digest IN (SELECT digest FROM blobs
                      WHERE state <> 'live' AND state = 'gone' AND state_at < $1 LIMIT $2)
       AND ",
    unused!("blobs.digest")
);

/// How long a `gone` blob's row stays.
pub const GONE_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether the blob's object is being deleted. Parameter: digest.
pub(crate) const PURGING: &str = "SELECT 1 FROM blobs WHERE digest = $1 AND state = 'purging'";
