//! Blob uploads: monolithic, POST-then-PUT, chunked and streamed PATCHes, resumable after 416 and
//! across restarts.
//!
//! ```text
//! POST /blobs/uploads/ ──► session (no bytes; SQLite writes its row with its first bytes)
//! PATCH [Content-Range] ──► one storage object per chunk, written at its key (no rename):
//!                           uploads/<hh>/<id>.<start>-<nonce>
//!                           recorded only if the session still stood at <start> (else 416)
//!                           and holds fewer than `max_upload_chunks` chunks (else 400)
//! PUT ?digest=          ──► digest checked (the sha256 state recorded with each chunk)
//!                           one chunk: renamed into blobs/; several: concatenated; then the blob
//!                           is linked and the session forgotten in one durable transaction
//!                           (on S3 the session's one object stays the blob: `super::in_place`)
//! PUT ?digest= + body   ──► on a session with no bytes yet (containerd's push): the body is
//!                           written straight to blobs/<digest>, verified on the way; no chunk
//! ```
//! On stores that build objects from parts (S3), chunks go into the session's multipart upload
//! instead ([`super::assembly`]).
//! Nothing under `blobs/` is ever written, and no row names an upload's object, before its digest
//! is verified. Chunks and the session's
//! bookkeeping are not synced to disk as they arrive: a power loss that takes them makes the
//! client's next request a 416 (or an unknown session), from which it resumes. What a `201`
//! acknowledges — the blob and its link — is durable before the answer.

use futures_util::StreamExt;

use super::assembly::{self, nonce, PartSink};
use super::error::{Result, ServiceError};
use super::in_use::InUse;
use super::registry::{copy_body, repo_matches, BodyStream, Registry};
use crate::meta::{now, Appended, Closing, Stored, Upload, UploadPart};
use crate::storage::{layout, put_all_then_record};
use crate::UploadId;
use berth_core::oci::range::ChunkRange;
use berth_core::oci::{Algorithm, Digest, Hasher, RepoName};

