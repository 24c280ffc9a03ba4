//! Purging released blobs ([`crate::meta::sweep`]) on PostgreSQL: each step locks the blob's row
//! first, so the check of what uses it that follows (a statement of its own) sees every write
//! that held the lock before.

use super::errors::db_error;
use super::{execute, query, query_opt, PostgresMeta};
use crate::meta::sweep::{BEGIN_PURGE, FORGET_GONE, PURGEABLE, PURGING, REVIVE_USED};
use crate::meta::{now_millis, parse_stored, Purges, Result};
use berth_core::oci::Digest;

/// [`crate::meta::sweep::END_PURGE`] for many at once. Parameters: now, digests.
const END_PURGES: &str =
    "UPDATE blobs SET state = 'gone', state_at = $1 WHERE digest = ANY($2) AND state = 'purging'";

/// Locks a blob's row until the transaction ends. Parameter: digest.
pub(super) const LOCK: &str = "SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE";

#[async_trait::async_trait]
impl Purges for PostgresMeta {
    async fn purgeable_blobs(
        &self,
        deleting_before: i64,
        purging_before: i64,
        limit: usize,
    ) -> Result<Vec<Digest>> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows =
            query(&c, PURGEABLE, &[&deleting_before, &purging_before, &limit]).await.map_err(db_error)?;
        rows.into_iter().map(|r| parse_stored("digest", r.get(0))).collect()
    }

    async fn begin_purges(
        &self,
        digests: Vec<Digest>,
        deleting_before: i64,
        purging_before: i64,
    ) -> Result<Vec<bool>> {
        self.write(true, move |tx| {
            let digests = digests.clone();
            Box::pin(async move {
                let mut began = Vec::with_capacity(digests.len());
                for d in &digests {
                    let d = d.as_str();
                    query_opt(tx, LOCK, &[&d]).await?;
                    let ok =
                        execute(tx, BEGIN_PURGE, &[&now_millis(), &d, &deleting_before, &purging_before])
                            .await?
                            > 0;
                    if !ok {
                        execute(tx, REVIVE_USED, &[&d]).await?;
                    }
                    began.push(ok);
                }
                Ok(began)
            })
        })
        .await
    }

    async fn end_purges(&self, digests: Vec<Digest>) -> Result<()> {
        let c = self.client().await?;
        let digests: Vec<&str> = digests.iter().map(Digest::as_str).collect();
        execute(&c, END_PURGES, &[&now_millis(), &digests]).await.map_err(db_error)?;
        Ok(())
    }

    async fn forget_gone(&self, before: i64, limit: usize) -> Result<u64> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        execute(&c, FORGET_GONE, &[&before, &limit]).await.map_err(db_error)
    }

    async fn blob_purging(&self, digest: &Digest) -> Result<bool> {
        let c = self.client().await?;
        Ok(query_opt(&c, PURGING, &[&digest.as_str()]).await.map_err(db_error)?.is_some())
    }
}
