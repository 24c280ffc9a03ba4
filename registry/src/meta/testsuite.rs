//! The metadata conformance suite: every `MetaStore` (with its `CacheIndex`) runs all of it.

use super::cache::{CacheIndex, CachedItem, CachedPull, ContentKind, FetchClaim, FetchSegments};
use super::events::{Backlog, EventQuery, NewEvent, Settled};
use super::multiparts::MultipartLog;
use super::outbox::EventLog;
use super::runs::{RunEnd, RunLog, RunRecord, RunState};
use super::{Appended, MetaError, MetaStore, NewManifest, Page, Stored, UploadPart};
use crate::UploadId;
use berth_core::config::notifications::EventKind;
use berth_core::oci::{Digest, Reference, RepoName, Tag};

mod conditional;
mod fixtures;

pub(crate) use fixtures::{digest, manifest, repo};

pub(crate) async fn run<M: MetaStore + CacheIndex + MultipartLog + RunLog + EventLog>(m: &M) {
    blobs_are_per_repository(m).await;
    manifests_check_references(m).await;
    tags_and_pagination(m).await;
    referrers_by_subject(m).await;
    deletes(m).await;
    conditional::conditional_writes(m).await;
    conditional::conditional_writes_race(m).await;
    upload_sessions(m).await;
    cache_bookkeeping(m).await;
    fetch_claims(m).await;
    fetch_segments(m).await;
    released_blobs_leave_safely(m).await;
    blobs_recorded_in_place(m).await;
    multipart_leases(m).await;
    run_log(m).await;
    events_commit_with_their_change(m).await;
    audit_entries_keep_their_tally(m).await;
    deliveries_are_claimed_and_settled(m).await;
}

fn event(kind: EventKind, r: &str, actor: &str, at: i64, endpoints: &[&str]) -> NewEvent {
    let origin = crate::notify::Origin {
        actor: actor.into(),
        address: "192.0.2.1".into(),
        request_id: format!("req-{at}"),
    };
    NewEvent {
        id: format!("{r}-{actor}-{at}-{}", kind.as_str()),
        at,
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        ..crate::notify::event(kind, r, &origin)
    }
}

fn listing(repository: Option<&str>, actor: Option<&str>, before: Option<i64>) -> EventQuery {
    EventQuery {
        repository: repository.map(str::to_owned),
        actor: actor.map(str::to_owned),
        before,
        limit: 100,
    }
}

