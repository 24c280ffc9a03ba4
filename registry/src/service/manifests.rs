//! Manifests, tags, the catalog and referrers.

use bytes::Bytes;

use super::error::{Result, ServiceError};
use super::registry::Registry;
use crate::meta::{ManifestRecord, NewManifest, Page, Referrer};
use crate::storage::{layout, put_all, read_all, StorageError};
use berth_core::oci::manifest::{self, ManifestError};
use berth_core::oci::{Algorithm, Digest, Reference, RepoName, Tag};

pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Every tag that now names the manifest: the reference's and the `tag` parameters'.
    pub tags: Vec<Tag>,
}

/// The most `tag` parameters one manifest push may carry.
pub const MAX_TAG_PARAMS: usize = 64;

/// One page of a sorted listing, and whether more follow.
pub struct Listing {
    pub items: Vec<String>,
    pub more: bool,
}

impl From<ManifestError> for ServiceError {
    fn from(e: ManifestError) -> Self {
        ServiceError::ManifestInvalid(e.to_string())
    }
}

impl Registry {
    /// Stores a manifest pushed by tag or by digest. `extra_tags` (the spec's `tag` query
    /// parameters) are applied in the same transaction, so either every tag names the
    /// manifest afterwards or the push fails as a whole.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<PutManifest> {
        if body.len() > self.limits.max_manifest_bytes {
            return Err(ServiceError::ManifestTooLarge { limit: self.limits.max_manifest_bytes });
        }
        if extra_tags.len() > MAX_TAG_PARAMS {
            return Err(ServiceError::ManifestInvalid(format!(
                "{} tag parameters given; at most {MAX_TAG_PARAMS} are accepted",
                extra_tags.len()
            )));
        }
        let parsed = manifest::parse(content_type, &body)?;
        let (digest, tag) = match reference {
            Reference::Digest(want) => {
                let actual = Digest::of(want.algorithm(), &body);
                if actual != *want {
                    return Err(ServiceError::DigestInvalid(format!(
                        "manifest has digest {actual}, not {want}"
                    )));
                }
                (actual, None)
            }
            Reference::Tag(t) => (Digest::of(Algorithm::Sha256, &body), Some(t.clone())),
        };
        let mut tags: Vec<Tag> = tag.into_iter().chain(extra_tags).collect();
        tags.sort();
        tags.dedup();
        let subject = parsed.subject.clone();
        self.store_manifest(repo, &digest, tags.clone(), parsed, body, true).await?;
        Ok(PutManifest { digest, subject, tags })
    }

    /// Records a manifest fetched from an upstream under `digest` (which the caller verified).
    /// What it references is cached later, on demand, so references are not required yet.
    pub async fn cache_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<Tag>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<ManifestRecord> {
        let parsed = manifest::parse(content_type, &body)?;
        let media_type = parsed.media_type.clone();
        let size = body.len() as u64;
        self.store_manifest(repo, digest, tag.into_iter().collect(), parsed, body, false).await?;
        Ok(ManifestRecord { digest: digest.clone(), media_type, size })
    }

    async fn store_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: Vec<Tag>,
        parsed: manifest::ParsedManifest,
        body: Bytes,
        verify_references: bool,
    ) -> Result<()> {
        let key = layout::blob(digest);
        if self.storage.stat(&key).await? != Some(body.len() as u64) {
            put_all(self.storage.as_ref(), &key, body.clone()).await?;
        }
        self.manifests.insert(digest, body.clone());
        let annotations = match &parsed.annotations {
            Some(a) => {
                Some(serde_json::to_string(a).map_err(|e| ServiceError::ManifestInvalid(e.to_string()))?)
            }
            None => None,
        };
        self.meta
            .put_manifest(NewManifest {
                repo: repo.clone(),
                digest: digest.clone(),
                media_type: parsed.media_type,
                size: body.len() as u64,
                artifact_type: parsed.artifact_type,
                subject: parsed.subject,
                annotations,
                blobs: parsed.blobs,
                manifests: parsed.manifests,
                tags,
                verify_references,
            })
            .await?;
        Ok(())
    }

    pub async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestRecord> {
        self.meta.manifest(repo, reference).await?.ok_or(ServiceError::ManifestUnknown)
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(ManifestRecord, Bytes)> {
        let record = self.head_manifest(repo, reference).await?;
        let bytes = self.manifest_bytes(&record).await?;
        Ok((record, bytes))
    }

    /// The bytes of a manifest already looked up in metadata.
    pub async fn manifest_bytes(&self, record: &ManifestRecord) -> Result<Bytes> {
        if let Some(bytes) = self.manifests.get(&record.digest) {
            return Ok(bytes);
        }
        match read_all(self.storage.as_ref(), &layout::blob(&record.digest)).await {
            Ok(bytes) => {
                self.manifests.insert(&record.digest, bytes.clone());
                Ok(bytes)
            }
            Err(StorageError::NotFound) => {
                tracing::error!(digest = %record.digest, "manifest recorded but missing from storage");
                Err(ServiceError::ManifestUnknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// By digest: the manifest and its tags. By tag: only the tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let deleted = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        if deleted {
            Ok(())
        } else {
            Err(ServiceError::ManifestUnknown)
        }
    }

    pub async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<String>) -> Result<Listing> {
        let page = self.page(n, last);
        let items = self.meta.tags(repo, &page).await?.ok_or(ServiceError::NameUnknown)?;
        Ok(Self::listing(items, page.limit))
    }

    /// One page of the repositories `visible` lets through, in order.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<String>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Listing> {
        let page = self.page(n, last);
        let mut items = Vec::new();
        let mut cursor = page.last.clone();
        // Read on past repositories the caller may not see until the page is full.
        loop {
            let batch = self.meta.catalog(&Page { limit: page.limit.max(1), last: cursor.clone() }).await?;
            let more = batch.len() > page.limit.max(1);
            let scanned: Vec<String> = batch.into_iter().take(page.limit.max(1)).collect();
            cursor = scanned.last().cloned();
            items.extend(scanned.into_iter().filter(|r| visible(r)));
            if items.len() > page.limit || !more {
                break;
            }
        }
        Ok(Self::listing(items, page.limit))
    }

    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        Ok(self.meta.referrers(repo, subject, artifact_type).await?)
    }

    fn page(&self, n: Option<usize>, last: Option<String>) -> Page {
        let limit = n.unwrap_or(self.limits.max_page).min(self.limits.max_page);
        Page { limit, last }
    }

    fn listing(mut items: Vec<String>, limit: usize) -> Listing {
        let more = items.len() > limit;
        items.truncate(limit);
        Listing { items, more }
    }
}
