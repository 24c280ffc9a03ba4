//! When manifests were last pulled, for retention's `most_recently_pulled` and `pulled_within`:
//! noted in memory on each pull and written behind, in batches, never a database write per pull.
//! A replica that dies loses at most one interval of pull times, which only makes tags look less
//! recently pulled than they were.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_core::oci::{Digest, RepoName};

use crate::meta::{self, MetaStore};

/// Pulls remembered between writes; past this, new ones are dropped until the next write.
const MAX_PENDING: usize = 100_000;
/// Pull times written per transaction.
const BATCH: usize = 500;

#[derive(Default)]
pub(super) struct PullTimes {
    pending: Mutex<HashMap<(RepoName, Digest), i64>>,
}

impl PullTimes {
    /// Notes a pull of the manifest `digest` in `repo` at `at` (unix seconds).
    pub(super) fn note(&self, repo: &RepoName, digest: &Digest, at: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let key = (repo.clone(), digest.clone());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            return;
        }
        let t = pending.entry(key).or_insert(at);
        *t = (*t).max(at);
    }

    fn take(&self) -> Vec<(RepoName, Digest, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().map(|((r, d), at)| (r, d, at)).collect()
    }

    /// Writes the pull times noted since the last write to `meta`; how many.
    pub(super) async fn flush(&self, meta: &dyn MetaStore) -> meta::Result<usize> {
        in_batches(self.take(), |b| meta.record_pull_times(b), |(r, d, at)| self.note(r, d, *at)).await
    }
}

/// Writes `all` behind, `BATCH` at a time; what a failed write left unwritten goes back to
/// `keep`, for the next write (a database that is back later gets it then). How many there were.
pub(super) async fn in_batches<T, W, F>(all: Vec<T>, write: W, keep: impl Fn(&T)) -> meta::Result<usize>
where
    T: Clone,
    W: Fn(Vec<T>) -> F,
    F: std::future::Future<Output = meta::Result<()>>,
{
    let n = all.len();
    let mut batches = all.chunks(BATCH);
    while let Some(batch) = batches.next() {
        if let Err(e) = write(batch.to_vec()).await {
            batch.iter().chain(batches.flatten()).for_each(keep);
            return Err(e);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::oci::Algorithm;

    #[test]
    fn the_latest_pull_is_kept_and_memory_is_bounded() {
        let p = PullTimes::default();
        let repo: RepoName = "a/b".parse().unwrap();
        let d = |i: usize| Digest::of(Algorithm::Sha256, &i.to_le_bytes());
        p.note(&repo, &d(0), 20);
        p.note(&repo, &d(0), 10);
        p.note(&repo, &d(1), 5);
        let mut taken = p.take();
        taken.sort_by_key(|(_, _, at)| *at);
        assert_eq!(taken, vec![(repo.clone(), d(1), 5), (repo.clone(), d(0), 20)]);
        assert!(p.take().is_empty(), "taken once");
        for i in 0..MAX_PENDING + 10 {
            p.note(&repo, &d(i), 1);
        }
        p.note(&repo, &d(0), 99);
        let taken = p.take();
        assert_eq!(taken.len(), MAX_PENDING, "no more than the bound");
        assert!(taken.contains(&(repo, d(0), 99)), "a pull already noted is still updated");
    }
}
