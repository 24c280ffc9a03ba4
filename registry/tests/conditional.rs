//! Conditional manifest writes over HTTP: `If-Match` and `If-None-Match` on a push or delete by
//! tag (or digest), against the `ETag` a `GET` answers — so a pipeline promoting a tag moves it
//! only from what it saw, and a 412 names what the tag names now.
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
