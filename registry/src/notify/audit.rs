//! Events tallied in memory and written behind in batches — the audit log's own entries
//! (requests refused to a known caller, failed logins) and, where a webhook asks for them,
//! pulls: one row per caller, address, repository and refusal (or pulled reference) per
//! interval, with a count. A busy or hostile client costs a map entry, never a database write
//! per request; past [`MAX_KEYS`] distinct entries in one interval, further ones are only
//! counted.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_core::config::notifications::EventKind;
use berth_core::oci::Digest;

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
    /// What a pull read.
    pulled: Option<Pulled>,
}

/// The manifest a pull read, and the tag it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pulled {
    pub digest: Digest,
    pub tag: Option<String>,
    pub media_type: String,
    pub size: u64,
}

#[derive(Default)]
pub struct AuditNotes {
    /// Per entry: how many, and the first time (unix milliseconds).
    pending: Mutex<HashMap<Key, (u64, i64)>>,
    /// Entries not kept because the map was full, per kind.
    overflow: Mutex<HashMap<EventKind, u64>>,
}

impl AuditNotes {
    /// A request `actor` was refused: `detail` says what it wanted.
    pub fn denied(&self, actor: &str, address: &str, repository: &str, detail: &str) {
        self.note(EventKind::Denied, actor, address, repository, detail, None);
    }

    /// A login as `actor` failed: `detail` says why.
    pub fn login_failed(&self, actor: &str, address: &str, detail: &str) {
        self.note(EventKind::LoginFailed, actor, address, "", detail, None);
    }

    /// `actor` pulled a manifest of `repository`.
    pub fn pulled(&self, actor: &str, address: &str, repository: &str, what: Pulled) {
        self.note(EventKind::Pull, actor, address, repository, "", Some(what));
    }

    fn note(
        &self,
        kind: EventKind,
        actor: &str,
        address: &str,
        repository: &str,
        detail: &str,
        pulled: Option<Pulled>,
    ) {
        let key = Key {
            kind,
            // Bounded: a name is whatever a client sent.
            actor: actor.chars().take(128).collect(),
            address: address.to_owned(),
            repository: repository.chars().take(256).collect(),
            detail: detail.to_owned(),
            pulled,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let full = pending.len() >= MAX_KEYS;
        match pending.get_mut(&key) {
            Some((n, _)) => *n += 1,
            None if full => {
                drop(pending);
                *self.overflow.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
            }
            None => {
                pending.insert(key, (1, crate::meta::now_millis()));
            }
        }
    }

    /// The entries noted since the last take, as events to record.
    pub fn take(&self) -> Vec<NewEvent> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut events: Vec<NewEvent> =
            pending.into_iter().map(|(k, (count, at))| entry(k, count, at)).collect();
        let overflow = std::mem::take(&mut *self.overflow.lock().unwrap_or_else(|e| e.into_inner()));
        for (kind, count) in overflow {
            let key = Key {
                kind,
                actor: String::new(),
                address: String::new(),
                repository: String::new(),
                detail: format!(
                    "{MAX_KEYS} distinct entries were noted in one interval; the rest only counted"
                ),
                pulled: None,
            };
            events.push(entry(key, count, crate::meta::now_millis()));
        }
        events.sort_by_key(|e| e.at);
        events
    }

    /// Puts entries back after a failed write (counts add up with what was noted meanwhile).
    pub fn restore(&self, events: Vec<NewEvent>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            let pulled = match (e.kind, e.digest) {
                (EventKind::Pull, Some(digest)) => Some(Pulled {
                    digest,
                    tag: e.tag,
                    media_type: e.media_type.unwrap_or_default(),
                    size: e.size.unwrap_or(0),
                }),
                _ => None,
            };
            let key = Key {
                kind: e.kind,
                actor: e.actor,
                address: e.address,
                repository: e.repository,
                detail: e.detail.unwrap_or_default(),
                pulled,
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
    let e = NewEvent { at, count, ..super::event(k.kind, &k.repository, &origin) };
    match k.pulled {
        Some(p) => NewEvent {
            digest: Some(p.digest),
            tag: p.tag,
            media_type: Some(p.media_type),
            size: Some(p.size),
            ..e
        },
        None => NewEvent { detail: Some(k.detail), ..e },
    }
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

    #[test]
    fn alike_pulls_are_one_event_and_survive_a_failed_write() {
        let notes = AuditNotes::default();
        let what = |tag: Option<&str>| Pulled {
            digest: Digest::of(berth_core::oci::Algorithm::Sha256, b"m"),
            tag: tag.map(str::to_owned),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 7,
        };
        for _ in 0..3 {
            notes.pulled("ci", "192.0.2.1", "team/app", what(Some("v1")));
        }
        notes.pulled("ci", "192.0.2.1", "team/app", what(None));
        let taken = notes.take();
        let mut summary: Vec<_> = taken.iter().map(|e| (e.tag.as_deref(), e.count, e.size)).collect();
        summary.sort();
        assert_eq!(summary, [(None, 1, Some(7)), (Some("v1"), 3, Some(7))]);
        assert!(taken.iter().all(|e| e.kind == EventKind::Pull));

        assert!(taken.iter().all(|e| e.detail.is_none() && e.digest.is_some()));
        notes.restore(taken.clone());
        notes.pulled("ci", "192.0.2.1", "team/app", what(Some("v1")));
        let again = notes.take();
        assert_eq!(again.len(), 2, "restored entries are the same entries");
        assert_eq!(again.iter().map(|e| e.count).sum::<u64>(), 5);
    }
}
