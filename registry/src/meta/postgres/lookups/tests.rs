//! Two replicas on one database, each keeping lookups: what one writes, the other serves at once.

use std::time::{Duration, Instant};

use super::*;
use crate::meta::postgres::testing::TestDatabase;
use crate::meta::postgres::PostgresMeta;
use crate::meta::testsuite::{digest, manifest};
use crate::meta::MetaStore;
use berth_core::oci::{Digest, Tag};

async fn replica(db: &TestDatabase) -> PostgresMeta {
    PostgresMeta::connect(&db.url, 2).await.unwrap()
}

/// Two replicas on a new database, both serving from memory.
async fn two_replicas() -> (TestDatabase, PostgresMeta, PostgresMeta) {
    let db = TestDatabase::create().await;
    let (a, b) = (replica(&db).await, replica(&db).await);
    trusted(&[&a, &b]).await;
    (db, a, b)
}

/// Waits until every one of `replicas` serves from memory.
async fn trusted(replicas: &[&PostgresMeta]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !replicas.iter().all(|r| r.lookups.trusted()) {
        assert!(Instant::now() < deadline, "the replicas never trusted their lookups");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `meta` serves for the tag, checking that it was served from memory the second time.
async fn resolve_kept(meta: &PostgresMeta, repo: &RepoName, tag: &str) -> Option<Digest> {
    let r: Reference = tag.parse().unwrap();
    let first = meta.manifest(repo, &r).await.unwrap();
    let again = meta.manifest(repo, &r).await.unwrap();
    assert_eq!(first, again);
    if first.is_some() && meta.lookups.trusted() {
        assert!(meta.lookups.get(repo, &r).is_ok(), "a trusted replica keeps what it looked up");
    }
    first.map(|m| m.digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_is_served_at_once_by_another() {
    let (db, a, b) = two_replicas().await;
    let repo: RepoName = "team/app".parse().unwrap();
    for i in 0..20 {
        // Each writes in turn; the other has kept the previous answer.
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let name = format!("m{i}");
        writer.put_manifest(manifest("team/app", &name, &[], Some("latest"))).await.unwrap();
        assert_eq!(resolve_kept(reader, &repo, "latest").await, Some(digest(&name)), "round {i}");
        assert_eq!(resolve_kept(writer, &repo, "latest").await, Some(digest(&name)), "round {i}");
    }
    let latest: Tag = "latest".parse().unwrap();
    assert!(a.delete_tag(&repo, &latest, &Default::default(), None).await.unwrap());
    assert_eq!(resolve_kept(&b, &repo, "latest").await, None);
    // A manifest deleted by digest is gone everywhere too.
    let by_digest: Reference = digest("m19").to_string().parse().unwrap();
    assert!(b.manifest(&repo, &by_digest).await.unwrap().is_some());
    assert!(a.manifest(&repo, &by_digest).await.unwrap().is_some());
    assert!(b.delete_manifest(&repo, &digest("m19"), None).await.unwrap());
    assert_eq!(a.manifest(&repo, &by_digest).await.unwrap(), None);

    // A change by any other writer (an older Berth mid-upgrade, an operator's SQL) is announced
    // by the database itself: the replicas soon serve it.
    a.put_manifest(manifest("team/app", "m20", &[], Some("stable"))).await.unwrap();
    a.put_manifest(manifest("team/app", "m21", &[], None)).await.unwrap();
    assert_eq!(resolve_kept(&b, &repo, "stable").await, Some(digest("m20")));
    let (admin, _conn) = db.client().await;
    admin
        .execute("UPDATE tags SET digest = $1 WHERE name = 'stable'", &[&digest("m21").to_string()])
        .await
        .unwrap();
    // Looked up once a round: the announcement may land between two lookups of one round.
    let stable: Reference = "stable".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.manifest(&repo, &stable).await.unwrap().map(|m| m.digest) != Some(digest("m21")) {
        assert!(Instant::now() < deadline, "a change made in SQL was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(resolve_kept(&b, &repo, "stable").await, Some(digest("m21")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_link_removed_on_one_replica_is_not_served_by_another() {
    let (db, a, b) = two_replicas().await;
    let repo: RepoName = "team/app".parse().unwrap();
    let (layer, other) = (digest("layer"), digest("other"));
    for d in [&layer, &other] {
        a.link_blob(&repo, d, 7, crate::meta::Stored::Written).await.unwrap();
        assert_eq!(b.blob_in_repo(&repo, d).await.unwrap(), Some(7));
        assert!(b.lookups.blob(&repo, d).is_ok(), "a trusted replica keeps what it looked up");
    }
    // A delete through the API returns only once every replica forgot the link.
    assert!(a.unlink_blob(&repo, &layer).await.unwrap());
    assert_eq!(b.blob_in_repo(&repo, &layer).await.unwrap(), None);
    assert_eq!(b.blob_in_repo(&repo, &other).await.unwrap(), Some(7));
    assert!(b.lookups.blob(&repo, &other).is_ok(), "kept again");
    // A link removed by any other writer (a collection, an eviction, an operator's SQL) is
    // announced by the database itself: the replicas soon stop serving it.
    let (admin, _conn) = db.client().await;
    admin.execute("DELETE FROM repository_blobs WHERE digest = $1", &[&other.to_string()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.blob_in_repo(&repo, &other).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "a link removed in SQL was still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_answers_holds_writes_only_until_its_lease_ends() {
    let db = TestDatabase::create().await;
    let a = replica(&db).await;
    let (admin, _conn) = db.client().await;
    // A replica that listened long ago and then went silent: its lease has three seconds left.
    admin
        .execute(
            concat!(
                "INSERT INTO lookup_replicas VALUES ('silent', ",
                now_ms!(),
                " + 3000, pg_current_snapshot()::text)"
            ),
            &[],
        )
        .await
        .unwrap();
    let started = Instant::now();
    a.put_manifest(manifest("team/app", "m1", &[], Some("latest"))).await.unwrap();
    // Acknowledged only once the lease had ended, by the database's clock...
    let ended: bool = admin
        .query_one(
            concat!("SELECT alive_until <= ", now_ms!(), " FROM lookup_replicas WHERE id = 'silent'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended, "acknowledged while the silent replica's lease ran");
    // ...and not held to the longest wait, which is for a writer that cannot hear at all.
    let waited = started.elapsed();
    assert!(waited < MAX_WAIT, "waited past the lease: {waited:?}");
    // Its lease over, it holds nothing up any more.
    let started = Instant::now();
    a.put_manifest(manifest("team/app", "m2", &[], Some("latest"))).await.unwrap();
    assert!(started.elapsed() < MAX_WAIT, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_listening_connection_breaks_serves_no_stale_answer() {
    let (db, a, b) = two_replicas().await;
    let repo: RepoName = "team/app".parse().unwrap();
    a.put_manifest(manifest("team/app", "m0", &[], Some("latest"))).await.unwrap();
    assert_eq!(resolve_kept(&b, &repo, "latest").await, Some(digest("m0")));
    let (admin, _conn) = db.client().await;
    for round in 1..=3 {
        // The database ends B's listening connection (a failover, an idle-session killer).
        let killed = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&super::super::migrate::session_name(&[&format!("lookups-{}", b.lookups.id)])],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(killed, 1, "round {round}");
        // A's write, acknowledged, is what B serves: B missed the notice, so either it stopped
        // trusting what it kept or A waited for its lease to end.
        let name = format!("m{round}");
        a.put_manifest(manifest("team/app", &name, &[], Some("latest"))).await.unwrap();
        assert_eq!(resolve_kept(&b, &repo, "latest").await, Some(digest(&name)), "round {round}");
        // And B listens again, and keeps lookups again.
        trusted(&[&b]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_leaves_gives_up_its_lease_at_once_and_for_good() {
    let (db, a, b) = two_replicas().await;
    let (admin, _conn) = db.client().await;
    let leases = |id: String| {
        let admin = &admin;
        async move {
            let n = admin.query_one("SELECT count(*) FROM lookup_replicas WHERE id = $1", &[&id]).await;
            n.unwrap().get::<_, i64>(0)
        }
    };
    assert_eq!(leases(b.lookups.id.clone()).await, 1);
    b.leave().await;
    assert!(!b.lookups.trusted(), "a replica that left serves nothing from memory");
    // Its renewals, which go on until the process ends, do not bring the lease back.
    tokio::time::sleep(RENEW_EVERY * 3).await;
    assert_eq!(leases(b.lookups.id.clone()).await, 0);
    assert!(!b.lookups.trusted());
    assert_eq!(leases(a.lookups.id.clone()).await, 1, "the other replica keeps its lease");
}
