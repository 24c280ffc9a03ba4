//! Deliveries' metrics: `berth_webhook_*` per endpoint, `berth_replication_*` per on-push
//! policy (their copies are deliveries too), and what the UI reads of them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::meta::events::Backlog;

/// Where deliveries go, as the metrics name it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A webhook endpoint, by name.
    Webhook(&'a str),
    /// An on-push replication policy, by name.
    OnPush(&'a str),
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    policy: String,
    /// `copied`, `unchanged`, `ignored` (the policy wants nothing of the event), `failed` (to be
    /// retried) or `dead`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

/// `berth_webhook_*`: deliveries by outcome, and what waits; `berth_replication_*`: the same
/// for the copies of on-push policies.
#[derive(Default)]
pub struct WebhookMetrics {
    deliveries: Family<OutcomeLabels, Counter>,
    pending: Family<EndpointLabels, Gauge>,
    dead: Family<EndpointLabels, Gauge>,
    oldest: Family<EndpointLabels, Gauge>,
    copies: Family<CopyLabels, Counter>,
    copies_pending: Family<PolicyLabels, Gauge>,
    copies_dead: Family<PolicyLabels, Gauge>,
    copies_oldest: Family<PolicyLabels, Gauge>,
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
        r.register(
            "oldest_pending_seconds",
            "Age of the oldest event waiting for delivery (0 when none waits), by endpoint",
            self.oldest.clone(),
        );
        let r = registry.sub_registry_with_prefix("replication");
        r.register(
            "copies",
            "Copies of pushes made by on-push policies, by policy and outcome",
            self.copies.clone(),
        );
        r.register("pending", "Pushes waiting to be copied, by on-push policy", self.copies_pending.clone());
        r.register(
            "dead",
            "Copies given up on after every attempt failed, by policy",
            self.copies_dead.clone(),
        );
        r.register(
            "oldest_pending_seconds",
            "Age of the oldest push waiting to be copied (0 when none waits), by on-push policy",
            self.copies_oldest.clone(),
        );
    }

    pub(super) fn counted(&self, target: Target<'_>, outcome: &'static str) {
        match target {
            Target::Webhook(endpoint) => {
                self.deliveries.get_or_create(&OutcomeLabels { endpoint: endpoint.to_owned(), outcome }).inc()
            }
            Target::OnPush(policy) => {
                self.copies.get_or_create(&CopyLabels { policy: policy.to_owned(), outcome }).inc()
            }
        };
    }

    /// (delivered or copied, failed attempts) by this process for `target`, for the UI.
    pub fn figures(&self, target: Target<'_>) -> (u64, u64) {
        let (done, failed): (&[&'static str], &[&'static str]) = match target {
            Target::Webhook(_) => (&["delivered"], &["failed", "dead"]),
            Target::OnPush(_) => (&["copied", "unchanged"], &["failed", "dead"]),
        };
        let count = |outcome: &'static str| match target {
            Target::Webhook(endpoint) => self
                .deliveries
                .get(&OutcomeLabels { endpoint: endpoint.to_owned(), outcome })
                .map_or(0, |c| c.get()),
            Target::OnPush(policy) => {
                self.copies.get(&CopyLabels { policy: policy.to_owned(), outcome }).map_or(0, |c| c.get())
            }
        };
        (done.iter().map(|o| count(o)).sum(), failed.iter().map(|o| count(o)).sum())
    }

    /// The gauges of what waits for `target` (none: nothing waits), at `now` (unix ms).
    pub(super) fn backlog(&self, target: Target<'_>, b: Option<&Backlog>, now: i64) {
        let [pending, dead, oldest] = match target {
            Target::Webhook(endpoint) => {
                let labels = EndpointLabels { endpoint: endpoint.to_owned() };
                [&self.pending, &self.dead, &self.oldest].map(|f| f.get_or_create(&labels).clone())
            }
            Target::OnPush(policy) => {
                let labels = PolicyLabels { policy: policy.to_owned() };
                [&self.copies_pending, &self.copies_dead, &self.copies_oldest]
                    .map(|f| f.get_or_create(&labels).clone())
            }
        };
        let waited = b.and_then(|b| b.oldest_pending.as_ref()).map_or(0, |d| now.saturating_sub(d.at) / 1000);
        pending.set(b.map_or(0, |b| b.pending) as i64);
        dead.set(b.map_or(0, |b| b.dead) as i64);
        oldest.set(waited.max(0));
    }
}
