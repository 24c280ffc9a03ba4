//! [`Collect`] on SQLite: the one writer serializes each removal with every push, so the
//! removal's own checks see everything that committed before it.
//!
//! Removals of tags, manifests and links do not wait for the disk ([`Durability::Unsynced`]):
//! one lost to a power cut only comes back, to be removed again by the next run, and nothing
//! that follows from it is lost with it. The release of a blob (after which its bytes are
//! deleted) is synced, and the log is synced in order, so that sync also makes every removal
//! before it durable. Pushes beside a collection so share the disk's syncs with far fewer
//! writes.

use rusqlite::{params, Connection};

use super::writer::Durability;
use super::{parse, repo_id, SqliteMeta};
use crate::meta::browse::StoredTag;
use crate::meta::gc::{self, Collect, ContentsBuilder, RepoContents};
use crate::meta::{now_millis, Result};
use berth_core::oci::{Digest, RepoName};

#[async_trait::async_trait]
impl Collect for SqliteMeta {
    async fn repo_contents(&self, repo: &RepoName) -> Result<RepoContents> {
        let repo = repo.to_string();
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(RepoContents::default()) };
            contents(c, id)
        })
        .await
    }

    async fn collect_manifests(
        &self,
        repo: &RepoName,
        digests: Vec<Digest>,
        before: i64,
    ) -> Result<Vec<bool>> {
        let name = repo.to_string();
        self.write_clearing(repo, Durability::Unsynced, move |tx| {
            each(tx, &name, &digests, gc::COLLECT_MANIFEST, before)
        })
        .await
    }

    async fn collect_links(&self, repo: &RepoName, digests: Vec<Digest>, before: i64) -> Result<Vec<bool>> {
        let name = repo.to_string();
        self.write_clearing(repo, Durability::Unsynced, move |tx| {
            each(tx, &name, &digests, gc::COLLECT_LINK, before)
        })
        .await
    }

    async fn collect_tags(&self, repo: &RepoName, tags: Vec<(String, Digest)>) -> Result<Vec<bool>> {
        let name = repo.to_string();
        self.write_clearing(repo, Durability::Unsynced, move |tx| {
            let Some(id) = repo_id(tx, &name)? else { return Ok(vec![false; tags.len()]) };
            let mut remove = tx.prepare_cached(gc::COLLECT_TAG)?;
            tags.iter().map(|(t, d)| Ok(remove.execute(params![id, t, d.as_str()])? > 0)).collect()
        })
        .await
    }

    async fn blob_uses(&self, digest: &Digest) -> Result<u64> {
        let digest = digest.to_string();
        self.read(move |c| {
            let n: i64 = c.prepare_cached(gc::BLOB_USES)?.query_row([digest], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn unused_blobs(
        &self,
        before: i64,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>> {
        let after = after.map(Digest::to_string).unwrap_or_default();
        self.read(move |c| {
            let rows = c
                .prepare_cached(gc::UNUSED_BLOBS)?
                .query_map(params![before, after, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(|(d, size)| Ok((parse("digest", d)?, size.max(0) as u64))).collect()
        })
        .await
    }

    async fn release_unused(&self, digests: Vec<Digest>, before: i64) -> Result<Vec<bool>> {
        self.write(Durability::Synced, move |tx| {
            let mut release = tx.prepare_cached(gc::RELEASE_UNUSED)?;
            let now = now_millis();
            digests.iter().map(|d| Ok(release.execute(params![now, d.as_str(), before])? > 0)).collect()
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
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(Durability::Synced, move |tx| {
            if tx.prepare_cached(gc::CLAIM_LEASE)?.execute(params![name, holder, until, now])? == 1 {
                return Ok(Ok(()));
            }
            let other: String = tx.prepare_cached(gc::LEASE_HOLDER)?.query_row([&name], |r| r.get(0))?;
            Ok(Err(other))
        })
        .await
    }

    async fn end_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(Durability::Synced, move |tx| {
            tx.prepare_cached(gc::END_LEASE)?.execute(params![name, holder])?;
            Ok(())
        })
        .await
    }
}

/// Runs the removal `sql` (parameters: repository id, digest, before) for each digest, in order.
fn each(tx: &Connection, repo: &str, digests: &[Digest], sql: &str, before: i64) -> Result<Vec<bool>> {
    let Some(id) = repo_id(tx, repo)? else { return Ok(vec![false; digests.len()]) };
    let mut remove = tx.prepare_cached(sql)?;
    digests.iter().map(|d| Ok(remove.execute(params![id, d.as_str(), before])? > 0)).collect()
}

/// Reads `id`'s contents row by row into one table of its digests (see [`ContentsBuilder`]).
fn contents(c: &Connection, id: i64) -> Result<RepoContents> {
    let mut b = ContentsBuilder::default();
    let mut stmt = c.prepare_cached(gc::MANIFESTS)?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        b.manifest(text(r, 0)?, r.get_ref(1)?.as_str_or_null().map_err(db)?, r.get(2)?, r.get(3)?)?;
    }
    let mut stmt = c.prepare_cached(gc::TAGS)?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        b.tag(StoredTag::from_row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)?);
    }
    let mut stmt = c.prepare_cached(gc::EDGES)?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        b.edge(text(r, 0)?, text(r, 1)?, r.get(2)?)?;
    }
    let mut stmt = c.prepare_cached(gc::LINKS)?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        b.link(text(r, 0)?, r.get(1)?, r.get(2)?)?;
    }
    Ok(b.finish())
}

/// Column `i` of `r` as text, borrowed from the row.
fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str> {
    r.get_ref(i)?.as_str().map_err(db)
}

fn db(e: rusqlite::types::FromSqlError) -> crate::meta::MetaError {
    crate::meta::MetaError::Db(format!("a stored digest is not text: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps of `sql`'s query plan, its `params` parameters all bound to 1.
    async fn plan(m: &SqliteMeta, sql: &'static str, params: usize) -> Vec<String> {
        m.read(move |c| {
            let mut explain = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let args = vec![1_i64; params];
            let rows = explain.query_map(rusqlite::params_from_iter(&args), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
        .unwrap()
    }

    /// Each removal's check finds what needs the candidate by one index lookup, not by a scan of
    /// the repository's references (which made a run over 10,000 manifests hold the writer
    /// 30 ms per batch).
    #[tokio::test]
    async fn removal_checks_look_needs_up_by_index() {
        let m = SqliteMeta::temporary().unwrap();
        for sql in [gc::COLLECT_MANIFEST, gc::COLLECT_LINK] {
            let plan = plan(&m, sql, 3).await;
            let by_child = "manifest_references_by_child (repository_id=? AND child_digest=? AND kind=?)";
            assert!(plan.iter().any(|step| step.contains(by_child)), "{sql}: {plan:#?}");
        }
    }

    /// What looks for blobs by state (each purge, each start) reads the few that are leaving,
    /// never every blob.
    #[tokio::test]
    async fn purges_find_leaving_blobs_by_index() {
        use crate::meta::sweep::{ABANDON_PURGES, FORGET_GONE, PURGEABLE};
        let m = SqliteMeta::temporary().unwrap();
        for (sql, n) in [(PURGEABLE, 3), (FORGET_GONE, 2), (ABANDON_PURGES, 0)] {
            let plan = plan(&m, sql, n).await;
            assert!(!plan.iter().any(|step| step.trim() == "SCAN blobs"), "{sql}: {plan:#?}");
        }
    }
}
