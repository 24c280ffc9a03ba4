//! The registry itself (`Registry`): storage and metadata with their limits. Each kind of content
//! adds its methods in its own file: `uploads`, `blobs`, `manifests`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::{Hasher, RepoName};
use bytes::Bytes;
use futures_util::stream::BoxStream;

use super::cache;
use super::error::{Result, ServiceError};
use crate::meta::multiparts::MultipartLog;
use crate::meta::MetaStore;
use crate::storage::{ObjectWriter, Storage};

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
    /// Most chunks one upload session may hold.
    pub max_upload_chunks: u32,
    /// Most descriptors in one page of a referrers list.
    pub referrers_page: usize,
    /// Most bytes of descriptors (annotations included) in one page of a referrers list, past
    /// its first descriptor.
    pub referrers_page_bytes: usize,
    /// Most repository names one catalog request reads (see `catalog`).
    pub catalog_scan: usize,
    /// Released blobs' bytes are deleted no sooner than this (or the store's read grace).
    pub purge_delay: Duration,
    /// An index may be pushed without all its children (`sparse_indexes`).
    pub sparse_indexes: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            upload_ttl: Duration::from_secs(24 * 3600),
            max_page: 10_000,
            max_upload_chunks: 10_000,
            referrers_page: 10_000,
            referrers_page_bytes: 2 << 20,
            catalog_scan: 10_000,
            purge_delay: Duration::ZERO,
            sparse_indexes: false,
        }
    }
}

/// What `/readyz` reports: `None` for a backend that answers, else why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub database: Option<String>,
    pub storage: Option<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database.is_none() && self.storage.is_none()
    }
}

/// Memory kept for recently used manifests.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;

pub struct Registry {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) meta: Arc<dyn MetaStore>,
    pub(super) limits: Limits,
    pub(super) manifests: cache::ManifestCache,
    /// Where the store's writers record their multipart uploads (object storage only).
    multiparts: Option<Arc<dyn MultipartLog>>,
    /// Pull times not yet written.
    pub(super) pulls: super::pulls::PullTimes,
    pub(super) changes: super::changes::Changes,
    /// Which endpoints want the events of changes.
    pub(super) events: Arc<crate::notify::Events>,
}

impl Registry {
    pub fn new(storage: Arc<dyn Storage>, meta: Arc<dyn MetaStore>, limits: Limits) -> Registry {
        Registry {
            storage,
            meta,
            limits,
            manifests: cache::ManifestCache::new(MANIFEST_CACHE_BYTES),
            multiparts: None,
            pulls: Default::default(),
            changes: Default::default(),
            events: Default::default(),
        }
    }

    /// Whether an endpoint wants events of `kind` in `repo`.
    pub fn wants_event(&self, kind: berth_core::config::notifications::EventKind, repo: &str) -> bool {
        self.events.wants(kind, repo)
    }

    /// Records changes' events for these endpoints (none by default: the audit log only).
    pub fn with_events(mut self, events: Arc<crate::notify::Events>) -> Registry {
        self.events = events;
        self
    }

    /// Writes what is noted in memory and written behind: the pull times since the last write
    /// (retention reads them) and the repositories changed (the review queue); how many pulls.
    pub async fn flush_behind(&self) -> Result<usize> {
        let changed = self.changes.flush(self.meta.as_ref()).await;
        let pulls = self.pulls.flush(self.meta.as_ref()).await?;
        changed?;
        Ok(pulls)
    }

    /// Notes that `repo` changed, for the review queue.
    pub(super) fn changed(&self, repo: &RepoName) {
        self.changes.note(repo, crate::meta::now());
    }

    /// The registry whose storage records its writers' multipart uploads in `log`
    /// ([`super::multiparts::Journal`]), which [`Registry::sweep_multiparts`] then sweeps.
    pub fn with_multipart_log(mut self, log: Arc<dyn MultipartLog>) -> Registry {
        self.multiparts = Some(log);
        self
    }

    /// Aborts the recorded multipart uploads whose writers are gone; `None` when this registry's
    /// storage records none.
    pub async fn sweep_multiparts(&self) -> Option<std::result::Result<usize, String>> {
        let log = self.multiparts.as_ref()?;
        Some(super::multiparts::sweep(self.storage.as_ref(), log.as_ref(), crate::meta::now_millis()).await)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Checks, side by side, that metadata and storage answer; used by `/readyz`. Each error is
    /// the backend's own reason (unreachable, refused credentials, no such bucket).
    pub async fn readiness(&self) -> Readiness {
        let (database, storage) = tokio::join!(self.meta.count_uploads(), self.storage.check());
        Readiness {
            database: database.err().map(|e| e.to_string()),
            storage: storage.err().map(|e| e.to_string()),
        }
    }
}

/// Streams `body` into `writer`, hashing as it goes; checks the byte count if one was declared.
pub(super) async fn copy_body(
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

pub(super) fn repo_matches(upload_repo: &RepoName, repo: &RepoName) -> Result<()> {
    if upload_repo == repo {
        Ok(())
    } else {
        Err(ServiceError::UploadUnknown)
    }
}
