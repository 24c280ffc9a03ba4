//! [`Scrub`] on SQLite.

use rusqlite::params;

use super::writer::Durability;
use super::{parse, SqliteMeta};
use crate::meta::cache::CachedItem;
use crate::meta::scrub::{self, Scrub};
use crate::meta::Result;
use berth_core::oci::Digest;

#[async_trait::async_trait]
impl Scrub for SqliteMeta {
    async fn recorded_blobs(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.read(move |c| {
            let rows = c
                .prepare_cached(scrub::RECORDED_BLOBS)?
                .query_map([from, to], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn adopt_orphan(&self, digest: &Digest, size: u64, now: i64) -> Result<bool> {
        let digest = digest.to_string();
        let size = size.min(i64::MAX as u64) as i64;
        self.write(Durability::Synced, move |tx| {
            let n =
                tx.prepare_cached(scrub::ADOPT_ORPHAN)?.execute(params![digest, size, now / 1000, now])?;
            Ok(n > 0)
        })
        .await
    }

    async fn live_blobs(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>> {
        let after = after.map(Digest::to_string).unwrap_or_default();
        self.read(move |c| {
            let rows = c
                .prepare_cached(scrub::LIVE_BLOBS)?
                .query_map(params![after, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(|(d, size)| Ok((parse("digest", d)?, size.max(0) as u64))).collect()
        })
        .await
    }

    async fn is_location(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.read(move |c| {
            let n: i64 = c.prepare_cached(scrub::IS_LOCATION)?.query_row([key], |r| r.get(0))?;
            Ok(n > 0)
        })
        .await
    }

    async fn cached_items(&self, digest: &Digest) -> Result<Vec<CachedItem>> {
        let digest = digest.to_string();
        self.read(move |c| {
            let rows = c
                .prepare_cached(scrub::CACHED_ITEMS)?
                .query_map([digest], super::cache::cached_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(super::cache::cached_item).collect()
        })
        .await
    }
}
