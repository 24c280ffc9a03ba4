//! What can go wrong in the service, named by what failed; `api::error` maps each to a spec code.

use std::io;

use berth_core::oci::Digest;

use crate::meta::MetaError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("upload session unknown (it may have expired)")]
    UploadUnknown,
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk that does not continue the upload where it stands (416).
    #[error("chunk does not start at the upload's current offset {received}")]
    RangeInvalid { received: u64 },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("manifest is larger than the {limit} bytes this registry accepts")]
    ManifestTooLarge { limit: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(MetaError),
    #[error("request body failed: {0}")]
    Body(io::Error),
    /// A race the request lost, which trying again wins (a 503 that says so).
    #[error("{0}")]
    Retry(String),
    /// The operation is already running (a 409).
    #[error("{0}")]
    Busy(String),
    /// A conditional write (`If-Match`, `If-None-Match`) found its reference naming `current`
    /// (a 412).
    #[error("{}", MetaError::PreconditionFailed { current: current.clone() })]
    PreconditionFailed { current: Option<Digest> },
    /// A fault of the server's own (a task that panicked): a 500.
    #[error("{0}")]
    Internal(String),
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::BlobUnknown(d) | MetaError::ManifestUnknown(d) => ServiceError::ManifestBlobUnknown(d),
            e @ MetaError::SizeMismatch { .. } => ServiceError::ManifestInvalid(e.to_string()),
            MetaError::UploadUnknown => ServiceError::UploadUnknown,
            MetaError::UploadOffset { current } => ServiceError::RangeInvalid { received: current },
            MetaError::UploadFull { max } => ServiceError::UploadInvalid(format!(
                "the upload already has {max} chunks, the most one session may hold; send larger chunks"
            )),
            MetaError::BlobGone(d) => ServiceError::gone(&d),
            MetaError::PreconditionFailed { current } => ServiceError::PreconditionFailed { current },
            MetaError::Contended(m) => ServiceError::Retry(m),
            e => ServiceError::Meta(e),
        }
    }
}

impl ServiceError {
    /// The blob's bytes went with a deletion that raced their write (a 503: writing them again
    /// succeeds).
    pub(crate) fn gone(digest: &Digest) -> ServiceError {
        ServiceError::Retry(format!("blob {digest} was being deleted as it was written; write it again"))
    }
}

pub type Result<T> = std::result::Result<T, ServiceError>;
