//! The log of garbage collections ([`RunLog`]): each run's request, state, progress and report,
//! in the database, so any replica answers for a run another one does, a cancel reaches the
//! replica that runs it, and a run cut short by a crash is known as such (and resumed).
//!
//! Progress and report are JSON the collector writes; this module only keeps them.

use super::{MetaError, Result};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The process running it stopped (a crash, a restart) before it ended.
    Interrupted,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<RunState> {
        Ok(match s {
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "interrupted" => RunState::Interrupted,
            other => return Err(MetaError::Db(format!("stored run state {other:?} is unknown"))),
        })
    }
}

/// One run, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    /// The replica that runs (or ran) it.
    pub host: String,
    pub dry_run: bool,
    pub grace_seconds: i64,
    pub keep_untagged: bool,
    pub scrub: bool,
    pub verify: bool,
    /// Over the review queue only.
    pub queued: bool,
    pub state: RunState,
    /// Unix milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// JSON.
    pub progress: String,
    /// JSON, once the run ended (absent from [`RunLog::runs`]).
    pub report: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// The interrupted run whose work this one went on with.
    pub resumed_from: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub state: RunState,
    /// Unix milliseconds.
    pub at: i64,
    pub progress: &'a str,
    pub report: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[async_trait::async_trait]
pub trait RunLog: Send + Sync + 'static {
    /// Records a run that starts, and forgets the oldest ended runs of its kind (full or over the
    /// queue) beyond the newest `keep`: frequent reviews never push full runs out of the log.
    async fn insert_run(&self, run: &RunRecord, keep: usize) -> Result<()>;
    /// Marks every run still `running` on `host` (on every host: `""`) as interrupted at `now`
    /// (unix milliseconds). How many were.
    async fn interrupt_runs(&self, host: &str, now: i64) -> Result<u64>;
    /// Records how far a running run got; whether it was asked to stop.
    async fn run_progress(&self, id: &str, progress: &str) -> Result<bool>;
    async fn end_run(&self, id: &str, end: RunEnd<'_>) -> Result<()>;
    /// Asks a running run to stop; the run as it is now, `None` when there is no such run.
    async fn cancel_run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// One run, with its report.
    async fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// The newest runs first (only full runs or only reviews, with `queued`), at most `limit`,
    /// without their reports.
    async fn runs(&self, limit: usize, queued: Option<bool>) -> Result<Vec<RunRecord>>;
    /// How many repositories there are, or, with `up_to`, are named up to it (catalog order).
    async fn repository_count(&self, up_to: Option<&str>) -> Result<u64>;
}

/// The columns a run is read from, in [`RunRecord`]'s order.
const COLUMNS: &str = "id, host, dry_run, grace_seconds, keep_untagged, scrub, verify, queued, state, \
     started_at, ended_at, progress, report, error, cancel_requested, resumed_from";

/// Parameters: id, host, dry run, grace (seconds), keep untagged, scrub, verify, queued, started
/// at, progress, resumed from.
pub(crate) const INSERT_RUN: &str = "INSERT INTO gc_runs
     (id, host, dry_run, grace_seconds, keep_untagged, scrub, verify, queued, state, started_at,
      progress, resumed_from)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, $10, $11)";
/// Parameters: the kind (queued), how many runs of it to keep.
pub(crate) const PRUNE_RUNS: &str = "DELETE FROM gc_runs WHERE queued = $1 AND state <> 'running'
     AND id NOT IN (SELECT id FROM gc_runs WHERE queued = $1 ORDER BY started_at DESC LIMIT $2)";
/// Parameters: now (unix milliseconds), host ('' for all).
pub(crate) const INTERRUPT_RUNS: &str = "UPDATE gc_runs
     SET state = 'interrupted', ended_at = $1,
         error = 'the replica running it stopped before the run ended'
     WHERE state = 'running' AND ($2 = '' OR host = $2)";
/// Parameters: progress, id (each numbered as it first appears: SQLite binds them so).
pub(crate) const RUN_PROGRESS: &str =
    "UPDATE gc_runs SET progress = $1 WHERE id = $2 RETURNING cancel_requested";
/// Parameters: state, ended at, progress, report, error, id.
pub(crate) const END_RUN: &str = "UPDATE gc_runs
     SET state = $1, ended_at = $2, progress = $3, report = $4, error = $5 WHERE id = $6";
/// Parameter: id.
pub(crate) const CANCEL_RUN: &str =
    "UPDATE gc_runs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running'";
/// Parameter: repository name ('' for all).
pub(crate) const REPOSITORY_COUNT: &str = "SELECT count(*) FROM repositories WHERE $1 = '' OR name <= $1";

/// Parameter: id.
pub(crate) fn run_query() -> String {
    format!("SELECT {COLUMNS} FROM gc_runs WHERE id = $1")
}

/// Parameters: the kind (queued, NULL for both), limit.
pub(crate) fn runs_query() -> String {
    let columns = COLUMNS.replace("report,", "NULL,");
    format!(
        "SELECT {columns} FROM gc_runs WHERE CAST($1 AS BOOLEAN) IS NULL OR queued = $1
         ORDER BY started_at DESC LIMIT $2"
    )
}
