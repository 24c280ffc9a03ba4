//! What a metadata store's operations fail with.

use berth_core::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(Digest),
    /// The blob's object is being deleted (or, for a write that assumed it stored, is gone):
    /// write it again once the deletion is over ([`super::MetaStore::blob_purging`]).
    #[error("blob {0} is being deleted")]
    BlobGone(Digest),
    /// A manifest describes content the repository holds with another size than it has.
    #[error("its descriptor of {digest} says {described} bytes, but {digest} has {stored}")]
    SizeMismatch { digest: Digest, described: u64, stored: u64 },
    #[error("upload session is unknown")]
    UploadUnknown,
    #[error("upload has {current} bytes, not as many as the chunk assumed")]
    UploadOffset { current: u64 },
    #[error("upload already has {max} chunks, the most one session may hold")]
    UploadFull { max: u32 },
    #[error("metadata store failed: {0}")]
    Db(String),
    /// The database cannot be reached (a 503: the client may try again).
    #[error("metadata store is unavailable: {0}")]
    Unavailable(String),
    /// A conditional write found its reference naming something else (or nothing): `current`.
    #[error("{}", precondition_failed(current))]
    PreconditionFailed { current: Option<Digest> },
    /// Other writes kept changing what this one had to look at: trying again succeeds (a 503).
    #[error("{0}")]
    Contended(String),
    /// The disk under the database is full.
    #[error("the metadata store's disk is full")]
    Full,
}

fn precondition_failed(current: &Option<Digest>) -> String {
    match current {
        Some(d) => format!("the reference names {d} now, which the request's condition does not accept"),
        None => "the reference names nothing now, which the request's condition does not accept".into(),
    }
}

pub type Result<T> = std::result::Result<T, MetaError>;
