//! The embedded metadata store: one SQLite file in WAL mode.
//!
//! One connection writes, on a thread of its own that commits concurrent writes together
//! ([`writer`]); a small pool of connections reads concurrently on the blocking thread pool.
//! Acknowledged writes are durable (the write-ahead log is synced before they are acknowledged);
//! the bookkeeping of upload sessions is not waited for, since a client that loses it in a power
//! loss resumes with a 416.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

mod browse;
mod cache;
mod events;
mod fresh;
mod gc;
mod manifests;
mod multiparts;
mod open;
mod outbox;
mod queue;
pub(crate) mod readers;
mod runs;
mod scrub;
mod sweep;
mod uploads;
mod usage;
pub(crate) mod writer;
pub(crate) use open::open_connection;

use fresh::FreshUploads;
use manifests::{
    check_references, delete_manifest_tx, delete_tag_tx, ensure_repo, link_blob_at_tx, link_blob_tx,
    manifest_tx, put_manifest_tx, record_blob, repo_id,
};
use open::{migrate, remove_orphaned_temporaries};
use readers::Readers;
use writer::{Durability, Writer};

use super::resolved::{self, Resolved};
use super::sweep::Stored;
use super::{
    FoundBlob, ManifestRecord, MetaError, MetaStore, NewEvent, NewManifest, Page, Precondition, Referrer,
    Result,
};
use berth_core::oci::{Descriptor, Digest, Reference, RepoName, Tag};

#[derive(Clone)]
pub struct SqliteMeta {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    readers: Arc<Readers>,
    /// Manifest lookups, exact because every write to tags and manifests passes through here.
    resolved: Resolved,
    /// Upload sessions without bytes yet, and so without a row.
    fresh: Arc<FreshUploads>,
    /// A directory of this process's own, removed with the store ([`SqliteMeta::temporary`]).
    scratch: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            // Open connections keep reading an unlinked file; nothing else uses it.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => MetaError::Full,
            _ => MetaError::Db(e.to_string()),
        }
    }
}

use super::parse_stored as parse;

impl SqliteMeta {
    pub fn open(path: impl Into<PathBuf>) -> Result<SqliteMeta> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| MetaError::Db(e.to_string()))?;
        }
        Self::open_with(path, None)
    }

    /// A database that lives as long as this store and no longer: for memory storage, whose
    /// blobs are gone after a restart. (SQLite's own in-memory databases are private to one
    /// connection, or share a cache with table locks; a file of our own keeps the one-writer,
    /// many-readers design.)
    pub fn temporary() -> Result<SqliteMeta> {
        use std::os::unix::fs::DirBuilderExt;
        let tmp = std::env::temp_dir();
        remove_orphaned_temporaries(&tmp);
        let dir = tmp.join(format!("berth-meta-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| MetaError::Db(format!("creating {}: {e}", dir.display())))?;
        Self::open_with(dir.join("meta.db"), Some(dir))
    }

    fn open_with(path: PathBuf, scratch: Option<PathBuf>) -> Result<SqliteMeta> {
        let cleanup = |e: MetaError| {
            if let Some(dir) = &scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
            e
        };
        let mut conn = open_connection(&path).map_err(|e| cleanup(e.into()))?;
        migrate(&mut conn).map_err(cleanup)?;
        // The purges a killed process left half done are finished by the next purge, not after
        // their lease (meant for replicas that share a database) lapses.
        conn.execute(super::sweep::ABANDON_PURGES, []).map_err(|e| cleanup(e.into()))?;
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let writer = Writer::start(conn, &wal, "berth-meta")
            .map_err(|e| cleanup(MetaError::Db(format!("metadata writer: {e}"))))?;
        let resolved = Resolved::new(resolved::CAPACITY);
        let fresh = Arc::default();
        Ok(SqliteMeta {
            inner: Arc::new(Inner {
                writer,
                readers: Arc::new(Readers::new(path)),
                resolved,
                fresh,
                scratch,
            }),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || inner.readers.with(f)).await
    }

    /// The database's one writer and its reading connections, for the small objects of a
    /// filesystem store kept in it (`storage::fs::small`): a row committed without waiting for the
    /// disk is durable once a synced metadata write that follows it in the same log is.
    pub(crate) fn log(&self) -> (Writer, Arc<Readers>) {
        (self.inner.writer.clone(), self.inner.readers.clone())
    }

    fn resolved(&self) -> &Resolved {
        &self.inner.resolved
    }

    fn fresh(&self) -> &FreshUploads {
        &self.inner.fresh
    }

    /// The sessions held in memory, for a write's closure.
    fn fresh_uploads(&self) -> Arc<FreshUploads> {
        self.inner.fresh.clone()
    }

    async fn write<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.inner.writer.run(durability, f).await
    }

    /// [`SqliteMeta::write`] for a change to what `repo`'s kept lookups may answer (a tag, a
    /// manifest, a blob's link): they are cleared once it ends, before it returns.
    async fn write_clearing<T, F>(&self, repo: &RepoName, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let out = self.write(durability, f).await;
        self.resolved().invalidate(repo);
        out
    }
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| MetaError::Db(e.to_string()))?
}

