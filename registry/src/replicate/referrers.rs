//! Referrers at either end: read through the referrers API, or, where a registry has none (CNCF
//! Distribution), through the OCI 1.1 tag scheme: an index tagged `sha256-<hex of the subject>`
//! listing what refers to it. A destination without the API gets that index kept up to date.

use anyhow::Context;
use berth_client::{Fetched, Upstream};
use berth_core::oci::{Digest, RepoName};
use reqwest::Method;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The digests of descriptors as a list of referrers holds them.
fn digests<'a>(descriptors: impl IntoIterator<Item = &'a serde_json::Value>) -> anyhow::Result<Vec<Digest>> {
    descriptors
        .into_iter()
        .map(|d| {
            let s = d["digest"].as_str().unwrap_or_default();
            s.parse().map_err(|e| anyhow::anyhow!("referrer digest {s:?}: {e}"))
        })
        .collect()
}

/// The digests of the manifests in an index's JSON.
fn listed(index: &serde_json::Value) -> anyhow::Result<Vec<Digest>> {
    digests(index["manifests"].as_array().into_iter().flatten())
}

/// Pages of one referrers list read at most: a registry whose `Link` never ends is refused.
const MOST_PAGES: usize = 10_000;

/// What refers to `digest` in `repo` at `src`: every page of the referrers API's list, or the
/// tag scheme's index.
pub async fn list(src: &Upstream, repo: &RepoName, digest: &Digest) -> anyhow::Result<Vec<Digest>> {
    let mut all = Vec::new();
    let mut next = None;
    for _ in 0..MOST_PAGES {
        let page = src.referrers(repo, digest, None, next.as_deref(), super::body::MAX_DOCUMENT).await?;
        all.extend(digests(&page.manifests)?);
        match page.next {
            Some(link) => next = Some(link),
            None => return Ok(all),
        }
    }
    anyhow::bail!("the referrers of {digest} run past {MOST_PAGES} pages");
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
