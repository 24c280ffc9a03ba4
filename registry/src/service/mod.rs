//! OCI semantics over storage and metadata: uploads, blobs, manifests, tags and referrers.
//!
//! Nothing here knows HTTP. Handlers in [`crate::api`] parse a request into typed values, call one
//! method here, and turn the result (or the [`ServiceError`]) into a response.

mod blobs;
mod cache;
mod manifests;
mod uploads;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use blobs::BlobRead;
pub use manifests::{Listing, PutManifest};
pub use uploads::UploadState;

use crate::meta::{MetaError, MetaStore};
use crate::oci::{Digest, Hasher, RepoName, UploadId};
use crate::storage::{ObjectWriter, Storage, StorageError};

/// A request body as the service sees it.
pub type BodyStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted (413 above).
    pub max_manifest_bytes: usize,
    /// An upload session untouched this long is gone.
    pub upload_ttl: Duration,
    /// Most entries in one tags or catalog page when the client asks for no `n`, or more.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_manifest_bytes: 4 << 20, upload_ttl: Duration::from_secs(24 * 3600), max_page: 10_000 }
    }
}

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
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::BlobUnknown(d) | MetaError::ManifestUnknown(d) => ServiceError::ManifestBlobUnknown(d),
            MetaError::UploadUnknown => ServiceError::UploadUnknown,
            MetaError::UploadOffset { current } => ServiceError::RangeInvalid { received: current },
            e => ServiceError::Meta(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, ServiceError>;

/// Memory kept for recently used manifests.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;

pub struct Registry {
    storage: Arc<dyn Storage>,
    meta: Arc<dyn MetaStore>,
    limits: Limits,
    /// The running sha256 of each upload session at its current offset, so that finishing an
    /// upload needs no second read of its bytes. Lost on restart, then rebuilt from storage.
    hashers: Mutex<HashMap<UploadId, (u64, Hasher)>>,
    manifests: cache::ManifestCache,
}

impl Registry {
    pub fn new(storage: Arc<dyn Storage>, meta: Arc<dyn MetaStore>, limits: Limits) -> Registry {
        Registry {
            storage,
            meta,
            limits,
            hashers: Mutex::new(HashMap::new()),
            manifests: cache::ManifestCache::new(MANIFEST_CACHE_BYTES),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    /// Checks that storage and metadata answer; used by `/readyz`.
    pub async fn ready(&self) -> Result<()> {
        self.meta.count_uploads().await?;
        self.storage.stat(&crate::storage::layout::blobs_root()).await?;
        Ok(())
    }
}

/// Streams `body` into `writer`, hashing as it goes; checks the byte count if one was declared.
async fn copy_body(
    mut body: BodyStream,
    declared: Option<u64>,
    writer: &mut dyn ObjectWriter,
    hasher: &mut Hasher,
) -> Result<u64> {
    use futures_util::StreamExt;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(ServiceError::Body)?;
        total += chunk.len() as u64;
        if declared.is_some_and(|d| total > d) {
            return Err(ServiceError::SizeInvalid("body is longer than its declared length".into()));
        }
        if !chunk.is_empty() {
            hasher.update(&chunk);
            writer.write(chunk).await?;
        }
    }
    match declared {
        Some(d) if d != total => {
            Err(ServiceError::SizeInvalid(format!("body has {total} bytes, {d} were declared")))
        }
        _ => Ok(total),
    }
}

fn repo_matches(upload_repo: &RepoName, repo: &RepoName) -> Result<()> {
    if upload_repo == repo {
        Ok(())
    } else {
        Err(ServiceError::UploadUnknown)
    }
}
