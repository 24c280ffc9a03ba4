//! [`Browse`] on SQLite: each page a read on the reader pool.

use std::collections::HashMap;

use rusqlite::OptionalExtension;

use super::{parse, repo_id, SqliteMeta};
use crate::meta::browse::{self, Browse, TagOrder, TagPage};
use crate::meta::gc::StoredTag;
use crate::meta::Result;
use berth_core::oci::{Digest, RepoName};

#[async_trait::async_trait]
impl Browse for SqliteMeta {
    async fn tag_page(
        &self,
        repo: &RepoName,
        order: TagOrder,
        offset: u64,
        limit: u64,
    ) -> Result<Option<TagPage>> {
        let repo = repo.to_string();
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(None) };
            let total: i64 = c.prepare_cached(browse::TAG_COUNT)?.query_row([id], |r| r.get(0))?;
            if total == 0
                && c.prepare_cached(browse::HOLDS_ANY)?.query_row([id], |_| Ok(())).optional()?.is_none()
            {
                return Ok(None);
            }
            let (limit, offset) = browse::window(offset, limit);
            let rows = c
                .prepare_cached(order.page_sql())?
                .query_map(rusqlite::params![id, limit, offset], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let tags = rows
                .into_iter()
                .map(|(name, d, pushed, pulled, annotations)| {
                    StoredTag::from_row(name, d, pushed, pulled, annotations)
                })
                .collect::<Result<_>>()?;
            Ok(Some(TagPage { total: total.max(0) as u64, tags }))
        })
        .await
    }

    async fn image_sizes(&self, repo: &RepoName, digests: Vec<Digest>) -> Result<HashMap<Digest, u64>> {
        let repo = repo.to_string();
        let roots = serde_json::to_string(&digests.iter().map(Digest::as_str).collect::<Vec<_>>())
            .map_err(|e| crate::meta::MetaError::Db(e.to_string()))?;
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(HashMap::new()) };
            let rows = c
                .prepare_cached(browse::IMAGE_SIZES_SQLITE)?
                .query_map(rusqlite::params![roots, id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(|(d, size)| Ok((parse("digest", d)?, size.max(0) as u64))).collect()
        })
        .await
    }
}
