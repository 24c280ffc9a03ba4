//! Access control end to end over HTTP: Basic and Bearer callers, the token endpoint (GET and
//! the OAuth2 POST forms), every endpoint against every kind of caller, refused tokens, and
//! login timing that does not tell unknown users from wrong passwords.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use berth_core::config::auth::{Action, AuthConfig, FailedLogins, Grant, Robot, Rule, TokenConfig};
use berth_core::config::Config;
use berth_registry::auth::token::{Claims, Signer};
use common::upstream::{noise, push_image, Pushed};
use common::{client, error_code, TestServer};
use reqwest::{Method, StatusCode};

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "fred"];
const ROBOT_SECRET: &str = "robot-secret-1";

fn rule(users: &[&str], repos: &[&str], actions: &[Action]) -> Rule {
    Rule {
        users: users.iter().map(|s| s.to_string()).collect(),
        repositories: repos.iter().map(|s| s.to_string()).collect(),
        actions: actions.to_vec(),
    }
}

fn grant(repos: &[&str], actions: &[Action]) -> Grant {
    Grant { repositories: repos.iter().map(|s| s.to_string()).collect(), actions: actions.to_vec() }
}

struct Setup {
    berth: TestServer,
    image: Pushed,
    _dir: tempfile::TempDir,
}

/// alice may do everything; bob pulls team/**; carol pulls and pushes there; dave pulls and
/// deletes; erin has no rule; the robot `ci` pulls and pushes team/**; anyone pulls public/**.
async fn setup(tune: impl FnOnce(&mut AuthConfig)) -> Setup {
    use Action::*;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let mut lines = String::new();
    for u in USERS {
        lines.push_str(&format!("{u}:{}\n", bcrypt::hash(format!("{u}-pw"), 5).unwrap()));
    }
    std::fs::write(&htpasswd, lines).unwrap();
    let mut auth = AuthConfig {
        htpasswd: Some(htpasswd),
        token: TokenConfig::default(),
        anonymous: vec![grant(&["public/**"], &[Pull])],
        rules: vec![
            rule(&["alice"], &["**"], &[Pull, Push, Delete]),
            rule(&["bob"], &["team/**"], &[Pull]),
            rule(&["carol"], &["team/**"], &[Pull, Push]),
            rule(&["dave"], &["team/**"], &[Pull, Delete]),
        ],
        robots: vec![Robot {
            name: "ci".into(),
            secret_hash: Some(bcrypt::hash(ROBOT_SECRET, 5).unwrap()),
            secret_hash_file: None,
            expires: Some("2999-01-01T00:00:00Z".into()),
            grants: vec![grant(&["team/**"], &[Pull, Push])],
        }],
        failed_logins: Default::default(),
    };
    tune(&mut auth);
    let berth = TestServer::with_config(Config { auth: Some(auth), ..Config::default() }).await;
    let admin = berth.url.replacen("http://", "http://alice:alice-pw@", 1);
    let image = push_image(&admin, "team/app", "v1", vec![noise(1, 3000)]).await;
    push_image(&admin, "public/tool", "1", vec![noise(2, 1000)]).await;
    push_image(&admin, "secret/vault", "1", vec![noise(3, 1000)]).await;
    Setup { berth, image, _dir: dir }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    NoRights,
    PullOnly,
    Pusher,
    Deleter,
    Robot,
}

fn basic(who: Who) -> Option<(&'static str, &'static str)> {
    match who {
        Who::Anonymous => None,
        Who::NoRights => Some(("erin", "erin-pw")),
        Who::PullOnly => Some(("bob", "bob-pw")),
        Who::Pusher => Some(("carol", "carol-pw")),
        Who::Deleter => Some(("dave", "dave-pw")),
        Who::Robot => Some(("ci", ROBOT_SECRET)),
    }
}

