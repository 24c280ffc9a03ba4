//! The multipart uploads requests write straight into object storage, in SQLite.

use rusqlite::params;

use super::writer::Durability;
use super::SqliteMeta;
use crate::meta::multiparts::{MultipartLog, FORGET_MULTIPART, LAPSED_MULTIPARTS, RECORD_MULTIPART};
use crate::meta::Result;

#[async_trait::async_trait]
impl MultipartLog for SqliteMeta {
    async fn record_multipart(&self, key: &str, id: &str, expires_at: i64) -> Result<()> {
        let (key, id) = (key.to_owned(), id.to_owned());
        // Synced: a record lost to a power cut would leave its upload billed in the bucket.
        self.write(Durability::Synced, move |tx| {
            tx.prepare_cached(RECORD_MULTIPART)?.execute(params![key, id, expires_at])?;
            Ok(())
        })
        .await
    }

    async fn forget_multipart(&self, key: &str, id: &str) -> Result<()> {
        let (key, id) = (key.to_owned(), id.to_owned());
        // Unsynced: a forget lost to a crash only costs one abort of an upload already gone.
        self.write(Durability::Unsynced, move |tx| {
            tx.prepare_cached(FORGET_MULTIPART)?.execute(params![key, id])?;
            Ok(())
        })
        .await
    }

    async fn lapsed_multiparts(&self, now: i64, limit: usize) -> Result<Vec<(String, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            Ok(c.prepare_cached(LAPSED_MULTIPARTS)?
                .query_map(params![now, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
