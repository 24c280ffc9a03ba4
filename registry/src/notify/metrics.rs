//! Deliveries' metrics: `berth_webhook_*` per endpoint, `berth_replication_*` per on-push
//! policy (their copies are deliveries too), and what the UI reads of them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    copies: Family<CopyLabels, Counter>,
    copies_pending: Family<PolicyLabels, Gauge>,
    copies_dead: Family<PolicyLabels, Gauge>,
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

    pub(super) fn backlog(&self, target: Target<'_>, pending: u64, dead: u64) {
        let (pending_gauge, dead_gauge) = match target {
            Target::Webhook(endpoint) => {
                let labels = EndpointLabels { endpoint: endpoint.to_owned() };
                (self.pending.get_or_create(&labels).clone(), self.dead.get_or_create(&labels).clone())
            }
            Target::OnPush(policy) => {
                let labels = PolicyLabels { policy: policy.to_owned() };
                (
                    self.copies_pending.get_or_create(&labels).clone(),
                    self.copies_dead.get_or_create(&labels).clone(),
                )
            }
        };
        pending_gauge.set(pending as i64);
        dead_gauge.set(dead as i64);
    }
}
