//! Events and their deliveries ([`crate::meta::events`]): recorded with the change they describe,
//! the audit log's tally, and deliveries claimed and settled.

use crate::meta::events::{Backlog, Delivery, EventQuery, NewEvent, Settled};
use crate::meta::outbox::EventLog;
use crate::meta::{MetaStore, NewManifest, Stored};
use berth_core::config::notifications::EventKind;
use berth_core::oci::Tag;

use super::fixtures::{described, digest, manifest, repo};

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

pub(super) async fn events_commit_with_their_change<M: MetaStore + EventLog>(m: &M) {
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
        ..manifest("ev/app", "ev-image", &[&described(&layer, 5)], Some("v1"))
    };
    m.put_manifest(image).await.unwrap();
    // A push refused (its layer is not there) records no event.
    let refused = NewManifest {
        events: vec![event(EventKind::Push, "ev/app", "ci", 1_001, &["ev-a"])],
        ..manifest("ev/app", "ev-refused", &[&described(&digest("ev-missing"), 5)], None)
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

pub(super) async fn audit_entries_keep_their_tally<M: MetaStore + EventLog>(m: &M) {
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

pub(super) async fn deliveries_are_claimed_and_settled<M: MetaStore + EventLog>(m: &M) {
    let backlog =
        |a: u64, a_dead: u64, b: u64| vec![("ev-a".to_owned(), a, a_dead), ("ev-b".to_owned(), b, 0)];
    let counts = |b: Vec<Backlog>| b.into_iter().map(|b| (b.endpoint, b.pending, b.dead)).collect::<Vec<_>>();
    let first = m.backlog().await.unwrap();
    assert_eq!(counts(first.clone()), backlog(2, 0, 1));
    let waiting = |seq, attempts, last_error: Option<&str>| {
        Some(Delivery { seq, at: 1_000, attempts, last_error: last_error.map(str::to_owned) })
    };
    let oldest = first[0].oldest_pending.as_ref().map_or(0, |d| d.seq);
    assert_eq!((&first[0].oldest_pending, &first[0].last_dead), (&waiting(oldest, 0, None), &None));
    assert_eq!(first[1].oldest_pending, waiting(oldest, 0, None), "the push waits for ev-b too");
    let claimed = m.claim("ev-a", 5_000, 65_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.attempts).collect::<Vec<_>>(), [1, 1]);
    let (push, referrer) = (claimed[0].event.seq, claimed[1].event.seq);
    assert_eq!(claimed[0].event.kind, EventKind::Push, "oldest first");
    assert!(m.claim("ev-a", 5_000, 65_000, 10).await.unwrap().is_empty(), "held by the claim");
    m.settle(
        "ev-a",
        vec![
            (push, Settled::Delivered),
            (referrer, Settled::Retry { next_at: 10_000, error: format!("503\n<html>{}", "x".repeat(5000)) }),
        ],
        6_000,
    )
    .await
    .unwrap();
    assert!(m.claim("ev-a", 9_000, 69_000, 10).await.unwrap().is_empty(), "not yet due");
    let after_retry = m.backlog().await.unwrap();
    assert_eq!(counts(after_retry.clone()), backlog(1, 0, 1));
    assert_eq!(after_retry[0].oldest_pending, waiting(referrer, 1, Some("503")), "why it waits: one line");
    let retried = m.claim("ev-a", 10_000, 70_000, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].attempts), (1, 2));
    // A claim whose replica died expires, and the delivery is taken again.
    let taken_again = m.claim("ev-a", 70_000, 130_000, 10).await.unwrap();
    assert_eq!((taken_again.len(), taken_again[0].attempts), (1, 3));
    m.settle("ev-a", vec![(referrer, Settled::Dead { error: "gone".into() })], 71_000).await.unwrap();
    let after_dead = m.backlog().await.unwrap();
    assert_eq!(counts(after_dead.clone()), backlog(0, 1, 1));
    assert_eq!(
        (&after_dead[0].oldest_pending, &after_dead[0].last_dead),
        (&None, &waiting(referrer, 3, Some("gone")))
    );
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
