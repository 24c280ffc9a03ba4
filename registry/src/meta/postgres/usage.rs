//! [`Usage`] on PostgreSQL.

use super::errors::db_error;
use super::{query, query_opt, PostgresMeta};
use crate::meta::usage::{self, RepoUsage, StoredTotal, Usage};
use crate::meta::{Page, Result};

#[async_trait::async_trait]
impl Usage for PostgresMeta {
    async fn repo_usage(&self, page: &Page) -> Result<Vec<RepoUsage>> {
        let (after, limit) = (page.last.clone().unwrap_or_default(), page.limit.saturating_add(1) as i64);
        let c = self.client().await?;
        let rows = query(&c, usage::REPO_USAGE, &[&after, &limit]).await.map_err(db_error)?;
        Ok(rows.into_iter().map(|r| RepoUsage::from_row(r.get(0), r.get(1), r.get(2), r.get(3))).collect())
    }

    async fn stored_total(&self) -> Result<StoredTotal> {
        let c = self.client().await?;
        let row = query_opt(&c, usage::STORED_TOTAL, &[]).await.map_err(db_error)?;
        let (blobs, bytes): (i64, i64) = row.map_or((0, 0), |r| (r.get(0), r.get(1)));
        Ok(StoredTotal { blobs: blobs.max(0) as u64, bytes: bytes.max(0) as u64 })
    }
}
