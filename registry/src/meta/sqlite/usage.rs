//! [`Usage`] on SQLite.

use rusqlite::params;

use super::SqliteMeta;
use crate::meta::usage::{self, RepoUsage, StoredTotal, Usage};
use crate::meta::{Page, Result};

#[async_trait::async_trait]
impl Usage for SqliteMeta {
    async fn repo_usage(&self, page: &Page) -> Result<Vec<RepoUsage>> {
        let (after, limit) = (page.last.clone().unwrap_or_default(), page.limit.saturating_add(1) as i64);
        self.read(move |c| {
            let rows = c
                .prepare_cached(usage::REPO_USAGE)?
                .query_map(params![after, limit], |r| {
                    Ok(RepoUsage::from_row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn stored_total(&self) -> Result<StoredTotal> {
        self.read(|c| {
            let (blobs, bytes): (i64, i64) =
                c.prepare_cached(usage::STORED_TOTAL)?.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(StoredTotal { blobs: blobs.max(0) as u64, bytes: bytes.max(0) as u64 })
        })
        .await
    }
}
