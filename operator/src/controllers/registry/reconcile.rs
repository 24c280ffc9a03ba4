//! The only code of the Registry controller that talks to the API server.
//!
//! One pass: the Service (for its cluster IP) → TLS material → pure `desired::build` → server-side
//! apply of every other child → prune children no longer wanted → observe → pure
//! `status::compute` → patch status only if it changed → an Event when `Ready` flips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::credentials::{self, AuthError};
use super::desired::{self, Child, Inputs};
use super::effective::{self, Effective};
use super::gc;
use super::nodemirror;
use super::pullsecrets;
use super::refused_pods;
use super::status::{self, MirrorState, Observed, SetState};
use super::tls::{self, TlsError};
use crate::controllers::apply::{apply, prune, refusal};
use crate::controllers::render::auth::{Builtin, PULL_ROBOT};
use crate::controllers::render::proxies::{self, ProxySource};
use crate::controllers::render::replication::OnPushSource;
use crate::controllers::replication::render as replication;
use crate::controllers::{publish_readiness, Context, Error};
use crate::crd::common::is_true;
use crate::crd::proxycache::ProxyCache;
use crate::crd::replication::ReplicationPolicy;
use crate::crd::Registry;
use crate::labels;

pub async fn reconcile(reg: Arc<Registry>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !crate::leader::still_leading() {
        tracing::debug!(registry = %reg.name_any(), "not leading; leaving it to the leader");
        return Ok(Action::await_change());
    }
    tracing::debug!(registry = %reg.name_any(), "reconciling");
    let started = Instant::now();
    let result = reconcile_inner(&reg, &ctx).await;
    ctx.metrics.observe("Registry", started.elapsed(), result.as_ref().err().map(Error::label));
    result
}

