//! Upload sessions in SQLite. A session's row is written with its first bytes (until then it is
//! held in memory: [`super::fresh`]). Their bookkeeping is written without waiting for the disk (a
//! client that loses it in a power loss resumes with a 416); the write that closes a session,
//! linking its blob, is synced like every acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::fresh::Removed;
use super::writer::Durability;
use super::{link_blob_at_tx, link_blob_tx, live_blob_size, parse, SqliteMeta};
use crate::meta::{Appended, Closing, MetaError, Result, Stored, Upload, UploadPart, UploadSessions};
use crate::UploadId;
use berth_core::oci::{Digest, RepoName};

#[async_trait::async_trait]
impl UploadSessions for SqliteMeta {
    async fn create_upload(&self, id: UploadId, repo: &RepoName, now: i64) -> Result<()> {
        let upload =
            Upload { id, repo: repo.clone(), received: 0, updated_at: now, hash_state: None, assembly: None };
        self.fresh().insert(upload);
        Ok(())
    }

    async fn upload(&self, id: UploadId) -> Result<Option<Upload>> {
        if let Some(u) = self.fresh().get(id) {
            return Ok(Some(u));
        }
        self.read(move |c| session(c, id)).await
    }

    async fn upload_parts(&self, id: UploadId) -> Result<Vec<UploadPart>> {
        if self.fresh().get(id).is_some() {
            return Ok(Vec::new());
        }
        self.read(move |c| parts(c, id)).await
    }

    async fn closing_upload(&self, id: UploadId, digest: &Digest) -> Result<Option<Closing>> {
        let digest = digest.clone();
        if let Some(upload) = self.fresh().get(id) {
            let stored = self.read(move |c| live_blob_size(c, &digest)).await?;
            return Ok(Some(Closing { upload, parts: Vec::new(), stored }));
        }
        self.read(move |c| {
            let Some(upload) = session(c, id)? else { return Ok(None) };
            Ok(Some(Closing { upload, parts: parts(c, id)?, stored: live_blob_size(c, &digest)? }))
        })
        .await
    }

    async fn append_upload(&self, id: UploadId, a: &Appended, max_parts: u32, now: i64) -> Result<u64> {
        for p in &a.parts {
            p.check_nonce()?;
        }
        let a = a.clone();
        self.with_row(id, Durability::Unsynced, move |tx| append(tx, id, &a, max_parts, now)).await
    }

