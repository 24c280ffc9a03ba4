//! Blobs that stay where their upload wrote them. On an object store an object cannot be
//! renamed: a blob pushed in pieces before its digest was known (docker's and skopeo's push:
//! `PATCH` with the bytes, then `PUT ?digest=`) was written to its session's objects, and moving
//! it to its digest's key would copy every byte again (for S3, a server-side copy the store
//! rewrites in full). So where [`Registry::locates`] holds, the session's one object that holds
//! all of its bytes — its completed multipart upload, or its only chunk — becomes the blob, and
//! the blob's row records where it is (`blobs.location`): a pull finds it with the blob in the
//! lookup it makes anyway, every other path that opens a blob asks [`Registry::blob_key`].
//!
//! ```text
//! PUT ?digest= ─► digest verified ─► one transaction: session row deleted (the claim on its
//!                                    objects) + blob recorded at the session's object + linked
//!   stored already (live)       ─► linked; the session's object is removed
//!   released, not yet purged    ─► live again where it was; the session's object is removed
//!   being purged                ─► waits for the purge, then recorded at the session's object
//! discard (cancel, expiry)      ─► the row deleted first; a session a close claimed is left alone
//! ```
//! A purge deletes the object a row names; the scrub leaves objects under `uploads/` that a row
//! names. A blob at its digest's key never moves, and a located one moves only by being purged
//! and pushed again.

use super::error::Result;
use super::registry::Registry;
use crate::meta::{MetaError, Upload, UploadPart};
use crate::storage::{layout, Key};
use berth_core::oci::{Digest, RepoName};

impl Registry {
    /// Closes a session whose bytes are one object of its own (its completed assembly, or its
    /// one chunk) by recording that object as the blob's: on an object store, where a blob
    /// cannot be renamed into place, the bytes are not copied. The session's row is the claim on
    /// the object: it is recorded only in the transaction that ends the session.
    pub(super) async fn finish_in_place(
        &self,
        repo: &RepoName,
        u: &Upload,
        parts: &[UploadPart],
        digest: &Digest,
        at: Key,
    ) -> Result<u64> {
        let record = || self.meta.finish_upload_at(u.id, repo, digest, u.received, at.as_str());
        // The digest's former object is being deleted: this one is at a key of its own, which
        // the purge does not touch, so it is recorded once the purge is over.
        let placed = match record().await {
            Err(MetaError::BlobGone(_)) => {
                self.await_purge(digest).await?;
                record().await?
            }
            r => r?,
        };
        self.changed(repo);
        // The blob is recorded: what else the session left is litter (the scrub's to find).
        let mut left: Vec<Key> = parts
            .iter()
            .filter(|p| p.tag.is_none())
            .map(|p| layout::upload_part(&u.id, p.start, &p.nonce))
            .collect();
        if placed {
            left.retain(|k| *k != at);
        } else {
            // The digest was stored already, elsewhere: this copy is not needed.
            left.push(at);
        }
        for k in left {
            if let Err(e) = self.storage.delete(&k).await {
                tracing::warn!(error = %e, upload = %u.id, "could not remove an upload object");
            }
        }
        Ok(u.received)
    }
}

/// The one object of its own that holds all of a session's bytes, if there is one: its completed
/// assembly, or its only chunk.
pub(super) fn own_object(u: &Upload, parts: &[UploadPart], completed: Option<&Key>) -> Option<Key> {
    match (completed, parts) {
        (Some(key), _) => Some(key.clone()),
        (None, [only]) if only.tag.is_none() && only.size == u.received => {
            Some(layout::upload_part(&u.id, only.start, &only.nonce))
        }
        _ => None,
    }
}

