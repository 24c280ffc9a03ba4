//! What a replication did: per image, and in all.

use serde::Serialize;

use berth_core::oci::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Copied,
    /// The tag named the same digest at the destination already.
    Unchanged,
    /// A dry run: it would be copied.
    WouldCopy,
    /// The destination's tag names another digest, and overwrites were not asked for.
    Kept,
    /// A tag deleted at the destination (the source has it no more).
    Deleted,
    /// A dry run: it would be deleted.
    WouldDelete,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub repository: String,
    /// The tag or digest asked for.
    pub reference: String,
    pub digest: Digest,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub image: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub dry_run: bool,
    pub images: Vec<ImageReport>,
    /// Manifests put (index children and referrers included), and those found there already.
    pub manifests_copied: u64,
    pub manifests_skipped: u64,
    /// Referrers copied with their subjects (counted in the manifests too).
    pub referrers_copied: u64,
    /// Blobs sent, mounted from another repository, or found there.
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    /// The bytes of the blobs sent.
    pub bytes_copied: u64,
    /// Index children left out for their platform.
    pub manifests_left_out: u64,
    /// Manifests deleted at the destination by `mirror` (their tags are in `images`).
    pub manifests_deleted: u64,
    pub failed: Vec<Failure>,
}

/// Longest brief written (a termination message holds 4 KiB).
const BRIEF_MAX: usize = 2048;

impl Report {
    /// The totals, for a controller to show: no lists (the first failure's reason only), so it
    /// always fits a termination message.
    pub fn brief(&self) -> serde_json::Value {
        let count = |o: Outcome| self.images.iter().filter(|i| i.outcome == o).count();
        let mut v = serde_json::json!({
            "dryRun": self.dry_run,
            "imagesCopied": count(Outcome::Copied) + count(Outcome::WouldCopy),
            "imagesUnchanged": count(Outcome::Unchanged) + count(Outcome::Kept),
            "imagesFailed": self.failed.len(),
            "tagsDeleted": count(Outcome::Deleted) + count(Outcome::WouldDelete),
            "blobsCopied": self.blobs_copied,
            "blobsMounted": self.blobs_mounted,
            "blobsSkipped": self.blobs_skipped,
            "bytesCopied": self.bytes_copied,
        });
        if let Some(f) = self.failed.first() {
            let mut error = format!("{}: {}", f.image, f.error);
            if error.len() > BRIEF_MAX {
                let cut = (0..=BRIEF_MAX).rev().find(|i| error.is_char_boundary(*i)).unwrap_or(0);
                error.truncate(cut);
            }
            v["error"] = error.into();
        }
        v
    }

    /// One line for a person.
    pub fn summary(&self) -> String {
        let count = |o: Outcome| self.images.iter().filter(|i| i.outcome == o).count();
        let verb = if self.dry_run { "would copy" } else { "copied" };
        let copied = if self.dry_run { count(Outcome::WouldCopy) } else { count(Outcome::Copied) };
        let deleted = if self.dry_run { count(Outcome::WouldDelete) } else { count(Outcome::Deleted) };
        format!(
            "{verb} {copied} images ({} manifests, {} referrers), {} unchanged, {} kept, {deleted} tags and {} manifests deleted; blobs: {} sent ({} bytes), {} mounted, {} already there; {} failed",
            self.manifests_copied,
            self.referrers_copied,
            count(Outcome::Unchanged),
            count(Outcome::Kept),
            self.manifests_deleted,
            self.blobs_copied,
            self.bytes_copied,
            self.blobs_mounted,
            self.blobs_skipped,
            self.failed.len()
        )
    }
}
