//! Upload sessions on stores that build large objects from parts (S3 multipart uploads): the
//! session's bytes go into one multipart upload as they arrive, so finishing an upload of any
//! size costs one completion, and no byte passes through Berth or the store twice.
//!
//! ```text
//! PATCH ─► bytes ─► whole parts (growing) ─────► the session's multipart upload
//!                         ▲                       (id recorded before its first part)
//!          earlier chunk objects, when they and the new bytes fill a part
//!       └► the rest (< a part) ─► a chunk object of its own, until a later request fills a part
//! PUT   ─► digest checked from the stored hash state ─► remaining chunks as the last part
//!       ─► complete into uploads/<hh>/<id>.assembled, which stays the blob (`super::in_place`;
//!          copied to blobs/ server-side only on a database older Berths still use)
//! ```
//! Every request records what it added (parts with their tags, the chunk, the hash state) in one
//! conditional write, so any replica continues any session. Two requests racing for one offset
//! both upload a part under the same number, but only one is recorded: if the other's bytes
//! differ and landed last, the completion fails on its tag and the client starts over; no wrong
//! content is ever published.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::error::{Result, ServiceError};
use crate::meta::{MetaStore, Upload, UploadPart};
use crate::storage::{layout, read_all, Key, ObjectWriter, Storage, StorageError};

/// A fresh name for a chunk object (hex, as storage keys require).
pub(super) fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Collects one request's bytes into whole parts of the session's assembly; what is left over
/// becomes a chunk object ([`PartSink::finish`]).
pub(super) struct PartSink {
    storage: Arc<dyn Storage>,
    meta: Arc<dyn MetaStore>,
    upload: Upload,
    /// The session's chunk objects, their total size until they go into a part, and whether
    /// they have.
    chunks: Vec<UploadPart>,
    chunk_bytes: u64,
    merged: bool,
    /// Tagged parts the session had before this request.
    index: usize,
    /// Parts this request sent.
    sent: Vec<UploadPart>,
    /// New bytes not yet in a part; `offset` is where they start in the session.
    buf: BytesMut,
    offset: u64,
    written: u64,
}

/// What a request left: the parts and chunk to record, and whether the earlier chunks are now
/// inside the first part.
pub(super) struct Sunk {
    pub parts: Vec<UploadPart>,
    pub drop_chunks: bool,
    /// The chunk object written for the rest, to remove if the record is refused.
    pub chunk_key: Option<Key>,
    /// The chunk objects that went into a part, to remove once the record stands.
    pub merged: Vec<Key>,
}

impl PartSink {
    pub(super) fn new(
        storage: Arc<dyn Storage>,
        meta: Arc<dyn MetaStore>,
        upload: &Upload,
        parts: &[UploadPart],
    ) -> PartSink {
        let chunks: Vec<UploadPart> = parts.iter().filter(|p| p.tag.is_none()).cloned().collect();
        PartSink {
            storage,
            meta,
            chunk_bytes: chunks.iter().map(|c| c.size).sum(),
            chunks,
            merged: false,
            index: parts.iter().filter(|p| p.tag.is_some()).count(),
            sent: Vec::new(),
            buf: BytesMut::new(),
            offset: upload.received,
            written: 0,
            upload: upload.clone(),
        }
    }

