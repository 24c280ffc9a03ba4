//! Referrers of mirrored images: the upstream's referrers API a page at a time, its tag scheme's
//! index where it has no API (CNCF Distribution), and the cached referrers when it cannot answer.

use std::collections::BTreeSet;

use berth_core::config::{Config, ProxyConfig, UpstreamConfig};
use berth_registry::service::Limits;
use reqwest::StatusCode;

use super::common::upstream::{noise, push_image, push_referrer, put_manifest_to, Auth};
use super::common::{client, referrer_pages, TestServer, OCI_INDEX};
use super::{get, setup};

const SBOM: &str = "application/spdx+json";
const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// Every page of the list at `path`: the digests (each listed once), and whether each page
/// said it applied a filter.
async fn listed(s: &TestServer, path: &str) -> (BTreeSet<String>, Vec<bool>) {
    let (mut all, mut filtered) = (BTreeSet::new(), Vec::new());
    for page in referrer_pages(s, path).await {
        filtered.push(page.filtered);
        for d in page.digests {
            assert!(all.insert(d.clone()), "listed twice: {d}");
        }
    }
    (all, filtered)
}

fn digests<'a>(descriptors: impl IntoIterator<Item = &'a serde_json::Value>) -> BTreeSet<String> {
    descriptors.into_iter().map(|d| d["digest"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_lists_the_upstreams_referrers_page_by_page() {
    // An upstream Berth whose pages hold one or two descriptors.
    let upstream = TestServer::with_limits(Limits { referrers_page_bytes: 500, ..Limits::default() }).await;
    let image = push_image(&upstream.url, "team/api", "1.0", vec![noise(50, 1000)]).await;
    let mut sboms = Vec::new();
    for i in 0..3 {
        sboms.push(push_referrer(&upstream.url, "team/api", &image, SBOM, &format!("sbom {i}")).await);
    }
    let sig = push_referrer(&upstream.url, "team/api", &image, SIG, "sig").await;
    let mirror = TestServer::with_config(Config {
        proxy: ProxyConfig { upstreams: vec![UpstreamConfig::new("team.local", &upstream.url)] },
        ..Config::default()
    })
    .await;

    let path = format!("/v2/team.local/team/api/referrers/{}", image.digest);
    let (all, filtered) = listed(&mirror, &path).await;
    assert!(filtered.len() > 1, "the upstream's pages are passed on");
    assert_eq!(all, digests(sboms.iter().chain([&sig])), "nothing was pulled, yet all are listed");
    let (only, filtered) = listed(&mirror, &format!("{path}?artifactType=application/spdx%2Bjson")).await;
    assert_eq!(only, digests(&sboms));
    assert!(filtered.iter().all(|f| *f));

    // A link that leaves the list is not followed upstream: the cached list (empty) instead. It
    // names the image's list from the signature's, which the upstream would answer in full.
    let sig_digest = sig["digest"].as_str().unwrap();
    let crafted = format!("/v2/team/api/referrers/{}", image.digest);
    let crafted: String = form_urlencoded::byte_serialize(crafted.as_bytes()).collect();
    let other = format!("/v2/team.local/team/api/referrers/{sig_digest}?next={crafted}");
    let (none, _) = listed(&mirror, &other).await;
    assert!(none.is_empty(), "followed a link outside the list: {none:?}");
    mirror.stop().await;
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_api_upstream_the_tag_scheme_is_read_and_without_the_upstream_the_cache() {
    let mut s = setup(Auth::None, |_| {}).await;
    let base = &s.upstream.url;
    let image = push_image(base, "library/alpine", "3.20", vec![noise(51, 1000)]).await;
    let sbom = push_referrer(base, "library/alpine", &image, SBOM, "sbom").await;
    let sig = push_referrer(base, "library/alpine", &image, SIG, "sig").await;
    // Distribution has no referrers API; a client that attached these kept the scheme's index.
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sbom, sig]});
    let tag = image.digest.replacen(':', "-", 1);
    put_manifest_to(base, "library/alpine", &tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap()).await;

    let path = format!("/v2/hub/alpine/referrers/{}", image.digest);
    assert_eq!(listed(&s.berth, &path).await, (digests([&sbom, &sig]), vec![false]));
    let sboms = listed(&s.berth, &format!("{path}?artifactType=application/spdx%2Bjson")).await;
    assert_eq!(sboms, (digests([&sbom]), vec![true]), "filtered by the mirror");
    let none = image.config.clone(); // a digest nothing refers to
    assert_eq!(listed(&s.berth, &format!("/v2/hub/alpine/referrers/{none}")).await.0, BTreeSet::new());

    // With the upstream gone, what was pulled through is still listed.
    let sbom_digest = sbom["digest"].as_str().unwrap();
    let r = get(s.berth.url(&format!("/v2/hub/alpine/manifests/{sbom_digest}"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    s.upstream.stop();
    let r = client().get(s.berth.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(listed(&s.berth, &path).await.0, digests([&sbom]));
    // A page after the cache's first goes on in the cache, even once the upstream is back.
    s.upstream.restart(Auth::None).await;
    let after = format!("{path}?last={sbom_digest}");
    assert_eq!(listed(&s.berth, &after).await.0, BTreeSet::new());
}
