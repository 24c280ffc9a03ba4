//! Purging released blobs ([`crate::meta::sweep`]) on SQLite: the one writer serializes each
//! step with every push of the digest, so the step's check of what uses the blob sees them all.

use rusqlite::params;

use super::writer::Durability;
use super::{parse, SqliteMeta};
use crate::meta::sweep::{self as sql, Purges};
use crate::meta::{now_millis, Result};
use berth_core::oci::Digest;

#[async_trait::async_trait]
impl Purges for SqliteMeta {
    async fn purgeable_blobs(
        &self,
        deleting_before: i64,
        purging_before: i64,
        limit: usize,
    ) -> Result<Vec<Digest>> {
        self.read(move |c| {
            let digests = c
                .prepare_cached(sql::PURGEABLE)?
                .query_map(params![deleting_before, purging_before, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            digests.into_iter().map(|d| parse("digest", d)).collect()
        })
        .await
    }

    async fn begin_purges(
        &self,
        digests: Vec<Digest>,
        deleting_before: i64,
        purging_before: i64,
    ) -> Result<Vec<bool>> {
        self.write(Durability::Synced, move |tx| {
            let now = now_millis();
            let (mut begin, mut revive) =
                (tx.prepare_cached(sql::BEGIN_PURGE)?, tx.prepare_cached(sql::REVIVE_USED)?);
            let mut began = Vec::with_capacity(digests.len());
            for d in &digests {
                let ok = begin.execute(params![now, d.as_str(), deleting_before, purging_before])? > 0;
                if !ok {
                    revive.execute([d.as_str()])?;
                }
                began.push(ok);
            }
            Ok(began)
        })
        .await
    }

    async fn end_purges(&self, digests: Vec<Digest>) -> Result<()> {
        self.write(Durability::Synced, move |tx| {
            let mut end = tx.prepare_cached(sql::END_PURGE)?;
            let now = now_millis();
            for d in &digests {
                end.execute(params![now, d.as_str()])?;
            }
            Ok(())
        })
        .await
    }

    async fn forget_gone(&self, before: i64, limit: usize) -> Result<u64> {
        self.write(Durability::Unsynced, move |tx| {
            Ok(tx.prepare_cached(sql::FORGET_GONE)?.execute(params![before, limit as i64])? as u64)
        })
        .await
    }

    async fn blob_purging(&self, digest: &Digest) -> Result<bool> {
        let digest = digest.to_string();
        self.read(move |c| Ok(c.prepare_cached(sql::PURGING)?.exists([digest])?)).await
    }
}
