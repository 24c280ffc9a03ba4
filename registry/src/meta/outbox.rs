//! The event log's reading side: claiming and settling webhook deliveries, the audit listing,
//! and forgetting old events. (Events are written by the changes they describe, in their own
//! transactions: [`super::NewManifest::events`], [`super::MetaStore::delete_manifest`].)
//!
//! Delivery is at least once: a replica claims due deliveries by pushing their `next_at` past a
//! lease, sends them, and settles each; one that dies mid-send leaves its claims to expire and be
//! taken again.

use super::events::{Backlog, Claimed, Event, EventQuery, NewEvent, Settled};
use super::{MetaError, Result};
use berth_core::config::notifications::EventKind;

#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// Claims up to `limit` deliveries to `endpoint` due at `now`, holding them until `until`
    /// (all unix milliseconds); oldest due first.
    async fn claim(&self, endpoint: &str, now: i64, until: i64, limit: usize) -> Result<Vec<Claimed>>;
    /// Records how deliveries went (in one transaction, not waited onto the disk: a lost record
    /// only sends the event again).
    async fn settle(&self, endpoint: &str, outcomes: Vec<(i64, Settled)>, now: i64) -> Result<()>;
    /// Gives up the pending deliveries to endpoints not in `configured` (removed from the
    /// configuration), so they do not keep their events forever; how many.
    async fn abandon_others(&self, configured: Vec<String>, now: i64) -> Result<u64>;
    async fn backlog(&self) -> Result<Vec<Backlog>>;
    /// Records the audit log's own entries (no deliveries), not waited onto the disk.
    async fn record_audit(&self, entries: Vec<NewEvent>) -> Result<()>;
    async fn events(&self, q: &EventQuery) -> Result<Vec<Event>>;
    /// Forgets up to `limit` events recorded before `before` whose deliveries are all settled;
    /// how many.
    async fn forget_events(&self, before: i64, limit: usize) -> Result<u64>;
}

/// A stored kind, or the error that the database holds one this berth does not know.
pub(crate) fn stored_kind(s: &str) -> Result<EventKind> {
    super::events::parse_kind(s).ok_or_else(|| MetaError::Db(format!("stored event kind {s:?} is unknown")))
}
