//! The multipart uploads requests write straight into object storage, in PostgreSQL: shared, so
//! any replica's sweep aborts what a crashed one left.

use super::errors::db_error;
use super::{execute, query, PostgresMeta};
use crate::meta::multiparts::{MultipartLog, FORGET_MULTIPART, LAPSED_MULTIPARTS, RECORD_MULTIPART};
use crate::meta::Result;

#[async_trait::async_trait]
impl MultipartLog for PostgresMeta {
    async fn record_multipart(&self, key: &str, id: &str, expires_at: i64) -> Result<()> {
        let c = self.client().await?;
        execute(&c, RECORD_MULTIPART, &[&key, &id, &expires_at]).await.map_err(db_error)?;
        Ok(())
    }

    async fn forget_multipart(&self, key: &str, id: &str) -> Result<()> {
        let c = self.client().await?;
        execute(&c, FORGET_MULTIPART, &[&key, &id]).await.map_err(db_error)?;
        Ok(())
    }

    async fn lapsed_multiparts(&self, now: i64, limit: usize) -> Result<Vec<(String, String)>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query(&c, LAPSED_MULTIPARTS, &[&now, &limit]).await.map_err(db_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
