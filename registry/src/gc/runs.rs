//! Collections as runs: started in the background, one at a time across replicas (a lease),
//! their progress and report kept in the database ([`crate::meta::runs`]), cancellable from any
//! replica, and resumed where a crash cut them off.
//!
//! ```text
//! start: claim the lease ─► mark runs left `running` interrupted ─► resume the last one's
//!        cursor if it was cut off ─► record the run ─► spawn it
//! while it runs, each second: write its progress, read whether a cancel was asked; renew the
//!        lease every 15 s
//! end:   write its state and report ─► give the lease up
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

use super::progress::{Control, Phase, Progress, RunView};
use super::{Collector, Options, Report};
use crate::meta::gc::Collect;
use crate::meta::runs::{RunEnd, RunRecord, RunState};
use crate::meta::{self};
use crate::service::{Result, ServiceError};

/// The lease that makes one collection at a time run across replicas, how long it holds without
/// renewal, and how often a running collection renews it (in progress ticks).
const LEASE: &str = "gc";
const LEASE_TERM: Duration = Duration::from_secs(60);
const RENEW_EVERY: u32 = 15;
/// How often a running collection writes its progress and reads whether to stop.
const TICK: Duration = Duration::from_secs(1);
/// Ended runs kept in the log.
const KEEP: usize = 100;
/// A run cut off longer ago than this is not resumed: the next one walks everything again.
const RESUME_WITHIN: i64 = 24 * 3600 * 1000;

/// This host's name, as runs and the lease record it: one berth per host name, as in a pod.
pub(super) fn host() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "berth".into())
}

/// How this host's runs name themselves in the lease: `<host> (run <id>)`.
fn holder_prefix() -> String {
    format!("{} (run ", host())
}

