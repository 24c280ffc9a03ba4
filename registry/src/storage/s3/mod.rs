//! Content storage in an S3-compatible bucket (AWS, MinIO, SeaweedFS, Ceph RGW), through the
//! `object_store` crate.
//!
//! Keys map to object names under an optional prefix. Reads are ranged GETs streamed as they
//! arrive. A writer keeps at most two parts in memory, one filling while the one before it is
//! sent: an object that ends before the first part is
//! full is one PUT straight to its key (written once); a larger one becomes a multipart upload,
//! which S3 names when it starts: at the key itself when the caller knows it (`writer_at`: a blob
//! whose digest came first), so it is written once; otherwise at a staging name, copied to its
//! key at commit. A writer dropped without committing aborts its multipart upload, and each
//! multipart upload is recorded in a [`MultipartJournal`] while it runs, so one a crash leaves
//! behind is aborted by its id. Parts grow with their number (see [`part_size`]). Upload
//! sessions assemble their parts through the `*_assembly` methods (see `service::assembly`).

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{ByteStream, Key, Listed, MultipartJournal, ObjectWriter, Storage, StorageError};

pub mod credentials;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

use credentials::FileCredentials;
use writer::{object_path, storage_error, too_many_parts, S3Writer};
pub use writer::{part_size, MAX_PARTS, PARTS_PER_STEP, PART_SIZE};

