//! Garbage collection of a Registry (`spec.gc`), as a pure function of the resource and of the
//! Jobs that ran: the CronJob, the Job an annotation asks for, and the last run for the status.
//!
//! ```text
//! spec.gc ─► CronJob <name>-gc ─► Job ─► pod: berth gc --url https://<name>.<ns>.svc:<port> …
//!                                         as the robot garbage-collector (granted admin)
//! berth.dev/gc-run: <new value> ─► Job <name>-gc-<hash of the value>, once per value
//! Jobs that ended ─► status.gc.lastRun (and GarbageCollected), from each pod's termination
//!                    message: the summary `berth gc --report-file` writes
//! ```
//! The pods mount no volume of the registry: a ReadWriteOnce claim is never fought over, and
//! `berth gc` only talks to the registry's admin API.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::effective::Effective;
use crate::controllers::jobs::{self, TERMINATION_LOG};
use crate::controllers::render::auth::{robots_secret_name, GC_ROBOT};
use crate::controllers::render::{from_json, BuildError};
use crate::crd::common::Cond;
use crate::crd::registry::{GcRun, GcSpec, TlsMode};
use crate::crd::Registry;
use crate::labels;

/// Set to a new value (a date, a counter) to run a collection now.
pub const RUN_ANNOTATION: &str = "berth.dev/gc-run";
pub const COMPONENT: &str = "gc";
pub const DEFAULT_SCHEDULE: &str = "0 3 * * *";
/// Where `berth gc` writes its summary: the container's termination message.
const CA_DIR: &str = "/etc/berth/ca";
/// A run the client gives up on after an hour; the Job a little later.
const DEADLINE_SECONDS: i64 = 3900;
/// A Job an annotation asked for is removed a day after it ends (the status keeps its result).
const REQUESTED_TTL_SECONDS: i64 = 86_400;
/// The longest CronJob name: the controller appends 11 characters to name its Jobs.
const MAX_CRON_JOB_NAME: usize = 52;

pub fn cron_job_name(reg: &Registry) -> String {
    format!("{}-gc", reg.name_any())
}

/// The Job for one value of the annotation ([`jobs::requested_name`]).
pub fn requested_job_name(reg: &Registry, value: &str) -> String {
    jobs::requested_name(&cron_job_name(reg), value)
}

/// Labels of the CronJob, its Jobs and their pods: never the registry pods' selector, so no
/// Service sends clients to a collection.
pub fn job_labels(reg: &Registry) -> BTreeMap<String, String> {
    jobs::labels(COMPONENT, labels::REGISTRY, &reg.name_any())
}

pub fn job_selector(reg: &Registry) -> String {
    jobs::selector(&job_labels(reg))
}

fn metadata(reg: &Registry, name: String) -> serde_json::Value {
    jobs::metadata(reg, name, &job_labels(reg))
}

/// `berth gc` against the Registry's Service, as the operator's robot when access is controlled.
fn job_spec(reg: &Registry, spec: &GcSpec, eff: &Effective, tls_secret: Option<&str>) -> serde_json::Value {
    let ns = reg.namespace().unwrap_or_default();
    let scheme = if eff.tls == TlsMode::None { "http" } else { "https" };
    let mut args = vec![
        "gc".to_owned(),
        "--url".into(),
        format!("{scheme}://{}.{ns}.svc:{}", reg.name_any(), eff.port),
        "--grace".into(),
        spec.grace.clone().unwrap_or_else(|| "1h".into()),
        "--report-file".into(),
        TERMINATION_LOG.into(),
    ];
    if spec.dry_run == Some(true) {
        args.push("--dry-run".into());
    }
    if spec.keep_untagged == Some(true) {
        args.push("--keep-untagged".into());
    }
    if spec.verify == Some(true) {
        args.push("--verify".into());
    } else if spec.scrub == Some(true) {
        args.push("--scrub".into());
    }
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if let Some(secret) = tls_secret {
        // The serving certificate's Secret carries the CA that signed it (`ca.crt`).
        args.extend(["--ca-file".into(), format!("{CA_DIR}/ca.crt")]);
        mounts.push(serde_json::json!({"name": "ca", "mountPath": CA_DIR, "readOnly": true}));
        volumes.push(serde_json::json!({"name": "ca", "secret": {
            "secretName": secret, "items": [{"key": "ca.crt", "path": "ca.crt"}], "defaultMode": 0o444}}));
    }
    let mut env = Vec::new();
    if reg.spec.auth.is_some() {
        env.push(serde_json::json!({"name": "BERTH_USERNAME", "value": GC_ROBOT}));
        env.push(serde_json::json!({"name": "BERTH_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": robots_secret_name(reg), "key": GC_ROBOT}}}));
    }
    let mut pod = serde_json::json!({
        "restartPolicy": "Never",
        "securityContext": jobs::pod_security(),
        "containers": [jobs::container(
            COMPONENT,
            &eff.image,
            reg.spec.image_pull_policy.as_deref().unwrap_or("IfNotPresent"),
            &args,
            &env,
            &mounts,
        )],
        "volumes": volumes,
    });
    if let Some(v) = &reg.spec.node_selector {
        pod["nodeSelector"] = serde_json::to_value(v).unwrap_or_default();
    }
    if let Some(v) = &reg.spec.tolerations {
        pod["tolerations"] = serde_json::to_value(v).unwrap_or_default();
    }
    serde_json::json!({
        "backoffLimit": 1,
        "activeDeadlineSeconds": DEADLINE_SECONDS,
        "template": {"metadata": {"labels": job_labels(reg)}, "spec": pod},
    })
}

