//! The only code of the ReplicationPolicy controller that talks to the API server (and, to
//! check a URL end, to that registry).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_client::{Credentials, Upstream};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::render::{self, Side};
use super::status::{self, Observed};
use crate::controllers::apply::{apply, refusal};
use crate::controllers::{Context, Error};
use crate::crd::replication::{Endpoint, ReplicationMode, ReplicationPolicy};
use crate::crd::Registry;

const RETRY: Duration = Duration::from_secs(30);
/// While a run goes, its end is looked for this often (besides the Job's own events).
const RUNNING: Duration = Duration::from_secs(10);
const CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn reconcile(p: Arc<ReplicationPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !crate::leader::still_leading() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let result = reconcile_inner(&p, &ctx).await;
    ctx.metrics.observe("ReplicationPolicy", started.elapsed(), result.as_ref().err().map(Error::label));
    result
}

pub fn error_policy(p: Arc<ReplicationPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(replicationpolicy = %p.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

async fn reconcile_inner(p: &ReplicationPolicy, ctx: &Context) -> Result<Action, Error> {
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = p.namespace().unwrap_or_default();
    let mut obs = Observed::default();
    let sides = match (
        end(ctx, &ns, &p.spec.source, "source", render::runs(p)).await?,
        end(ctx, &ns, &p.spec.destination, "destination", true).await?,
    ) {
        (Ok(from), Ok(to)) => Some((from, to)),
        (Err(why), _) | (_, Err(why)) => {
            obs.stalled = Some(("InvalidEndpoint".into(), why));
            None
        }
    };
    let pushes_copied_by_source =
        p.spec.source.registry_ref.is_some() && p.spec.mode != Some(ReplicationMode::Pull);
    if render::on_push(p) && obs.stalled.is_none() && !pushes_copied_by_source {
        obs.stalled = Some((
            "InvalidSpec".into(),
            "trigger.onPush needs source.registryRef (mode Push): that Registry makes the copies".into(),
        ));
    }
    if let Some((from, to)) = &sides {
        for (e, side, which) in [(&p.spec.source, from, "source"), (&p.spec.destination, to, "destination")] {
            if obs.stalled.is_none() && e.url.is_some() {
                if let Err(why) = check(ctx, &ns, side).await {
                    obs.stalled = Some(("Unreachable".into(), format!("{which} {}: {why}", side.url)));
                }
            }
        }
    }
    let crons: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match (&sides, &obs.stalled) {
        (Some((from, to)), None) => {
            match render::cron_job(p, &ctx.default_image, from, to) {
                Ok(Some(cron)) => {
                    if let Err(e) = apply(&ctx.client, &ns, &cron).await {
                        obs.stalled = Some(refusal(&format!("CronJob {}", cron.name_any()), &e).ok_or(e)?);
                    }
                }
                Ok(None) => remove_cron_job(&crons, p).await?,
                Err(e) => obs.stalled = Some((e.reason().into(), e.to_string())),
            }
            if let (Some(value), None) = (render::pending_request(p), &obs.stalled) {
                match render::requested_job(p, &ctx.default_image, from, to, &value) {
                    Ok(job) => match jobs.create(&PostParams::default(), &job).await {
                        Ok(_) => {
                            tracing::info!(replicationpolicy = %p.name_any(), run = %value, "replication started");
                            obs.requested = Some(value);
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => obs.requested = Some(value),
                        Err(e) => {
                            obs.stalled = Some(refusal(&format!("Job {}", job.name_any()), &e).ok_or(e)?)
                        }
                    },
                    Err(e) => obs.stalled = Some((e.reason().into(), e.to_string())),
                }
            }
        }
        // A policy that cannot run does not keep starting runs that fail.
        _ => remove_cron_job(&crons, p).await?,
    }
    obs.jobs = jobs.list(&ListParams::default().labels(&render::job_selector(p))).await?.items;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    obs.pods = pods.list(&ListParams::default().labels(&render::job_selector(p))).await?.items;
    let new = status::compute(p, &obs, crate::controllers::now());
    if p.status.as_ref() != Some(&new) {
        let api: Api<ReplicationPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": new});
        api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let running = obs.jobs.iter().any(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0);
    Ok(if running {
        Action::requeue(RUNNING)
    } else if obs.stalled.is_some() {
        Action::requeue(RETRY)
    } else {
        Action::requeue(ctx.resync)
    })
}

async fn remove_cron_job(crons: &Api<CronJob>, p: &ReplicationPolicy) -> Result<(), Error> {
    match crons.delete(&render::cron_job_name(p), &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An end as its runs reach it, or why it cannot be used.
async fn end(
    ctx: &Context,
    ns: &str,
    e: &Endpoint,
    which: &str,
    login: bool,
) -> Result<Result<Side, String>, Error> {
    let registry = match &e.registry_ref {
        Some(r) => Api::<Registry>::namespaced(ctx.client.clone(), ns).get_opt(&r.name).await?,
        None => None,
    };
    let mut docker_config = false;
    if let Some(name) = &e.credentials_secret {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let data = secrets.get_opt(name).await?.and_then(|s| s.data).unwrap_or_default();
        let login = data.contains_key("username") && data.contains_key("password");
        docker_config = !data.contains_key("username") && data.contains_key(".dockerconfigjson");
        if !(login || docker_config) {
            return Ok(Err(format!(
                "{which}: Secret {name} with username and password (or a .dockerconfigjson) is not there"
            )));
        }
    }
    Ok(render::side(e, which, registry.as_ref(), login).map(|s| Side { docker_config, ..s }))
}

/// Whether a URL end answers `/v2/` and takes its credentials (checked with berth's own client).
async fn check(ctx: &Context, ns: &str, side: &Side) -> Result<(), String> {
    let credentials = match &side.credentials {
        Some(name) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let data = secrets
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.data)
                .unwrap_or_default();
            let text = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).trim_end().to_owned());
            match (text("username"), text(".dockerconfigjson")) {
                (Some(user), _) => {
                    Credentials::Basic { user, password: text("password").unwrap_or_default() }
                }
                (None, Some(config)) => {
                    let origin = format!("Secret {name}");
                    match berth_client::authfile::lookup_in(&config, &origin, &side.url, false)? {
                        Some((user, password)) => Credentials::Basic { user, password },
                        None => return Err(format!("{origin} has no entry for {}", side.url)),
                    }
                }
                (None, None) => Credentials::None,
            }
        }
        None => Credentials::None,
    };
    let mut config = berth_core::config::UpstreamConfig::new("endpoint", &side.url);
    config.connect_timeout = CHECK_CONNECT_TIMEOUT;
    config.read_timeout = CHECK_READ_TIMEOUT;
    let upstream = Upstream::with_credentials(&config, credentials, None)?;
    upstream.check().await.map_err(|e| e.to_string())
}
