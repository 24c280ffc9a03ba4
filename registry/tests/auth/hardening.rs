//! What an attacker tries: login timing that does not tell unknown users from wrong passwords,
//! tokens of removed users, down-scoped mounts, brute force, crafted headers, and one address
//! shared by many users.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_users_and_wrong_passwords_take_the_same_time() {
    // Every try fails on purpose, so failed logins must not slow these down.
    let s = setup(|a| a.failed_logins.free = u32::MAX).await;
    let url = s.berth.url("/token?service=berth");
    let time = |user: &'static str| {
        let url = url.clone();
        async move {
            let started = Instant::now();
            let r = client().get(&url).basic_auth(user, Some("wrong-password")).send().await.unwrap();
            assert_eq!(r.status(), 401);
            started.elapsed()
        }
    };
    // Interleaved, so drift in the machine's load affects both alike.
    let (mut unknown, mut known) = (vec![], vec![]);
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..1000 {
        unknown.push(time("nobody-by-this-name").await);
        known.push(time("bob").await);
        if Instant::now() > deadline {
            break;
        }
    }
    unknown.sort();
    known.sort();
    let (mu, mk) = (unknown[unknown.len() / 2].as_secs_f64(), known[known.len() / 2].as_secs_f64());
    // A short cut for unknown users would make them several times faster (bcrypt dominates).
    let ratio = mu / mk;
    assert!(
        (0.8..1.25).contains(&ratio),
        "median unknown {mu:.5}s vs known {mk:.5}s over {} tries",
        known.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_users_and_an_expired_robots_tokens_stop_working_at_once() {
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    let s = setup(|a| {
        a.robots.push(Robot {
            name: "short".into(),
            secret_hash: Some(bcrypt::hash("short-secret", 4).unwrap()),
            secret_hash_file: None,
            expires: Some(soon.to_string()),
            grants: vec![grant(&["team/**"], &[Action::Pull])],
        })
    })
    .await;
    let path = "/v2/team/app/manifests/v1";
    let bob = token_value(&s, Some(("bob", "bob-pw")), &["repository:team/app:pull"]).await;
    let robot = token_value(&s, Some(("short", "short-secret")), &["repository:team/app:pull"]).await;
    assert_eq!(with_bearer(&s, &bob, Method::GET, path).await.status(), 200);
    assert_eq!(with_bearer(&s, &robot, Method::GET, path).await.status(), 200);

    // bob leaves the htpasswd file; his token (good for minutes more) stops working with it.
    let file = s._dir.path().join("htpasswd");
    let rest: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, rest).unwrap();
    let refused = common::eventually(Duration::from_secs(15), || async {
        with_bearer(&s, &bob, Method::GET, path).await.status() == 401
    })
    .await;
    assert!(refused, "a removed user's token is refused");
    // The robot expires; so does its token, whatever the token's own lifetime says.
    let expired = common::eventually(Duration::from_secs(15), || async {
        with_bearer(&s, &robot, Method::GET, path).await.status() == 401
    })
    .await;
    assert!(expired, "an expired robot's token is refused");
    let carol = token_value(&s, Some(("carol", "carol-pw")), &["repository:team/app:pull"]).await;
    assert_eq!(with_bearer(&s, &carol, Method::GET, path).await.status(), 200, "others are unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_down_scoped_token_mounts_nothing_outside_its_scope() {
    let s = setup(|_| {}).await;
    let layer = &s.image.layers[0];
    let mount = format!("/v2/team/carol/blobs/uploads/?mount={layer}");
    // carol may read team/app by the rules, but this token is for team/carol alone.
    let narrow = token_value(&s, Some(("carol", "carol-pw")), &["repository:team/carol:pull,push"]).await;
    let r = with_bearer(&s, &narrow, Method::POST, &mount).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "no mount: an upload session instead");
    // A token that was also scoped to the source mounts.
    let wide = token_value(
        &s,
        Some(("carol", "carol-pw")),
        &["repository:team/carol:pull,push", "repository:team/app:pull"],
    )
    .await;
    let r = with_bearer(&s, &wide, Method::POST, &mount).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn metric(s: &Setup, name: &str) -> f64 {
    let text = client().get(s.berth.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_are_slowed_down_and_counted() {
    let s = setup(|a| a.failed_logins = FailedLogins { free: 2, max_wait: Duration::from_secs(2) }).await;
    let login = |password: &'static str| {
        let url = s.berth.url("/token?service=berth");
        async move { client().get(url).basic_auth("bob", Some(password)).send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(login("guess").await.status(), 401);
    }
    // Past the free failures, the next attempt is not heard at all, not even the right one.
    let r = login("bob-pw").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // The same name from Basic on a registry request is slowed alike.
    let r = client()
        .get(s.berth.url("/v2/team/app/tags/list"))
        .basic_auth("bob", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(metric(&s, "berth_auth_failed_logins_total").await >= 3.0);
    assert!(metric(&s, "berth_auth_throttled_logins_total").await >= 2.0);
    // Once the wait is over, the right password works and clears bob's failures.
    let back =
        common::eventually(Duration::from_secs(10), || async { login("bob-pw").await.status() == 200 }).await;
    assert!(back, "bob logs in after the wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crafted_host_or_forwarded_header_changes_no_challenge() {
    let realm = |r: &reqwest::Response| {
        let h = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        h.split("realm=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned()
    };
    let crafted = |url: String| {
        client()
            .get(url)
            .header("host", "evil.example")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .send()
    };
    // With an external URL, challenges name it whatever the request says.
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("bob:{}\n", bcrypt::hash("bob-pw", 4).unwrap())).unwrap();
    let auth = AuthConfig { htpasswd: Some(htpasswd), ..AuthConfig::default() };
    let pinned = TestServer::with_config(Config {
        auth: Some(auth.clone()),
        external_url: Some("https://registry.example.com".into()),
        ..Config::default()
    })
    .await;
    let r = crafted(pinned.url("/v2/")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(realm(&r), "https://registry.example.com/token");

    // Without one, the realm follows the request's own host, but forwarded headers count only
    // from a trusted proxy (none here), and a Host that is no host name is not used.
    let open = TestServer::with_config(Config { auth: Some(auth), ..Config::default() }).await;
    let r = crafted(open.url("/v2/")).await.unwrap();
    assert_eq!(realm(&r), "http://evil.example/token", "the client's own Host, plain scheme");
    let r = client().get(open.url("/v2/")).header("host", "evil.example/phish?").send().await.unwrap();
    assert_eq!(realm(&r), "http://localhost/token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_sessions_are_counted_per_user_behind_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let lines: String = ["alice", "carol"]
        .iter()
        .map(|u| format!("{u}:{}\n", bcrypt::hash(format!("{u}-pw"), 4).unwrap()))
        .collect();
    std::fs::write(&htpasswd, lines).unwrap();
    let auth = AuthConfig {
        htpasswd: Some(htpasswd),
        token: TokenConfig { enabled: false, ..TokenConfig::default() },
        anonymous: vec![grant(&["**"], &[Action::Pull, Action::Push])],
        ..AuthConfig::default()
    };
    let mut config =
        Config { auth: Some(auth), trusted_proxies: vec!["127.0.0.1".into()], ..Config::default() };
    config.limits.max_uploads_per_client = 2;
    let berth = TestServer::with_config(config).await;
    let start = |user: Option<&'static str>, forwarded: Option<&'static str>| {
        let mut req = client().post(berth.url("/v2/team/app/blobs/uploads/"));
        if let Some(u) = user {
            req = req.basic_auth(u, Some(format!("{u}-pw")));
        }
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        async move { req.send().await.unwrap().status() }
    };
    // Everyone comes through the same address (a load balancer), each user with their own cap.
    assert_eq!(start(Some("alice"), None).await, 202);
    assert_eq!(start(Some("alice"), None).await, 202);
    assert_eq!(start(Some("alice"), None).await, 429);
    assert_eq!(start(Some("carol"), None).await, 202, "carol is not locked out by alice");
    // Anonymous clients by the address the trusted proxy forwarded for.
    assert_eq!(start(None, Some("203.0.113.1")).await, 202);
    assert_eq!(start(None, Some("203.0.113.1")).await, 202);
    assert_eq!(start(None, Some("203.0.113.1")).await, 429);
    assert_eq!(start(None, Some("203.0.113.2")).await, 202);
}
