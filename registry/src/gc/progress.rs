//! What a collection shows while it runs: its phase and counts ([`Progress`]), shared with the
//! ticker that writes them to the run log ([`Control`]), and a run as the admin API answers it
//! ([`RunView`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::report::RepoReport;
use crate::meta::runs::RunRecord;

/// What a collection is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Applying retention and removing what no tag reaches, one repository at a time.
    #[default]
    Repositories,
    /// Releasing the blobs nothing uses any more.
    Blobs,
    /// Looking for stored objects no metadata knows, and verifying digests.
    Scrub,
    /// Deleting released objects whose read grace is over.
    Purge,
    Done,
}

/// How far a run got: written to the log each second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Progress {
    pub phase: Phase,
    pub repositories_done: u64,
    pub repositories_total: u64,
    /// The last repository whose collection is over (catalog order): where a run resumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub tags_removed: u64,
    pub manifests_removed: u64,
    pub links_removed: u64,
    pub blobs_released: u64,
    pub bytes_freed: u64,
    pub conflicts: u64,
    /// Blob objects the scrub listed, and live blobs it verified.
    pub objects_scrubbed: u64,
    pub blobs_verified: u64,
}

impl Progress {
    /// A repository's collection is over.
    pub fn repository_done(&mut self, name: &str, r: &RepoReport) {
        self.repositories_done += 1;
        self.cursor = Some(name.to_owned());
        self.tags_removed += r.tags.iter().filter(|t| !t.policy_dry_run).count() as u64;
        self.manifests_removed += r.manifests.len() as u64;
        self.links_removed += r.links.len() as u64;
        self.conflicts += r.conflicts;
    }

    pub fn blob_released(&mut self, size: u64) {
        self.blobs_released += 1;
        self.bytes_freed += size;
    }
}

/// What a running collection shares with its ticker: progress out, a cancel in.
#[derive(Default)]
pub struct Control {
    progress: Mutex<Progress>,
    cancel: AtomicBool,
    /// Where the catalog walk starts (after this repository): a resumed run's cursor.
    pub resume_after: Option<String>,
}

impl Control {
    pub fn update(&self, f: impl FnOnce(&mut Progress)) {
        // A poisoned lock only means a panic elsewhere left progress half-counted: keep going.
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
    }

    pub fn snapshot(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// A run as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: String,
    pub state: &'static str,
    pub host: String,
    pub dry_run: bool,
    pub grace_seconds: i64,
    pub keep_untagged: bool,
    pub scrub: bool,
    pub verify: bool,
    /// Over the review queue only.
    pub queued: bool,
    /// RFC 3339.
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    pub progress: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
}

fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis).map_or_else(|_| millis.to_string(), |t| t.to_string())
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> RunView {
        let json = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
        RunView {
            state: r.state.as_str(),
            host: r.host,
            dry_run: r.dry_run,
            grace_seconds: r.grace_seconds,
            keep_untagged: r.keep_untagged,
            scrub: r.scrub,
            verify: r.verify,
            queued: r.queued,
            started_at: rfc3339(r.started_at),
            ended_at: r.ended_at.map(rfc3339),
            cancel_requested: r.cancel_requested,
            resumed_from: r.resumed_from,
            progress: json(&r.progress),
            error: r.error,
            report: r.report.as_deref().map(json),
            id: r.id,
        }
    }
}