    async fn set_upload_assembly(&self, id: UploadId, assembly: &str) -> Result<Option<String>> {
        let assembly = assembly.to_owned();
        self.with_row(id, Durability::Synced, move |tx| {
            let key = id.to_string();
            tx.execute(
                "UPDATE uploads SET assembly = ?2 WHERE id = ?1 AND assembly IS NULL",
                params![key, assembly],
            )?;
            Ok(tx
                .query_row("SELECT assembly FROM uploads WHERE id = ?1", [&key], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .optional()?
                .flatten())
        })
        .await
    }

    async fn finish_upload(
        &self,
        id: UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        stored: Stored,
    ) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.clone());
        let fresh = self.fresh_uploads();
        self.write(Durability::Synced, move |tx| {
            link_blob_tx(tx, &repo, &digest, size, stored)?;
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute([id.to_string()])?;
            fresh.remove(id);
            Ok(())
        })
        .await
    }

    async fn finish_upload_at(
        &self,
        id: UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        location: &str,
    ) -> Result<bool> {
        let (repo, digest, location) = (repo.to_string(), digest.clone(), location.to_owned());
        let fresh = self.fresh_uploads();
        self.write(Durability::Synced, move |tx| {
            let deleted =
                tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute([id.to_string()])?;
            if deleted == 0 && !fresh.holds(id) {
                return Err(MetaError::UploadUnknown);
            }
            let linked = link_blob_at_tx(tx, &repo, &digest, size, &location)?;
            fresh.remove(id);
            Ok(linked)
        })
        .await
    }

    async fn delete_upload(&self, id: UploadId) -> Result<bool> {
        if self.fresh().remove(id) == Removed::Fresh {
            return Ok(true);
        }
        self.write(Durability::Unsynced, move |tx| {
            Ok(tx.execute("DELETE FROM uploads WHERE id = ?1", [id.to_string()])? > 0)
        })
        .await
    }

    async fn touch_upload(&self, id: UploadId, now: i64) -> Result<()> {
        if self.fresh().touch(id, now) {
            return Ok(());
        }
        self.write(Durability::Unsynced, move |tx| {
            tx.prepare_cached("UPDATE uploads SET updated_at = max(updated_at, ?2) WHERE id = ?1")?
                .execute(params![id.to_string(), now])?;
            Ok(())
        })
        .await
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> Result<Vec<UploadId>> {
        let mut stale = self.fresh().stale(before, limit);
        let limit = limit - stale.len();
        if limit == 0 {
            return Ok(stale);
        }
        let rows = self
            .read(move |c| {
                let ids = c
                    .prepare_cached(
                        "SELECT id FROM uploads WHERE updated_at < ?1 ORDER BY updated_at LIMIT ?2",
                    )?
                    .query_map(params![before, limit as i64], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                ids.into_iter().map(|s| parse("upload id", s)).collect::<Result<Vec<UploadId>>>()
            })
            .await?;
        stale.extend(rows);
        Ok(stale)
    }

    async fn count_uploads(&self) -> Result<u64> {
        let rows = self
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM uploads", [], |r| r.get::<_, i64>(0))? as u64))
            .await?;
        Ok(rows + self.fresh().count())
    }
}

impl SqliteMeta {
    /// Runs `f` on the session's row, written first (in the same savepoint) if the session is
    /// still held in memory without one.
    async fn with_row<T, F>(&self, id: UploadId, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let fresh = self.fresh_uploads();
        // Set by the write that claimed the session and wrote its row (not by a refused one).
        let moved = Arc::new(AtomicBool::new(false));
        let moving = moved.clone();
        let out = self
            .write(durability, move |tx| {
                let Some((u, created_at)) = fresh.claim(id) else { return f(tx) };
                let out = insert_session(tx, &u, created_at).and_then(|()| f(tx));
                match out {
                    Ok(_) => moving.store(true, Ordering::Release),
                    // The savepoint rolls the row back: the session is held in memory still.
                    Err(_) => fresh.unclaim(id),
                }
                out
            })
            .await;
        if moved.load(Ordering::Acquire) {
            // The commit that wrote the row has ended (or failed: the session had no bytes, and
            // its client starts another); the row alone answers from now on.
            self.fresh().moved(id);
        }
        out
    }
}

/// The row of a session held in memory until now.
fn insert_session(tx: &Connection, u: &Upload, created_at: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO uploads (id, repository, received, created_at, updated_at) VALUES (?1, ?2, 0, ?3, ?4)",
    )?
    .execute(params![u.id.to_string(), u.repo.as_str(), created_at, u.updated_at])?;
    Ok(())
}

