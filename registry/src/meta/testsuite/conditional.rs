//! Conditional writes ([`crate::meta::precondition`]): a tag moved or removed only while it names
//! what the writer expects, checked in the write's own transaction.

use futures_util::future::join_all;

use super::fixtures::{digest, manifest, repo};
use crate::meta::precondition::{Condition, Etags, Precondition};
use crate::meta::{MetaError, MetaStore, NewManifest};
use berth_core::oci::{Digest, Reference, Tag};

fn tag(t: &str) -> Tag {
    t.parse().unwrap()
}

fn if_match(d: &Digest) -> Precondition {
    Precondition::naming(d.clone())
}

fn if_absent() -> Precondition {
    Precondition { if_match: None, if_none_match: Some(Etags::Any) }
}

/// The manifest `name` pushed by `tag` (or by digest), on condition.
fn push(name: &str, by_tag: Option<&str>, expect: Precondition) -> NewManifest {
    NewManifest {
        condition: Some(Condition { tag: by_tag.map(tag), expect }),
        ..manifest("cond/app", name, &[], by_tag)
    }
}

async fn names(m: &dyn MetaStore, t: &str) -> Option<Digest> {
    m.manifest(&repo("cond/app"), &Reference::Tag(tag(t))).await.unwrap().map(|r| r.digest)
}

async fn held(m: &dyn MetaStore, name: &str) -> bool {
    m.manifest(&repo("cond/app"), &Reference::Digest(digest(name))).await.unwrap().is_some()
}

fn failed_with(r: crate::meta::Result<impl std::fmt::Debug>, want: Option<Digest>) {
    match r {
        Err(MetaError::PreconditionFailed { current }) => assert_eq!(current, want),
        other => panic!("expected the precondition to fail naming {want:?}, got {other:?}"),
    }
}

pub(crate) async fn conditional_writes(m: &dyn MetaStore) {
    let (a, b) = (digest("cond-a"), digest("cond-b"));
    // Create only: the first push of a tag that must be absent wins; the next is refused whole
    // (its manifest is not recorded either).
    m.put_manifest(push("cond-a", Some("latest"), if_absent())).await.unwrap();
    failed_with(m.put_manifest(push("cond-b", Some("latest"), if_absent())).await, Some(a.clone()));
    assert_eq!(names(m, "latest").await, Some(a.clone()));
    assert!(!held(m, "cond-b").await, "a refused push records nothing");
    // Compare and swap: moved only from what the client saw.
    failed_with(m.put_manifest(push("cond-b", Some("latest"), if_match(&b))).await, Some(a.clone()));
    m.put_manifest(push("cond-b", Some("latest"), if_match(&a))).await.unwrap();
    assert_eq!(names(m, "latest").await, Some(b.clone()));
    failed_with(m.put_manifest(push("cond-a", Some("latest"), if_match(&a))).await, Some(b.clone()));
    // A tag that is absent matches no If-Match, not even `*`.
    let any = Precondition { if_match: Some(Etags::Any), if_none_match: None };
    failed_with(m.put_manifest(push("cond-a", Some("absent"), any.clone())).await, None);
    assert_eq!(names(m, "absent").await, None);
    // By digest, the reference names the manifest once the repository holds it.
    failed_with(m.put_manifest(push("cond-a", None, if_absent())).await, Some(a.clone()));
    failed_with(m.put_manifest(push("cond-c", None, any)).await, None);
    assert!(!held(m, "cond-c").await);
    m.put_manifest(push("cond-c", None, if_absent())).await.unwrap();
    m.put_manifest(push("cond-c", None, if_match(&digest("cond-c")))).await.unwrap();
    // Deletes: only what the client saw goes.
    let r = repo("cond/app");
    failed_with(m.delete_tag(&r, &tag("latest"), &if_match(&a), None).await, Some(b.clone()));
    assert_eq!(names(m, "latest").await, Some(b.clone()));
    assert!(m.delete_tag(&r, &tag("latest"), &if_match(&b), None).await.unwrap());
    failed_with(m.delete_tag(&r, &tag("latest"), &if_match(&b), None).await, None);
    assert!(!m.delete_tag(&r, &tag("latest"), &if_absent(), None).await.unwrap(), "absent, as expected");
}

/// Writers racing on one tag, each expecting what it names now: exactly one moves it. In rounds,
/// so that a store that pools connections has them open and the writers truly overlap.
pub(crate) async fn conditional_writes_race(m: &dyn MetaStore) {
    for round in 0..3 {
        let (race, start) = (format!("race{round}"), format!("race{round}-start"));
        m.put_manifest(manifest("cond/app", &start, &[], Some(&race))).await.unwrap();
        let name = |i| format!("race{round}-{i}");
        let swaps = (0..8).map(|i| m.put_manifest(push(&name(i), Some(&race), if_match(&digest(&start)))));
        let outcomes = join_all(swaps).await;
        let won: Vec<usize> = (0..8).filter(|i| outcomes[*i].is_ok()).collect();
        assert_eq!(won.len(), 1, "exactly one swap wins: {outcomes:?}");
        let winner = digest(&name(won[0]));
        assert_eq!(names(m, &race).await, Some(winner.clone()));
        for o in outcomes.into_iter().filter(Result::is_err) {
            failed_with(o, Some(winner.clone()));
        }
        let fresh = format!("fresh{round}");
        let creates =
            (0..8).map(|i| m.put_manifest(push(&format!("{fresh}-{i}"), Some(&fresh), if_absent())));
        let outcomes = join_all(creates).await;
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "exactly one create wins: {outcomes:?}");
    }
}
