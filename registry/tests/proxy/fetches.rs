//! One upstream fetch per missing blob: concurrent pulls share it, replicas stream what another
//! is still fetching, bytes flow before the layer is whole, and corrupt content is never kept.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_cold_pulls_cause_one_upstream_fetch() {
    let s = setup(Auth::None, |_| {}).await;
    let layer = noise(10, 100 << 20);
    let image = push_image(&s.upstream.url, "library/postgres", "17", vec![layer]).await;
    let digest = image.layers[0].clone();
    s.counter.reset();
    let url = s.berth.url(&format!("/v2/hub/postgres/blobs/{digest}"));
    let pulls: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { body_digest(client().get(url).send().await.unwrap()).await })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap().unwrap(), digest);
    }
    assert_eq!(s.counter.count("GET", &digest), 1, "{:?}", s.counter.seen());
    assert_eq!(s.counter.shared.blob_bytes_sent.load(Ordering::SeqCst), 100 << 20);
    let metrics = client().get(s.berth.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("berth_proxy_coalesced_waits_total{upstream=\"docker.io\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetched_blobs_are_stored_from_the_spool_on_files_and_copied_on_other_storage() {
    for memory in [false, true] {
        let s = setup_with(
            Auth::None,
            |_| {},
            |c| {
                if memory {
                    c.storage = StorageConfig::Memory;
                }
            },
        )
        .await;
        let image = push_image(&s.upstream.url, "library/redis", "7", vec![noise(20, 5 << 20)]).await;
        let layer = image.layers[0].clone();
        s.counter.reset();
        for pull in 0..3 {
            let r = get(s.berth.url(&format!("/v2/hub/redis/blobs/{layer}"))).await;
            assert_eq!(body_digest(r).await.unwrap(), layer, "memory={memory} pull {pull}");
        }
        assert_eq!(s.counter.count("GET", &layer), 1, "memory={memory}: {:?}", s.counter.seen());
        let on_disk = s.berth.stored_blobs().iter().any(|p| p.display().to_string().contains(&layer[7..]));
        assert_eq!(on_disk, !memory);
        // Only storage that cannot adopt the spool file needs a writer of its own for the blob.
        let metrics = client().get(s.berth.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let writers = metrics
            .contains("berth_storage_operation_duration_seconds_count{operation=\"create\",outcome=\"ok\"}");
        assert_eq!(writers, memory, "memory={memory}: {metrics}");
        let spool = s.berth.data.join("proxy-spool");
        let spool_empty = || async { std::fs::read_dir(&spool).map(|d| d.count() == 0).unwrap_or(false) };
        assert!(common::eventually(Duration::from_secs(10), spool_empty).await, "memory={memory}");
    }
}

/// Two replicas on one bucket and one database (see [`common::s3_postgres_yaml`]): a replica that
/// misses a blob another one is fetching streams what that one has stored so far, before the
/// fetch ends, and the upstream sends the blob once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an S3 server and PostgreSQL: tests/s3.sh runs it"]
async fn a_replica_streams_a_blob_that_another_replica_is_still_fetching() {
    use futures_util::StreamExt;
    let upstream = Distribution::start(Auth::None).await;
    let counter = CountingProxy::start(&upstream.url).await;
    let size = 20u64 << 20; // two whole segments of 8 MiB, and a tail
    let image = push_image(&upstream.url, "library/big", "1", vec![noise(21, size as usize)]).await;
    let path = format!("/v2/docker.io/library/big/blobs/{}", image.layers[0]);
    let credentials = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}proxy:\n  upstreams:\n    - name: docker.io\n      url: {}\n      default: true\n",
        common::s3_postgres_yaml("segments", credentials.path()),
        counter.url
    );
    let config = Config::from_yaml(&yaml, "replicas").unwrap();
    let (a, b) = (TestServer::with_config(config.clone()).await, TestServer::with_config(config).await);

    // The upstream stops after 18 MiB until the test lets it go on.
    counter.shared.hold_after.store(18 << 20, Ordering::SeqCst);
    let first = tokio::spawn(body_digest(client().get(a.url(&path)).send().await.unwrap()));
    let sent = || async { counter.shared.blob_bytes_sent.load(Ordering::SeqCst) >= 18 << 20 };
    assert!(common::eventually(Duration::from_secs(60), sent).await, "replica a fetches");
    let resp = client().get(b.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(size), "the size, before the fetch ends");
    let mut stream = resp.bytes_stream();
    let mut received = Vec::with_capacity(size as usize);
    let whole_segments = async {
        while received.len() < 16 << 20 {
            received.extend_from_slice(&stream.next().await.unwrap().unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), whole_segments)
        .await
        .expect("replica b streams the segments replica a stored, while the upstream still holds the rest");
    assert_eq!(counter.shared.blob_bytes_sent.load(Ordering::SeqCst), 18 << 20, "still held");

    counter.shared.release.notify_one();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(sha256(&received), image.layers[0], "replica b's bytes");
    assert_eq!(first.await.unwrap().unwrap(), image.layers[0], "replica a's bytes");
    assert_eq!(counter.count("GET", "/blobs/"), 1, "one upstream fetch");
    assert_eq!(counter.shared.blob_bytes_sent.load(Ordering::SeqCst), size, "the blob's bytes, once");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_byte_arrives_before_the_upstream_sent_the_whole_layer() {
    let s = setup(Auth::None, |_| {}).await;
    let size = 256usize << 20;
    let image = push_image(&s.upstream.url, "library/ubuntu", "24.04", vec![noise(11, size)]).await;
    let digest = image.layers[0].clone();
    // The upstream stops after 8 MiB and waits until the test has seen bytes through Berth.
    s.counter.shared.hold_after.store(8 << 20, Ordering::SeqCst);
    let resp = client().get(s.berth.url(&format!("/v2/hub/ubuntu/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(size as u64));
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let upstream_sent = s.counter.shared.blob_bytes_sent.load(Ordering::SeqCst);
    assert!(upstream_sent < size as u64, "the upstream had sent {upstream_sent} bytes");
    s.counter.shared.release.notify_one();
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(&first);
    let mut total = first.len();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        h.update(&chunk);
    }
    assert_eq!(total, size);
    assert_eq!(format!("sha256:{}", berth_core::oci::hex(&h.finalize())), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_upstream_content_is_never_cached_or_served() {
    let s = setup(Auth::None, |_| {}).await;
    let image = push_image(&s.upstream.url, "library/node", "22", vec![noise(12, 3 << 20)]).await;
    let layer = image.layers[0].clone();
    s.counter.shared.corrupt.store(true, Ordering::SeqCst);

    let r = manifest(&s.berth, "hub/node", &image.digest).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("does not match"), "{body}");

    let r = get(s.berth.url(&format!("/v2/hub/node/blobs/{layer}"))).await;
    let served = body_digest(r).await;
    assert!(served.is_err(), "a corrupted layer was served whole: {served:?}");
    let blobs: Vec<String> = s.berth.stored_blobs().iter().map(|p| p.display().to_string()).collect();
    assert!(!blobs.iter().any(|p| p.contains(layer.trim_start_matches("sha256:"))), "{blobs:?}");

    // Once the upstream behaves, the same pulls succeed and are cached.
    s.counter.shared.corrupt.store(false, Ordering::SeqCst);
    let r = manifest(&s.berth, "hub/node", &image.digest).await;
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    let r = get(s.berth.url(&format!("/v2/hub/node/blobs/{layer}"))).await;
    assert_eq!(body_digest(r).await.unwrap(), layer);
}
