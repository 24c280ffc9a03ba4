//! Sending events on: one loop per webhook endpoint and per on-push replication policy on every
//! replica (a policy's deliveries are the copies its pushes ask for), and the housekeeping of
//! the event log.

use std::sync::Arc;
use std::time::Duration;

use berth_core::config::notifications::{Endpoint, NotificationsConfig};
use futures_util::StreamExt;

use super::metrics::{Target, WebhookMetrics};
use super::{body, Events};
use crate::auth::htpasswd::Watched;
use crate::meta::events::{Claimed, Settled};
use crate::meta::now_millis;
use crate::meta::outbox::EventLog;
use crate::replicate::on_push::{Copied, PushCopier};

/// Deliveries claimed at once, and sent at once: a claim is held for one request's timeout (and
/// a margin), so the claims of a replica that died expire soon.
const BATCH: usize = 16;
/// Copies claimed (and made) at once by one on-push policy.
const COPIES_AT_ONCE: usize = 4;
const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// How often a deliverer looks for due deliveries when no bell rang (retries, other replicas'
/// events).
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How often audit entries are written and the backlog gauges refreshed, and old events
/// forgotten.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
const FORGET_EVERY: Duration = Duration::from_secs(600);
const FORGET_BATCH: usize = 10_000;

/// What an endpoint's deliveries go to.
enum Sink {
    /// POSTed to a webhook.
    Webhook(Deliverer),
    /// Copied to another registry by an on-push replication policy.
    Replicate(PushCopier),
}

/// Why an attempt failed, and how long the other side asked us to wait.
struct Failed {
    error: String,
    retry_after: Option<Duration>,
}

impl Sink {
    /// What it is, as the metrics name it.
    fn target(&self) -> Target<'_> {
        match self {
            Sink::Webhook(d) => Target::Webhook(&d.endpoint.name),
            Sink::Replicate(p) => Target::OnPush(&p.policy().name),
        }
    }

    /// The name its deliveries are recorded under.
    fn name(&self) -> String {
        match self {
            Sink::Webhook(d) => d.endpoint.name.clone(),
            Sink::Replicate(p) => p.policy().delivery_name(),
        }
    }

    /// (how long one attempt may take, how many are claimed at once, attempts, first backoff)
    fn pacing(&self) -> (Duration, usize, u32, Duration) {
        match self {
            Sink::Webhook(d) => (d.endpoint.timeout, BATCH, d.endpoint.max_attempts, d.endpoint.backoff),
            Sink::Replicate(p) => {
                let p = p.policy();
                (p.timeout, COPIES_AT_ONCE, p.max_attempts, p.backoff)
            }
        }
    }
}

/// One endpoint's sender.
struct Deliverer {
    endpoint: Endpoint,
    /// Signs each body; the file is re-read when it changes (a rotated Secret counts from the
    /// next round of upkeep, no restart).
    secret: Option<Watched<Vec<u8>>>,
    client: reqwest::Client,
}

/// An endpoint's deliveries by this replica since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFigures {
    /// The name its deliveries are recorded under (the backlog's `endpoint`).
    pub name: String,
    /// An on-push replication policy (its deliveries are copies), not a webhook.
    pub on_push: bool,
    /// Delivered (or copied, or found already there).
    pub done: u64,
    /// Attempts that failed.
    pub failed: u64,
}

/// Every endpoint's deliveries, and the event log's upkeep.
pub struct Notifier {
    deliverers: Vec<Arc<Sink>>,
    log: Arc<dyn EventLog>,
    events: Arc<Events>,
    metrics: Arc<WebhookMetrics>,
    /// Events are kept this long.
    keep: Duration,
    /// This registry, as events name their source.
    source: String,
    /// Refusals noted for the audit log, written with each round of upkeep.
    audit: Arc<super::audit::AuditNotes>,
    /// Pulls noted for the webhooks that want them, written likewise.
    pulls: Arc<super::audit::AuditNotes>,
}

