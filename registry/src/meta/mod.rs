//! Metadata: which repositories exist, which blobs each may read, manifests and the edges from them
//! to their blobs, children and subject, tags, and upload sessions.
//!
//! Content bytes live in [`crate::storage`]; this is the index over them. Every manifest PUT
//! checks and records its references in one transaction, so a manifest is never visible with a
//! dangling reference. [`sqlite`] is the embedded default; `postgres` serves several replicas
//! over shared storage, and the same conformance suite runs on both. The pull-through
//! cache's own bookkeeping (tag checks, pull times) is the separate [`cache::CacheIndex`], and the
//! multipart uploads requests write straight into object storage are [`multiparts::MultipartLog`].

pub mod browse;
pub mod cache;
mod error;
pub mod events;
pub mod gc;
pub mod multiparts;
pub mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod precondition;
pub mod queue;
pub mod resolved;
pub mod runs;
pub mod scrub;
pub mod sqlite;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testsuite;
pub mod uploads;
pub mod usage;

use berth_core::oci::{Descriptor, Digest, Reference, RepoName, Tag};
pub use error::{MetaError, Result};
pub use events::NewEvent;
pub use precondition::{Condition, Precondition};
pub use sweep::{Purges, Stored};
pub use uploads::{Appended, Closing, Upload, UploadPart, UploadSessions};

/// What serving a manifest needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest about to be recorded, with everything it refers to.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's `annotations`, as a JSON object.
    pub annotations: Option<String>,
    pub blobs: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    /// Tags to point at the manifest, in the same transaction.
    pub tags: Vec<Tag>,
    /// Refuse the manifest unless everything it references is already in the repository. Off
    /// only for manifests cached from an upstream, whose content arrives on demand.
    pub verify_references: bool,
    /// With `verify_references`, an index's child manifests may be missing (a sparse index:
    /// `sparse_indexes`); its blobs are still checked.
    pub children_optional: bool,
    /// Whether the caller wrote the manifest's bytes or found them stored ([`sweep`]).
    pub stored: Stored,
    /// What the push means to the event log ([`events`]), recorded in the same transaction.
    pub events: Vec<NewEvent>,
    /// Record nothing unless what the request's reference names now is as expected
    /// ([`precondition`]): [`MetaError::PreconditionFailed`] otherwise.
    pub condition: Option<Condition>,
}

/// A blob a repository may read: its size, and where its object is when not at its digest's key
/// (`blobs.location`, see `service::in_place`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundBlob {
    pub size: u64,
    pub location: Option<std::sync::Arc<str>>,
}

/// One entry of a referrers response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// A connection pool's use, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub in_use: usize,
    pub idle: usize,
    pub max: usize,
}

/// `n`/`last` pagination: at most `limit` names sorted after `last`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: usize,
    pub last: Option<String>,
}

