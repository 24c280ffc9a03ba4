//! Where a replication reads: another registry over the distribution API, or — for the copies a
//! registry makes of its own pushes — its own storage and metadata, directly (no request to
//! itself, so no credentials for itself, and no pull recorded: a copy is not a pull).

use std::sync::Arc;

use anyhow::Context;
use berth_client::{Fetched, Upstream};
use berth_core::oci::{Digest, Reference, RepoName};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;

use super::{pages, referrers};
use crate::meta::ManifestRecord;
use crate::service::{Listing, Registry, ServiceError};
use crate::storage::ByteStream;

pub(super) enum Source {
    Remote(Box<Upstream>),
    Local(Arc<Registry>),
}

/// A manifest's media type and bytes from a registry; `None` when it has no such manifest.
pub(super) async fn remote_manifest(
    up: &Upstream,
    repo: &RepoName,
    reference: &str,
) -> anyhow::Result<Option<(String, Bytes)>> {
    let resp = match up.fetch(Method::GET, repo, "manifests", reference).await? {
        Fetched::Found(resp) => resp,
        Fetched::NotFound => return Ok(None),
    };
    let media_type =
        media_type(resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    let bytes = up.read_limited(resp, "manifest", super::body::MAX_DOCUMENT).await?;
    Ok(Some((media_type, bytes)))
}

/// A `Content-Type` without its parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type.map(|v| v.split(';').next().unwrap_or(v).trim().to_owned()).unwrap_or_default()
}

/// This registry's manifest `reference` names in `repo`; `None` when there is none.
async fn local_record(
    registry: &Registry,
    repo: &RepoName,
    reference: &str,
) -> anyhow::Result<Option<ManifestRecord>> {
    let reference: Reference =
        reference.parse().with_context(|| format!("{repo}: reference {reference:?}"))?;
    match registry.head_manifest(repo, &reference).await {
        Ok(record) => Ok(Some(record)),
        Err(ServiceError::ManifestUnknown | ServiceError::NameUnknown) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every name of one of this registry's listings, `page` reading the page after a cursor.
async fn every_page<F, Fut>(page: F) -> Result<Vec<String>, ServiceError>
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Listing, ServiceError>>,
{
    let (mut all, mut cursor) = (Vec::new(), None);
    loop {
        let listing = page(cursor).await?;
        all.extend(listing.items);
        cursor = listing.next;
        if cursor.is_none() {
            return Ok(all);
        }
    }
}

impl Source {
    /// A manifest's media type and bytes; `None` when the source has no such manifest.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> anyhow::Result<Option<(String, Bytes)>> {
        match self {
            Source::Remote(src) => remote_manifest(src, repo, reference).await,
            Source::Local(registry) => match local_record(registry, repo, reference).await? {
                Some(record) => {
                    let bytes = registry.manifest_bytes(&record).await?;
                    Ok(Some((record.media_type, bytes)))
                }
                None => Ok(None),
            },
        }
    }

    /// The digest a reference names at the source, and its media type (`HEAD`); `None` when
    /// it has no such manifest or does not say.
    pub async fn manifest_digest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> anyhow::Result<Option<(Digest, String)>> {
        match self {
            Source::Remote(src) => match src.fetch(Method::HEAD, repo, "manifests", reference).await? {
                Fetched::Found(resp) => {
                    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
                    let digest = header("docker-content-digest").and_then(|v| v.parse().ok());
                    Ok(digest.map(|d| (d, media_type(header("content-type")))))
                }
                Fetched::NotFound => Ok(None),
            },
            Source::Local(registry) => {
                Ok(local_record(registry, repo, reference).await?.map(|r| (r.digest, r.media_type)))
            }
        }
    }

    /// A blob's bytes as they come; `None` when the source has no such blob in `repo`.
    pub async fn blob(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<Option<ByteStream>> {
        match self {
            Source::Remote(src) => match src.fetch(Method::GET, repo, "blobs", digest.as_str()).await? {
                Fetched::Found(resp) => {
                    Ok(Some(resp.bytes_stream().map(|c| c.map_err(std::io::Error::other)).boxed()))
                }
                Fetched::NotFound => Ok(None),
            },
            Source::Local(registry) => match registry.get_blob(repo, digest, None, true).await {
                Ok(Ok(read)) => Ok(read.body),
                Ok(Err(_)) | Err(ServiceError::BlobUnknown | ServiceError::NameUnknown) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// What refers to `digest` in `repo`.
    pub async fn referrers(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<Vec<Digest>> {
        match self {
            Source::Remote(src) => referrers::list(src, repo, digest).await,
            Source::Local(registry) => match registry.all_referrers(repo, digest).await {
                Ok(found) => Ok(found.into_iter().map(|r| r.digest).collect()),
                Err(ServiceError::NameUnknown) => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Every tag of `repo`; `None` when there is no such repository.
    pub async fn tags(&self, repo: &RepoName) -> anyhow::Result<Option<Vec<String>>> {
        match self {
            Source::Remote(src) => pages::tag_list(src, repo).await,
            Source::Local(registry) => match every_page(|cursor| registry.tags(repo, None, cursor)).await {
                Ok(all) => Ok(Some(all)),
                Err(ServiceError::NameUnknown) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Every repository of the source's catalog (to these credentials).
    pub async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        match self {
            Source::Remote(src) => {
                pages::pages(|query| async move {
                    match src.catalog(&query).await? {
                        Fetched::Found(resp) => {
                            Ok(super::body::read_json::<List>(src, resp, "catalog").await?.repositories)
                        }
                        Fetched::NotFound => anyhow::bail!("the source has no catalog (GET /v2/_catalog)"),
                    }
                })
                .await
            }
            Source::Local(registry) => {
                Ok(every_page(|cursor| registry.catalog(None, cursor, |_| true)).await?)
            }
        }
    }
}
