//! What every reconcile gets, the error every reconcile may return, and the Event both
//! controllers publish when a resource's readiness flips.

use std::sync::Arc;

use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;

use crate::metrics::Metrics;

/// What every reconcile gets.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub default_image: String,
    pub metrics: Arc<Metrics>,
    /// How often a resource is reconciled with nothing changed: Secrets are not watched, so this
    /// is how soon a deleted Secret comes back or a changed credential is checked.
    pub resync: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("TLS: {0}")]
    Tls(crate::controllers::registry::tls::TlsError),
}

impl Error {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Tls(_) => "tls",
        }
    }
}

/// An Event when `Ready` flips: Normal `Ready`, or Warning `NotReady` with the reason's message.
pub async fn publish_readiness<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    ready: bool,
    message: &str,
) {
    let event = Event {
        type_: if ready { EventType::Normal } else { EventType::Warning },
        reason: if ready { "Ready" } else { "NotReady" }.into(),
        note: Some(message.to_owned()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!(error = %e, "publishing event failed");
    }
}

/// The time for status conditions.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}
