//! The S3 backend against real S3-compatible servers (tests/s3.sh starts them on loopback) and
//! its errors when there is none.

use std::time::Duration;

use bytes::Bytes;

use super::*;

/// The bucket of a real S3-compatible server, from the environment the suite sets (tests/s3.sh
/// starts MinIO and SeaweedFS on loopback): `BERTH_TEST_S3_ENDPOINT`, `_BUCKET`, `_ACCESS_KEY`,
/// `_SECRET_KEY`; objects under `prefix`.
pub(crate) fn from_env(prefix: &str) -> S3Storage {
    let var = |name: &str| {
        std::env::var(format!("BERTH_TEST_S3_{name}"))
            .unwrap_or_else(|_| panic!("BERTH_TEST_S3_{name} is not set: run tests/s3.sh"))
    };
    S3Storage::new(&S3Options {
        bucket: var("BUCKET"),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        endpoint: var("ENDPOINT"),
        path_style: true,
        access_key_id: var("ACCESS_KEY"),
        secret_access_key: var("SECRET_KEY"),
        credentials_dir: None,
        ca_pem: None,
        redirect: false,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: tests/s3.sh runs it"]
async fn conformance_on_a_real_s3_server() {
    let prefix = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    let store = from_env(&prefix);
    crate::storage::testsuite::run(&store).await;
    // Nothing staged is left behind by commits or abandoned writers (whose abort runs in
    // the background: wait for it, within bounds).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !store.list(&Key::new("tmp/".into())).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "staged objects left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: tests/s3.sh runs it"]
async fn multipart_objects_are_whole_and_prefixes_keep_stores_apart() {
    let a = from_env(&format!("a-{}", uuid::Uuid::new_v4().simple()));
    let b = from_env(&format!("b-{}", uuid::Uuid::new_v4().simple()));
    // Two full parts and a tail, written in pieces that straddle part boundaries.
    let data: Vec<u8> = (0..2 * PART_SIZE + 12_345).map(|i| (i % 253) as u8).collect();
    let key = Key::new("blobs/sha256/ab/multipart".into());
    let mut w = a.writer().await.unwrap();
    for chunk in data.chunks(1_000_003) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    w.commit(&key).await.unwrap();
    assert_eq!(a.stat(&key).await.unwrap(), Some(data.len() as u64));
    let back = crate::storage::read_all(&a, &key).await.unwrap();
    assert!(back == data, "the object reads back whole");
    assert_eq!(b.stat(&key).await.unwrap(), None, "another prefix sees nothing of it");
    // An object too big for one server-side copy is moved as a stream of parts.
    let small_copies = from_env(&format!("c-{}", uuid::Uuid::new_v4().simple())).with_copy_limit(1 << 20);
    let big = Key::new("uploads/ab/big.assembled".into());
    crate::storage::put_all(&small_copies, &big, Bytes::copy_from_slice(&data)).await.unwrap();
    small_copies.rename(&big, &key).await.unwrap();
    assert!(crate::storage::read_all(&small_copies, &key).await.unwrap() == data, "moved whole");
    assert_eq!(small_copies.stat(&big).await.unwrap(), None);
    small_copies.delete(&key).await.unwrap();
    a.delete(&key).await.unwrap();

    // Written where it will be committed: whole there, with nothing staged; and nothing at
    // all if dropped before its commit.
    let mut w = a.writer_at(&key).await.unwrap();
    w.write(Bytes::copy_from_slice(&data)).await.unwrap();
    w.commit(&key).await.unwrap();
    assert!(crate::storage::read_all(&a, &key).await.unwrap() == data);
    assert!(a.list(&Key::new("tmp/".into())).await.unwrap().is_empty(), "no staging copy");
    let dropped = Key::new("blobs/sha256/ab/dropped".into());
    let mut w = a.writer_at(&dropped).await.unwrap();
    w.write(Bytes::copy_from_slice(&data)).await.unwrap();
    drop(w);
    assert_eq!(a.stat(&dropped).await.unwrap(), None);
    a.delete(&key).await.unwrap();
}

#[test]
fn parts_grow_so_ten_thousand_hold_hundreds_of_gibibytes() {
    let sizes: Vec<u64> = (0..MAX_PARTS).map(|i| part_size(PARTS_PER_STEP, i) as u64).collect();
    assert!(sizes[..PARTS_PER_STEP].iter().all(|&s| s == PART_SIZE as u64), "the first 8 GiB as before");
    assert!(sizes.iter().sum::<u64>() >= 400 << 30, "10,000 parts hold at least 400 GiB");
    assert!(sizes.iter().all(|&s| (5 << 20..=5 << 30).contains(&s)), "each part within S3's bounds");
    assert!(too_many_parts(MAX_PARTS - 1).is_ok());
    assert!(too_many_parts(MAX_PARTS).unwrap_err().to_string().contains("object too large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: tests/s3.sh runs it"]
async fn growing_parts_make_whole_objects() {
    // Parts grow every part here: 8, 16, then the 1 MiB tail — three parts, not four.
    let s = from_env(&format!("grow-{}", uuid::Uuid::new_v4().simple())).with_part_step(1);
    let data: Vec<u8> = (0..3 * PART_SIZE + (1 << 20)).map(|i| (i % 241) as u8).collect();
    let key = Key::new("blobs/sha256/ab/grown".into());
    let mut w = s.writer_at(&key).await.unwrap();
    for chunk in data.chunks(3_000_017) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    w.commit(&key).await.unwrap();
    assert!(crate::storage::read_all(&s, &key).await.unwrap() == data, "the object reads back whole");
    let head = s.store.head(&s.path(&key)).await.unwrap();
    let etag = head.e_tag.unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "three parts: {etag}");
    s.delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: tests/s3.sh runs it"]
async fn a_wrong_secret_is_an_error_that_says_so() {
    let good = from_env("creds");
    let bad = S3Storage::new(&S3Options {
        bucket: std::env::var("BERTH_TEST_S3_BUCKET").unwrap(),
        endpoint: std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap(),
        path_style: true,
        access_key_id: std::env::var("BERTH_TEST_S3_ACCESS_KEY").unwrap(),
        secret_access_key: "not-the-secret".into(),
        ..S3Options::default()
    })
    .unwrap();
    let key = Key::new("blobs/sha256/cd/creds".into());
    crate::storage::put_all(&good, &key, Bytes::from_static(b"x")).await.unwrap();
    let Err(StorageError::Unavailable(e)) = bad.stat(&Key::new("creds/blobs/sha256/cd/creds".into())).await
    else {
        panic!("a wrong secret reads nothing");
    };
    assert!(!e.contains("not-the-secret"), "{e}");
    assert!(crate::storage::put_all(&bad, &key, Bytes::from_static(b"y")).await.is_err());
    assert!(bad.check().await.is_err(), "not ready with a wrong secret");
    good.check().await.unwrap();
    let missing = S3Storage::new(&S3Options {
        bucket: "no-such-bucket-for-berth".into(),
        endpoint: std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap(),
        path_style: true,
        access_key_id: std::env::var("BERTH_TEST_S3_ACCESS_KEY").unwrap(),
        secret_access_key: std::env::var("BERTH_TEST_S3_SECRET_KEY").unwrap(),
        ..S3Options::default()
    })
    .unwrap();
    assert!(missing.check().await.is_err(), "not ready without the bucket");
    assert_eq!(crate::storage::read_all(&good, &key).await.unwrap(), Bytes::from_static(b"x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_unreachable_stores_are_errors_not_hangs() {
    // Nothing listens on this port: the error comes back, within the connect timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = S3Storage::new(&S3Options {
        bucket: "b".into(),
        endpoint: format!("http://127.0.0.1:{port}"),
        path_style: true,
        access_key_id: "k".into(),
        secret_access_key: "s".into(),
        ..S3Options::default()
    })
    .unwrap();
    let key = Key::new("blobs/x".into());
    let stat = tokio::time::timeout(Duration::from_secs(60), store.stat(&key)).await;
    assert!(matches!(stat, Ok(Err(StorageError::Unavailable(_)))), "{stat:?}");
    let shown = format!("{:?}", S3Options { secret_access_key: "hunter2".into(), ..S3Options::default() });
    assert!(!shown.contains("hunter2"), "{shown}");
}
