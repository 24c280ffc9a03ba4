//! Collections over the review queue ([`crate::meta::queue`]), started by each replica every
//! `retention.review_every` (one at a time across replicas, like any run: another replica's run
//! makes this one skip its turn), and the queue's depth in the metrics.

use std::sync::Arc;
use std::time::Duration;

use super::{Collector, Options};
use crate::meta;
use crate::service::ServiceError;

/// How often the queue's depth is counted for the metrics.
const COUNT_EVERY: Duration = Duration::from_secs(60);
/// Without reviews, a repository queued longer than this (past the grace) is overdue: only full
/// collections take it off, and one should run at least daily.
const OVERDUE_WITHOUT_REVIEWS: Duration = Duration::from_secs(24 * 3600);

impl Collector {
    /// Starts a collection over the queue every `review_every` (when set) and counts the queue
    /// each minute; runs until dropped.
    pub async fn review(self: Arc<Self>, review_every: Option<Duration>) {
        let mut tick = tokio::time::interval(COUNT_EVERY.min(review_every.unwrap_or(COUNT_EVERY)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_review = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if let Some(every) = review_every.filter(|e| last_review.elapsed() >= *e) {
                last_review = tokio::time::Instant::now();
                match self.start(Options { queued: true, ..Options::default() }).await {
                    Ok(run) => tracing::debug!(run = %run.id, "reviewing the queue"),
                    Err(ServiceError::Busy(_)) => {}
                    Err(e) => tracing::warn!(error = %e, ?every, "could not start a review of the queue"),
                }
            }
            self.count_queue(review_every).await;
        }
    }

    /// Counts the queue into the metrics: all of it, and what waits longer than reviews every
    /// `review_every` should let anything wait.
    async fn count_queue(&self, review_every: Option<Duration>) {
        let late = Options::default().grace + review_every.map_or(OVERDUE_WITHOUT_REVIEWS, |e| 2 * e);
        match self.store.queue_depth(meta::now() - late.as_secs() as i64).await {
            Ok((depth, overdue)) => self.metrics.queue(depth, overdue),
            Err(e) => tracing::warn!(error = %e, "could not count the review queue"),
        }
    }
}
