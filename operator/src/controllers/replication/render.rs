//! A `ReplicationPolicy` as Jobs (pure): each run is a pod running `berth replicate`, one
//! container per rule (in order: all but the last as init containers), each writing its summary
//! to its termination message.
//!
//! ```text
//! trigger.schedule ─► CronJob <policy>-replicate ─► Job ─► pod: berth replicate --from … --to …
//! berth.dev/run: <new value> (trigger.manual) ─► Job <policy>-replicate-<hash>, once per value
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;

use crate::controllers::jobs::{self, TERMINATION_LOG};
use crate::controllers::registry::effective;
use crate::controllers::registry::tls::tls_secret_name;
use crate::controllers::render::{from_json, BuildError};
use crate::crd::registry::TlsMode;
use crate::crd::replication::{DeleteMode, Endpoint, ReplicationMode, ReplicationPolicy};
use crate::crd::Registry;
use berth_core::config::replication::Deletes;

/// Set to a new value (with `trigger.manual: true`) to run the policy now.
pub const RUN_ANNOTATION: &str = "berth.dev/run";
/// The label naming the policy on its CronJob, Jobs and pods.
pub const POLICY_LABEL: &str = "berth.dev/replication-policy";
pub const COMPONENT: &str = "replication";
/// A run is stopped after six hours.
const DEADLINE_SECONDS: i64 = 6 * 3600;
/// A Job an annotation asked for is removed a day after it ends (the status keeps its result).
const REQUESTED_TTL_SECONDS: i64 = 86_400;
/// The longest CronJob name: the controller appends 11 characters to name its Jobs.
const MAX_CRON_JOB_NAME: usize = 52;

/// One end of a run, as its pod reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub url: String,
    /// A Secret with `username` and `password`, or a docker config (`.dockerconfigjson`).
    pub credentials: Option<String>,
    /// The credentials Secret is a docker config (the reconciler looked).
    pub docker_config: bool,
    /// A Secret whose `ca.crt` signs the end's certificate.
    pub ca_secret: Option<String>,
}

/// Where a run's pod finds each end's docker config.
const AUTH_DIR: [(&str, &str); 2] = [("--from-authfile", "from-auth"), ("--to-authfile", "to-auth")];

/// Whether `p` has `registry` copy its pushes as they happen (and may now).
pub fn copies_on_push(p: &ReplicationPolicy, registry: &str) -> bool {
    on_push(p)
        && p.spec.suspend != Some(true)
        && p.spec.mode != Some(ReplicationMode::Pull)
        && p.spec.source.registry_ref.as_ref().is_some_and(|r| r.name == registry)
}

pub fn on_push(p: &ReplicationPolicy) -> bool {
    p.spec.trigger.as_ref().and_then(|t| t.on_push) == Some(true)
}

/// Whether `p` starts runs (Jobs), which log in to the source themselves.
pub fn runs(p: &ReplicationPolicy) -> bool {
    p.spec.trigger.as_ref().is_some_and(|t| t.schedule.is_some() || t.manual == Some(true))
}

/// What a run (or a copy on push) deletes at the destination.
pub fn deletes(p: &ReplicationPolicy) -> Deletes {
    match p.spec.deletes {
        None | Some(DeleteMode::None) => Deletes::None,
        Some(DeleteMode::Tags) => Deletes::Tags,
        Some(DeleteMode::Mirror) => Deletes::Mirror,
    }
}

/// Whether destination tags that name another digest are moved (`Mirror` always does).
pub fn overwrites(p: &ReplicationPolicy) -> bool {
    p.spec.overwrite != Some(false) || deletes(p) == Deletes::Mirror
}

