//! A ProxyCache's status, as a pure function of what the reconciler saw: the pull prefix, the
//! containerd `hosts.toml` that makes nodes use it, and the conditions `Ready`, `Reconciling`,
//! `Stalled`, `UpstreamReachable` and `CredentialsValid`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::common::{conditions, Cond};
use crate::crd::proxycache::{ProxyCache, ProxyCacheStatus};

/// What the reconciler saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub suspended: bool,
    /// The served prefix (the spec's, or the upstream's host).
    pub prefix: String,
    /// Why the spec cannot be served as written: (reason, message).
    pub invalid: Option<(String, String)>,
    /// `None` when the Registry named by `registryRef` does not exist.
    pub registry: Option<RegistryView>,
    pub credentials: CredentialsState,
    /// The result of logging in to the upstream and asking `GET /v2/`; `None` when not asked.
    pub probe: Option<Result<(), ProbeFailure>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryView {
    /// host:port of the Registry's Service.
    pub endpoint: String,
    pub tls: bool,
    pub ready: bool,
    /// This cache is in the configuration the Registry's pods run.
    pub serves_this: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum CredentialsState {
    /// No credentials Secret: the upstream is used anonymously.
    #[default]
    Anonymous,
    /// The Secret holds usable credentials.
    Loaded,
    /// The Secret is missing or unusable: (reason, message).
    Unusable(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeFailure {
    /// No HTTP answer, or an answer that is not a registry's.
    Unreachable(String),
    /// The upstream (or its token service) refused the credentials, in its own words.
    Rejected(String),
}

/// containerd's `hosts.toml` for the upstream's host: pulls of `<prefix>/...` go to Berth first
/// (containerd adds `?ns=<prefix>`, which Berth maps to this cache), then to the upstream itself.
pub fn hosts_toml(prefix: &str, upstream_url: &str, registry: &RegistryView) -> String {
    let scheme = if registry.tls { "https" } else { "http" };
    let mut out = format!(
        "# /etc/containerd/certs.d/{prefix}/hosts.toml\nserver = \"{}\"\n\n[host.\"{scheme}://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream_url.trim_end_matches('/'),
        registry.endpoint
    );
    if registry.tls {
        out.push_str(&format!(
            "  # the Registry's CA certificate (see the Registry's status.tls)\n  ca = \"/etc/containerd/certs.d/{prefix}/berth-ca.crt\"\n"
        ));
    }
    out
}

/// Longest message an upstream's answer may put into a condition.
pub const PROBE_MESSAGE_MAX: usize = 160;

/// An upstream's words as one short line: whatever a URL a user wrote answers, status carries at
/// most this much of it (no bodies, no control characters).
pub fn short_line(text: &str) -> String {
    berth_core::text::one_line(text, PROBE_MESSAGE_MAX)
}

pub fn compute(pc: &ProxyCache, obs: &Observed, now: Time) -> ProxyCacheStatus {
    let previous = pc.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let pull_prefix = obs.registry.as_ref().map(|r| format!("{}/{}", r.endpoint, obs.prefix));
    let probe = obs.probe.as_ref().map(|p| {
        p.as_ref().map(|_| ()).map_err(|f| match f {
            ProbeFailure::Unreachable(m) => ProbeFailure::Unreachable(short_line(m)),
            ProbeFailure::Rejected(m) => ProbeFailure::Rejected(short_line(m)),
        })
    });

    let (reachable, credentials) = match (&obs.credentials, &probe) {
        (CredentialsState::Unusable(reason, message), probe) => (
            match probe {
                Some(Err(ProbeFailure::Unreachable(m))) => {
                    Cond::new("UpstreamReachable", false, "Unreachable", m)
                }
                Some(_) => Cond::new("UpstreamReachable", true, "Reachable", "the upstream answers"),
                None => unknown("UpstreamReachable"),
            },
            Cond::new("CredentialsValid", false, reason.clone(), message.clone()),
        ),
        (_, None) => (unknown("UpstreamReachable"), unknown("CredentialsValid")),
        (_, Some(Err(ProbeFailure::Unreachable(m)))) => {
            (Cond::new("UpstreamReachable", false, "Unreachable", m.clone()), unknown("CredentialsValid"))
        }
        (_, Some(Err(ProbeFailure::Rejected(m)))) => (
            Cond::new("UpstreamReachable", true, "Reachable", "the upstream answers"),
            Cond::new("CredentialsValid", false, "Rejected", m.clone()),
        ),
        (creds, Some(Ok(()))) => (
            Cond::new("UpstreamReachable", true, "Reachable", "the upstream answers"),
            if *creds == CredentialsState::Loaded {
                Cond::new("CredentialsValid", true, "Accepted", "the upstream accepts the credentials")
            } else {
                Cond::new("CredentialsValid", true, "Anonymous", "the upstream serves anonymous pulls")
            },
        ),
    };

    // Problems only the user can fix stall; the rest is progress or a transient upstream failure.
    let stalled: Option<(String, String)> = if obs.suspended {
        None
    } else if let Some(i) = &obs.invalid {
        Some(i.clone())
    } else if obs.registry.is_none() {
        Some((
            "RegistryNotFound".into(),
            format!("Registry {} does not exist in this namespace", pc.spec.registry_ref.name),
        ))
    } else if credentials.status == "False" {
        Some((credentials.reason.clone(), credentials.message.clone()))
    } else {
        None
    };
    let registry = obs.registry.clone().unwrap_or_default();
    let (ready, reason, message) = if obs.suspended {
        (false, "Suspended".into(), "spec.suspend is true: the Registry does not serve this upstream".into())
    } else if let Some((r, m)) = &stalled {
        (false, r.clone(), m.clone())
    } else if reachable.status != "True" {
        (false, "UpstreamUnreachable".into(), reachable.message.clone())
    } else if !registry.serves_this || !registry.ready {
        (
            false,
            "RegistryRollingOut".into(),
            format!("waiting for Registry {} to serve this cache", pc.spec.registry_ref.name),
        )
    } else {
        (true, "Serving".into(), format!("pull through {}", pull_prefix.clone().unwrap_or_default()))
    };
    let conds = vec![
        Cond::new("Ready", ready, reason.clone(), message.clone()),
        Cond::new(
            "Reconciling",
            !ready && stalled.is_none() && !obs.suspended,
            if ready { "Reconciled".into() } else { reason.clone() },
            if ready { String::new() } else { message.clone() },
        ),
        Cond::new(
            "Stalled",
            stalled.is_some(),
            stalled.as_ref().map_or("NotStalled".into(), |s| s.0.clone()),
            stalled.as_ref().map_or(String::new(), |s| s.1.clone()),
        ),
        reachable,
        credentials,
    ];
    let generation = pc.metadata.generation;
    ProxyCacheStatus {
        observed_generation: generation,
        conditions: Some(conditions(&previous, conds, generation, &now)),
        containerd_hosts_toml: obs
            .registry
            .as_ref()
            .map(|r| hosts_toml(&obs.prefix, &pc.spec.upstream.url, r)),
        pull_prefix,
    }
}

fn unknown(kind: &'static str) -> Cond {
    Cond { kind, status: "Unknown", reason: "NotChecked".into(), message: String::new() }
}
