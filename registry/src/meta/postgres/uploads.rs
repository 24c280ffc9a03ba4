//! Upload sessions in PostgreSQL: any replica continues a session another one began. Their
//! bookkeeping is committed without waiting for the disk; the write that closes a session,
//! linking its blob, is synced like every acknowledged write.

use deadpool_postgres::GenericClient;

use super::errors::db_error;
use super::{
    execute, link_blob_at_tx, link_blob_tx, live_blob_size, parse, query, query_opt, size, PostgresMeta, Tx,
    TxResult,
};
use crate::meta::{Appended, Closing, MetaError, Result, Stored, Upload, UploadPart, UploadSessions};
use crate::UploadId;
use berth_core::oci::{Digest, RepoName};

#[async_trait::async_trait]
impl UploadSessions for PostgresMeta {
    async fn create_upload(&self, id: UploadId, repo: &RepoName, now: i64) -> Result<()> {
        let repo = repo.to_string();
        self.write(false, move |tx| {
            let repo = repo.clone();
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO uploads (id, repository, received, created_at, updated_at)
                     VALUES ($1, $2, 0, $3, $3)",
                    &[&id.to_string(), &repo, &now],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn upload(&self, id: UploadId) -> Result<Option<Upload>> {
        session(&self.client().await?, id).await
    }

    async fn upload_parts(&self, id: UploadId) -> Result<Vec<UploadPart>> {
        parts(&self.client().await?, id).await
    }

    async fn closing_upload(&self, id: UploadId, digest: &Digest) -> Result<Option<Closing>> {
        let c = self.client().await?;
        // Sent together on the one connection: one round trip, not three.
        let (upload, parts, stored) =
            tokio::try_join!(session(&c, id), parts(&c, id), live_blob_size(&c, digest))?;
        Ok(upload.map(|upload| Closing { upload, parts, stored }))
    }

    async fn append_upload(&self, id: UploadId, a: &Appended, max_parts: u32, now: i64) -> Result<u64> {
        for p in &a.parts {
            p.check_nonce()?;
        }
        let a = a.clone();
        self.write(false, move |tx| {
            let a = a.clone();
            Box::pin(async move { append_upload_tx(tx, id, &a, max_parts, now).await })
        })
        .await
    }

    async fn set_upload_assembly(&self, id: UploadId, assembly: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let key = id.to_string();
        execute(
            &c,
            "UPDATE uploads SET assembly = $2 WHERE id = $1 AND assembly IS NULL",
            &[&key, &assembly],
        )
        .await
        .map_err(db_error)?;
        let row =
            query_opt(&c, "SELECT assembly FROM uploads WHERE id = $1", &[&key]).await.map_err(db_error)?;
        Ok(row.and_then(|r| r.get(0)))
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
        self.write(true, move |tx| {
            let (repo, digest) = (repo.clone(), digest.clone());
            Box::pin(async move {
                link_blob_tx(tx, &repo, &digest, size, stored).await?;
                execute(tx, "DELETE FROM uploads WHERE id = $1", &[&id.to_string()]).await?;
                Ok(())
            })
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
        self.write(true, move |tx| {
            let (repo, digest, location) = (repo.clone(), digest.clone(), location.clone());
            Box::pin(async move {
                if execute(tx, "DELETE FROM uploads WHERE id = $1", &[&id.to_string()]).await? == 0 {
                    return Err(MetaError::UploadUnknown.into());
                }
                link_blob_at_tx(tx, &repo, &digest, size, &location).await
            })
        })
        .await
    }

    async fn delete_upload(&self, id: UploadId) -> Result<bool> {
        self.write(false, move |tx| {
            Box::pin(async move {
                Ok(execute(tx, "DELETE FROM uploads WHERE id = $1", &[&id.to_string()]).await? > 0)
            })
        })
        .await
    }

    async fn touch_upload(&self, id: UploadId, now: i64) -> Result<()> {
        let c = self.client().await?;
        execute(
            &c,
            "UPDATE uploads SET updated_at = GREATEST(updated_at, $2) WHERE id = $1",
            &[&id.to_string(), &now],
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> Result<Vec<UploadId>> {
        let c = self.client().await?;
        let rows = query(
            &c,
            "SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
            &[&before, &(limit.min(i64::MAX as usize) as i64)],
        )
        .await
        .map_err(db_error)?;
        rows.into_iter().map(|r| parse("upload id", r.get(0))).collect()
    }

    async fn count_uploads(&self) -> Result<u64> {
        let c = self.client().await?;
        let row = query_opt(&c, "SELECT count(*) FROM uploads", &[]).await.map_err(db_error)?;
        Ok(row.map_or(0, |r| size(r.get(0))))
    }
}

async fn session<C: GenericClient>(c: &C, id: UploadId) -> Result<Option<Upload>> {
    let row = query_opt(
        c,
        "SELECT repository, received, updated_at, hash_state, assembly FROM uploads WHERE id = $1",
        &[&id.to_string()],
    )
    .await
    .map_err(db_error)?;
    row.map(|r| {
        Ok(Upload {
            id,
            repo: parse("repository name", r.get(0))?,
            received: size(r.get(1)),
            updated_at: r.get(2),
            hash_state: r.get(3),
            assembly: r.get(4),
        })
    })
    .transpose()
}

async fn parts<C: GenericClient>(c: &C, id: UploadId) -> Result<Vec<UploadPart>> {
    let rows = query(
        c,
        "SELECT start, size, nonce, tag FROM upload_parts WHERE upload_id = $1 ORDER BY start",
        &[&id.to_string()],
    )
    .await
    .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|r| UploadPart { start: size(r.get(0)), size: size(r.get(1)), nonce: r.get(2), tag: r.get(3) })
        .collect())
}

async fn append_upload_tx(
    tx: &Tx<'_>,
    id: UploadId,
    a: &Appended,
    max_parts: u32,
    now: i64,
) -> TxResult<u64> {
    let key = id.to_string();
    let counted = i32::from(a.added > 0);
    let updated = execute(
        tx,
        "UPDATE uploads SET received = received + $3, parts = parts + $5, updated_at = $4, hash_state = $7
         WHERE id = $1 AND received = $2 AND parts + $5 <= $6",
        &[
            &key,
            &(a.at as i64),
            &(a.added as i64),
            &now,
            &counted,
            &(max_parts.min(i32::MAX as u32) as i32),
            &a.hash_state,
        ],
    )
    .await?;
    if updated == 0 {
        let current = query_opt(tx, "SELECT received FROM uploads WHERE id = $1", &[&key]).await?;
        return Err(MetaError::refused_append(current.map(|r| size(r.get(0))), a.at, max_parts).into());
    }
    if a.drop_chunks {
        execute(tx, "DELETE FROM upload_parts WHERE upload_id = $1 AND tag IS NULL", &[&key]).await?;
    }
    for p in &a.parts {
        execute(
            tx,
            "INSERT INTO upload_parts (upload_id, start, size, nonce, tag) VALUES ($1, $2, $3, $4, $5)",
            &[&key, &(p.start as i64), &(p.size as i64), &p.nonce, &p.tag],
        )
        .await?;
    }
    Ok(a.at + a.added)
}
