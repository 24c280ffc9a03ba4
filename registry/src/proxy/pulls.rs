//! Pulls of cached content since they were last written: the latest per repository and digest,
//! kept in memory so a pull costs no database write (written in batches by `eviction`).

use std::collections::HashMap;
use std::sync::Mutex;

use berth_core::oci::{Digest, RepoName};

use crate::meta;
use crate::meta::cache::{CachedPull, ContentKind};

#[derive(Default)]
pub(super) struct PullLog(Mutex<HashMap<(RepoName, Digest), CachedPull>>);

impl PullLog {
    pub(super) fn record(&self, repo: &RepoName, digest: &Digest, kind: ContentKind, size: u64) {
        let Ok(mut pulls) = self.0.lock() else { return };
        let pull =
            CachedPull { repo: repo.clone(), digest: digest.clone(), kind, size, at: meta::now_millis() };
        pulls.insert((repo.clone(), digest.clone()), pull);
    }

    /// Everything recorded since the last call.
    pub(super) fn drain(&self) -> Vec<CachedPull> {
        match self.0.lock() {
            Ok(mut p) => p.drain().map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        }
    }
}