/// Where the bucket is and how to reach it.
#[derive(Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Object names start with `prefix/` (empty: the bucket's root).
    pub prefix: String,
    pub region: String,
    /// `https://s3.example.com` or `http://127.0.0.1:9000`; empty for AWS itself.
    pub endpoint: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key` (MinIO and most self-hosted stores).
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Read the key pair from `accessKeyId` and `secretAccessKey` here instead, and again when
    /// they change ([`credentials`]).
    pub credentials_dir: Option<std::path::PathBuf>,
    /// PEM certificates to trust besides the system's, for a store behind a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Blob reads answer with a presigned URL of the object (307), so bytes flow from the store.
    pub redirect: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("credentials_dir", &self.credentials_dir)
            .finish_non_exhaustive()
    }
}

pub struct S3Storage {
    store: Arc<AmazonS3>,
    prefix: String,
    redirect: bool,
    /// The largest object one server-side copy moves ([`COPY_LIMIT`]; smaller in tests).
    copy_limit: u64,
    /// Parts grow every this many parts ([`PARTS_PER_STEP`]; fewer in tests).
    part_step: usize,
    /// Where writers record their multipart uploads (none: a crash may leave one behind).
    journal: Option<Arc<dyn MultipartJournal>>,
}

/// S3's CopyObject moves at most 5 GiB; a larger object is copied as a stream of parts.
pub const COPY_LIMIT: u64 = 5 << 30;

impl S3Storage {
    pub fn new(o: &S3Options) -> Result<S3Storage, String> {
        let mut client = ClientOptions::new()
            .with_allow_http(o.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(10))
            // A stalled store must not hold a request forever; large parts still fit.
            .with_timeout(Duration::from_secs(300));
        if let Some(pem) = &o.ca_pem {
            for cert in
                object_store::Certificate::from_pem_bundle(pem).map_err(|e| format!("CA bundle: {e}"))?
            {
                client = client.with_root_certificate(cert);
            }
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&o.bucket)
            .with_region(if o.region.is_empty() { "us-east-1" } else { &o.region })
            .with_virtual_hosted_style_request(!o.path_style)
            .with_client_options(client)
            // A store that is down answers as an error within seconds, not after minutes of retries.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if !o.endpoint.is_empty() {
            b = b.with_endpoint(&o.endpoint);
        }
        b = match &o.credentials_dir {
            Some(dir) => {
                let creds = FileCredentials::load(dir)?;
                creds.watch();
                b.with_credentials(creds)
            }
            None => b.with_access_key_id(&o.access_key_id).with_secret_access_key(&o.secret_access_key),
        };
        let store = b.build().map_err(|e| e.to_string())?;
        Ok(S3Storage {
            store: Arc::new(store),
            prefix: o.prefix.trim_matches('/').to_owned(),
            redirect: o.redirect,
            copy_limit: COPY_LIMIT,
            part_step: PARTS_PER_STEP,
            journal: None,
        })
    }

    /// Writers record their multipart uploads in `journal`.
    pub fn with_journal(mut self, journal: Arc<dyn MultipartJournal>) -> S3Storage {
        self.journal = Some(journal);
        self
    }

    #[cfg(test)]
    fn with_copy_limit(mut self, limit: u64) -> S3Storage {
        self.copy_limit = limit;
        self
    }

    #[cfg(test)]
    pub(crate) fn with_part_step(mut self, every: usize) -> S3Storage {
        self.part_step = every;
        self
    }

    fn path(&self, key: &Key) -> ObjectPath {
        object_path(&self.prefix, key)
    }

    fn key(&self, path: &ObjectPath) -> Option<Key> {
        let s = path.as_ref();
        let rest =
            if self.prefix.is_empty() { s } else { s.strip_prefix(&self.prefix)?.strip_prefix('/')? };
        Some(Key::new(rest.to_owned()))
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    async fn stat(&self, key: &Key) -> Result<Option<u64>, StorageError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let opts = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let got = self.store.get_opts(&self.path(key), opts).await.map_err(storage_error)?;
        Ok(got.into_stream().map_err(io::Error::other).boxed())
    }

    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.writer_at(&Key::new(format!("tmp/{}", uuid::Uuid::new_v4().simple()))).await
    }

    async fn writer_at(&self, key: &Key) -> Result<Box<dyn ObjectWriter>, StorageError> {
        // A multipart upload is invisible until completed, so it may run at the key itself:
        // a writer dropped before its commit aborts it, and nothing was ever there.
        Ok(Box::new(S3Writer::new(
            self.store.clone(),
            self.prefix.clone(),
            key.clone(),
            self.journal.clone(),
            self.part_step,
        )))
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let size = self.stat(from).await?.ok_or(StorageError::NotFound)?;
        if size > self.copy_limit {
            // Too big for one server-side copy: through here once, as the parts of a multipart
            // upload at the target (invisible until complete).
            let mut source = self.get(from, None).await?;
            let mut w = self.writer_at(to).await?;
            while let Some(chunk) = source.next().await {
                w.write(chunk?).await?;
            }
            w.commit(to).await?;
        } else {
            self.store.copy(&self.path(from), &self.path(to)).await.map_err(storage_error)?;
        }
        self.store.delete(&self.path(from)).await.map_err(storage_error)
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        // A listing, not a HEAD: a HEAD in a missing bucket is a bare 404, like a missing object.
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.store.list_with_delimiter(prefix.as_ref()).await.map(|_| ()).map_err(storage_error)
    }

    async fn presigned_get(&self, key: &Key) -> Result<Option<String>, StorageError> {
        if !self.redirect {
            return Ok(None);
        }
        let url = self
            .store
            .signed_url(axum::http::Method::GET, &self.path(key), super::REDIRECT_TTL)
            .await
            .map_err(storage_error)?;
        Ok(Some(url.to_string()))
    }

    fn read_grace(&self) -> std::time::Duration {
        super::REDIRECT_TTL
    }

    fn assembly_part_size(&self, index: usize) -> Option<u64> {
        Some(part_size(self.part_step, index) as u64)
    }

    async fn start_assembly(&self, key: &Key) -> Result<String, StorageError> {
        self.store.create_multipart(&self.path(key)).await.map_err(storage_error)
    }

    async fn put_assembly_part(
        &self,
        key: &Key,
        id: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, StorageError> {
        too_many_parts(index)?;
        let id: MultipartId = id.to_owned();
        let part = self
            .store
            .put_part(&self.path(key), &id, index, PutPayload::from_bytes(data))
            .await
            .map_err(storage_error)?;
        Ok(part.content_id)
    }

    async fn complete_assembly(&self, key: &Key, id: &str, tags: Vec<String>) -> Result<(), StorageError> {
        let parts = tags.into_iter().map(|content_id| PartId { content_id }).collect();
        let id: MultipartId = id.to_owned();
        self.store.complete_multipart(&self.path(key), &id, parts).await.map(|_| ()).map_err(storage_error)
    }

    async fn abort_assembly(&self, key: &Key, id: &str) -> Result<(), StorageError> {
        let id: MultipartId = id.to_owned();
        match self.store.abort_multipart(&self.path(key), &id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Listed>, StorageError> {
        // The store lists whole path segments: list the prefix's directory, then match the rest.
        let dir = Key::new(prefix.as_str()[..prefix.as_str().rfind('/').map_or(0, |i| i + 1)].to_owned());
        let metas: Vec<_> =
            self.store.list(Some(&self.path(&dir))).try_collect().await.map_err(storage_error)?;
        let mut listed: Vec<Listed> = metas
            .iter()
            .filter_map(|m| {
                let key = self.key(&m.location)?;
                key.as_str().starts_with(prefix.as_str()).then(|| Listed {
                    key,
                    size: m.size,
                    modified: m.last_modified.timestamp(),
                })
            })
            .collect();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}