#[async_trait::async_trait]
pub trait MetaStore: UploadSessions + Purges + Send + Sync + 'static {
    /// Size of `digest` if the repository may read it.
    async fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.find_blob(repo, digest).await?.map(|b| b.size))
    }
    /// [`MetaStore::blob_in_repo`] with where the blob's object is: what a read needs.
    async fn find_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<FoundBlob>>;
    /// Size of `digest` if it is committed anywhere.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Where the blob's object is when not at its digest's key (the row's `location`, in any
    /// state); `None` when it is there, or there is no row.
    async fn blob_location(&self, digest: &Digest) -> Result<Option<String>>;
    /// Whether blobs may be recorded away from their digest's key
    /// ([`UploadSessions::finish_upload_at`]): only where no older Berth, which would look for
    /// them at their digest's key, can run on the same database.
    fn records_locations(&self) -> bool;
    /// Repositories that hold `digest` (for mounts without `from`), at most `limit`.
    async fn repos_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>>;
    /// Records committed content and makes it readable in `repo` (see [`sweep`] for `stored`).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, stored: Stored) -> Result<()>;
    /// Makes `digest` unreadable in `repo`; false if it was not there.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// `Ok` if `repo` holds every one of `blobs` and `manifests`, each of the size described;
    /// else the first that is missing (`BlobUnknown` or `ManifestUnknown`) or of another size
    /// (`SizeMismatch`).
    async fn check_references(
        &self,
        repo: &RepoName,
        blobs: &[Descriptor],
        manifests: &[Descriptor],
    ) -> Result<()>;
    /// Checks every reference and records the manifest (and tag) in one transaction.
    async fn put_manifest(&self, m: NewManifest) -> Result<()>;
    async fn manifest(&self, repo: &RepoName, r: &Reference) -> Result<Option<ManifestRecord>>;
    /// Deletes the manifest and the tags that point at it; false if it was not there. `event`
    /// is recorded with the deletion (none when nothing was deleted).
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        event: Option<NewEvent>,
    ) -> Result<bool>;
    /// Deletes the tag, as [`MetaStore::delete_manifest`]; the event gets the digest it named.
    /// Only if what it names holds `expect` ([`MetaError::PreconditionFailed`] otherwise; an
    /// absent tag whose absence holds it is `false`, as without a condition).
    async fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expect: &Precondition,
        event: Option<NewEvent>,
    ) -> Result<bool>;
    /// Tags sorted; `None` if the repository does not exist. Returns up to `limit + 1` so the
    /// caller can tell whether another page follows.
    async fn tags(&self, repo: &RepoName, page: &Page) -> Result<Option<Vec<String>>>;
    /// Repository names sorted, up to `limit + 1`.
    async fn catalog(&self, page: &Page) -> Result<Vec<String>>;
    /// What refers to `subject` in `repo` (of `artifact_type`, if given), sorted by digest from
    /// after `page.last`, up to `limit + 1`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Referrer>>;

    /// Makes the blob's link in `repo` young again (a client asked about it, and will push a
    /// manifest that needs it): a collection's grace then protects it.
    async fn touch_link(&self, repo: &RepoName, digest: &Digest) -> Result<()>;
    /// Records a blob whose object the caller wrote but could not record as it meant to (the
    /// manifest or upload it belonged to was refused): so the object is known, and a collection
    /// deletes it once nothing uses it.
    async fn record_orphan(&self, digest: &Digest, size: u64) -> Result<()>;
    /// Records when manifests were last pulled (unix seconds), in one transaction that is not
    /// waited onto the disk: the times are advisory, written behind the pulls in batches.
    async fn record_pull_times(&self, pulls: Vec<(RepoName, Digest, i64)>) -> Result<()>;
    /// Queues repositories for review by the next collection over the queue ([`queue`]): each
    /// with its first and last change noted (unix seconds). Not waited onto the disk.
    async fn queue_reviews(&self, changes: Vec<(RepoName, i64, i64)>) -> Result<()>;
    /// This process stops serving: a store shared with other replicas tells them not to wait
    /// for it any more. Called once requests have drained.
    async fn leave(&self) {}
    /// The connection pool's use, for a store that pools connections to a server.
    fn pool_use(&self) -> Option<PoolUse> {
        None
    }
}

/// A value read back from the store that does not parse: the database was edited or damaged.
pub(crate) fn parse_stored<T: std::str::FromStr>(what: &str, value: String) -> Result<T> {
    value.parse().map_err(|_| MetaError::Db(format!("stored {what} {value:?} does not parse")))
}

/// Whether a repository holds what `wanted` describes, from its stored size (`None`: not held):
/// `missing` names it when absent, [`MetaError::SizeMismatch`] when its size is another.
pub(crate) fn held(wanted: &Descriptor, stored: Option<i64>, missing: fn(Digest) -> MetaError) -> Result<()> {
    match stored {
        None => Err(missing(wanted.digest.clone())),
        Some(size) if u64::try_from(size).ok() != Some(wanted.size) => Err(MetaError::SizeMismatch {
            digest: wanted.digest.clone(),
            described: wanted.size,
            stored: size.max(0) as u64,
        }),
        Some(_) => Ok(()),
    }
}

/// What a write that records a blob makes of the state it found: `Ok` when the blob is `live`
/// now, [`MetaError::BlobGone`] when its object is being deleted or was (for an assumed
/// object: or is not stored at all).
pub(crate) fn recorded_blob(digest: &Digest, stored: Stored, state: Option<&str>) -> Result<()> {
    match (stored, state) {
        (_, Some("live")) | (Stored::Written | Stored::Confirmed, None) => Ok(()),
        _ => Err(MetaError::BlobGone(digest.clone())),
    }
}

/// What [`sweep::RECORD_AT`] made of the blob: `Ok(true)` when it is `live` at the caller's location,
/// `Ok(false)` when it is `live` elsewhere (the caller's object is not needed),
/// [`MetaError::BlobGone`] while a purge deletes its former object.
pub(crate) fn recorded_at(
    digest: &Digest,
    location: &str,
    row: Option<(String, Option<String>)>,
) -> Result<bool> {
    match row {
        None => Ok(false),
        Some((state, at)) if state == "live" => Ok(at.as_deref() == Some(location)),
        Some(_) => Err(MetaError::BlobGone(digest.clone())),
    }
}

/// Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
