//! Upload sessions that hold no bytes yet: kept in memory, without a row.
//!
//! A `POST` opens a session that most clients fill and close within milliseconds (docker's flow:
//! one `PATCH`, then the `PUT`; containerd's: the `PUT` alone). Its row would be written once and
//! read once for nothing: until its first bytes arrive a session is only its repository and its
//! times. One process owns the SQLite file, so this memory is the whole truth about such a
//! session: the first bytes write its row (in the same savepoint as their part), and a session
//! closed or cancelled before any costs no write at all.
//!
//! ```text
//! create ──► Fresh ──(first bytes, on the writer thread)──► Moving ──(committed)──► row only
//!              │                                              │
//!              └─(close, cancel, purge)──► gone               └─ readers still see it empty,
//!                                                                 until its writer hears the commit
//! ```
//! A session turns `Moving` only on the writer thread, inside the savepoint that writes its row,
//! so every write queued after that finds the row; a cancel of a `Fresh` one removes it under the
//! lock, so no row is written for it afterwards. A restart forgets the sessions held here: their
//! clients' next request gets `BLOB_UPLOAD_UNKNOWN` and starts another — they had sent nothing.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::meta::Upload;
use crate::UploadId;

#[derive(Default)]
pub(super) struct FreshUploads {
    sessions: Mutex<HashMap<UploadId, Entry>>,
}

struct Entry {
    upload: Upload,
    created_at: i64,
    /// Its row is being written: writes go to the row now; reads still see this copy.
    moving: bool,
}

/// What [`FreshUploads::remove`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removed {
    /// A session without a row: gone now.
    Fresh,
    /// Not held here (or its row is being written): the row decides.
    Row,
}

impl FreshUploads {
    fn lock(&self) -> MutexGuard<'_, HashMap<UploadId, Entry>> {
        // Each change is one insert, flag or removal: the map is whole whatever panicked.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, upload: Upload) {
        let created_at = upload.updated_at;
        self.lock().insert(upload.id, Entry { upload, created_at, moving: false });
    }

    /// The session as it stands here, if it is held here.
    pub(super) fn get(&self, id: UploadId) -> Option<Upload> {
        self.lock().get(&id).map(|e| e.upload.clone())
    }

    /// Whether the session is held here without a row.
    pub(super) fn holds(&self, id: UploadId) -> bool {
        self.lock().get(&id).is_some_and(|e| !e.moving)
    }

    /// Takes a held session to be written as a row (on the writer thread, in the savepoint that
    /// writes it): the session and its creation time, or `None` when the row decides.
    pub(super) fn claim(&self, id: UploadId) -> Option<(Upload, i64)> {
        let mut sessions = self.lock();
        let e = sessions.get_mut(&id).filter(|e| !e.moving)?;
        e.moving = true;
        Some((e.upload.clone(), e.created_at))
    }

    /// Gives a claimed session back: its row was not written (the savepoint rolled back).
    pub(super) fn unclaim(&self, id: UploadId) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.moving = false;
        }
    }

    /// Forgets a claimed session once the commit that wrote its row has ended.
    pub(super) fn moved(&self, id: UploadId) {
        let mut sessions = self.lock();
        if sessions.get(&id).is_some_and(|e| e.moving) {
            sessions.remove(&id);
        }
    }

    pub(super) fn remove(&self, id: UploadId) -> Removed {
        let mut sessions = self.lock();
        match sessions.get(&id) {
            Some(e) if !e.moving => {
                sessions.remove(&id);
                Removed::Fresh
            }
            _ => Removed::Row,
        }
    }

    /// Marks a held session in use; false when the row decides.
    pub(super) fn touch(&self, id: UploadId, now: i64) -> bool {
        match self.lock().get_mut(&id).filter(|e| !e.moving) {
            Some(e) => {
                e.upload.updated_at = e.upload.updated_at.max(now);
                true
            }
            None => false,
        }
    }

    /// Held sessions last touched before `before`, at most `limit`.
    pub(super) fn stale(&self, before: i64, limit: usize) -> Vec<UploadId> {
        let sessions = self.lock();
        let mut stale: Vec<(i64, UploadId)> = sessions
            .values()
            .filter(|e| !e.moving && e.upload.updated_at < before)
            .map(|e| (e.upload.updated_at, e.upload.id))
            .collect();
        stale.sort_unstable_by_key(|(at, _)| *at);
        stale.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// Sessions held here without a row.
    pub(super) fn count(&self) -> u64 {
        self.lock().values().filter(|e| !e.moving).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(updated_at: i64) -> Upload {
        Upload {
            id: UploadId::random(),
            repo: "r/fresh".parse().unwrap(),
            received: 0,
            updated_at,
            hash_state: None,
            assembly: None,
        }
    }

    #[test]
    fn a_claimed_session_is_seen_until_it_has_moved_and_is_no_longer_removed_here() {
        let f = FreshUploads::default();
        let u = session(10);
        f.insert(u.clone());
        assert_eq!(f.claim(u.id).map(|(s, at)| (s.id, at)), Some((u.id, 10)));
        assert!(f.claim(u.id).is_none(), "claimed once");
        assert_eq!(f.get(u.id).map(|s| s.received), Some(0), "readers see it until it moved");
        assert_eq!(f.remove(u.id), Removed::Row, "its row decides now");
        assert!(!f.touch(u.id, 20));
        assert_eq!((f.count(), f.stale(100, 10)), (0, vec![]));
        f.moved(u.id);
        assert!(f.get(u.id).is_none());
    }

    #[test]
    fn an_unclaimed_session_is_fresh_again_and_a_removed_one_cannot_be_claimed() {
        let f = FreshUploads::default();
        let u = session(10);
        f.insert(u.clone());
        f.claim(u.id).unwrap();
        f.unclaim(u.id);
        assert!(f.touch(u.id, 30));
        assert_eq!(f.get(u.id).map(|s| s.updated_at), Some(30));
        assert_eq!(f.remove(u.id), Removed::Fresh);
        assert!(f.claim(u.id).is_none(), "no row is written for a cancelled session");
        f.moved(u.id);
        assert_eq!(f.count(), 0);
    }

    #[test]
    fn stale_sessions_come_oldest_first_within_the_limit() {
        let f = FreshUploads::default();
        let (a, b, c) = (session(5), session(3), session(50));
        for u in [&a, &b, &c] {
            f.insert(u.clone());
        }
        assert_eq!(f.stale(10, 10), vec![b.id, a.id]);
        assert_eq!(f.stale(10, 1), vec![b.id]);
        assert_eq!(f.count(), 3);
    }
}
