//! Talking to upstreams: Basic and Bearer credentials, telling unreachable from refused, rate
//! limits, and redirects to storage on another host.

use super::*;

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