/// A registry on a store that assembles uploads from parts, as S3 does, for tests of blobs kept
/// in place.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures_util::{StreamExt, TryStreamExt};

    use super::*;
    use crate::meta::MetaStore;
    use crate::service::registry::{BodyStream, Limits};
    use crate::storage::{memory::MemoryStorage, Storage};
    use crate::UploadId;
    use berth_core::oci::Algorithm;

    /// Parts of a store that assembles uploads from parts (1 KiB, so tests stay small).
    pub(crate) const PART: u64 = 1024;

    pub(crate) fn body(data: &[u8]) -> BodyStream {
        futures_util::stream::iter([Ok(Bytes::copy_from_slice(data))]).boxed()
    }

    pub(crate) fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    pub(crate) fn bytes(n: usize, seed: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    }

    pub(crate) struct World<M> {
        pub meta: Arc<M>,
        pub storage: Arc<MemoryStorage>,
        pub registry: Arc<Registry>,
    }

    pub(crate) fn world<M: MetaStore>(meta: M) -> World<M> {
        let (meta, storage) = (Arc::new(meta), Arc::new(MemoryStorage::assembling(PART)));
        let registry = Arc::new(Registry::new(storage.clone(), meta.clone(), Limits::default()));
        World { meta, storage, registry }
    }

    impl<M: MetaStore> World<M> {
        /// Docker's push: POST, one PATCH with every byte, then `PUT ?digest=` without a body.
        pub(crate) async fn push_in_pieces(&self, r: &str, data: &[u8]) -> (Digest, UploadId) {
            let (repo, digest) = (repo(r), Digest::of(Algorithm::Sha256, data));
            let id = self.registry.start_upload(&repo).await.unwrap().id;
            self.registry.upload_chunk(&repo, id, None, None, body(data)).await.unwrap();
            let size = self.registry.finish_upload(&repo, id, &digest, None, None, body(b"")).await.unwrap();
            assert_eq!(size, data.len() as u64);
            (digest, id)
        }

        pub(crate) async fn read(&self, r: &str, digest: &Digest) -> Vec<u8> {
            let read = self.registry.get_blob(&repo(r), digest, None, true).await.unwrap().unwrap();
            let chunks: Vec<Bytes> = read.body.unwrap().try_collect().await.unwrap();
            chunks.concat()
        }

        pub(crate) async fn keys(&self, prefix: &Key) -> Vec<Key> {
            self.storage.list(prefix).await.unwrap().into_iter().map(|l| l.key).collect()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::{MetaStore, UploadSessions};
    use crate::storage::Storage;
    use berth_core::oci::Algorithm;

    #[tokio::test]
    async fn a_blob_pushed_in_pieces_stays_where_its_upload_wrote_it() {
        let w = world(SqliteMeta::temporary().unwrap());
        // Two parts and a tail: the session's multipart upload, completed, is the blob.
        let big = bytes(2 * PART as usize + 600, 1);
        let (digest, id) = w.push_in_pieces("in-place/app", &big).await;
        assert_eq!(w.keys(&layout::blobs_root()).await, [], "nothing copied to the digest's key");
        assert_eq!(w.registry.blob_key(&digest).await.unwrap(), layout::upload_assembly(&id));
        assert_eq!(
            w.keys(&layout::upload_prefix(&id)).await,
            [layout::upload_assembly(&id)],
            "no chunk left"
        );
        assert!(w.read("in-place/app", &digest).await == big);
        assert_eq!(w.meta.upload(id).await.unwrap(), None);

        // Below a part: the session's one chunk is the blob.
        let small = bytes(300, 2);
        let (small_digest, small_id) = w.push_in_pieces("in-place/app", &small).await;
        let at = w.registry.blob_key(&small_digest).await.unwrap();
        assert_eq!(w.keys(&layout::upload_prefix(&small_id)).await, [at]);
        assert!(w.read("in-place/app", &small_digest).await == small);

        // Pushed again elsewhere: linked there, and the new session's object removed.
        let (_, again) = w.push_in_pieces("in-place/other", &big).await;
        assert_eq!(w.keys(&layout::upload_prefix(&again)).await, [], "stored already");
        assert_eq!(w.registry.blob_key(&digest).await.unwrap(), layout::upload_assembly(&id));
        assert!(w.read("in-place/other", &digest).await == big);

        // Mounted, found where it is.
        let mounted = w.registry.mount_blob(&repo("in-place/third"), &digest, None, |_| true).await.unwrap();
        assert_eq!(mounted, Some(big.len() as u64));
        assert!(w.read("in-place/third", &digest).await == big);

        // Written whole at its digest's key (containerd's push, or `POST ?digest=`) while stored
        // where an upload wrote it: linked, and the copy at the key removed.
        let pushed = w.registry.put_blob(&repo("in-place/fourth"), &digest, None, body(&big)).await.unwrap();
        assert_eq!(pushed, big.len() as u64);
        assert_eq!(w.keys(&layout::blobs_root()).await, [], "no needless copy");
        assert!(w.read("in-place/fourth", &digest).await == big);

        // A wrong digest records nothing and leaves nothing.
        let id = w.registry.start_upload(&repo("in-place/app")).await.unwrap().id;
        w.registry.upload_chunk(&repo("in-place/app"), id, None, None, body(&big)).await.unwrap();
        let wrong = Digest::of(Algorithm::Sha256, b"not these bytes");
        let refused =
            w.registry.finish_upload(&repo("in-place/app"), id, &wrong, None, None, body(b"")).await;
        assert!(refused.is_err());
        assert_eq!(w.keys(&layout::upload_prefix(&id)).await, []);
        assert_eq!(w.meta.blob_size(&wrong).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_session_a_close_claimed_is_not_discarded_under_it() {
        let w = world(SqliteMeta::temporary().unwrap());
        let r = repo("in-place/raced");
        let data = bytes(300, 3);
        let digest = Digest::of(Algorithm::Sha256, &data);
        let id = w.registry.start_upload(&r).await.unwrap().id;
        w.registry.upload_chunk(&r, id, None, None, body(&data)).await.unwrap();
        let u = w.meta.upload(id).await.unwrap().unwrap();
        let parts = w.meta.upload_parts(id).await.unwrap();
        let at = own_object(&u, &parts, None).unwrap();
        w.registry.finish_in_place(&r, &u, &parts, &digest, at.clone()).await.unwrap();
        // A discard that read the session before the close ended it (an expiry, a cancel).
        w.registry.discard(&u).await;
        assert_eq!(w.storage.stat(&at).await.unwrap(), Some(300), "the blob's object stays");
        assert!(w.read("in-place/raced", &digest).await == data);
        // And the other way round: a discard first, then the close finds the session gone.
        let id = w.registry.start_upload(&r).await.unwrap().id;
        w.registry.upload_chunk(&r, id, None, None, body(b"other bytes")).await.unwrap();
        let u = w.meta.upload(id).await.unwrap().unwrap();
        let parts = w.meta.upload_parts(id).await.unwrap();
        w.registry.discard(&u).await;
        let other = Digest::of(Algorithm::Sha256, b"other bytes");
        let at = own_object(&u, &parts, None).unwrap();
        let late = w.registry.finish_in_place(&r, &u, &parts, &other, at).await;
        assert!(matches!(late, Err(crate::service::error::ServiceError::UploadUnknown)), "{late:?}");
        assert_eq!(w.meta.blob_size(&other).await.unwrap(), None);
    }
}
