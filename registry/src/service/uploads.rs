//! Blob uploads: monolithic, POST-then-PUT, chunked and streamed PATCHes, resumable after 416 and
//! across restarts.
//!
//! ```text
//! POST /blobs/uploads/ ──► session (meta row, no bytes)
//! PATCH [Content-Range] ──► one storage object per chunk: uploads/<id>/<start>-<nonce>
//!                           recorded only if the session still stood at <start> (else 416)
//!                           and holds fewer than `max_upload_chunks` chunks (else 400)
//! PUT ?digest=          ──► digest checked (running hash, or re-read after a restart)
//!                           one chunk: renamed into blobs/; several: concatenated; then the blob
//!                           is linked and the session forgotten in one durable transaction
//! ```
//! Nothing under `blobs/` is ever written before its digest is verified. Chunks and the session's
//! bookkeeping are not synced to disk as they arrive: a power loss that takes them makes the
//! client's next request a 416 (or an unknown session), from which it resumes. What a `201`
//! acknowledges — the blob and its link — is durable before the answer.

use futures_util::StreamExt;

use super::error::{Result, ServiceError};
use super::registry::{copy_body, repo_matches, BodyStream, Registry};
use crate::meta::{now, Upload, UploadPart};
use crate::storage::{layout, put_all};
use crate::UploadId;
use berth_core::oci::range::ChunkRange;
use berth_core::oci::{Algorithm, Digest, Hasher, RepoName};

/// How an upload's bytes became its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// Its one chunk was renamed into place: no chunk is left.
    Moved,
    /// The blob was written anew (or was there already): the chunks are left to remove.
    Copied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadState {
    pub id: UploadId,
    /// Bytes received so far.
    pub received: u64,
}

/// How many expired sessions one purge pass removes.
const PURGE_BATCH: usize = 256;

impl Registry {
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadState> {
        let id = UploadId::random();
        self.meta.create_upload(id, repo, now()).await?;
        Ok(UploadState { id, received: 0 })
    }

    pub async fn upload_status(&self, repo: &RepoName, id: UploadId) -> Result<UploadState> {
        let u = self.live_upload(repo, id).await?;
        Ok(UploadState { id, received: u.received })
    }

    pub async fn upload_chunk(
        &self,
        repo: &RepoName,
        id: UploadId,
        range: Option<ChunkRange>,
        declared: Option<u64>,
        body: BodyStream,
    ) -> Result<UploadState> {
        let u = self.live_upload(repo, id).await?;
        let received = self.append(&u, range, declared, body).await?;
        Ok(UploadState { id, received })
    }

