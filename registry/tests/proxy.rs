//! The pull-through cache against a real upstream: CNCF Distribution, with a counting proxy in
//! between that records every upstream request and can corrupt or hold back what it passes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_client::{Credentials, Upstream, UpstreamError};
use berth_core::config::{Config, ProxyConfig, RevalidateRule, StorageConfig, UpstreamConfig};
use common::upstream::{
    body_digest, noise, push_image, push_index, temp_secret, Auth, CountingProxy, Distribution, TokenService,
};
use common::{client, error_code, sha256, TestServer, OCI_MANIFEST};
use reqwest::StatusCode;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// Distribution, a counting proxy in front of it, and Berth mirroring it as `docker.io`.
struct Setup {
    upstream: Distribution,
    counter: CountingProxy,
    berth: TestServer,
}

async fn setup(auth: Auth, tune: impl FnOnce(&mut UpstreamConfig)) -> Setup {
    setup_with(auth, tune, |_| {}).await
}

async fn setup_with(
    auth: Auth,
    tune: impl FnOnce(&mut UpstreamConfig),
    tune_config: impl FnOnce(&mut Config),
) -> Setup {
    let upstream = Distribution::start(auth).await;
    let counter = CountingProxy::start(&upstream.url).await;
    let mut hub = UpstreamConfig::new("docker.io", &counter.url);
    hub.aliases = vec!["hub".into()];
    hub.default = true;
    hub.include = vec!["library/**".into(), "bitnami/**".into()];
    hub.revalidate_after = Duration::from_secs(3600);
    tune(&mut hub);
    let mut config = Config { proxy: ProxyConfig { upstreams: vec![hub] }, ..Config::default() };
    tune_config(&mut config);
    let berth = TestServer::with_config(config).await;
    Setup { upstream, counter, berth }
}

async fn get(url: String) -> reqwest::Response {
    client().get(url).header("accept", ACCEPT).send().await.unwrap()
}

