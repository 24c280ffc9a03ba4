//! Manifests, tags, the catalog and referrers.

use bytes::Bytes;

use super::error::{Result, ServiceError};
use super::registry::Registry;
use crate::meta::{Condition, ManifestRecord, NewEvent, NewManifest, Page, Precondition, Stored};
use crate::notify::{Origin, Pushed};
use crate::storage::{layout, put_all_then_record, read_all, StorageError};
use berth_core::config::notifications::EventKind;
use berth_core::oci::manifest::{self, ManifestError};
use berth_core::oci::{Algorithm, Descriptor, Digest, Reference, RepoName, Tag};

pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Every tag that now names the manifest: the reference's and the `tag` parameters'.
    pub tags: Vec<Tag>,
}

/// What a manifest push asks beside its bytes: the `tag` query parameters, and the condition of
/// its `If-Match` and `If-None-Match` headers on the reference it names.
#[derive(Default)]
pub struct PushOptions {
    pub extra_tags: Vec<Tag>,
    pub expect: Precondition,
}

/// A client's push, as [`Registry::store_manifest`] records it.
struct ByClient<'a> {
    origin: &'a Origin,
    condition: Option<Condition>,
}

/// The most `tag` parameters one manifest push may carry.
pub const MAX_TAG_PARAMS: usize = 64;

/// One page of a sorted listing, and where the next page starts (the `last` of its `Link`).
pub struct Listing {
    pub items: Vec<String>,
    pub next: Option<String>,
}

/// Names read per query while filling a catalog page.
const CATALOG_BATCH: usize = 1_000;

impl From<ManifestError> for ServiceError {
    fn from(e: ManifestError) -> Self {
        ServiceError::ManifestInvalid(e.to_string())
    }
}

