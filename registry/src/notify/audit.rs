//! The audit log's own entries — requests refused to a known caller and failed logins — tallied
//! in memory and written behind in batches: one row per caller, address, repository and refusal
//! per interval, with a count. A hostile client costs a map entry, never a database write per
//! request; past [`MAX_KEYS`] distinct entries in one interval, further ones are only counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use berth_core::config::notifications::EventKind;

use crate::meta::NewEvent;

/// Distinct entries kept between two writes.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: EventKind,
    actor: String,
    address: String,
    /// Empty for a login.
    repository: String,
    detail: String,
}

#[derive(Default)]
pub struct AuditNotes {
    /// Per entry: how many, and the first time (unix milliseconds).
    pending: Mutex<HashMap<Key, (u64, i64)>>,
    /// Refusals not kept because the map was full.
    overflow: AtomicU64,
}

impl AuditNotes {
    /// A request `actor` was refused: `detail` says what it wanted.
    pub fn denied(&self, actor: &str, address: &str, repository: &str, detail: &str) {
        self.note(EventKind::Denied, actor, address, repository, detail);
    }

    /// A login as `actor` failed: `detail` says why.
    pub fn login_failed(&self, actor: &str, address: &str, detail: &str) {
        self.note(EventKind::LoginFailed, actor, address, "", detail);
    }

    fn note(&self, kind: EventKind, actor: &str, address: &str, repository: &str, detail: &str) {
        let key = Key {
            kind,
            // Bounded: a name is whatever a client sent.
            actor: actor.chars().take(128).collect(),
            address: address.to_owned(),
            repository: repository.chars().take(256).collect(),
            detail: detail.to_owned(),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let full = pending.len() >= MAX_KEYS;
        match pending.get_mut(&key) {
            Some((n, _)) => *n += 1,
            None if full => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                pending.insert(key, (1, crate::meta::now_millis()));
            }
        }
    }

    /// The entries noted since the last take, as events to record.
    pub fn take(&self) -> Vec<NewEvent> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let overflow = self.overflow.swap(0, Ordering::Relaxed);
        let mut events: Vec<NewEvent> =
            pending.into_iter().map(|(k, (count, at))| entry(k, count, at)).collect();
        if overflow > 0 {
            let key = Key {
                kind: EventKind::Denied,
                actor: String::new(),
                address: String::new(),
                repository: String::new(),
                detail: format!(
                    "{MAX_KEYS} distinct refusals were noted in one interval; the rest only counted"
                ),
            };
            events.push(entry(key, overflow, crate::meta::now_millis()));
        }
        events.sort_by_key(|e| e.at);
        events
    }

    /// Puts entries back after a failed write (counts add up with what was noted meanwhile).
    pub fn restore(&self, events: Vec<NewEvent>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            let key = Key {
                kind: e.kind,
                actor: e.actor,
                address: e.address,
                repository: e.repository,
                detail: e.detail.unwrap_or_default(),
            };
            if pending.len() < MAX_KEYS || pending.contains_key(&key) {
                let slot = pending.entry(key).or_insert((0, e.at));
                slot.0 += e.count;
                slot.1 = slot.1.min(e.at);
            }
        }
    }
}

fn entry(k: Key, count: u64, at: i64) -> NewEvent {
    let origin = super::Origin { actor: k.actor, address: k.address, request_id: String::new() };
    NewEvent { at, count, detail: Some(k.detail), ..super::event(k.kind, &k.repository, &origin) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alike_refusals_are_one_entry_with_a_count() {
        let notes = AuditNotes::default();
        for _ in 0..1000 {
            notes.login_failed("mallory", "192.0.2.7", "wrong");
        }
        notes.denied("ci", "192.0.2.8", "team/app", "push");
        let mut taken = notes.take();
        taken.sort_by_key(|e| e.count);
        let summary: Vec<_> =
            taken.iter().map(|e| (e.kind, e.actor.as_str(), e.repository.as_str(), e.count)).collect();
        assert_eq!(
            summary,
            [(EventKind::Denied, "ci", "team/app", 1), (EventKind::LoginFailed, "mallory", "", 1000)]
        );
        assert!(notes.take().is_empty(), "taken once");
        notes.restore(taken);
        assert_eq!(notes.take().iter().map(|e| e.count).sum::<u64>(), 1001, "put back after a failed write");
    }

    #[test]
    fn a_flood_of_distinct_refusals_is_bounded() {
        let notes = AuditNotes::default();
        for i in 0..(MAX_KEYS + 500) {
            notes.login_failed(&format!("user{i}"), "192.0.2.9", "wrong");
        }
        let taken = notes.take();
        assert_eq!(taken.len(), MAX_KEYS + 1, "the rest in one overflow entry");
        assert_eq!(taken.iter().map(|e| e.count).sum::<u64>(), (MAX_KEYS + 500) as u64);
    }
}
