//! A blob's way out ([`crate::meta::sweep`]) against writes of its digest, and blobs recorded
//! where their upload wrote them.

use crate::meta::cache::{CacheIndex, CachedItem, ContentKind};
use crate::meta::{now, now_millis, MetaError, MetaStore, Stored};
use crate::UploadId;
use berth_core::oci::{Reference, RepoName};

use super::fixtures::{digest, manifest, repo};

/// The steps by which a blob leaves (`super::sweep`), and what writes of its digest meet.
pub(super) async fn released_blobs_leave_safely<M: MetaStore + CacheIndex>(m: &M) {
    let r = repo("cache/leaving");
    let d = digest("leaving");
    let item = CachedItem { repo: r.clone(), digest: d.clone(), kind: ContentKind::Blob, size: 5 };
    m.link_blob(&r, &d, 5, Stored::Written).await.unwrap();
    let released_at = now_millis();
    assert!(m.evict(&item).await.unwrap(), "nothing else uses it: released");
    assert_eq!(m.blob_size(&d).await.unwrap(), None, "a released blob answers as absent");
    assert!(!m.purgeable_blobs(released_at - 60_000, 0, 10).await.unwrap().contains(&d), "readers' grace");
    assert!(!m.begin_purge(&d, released_at - 60_000, 0).await.unwrap());

    // Any write of the digest makes it live again, out of the purge's reach.
    m.link_blob(&r, &d, 5, Stored::Written).await.unwrap();
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(5));
    let later = now_millis() + 1;
    assert!(!m.purgeable_blobs(later, 0, 10).await.unwrap().contains(&d));
    assert!(!m.begin_purge(&d, later, 0).await.unwrap());

    // Released again and purging: writes of the digest are told, and nothing is recorded.
    assert!(m.evict(&item).await.unwrap());
    let later = now_millis() + 1;
    assert!(m.purgeable_blobs(later, 0, 10).await.unwrap().contains(&d));
    assert!(m.begin_purge(&d, later, 0).await.unwrap());
    assert!(m.blob_purging(&d).await.unwrap());
    let gone = |e: Result<(), MetaError>| matches!(e, Err(MetaError::BlobGone(g)) if g == d);
    assert!(gone(m.link_blob(&r, &d, 5, Stored::Written).await));
    assert!(gone(m.link_blob(&r, &d, 5, Stored::Assumed).await));
    let mut named = manifest("cache/leaving", "leaving", &[], Some("t"));
    named.stored = Stored::Assumed;
    assert!(gone(m.put_manifest(named).await));
    assert_eq!(m.blob_in_repo(&r, &d).await.unwrap(), None);
    assert_eq!(m.manifest(&r, &Reference::Tag("t".parse().unwrap())).await.unwrap(), None);

    // A purge that stopped is taken over once its lease is over, not before.
    assert!(!m.purgeable_blobs(0, 0, 10).await.unwrap().contains(&d));
    assert!(!m.begin_purge(&d, later, 0).await.unwrap());
    let lease_over = now_millis() + 1;
    assert!(m.purgeable_blobs(0, lease_over, 10).await.unwrap().contains(&d));
    assert!(m.begin_purge(&d, 0, lease_over).await.unwrap());
    m.end_purge(&d).await.unwrap();
    assert!(!m.blob_purging(&d).await.unwrap());
    assert_eq!(m.blob_size(&d).await.unwrap(), None);

    // Once gone, a write cannot tell whether the delete took its object: only an object seen
    // stored after the purge ended is recorded.
    assert!(gone(m.link_blob(&r, &d, 5, Stored::Assumed).await));
    assert!(gone(m.link_blob(&r, &d, 5, Stored::Written).await));
    m.link_blob(&r, &d, 5, Stored::Confirmed).await.unwrap();
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(5));
    assert_eq!(m.blob_in_repo(&r, &d).await.unwrap(), Some(5));

    // A gone blob's row is forgotten in time; then a write records as for a new blob.
    let e = digest("leaving-too");
    m.link_blob(&r, &e, 6, Stored::Written).await.unwrap();
    assert!(m.evict(&CachedItem { digest: e.clone(), size: 6, ..item.clone() }).await.unwrap());
    let later = now_millis() + 1;
    assert!(m.begin_purge(&e, later, 0).await.unwrap());
    m.end_purge(&e).await.unwrap();
    assert_eq!(m.forget_gone(0, 10).await.unwrap(), 0, "kept while young");
    assert!(m.forget_gone(now_millis() + 1, 10).await.unwrap() >= 1);
    m.link_blob(&r, &e, 6, Stored::Written).await.unwrap();
    assert_eq!(m.blob_size(&e).await.unwrap(), Some(6));

    // A blob that another repository links is not released.
    m.link_blob(&repo("cache/other"), &d, 5, Stored::Assumed).await.unwrap();
    assert!(!m.evict(&CachedItem { repo: repo("cache/other"), ..item.clone() }).await.unwrap());
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(5));
}