impl Notifier {
    pub fn new(
        config: &NotificationsConfig,
        on_push: Vec<PushCopier>,
        log: Arc<dyn EventLog>,
        events: Arc<Events>,
        metrics: Arc<WebhookMetrics>,
        source: String,
    ) -> Result<Notifier, String> {
        let mut deliverers = config
            .endpoints
            .iter()
            .map(|e| Deliverer::new(e).map(|d| Arc::new(Sink::Webhook(d))))
            .collect::<Result<Vec<_>, String>>()?;
        deliverers.extend(on_push.into_iter().map(|p| Arc::new(Sink::Replicate(p))));
        Ok(Notifier {
            deliverers,
            log,
            events,
            metrics,
            keep: config.keep(),
            source,
            audit: Default::default(),
            pulls: Default::default(),
        })
    }

    /// Each endpoint's deliveries by this replica, for the UI (the backlog, shared by every
    /// replica, is the event log's).
    pub fn figures(&self) -> Vec<EndpointFigures> {
        self.deliverers
            .iter()
            .map(|d| {
                let (done, failed) = self.metrics.figures(d.target());
                EndpointFigures { name: d.name(), on_push: matches!(**d, Sink::Replicate(_)), done, failed }
            })
            .collect()
    }

    /// Writes the refusals noted in `audit` and the pulls noted in `pulls`.
    pub fn with_notes(
        mut self,
        audit: Arc<super::audit::AuditNotes>,
        pulls: Arc<super::audit::AuditNotes>,
    ) -> Notifier {
        self.audit = audit;
        self.pulls = pulls;
        self
    }

