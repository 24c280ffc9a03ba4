//! [`Browse`] on PostgreSQL: each page one connection's few statements.

use std::collections::HashMap;

use super::errors::db_error;
use super::{parse, query, query_opt, repo_id, size, PostgresMeta};
use crate::meta::browse::{self, Browse, StoredTag, TagOrder, TagPage};
use crate::meta::Result;
use berth_core::oci::{Digest, RepoName};

#[async_trait::async_trait]
impl Browse for PostgresMeta {
    async fn tag_page(
        &self,
        repo: &RepoName,
        order: TagOrder,
        offset: u64,
        limit: u64,
    ) -> Result<Option<TagPage>> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await.map_err(db_error)? else { return Ok(None) };
        let total: i64 =
            query_opt(&c, browse::TAG_COUNT, &[&id]).await.map_err(db_error)?.map_or(0, |r| r.get(0));
        if total == 0 && query_opt(&c, browse::HOLDS_ANY, &[&id]).await.map_err(db_error)?.is_none() {
            return Ok(None);
        }
        let (limit, offset) = browse::window(offset, limit);
        let rows = query(&c, order.page_sql(), &[&id, &limit, &offset]).await.map_err(db_error)?;
        let tags = rows
            .into_iter()
            .map(|r| StoredTag::from_row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect::<Result<_>>()?;
        Ok(Some(TagPage { total: size(total), tags }))
    }

    async fn image_sizes(&self, repo: &RepoName, digests: Vec<Digest>) -> Result<HashMap<Digest, u64>> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await.map_err(db_error)? else { return Ok(HashMap::new()) };
        let roots: Vec<&str> = digests.iter().map(Digest::as_str).collect();
        let rows = query(&c, browse::IMAGE_SIZES_POSTGRES, &[&roots, &id]).await.map_err(db_error)?;
        rows.into_iter().map(|r| Ok((parse("digest", r.get(0))?, size(r.get(1))))).collect()
    }
}