async fn events_commit_with_their_change<M: MetaStore + EventLog>(m: &M) {
    let layer = digest("ev-layer");
    m.link_blob(&repo("ev/app"), &layer, 5, Stored::Written).await.unwrap();
    let pushed = NewEvent {
        digest: Some(digest("ev-image")),
        tag: Some("v1".into()),
        size: Some(100),
        ..event(EventKind::Push, "ev/app", "ci", 1_000, &["ev-a", "ev-b"])
    };
    let attached = event(EventKind::Referrer, "ev/app", "ci", 1_000, &["ev-a"]);
    let image = NewManifest {
        events: vec![pushed.clone(), attached],
        ..manifest("ev/app", "ev-image", &[&layer], Some("v1"))
    };
    m.put_manifest(image).await.unwrap();
    // A push refused (its layer is not there) records no event.
    let refused = NewManifest {
        events: vec![event(EventKind::Push, "ev/app", "ci", 1_001, &["ev-a"])],
        ..manifest("ev/app", "ev-refused", &[&digest("ev-missing")], None)
    };
    assert!(m.put_manifest(refused).await.is_err());
    let all = m.events(&listing(Some("ev/app"), None, None)).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let push = all.iter().find(|e| e.kind == EventKind::Push).unwrap();
    assert_eq!(
        (push.id.as_str(), push.tag.as_deref(), push.size),
        (pushed.id.as_str(), Some("v1"), Some(100))
    );
    assert_eq!(push.digest.as_deref(), Some(digest("ev-image").as_str()));
    assert_eq!((push.actor.as_str(), push.address.as_str(), push.at), ("ci", "192.0.2.1", 1_000));

    // A tag's deletion names the digest the tag named; deleting nothing records nothing.
    let tag: Tag = "v1".parse().unwrap();
    let untag =
        || NewEvent { tag: Some("v1".into()), ..event(EventKind::TagDelete, "ev/app", "ops", 2_000, &[]) };
    assert!(m.delete_tag(&repo("ev/app"), &tag, &Default::default(), Some(untag())).await.unwrap());
    assert!(!m
        .delete_tag(
            &repo("ev/app"),
            &tag,
            &Default::default(),
            Some(NewEvent { id: "ev-again".into(), ..untag() })
        )
        .await
        .unwrap());
    let gone = NewEvent {
        digest: Some(digest("ev-image")),
        ..event(EventKind::Delete, "ev/app", "ops", 3_000, &[])
    };
    assert!(m.delete_manifest(&repo("ev/app"), &digest("ev-image"), Some(gone.clone())).await.unwrap());
    let again = NewEvent { id: "ev-twice".into(), ..gone };
    assert!(!m.delete_manifest(&repo("ev/app"), &digest("ev-image"), Some(again)).await.unwrap());

    let by_ops = m.events(&listing(None, Some("ops"), None)).await.unwrap();
    let kinds: Vec<_> = by_ops.iter().map(|e| (e.kind, e.digest.clone())).collect();
    let image = Some(digest("ev-image").to_string());
    assert_eq!(kinds, [(EventKind::Delete, image.clone()), (EventKind::TagDelete, image)], "newest first");
    let older = m.events(&listing(Some("ev/app"), None, Some(by_ops[1].seq))).await.unwrap();
    assert_eq!(older.len(), 2, "the page before the tag's deletion: the push's two events");
    assert!(m.events(&listing(Some("ev/other"), None, None)).await.unwrap().is_empty());
}

async fn audit_entries_keep_their_tally<M: MetaStore + EventLog>(m: &M) {
    let tally = NewEvent {
        count: 30,
        detail: Some("wrong name or password".into()),
        ..event(EventKind::LoginFailed, "", "ev-mallory", 4_000, &[])
    };
    m.record_audit(vec![tally]).await.unwrap();
    let got = m.events(&listing(None, Some("ev-mallory"), None)).await.unwrap();
    let entry: Vec<_> =
        got.iter().map(|e| (e.kind, e.repository.as_str(), e.count, e.detail.as_deref())).collect();
    assert_eq!(entry, [(EventKind::LoginFailed, "", 30, Some("wrong name or password"))]);
    assert!(m.backlog().await.unwrap().iter().all(|b| !b.endpoint.is_empty()), "no deliveries");
}

async fn deliveries_are_claimed_and_settled<M: MetaStore + EventLog>(m: &M) {
    let backlog = |a: u64, a_dead: u64, b: u64| {
        vec![
            Backlog { endpoint: "ev-a".into(), pending: a, dead: a_dead },
            Backlog { endpoint: "ev-b".into(), pending: b, dead: 0 },
        ]
    };
    assert_eq!(m.backlog().await.unwrap(), backlog(2, 0, 1));
    let claimed = m.claim("ev-a", 5_000, 65_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.attempts).collect::<Vec<_>>(), [1, 1]);
    let (push, referrer) = (claimed[0].event.seq, claimed[1].event.seq);
    assert_eq!(claimed[0].event.kind, EventKind::Push, "oldest first");
    assert!(m.claim("ev-a", 5_000, 65_000, 10).await.unwrap().is_empty(), "held by the claim");
    m.settle(
        "ev-a",
        vec![(push, Settled::Delivered), (referrer, Settled::Retry { next_at: 10_000, error: "503".into() })],
        6_000,
    )
    .await
    .unwrap();
    assert!(m.claim("ev-a", 9_000, 69_000, 10).await.unwrap().is_empty(), "not yet due");
    let retried = m.claim("ev-a", 10_000, 70_000, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts), (1, 2));
    // A claim whose replica died expires, and the delivery is taken again.
    let taken_again = m.claim("ev-a", 70_000, 130_000, 10).await.unwrap();
    assert_eq!((taken_again.len(), taken_again[0].attempts), (1, 3));
    m.settle("ev-a", vec![(referrer, Settled::Dead { error: "gone".into() })], 71_000).await.unwrap();
    assert_eq!(m.backlog().await.unwrap(), backlog(0, 1, 1));
    // A settled delivery is not settled again by a late, second sender.
    m.settle("ev-a", vec![(push, Settled::Retry { next_at: 0, error: "late".into() })], 72_000)
        .await
        .unwrap();
    assert!(m.claim("ev-a", 80_000, 90_000, 10).await.unwrap().is_empty());

    // Old events go once nothing is pending for them; ev-b still waits for the push.
    m.forget_events(i64::MAX, 100).await.unwrap();
    let left = m.events(&listing(Some("ev/app"), None, None)).await.unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [push]);
    assert_eq!(m.abandon_others(vec!["ev-a".into()], 90_000).await.unwrap(), 1);
    m.forget_events(i64::MAX, 100).await.unwrap();
    assert!(m.events(&listing(Some("ev/app"), None, None)).await.unwrap().is_empty());
    assert!(m.backlog().await.unwrap().is_empty(), "forgotten with their events");
}

