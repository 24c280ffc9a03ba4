//! Metadata in PostgreSQL: one database shared by every replica.
//!
//! The same model as [`super::sqlite`], with PostgreSQL doing the concurrency: each write is one
//! transaction at READ COMMITTED, and what must not change under it is locked by the statements
//! that read it (a manifest's references are checked `FOR SHARE`, so a concurrent delete waits
//! for the manifest to commit and the manifest never points at something gone). A transaction
//! that PostgreSQL breaks off to end a deadlock is run again. Acknowledged writes are durable
//! (`synchronous_commit` as the server has it, `on` by default); the bookkeeping of upload sessions
//! commits with `synchronous_commit = off`, since a client that loses it resumes with a 416.
//!
//! Connections come from a pool of at most `max_connections` per replica. When the database
//! cannot be reached, requests fail at once with [`MetaError::Unavailable`](crate::meta::MetaError::Unavailable) (a 503), and service
//! resumes by itself when it returns: a broken connection is dropped, not reused.

mod announced;
mod browse;
mod cache;
mod errors;
mod events;
mod gc;
mod lookups;
mod manifests;
mod migrate;
mod multiparts;
mod outbox;
mod pool;
mod queue;
mod runs;
mod scrub;
mod statements;
mod sweep;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
mod upgrade;
mod uploads;
mod usage;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object};

use errors::{db_error, retryable, Failure, TxResult};
use manifests::{check_references, link_blob_at_tx, link_blob_tx, put_manifest_tx, record_blob};
use statements::{ensure_repo, execute, query, query_opt, repo_id, Tx};

use super::{
    precondition, FoundBlob, ManifestRecord, MetaStore, NewEvent, NewManifest, Page, PoolUse, Precondition,
    Referrer, Result, Stored,
};
use berth_core::config::Contract;
use berth_core::oci::{Descriptor, Digest, Reference, RepoName, Tag};

/// How often a `url_file` is read again for a rotated URL.
pub const URL_REFRESH: Duration = Duration::from_secs(10);
/// Runs of a transaction that PostgreSQL aborted to break a deadlock.
const ATTEMPTS: usize = 3;

#[derive(Clone)]
pub struct PostgresMeta {
    pool: Arc<pool::SharedPool>,
    lookups: Arc<lookups::Lookups>,
    /// Whether blobs may be recorded away from their digest's key: no code older than
    /// [`migrate::LOCATIONS`] runs on this database.
    locations: Arc<upgrade::Locations>,
}

type TxFuture<'t, T> = Pin<Box<dyn Future<Output = TxResult<T>> + Send + 't>>;

use super::parse_stored as parse;

/// Sizes and counts are BIGINT; nothing stored is negative, but a row edited by hand might be.
fn size(v: i64) -> u64 {
    v.max(0) as u64
}

impl PostgresMeta {
    /// Connects to the database at `url` and brings its schema up to date (waiting while another
    /// replica does).
    pub async fn connect(url: &str, max_connections: usize) -> Result<PostgresMeta> {
        Self::connect_with(url, max_connections, None, Contract::Auto).await
    }

    /// [`PostgresMeta::connect`], verifying the server against the CA in `ca_file` when one is
    /// given (see [`tls`]), and contracting the schema after an upgrade as `contract` says (see
    /// the `upgrade` module).
    pub async fn connect_with(
        url: &str,
        max_connections: usize,
        ca_file: Option<&Path>,
        contract: Contract,
    ) -> Result<PostgresMeta> {
        let pool = Arc::new(pool::SharedPool::new(url, max_connections, tls::Connector::new(ca_file)?)?);
        let mut client = pool::client(&pool).await?;
        let compatible_from = migrate::migrate(&mut client).await?;
        let lookups = lookups::Lookups::start(&pool);
        let locations = upgrade::Locations::new(compatible_from);
        upgrade::start(&pool, &locations, contract);
        Ok(PostgresMeta { pool, lookups, locations })
    }

    /// Rules Berths older than this one out of the database at `url` ([`migrate::contract`]).
    pub async fn contract(url: &str, ca_file: Option<&Path>) -> Result<(i32, i32)> {
        let pool = pool::SharedPool::new(url, 1, tls::Connector::new(ca_file)?)?;
        let mut client = pool::client(&pool).await?;
        migrate::contract(&mut client).await
    }

    /// Switches to the database URL in `file` whenever it changes (a rotated password), checking
    /// every `every`; a URL that does not work is logged and the one in use kept.
    pub fn watch_url_file(&self, file: PathBuf, every: Duration) {
        pool::watch(&self.pool, file, every);
    }

    async fn client(&self) -> Result<Object> {
        pool::client(&self.pool).await
    }

