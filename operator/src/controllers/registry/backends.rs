//! Why replicas are not ready, in their backends' own words. A replica's `/readyz` checks its
//! object storage and its database; the kubelet only sees the 503. While replicas are not ready,
//! the operator asks a few of them directly (their metrics listener: plain HTTP, no credentials)
//! and reports `StorageReady` and `DatabaseReady` with what each backend said: wrong credentials,
//! a missing bucket or database, an unreachable host.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use super::effective::METRICS_PORT;
use crate::controllers::Context;
use crate::labels;

/// How one backend is doing, as the replicas asked said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// A short CamelCase reason and the backend's message (from the first replica that failed).
    Failing {
        reason: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends {
    pub storage: Health,
    pub database: Health,
}

/// Replicas asked at most, and how long each may take to answer.
const ASKED: usize = 3;
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Asks up to [`ASKED`] running replicas of `registry` that are not ready; `None` when none
/// answered (no pod yet, or none reachable).
pub async fn probe(ctx: &Context, ns: &str, registry: &str) -> Result<Option<Backends>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&labels::selector_string(registry))).await?;
    let targets: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|p| !pod_ready(p))
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .take(ASKED)
        .collect();
    if targets.is_empty() {
        return Ok(None);
    }
    let http = match reqwest::Client::builder().timeout(ANSWER_WITHIN).no_proxy().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no HTTP client for readiness probes");
            return Ok(None);
        }
    };
    let answers = futures_util::future::join_all(targets.iter().map(|(name, ip)| {
        let http = http.clone();
        async move {
            let url = format!("http://{}/readyz", host_port(ip, METRICS_PORT));
            let body = http.get(url).send().await.ok()?.json::<serde_json::Value>().await.ok()?;
            Some((name.clone(), body))
        }
    }))
    .await;
    let answered: Vec<(String, serde_json::Value)> = answers.into_iter().flatten().collect();
    if answered.is_empty() {
        return Ok(None);
    }
    Ok(Some(Backends {
        storage: combine(&answered, "storage", storage_reason),
        database: combine(&answered, "database", database_reason),
    }))
}

fn host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The first failure any replica reported for `field`, or ready when none did.
fn combine(
    answered: &[(String, serde_json::Value)],
    field: &str,
    reason: fn(&str) -> &'static str,
) -> Health {
    answered
        .iter()
        .find_map(|(pod, body)| {
            let message = body.get(field)?.as_str()?;
            Some(Health::Failing { reason: reason(message), message: format!("{pod}: {message}") })
        })
        .unwrap_or(Health::Ready)
}

/// A reason for a condition from what the object store said (S3 error codes, or the transport).
pub fn storage_reason(message: &str) -> &'static str {
    let has = |words: &[&str]| words.iter().any(|w| message.contains(w));
    if has(&["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden"]) {
        "CredentialsRefused"
    } else if has(&["NoSuchBucket"]) {
        "BucketMissing"
    } else if has(&["error sending request", "connect", "dns error", "timed out"]) {
        "Unreachable"
    } else {
        "StorageUnavailable"
    }
}

/// A reason for a condition from what PostgreSQL (or the way to it) said.
pub fn database_reason(message: &str) -> &'static str {
    let has = |words: &[&str]| words.iter().any(|w| message.contains(w));
    if has(&["password authentication failed", "authentication", "no pg_hba.conf entry", "role"]) {
        "CredentialsRefused"
    } else if has(&["database \"", "does not exist"]) {
        "DatabaseMissing"
    } else if has(&["connect", "refused", "timed out", "no database connection", "unreachable"]) {
        "Unreachable"
    } else {
        "DatabaseUnavailable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_backends_words() {
        assert_eq!(
            storage_reason(
                "object storage unavailable: ... InvalidAccessKeyId: The Access Key Id you provided"
            ),
            "CredentialsRefused"
        );
        assert_eq!(storage_reason("object storage unavailable: NoSuchBucket"), "BucketMissing");
        assert_eq!(
            storage_reason("object storage unavailable: error sending request for url"),
            "Unreachable"
        );
        assert_eq!(
            database_reason("database unavailable: password authentication failed for user \"berth\""),
            "CredentialsRefused"
        );
        assert_eq!(database_reason("database \"berth\" does not exist"), "DatabaseMissing");
        assert_eq!(database_reason("no database connection could be had in time"), "Unreachable");
        let answered = vec![
            ("hub-0".to_owned(), serde_json::json!({"ready": false, "database": null, "storage": null})),
            (
                "hub-1".to_owned(),
                serde_json::json!({"ready": false, "database": null, "storage": "NoSuchBucket"}),
            ),
        ];
        assert_eq!(combine(&answered, "database", database_reason), Health::Ready);
        assert_eq!(
            combine(&answered, "storage", storage_reason),
            Health::Failing { reason: "BucketMissing", message: "hub-1: NoSuchBucket".into() }
        );
        assert_eq!(host_port("fd00::1", 9102), "[fd00::1]:9102");
    }
}
