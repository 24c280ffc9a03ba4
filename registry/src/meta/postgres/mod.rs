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
//! cannot be reached, requests fail at once with [`MetaError::Unavailable`] (a 503), and service
//! resumes by itself when it returns: a broken connection is dropped, not reused.

mod announced;
mod cache;
mod errors;
mod events;
mod gc;
mod lookups;
mod migrate;
mod multiparts;
mod outbox;
mod pool;
mod queue;
mod runs;
mod scrub;
mod sweep;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
mod uploads;
mod usage;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object};

use errors::{db_error, retryable};

use super::{
    ManifestRecord, MetaError, MetaStore, NewEvent, NewManifest, Page, PoolUse, Referrer, Result, Stored,
};
use berth_core::oci::{Digest, Reference, RepoName, Tag};

/// How often a `url_file` is read again for a rotated URL.
pub const URL_REFRESH: Duration = Duration::from_secs(10);
/// Runs of a transaction that PostgreSQL aborted to break a deadlock.
const ATTEMPTS: usize = 3;

#[derive(Clone)]
pub struct PostgresMeta {
    pool: Arc<pool::SharedPool>,
    lookups: Arc<lookups::Lookups>,
}

type Tx<'t> = deadpool_postgres::Transaction<'t>;
type TxFuture<'t, T> = Pin<Box<dyn Future<Output = TxResult<T>> + Send + 't>>;

use super::parse_stored as parse;

/// Sizes and counts are BIGINT; nothing stored is negative, but a row edited by hand might be.
fn size(v: i64) -> u64 {
    v.max(0) as u64
}

/// A failed statement inside a transaction: kept whole, so the retry loop can tell a deadlock.
enum Failure {
    Db(tokio_postgres::Error),
    Meta(MetaError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<MetaError> for Failure {
    fn from(e: MetaError) -> Self {
        Failure::Meta(e)
    }
}

impl From<Failure> for MetaError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Db(e) => db_error(e),
            Failure::Meta(e) => e,
        }
    }
}

type TxResult<T> = std::result::Result<T, Failure>;

impl PostgresMeta {
    /// Connects to the database at `url` and brings its schema up to date (waiting while another
    /// replica does).
    pub async fn connect(url: &str, max_connections: usize) -> Result<PostgresMeta> {
        Self::connect_with(url, max_connections, None).await
    }

    /// [`PostgresMeta::connect`], verifying the server against the CA in `ca_file` when one is
    /// given (see [`tls`]).
    pub async fn connect_with(
        url: &str,
        max_connections: usize,
        ca_file: Option<&Path>,
    ) -> Result<PostgresMeta> {
        let pool = Arc::new(pool::SharedPool::new(url, max_connections, tls::Connector::new(ca_file)?)?);
        let mut client = pool::client(&pool).await?;
        migrate::migrate(&mut client).await?;
        let lookups = lookups::Lookups::start(&pool);
        Ok(PostgresMeta { pool, lookups })
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

/// One statement's rows, prepared once per connection.
async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query(&stmt, params).await
}

async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, params).await
}

async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, params).await
}

/// The size of `digest`'s blob if it is `live`.
async fn live_blob_size<C: GenericClient>(c: &C, digest: &Digest) -> Result<Option<u64>> {
    let row =
        query_opt(c, "SELECT size FROM blobs WHERE digest = $1 AND state = 'live'", &[&digest.as_str()])
            .await
            .map_err(db_error)?;
    Ok(row.map(|r| size(r.get(0))))
}

async fn repo_id<C: GenericClient>(
    c: &C,
    repo: &str,
) -> std::result::Result<Option<i64>, tokio_postgres::Error> {
    Ok(query_opt(c, "SELECT id FROM repositories WHERE name = $1", &[&repo]).await?.map(|r| r.get(0)))
}

async fn ensure_repo(tx: &Tx<'_>, repo: &str, now: i64) -> TxResult<i64> {
    execute(
        tx,
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&repo, &now],
    )
    .await?;
    repo_id(tx, repo).await?.ok_or_else(|| MetaError::Db("repository vanished while inserting".into()).into())
}

