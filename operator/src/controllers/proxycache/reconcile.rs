//! The only code of the ProxyCache controller that talks to the API server (and, to check it,
//! to the upstream).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_client::{Credentials, Upstream, UpstreamError};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::status::{self, CredentialsState, Observed, ProbeFailure, RegistryView};
use crate::controllers::render::proxies::{self, ProxySource};
use crate::controllers::{publish_readiness, Context, Error};
use crate::crd::common::{condition, is_true};
use crate::crd::proxycache::ProxyCache;
use crate::crd::registry::TlsMode;
use crate::crd::Registry;

const RETRY: Duration = Duration::from_secs(30);
/// The check must answer quickly: it runs inside a reconcile.
const CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn reconcile(pc: Arc<ProxyCache>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !crate::leader::still_leading() {
        tracing::debug!(proxycache = %pc.name_any(), "not leading; leaving it to the leader");
        return Ok(Action::await_change());
    }
    tracing::debug!(proxycache = %pc.name_any(), "reconciling");
    let started = Instant::now();
    let result = reconcile_inner(&pc, &ctx).await;
    ctx.metrics.observe("ProxyCache", started.elapsed(), result.as_ref().err().map(Error::label));
    result
}

pub fn error_policy(pc: Arc<ProxyCache>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(proxycache = %pc.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

async fn reconcile_inner(pc: &ProxyCache, ctx: &Context) -> Result<Action, Error> {
    if pc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pc.namespace().unwrap_or_default();
    let name = pc.name_any();
    let obs = observe(pc, ctx, &ns).await?;
    let new = status::compute(pc, &obs, crate::controllers::now());
    let was_ready =
        pc.status.as_ref().and_then(|s| s.conditions.as_deref()).is_some_and(|c| is_true(c, "Ready"));
    let now_ready = new.conditions.as_deref().is_some_and(|c| is_true(c, "Ready"));
    if pc.status.as_ref() != Some(&new) {
        let api: Api<ProxyCache> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": new});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let ready = new.conditions.as_deref().and_then(|c| condition(c, "Ready"));
    if let Some(ready) = ready.filter(|_| was_ready != now_ready) {
        publish_readiness(ctx, pc, now_ready, &ready.message).await;
    }
    Ok(if obs.suspended {
        Action::await_change()
    } else if now_ready {
        Action::requeue(ctx.resync)
    } else {
        Action::requeue(RETRY)
    })
}

async fn observe(pc: &ProxyCache, ctx: &Context, ns: &str) -> Result<Observed, Error> {
    let mut obs = Observed {
        suspended: pc.spec.suspend == Some(true),
        prefix: proxies::prefix(&pc.spec),
        ..Observed::default()
    };
    let registries: Api<Registry> = Api::namespaced(ctx.client.clone(), ns);
    let registry = registries.get_opt(&pc.spec.registry_ref.name).await?;
    obs.registry = registry.as_ref().map(|r| view(r, &pc.name_any()));
    if obs.suspended {
        return Ok(obs);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    // The one place the operator reads a user's Secret: to log in to the upstream as berth will.
    let credentials = match &pc.spec.upstream.credentials_secret {
        None => Credentials::None,
        Some(name) => match secrets.get_opt(name).await? {
            None => {
                obs.credentials = CredentialsState::Unusable(
                    "SecretNotFound".into(),
                    format!("credentials Secret {name} does not exist"),
                );
                Credentials::None
            }
            Some(secret) => {
                let c = credentials(&secret);
                obs.credentials = match &c {
                    Credentials::None => CredentialsState::Unusable(
                        "SecretIncomplete".into(),
                        format!("credentials Secret {name} needs `username` and `password`, or `token`"),
                    ),
                    _ => CredentialsState::Loaded,
                };
                c
            }
        },
    };
    // The same rendering the Registry controller does, so a cache it refuses is reported here.
    // (A missing or incomplete Secret is reported already; reachability is checked anonymously.)
    let mut spec = pc.spec.clone();
    if matches!(obs.credentials, CredentialsState::Unusable(..)) {
        spec.upstream.credentials_secret = None;
    }
    let source = ProxySource { name: pc.name_any(), spec };
    let rendered = proxies::upstreams(std::slice::from_ref(&source)).map(|p| p.upstreams.into_iter().next());
    let mut config = match rendered {
        Ok(Some(u)) => u,
        Ok(None) => return Ok(obs),
        Err(e) => {
            obs.invalid = Some((e.reason().into(), e.to_string()));
            return Ok(obs);
        }
    };
    obs.invalid = registry.as_ref().and_then(|r| conflict(r, &pc.name_any()));
    let ca = match &pc.spec.upstream.ca_secret {
        None => None,
        Some(name) => {
            match secrets.get_opt(name).await?.and_then(|s| s.data?.get("ca.crt").map(|v| v.0.clone())) {
                Some(pem) => Some(pem),
                None => {
                    obs.invalid = Some((
                        "CASecretNotFound".into(),
                        format!("Secret {name} with key ca.crt does not exist"),
                    ));
                    return Ok(obs);
                }
            }
        }
    };
    config.connect_timeout = CHECK_CONNECT_TIMEOUT;
    config.read_timeout = CHECK_READ_TIMEOUT;
    let upstream = match Upstream::with_credentials(&config, credentials, ca.as_deref()) {
        Ok(u) => u,
        Err(e) => {
            obs.invalid = Some(("InvalidUpstream".into(), e));
            return Ok(obs);
        }
    };
    obs.probe = Some(upstream.check().await.map_err(|e| match e {
        UpstreamError::Auth { detail, .. } => ProbeFailure::Rejected(detail),
        e => ProbeFailure::Unreachable(e.to_string()),
    }));
    Ok(obs)
}

/// username/password, or token, from a credentials Secret.
fn credentials(secret: &Secret) -> Credentials {
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
    };
    match (text("token"), text("username"), text("password")) {
        (Some(token), _, _) => Credentials::Bearer(token),
        (None, Some(user), password) => Credentials::Basic { user, password: password.unwrap_or_default() },
        _ => Credentials::None,
    }
}

fn view(reg: &Registry, cache: &str) -> RegistryView {
    let status = reg.status.clone().unwrap_or_default();
    let tls = reg.spec.tls.as_ref().and_then(|t| t.mode).is_some_and(|m| m != TlsMode::None);
    RegistryView {
        endpoint: status.endpoint.unwrap_or_default(),
        tls,
        ready: status.conditions.as_deref().is_some_and(|c| is_true(c, "Ready")),
        serves_this: status.proxy_caches.unwrap_or_default().iter().any(|n| n == cache),
    }
}

/// A cache that is fine alone but clashes with the Registry's other caches (a prefix used twice,
/// two default upstreams): the Registry controller stalls and names the cache.
fn conflict(reg: &Registry, cache: &str) -> Option<(String, String)> {
    let conditions = reg.status.as_ref()?.conditions.as_deref()?;
    condition(conditions, "Stalled")
        .filter(|c| c.status == "True" && c.reason == "InvalidProxyCache")
        .filter(|c| c.message.starts_with(&format!("ProxyCache {cache}:")))
        .map(|c| (c.reason.clone(), c.message.clone()))
}
