//! What a collection removed (or, dry, would remove), and why: the admin API's answer.

use berth_core::oci::Digest;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub digest: Digest,
    pub size: u64,
    pub reason: &'static str,
}

/// A tag retention removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedTag {
    pub tag: String,
    pub digest: Digest,
    pub reason: String,
    /// Its policy only reports (`dry_run`): the tag stays.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub policy_dry_run: bool,
}

/// Stored bytes that are not what their digest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Corrupt {
    pub digest: Digest,
    pub size: u64,
    /// `missing`, or what was read instead.
    pub problem: String,
    /// The pull-through cache holds it: evicted (by a real run), fetched again on the next pull.
    pub cached: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrubReport {
    /// Blob objects listed in storage.
    pub objects: u64,
    /// Objects no metadata knows, older than a day: released, so the purge deletes them.
    pub orphans: Vec<Removed>,
    /// Objects of upload sessions that no longer exist, older than a day: deleted.
    pub upload_objects: u64,
    pub upload_bytes: u64,
    /// Live blobs read whole and hashed (with `verify`).
    pub verified: u64,
    pub verified_bytes: u64,
    pub corrupt: Vec<Corrupt>,
}

/// A tag retention kept, and the rule or protection that kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptTag {
    pub tag: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoReport {
    pub repository: String,
    /// Tags its retention policy removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<RemovedTag>,
    /// Tags its retention policy kept, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_tags: Vec<KeptTag>,
    pub manifests: Vec<Removed>,
    /// Blobs no longer readable in the repository.
    pub links: Vec<Removed>,
    /// Removals a push made wrong between the mark and the removal: skipped.
    pub conflicts: u64,
}

impl RepoReport {
    /// Nothing removed, nothing skipped, nothing kept by a rule to show.
    pub fn is_empty(&self) -> bool {
        self.removed_nothing() && self.kept_tags.is_empty()
    }

    pub fn removed_nothing(&self) -> bool {
        self.tags.is_empty() && self.manifests.is_empty() && self.links.is_empty() && self.conflicts == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub dry_run: bool,
    /// Asked to stop: what it removed before it did (it released and purged nothing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    pub repositories: Vec<RepoReport>,
    /// Blobs released: nothing uses them any more, their bytes go.
    pub blobs: Vec<Removed>,
    /// What the scrub found, when the run scrubbed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubReport>,
    /// Objects deleted by the purge that ended the run (released by this run or earlier ones
    /// whose read grace is now over).
    pub blobs_deleted: u64,
    /// Totals, filled in by [`Report::total`].
    pub tags_removed: usize,
    pub manifests_removed: usize,
    pub links_removed: usize,
    pub bytes_freed: u64,
    pub conflicts: u64,
}

impl Report {
    /// Fills in the totals (bytes freed: what the released blobs held).
    pub fn total(&mut self) {
        self.tags_removed =
            self.repositories.iter().flat_map(|r| &r.tags).filter(|t| !t.policy_dry_run).count();
        self.manifests_removed = self.repositories.iter().map(|r| r.manifests.len()).sum();
        self.links_removed = self.repositories.iter().map(|r| r.links.len()).sum();
        self.bytes_freed = self.blobs.iter().map(|b| b.size).sum();
        self.conflicts = self.repositories.iter().map(|r| r.conflicts).sum();
    }
}
