//! Deleting the objects of released blobs ([`crate::meta::sweep`]), and what a write of a blob
//! does when it meets a purge of the same digest.
//!
//! A purge marks the blob `purging`, deletes its object, then forgets the row. A writer whose
//! record meets a `purging` row cannot tell whether its object was written before the delete
//! (and is gone) or after it: it waits for the purge to end, and the object then in storage, if
//! any, was written after the delete and stays.

use std::future::Future;

use futures_util::StreamExt;
use std::time::{Duration, Instant};

use berth_core::oci::Digest;
use tracing::info;

use super::error::{Result, ServiceError};
use super::registry::Registry;
use crate::meta::{self, MetaError, Stored};
use crate::storage::layout;

/// A purge that has held a blob this long stopped (its process died, or its object delete hung):
/// another takes it over.
const PURGE_LEASE: Duration = Duration::from_secs(60);
/// Longest a write waits for a purge of its digest to end.
const PURGE_WAIT: Duration = Duration::from_secs(30);
const PURGE_POLL: Duration = Duration::from_millis(50);
const PURGE_BATCH: usize = 64;
/// Object deletes a purge has in flight at once.
const PURGE_DELETES: usize = 16;

impl Registry {
    /// Deletes the objects of released blobs once their readers' grace is over; returns how many.
    pub async fn purge_released(&self) -> Result<usize> {
        // Released up to now, grace permitting (`before` is exclusive).
        let now = meta::now_millis() + 1;
        let grace = self.storage.read_grace().max(self.limits.purge_delay);
        let deleting_before = now - grace.as_millis() as i64;
        let purging_before = now - PURGE_LEASE.as_millis() as i64;
        let mut purged = 0;
        loop {
            let batch = self.meta.purgeable_blobs(deleting_before, purging_before, PURGE_BATCH).await?;
            let began = self.meta.begin_purges(batch.clone(), deleting_before, purging_before).await?;
            let purging: Vec<Digest> =
                batch.iter().zip(&began).filter(|(_, began)| **began).map(|(d, _)| d.clone()).collect();
            // Objects go several at a time (an object store answers each delete in its own time);
            // a failure leaves the rest purging, for the next run to take over.
            let deletes: Vec<_> = purging
                .iter()
                .map(|d| {
                    self.manifests.remove(d);
                    async move {
                        let key = self.blob_key(d).await?;
                        self.storage.delete(&key).await.map_err(ServiceError::from)
                    }
                })
                .collect();
            let deleted: Vec<_> = futures_util::stream::iter(deletes).buffered(PURGE_DELETES).collect().await;
            let mut done = Vec::with_capacity(purging.len());
            for (d, r) in purging.iter().zip(deleted) {
                match r {
                    Ok(()) => {
                        info!(digest = %d, "deleted the bytes of a blob nothing uses");
                        done.push(d.clone());
                    }
                    Err(e) => {
                        tracing::warn!(digest = %d, error = %e, "could not delete a released blob; retrying later")
                    }
                }
            }
            purged += done.len();
            let progressed = !done.is_empty();
            self.meta.end_purges(done).await?;
            if batch.len() < PURGE_BATCH || !progressed {
                break;
            }
        }
        let gone_before = now - meta::sweep::GONE_KEPT.as_millis() as i64;
        while self.meta.forget_gone(gone_before, PURGE_BATCH).await? == PURGE_BATCH as u64 {}
        Ok(purged)
    }

