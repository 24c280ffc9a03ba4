//! Collections over the review queue ([`crate::meta::queue`]), started by each replica every
//! `retention.review_every` (one at a time across replicas, like any run: another replica's run
//! makes this one skip its turn) when something queued is older than the grace, and the queue's
//! depth in the metrics.

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

/// How a replica reviews its queue: how often, and with which options (those of the full runs,
/// over the queue).
#[derive(Debug, Clone)]
pub struct Reviews {
    pub every: Option<Duration>,
    pub options: Options,
}

impl Reviews {
    pub fn new(every: Option<Duration>, grace: Option<Duration>, keep_untagged: bool) -> Reviews {
        let defaults = Options::default();
        let options =
            Options { grace: grace.unwrap_or(defaults.grace), keep_untagged, queued: true, ..defaults };
        Reviews { every, options }
    }

    /// Changes noted before this (unix seconds) are in view of a review starting now.
    fn cutoff(&self) -> i64 {
        meta::now() + 1 - self.options.grace.as_secs() as i64
    }
}

impl Collector {
    /// Starts a collection over the queue every `reviews.every` (when set) if anything queued is
    /// due, and counts the queue each minute; runs until dropped.
    pub async fn review(self: Arc<Self>, reviews: Reviews) {
        let mut tick = tokio::time::interval(COUNT_EVERY.min(reviews.every.unwrap_or(COUNT_EVERY)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_review = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if reviews.every.is_some_and(|e| last_review.elapsed() >= e) {
                last_review = tokio::time::Instant::now();
                self.review_once(&reviews).await;
            }
            self.count_queue(&reviews).await;
        }
    }

    /// One review, unless nothing queued is due (then not even a run is logged).
    async fn review_once(self: &Arc<Self>, reviews: &Reviews) {
        match self.store.queue_depth(reviews.cutoff()).await {
            Ok((_, 0)) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the review queue");
                return;
            }
        }
        match self.start(reviews.options.clone()).await {
            Ok(run) => tracing::debug!(run = %run.id, "reviewing the queue"),
            Err(ServiceError::Busy(_)) => {}
            Err(e) => tracing::warn!(error = %e, "could not start a review of the queue"),
        }
    }

    /// Counts the queue into the metrics: all of it, and what waits longer than reviews every
    /// `reviews.every` should let anything wait.
    async fn count_queue(&self, reviews: &Reviews) {
        let late = reviews.options.grace + reviews.every.map_or(OVERDUE_WITHOUT_REVIEWS, |e| 2 * e);
        match self.store.queue_depth(meta::now() - late.as_secs() as i64).await {
            Ok((depth, overdue)) => self.metrics.queue(depth, overdue),
            Err(e) => tracing::warn!(error = %e, "could not count the review queue"),
        }
    }
}