/// The size of `digest`'s blob if it is `live`.
fn live_blob_size(c: &Connection, digest: &Digest) -> Result<Option<u64>> {
    let size: Option<i64> = c
        .prepare_cached("SELECT size FROM blobs WHERE digest = ?1 AND state = 'live'")?
        .query_row([digest.as_str()], |r| r.get(0))
        .optional()?;
    Ok(size.map(|s| s as u64))
}

/// Names sorted after `page.last`, at most `page.limit + 1` of them.
/// A page's `last` (empty for the first) and its row limit: one more than it shows.
fn page_params(page: &Page) -> (String, i64) {
    (page.last.clone().unwrap_or_default(), page.limit.saturating_add(1).min(i64::MAX as usize) as i64)
}

fn page_query(conn: &Connection, sql: &str, scope: Option<i64>, page: &Page) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let (last, limit) = page_params(page);
    let name = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
    let rows: rusqlite::Result<Vec<String>> = match scope {
        Some(id) => stmt.query_map(params![id, last, limit], name)?.collect(),
        None => stmt.query_map(params![last, limit], name)?.collect(),
    };
    Ok(rows?)
}

#[async_trait::async_trait]
impl MetaStore for SqliteMeta {
    async fn find_blob(&self, repo_name: &RepoName, digest_of: &Digest) -> Result<Option<FoundBlob>> {
        let began = match self.resolved().blob(repo_name, digest_of) {
            Ok(found) => return Ok(Some(found)),
            Err(began) => began,
        };
        let (repo, digest) = (repo_name.to_string(), digest_of.to_string());
        let found = self
            .read(move |c| {
                let row: Option<(i64, Option<String>)> = c
                    .prepare_cached(
                        "SELECT b.size, b.location FROM repository_blobs rb
                     JOIN repositories r ON r.id = rb.repository_id
                     JOIN blobs b ON b.digest = rb.digest
                     WHERE r.name = ?1 AND rb.digest = ?2",
                    )?
                    .query_row([repo, digest], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                Ok(row.map(|(size, at)| FoundBlob { size: size.max(0) as u64, location: at.map(Into::into) }))
            })
            .await?;
        if let Some(found) = &found {
            self.resolved().insert_blob(began, repo_name, digest_of, found);
        }
        Ok(found)
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let digest = digest.clone();
        self.read(move |c| live_blob_size(c, &digest)).await
    }

    async fn blob_location(&self, digest: &Digest) -> Result<Option<String>> {
        let digest = digest.to_string();
        self.read(move |c| {
            let at: Option<Option<String>> = c
                .prepare_cached("SELECT location FROM blobs WHERE digest = ?1")?
                .query_row([digest], |r| r.get(0))
                .optional()?;
            Ok(at.flatten())
        })
        .await
    }

    fn records_locations(&self) -> bool {
        // One process owns the file: no older Berth runs beside this one, and one that opens
        // it later refuses its newer schema.
        true
    }

    async fn repos_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let digest = digest.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                 WHERE rb.digest = ?1 ORDER BY r.name LIMIT ?2",
            )?;
            let names = stmt
                .query_map(params![digest, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            names.into_iter().map(|n| parse("repository name", n)).collect()
        })
        .await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, stored: Stored) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.clone());
        self.write(Durability::Synced, move |tx| link_blob_tx(tx, &repo, &digest, size, stored)).await
    }

    async fn unlink_blob(&self, repo_name: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo_name.to_string(), digest.to_string());
        self.write_clearing(repo_name, Durability::Synced, move |tx| {
            let n = tx.execute(
                "DELETE FROM repository_blobs WHERE digest = ?2
                     AND repository_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo, digest],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn check_references(
        &self,
        repo: &RepoName,
        blobs: &[Descriptor],
        manifests: &[Descriptor],
    ) -> Result<()> {
        let (repo, blobs, manifests) = (repo.to_string(), blobs.to_vec(), manifests.to_vec());
        self.read(move |c| check_references(c, repo_id(c, &repo)?, &blobs, &manifests)).await
    }

    async fn put_manifest(&self, m: NewManifest) -> Result<()> {
        let repo = m.repo.clone();
        self.write_clearing(&repo, Durability::Synced, move |tx| put_manifest_tx(tx, &m)).await
    }

    async fn manifest(&self, repo_name: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>> {
        let began = match self.resolved().get(repo_name, reference) {
            Ok(record) => return Ok(Some(record)),
            Err(began) => began,
        };
        let repo = repo_name.to_string();
        let r = reference.clone();
        let found = self.read(move |c| manifest_tx(c, &repo, &r)).await?;
        if let Some(record) = &found {
            self.resolved().insert(began, repo_name, reference, record);
        }
        Ok(found)
    }

    async fn delete_manifest(
        &self,
        repo_name: &RepoName,
        digest: &Digest,
        event: Option<NewEvent>,
    ) -> Result<bool> {
        let (repo, digest) = (repo_name.to_string(), digest.to_string());
        self.write_clearing(repo_name, Durability::Synced, move |tx| {
            delete_manifest_tx(tx, &repo, &digest, event)
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
        let (repo, tag, expect) = (repo_name.to_string(), tag.to_string(), expect.clone());
        self.write_clearing(repo_name, Durability::Synced, move |tx| {
            delete_tag_tx(tx, &repo, &tag, &expect, event)
        })
        .await
    }

    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>> {
        let (repo, page) = (repo.to_string(), page.clone());
        self.read(move |c| {
            let Some(id) = repo_id(c, &repo)? else { return Ok(None) };
            let sql = "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2
                       ORDER BY name LIMIT ?3";
            page_query(c, sql, Some(id), &page).map(Some)
        })
        .await
    }

    async fn catalog(&self, page: &Page) -> Result<Vec<String>> {
        let page = page.clone();
        self.read(move |c| {
            let sql = "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2";
            page_query(c, sql, None, &page)
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        let (last, limit) = page_params(page);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                 FROM manifests m JOIN repositories r ON r.id = m.repository_id
                 WHERE r.name = ?1 AND m.subject = ?2
                   AND (?3 IS NULL OR m.artifact_type = ?3) AND m.digest > ?4
                 ORDER BY m.digest LIMIT ?5",
            )?;
            let rows = stmt
                .query_map(params![repo, subject, artifact_type, last, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(digest, media_type, size, artifact_type, annotations)| {
                    Ok(Referrer {
                        digest: parse("digest", digest)?,
                        media_type,
                        size: size as u64,
                        artifact_type,
                        annotations,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_orphan(&self, digest: &Digest, size: u64) -> Result<()> {
        let digest = digest.clone();
        self.write(Durability::Synced, move |tx| {
            record_blob(tx, &digest, size, super::now(), Stored::Written)
        })
        .await
    }

    async fn touch_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(Durability::Unsynced, move |tx| {
            tx.prepare_cached(super::gc::TOUCH_LINK)?.execute(params![super::now(), digest, repo])?;
            Ok(())
        })
        .await
    }

    async fn record_pull_times(&self, pulls: Vec<(RepoName, Digest, i64)>) -> Result<()> {
        self.write(Durability::Unsynced, move |tx| {
            let mut record = tx.prepare_cached(super::gc::RECORD_PULL)?;
            for (repo, digest, at) in &pulls {
                record.execute(params![at, repo.as_str(), digest.as_str()])?;
            }
            Ok(())
        })
        .await
    }

    async fn queue_reviews(&self, mut changes: Vec<(RepoName, i64, i64)>) -> Result<()> {
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        self.write(Durability::Unsynced, move |tx| {
            let mut queue = tx.prepare_cached(super::queue::QUEUE_REVIEW)?;
            for (repo, first, last) in &changes {
                queue.execute(params![repo.as_str(), first, last])?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let meta = super::SqliteMeta::open(dir.path().join("meta.db")).unwrap();
        super::super::testsuite::run(&meta).await;
        // Reopening runs no migration twice and keeps the data.
        drop(meta);
        let again = super::SqliteMeta::open(dir.path().join("meta.db")).unwrap();
        use super::MetaStore;
        assert!(!again.catalog(&super::Page { limit: 10, last: None }).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_temporary_store_conforms_and_leaves_nothing_behind() {
        let meta = super::SqliteMeta::temporary().unwrap();
        let dir = meta.inner.scratch.clone().unwrap();
        super::super::testsuite::run(&meta).await;
        assert!(dir.join("meta.db").is_file());
        drop(meta);
        assert!(!dir.exists(), "{} removed with the store", dir.display());
    }
}
