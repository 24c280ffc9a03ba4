//! The distribution API as clients use it, over a real socket: headers, status codes and bodies.
//! Here reads, manifests, listings and deletes; pushes of blobs in [`uploads`]; referrers a page
//! at a time in [`referrers`].
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod referrers;
mod uploads;

use berth_registry::service::Limits;
use common::*;
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_and_version_header() {
    let s = TestServer::start().await;
    for path in ["/v2/", "/v2"] {
        let r = send(Method::GET, s.url(path)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["docker-distribution-api-version"], "registry/2.0");
    }
    let r = send(Method::GET, s.url("/v2/nothing/here/tags/list")).await;
    assert_eq!(r.headers()["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_reads_and_ranges() {
    let s = TestServer::start().await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let d = push_blob(&s, "r/a", &data).await;
    let url = s.url(&format!("/v2/r/a/blobs/{d}"));

    let head = send(Method::HEAD, url.clone()).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "1000");
    assert_eq!(head.headers()["docker-content-digest"], d.as_str());

    let get = client().get(&url).send().await.unwrap();
    assert_eq!(get.headers()["docker-content-digest"], d.as_str());
    assert_eq!(get.bytes().await.unwrap().as_ref(), data.as_slice());

    let range = |r: &'static str| client().get(&url).header("range", r).send();
    let r = range("bytes=10-19").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);

    let r = range("bytes=-5").await.unwrap();
    assert_eq!(r.headers()["content-range"], "bytes 995-999/1000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[995..]);

    let r = range("bytes=990-5000").await.unwrap();
    assert_eq!(r.headers()["content-range"], "bytes 990-999/1000", "end is clipped");

    let r = range("bytes=1000-").await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */1000");

    let r = range("bytes=500-0").await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "a range that ends before it starts");

    let r = range("bytes=0-1,5-6").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "multi-range requests get the whole blob");

    let other = send(Method::GET, s.url(&format!("/v2/r/other/blobs/{d}"))).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "blobs are per repository");
    assert_eq!(error_code(other).await, "BLOB_UNKNOWN");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_blobs_and_manifests() {
    let s = TestServer::start().await;
    let c = client();
    let data = b"sha512 content".to_vec();
    let d = sha512(&data);
    let r =
        c.post(s.url(&format!("/v2/r/f/blobs/uploads/?digest={d}"))).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // and through a session, where the algorithm is only known at the end
    let loc = start_session(&s, "r/f").await;
    c.patch(s.url(&loc)).body(b"chunk-one".to_vec()).send().await.unwrap();
    let d2 = sha512(b"chunk-onechunk-two");
    let r = c.put(s.url(&format!("{loc}?digest={d2}"))).body(b"chunk-two".to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(Method::GET, s.url(&format!("/v2/r/f/blobs/{d2}"))).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"chunk-onechunk-two");

    let m = image_manifest(&s, "r/f", "512", serde_json::json!({})).await;
    let md = sha512(&m);
    let r = put_manifest(&s, "r/f", &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    let r = send(Method::GET, s.url(&format!("/v2/r/f/manifests/{md}"))).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mount() {
    let s = TestServer::start().await;
    let c = client();
    let d = push_blob(&s, "src/repo", b"mount me").await;
    let r =
        c.post(s.url(&format!("/v2/dst/one/blobs/uploads/?mount={d}&from=src/repo"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], format!("/v2/dst/one/blobs/{d}").as_str());
    let r =
        c.post(s.url(&format!("/v2/dst/two/blobs/uploads/?mount={d}&from=empty/repo"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "source lacks it: an upload session instead");
    let r = c.post(s.url(&format!("/v2/dst/three/blobs/uploads/?mount={d}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "automatic mount without from");
    let missing = sha256(b"nobody has this");
    let r = c.post(s.url(&format!("/v2/dst/four/blobs/uploads/?mount={missing}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r =
        c.post(s.url(&format!("/v2/dst/five/blobs/uploads/?mount={d}&from=Bad..Name"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "an invalid from is no mount");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_kinds_subject_and_referrers() {
    let s = TestServer::start().await;
    let img = image_manifest(&s, "r/g", "img", serde_json::json!({})).await;
    let img_d = sha256(&img);
    let r = put_manifest(&s, "r/g", "v1", OCI_MANIFEST, &img).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], format!("/v2/r/g/manifests/{img_d}").as_str());

    for path in ["v1".to_owned(), img_d.clone()] {
        let r = send(Method::HEAD, s.url(&format!("/v2/r/g/manifests/{path}"))).await;
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["content-length"], img.len().to_string().as_str());
        assert_eq!(r.headers()["docker-content-digest"], img_d.as_str());
    }

    // Docker schema 2 and a manifest list over it.
    let docker = String::from_utf8(img.clone())
        .unwrap()
        .replace(OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json");
    let r = put_manifest(
        &s,
        "r/g",
        "docker",
        "application/vnd.docker.distribution.manifest.v2+json",
        docker.as_bytes(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let list = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": sha256(docker.as_bytes()), "size": docker.len(),
            "platform": {"architecture": "amd64", "os": "linux"}}]});
    let list = serde_json::to_vec(&list).unwrap();
    let r =
        put_manifest(&s, "r/g", "list", "application/vnd.docker.distribution.manifest.list.v2+json", &list)
            .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Artifacts that refer to the image, and one to a subject that was never pushed.
    let empty = push_blob(&s, "r/g", b"{}").await;
    let artifact = |at: &str, subject: &str, note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 10},
            "annotations": {"note": note},
        }))
        .unwrap()
    };
    let sig = artifact("application/vnd.dev.cosign.artifact.sig.v1+json", &img_d, "sig");
    let sbom = artifact("application/spdx+json", &img_d, "sbom");
    for a in [&sig, &sbom] {
        let r = put_manifest(&s, "r/g", &sha256(a), OCI_MANIFEST, a).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["oci-subject"], img_d.as_str());
    }
    let ghost = sha256(b"never pushed");
    let orphan = artifact("application/spdx+json", &ghost, "orphan");
    assert_eq!(
        put_manifest(&s, "r/g", &sha256(&orphan), OCI_MANIFEST, &orphan).await.status(),
        StatusCode::CREATED
    );

    let all: serde_json::Value =
        send(Method::GET, s.url(&format!("/v2/r/g/referrers/{img_d}"))).await.json().await.unwrap();
    assert_eq!(all["mediaType"], OCI_INDEX);
    assert_eq!(all["manifests"].as_array().unwrap().len(), 2);
    let mut notes: Vec<&str> = all["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["note"].as_str().unwrap())
        .collect();
    notes.sort();
    assert_eq!(notes, ["sbom", "sig"], "each referrer carries its annotations");

    let r =
        send(Method::GET, s.url(&format!("/v2/r/g/referrers/{img_d}?artifactType=application/spdx%2Bjson")))
            .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let filtered: serde_json::Value = r.json().await.unwrap();
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["manifests"][0]["artifactType"], "application/spdx+json");

    let ghosts: serde_json::Value =
        send(Method::GET, s.url(&format!("/v2/r/g/referrers/{ghost}"))).await.json().await.unwrap();
    assert_eq!(ghosts["manifests"][0]["digest"], sha256(&orphan));
    let none = send(Method::GET, s.url(&format!("/v2/unknown/repo/referrers/{ghost}"))).await;
    assert_eq!(none.status(), StatusCode::OK);
    let none: serde_json::Value = none.json().await.unwrap();
    assert_eq!(none["manifests"], serde_json::json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_catalog_paginate_with_link() {
    let s = TestServer::start().await;
    let m = image_manifest(&s, "r/h", "tags", serde_json::json!({})).await;
    for t in ["b", "a", "d", "c", "e"] {
        assert_eq!(put_manifest(&s, "r/h", t, OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    }
    let all: serde_json::Value = send(Method::GET, s.url("/v2/r/h/tags/list")).await.json().await.unwrap();
    assert_eq!(all, serde_json::json!({"name": "r/h", "tags": ["a", "b", "c", "d", "e"]}));

    let r = send(Method::GET, s.url("/v2/r/h/tags/list?n=2")).await;
    assert_eq!(r.headers()["link"], "</v2/r/h/tags/list?n=2&last=b>; rel=\"next\"");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["tags"], serde_json::json!(["a", "b"]));
    let r = send(Method::GET, s.url("/v2/r/h/tags/list?n=2&last=d")).await;
    assert!(!r.headers().contains_key("link"), "last page has no next");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["tags"], serde_json::json!(["e"]));
    let r = send(Method::GET, s.url("/v2/r/h/tags/list?n=0")).await;
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["tags"], serde_json::json!([]));

    push_blob(&s, "r/i", b"x").await;
    push_blob(&s, "a/first", b"x").await;
    let r = send(Method::GET, s.url("/v2/_catalog?n=1")).await;
    assert_eq!(r.headers()["link"], "</v2/_catalog?n=1&last=a%2Ffirst>; rel=\"next\"");
    let cat: serde_json::Value = send(Method::GET, s.url("/v2/_catalog")).await.json().await.unwrap();
    assert_eq!(cat["repositories"], serde_json::json!(["a/first", "r/h", "r/i"]));
    let after: serde_json::Value =
        send(Method::GET, s.url("/v2/_catalog?n=5&last=a/first")).await.json().await.unwrap();
    assert_eq!(after["repositories"], serde_json::json!(["r/h", "r/i"]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_push_with_tag_parameters() {
    let s = TestServer::start().await;
    let m = image_manifest(&s, "r/tp", "tp", serde_json::json!({})).await;
    let md = sha256(&m);
    let put = |query: &str| {
        client()
            .put(s.url(&format!("/v2/r/tp/manifests/{md}?{query}")))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
    };

    // An invalid tag refuses the whole push: neither the manifest nor the valid tag lands.
    let r = put("tag=ok&tag=-bad").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let head = send(Method::HEAD, s.url(&format!("/v2/r/tp/manifests/{md}"))).await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND);

    let too_many: Vec<String> = (0..65).map(|i| format!("tag=t{i}")).collect();
    let r = put(&too_many.join("&")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "tag parameters are bounded");

    let r = put("tag=v1&tag=latest&tag=v1&other=x").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tags: Vec<&str> = r.headers().get_all("oci-tag").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(tags, ["latest", "v1"], "one OCI-Tag per tag applied");
    assert_eq!(r.headers()["docker-content-digest"], md.as_str());
    for t in ["v1", "latest"] {
        let got = send(Method::GET, s.url(&format!("/v2/r/tp/manifests/{t}"))).await;
        assert_eq!(got.headers()["docker-content-digest"], md.as_str(), "{t}");
    }

    // Without parameters there is no OCI-Tag, also for a push by tag.
    let r = put_manifest(&s, "r/tp", "plain", OCI_MANIFEST, &m).await;
    assert!(!r.headers().contains_key("oci-tag"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes() {
    let s = TestServer::start().await;
    let m = image_manifest(&s, "r/j", "del", serde_json::json!({})).await;
    let md = sha256(&m);
    put_manifest(&s, "r/j", "keep", OCI_MANIFEST, &m).await;
    put_manifest(&s, "r/j", "drop", OCI_MANIFEST, &m).await;
    assert_eq!(send(Method::DELETE, s.url("/v2/r/j/manifests/drop")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(send(Method::GET, s.url("/v2/r/j/manifests/drop")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(send(Method::GET, s.url("/v2/r/j/manifests/keep")).await.status(), StatusCode::OK);
    assert_eq!(
        send(Method::DELETE, s.url(&format!("/v2/r/j/manifests/{md}"))).await.status(),
        StatusCode::ACCEPTED
    );
    let r = send(Method::GET, s.url("/v2/r/j/manifests/keep")).await;
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN", "tags go with their manifest");
    let r = send(Method::DELETE, s.url(&format!("/v2/r/j/manifests/{md}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let d = push_blob(&s, "r/j", b"blob to delete").await;
    assert_eq!(
        send(Method::DELETE, s.url(&format!("/v2/r/j/blobs/{d}"))).await.status(),
        StatusCode::ACCEPTED
    );
    let r = send(Method::DELETE, s.url(&format!("/v2/r/j/blobs/{d}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let s = TestServer::start().await;
    assert_eq!(send(Method::GET, s.url("/healthz")).await.status(), StatusCode::OK);
    let ready = send(Method::GET, s.url("/readyz")).await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"ready": true, "database": null, "storage": null}));
    push_blob(&s, "r/m", b"metrics").await;
    client().post(s.url("/v2/r/m/blobs/uploads/")).send().await.unwrap();
    let text = send(Method::GET, s.url("/metrics")).await.text().await.unwrap();
    for want in [
        "berth_http_requests_total{endpoint=\"upload_start\",method=\"POST\",status=\"201\"} 1",
        "berth_upload_sessions 1",
        "berth_http_received_bytes_total 7",
        "berth_storage_operation_duration_seconds_count{operation=\"commit_then_record\",outcome=\"ok\"}",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    s.stop().await;
}
