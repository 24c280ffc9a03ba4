//! Which repositories changed, for the review queue ([`crate::meta::queue`]): noted in memory on
//! each push and delete and written behind in batches with the pull times, never a database write
//! per request. A replica that dies loses at most one interval of notes, which the next full
//! collection makes up for.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_core::oci::RepoName;

use crate::meta::{self, MetaStore};

/// Repositories remembered between writes; past this, new ones wait for a full collection.
const MAX_PENDING: usize = 100_000;

#[derive(Default)]
pub(super) struct Changes {
    /// Per repository: its first and last change since the last write (unix seconds).
    pending: Mutex<HashMap<RepoName, (i64, i64)>>,
}

impl Changes {
    pub(super) fn note(&self, repo: &RepoName, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((first, last)) = pending.get_mut(repo) {
            *first = (*first).min(at);
            *last = (*last).max(at);
        } else if pending.len() < MAX_PENDING {
            pending.insert(repo.clone(), (at, at));
        }
    }

    fn take(&self) -> Vec<(RepoName, i64, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().map(|(r, (first, last))| (r, first, last)).collect()
    }

    /// Queues the repositories changed since the last write; how many.
    pub(super) async fn flush(&self, meta: &dyn MetaStore) -> meta::Result<usize> {
        let keep = |(r, first, last): &(RepoName, i64, i64)| {
            self.note(r, *first);
            self.note(r, *last);
        };
        super::pulls::in_batches(self.take(), |b| meta.queue_reviews(b), keep).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_change_are_kept() {
        let c = Changes::default();
        let repo: RepoName = "a/b".parse().unwrap();
        c.note(&repo, 20);
        c.note(&repo, 10);
        c.note(&repo, 30);
        assert_eq!(c.take(), vec![(repo, 10, 30)]);
        assert!(c.take().is_empty(), "taken once");
    }
}
