//! Collections over blobs stored where their uploads wrote them (on object stores, a blob
//! pushed in pieces: `service::in_place`), on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::{Algorithm, Digest};
use bytes::Bytes;

use super::{metrics::GcMetrics, Collector, Options};
use crate::meta::gc::Collect;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::{MetaStore, NewManifest, Stored};
use crate::service::in_place::testing::{bytes, repo, world, World, PART};
use crate::storage::{layout, put_all, Storage};

/// What a collection does with blobs stored where their uploads wrote them: deletes the
/// object a released blob's row names, verifies the live ones where they are, and leaves
/// their objects under `uploads/` to them however old.
async fn collected_where_they_are<M: MetaStore + Collect>(w: World<M>) {
    let (used, dropped) = (bytes(2 * PART as usize + 10, 4), bytes(200, 5));
    let (used_digest, used_id) = w.push_in_pieces("gc/app", &used).await;
    let (dropped_digest, _) = w.push_in_pieces("gc/app", &dropped).await;
    let (used_at, dropped_at) = (
        w.registry.blob_key(&used_digest).await.unwrap(),
        w.registry.blob_key(&dropped_digest).await.unwrap(),
    );
    // A tagged manifest needs the first; nothing needs the second.
    let manifest = Bytes::from_static(b"{\"manifest\": 1}");
    let manifest_digest = Digest::of(Algorithm::Sha256, &manifest);
    put_all(w.storage.as_ref(), &layout::blob(&manifest_digest), manifest.clone()).await.unwrap();
    w.meta
        .put_manifest(NewManifest {
            repo: repo("gc/app"),
            digest: manifest_digest,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: manifest.len() as u64,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: vec![berth_core::oci::Descriptor { digest: used_digest.clone(), size: used.len() as u64 }],
            manifests: vec![],
            tags: vec!["v1".parse().unwrap()],
            verify_references: true,
            children_optional: false,
            stored: Stored::Written,
            events: Vec::new(),
            condition: None,
        })
        .await
        .unwrap();
    // Both sessions ended two days ago: their objects look like what a scrub removes.
    w.storage.age(&used_at, 2 * 24 * 3600);
    w.storage.age(&dropped_at, 2 * 24 * 3600);

    let collector =
        Arc::new(Collector::new(w.registry.clone(), w.meta.clone(), vec![], Arc::new(GcMetrics::default())));
    let o = Options { grace: Duration::ZERO, scrub: true, verify: true, ..Options::default() };
    let report = collector.run(&o).await.unwrap();
    assert_eq!(report.blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(), [dropped_digest]);
    let scrub = report.scrub.unwrap();
    assert_eq!((scrub.upload_objects, scrub.corrupt.len()), (0, 0), "{scrub:?}");
    assert_eq!(w.storage.stat(&dropped_at).await.unwrap(), None, "deleted where it was");
    assert_eq!(w.keys(&layout::upload_prefix(&used_id)).await, [used_at]);
    assert!(w.read("gc/app", &used_digest).await == used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_collects_blobs_where_they_are() {
    collected_where_they_are(world(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collects_blobs_where_they_are() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    collected_where_they_are(world(PostgresMeta::connect(&db.url, 4).await.unwrap())).await;
}
