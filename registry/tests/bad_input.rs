//! Bad input gets the spec's error code and a clear message — never a panic, a hang, a 5xx or a
//! half-written object.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use berth_registry::service::Limits;
use common::*;
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_invalid_names() {
    let s = TestServer::start().await;
    let d = sha256(b"x");
    let cases = [
        ("/v2/../../etc/passwd/tags/list", &[400u16, 404][..]),
        ("/v2/%2e%2e/%2e%2e/etc/tags/list", &[400, 404]),
        ("/v2/a/%2e%2e/b/manifests/latest", &[400, 404]),
        ("/v2/a%2f..%2fb/tags/list", &[404]),
        ("//v2/a/tags/list", &[404]),
        ("/v2//etc/passwd/tags/list", &[400, 404]),
        ("/v2/UPPER/case/tags/list", &[400]),
        ("/v2/a/blobs/sha256:../../../../etc/passwd", &[400, 404]),
        ("/v2/a/blobs/sha256:..%2f..%2fetc%2fpasswd", &[404]),
        ("/v2/a/blobs/sha256:%2e%2e", &[400]),
        ("/v2/a/blobs/uploads/..%2f..%2fstorage", &[404]),
        ("/v2/a/manifests/..", &[404]),
        ("/v2/a%00b/tags/list", &[400, 404]),
    ];
    for (path, allowed) in cases {
        let status = raw_status(s.addr, "GET", path).await;
        assert!(allowed.contains(&status), "{path}: got {status}, want one of {allowed:?}");
    }
    let long = format!("/v2/{}/tags/list", "a/".repeat(200) + "a");
    let r = send(Method::GET, s.url(&long)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = send(Method::GET, s.url(&format!("/v2/Bad/blobs/{d}"))).await;
    assert_eq!(error_code(r).await, "NAME_INVALID");
    // Nothing was written anywhere near the data directory's parent.
    assert!(!s.data.parent().unwrap().join("etc").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_digests() {
    let s = TestServer::start().await;
    for d in [
        "sha256:abc",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256",
        "sha256:",
    ] {
        let r = send(Method::GET, s.url(&format!("/v2/r/a/blobs/{d}"))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{d}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID", "{d}");
        let r = client()
            .post(s.url(&format!("/v2/r/a/blobs/uploads/?digest={d}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, "DIGEST_INVALID", "POST ?digest={d}");
    }
    let r = client().post(s.url("/v2/r/a/blobs/uploads/?mount=nonsense")).send().await.unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    s.stop().await;
}

/// Every way of uploading, each with content that does not match the digest it claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_stores_nothing_on_every_path() {
    let s = TestServer::start().await;
    let c = client();
    let claimed = sha256(b"what the client says");
    let body = b"what the client sends".to_vec();
    let session = || start_session(&s, "r/b");
    let expect_invalid = |r: reqwest::Response, what: &'static str| async move {
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID", "{what}");
    };

    let r = c
        .post(s.url(&format!("/v2/r/b/blobs/uploads/?digest={claimed}")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect_invalid(r, "monolithic POST").await;

    let loc = session().await;
    let r = c.put(s.url(&format!("{loc}?digest={claimed}"))).body(body.clone()).send().await.unwrap();
    expect_invalid(r, "POST then PUT").await;

    let loc = session().await;
    c.patch(s.url(&loc)).header("content-range", "0-4").body(body[..5].to_vec()).send().await.unwrap();
    c.patch(s.url(&loc))
        .header("content-range", format!("5-{}", body.len() - 1))
        .body(body[5..].to_vec())
        .send()
        .await
        .unwrap();
    let r = c.put(s.url(&format!("{loc}?digest={claimed}"))).send().await.unwrap();
    expect_invalid(r, "chunked PATCHes then PUT").await;

    let loc = session().await;
    c.patch(s.url(&loc)).body(body[..5].to_vec()).send().await.unwrap();
    let r = c.put(s.url(&format!("{loc}?digest={claimed}"))).body(body[5..].to_vec()).send().await.unwrap();
    expect_invalid(r, "PATCH then PUT with the last chunk").await;

    let loc = session().await;
    let claimed512 = sha512(b"what the client says");
    let r = c.put(s.url(&format!("{loc}?digest={claimed512}"))).body(body.clone()).send().await.unwrap();
    expect_invalid(r, "sha512 session").await;

    let loc = session().await;
    let r = c.put(s.url(&loc)).body(body.clone()).send().await.unwrap();
    expect_invalid(r, "PUT without a digest").await;

    for d in [&claimed, &claimed512, &sha256(&body)] {
        let r = send(Method::HEAD, s.url(&format!("/v2/r/b/blobs/{d}"))).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{d} must not exist");
    }
    assert!(s.stored_blobs().is_empty(), "no blob reached storage: {:?}", s.stored_blobs());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests() {
    let s = TestServer::start().await;
    let good = image_manifest(&s, "r/c", "bad", serde_json::json!({})).await;
    let text = String::from_utf8(good.clone()).unwrap();
    let ghost = sha256(b"missing layer");

    let missing_layer = text.replacen(
        "\"layers\":[{",
        &format!(
            "\"layers\":[{{\"annotations\":{{}},\"digest\":\"{ghost}\",\"mediaType\":\"x\",\"size\":1}},{{"
        ),
        1,
    );
    let r = put_manifest(&s, "r/c", "t", OCI_MANIFEST, missing_layer.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": ghost, "size": 3}]});
    let r = put_manifest(&s, "r/c", "idx", OCI_INDEX, &serde_json::to_vec(&index).unwrap()).await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN", "index with an unknown child");

    let other_repo = put_manifest(&s, "r/elsewhere", "t", OCI_MANIFEST, &good).await;
    assert_eq!(
        error_code(other_repo).await,
        "MANIFEST_BLOB_UNKNOWN",
        "blobs of another repository do not count"
    );

    // Descriptors of another size than the content they name: every client pulling the image
    // would refuse the blob (containerd checks the size), so the push is refused instead.
    let mut wrong_size: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let layer_size = wrong_size["layers"][0]["size"].as_u64().unwrap();
    wrong_size["layers"][0]["size"] = (layer_size + 1).into();
    let r = put_manifest(&s, "r/c", "t", OCI_MANIFEST, &serde_json::to_vec(&wrong_size).unwrap()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_INVALID", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("says {} bytes", layer_size + 1)), "{message}");
    let r = put_manifest(&s, "r/c", &sha256(&good), OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let index = |size: usize| {
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(&good), "size": size}]});
        serde_json::to_vec(&index).unwrap()
    };
    let r = put_manifest(&s, "r/c", "idx", OCI_INDEX, &index(good.len() - 1)).await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID", "index with a child of another size");
    let r = put_manifest(&s, "r/c", &sha256(&index(good.len())), OCI_INDEX, &index(good.len())).await;
    assert_eq!(r.status(), StatusCode::CREATED, "the same index with the child's size");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, b"".to_vec()),
        (OCI_MANIFEST, b"[1,2,3]".to_vec()),
        (OCI_INDEX, good.clone()),
        ("application/json", good.clone()),
        ("application/vnd.docker.distribution.manifest.v1+prettyjws", good.clone()),
        (OCI_MANIFEST, text.replace("\"schemaVersion\":2", "\"schemaVersion\":3").into_bytes()),
        (OCI_MANIFEST, text.replace("sha256:", "sha256:zz").into_bytes()),
    ];
    for (ct, body) in cases {
        let r = put_manifest(&s, "r/c", "t", ct, &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{ct}: {}", String::from_utf8_lossy(&body));
        let code = error_code(r).await;
        assert_eq!(code, "MANIFEST_INVALID", "{ct}");
    }
    let r = put_manifest(&s, "r/c", &sha256(b"other bytes"), OCI_MANIFEST, &good).await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID", "digest reference that does not match the body");
    let r = put_manifest(&s, "r/c", "-bad-tag", OCI_MANIFEST, &good).await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");

    let tags = send(Method::GET, s.url("/v2/r/c/tags/list")).await;
    let tags: serde_json::Value = tags.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!([]), "no refused manifest left a tag");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_size_limit() {
    let s = TestServer::start().await;
    let base = image_manifest(&s, "r/d", "big", serde_json::json!({})).await;
    let sized = |n: usize| {
        let mut v: serde_json::Value = serde_json::from_slice(&base).unwrap();
        v["annotations"] = serde_json::json!({"pad": ""});
        let without = serde_json::to_vec(&v).unwrap().len();
        v["annotations"]["pad"] = "x".repeat(n - without).into();
        let out = serde_json::to_vec(&v).unwrap();
        assert_eq!(out.len(), n);
        out
    };
    let limit = 4 << 20;
    let r = put_manifest(&s, "r/d", "max", OCI_MANIFEST, &sized(limit)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "exactly 4 MiB is accepted");
    let r = put_manifest(&s, "r/d", "over", OCI_MANIFEST, &sized(limit + 1)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // Streamed without a Content-Length, the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        sized(limit + 1).chunks(65536).map(|c| Ok(c.to_vec())).collect();
    let r = client()
        .put(s.url("/v2/r/d/manifests/streamed"))
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_content_range_and_lengths() {
    let s = TestServer::start().await;
    let c = client();
    let loc = start_session(&s, "r/e").await;
    for bad in ["garbage", "5-1", "-", "0-", "a-b", "0-99999999999999999999999"] {
        let r = c.patch(s.url(&loc)).header("content-range", bad).body("abc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
    }
    let r = c.patch(s.url(&loc)).header("content-range", "0-9").body("abc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "range says 10 bytes, body has 3");
    let status = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(status.headers()["range"], "0-0", "nothing was recorded");
    let r = c.patch(s.url(&loc)).header("content-range", "0-2").body("abc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "the session still works");
    for bad in ["many", "-1", "1.5", ""] {
        let r = c.get(s.url(&format!("/v2/r/e/tags/list?n={bad}"))).send().await.unwrap();
        assert_eq!(error_code(r).await, "PAGINATION_NUMBER_INVALID", "n={bad}");
    }
    // An `n` past any number's range is a large page, as every large `n` is.
    let r = c.get(s.url("/v2/_catalog?n=100000000000000000000000")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_foreign_and_expired_upload_ids() {
    let s = TestServer::with_limits(Limits { upload_ttl: Duration::from_secs(1), ..Limits::default() }).await;
    let c = client();
    let unknown = "/v2/r/f/blobs/uploads/0b7c4e9a-5a43-4c1e-9d8e-1f2a3b4c5d6e";
    for m in [Method::GET, Method::PATCH, Method::PUT, Method::DELETE] {
        let r = c.request(m.clone(), s.url(unknown)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{m}");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN", "{m}");
    }
    let r = c.get(s.url("/v2/r/f/blobs/uploads/not-an-id")).send().await.unwrap();
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    let loc = start_session(&s, "r/f").await;
    let foreign = loc.replace("/r/f/", "/r/other/");
    let r = c.get(s.url(&foreign)).send().await.unwrap();
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN", "a session belongs to its repository");

    c.patch(s.url(&loc)).body("data").send().await.unwrap();
    // Wait past the TTL (sessions are dated in whole seconds).
    let expired = eventually(Duration::from_secs(10), || async {
        c.get(s.url(&loc)).send().await.unwrap().status() == StatusCode::NOT_FOUND
    })
    .await;
    assert!(expired, "the session expired");
    let d = sha256(b"data");
    let r = c.put(s.url(&format!("{loc}?digest={d}"))).send().await.unwrap();
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_blob_uploaded_by_many_clients_at_once() {
    let s = TestServer::start().await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = sha256(&data);
    let uploads = (0..24).map(|i| {
        let (s, data, d) = (&s, data.clone(), d.clone());
        async move {
            let c = client();
            let repo = format!("same/r{}", i % 4);
            if i % 2 == 0 {
                c.post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
                    .body(data)
                    .send()
                    .await
                    .unwrap()
                    .status()
            } else {
                let loc =
                    c.post(s.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap().headers()
                        ["location"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                c.patch(s.url(&loc)).body(data).send().await.unwrap();
                c.put(s.url(&format!("{loc}?digest={d}"))).send().await.unwrap().status()
            }
        }
    });
    for status in futures_util::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    for i in 0..4 {
        let r = send(Method::GET, s.url(&format!("/v2/same/r{i}/blobs/{d}"))).await;
        assert!(r.bytes().await.unwrap().as_ref() == data.as_slice(), "content intact in r{i}");
    }
    assert_eq!(s.stored_blobs().len(), 1, "stored once");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_methods_and_garbage_paths() {
    let s = TestServer::start().await;
    let r = client().request(Method::PATCH, s.url("/v2/r/g/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    // A bounded sweep of odd paths: every answer is a 4xx with the error envelope, never a 5xx.
    let pieces = [
        "",
        "/",
        "..",
        "%",
        "%zz",
        "blobs",
        "uploads",
        "manifests",
        "tags",
        "list",
        "referrers",
        "sha256:",
        "_catalog",
        "a",
        "A",
        "-",
        "_",
        "\u{e9}",
        "a b",
        ";",
        "?n=1",
        "#frag",
    ];
    let mut seen = 0;
    for a in pieces {
        for b in pieces {
            let path = format!("/v2/{a}/{b}");
            let status = raw_status(s.addr, "GET", &path.replace(' ', "%20")).await;
            assert!((200..500).contains(&status), "{path}: {status}");
            seen += 1;
        }
    }
    assert_eq!(seen, pieces.len() * pieces.len());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_stalled_bodies_are_cut_off() {
    use berth_core::config::{Config, LimitsConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = LimitsConfig { body_idle_timeout: Duration::from_secs(1), ..LimitsConfig::default() };
    let s = TestServer::with_config(Config { limits, ..Config::default() }).await;

    // A request head over the limit (64 KiB by default) gets 431, not an allocation spree.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let huge = format!("GET /v2/ HTTP/1.1\r\nHost: test\r\nX-Junk: {}\r\n\r\n", "a".repeat(100 << 10));
    let _ = conn.write_all(huge.as_bytes()).await;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // A client that promises 1000 bytes, sends 10 and stalls is answered (and let go) soon after
    // the idle timeout, and its upload session stays usable.
    let session = start_session(&s, "slow/client").await;
    let path = session.trim_start_matches(&s.url).to_owned();
    let status_url = format!("{}{path}", s.url);
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled request was still open after 20 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "cut off before the idle timeout");
    let r = client().get(&status_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "the session survives the stalled request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_upload_session() {
    use berth_core::config::{Config, LimitsConfig};
    let limits = LimitsConfig { max_uploads_per_client: 3, ..LimitsConfig::default() };
    let s = TestServer::with_config(Config { limits, ..Config::default() }).await;
    let start = || async { client().post(s.url("/v2/many/sessions/blobs/uploads/")).send().await.unwrap() };
    let mut sessions = vec![];
    for _ in 0..3 {
        let r = start().await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sessions.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    let r = start().await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // Finishing or cancelling one frees a slot.
    let r = client().delete(s.url(&sessions[0])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let data = b"finished";
    let digest = sha256(data);
    let r = client()
        .put(s.url(&format!("{}?digest={digest}", sessions[1])))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(start().await.status(), StatusCode::ACCEPTED);
    assert_eq!(start().await.status(), StatusCode::ACCEPTED);
    assert_eq!(start().await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Monolithic pushes and mounts open no session and are not limited.
    let r = client()
        .post(s.url(&format!("/v2/many/sessions/blobs/uploads/?digest={digest}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