    /// Runs `f` in a transaction, again if PostgreSQL broke it off to end a deadlock. `synced`
    /// false lets the commit return before it is on disk.
    async fn write<T, F>(&self, synced: bool, f: F) -> Result<T>
    where
        T: Send,
        F: for<'t> Fn(&'t Tx<'t>) -> TxFuture<'t, T> + Send + Sync,
    {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = async {
                let tx = client.transaction().await?;
                if !synced {
                    tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
                }
                let value = f(&tx).await?;
                tx.commit().await?;
                TxResult::Ok(value)
            }
            .await;
            match outcome {
                Ok(v) => return Ok(v),
                Err(Failure::Db(e)) if retryable(&e) && attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "metadata transaction retried");
                }
                Err(f) => return Err(f.into()),
            }
        }
    }
}

/// The size of `digest`'s blob if it is `live`.
async fn live_blob_size<C: GenericClient>(c: &C, digest: &Digest) -> Result<Option<u64>> {
    let row =
        query_opt(c, "SELECT size FROM blobs WHERE digest = $1 AND state = 'live'", &[&digest.as_str()])
            .await
            .map_err(db_error)?;
    Ok(row.map(|r| size(r.get(0))))
}

/// Names sorted after `page.last`, at most `page.limit + 1` of them.
fn page_params(page: &Page) -> (String, i64) {
    (page.last.clone().unwrap_or_default(), page.limit.saturating_add(1).min(i64::MAX as usize) as i64)
}

fn manifest_record(r: &tokio_postgres::Row) -> Result<ManifestRecord> {
    Ok(ManifestRecord { digest: parse("digest", r.get(0))?, media_type: r.get(1), size: size(r.get(2)) })
}

