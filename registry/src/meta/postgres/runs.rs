//! [`RunLog`] on PostgreSQL.

use super::errors::db_error;
use super::{execute, query, query_opt, PostgresMeta};
use crate::meta::runs::{self, RunEnd, RunLog, RunRecord, RunState};
use crate::meta::Result;

fn record(r: &tokio_postgres::Row) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0),
        host: r.get(1),
        dry_run: r.get(2),
        grace_seconds: r.get(3),
        keep_untagged: r.get(4),
        scrub: r.get(5),
        verify: r.get(6),
        queued: r.get(7),
        state: RunState::parse(r.get(8))?,
        started_at: r.get(9),
        ended_at: r.get(10),
        progress: r.get(11),
        report: r.get(12),
        error: r.get(13),
        cancel_requested: r.get(14),
        resumed_from: r.get(15),
    })
}

#[async_trait::async_trait]
impl RunLog for PostgresMeta {
    async fn insert_run(&self, run: &RunRecord, keep: usize) -> Result<()> {
        let keep = keep.min(i64::MAX as usize) as i64;
        self.write(true, move |tx| {
            let run = run.clone();
            Box::pin(async move {
                execute(
                    tx,
                    runs::INSERT_RUN,
                    &[
                        &run.id,
                        &run.host,
                        &run.dry_run,
                        &run.grace_seconds,
                        &run.keep_untagged,
                        &run.scrub,
                        &run.verify,
                        &run.queued,
                        &run.started_at,
                        &run.progress,
                        &run.resumed_from,
                    ],
                )
                .await?;
                execute(tx, runs::PRUNE_RUNS, &[&run.queued, &keep]).await?;
                Ok(())
            })
        })
        .await
    }

    async fn interrupt_runs(&self, host: &str, now: i64) -> Result<u64> {
        let c = self.client().await?;
        execute(&c, runs::INTERRUPT_RUNS, &[&now, &host]).await.map_err(db_error)
    }

    async fn run_progress(&self, id: &str, progress: &str) -> Result<bool> {
        let c = self.client().await?;
        let row = query_opt(&c, runs::RUN_PROGRESS, &[&progress, &id]).await.map_err(db_error)?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    async fn end_run(&self, id: &str, end: RunEnd<'_>) -> Result<()> {
        let c = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&end.state.as_str(), &end.at, &end.progress, &end.report, &end.error, &id];
        execute(&c, runs::END_RUN, &params).await.map_err(db_error)?;
        Ok(())
    }

    async fn cancel_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let c = self.client().await?;
        execute(&c, runs::CANCEL_RUN, &[&id]).await.map_err(db_error)?;
        query_opt(&c, &runs::run_query(), &[&id]).await.map_err(db_error)?.as_ref().map(record).transpose()
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let c = self.client().await?;
        query_opt(&c, &runs::run_query(), &[&id]).await.map_err(db_error)?.as_ref().map(record).transpose()
    }

    async fn runs(&self, limit: usize, queued: Option<bool>) -> Result<Vec<RunRecord>> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        query(&c, &runs::runs_query(), &[&queued, &limit])
            .await
            .map_err(db_error)?
            .iter()
            .map(record)
            .collect()
    }

    async fn repository_count(&self, up_to: Option<&str>) -> Result<u64> {
        let c = self.client().await?;
        let up_to = up_to.unwrap_or_default();
        let row = query_opt(&c, runs::REPOSITORY_COUNT, &[&up_to]).await.map_err(db_error)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }
}