    /// Runs `record` (a metadata write that records the blob `digest` of `size` bytes, its object
    /// `stored` as given). When that meets a purge of the digest (running, or ended since the
    /// object was looked for or written), waits for the purge to end and records again if an
    /// object of the right size is stored then; `Ok(false)` when none is: the caller's bytes went
    /// with the purge, or it assumed bytes that are gone.
    pub(super) async fn record_past_purge<F, Fut>(
        &self,
        digest: &Digest,
        size: u64,
        stored: Stored,
        record: F,
    ) -> Result<bool>
    where
        F: Fn(Stored) -> Fut,
        Fut: Future<Output = meta::Result<()>>,
    {
        match record(stored).await {
            Ok(()) => return Ok(true),
            Err(MetaError::BlobGone(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.await_purge(digest).await?;
        if self.storage.stat(&layout::blob(digest)).await? != Some(size) {
            return Ok(false);
        }
        // Seen after the purge ended: written after its delete, so it stays.
        record(Stored::Confirmed).await?;
        Ok(true)
    }

    /// After a write of `digest`'s object whose record failed with `e`: the object is recorded on
    /// its own (unless a purge has it), so a collection finds it; `e` is returned.
    pub(super) async fn orphaned(&self, digest: &Digest, size: u64, e: ServiceError) -> ServiceError {
        if let Err(again) = self.meta.record_orphan(digest, size).await {
            tracing::warn!(digest = %digest, error = %again, "an unrecorded object is left for the scrub");
        }
        e
    }

    pub(super) async fn await_purge(&self, digest: &Digest) -> Result<()> {
        let deadline = Instant::now() + PURGE_WAIT;
        while self.meta.blob_purging(digest).await? {
            if Instant::now() >= deadline {
                return Err(ServiceError::Retry(format!("blob {digest} is being deleted; try again")));
            }
            tokio::time::sleep(PURGE_POLL).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_core::oci::{Algorithm, Reference, RepoName};
    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::*;
    use crate::meta::cache::{CacheIndex, CachedItem, ContentKind};
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::{MetaStore, Purges};
    use crate::service::{BodyStream, Limits};
    use crate::storage::fs::FsStorage;
    use crate::storage::{read_all, Storage};

    struct Fixture {
        registry: Arc<Registry>,
        meta: Arc<SqliteMeta>,
        storage: Arc<FsStorage>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(FsStorage::open(dir.path().join("data")).unwrap());
        let meta = Arc::new(SqliteMeta::open(dir.path().join("meta.db")).unwrap());
        let registry = Arc::new(Registry::new(storage.clone(), meta.clone(), Limits::default()));
        Fixture { registry, meta, storage, _dir: dir }
    }

    fn body(data: &'static [u8]) -> BodyStream {
        futures_util::stream::iter([Ok(Bytes::from_static(data))]).boxed()
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    async fn read(registry: &Registry, repo: &RepoName, digest: &Digest) -> Vec<u8> {
        let read = registry.get_blob(repo, digest, None, true).await.unwrap().unwrap();
        let chunks: Vec<Bytes> = read.body.unwrap().map(|c| c.unwrap()).collect().await;
        chunks.concat()
    }

    /// Releases `digest` the way eviction (and garbage collection) does: its only link goes.
    async fn release(f: &Fixture, repo: &RepoName, digest: &Digest, size: u64) {
        let item = CachedItem { repo: repo.clone(), digest: digest.clone(), kind: ContentKind::Blob, size };
        assert!(f.meta.evict(&item).await.unwrap(), "released");
    }

    /// Waits until a writer racing the test has written `digest`'s object.
    async fn written(storage: &FsStorage, digest: &Digest) {
        for _ in 0..1000 {
            if storage.stat(&layout::blob(digest)).await.unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the writer never wrote {digest}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_of_released_bytes_keeps_them_from_the_purge() {
        // Eviction used to forget the blob, then delete its file: a push of the same bytes in
        // between was acknowledged and then lost them.
        let f = fixture();
        let (cached, pushed) = (repo("hub/library/app"), repo("team/app"));
        let digest = Digest::of(Algorithm::Sha256, b"shared layer");
        f.registry.put_blob(&cached, &digest, None, body(b"shared layer")).await.unwrap();
        release(&f, &cached, &digest, 12).await;
        f.registry.put_blob(&pushed, &digest, None, body(b"shared layer")).await.unwrap();
        assert_eq!(f.registry.purge_released().await.unwrap(), 0);
        assert_eq!(read(&f.registry, &pushed, &digest).await, b"shared layer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn released_bytes_nothing_wrote_again_are_deleted() {
        let f = fixture();
        let r = repo("hub/library/app");
        let digest = Digest::of(Algorithm::Sha256, b"old layer");
        f.registry.put_blob(&r, &digest, None, body(b"old layer")).await.unwrap();
        release(&f, &r, &digest, 9).await;
        assert_eq!(f.registry.purge_released().await.unwrap(), 1);
        assert_eq!(f.storage.stat(&layout::blob(&digest)).await.unwrap(), None);
        assert!(!f.meta.blob_purging(&digest).await.unwrap());
        assert_eq!(f.meta.blob_size(&digest).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_meeting_a_purge_waits_and_keeps_what_it_wrote_after_the_delete() {
        let f = fixture();
        let r = repo("team/app");
        let digest = Digest::of(Algorithm::Sha256, b"layer");
        f.registry.put_blob(&r, &digest, None, body(b"layer")).await.unwrap();
        release(&f, &r, &digest, 5).await;
        // A purge deletes the object and has yet to forget the row when the push arrives.
        let later = meta::now_millis() + 1;
        assert!(f.meta.begin_purge(&digest, later, 0).await.unwrap());
        f.storage.delete(&layout::blob(&digest)).await.unwrap();
        let push = tokio::spawn({
            let (registry, r, digest) = (f.registry.clone(), r.clone(), digest.clone());
            async move { registry.put_blob(&r, &digest, None, body(b"layer")).await }
        });
        written(&f.storage, &digest).await;
        tokio::time::sleep(PURGE_POLL * 2).await;
        assert!(!push.is_finished(), "the push waits for the purge");
        f.meta.end_purge(&digest).await.unwrap();
        push.await.unwrap().unwrap();
        assert_eq!(read(&f.registry, &r, &digest).await, b"layer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manifest_whose_bytes_a_purge_took_is_written_again() {
        let f = fixture();
        let r = repo("team/app");
        let body = Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        );
        let digest = Digest::of(Algorithm::Sha256, &body);
        let by_digest = Reference::Digest(digest.clone());
        let ct = Some("application/vnd.oci.image.index.v1+json");
        f.registry
            .put_manifest(&r, &by_digest, ct, body.clone(), Default::default(), &Default::default())
            .await
            .unwrap();
        f.registry.delete_manifest(&r, &by_digest, &Default::default(), &Default::default()).await.unwrap();
        // Nothing uses the bytes now: release and begin a purge, as garbage collection would.
        let item =
            CachedItem { repo: r.clone(), digest: digest.clone(), kind: ContentKind::Manifest, size: 0 };
        f.meta.evict(&item).await.unwrap();
        let later = meta::now_millis() + 1;
        assert_eq!(f.meta.purgeable_blobs(later, 0, 10).await.unwrap(), vec![digest.clone()]);
        assert!(f.meta.begin_purge(&digest, later, 0).await.unwrap());
        // The push writes the bytes, meets the purge and waits; the purge then deletes them.
        let push = tokio::spawn({
            let (registry, r, body) = (f.registry.clone(), r.clone(), body.clone());
            async move {
                registry
                    .put_manifest(
                        &r,
                        &Reference::Tag("v1".parse().unwrap()),
                        ct,
                        body,
                        Default::default(),
                        &Default::default(),
                    )
                    .await
            }
        });
        let key = layout::blob(&digest);
        written(&f.storage, &digest).await;
        f.storage.delete(&key).await.unwrap();
        f.meta.end_purge(&digest).await.unwrap();
        push.await.unwrap().unwrap();
        let record = f.registry.head_manifest(&r, &Reference::Tag("v1".parse().unwrap())).await.unwrap();
        assert_eq!(f.registry.manifest_bytes(&record).await.unwrap(), body);
        assert_eq!(read_all(f.storage.as_ref(), &key).await.unwrap(), body, "stored, not only cached");
    }
}
