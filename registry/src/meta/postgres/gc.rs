//! [`Collect`] on PostgreSQL: each removal locks its row, then checks in a statement of its own
//! (see [`crate::meta::gc`]). A manifest's removal is announced like any manifest write, so every
//! replica forgets its lookups of the repository first.
//!
//! Removals of tags, manifests and links commit without waiting for the disk
//! (`synchronous_commit = off`), as on SQLite: one lost to a crash of the database only comes
//! back, and the synced release of a blob that follows it flushes the log up to it first.

use super::errors::db_error;
use super::{execute, query, query_opt, repo_id, PostgresMeta, Tx, TxResult};
use crate::meta::browse::StoredTag;
use crate::meta::gc::{self, Collect, ContentsBuilder, RepoContents};
use crate::meta::{now_millis, parse_stored, Result};
use berth_core::oci::{Digest, RepoName};

/// Locks a manifest's row. Parameters: repository id, digest.
const LOCK_MANIFEST: &str = "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 FOR UPDATE";
/// Locks a link's row. Parameters: repository id, digest.
const LOCK_LINK: &str = "SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2 FOR UPDATE";

/// Locks, then runs the removal `sql` (parameters: repository id, digest, before) for each
/// digest, in order.
async fn each(
    tx: &Tx<'_>,
    repo: String,
    digests: Vec<Digest>,
    lock: &str,
    sql: &str,
    before: i64,
) -> TxResult<Vec<bool>> {
    let Some(id) = repo_id(tx, &repo).await? else { return Ok(vec![false; digests.len()]) };
    let mut removed = Vec::with_capacity(digests.len());
    for d in &digests {
        query_opt(tx, lock, &[&id, &d.as_str()]).await?;
        removed.push(execute(tx, sql, &[&id, &d.as_str(), &before]).await? > 0);
    }
    Ok(removed)
}

/// Hands each row of `sql` (parameter: repository id) to `f` as it arrives, none kept after.
async fn each_row<F>(c: &deadpool_postgres::Object, sql: &str, id: i64, mut f: F) -> Result<()>
where
    F: FnMut(&tokio_postgres::Row) -> Result<()>,
{
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    let rows = c.query_raw(&stmt, [&id]).await.map_err(db_error)?;
    futures_util::pin_mut!(rows);
    while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await.map_err(db_error)? {
        f(&r)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Collect for PostgresMeta {
    async fn repo_contents(&self, repo: &RepoName) -> Result<RepoContents> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await.map_err(db_error)? else {
            return Ok(RepoContents::default());
        };
        let mut b = ContentsBuilder::default();
        each_row(&c, gc::MANIFESTS, id, |r| b.manifest(r.get(0), r.get(1), r.get(2), r.get(3))).await?;
        each_row(&c, gc::TAGS, id, |r| {
            b.tag(StoredTag::from_row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))?);
            Ok(())
        })
        .await?;
        each_row(&c, gc::EDGES, id, |r| b.edge(r.get(0), r.get(1), r.get(2))).await?;
        each_row(&c, gc::LINKS, id, |r| b.link(r.get(0), r.get(1), r.get(2))).await?;
        Ok(b.finish())
    }

    async fn collect_manifests(
        &self,
        repo: &RepoName,
        digests: Vec<Digest>,
        before: i64,
    ) -> Result<Vec<bool>> {
        let name = repo.to_string();
        self.write_announced_as(false, repo, move |tx| {
            Box::pin(each(tx, name.clone(), digests.clone(), LOCK_MANIFEST, gc::COLLECT_MANIFEST, before))
        })
        .await
    }

    async fn collect_tags(&self, repo: &RepoName, tags: Vec<(String, Digest)>) -> Result<Vec<bool>> {
        let name = repo.to_string();
        self.write_announced_as(false, repo, move |tx| {
            let (name, tags) = (name.clone(), tags.clone());
            Box::pin(async move {
                let Some(id) = repo_id(tx, &name).await? else { return Ok(vec![false; tags.len()]) };
                let mut removed = Vec::with_capacity(tags.len());
                for (t, d) in &tags {
                    removed.push(execute(tx, gc::COLLECT_TAG, &[&id, t, &d.as_str()]).await? > 0);
                }
                Ok(removed)
            })
        })
        .await
    }

    async fn collect_links(&self, repo: &RepoName, digests: Vec<Digest>, before: i64) -> Result<Vec<bool>> {
        let name = repo.to_string();
        self.write(false, move |tx| {
            Box::pin(each(tx, name.clone(), digests.clone(), LOCK_LINK, gc::COLLECT_LINK, before))
        })
        .await
    }

    async fn blob_uses(&self, digest: &Digest) -> Result<u64> {
        let c = self.client().await?;
        let row = query_opt(&c, gc::BLOB_USES, &[&digest.as_str()]).await.map_err(db_error)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }

    async fn unused_blobs(
        &self,
        before: i64,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>> {
        let c = self.client().await?;
        let after = after.map_or("", Digest::as_str);
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = query(&c, gc::UNUSED_BLOBS, &[&before, &after, &limit]).await.map_err(db_error)?;
        rows.into_iter()
            .map(|r| Ok((parse_stored("digest", r.get(0))?, r.get::<_, i64>(1).max(0) as u64)))
            .collect()
    }

    async fn release_unused(&self, digests: Vec<Digest>, before: i64) -> Result<Vec<bool>> {
        self.write(true, move |tx| {
            let digests = digests.clone();
            Box::pin(async move {
                let mut released = Vec::with_capacity(digests.len());
                for d in &digests {
                    query_opt(tx, super::sweep::LOCK, &[&d.as_str()]).await?;
                    released.push(
                        execute(tx, gc::RELEASE_UNUSED, &[&now_millis(), &d.as_str(), &before]).await? > 0,
                    );
                }
                Ok(released)
            })
        })
        .await
    }

    async fn claim_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<std::result::Result<(), String>> {
        // One statement: the upsert's row lock decides between replicas that claim at once.
        let c = self.client().await?;
        if execute(&c, gc::CLAIM_LEASE, &[&name, &holder, &until, &now]).await.map_err(db_error)? == 1 {
            return Ok(Ok(()));
        }
        let row = query_opt(&c, gc::LEASE_HOLDER, &[&name]).await.map_err(db_error)?;
        Ok(Err(row.map(|r| r.get(0)).unwrap_or_default()))
    }

    async fn end_lease(&self, name: &str, holder: &str) -> Result<()> {
        let c = self.client().await?;
        execute(&c, gc::END_LEASE, &[&name, &holder]).await.map_err(db_error)?;
        Ok(())
    }
}
