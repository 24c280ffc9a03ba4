//! Manifest lookups (a tag or a digest in a repository) and blob lookups (a blob's size, if the
//! repository holds it) kept in memory, told of every write: the embedded store's writes all
//! pass through this process; PostgreSQL's are announced to every replica (see
//! `postgres/lookups.rs`).
//!
//! Every pull starts with such lookups, and on the embedded store each one would cost a hop to a
//! blocking thread and back — more than the query itself; on PostgreSQL, a round trip to another
//! process. Kept here, a hit costs a hash lookup. Only found answers are kept. They stay exact
//! because every write that can change one (a manifest put or deleted, a tag moved or deleted, a
//! blob's link removed, cached content evicted) clears its repository's entries after it commits
//! and before it returns, so the next request after an acknowledged write misses and reads the
//! database. A lookup that raced such a write does not store what it read: it carries the
//! generation it began in, and every clear starts a new one.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{FoundBlob, ManifestRecord};
use berth_core::oci::{Digest, Reference, RepoName};

/// How many lookups are kept, across all repositories; past it, all are dropped at once (they
/// refill from the database on the next requests).
pub const CAPACITY: usize = 100_000;

pub struct Resolved {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    generation: u64,
    len: usize,
    repos: HashMap<RepoName, Kept>,
}

/// What is kept about one repository.
#[derive(Default)]
struct Kept {
    manifests: HashMap<Reference, ManifestRecord>,
    /// The blobs it holds: their sizes and locations.
    blobs: HashMap<Digest, FoundBlob>,
}

impl Kept {
    fn len(&self) -> usize {
        self.manifests.len() + self.blobs.len()
    }
}