    /// The size of the next part (parts grow with their number).
    fn part_size(&self) -> usize {
        let size = self.storage.assembly_part_size(self.index).unwrap_or(u64::MAX);
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    /// Sends one part: the earlier chunks (when this is the first part of the request) and then
    /// new bytes, `part_size` in all.
    async fn send_part(&mut self) -> std::result::Result<(), StorageError> {
        let part_size = self.part_size();
        let mut data = BytesMut::with_capacity(part_size);
        let mut start = self.offset;
        if !self.merged {
            if let Some(first) = self.chunks.first() {
                start = first.start;
            }
            for c in &self.chunks {
                data.extend_from_slice(&read_all(self.storage.as_ref(), &chunk_key(&self.upload, c)).await?);
            }
            self.chunk_bytes = 0;
            self.merged = true;
        }
        let take = part_size.saturating_sub(data.len()).min(self.buf.len());
        data.extend_from_slice(&self.buf.split_to(take));
        self.offset += take as u64;
        let assembly = self.assembly().await?;
        let size = data.len() as u64;
        let key = layout::upload_assembly(&self.upload.id);
        let tag = self.storage.put_assembly_part(&key, &assembly, self.index, data.freeze()).await?;
        self.index += 1;
        self.sent.push(UploadPart { start, size, nonce: nonce(), tag: Some(tag) });
        Ok(())
    }

    /// The session's assembly, started (and recorded, before any part goes into it) on first use.
    async fn assembly(&mut self) -> std::result::Result<String, StorageError> {
        if let Some(a) = &self.upload.assembly {
            return Ok(a.clone());
        }
        let key = layout::upload_assembly(&self.upload.id);
        let started = self.storage.start_assembly(&key).await?;
        let kept = match self.meta.set_upload_assembly(self.upload.id, &started).await {
            Ok(Some(kept)) if kept == started => kept,
            // Another request started one first, the session is gone, or it could not be
            // recorded: ours is given back.
            other => {
                let _ = self.storage.abort_assembly(&key, &started).await;
                match other {
                    Ok(Some(theirs)) => theirs,
                    Ok(None) => return Err(StorageError::NotFound),
                    Err(e) => {
                        let why = format!("recording the multipart upload: {e}");
                        return Err(StorageError::Io(std::io::Error::other(why)));
                    }
                }
            }
        };
        self.upload.assembly = Some(kept.clone());
        Ok(kept)
    }

    /// Writes what is left (less than a part) as a chunk object of its own.
    pub(super) async fn finish(mut self) -> Result<Sunk> {
        let drop_chunks = self.merged && !self.chunks.is_empty();
        let merged = if drop_chunks {
            self.chunks.iter().map(|c| chunk_key(&self.upload, c)).collect()
        } else {
            vec![]
        };
        let mut chunk_key_written = None;
        if !self.buf.is_empty() {
            let part =
                UploadPart { start: self.offset, size: self.buf.len() as u64, nonce: nonce(), tag: None };
            let key = chunk_key(&self.upload, &part);
            let mut w = self.storage.writer().await?;
            w.write(std::mem::take(&mut self.buf).freeze()).await?;
            w.commit_unsynced(&key).await?;
            self.sent.push(part);
            chunk_key_written = Some(key);
        }
        Ok(Sunk { parts: self.sent, drop_chunks, chunk_key: chunk_key_written, merged })
    }
}

#[async_trait::async_trait]
impl ObjectWriter for PartSink {
    async fn write(&mut self, data: Bytes) -> std::result::Result<(), StorageError> {
        self.written += data.len() as u64;
        self.buf.extend_from_slice(&data);
        while self.chunk_bytes as usize + self.buf.len() >= self.part_size() {
            self.send_part().await?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn commit(self: Box<Self>, _key: &Key) -> std::result::Result<(), StorageError> {
        // Parts are made visible by completing the assembly, never by committing a request.
        Err(StorageError::Io(std::io::Error::other("a part sink is finished, not committed")))
    }
}

fn chunk_key(u: &Upload, p: &UploadPart) -> Key {
    layout::upload_part(&u.id, p.start, &p.nonce)
}

/// Completes an assembled session into `uploads/<hh>/<id>.assembled`: the remaining chunk
/// objects become its last part. Finishing again after a completion that went through (and a
/// copy that did not) finds the object already whole.
pub(super) async fn complete(storage: &dyn Storage, u: &Upload, parts: &[UploadPart]) -> Result<Key> {
    let key = layout::upload_assembly(&u.id);
    if storage.stat(&key).await? == Some(u.received) {
        return Ok(key);
    }
    let assembly = u.assembly.as_deref().ok_or_else(|| {
        ServiceError::UploadInvalid("the upload's parts are recorded without their multipart upload".into())
    })?;
    let mut tags: Vec<String> = parts.iter().filter_map(|p| p.tag.clone()).collect();
    let mut last = BytesMut::new();
    for c in parts.iter().filter(|p| p.tag.is_none()) {
        last.extend_from_slice(&read_all(storage, &chunk_key(u, c)).await?);
    }
    if !last.is_empty() {
        tags.push(storage.put_assembly_part(&key, assembly, tags.len(), last.freeze()).await?);
    }
    storage.complete_assembly(&key, assembly, tags).await?;
    Ok(key)
}

#[cfg(all(test, feature = "s3"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::error::ServiceError;
    use super::super::registry::{BodyStream, Limits, Registry};
    use super::*;
    use crate::meta::sqlite::SqliteMeta;
    use crate::storage::s3::tests::from_env;
    use crate::storage::s3::PART_SIZE;
    use berth_core::oci::{Algorithm, Digest, RepoName};
    use futures_util::StreamExt;

    fn body(data: &[u8]) -> BodyStream {
        // In pieces that straddle part boundaries, as a network delivers them.
        let pieces: Vec<std::io::Result<Bytes>> =
            data.chunks(700_001).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(pieces).boxed()
    }

    /// Two registries over one bucket and one database: two replicas.
    fn replicas(prefix: &str) -> (Registry, Registry, Arc<dyn Storage>) {
        let storage: Arc<dyn Storage> = Arc::new(from_env(prefix));
        let meta: Arc<dyn MetaStore> = Arc::new(SqliteMeta::temporary().unwrap());
        let a = Registry::new(storage.clone(), meta.clone(), Limits::default());
        let b = Registry::new(storage.clone(), meta, Limits::default());
        (a, b, storage)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn s3_upload_session_parts_grow_with_their_number() {
        // Parts grow every part here (every 1,000 in service): 8 MiB, then 16 MiB, then the tail.
        let storage: Arc<dyn Storage> =
            Arc::new(from_env(&format!("grow-{}", uuid::Uuid::new_v4().simple())).with_part_step(1));
        let meta: Arc<dyn MetaStore> = Arc::new(SqliteMeta::temporary().unwrap());
        let (a, b) = (
            Registry::new(storage.clone(), meta.clone(), Limits::default()),
            Registry::new(storage.clone(), meta, Limits::default()),
        );
        let repo: RepoName = "s3/grown".parse().unwrap();
        let data: Vec<u8> = (0..25 * (1 << 20) + 123_457).map(|i| (i * 7 % 251) as u8).collect();
        let digest = Digest::of(Algorithm::Sha256, &data);
        let id = a.start_upload(&repo).await.unwrap().id;
        let mb = 1 << 20;
        a.upload_chunk(&repo, id, None, None, body(&data[..5 * mb])).await.unwrap();
        b.upload_chunk(&repo, id, None, None, body(&data[5 * mb..20 * mb])).await.unwrap();
        a.upload_chunk(&repo, id, None, None, body(&data[20 * mb..25 * mb])).await.unwrap();
        let parts = a.meta().upload_parts(id).await.unwrap();
        let sizes: Vec<u64> = parts.iter().filter(|p| p.tag.is_some()).map(|p| p.size).collect();
        assert_eq!(sizes, [8 * mb as u64, 16 * mb as u64], "{parts:?}");
        b.finish_upload(&repo, id, &digest, None, None, body(&data[25 * mb..])).await.unwrap();
        // Not copied: the completed multipart upload is the blob.
        assert_eq!(a.blob_key(&digest).await.unwrap(), layout::upload_assembly(&id));
        assert_eq!(storage.stat(&layout::blob(&digest)).await.unwrap(), None);
        let back = read_all(storage.as_ref(), &a.blob_key(&digest).await.unwrap()).await.unwrap();
        assert!(back == data, "the blob reads back whole");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn s3_upload_sessions_assemble_parts_across_replicas() {
        let (a, b, storage) = replicas(&format!("assembly-{}", uuid::Uuid::new_v4().simple()));
        let repo: RepoName = "s3/assembled".parse().unwrap();
        let data: Vec<u8> = (0..2 * PART_SIZE + 3_500_000).map(|i| (i * 31 % 251) as u8).collect();
        let digest = Digest::of(Algorithm::Sha256, &data);
        let mb = 1 << 20;
        let id = a.start_upload(&repo).await.unwrap().id;
        // Chunks below a part stay objects of their own, whichever replica takes them...
        let cuts = [0, 3 * mb, 6 * mb, 16 * mb, 17 * mb, data.len() - 500_000, data.len()];
        for (i, w) in cuts.windows(2).take(4).enumerate() {
            let on = if i % 2 == 0 { &a } else { &b };
            let got = on.upload_chunk(&repo, id, None, None, body(&data[w[0]..w[1]])).await.unwrap();
            assert_eq!(got.received, w[1] as u64);
            let parts = a.meta().upload_parts(id).await.unwrap();
            let tagged = parts.iter().filter(|p| p.tag.is_some()).count();
            // ...until they and new bytes fill a part: then 16 MiB is two parts and nothing else.
            assert_eq!(tagged, if w[1] >= 16 * mb { 2 } else { 0 }, "after {} bytes: {parts:?}", w[1]);
        }
        let chunks = b.upload_chunk(&repo, id, None, None, body(&data[cuts[4]..cuts[5]])).await.unwrap();
        assert_eq!(chunks.received, cuts[5] as u64);
        // The chunk objects that went into a part are gone; the two chunks since are there.
        let objects = storage.list(&layout::upload_prefix(&id)).await.unwrap();
        assert_eq!(objects.len(), 2, "{objects:?}");

        // A wrong digest publishes nothing and gives the multipart upload back.
        let wrong = Digest::of(Algorithm::Sha256, b"not it");
        let u = a.meta().upload(id).await.unwrap().unwrap();
        let assembly = u.assembly.clone().unwrap();
        let refused = b.finish_upload(&repo, id, &wrong, None, None, body(&data[cuts[5]..])).await;
        assert!(matches!(refused, Err(ServiceError::DigestInvalid(_))), "{refused:?}");
        assert_eq!(storage.stat(&layout::blob(&wrong)).await.unwrap(), None);
        let key = layout::upload_assembly(&id);
        let late = storage.put_assembly_part(&key, &assembly, 0, Bytes::from_static(b"late")).await;
        assert!(late.is_err(), "aborted by its id: {late:?}");
        assert!(storage.list(&layout::upload_prefix(&id)).await.unwrap().is_empty());

        // Again, right: finished on the other replica, from the recorded hash state.
        let id = a.start_upload(&repo).await.unwrap().id;
        a.upload_chunk(&repo, id, None, None, body(&data[..10 * mb])).await.unwrap();
        let size = b.finish_upload(&repo, id, &digest, None, None, body(&data[10 * mb..])).await.unwrap();
        assert_eq!(size, data.len() as u64);
        let back = read_all(storage.as_ref(), &a.blob_key(&digest).await.unwrap()).await.unwrap();
        assert!(back == data, "the blob reads back whole");
        let left: Vec<_> =
            storage.list(&layout::upload_prefix(&id)).await.unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(left, [layout::upload_assembly(&id)], "the blob, and no chunk");
        assert_eq!(a.meta().upload(id).await.unwrap(), None);

        // A digest in another algorithm is checked against the assembled object.
        let sha512 = Digest::of(Algorithm::Sha512, &data);
        let id = b.start_upload(&repo).await.unwrap().id;
        a.upload_chunk(&repo, id, None, None, body(&data[..9 * mb])).await.unwrap();
        b.finish_upload(&repo, id, &sha512, None, None, body(&data[9 * mb..])).await.unwrap();
        assert_eq!(storage.stat(&b.blob_key(&sha512).await.unwrap()).await.unwrap(), Some(data.len() as u64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn s3_a_small_blob_pushed_in_pieces_stays_in_its_one_chunk() {
        // docker's push of a small layer: the PATCH on one replica, the PUT on another.
        let (a, b, storage) = replicas(&format!("chunk-{}", uuid::Uuid::new_v4().simple()));
        let repo: RepoName = "s3/small".parse().unwrap();
        let data: Vec<u8> = (0..300_000).map(|i| (i * 17 % 251) as u8).collect();
        let digest = Digest::of(Algorithm::Sha256, &data);
        let id = a.start_upload(&repo).await.unwrap().id;
        a.upload_chunk(&repo, id, None, None, body(&data)).await.unwrap();
        b.finish_upload(&repo, id, &digest, None, None, body(b"")).await.unwrap();
        let at = a.blob_key(&digest).await.unwrap();
        let left: Vec<_> =
            storage.list(&layout::upload_prefix(&id)).await.unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(left, [at], "the chunk is the blob");
        assert_eq!(storage.stat(&layout::blob(&digest)).await.unwrap(), None, "not copied");
        let read = b.get_blob(&repo, &digest, None, true).await.unwrap().unwrap();
        let back: Vec<Bytes> = read.body.unwrap().map(|c| c.unwrap()).collect().await;
        assert!(back.concat() == data, "the blob reads back whole");
        assert!(b.blob_redirect(&repo, &digest).await.unwrap().is_none(), "no redirect configured");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn s3_a_session_closed_by_one_put_writes_its_blob_at_its_key() {
        // containerd's push: POST on one replica, the whole body in the PUT on another. Three
        // parts' worth, so the blob's own key gets a multipart upload, completed once verified.
        let (a, b, storage) = replicas(&format!("whole-{}", uuid::Uuid::new_v4().simple()));
        let repo: RepoName = "s3/whole".parse().unwrap();
        let data: Vec<u8> = (0..2 * PART_SIZE + 1_234_567).map(|i| (i * 13 % 251) as u8).collect();
        let digest = Digest::of(Algorithm::Sha256, &data);
        let id = a.start_upload(&repo).await.unwrap().id;
        let size =
            b.finish_upload(&repo, id, &digest, None, Some(data.len() as u64), body(&data)).await.unwrap();
        assert_eq!(size, data.len() as u64);
        let back = read_all(storage.as_ref(), &layout::blob(&digest)).await.unwrap();
        assert!(back == data, "the blob reads back whole");
        assert!(storage.list(&layout::upload_prefix(&id)).await.unwrap().is_empty(), "no chunk, no assembly");
        assert_eq!(a.meta().upload(id).await.unwrap(), None);

        // Bytes that are not the digest's: nothing becomes visible at either key.
        let wrong = Digest::of(Algorithm::Sha256, b"not these bytes");
        let id = b.start_upload(&repo).await.unwrap().id;
        let refused = a.finish_upload(&repo, id, &wrong, None, None, body(&data)).await;
        assert!(matches!(refused, Err(ServiceError::DigestInvalid(_))), "{refused:?}");
        assert_eq!(storage.stat(&layout::blob(&wrong)).await.unwrap(), None);
        assert_eq!(a.meta().upload(id).await.unwrap(), None, "the session is discarded");
    }
}
