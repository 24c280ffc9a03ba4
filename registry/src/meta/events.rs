//! Events as stored ([`super::outbox::EventLog`] reads and delivers them): each change a client made, written in the same transaction as the change (so a
//! change is never acknowledged without its event, nor an event kept for a change rolled back),
//! and the webhook deliveries it owes. Delivery is at least once: a replica claims due deliveries
//! by pushing their `next_at` past a lease, sends them, and settles each; one that dies mid-send
//! leaves its claims to expire and be taken again.

use berth_core::config::notifications::EventKind;
use berth_core::oci::Digest;

/// An event about to be recorded with its change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Stable: receivers drop duplicates by it.
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: EventKind,
    /// Empty for an audit entry outside any repository (a login).
    pub repository: String,
    /// For a tag deletion, the store fills in the digest the tag named.
    pub digest: Option<Digest>,
    pub tag: Option<String>,
    pub media_type: Option<String>,
    pub artifact_type: Option<String>,
    pub size: Option<u64>,
    pub subject: Option<Digest>,
    pub actor: String,
    pub address: String,
    pub request_id: String,
    /// How many alike it stands for (an audit entry tallies repeated refusals).
    pub count: u64,
    /// What was refused, for an audit entry.
    pub detail: Option<String>,
    /// Endpoints that want it: one delivery each.
    pub endpoints: Vec<String>,
}

/// An event as recorded (and as the admin API lists it: `at` in unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub kind: EventKind,
    pub repository: String,
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub media_type: Option<String>,
    pub artifact_type: Option<String>,
    pub size: Option<u64>,
    pub subject: Option<String>,
    pub actor: String,
    pub address: String,
    pub request_id: String,
    pub count: u64,
    pub detail: Option<String>,
}

/// A delivery a replica claimed: the event, and how many times it has been tried (this one
/// included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub event: Event,
    pub attempts: u32,
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Failed; tried again at `next_at` (unix milliseconds).
    Retry {
        next_at: i64,
        error: String,
    },
    /// Failed for the last time.
    Dead {
        error: String,
    },
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub repository: Option<String>,
    pub actor: Option<String>,
    /// Only events older than this sequence number (the previous page's last).
    pub before: Option<i64>,
    pub limit: usize,
}

/// Pending and dead deliveries of one endpoint, and the two that say what holds it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    pub endpoint: String,
    pub pending: u64,
    pub dead: u64,
    /// The delivery waiting longest: when an endpoint is down, the one tried most.
    pub oldest_pending: Option<Delivery>,
    /// The delivery given up on last.
    pub last_dead: Option<Delivery>,
}

/// One delivery, as the backlog shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The event's sequence number, and when it happened (unix milliseconds).
    pub seq: i64,
    pub at: i64,
    pub attempts: u32,
    /// Why its last attempt failed; none before the first.
    pub last_error: Option<String>,
}

impl Delivery {
    /// From the columns `seq, at, attempts, last_error` as [`BACKLOG`] reads them: none when
    /// the endpoint has no such delivery.
    pub(crate) fn from_columns(
        seq: Option<i64>,
        at: Option<i64>,
        attempts: Option<i64>,
        last_error: Option<String>,
    ) -> Option<Delivery> {
        Some(Delivery {
            seq: seq?,
            at: at?,
            attempts: attempts.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            last_error,
        })
    }
}

