//! Writing one object: a single PUT when it ends before the first part is full, otherwise a
//! multipart upload whose next part fills while the one before it is sent; and how parts grow.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, ObjectStoreExt, PutPayload};

use crate::storage::{Key, MultipartJournal, ObjectWriter, StorageError, MULTIPART_RENEW};

/// Every part but the last must be at least 5 MiB on S3; larger parts mean fewer requests.
pub const PART_SIZE: usize = 8 << 20;

/// Parts grow by [`PART_SIZE`] every this many parts: an upload has at most 10,000 parts on S3,
/// which at a fixed 8 MiB would cap objects at 80 GiB; growing, they reach 430 GiB while the
/// first 8 GiB of any object still go in 8 MiB parts (and the largest part is 80 MiB).
pub const PARTS_PER_STEP: usize = 1000;

/// S3's largest part number.
pub const MAX_PARTS: usize = 10_000;

/// The size of part `index` (from 0) of a multipart upload when parts grow every `every` parts.
pub fn part_size(every: usize, index: usize) -> usize {
    PART_SIZE * (1 + index / every.max(1))
}

pub(super) fn object_path(prefix: &str, key: &Key) -> ObjectPath {
    let key = key.as_str().trim_end_matches('/');
    if prefix.is_empty() {
        ObjectPath::from(key)
    } else {
        ObjectPath::from(format!("{prefix}/{key}"))
    }
}

/// Refuses a part past S3's last part number, in words a client can act on.
pub(super) fn too_many_parts(index: usize) -> Result<(), StorageError> {
    if index < MAX_PARTS {
        return Ok(());
    }
    let why = format!("object too large: more than {MAX_PARTS} parts of a multipart upload");
    Err(StorageError::Io(io::Error::other(why)))
}

pub(super) fn storage_error(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => StorageError::Unavailable(other.to_string()),
    }
}

struct Multipart {
    id: MultipartId,
    parts: Vec<PartId>,
    /// When the journal last heard of it.
    renewed: std::time::Instant,
}

pub(super) struct S3Writer {
    store: Arc<AmazonS3>,
    prefix: String,
    staging: ObjectPath,
    staging_key: Key,
    journal: Option<Arc<dyn MultipartJournal>>,
    part_step: usize,
    buffer: BytesMut,
    multipart: Option<Multipart>,
    /// The part being sent while the next one fills: the client's bytes keep arriving during
    /// each part's upload instead of waiting for it.
    in_flight: Option<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    written: u64,
}

impl S3Writer {
    /// A writer whose multipart upload, if it needs one, runs at `key`.
    pub(super) fn new(
        store: Arc<AmazonS3>,
        prefix: String,
        key: Key,
        journal: Option<Arc<dyn MultipartJournal>>,
        part_step: usize,
    ) -> S3Writer {
        S3Writer {
            store,
            staging: object_path(&prefix, &key),
            prefix,
            staging_key: key,
            journal,
            part_step,
            buffer: BytesMut::new(),
            multipart: None,
            in_flight: None,
            written: 0,
        }
    }

    /// Tells the journal the upload still runs, at most every [`MULTIPART_RENEW`] (however slowly
    /// its bytes arrive).
    async fn renew(&mut self) {
        let Some(m) = self.multipart.as_mut() else { return };
        if m.renewed.elapsed() < MULTIPART_RENEW {
            return;
        }
        if let Some(j) = &self.journal {
            j.renewed(&self.staging_key, &m.id).await;
        }
        m.renewed = std::time::Instant::now();
    }

    /// Parts sent or being sent.
    fn parts(&self) -> usize {
        self.multipart.as_ref().map_or(0, |m| m.parts.len()) + usize::from(self.in_flight.is_some())
    }

    /// The size of the next part.
    fn next_part(&self) -> usize {
        part_size(self.part_step, self.parts())
    }

    /// Waits for the part in flight, if any, and records it.
    async fn settle(&mut self) -> Result<(), StorageError> {
        let Some(task) = self.in_flight.take() else { return Ok(()) };
        let part = task.await.map_err(|e| StorageError::Unavailable(format!("sending a part: {e}")))?;
        let part = part.map_err(storage_error)?;
        if let Some(m) = self.multipart.as_mut() {
            m.parts.push(part);
        }
        Ok(())
    }

    /// Starts sending the first `len` buffered bytes as the next part (starting the upload if
    /// needed), once the part before it is in.
    async fn send_part(&mut self, len: usize) -> Result<(), StorageError> {
        too_many_parts(self.parts())?;
        let data = self.buffer.split_to(len).freeze();
        if self.multipart.is_none() {
            let id = self.store.create_multipart(&self.staging).await.map_err(storage_error)?;
            if let Some(j) = &self.journal {
                // Recorded before any part is sent, or given back at once.
                if let Err(e) = j.started(&self.staging_key, &id).await {
                    let _ = self.store.abort_multipart(&self.staging, &id).await;
                    return Err(e);
                }
            }
            self.multipart = Some(Multipart { id, parts: Vec::new(), renewed: std::time::Instant::now() });
        }
        self.renew().await;
        self.settle().await?;
        let Some(m) = self.multipart.as_ref() else { return Ok(()) };
        let (store, path, id, index) =
            (self.store.clone(), self.staging.clone(), m.id.clone(), m.parts.len());
        self.in_flight = Some(tokio::spawn(async move {
            store.put_part(&path, &id, index, PutPayload::from_bytes(data)).await
        }));
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.written += data.len() as u64;
        self.buffer.extend_from_slice(&data);
        self.renew().await;
        while self.buffer.len() >= self.next_part() {
            self.send_part(self.next_part()).await?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn commit(mut self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        let to = object_path(&self.prefix, key);
        if self.multipart.is_none() {
            let data = std::mem::take(&mut self.buffer).freeze();
            self.store.put(&to, PutPayload::from_bytes(data)).await.map_err(storage_error)?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            let len = self.buffer.len();
            self.send_part(len).await?;
        }
        self.settle().await?;
        let Some(m) = self.multipart.take() else { return Ok(()) };
        let staging = self.staging.clone();
        let completed = self.store.complete_multipart(&staging, &m.id, m.parts).await;
        // Ended once completed or given back; if neither, the record stays for the sweep.
        let ended = completed.is_ok() || self.store.abort_multipart(&staging, &m.id).await.is_ok();
        if let (true, Some(j)) = (ended, &self.journal) {
            j.ended(&self.staging_key, &m.id).await;
        }
        completed.map_err(storage_error)?;
        if staging == to {
            return Ok(());
        }
        let copied = self.store.copy(&staging, &to).await.map_err(storage_error);
        let _ = self.store.delete(&staging).await;
        copied
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Not committed: give the parts back rather than leave them billed in the bucket.
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        let Some(m) = self.multipart.take() else { return };
        let (store, path) = (self.store.clone(), self.staging.clone());
        let (journal, key) = (self.journal.clone(), self.staging_key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match store.abort_multipart(&path, &m.id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        if let Some(j) = journal {
                            j.ended(&key, &m.id).await;
                        }
                    }
                    // Still recorded: the sweep tries again once its lease runs out.
                    Err(e) => tracing::warn!(error = %e, "aborting an abandoned multipart upload failed"),
                }
            });
        }
    }
}
