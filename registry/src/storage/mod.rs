//! Content storage: bytes by key, nothing else.
//!
//! The trait is deliberately narrow — stat, ranged streaming read, write-then-commit, rename,
//! delete, list — so that every backend (in-memory, filesystem, object stores) can implement it
//! fully and run the same conformance suite (`testsuite`). What the keys mean is decided in
//! [`layout`]; what the bytes mean is decided by the service layer.
//!
//! Writes are atomic: an [`ObjectWriter`] collects bytes out of sight and `commit` makes the object
//! visible under its key in one step, or not at all. Dropping a writer without committing discards
//! what it wrote.

pub mod fs;
pub mod layout;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(test)]
pub(crate) mod testsuite;

use std::io;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// How long a presigned read URL stays valid. Garbage collection must not delete an object
/// sooner than this after a URL for it was handed out.
pub const REDIRECT_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// A storage key: a relative, `/`-separated path built only by [`layout`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    fn new(s: String) -> Key {
        Key(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
    /// A remote store (S3) did not serve the request: unreachable, refusing the credentials,
    /// without the bucket, or failing. Clients hear 503 and may retry; the reason is logged.
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    /// The disk (or a quota) is full: the write failed and nothing of it is visible.
    pub fn is_full(&self) -> bool {
        match self {
            StorageError::Io(e) => is_full(e),
            StorageError::NotFound | StorageError::Unavailable(_) => false,
        }
    }
}

/// `ENOSPC` and `EDQUOT`.
pub fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
}

/// An object as [`Storage::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Key,
    pub size: u64,
    /// When it was last written (unix seconds).
    pub modified: i64,
}

#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The object's size, or `None` if there is no object at `key`.
    async fn stat(&self, key: &Key) -> Result<Option<u64>, StorageError>;

    /// Streams the object, or the `range` of it (which the caller has clipped to its size).
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<ByteStream, StorageError>;

    /// Starts a new object; it becomes visible only through [`ObjectWriter::commit`].
    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// Starts a new object that will most likely be committed at `key` (a blob whose digest is
    /// known before its bytes), so a store that fixes an object's name when its upload starts
    /// (S3) writes it there once instead of copying it from a staging name. It is still visible
    /// only through [`ObjectWriter::commit`], which may name another key.
    async fn writer_at(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let _ = key;
        self.writer().await
    }

    /// Starts an object written at `key` itself, for keys nothing reads before the caller has
    /// recorded them complete elsewhere (an upload's chunks, recorded with their session): its
    /// commit renames nothing. A writer dropped before its commit removes what it wrote, but a
    /// crash may leave part of it at `key`, which the caller treats as litter (the scrub's to
    /// find). Stores with no cheaper way write it as [`Storage::writer_at`] does.
    async fn scratch_writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.writer_at(key).await
    }

    /// Moves an object to another key, replacing what is there, durably: after a crash the
    /// object is whole at `to` (or still at `from`), even if it was committed unsynced.
    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError>;

    /// [`Storage::rename`] for an object the caller records in the metadata store next (a blob it
    /// links): see [`ObjectWriter::commit_then_record`].
    async fn rename_then_record(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        self.rename(from, to).await
    }

    /// Removes an object; removing a missing one is not an error.
    async fn delete(&self, key: &Key) -> Result<(), StorageError>;

    /// All objects whose key starts with `prefix` (a string prefix, not only a directory),
    /// sorted by key.
    async fn list(&self, prefix: &Key) -> Result<Vec<Listed>, StorageError>;

    /// Whether the store answers, for `/readyz`: an error names what is wrong (unreachable,
    /// refused credentials, no such bucket).
    async fn check(&self) -> Result<(), StorageError>;

    /// A URL that serves the whole object to anyone holding it for [`REDIRECT_TTL`], when this
    /// store hands reads to clients directly (S3 with `redirect: true`); `None` otherwise.
    async fn presigned_get(&self, key: &Key) -> Result<Option<String>, StorageError> {
        let _ = key;
        Ok(None)
    }

    /// How long an object whose blob was released stays before it is deleted, for readers that
    /// were handed it: on an object store, a read streams in requests of its own over minutes and
    /// a presigned URL ([`Storage::presigned_get`]) may be used until it expires; a file already
    /// open keeps its bytes.
    fn read_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The size of part `index` (from 0; every part but the last has exactly this size) of an
    /// object assembled from parts uploaded separately, when this store builds large objects that
    /// way (S3 multipart uploads, whose parts must be at least 5 MiB and number at most 10,000, so
    /// they grow); `None` when it keeps upload chunks as objects of their own.
    fn assembly_part_size(&self, index: usize) -> Option<u64> {
        let _ = index;
        None
    }

    /// Starts assembling an object at `key` from parts; returns the assembly's id, which the
    /// caller records so that an abandoned assembly can be aborted by it.
    async fn start_assembly(&self, key: &Key) -> Result<String, StorageError> {
        let _ = key;
        Err(unsupported("assembling objects from parts"))
    }

    /// Uploads part `index` (from 0, contiguous) of an assembly; returns its tag for
    /// [`Storage::complete_assembly`].
    async fn put_assembly_part(
        &self,
        key: &Key,
        id: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, StorageError> {
        let _ = (key, id, index, data);
        Err(unsupported("assembling objects from parts"))
    }

    /// Makes the parts (tags in order) the object at `key`, at once.
    async fn complete_assembly(&self, key: &Key, id: &str, tags: Vec<String>) -> Result<(), StorageError> {
        let _ = (key, id, tags);
        Err(unsupported("assembling objects from parts"))
    }

    /// Gives up an assembly and the parts it holds; aborting one that is gone is not an error.
    async fn abort_assembly(&self, key: &Key, id: &str) -> Result<(), StorageError> {
        let _ = (key, id);
        Err(unsupported("assembling objects from parts"))
    }

    /// Whether [`Storage::adopt`] can take files from the local directory `dir`: true only for a
    /// backend that keeps its objects as files on the same filesystem.
    fn adopts_from(&self, dir: &Path) -> bool {
        let _ = dir;
        false
    }

    /// Makes the complete local `file` (in a directory [`Storage::adopts_from`] accepts) the object
    /// at `key` by moving it there, durably and atomically, without copying a byte (a store that
    /// keeps small objects apart may copy one of those, and then removes the file). Handles
    /// already open on the file keep reading the same bytes.
    async fn adopt(&self, file: &Path, key: &Key) -> Result<(), StorageError> {
        let _ = (file, key);
        Err(unsupported("adopting local files"))
    }
}