    /// Writes the entries noted since the last write: the audit log's, and pulls, each with a
    /// delivery to the endpoints that want it.
    pub async fn write_audit(&self) {
        for notes in [&self.audit, &self.pulls] {
            let mut entries = notes.take();
            if entries.is_empty() {
                continue;
            }
            for e in entries.iter_mut().filter(|e| e.kind.is_opt_in()) {
                e.endpoints = self.events.endpoints(e.kind, &e.repository);
            }
            let delivered = entries.iter().any(|e| !e.endpoints.is_empty());
            match self.log.record_audit(entries.clone()).await {
                Ok(()) if delivered => self.events.ring(),
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "audit entries not written; kept for the next round");
                    notes.restore(entries);
                }
            }
        }
    }

    /// Delivers and keeps house until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let names = self.deliverers.iter().map(|d| d.name()).collect();
        match self.log.abandon_others(names, now_millis()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(deliveries = n, "gave up deliveries to endpoints no longer configured"),
            Err(e) => tracing::warn!(error = %e, "could not give up deliveries to removed endpoints"),
        }
        let loops: Vec<_> =
            self.deliverers.iter().map(|d| tokio::spawn(self.clone().deliver(d.clone()))).collect();
        let _abort = AbortOnDrop(loops);
        let mut forget_due = tokio::time::Instant::now();
        loop {
            self.write_audit().await;
            self.count_backlog().await;
            self.reread_secrets().await;
            if tokio::time::Instant::now() >= forget_due {
                self.forget_old().await;
                forget_due = tokio::time::Instant::now() + FORGET_EVERY;
            }
            tokio::time::sleep(UPKEEP_EVERY).await;
        }
    }

    /// Re-reads the webhook secrets whose files changed, off the async threads.
    async fn reread_secrets(&self) {
        let sinks = self.deliverers.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for sink in sinks {
                if let Sink::Webhook(Deliverer { secret: Some(secret), .. }) = &*sink {
                    secret.refresh();
                }
            }
        })
        .await;
    }

    async fn count_backlog(&self) {
        if self.deliverers.is_empty() {
            return;
        }
        match self.log.backlog().await {
            Ok(backlog) => {
                for d in &self.deliverers {
                    let b = backlog.iter().find(|b| b.endpoint == d.name());
                    self.metrics.backlog(d.target(), b, now_millis());
                }
            }
            Err(e) => tracing::debug!(error = %e, "webhook backlog not counted"),
        }
    }

    async fn forget_old(&self) {
        let before = now_millis().saturating_sub(self.keep.as_millis().min(i64::MAX as u128) as i64);
        loop {
            match self.log.forget_events(before, FORGET_BATCH).await {
                Ok(n) if (n as usize) < FORGET_BATCH => return,
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => {
                    tracing::warn!(error = %e, "old events not forgotten");
                    return;
                }
            }
        }
    }

    /// One endpoint's loop: claim what is due, send it, settle it; wait for a bell or a poll.
    async fn deliver(self: Arc<Self>, d: Arc<Sink>) {
        let name = d.name();
        let (timeout, batch_size, _, _) = d.pacing();
        let lease = timeout + LEASE_MARGIN;
        let mut failures = FailureLog::default();
        loop {
            // First in the loop, so full batches one after another (a down endpoint with a
            // backlog) are logged too.
            if let Some((failed, error)) = failures.due(std::time::Instant::now()) {
                tracing::warn!(endpoint = %name, failed, last_error = %error,
                    "deliveries failed and wait to be retried");
            }
            // Listen before looking, so an event recorded meanwhile rings a bell heard below.
            let bell = self.events.recorded.clone();
            let rung = bell.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            let now = now_millis();
            let until = now.saturating_add(lease.as_millis() as i64);
            match self.log.claim(&name, now, until, batch_size).await {
                Ok(batch) if !batch.is_empty() => {
                    let full = batch.len() == batch_size;
                    let outcomes: Vec<(i64, Settled)> = futures_util::stream::iter(batch)
                        .map(|c| self.attempt(&d, c))
                        .buffer_unordered(batch_size)
                        .collect()
                        .await;
                    failures.note(outcomes.iter().filter_map(|(_, s)| match s {
                        Settled::Retry { error, .. } => Some(error.as_str()),
                        _ => None,
                    }));
                    if let Err(e) = self.log.settle(&name, outcomes, now_millis()).await {
                        // The claims expire and the events go again.
                        tracing::warn!(endpoint = %name, error = %e, "webhook deliveries not recorded");
                    }
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(endpoint = %name, error = %e, "webhook deliveries not claimed"),
            }
            let _ = tokio::time::timeout(POLL, rung).await;
        }
    }

    /// Sends one event on (or makes its copy): how it went.
    async fn attempt(&self, sink: &Sink, c: Claimed) -> (i64, Settled) {
        let seq = c.event.seq;
        let (timeout, _, max_attempts, first_backoff) = sink.pacing();
        let tried = match sink {
            Sink::Webhook(d) => self.post(d, &c).await,
            Sink::Replicate(p) => match tokio::time::timeout(timeout, p.copy(&c.event)).await {
                Ok(Ok(copied)) => {
                    let outcome = match copied {
                        Copied::Copied => "copied",
                        Copied::Unchanged => "unchanged",
                        Copied::Deleted => "deleted",
                        Copied::Ignored(why) => {
                            tracing::debug!(policy = %p.policy().name, event = %c.event.id, why, "nothing to copy");
                            "ignored"
                        }
                    };
                    if outcome != "ignored" {
                        tracing::info!(policy = %p.policy().name, repository = %c.event.repository,
                            tag = c.event.tag.as_deref().unwrap_or(""), digest = c.event.digest.as_deref().unwrap_or(""),
                            outcome, "replicated on push");
                    }
                    Ok(outcome)
                }
                Ok(Err(e)) => Err(Failed { error: format!("{e:#}"), retry_after: None }),
                Err(_) => {
                    Err(Failed { error: format!("the copy took longer than {timeout:?}"), retry_after: None })
                }
            },
        };
        let Failed { error, retry_after } = match tried {
            Ok(outcome) => {
                self.metrics.counted(sink.target(), outcome);
                return (seq, Settled::Delivered);
            }
            Err(failed) => failed,
        };
        let name = sink.name();
        if c.attempts >= max_attempts {
            self.metrics.counted(sink.target(), "dead");
            tracing::warn!(endpoint = %name, event = %c.event.id, attempts = c.attempts, error = %error,
                "delivery given up");
            return (seq, Settled::Dead { error });
        }
        self.metrics.counted(sink.target(), "failed");
        // Logged per event at debug; the endpoint's loop tallies failures in one warning a minute.
        tracing::debug!(endpoint = %name, event = %c.event.id, attempts = c.attempts, error = %error,
            "delivery failed, to be retried");
        let wait = backoff(first_backoff, c.attempts).max(retry_after.unwrap_or_default());
        (seq, Settled::Retry { next_at: now_millis().saturating_add(wait.as_millis() as i64), error })
    }

    /// POSTs one event to a webhook.
    async fn post(&self, d: &Deliverer, c: &Claimed) -> Result<&'static str, Failed> {
        let Some((content_type, bytes)) = body::render(d.endpoint.format, &c.event, &self.source) else {
            return Ok("delivered");
        };
        let mut req = d
            .client
            .post(&d.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("berth-event-id", &c.event.id);
        if let Some(secret) = d.secret.as_ref().and_then(|w| w.current().ok()) {
            let t = crate::meta::now();
            req = req.header(body::SIGNATURE_HEADER, body::signature(&secret, t, &bytes));
        }
        match req.body(bytes).send().await {
            Ok(resp) if resp.status().is_success() => Ok("delivered"),
            Ok(resp) => Err(Failed {
                error: format!("the endpoint answered {}", resp.status()),
                retry_after: retry_after(&resp),
            }),
            Err(e) if e.is_timeout() => Err(Failed {
                error: format!("the endpoint did not answer within {:?}", d.endpoint.timeout),
                retry_after: None,
            }),
            // Without the URL, which may carry a token.
            Err(e) => Err(Failed {
                error: format!(
                    "{}: {}",
                    if e.is_connect() { "the endpoint could not be reached" } else { "the request failed" },
                    berth_client::root_cause(&e.without_url())
                ),
                retry_after: None,
            }),
        }
    }
}

