//! Leader election on a `coordination.k8s.io/v1` Lease, so the chart can run two replicas: only
//! the holder reconciles. A leader that cannot renew within the lease duration exits, and its
//! replacement takes over once the lease expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};

const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn expired(l: &Lease) -> bool {
    let spec = l.spec.clone().unwrap_or_default();
    let (Some(renewed), secs) = (spec.renew_time, spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS))
    else {
        return true;
    };
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed.0);
    age.as_secs() > i64::from(secs)
}

/// Takes or renews the lease; true when `identity` holds it afterwards.
async fn try_hold(api: &Api<Lease>, name: &str, identity: &str) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS,
                     "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0},
        }))
        .map_err(kube::Error::SerdeError)?;
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let mine = spec.holder_identity.as_deref() == Some(identity);
    if !mine && !expired(&lease) {
        return Ok(false);
    }
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !mine {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    // The resourceVersion in `lease` makes this a compare-and-swap.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process leads, then keeps renewing in the background; exits the process if
/// leadership is lost.
pub async fn lead(client: kube::Client, namespace: &str, name: &str, identity: &str) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    loop {
        match try_hold(&api, name, identity).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
    tracing::info!(identity, "leading");
    let (name, identity) = (name.to_owned(), identity.to_owned());
    tokio::spawn(async move {
        let mut last_renewal = std::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match try_hold(&api, &name, &identity).await {
                Ok(true) => last_renewal = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("another replica took the lease; exiting");
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
            if last_renewal.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) {
                tracing::error!("could not renew the lease in time; exiting");
                std::process::exit(1);
            }
        }
    });
}