impl Collector {
    /// Ends what a collection on this host left before the process restarted: its lease (so the
    /// next run need not wait for it to lapse) and its run (interrupted; the next one resumes it).
    pub async fn recover(&self) {
        if let Err(e) = self.store.end_lease(LEASE, &holder_prefix()).await {
            tracing::warn!(error = %e, "could not give up the collection lease of a previous run");
        }
        match self.store.interrupt_runs(&host(), meta::now_millis()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(runs = n, "a collection was cut off by a restart; the next run resumes it")
            }
            Err(e) => tracing::warn!(error = %e, "could not mark the collection cut off by a restart"),
        }
    }

    /// One collection, from start to end; [`ServiceError::Busy`] while another runs.
    pub async fn run(self: &Arc<Self>, o: &Options) -> Result<Report> {
        let (_, handle) = self.launch(o.clone()).await?;
        handle.await.map_err(|e| ServiceError::Internal(format!("the collection stopped: {e}")))?
    }

    /// Starts a collection in the background: the run as recorded, or [`ServiceError::Busy`]
    /// while another runs (on any replica: they share a lease in the database).
    pub async fn start(self: &Arc<Self>, o: Options) -> Result<RunView> {
        Ok(self.launch(o).await?.0.into())
    }

    pub async fn run_view(&self, id: &str) -> Result<Option<RunView>> {
        Ok(self.store.run(id).await?.map(RunView::from))
    }

    /// The newest runs (only full runs or only reviews, with `queued`).
    pub async fn run_views(&self, limit: usize, queued: Option<bool>) -> Result<Vec<RunView>> {
        Ok(self.store.runs(limit, queued).await?.into_iter().map(RunView::from).collect())
    }

    /// Asks a run to stop (the replica running it reads this within a second): the run as it is.
    pub async fn cancel(&self, id: &str) -> Result<Option<RunView>> {
        Ok(self.store.cancel_run(id).await?.map(RunView::from))
    }

    async fn launch(self: &Arc<Self>, o: Options) -> Result<(RunRecord, JoinHandle<Result<Report>>)> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let holder = format!("{}{id})", holder_prefix());
        let now = meta::now_millis();
        if let Err(other) =
            self.store.claim_lease(LEASE, &holder, now, now + LEASE_TERM.as_millis() as i64).await?
        {
            return Err(ServiceError::Busy(format!(
                "a garbage collection is running on {other}; try again when it ends"
            )));
        }
        match self.record(&id, &o, now).await {
            Ok((record, control)) => {
                let this = self.clone();
                let handle = tokio::spawn(async move { this.execute(id, holder, o, control).await });
                Ok((record, handle))
            }
            Err(e) => {
                self.release(&holder).await;
                Err(e)
            }
        }
    }

    /// Records the run that starts (resuming the last one if a crash cut it off in the same
    /// phase with the same options), with the lease held.
    async fn record(&self, id: &str, o: &Options, now: i64) -> Result<(RunRecord, Arc<Control>)> {
        // The lease is ours: whatever still says it runs does not.
        self.store.interrupt_runs("", now).await?;
        // Reviews are never resumed (the next one looks at what is queued then): the last full run.
        let resumed = match self.store.runs(1, Some(false)).await?.pop() {
            Some(last) if resumable(&last, o, now) => serde_json::from_str::<Progress>(&last.progress)
                .ok()
                .and_then(|p| p.cursor)
                .map(|c| (last.id, c)),
            _ => None,
        };
        let mut control = Control::default();
        let cursor = resumed.as_ref().map(|(_, c)| c.as_str());
        let (total, done) = match cursor {
            // Over the queue: those queued before the run's cutoff.
            None if o.queued => {
                let cutoff = meta::now() + 1 - o.grace.as_secs() as i64;
                (self.store.queue_depth(cutoff).await?.1, 0)
            }
            Some(c) => {
                tokio::try_join!(self.store.repository_count(None), self.store.repository_count(Some(c)))?
            }
            None => (self.store.repository_count(None).await?, 0),
        };
        control.update(|p| {
            p.repositories_total = total;
            p.repositories_done = done;
            p.cursor = cursor.map(str::to_owned);
        });
        control.resume_after = resumed.as_ref().map(|(_, c)| c.clone());
        let record = RunRecord {
            id: id.to_owned(),
            host: host(),
            dry_run: o.dry_run,
            grace_seconds: o.grace.as_secs() as i64,
            keep_untagged: o.keep_untagged,
            scrub: o.scrub,
            verify: o.verify,
            queued: o.queued,
            state: RunState::Running,
            started_at: now,
            ended_at: None,
            progress: json(&control.snapshot()),
            report: None,
            error: None,
            cancel_requested: false,
            resumed_from: resumed.map(|(id, _)| id),
        };
        self.store.insert_run(&record, KEEP).await?;
        if let Some(from) = &record.resumed_from {
            tracing::info!(run = %id, resumed_from = %from, "garbage collection resumes a run cut off");
        }
        Ok((record, Arc::new(control)))
    }

    pub(super) async fn execute(
        &self,
        id: String,
        holder: String,
        o: Options,
        control: Arc<Control>,
    ) -> Result<Report> {
        let ticker = tokio::spawn(tick(self.store.clone(), id.clone(), holder.clone(), control.clone()));
        let outcome = self.timed(&o, &control).await;
        ticker.abort();
        control.update(|p| p.phase = Phase::Done);
        let progress = json(&control.snapshot());
        let report = outcome.as_ref().ok().map(json);
        let error = outcome.as_ref().err().map(ToString::to_string);
        let state = match &outcome {
            Ok(r) if r.cancelled => RunState::Cancelled,
            Ok(_) => RunState::Succeeded,
            Err(_) => RunState::Failed,
        };
        let end = RunEnd {
            state,
            at: meta::now_millis(),
            progress: &progress,
            report: report.as_deref(),
            error: error.as_deref(),
        };
        if let Err(e) = self.store.end_run(&id, end).await {
            tracing::warn!(run = %id, error = %e, "could not record how the collection ended");
        }
        self.release(&holder).await;
        outcome
    }

    async fn release(&self, holder: &str) {
        if let Err(e) = self.store.end_lease(LEASE, holder).await {
            tracing::warn!(error = %e, "could not give up the collection's lease; it lapses by itself");
        }
    }
}

/// Whether a new run with options `o` goes on where `last` stopped: it was cut off by a crash,
/// lately, and removed (not only reported) with the same options.
fn resumable(last: &RunRecord, o: &Options, now: i64) -> bool {
    last.state == RunState::Interrupted
        && now - last.started_at < RESUME_WITHIN
        && !last.dry_run
        && !o.dry_run
        && last.grace_seconds == o.grace.as_secs() as i64
        && last.keep_untagged == o.keep_untagged
        && (last.scrub, last.verify) == (o.scrub, o.verify)
        && !last.queued
        && !o.queued
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// While a run runs: writes its progress and reads whether to stop, each second; renews the
/// lease. A lease lost meanwhile lets another replica start: two collections at once are still
/// safe (each removal checks what is stored), only wasteful.
pub(super) async fn tick(store: Arc<dyn Collect>, id: String, holder: String, control: Arc<Control>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    for n in 1u32.. {
        every.tick().await;
        match store.run_progress(&id, &json(&control.snapshot())).await {
            Ok(true) if !control.cancelled() => {
                tracing::info!(run = %id, "garbage collection asked to stop");
                control.cancel();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(run = %id, error = %e, "could not record the collection's progress"),
        }
        if n % RENEW_EVERY == 0 {
            let now = meta::now_millis();
            match store.claim_lease(LEASE, &holder, now, now + LEASE_TERM.as_millis() as i64).await {
                Ok(Ok(())) => {}
                Ok(Err(other)) => tracing::warn!(%other, "the collection's lease went to another run"),
                Err(e) => tracing::warn!(error = %e, "could not renew the collection's lease"),
            }
        }
    }
}
