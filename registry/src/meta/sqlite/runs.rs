//! [`RunLog`] on SQLite.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::writer::Durability;
use super::SqliteMeta;
use crate::meta::runs::{self, RunEnd, RunLog, RunRecord, RunState};
use crate::meta::Result;

/// A row of the run columns; its state unknown is an error of its own (not SQLite's).
fn row(r: &Row<'_>) -> rusqlite::Result<Result<RunRecord>> {
    let state = match RunState::parse(&r.get::<_, String>(8)?) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(RunRecord {
        id: r.get(0)?,
        host: r.get(1)?,
        dry_run: r.get(2)?,
        grace_seconds: r.get(3)?,
        keep_untagged: r.get(4)?,
        scrub: r.get(5)?,
        verify: r.get(6)?,
        queued: r.get(7)?,
        state,
        started_at: r.get(9)?,
        ended_at: r.get(10)?,
        progress: r.get(11)?,
        report: r.get(12)?,
        error: r.get(13)?,
        cancel_requested: r.get(14)?,
        resumed_from: r.get(15)?,
    }))
}

fn one(c: &Connection, id: &str) -> Result<Option<RunRecord>> {
    c.prepare_cached(&runs::run_query())?.query_row([id], row).optional()?.transpose()
}

#[async_trait::async_trait]
impl RunLog for SqliteMeta {
    async fn insert_run(&self, run: &RunRecord, keep: usize) -> Result<()> {
        let run = run.clone();
        self.write(Durability::Synced, move |tx| {
            tx.prepare_cached(runs::INSERT_RUN)?.execute(params![
                run.id,
                run.host,
                run.dry_run,
                run.grace_seconds,
                run.keep_untagged,
                run.scrub,
                run.verify,
                run.queued,
                run.started_at,
                run.progress,
                run.resumed_from
            ])?;
            tx.prepare_cached(runs::PRUNE_RUNS)?.execute(params![run.queued, keep as i64])?;
            Ok(())
        })
        .await
    }

    async fn interrupt_runs(&self, host: &str, now: i64) -> Result<u64> {
        let host = host.to_owned();
        self.write(Durability::Synced, move |tx| {
            Ok(tx.prepare_cached(runs::INTERRUPT_RUNS)?.execute(params![now, host])? as u64)
        })
        .await
    }

    async fn run_progress(&self, id: &str, progress: &str) -> Result<bool> {
        let (id, progress) = (id.to_owned(), progress.to_owned());
        // Unsynced: a progress lost to a power cut is only an older one shown.
        self.write(Durability::Unsynced, move |tx| {
            let cancel: Option<bool> = tx
                .prepare_cached(runs::RUN_PROGRESS)?
                .query_row(params![progress, id], |r| r.get(0))
                .optional()?;
            Ok(cancel.unwrap_or(false))
        })
        .await
    }

    async fn end_run(&self, id: &str, end: RunEnd<'_>) -> Result<()> {
        let id = id.to_owned();
        let (state, at, progress) = (end.state.as_str(), end.at, end.progress.to_owned());
        let (report, error) = (end.report.map(str::to_owned), end.error.map(str::to_owned));
        self.write(Durability::Synced, move |tx| {
            tx.prepare_cached(runs::END_RUN)?.execute(params![state, at, progress, report, error, id])?;
            Ok(())
        })
        .await
    }

    async fn cancel_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_owned();
        self.write(Durability::Synced, move |tx| {
            tx.prepare_cached(runs::CANCEL_RUN)?.execute([&id])?;
            one(tx, &id)
        })
        .await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_owned();
        self.read(move |c| one(c, &id)).await
    }

    async fn runs(&self, limit: usize, queued: Option<bool>) -> Result<Vec<RunRecord>> {
        self.read(move |c| {
            let rows = c
                .prepare_cached(&runs::runs_query())?
                .query_map(params![queued, limit as i64], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().collect()
        })
        .await
    }

    async fn repository_count(&self, up_to: Option<&str>) -> Result<u64> {
        let up_to = up_to.unwrap_or_default().to_owned();
        self.read(move |c| {
            let n: i64 = c.prepare_cached(runs::REPOSITORY_COUNT)?.query_row([up_to], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}