async fn link_blob_tx(tx: &Tx<'_>, repo: &str, digest: &Digest, size: u64, stored: Stored) -> TxResult<()> {
    let now = super::now();
    record_blob(tx, digest, size, now, stored).await?;
    let id = ensure_repo(tx, repo, now).await?;
    let digest = digest.as_str();
    execute(tx, crate::meta::gc::LINK, &[&id, &digest, &now]).await?;
    Ok(())
}

/// Records the blob's row for a write of its object (see [`crate::meta::sweep`]); the statement
/// locks the row, so a release or purge of the same digest waits for this transaction.
async fn record_blob(tx: &Tx<'_>, digest: &Digest, size: u64, now: i64, stored: Stored) -> TxResult<()> {
    use crate::meta::sweep::{RECORD_ASSUMED, RECORD_WRITTEN};
    let row = match stored {
        Stored::Written | Stored::Confirmed => {
            let confirmed = stored == Stored::Confirmed;
            query_opt(tx, RECORD_WRITTEN, &[&digest.as_str(), &(size as i64), &now, &confirmed]).await?
        }
        Stored::Assumed => query_opt(tx, RECORD_ASSUMED, &[&digest.as_str()]).await?,
    };
    let state: Option<String> = row.map(|r| r.get(0));
    Ok(crate::meta::recorded_blob(digest, stored, state.as_deref())?)
}

/// The first reference the repository (`None`: not created yet) does not hold, as an error.
/// `lock` holds what was found until the transaction ends, so no delete removes it meanwhile.
async fn check_references<C: GenericClient>(
    c: &C,
    repo: Option<i64>,
    blobs: &[Digest],
    manifests: &[Digest],
    lock: bool,
) -> TxResult<()> {
    let Some(repo) = repo else {
        return Err(match (blobs.first(), manifests.first()) {
            (Some(b), _) => MetaError::BlobUnknown(b.clone()).into(),
            (None, Some(m)) => MetaError::ManifestUnknown(m.clone()).into(),
            (None, None) => return Ok(()),
        });
    };
    let suffix = if lock { " FOR SHARE" } else { "" };
    for (table, wanted, missing) in [
        ("repository_blobs", blobs, MetaError::BlobUnknown as fn(Digest) -> MetaError),
        ("manifests", manifests, MetaError::ManifestUnknown as fn(Digest) -> MetaError),
    ] {
        if wanted.is_empty() {
            continue;
        }
        let digests: Vec<&str> = wanted.iter().map(Digest::as_str).collect();
        let sql = format!("SELECT digest FROM {table} WHERE repository_id = $1 AND digest = ANY($2){suffix}");
        let found: std::collections::HashSet<String> =
            query(c, &sql, &[&repo, &digests]).await?.iter().map(|r| r.get(0)).collect();
        if let Some(d) = wanted.iter().find(|d| !found.contains(d.as_str())) {
            return Err(missing(d.clone()).into());
        }
    }
    Ok(())
}

