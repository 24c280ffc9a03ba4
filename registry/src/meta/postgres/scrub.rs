//! [`Scrub`] on PostgreSQL.

use super::errors::db_error;
use super::{execute, parse, query, size, PostgresMeta};
use crate::meta::cache::CachedItem;
use crate::meta::scrub::{self, Scrub};
use crate::meta::Result;
use berth_core::oci::Digest;

#[async_trait::async_trait]
impl Scrub for PostgresMeta {
    async fn recorded_blobs(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = query(&c, scrub::RECORDED_BLOBS, &[&from, &to]).await.map_err(db_error)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn adopt_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool> {
        let c = self.client().await?;
        let size = size.min(i64::MAX as u64) as i64;
        let n = execute(&c, scrub::ADOPT_ORPHAN, &[&digest.as_str(), &size, &(now / 1000), &now])
            .await
            .map_err(db_error)?;
        Ok(n > 0)
    }

    async fn live_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>> {
        let c = self.client().await?;
        let after = after.map_or("", Digest::as_str);
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = query(&c, scrub::LIVE_BLOBS, &[&after, &limit]).await.map_err(db_error)?;
        rows.into_iter().map(|r| Ok((parse("digest", r.get(0))?, size(r.get(1))))).collect()
    }

    async fn is_location(&self, key: &str) -> Result<bool> {
        let c = self.client().await?;
        let rows = query(&c, scrub::IS_LOCATION, &[&key]).await.map_err(db_error)?;
        Ok(rows.first().is_some_and(|r| r.get::<_, i64>(0) > 0))
    }

    async fn cached_items(&self, digest: &Digest) -> Result<Vec<CachedItem>> {
        let c = self.client().await?;
        let rows = query(&c, scrub::CACHED_ITEMS, &[&digest.as_str()]).await.map_err(db_error)?;
        rows.iter().map(super::cache::cached_item).collect()
    }
}