/// Where `end` is: a Registry of the namespace (`registry`, when it exists) by its Service, or
/// a URL. Why not, for an end a run cannot use. `login` says whether something must log in to
/// a Registry that controls access (not to a source whose only copies are its own, on push).
pub fn side(end: &Endpoint, which: &str, registry: Option<&Registry>, login: bool) -> Result<Side, String> {
    if let Some(prefix) = end.prefix.as_deref().map(|p| p.trim_end_matches('/')).filter(|p| !p.is_empty()) {
        if let Err(e) = prefix.parse::<berth_core::oci::RepoName>() {
            return Err(format!("{which}.prefix {prefix:?} is not a repository path: {e}"));
        }
    }
    match (&end.registry_ref, &end.url) {
        (Some(r), _) => {
            let Some(reg) = registry else {
                return Err(format!("{which}: Registry {} does not exist", r.name));
            };
            if login && reg.spec.auth.is_some() && end.credentials_secret.is_none() {
                return Err(format!(
                    "{which}: Registry {} controls access: name a credentialsSecret (username, password) of a user or robot that may {}",
                    r.name,
                    if which == "source" { "pull" } else { "push" }
                ));
            }
            let eff = effective::resolve(reg, "");
            let tls = eff.tls != TlsMode::None;
            let ns = reg.namespace().unwrap_or_default();
            Ok(Side {
                url: format!(
                    "{}://{}.{ns}.svc:{}",
                    if tls { "https" } else { "http" },
                    reg.name_any(),
                    eff.port
                ),
                credentials: end.credentials_secret.clone(),
                docker_config: false,
                ca_secret: tls.then(|| tls_secret_name(reg)),
            })
        }
        (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => Ok(Side {
            url: url.clone(),
            credentials: end.credentials_secret.clone(),
            docker_config: false,
            ca_secret: None,
        }),
        (None, Some(url)) => Err(format!("{which}.url {url:?} must start with http:// or https://")),
        (None, None) => Err(format!("{which}: set registryRef or url")),
    }
}

pub fn cron_job_name(p: &ReplicationPolicy) -> String {
    format!("{}-replicate", p.name_any())
}

/// The Job for one value of the annotation ([`jobs::requested_name`]).
pub fn requested_job_name(p: &ReplicationPolicy, value: &str) -> String {
    jobs::requested_name(&cron_job_name(p), value)
}

pub fn job_labels(p: &ReplicationPolicy) -> BTreeMap<String, String> {
    jobs::labels(COMPONENT, POLICY_LABEL, &p.name_any())
}

pub fn job_selector(p: &ReplicationPolicy) -> String {
    jobs::selector(&job_labels(p))
}

/// The containers of a run: one per rule (everything when there is none).
pub fn container_names(p: &ReplicationPolicy) -> Vec<String> {
    (0..p.spec.rules.as_ref().map_or(0, Vec::len).max(1)).map(|i| format!("rule-{i}")).collect()
}

/// `berth replicate` arguments of each rule.
fn rule_args(p: &ReplicationPolicy, from: &Side, to: &Side) -> Result<Vec<Vec<String>>, BuildError> {
    let mut base =
        vec!["replicate".to_owned(), "--from".into(), from.url.clone(), "--to".into(), to.url.clone()];
    for (flag, side, dir) in [("--from-ca-file", from, "from-ca"), ("--to-ca-file", to, "to-ca")] {
        if side.ca_secret.is_some() {
            base.extend([flag.to_owned(), format!("/etc/berth/{dir}/ca.crt")]);
        }
    }
    for ((flag, dir), side) in AUTH_DIR.into_iter().zip([from, to]) {
        if side.docker_config && side.credentials.is_some() {
            base.extend([flag.to_owned(), format!("/etc/berth/{dir}/config.json")]);
        }
    }
    match deletes(p) {
        Deletes::Tags => base.extend(["--delete".into(), "tags".into()]),
        Deletes::Mirror => base.extend(["--delete".into(), "mirror".into()]),
        Deletes::None => {}
    }
    if !overwrites(p) {
        base.push("--no-overwrite".into());
    }
    for (flag, end) in [("--from-prefix", &p.spec.source), ("--to-prefix", &p.spec.destination)] {
        if let Some(prefix) = end.prefix.as_deref().filter(|p| !p.is_empty()) {
            base.extend([flag.to_owned(), prefix.to_owned()]);
        }
    }
    base.extend(["--progress".into(), "json".into(), "--report-file".into(), TERMINATION_LOG.into()]);
    let rules = p.spec.rules.clone().unwrap_or_default();
    let rules = if rules.is_empty() { vec![Default::default()] } else { rules };
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut args = base.clone();
        args.push("--all".into());
        if rule.referrers == Some(false) {
            args.push("--no-referrers".into());
        }
        for r in rule.repositories.iter().flatten() {
            args.extend(["--repository".into(), r.clone()]);
        }
        for t in rule.tags.iter().flatten() {
            match t.strip_prefix("re:") {
                Some(re) => {
                    regex_lite::Regex::new(re).map_err(|e| {
                        BuildError::InvalidReplication(format!("rules[{i}].tags: {t:?}: {e}"))
                    })?;
                    args.extend(["--tag-regex".into(), re.to_owned()]);
                }
                None => args.extend(["--tag".into(), t.clone()]),
            }
        }
        out.push(args);
    }
    Ok(out)
}