async fn put_manifest_tx(tx: &Tx<'_>, m: &NewManifest) -> TxResult<()> {
    let now = super::now();
    let repo = ensure_repo(tx, m.repo.as_str(), now).await?;
    if m.verify_references {
        let children: &[Digest] = if m.children_optional { &[] } else { &m.manifests };
        check_references(tx, Some(repo), &m.blobs, children, true).await?;
    }
    record_blob(tx, &m.digest, m.size, now, m.stored).await?;
    let digest = m.digest.as_str();
    let inserted = execute(
        tx,
        "INSERT INTO manifests
           (repository_id, digest, media_type, size, artifact_type, subject, annotations, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repository_id, digest) DO NOTHING",
        &[
            &repo,
            &digest,
            &m.media_type,
            &(m.size as i64),
            &m.artifact_type,
            &m.subject.as_ref().map(Digest::as_str),
            &m.annotations,
            &now,
        ],
    )
    .await?;
    if inserted == 0 {
        execute(tx, crate::meta::gc::REFRESH_MANIFEST, &[&now, &repo, &digest]).await?;
    } else {
        for (kind, children) in [("blob", &m.blobs), ("manifest", &m.manifests)] {
            if children.is_empty() {
                continue;
            }
            let children: Vec<&str> = children.iter().map(Digest::as_str).collect();
            execute(
                tx,
                "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind)
                 SELECT $1, $2, child, $4 FROM unnest($3::text[]) AS child ON CONFLICT DO NOTHING",
                &[&repo, &digest, &children, &kind],
            )
            .await?;
        }
    }
    for tag in &m.tags {
        execute(
            tx,
            "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest,
               updated_at = excluded.updated_at",
            &[&repo, &tag.as_str(), &digest, &now],
        )
        .await?;
    }
    Ok(outbox::record(tx, &m.events, None).await?)
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
    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let began = match self.lookups.blob(repo, digest) {
            Ok(size) => return Ok(Some(size)),
            Err(began) => began,
        };
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "SELECT b.size FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repository_id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
            &[&repo.as_str(), &digest.as_str()],
        )
        .await
        .map_err(db_error)?;
        let found = row.map(|r| size(r.get(0)));
        if let Some(n) = found {
            self.lookups.keep_blob(began, repo, digest, n);
        }
        Ok(found)
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        live_blob_size(&self.client().await?, digest).await
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

    async fn check_references(&self, repo: &RepoName, blobs: &[Digest], manifests: &[Digest]) -> Result<()> {
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

    async fn delete_tag(&self, repo_name: &RepoName, tag: &Tag, event: Option<NewEvent>) -> Result<bool> {
        let (repo, tag) = (repo_name.to_string(), tag.to_string());
        self.write_announced(repo_name, move |tx| {
            let (repo, tag, event) = (repo.clone(), tag.clone(), event.clone());
            Box::pin(async move {
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
    ) -> Result<Vec<Referrer>> {
        let c = self.client().await?;
        let rows = query(
            &c,
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
             FROM manifests m JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1 AND m.subject = $2
               AND ($3::text IS NULL OR m.artifact_type = $3)
             ORDER BY m.created_at, m.digest",
            &[&repo.as_str(), &subject.as_str(), &artifact_type],
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

    async fn purgeable_blobs(
        &self,
        deleting_before: i64,
        purging_before: i64,
        limit: usize,
    ) -> Result<Vec<Digest>> {
        self.purgeable(deleting_before, purging_before, limit).await
    }

    async fn begin_purges(
        &self,
        digests: Vec<Digest>,
        deleting_before: i64,
        purging_before: i64,
    ) -> Result<Vec<bool>> {
        self.purge_begins(digests, deleting_before, purging_before).await
    }

    async fn end_purges(&self, digests: Vec<Digest>) -> Result<()> {
        self.purge_ends(digests).await
    }

    async fn forget_gone(&self, before: i64, limit: usize) -> Result<u64> {
        self.gone_forgotten(before, limit).await
    }

    async fn blob_purging(&self, digest: &Digest) -> Result<bool> {
        self.purging(digest).await
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
mod tests {
    use super::testing::TestDatabase;
    use super::*;
    use crate::meta::UploadSessions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let db = TestDatabase::create().await;
        let meta = PostgresMeta::connect(&db.url, 4).await.unwrap();
        super::super::testsuite::run(&meta).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_migrate_once() {
        let db = TestDatabase::create().await;
        let starts = (0..4).map(|_| PostgresMeta::connect(&db.url, 2));
        for store in futures_util::future::join_all(starts).await {
            store.unwrap();
        }
        let (client, _conn) = db.client().await;
        let n: i64 = client.query_one("SELECT count(*) FROM berth_schema", &[]).await.unwrap().get(0);
        assert_eq!(n, i64::from(migrate::known()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_newer_than_this_berth_can_run_on_is_refused() {
        let db = TestDatabase::create().await;
        PostgresMeta::connect(&db.url, 1).await.unwrap();
        let (client, _conn) = db.client().await;
        let next = migrate::known() + 1;
        // An expanding migration: older code still runs on it.
        client.execute("INSERT INTO berth_schema VALUES ($1, 1, 0)", &[&next]).await.unwrap();
        PostgresMeta::connect(&db.url, 1).await.expect("an expanded schema still serves older berth");
        // A contracting one: it does not.
        client.execute("INSERT INTO berth_schema VALUES ($1, $1, 0)", &[&(next + 1)]).await.unwrap();
        let e = PostgresMeta::connect(&db.url, 1).await.err().expect("refused").to_string();
        assert!(e.contains("upgrade berth"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_url_file_is_used_without_a_restart_and_a_broken_one_is_not() {
        let db = TestDatabase::create().await;
        let meta = PostgresMeta::connect(&db.url, 2).await.unwrap();
        let (admin, _conn) = db.client().await;
        let role = format!("rotated_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
            ))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, format!("{}\n", db.url)).unwrap();
        meta.watch_url_file(file.clone(), Duration::from_millis(50));
        let sessions_of = |role: String| {
            let admin = &admin;
            async move {
                let row = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND application_name = 'berth'",
                        &[&role],
                    )
                    .await
                    .unwrap();
                row.get::<_, i64>(0)
            }
        };

        // A URL that does not work is not taken: requests go on as before.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let broken = format!("postgres://{role}@127.0.0.1:{port}/nowhere");
        assert!(meta.pool.replace(&broken).await.is_err());
        meta.count_uploads().await.unwrap();
        assert_eq!(sessions_of(role.clone()).await, 0);

        // A working one is: new connections log in as the new role.
        let (_, host) = db.url.split_once('@').expect("the test URL names its user");
        let rotated = format!("postgres://{role}@{host}");
        std::fs::write(&file, &rotated).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            meta.count_uploads().await.unwrap();
            if sessions_of(role.clone()).await > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never switched to {rotated}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And the old role's connections close (a revoked credential holds on to nothing).
        let old_role = db.url.split_once("://").and_then(|(_, r)| r.split_once('@')).unwrap().0.to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sessions_of(old_role.clone()).await > 0 {
            assert!(std::time::Instant::now() < deadline, "the old pool's connections stay open");
            meta.count_uploads().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this store's connections are encrypted, as the server sees them.
    async fn encrypted(meta: &PostgresMeta) -> bool {
        let c = meta.client().await.unwrap();
        c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_use_tls_when_the_server_offers_it_and_verify_it_against_a_given_ca() {
        let db = TestDatabase::create().await;
        let ca = testing::server_ca().expect("the test server this process started serves TLS");
        // sslmode=prefer (the default): encrypted, the certificate not checked.
        assert!(encrypted(&PostgresMeta::connect(&db.url, 1).await.unwrap()).await);
        // With the server's CA: verified, and encrypted.
        let verified = PostgresMeta::connect_with(&db.url, 1, Some(&ca)).await.unwrap();
        assert!(encrypted(&verified).await);
        // Against another CA: refused, saying why.
        let dir = tempfile::tempdir().unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["elsewhere".into()]).unwrap();
        let other_ca = dir.path().join("other.crt");
        std::fs::write(&other_ca, other.cert.pem()).unwrap();
        let refused =
            PostgresMeta::connect_with(&db.url, 1, Some(&other_ca)).await.err().expect("not verified");
        assert!(refused.to_string().contains("certificate"), "{refused}");
        // sslmode=disable: plain, as asked.
        let plain = PostgresMeta::connect(&format!("{}?sslmode=disable", db.url), 1).await.unwrap();
        assert!(!encrypted(&plain).await);
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        assert!(
            PostgresMeta::connect_with(&db.url, 1, Some(&empty)).await.is_err(),
            "a CA file without a CA"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_database_is_unavailable_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://berth@127.0.0.1:{port}/berth");
        let e = tokio::time::timeout(Duration::from_secs(30), PostgresMeta::connect(&url, 1))
            .await
            .expect("connect gave up in time")
            .err()
            .expect("nothing listens there");
        assert!(matches!(e, MetaError::Unavailable(_)), "{e:?}");
    }
}
