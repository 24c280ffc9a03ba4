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
use crate::meta::usage::Usage;
use crate::meta::{MetaStore, NewManifest, Page, Stored};
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
                children_optional: false,
                stored: Stored::Written,
                events: Vec::new(),
                condition: None,
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

async fn runs_are_logged_with_their_progress_and_report(w: World) {
    w.manifest("gc/a", "garbage-a", &["layer-a"], &[], None, None).await;
    w.manifest("gc/b", "kept-b", &[], &[], None, Some("b")).await;
    let report = w.collector.run(&Options { grace: Duration::ZERO, ..Options::default() }).await.unwrap();
    let runs = w.collector.run_views(10, None).await.unwrap();
    assert_eq!(runs.len(), 1);
    let (run, listed) = (w.collector.run_view(&runs[0].id).await.unwrap().unwrap(), &runs[0]);
    assert_eq!((run.state, run.dry_run, run.grace_seconds), ("succeeded", false, 0));
    assert_eq!(run.report, Some(serde_json::to_value(&report).unwrap()));
    assert_eq!(listed.report, None, "a list leaves reports out");
    let p = &run.progress;
    assert_eq!((p["phase"].as_str(), p["repositoriesDone"].as_u64()), (Some("done"), Some(2)));
    assert_eq!(p["repositoriesTotal"], 2);
    assert_eq!((p["manifestsRemoved"].as_u64(), p["blobsReleased"].as_u64()), (Some(1), Some(2)));
    assert!(run.ended_at.is_some() && run.error.is_none());
}

/// A cancel asked on any replica reaches the run through the log, and the run stops there.
async fn a_cancel_reaches_the_run_and_stops_it(w: World) {
    use super::progress::Control;
    use super::runs::{host, tick};
    use crate::meta::runs::RunRecord;
    use crate::meta::testsuite::run_record;
    w.manifest("gc/a", "garbage-a", &["layer-a"], &[], None, None).await;
    let record = RunRecord {
        grace_seconds: 0,
        keep_untagged: false,
        verify: false,
        resumed_from: None,
        ..run_record("cancelled", &host(), crate::meta::now_millis())
    };
    w.store.insert_run(&record, 10).await.unwrap();
    let asked = w.collector.cancel("cancelled").await.unwrap().unwrap();
    assert!(asked.cancel_requested && asked.state == "running");
    let control = Arc::new(Control::default());
    let ticker = tokio::spawn(tick(w.store.clone(), "cancelled".into(), "holder".into(), control.clone()));
    for _ in 0..100 {
        if control.cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ticker.abort();
    assert!(control.cancelled(), "the ticker read the cancel");
    let o = Options { grace: Duration::ZERO, ..Options::default() };
    let report = w.collector.execute("cancelled".into(), "holder".into(), o, control).await.unwrap();
    assert!(report.cancelled && report.manifests_removed == 0 && report.blobs.is_empty());
    assert!(w.has_manifest("gc/a", "garbage-a").await, "it stopped before it removed anything");
    let run = w.collector.run_view("cancelled").await.unwrap().unwrap();
    assert_eq!(run.state, "cancelled");
    assert_eq!(run.report.map(|r| r["cancelled"].clone()), Some(serde_json::Value::Bool(true)));
}

/// A run cut off by a restart is interrupted; the next real run with its options goes on after
/// the last repository it finished, and the one after that walks everything again.
async fn a_run_cut_off_is_resumed_where_it_stopped(w: World) {
    use crate::meta::runs::RunRecord;
    use crate::meta::testsuite::run_record;
    for r in ["a", "b", "c"] {
        w.manifest(&format!("gc/{r}"), &format!("garbage-{r}"), &[], &[], None, None).await;
    }
    let cut = RunRecord {
        grace_seconds: 0,
        keep_untagged: false,
        verify: false,
        resumed_from: None,
        progress: r#"{"phase":"repositories","cursor":"gc/b","repositoriesDone":2}"#.into(),
        ..run_record("cut", &super::runs::host(), crate::meta::now_millis())
    };
    w.store.insert_run(&cut, 10).await.unwrap();
    w.collector.recover().await;
    assert_eq!(w.collector.run_view("cut").await.unwrap().unwrap().state, "interrupted");
    let dry = Options { grace: Duration::ZERO, dry_run: true, ..Options::default() };
    assert_eq!(w.collector.run(&dry).await.unwrap().manifests_removed, 3, "a dry run resumes nothing");
    // The dry run is the last one now: another is cut off after it.
    let started_at = crate::meta::now_millis();
    w.store.insert_run(&RunRecord { id: "cut-2".into(), started_at, ..cut.clone() }, 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    w.store.interrupt_runs("", crate::meta::now_millis()).await.unwrap();

    let o = Options { grace: Duration::ZERO, ..Options::default() };
    let report = w.collector.run(&o).await.unwrap();
    assert_eq!(names(&report).0, BTreeSet::from([d("garbage-c")]), "only after the cursor");
    let run = &w.collector.run_views(1, None).await.unwrap()[0];
    assert_eq!(run.resumed_from.as_deref(), Some("cut-2"));
    assert_eq!(
        (run.progress["repositoriesDone"].as_u64(), run.progress["repositoriesTotal"].as_u64()),
        (Some(3), Some(3))
    );
    let report = w.collector.run(&o).await.unwrap();
    assert_eq!(names(&report).0, BTreeSet::from([d("garbage-a"), d("garbage-b")]));
    assert_eq!(w.collector.run_views(1, None).await.unwrap()[0].resumed_from, None);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_collects_what_no_tag_reaches() {
    collects_what_no_tag_reaches(World::new(SqliteMeta::temporary().unwrap())).await;
    keeps_what_is_young_or_untagged_by_choice(World::new(SqliteMeta::temporary().unwrap())).await;
    one_collection_runs_at_a_time(World::new(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_are_logged_cancelled_and_resumed() {
    runs_are_logged_with_their_progress_and_report(World::new(SqliteMeta::temporary().unwrap())).await;
    a_cancel_reaches_the_run_and_stops_it(World::new(SqliteMeta::temporary().unwrap())).await;
    a_run_cut_off_is_resumed_where_it_stopped(World::new(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runs_are_logged_cancelled_and_resumed() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    runs_are_logged_with_their_progress_and_report(World::new(
        PostgresMeta::connect(&db.url, 4).await.unwrap(),
    ))
    .await;
    let db = TestDatabase::create().await;
    a_cancel_reaches_the_run_and_stops_it(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap())).await;
    let db = TestDatabase::create().await;
    a_run_cut_off_is_resumed_where_it_stopped(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap()))
        .await;
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
