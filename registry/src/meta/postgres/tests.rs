//! The PostgreSQL store against a real server (the suite provisions PostgreSQL).

use super::testing::TestDatabase;
use super::*;
use crate::meta::MetaError;
use crate::meta::UploadSessions;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let db = TestDatabase::create().await;
    let meta = PostgresMeta::connect(&db.url, 4).await.unwrap();
    crate::meta::testsuite::run(&meta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let db = TestDatabase::create().await;
    let starts = (0..4).map(|_| PostgresMeta::connect(&db.url, 2));
    for store in futures_util::future::join_all(starts).await {
        store.unwrap();
    }
    let (client, _conn) = db.client().await;
    let n: i64 = client.query_one("SELECT count(*) FROM berth_schema", &[]).await.unwrap().get(0);
    assert_eq!(n, i64::from(migrate::known()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_berth_can_run_on_is_refused() {
    let db = TestDatabase::create().await;
    PostgresMeta::connect(&db.url, 1).await.unwrap();
    let (client, _conn) = db.client().await;
    let next = migrate::known() + 1;
    // An expanding migration: older code still runs on it.
    client.execute("INSERT INTO berth_schema VALUES ($1, 1, 0)", &[&next]).await.unwrap();
    PostgresMeta::connect(&db.url, 1).await.expect("an expanded schema still serves older berth");
    // A contracting one: it does not.
    client.execute("INSERT INTO berth_schema VALUES ($1, $1, 0)", &[&(next + 1)]).await.unwrap();
    let e = PostgresMeta::connect(&db.url, 1).await.err().expect("refused").to_string();
    assert!(e.contains("upgrade berth"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_locations_are_written_only_where_no_older_berth_can_run() {
    let db = TestDatabase::create().await;
    let created = PostgresMeta::connect(&db.url, 1).await.unwrap();
    assert!(created.records_locations(), "created here: older code refuses this database");
    let (client, _conn) = db.client().await;
    // The same schema reached by upgrading, step by step, a database older code used: it may
    // still run beside this one during a rolling upgrade, and would look for blobs at their
    // digests' keys.
    client.execute("UPDATE berth_schema SET compatible_from = 1", &[]).await.unwrap();
    let upgraded = PostgresMeta::connect(&db.url, 1).await.unwrap();
    assert!(!upgraded.records_locations());
    // Once the schema is contracted (every replica runs this Berth), they are, and older code
    // may not start on it any more.
    assert_eq!(PostgresMeta::contract(&db.url, None).await.unwrap(), (1, migrate::known()));
    assert!(PostgresMeta::connect(&db.url, 1).await.unwrap().records_locations());
    assert_eq!(PostgresMeta::contract(&db.url, None).await.unwrap(), (migrate::known(), migrate::known()));
    // A database this Berth has not migrated yet is not contracted.
    let fresh = TestDatabase::create().await;
    let e = PostgresMeta::contract(&fresh.url, None).await.expect_err("refused").to_string();
    assert!(e.contains("start this berth on it first"), "{e}");
}

#[test]
fn sessions_name_their_schema_first_and_fit_in_what_postgres_keeps() {
    let s = migrate::known();
    assert_eq!(migrate::session_name(&[]), format!("berth/s{s}"));
    assert_eq!(migrate::session_name(&["lookups-1", "", "ops"]), format!("berth/s{s} lookups-1 ops"));
    // A long name the URL gave is cut at 63 bytes, never inside a character.
    let long = migrate::session_name(&["é".repeat(40).as_str()]);
    assert!(long.len() <= 63 && long.starts_with(&format!("berth/s{s} é")), "{long}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_contracts_the_schema_once_no_older_berth_is_left() {
    use migrate::Contracting;
    let db = TestDatabase::create().await;
    drop(PostgresMeta::connect(&db.url, 1).await.unwrap());
    // A connection named like this code's: it does not hold the contract back.
    let (admin, conn) = tokio_postgres::connect(
        &format!("{}?application_name={}", db.url, migrate::session_name(&[])),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // The schema reached by upgrading a database older code used, which still runs: one older
    // replica (older Berths name their sessions `berth`), holding a lease without a schema.
    admin.execute("UPDATE berth_schema SET compatible_from = 1", &[]).await.unwrap();
    let (older, older_conn) =
        tokio_postgres::connect(&format!("{}?application_name=berth", db.url), NoTls).await.unwrap();
    let older_conn = tokio::spawn(older_conn);
    older
        .execute(
            "INSERT INTO lookup_replicas (id, alive_until, listening_since)
             VALUES ('older', (extract(epoch from clock_timestamp()) * 1000)::bigint + 4000,
                     pg_current_snapshot()::text)",
            &[],
        )
        .await
        .unwrap();
    let a = PostgresMeta::connect(&db.url, 2).await.unwrap();
    let b = PostgresMeta::connect(&db.url, 2).await.unwrap();
    assert!(!a.records_locations() && !b.records_locations());
    let check = |m: &PostgresMeta| {
        let m = m.clone();
        async move { upgrade::check(&m.pool, &m.locations, Contract::Auto).await.unwrap() }
    };
    let Contracting::Waiting(why) = check(&a).await else { panic!("contracted beside an older berth") };
    assert!(why.contains("'berth' (role"), "{why}");

    // The older replica stops: its session ends, but its lease is remembered for a minute (its
    // connections might only have broken for a moment).
    admin
        .execute(
            "UPDATE lookup_replicas SET alive_until = (extract(epoch from clock_timestamp()) * 1000)::bigint - 1000",
            &[],
        )
        .await
        .unwrap();
    drop(older);
    older_conn.await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let why = loop {
        match check(&a).await {
            Contracting::Waiting(why)
                if why.contains("'berth' (role") && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Contracting::Waiting(why) => break why,
            Contracting::Done => panic!("contracted while an older lease was recent"),
        }
    };
    assert!(why.contains("1 replica(s) of an older Berth held a lease"), "{why}");
    assert_eq!(
        schema_needs(&admin).await,
        1,
        "the schema stays compatible with older Berths while one may come back"
    );

    // A minute on, nothing older is left: A contracts, and B notices on its next check.
    admin
        .execute(
            "UPDATE lookup_replicas SET alive_until = (extract(epoch from clock_timestamp()) * 1000)::bigint - 61000",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(check(&a).await, Contracting::Done);
    assert!(a.records_locations());
    assert_eq!(schema_needs(&admin).await, migrate::known(), "older Berths now refuse the database");
    assert!(!b.records_locations());
    assert_eq!(check(&b).await, Contracting::Done);
    assert!(b.records_locations());
}

async fn schema_needs(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT max(compatible_from) FROM berth_schema", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_manual_contract_an_upgrade_stays_reversible_until_contract_schema_runs() {
    use migrate::Contracting;
    let db = TestDatabase::create().await;
    drop(PostgresMeta::connect(&db.url, 1).await.unwrap());
    let (admin, _conn) = db.client().await;
    // Upgraded from older code, none of which runs any more.
    admin.execute("UPDATE berth_schema SET compatible_from = 1", &[]).await.unwrap();
    let m = PostgresMeta::connect_with(&db.url, 2, None, Contract::Manual).await.unwrap();
    let Contracting::Waiting(why) = upgrade::check(&m.pool, &m.locations, Contract::Manual).await.unwrap()
    else {
        panic!("contracted although the contract is manual")
    };
    assert!(why.contains("berth contract-schema"), "{why}");
    assert!(!m.records_locations());
    assert_eq!(schema_needs(&admin).await, 1, "an older Berth may still start on it");

    assert_eq!(PostgresMeta::contract(&db.url, None).await.unwrap(), (1, migrate::known()));
    assert_eq!(upgrade::check(&m.pool, &m.locations, Contract::Manual).await.unwrap(), Contracting::Done);
    assert!(m.records_locations(), "contracted by hand: blobs stay where their uploads put them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_url_file_is_used_without_a_restart_and_a_broken_one_is_not() {
    let db = TestDatabase::create().await;
    let meta = PostgresMeta::connect(&db.url, 2).await.unwrap();
    let (admin, _conn) = db.client().await;
    let role = format!("rotated_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    std::fs::write(&file, format!("{}\n", db.url)).unwrap();
    meta.watch_url_file(file.clone(), Duration::from_millis(50));
    let sessions_of = |role: String| {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND application_name = $2",
                    &[&role, &migrate::session_name(&[])],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };

    // A URL that does not work is not taken: requests go on as before.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broken = format!("postgres://{role}@127.0.0.1:{port}/nowhere");
    assert!(meta.pool.replace(&broken).await.is_err());
    meta.count_uploads().await.unwrap();
    assert_eq!(sessions_of(role.clone()).await, 0);

    // A working one is: new connections log in as the new role.
    let (_, host) = db.url.split_once('@').expect("the test URL names its user");
    let rotated = format!("postgres://{role}@{host}");
    std::fs::write(&file, &rotated).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        meta.count_uploads().await.unwrap();
        if sessions_of(role.clone()).await > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never switched to {rotated}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the old role's connections close (a revoked credential holds on to nothing).
    let old_role = db.url.split_once("://").and_then(|(_, r)| r.split_once('@')).unwrap().0.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sessions_of(old_role.clone()).await > 0 {
        assert!(std::time::Instant::now() < deadline, "the old pool's connections stay open");
        meta.count_uploads().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this store's connections are encrypted, as the server sees them.
async fn encrypted(meta: &PostgresMeta) -> bool {
    let c = meta.client().await.unwrap();
    c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_use_tls_when_the_server_offers_it_and_verify_it_against_a_given_ca() {
    let db = TestDatabase::create().await;
    let ca = testing::server_ca().expect("the test server this process started serves TLS");
    // sslmode=prefer (the default): encrypted, the certificate not checked.
    assert!(encrypted(&PostgresMeta::connect(&db.url, 1).await.unwrap()).await);
    // With the server's CA: verified, and encrypted.
    let verified = PostgresMeta::connect_with(&db.url, 1, Some(&ca), Contract::Auto).await.unwrap();
    assert!(encrypted(&verified).await);
    // Against another CA: refused, saying why.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere".into()]).unwrap();
    let other_ca = dir.path().join("other.crt");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let refused = PostgresMeta::connect_with(&db.url, 1, Some(&other_ca), Contract::Auto)
        .await
        .err()
        .expect("not verified");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // sslmode=disable: plain, as asked.
    let plain = PostgresMeta::connect(&format!("{}?sslmode=disable", db.url), 1).await.unwrap();
    assert!(!encrypted(&plain).await);
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "").unwrap();
    assert!(
        PostgresMeta::connect_with(&db.url, 1, Some(&empty), Contract::Auto).await.is_err(),
        "a CA file without a CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://berth@127.0.0.1:{port}/berth");
    let e = tokio::time::timeout(Duration::from_secs(30), PostgresMeta::connect(&url, 1))
        .await
        .expect("connect gave up in time")
        .err()
        .expect("nothing listens there");
    assert!(matches!(e, MetaError::Unavailable(_)), "{e:?}");
}
