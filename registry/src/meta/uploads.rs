//! Upload sessions: what a client has sent of a blob so far, in which chunks or parts, and the
//! hash state after it, so that any replica continues a session another one began.

use super::error::{MetaError, Result};
use super::sweep::Stored;
use crate::UploadId;
use berth_core::oci::{Digest, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: UploadId,
    pub repo: RepoName,
    pub received: u64,
    pub updated_at: i64,
    /// The sha256 state after the `received` bytes ([`berth_core::oci::Hasher::state`]), so that
    /// any replica continues the session without reading it back; `None` when not recorded.
    pub hash_state: Option<Vec<u8>>,
    /// The storage assembly (multipart upload) the session's parts go into, once it has one.
    pub assembly: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPart {
    pub start: u64,
    pub size: u64,
    pub nonce: String,
    /// A part of the session's assembly, with the tag the store gave it; `None`: a chunk stored
    /// as an object of its own (named by `start` and `nonce`).
    pub tag: Option<String>,
}

/// What one request adds to an upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The session's size the request started from: nothing is recorded unless it still is.
    pub at: u64,
    /// Bytes the request added.
    pub added: u64,
    /// The parts that now hold them, in order.
    pub parts: Vec<UploadPart>,
    /// The session's chunk objects went into the first of `parts`: forget them.
    pub drop_chunks: bool,
    /// The hash state after `at + added` bytes.
    pub hash_state: Option<Vec<u8>>,
}

/// What closing a session needs, read at once: the session, its chunks in order, and the size of
/// the blob it claims to be if that is stored already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub upload: Upload,
    pub parts: Vec<UploadPart>,
    /// The size of the claimed digest's blob if it is `live` anywhere: a hint only, since the
    /// blob may be released before the session's own write records it.
    pub stored: Option<u64>,
}

#[async_trait::async_trait]
pub trait UploadSessions: Send + Sync + 'static {
    async fn create_upload(&self, id: UploadId, repo: &RepoName, now: i64) -> Result<()>;
    /// The session, without its chunks (a request that only adds one needs none of them).
    async fn upload(&self, id: UploadId) -> Result<Option<Upload>>;
    /// The session's chunks, in order.
    async fn upload_parts(&self, id: UploadId) -> Result<Vec<UploadPart>>;
    /// The session (`None` when it is gone), its chunks, and the size of `digest`'s blob if it is
    /// stored: what the request that closes the session reads, in one go.
    async fn closing_upload(&self, id: UploadId, digest: &Digest) -> Result<Option<Closing>>;
    /// Records what a request added, if the session still has exactly `a.at` bytes and fewer than
    /// `max_parts` requests added to it; returns the new total.
    async fn append_upload(&self, id: UploadId, a: &Appended, max_parts: u32, now: i64) -> Result<u64>;
    /// Gives the session the assembly `assembly` unless it has one; returns the one it has, or
    /// `None` when the session is gone.
    async fn set_upload_assembly(&self, id: UploadId, assembly: &str) -> Result<Option<String>>;
    /// Ends a session whose bytes are now the blob `digest`: links the blob into `repo` and forgets
    /// the session, in one transaction.
    async fn finish_upload(
        &self,
        id: UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        stored: Stored,
    ) -> Result<()>;
    /// [`UploadSessions::finish_upload`] for a session whose bytes stay where it wrote them, at
    /// `location` (an object of the session's, which storage keeps as the blob): the session's
    /// row is the claim on its objects, so the blob is recorded only while the row stands
    /// ([`MetaError::UploadUnknown`] otherwise: a discard took the objects). `Ok(false)` when the
    /// blob was stored already elsewhere: the session's object is not needed.
    async fn finish_upload_at(
        &self,
        id: UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        location: &str,
    ) -> Result<bool>;
    /// Forgets the session; false when it was gone already (finished or discarded by another
    /// request), whose objects are then not this caller's to remove.
    async fn delete_upload(&self, id: UploadId) -> Result<bool>;
    /// Marks the session as in use at `now` (a request still sending to it), so that neither the
    /// purge of idle sessions nor a request on another replica takes it for abandoned.
    async fn touch_upload(&self, id: UploadId, now: i64) -> Result<()>;
    /// Sessions last touched before `before`.
    async fn stale_uploads(&self, before: i64, limit: usize) -> Result<Vec<UploadId>>;
    async fn count_uploads(&self) -> Result<u64>;
}

impl MetaError {
    /// Why an append was refused: the session is gone, moved on from `at`, or full.
    pub(crate) fn refused_append(current: Option<u64>, at: u64, max_parts: u32) -> MetaError {
        match current {
            Some(c) if c != at => MetaError::UploadOffset { current: c },
            Some(_) => MetaError::UploadFull { max: max_parts },
            None => MetaError::UploadUnknown,
        }
    }
}

impl UploadPart {
    /// The nonce names a storage object: the service makes it hex, and a store refuses anything
    /// else rather than build a key from it.
    pub(crate) fn check_nonce(&self) -> Result<()> {
        if self.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(MetaError::Db("upload part nonce must be hex".into()))
        }
    }
}