impl Registry {
    /// Stores a manifest pushed by tag or by digest. The `tag` query parameters are applied in
    /// the same transaction, so either every tag names the manifest afterwards or the push fails
    /// as a whole; so is the condition on the reference (checked first here too, so that a push
    /// bound to fail writes no bytes).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        options: PushOptions,
        origin: &Origin,
    ) -> Result<PutManifest> {
        let PushOptions { extra_tags, expect } = options;
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
        let mut tags: Vec<Tag> = tag.iter().cloned().chain(extra_tags).collect();
        tags.sort();
        tags.dedup();
        let subject = parsed.subject.clone();
        let condition = if expect.is_none() {
            None
        } else {
            let current = self.meta.manifest(repo, reference).await?.map(|r| r.digest);
            if !expect.holds(current.as_ref()) {
                return Err(ServiceError::PreconditionFailed { current });
            }
            Some(Condition { tag: tag.clone(), expect })
        };
        let by = ByClient { origin, condition };
        let stored = self.store_manifest(repo, &digest, tags.clone(), parsed, body, Some(by)).await;
        // A tag moved, or a manifest pushed by digest only: the review queue looks at it (noted
        // after the write, so the note is never older than what it notes).
        self.changed(repo);
        stored?;
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
        self.store_manifest(repo, digest, tag.into_iter().collect(), parsed, body, None).await?;
        Ok(ManifestRecord { digest: digest.clone(), media_type, size })
    }

    async fn store_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: Vec<Tag>,
        parsed: manifest::ParsedManifest,
        body: Bytes,
        pushed_by: Option<ByClient<'_>>,
    ) -> Result<()> {
        // A client's push is checked and described by events; a manifest cached from an
        // upstream is neither (what it references is cached later, on demand).
        let verify_references = pushed_by.is_some();
        // A manifest refused for a missing reference leaves no bytes behind: check before writing
        // (the transaction below checks again, against pushes and deletes racing this one).
        let children_optional = self.limits.sparse_indexes;
        if verify_references {
            let children: &[Descriptor] = if children_optional { &[] } else { &parsed.manifests };
            self.meta.check_references(repo, &parsed.blobs, children).await?;
        }
        // A `live` row always has its object (see `crate::meta::sweep`); otherwise write it.
        let key = layout::blob(digest);
        let size = body.len() as u64;
        let stored = if self.meta.blob_size(digest).await? == Some(size) {
            Stored::Assumed
        } else {
            put_all_then_record(self.storage.as_ref(), &key, body.clone()).await?;
            Stored::Written
        };
        let annotations = match &parsed.annotations {
            Some(a) => {
                Some(serde_json::to_string(a).map_err(|e| ServiceError::ManifestInvalid(e.to_string()))?)
            }
            None => None,
        };
        let events = match &pushed_by {
            Some(ByClient { origin, .. }) => {
                let pushed = Pushed {
                    repo,
                    digest,
                    media_type: &parsed.media_type,
                    artifact_type: parsed.artifact_type.as_deref(),
                    size,
                    subject: parsed.subject.as_ref(),
                    tags: &tags,
                };
                self.events.pushed(&pushed, origin)
            }
            None => Vec::new(),
        };
        let m = NewManifest {
            repo: repo.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type,
            size,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject,
            annotations,
            blobs: parsed.blobs,
            manifests: parsed.manifests,
            tags,
            verify_references,
            children_optional,
            stored,
            events,
            condition: pushed_by.as_ref().and_then(|b| b.condition.clone()),
        };
        let record = |stored| self.meta.put_manifest(NewManifest { stored, ..m.clone() });
        let recorded = match self.record_past_purge(digest, size, stored, record).await {
            Err(e) if stored == Stored::Written => return Err(self.orphaned(digest, size, e).await),
            r => r?,
        };
        if !recorded {
            // A purge took the bytes: they are in hand, so write them again.
            put_all_then_record(self.storage.as_ref(), &key, body.clone()).await?;
            let record = |stored| self.meta.put_manifest(NewManifest { stored, ..m.clone() });
            if !self.record_past_purge(digest, size, Stored::Written, record).await? {
                return Err(ServiceError::gone(digest));
            }
        }
        self.manifests.insert(digest, body);
        if pushed_by.is_some() {
            self.events.ring();
        }
        Ok(())
    }

    pub async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestRecord> {
        self.meta.manifest(repo, reference).await?.ok_or(ServiceError::ManifestUnknown)
    }

    /// Notes a pull of the manifest `digest` now, written behind (retention and the UI read it):
    /// a manifest `GET` does, and so does the pull-through cache for what it serves.
    pub fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        self.pulls.note(repo, digest, crate::meta::now());
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
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        expect: &Precondition,
        origin: &Origin,
    ) -> Result<()> {
        let deleted = match reference {
            Reference::Digest(d) if !expect.holds(Some(d)) => {
                // The manifest a digest names is that digest or nothing: delete nothing.
                let current = self.meta.manifest(repo, reference).await?.map(|r| r.digest);
                return Err(match current {
                    None if expect.holds(None) => ServiceError::ManifestUnknown,
                    current => ServiceError::PreconditionFailed { current },
                });
            }
            Reference::Digest(d) => {
                let event = NewEvent {
                    digest: Some(d.clone()),
                    ..self.events.event(EventKind::Delete, repo.as_str(), origin)
                };
                self.meta.delete_manifest(repo, d, Some(event)).await
            }
            Reference::Tag(t) => {
                let event = NewEvent {
                    tag: Some(t.to_string()),
                    ..self.events.event(EventKind::TagDelete, repo.as_str(), origin)
                };
                self.meta.delete_tag(repo, t, expect, Some(event)).await
            }
        };
        self.changed(repo);
        let deleted = deleted?;
        if deleted {
            self.events.ring();
            Ok(())
        } else if expect.holds(None) {
            Err(ServiceError::ManifestUnknown)
        } else {
            Err(ServiceError::PreconditionFailed { current: None })
        }
    }

    pub async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<String>) -> Result<Listing> {
        let page = self.page(n, last);
        let items = self.meta.tags(repo, &page).await?.ok_or(ServiceError::NameUnknown)?;
        Ok(Self::listing(items, page.limit))
    }

    /// One page of the repositories `visible` lets through, in order. Reads in batches, and at
    /// most `limits.catalog_scan` names (or the page size, if larger): a caller who may see few
    /// repositories gets a short page and a `Link` to go on, not a scan of the whole table.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<String>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Listing> {
        let page = self.page(n, last);
        let budget = self.limits.catalog_scan.max(page.limit.saturating_add(1));
        let mut items = Vec::new();
        let (mut cursor, mut scanned) = (page.last.clone(), 0);
        loop {
            let batch_size = CATALOG_BATCH.max(page.limit).min(budget - scanned).max(1);
            let batch = self.meta.catalog(&Page { limit: batch_size, last: cursor.clone() }).await?;
            let more = batch.len() > batch_size;
            let read: Vec<String> = batch.into_iter().take(batch_size).collect();
            scanned += read.len();
            for name in read {
                cursor = Some(name.clone());
                if visible(&name) {
                    items.push(name);
                    if items.len() > page.limit {
                        // One past the page: the page ends at the one before it.
                        items.pop();
                        return Ok(Listing { next: items.last().cloned(), items });
                    }
                }
            }
            if !more {
                return Ok(Listing { items, next: None });
            }
            if scanned >= budget {
                return Ok(Listing { items, next: cursor });
            }
        }
    }

    fn page(&self, n: Option<usize>, last: Option<String>) -> Page {
        let limit = n.unwrap_or(self.limits.max_page).min(self.limits.max_page);
        Page { limit, last }
    }

    fn listing(mut items: Vec<String>, limit: usize) -> Listing {
        let more = items.len() > limit;
        items.truncate(limit);
        Listing { next: items.last().filter(|_| more).cloned(), items }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::MetaStore;
    use crate::service::Limits;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catalog_page_reads_a_bounded_number_of_names() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(SqliteMeta::open(dir.path().join("meta.db")).unwrap());
        let blob = Digest::of(Algorithm::Sha256, b"x");
        for i in 0..120 {
            meta.link_blob(
                &format!("hidden/{i:03}").parse().unwrap(),
                &blob,
                1,
                crate::meta::Stored::Written,
            )
            .await
            .unwrap();
        }
        meta.link_blob(&"z/visible".parse().unwrap(), &blob, 1, crate::meta::Stored::Written).await.unwrap();
        let limits = Limits { catalog_scan: 50, ..Limits::default() };
        let registry = Registry::new(Arc::new(MemoryStorage::new()), meta, limits);
        let visible = |r: &str| r == "z/visible";

        // The caller sees one repository in 121: the page stops after 50 names, with a cursor.
        let first = registry.catalog(Some(1), None, visible).await.unwrap();
        assert!(first.items.is_empty());
        assert_eq!(first.next.as_deref(), Some("hidden/049"));
        // Following the cursor gets there, a bounded step at a time.
        let mut cursor = first.next;
        let mut pages = 1;
        let found = loop {
            let page = registry.catalog(Some(1), cursor.clone(), visible).await.unwrap();
            pages += 1;
            if !page.items.is_empty() {
                break page;
            }
            assert!(page.next > cursor, "every page moves on");
            cursor = page.next;
        };
        assert_eq!(found.items, ["z/visible"]);
        assert_eq!(found.next, None, "nothing after the last repository");
        assert_eq!(pages, 3);
        // A caller who sees everything gets full pages as before.
        let all = registry.catalog(Some(5), None, |_| true).await.unwrap();
        assert_eq!(all.items.len(), 5);
        assert_eq!(all.next.as_deref(), Some("hidden/004"));
    }
}