async fn open_session<M: MetaStore>(m: &M, r: &RepoName) -> UploadId {
    let id = UploadId::random();
    m.create_upload(id, r, now()).await.unwrap();
    id
}

/// A session's own object recorded as its blob (`finish_upload_at`): only while the session
/// stands, at the session's object unless the digest is stored already, and moved only by a
/// write after a purge.
pub(super) async fn blobs_recorded_in_place<M: MetaStore + CacheIndex>(m: &M) {
    let (r, r2) = (repo("placed/app"), repo("placed/other"));
    let d = digest("placed");
    let at = |s: &str| format!("uploads/aa/{s}.assembled");
    let unknown = |e: Result<bool, MetaError>| matches!(e, Err(MetaError::UploadUnknown));
    assert!(m.records_locations(), "a database this code created has no older Berth on it");

    let a = open_session(m, &r).await;
    assert!(m.finish_upload_at(a, &r, &d, 5, &at("a")).await.unwrap(), "the first object is the blob's");
    assert_eq!(m.blob_location(&d).await.unwrap(), Some(at("a")));
    assert_eq!(m.blob_in_repo(&r, &d).await.unwrap(), Some(5));
    assert_eq!(m.upload(a).await.unwrap(), None, "the session ended with it");
    assert!(unknown(m.finish_upload_at(a, &r, &d, 5, &at("a")).await), "a session ends once");

    // Stored already: linked, but the new object is not needed.
    let b = open_session(m, &r2).await;
    assert!(!m.finish_upload_at(b, &r2, &d, 5, &at("b")).await.unwrap());
    assert_eq!(m.blob_location(&d).await.unwrap(), Some(at("a")));
    assert_eq!(m.blob_in_repo(&r2, &d).await.unwrap(), Some(5));

    // A session discarded meanwhile took its objects: nothing is recorded.
    let other = repo("placed/third");
    let c = open_session(m, &other).await;
    assert!(m.delete_upload(c).await.unwrap());
    assert!(unknown(m.finish_upload_at(c, &other, &digest("placed-c"), 5, &at("c")).await));
    assert_eq!(m.blob_size(&digest("placed-c")).await.unwrap(), None);

    // While the digest's former object is being deleted, nothing is recorded and the session
    // stays; once the purge is over the new object is the blob's.
    let item =
        |r: &RepoName| CachedItem { repo: r.clone(), digest: d.clone(), kind: ContentKind::Blob, size: 5 };
    assert!(!m.evict(&item(&r)).await.unwrap());
    assert!(m.evict(&item(&r2)).await.unwrap(), "nothing uses it now");
    assert!(m.begin_purge(&d, now_millis() + 1, 0).await.unwrap());
    let e = open_session(m, &r).await;
    let purging = m.finish_upload_at(e, &r, &d, 5, &at("e")).await;
    assert!(matches!(purging, Err(MetaError::BlobGone(_))), "{purging:?}");
    assert!(m.upload(e).await.unwrap().is_some(), "the session stands");
    assert_eq!(m.blob_location(&d).await.unwrap(), Some(at("a")), "what the purge deletes");
    m.end_purge(&d).await.unwrap();
    assert!(m.finish_upload_at(e, &r, &d, 5, &at("e")).await.unwrap());
    assert_eq!(m.blob_location(&d).await.unwrap(), Some(at("e")));
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(5));

    // A write at the digest's key, or one that revives a released blob, leaves it where it is.
    m.link_blob(&r2, &d, 5, Stored::Written).await.unwrap();
    assert_eq!(m.blob_location(&d).await.unwrap(), Some(at("e")));
    assert!(!m.evict(&item(&r2)).await.unwrap());
    assert!(m.evict(&item(&r)).await.unwrap());
    let f = open_session(m, &r).await;
    assert!(!m.finish_upload_at(f, &r, &d, 5, &at("f")).await.unwrap(), "its object is still stored");
    assert_eq!(
        (m.blob_location(&d).await.unwrap(), m.blob_size(&d).await.unwrap()),
        (Some(at("e")), Some(5))
    );

    // Purged from there, then written at the digest's key: it is there.
    assert!(m.evict(&item(&r)).await.unwrap());
    assert!(m.begin_purge(&d, now_millis() + 1, 0).await.unwrap());
    m.end_purge(&d).await.unwrap();
    m.link_blob(&r, &d, 5, Stored::Confirmed).await.unwrap();
    assert_eq!((m.blob_location(&d).await.unwrap(), m.blob_size(&d).await.unwrap()), (None, Some(5)));

    m.link_blob(&r, &digest("placed-at-key"), 3, Stored::Written).await.unwrap();
    assert_eq!(m.blob_location(&digest("placed-at-key")).await.unwrap(), None);
    assert_eq!(m.blob_location(&digest("placed-nowhere")).await.unwrap(), None);
}
