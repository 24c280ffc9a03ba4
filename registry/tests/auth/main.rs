//! Access control end to end over HTTP: every endpoint against every kind of caller (Basic and
//! Bearer), the catalog and mounts, Basic-only registries and proxied repositories; the token
//! endpoint in [`tokens`]; what an attacker tries in [`hardening`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod hardening;
mod tokens;

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