pub(crate) fn unsupported(what: &str) -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this storage does not support {what}"),
    ))
}

/// Where a store whose writers run multipart uploads records each one: started before its first
/// part, renewed while it runs, ended once completed or aborted — so that one a crash leaves
/// behind is aborted by its id ([`crate::service`] keeps the record in the metadata store).
#[async_trait::async_trait]
pub trait MultipartJournal: Send + Sync {
    /// The upload `id` at `key` has started; an error keeps its first part from being sent.
    async fn started(&self, key: &Key, id: &str) -> Result<(), StorageError>;
    /// It still runs (called at most every [`MULTIPART_RENEW`]).
    async fn renewed(&self, key: &Key, id: &str);
    /// It was completed or aborted.
    async fn ended(&self, key: &Key, id: &str);
}

/// How often a running multipart upload renews its record; the record's lease is much longer.
pub const MULTIPART_RENEW: std::time::Duration = std::time::Duration::from_secs(60);

#[async_trait::async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError>;

    /// Bytes accepted so far.
    fn written(&self) -> u64;

    /// Makes the object durable and visible at `key`, replacing what is there.
    async fn commit(self: Box<Self>, key: &Key) -> Result<(), StorageError>;

    /// Makes the object visible at `key` without waiting for the disk: a crash may lose it (or
    /// leave it shorter). For what the protocol recovers from by itself, such as upload chunks
    /// (whose loss a client sees as a `416` and resumes); a later `rename` makes it durable.
    async fn commit_unsynced(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.commit(key).await
    }

    /// [`ObjectWriter::commit`] for an object the caller records in the metadata store next, with
    /// a synced write, whatever happens (a blob it links, a manifest it stores): the object need
    /// only be durable once that record is. A store that keeps it in the metadata store's own log
    /// (small objects beside SQLite metadata, `fs::small`) commits it there without waiting for
    /// the disk, and the record's synced commit, later in the same log, makes both durable with
    /// one flush. Every other store commits durably, as `commit` does.
    async fn commit_then_record(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        self.commit(key).await
    }
}

/// Reads a whole (small) object into memory.
pub async fn read_all(storage: &dyn Storage, key: &Key) -> Result<Bytes, StorageError> {
    use futures_util::TryStreamExt;
    let chunks: Vec<Bytes> = storage.get(key, None).await?.try_collect().await?;
    if chunks.len() == 1 {
        return Ok(chunks.into_iter().next().unwrap_or_default());
    }
    Ok(Bytes::from(chunks.concat()))
}

/// Writes a whole in-memory object and commits it.
pub async fn put_all(storage: &dyn Storage, key: &Key, data: Bytes) -> Result<(), StorageError> {
    let mut w = storage.writer().await?;
    w.write(data).await?;
    w.commit(key).await
}

/// [`put_all`] for an object the caller records next ([`ObjectWriter::commit_then_record`]).
pub async fn put_all_then_record(storage: &dyn Storage, key: &Key, data: Bytes) -> Result<(), StorageError> {
    let mut w = storage.writer().await?;
    w.write(data).await?;
    w.commit_then_record(key).await
}
