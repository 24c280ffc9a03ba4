//! Reading how the operator's Jobs went (collections, replications): the Job that ended last,
//! and what its containers wrote to their termination messages.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;

use kube::{Resource, ResourceExt};

use crate::controllers::registry::effective::UID;

/// Where a Job's berth writes its summary: the container's termination message.
pub const TERMINATION_LOG: &str = "/run/termination-log";

/// A container of a Job running berth (a collection, a replication): no privileges, a read-only
/// root, its summary in its termination message (the log's end if it died without one).
pub fn container(
    name: &str,
    image: &str,
    pull_policy: &str,
    args: &[String],
    env: &[serde_json::Value],
    mounts: &[serde_json::Value],
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": args,
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    })
}

/// A Job pod's security context: berth's own non-root user, the runtime's default seccomp.
pub fn pod_security() -> serde_json::Value {
    serde_json::json!({"runAsNonRoot": true, "runAsUser": UID, "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"}})
}

/// The Job a run annotation's `value` asks for, named after its CronJob: the same value always
/// names the same Job, so a re-applied annotation (or a reconcile that ran twice) starts one run.
pub fn requested_name(cron_job: &str, value: &str) -> String {
    use sha2::Digest as _;
    let hash = berth_core::oci::hex(&sha2::Sha256::digest(value.as_bytes()));
    format!("{cron_job}-{}", &hash[..8])
}

/// The labels of a component's CronJob, Jobs and pods: the component, the operator, and the
/// owner (`key`: its name).
pub fn labels(component: &str, key: &str, owner: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
        (crate::labels::MANAGED_BY.to_owned(), crate::labels::OPERATOR.to_owned()),
        (key.to_owned(), owner.to_owned()),
    ])
}

/// `labels` as a label selector.
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The metadata of a CronJob or Job `owner` controls.
pub fn metadata<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    labels: &BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "namespace": owner.meta().namespace,
        "labels": labels,
        "ownerReferences": owner.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
    })
}

/// A CronJob (as JSON) running `job` on `schedule`, one run at a time, keeping the last three
/// Jobs of each outcome; a run missed while the controller was down starts late, within an hour.
pub fn cron_job(
    metadata: serde_json::Value,
    schedule: &str,
    suspend: bool,
    labels: &BTreeMap<String, String>,
    job: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "suspend": suspend,
            "jobTemplate": {"metadata": {"labels": labels}, "spec": job},
        },
    })
}

/// How a Job ended.
pub struct Ended<'a> {
    pub job: &'a Job,
    pub succeeded: bool,
    pub at: Option<Time>,
    /// The Job controller's own words (a deadline, a backoff limit).
    pub reason: Option<String>,
}

/// The Job among `jobs` that ended last; `None` when none has ended.
pub fn last_ended(jobs: &[Job]) -> Option<Ended<'_>> {
    fn ended(j: &Job) -> Option<Ended<'_>> {
        let conds = j.status.as_ref()?.conditions.as_ref()?;
        let end =
            conds.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
        let at = j.status.as_ref()?.completion_time.clone().or_else(|| end.last_transition_time.clone());
        Some(Ended { job: j, succeeded: end.type_ == "Complete", at, reason: end.message.clone() })
    }
    jobs.iter().filter_map(ended).max_by_key(|e| e.at.as_ref().map(|t| t.0))
}

/// The termination message `container` (or init container) of the last pod of `job` to end
/// wrote.
pub fn termination_message(pods: &[Pod], job: &str, container: &str) -> Option<String> {
    pods.iter()
        .filter(|p| {
            let l = p.labels();
            l.get("batch.kubernetes.io/job-name").or_else(|| l.get("job-name")).map(String::as_str)
                == Some(job)
        })
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let all = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten());
            let s = all.into_iter().find(|c| c.name == container)?;
            let t = s.state.as_ref()?.terminated.as_ref()?;
            Some((t.finished_at.as_ref().map(|f| f.0), t.message.clone()?))
        })
        .max_by_key(|(at, _)| *at)
        .map(|(_, m)| m)
}

/// That message, when it is a JSON object (a command's summary).
pub fn summary(
    pods: &[Pod],
    job: &str,
    container: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(termination_message(pods, job, container)?.trim()) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    }
}
