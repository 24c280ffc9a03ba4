//! A ReplicationPolicy's status from what was observed (pure): `Ready` and `Stalled`, the last
//! run (from the Job that ended last and its containers' summaries), and the next scheduled run.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::render;
use crate::controllers::jobs;
use crate::crd::common::{conditions, Cond};
use crate::crd::replication::{ReplicationPolicy, ReplicationPolicyStatus, RunSummary};

#[derive(Debug, Default)]
pub struct Observed {
    /// Why runs cannot go as the spec asks: (reason, message).
    pub stalled: Option<(String, String)>,
    pub jobs: Vec<Job>,
    pub pods: Vec<Pod>,
    /// The annotation value a Job was started for in this reconcile (or before).
    pub requested: Option<String>,
}

pub fn compute(p: &ReplicationPolicy, obs: &Observed, now: Time) -> ReplicationPolicyStatus {
    let previous = p.status.clone().unwrap_or_default();
    let suspended = p.spec.suspend == Some(true);
    let schedule = p.spec.trigger.as_ref().and_then(|t| t.schedule.clone());
    let conds = match &obs.stalled {
        Some((reason, message)) => vec![
            Cond::new("Ready", false, reason.clone(), message.clone()),
            Cond::new("Stalled", true, reason.clone(), message.clone()),
        ],
        None => {
            let on_push = render::on_push(p);
            let mut how = Vec::new();
            if let Some(s) = &schedule {
                how.push(format!("runs on the schedule {s:?}"));
            }
            if on_push {
                how.push("copies each push as it happens".to_owned());
            }
            if schedule.is_none() && !on_push {
                how.push(format!("runs when {} is set to a new value", render::RUN_ANNOTATION));
            }
            let (reason, message) = match (&schedule, suspended, on_push) {
                (_, true, _) => ("Suspended", "suspended: no new runs, no copies on push".to_owned()),
                (Some(_), false, _) => ("Scheduled", how.join("; ")),
                (None, false, true) => ("OnPush", how.join("; ")),
                (None, false, false) => ("Manual", how.join("; ")),
            };
            vec![Cond::new("Ready", true, reason, message), Cond::new("Stalled", false, "AsExpected", "")]
        }
    };
    let next_run = match (&schedule, suspended || obs.stalled.is_some()) {
        (Some(s), false) => super::cron::next(s, now.0).ok().flatten().map(Time),
        _ => None,
    };
    ReplicationPolicyStatus {
        observed_generation: p.metadata.generation,
        conditions: Some(conditions(
            previous.conditions.as_deref().unwrap_or_default(),
            conds,
            p.metadata.generation,
            &now,
        )),
        last_run: last_run(p, &obs.jobs, &obs.pods).or(previous.last_run),
        next_run,
        requested: obs.requested.clone().or(previous.requested),
    }
}

/// The run that ended last, its containers' summaries added up.
pub fn last_run(p: &ReplicationPolicy, jobs: &[Job], pods: &[Pod]) -> Option<RunSummary> {
    let ended = jobs::last_ended(jobs)?;
    let name = ended.job.name_any();
    let summaries: Vec<_> =
        render::container_names(p).iter().filter_map(|c| jobs::summary(pods, &name, c)).collect();
    let total = |k: &str| {
        let values: Vec<i64> =
            summaries.iter().filter_map(|s| s.get(k).and_then(serde_json::Value::as_i64)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let error = summaries.iter().find_map(|s| s.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    let message = match (ended.succeeded, error) {
        (true, None) => None,
        (_, Some(e)) => Some(e),
        (false, None) => render::container_names(p)
            .iter()
            .find_map(|c| jobs::termination_message(pods, &name, c))
            .or(ended.reason),
    };
    Some(RunSummary {
        job: Some(name),
        started_at: ended.job.status.as_ref().and_then(|s| s.start_time.clone()),
        finished_at: ended.at,
        succeeded: Some(ended.succeeded),
        images_copied: total("imagesCopied"),
        images_skipped: total("imagesUnchanged"),
        images_failed: total("imagesFailed"),
        tags_deleted: total("tagsDeleted"),
        bytes_copied: total("bytesCopied"),
        message,
    })
}
