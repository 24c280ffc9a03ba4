//! The pull-through cache's bookkeeping in PostgreSQL, shared by every replica: one size account
//! and one least-recently-pulled order for the whole cache.

use super::errors::db_error;
use super::{ensure_repo, execute, parse, query, query_opt, repo_id, size, PostgresMeta, Tx, TxFuture};
use crate::meta::cache::{
    prefix_bounds, CacheIndex, CachedItem, CachedPull, ContentKind, FetchClaim, FetchSegments, FetchState,
    CLAIM_FETCH, FETCH_FAILED, FETCH_STATE, FETCH_STORED, FETCH_SWEEP, FOLLOW_FETCH, PUBLISH_FETCH,
};
use crate::meta::Result;
use berth_core::oci::{Digest, RepoName, Tag};

/// A row of repository name, digest, kind and size.
pub(super) fn cached_item(r: &tokio_postgres::Row) -> Result<CachedItem> {
    Ok(CachedItem {
        repo: parse("repository", r.get(0))?,
        digest: parse("digest", r.get(1))?,
        kind: ContentKind::from_stored(r.get(2)),
        size: size(r.get(3)),
    })
}

#[async_trait::async_trait]
impl CacheIndex for PostgresMeta {
    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>> {
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "SELECT p.checked_at FROM proxy_tags p JOIN repositories r ON r.id = p.repository_id
             WHERE r.name = $1 AND p.name = $2",
            &[&repo.as_str(), &tag.as_str()],
        )
        .await
        .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(false, move |tx| {
            let (repo, tag) = (repo.clone(), tag.clone());
            Box::pin(async move {
                let id = ensure_repo(tx, &repo, at).await?;
                execute(
                    tx,
                    "INSERT INTO proxy_tags (repository_id, name, checked_at) VALUES ($1, $2, $3)
                     ON CONFLICT (repository_id, name) DO UPDATE SET checked_at = excluded.checked_at",
                    &[&id, &tag, &at],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn record_pulls(&self, pulls: Vec<CachedPull>) -> Result<()> {
        self.write(false, move |tx| {
            let pulls = pulls.clone();
            Box::pin(async move {
                for p in &pulls {
                    let id = ensure_repo(tx, p.repo.as_str(), p.at / 1000).await?;
                    execute(
                        tx,
                        "INSERT INTO proxy_content (repository_id, digest, kind, size, pulled_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (repository_id, digest)
                         DO UPDATE SET pulled_at = greatest(proxy_content.pulled_at, excluded.pulled_at)",
                        &[&id, &p.digest.as_str(), &p.kind.as_str(), &(p.size as i64), &p.at],
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn cached_size(&self, prefix: &str) -> Result<u64> {
        let (lo, hi) = prefix_bounds(prefix);
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "SELECT coalesce(sum(p.size), 0)::bigint FROM proxy_content p
             JOIN repositories r ON r.id = p.repository_id WHERE r.name >= $1 AND r.name < $2",
            &[&lo, &hi],
        )
        .await
        .map_err(db_error)?;
        Ok(row.map_or(0, |r| size(r.get(0))))
    }

    async fn least_recently_pulled(
        &self,
        prefix: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<CachedItem>> {
        let (lo, hi) = prefix_bounds(prefix);
        let c = self.client().await?;
        let rows = query(
            &c,
            "SELECT r.name, p.digest, p.kind, p.size FROM proxy_content p
             JOIN repositories r ON r.id = p.repository_id
             WHERE r.name >= $1 AND r.name < $2 AND p.pulled_at < $3
             ORDER BY p.pulled_at, p.kind, p.digest LIMIT $4",
            &[&lo, &hi, &before, &(limit.min(i64::MAX as usize) as i64)],
        )
        .await
        .map_err(db_error)?;
        rows.iter().map(cached_item).collect()
    }

    async fn evict(&self, item: &CachedItem) -> Result<bool> {
        let item = item.clone();
        match item.kind {
            // A manifest's lookups are kept by every replica: they must forget them.
            ContentKind::Manifest => {
                let repo = item.repo.clone();
                self.write_announced(&repo, move |tx| evict_tx(tx, item.clone())).await
            }
            ContentKind::Blob => self.write(true, move |tx| evict_tx(tx, item.clone())).await,
        }
    }

    async fn claim_fetch(
        &self,
        digest: &Digest,
        holder: &str,
        now: i64,
        expires_at: i64,
        retry: bool,
    ) -> Result<FetchClaim> {
        // One statement each, outside a transaction: the row lock of the upsert decides between
        // replicas that claim at once.
        let c = self.client().await?;
        let taken = execute(&c, CLAIM_FETCH, &[&digest.as_str(), &holder, &expires_at, &now, &retry])
            .await
            .map_err(db_error)?;
        if taken == 1 {
            return Ok(FetchClaim::Mine);
        }
        let failure: Option<String> =
            query_opt(&c, "SELECT failure FROM proxy_fetches WHERE digest = $1", &[&digest.as_str()])
                .await
                .map_err(db_error)?
                .and_then(|r| r.get(0));
        Ok(failure.map_or(FetchClaim::Elsewhere, FetchClaim::Failed))
    }

    async fn end_fetch(
        &self,
        digest: &Digest,
        holder: &str,
        failure: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let c = self.client().await?;
        match failure {
            None => execute(&c, FETCH_STORED, &[&digest.as_str(), &holder]).await,
            Some(f) => execute(&c, FETCH_FAILED, &[&f, &expires_at, &digest.as_str(), &holder]).await,
        }
        .map_err(db_error)?;
        execute(&c, FETCH_SWEEP, &[&now]).await.map_err(db_error)?;
        Ok(())
    }

    async fn follow_fetch(&self, digest: &Digest) -> Result<Option<FetchState>> {
        let c = self.client().await?;
        let row = query_opt(&c, FOLLOW_FETCH, &[&digest.as_str()]).await.map_err(db_error)?;
        Ok(row.as_ref().map(fetch_state))
    }

    async fn fetch_state(&self, digest: &Digest) -> Result<Option<FetchState>> {
        let c = self.client().await?;
        let row = query_opt(&c, FETCH_STATE, &[&digest.as_str()]).await.map_err(db_error)?;
        Ok(row.as_ref().map(fetch_state))
    }

    async fn publish_fetch(&self, digest: &Digest, holder: &str, s: &FetchSegments) -> Result<bool> {
        let c = self.client().await?;
        let (size, segment, published) = (s.size as i64, s.segment as i64, s.published as i64);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&s.fetch_id, &size, &segment, &published, &digest.as_str(), &holder];
        Ok(execute(&c, PUBLISH_FETCH, &params).await.map_err(db_error)? == 1)
    }
}

fn fetch_state(r: &tokio_postgres::Row) -> FetchState {
    FetchState::from_columns(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))
}

/// Removes `item` from the cache's records, and releases its blob once nothing uses it; whether
/// it did.
fn evict_tx<'t>(tx: &'t Tx<'t>, item: CachedItem) -> TxFuture<'t, bool> {
    Box::pin(async move {
        let Some(id) = repo_id(tx, item.repo.as_str()).await? else { return Ok(false) };
        let digest = item.digest.as_str();
        execute(tx, "DELETE FROM proxy_content WHERE repository_id = $1 AND digest = $2", &[&id, &digest])
            .await?;
        match item.kind {
            ContentKind::Manifest => {
                execute(tx, "DELETE FROM tags WHERE repository_id = $1 AND digest = $2", &[&id, &digest])
                    .await?;
                execute(
                    tx,
                    "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2",
                    &[&id, &digest],
                )
                .await?;
            }
            ContentKind::Blob => {
                execute(
                    tx,
                    "DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2",
                    &[&id, &digest],
                )
                .await?;
            }
        }
        // The row lock first: the release's own look at what uses the blob then sees every write
        // of the digest that held it.
        query_opt(tx, super::sweep::LOCK, &[&digest]).await?;
        let released =
            execute(tx, crate::meta::sweep::RELEASE, &[&crate::meta::now_millis(), &digest]).await?;
        Ok(released > 0)
    })
}
