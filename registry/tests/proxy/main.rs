//! The pull-through cache against a real upstream: CNCF Distribution, with a counting proxy in
//! between that records every upstream request and can corrupt or hold back what it passes on.
//! Here: names, freshness and read-only rules; one fetch per blob in [`fetches`]; upstream
//! credentials, rate limits and redirects in [`upstreams`]; what leaves the cache in [`eviction`];
//! referrers of mirrored images in [`referrers`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod eviction;
mod fetches;
mod referrers;
mod upstreams;

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
    use berth_registry::meta::browse::TagOrder;
    let s = setup(Auth::None, |_| {}).await;
    push_image(&s.upstream.url, "library/alpine", "3.20", vec![noise(1, 1000)]).await;
    let repo: berth_core::oci::RepoName = "docker.io/library/alpine".parse().unwrap();
    let collector = s.berth.state.collector.clone().unwrap();
    let pulled_at = || async {
        s.berth.state.registry.flush_behind().await.unwrap();
        let page = collector.tag_page(&repo, TagOrder::Name, 0, 10).await.unwrap();
        page.and_then(|p| p.tags.into_iter().find(|t| t.name == "3.20")).map(|t| t.pulled_at)
    };
    let head =
        client().head(s.berth.url("/v2/docker.io/library/alpine/manifests/3.20")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(pulled_at().await, Some(None), "a HEAD caches the tag but is no pull");
    assert_eq!(manifest(&s.berth, "docker.io/library/alpine", "3.20").await.status(), StatusCode::OK);
    let at = pulled_at().await.flatten();
    assert!(at.is_some_and(|t| t > 0), "a GET through the cache is a pull: {at:?}");
}

/// A read of a mirrored repository with `header: value`.
async fn read_if(s: &TestServer, path: &str, header: (&str, &str)) -> reqwest::Response {
    client().get(s.url(path)).header("accept", ACCEPT).header(header.0, header.1).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_of_mirrored_repositories_honour_their_conditions() {
    let s = setup(Auth::None, |_| {}).await;
    let image = push_image(&s.upstream.url, "library/alpine", "3.20", vec![noise(8, 4000)]).await;
    let (manifest_tag, layer) = (format!("\"{}\"", image.digest), &image.layers[0]);
    let other = format!("\"sha256:{}\"", "0".repeat(64));
    let by_tag = "/v2/hub/alpine/manifests/3.20";

    // A cache in front of the mirror revalidating what it holds gets 304, even on a cold cache.
    let r = read_if(&s.berth, by_tag, ("if-none-match", &manifest_tag)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], manifest_tag.as_str());
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
    let r = read_if(&s.berth, by_tag, ("if-match", &other)).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers()["etag"], manifest_tag.as_str());
    assert_eq!(error_code(r).await, "PRECONDITION_FAILED");
    let r = read_if(&s.berth, by_tag, ("if-none-match", &other)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);

    // A blob not cached yet: the upstream's HEAD says it exists, and nothing is fetched for a 304.
    s.counter.reset();
    let blob = format!("/v2/hub/alpine/blobs/{layer}");
    let r = read_if(&s.berth, &blob, ("if-none-match", &format!("\"{layer}\""))).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["docker-content-digest"], layer.as_str());
    assert_eq!(r.headers()["cache-control"], "max-age=31536000");
    assert_eq!((s.counter.count("HEAD", "/blobs/"), s.counter.count("GET", "/blobs/")), (1, 0));
    let r = read_if(&s.berth, &blob, ("if-match", &other)).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let missing = format!("/v2/hub/alpine/blobs/sha256:{}", "1".repeat(64));
    let r = read_if(&s.berth, &missing, ("if-none-match", "*")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a condition does not make a missing blob exist");

    // Once cached, the same answers come without the upstream.
    let r = read_if(&s.berth, &blob, ("if-none-match", &other)).await;
    assert_eq!(body_digest(r).await.unwrap(), *layer);
    s.counter.reset();
    let r = read_if(&s.berth, &blob, ("if-none-match", &format!("\"{layer}\""))).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = client()
        .get(s.berth.url(&blob))
        .header("range", "bytes=0-9")
        .header("if-range", other.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "an If-Range naming other bytes gets the whole blob");
    assert_eq!(r.bytes().await.unwrap(), noise(8, 4000));
    assert_eq!(s.counter.seen(), vec![], "cached reads made upstream requests");
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
