//! Collections over the review queue (only what changed), and scrubs.

use super::*;

/// A scrub releases what storage holds and no metadata knows (only once a day old), removes the
/// objects of upload sessions gone, and reports bytes that do not match their digest, evicting
/// what the pull-through cache holds of them; a dry run reports the same and changes nothing.
async fn a_scrub_finds_orphans_stale_uploads_and_corrupt_bytes(w: World) {
    use crate::meta::cache::{CachedPull, ContentKind};
    use crate::UploadId;
    const DAYS_2: i64 = 2 * 24 * 3600;
    w.manifest("gc/app", "kept", &["good", "bad"], &[], None, Some("v1")).await;
    let put = |key: crate::storage::Key, bytes: &'static str| {
        let storage = w.storage.clone();
        async move { put_all(storage.as_ref(), &key, Bytes::from(bytes)).await.unwrap() }
    };
    // Stored, no metadata: one two days old, one just written (an upload in flight).
    put(layout::blob(&d("orphan-old")), "orphan-old").await;
    w.storage.age(&layout::blob(&d("orphan-old")), DAYS_2);
    put(layout::blob(&d("orphan-young")), "orphan-young").await;
    // The chunks of a session gone two days ago, and of a session that still is.
    let (gone, open) = (UploadId::random(), UploadId::random());
    put(layout::upload_part(&gone, 0, "aa"), "stale chunk").await;
    w.storage.age(&layout::upload_part(&gone, 0, "aa"), DAYS_2);
    w.meta.create_upload(open, &repo("gc/app"), crate::meta::now()).await.unwrap();
    put(layout::upload_part(&open, 0, "bb"), "open chunk").await;
    w.storage.age(&layout::upload_part(&open, 0, "bb"), DAYS_2);
    // Bytes changed underneath: a pushed blob, and one the pull-through cache holds.
    put(layout::blob(&d("bad")), "tampered").await;
    w.blob("hub/library/x", "cached-bad").await;
    let pull = CachedPull {
        repo: repo("hub/library/x"),
        digest: d("cached-bad"),
        kind: ContentKind::Blob,
        size: 10,
        at: crate::meta::now_millis(),
    };
    w.store.record_pulls(vec![pull]).await.unwrap();
    put(layout::blob(&d("cached-bad")), "cached-tampered").await;

    let o = Options { grace: Duration::ZERO, dry_run: true, verify: true, scrub: true, ..Options::default() };
    let dry = w.collector.run(&o).await.unwrap().scrub.unwrap();
    let real = w.collector.run(&Options { dry_run: false, ..o }).await.unwrap().scrub.unwrap();
    for s in [&dry, &real] {
        assert_eq!(s.orphans.iter().map(|o| o.digest.clone()).collect::<Vec<_>>(), [d("orphan-old")]);
        assert_eq!((s.upload_objects, s.upload_bytes), (1, 11));
        let corrupt: Vec<_> = s.corrupt.iter().map(|c| (c.digest.clone(), c.cached)).collect();
        let mut expected = vec![(d("bad"), false), (d("cached-bad"), true)];
        expected.sort();
        assert_eq!(corrupt, expected);
        assert!(s
            .corrupt
            .iter()
            .all(|c| c.problem.contains("bytes stored") || c.problem.contains("hash to")));
    }
    assert!(dry.objects >= 6 && dry.verified >= 4, "{dry:?}");
    // What the real run did: the old orphan and the stale chunks are gone; the rest stays.
    assert!(!w.stored("orphan-old").await && w.stored("orphan-young").await);
    let left = w.storage.list(&layout::uploads_root()).await.unwrap();
    assert_eq!(left.iter().map(|l| l.key.clone()).collect::<Vec<_>>(), [layout::upload_part(&open, 0, "bb")]);
    assert!(
        w.stored("bad").await && w.has_manifest("gc/app", "kept").await,
        "pushed content is only reported"
    );
    assert!(w.store.cached_items(&d("cached-bad")).await.unwrap().is_empty(), "evicted from the cache");
    assert!(!w.stored("cached-bad").await, "released, then purged: the next pull fetches it again");
}

