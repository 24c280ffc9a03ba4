//! The pull-through cache's bookkeeping ([`crate::meta::cache`]): what it keeps and its size,
//! and the per-digest claims and segments by which replicas make one upstream fetch.

use crate::meta::cache::{CacheIndex, CachedItem, CachedPull, ContentKind, FetchClaim, FetchSegments};
use crate::meta::{MetaStore, Stored};
use berth_core::oci::{Digest, Reference, Tag};

use super::fixtures::{described, digest, manifest, repo};

pub(super) async fn cache_bookkeeping<M: MetaStore + CacheIndex>(m: &M) {
    let hub = repo("docker.io/library/alpine");
    let tag: Tag = "3.20".parse().unwrap();
    // A cached manifest may name blobs that have not been pulled yet.
    let (layer, shared) = (digest("c-layer"), digest("c-shared"));
    let mut index =
        manifest("docker.io/library/alpine", "c-index", &[&described(&layer, 1000)], Some("3.20"));
    assert!(m.put_manifest(index.clone()).await.is_err());
    index.verify_references = false;
    m.put_manifest(index).await.unwrap();
    assert_eq!(m.tag_checked_at(&hub, &tag).await.unwrap(), None);
    m.set_tag_checked(&hub, &tag, 100).await.unwrap();
    m.set_tag_checked(&hub, &tag, 200).await.unwrap();
    assert_eq!(m.tag_checked_at(&hub, &tag).await.unwrap(), Some(200));

    m.link_blob(&hub, &layer, 1000, Stored::Written).await.unwrap();
    m.link_blob(&hub, &shared, 10, Stored::Written).await.unwrap();
    m.link_blob(&repo("private/app"), &shared, 10, Stored::Written).await.unwrap();
    let pull =
        |d: &Digest, kind, size, at| CachedPull { repo: hub.clone(), digest: d.clone(), kind, size, at };
    m.record_pulls(vec![
        pull(&digest("c-index"), ContentKind::Manifest, 100, 10),
        pull(&layer, ContentKind::Blob, 1000, 20),
        pull(&shared, ContentKind::Blob, 10, 30),
    ])
    .await
    .unwrap();
    // An older pull never moves the time back.
    m.record_pulls(vec![
        pull(&layer, ContentKind::Blob, 1000, 5),
        pull(&digest("c-index"), ContentKind::Manifest, 100, 40),
    ])
    .await
    .unwrap();
    assert_eq!(m.cached_size("docker.io").await.unwrap(), 1110);
    assert_eq!(m.cached_size("docker").await.unwrap(), 0);
    let order = m.least_recently_pulled("docker.io", 35, 10).await.unwrap();
    assert_eq!(order.iter().map(|i| i.size).collect::<Vec<_>>(), vec![1000, 10]);
    assert_eq!(m.least_recently_pulled("docker.io", 100, 1).await.unwrap().len(), 1);

    // Evicting the only link releases the bytes; a blob another repository holds stays.
    let item = |d: &Digest, kind, size| CachedItem { repo: hub.clone(), digest: d.clone(), kind, size };
    assert!(m.evict(&item(&layer, ContentKind::Blob, 1000)).await.unwrap());
    assert_eq!(m.blob_size(&layer).await.unwrap(), None);
    assert!(!m.evict(&item(&shared, ContentKind::Blob, 10)).await.unwrap());
    assert_eq!(m.blob_in_repo(&repo("private/app"), &shared).await.unwrap(), Some(10));
    assert!(m.evict(&item(&digest("c-index"), ContentKind::Manifest, 100)).await.unwrap());
    assert_eq!(m.manifest(&hub, &Reference::Tag(tag)).await.unwrap(), None);
    assert_eq!(m.cached_size("docker.io").await.unwrap(), 0);
}

pub(super) async fn fetch_segments<M: CacheIndex>(m: &M) {
    let d = digest("segmented");
    assert_eq!(m.follow_fetch(&d).await.unwrap(), None, "no fetch to follow");
    assert_eq!(m.claim_fetch(&d, "a", 1_000, 2_000, false).await.unwrap(), FetchClaim::Mine);
    let state = m.fetch_state(&d).await.unwrap().unwrap();
    assert_eq!((state.segments, state.wanted, state.expires_at), (None, false, 2_000), "before the answer");
    let mut s = FetchSegments { fetch_id: "f1".into(), size: 100, segment: 30, published: 0 };
    assert!(m.publish_fetch(&d, "a", &s).await.unwrap());
    assert!(!m.publish_fetch(&d, "b", &s).await.unwrap(), "only the holder publishes");
    let followed = m.follow_fetch(&d).await.unwrap().unwrap();
    assert_eq!((followed.segments.as_ref(), followed.wanted), (Some(&s), true));
    s.published = 60;
    assert!(m.publish_fetch(&d, "a", &s).await.unwrap());
    // A renewal keeps what was published, and so does the wish of a follower.
    assert_eq!(m.claim_fetch(&d, "a", 1_500, 2_500, false).await.unwrap(), FetchClaim::Mine);
    let state = m.fetch_state(&d).await.unwrap().unwrap();
    assert_eq!((state.segments.map(|s| s.published), state.wanted), (Some(60), true));
    // A take-over starts over: the new holder has published nothing yet.
    assert_eq!(m.claim_fetch(&d, "b", 2_600, 3_500, false).await.unwrap(), FetchClaim::Mine);
    let state = m.fetch_state(&d).await.unwrap().unwrap();
    assert_eq!((state.segments, state.wanted), (None, true));
    assert!(!m.publish_fetch(&d, "a", &s).await.unwrap(), "the old holder is out");
    // A failed fetch publishes nothing more; a stored one leaves nothing to follow.
    m.end_fetch(&d, "b", Some("corrupt\nbad"), 2_700, 5_000).await.unwrap();
    assert!(!m.publish_fetch(&d, "b", &s).await.unwrap());
    assert_eq!(m.fetch_state(&d).await.unwrap().unwrap().failure.as_deref(), Some("corrupt\nbad"));
    assert_eq!(m.claim_fetch(&d, "c", 2_800, 4_000, true).await.unwrap(), FetchClaim::Mine);
    m.end_fetch(&d, "c", None, 2_900, 0).await.unwrap();
    assert_eq!(m.fetch_state(&d).await.unwrap(), None);
}

