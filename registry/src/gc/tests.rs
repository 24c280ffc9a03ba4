//! Collections over real metadata stores, as tables: what goes and what stays.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::{Algorithm, Digest, Reference, RepoName};
use bytes::Bytes;

use super::{Collector, Options, Report};
use crate::meta::cache::CacheIndex;
use crate::meta::gc::Collect;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::{MetaStore, NewManifest, Stored};
use crate::service::{Limits, Registry, ServiceError};
use crate::storage::memory::MemoryStorage;
use crate::storage::{layout, put_all, Storage};

fn d(name: &str) -> Digest {
    Digest::of(Algorithm::Sha256, name.as_bytes())
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

struct World {
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn Collect>,
    storage: Arc<MemoryStorage>,
    collector: Collector,
}

impl World {
    fn new<M: MetaStore + Collect + CacheIndex>(m: M) -> World {
        let m = Arc::new(m);
        let storage = Arc::new(MemoryStorage::new());
        let registry = Arc::new(Registry::new(storage.clone(), m.clone(), Limits::default()));
        let metrics = Arc::new(super::metrics::GcMetrics::default());
        let collector = Collector::new(registry, m.clone(), vec!["hub".into()], metrics);
        World { meta: m.clone(), store: m, storage, collector }
    }

    async fn blob(&self, r: &str, name: &str) {
        put_all(self.storage.as_ref(), &layout::blob(&d(name)), Bytes::from(name.to_owned())).await.unwrap();
        self.meta.link_blob(&repo(r), &d(name), name.len() as u64, Stored::Written).await.unwrap();
    }

    /// A manifest named `name` (its digest is the name's) needing `blobs` and `children`.
    async fn manifest(
        &self,
        r: &str,
        name: &str,
        blobs: &[&str],
        children: &[&str],
        subject: Option<&str>,
        tag: Option<&str>,
    ) {
        for b in blobs {
            self.blob(r, b).await;
        }
        put_all(self.storage.as_ref(), &layout::blob(&d(name)), Bytes::from(name.to_owned())).await.unwrap();
        self.meta
            .put_manifest(NewManifest {
                repo: repo(r),
                digest: d(name),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: name.len() as u64,
                artifact_type: None,
                subject: subject.map(d),
                annotations: None,
                blobs: blobs.iter().map(|b| d(b)).collect(),
                manifests: children.iter().map(|c| d(c)).collect(),
                tags: tag.map(|t| t.parse().unwrap()).into_iter().collect(),
                verify_references: true,
                stored: Stored::Written,
            })
            .await
            .unwrap();
    }

    async fn has_manifest(&self, r: &str, name: &str) -> bool {
        self.meta.manifest(&repo(r), &Reference::Digest(d(name))).await.unwrap().is_some()
    }

    async fn stored(&self, name: &str) -> bool {
        self.storage.stat(&layout::blob(&d(name))).await.unwrap().is_some()
    }
}

fn names(report: &Report) -> (BTreeSet<Digest>, BTreeSet<Digest>, BTreeSet<Digest>) {
    let of =
        |xs: &mut dyn Iterator<Item = &super::Removed>| xs.map(|x| x.digest.clone()).collect::<BTreeSet<_>>();
    (
        of(&mut report.repositories.iter().flat_map(|r| &r.manifests)),
        of(&mut report.repositories.iter().flat_map(|r| &r.links)),
        of(&mut report.blobs.iter()),
    )
}

async fn collects_what_no_tag_reaches(w: World) {
    let app = "gc/app";
    // A tagged image, and a signature of it (a referrer, untagged).
    w.manifest(app, "image-a", &["cfg-a", "shared"], &[], None, Some("a")).await;
    w.manifest(app, "sig-a", &["sig-blob"], &[], Some("image-a"), None).await;
    // A tagged index keeps its untagged child.
    w.manifest(app, "image-b", &["cfg-b", "layer-b"], &[], None, None).await;
    w.manifest(app, "index-b", &[], &["image-b"], None, Some("multi")).await;
    // An untagged index and its child go, with the SBOM of the index; a tagged referrer stays.
    w.manifest(app, "image-c", &["cfg-c", "shared"], &[], None, None).await;
    w.manifest(app, "index-u", &[], &["image-c"], None, None).await;
    w.manifest(app, "sbom-u", &["sbom-blob"], &[], Some("index-u"), None).await;
    w.manifest(app, "kept-ref", &["ref-blob"], &[], Some("index-u"), Some("keep")).await;
    // An untagged index whose child was deleted goes without error.
    w.manifest(app, "image-w", &["cfg-w"], &[], None, None).await;
    w.manifest(app, "index-w", &[], &["image-w"], None, None).await;
    // A blob uploaded and never used.
    w.blob(app, "stray").await;
    // The pull-through cache's repositories are its eviction's to clean.
    w.manifest("hub/library/alpine", "cached", &["cached-layer"], &[], None, None).await;
    // Deleting a manifest that an index needs: the index keeps an edge to nothing.
    w.meta.delete_manifest(&repo(app), &d("image-w")).await.unwrap_or_else(|e| panic!("{e}"));

    let o = Options { grace: Duration::ZERO, keep_untagged: false, dry_run: true };
    let dry = w.collector.run(&o).await.unwrap();
    assert!(w.has_manifest(app, "index-u").await && w.stored("stray").await, "a dry run removes nothing");
    let real = w.collector.run(&Options { dry_run: false, ..o }).await.unwrap();
    assert_eq!(names(&dry), names(&real), "the dry run foretold the real one");
    assert_eq!(real.conflicts, 0);

    for gone in ["index-u", "image-c", "sbom-u", "index-w"] {
        assert!(!w.has_manifest(app, gone).await, "{gone} is collected");
    }
    for kept in ["image-a", "sig-a", "image-b", "index-b", "kept-ref"] {
        assert!(w.has_manifest(app, kept).await, "{kept} stays");
    }
    assert!(w.has_manifest("hub/library/alpine", "cached").await);
    for gone in ["index-u", "image-c", "sbom-u", "index-w", "image-w", "cfg-c", "sbom-blob", "cfg-w", "stray"]
    {
        assert!(!w.stored(gone).await, "the bytes of {gone} are deleted");
        assert_eq!(w.meta.blob_size(&d(gone)).await.unwrap(), None);
    }
    for kept in ["image-a", "cfg-a", "shared", "sig-blob", "cfg-b", "layer-b", "ref-blob", "cached-layer"] {
        assert!(w.stored(kept).await, "the bytes of {kept} stay");
        assert!(w.meta.blob_size(&d(kept)).await.unwrap().is_some());
    }
    assert_eq!(real.bytes_freed, real.blobs.iter().map(|b| b.size).sum::<u64>());

    // Nothing left to do: a second run removes nothing.
    let again = w.collector.run(&Options { dry_run: false, ..o }).await.unwrap();
    assert_eq!((again.manifests_removed, again.links_removed, again.blobs.len()), (0, 0, 0));
}

async fn keeps_what_is_young_or_untagged_by_choice(w: World) {
    w.manifest("gc/young", "young", &["young-layer"], &[], None, None).await;
    w.blob("gc/young", "young-stray").await;
    let report =
        w.collector.run(&Options { grace: Duration::from_secs(3600), ..Options::default() }).await.unwrap();
    assert_eq!((report.manifests_removed, report.links_removed, report.blobs.len()), (0, 0, 0));
    let report = w
        .collector
        .run(&Options { grace: Duration::ZERO, keep_untagged: true, dry_run: false })
        .await
        .unwrap();
    assert_eq!(report.manifests_removed, 0);
    assert!(w.has_manifest("gc/young", "young").await && w.stored("young-layer").await);
    assert!(!w.stored("young-stray").await, "links nothing needs still go");
}

async fn one_collection_runs_at_a_time(w: World) {
    let now = crate::meta::now_millis();
    assert_eq!(w.store.claim_lease("gc", "replica-b", now, now + 60_000).await.unwrap(), Ok(()));
    match w.collector.run(&Options::default()).await {
        Err(ServiceError::Busy(m)) => assert!(m.contains("replica-b"), "{m}"),
        other => panic!("a second collection ran: {:?}", other.map(|r| r.dry_run)),
    }
    w.store.end_lease("gc", "replica-b").await.unwrap();
    w.collector.run(&Options::default()).await.unwrap();
    // The run gave its lease up; one whose holder stopped renewing it is taken over.
    assert_eq!(w.store.claim_lease("gc", "replica-c", now, now + 1).await.unwrap(), Ok(()));
    w.collector.run(&Options::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_collects_what_no_tag_reaches() {
    collects_what_no_tag_reaches(World::new(SqliteMeta::temporary().unwrap())).await;
    keeps_what_is_young_or_untagged_by_choice(World::new(SqliteMeta::temporary().unwrap())).await;
    one_collection_runs_at_a_time(World::new(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collects_what_no_tag_reaches() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    collects_what_no_tag_reaches(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap())).await;
    let db = TestDatabase::create().await;
    keeps_what_is_young_or_untagged_by_choice(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap()))
        .await;
    let db = TestDatabase::create().await;
    one_collection_runs_at_a_time(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_or_a_push_again_keeps_an_old_candidate_from_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let w = World::new(SqliteMeta::open(&path).unwrap());
    let app = "gc/revived";
    w.blob(app, "headed").await;
    w.blob(app, "ignored").await;
    w.manifest(app, "pushed-again", &[], &[], None, None).await;
    w.manifest(app, "left", &[], &[], None, None).await;
    // Two hours pass.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "UPDATE repository_blobs SET created_at = created_at - 7200;
         UPDATE manifests SET created_at = created_at - 7200;
         UPDATE blobs SET created_at = created_at - 7200;",
    )
    .unwrap();
    // A client asks about one blob (HEAD) and pushes one manifest again, by digest.
    w.meta.touch_link(&repo(app), &d("headed")).await.unwrap();
    w.manifest(app, "pushed-again", &[], &[], None, None).await;

    let o = Options { grace: Duration::from_secs(3600), ..Options::default() };
    let report = w.collector.run(&o).await.unwrap();
    let (manifests, links, _) = names(&report);
    assert_eq!(manifests, BTreeSet::from([d("left")]));
    assert_eq!(links, BTreeSet::from([d("ignored")]));
    assert!(w.has_manifest(app, "pushed-again").await && w.stored("headed").await);
}
