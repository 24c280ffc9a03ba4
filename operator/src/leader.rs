//! Leader election on a `coordination.k8s.io/v1` Lease, so the chart can run two replicas: only
//! the holder reconciles, and never two at once.
//!
//! ```text
//! leader:   renew every RETRY ──► not renewed for RENEW_DEADLINE (10 s)? stop acting, exit
//! follower: watch the record  ──► unchanged for LEASE (15 s) by my own clock? take it over
//! ```
//! The rules that keep two replicas from acting at once (client-go's, written out):
//!
//! - The leader gives up at the renew deadline, well before the lease duration after which a
//!   follower may take over: the gap absorbs clock rates and scheduling.
//! - Every call to the API server has its own deadline, so a hung connection cannot hold a
//!   renewal (or a takeover) past it.
//! - A follower never compares its wall clock with the timestamps another node wrote: it notes,
//!   by its own monotonic clock, when it last saw the record change, and takes over only once it
//!   has seen no change for a whole lease duration.
//! - Leadership is checked before acting ([`still_leading`]), by the monotonic time since the last
//!   renewal: a process paused (SIGSTOP, a frozen VM) past its deadline wakes up not leading,
//!   acts on nothing, and exits.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};

pub const LEASE: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY: Duration = Duration::from_secs(2);
/// The longest any one call to the API server may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// When this process last held the lease for sure (set only once it leads).
static RENEWED: OnceLock<Mutex<Instant>> = OnceLock::new();

/// Whether this process may act: true without leader election; with it, only while the last
/// renewal is younger than the renew deadline, by the monotonic clock.
pub fn still_leading() -> bool {
    match RENEWED.get() {
        None => !ELECTING.get().copied().unwrap_or(false),
        Some(at) => at.lock().map(|t| t.elapsed() < RENEW_DEADLINE).unwrap_or(false),
    }
}

/// Set when leader election is on, so nothing acts before the first win.
static ELECTING: OnceLock<bool> = OnceLock::new();

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// What a follower knows of the lease: the record it last saw and when, by its own clock.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// Whether the lease may be taken now, given its record as just read at `at`.
    pub fn expired(&mut self, lease: &Lease, at: Instant) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return true;
        }
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE, |s| Duration::from_secs(u64::try_from(s).unwrap_or(15)));
        // The record as a whole: holder, renewals, transitions. Any change restarts the count.
        let record = format!(
            "{:?}|{:?}|{:?}|{:?}",
            spec.holder_identity,
            spec.renew_time.map(|t| t.0.to_string()),
            spec.lease_transitions,
            lease.metadata.resource_version
        );
        match &self.seen {
            Some((r, since)) if *r == record => at.duration_since(*since) >= duration,
            _ => {
                self.seen = Some((record, at));
                false
            }
        }
    }
}

/// One bounded call.
async fn bounded<T>(call: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("the API server did not answer within {CALL_TIMEOUT:?}")),
    }
}

/// Takes or renews the lease; true when `identity` holds it afterwards.
async fn try_hold(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    observer: &mut Observer,
) -> Result<bool, String> {
    let Some(mut lease) = bounded(api.get_opt(name)).await? else {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE.as_secs(),
                     "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0},
        }))
        .map_err(|e| e.to_string())?;
        return match bounded(api.create(&PostParams::default(), &lease)).await {
            Ok(_) => Ok(true),
            Err(e) if e.contains("409") || e.contains("AlreadyExists") => Ok(false),
            Err(e) => Err(e),
        };
    };
    let read_at = Instant::now();
    let mine = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(identity);
    if !mine && !observer.expired(&lease, read_at) {
        return Ok(false);
    }
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !mine {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(LEASE.as_secs() as i32);
    // The resourceVersion in `lease` makes this a compare-and-swap: a record that changed since
    // it was read (another replica renewed or took it) is a conflict, not a win.
    match bounded(api.replace(name, &PostParams::default(), &lease)).await {
        Ok(_) => Ok(true),
        Err(e) if e.contains("409") || e.contains("Conflict") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process leads, then keeps renewing in the background. Leadership that
/// cannot be renewed in time ends the process (after which `still_leading` is false).
pub async fn lead(client: kube::Client, namespace: &str, name: &str, identity: &str) {
    let _ = ELECTING.set(true);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut observer = Observer::default();
    loop {
        // Measured before the call: the lease is ours from no later than when we asked.
        let asked = Instant::now();
        match try_hold(&api, name, identity, &mut observer).await {
            Ok(true) => {
                let _ = RENEWED.set(Mutex::new(asked));
                break;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!(identity, "leading");
    let (name, identity) = (name.to_owned(), identity.to_owned());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY).await;
            if !still_leading() {
                // Paused, or every renewal failed: someone else may lead by now.
                tracing::error!("the lease was not renewed within the renew deadline; stopping");
                std::process::exit(1);
            }
            let asked = Instant::now();
            match try_hold(&api, &name, &identity, &mut observer).await {
                Ok(true) => {
                    if let Some(at) = RENEWED.get() {
                        if let Ok(mut t) = at.lock() {
                            *t = asked;
                        }
                    }
                }
                Ok(false) => {
                    tracing::error!("another replica holds the lease; stopping");
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs: i64, version: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": k8s_openapi::jiff::Timestamp::from_second(renewed_secs).unwrap()},
        }))
        .unwrap()
    }

    #[test]
    fn a_follower_counts_by_its_own_clock_from_the_last_change_it_saw() {
        let mut o = Observer::default();
        let t0 = Instant::now();
        // The holder's timestamps could be from any clock: a renewTime far in the past changes
        // nothing, only how long the record stays the same here.
        let l = lease("a", 1, "1");
        assert!(!o.expired(&l, t0), "first sight starts the count");
        assert!(!o.expired(&l, t0 + Duration::from_secs(14)));
        assert!(o.expired(&l, t0 + Duration::from_secs(15)), "unchanged for a lease duration");
        // A renewal seen restarts the count.
        let mut o = Observer::default();
        assert!(!o.expired(&l, t0));
        let renewed = lease("a", 2, "2");
        assert!(!o.expired(&renewed, t0 + Duration::from_secs(10)));
        assert!(!o.expired(&renewed, t0 + Duration::from_secs(24)));
        assert!(o.expired(&renewed, t0 + Duration::from_secs(25)));
        // A lease nobody holds may be taken at once.
        assert!(Observer::default().expired(&lease("", 1, "3"), t0));
    }

    #[test]
    fn the_leader_gives_up_well_before_a_follower_may_take_over() {
        assert!(
            RENEW_DEADLINE + CALL_TIMEOUT < LEASE,
            "a renewal in flight at the deadline ends before a takeover"
        );
        assert!(RETRY * 3 < RENEW_DEADLINE, "a few tries fit before the deadline");
    }
}