fn metadata(p: &ReplicationPolicy, name: String) -> serde_json::Value {
    jobs::metadata(p, name, &job_labels(p))
}

fn job_spec(
    p: &ReplicationPolicy,
    image: &str,
    from: &Side,
    to: &Side,
) -> Result<serde_json::Value, BuildError> {
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    for ((prefix, side, dir), (_, auth_dir)) in
        [("BERTH_FROM", from, "from-ca"), ("BERTH_TO", to, "to-ca")].into_iter().zip(AUTH_DIR)
    {
        match (&side.credentials, side.docker_config) {
            (Some(secret), false) => {
                for (var, key) in [("USERNAME", "username"), ("PASSWORD", "password")] {
                    env.push(serde_json::json!({"name": format!("{prefix}_{var}"),
                        "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}));
                }
            }
            (Some(secret), true) => {
                mounts.push(serde_json::json!({"name": auth_dir, "mountPath": format!("/etc/berth/{auth_dir}"), "readOnly": true}));
                volumes.push(serde_json::json!({"name": auth_dir, "secret": {
                    "secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}], "defaultMode": 0o440}}));
            }
            (None, _) => {}
        }
        if let Some(secret) = &side.ca_secret {
            mounts.push(
                serde_json::json!({"name": dir, "mountPath": format!("/etc/berth/{dir}"), "readOnly": true}),
            );
            volumes.push(serde_json::json!({"name": dir, "secret": {
                "secretName": secret, "items": [{"key": "ca.crt", "path": "ca.crt"}], "defaultMode": 0o444}}));
        }
    }
    let containers: Vec<serde_json::Value> = rule_args(p, from, to)?
        .into_iter()
        .zip(container_names(p))
        .map(|(args, name)| jobs::container(&name, image, "IfNotPresent", &args, &env, &mounts))
        .collect();
    let (init, last) = containers.split_at(containers.len().saturating_sub(1));
    Ok(serde_json::json!({
        "backoffLimit": 1,
        "activeDeadlineSeconds": DEADLINE_SECONDS,
        "template": {"metadata": {"labels": job_labels(p)}, "spec": {
            "restartPolicy": "Never",
            "securityContext": jobs::pod_security(),
            "initContainers": init,
            "containers": last,
            "volumes": volumes,
        }},
    }))
}

/// The CronJob of `trigger.schedule`; `None` without one.
pub fn cron_job(
    p: &ReplicationPolicy,
    image: &str,
    from: &Side,
    to: &Side,
) -> Result<Option<CronJob>, BuildError> {
    let Some(schedule) = p.spec.trigger.as_ref().and_then(|t| t.schedule.clone()) else { return Ok(None) };
    super::cron::next(&schedule, jiff::Timestamp::now())
        .map_err(|e| BuildError::InvalidReplication(format!("trigger.schedule: {e}")))?;
    if cron_job_name(p).len() > MAX_CRON_JOB_NAME {
        return Err(BuildError::InvalidReplication(format!(
            "the CronJob's name {} is longer than {MAX_CRON_JOB_NAME} characters: choose a shorter policy name",
            cron_job_name(p)
        )));
    }
    let job = job_spec(p, image, from, to)?;
    let meta = metadata(p, cron_job_name(p));
    from_json(jobs::cron_job(meta, &schedule, p.spec.suspend == Some(true), &job_labels(p), job)).map(Some)
}

/// The Job the annotation's `value` asks for.
pub fn requested_job(
    p: &ReplicationPolicy,
    image: &str,
    from: &Side,
    to: &Side,
    value: &str,
) -> Result<Job, BuildError> {
    let mut meta = metadata(p, requested_job_name(p, value));
    meta["annotations"] = serde_json::json!({ RUN_ANNOTATION: value });
    let mut job = job_spec(p, image, from, to)?;
    job["ttlSecondsAfterFinished"] = REQUESTED_TTL_SECONDS.into();
    from_json(serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job}))
}

/// The annotation's value when it asks for a run not yet acted on.
pub fn pending_request(p: &ReplicationPolicy) -> Option<String> {
    let value = p.annotations().get(RUN_ANNOTATION)?.trim().to_owned();
    let done = p.status.as_ref().and_then(|s| s.requested.as_deref());
    let manual = p.spec.trigger.as_ref().and_then(|t| t.manual) == Some(true);
    (manual && p.spec.suspend != Some(true) && !value.is_empty() && done != Some(value.as_str()))
        .then_some(value)
}
