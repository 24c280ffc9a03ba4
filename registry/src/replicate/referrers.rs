//! Referrers at either end: read through the referrers API, or, where a registry has none (CNCF
//! Distribution), through the OCI 1.1 tag scheme: an index tagged `sha256-<hex of the subject>`
//! listing what refers to it. A destination without the API gets that index kept up to date.

use anyhow::Context;
use berth_client::{Fetched, Upstream};
use berth_core::oci::{Digest, RepoName};
use reqwest::Method;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The digests of the manifests in an index's JSON.
fn listed(index: &serde_json::Value) -> anyhow::Result<Vec<Digest>> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let s = d["digest"].as_str().unwrap_or_default();
            s.parse().map_err(|e| anyhow::anyhow!("referrer digest {s:?}: {e}"))
        })
        .collect()
}

/// Pages of one referrers list read at most: a registry whose `Link` never ends is refused.
const MOST_PAGES: usize = 10_000;

/// What refers to `digest` in `repo` at `src`: every page of the referrers API's list, or the
/// tag scheme's index.
pub async fn list(src: &Upstream, repo: &RepoName, digest: &Digest) -> anyhow::Result<Vec<Digest>> {
    if let Fetched::Found(mut resp) = src.fetch(Method::GET, repo, "referrers", digest.as_str()).await? {
        let mut all = Vec::new();
        for _ in 0..MOST_PAGES {
            let next = berth_client::pages::next_link(resp.headers());
            all.extend(listed(&super::body::read_json(src, resp, "referrers list").await?)?);
            let Some(link) = next else { return Ok(all) };
            resp = match src.next_page(repo, "referrers", digest.as_str(), &link).await? {
                Fetched::Found(resp) => resp,
                Fetched::NotFound => {
                    anyhow::bail!("the next page of the referrers of {digest}, {link}, is gone")
                }
            };
        }
        anyhow::bail!("the referrers of {digest} run past {MOST_PAGES} pages");
    }
    match src.fetch(Method::GET, repo, "manifests", &digest.referrers_tag()).await? {
        Fetched::Found(resp) => listed(&super::body::read_json(src, resp, "referrers index").await?),
        Fetched::NotFound => Ok(vec![]),
    }
}

/// A referrer as its subject's index lists it: its descriptor's digest, media type and size,
/// and the manifest itself (for its artifact type and annotations).
pub struct Referrer<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: usize,
    pub parsed: &'a serde_json::Value,
}

/// Adds the referrer `m` to its subject's index at `dst`, unless listed.
pub async fn add_to_scheme(
    dst: &Upstream,
    repo: &RepoName,
    subject: &Digest,
    m: Referrer<'_>,
) -> anyhow::Result<()> {
    let parsed = m.parsed;
    let tag = subject.referrers_tag();
    let mut index = match dst.fetch(Method::GET, repo, "manifests", &tag).await? {
        Fetched::Found(resp) => super::body::read_json(dst, resp, "referrers index").await?,
        Fetched::NotFound => serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}),
    };
    if listed(&index)?.contains(m.digest) {
        return Ok(());
    }
    let mut descriptor = serde_json::json!({
        "mediaType": m.media_type,
        "digest": m.digest.as_str(),
        "size": m.size,
    });
    let artifact_type = parsed["artifactType"].as_str().or(parsed["config"]["mediaType"].as_str());
    if let Some(t) = artifact_type {
        descriptor["artifactType"] = t.into();
    }
    if parsed["annotations"].is_object() {
        descriptor["annotations"] = parsed["annotations"].clone();
    }
    match index["manifests"].as_array_mut() {
        Some(list) => list.push(descriptor),
        None => index["manifests"] = serde_json::json!([descriptor]),
    }
    let bytes = serde_json::to_vec(&index).context("writing a referrers index")?;
    dst.put_manifest(repo, &tag, INDEX, bytes.into()).await?;
    Ok(())
}