/// A run that runs (on `host`, since `started_at`), as the suite and the collector's tests make it.
pub(crate) fn run_record(id: &str, host: &str, started_at: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        host: host.into(),
        dry_run: false,
        grace_seconds: 3600,
        keep_untagged: true,
        scrub: false,
        verify: true,
        queued: false,
        state: RunState::Running,
        started_at,
        ended_at: None,
        progress: "{}".into(),
        report: None,
        error: None,
        cancel_requested: false,
        resumed_from: Some("r0".into()),
    }
}

async fn run_log<M: RunLog>(m: &M) {
    m.insert_run(&run_record("r1", "a", 1_000), 10).await.unwrap();
    m.insert_run(&run_record("r2", "b", 2_000), 10).await.unwrap();
    assert_eq!(m.run("r1").await.unwrap(), Some(run_record("r1", "a", 1_000)), "stored as given");
    assert_eq!(m.run("r9").await.unwrap(), None);
    // Progress, and a cancel read back with it.
    assert!(!m.run_progress("r2", r#"{"phase":"blobs"}"#).await.unwrap());
    assert_eq!(m.cancel_run("r2").await.unwrap().map(|r| r.cancel_requested), Some(true));
    assert!(m.run_progress("r2", r#"{"phase":"purge"}"#).await.unwrap(), "asked to stop");
    assert!(!m.run_progress("r9", "{}").await.unwrap(), "no such run");
    let end = RunEnd {
        state: RunState::Cancelled,
        at: 2_500,
        progress: "{}",
        report: Some("{\"x\":1}"),
        error: None,
    };
    m.end_run("r2", end).await.unwrap();
    let r2 = m.run("r2").await.unwrap().unwrap();
    assert_eq!(
        (r2.state, r2.ended_at, r2.report.as_deref()),
        (RunState::Cancelled, Some(2_500), Some("{\"x\":1}"))
    );
    assert_eq!(m.cancel_run("r2").await.unwrap(), Some(r2), "a run that ended stays as it ended");
    // Interrupted: only what still runs, on the host named (or all).
    m.insert_run(&run_record("r3", "a", 3_000), 10).await.unwrap();
    assert_eq!(m.interrupt_runs("b", 4_000).await.unwrap(), 0);
    assert_eq!(m.interrupt_runs("a", 4_000).await.unwrap(), 2);
    m.insert_run(&run_record("r4", "c", 4_000), 10).await.unwrap();
    assert_eq!(m.interrupt_runs("", 5_000).await.unwrap(), 1);
    let r1 = m.run("r1").await.unwrap().unwrap();
    assert_eq!((r1.state, r1.ended_at), (RunState::Interrupted, Some(4_000)));
    assert!(r1.error.is_some());
    // Newest first, without reports; the oldest ended ones forgotten beyond the limit.
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(m.runs(10, None).await.unwrap()), ["r4", "r3", "r2", "r1"]);
    assert_eq!(m.runs(10, None).await.unwrap()[2].report, None);
    assert_eq!(ids(m.runs(2, None).await.unwrap()), ["r4", "r3"]);
    m.insert_run(&run_record("r5", "c", 5_000), 2).await.unwrap();
    assert_eq!(ids(m.runs(10, None).await.unwrap()), ["r5", "r4"]);
    // Reviews of the queue are kept, and listed, apart: many never push a full run out.
    for (i, at) in [6_000, 7_000, 8_000].into_iter().enumerate() {
        let review = RunRecord { queued: true, ..run_record(&format!("q{i}"), "c", at) };
        m.insert_run(&review, 2).await.unwrap();
        m.interrupt_runs("", at).await.unwrap();
    }
    assert_eq!(ids(m.runs(10, None).await.unwrap()), ["q2", "q1", "r5", "r4"]);
    assert_eq!(ids(m.runs(10, Some(false)).await.unwrap()), ["r5", "r4"]);
    assert_eq!(ids(m.runs(1, Some(true)).await.unwrap()), ["q2"]);
}

async fn multipart_leases<M: MultipartLog>(m: &M) {
    let lease = |k: &str, id: &str| (k.to_owned(), id.to_owned());
    m.record_multipart("blobs/sha256/aa/one", "id-1", 1_000).await.unwrap();
    m.record_multipart("blobs/sha256/aa/one", "id-2", 3_000).await.unwrap();
    m.record_multipart("tmp/two", "id-3", 2_000).await.unwrap();
    assert_eq!(m.lapsed_multiparts(1_000, 10).await.unwrap(), vec![], "a lease runs to its end");
    let lapsed = m.lapsed_multiparts(2_500, 10).await.unwrap();
    assert_eq!(lapsed, [lease("blobs/sha256/aa/one", "id-1"), lease("tmp/two", "id-3")], "oldest first");
    assert_eq!(m.lapsed_multiparts(2_500, 1).await.unwrap().len(), 1, "limited");
    // Renewed: no longer lapsed.
    m.record_multipart("blobs/sha256/aa/one", "id-1", 5_000).await.unwrap();
    assert_eq!(m.lapsed_multiparts(2_500, 10).await.unwrap(), [lease("tmp/two", "id-3")]);
    for (k, id) in [("blobs/sha256/aa/one", "id-1"), ("blobs/sha256/aa/one", "id-2"), ("tmp/two", "id-3")] {
        m.forget_multipart(k, id).await.unwrap();
    }
    m.forget_multipart("tmp/two", "id-3").await.unwrap();
    assert_eq!(m.lapsed_multiparts(i64::MAX, 10).await.unwrap(), vec![], "forgotten");
}

async fn blobs_are_per_repository(m: &dyn MetaStore) {
    let d = digest("layer-a");
    assert_eq!(m.blob_size(&d).await.unwrap(), None);
    m.link_blob(&repo("one"), &d, 42, Stored::Written).await.unwrap();
    m.link_blob(&repo("one"), &d, 42, Stored::Written).await.unwrap(); // idempotent
    assert_eq!(m.blob_in_repo(&repo("one"), &d).await.unwrap(), Some(42));
    assert_eq!(m.blob_in_repo(&repo("two"), &d).await.unwrap(), None);
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(42));
    assert_eq!(m.repos_with_blob(&d, 10).await.unwrap(), vec![repo("one")]);
    // A HEAD keeps the link young (what it changes, only a collection sees).
    m.touch_link(&repo("one"), &d).await.unwrap();
    m.touch_link(&repo("two"), &d).await.unwrap();
    assert!(m.unlink_blob(&repo("one"), &d).await.unwrap());
    assert!(!m.unlink_blob(&repo("one"), &d).await.unwrap());
    assert_eq!(m.blob_in_repo(&repo("one"), &d).await.unwrap(), None);
}

async fn manifests_check_references(m: &dyn MetaStore) {
    let (config, layer) = (digest("m-config"), digest("m-layer"));
    let none: &[Digest] = &[];
    assert!(
        matches!(
            m.check_references(&repo("app"), std::slice::from_ref(&config), none).await,
            Err(MetaError::BlobUnknown(d)) if d == config
        ),
        "a repository that does not exist holds nothing"
    );
    m.link_blob(&repo("app"), &config, 2, Stored::Written).await.unwrap();
    m.check_references(&repo("app"), std::slice::from_ref(&config), none).await.unwrap();
    assert!(matches!(
        m.check_references(&repo("app"), &[config.clone(), layer.clone()], none).await,
        Err(MetaError::BlobUnknown(d)) if d == layer
    ));
    assert!(matches!(
        m.check_references(&repo("app"), none, &[digest("img")]).await,
        Err(MetaError::ManifestUnknown(_))
    ));
    let missing = m.put_manifest(manifest("app", "img", &[&config, &layer], Some("v1"))).await;
    assert!(matches!(missing, Err(MetaError::BlobUnknown(d)) if d == layer));
    // Nothing of the refused manifest is visible.
    let tag: Tag = "v1".parse().unwrap();
    assert_eq!(m.manifest(&repo("app"), &Reference::Tag(tag.clone())).await.unwrap(), None);

    m.link_blob(&repo("app"), &layer, 3, Stored::Written).await.unwrap();
    m.put_manifest(manifest("app", "img", &[&config, &layer], Some("v1"))).await.unwrap();
    let by_tag = m.manifest(&repo("app"), &Reference::Tag(tag)).await.unwrap().unwrap();
    assert_eq!(by_tag.digest, digest("img"));
    // An index naming a child the repository lacks: refused, unless children are optional (a
    // sparse index); either way its blobs are checked.
    let index = |children_optional, blobs: &[&Digest]| NewManifest {
        manifests: vec![digest("img"), digest("absent-child")],
        children_optional,
        ..manifest("app", "sparse-index", blobs, None)
    };
    assert!(
        matches!(m.put_manifest(index(false, &[])).await, Err(MetaError::ManifestUnknown(d)) if d == digest("absent-child"))
    );
    assert!(matches!(
        m.put_manifest(index(true, &[&digest("absent-blob")])).await,
        Err(MetaError::BlobUnknown(_))
    ));
    m.put_manifest(index(true, &[])).await.unwrap();
    assert!(m.manifest(&repo("app"), &Reference::Digest(digest("sparse-index"))).await.unwrap().is_some());
    assert!(m.delete_manifest(&repo("app"), &digest("sparse-index"), None).await.unwrap());
    let by_digest = m.manifest(&repo("app"), &Reference::Digest(digest("img"))).await.unwrap();
    assert_eq!(by_digest, Some(by_tag));
    assert_eq!(m.manifest(&repo("other"), &Reference::Digest(digest("img"))).await.unwrap(), None);

    let mut index = manifest("app", "index", &[], None);
    index.manifests = vec![digest("img"), digest("absent")];
    assert!(matches!(m.put_manifest(index.clone()).await, Err(MetaError::ManifestUnknown(_))));
    index.manifests.pop();
    m.put_manifest(index).await.unwrap();
}

async fn tags_and_pagination(m: &dyn MetaStore) {
    assert_eq!(m.tags(&repo("nope"), &Page { limit: 10, last: None }).await.unwrap(), None);
    for t in ["c", "a", "b", "d"] {
        m.put_manifest(manifest("paged", &format!("p-{t}"), &[], Some(t))).await.unwrap();
    }
    let all = m.tags(&repo("paged"), &Page { limit: 100, last: None }).await.unwrap().unwrap();
    assert_eq!(all, ["a", "b", "c", "d"]);
    let first = m.tags(&repo("paged"), &Page { limit: 2, last: None }).await.unwrap().unwrap();
    assert_eq!(first, ["a", "b", "c"], "limit + 1 tells the caller more follow");
    let after = m.tags(&repo("paged"), &Page { limit: 2, last: Some("b".into()) }).await.unwrap();
    assert_eq!(after.unwrap(), ["c", "d"]);
    // Re-tagging moves the tag.
    m.put_manifest(manifest("paged", "p-a", &[], Some("d"))).await.unwrap();
    let d = m.manifest(&repo("paged"), &Reference::Tag("d".parse().unwrap())).await.unwrap();
    assert_eq!(d.unwrap().digest, digest("p-a"));
    let cat = m.catalog(&Page { limit: 1000, last: None }).await.unwrap();
    assert!(cat.windows(2).all(|w| w[0] < w[1]));
    assert!(cat.contains(&"paged".to_owned()));
}

async fn referrers_by_subject(m: &dyn MetaStore) {
    let subject = digest("never-pushed-subject");
    for (name, at) in [("sig", "application/vnd.dev.cosign"), ("sbom", "application/spdx+json")] {
        let mut r = manifest("refs", name, &[], None);
        r.subject = Some(subject.clone());
        r.artifact_type = Some(at.into());
        r.annotations = Some(r#"{"k":"v"}"#.into());
        m.put_manifest(r).await.unwrap();
    }
    let all = m.referrers(&repo("refs"), &subject, None).await.unwrap();
    assert_eq!(all.len(), 2);
    let sboms = m.referrers(&repo("refs"), &subject, Some("application/spdx+json")).await.unwrap();
    assert_eq!(sboms.len(), 1);
    assert_eq!(sboms[0].digest, digest("sbom"));
    assert_eq!(sboms[0].annotations.as_deref(), Some(r#"{"k":"v"}"#));
    assert!(m.referrers(&repo("elsewhere"), &subject, None).await.unwrap().is_empty());
}

async fn deletes(m: &dyn MetaStore) {
    m.put_manifest(manifest("del", "gone", &[], Some("t1"))).await.unwrap();
    m.put_manifest(manifest("del", "gone", &[], Some("t2"))).await.unwrap();
    assert!(m.delete_tag(&repo("del"), &"t1".parse().unwrap(), &Default::default(), None).await.unwrap());
    assert!(!m.delete_tag(&repo("del"), &"t1".parse().unwrap(), &Default::default(), None).await.unwrap());
    assert!(m.delete_manifest(&repo("del"), &digest("gone"), None).await.unwrap());
    assert!(!m.delete_manifest(&repo("del"), &digest("gone"), None).await.unwrap());
    let tags = m.tags(&repo("del"), &Page { limit: 10, last: None }).await.unwrap().unwrap();
    assert!(tags.is_empty(), "deleting a manifest deletes its tags");
    assert!(!m.delete_manifest(&repo("no-such-repo"), &digest("gone"), None).await.unwrap());
}

async fn upload_sessions(m: &dyn MetaStore) {
    let id = UploadId::random();
    assert_eq!(m.upload(id).await.unwrap(), None);
    m.create_upload(id, &repo("up"), 100).await.unwrap();
    assert_eq!(m.count_uploads().await.unwrap(), 1);
    let part = |start, size| UploadPart { start, size, nonce: format!("{start:x}"), tag: None };
    // One request's chunk, stored as an object of its own.
    let chunk = |start: u64, size: u64| Appended {
        at: start,
        added: size,
        parts: if size > 0 { vec![part(start, size)] } else { vec![] },
        drop_chunks: false,
        hash_state: Some(vec![start as u8, size as u8]),
    };
    assert_eq!(m.append_upload(id, &chunk(0, 10), 3, 101).await.unwrap(), 10);
    let stale = m.append_upload(id, &chunk(0, 10), 3, 102).await;
    assert!(matches!(stale, Err(MetaError::UploadOffset { current: 10 })));
    assert_eq!(m.append_upload(id, &chunk(10, 5), 3, 103).await.unwrap(), 15);
    let u = m.upload(id).await.unwrap().unwrap();
    assert_eq!((u.received, u.updated_at), (15, 103));
    assert_eq!((u.hash_state, u.assembly), (Some(vec![10, 5]), None), "the state after the last append");
    assert_eq!(m.upload_parts(id).await.unwrap(), vec![part(0, 10), part(10, 5)]);
    assert_eq!(m.stale_uploads(104, 10).await.unwrap(), vec![id]);
    assert!(m.stale_uploads(103, 10).await.unwrap().is_empty());

    // A session holds a bounded number of chunks; an empty one takes no place.
    assert_eq!(m.append_upload(id, &chunk(15, 0), 3, 104).await.unwrap(), 15);
    assert_eq!(m.append_upload(id, &chunk(15, 1), 3, 104).await.unwrap(), 16);
    let full = m.append_upload(id, &chunk(16, 1), 3, 105).await;
    assert!(matches!(full, Err(MetaError::UploadFull { max: 3 })), "{full:?}");
    assert_eq!(m.upload(id).await.unwrap().unwrap().received, 16, "a refused chunk changes nothing");

    assert!(m.delete_upload(id).await.unwrap());
    assert!(matches!(m.append_upload(id, &chunk(16, 1), 3, 106).await, Err(MetaError::UploadUnknown)));
    assert_eq!(m.count_uploads().await.unwrap(), 0);

    // On an object store, chunks go into an assembly whose id is recorded once.
    let id = UploadId::random();
    m.create_upload(id, &repo("up"), 150).await.unwrap();
    assert_eq!(m.set_upload_assembly(id, "mp-1").await.unwrap().as_deref(), Some("mp-1"));
    assert_eq!(m.set_upload_assembly(id, "mp-2").await.unwrap().as_deref(), Some("mp-1"), "the first stays");
    assert_eq!(m.set_upload_assembly(UploadId::random(), "mp-3").await.unwrap(), None);
    m.append_upload(id, &chunk(0, 4), 10, 151).await.unwrap();
    m.append_upload(id, &chunk(4, 3), 10, 152).await.unwrap();
    // A request whose bytes filled a part: the chunks before it went into the part, its rest is a chunk.
    let tagged = UploadPart { start: 0, size: 9, nonce: "a1".into(), tag: Some("\"etag-1\"".into()) };
    let grown = Appended {
        at: 7,
        added: 5,
        parts: vec![tagged.clone(), part(9, 3)],
        drop_chunks: true,
        hash_state: Some(vec![1; 41]),
    };
    assert_eq!(m.append_upload(id, &grown, 10, 153).await.unwrap(), 12);
    assert_eq!(m.upload_parts(id).await.unwrap(), vec![tagged, part(9, 3)]);
    let u = m.upload(id).await.unwrap().unwrap();
    assert_eq!((u.received, u.hash_state, u.assembly.as_deref()), (12, Some(vec![1; 41]), Some("mp-1")));
    assert!(matches!(
        m.append_upload(id, &grown, 10, 154).await,
        Err(MetaError::UploadOffset { current: 12 })
    ));
    assert!(m.delete_upload(id).await.unwrap());

    // Finishing links the blob and forgets the session in one step.
    let (id, blob) = (UploadId::random(), digest("finished"));
    m.create_upload(id, &repo("up"), 200).await.unwrap();
    m.append_upload(id, &chunk(0, 7), 3, 201).await.unwrap();
    // What closing reads, in one go: the session, its chunks, and whether the blob is stored.
    let closing = m.closing_upload(id, &blob).await.unwrap().unwrap();
    assert_eq!(closing.upload, m.upload(id).await.unwrap().unwrap());
    assert_eq!((closing.parts, closing.stored), (vec![part(0, 7)], None));
    m.finish_upload(id, &repo("up"), &blob, 7, Stored::Written).await.unwrap();
    assert_eq!(m.upload(id).await.unwrap(), None);
    assert_eq!(m.closing_upload(id, &blob).await.unwrap(), None, "a finished session is gone");
    assert!(m.upload_parts(id).await.unwrap().is_empty(), "chunks go with their session");
    assert_eq!(m.blob_in_repo(&repo("up"), &blob).await.unwrap(), Some(7));
    // A session elsewhere closing as the same blob finds it stored (in any repository).
    let again = UploadId::random();
    m.create_upload(again, &repo("up-other"), 210).await.unwrap();
    let closing = m.closing_upload(again, &blob).await.unwrap().unwrap();
    assert_eq!((closing.upload.repo, closing.parts, closing.stored), (repo("up-other"), vec![], Some(7)));
    assert!(m.delete_upload(again).await.unwrap());
}

async fn cache_bookkeeping<M: MetaStore + CacheIndex>(m: &M) {
    let hub = repo("docker.io/library/alpine");
    let tag: Tag = "3.20".parse().unwrap();
    // A cached manifest may name blobs that have not been pulled yet.
    let (layer, shared) = (digest("c-layer"), digest("c-shared"));
    let mut index = manifest("docker.io/library/alpine", "c-index", &[&layer], Some("3.20"));
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

/// The steps by which a blob leaves (`super::sweep`), and what writes of its digest meet.
async fn released_blobs_leave_safely<M: MetaStore + CacheIndex>(m: &M) {
    let r = repo("cache/leaving");
    let d = digest("leaving");
    let item = CachedItem { repo: r.clone(), digest: d.clone(), kind: ContentKind::Blob, size: 5 };
    m.link_blob(&r, &d, 5, Stored::Written).await.unwrap();
    let released_at = super::now_millis();
    assert!(m.evict(&item).await.unwrap(), "nothing else uses it: released");
    assert_eq!(m.blob_size(&d).await.unwrap(), None, "a released blob answers as absent");
    assert!(!m.purgeable_blobs(released_at - 60_000, 0, 10).await.unwrap().contains(&d), "readers' grace");
    assert!(!m.begin_purge(&d, released_at - 60_000, 0).await.unwrap());

    // Any write of the digest makes it live again, out of the purge's reach.
    m.link_blob(&r, &d, 5, Stored::Written).await.unwrap();
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(5));
    let later = super::now_millis() + 1;
    assert!(!m.purgeable_blobs(later, 0, 10).await.unwrap().contains(&d));
    assert!(!m.begin_purge(&d, later, 0).await.unwrap());

    // Released again and purging: writes of the digest are told, and nothing is recorded.
    assert!(m.evict(&item).await.unwrap());
    let later = super::now_millis() + 1;
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
    let lease_over = super::now_millis() + 1;
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
    let later = super::now_millis() + 1;
    assert!(m.begin_purge(&e, later, 0).await.unwrap());
    m.end_purge(&e).await.unwrap();
    assert_eq!(m.forget_gone(0, 10).await.unwrap(), 0, "kept while young");
    assert!(m.forget_gone(super::now_millis() + 1, 10).await.unwrap() >= 1);
    m.link_blob(&r, &e, 6, Stored::Written).await.unwrap();
    assert_eq!(m.blob_size(&e).await.unwrap(), Some(6));

    // A blob that another repository links is not released.
    m.link_blob(&repo("cache/other"), &d, 5, Stored::Assumed).await.unwrap();
    assert!(!m.evict(&CachedItem { repo: repo("cache/other"), ..item.clone() }).await.unwrap());
    assert_eq!(m.blob_size(&d).await.unwrap(), Some(5));
}

async fn open_session<M: MetaStore>(m: &M, r: &RepoName) -> UploadId {
    let id = UploadId::random();
    m.create_upload(id, r, super::now()).await.unwrap();
    id
}

/// A session's own object recorded as its blob (`finish_upload_at`): only while the session
/// stands, at the session's object unless the digest is stored already, and moved only by a
/// write after a purge.
async fn blobs_recorded_in_place<M: MetaStore + CacheIndex>(m: &M) {
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
    assert!(m.begin_purge(&d, super::now_millis() + 1, 0).await.unwrap());
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
    assert!(m.begin_purge(&d, super::now_millis() + 1, 0).await.unwrap());
    m.end_purge(&d).await.unwrap();
    m.link_blob(&r, &d, 5, Stored::Confirmed).await.unwrap();
    assert_eq!((m.blob_location(&d).await.unwrap(), m.blob_size(&d).await.unwrap()), (None, Some(5)));

    m.link_blob(&r, &digest("placed-at-key"), 3, Stored::Written).await.unwrap();
    assert_eq!(m.blob_location(&digest("placed-at-key")).await.unwrap(), None);
    assert_eq!(m.blob_location(&digest("placed-nowhere")).await.unwrap(), None);
}

async fn fetch_segments<M: CacheIndex>(m: &M) {
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

async fn fetch_claims<M: CacheIndex>(m: &M) {
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