async fn call(
    s: &Setup,
    who: Who,
    method: Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> reqwest::Response {
    let mut req = client().request(method, s.berth.url(path));
    if let Some((u, p)) = basic(who) {
        req = req.basic_auth(u, Some(p));
    }
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_every_kind_of_caller_as_the_rules_say() {
    use Who::*;
    let s = setup(|_| {}).await;
    let d = s.image.digest.clone();
    let layer = s.image.layers[0].clone();
    let missing = format!("sha256:{}", "0".repeat(64));
    let manifest = s.image.manifest.clone();
    let oci = "application/vnd.oci.image.manifest.v1+json";
    // (endpoint, method, path, body, status when allowed, who is allowed)
    let all = [NoRights, PullOnly, Pusher, Deleter, Robot];
    let pullers = [PullOnly, Pusher, Deleter, Robot];
    type Row<'a> = (&'a str, Method, String, Option<(&'a str, Vec<u8>)>, u16, &'a [Who]);
    let rows: Vec<Row> = vec![
        ("base", Method::GET, "/v2/".into(), None, 200, &all),
        ("catalog", Method::GET, "/v2/_catalog".into(), None, 200, &all),
        ("tags", Method::GET, "/v2/team/app/tags/list".into(), None, 200, &pullers),
        ("manifest GET", Method::GET, "/v2/team/app/manifests/v1".into(), None, 200, &pullers),
        ("manifest HEAD", Method::HEAD, format!("/v2/team/app/manifests/{d}"), None, 200, &pullers),
        ("blob GET", Method::GET, format!("/v2/team/app/blobs/{layer}"), None, 200, &pullers),
        ("referrers", Method::GET, format!("/v2/team/app/referrers/{d}"), None, 200, &pullers),
        (
            "manifest PUT",
            Method::PUT,
            "/v2/team/app/manifests/v2".into(),
            Some((oci, manifest.clone())),
            201,
            &[Pusher, Robot],
        ),
        ("upload POST", Method::POST, "/v2/team/app/blobs/uploads/".into(), None, 202, &[Pusher, Robot]),
        (
            "manifest DELETE",
            Method::DELETE,
            format!("/v2/team/app/manifests/{missing}"),
            None,
            404,
            &[Deleter],
        ),
        ("blob DELETE", Method::DELETE, format!("/v2/team/app/blobs/{missing}"), None, 404, &[Deleter]),
        (
            "public pull",
            Method::GET,
            "/v2/public/tool/manifests/1".into(),
            None,
            200,
            &[Anonymous, NoRights, PullOnly, Pusher, Deleter, Robot],
        ),
        (
            "public push",
            Method::PUT,
            "/v2/public/tool/manifests/2".into(),
            Some((oci, manifest.clone())),
            201,
            &[],
        ),
        ("other repository", Method::GET, "/v2/secret/vault/manifests/1".into(), None, 200, &[]),
    ];
    let mut wrong = vec![];
    for (name, method, path, body, ok, allowed) in &rows {
        for who in [Anonymous, NoRights, PullOnly, Pusher, Deleter, Robot] {
            let r = call(&s, who, method.clone(), path, body.clone()).await;
            let want = if allowed.contains(&who) {
                *ok
            } else if who == Anonymous {
                401
            } else {
                403
            };
            if r.status().as_u16() != want {
                wrong.push(format!("{name} as {who:?}: {} (want {want})", r.status()));
                continue;
            }
            if want == 401 {
                let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
                assert!(challenge.starts_with("Bearer realm=\"http://"), "{challenge}");
                assert!(challenge.contains("service=\"berth\""), "{challenge}");
                if *name != "base" && *name != "catalog" {
                    assert!(challenge.contains("scope=\"repository:"), "{name}: {challenge}");
                }
                if *method != Method::HEAD {
                    assert_eq!(error_code(r).await, "UNAUTHORIZED");
                }
            } else if want == 403 && *method != Method::HEAD {
                assert_eq!(error_code(r).await, "DENIED");
            }
        }
    }
    assert!(wrong.is_empty(), "cells that disagree:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_lists_only_what_the_caller_may_pull_and_mounts_need_pull_on_the_source() {
    let s = setup(|_| {}).await;
    let repos = |who| {
        let s = &s;
        async move {
            let r = call(s, who, Method::GET, "/v2/_catalog", None).await;
            let v: serde_json::Value = r.json().await.unwrap();
            v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(repos(Who::PullOnly).await, ["public/tool", "team/app"]);
    assert_eq!(repos(Who::NoRights).await, ["public/tool"]);
    let page = call(&s, Who::PullOnly, Method::GET, "/v2/_catalog?n=1", None).await;
    assert!(page.headers().contains_key("link"));
    let v: serde_json::Value = page.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["public/tool"]));

    // carol may push to team/carol but may not read secret/vault: no mount from there, with or
    // without `from`; she gets an upload session instead.
    let vault_layer = {
        let r = call(&s, Who::Anonymous, Method::GET, "/v2/public/tool/manifests/1", None).await;
        assert_eq!(r.status(), 200);
        // The layer of secret/vault, as alice pushed it.
        push_image(
            &s.berth.url.replacen("http://", "http://alice:alice-pw@", 1),
            "secret/vault",
            "2",
            vec![noise(9, 500)],
        )
        .await
        .layers[0]
            .clone()
    };
    for query in [format!("mount={vault_layer}&from=secret/vault"), format!("mount={vault_layer}")] {
        let r = call(&s, Who::Pusher, Method::POST, &format!("/v2/team/carol/blobs/uploads/?{query}"), None)
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{query}");
    }
    // The team layer she can read mounts.
    let r = call(
        &s,
        Who::Pusher,
        Method::POST,
        &format!("/v2/team/carol/blobs/uploads/?mount={}&from=team/app", s.image.layers[0]),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn token(s: &Setup, who: Option<(&str, &str)>, scopes: &[&str]) -> reqwest::Response {
    let mut q: Vec<(&str, &str)> = vec![("service", "berth")];
    q.extend(scopes.iter().map(|sc| ("scope", *sc)));
    let mut req = client().get(s.berth.url("/token")).query(&q);
    if let Some((u, p)) = who {
        req = req.basic_auth(u, Some(p));
    }
    req.send().await.unwrap()
}

async fn token_value(s: &Setup, who: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let r = token(s, who, scopes).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert!(v["expires_in"].as_u64().unwrap() >= 10);
    v["token"].as_str().unwrap().to_owned()
}

async fn with_bearer(s: &Setup, token: &str, method: Method, path: &str) -> reqwest::Response {
    client().request(method, s.berth.url(path)).bearer_auth(token).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_grant_what_was_asked_and_allowed_and_nothing_else() {
    let s = setup(|_| {}).await;
    // Anonymous: public pulls only.
    let t = token_value(&s, None, &["repository:public/tool:pull,push", "repository:team/app:pull"]).await;
    assert_eq!(with_bearer(&s, &t, Method::GET, "/v2/public/tool/manifests/1").await.status(), 200);
    let r = with_bearer(&s, &t, Method::GET, "/v2/team/app/manifests/v1").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("error=\"insufficient_scope\""));

    // bob asks for push and gets only pull.
    let t = token_value(&s, Some(("bob", "bob-pw")), &["repository:team/app:pull,push"]).await;
    assert_eq!(with_bearer(&s, &t, Method::GET, "/v2/team/app/manifests/v1").await.status(), 200);
    let r = with_bearer(&s, &t, Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    // A token for one repository is no good for another.
    let r = with_bearer(&s, &t, Method::GET, "/v2/team/other/tags/list").await;
    assert_eq!(r.status(), 401);
    // The token names the caller's identity as its subject; the robot's token pushes.
    let t = token_value(&s, Some(("ci", ROBOT_SECRET)), &["repository:team/app:pull,push"]).await;
    assert_eq!(with_bearer(&s, &t, Method::POST, "/v2/team/app/blobs/uploads/").await.status(), 202);

    // Wrong password: 401 with the spec's code, at the token endpoint too.
    let r = token(&s, Some(("bob", "nope")), &["repository:team/app:pull"]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = token(&s, Some(("nobody", "nope")), &[]).await;
    assert_eq!(r.status(), 401);
    // Tokens for another service are not issued.
    let r = client().get(s.berth.url("/token?service=elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_foreign_expired_and_misaddressed_tokens_are_refused() {
    let s = setup(|_| {}).await;
    let good = token_value(&s, Some(("bob", "bob-pw")), &["repository:team/app:pull"]).await;
    let path = "/v2/team/app/manifests/v1";
    assert_eq!(with_bearer(&s, &good, Method::GET, path).await.status(), 200);

    // The server's own key, used by the test to sign claims the server never would.
    let key = s.berth.data.join("token-signing.key");
    let own = Signer::open(&key, false, &TokenConfig::default()).unwrap();
    let claims = own.verify(&good).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let forge = |f: &dyn Fn(&mut Claims)| {
        let mut c = claims.clone();
        f(&mut c);
        own.sign(&c).unwrap()
    };
    let expired = forge(&|c| c.exp = now - 600);
    let other_service = forge(&|c| c.aud = "elsewhere".into());
    let other_issuer = forge(&|c| c.iss = "elsewhere".into());
    let future = forge(&|c| c.nbf = now + 3600);
    // Widened claims without the signature to match.
    let mut parts: Vec<&str> = good.split('.').collect();
    let wide = forge(&|c| c.access[0].actions = vec!["pull".into(), "push".into(), "delete".into()]);
    let wide_claims = wide.split('.').nth(1).unwrap().to_owned();
    parts[1] = &wide_claims;
    let tampered = parts.join(".");
    // Another server's key (an unknown key id).
    let dir = tempfile::tempdir().unwrap();
    let stranger = Signer::open(&dir.path().join("k"), true, &TokenConfig::default()).unwrap();
    let unknown_key = stranger.sign(&claims).unwrap();
    let refresh = forge(&|c| c.refresh = true);
    for (name, t) in [
        ("expired", expired),
        ("another service", other_service),
        ("another issuer", other_issuer),
        ("not yet valid", future),
        ("tampered", tampered),
        ("unknown key id", unknown_key),
        ("a refresh token", refresh),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let r = with_bearer(&s, &t, Method::GET, path).await;
        assert_eq!(r.status(), 401, "{name}");
        assert!(r.headers().contains_key("www-authenticate"), "{name}");
        assert_eq!(error_code(r).await, "UNAUTHORIZED", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_tokens_refresh_as_docker_and_containerd_ask_for_them() {
    let s = setup(|auth| {
        auth.robots.push(Robot {
            name: "old".into(),
            secret_hash: Some(bcrypt::hash("old-secret", 4).unwrap()),
            secret_hash_file: None,
            expires: Some("2020-01-01T00:00:00Z".into()),
            grants: vec![grant(&["**"], &[Action::Pull])],
        })
    })
    .await;
    // docker: POST with the password grant and access_type=offline.
    let form = [
        ("grant_type", "password"),
        ("username", "carol"),
        ("password", "carol-pw"),
        ("service", "berth"),
        ("scope", "repository:team/app:pull,push repository:team/other:pull"),
        ("client_id", "docker"),
        ("access_type", "offline"),
    ];
    let r = client().post(s.berth.url("/token")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "repository:team/app:pull,push repository:team/other:pull");
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let access = v["access_token"].as_str().unwrap();
    assert_eq!(with_bearer(&s, access, Method::POST, "/v2/team/app/blobs/uploads/").await.status(), 202);

    // containerd: the refresh grant gets a new access token; the refresh token itself is no
    // access token.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", "berth"),
        ("scope", "repository:team/app:pull"),
        ("client_id", "containerd"),
    ];
    let r = client().post(s.berth.url("/token")).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let access = v["access_token"].as_str().unwrap();
    assert_eq!(with_bearer(&s, access, Method::GET, "/v2/team/app/manifests/v1").await.status(), 200);
    assert_eq!(with_bearer(&s, &refresh, Method::GET, "/v2/team/app/manifests/v1").await.status(), 401);
    // GET with offline_token=true (podman, older docker) also returns one.
    let r = client()
        .get(s.berth.url("/token?service=berth&offline_token=true&scope=repository:team/app:pull"))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["refresh_token"].is_string());

    // Bad grants: wrong password, forged refresh token, unknown grant type, an expired robot.
    let bad = [
        vec![("grant_type", "password"), ("username", "carol"), ("password", "x")],
        vec![("grant_type", "refresh_token"), ("refresh_token", "abc.def.ghi")],
        vec![("grant_type", "password"), ("username", "old"), ("password", "old-secret")],
    ];
    for form in bad {
        let r = client().post(s.berth.url("/token")).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 401, "{form:?}");
    }
    let r = client().post(s.berth.url("/token")).form(&[("grant_type", "magic")]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = call(&s, Who::Anonymous, Method::GET, "/v2/", None).await;
    assert_eq!(r.status(), 401);
    let r = client().get(s.berth.url("/v2/")).basic_auth("old", Some("old-secret")).send().await.unwrap();
    assert_eq!(r.status(), 401, "an expired robot is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_only_registries_and_changed_htpasswd_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, format!("alice:{}\n", bcrypt::hash("one", 4).unwrap())).unwrap();
    let auth = AuthConfig {
        htpasswd: Some(file.clone()),
        token: TokenConfig { enabled: false, ..TokenConfig::default() },
        anonymous: vec![grant(&["public/**"], &[Action::Pull])],
        ..AuthConfig::default()
    };
    let berth = TestServer::with_config(Config { auth: Some(auth), ..Config::default() }).await;
    // Anonymous may pull public/** and learns nothing else at /v2/ (no challenge needed).
    let r = client().get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(berth.url("/v2/team/app/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="));
    // Without rules, a user may do everything.
    let r = client()
        .post(berth.url("/v2/team/app/blobs/uploads/"))
        .basic_auth("alice", Some("one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The token endpoint is off.
    assert_eq!(client().get(berth.url("/token")).send().await.unwrap().status(), 404);

    // The file changes: the new password works, the old one does not (within a few seconds).
    std::fs::write(&file, format!("alice:{}\n", bcrypt::hash("two", 4).unwrap())).unwrap();
    let switched = common::eventually(Duration::from_secs(10), || async {
        client().get(berth.url("/v2/")).basic_auth("alice", Some("two")).send().await.unwrap().status() == 200
    })
    .await;
    assert!(switched, "the changed htpasswd file was picked up");
}

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
async fn proxied_repositories_obey_the_same_rules() {
    use berth_core::config::{ProxyConfig, UpstreamConfig};
    use common::upstream::{body_digest, Auth, Distribution};
    let upstream = Distribution::start(Auth::None).await;
    let image = push_image(&upstream.url, "library/alpine", "3.20", vec![noise(50, 2000)]).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("bob:{}\n", bcrypt::hash("bob-pw", 4).unwrap())).unwrap();
    let auth = AuthConfig {
        htpasswd: Some(htpasswd),
        token: TokenConfig { enabled: false, ..TokenConfig::default() },
        rules: vec![rule(&["bob"], &["docker.io/library/**"], &[Action::Pull])],
        ..AuthConfig::default()
    };
    let hub = UpstreamConfig::new("docker.io", &upstream.url);
    let berth = TestServer::with_config(Config {
        auth: Some(auth),
        proxy: ProxyConfig { upstreams: vec![hub] },
        ..Config::default()
    })
    .await;
    let get = |who: Option<(&'static str, &'static str)>, path: String| {
        let url = berth.url(&path);
        async move {
            let mut req = client().get(url);
            if let Some((u, p)) = who {
                req = req.basic_auth(u, Some(p));
            }
            req.send().await.unwrap()
        }
    };
    let manifest = "/v2/docker.io/library/alpine/manifests/3.20".to_owned();
    assert_eq!(get(None, manifest.clone()).await.status(), 401, "anonymous: no pulls through the mirror");
    assert_eq!(get(Some(("bob", "bob-pw")), manifest).await.status(), 200);
    let blob = format!("/v2/docker.io/library/alpine/blobs/{}", image.layers[0]);
    let r = get(Some(("bob", "bob-pw")), blob).await;
    assert_eq!(body_digest(r).await.unwrap(), image.layers[0]);
    // A name outside bob's rule is refused before anything is fetched.
    let r = get(Some(("bob", "bob-pw")), "/v2/docker.io/bitnami/redis/manifests/7".to_owned()).await;
    assert_eq!(r.status(), 403);
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