pub fn error_policy(reg: Arc<Registry>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(registry = %reg.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

async fn reconcile_inner(reg: &Registry, ctx: &Context) -> Result<Action, Error> {
    let ns = reg.namespace().unwrap_or_default();
    let name = reg.name_any();
    let eff = effective::resolve(reg, &ctx.default_image);
    let mut obs = Observed {
        endpoint: format!("{name}.{ns}.svc:{}", eff.port),
        selector: labels::selector_string(&name),
        suspended: reg.spec.suspend == Some(true),
        ..Observed::default()
    };
    if reg.meta().deletion_timestamp.is_some() {
        // Pull Secrets in other namespaces cannot be owned: take them back before letting go.
        if has_finalizer(reg) {
            let spec = reg.spec.pull_secrets.clone().unwrap_or_default();
            pullsecrets::withdraw(&ctx.client, reg, &spec).await?;
            set_finalizer(ctx, reg, false).await?;
        }
        return Ok(Action::await_change());
    }
    if !obs.suspended {
        converge(reg, ctx, &ns, &eff, &mut obs).await?;
    }
    observe(reg, ctx, &ns, eff.replicas, &mut obs).await?;
    let new = status::compute(reg, &eff, &obs, crate::controllers::now());
    let was_ready =
        reg.status.as_ref().and_then(|s| s.conditions.as_deref()).is_some_and(|c| is_true(c, "Ready"));
    let now_ready = new.conditions.as_deref().is_some_and(|c| is_true(c, "Ready"));
    if reg.status.as_ref() != Some(&new) {
        let api: Api<Registry> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": new});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if was_ready != now_ready {
        let message = if now_ready {
            format!("serving at {}", obs.endpoint)
        } else {
            let ready = new.conditions.as_deref().and_then(|c| crate::crd::common::condition(c, "Ready"));
            ready.map(|c| c.message.clone()).unwrap_or_default()
        };
        publish_readiness(ctx, reg, now_ready, &message).await;
    }
    // Secrets are not watched (the operator may not list them), so a Secret it made that someone
    // deleted, a pull Secret removed from a namespace, or a certificate due for renewal is put
    // right by this periodic pass.
    Ok(if now_ready {
        Action::requeue(ctx.resync)
    } else {
        Action::requeue(ctx.resync.min(Duration::from_secs(30)))
    })
}

/// A child the API server refused ([`refusal`]) stalls the Registry; any other failure is an error.
fn stall_or_fail(obs: &mut Observed, what: &str, e: kube::Error) -> Result<(), Error> {
    obs.stalled = Some(refusal(what, &e).ok_or(e)?);
    Ok(())
}

/// The Service, TLS, children, pruning. Problems the user must fix become `obs.stalled` instead
/// of errors, so the controller reports them instead of retrying in a tight loop.
async fn converge(
    reg: &Registry,
    ctx: &Context,
    ns: &str,
    eff: &Effective,
    obs: &mut Observed,
) -> Result<(), Error> {
    // The Service comes first: its cluster IP, allocated as it is made, goes into the first
    // serving certificate and into the nodes' mirror files of the same pass. Were it made after
    // the certificate, nodes would be sent to an address the pods' certificate lacks until they
    // reload the one issued on the next pass.
    let service = match desired::service(reg, eff) {
        Ok(s) => s,
        Err(e) => {
            obs.stalled = Some((e.reason().into(), e.to_string()));
            return Ok(());
        }
    };
    let cluster_ip = match apply(&ctx.client, ns, &service).await {
        Ok(applied) => applied.spec.and_then(|s| s.cluster_ip),
        Err(e) => return stall_or_fail(obs, &format!("Service {}", service.name_any()), e),
    };
    let tls = match tls::ensure(&ctx.client, reg, cluster_ip.as_deref()).await {
        Ok(t) => t,
        Err(TlsError::MissingSecret(s)) => {
            obs.stalled = Some(("TLSSecretMissing".into(), format!("TLS Secret {s} does not exist")));
            return Ok(());
        }
        Err(e @ TlsError::CertManagerMissing) => {
            obs.stalled = Some(("CertManagerMissing".into(), e.to_string()));
            return Ok(());
        }
        Err(e @ TlsError::CertificatePending(_)) => {
            obs.waiting = Some(("CertificatePending".into(), e.to_string()));
            return Ok(());
        }
        Err(TlsError::Kube(e)) => return stall_or_fail(obs, "a Secret of the serving certificate", e),
        Err(e) => return Err(Error::Tls(e)),
    };
    obs.tls = tls.as_ref().map(|(_, s)| s.clone());
    let mut pull_secret = None;
    if let Some(spec) = &reg.spec.auth {
        match credentials::ensure(&ctx.client, reg, spec, Builtin::of(reg)).await {
            Ok(p) => pull_secret = p,
            Err(AuthError::Kube(e)) => return stall_or_fail(obs, "a Secret of access control", e),
            Err(e @ AuthError::Generate(_)) => {
                obs.stalled = Some(("AuthSecretsFailed".into(), e.to_string()));
                return Ok(());
            }
        }
    }
    let proxies = proxy_sources(reg, ctx, ns).await?;
    let on_push = on_push_sources(reg, ctx, ns).await?;
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let claim_template_size = sets.get_opt(&reg.name_any()).await?.and_then(|s| {
        let templates = s.spec?.volume_claim_templates?;
        let size = templates
            .first()?
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .0
            .clone();
        Some(size)
    });
    let mirror_endpoint = nodemirror::endpoint(reg, eff.port, cluster_ip.as_deref());
    if nodemirror::enabled(reg).is_some() && mirror_endpoint.is_none() {
        obs.node_mirror = Some(MirrorState::NoEndpoint);
    }
    let inputs = Inputs {
        default_image: ctx.default_image.clone(),
        tls_secret: tls.map(|(name, _)| name),
        proxies,
        claim_template_size,
        on_push,
        mirror_endpoint,
    };
    let children = match desired::build(reg, &inputs) {
        Ok(c) => c,
        // Each is the spec's to fix (or a Secret still to come): reported, nothing applied.
        Err(e) => {
            obs.stalled = Some((e.reason().into(), e.to_string()));
            return Ok(());
        }
    };
    obs.proxy_caches = Some(proxies::active_names(&inputs.proxies));
    let mut keep = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for child in &children {
        keep.entry(child.kind()).or_default().push(child.name());
        // Each applied; the DaemonSet's answer carries its pods' state.
        let applied = match child {
            Child::Secret(o) => apply(&ctx.client, ns, o).await.map(|_| None),
            Child::Service(o) if o.name_any() == service.name_any() => Ok(None), // applied first, above
            Child::Service(o) => apply(&ctx.client, ns, o).await.map(|_| None),
            Child::StatefulSet(o) => apply(&ctx.client, ns, o).await.map(|_| None),
            Child::Pdb(o) => apply(&ctx.client, ns, o).await.map(|_| None),
            Child::CronJob(o) => apply(&ctx.client, ns, o).await.map(|_| None),
            Child::ConfigMap(o) => apply(&ctx.client, ns, o).await.map(|_| None),
            Child::DaemonSet(o) => {
                apply(&ctx.client, ns, o).await.map(|d| Some(d.status.unwrap_or_default()))
            }
        };
        match applied {
            Ok(Some(status)) => {
                let refused = if status.current_number_scheduled < status.desired_number_scheduled {
                    refused_pods::why(ctx, ns, "DaemonSet", &child.name()).await?
                } else {
                    None
                };
                obs.node_mirror = Some(MirrorState::Pods {
                    scheduled: status.desired_number_scheduled,
                    ready: status.number_ready,
                    refused,
                })
            }
            Ok(None) => {}
            Err(e) => return stall_or_fail(obs, &format!("{} {}", child.kind(), child.name()), e),
        }
    }
    if let Some(value) = gc::pending_request(reg) {
        match gc::requested_job(reg, eff, inputs.tls_secret.as_deref(), &value) {
            Ok(Some(job)) => {
                let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
                match jobs.create(&PostParams::default(), &job).await {
                    Ok(_) => {
                        tracing::info!(registry = %reg.name_any(), job = %job.name_any(), "garbage collection requested")
                    }
                    // Made by an earlier pass whose status write did not land.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return stall_or_fail(obs, &format!("Job {}", job.name_any()), e),
                }
                obs.gc_requested = Some(value);
            }
            Ok(None) => {}
            Err(e) => obs.stalled = Some((e.reason().into(), e.to_string())),
        }
    }
    let selector = labels::owned_by(&reg.name_any());
    let uid = reg.uid().unwrap_or_default();
    let none = Vec::new();
    prune::<PodDisruptionBudget>(
        &ctx.client,
        ns,
        &selector,
        &uid,
        keep.get("PodDisruptionBudget").unwrap_or(&none),
    )
    .await?;
    prune::<Service>(&ctx.client, ns, &selector, &uid, keep.get("Service").unwrap_or(&none)).await?;
    prune::<CronJob>(&ctx.client, ns, &selector, &uid, keep.get("CronJob").unwrap_or(&none)).await?;
    // The node mirror's children exist only where it was ever asked for (its condition stays in
    // status until they are gone): other Registries cost no list of DaemonSets and ConfigMaps.
    let mirror_reported = reg
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "NodeMirrorReady"));
    if reg.spec.node_mirror.is_some() || mirror_reported {
        let keep_ds = keep.get("DaemonSet").unwrap_or(&none);
        prune::<DaemonSet>(&ctx.client, ns, &selector, &uid, keep_ds).await?;
        prune::<ConfigMap>(&ctx.client, ns, &selector, &uid, keep.get("ConfigMap").unwrap_or(&none)).await?;
    }
    // Secrets are not pruned: every one the operator makes has a name it keeps (config, CA, serving
    // certificate, robots, token key), and its RBAC lets it list none.
    grow_claims(reg, ctx, ns, obs).await?;
    match (&reg.spec.pull_secrets, pull_secret) {
        (Some(spec), Some(password)) => {
            if !has_finalizer(reg) {
                set_finalizer(ctx, reg, true).await?;
            }
            let eff = effective::resolve(reg, &ctx.default_image);
            let server = pullsecrets::server(reg, spec, eff.port);
            let config = pullsecrets::docker_config(&server, PULL_ROBOT, &password);
            obs.pull_secrets = Some(pullsecrets::distribute(&ctx.client, reg, spec, &config).await?);
        }
        (Some(_), None) => {}
        (None, _) if has_finalizer(reg) => {
            pullsecrets::withdraw(&ctx.client, reg, &Default::default()).await?;
            set_finalizer(ctx, reg, false).await?;
        }
        (None, _) => {}
    }
    Ok(())
}