pub(super) async fn fetch_claims<M: CacheIndex>(m: &M) {
    let (d, other) = (digest("claimed"), digest("claimed-too"));
    assert_eq!(m.claim_fetch(&d, "a", 1_000, 2_000, false).await.unwrap(), FetchClaim::Mine);
    assert_eq!(m.claim_fetch(&d, "b", 1_500, 2_500, false).await.unwrap(), FetchClaim::Elsewhere);
    assert_eq!(
        m.claim_fetch(&other, "b", 1_500, 2_500, false).await.unwrap(),
        FetchClaim::Mine,
        "per digest"
    );
    // The holder renews; a claim its holder stopped renewing is taken over.
    assert_eq!(m.claim_fetch(&d, "a", 1_900, 3_000, false).await.unwrap(), FetchClaim::Mine);
    assert_eq!(m.claim_fetch(&d, "b", 2_500, 3_500, false).await.unwrap(), FetchClaim::Elsewhere);
    assert_eq!(m.claim_fetch(&d, "b", 3_001, 4_000, false).await.unwrap(), FetchClaim::Mine);
    assert_eq!(m.claim_fetch(&d, "a", 3_002, 4_000, false).await.unwrap(), FetchClaim::Elsewhere, "lost");
    // Ending someone else's claim changes nothing.
    m.end_fetch(&d, "a", Some("stale"), 3_002, 9_000).await.unwrap();
    assert_eq!(m.claim_fetch(&d, "c", 3_003, 4_000, false).await.unwrap(), FetchClaim::Elsewhere);
    // A failure answers those who waited (its holder included) until it expires; a new request
    // retries at once, and then anyone once it expired.
    m.end_fetch(&d, "b", Some("not_found"), 3_003, 5_000).await.unwrap();
    assert_eq!(
        m.claim_fetch(&d, "c", 4_000, 6_000, false).await.unwrap(),
        FetchClaim::Failed("not_found".into())
    );
    assert_eq!(
        m.claim_fetch(&d, "b", 4_000, 6_000, false).await.unwrap(),
        FetchClaim::Failed("not_found".into())
    );
    assert_eq!(m.claim_fetch(&d, "a", 4_001, 6_000, true).await.unwrap(), FetchClaim::Mine);
    assert_eq!(
        m.claim_fetch(&d, "c", 4_002, 6_000, true).await.unwrap(),
        FetchClaim::Elsewhere,
        "running again"
    );
    m.end_fetch(&d, "a", Some("timeout\nslow"), 4_003, 5_000).await.unwrap();
    assert_eq!(m.claim_fetch(&d, "c", 5_001, 6_000, false).await.unwrap(), FetchClaim::Mine);
    // A stored blob's claim is forgotten: the next miss (after an eviction) fetches again.
    m.end_fetch(&d, "c", None, 5_002, 0).await.unwrap();
    assert_eq!(m.claim_fetch(&d, "a", 5_002, 7_000, false).await.unwrap(), FetchClaim::Mine);
    m.end_fetch(&d, "a", None, 5_002, 0).await.unwrap();
    m.end_fetch(&other, "b", None, 5_002, 0).await.unwrap();
    // A claim whose holder died is swept away once it expired an hour before: here, no
    // renewal or take-over happened, yet after the sweep anyone may claim it even "earlier".
    let dead = digest("claimed-dead");
    assert_eq!(m.claim_fetch(&dead, "gone", 6_000, 7_000, false).await.unwrap(), FetchClaim::Mine);
    m.end_fetch(&other, "b", None, 7_001 + 3_600_000, 0).await.unwrap();
    assert_eq!(m.claim_fetch(&dead, "z", 6_500, 7_500, false).await.unwrap(), FetchClaim::Mine, "swept");
    m.end_fetch(&dead, "z", None, 7_002 + 3_600_000, 0).await.unwrap();
}
