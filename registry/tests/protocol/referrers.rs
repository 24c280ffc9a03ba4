//! A subject's referrers a page at a time (the spec's `Link`), bounded by count and by bytes,
//! and a copy by `berth replicate` that reads every page.

use std::collections::BTreeSet;

use berth_registry::replicate::{self, Request, Side};
use berth_registry::service::Limits;
use reqwest::{Method, StatusCode};

use super::common::*;

/// Pushes an artifact of type `at` on `subject` to `repo`, annotated with `note`; its digest.
async fn attach(s: &TestServer, repo: &str, subject: &str, at: &str, note: &str) -> String {
    let empty = push_blob(s, repo, b"{}").await;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 10},
        "annotations": {"note": note},
    }))
    .unwrap();
    let d = sha256(&body);
    assert_eq!(put_manifest(s, repo, &d, OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
    d
}

/// Every page from `path` on: the digests of each page.
async fn pages(s: &TestServer, path: &str) -> Vec<Vec<String>> {
    referrer_pages(s, path).await.into_iter().map(|p| p.digests).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_come_a_page_at_a_time() {
    let limits = Limits { referrers_page: 3, referrers_page_bytes: 4000, ..Limits::default() };
    let s = TestServer::with_limits(limits).await;
    let img = sha256(&image_manifest(&s, "r/p", "img", serde_json::json!({})).await);
    let (sig, sbom) = ("application/vnd.dev.cosign.artifact.sig.v1+json", "application/spdx+json");
    let mut sigs = Vec::new();
    for i in 0..5 {
        sigs.push(attach(&s, "r/p", &img, sig, &format!("sig {i}")).await);
    }
    let sboms =
        vec![attach(&s, "r/p", &img, sbom, "sbom 0").await, attach(&s, "r/p", &img, sbom, "sbom 1").await];

    // Three descriptors a page, in digest order, every one once.
    let all = pages(&s, &format!("/v2/r/p/referrers/{img}")).await;
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(all.concat(), sorted([sigs.clone(), sboms.clone()].concat()));
    // The filter goes on with the pages.
    let all = pages(
        &s,
        &format!("/v2/r/p/referrers/{img}?artifactType=application/vnd.dev.cosign.artifact.sig.v1%2Bjson"),
    )
    .await;
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2]);
    assert_eq!(all.concat(), sorted(sigs));

    // Large annotations: a page holds what fits its bytes, and at least one descriptor.
    let big = sha256(b"a subject with large referrers");
    let mut heavy = Vec::new();
    for i in 0..3 {
        heavy.push(attach(&s, "r/p", &big, sbom, &format!("{i}{}", "x".repeat(2500))).await);
    }
    let all = pages(&s, &format!("/v2/r/p/referrers/{big}")).await;
    assert_eq!(all, sorted(heavy).into_iter().map(|d| vec![d]).collect::<Vec<_>>());

    let r = send(Method::GET, s.url(&format!("/v2/r/p/referrers/{img}?last=not-a-digest"))).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_reads_every_page_of_the_referrers() {
    let source = TestServer::with_limits(Limits { referrers_page: 2, ..Limits::default() }).await;
    let destination = TestServer::start().await;
    let image = image_manifest(&source, "team/app", "app", serde_json::json!({})).await;
    let img = sha256(&image);
    assert_eq!(
        put_manifest(&source, "team/app", "v1", OCI_MANIFEST, &image).await.status(),
        StatusCode::CREATED
    );
    let mut attached = BTreeSet::new();
    for i in 0..5 {
        attached
            .insert(attach(&source, "team/app", &img, "application/spdx+json", &format!("sbom {i}")).await);
    }
    let side = |s: &TestServer| Side { url: s.url(""), ..Side::default() };
    let request = Request {
        from: side(&source),
        to: side(&destination),
        images: vec!["team/app:v1".into()],
        jobs: 1,
        ..Request::default()
    };
    let report = replicate::run(&request).await.unwrap();
    assert_eq!(report.referrers_copied, 5, "{report:?}");
    let copied: BTreeSet<String> =
        pages(&destination, &format!("/v2/team/app/referrers/{img}")).await.concat().into_iter().collect();
    assert_eq!(copied, attached);
    source.stop().await;
    destination.stop().await;
}
