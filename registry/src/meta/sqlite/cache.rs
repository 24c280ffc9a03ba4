//! The pull-through cache's bookkeeping in SQLite: when each cached tag was last confirmed, and
//! when each piece of cached content was last pulled (for size limits and TTLs).

use rusqlite::{params, OptionalExtension};

use super::writer::Durability;
use super::{ensure_repo, parse, repo_id, SqliteMeta};
use crate::meta::cache::{
    prefix_bounds, CacheIndex, CachedItem, CachedPull, ContentKind, FetchClaim, FetchSegments, FetchState,
    CLAIM_FETCH, FETCH_FAILED, FETCH_STATE, FETCH_STORED, FETCH_SWEEP, FOLLOW_FETCH, PUBLISH_FETCH,
};
use crate::meta::Result;
use berth_core::oci::{Digest, RepoName, Tag};

/// A row of repository name, digest, kind and size, as read.
pub(super) type CachedRow = (String, String, String, i64);

pub(super) fn cached_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// The item a [`cached_row`] names.
pub(super) fn cached_item((repo, digest, kind, size): CachedRow) -> Result<CachedItem> {
    Ok(CachedItem {
        repo: parse("repository", repo)?,
        digest: parse("digest", digest)?,
        kind: ContentKind::from_stored(&kind),
        size: size.max(0) as u64,
    })
}

#[async_trait::async_trait]
impl CacheIndex for SqliteMeta {
    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT p.checked_at FROM proxy_tags p JOIN repositories r ON r.id = p.repository_id
                 WHERE r.name = ?1 AND p.name = ?2",
            )?
            .query_row([repo, tag], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn set_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(Durability::Unsynced, move |tx| {
            let id = ensure_repo(tx, &repo, at)?;
            tx.execute(
                "INSERT INTO proxy_tags (repository_id, name, checked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (repository_id, name) DO UPDATE SET checked_at = excluded.checked_at",
                params![id, tag, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_pulls(&self, pulls: Vec<CachedPull>) -> Result<()> {
        self.write(Durability::Unsynced, move |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO proxy_content (repository_id, digest, kind, size, pulled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (repository_id, digest) DO UPDATE SET pulled_at = max(pulled_at, excluded.pulled_at)",
            )?;
            for p in &pulls {
                let id = ensure_repo(tx, p.repo.as_str(), p.at)?;
                upsert.execute(params![id, p.digest.as_str(), p.kind.as_str(), p.size as i64, p.at])?;
            }
            Ok(())
        })
        .await
    }

    async fn cached_size(&self, prefix: &str) -> Result<u64> {
        let (lo, hi) = prefix_bounds(prefix);
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT coalesce(sum(p.size), 0) FROM proxy_content p
                     JOIN repositories r ON r.id = p.repository_id WHERE r.name >= ?1 AND r.name < ?2",
                )?
                .query_row([lo, hi], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn least_recently_pulled(
        &self,
        prefix: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<CachedItem>> {
        let (lo, hi) = prefix_bounds(prefix);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.name, p.digest, p.kind, p.size FROM proxy_content p
                 JOIN repositories r ON r.id = p.repository_id
                 WHERE r.name >= ?1 AND r.name < ?2 AND p.pulled_at < ?3
                 ORDER BY p.pulled_at, p.kind, p.digest LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![lo, hi, before, limit as i64], cached_row)?;
            rows.map(|row| cached_item(row?)).collect()
        })
        .await
    }

    async fn evict(&self, item: &CachedItem) -> Result<bool> {
        let repo = item.repo.clone();
        let item = item.clone();
        self.write_clearing(&repo, Durability::Synced, move |tx| {
            let Some(id) = repo_id(tx, item.repo.as_str())? else { return Ok(false) };
            let digest = item.digest.as_str();
            tx.execute(
                "DELETE FROM proxy_content WHERE repository_id = ?1 AND digest = ?2",
                params![id, digest],
            )?;
            match item.kind {
                ContentKind::Manifest => {
                    tx.execute(
                        "DELETE FROM tags WHERE repository_id = ?1 AND digest = ?2",
                        params![id, digest],
                    )?;
                    tx.execute(
                        "DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2",
                        params![id, digest],
                    )?;
                }
                ContentKind::Blob => {
                    tx.execute(
                        "DELETE FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2",
                        params![id, digest],
                    )?;
                }
            }
            let released = tx
                .prepare_cached(crate::meta::sweep::RELEASE)?
                .execute(params![crate::meta::now_millis(), digest])?;
            Ok(released > 0)
        })
        .await
    }

    async fn claim_fetch(
        &self,
        digest: &Digest,
        holder: &str,
        now: i64,
        expires_at: i64,
        retry: bool,
    ) -> Result<FetchClaim> {
        let (digest, holder) = (digest.to_string(), holder.to_owned());
        // Unsynced: a claim lost to a crash only lets a later request fetch again.
        self.write(Durability::Unsynced, move |tx| {
            let taken =
                tx.prepare_cached(CLAIM_FETCH)?.execute(params![digest, holder, expires_at, now, retry])?;
            if taken == 1 {
                return Ok(FetchClaim::Mine);
            }
            let failure: Option<String> = tx
                .prepare_cached("SELECT failure FROM proxy_fetches WHERE digest = ?1")?
                .query_row([&digest], |r| r.get(0))
                .optional()?
                .flatten();
            Ok(failure.map_or(FetchClaim::Elsewhere, FetchClaim::Failed))
        })
        .await
    }

    async fn end_fetch(
        &self,
        digest: &Digest,
        holder: &str,
        failure: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let (digest, holder, failure) = (digest.to_string(), holder.to_owned(), failure.map(str::to_owned));
        self.write(Durability::Unsynced, move |tx| {
            match failure {
                None => tx.prepare_cached(FETCH_STORED)?.execute(params![digest, holder])?,
                Some(f) => {
                    tx.prepare_cached(FETCH_FAILED)?.execute(params![f, expires_at, digest, holder])?
                }
            };
            tx.prepare_cached(FETCH_SWEEP)?.execute([now])?;
            Ok(())
        })
        .await
    }

    async fn follow_fetch(&self, digest: &Digest) -> Result<Option<FetchState>> {
        let digest = digest.to_string();
        self.write(Durability::Unsynced, move |tx| {
            Ok(tx.prepare_cached(FOLLOW_FETCH)?.query_row([&digest], fetch_state).optional()?)
        })
        .await
    }

    async fn fetch_state(&self, digest: &Digest) -> Result<Option<FetchState>> {
        let digest = digest.to_string();
        self.read(move |c| Ok(c.prepare_cached(FETCH_STATE)?.query_row([&digest], fetch_state).optional()?))
            .await
    }

    async fn publish_fetch(&self, digest: &Digest, holder: &str, s: &FetchSegments) -> Result<bool> {
        let (digest, holder, s) = (digest.to_string(), holder.to_owned(), s.clone());
        self.write(Durability::Unsynced, move |tx| {
            let changed = tx.prepare_cached(PUBLISH_FETCH)?.execute(params![
                s.fetch_id,
                s.size as i64,
                s.segment as i64,
                s.published as i64,
                digest,
                holder
            ])?;
            Ok(changed == 1)
        })
        .await
    }
}

fn fetch_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<FetchState> {
    Ok(FetchState::from_columns(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}