/// A collection over the review queue looks only at repositories noted as changed, takes each off
/// the queue once everything it changed is in view, and leaves the rest to a full collection.
async fn queued_runs_look_only_at_what_changed(w: World) {
    let now = crate::meta::now();
    for r in ["a", "b", "c"] {
        w.manifest(&format!("gc/{r}"), &format!("garbage-{r}"), &[&format!("layer-{r}")], &[], None, None)
            .await;
    }
    // A blob a client's delete left unused in a queued repository: not the review's to release.
    w.blob("gc/b", "deleted-by-digest").await;
    w.meta.unlink_blob(&repo("gc/b"), &d("deleted-by-digest")).await.unwrap();
    // gc/b changed a while ago; gc/c changed again just now, after the run's cutoff.
    w.meta
        .queue_reviews(vec![(repo("gc/b"), now - 10, now - 10), (repo("gc/c"), now - 10, now + 100)])
        .await
        .unwrap();
    assert_eq!(w.store.queue_depth(now).await.unwrap(), (2, 2));
    let o = Options { grace: Duration::ZERO, queued: true, ..Options::default() };
    let report = w.collector.run(&o).await.unwrap();
    let (manifests, _, blobs) = names(&report);
    assert_eq!(manifests, BTreeSet::from([d("garbage-b"), d("garbage-c")]), "only the queued");
    let dropped = ["garbage-b", "garbage-c", "layer-b", "layer-c"].map(d);
    assert_eq!(blobs, BTreeSet::from(dropped), "only what its removals left unused");
    assert!(w.has_manifest("gc/a", "garbage-a").await);
    // gc/b is off the queue; gc/c waits from its last change.
    assert_eq!(w.store.queued(now + 1000, None, 10).await.unwrap(), ["gc/c"]);
    assert_eq!(w.store.queue_depth(now + 50).await.unwrap(), (1, 0));
    let view = &w.collector.run_views(1, Some(true)).await.unwrap()[0];
    assert!(view.queued && view.progress["repositoriesTotal"] == 2, "{view:?}");
    // A full collection looks at everything, releases whatever nothing uses, and takes what it
    // looked at off the queue.
    let full = w.collector.run(&Options { grace: Duration::ZERO, ..Options::default() }).await.unwrap();
    let (manifests, _, blobs) = names(&full);
    assert_eq!(manifests, BTreeSet::from([d("garbage-a")]));
    assert!(blobs.contains(&d("deleted-by-digest")), "{blobs:?}");
    assert_eq!(w.store.queued(now + 1000, None, 10).await.unwrap(), ["gc/c"], "changed after its cutoff");
    w.meta.queue_reviews(vec![(repo("gc/a"), now - 5, now - 5)]).await.unwrap();
    w.collector.run(&Options { grace: Duration::from_secs(3), ..Options::default() }).await.unwrap();
    assert_eq!(w.store.queued(now + 1000, None, 10).await.unwrap(), ["gc/c"], "one statement for all");
    assert_eq!(w.store.queue_depth(now + 1000).await.unwrap(), (1, 1));
    assert_eq!(w.collector.run_views(10, Some(false)).await.unwrap().len(), 2);

    // What the service notes: a delete through the registry queues its repository.
    w.manifest("gc/d", "kept-d", &[], &[], None, Some("v1")).await;
    let deleted = crate::meta::now();
    w.collector
        .registry
        .delete_manifest(
            &repo("gc/d"),
            &Reference::Tag("v1".parse().unwrap()),
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    w.collector.registry.flush_behind().await.unwrap();
    assert_eq!(w.store.queued(deleted + 2, None, 10).await.unwrap(), ["gc/d"]);

    // So does a blob pushed through an upload session, in docker's flow and in containerd's.
    let registry = &w.collector.registry;
    let body = |b: &'static [u8]| {
        futures_util::StreamExt::boxed(futures_util::stream::iter([Ok(Bytes::from_static(b))]))
    };
    let (chunked, whole) = (repo("gc/e"), repo("gc/f"));
    let id = registry.start_upload(&chunked).await.unwrap().id;
    registry.upload_chunk(&chunked, id, None, None, body(b"pushed")).await.unwrap();
    registry.finish_upload(&chunked, id, &d("pushed"), None, None, body(b"")).await.unwrap();
    let id = registry.start_upload(&whole).await.unwrap().id;
    registry.finish_upload(&whole, id, &d("pushed whole"), None, None, body(b"pushed whole")).await.unwrap();
    let pushed = crate::meta::now();
    registry.flush_behind().await.unwrap();
    let queued = w.store.queued(pushed + 2, None, 10).await.unwrap();
    assert!(queued.contains(&"gc/e".to_owned()) && queued.contains(&"gc/f".to_owned()), "{queued:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reviews_the_queue() {
    queued_runs_look_only_at_what_changed(World::new(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reviews_the_queue() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    queued_runs_look_only_at_what_changed(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_scrubs() {
    a_scrub_finds_orphans_stale_uploads_and_corrupt_bytes(World::new(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_scrubs() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    a_scrub_finds_orphans_stale_uploads_and_corrupt_bytes(World::new(
        PostgresMeta::connect(&db.url, 4).await.unwrap(),
    ))
    .await;
}