/// Records `a` on the session's row if it still stands at `a.at` with room for another chunk;
/// returns the session's new size.
fn append(tx: &Connection, id: UploadId, a: &Appended, max_parts: u32, now: i64) -> Result<u64> {
    let key = id.to_string();
    let counted = i64::from(a.added > 0);
    let updated = tx
        .prepare_cached(
            "UPDATE uploads SET received = received + ?3, parts = parts + ?5, updated_at = ?4,
                 hash_state = ?7
             WHERE id = ?1 AND received = ?2 AND parts + ?5 <= ?6",
        )?
        .execute(params![
            key,
            a.at as i64,
            a.added as i64,
            now,
            counted,
            i64::from(max_parts),
            a.hash_state
        ])?;
    if updated == 0 {
        let current: Option<i64> =
            tx.query_row("SELECT received FROM uploads WHERE id = ?1", [&key], |r| r.get(0)).optional()?;
        return Err(MetaError::refused_append(current.map(|c| c as u64), a.at, max_parts));
    }
    if a.drop_chunks {
        tx.execute("DELETE FROM upload_parts WHERE upload_id = ?1 AND tag IS NULL", [&key])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO upload_parts (upload_id, start, size, nonce, tag) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for p in &a.parts {
        insert.execute(params![key, p.start as i64, p.size as i64, p.nonce, p.tag])?;
    }
    Ok(a.at + a.added)
}

fn session(c: &Connection, id: UploadId) -> Result<Option<Upload>> {
    type Head = (String, i64, i64, Option<Vec<u8>>, Option<String>);
    let head: Option<Head> = c
        .prepare_cached(
            "SELECT repository, received, updated_at, hash_state, assembly FROM uploads WHERE id = ?1",
        )?
        .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .optional()?;
    let Some((repo, received, updated_at, hash_state, assembly)) = head else { return Ok(None) };
    Ok(Some(Upload {
        id,
        repo: parse("repository name", repo)?,
        received: received as u64,
        updated_at,
        hash_state,
        assembly,
    }))
}

fn parts(c: &Connection, id: UploadId) -> Result<Vec<UploadPart>> {
    let parts = c
        .prepare_cached(
            "SELECT start, size, nonce, tag FROM upload_parts WHERE upload_id = ?1 ORDER BY start",
        )?
        .query_map([id.to_string()], |r| {
            Ok(UploadPart {
                start: r.get::<_, i64>(0)? as u64,
                size: r.get::<_, i64>(1)? as u64,
                nonce: r.get(2)?,
                tag: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(m: &SqliteMeta) -> i64 {
        m.inner.readers.with(|c| c.query_row("SELECT COUNT(*) FROM uploads", [], |r| r.get(0))).unwrap()
    }

    fn chunk(at: u64, added: u64) -> Appended {
        let nonce = format!("{at:x}{added:x}");
        Appended {
            at,
            added,
            parts: vec![UploadPart { start: at, size: added, nonce, tag: None }],
            drop_chunks: false,
            hash_state: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_is_written_with_its_first_bytes_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMeta::open(dir.path().join("meta.db")).unwrap();
        let r: RepoName = "fresh/rows".parse().unwrap();
        let (empty, sent) = (UploadId::random(), UploadId::random());
        m.create_upload(empty, &r, 10).await.unwrap();
        m.create_upload(sent, &r, 10).await.unwrap();
        m.touch_upload(empty, 11).await.unwrap();
        assert_eq!(rows(&m), 0, "no row for a session without bytes");
        assert_eq!(m.append_upload(sent, &chunk(0, 4), 3, 12).await.unwrap(), 4);
        assert_eq!(rows(&m), 1);
        let u = m.inner.readers.with(|c| session(c, sent)).unwrap().unwrap();
        assert_eq!((u.received, u.updated_at, u.repo), (4, 12, r.clone()));
        let created: i64 = m
            .inner
            .readers
            .with(|c| c.query_row("SELECT created_at FROM uploads", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(created, 10, "created when the POST came");
        assert_eq!(m.count_uploads().await.unwrap(), 2);

        // A restart forgets the session that had nothing; the one with bytes resumes.
        drop(m);
        let m = SqliteMeta::open(dir.path().join("meta.db")).unwrap();
        assert_eq!(m.upload(empty).await.unwrap(), None);
        assert_eq!(m.upload(sent).await.unwrap().map(|u| u.received), Some(4));
        assert_eq!(m.append_upload(sent, &chunk(4, 2), 3, 13).await.unwrap(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_first_bytes_write_one_row_and_the_others_hear_where_it_stands() {
        let m = Arc::new(SqliteMeta::temporary().unwrap());
        let r: RepoName = "fresh/race".parse().unwrap();
        for _ in 0..20 {
            let id = UploadId::random();
            m.create_upload(id, &r, 10).await.unwrap();
            let racers: Vec<_> = (1..=4u64)
                .map(|n| {
                    let m = m.clone();
                    tokio::spawn(async move { m.append_upload(id, &chunk(0, n), 3, 11).await })
                })
                .collect();
            let mut won = Vec::new();
            for r in racers {
                match r.await.unwrap() {
                    Ok(total) => won.push(total),
                    Err(MetaError::UploadOffset { current }) => assert!(current > 0),
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(won.len(), 1, "{won:?}");
            let u = m.upload(id).await.unwrap().unwrap();
            assert_eq!(u.received, won[0]);
            assert_eq!(m.upload_parts(id).await.unwrap().len(), 1);
            assert!(m.delete_upload(id).await.unwrap());
        }
        assert_eq!(rows(&m), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_first_append_leaves_the_session_as_it_was() {
        let m = SqliteMeta::temporary().unwrap();
        let id = UploadId::random();
        m.create_upload(id, &"fresh/refused".parse().unwrap(), 10).await.unwrap();
        let e = m.append_upload(id, &chunk(5, 1), 3, 11).await.unwrap_err();
        assert!(matches!(e, MetaError::UploadOffset { current: 0 }), "{e:?}");
        let e = m.append_upload(id, &chunk(0, 1), 0, 11).await.unwrap_err();
        assert!(matches!(e, MetaError::UploadFull { max: 0 }), "{e:?}");
        assert_eq!(rows(&m), 0, "the row went with the savepoint");
        assert_eq!(m.upload(id).await.unwrap().map(|u| u.received), Some(0));
        assert!(m.delete_upload(id).await.unwrap(), "still held, and cancelled here");
        assert_eq!(rows(&m), 0);
    }
}