/// Volume claims smaller than `spec.storage.filesystem.size` are grown in place (the
/// StatefulSet's templates cannot change). A StorageClass that cannot expand stalls the Registry
/// with the API server's reason.
async fn grow_claims(reg: &Registry, ctx: &Context, ns: &str, obs: &mut Observed) -> Result<(), Error> {
    use berth_core::config::size;
    let Some(want) =
        reg.spec.storage.as_ref().and_then(|s| s.filesystem.as_ref()).and_then(|f| f.size.clone())
    else {
        return Ok(());
    };
    let Ok(want_bytes) = size::parse(&want) else { return Ok(()) };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for c in claims.list(&ListParams::default().labels(&labels::selector_string(&reg.name_any()))).await? {
        let current =
            c.spec.as_ref().and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage").cloned());
        let smaller = current.as_ref().and_then(|q| size::parse(&q.0).ok()).is_some_and(|b| b < want_bytes);
        if !smaller {
            continue;
        }
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": want}}}});
        match claims.patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => {
                obs.stalled = Some((
                    "StorageCannotGrow".into(),
                    format!("volume claim {}: {}", c.name_any(), e.message),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn has_finalizer(reg: &Registry) -> bool {
    reg.finalizers().iter().any(|f| f == pullsecrets::FINALIZER)
}

/// Adds or removes the pull Secrets finalizer, guarded by the resourceVersion read.
async fn set_finalizer(ctx: &Context, reg: &Registry, on: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> =
        reg.finalizers().iter().filter(|f| *f != pullsecrets::FINALIZER).cloned().collect();
    if on {
        finalizers.push(pullsecrets::FINALIZER.into());
    }
    let api: Api<Registry> = Api::namespaced(ctx.client.clone(), &reg.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": reg.resource_version()}});
    api.patch(&reg.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// The ProxyCaches naming this Registry.
async fn proxy_sources(reg: &Registry, ctx: &Context, ns: &str) -> Result<Vec<ProxySource>, Error> {
    let caches: Api<ProxyCache> = Api::namespaced(ctx.client.clone(), ns);
    Ok(caches
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|pc| pc.spec.registry_ref.name == reg.name_any())
        .map(|pc| ProxySource { name: pc.name_any(), spec: pc.spec })
        .collect())
}

/// The `ReplicationPolicy`s that copy this Registry's pushes as they happen, destinations
/// resolved, in name order (a stable config). A policy whose destination cannot be used is left
/// out: its own status says why.
async fn on_push_sources(reg: &Registry, ctx: &Context, ns: &str) -> Result<Vec<OnPushSource>, Error> {
    let policies: Api<ReplicationPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let mut sources = Vec::new();
    for p in policies.list(&ListParams::default()).await? {
        if !replication::copies_on_push(&p, &reg.name_any()) {
            continue;
        }
        let to = &p.spec.destination;
        let target = match &to.registry_ref {
            Some(r) => Api::<Registry>::namespaced(ctx.client.clone(), ns).get_opt(&r.name).await?,
            None => None,
        };
        match replication::side(to, "destination", target.as_ref(), true) {
            Ok(side) => sources.push(OnPushSource {
                policy: p.name_any(),
                url: side.url,
                credentials: side.credentials,
                ca_secret: side.ca_secret,
                rules: p.spec.rules.clone().unwrap_or_default(),
                source_prefix: p.spec.source.prefix.clone().unwrap_or_default(),
                destination_prefix: to.prefix.clone().unwrap_or_default(),
                overwrite: replication::overwrites(&p),
                deletes: replication::deletes(&p),
            }),
            Err(why) => tracing::debug!(replicationpolicy = %p.name_any(), why, "not copying on push"),
        }
    }
    sources.sort_by(|a, b| a.policy.cmp(&b.policy));
    Ok(sources)
}

async fn observe(
    reg: &Registry,
    ctx: &Context,
    ns: &str,
    want: i32,
    obs: &mut Observed,
) -> Result<(), Error> {
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(set) = sets.get_opt(&reg.name_any()).await? {
        let st = set.status.clone().unwrap_or_default();
        obs.statefulset = Some(SetState {
            generation: set.metadata.generation.unwrap_or(0),
            observed_generation: st.observed_generation.unwrap_or(0),
            replicas: st.replicas,
            ready: st.ready_replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
        });
    }
    // Fewer pods than wanted: the API server may have refused them (a quota, a policy).
    if obs.waiting.is_none() && obs.statefulset.as_ref().is_some_and(|s| s.replicas < want) {
        if let Some(why) = refused_pods::why(ctx, ns, "StatefulSet", &reg.name_any()).await? {
            obs.waiting = Some((refused_pods::REASON.into(), why));
        }
    }
    if reg.spec.gc.is_some() {
        let select = ListParams::default().labels(&gc::job_selector(reg));
        let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns).list(&select).await?.items;
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns).list(&select).await?.items;
        obs.gc_last_run = gc::last_run(&jobs, &pods);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for c in claims.list(&ListParams::default().labels(&labels::selector_string(&reg.name_any()))).await? {
        if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending") {
            let class = c.spec.as_ref().and_then(|s| s.storage_class_name.clone());
            let why = match class {
                Some(class) => {
                    storage_problem(ctx, &class).await?.unwrap_or_else(|| "waiting for a volume".into())
                }
                None => "no StorageClass given and the cluster has no default".into(),
            };
            obs.pending_claims.push((c.name_any(), why));
        }
    }
    // Replicas that are not ready say why; a backend they cannot reach stalls the Registry (the
    // user must fix credentials, a bucket, a database), rather than leaving it crash-looping
    // silently.
    if obs.statefulset.as_ref().is_some_and(|s| s.ready < want) && want > 0 {
        obs.backends = super::backends::probe(ctx, ns, &reg.name_any()).await?;
        if obs.stalled.is_none() {
            if let Some(b) = &obs.backends {
                for (what, health) in
                    [("StorageUnavailable", &b.storage), ("DatabaseUnavailable", &b.database)]
                {
                    if let super::backends::Health::Failing { message, .. } = health {
                        obs.stalled.get_or_insert_with(|| (what.into(), message.clone()));
                    }
                }
            }
        }
    }
    // A claim that can never be bound is a problem the user must fix: stall, do not spin.
    if obs.stalled.is_none() {
        if let Some((claim, why)) = obs.pending_claims.iter().find(|(_, why)| why.starts_with("StorageClass"))
        {
            obs.stalled = Some(("StorageUnavailable".into(), format!("volume claim {claim}: {why}")));
        }
    }
    Ok(())
}

async fn storage_problem(ctx: &Context, class: &str) -> Result<Option<String>, Error> {
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(ctx.client.clone());
    Ok(match classes.get_opt(class).await? {
        Some(_) => None,
        None => Some(format!("StorageClass {class:?} does not exist")),
    })
}
