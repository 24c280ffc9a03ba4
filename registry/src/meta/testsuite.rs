//! The metadata conformance suite: every `MetaStore` (with its `CacheIndex`) runs all of it.

use super::browse::Browse;
use super::cache::CacheIndex;
use super::multiparts::MultipartLog;
use super::outbox::EventLog;
use super::runs::{RunEnd, RunLog, RunRecord, RunState};
use super::{Appended, MetaError, MetaStore, NewManifest, Page, Referrer, Stored, UploadPart};
use crate::UploadId;
use berth_core::oci::{Descriptor, Digest, Reference, Tag};

mod browse;
mod cache;
mod conditional;
mod events;
mod fixtures;
mod sweep;

pub(crate) use fixtures::{described, digest, manifest, repo};

pub(crate) async fn run<M: MetaStore + CacheIndex + MultipartLog + RunLog + EventLog + Browse>(m: &M) {
    blobs_are_per_repository(m).await;
    manifests_check_references(m).await;
    tags_and_pagination(m).await;
    referrers_by_subject(m).await;
    deletes(m).await;
    conditional::conditional_writes(m).await;
    conditional::conditional_writes_race(m).await;
    upload_sessions(m).await;
    cache::cache_bookkeeping(m).await;
    cache::fetch_claims(m).await;
    cache::fetch_segments(m).await;
    sweep::released_blobs_leave_safely(m).await;
    sweep::blobs_recorded_in_place(m).await;
    multipart_leases(m).await;
    run_log(m).await;
    events::events_commit_with_their_change(m).await;
    events::audit_entries_keep_their_tally(m).await;
    events::deliveries_are_claimed_and_settled(m).await;
    browse::tag_pages(m).await;
    browse::image_sizes(m).await;
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
    let (config, layer) = (described(&digest("m-config"), 2), described(&digest("m-layer"), 3));
    let none: &[Descriptor] = &[];
    assert!(
        matches!(
            m.check_references(&repo("app"), std::slice::from_ref(&config), none).await,
            Err(MetaError::BlobUnknown(d)) if d == config.digest
        ),
        "a repository that does not exist holds nothing"
    );
    m.link_blob(&repo("app"), &config.digest, 2, Stored::Written).await.unwrap();
    m.check_references(&repo("app"), std::slice::from_ref(&config), none).await.unwrap();
    assert!(matches!(
        m.check_references(&repo("app"), &[config.clone(), layer.clone()], none).await,
        Err(MetaError::BlobUnknown(d)) if d == layer.digest
    ));
    assert!(matches!(
        m.check_references(&repo("app"), none, &[described(&digest("img"), 100)]).await,
        Err(MetaError::ManifestUnknown(_))
    ));
    let missing = m.put_manifest(manifest("app", "img", &[&config, &layer], Some("v1"))).await;
    assert!(matches!(missing, Err(MetaError::BlobUnknown(d)) if d == layer.digest));
    // Nothing of the refused manifest is visible.
    let tag: Tag = "v1".parse().unwrap();
    assert_eq!(m.manifest(&repo("app"), &Reference::Tag(tag.clone())).await.unwrap(), None);

    m.link_blob(&repo("app"), &layer.digest, 3, Stored::Written).await.unwrap();
    // A descriptor of another size than the blob has is refused (a client pulling the image
    // would refuse the blob), before the write and inside it.
    let wrong = described(&layer.digest, 4);
    let mismatch = |r| matches!(r, Err(MetaError::SizeMismatch { digest, described: 4, stored: 3 }) if digest == layer.digest);
    assert!(mismatch(m.check_references(&repo("app"), &[config.clone(), wrong.clone()], none).await));
    assert!(mismatch(m.put_manifest(manifest("app", "img", &[&config, &wrong], Some("v1"))).await));
    assert_eq!(m.manifest(&repo("app"), &Reference::Tag(tag.clone())).await.unwrap(), None);
    m.put_manifest(manifest("app", "img", &[&config, &layer], Some("v1"))).await.unwrap();
    let by_tag = m.manifest(&repo("app"), &Reference::Tag(tag)).await.unwrap().unwrap();
    assert_eq!(by_tag.digest, digest("img"));
    // An index naming a child the repository lacks: refused, unless children are optional (a
    // sparse index); either way its blobs are checked.
    let index = |children_optional, blobs: &[&Descriptor]| NewManifest {
        manifests: vec![described(&digest("img"), 100), described(&digest("absent-child"), 100)],
        children_optional,
        ..manifest("app", "sparse-index", blobs, None)
    };
    assert!(
        matches!(m.put_manifest(index(false, &[])).await, Err(MetaError::ManifestUnknown(d)) if d == digest("absent-child"))
    );
    assert!(matches!(
        m.put_manifest(index(true, &[&described(&digest("absent-blob"), 1)])).await,
        Err(MetaError::BlobUnknown(_))
    ));
    m.put_manifest(index(true, &[])).await.unwrap();
    assert!(m.manifest(&repo("app"), &Reference::Digest(digest("sparse-index"))).await.unwrap().is_some());
    assert!(m.delete_manifest(&repo("app"), &digest("sparse-index"), None).await.unwrap());
    let by_digest = m.manifest(&repo("app"), &Reference::Digest(digest("img"))).await.unwrap();
    assert_eq!(by_digest, Some(by_tag));
    assert_eq!(m.manifest(&repo("other"), &Reference::Digest(digest("img"))).await.unwrap(), None);

    let mut index = manifest("app", "index", &[], None);
    index.manifests = vec![described(&digest("img"), 100), described(&digest("absent"), 100)];
    assert!(matches!(m.put_manifest(index.clone()).await, Err(MetaError::ManifestUnknown(_))));
    index.manifests.pop();
    // A child described with another size than the manifest has is refused too.
    index.manifests[0].size = 99;
    let refused = m.put_manifest(index.clone()).await;
    assert!(
        matches!(refused, Err(MetaError::SizeMismatch { described: 99, stored: 100, .. })),
        "{refused:?}"
    );
    index.manifests[0].size = 100;
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
    let mut pushed = Vec::new();
    for (name, at) in [
        ("sig", "application/vnd.dev.cosign"),
        ("sbom", "application/spdx+json"),
        ("sig-2", "application/vnd.dev.cosign"),
        ("sbom-2", "application/spdx+json"),
        ("sig-3", "application/vnd.dev.cosign"),
    ] {
        let mut r = manifest("refs", name, &[], None);
        r.subject = Some(subject.clone());
        r.artifact_type = Some(at.into());
        r.annotations = Some(r#"{"k":"v"}"#.into());
        m.put_manifest(r).await.unwrap();
        pushed.push(digest(name));
    }
    pushed.sort();
    let page = |limit, last: Option<&Digest>| Page { limit, last: last.map(|d| d.to_string()) };
    let listed = |found: Vec<Referrer>| found.into_iter().map(|r| r.digest).collect::<Vec<_>>();
    let all = m.referrers(&repo("refs"), &subject, None, &page(100, None)).await.unwrap();
    assert_eq!(listed(all), pushed, "sorted by digest");
    // A page returns one past its limit, so the caller can tell that another follows.
    let first = listed(m.referrers(&repo("refs"), &subject, None, &page(2, None)).await.unwrap());
    assert_eq!(first, pushed[..3]);
    let rest = listed(m.referrers(&repo("refs"), &subject, None, &page(2, Some(&pushed[1]))).await.unwrap());
    assert_eq!(rest, pushed[2..5]);
    let sbom = Some("application/spdx+json");
    let sboms = m.referrers(&repo("refs"), &subject, sbom, &page(100, None)).await.unwrap();
    assert_eq!(sboms.len(), 2);
    assert!(sboms.iter().all(|r| r.artifact_type.as_deref() == sbom));
    assert_eq!(sboms[0].annotations.as_deref(), Some(r#"{"k":"v"}"#));
    let after = m.referrers(&repo("refs"), &subject, sbom, &page(100, Some(&sboms[0].digest))).await.unwrap();
    assert_eq!(listed(after), [sboms[1].digest.clone()]);
    assert!(m.referrers(&repo("elsewhere"), &subject, None, &page(100, None)).await.unwrap().is_empty());
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
    // A request still sending marks the session in use; an earlier mark never moves it back.
    m.touch_upload(id, 110).await.unwrap();
    m.touch_upload(id, 107).await.unwrap();
    assert_eq!(m.upload(id).await.unwrap().unwrap().updated_at, 110);
    assert!(m.stale_uploads(110, 10).await.unwrap().is_empty());
    m.touch_upload(UploadId::random(), 111).await.unwrap();
    assert_eq!(m.count_uploads().await.unwrap(), 1, "marking a session that is gone makes none");

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

    // A session that never received a byte: marked, found stale, cancelled once, or closed.
    let empty = UploadId::random();
    m.create_upload(empty, &repo("up-empty"), 300).await.unwrap();
    assert_eq!(m.upload_parts(empty).await.unwrap(), vec![]);
    assert_eq!(m.stale_uploads(301, 10).await.unwrap(), vec![empty]);
    m.touch_upload(empty, 305).await.unwrap();
    assert_eq!(m.upload(empty).await.unwrap().map(|u| (u.received, u.updated_at)), Some((0, 305)));
    assert!(m.stale_uploads(305, 10).await.unwrap().is_empty());
    assert_eq!(m.count_uploads().await.unwrap(), 1);
    assert!(m.delete_upload(empty).await.unwrap());
    assert!(!m.delete_upload(empty).await.unwrap(), "cancelled once");
    assert!(matches!(m.append_upload(empty, &chunk(0, 1), 3, 306).await, Err(MetaError::UploadUnknown)));
    assert_eq!(m.upload(empty).await.unwrap(), None);
    let whole = UploadId::random();
    m.create_upload(whole, &repo("up-empty"), 310).await.unwrap();
    m.finish_upload(whole, &repo("up-empty"), &digest("whole"), 3, Stored::Written).await.unwrap();
    assert_eq!(m.upload(whole).await.unwrap(), None);
    assert!(!m.delete_upload(whole).await.unwrap(), "closed");
    assert_eq!(m.blob_in_repo(&repo("up-empty"), &digest("whole")).await.unwrap(), Some(3));
    assert_eq!(m.count_uploads().await.unwrap(), 0);
}
