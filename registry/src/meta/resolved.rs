//! Manifest lookups (a tag or a digest in a repository) kept in memory, told of every write: the
//! embedded store's writes all pass through this process; PostgreSQL's are announced to every
//! replica (see `postgres/lookups.rs`).
//!
//! Every pull starts with such a lookup, and on the embedded store each one would cost a hop to a
//! blocking thread and back — more than the query itself. Kept here, a hit costs a hash lookup.
//! It stays exact because every write that can change an answer (a manifest put or deleted, a tag
//! moved or deleted, cached content evicted) clears its repository's entries after it commits and
//! before it returns, so the next request after an acknowledged write misses and reads the
//! database. A lookup that raced such a write does not store what it read: it carries the
//! generation it began in, and every clear starts a new one.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ManifestRecord;
use berth_core::oci::{Reference, RepoName};

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
    repos: HashMap<RepoName, HashMap<Reference, ManifestRecord>>,
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
        let Ok(state) = self.state.lock() else { return Err(Generation(u64::MAX)) };
        match state.repos.get(repo).and_then(|refs| refs.get(r)) {
            Some(record) => Ok(record.clone()),
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
        let Ok(mut state) = self.state.lock() else { return };
        if state.generation != began.0 {
            return;
        }
        if state.len >= self.capacity {
            state.repos.clear();
            state.len = 0;
        }
        let refs = state.repos.entry(repo.clone()).or_default();
        if refs.insert(r.clone(), record.clone()).is_none() {
            state.len += 1;
        }
    }

    /// Forgets every answer about `repo`: called after a write to it commits, before the write
    /// is acknowledged.
    pub fn invalidate(&self, repo: &RepoName) {
        let Ok(mut state) = self.state.lock() else { return };
        state.generation = state.generation.wrapping_add(1);
        if let Some(refs) = state.repos.remove(repo) {
            state.len -= refs.len();
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