#[async_trait::async_trait]
impl MetaStore for PostgresMeta {
    async fn find_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<FoundBlob>> {
        let began = match self.lookups.blob(repo, digest) {
            Ok(found) => return Ok(Some(found)),
            Err(began) => began,
        };
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "SELECT b.size, b.location FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repository_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
            &[&repo.as_str(), &digest.as_str()],
        )
        .await
        .map_err(db_error)?;
        let found = row.map(|r| FoundBlob {
            size: size(r.get(0)),
            location: r.get::<_, Option<String>>(1).map(Into::into),
        });
        if let Some(found) = &found {
            self.lookups.keep_blob(began, repo, digest, found);
        }
        Ok(found)
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        live_blob_size(&self.client().await?, digest).await
    }

    async fn blob_location(&self, digest: &Digest) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = query_opt(&c, "SELECT location FROM blobs WHERE digest = $1", &[&digest.as_str()])
            .await
            .map_err(db_error)?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    fn records_locations(&self) -> bool {
        self.locations.on()
    }

    async fn repos_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let c = self.client().await?;
        let rows = query(
            &c,
            "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
            &[&digest.as_str(), &(limit.min(i64::MAX as usize) as i64)],
        )
        .await
        .map_err(db_error)?;
        rows.into_iter().map(|r| parse("repository name", r.get(0))).collect()
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, stored: Stored) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.clone());
        self.write(true, move |tx| {
            let (repo, digest) = (repo.clone(), digest.clone());
            Box::pin(async move { link_blob_tx(tx, &repo, &digest, size, stored).await })
        })
        .await
    }

    async fn unlink_blob(&self, repo_name: &RepoName, digest: &Digest) -> Result<bool> {
        // Announced and waited for: the blob is gone on every replica when the delete returns.
        let (repo, digest) = (repo_name.to_string(), digest.to_string());
        self.write_announced(repo_name, move |tx| {
            let (repo, digest) = (repo.clone(), digest.clone());
            Box::pin(async move {
                let n = execute(
                    tx,
                    "DELETE FROM repository_blobs WHERE digest = $2
                     AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                    &[&repo, &digest],
                )
                .await?;
                Ok(n > 0)
            })
        })
        .await
    }

    async fn check_references(
        &self,
        repo: &RepoName,
        blobs: &[Descriptor],
        manifests: &[Descriptor],
    ) -> Result<()> {
        let c = self.client().await?;
        let id = repo_id(&c, repo.as_str()).await.map_err(db_error)?;
        Ok(check_references(&c, id, blobs, manifests, false).await?)
    }

    async fn put_manifest(&self, m: NewManifest) -> Result<()> {
        let repo = m.repo.clone();
        self.write_announced(&repo, move |tx| {
            let m = m.clone();
            Box::pin(async move { put_manifest_tx(tx, &m).await })
        })
        .await
    }

    async fn manifest(&self, repo: &RepoName, r: &Reference) -> Result<Option<ManifestRecord>> {
        self.lookup(repo, r).await
    }

    async fn delete_manifest(
        &self,
        repo_name: &RepoName,
        digest: &Digest,
        event: Option<NewEvent>,
    ) -> Result<bool> {
        let (repo, digest) = (repo_name.to_string(), digest.to_string());
        self.write_announced(repo_name, move |tx| {
            let (repo, digest, event) = (repo.clone(), digest.clone(), event.clone());
            Box::pin(async move {
                let Some(id) = repo_id(tx, &repo).await? else { return Ok(false) };
                execute(tx, "DELETE FROM tags WHERE repository_id = $1 AND digest = $2", &[&id, &digest])
                    .await?;
                let n = execute(
                    tx,
                    "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2",
                    &[&id, &digest],
                )
                .await?;
                if n > 0 {
                    outbox::record(tx, event.as_slice(), None).await?;
                }
                Ok(n > 0)
            })
        })
        .await
    }

    async fn delete_tag(
        &self,
        repo_name: &RepoName,
        tag: &Tag,
        expect: &Precondition,
        event: Option<NewEvent>,
    ) -> Result<bool> {
        let (repo, tag) = (repo_name.to_string(), tag.to_string());
        self.write_announced(repo_name, move |tx| {
            let (repo, tag, event, expect) = (repo.clone(), tag.clone(), event.clone(), expect.clone());
            Box::pin(async move {
                if !expect.is_none() {
                    // Locked, so that no push moves the tag between this look and the delete.
                    let now = query_opt(tx, precondition::NAMED_TAG_NOW_LOCKED, &[&repo, &tag]).await?;
                    let now = now.map(|r| parse("digest", r.get(0))).transpose()?;
                    precondition::check(&expect, now)?;
                }
                let rows = query(
                    tx,
                    "DELETE FROM tags
                     WHERE name = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $1)
                     RETURNING digest",
                    &[&repo, &tag],
                )
                .await?;
                let Some(digest) = rows.first().map(|r| r.get::<_, String>(0)) else { return Ok(false) };
                outbox::record(tx, event.as_slice(), Some(&digest)).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        let c = self.client().await?;
        let Some(id) = repo_id(&c, repo.as_str()).await.map_err(db_error)? else { return Ok(None) };
        let (last, limit) = page_params(page);
        let rows = query(
            &c,
            "SELECT name FROM tags WHERE repository_id = $1 AND name > $2
             ORDER BY name LIMIT $3",
            &[&id, &last, &limit],
        )
        .await
        .map_err(db_error)?;
        Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>> {
        let c = self.client().await?;
        let (last, limit) = page_params(page);
        let rows = query(
            &c,
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
            &[&last, &limit],
        )
        .await
        .map_err(db_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>> {
        let c = self.client().await?;
        let (last, limit) = page_params(page);
        let rows = query(
            &c,
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
             FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1 AND m.subject = $2
               AND ($3::text IS NULL OR m.artifact_type = $3) AND m.digest > $4
             ORDER BY m.digest LIMIT $5",
            &[&repo.as_str(), &subject.as_str(), &artifact_type, &last, &limit],
        )
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|r| {
                Ok(Referrer {
                    digest: parse("digest", r.get(0))?,
                    media_type: r.get(1),
                    size: size(r.get(2)),
                    artifact_type: r.get(3),
                    annotations: r.get(4),
                })
            })
            .collect()
    }

    async fn leave(&self) {
        self.lookups.leave(&self.pool).await;
    }

    async fn touch_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let c = self.client().await?;
        execute(&c, crate::meta::gc::TOUCH_LINK, &[&super::now(), &digest.as_str(), &repo.as_str()])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn record_orphan(&self, digest: &Digest, size: u64) -> Result<()> {
        let digest = digest.clone();
        self.write(true, move |tx| {
            let digest = digest.clone();
            Box::pin(async move { record_blob(tx, &digest, size, super::now(), Stored::Written).await })
        })
        .await
    }

    async fn record_pull_times(&self, pulls: Vec<(RepoName, Digest, i64)>) -> Result<()> {
        self.write(false, move |tx| {
            let pulls = pulls.clone();
            Box::pin(async move {
                for (repo, digest, at) in &pulls {
                    execute(tx, crate::meta::gc::RECORD_PULL, &[at, &repo.as_str(), &digest.as_str()])
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn queue_reviews(&self, mut changes: Vec<(RepoName, i64, i64)>) -> Result<()> {
        // In one order on every replica, so two flushes at once never wait on each other in a
        // cycle.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        self.write(false, move |tx| {
            let changes = changes.clone();
            Box::pin(async move {
                for (repo, first, last) in &changes {
                    execute(tx, crate::meta::queue::QUEUE_REVIEW, &[&repo.as_str(), first, last]).await?;
                }
                Ok(())
            })
        })
        .await
    }

    fn pool_use(&self) -> Option<PoolUse> {
        let s = self.pool.get().ok()?.status();
        Some(PoolUse { in_use: s.size.saturating_sub(s.available), idle: s.available, max: s.max_size })
    }
}

#[cfg(test)]
mod tests;