    /// Closes an upload: takes the last chunk (if any), verifies the digest, publishes the blob.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        range: Option<ChunkRange>,
        declared: Option<u64>,
        body: BodyStream,
    ) -> Result<u64> {
        let mut u = self.live_upload(repo, id).await?;
        if self.append(&u, range, declared, body).await? != u.received {
            u = self.live_upload(repo, id).await?;
        }
        let hasher = match digest.algorithm() {
            Algorithm::Sha256 => self.hasher_at(&u).await?,
            other => self.rehash(&u, other).await?,
        };
        let actual = hasher.finish();
        if actual != *digest {
            self.discard(&u).await;
            return Err(ServiceError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        let parts = self.meta.upload_parts(u.id).await?;
        if self.publish(&u, &parts, digest).await? == Published::Copied {
            for p in &parts {
                self.storage.delete(&layout::upload_part(&u.id, p.start, &p.nonce)).await?;
            }
        }
        self.meta.finish_upload(u.id, repo, digest, u.received).await?;
        self.forget_hasher(u.id);
        Ok(u.received)
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: UploadId) -> Result<()> {
        let u = self.live_upload(repo, id).await?;
        self.discard(&u).await;
        Ok(())
    }

    /// A whole blob in one request (`POST ?digest=`): verified while streaming, then published.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        declared: Option<u64>,
        body: BodyStream,
    ) -> Result<u64> {
        let mut hasher = digest.algorithm().hasher();
        let mut writer = self.storage.writer().await?;
        let size = copy_body(body, declared, writer.as_mut(), &mut hasher).await?;
        let actual = hasher.finish();
        if actual != *digest {
            return Err(ServiceError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        writer.commit(&layout::blob(digest)).await?;
        self.meta.link_blob(repo, digest, size).await?;
        Ok(size)
    }

    /// Removes sessions idle for longer than the upload TTL; returns how many.
    pub async fn purge_stale_uploads(&self) -> Result<usize> {
        let before = now() - self.limits.upload_ttl.as_secs() as i64;
        let stale = self.meta.stale_uploads(before, PURGE_BATCH).await?;
        for id in &stale {
            if let Some(u) = self.meta.upload(*id).await? {
                self.discard(&u).await;
            }
        }
        Ok(stale.len())
    }

    async fn live_upload(&self, repo: &RepoName, id: UploadId) -> Result<Upload> {
        let u = self.meta.upload(id).await?.ok_or(ServiceError::UploadUnknown)?;
        repo_matches(&u.repo, repo)?;
        if u.updated_at < now() - self.limits.upload_ttl.as_secs() as i64 {
            self.discard(&u).await;
            return Err(ServiceError::UploadUnknown);
        }
        Ok(u)
    }

    /// Stores one chunk and records it; returns the session's new size.
    async fn append(
        &self,
        u: &Upload,
        range: Option<ChunkRange>,
        declared: Option<u64>,
        body: BodyStream,
    ) -> Result<u64> {
        if let Some(r) = range {
            if r.start != u.received {
                return Err(ServiceError::RangeInvalid { received: u.received });
            }
            if declared.is_some_and(|d| d != r.len()) {
                return Err(ServiceError::UploadInvalid("Content-Range and Content-Length disagree".into()));
            }
        }
        let expected = range.map(|r| r.len()).or(declared);
        let mut hasher = self.hasher_at(u).await?;
        let mut writer = self.storage.writer().await?;
        let size = copy_body(body, expected, writer.as_mut(), &mut hasher).await?;
        if size == 0 {
            self.keep_hasher(u.id, u.received, hasher);
            return Ok(u.received);
        }
        let part = UploadPart { start: u.received, size, nonce: uuid::Uuid::new_v4().simple().to_string() };
        let key = layout::upload_part(&u.id, part.start, &part.nonce);
        writer.commit_unsynced(&key).await?;
        match self.meta.add_upload_part(u.id, &part, self.limits.max_upload_chunks, now()).await {
            Ok(total) => {
                self.keep_hasher(u.id, total, hasher);
                Ok(total)
            }
            Err(e) => {
                // Another request won the race for this offset; this chunk was never recorded.
                let _ = self.storage.delete(&key).await;
                Err(e.into())
            }
        }
    }

    fn keep_hasher(&self, id: UploadId, at: u64, hasher: Hasher) {
        if let Ok(mut map) = self.hashers.lock() {
            map.insert(id, (at, hasher));
        }
    }

    /// The sha256 state after the session's bytes so far: remembered, or re-read from storage.
    async fn hasher_at(&self, u: &Upload) -> Result<Hasher> {
        let remembered = self.hashers.lock().ok().and_then(|mut m| m.remove(&u.id));
        match remembered {
            Some((at, h)) if at == u.received => Ok(h),
            _ => self.rehash(u, Algorithm::Sha256).await,
        }
    }

    async fn rehash(&self, u: &Upload, algorithm: Algorithm) -> Result<Hasher> {
        let mut hasher = algorithm.hasher();
        for p in &self.meta.upload_parts(u.id).await? {
            let mut s = self.storage.get(&layout::upload_part(&u.id, p.start, &p.nonce), None).await?;
            while let Some(chunk) = s.next().await {
                hasher.update(&chunk.map_err(crate::storage::StorageError::Io)?);
            }
        }
        Ok(hasher)
    }

    /// Makes the verified bytes of `u` the blob `digest`.
    async fn publish(&self, u: &Upload, parts: &[UploadPart], digest: &Digest) -> Result<Published> {
        let target = layout::blob(digest);
        if self.storage.stat(&target).await? == Some(u.received) {
            return Ok(Published::Copied); // already stored by someone else: content-addressed, so identical
        }
        let part_key = |p: &UploadPart| layout::upload_part(&u.id, p.start, &p.nonce);
        match parts {
            [] => put_all(self.storage.as_ref(), &target, bytes::Bytes::new()).await?,
            [only] => {
                self.storage.rename(&part_key(only), &target).await?;
                return Ok(Published::Moved);
            }
            parts => {
                let mut writer = self.storage.writer().await?;
                for p in parts {
                    let mut s = self.storage.get(&part_key(p), None).await?;
                    while let Some(chunk) = s.next().await {
                        writer.write(chunk.map_err(crate::storage::StorageError::Io)?).await?;
                    }
                }
                writer.commit(&target).await?;
            }
        }
        Ok(Published::Copied)
    }

    /// Forgets a session and removes every byte it left in storage (chunks a crash left
    /// unrecorded too). Best effort: what fails here is retried by the next purge (the session
    /// row goes last).
    async fn discard(&self, u: &Upload) {
        self.forget_hasher(u.id);
        let keys = self.storage.list(&layout::upload_prefix(&u.id)).await.unwrap_or_default();
        for k in keys {
            if let Err(e) = self.storage.delete(&k).await {
                tracing::warn!(error = %e, upload = %u.id, "could not remove upload data");
                return;
            }
        }
        if let Err(e) = self.meta.delete_upload(u.id).await {
            tracing::warn!(error = %e, upload = %u.id, "could not remove upload session");
        }
    }

    fn forget_hasher(&self, id: UploadId) {
        if let Ok(mut map) = self.hashers.lock() {
            map.remove(&id);
        }
    }
}
