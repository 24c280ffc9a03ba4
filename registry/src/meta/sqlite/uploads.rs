//! Upload sessions in SQLite. Their bookkeeping is written without waiting for the disk (a client
//! that loses it in a power loss resumes with a 416); the write that closes a session, linking
//! its blob, is synced like every acknowledged write.

use rusqlite::{params, Connection, OptionalExtension};

use super::writer::Durability;
use super::{link_blob_at_tx, link_blob_tx, live_blob_size, parse, SqliteMeta};
use crate::meta::{Appended, Closing, MetaError, Result, Stored, Upload, UploadPart, UploadSessions};
use crate::UploadId;
use berth_core::oci::{Digest, RepoName};

#[async_trait::async_trait]
impl UploadSessions for SqliteMeta {
    async fn create_upload(&self, id: UploadId, repo: &RepoName, now: i64) -> Result<()> {
        let repo = repo.to_string();
        self.write(Durability::Unsynced, move |tx| {
            tx.prepare_cached(
                "INSERT INTO uploads (id, repository, received, created_at, updated_at)
                 VALUES (?1, ?2, 0, ?3, ?3)",
            )?
            .execute(params![id.to_string(), repo, now])?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, id: UploadId) -> Result<Option<Upload>> {
        self.read(move |c| session(c, id)).await
    }

    async fn upload_parts(&self, id: UploadId) -> Result<Vec<UploadPart>> {
        self.read(move |c| parts(c, id)).await
    }

    async fn closing_upload(&self, id: UploadId, digest: &Digest) -> Result<Option<Closing>> {
        let digest = digest.clone();
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
        self.write(Durability::Unsynced, move |tx| {
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
                let current: Option<i64> = tx
                    .query_row("SELECT received FROM uploads WHERE id = ?1", [&key], |r| r.get(0))
                    .optional()?;
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
        })
        .await
    }

    async fn set_upload_assembly(&self, id: UploadId, assembly: &str) -> Result<Option<String>> {
        let assembly = assembly.to_owned();
        self.write(Durability::Synced, move |tx| {
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
        self.write(Durability::Synced, move |tx| {
            link_blob_tx(tx, &repo, &digest, size, stored)?;
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute([id.to_string()])?;
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
        self.write(Durability::Synced, move |tx| {
            if tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute([id.to_string()])? == 0 {
                return Err(MetaError::UploadUnknown);
            }
            link_blob_at_tx(tx, &repo, &digest, size, &location)
        })
        .await
    }

    async fn delete_upload(&self, id: UploadId) -> Result<bool> {
        self.write(Durability::Unsynced, move |tx| {
            Ok(tx.execute("DELETE FROM uploads WHERE id = ?1", [id.to_string()])? > 0)
        })
        .await
    }

    async fn touch_upload(&self, id: UploadId, now: i64) -> Result<()> {
        self.write(Durability::Unsynced, move |tx| {
            tx.prepare_cached("UPDATE uploads SET updated_at = max(updated_at, ?2) WHERE id = ?1")?
                .execute(params![id.to_string(), now])?;
            Ok(())
        })
        .await
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> Result<Vec<UploadId>> {
        self.read(move |c| {
            let ids = c
                .prepare_cached("SELECT id FROM uploads WHERE updated_at < ?1 ORDER BY updated_at LIMIT ?2")?
                .query_map(params![before, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            ids.into_iter().map(|s| parse("upload id", s)).collect()
        })
        .await
    }

    async fn count_uploads(&self) -> Result<u64> {
        self.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM uploads", [], |r| r.get::<_, i64>(0))? as u64))
            .await
    }
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