/// How an upload's bytes became its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    /// Its one chunk was renamed into place: no chunk is left.
    Moved,
    /// The blob was written anew: the chunks are left to remove.
    Copied,
    /// The blob was stored already (content-addressed, so identical): the chunks are left too.
    Found,
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
        let (received, _) = self.append(&u, range, declared, body).await?;
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
        let mut closing = self.live_closing(repo, id, digest).await?;
        // No bytes yet (and so, once counted, no chunks): the body is the whole blob.
        if closing.upload.received == 0 && closing.stored.is_none() {
            return self.finish_whole(repo, &closing.upload, digest, range, declared, body).await;
        }
        let (received, hasher) = self.append(&closing.upload, range, declared, body).await?;
        if received != closing.upload.received {
            closing = self.live_closing(repo, id, digest).await?;
        }
        let Closing { upload: u, parts, stored } = closing;
        let assembled = parts.iter().any(|p| p.tag.is_some());
        // The recorded state checks a sha256 digest before anything is completed; any other
        // digest is checked by reading the bytes, which an assembled session has only once its
        // assembly is complete (into its own key, not a blob's).
        let (actual, mut completed) = match (digest.algorithm(), hasher) {
            (Algorithm::Sha256, Some(h)) => (h.finish(), None),
            (algorithm, _) if assembled => {
                let key = assembly::complete(self.storage.as_ref(), &u, &parts).await?;
                (self.hash_object(&key, algorithm).await?.finish(), Some(key))
            }
            (algorithm, _) => (self.rehash(&u, &parts, algorithm).await?.finish(), None),
        };
        if actual != *digest {
            self.discard(&u).await;
            return Err(ServiceError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        if assembled && completed.is_none() {
            completed = Some(assembly::complete(self.storage.as_ref(), &u, &parts).await?);
        }
        // A `live` row always has its object (see `crate::meta::sweep`): then the session's own
        // bytes need not be published.
        let found = completed.is_none() && stored == Some(u.received);
        if !found && self.locates() {
            if let Some(at) = super::in_place::own_object(&u, &parts, completed.as_ref()) {
                return self.finish_in_place(repo, &u, &parts, digest, at).await;
            }
        }
        let (mut published, stored) = match &completed {
            _ if found => (Published::Found, Stored::Assumed),
            Some(key) => {
                self.storage.rename(key, &layout::blob(digest)).await?;
                (Published::Copied, Stored::Written)
            }
            None => (self.publish(&u, &parts, digest).await?, Stored::Written),
        };
        let finish = |s| self.meta.finish_upload(u.id, repo, digest, u.received, s);
        let mut recorded = match self.record_past_purge(digest, u.received, stored, &finish).await {
            Err(e) if stored == Stored::Written => return Err(self.orphaned(digest, u.received, e).await),
            r => r?,
        };
        if !recorded && found {
            // What was found stored went with a purge: publish the session's bytes after all.
            published = self.publish(&u, &parts, digest).await?;
            recorded = self.record_past_purge(digest, u.received, Stored::Written, &finish).await?;
        }
        if !recorded {
            self.discard(&u).await;
            return Err(ServiceError::gone(digest));
        }
        // A link no manifest uses yet, as `put_blob` leaves: the review queue looks at it.
        self.changed(repo);
        if published != Published::Moved {
            // The blob is recorded: a chunk left behind is only litter (the scrub's to find).
            for p in parts.iter().filter(|p| p.tag.is_none()) {
                if let Err(e) = self.storage.delete(&layout::upload_part(&u.id, p.start, &p.nonce)).await {
                    tracing::warn!(error = %e, upload = %u.id, "could not remove an upload chunk");
                }
            }
        }
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
        let size = self.write_blob(digest, declared, body).await?;
        self.record_written(repo, digest, size).await?;
        Ok(size)
    }

    /// Streams `body` straight to the blob `digest`'s key, verifying it on the way; nothing is
    /// visible there unless it verifies. Returns its size.
    async fn write_blob(&self, digest: &Digest, declared: Option<u64>, body: BodyStream) -> Result<u64> {
        let mut hasher = digest.algorithm().hasher();
        let mut writer = self.storage.writer_at(&layout::blob(digest)).await?;
        let size = copy_body(body, declared, writer.as_mut(), &mut hasher).await?;
        let actual = hasher.finish();
        if actual != *digest {
            return Err(ServiceError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        // Every caller links it next.
        writer.commit_then_record(&layout::blob(digest)).await?;
        Ok(size)
    }

    /// Closes a session that holds no bytes yet with the request that brings all of them — how
    /// containerd, BuildKit and oras push (`POST`, then one `PUT ?digest=` with the body): the
    /// digest is known before the first byte, so the blob is written once, at its own key, as
    /// `put_blob` writes it. No chunk, no assembly, and on object storage no copy afterwards.
    async fn finish_whole(
        &self,
        repo: &RepoName,
        u: &Upload,
        digest: &Digest,
        range: Option<ChunkRange>,
        declared: Option<u64>,
        body: BodyStream,
    ) -> Result<u64> {
        let expected = expected_len(u, range, declared)?;
        let size = match self.write_blob(digest, expected, body).await {
            Err(e @ ServiceError::DigestInvalid(_)) => {
                self.discard(u).await;
                return Err(e);
            }
            r => r?,
        };
        let finish = |s| self.meta.finish_upload(u.id, repo, digest, size, s);
        match self.record_past_purge(digest, size, Stored::Written, &finish).await {
            Ok(true) => {
                self.changed(repo);
                self.drop_needless_copy(digest).await;
                Ok(size)
            }
            Ok(false) => {
                self.discard(u).await;
                Err(ServiceError::gone(digest))
            }
            Err(e) => Err(self.orphaned(digest, size, e).await),
        }
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
        self.check_live(&u, repo).await?;
        Ok(u)
    }

    /// [`Registry::live_upload`] with what closing it as `digest` needs, in one read.
    async fn live_closing(&self, repo: &RepoName, id: UploadId, digest: &Digest) -> Result<Closing> {
        let mut c = self.meta.closing_upload(id, digest).await?.ok_or(ServiceError::UploadUnknown)?;
        self.check_live(&c.upload, repo).await?;
        c.parts = counted_parts(&c.upload, std::mem::take(&mut c.parts))?;
        Ok(c)
    }

    /// Refuses a session of another repository, and discards one idle past the upload TTL.
    async fn check_live(&self, u: &Upload, repo: &RepoName) -> Result<()> {
        repo_matches(&u.repo, repo)?;
        if u.updated_at < now() - self.limits.upload_ttl.as_secs() as i64 {
            self.discard(u).await;
            return Err(ServiceError::UploadUnknown);
        }
        Ok(())
    }

    /// Stores one request's bytes and records them; returns the session's new size and, when
    /// known, the sha256 state after it.
    async fn append(
        &self,
        u: &Upload,
        range: Option<ChunkRange>,
        declared: Option<u64>,
        body: BodyStream,
    ) -> Result<(u64, Option<Hasher>)> {
        let expected = expected_len(u, range, declared)?;
        let _in_use = InUse::start(self.meta.clone(), u.id, u.updated_at, self.limits.upload_ttl);
        let mut hasher = self.hasher_at(u).await?;
        let mut scratch = Algorithm::Sha256.hasher();
        let h = hasher.as_mut().unwrap_or(&mut scratch);
        let (added, parts, drop_chunks, written, merged) = match self.storage.assembly_part_size(0) {
            None => {
                // Written at its own key: nothing reads a chunk before its session records it.
                let nonce = nonce();
                let key = layout::upload_part(&u.id, u.received, &nonce);
                let mut writer = self.storage.scratch_writer(&key).await?;
                let size = copy_body(body, expected, writer.as_mut(), h).await?;
                if size == 0 {
                    return Ok((u.received, hasher));
                }
                let part = UploadPart { start: u.received, size, nonce, tag: None };
                writer.commit_unsynced(&key).await?;
                (size, vec![part], false, Some(key), vec![])
            }
            Some(_) => {
                let parts = self.meta.upload_parts(u.id).await?;
                let mut sink = PartSink::new(self.storage.clone(), self.meta.clone(), u, &parts);
                let size = copy_body(body, expected, &mut sink, h).await?;
                if size == 0 {
                    return Ok((u.received, hasher));
                }
                let sunk = sink.finish().await?;
                (size, sunk.parts, sunk.drop_chunks, sunk.chunk_key, sunk.merged)
            }
        };
        let hash_state = hasher.as_ref().and_then(Hasher::state);
        let appended = Appended { at: u.received, added, parts, drop_chunks, hash_state };
        match self.meta.append_upload(u.id, &appended, self.limits.max_upload_chunks, now()).await {
            Ok(total) => {
                for k in &merged {
                    // Inside a part now; a leftover is removed with the session.
                    let _ = self.storage.delete(k).await;
                }
                Ok((total, hasher))
            }
            Err(e) => {
                // Another request won the race for this offset; this chunk was never recorded.
                if let Some(k) = &written {
                    let _ = self.storage.delete(k).await;
                }
                Err(e.into())
            }
        }
    }

    /// The sha256 state after the session's bytes so far: recorded with them, or else (a session
    /// from before states were recorded) read back from its chunks; `None` if neither can be.
    async fn hasher_at(&self, u: &Upload) -> Result<Option<Hasher>> {
        if u.received == 0 {
            // A new session: no state recorded yet, and nothing to read.
            return Ok(Some(Algorithm::Sha256.hasher()));
        }
        if let Some(h) = u.hash_state.as_deref().and_then(Hasher::resume) {
            return Ok(Some(h));
        }
        let parts = self.meta.upload_parts(u.id).await?;
        if parts.iter().any(|p| p.tag.is_some()) {
            return Ok(None);
        }
        Ok(Some(self.rehash(u, &parts, Algorithm::Sha256).await?))
    }

    /// Hashes the session's chunk objects (an unassembled session) in `algorithm`.
    async fn rehash(&self, u: &Upload, parts: &[UploadPart], algorithm: Algorithm) -> Result<Hasher> {
        let mut hasher = algorithm.hasher();
        for p in parts {
            self.hash_into(&layout::upload_part(&u.id, p.start, &p.nonce), &mut hasher).await?;
        }
        Ok(hasher)
    }

    async fn hash_object(&self, key: &crate::storage::Key, algorithm: Algorithm) -> Result<Hasher> {
        let mut hasher = algorithm.hasher();
        self.hash_into(key, &mut hasher).await?;
        Ok(hasher)
    }

    async fn hash_into(&self, key: &crate::storage::Key, hasher: &mut Hasher) -> Result<()> {
        let mut s = self.storage.get(key, None).await?;
        while let Some(chunk) = s.next().await {
            hasher.update(&chunk.map_err(crate::storage::StorageError::Io)?);
        }
        Ok(())
    }

    /// Makes the verified bytes of `u` the blob `digest`, which the caller links next.
    async fn publish(&self, u: &Upload, parts: &[UploadPart], digest: &Digest) -> Result<Published> {
        let target = layout::blob(digest);
        let part_key = |p: &UploadPart| layout::upload_part(&u.id, p.start, &p.nonce);
        match parts {
            [] => put_all_then_record(self.storage.as_ref(), &target, bytes::Bytes::new()).await?,
            [only] => {
                self.storage.rename_then_record(&part_key(only), &target).await?;
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
                writer.commit_then_record(&target).await?;
            }
        }
        Ok(Published::Copied)
    }

    /// Forgets a session and removes every byte it left in storage (chunks a crash left
    /// unrecorded too). Best effort: what fails here is retried by the next purge (the session
    /// row goes last), or where a session's object may become its blob ([`Registry::locates`])
    /// found by the scrub: there the row goes first, as the claim on the session's objects, so
    /// that nothing a concurrent close recorded as a blob is removed.
    pub(super) async fn discard(&self, u: &Upload) {
        if let Some(a) = &u.assembly {
            // By its recorded id: the bucket's multipart uploads are never listed. A completed
            // one is not aborted (it is gone as a multipart upload), and one aborted here cannot
            // be completed by a close racing this.
            if let Err(e) = self.storage.abort_assembly(&layout::upload_assembly(&u.id), a).await {
                tracing::warn!(error = %e, upload = %u.id, "could not abort the upload's multipart upload");
                return;
            }
        }
        // Where a session's object may become its blob, the row goes first: it is the claim on
        // the objects, and a close that took it first may have made one of them a blob.
        let claim_first = self.locates();
        if claim_first && !self.forget_upload(u).await {
            return;
        }
        let objects = self.storage.list(&layout::upload_prefix(&u.id)).await.unwrap_or_default();
        for o in objects {
            if let Err(e) = self.storage.delete(&o.key).await {
                tracing::warn!(error = %e, upload = %u.id, "could not remove upload data");
                return;
            }
        }
        if !claim_first {
            self.forget_upload(u).await;
        }
    }

    /// Deletes the session's row; false when it was gone already (closed, or discarded by
    /// another request) or could not be deleted.
    async fn forget_upload(&self, u: &Upload) -> bool {
        match self.meta.delete_upload(u.id).await {
            Ok(deleted) => deleted,
            Err(e) => {
                tracing::warn!(error = %e, upload = %u.id, "could not remove upload session");
                false
            }
        }
    }
}

/// The chunks that hold the `received` bytes of `u`, which its recorded hash state covers: a
/// session and its chunks are read one after the other, so a `PATCH` landing between the reads
/// can add a chunk the session row does not count yet, and it must not be published under a
/// digest of the bytes before it. Chunks that do not tile `0..received` (a merge raced the read)
/// are refused, for the client to try again.
fn counted_parts(u: &Upload, mut parts: Vec<UploadPart>) -> Result<Vec<UploadPart>> {
    parts.retain(|p| p.start < u.received);
    let mut at = 0;
    for p in &parts {
        if p.start != at {
            break;
        }
        at += p.size;
    }
    if at != u.received {
        return Err(ServiceError::Retry(format!(
            "upload {} changed while it was being closed; try again",
            u.id
        )));
    }
    Ok(parts)
}

/// How many bytes a request adding to `u` must bring, if it says: refuses a range that does not
/// start where the session stands, or that disagrees with the declared length.
fn expected_len(u: &Upload, range: Option<ChunkRange>, declared: Option<u64>) -> Result<Option<u64>> {
    if let Some(r) = range {
        if r.start != u.received {
            return Err(ServiceError::RangeInvalid { received: u.received });
        }
        if declared.is_some_and(|d| d != r.len()) {
            return Err(ServiceError::UploadInvalid("Content-Range and Content-Length disagree".into()));
        }
    }
    Ok(range.map(|r| r.len()).or(declared))
}

#[cfg(test)]
#[path = "uploads_tests.rs"]
mod tests;
