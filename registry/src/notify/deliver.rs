//! Sending events to webhook endpoints: one loop per endpoint on every replica, and the
//! housekeeping of the event log.

use std::sync::Arc;
use std::time::Duration;

use berth_core::config::notifications::{Endpoint, NotificationsConfig};
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{body, Events};
use crate::meta::events::{Claimed, Settled};
use crate::meta::now_millis;
use crate::meta::outbox::EventLog;

/// Deliveries claimed at once, and sent at once: a claim is held for one request's timeout (and
/// a margin), so the claims of a replica that died expire soon.
const BATCH: usize = 16;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    endpoint: String,
    /// `delivered`, `failed` (to be retried) or `dead`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

/// `berth_webhook_*`: deliveries by outcome, and what waits.
#[derive(Default)]
pub struct WebhookMetrics {
    deliveries: Family<OutcomeLabels, Counter>,
    pending: Family<EndpointLabels, Gauge>,
    dead: Family<EndpointLabels, Gauge>,
}

impl WebhookMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("webhook");
        r.register(
            "deliveries",
            "Webhook delivery attempts, by endpoint and outcome",
            self.deliveries.clone(),
        );
        r.register("pending", "Events waiting for delivery, by endpoint", self.pending.clone());
        r.register("dead", "Events given up on after every attempt failed, by endpoint", self.dead.clone());
    }

    fn counted(&self, endpoint: &str, outcome: &'static str) {
        self.deliveries.get_or_create(&OutcomeLabels { endpoint: endpoint.to_owned(), outcome }).inc();
    }
}

/// One endpoint's sender.
struct Deliverer {
    endpoint: Endpoint,
    secret: Option<Vec<u8>>,
    client: reqwest::Client,
}

/// Every endpoint's deliveries, and the event log's upkeep.
pub struct Notifier {
    deliverers: Vec<Arc<Deliverer>>,
    log: Arc<dyn EventLog>,
    events: Arc<Events>,
    metrics: Arc<WebhookMetrics>,
    /// Events are kept this long.
    keep: Duration,
    /// This registry, as events name their source.
    source: String,
    /// Refusals noted for the audit log, written with each round of upkeep.
    audit: Arc<super::audit::AuditNotes>,
}

impl Notifier {
    pub fn new(
        config: &NotificationsConfig,
        log: Arc<dyn EventLog>,
        events: Arc<Events>,
        metrics: Arc<WebhookMetrics>,
        source: String,
    ) -> Result<Notifier, String> {
        let deliverers = config
            .endpoints
            .iter()
            .map(|e| Deliverer::new(e).map(Arc::new))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Notifier {
            deliverers,
            log,
            events,
            metrics,
            keep: config.keep(),
            source,
            audit: Default::default(),
        })
    }

    /// Writes the refusals noted in `audit`.
    pub fn with_audit(mut self, audit: Arc<super::audit::AuditNotes>) -> Notifier {
        self.audit = audit;
        self
    }

    /// Writes the audit entries noted since the last write.
    pub async fn write_audit(&self) {
        let entries = self.audit.take();
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.log.record_audit(entries.clone()).await {
            tracing::warn!(error = %e, "audit entries not written; kept for the next round");
            self.audit.restore(entries);
        }
    }

    /// Delivers and keeps house until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let names = self.deliverers.iter().map(|d| d.endpoint.name.clone()).collect();
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
            if tokio::time::Instant::now() >= forget_due {
                self.forget_old().await;
                forget_due = tokio::time::Instant::now() + FORGET_EVERY;
            }
            tokio::time::sleep(UPKEEP_EVERY).await;
        }
    }

    async fn count_backlog(&self) {
        if self.deliverers.is_empty() {
            return;
        }
        match self.log.backlog().await {
            Ok(backlog) => {
                for d in &self.deliverers {
                    let b = backlog.iter().find(|b| b.endpoint == d.endpoint.name);
                    let labels = EndpointLabels { endpoint: d.endpoint.name.clone() };
                    self.metrics.pending.get_or_create(&labels).set(b.map_or(0, |b| b.pending) as i64);
                    self.metrics.dead.get_or_create(&labels).set(b.map_or(0, |b| b.dead) as i64);
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
    async fn deliver(self: Arc<Self>, d: Arc<Deliverer>) {
        let name = d.endpoint.name.clone();
        let lease = d.endpoint.timeout + LEASE_MARGIN;
        loop {
            // Listen before looking, so an event recorded meanwhile rings a bell heard below.
            let bell = self.events.recorded.clone();
            let rung = bell.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            let now = now_millis();
            let until = now.saturating_add(lease.as_millis() as i64);
            match self.log.claim(&name, now, until, BATCH).await {
                Ok(batch) if !batch.is_empty() => {
                    let full = batch.len() == BATCH;
                    let outcomes: Vec<(i64, Settled)> = futures_util::stream::iter(batch)
                        .map(|c| self.attempt(&d, c))
                        .buffer_unordered(BATCH)
                        .collect()
                        .await;
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

    /// Sends one event: how it went.
    async fn attempt(&self, d: &Deliverer, c: Claimed) -> (i64, Settled) {
        let seq = c.event.seq;
        let name = &d.endpoint.name;
        let Some((content_type, bytes)) = body::render(d.endpoint.format, &c.event, &self.source) else {
            return (seq, Settled::Delivered);
        };
        let mut req = d
            .client
            .post(&d.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("berth-event-id", &c.event.id);
        if let Some(secret) = &d.secret {
            let t = crate::meta::now();
            req = req.header(body::SIGNATURE_HEADER, body::signature(secret, t, &bytes));
        }
        let (error, asked_wait) = match req.body(bytes).send().await {
            Ok(resp) if resp.status().is_success() => {
                self.metrics.counted(name, "delivered");
                return (seq, Settled::Delivered);
            }
            Ok(resp) => (format!("the endpoint answered {}", resp.status()), retry_after(&resp)),
            // Without the URL, which may carry a token.
            Err(e) => (format!("{}", e.without_url()), None),
        };
        if c.attempts >= d.endpoint.max_attempts {
            self.metrics.counted(name, "dead");
            tracing::warn!(endpoint = %name, event = %c.event.id, attempts = c.attempts, error = %error,
                "webhook delivery given up");
            return (seq, Settled::Dead { error });
        }
        self.metrics.counted(name, "failed");
        tracing::debug!(endpoint = %name, event = %c.event.id, attempts = c.attempts, error = %error,
            "webhook delivery failed, to be retried");
        let wait = backoff(d.endpoint.backoff, c.attempts).max(asked_wait.unwrap_or_default());
        (seq, Settled::Retry { next_at: now_millis().saturating_add(wait.as_millis() as i64), error })
    }
}

impl Deliverer {
    fn new(endpoint: &Endpoint) -> Result<Deliverer, String> {
        let what = |m: String| format!("notifications endpoint {}: {m}", endpoint.name);
        let secret = match &endpoint.secret_file {
            Some(f) => Some(
                std::fs::read(f)
                    .map(|s| s.trim_ascii().to_vec())
                    .map_err(|e| what(format!("secret_file {}: {e}", f.display())))?,
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
}