impl Deliverer {
    fn new(endpoint: &Endpoint) -> Result<Deliverer, String> {
        let what = |m: String| format!("notifications endpoint {}: {m}", endpoint.name);
        let secret = match &endpoint.secret_file {
            Some(f) => Some(
                Watched::open_bytes(f.clone(), |key| Ok(key.trim_ascii().to_vec()))
                    .map_err(|e| what(format!("secret_file {e}")))?,
            ),
            None => None,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(f) = &endpoint.ca_file {
            let pem = std::fs::read(f).map_err(|e| what(format!("ca_file {}: {e}", f.display())))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| what(format!("ca_file: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| what(e.to_string()))?;
        Ok(Deliverer { endpoint: endpoint.clone(), secret, client })
    }
}

/// The wait after the `attempts`th failure: `first`, doubling, at most [`MAX_BACKOFF`].
fn backoff(first: Duration, attempts: u32) -> Duration {
    first.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF)
}

/// A `Retry-After` in seconds (an endpoint that is overloaded says when to come back), at most
/// an hour.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// Failed attempts of one endpoint, logged at most once per [`FAILURES_LOGGED_EVERY`]: a down
/// endpoint fails every delivery sent to it, and a line each would bury the log.
#[derive(Default)]
struct FailureLog {
    /// Failed since the last line.
    failed: u64,
    last_error: String,
    logged_at: Option<std::time::Instant>,
}

const FAILURES_LOGGED_EVERY: Duration = Duration::from_secs(60);

impl FailureLog {
    fn note<'a>(&mut self, errors: impl Iterator<Item = &'a str>) {
        for error in errors {
            self.failed += 1;
            error.clone_into(&mut self.last_error);
        }
    }

    /// What to log now, if anything: how many failed since the last line, and the last error.
    fn due(&mut self, now: std::time::Instant) -> Option<(u64, String)> {
        if self.failed == 0 || self.logged_at.is_some_and(|t| now.duration_since(t) < FAILURES_LOGGED_EVERY) {
            return None;
        }
        self.logged_at = Some(now);
        Some((std::mem::take(&mut self.failed), std::mem::take(&mut self.last_error)))
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 1), s);
        assert_eq!(backoff(s, 2), Duration::from_secs(2));
        assert_eq!(backoff(s, 4), Duration::from_secs(8));
        assert_eq!(backoff(s, 40), MAX_BACKOFF);
    }

    #[test]
    fn failures_are_logged_at_most_once_a_minute_with_their_tally() {
        let mut log = FailureLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(log.due(t0), None, "nothing failed");
        log.note(["refused", "503"].into_iter());
        assert_eq!(log.due(t0), Some((2, "503".to_owned())), "the first failures at once");
        log.note(["timed out"].into_iter());
        assert_eq!(log.due(t0 + Duration::from_secs(59)), None, "within the minute");
        log.note(["reset"].into_iter());
        assert_eq!(log.due(t0 + Duration::from_secs(61)), Some((2, "reset".to_owned())), "tallied");
        assert_eq!(log.due(t0 + Duration::from_secs(200)), None, "nothing failed since");
    }
}
