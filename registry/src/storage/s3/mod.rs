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

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{
    ByteStream, Key, Listed, MultipartJournal, ObjectWriter, Storage, StorageError, MULTIPART_RENEW,
};

pub mod credentials;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use credentials::FileCredentials;

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

fn object_path(prefix: &str, key: &Key) -> ObjectPath {
    let key = key.as_str().trim_end_matches('/');
    if prefix.is_empty() {
        ObjectPath::from(key)
    } else {
        ObjectPath::from(format!("{prefix}/{key}"))
    }
}

/// Refuses a part past S3's last part number, in words a client can act on.
fn too_many_parts(index: usize) -> Result<(), StorageError> {
    if index < MAX_PARTS {
        return Ok(());
    }
    let why = format!("object too large: more than {MAX_PARTS} parts of a multipart upload");
    Err(StorageError::Io(io::Error::other(why)))
}

fn storage_error(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => StorageError::Unavailable(other.to_string()),
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
        Ok(Box::new(S3Writer {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            staging: self.path(key),
            staging_key: key.clone(),
            journal: self.journal.clone(),
            part_step: self.part_step,
            buffer: BytesMut::new(),
            multipart: None,
            in_flight: None,
            written: 0,
        }))
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

struct Multipart {
    id: MultipartId,
    parts: Vec<PartId>,
    /// When the journal last heard of it.
    renewed: std::time::Instant,
}

struct S3Writer {
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

/// The bucket of a real S3-compatible server, from the environment the suite sets (tests/s3.sh
/// starts MinIO and SeaweedFS on loopback): `BERTH_TEST_S3_ENDPOINT`, `_BUCKET`, `_ACCESS_KEY`,
/// `_SECRET_KEY`; objects under `prefix`.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) fn from_env(prefix: &str) -> S3Storage {
    let var = |name: &str| {
        std::env::var(format!("BERTH_TEST_S3_{name}"))
            .unwrap_or_else(|_| panic!("BERTH_TEST_S3_{name} is not set: run tests/s3.sh"))
    };
    S3Storage::new(&S3Options {
        bucket: var("BUCKET"),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        endpoint: var("ENDPOINT"),
        path_style: true,
        access_key_id: var("ACCESS_KEY"),
        secret_access_key: var("SECRET_KEY"),
        credentials_dir: None,
        ca_pem: None,
        redirect: false,
    })
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn conformance_on_a_real_s3_server() {
        let prefix = format!("conformance-{}", uuid::Uuid::new_v4().simple());
        let store = from_env(&prefix);
        super::super::testsuite::run(&store).await;
        // Nothing staged is left behind by commits or abandoned writers (whose abort runs in
        // the background: wait for it, within bounds).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !store.list(&Key::new("tmp/".into())).await.unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "staged objects left behind");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn multipart_objects_are_whole_and_prefixes_keep_stores_apart() {
        let a = from_env(&format!("a-{}", uuid::Uuid::new_v4().simple()));
        let b = from_env(&format!("b-{}", uuid::Uuid::new_v4().simple()));
        // Two full parts and a tail, written in pieces that straddle part boundaries.
        let data: Vec<u8> = (0..2 * PART_SIZE + 12_345).map(|i| (i % 253) as u8).collect();
        let key = Key::new("blobs/sha256/ab/multipart".into());
        let mut w = a.writer().await.unwrap();
        for chunk in data.chunks(1_000_003) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        w.commit(&key).await.unwrap();
        assert_eq!(a.stat(&key).await.unwrap(), Some(data.len() as u64));
        let back = super::super::read_all(&a, &key).await.unwrap();
        assert!(back == data, "the object reads back whole");
        assert_eq!(b.stat(&key).await.unwrap(), None, "another prefix sees nothing of it");
        // An object too big for one server-side copy is moved as a stream of parts.
        let small_copies = from_env(&format!("c-{}", uuid::Uuid::new_v4().simple())).with_copy_limit(1 << 20);
        let big = Key::new("uploads/ab/big.assembled".into());
        super::super::put_all(&small_copies, &big, Bytes::copy_from_slice(&data)).await.unwrap();
        small_copies.rename(&big, &key).await.unwrap();
        assert!(super::super::read_all(&small_copies, &key).await.unwrap() == data, "moved whole");
        assert_eq!(small_copies.stat(&big).await.unwrap(), None);
        small_copies.delete(&key).await.unwrap();
        a.delete(&key).await.unwrap();

        // Written where it will be committed: whole there, with nothing staged; and nothing at
        // all if dropped before its commit.
        let mut w = a.writer_at(&key).await.unwrap();
        w.write(Bytes::copy_from_slice(&data)).await.unwrap();
        w.commit(&key).await.unwrap();
        assert!(super::super::read_all(&a, &key).await.unwrap() == data);
        assert!(a.list(&Key::new("tmp/".into())).await.unwrap().is_empty(), "no staging copy");
        let dropped = Key::new("blobs/sha256/ab/dropped".into());
        let mut w = a.writer_at(&dropped).await.unwrap();
        w.write(Bytes::copy_from_slice(&data)).await.unwrap();
        drop(w);
        assert_eq!(a.stat(&dropped).await.unwrap(), None);
        a.delete(&key).await.unwrap();
    }

    #[test]
    fn parts_grow_so_ten_thousand_hold_hundreds_of_gibibytes() {
        let sizes: Vec<u64> = (0..MAX_PARTS).map(|i| part_size(PARTS_PER_STEP, i) as u64).collect();
        assert!(sizes[..PARTS_PER_STEP].iter().all(|&s| s == PART_SIZE as u64), "the first 8 GiB as before");
        assert!(sizes.iter().sum::<u64>() >= 400 << 30, "10,000 parts hold at least 400 GiB");
        assert!(sizes.iter().all(|&s| (5 << 20..=5 << 30).contains(&s)), "each part within S3's bounds");
        assert!(too_many_parts(MAX_PARTS - 1).is_ok());
        assert!(too_many_parts(MAX_PARTS).unwrap_err().to_string().contains("object too large"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn growing_parts_make_whole_objects() {
        // Parts grow every part here: 8, 16, then the 1 MiB tail — three parts, not four.
        let s = from_env(&format!("grow-{}", uuid::Uuid::new_v4().simple())).with_part_step(1);
        let data: Vec<u8> = (0..3 * PART_SIZE + (1 << 20)).map(|i| (i % 241) as u8).collect();
        let key = Key::new("blobs/sha256/ab/grown".into());
        let mut w = s.writer_at(&key).await.unwrap();
        for chunk in data.chunks(3_000_017) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        w.commit(&key).await.unwrap();
        assert!(super::super::read_all(&s, &key).await.unwrap() == data, "the object reads back whole");
        let head = s.store.head(&s.path(&key)).await.unwrap();
        let etag = head.e_tag.unwrap_or_default();
        assert!(etag.trim_matches('"').ends_with("-3"), "three parts: {etag}");
        s.delete(&key).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs an S3 server: tests/s3.sh runs it"]
    async fn a_wrong_secret_is_an_error_that_says_so() {
        let good = from_env("creds");
        let bad = S3Storage::new(&S3Options {
            bucket: std::env::var("BERTH_TEST_S3_BUCKET").unwrap(),
            endpoint: std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap(),
            path_style: true,
            access_key_id: std::env::var("BERTH_TEST_S3_ACCESS_KEY").unwrap(),
            secret_access_key: "not-the-secret".into(),
            ..S3Options::default()
        })
        .unwrap();
        let key = Key::new("blobs/sha256/cd/creds".into());
        super::super::put_all(&good, &key, Bytes::from_static(b"x")).await.unwrap();
        let Err(StorageError::Unavailable(e)) =
            bad.stat(&Key::new("creds/blobs/sha256/cd/creds".into())).await
        else {
            panic!("a wrong secret reads nothing");
        };
        assert!(!e.contains("not-the-secret"), "{e}");
        assert!(super::super::put_all(&bad, &key, Bytes::from_static(b"y")).await.is_err());
        assert!(bad.check().await.is_err(), "not ready with a wrong secret");
        good.check().await.unwrap();
        let missing = S3Storage::new(&S3Options {
            bucket: "no-such-bucket-for-berth".into(),
            endpoint: std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap(),
            path_style: true,
            access_key_id: std::env::var("BERTH_TEST_S3_ACCESS_KEY").unwrap(),
            secret_access_key: std::env::var("BERTH_TEST_S3_SECRET_KEY").unwrap(),
            ..S3Options::default()
        })
        .unwrap();
        assert!(missing.check().await.is_err(), "not ready without the bucket");
        assert_eq!(super::super::read_all(&good, &key).await.unwrap(), Bytes::from_static(b"x"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_credentials_and_unreachable_stores_are_errors_not_hangs() {
        // Nothing listens on this port: the error comes back, within the connect timeout.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let store = S3Storage::new(&S3Options {
            bucket: "b".into(),
            endpoint: format!("http://127.0.0.1:{port}"),
            path_style: true,
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            ..S3Options::default()
        })
        .unwrap();
        let key = Key::new("blobs/x".into());
        let stat = tokio::time::timeout(Duration::from_secs(60), store.stat(&key)).await;
        assert!(matches!(stat, Ok(Err(StorageError::Unavailable(_)))), "{stat:?}");
        let shown =
            format!("{:?}", S3Options { secret_access_key: "hunter2".into(), ..S3Options::default() });
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
