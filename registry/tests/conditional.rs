//! Conditional requests over HTTP: `If-Match` and `If-None-Match` on a manifest push or delete by
//! tag (or digest), against the `ETag` a `GET` answers — so a pipeline promoting a tag moves it
//! only from what it saw, and a 412 names what the tag names now — and on manifest and blob reads
//! (304), with `If-Range` on ranged blob reads.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};

async fn put_if(s: &TestServer, reference: &str, body: &[u8], header: (&str, &str)) -> reqwest::Response {
    client()
        .put(s.url(&format!("/v2/cas/app/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .header(header.0, header.1)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn etag(s: &TestServer, reference: &str) -> Option<String> {
    let r = send(Method::HEAD, s.url(&format!("/v2/cas/app/manifests/{reference}"))).await;
    r.headers().get("etag").map(|v| v.to_str().unwrap().to_owned())
}

/// Asserts a 412 whose `ETag` names `current` (none when the reference names nothing).
async fn refused(r: reqwest::Response, current: Option<&str>) {
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).as_deref(), current);
    assert_eq!(error_code(r).await, "PRECONDITION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moves_and_goes_only_from_what_the_client_saw() {
    let s = TestServer::start().await;
    let (one, two) = (
        image_manifest(&s, "cas/app", "one", serde_json::json!({})).await,
        image_manifest(&s, "cas/app", "two", serde_json::json!({})).await,
    );
    let (d1, d2) = (format!("\"{}\"", sha256(&one)), format!("\"{}\"", sha256(&two)));

    // Create only: the tag must not exist yet.
    assert_eq!(put_if(&s, "latest", &one, ("if-none-match", "*")).await.status(), StatusCode::CREATED);
    refused(put_if(&s, "latest", &two, ("if-none-match", "*")).await, Some(&d1)).await;
    assert_eq!(etag(&s, "latest").await.as_deref(), Some(d1.as_str()));
    assert_eq!(etag(&s, &sha256(&two)).await, None, "a refused push records no manifest");

    // Compare and swap, with the ETag a GET answered; a stale one is refused and told the new.
    let seen = etag(&s, "latest").await.unwrap();
    assert_eq!(put_if(&s, "latest", &two, ("if-match", &seen)).await.status(), StatusCode::CREATED);
    refused(put_if(&s, "latest", &one, ("if-match", &seen)).await, Some(&d2)).await;
    refused(put_if(&s, "latest", &one, ("if-match", &format!("W/{d2}"))).await, Some(&d2)).await;
    let listed = format!("\"sha256:{}\", {d2}", "0".repeat(64));
    assert_eq!(put_if(&s, "latest", &one, ("if-match", &listed)).await.status(), StatusCode::CREATED);
    refused(put_if(&s, "other", &one, ("if-match", "*")).await, None).await;

    // Deletes by tag: only the manifest seen is untagged.
    let delete_if = |value: String| {
        client().delete(s.url("/v2/cas/app/manifests/latest")).header("if-match", value).send()
    };
    refused(delete_if(d2.clone()).await.unwrap(), Some(&d1)).await;
    assert_eq!(etag(&s, "latest").await.as_deref(), Some(d1.as_str()));
    assert_eq!(delete_if(d1.clone()).await.unwrap().status(), StatusCode::ACCEPTED);
    refused(delete_if(d1.clone()).await.unwrap(), None).await;

    // By digest the reference names the manifest once the repository holds it.
    refused(put_if(&s, &sha256(&two), &two, ("if-none-match", "*")).await, Some(&d2)).await;
    let three = image_manifest(&s, "cas/app", "three", serde_json::json!({})).await;
    refused(put_if(&s, &sha256(&three), &three, ("if-match", "*")).await, None).await;
    let by_digest = format!("/v2/cas/app/manifests/{}", sha256(&two));
    let r = client().delete(s.url(&by_digest)).header("if-match", d1.as_str()).send().await.unwrap();
    refused(r, Some(&d2)).await;
    let r = client().delete(s.url(&by_digest)).header("if-none-match", "*").send().await.unwrap();
    refused(r, Some(&d2)).await;
    let r = client().delete(s.url(&by_digest)).header("if-match", d2.as_str()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_manifest_the_client_has_is_304() {
    let s = TestServer::start().await;
    let one = image_manifest(&s, "cas/app", "one", serde_json::json!({})).await;
    assert_eq!(put_manifest(&s, "cas/app", "v1", OCI_MANIFEST, &one).await.status(), StatusCode::CREATED);
    let seen = format!("\"{}\"", sha256(&one));
    let get = |method: Method, header: (&'static str, String)| {
        client().request(method, s.url("/v2/cas/app/manifests/v1")).header(header.0, header.1).send()
    };
    for method in [Method::GET, Method::HEAD] {
        // Revalidation (a cache in front of the registry, or a client that kept it): no body.
        let r = get(method.clone(), ("if-none-match", format!("W/\"x\", {seen}"))).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()["etag"], seen.as_str());
        assert_eq!(r.headers()["docker-content-digest"], sha256(&one).as_str());
        assert!(r.bytes().await.unwrap().is_empty());
        // Another version than the one held: the manifest itself.
        let r =
            get(method.clone(), ("if-none-match", format!("\"sha256:{}\"", "0".repeat(64)))).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // If-Match on a read: 412 when the tag names another manifest.
        let r = get(method.clone(), ("if-match", format!("\"sha256:{}\"", "0".repeat(64)))).await.unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(get(method, ("if-match", seen.clone())).await.unwrap().status(), StatusCode::OK);
    }
    let full = get(Method::GET, ("if-match", seen.clone())).await.unwrap();
    assert_eq!(full.bytes().await.unwrap().as_ref(), one.as_slice());
    // A manifest that is not there is a 404 whatever the condition.
    let r =
        client().get(s.url("/v2/cas/app/manifests/v9")).header("if-none-match", "*").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_reads_honour_conditions_and_if_range() {
    let s = TestServer::start().await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let digest = push_blob(&s, "cas/app", &data).await;
    let seen = format!("\"{digest}\"");
    let other = format!("\"sha256:{}\"", "0".repeat(64));
    let url = s.url(&format!("/v2/cas/app/blobs/{digest}"));
    let get = |method: Method, headers: &[(&'static str, String)]| {
        let mut r = client().request(method, url.clone());
        for (k, v) in headers {
            r = r.header(*k, v.clone());
        }
        r.send()
    };
    for method in [Method::GET, Method::HEAD] {
        // A cache revalidating what it holds gets no body; one holding something else, the blob.
        for held in [seen.clone(), format!("W/{seen}"), "*".to_owned()] {
            let r = get(method.clone(), &[("if-none-match", held)]).await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
            assert_eq!(r.headers()["etag"], seen.as_str());
            assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
            assert_eq!(r.headers()["cache-control"], "max-age=31536000");
            assert!(r.bytes().await.unwrap().is_empty());
        }
        let r = get(method.clone(), &[("if-none-match", other.clone())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "max-age=31536000", "a digest's bytes never change");
        let r = get(method.clone(), &[("if-match", other.clone())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(r.headers()["etag"], seen.as_str());
        assert_eq!(get(method, &[("if-match", seen.clone())]).await.unwrap().status(), StatusCode::OK);
    }
    // A blob that is not there is a 404 whatever the condition.
    let missing = format!("/v2/cas/app/blobs/sha256:{}", "1".repeat(64));
    let r = client().get(s.url(&missing)).header("if-none-match", "*").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // If-Range: the range while the validator names this blob, the whole blob otherwise (another
    // entity tag, a weak one, or a date: blobs answer no Last-Modified).
    let range = ("range", "bytes=10-19".to_owned());
    let r = get(Method::GET, &[range.clone(), ("if-range", seen.clone())]).await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
    for validator in [other, format!("W/{seen}"), "Sun, 06 Dec 2026 07:00:00 GMT".to_owned()] {
        let r = get(Method::GET, &[range.clone(), ("if-range", validator)]).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    s.stop().await;
}