async fn manifest(s: &TestServer, repo: &str, reference: &str) -> reqwest::Response {
    get(s.url(&format!("/v2/{repo}/manifests/{reference}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_pull_matches_upstream_and_warm_pulls_stay_local_in_every_name_form() {
    let s = setup(Auth::None, |_| {}).await;
    let image =
        push_image(&s.upstream.url, "library/alpine", "3.20", vec![noise(1, 300_000), noise(2, 1000)]).await;

    // Cold: by tag through the path form.
    let r = manifest(&s.berth, "docker.io/library/alpine", "3.20").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
    assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    for d in image.layers.iter().chain([&image.config]) {
        let r = get(s.berth.url(&format!("/v2/docker.io/library/alpine/blobs/{d}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body_digest(r).await.unwrap(), *d);
    }
    assert_eq!(s.counter.count("GET", "/blobs/"), 3, "{:?}", s.counter.seen());
    s.counter.reset();

    // Warm, in every form that names this image: nothing reaches the upstream.
    for (repo, query) in [
        ("docker.io/library/alpine", ""),
        ("hub/alpine", ""),
        ("library/alpine", "?ns=docker.io"),
        ("alpine", ""),
    ] {
        let r = get(s.berth.url(&format!("/v2/{repo}/manifests/3.20{query}"))).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}{query}");
        assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
        let r = get(s.berth.url(&format!("/v2/{repo}/manifests/{}{query}", image.digest))).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}{query} by digest");
        for d in &image.layers {
            let r = get(s.berth.url(&format!("/v2/{repo}/blobs/{d}{query}"))).await;
            assert_eq!(body_digest(r).await.unwrap(), *d, "{repo}{query}");
        }
    }
    assert_eq!(s.counter.seen(), vec![], "warm pulls made upstream requests");

    // A range of a cached blob.
    let r = client()
        .get(s.berth.url(&format!("/v2/hub/alpine/blobs/{}", image.layers[0])))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), noise(1, 300_000).slice(10..20));

    let metrics = client().get(s.berth.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("berth_proxy_hits_total{upstream=\"docker.io\",kind=\"blob\"}"), "{metrics}");
    assert!(metrics.contains("berth_proxy_upstream_received_bytes_total{upstream=\"docker.io\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_through_the_cache_records_when_the_manifest_was_last_pulled() {
    let s = setup(Auth::None, |_| {}).await;
    push_image(&s.upstream.url, "library/alpine", "3.20", vec![noise(1, 1000)]).await;
    let repo: berth_core::oci::RepoName = "docker.io/library/alpine".parse().unwrap();
    let collector = s.berth.state.collector.clone().unwrap();
    let pulled_at = || async {
        s.berth.state.registry.flush_behind().await.unwrap();
        let contents = collector.contents(&repo).await.unwrap();
        contents.tags.iter().find(|t| t.name == "3.20").map(|t| t.pulled_at)
    };
    let head =
        client().head(s.berth.url("/v2/docker.io/library/alpine/manifests/3.20")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(pulled_at().await, Some(None), "a HEAD caches the tag but is no pull");
    assert_eq!(manifest(&s.berth, "docker.io/library/alpine", "3.20").await.status(), StatusCode::OK);
    let at = pulled_at().await.flatten();
    assert!(at.is_some_and(|t| t > 0), "a GET through the cache is a pull: {at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxied_repositories_are_read_only_and_private_ones_coexist() {
    let s = setup(Auth::None, |_| {}).await;
    push_image(&s.upstream.url, "library/nginx", "1.27", vec![noise(3, 5000)]).await;
    assert_eq!(manifest(&s.berth, "hub/nginx", "1.27").await.status(), StatusCode::OK);

    // Pushing into a mirrored repository is refused, whatever the name form.
    for repo in ["docker.io/library/nginx", "hub/nginx", "nginx"] {
        let r = client().post(s.berth.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{repo}");
        assert_eq!(error_code(r).await, "DENIED");
    }

    // A repository no upstream serves takes pushes as usual, beside the cache.
    let private = push_image(&s.berth.url, "team/app", "v1", vec![noise(4, 2000)]).await;
    let r = manifest(&s.berth, "team/app", "v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), private.manifest);
    assert_eq!(s.counter.count("GET", "team/app"), 0, "private pulls never go upstream");
    let catalog: serde_json::Value =
        client().get(s.berth.url("/v2/_catalog")).send().await.unwrap().json().await.unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["docker.io/library/nginx", "team/app"]));

    // Tags of a proxied repository come from the upstream.
    let tags: serde_json::Value =
        client().get(s.berth.url("/v2/hub/nginx/tags/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tags, serde_json::json!({"name": "hub/nginx", "tags": ["1.27"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_are_revalidated_with_one_head_only_after_the_interval() {
    // revalidate_after 0s: every tag pull checks; the upstream sees exactly one HEAD each time.
    let s = setup(Auth::None, |u| u.revalidate_after = Duration::ZERO).await;
    let v1 = push_image(&s.upstream.url, "library/redis", "7", vec![noise(5, 1000)]).await;
    assert_eq!(manifest(&s.berth, "hub/redis", "7").await.status(), StatusCode::OK);
    assert_eq!((s.counter.count("GET", "/manifests/"), s.counter.count("HEAD", "/manifests/")), (1, 0));
    s.counter.reset();

    let r = manifest(&s.berth, "hub/redis", "7").await;
    assert_eq!(r.headers()["docker-content-digest"], v1.digest.as_str());
    assert_eq!((s.counter.count("GET", "/manifests/"), s.counter.count("HEAD", "/manifests/")), (0, 1));
    s.counter.reset();

    // The tag moves upstream: one HEAD sees it, one GET fetches it.
    let v2 = push_image(&s.upstream.url, "library/redis", "7", vec![noise(6, 1000)]).await;
    s.counter.reset();
    let r = manifest(&s.berth, "hub/redis", "7").await;
    assert_eq!(r.headers()["docker-content-digest"], v2.digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), v2.manifest);
    assert_eq!((s.counter.count("GET", "/manifests/"), s.counter.count("HEAD", "/manifests/")), (1, 1));

    // With the default interval of this setup (1h), repeated pulls reach the upstream not at all.
    let fresh = setup(Auth::None, |_| {}).await;
    push_image(&fresh.upstream.url, "library/redis", "7", vec![noise(7, 1000)]).await;
    for _ in 0..5 {
        assert_eq!(manifest(&fresh.berth, "hub/redis", "7").await.status(), StatusCode::OK);
    }
    assert_eq!(fresh.counter.seen().len(), 1, "{:?}", fresh.counter.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_upstream_gone_cached_content_still_pulls_and_the_rest_fails_fast() {
    let mut s = setup(Auth::None, |u| u.revalidate_after = Duration::ZERO).await;
    let image = push_image(&s.upstream.url, "library/busybox", "1.36", vec![noise(8, 4000)]).await;
    push_image(&s.upstream.url, "library/busybox", "never-pulled", vec![noise(9, 10)]).await;
    assert_eq!(manifest(&s.berth, "hub/busybox", "1.36").await.status(), StatusCode::OK);
    let layer = &image.layers[0];
    let r = get(s.berth.url(&format!("/v2/hub/busybox/blobs/{layer}"))).await;
    assert_eq!(body_digest(r).await.unwrap(), *layer);

    s.upstream.stop();
    // The tag is due for revalidation, the upstream fails, the cached tag is served (stale-if-error).
    let r = manifest(&s.berth, "hub/busybox", "1.36").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    assert_eq!(manifest(&s.berth, "hub/busybox", &image.digest).await.status(), StatusCode::OK);
    let r = get(s.berth.url(&format!("/v2/hub/busybox/blobs/{layer}"))).await;
    assert_eq!(body_digest(r).await.unwrap(), *layer);

    // Uncached content fails quickly, with the upstream named in the message.
    let started = Instant::now();
    let r = manifest(&s.berth, "hub/busybox", "never-pulled").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("upstream docker.io"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let metrics = client().get(s.berth.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("berth_proxy_stale_serves_total{upstream=\"docker.io\"} "), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_404s_are_remembered_briefly() {
    let s = setup(Auth::None, |u| u.negative_ttl = Duration::from_secs(3600)).await;
    for _ in 0..3 {
        let r = manifest(&s.berth, "hub/nosuch", "latest").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    }
    assert_eq!(s.counter.count("GET", "/manifests/"), 1, "{:?}", s.counter.seen());
    // Digests are never negatively cached by tag; an unknown blob is a plain 404.
    let r = get(s.berth.url(&format!("/v2/hub/nosuch/blobs/{}", sha256(b"x")))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

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
        let on_disk = s.berth.blob_files().iter().any(|p| p.display().to_string().contains(&layer[7..]));
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
    let blobs: Vec<String> = s.berth.blob_files().iter().map(|p| p.display().to_string()).collect();
    assert!(!blobs.iter().any(|p| p.contains(layer.trim_start_matches("sha256:"))), "{blobs:?}");

    // Once the upstream behaves, the same pulls succeed and are cached.
    s.counter.shared.corrupt.store(false, Ordering::SeqCst);
    let r = manifest(&s.berth, "hub/node", &image.digest).await;
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    let r = get(s.berth.url(&format!("/v2/hub/node/blobs/{layer}"))).await;
    assert_eq!(body_digest(r).await.unwrap(), layer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_is_cached_at_once_and_its_platforms_on_demand() {
    let s = setup(Auth::None, |_| {}).await;
    let amd = push_image(&s.upstream.url, "library/golang", "amd64-only", vec![noise(13, 1000)]).await;
    let arm = push_image(&s.upstream.url, "library/golang", "arm64-only", vec![noise(14, 1000)]).await;
    let (index, index_digest) =
        push_index(&s.upstream.url, "library/golang", "1.23", &[("amd64", &amd), ("arm64", &arm)]).await;
    s.counter.reset();

    let r = manifest(&s.berth, "hub/golang", "1.23").await;
    assert_eq!(r.bytes().await.unwrap(), index);
    assert_eq!(s.counter.seen().len(), 1, "only the index is fetched: {:?}", s.counter.seen());
    // The amd64 client follows with its platform's manifest and layers.
    let r = manifest(&s.berth, "hub/golang", &amd.digest).await;
    assert_eq!(r.bytes().await.unwrap(), amd.manifest);
    let r = get(s.berth.url(&format!("/v2/hub/golang/blobs/{}", amd.layers[0]))).await;
    assert_eq!(body_digest(r).await.unwrap(), amd.layers[0]);
    assert_eq!(s.counter.count("GET", &arm.digest), 0, "arm64 was never asked for");
    let r = manifest(&s.berth, "hub/golang", &index_digest).await;
    assert_eq!(r.status(), StatusCode::OK, "the index is pullable by digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_auth_upstreams_need_the_right_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let good = temp_secret(dir.path(), "good", "s3cret\n");
    let s = setup(Auth::Htpasswd { user: "mirror", password: "s3cret" }, |u| {
        u.username = Some("mirror".into());
        u.password_file = Some(good.clone());
    })
    .await;
    // Push straight to Distribution with the same credentials.
    let authed = s.upstream.url.replacen("http://", "http://mirror:s3cret@", 1);
    let image = push_image(&authed, "library/httpd", "2.4", vec![noise(15, 2000)]).await;
    let r = manifest(&s.berth, "hub/httpd", "2.4").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);

    // A rotated, wrong password is read on the next login and refused with the upstream's words.
    std::fs::write(&good, "wrong").unwrap();
    let s2 = {
        let mut u = UpstreamConfig::new("docker.io", &s.counter.url);
        u.default = true;
        u.username = Some("mirror".into());
        u.password_file = Some(good.clone());
        TestServer::with_config(Config { proxy: ProxyConfig { upstreams: vec![u] }, ..Config::default() })
            .await
    };
    let r = manifest(&s2, "httpd", "2.4").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("wrong"), "the password leaked: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_size_limit_evicts_the_least_recently_pulled_content_only() {
    let s = setup(Auth::None, |u| u.max_size = Some(300_000)).await;
    let old = push_image(&s.upstream.url, "library/old", "1", vec![noise(16, 120_000)]).await;
    let mid = push_image(&s.upstream.url, "library/mid", "1", vec![noise(17, 120_000)]).await;
    let new = push_image(&s.upstream.url, "library/new", "1", vec![noise(18, 120_000)]).await;
    let pull = |repo: &'static str, image: common::upstream::Pushed| {
        let url = s.berth.url("");
        async move {
            let r = get(format!("{url}/v2/hub/{repo}/manifests/1")).await;
            assert_eq!(r.status(), StatusCode::OK);
            let r = get(format!("{url}/v2/hub/{repo}/blobs/{}", image.layers[0])).await;
            assert_eq!(body_digest(r).await.unwrap(), image.layers[0]);
        }
    };
    pull("old", old.clone()).await;
    pull("mid", mid.clone()).await;
    pull("old", old.clone()).await; // old is now more recent than mid
    pull("new", new.clone()).await;
    let proxy = s.berth.state.proxy.clone().unwrap();
    let evicted = proxy.maintain_once().await.unwrap();
    assert!(evicted >= 1, "nothing evicted");
    let layer_file = |d: &str| {
        let hex = d.trim_start_matches("sha256:").to_owned();
        s.berth.blob_files().iter().any(|p| p.ends_with(&hex))
    };
    assert!(!layer_file(&mid.layers[0]), "the least recently pulled layer is evicted");
    assert!(layer_file(&old.layers[0]) && layer_file(&new.layers[0]));
    // Evicted content is fetched again on demand.
    s.counter.reset();
    pull("mid", mid.clone()).await;
    assert_eq!(s.counter.count("GET", &mid.layers[0]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_token_upstreams_get_one_token_per_repository() {
    let tokens = TokenService::start("mirror", "s3cret").await;
    let dir = tempfile::tempdir().unwrap();
    let password = temp_secret(dir.path(), "password", "s3cret\n");
    let mut s = setup(Auth::None, |u| {
        u.username = Some("mirror".into());
        u.password_file = Some(password.clone());
    })
    .await;
    // Content goes in while the upstream is open; then it only accepts tokens from the service.
    let alpine =
        push_image(&s.upstream.url, "library/alpine", "3.20", vec![noise(30, 5000), noise(31, 7000)]).await;
    let nginx = push_image(&s.upstream.url, "library/nginx", "1.27", vec![noise(32, 3000)]).await;
    s.upstream.restart(tokens.auth()).await;
    assert_eq!(client().get(format!("{}/v2/", s.upstream.url)).send().await.unwrap().status(), 401);
    s.counter.reset();

    for (repo, image) in [("alpine", &alpine), ("nginx", &nginx)] {
        let r = manifest(&s.berth, &format!("hub/{repo}"), &image.digest).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), image.manifest);
        for layer in &image.layers {
            let r = get(s.berth.url(&format!("/v2/hub/{repo}/blobs/{layer}"))).await;
            assert_eq!(body_digest(r).await.unwrap(), *layer);
        }
    }
    // One 401 taught berth the scheme; then one token per repository served every request.
    assert_eq!(
        tokens.issued(),
        vec!["repository:library/alpine:pull".to_owned(), "repository:library/nginx:pull".to_owned()]
    );
    let seen = s.counter.seen();
    assert_eq!(seen.iter().filter(|r| !r.authorized).count(), 1, "{seen:?}");

    // A wrong password is refused by the token service, in its words, and nothing leaks.
    std::fs::write(&password, "guess").unwrap();
    let mut u = UpstreamConfig::new("docker.io", &s.counter.url);
    u.default = true;
    u.username = Some("mirror".into());
    u.password_file = Some(password.clone());
    let wrong =
        TestServer::with_config(Config { proxy: ProxyConfig { upstreams: vec![u] }, ..Config::default() })
            .await;
    let r = manifest(&wrong, "library/alpine", "3.20").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("incorrect username or password"), "{message}");
    assert!(!message.contains("guess"), "{message}");
    assert!(tokens.shared.refused.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checking_an_upstream_tells_unreachable_from_refused_credentials() {
    let check = |url: &str, creds: Credentials| {
        let config = UpstreamConfig::new("up", url);
        async move { Upstream::with_credentials(&config, creds, None).unwrap().check().await }
    };
    let basic =
        |user: &str, password: &str| Credentials::Basic { user: user.into(), password: password.into() };

    let open = Distribution::start(Auth::None).await;
    check(&open.url, Credentials::None).await.unwrap();

    let htpasswd = Distribution::start(Auth::Htpasswd { user: "mirror", password: "s3cret" }).await;
    check(&htpasswd.url, basic("mirror", "s3cret")).await.unwrap();
    match check(&htpasswd.url, basic("mirror", "nope")).await {
        Err(UpstreamError::Auth { detail, .. }) => {
            assert!(detail.contains("authentication required"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(check(&htpasswd.url, Credentials::None).await, Err(UpstreamError::Auth { .. })));

    let tokens = TokenService::start("mirror", "s3cret").await;
    let mut bearer = Distribution::start(Auth::None).await;
    bearer.restart(tokens.auth()).await;
    check(&bearer.url, basic("mirror", "s3cret")).await.unwrap();
    match check(&bearer.url, basic("mirror", "nope")).await {
        Err(UpstreamError::Auth { detail, .. }) => {
            assert!(detail.contains("incorrect username or password"), "{detail}")
        }
        other => panic!("{other:?}"),
    }

    let gone = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    assert!(matches!(check(&gone, Credentials::None).await, Err(UpstreamError::Connect { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_waited_out_briefly_and_otherwise_passed_on() {
    let s = setup(Auth::None, |u| u.revalidate_after = Duration::ZERO).await;
    let image = push_image(&s.upstream.url, "library/traefik", "3", vec![noise(33, 1000)]).await;
    s.counter.reset();
    // One 429 with Retry-After: 1 is waited out inside the pull.
    s.counter.shared.throttle.store(1, Ordering::SeqCst);
    let r = manifest(&s.berth, "hub/traefik", "3").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.counter.count("GET", "/manifests/3"), 2);

    // An upstream that keeps refusing: the client gets 429 TOOMANYREQUESTS for uncached content,
    // and the cached tag for a revalidation (stale-if-error).
    s.counter.shared.throttle.store(100, Ordering::SeqCst);
    let r = get(s.berth.url(&format!("/v2/hub/traefik/blobs/{}", image.layers[0]))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    let r = manifest(&s.berth, "hub/traefik", "3").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    s.counter.shared.throttle.store(0, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_to_blob_storage_on_another_host_carry_no_credentials() {
    // The upstream needs Basic auth and redirects blob GETs to "storage" on another host name.
    let dir = tempfile::tempdir().unwrap();
    let password = temp_secret(dir.path(), "password", "s3cret");
    let s = setup(Auth::Htpasswd { user: "mirror", password: "s3cret" }, |u| {
        u.username = Some("mirror".into());
        u.password_file = Some(password.clone());
    })
    .await;
    let authed = s.upstream.url.replacen("http://", "http://mirror:s3cret@", 1);
    let layers = vec![noise(34, 9000)];
    let image = push_image(&authed, "library/caddy", "2", layers.clone()).await;
    let storage_backend = Distribution::start(Auth::None).await;
    push_image(&storage_backend.url, "library/caddy", "2", layers).await;
    let storage = CountingProxy::start(&storage_backend.url).await;
    let other_host = storage.url.replace("127.0.0.1", "localhost");
    *s.counter.shared.redirect_blobs.lock().unwrap() = Some(other_host);

    assert_eq!(manifest(&s.berth, "hub/caddy", "2").await.status(), StatusCode::OK);
    let r = get(s.berth.url(&format!("/v2/hub/caddy/blobs/{}", image.layers[0]))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_digest(r).await.unwrap(), image.layers[0]);
    let fetched = storage.seen();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(!fetched[0].authorized, "credentials went to another host: {fetched:?}");
    assert!(s.counter.seen().iter().filter(|r| r.path.contains("/blobs/")).all(|r| r.authorized));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revalidation_intervals_follow_repository_patterns() {
    let s = setup(Auth::None, |u| {
        u.revalidate_after = Duration::from_secs(3600);
        u.revalidate =
            vec![RevalidateRule { repositories: "library/nightly-*".into(), after: Duration::ZERO }];
    })
    .await;
    push_image(&s.upstream.url, "library/nightly-build", "latest", vec![noise(35, 100)]).await;
    push_image(&s.upstream.url, "library/stable", "latest", vec![noise(36, 100)]).await;
    for repo in ["hub/nightly-build", "hub/stable"] {
        assert_eq!(manifest(&s.berth, repo, "latest").await.status(), StatusCode::OK);
    }
    s.counter.reset();
    for _ in 0..3 {
        for repo in ["hub/nightly-build", "hub/stable"] {
            assert_eq!(manifest(&s.berth, repo, "latest").await.status(), StatusCode::OK);
        }
    }
    assert_eq!(s.counter.count("HEAD", "library/nightly-build/manifests/latest"), 3);
    assert_eq!(s.counter.count("HEAD", "library/stable/"), 0, "{:?}", s.counter.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_nobody_pulls_expires_and_pulled_content_stays() {
    let s = setup(Auth::None, |u| u.unpulled_ttl = Some(Duration::from_secs(2))).await;
    let kept = push_image(&s.upstream.url, "library/kept", "1", vec![noise(37, 3000)]).await;
    let idle = push_image(&s.upstream.url, "library/idle", "1", vec![noise(38, 3000)]).await;
    let pull = |repo: &'static str, image: common::upstream::Pushed| {
        let url = s.berth.url("");
        async move {
            assert_eq!(get(format!("{url}/v2/hub/{repo}/manifests/1")).await.status(), StatusCode::OK);
            let r = get(format!("{url}/v2/hub/{repo}/blobs/{}", image.layers[0])).await;
            assert_eq!(body_digest(r).await.unwrap(), image.layers[0]);
        }
    };
    pull("kept", kept.clone()).await;
    pull("idle", idle.clone()).await;
    let proxy = s.berth.state.proxy.clone().unwrap();
    assert_eq!(proxy.maintain_once().await.unwrap(), 0, "nothing is old yet");
    // Keep pulling one image while the other ages past the TTL.
    let until = Instant::now() + Duration::from_millis(2600);
    while Instant::now() < until {
        pull("kept", kept.clone()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(proxy.maintain_once().await.unwrap() >= 1);
    let layer_file = |d: &str| {
        let hex = d.trim_start_matches("sha256:").to_owned();
        s.berth.blob_files().iter().any(|p| p.ends_with(&hex))
    };
    assert!(!layer_file(&idle.layers[0]), "unpulled content expired");
    assert!(layer_file(&kept.layers[0]), "pulled content stays");
    s.counter.reset();
    pull("idle", idle.clone()).await;
    assert_eq!(s.counter.count("GET", &idle.layers[0]), 1, "expired content is fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_berth_is_an_upstream_like_any_registry() {
    // A second berth, with a private multi-arch image, mirrored by the first under `team.local`.
    let upstream = TestServer::start().await;
    let amd = push_image(&upstream.url, "team/api", "amd64", vec![noise(40, 4000)]).await;
    let arm = push_image(&upstream.url, "team/api", "arm64", vec![noise(41, 4000)]).await;
    let (index, index_digest) =
        push_index(&upstream.url, "team/api", "2.0", &[("amd64", &amd), ("arm64", &arm)]).await;
    let counter = CountingProxy::start(&upstream.url).await;
    let mirror = TestServer::with_config(Config {
        proxy: ProxyConfig { upstreams: vec![UpstreamConfig::new("team.local", &counter.url)] },
        ..Config::default()
    })
    .await;

    let r = manifest(&mirror, "team.local/team/api", "2.0").await;
    assert_eq!(r.headers()["docker-content-digest"], index_digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), index);
    let r = manifest(&mirror, "team.local/team/api", &arm.digest).await;
    assert_eq!(r.bytes().await.unwrap(), arm.manifest);
    let r = get(mirror.url(&format!("/v2/team.local/team/api/blobs/{}", arm.layers[0]))).await;
    assert_eq!(body_digest(r).await.unwrap(), arm.layers[0]);
    // Tags come from the upstream; the platform nobody pulled was never fetched.
    let tags: serde_json::Value =
        get(mirror.url("/v2/team.local/team/api/tags/list")).await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["2.0", "amd64", "arm64"]));
    assert_eq!(counter.count("GET", &amd.layers[0]), 0);
    counter.reset();
    let r = get(mirror.url(&format!("/v2/team.local/team/api/blobs/{}", arm.layers[0]))).await;
    assert_eq!(body_digest(r).await.unwrap(), arm.layers[0]);
    assert!(counter.seen().is_empty(), "warm pulls stay local: {:?}", counter.seen());
}