/// A stored kind; `None` when the database holds one this berth does not know.
pub(crate) fn parse_kind(s: &str) -> Option<EventKind> {
    EventKind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// Parameters in order: id, at, kind, repository, digest, tag, media type, artifact type, size,
/// subject, actor, address, request id, count, detail. Returns the sequence number.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events
       (id, at, kind, repository, digest, tag, media_type, artifact_type, size, subject, actor,
        address, request_id, count, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING seq";

/// Parameters: event sequence number, endpoint, due at.
pub(crate) const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (event_seq, endpoint, next_at) VALUES ($1, $2, $3)";

/// The columns [`Event`] is read from, in order.
pub(crate) const EVENT_COLUMNS: &str = "e.seq, e.id, e.at, e.kind, e.repository, e.digest, e.tag,
     e.media_type, e.artifact_type, e.size, e.subject, e.actor, e.address, e.request_id, e.count,
     e.detail";

/// Claims due deliveries: `{lock}` is PostgreSQL's `FOR UPDATE SKIP LOCKED` (empty on SQLite,
/// which has one writer). Parameters: until, endpoint, now, limit.
pub(crate) fn claim_sql(lock: &str) -> String {
    format!(
        "UPDATE deliveries SET next_at = $1, attempts = attempts + 1
         WHERE endpoint = $2 AND event_seq IN (
             SELECT event_seq FROM deliveries
             WHERE endpoint = $2 AND state = 'pending' AND next_at <= $3
             ORDER BY next_at, event_seq LIMIT $4 {lock})
         RETURNING event_seq, attempts"
    )
}

/// Parameters: state, next at, last error, settled at, endpoint, event sequence number.
pub(crate) const SETTLE: &str = "UPDATE deliveries
     SET state = $1, next_at = $2, last_error = $3, settled_at = $4
     WHERE endpoint = $5 AND event_seq = $6 AND state = 'pending'";

/// The most of an error a delivery keeps: one line of it (a peer's answer is not ours to store
/// whole).
pub const ERROR_KEPT: usize = 300;

/// What a settlement writes: state, next at, error, settled at.
pub(crate) fn settle_params(s: &Settled, now: i64) -> (&'static str, i64, Option<String>, Option<i64>) {
    let kept = |e: &str| Some(berth_core::text::one_line(e, ERROR_KEPT));
    match s {
        Settled::Delivered => ("delivered", now, None, Some(now)),
        Settled::Retry { next_at, error } => ("pending", *next_at, kept(error), None),
        Settled::Dead { error } => ("dead", now, kept(error), Some(now)),
    }
}

/// Pending and dead deliveries per endpoint, each counted through its partial index (never a
/// scan of the delivered ones, which are most), with the oldest pending and the newest dead
/// delivery: endpoint, pending, dead, then `seq, at, attempts, last_error` of each.
pub(crate) const BACKLOG: &str = "SELECT b.endpoint, b.pending, b.dead,
            b.oldest, po.at, p.attempts, p.last_error, b.newest, dn.at, d.attempts, d.last_error
     FROM (SELECT endpoint, CAST(sum(pending) AS BIGINT) AS pending, CAST(sum(dead) AS BIGINT) AS dead,
                  max(oldest) AS oldest, max(newest) AS newest
           FROM (SELECT endpoint, count(*) AS pending, 0 AS dead, min(event_seq) AS oldest,
                        CAST(NULL AS BIGINT) AS newest
                 FROM deliveries WHERE state = 'pending' GROUP BY endpoint
                 UNION ALL
                 SELECT endpoint, 0, count(*), NULL, max(event_seq)
                 FROM deliveries WHERE state = 'dead' GROUP BY endpoint) AS u
           GROUP BY endpoint) AS b
     LEFT JOIN deliveries p ON p.endpoint = b.endpoint AND p.event_seq = b.oldest
     LEFT JOIN events po ON po.seq = b.oldest
     LEFT JOIN deliveries d ON d.endpoint = b.endpoint AND d.event_seq = b.newest
     LEFT JOIN events dn ON dn.seq = b.newest
     ORDER BY b.endpoint";

/// Parameters: before, limit.
pub(crate) const FORGET_EVENTS: &str = "DELETE FROM events WHERE seq IN (
       SELECT seq FROM events e WHERE e.at < $1 AND NOT EXISTS (
           SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 'pending')
       ORDER BY seq LIMIT $2)";

/// The listing for `q`, its parameters numbered in order: before, then repository and actor
/// when given, then limit.
pub(crate) fn list_sql(q: &EventQuery) -> String {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq < $1");
    let mut n = 1;
    if q.repository.is_some() {
        n += 1;
        sql.push_str(&format!(" AND e.repository = ${n}"));
    }
    if q.actor.is_some() {
        n += 1;
        sql.push_str(&format!(" AND e.actor = ${n}"));
    }
    sql.push_str(&format!(" ORDER BY e.seq DESC LIMIT ${}", n + 1));
    sql
}

/// The most events one listing returns.
pub const MAX_LIST: usize = 1000;
