//! Collections over real metadata stores, as tables: what goes and what stays; runs in
//! [`runs`], queued reviews and scrubs in [`review`].

mod review;
mod runs;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::{Descriptor, Digest, Reference};
use bytes::Bytes;

use super::{Collector, Options, Report};
use crate::meta::cache::CacheIndex;
use crate::meta::gc::Collect;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::usage::Usage;
use crate::meta::{MetaStore, NewManifest, Page, Stored};
use crate::service::{Limits, Registry, ServiceError};
use crate::storage::memory::MemoryStorage;
use crate::storage::{layout, put_all, Storage};

use crate::meta::testsuite::{described, digest as d, repo};

struct World {
    meta: Arc<dyn MetaStore>,
    usage: Arc<dyn Usage>,
    store: Arc<dyn Collect>,
    storage: Arc<MemoryStorage>,
    collector: Arc<Collector>,
}

impl World {
    fn new<M: MetaStore + Collect + CacheIndex + Usage>(m: M) -> World {
        World::with_retention(m, "")
    }

    /// A world whose collections apply the retention `policies` (YAML of `retention:`).
    fn with_retention<M: MetaStore + Collect + CacheIndex + Usage>(m: M, policies: &str) -> World {
        let m = Arc::new(m);
        let storage = Arc::new(MemoryStorage::new());
        let registry = Arc::new(Registry::new(storage.clone(), m.clone(), Limits::default()));
        let metrics = Arc::new(super::metrics::GcMetrics::default());
        let config: berth_core::config::RetentionConfig = serde_yaml::from_str(policies).unwrap_or_default();
        let policies = super::retention::Policies::new(&config).unwrap();
        let collector = Arc::new(
            Collector::new(registry, m.clone(), vec!["hub".into()], metrics).with_retention(policies),
        );
        World { meta: m.clone(), usage: m.clone(), store: m, storage, collector }
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
        let needs: Vec<Descriptor> = blobs.iter().map(|b| described(&d(b), b.len() as u64)).collect();
        let m = NewManifest {
            size: name.len() as u64,
            subject: subject.map(d),
            manifests: children.iter().map(|c| described(&d(c), c.len() as u64)).collect(),
            ..crate::meta::testsuite::manifest(r, name, &needs.iter().collect::<Vec<_>>(), tag)
        };
        self.meta.put_manifest(m).await.unwrap();
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
    w.meta.delete_manifest(&repo(app), &d("image-w"), None).await.unwrap_or_else(|e| panic!("{e}"));

    let o = Options { grace: Duration::ZERO, dry_run: true, ..Options::default() };
    let dry = w.collector.run(&o).await.unwrap();
    assert!(w.has_manifest(app, "index-u").await && w.stored("stray").await, "a dry run removes nothing");
    // What a pull asks first, answered (and kept in memory) before the collection.
    for b in ["stray", "cfg-c"] {
        assert!(w.meta.blob_in_repo(&repo(app), &d(b)).await.unwrap().is_some(), "{b} is in {app}");
    }
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
    for b in ["stray", "cfg-c", "cfg-w", "sbom-blob"] {
        assert_eq!(w.meta.blob_in_repo(&repo(app), &d(b)).await.unwrap(), None, "{b} left {app}");
    }
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
    let (young, stray_digest) = (repo("gc/young"), d("young-stray"));
    let stray = || w.meta.blob_in_repo(&young, &stray_digest);
    assert!(stray().await.unwrap().is_some(), "asked (and kept in memory) before the collection");
    let report = w
        .collector
        .run(&Options { grace: Duration::ZERO, keep_untagged: true, ..Options::default() })
        .await
        .unwrap();
    assert_eq!(report.manifests_removed, 0);
    assert!(w.has_manifest("gc/young", "young").await && w.stored("young-layer").await);
    assert!(!w.stored("young-stray").await, "links nothing needs still go");
    assert_eq!(stray().await.unwrap(), None, "a collected link is not answered from memory");
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

const RETENTION: &str = r#"policies:
  - repositories: ["ret/keep-refs"]
    referrers: keep
    tags: [{match: {glob: "*"}, keep: {most_recently_pushed: 0}}]
  - repositories: ["ret/young-untagged"]
    untagged_for: 1d
    tags: [{match: {glob: "*"}, keep: {most_recently_pushed: 0}}]
  - repositories: ["ret/report-only"]
    dry_run: true
    tags: [{match: {glob: "*"}, keep: {most_recently_pushed: 0}}]
  - repositories: ["ret/**"]
    protect: ["v4"]
    tags: [{match: {glob: "v*"}, keep: {most_recently_pulled: 2}}]
"#;

/// Retention removes tags by its rules (pull times recorded through the store), then the
/// collection takes what they alone kept; a dry run reports exactly what the real run does.
async fn retention_removes_tags_then_what_they_kept(w: World) {
    let app = "ret/app";
    for (i, name) in ["m1", "m2", "m3", "m4", "m5"].iter().enumerate() {
        let tag = format!("v{}", i + 1);
        w.manifest(app, name, &[&format!("layer-{name}")], &[], None, Some(&tag)).await;
    }
    w.manifest(app, "m5", &["layer-m5"], &[], None, Some("latest")).await;
    w.manifest(app, "sig-m1", &["sig-blob"], &[], Some("m1"), None).await;
    // Pulls: v3 a day ago, v1 and v2 long ago, v5 two days ago; v4 never (counts as pulled
    // when pushed, now) but it is protected anyway.
    let now = crate::meta::now();
    let pulls = [("m1", 50), ("m2", 40), ("m3", 1), ("m5", 2)]
        .map(|(m, days)| (repo(app), d(m), now - days * 86_400))
        .to_vec();
    w.meta.record_pull_times(pulls).await.unwrap();
    w.meta.record_pull_times(vec![(repo(app), d("m1"), now - 90 * 86_400)]).await.unwrap();
    // referrers: keep — the signature outlives its subject.
    w.manifest("ret/keep-refs", "r-image", &["r-layer"], &[], None, Some("t")).await;
    w.manifest("ret/keep-refs", "r-sig", &["r-sig-blob"], &[], Some("r-image"), None).await;
    // untagged_for: 1d — untagged, the manifest stays a day.
    w.manifest("ret/young-untagged", "y-image", &["y-layer"], &[], None, Some("t")).await;
    // dry_run: reported, kept.
    w.manifest("ret/report-only", "p-image", &["p-layer"], &[], None, Some("t")).await;

    let o = Options { grace: Duration::ZERO, dry_run: true, ..Options::default() };
    let dry = w.collector.run(&o).await.unwrap();
    let real = w.collector.run(&Options { dry_run: false, ..o }).await.unwrap();
    let tags = |r: &Report| -> BTreeSet<(String, String, bool)> {
        r.repositories
            .iter()
            .flat_map(|x| x.tags.iter().map(|t| (x.repository.clone(), t.tag.clone(), t.policy_dry_run)))
            .collect()
    };
    assert_eq!(tags(&dry), tags(&real), "the dry run foretold the real one");
    assert_eq!(names(&dry), names(&real));
    let want: BTreeSet<(String, String, bool)> = [
        ("ret/app", "v1", false),
        ("ret/app", "v2", false),
        ("ret/app", "v5", false),
        ("ret/keep-refs", "t", false),
        ("ret/report-only", "t", true),
        ("ret/young-untagged", "t", false),
    ]
    .map(|(r, t, dry)| (r.to_owned(), t.to_owned(), dry))
    .into();
    assert_eq!(tags(&real), want);
    assert_eq!(real.tags_removed, 5, "a policy's dry run removes nothing");
    for gone in ["m1", "m2", "sig-m1"] {
        assert!(!w.has_manifest(app, gone).await, "{gone} goes with its tag (or subject)");
    }
    for kept in ["m3", "m4", "m5"] {
        assert!(w.has_manifest(app, kept).await, "{kept} stays");
    }
    let tag_of = |r: &str, t: &str| {
        let meta = w.meta.clone();
        let (r, t) = (repo(r), Reference::Tag(t.parse().unwrap()));
        async move { meta.manifest(&r, &t).await.unwrap().is_some() }
    };
    assert!(tag_of(app, "latest").await && tag_of(app, "v4").await && !tag_of(app, "v5").await);
    assert!(!w.stored("layer-m1").await && w.stored("layer-m5").await);
    assert!(
        !w.has_manifest("ret/keep-refs", "r-image").await && w.has_manifest("ret/keep-refs", "r-sig").await
    );
    assert!(w.has_manifest("ret/young-untagged", "y-image").await, "young, untagged, kept a day");
    assert!(tag_of("ret/report-only", "t").await, "a dry-run policy only reports");

    // Usage: what stays, per repository (a page of two, by name) and in all.
    let page = w.usage.repo_usage(&Page { limit: 1, last: None }).await.unwrap();
    assert_eq!(page.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["ret/app", "ret/keep-refs"]);
    let app_usage = &page[0];
    assert_eq!((app_usage.tags, app_usage.manifests), (3, 3), "v3, v4, latest over m3, m4, m5");
    let linked: u64 =
        ["m3", "m4", "m5", "layer-m3", "layer-m4", "layer-m5"].iter().map(|n| n.len() as u64).sum();
    assert_eq!(app_usage.bytes, linked, "its manifests and the blobs linked to it");
    let total = w.usage.stored_total().await.unwrap();
    assert!(total.blobs > 0 && total.bytes >= linked, "{total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retention_removes_tags_then_what_they_kept() {
    retention_removes_tags_then_what_they_kept(World::with_retention(
        SqliteMeta::temporary().unwrap(),
        RETENTION,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention_removes_tags_then_what_they_kept() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    let m = PostgresMeta::connect(&db.url, 4).await.unwrap();
    retention_removes_tags_then_what_they_kept(World::with_retention(m, RETENTION)).await;
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
