//! [`Browse`] on SQLite: each page a read on the reader pool.

use std::collections::HashMap;

use rusqlite::OptionalExtension;

use super::{parse, repo_id, SqliteMeta};
use crate::meta::browse::{self, Browse, StoredTag, TagOrder, TagPage};
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

#[cfg(test)]
mod tests {
    use rusqlite::{params, StatementStatus};

    use super::super::writer::Durability;
    use super::*;

    /// The steps SQLite takes for the first page of 50 in `order` of a repository of `tags`
    /// tags, a third of whose manifests were never pulled (no statistics gathered, as in use).
    async fn first_page_steps(tags: u32, order: TagOrder) -> i32 {
        let m = SqliteMeta::temporary().unwrap();
        m.write(Durability::Unsynced, move |c| {
            c.execute("INSERT INTO repositories (id, name, created_at) VALUES (1, 'big', 0)", [])?;
            c.execute("INSERT INTO repositories (id, name, created_at) VALUES (2, 'small', 0)", [])?;
            for i in 0..tags + 20 {
                let (repo, digest) = (if i < tags { 1 } else { 2 }, format!("sha256:{i:064x}"));
                let pulled = (i % 3 != 0).then_some(i64::from(i * 7 % 1_000));
                c.execute("INSERT INTO blobs (digest, size, created_at) VALUES (?1, 1, 0)", [&digest])?;
                c.execute(
                    "INSERT INTO manifests (repository_id, digest, media_type, size, created_at, pulled_at)
                     VALUES (?1, ?2, 'x', 1, 0, ?3)",
                    params![repo, digest, pulled],
                )?;
                c.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)",
                    params![repo, format!("t{}", i * 7_919 % (tags + 20)), digest, i64::from(i * 13 % 997)],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        m.read(move |c| {
            let mut page = c.prepare(order.page_sql())?;
            let rows = page.query_map(params![1, 50, 0], |_| Ok(()))?.count();
            assert_eq!(rows, 50, "{order:?}");
            Ok(page.get_status(StatementStatus::VmStep))
        })
        .await
        .unwrap()
    }

    /// A page is read from an index in every order: its cost does not grow with the
    /// repository (each once sorted every tag of the repository on each view).
    #[tokio::test]
    async fn a_first_page_costs_the_same_in_a_small_and_a_large_repository() {
        for order in TagOrder::ALL {
            let (small, large) = (first_page_steps(200, order).await, first_page_steps(4_000, order).await);
            assert!(large < small * 2, "{order:?}: {small} steps for 200 tags, {large} for 4,000");
        }
    }
}
