//! The token endpoint (GET and the OAuth2 POST forms): what a token grants, which tokens are
//! refused, and offline tokens refreshed as docker and containerd ask for them.

use super::*;

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
