//! A Registry's status, as a pure function of what was observed. Condition times change only on
//! transitions, so an unchanged world produces an identical status and no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backends::{Backends, Health};
use super::effective::Effective;
use crate::crd::common::{conditions, Cond};
use crate::crd::registry::{GcRun, GcStatus, RegistryStatus, TlsStatus};
use crate::crd::Registry;

/// What the reconciler saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `None` when the StatefulSet does not exist (yet).
    pub statefulset: Option<SetState>,
    /// Why the Registry cannot make progress, if it cannot: (reason, message).
    pub stalled: Option<(String, String)>,
    /// What it is waiting for that is on its way (e.g. a certificate being issued).
    pub waiting: Option<(String, String)>,
    pub suspended: bool,
    /// Claims of the pods that are still Pending, with why.
    pub pending_claims: Vec<(String, String)>,
    pub tls: Option<TlsStatus>,
    pub endpoint: String,
    pub selector: String,
    /// The ProxyCaches rendered into the config just applied; `None` when nothing was applied
    /// (the previous report stands).
    pub proxy_caches: Option<Vec<String>>,
    pub pull_secrets: Option<crate::crd::registry::PullSecretsStatus>,
    /// What replicas that are not ready said of their storage and database; `None` when none
    /// was asked (all ready) or none answered.
    pub backends: Option<Backends>,
    /// The `berth.dev/gc-run` value whose Job this pass created.
    pub gc_requested: Option<String>,
    /// The collection that ended last, among the Jobs still there.
    pub gc_last_run: Option<crate::crd::registry::GcRun>,
    /// The node mirror's DaemonSet as applied, while `spec.nodeMirror` is on.
    pub node_mirror: Option<MirrorState>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MirrorState {
    /// The Service has no cluster IP yet (and the spec names no endpoint).
    NoEndpoint,
    /// Pods the DaemonSet should run, those ready (their node configured as planned), and why
    /// the API server refused the ones it could not create.
    Pods { scheduled: i32, ready: i32, refused: Option<String> },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetState {
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
}

pub fn compute(reg: &Registry, eff: &Effective, obs: &Observed, now: Time) -> RegistryStatus {
    let previous = reg.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let want = eff.replicas;
    let set = obs.statefulset.clone().unwrap_or_default();
    let rolled_out = obs.statefulset.is_some()
        && set.observed_generation >= set.generation
        && set.updated >= want
        && set.replicas == want;
    let ready =
        obs.stalled.is_none() && obs.waiting.is_none() && !obs.suspended && rolled_out && set.ready >= want;
    let (ready_reason, ready_message) = if let Some((r, m)) = &obs.stalled {
        (r.clone(), m.clone())
    } else if let Some((r, m)) = &obs.waiting {
        (r.clone(), m.clone())
    } else if obs.suspended {
        ("Suspended".into(), "spec.suspend is true: the operator leaves this Registry as it is".into())
    } else if ready && want == 0 {
        ("ScaledToZero".into(), "no replicas requested".into())
    } else if ready {
        ("Serving".into(), format!("{}/{} replicas ready at {}", set.ready, want, obs.endpoint))
    } else if let Some((claim, why)) = obs.pending_claims.first() {
        ("StoragePending".into(), format!("volume claim {claim} is not bound: {why}"))
    } else {
        ("Progressing".into(), format!("{}/{} replicas ready", set.ready, want))
    };
    let conds = vec![
        Cond::new("Ready", ready, ready_reason.clone(), ready_message.clone()),
        Cond::new(
            "Reconciling",
            !ready && obs.stalled.is_none() && !obs.suspended,
            if ready { "Reconciled".into() } else { ready_reason.clone() },
            ready_message.clone(),
        ),
        Cond::new(
            "Stalled",
            obs.stalled.is_some(),
            obs.stalled.as_ref().map_or("NotStalled".into(), |s| s.0.clone()),
            obs.stalled.as_ref().map_or(String::new(), |s| s.1.clone()),
        ),
    ];
    let mut conds = conds;
    conds.push(backend_condition("StorageReady", obs.backends.as_ref().map(|b| &b.storage), ready));
    conds.push(backend_condition("DatabaseReady", obs.backends.as_ref().map(|b| &b.database), ready));
    let gc = gc_status(reg, obs);
    conds.extend(super::gc::condition(reg, gc.as_ref().and_then(|g| g.last_run.as_ref())));
    conds.extend(node_mirror_condition(reg, obs));
    let generation = reg.metadata.generation;
    let conditions = conditions(&previous, conds, generation, &now);
    RegistryStatus {
        observed_generation: generation,
        conditions: Some(conditions),
        endpoint: Some(obs.endpoint.clone()),
        replicas: Some(set.replicas),
        ready_replicas: Some(set.ready),
        selector: Some(obs.selector.clone()),
        effective: Some(eff.report(reg)),
        tls: obs.tls.clone(),
        pull_secrets: obs.pull_secrets.clone(),
        proxy_caches: obs
            .proxy_caches
            .clone()
            .or_else(|| reg.status.as_ref().and_then(|s| s.proxy_caches.clone())),
        gc,
    }
}

/// While `spec.gc` is set: its CronJob, the request acted on and the last run (both kept from
/// the previous status when this pass saw nothing newer: Jobs are removed after a while).
fn gc_status(reg: &Registry, obs: &Observed) -> Option<GcStatus> {
    reg.spec.gc.as_ref()?;
    let previous = reg.status.as_ref().and_then(|s| s.gc.clone()).unwrap_or_default();
    let newer = |run: &GcRun| match &previous.last_run {
        Some(p) => run.completion_time.as_ref().map(|t| t.0) >= p.completion_time.as_ref().map(|t| t.0),
        None => true,
    };
    Some(GcStatus {
        cron_job: Some(super::gc::cron_job_name(reg)),
        requested: obs.gc_requested.clone().or(previous.requested),
        last_run: obs.gc_last_run.clone().filter(newer).or(previous.last_run),
    })
}

/// `StorageReady` or `DatabaseReady`: what a replica said when one was asked; otherwise true
/// while every replica is ready (their readiness checks both), unknown while none could say.
fn backend_condition(kind: &'static str, health: Option<&Health>, all_ready: bool) -> Cond {
    match health {
        Some(Health::Failing { reason, message }) => Cond::new(kind, false, *reason, message.clone()),
        Some(Health::Ready) => Cond::new(kind, true, "Reachable", "the replicas asked reach it"),
        None if all_ready => Cond::new(kind, true, "Reachable", "every replica is ready"),
        None => Cond {
            kind,
            status: "Unknown",
            reason: "NoAnswer".into(),
            message: "no replica has said yet".into(),
        },
    }
}

/// `NodeMirrorReady`, while `spec.nodeMirror` is on: whether every selected node's pod has
/// written its files and found containerd reading them.
fn node_mirror_condition(reg: &Registry, obs: &Observed) -> Option<Cond> {
    super::nodemirror::enabled(reg)?;
    let kind = "NodeMirrorReady";
    Some(match &obs.node_mirror {
        None => Cond { kind, status: "Unknown", reason: "Pending".into(), message: "not applied yet".into() },
        Some(MirrorState::NoEndpoint) => Cond::new(
            kind,
            false,
            "EndpointPending",
            "the Service has no cluster IP yet (or give spec.nodeMirror.endpoint)",
        ),
        Some(MirrorState::Pods { scheduled: 0, .. }) => {
            Cond::new(kind, false, "NoNodes", "no node matches spec.nodeMirror.nodeSelector")
        }
        Some(MirrorState::Pods { scheduled, ready, .. }) if ready >= scheduled => Cond::new(
            kind,
            true,
            "Configured",
            format!("{ready}/{scheduled} nodes pull through this Registry"),
        ),
        Some(MirrorState::Pods { refused: Some(why), .. }) => {
            Cond::new(kind, false, super::refused_pods::REASON, why.clone())
        }
        Some(MirrorState::Pods { scheduled, ready, .. }) => Cond::new(
            kind,
            false,
            "NodesNotConfigured",
            format!(
                "{ready}/{scheduled} nodes configured; the others' pods say why (kubectl logs -n {} -l \
                 app.kubernetes.io/name=berth-node-mirror,app.kubernetes.io/instance={}), often \
                 containerd's config_path not set",
                reg.metadata.namespace.clone().unwrap_or_default(),
                reg.metadata.name.clone().unwrap_or_default()
            ),
        ),
    })
}