/// The generation a lookup began in; its answer is stored only if no write ended meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl Resolved {
    pub fn new(capacity: usize) -> Resolved {
        Resolved { state: Mutex::new(State::default()), capacity }
    }

    /// A kept answer, or the generation to store the database's answer under.
    pub fn get(&self, repo: &RepoName, r: &Reference) -> Result<ManifestRecord, Generation> {
        self.find(repo, |kept| kept.manifests.get(r).cloned())
    }

    /// A kept blob, or the generation to store the database's answer under.
    pub fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<FoundBlob, Generation> {
        self.find(repo, |kept| kept.blobs.get(digest).cloned())
    }

    fn find<T>(&self, repo: &RepoName, pick: impl FnOnce(&Kept) -> Option<T>) -> Result<T, Generation> {
        let Ok(state) = self.state.lock() else { return Err(Generation(u64::MAX)) };
        match state.repos.get(repo).and_then(pick) {
            Some(found) => Ok(found),
            None => Err(Generation(state.generation)),
        }
    }

    /// The generation now, for a lookup that will not use a kept answer.
    pub fn generation(&self) -> Generation {
        Generation(self.state.lock().map(|s| s.generation).unwrap_or(u64::MAX))
    }

    /// Keeps what the database answered, unless a write to any repository ended since the
    /// lookup began (its answer may predate that write).
    pub fn insert(&self, began: Generation, repo: &RepoName, r: &Reference, record: &ManifestRecord) {
        self.keep(began, repo, |kept| kept.manifests.insert(r.clone(), record.clone()).is_none());
    }

    /// Keeps a blob found in `repo`, on the terms of [`Resolved::insert`]. A blob's location
    /// changes only once no repository links it (it was purged and written again), and removing
    /// a link clears the answers of its repository.
    pub fn insert_blob(&self, began: Generation, repo: &RepoName, digest: &Digest, found: &FoundBlob) {
        self.keep(began, repo, |kept| kept.blobs.insert(digest.clone(), found.clone()).is_none());
    }

    /// Runs `add` (true when it added an entry) on `repo`'s answers, if no write ended since
    /// `began`.
    fn keep(&self, began: Generation, repo: &RepoName, add: impl FnOnce(&mut Kept) -> bool) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.generation != began.0 {
            return;
        }
        if state.len >= self.capacity {
            state.repos.clear();
            state.len = 0;
        }
        if add(state.repos.entry(repo.clone()).or_default()) {
            state.len += 1;
        }
    }

    /// Forgets every answer about `repo`: called after a write to it commits, before the write
    /// is acknowledged.
    pub fn invalidate(&self, repo: &RepoName) {
        let Ok(mut state) = self.state.lock() else { return };
        state.generation = state.generation.wrapping_add(1);
        if let Some(kept) = state.repos.remove(repo) {
            state.len -= kept.len();
        }
    }

    /// Forgets every answer (for a store that may have missed some writes' notices).
    pub fn clear(&self) {
        let Ok(mut state) = self.state.lock() else { return };
        state.generation = state.generation.wrapping_add(1);
        state.repos.clear();
        state.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::oci::{Algorithm, Digest};

    fn record(i: u8) -> ManifestRecord {
        ManifestRecord {
            digest: Digest::of(Algorithm::Sha256, &[i]),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: i as u64,
        }
    }

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn a_write_clears_its_repository_and_only_that() {
        let cache = Resolved::new(10);
        let (a, b) = (name("team/a"), name("team/b"));
        for repo in [&a, &b] {
            let began = cache.get(repo, &tag("v1")).unwrap_err();
            cache.insert(began, repo, &tag("v1"), &record(1));
        }
        assert_eq!(cache.get(&a, &tag("v1")).unwrap(), record(1));
        cache.invalidate(&a);
        assert!(cache.get(&a, &tag("v1")).is_err());
        assert_eq!(cache.get(&b, &tag("v1")).unwrap(), record(1));
    }

    #[test]
    fn a_lookup_that_raced_a_write_is_not_kept() {
        let cache = Resolved::new(10);
        let a = name("team/a");
        let began = cache.get(&a, &tag("v1")).unwrap_err();
        // The database answered with the old digest; then a tag move committed and cleared.
        cache.invalidate(&a);
        cache.insert(began, &a, &tag("v1"), &record(1));
        assert!(cache.get(&a, &tag("v1")).is_err(), "a stale answer must not be served");
        // A write to another repository also ends the generation (conservative, never stale).
        let began = cache.get(&a, &tag("v1")).unwrap_err();
        cache.invalidate(&name("team/b"));
        cache.insert(began, &a, &tag("v1"), &record(2));
        assert!(cache.get(&a, &tag("v1")).is_err());
    }

    #[test]
    fn blob_answers_are_cleared_with_their_repository_and_never_kept_stale() {
        let cache = Resolved::new(10);
        let (a, b) = (name("team/a"), name("team/b"));
        let layer = Digest::of(Algorithm::Sha256, b"layer");
        let found = FoundBlob { size: 42, location: Some("uploads/ab/x.assembled".into()) };
        for repo in [&a, &b] {
            let began = cache.blob(repo, &layer).unwrap_err();
            cache.insert_blob(began, repo, &layer, &found);
        }
        assert_eq!(cache.blob(&a, &layer).unwrap(), found);
        // A manifest answer and a blob answer of one repository are one repository's answers.
        let began = cache.get(&a, &tag("v1")).unwrap_err();
        cache.insert(began, &a, &tag("v1"), &record(1));
        cache.invalidate(&a);
        assert!(cache.blob(&a, &layer).is_err());
        assert!(cache.get(&a, &tag("v1")).is_err());
        assert_eq!(cache.blob(&b, &layer).unwrap(), found);
        assert_eq!(cache.state.lock().unwrap().len, 1);
        // The link was removed while the lookup ran: its answer is not kept.
        let began = cache.blob(&a, &layer).unwrap_err();
        cache.invalidate(&a);
        cache.insert_blob(began, &a, &layer, &found);
        assert!(cache.blob(&a, &layer).is_err(), "a removed link must not be answered");
    }

    #[test]
    fn bounded_in_entries() {
        let cache = Resolved::new(3);
        let a = name("team/a");
        for i in 0..10u8 {
            let r = tag(&format!("t{i}"));
            let began = cache.get(&a, &r).unwrap_err();
            cache.insert(began, &a, &r, &record(i));
            assert!(cache.state.lock().unwrap().len <= 3);
        }
        assert_eq!(cache.get(&a, &tag("t9")).unwrap(), record(9));
    }
}