/// The CronJob of `spec.gc`; `None` without it.
pub fn cron_job(
    reg: &Registry,
    eff: &Effective,
    tls_secret: Option<&str>,
) -> Result<Option<CronJob>, BuildError> {
    let Some(spec) = &reg.spec.gc else { return Ok(None) };
    if cron_job_name(reg).len() > MAX_CRON_JOB_NAME {
        return Err(BuildError::InvalidGc(format!(
            "the GC CronJob's name {} is longer than {MAX_CRON_JOB_NAME} characters; a shorter Registry name is needed for spec.gc",
            cron_job_name(reg)
        )));
    }
    let schedule = spec.schedule.clone().unwrap_or_else(|| DEFAULT_SCHEDULE.into());
    let job = job_spec(reg, spec, eff, tls_secret);
    let meta = metadata(reg, cron_job_name(reg));
    from_json(jobs::cron_job(meta, &schedule, spec.suspend == Some(true), &job_labels(reg), job)).map(Some)
}

/// The Job asked for by the annotation's `value`.
pub fn requested_job(
    reg: &Registry,
    eff: &Effective,
    tls_secret: Option<&str>,
    value: &str,
) -> Result<Option<Job>, BuildError> {
    let Some(spec) = &reg.spec.gc else { return Ok(None) };
    let mut meta = metadata(reg, requested_job_name(reg, value));
    meta["annotations"] = serde_json::json!({ RUN_ANNOTATION: value });
    let mut job = job_spec(reg, spec, eff, tls_secret);
    job["ttlSecondsAfterFinished"] = REQUESTED_TTL_SECONDS.into();
    from_json(serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job}))
        .map(Some)
}

/// The annotation's value when it asks for a run not yet acted on.
pub fn pending_request(reg: &Registry) -> Option<String> {
    let value = reg.annotations().get(RUN_ANNOTATION)?.trim().to_owned();
    let done = reg.status.as_ref().and_then(|s| s.gc.as_ref()).and_then(|g| g.requested.as_deref());
    (!value.is_empty() && reg.spec.gc.is_some() && done != Some(value.as_str())).then_some(value)
}

/// The run that ended last among `jobs`, with what its pod said; `None` when none has ended.
pub fn last_run(jobs: &[Job], pods: &[Pod]) -> Option<GcRun> {
    let ended = jobs::last_ended(jobs)?;
    let name = ended.job.name_any();
    let said = jobs::summary(pods, &name, COMPONENT);
    let number = |k: &str| said.as_ref().and_then(|s| s.get(k)).and_then(serde_json::Value::as_i64);
    let error = said.as_ref().and_then(|s| s.get("error")).and_then(|e| e.as_str()).map(str::to_owned);
    let ok = ended.succeeded;
    Some(GcRun {
        job: name.clone(),
        start_time: ended.job.status.as_ref().and_then(|s| s.start_time.clone()),
        completion_time: ended.at,
        result: if ok { "Succeeded" } else { "Failed" }.into(),
        dry_run: said.as_ref().and_then(|s| s.get("dryRun")).and_then(serde_json::Value::as_bool),
        tags_removed: number("tagsRemoved"),
        manifests_removed: number("manifestsRemoved"),
        blobs_removed: number("blobsRemoved"),
        bytes_reclaimed: number("bytesFreed"),
        conflicts: number("conflicts"),
        orphans_removed: number("orphansRemoved"),
        corrupt_blobs: number("corruptBlobs"),
        message: if ok {
            None
        } else {
            error.or_else(|| jobs::termination_message(pods, &name, COMPONENT)).or(ended.reason)
        },
    })
}

/// `GarbageCollected`, while `spec.gc` is set.
pub fn condition(reg: &Registry, run: Option<&GcRun>) -> Option<Cond> {
    let spec = reg.spec.gc.as_ref()?;
    let Some(run) = run else {
        let schedule = spec.schedule.clone().unwrap_or_else(|| DEFAULT_SCHEDULE.into());
        return Some(Cond {
            kind: "GarbageCollected",
            status: "Unknown",
            reason: "NotRunYet".into(),
            message: format!(
                "no collection has ended yet (schedule {schedule:?}, or annotate {RUN_ANNOTATION})"
            ),
        });
    };
    if run.result != "Succeeded" {
        let why = run.message.clone().unwrap_or_else(|| "the run failed".into());
        return Some(Cond::new("GarbageCollected", false, "RunFailed", format!("Job {}: {why}", run.job)));
    }
    if let Some(n) = run.corrupt_blobs.filter(|n| *n > 0) {
        let why = format!(
            "Job {} found {n} stored blobs missing or not matching their digest (its log names them): \
             restore them from a backup or push them again",
            run.job
        );
        return Some(Cond::new("GarbageCollected", false, "CorruptBlobs", why));
    }
    let (m, b, bytes) = (
        run.manifests_removed.unwrap_or(0),
        run.blobs_removed.unwrap_or(0),
        run.bytes_reclaimed.unwrap_or(0),
    );
    let tags = match run.tags_removed.unwrap_or(0) {
        0 => String::new(),
        n => format!("{n} tags, "),
    };
    Some(if run.dry_run == Some(true) {
        Cond::new(
            "GarbageCollected",
            true,
            "DryRun",
            format!(
                "dry run (Job {}): would remove {tags}{m} manifests and {b} blobs, {bytes} bytes",
                run.job
            ),
        )
    } else {
        Cond::new(
            "GarbageCollected",
            true,
            "Collected",
            format!("Job {} removed {tags}{m} manifests and {b} blobs, {bytes} bytes", run.job),
        )
    })
}
