use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::status::{
    compute, hosts_toml, CredentialsState, Observed, ProbeFailure, RegistryView, PROBE_MESSAGE_MAX,
};
use crate::crd::common::condition;
use crate::crd::proxycache::{LocalRef, ProxyCache, ProxyCacheSpec, ProxyCacheStatus, Upstream};

fn cache() -> ProxyCache {
    let mut pc = ProxyCache::new(
        "hub",
        ProxyCacheSpec {
            registry_ref: LocalRef { name: "mirror".into() },
            upstream: Upstream {
                url: "https://registry-1.docker.io".into(),
                credentials_secret: Some("hub-creds".into()),
                ..Upstream::default()
            },
            prefix: Some("docker.io".into()),
            ..ProxyCacheSpec::default()
        },
    );
    pc.metadata.generation = Some(3);
    pc
}

fn serving() -> RegistryView {
    RegistryView { endpoint: "mirror.ci.svc:5000".into(), tls: false, ready: true, serves_this: true }
}

fn healthy() -> Observed {
    Observed {
        prefix: "docker.io".into(),
        registry: Some(serving()),
        credentials: CredentialsState::Loaded,
        probe: Some(Ok(())),
        ..Observed::default()
    }
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn cond(s: &ProxyCacheStatus, kind: &str) -> (String, String, String) {
    let c = condition(s.conditions.as_deref().unwrap(), kind).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn a_served_cache_reports_its_prefix_and_the_hosts_toml_for_nodes() {
    let s = compute(&cache(), &healthy(), at(100));
    assert_eq!(s.pull_prefix.as_deref(), Some("mirror.ci.svc:5000/docker.io"));
    assert_eq!(cond(&s, "Ready").0, "True");
    assert_eq!(cond(&s, "Ready").2, "pull through mirror.ci.svc:5000/docker.io");
    assert_eq!(cond(&s, "UpstreamReachable").0, "True");
    assert_eq!(cond(&s, "CredentialsValid").1, "Accepted");
    assert_eq!(cond(&s, "Stalled").0, "False");
    assert_eq!(s.observed_generation, Some(3));
    let toml = s.containerd_hosts_toml.unwrap();
    assert_eq!(
        toml,
        "# /etc/containerd/certs.d/docker.io/hosts.toml\nserver = \"https://registry-1.docker.io\"\n\n\
         [host.\"http://mirror.ci.svc:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
}

#[test]
fn hosts_toml_of_a_tls_registry_names_https_and_a_ca() {
    let toml = hosts_toml("ghcr.io", "https://ghcr.io/", &RegistryView { tls: true, ..serving() });
    assert!(toml.contains("server = \"https://ghcr.io\""));
    assert!(toml.contains("[host.\"https://mirror.ci.svc:5000\"]"));
    assert!(toml.contains("ca = \"/etc/containerd/certs.d/ghcr.io/berth-ca.crt\""));
}

#[test]
fn rejected_credentials_stall_with_the_upstreams_words() {
    let obs = Observed {
        probe: Some(Err(ProbeFailure::Rejected("UNAUTHORIZED: authentication required".into()))),
        ..healthy()
    };
    let s = compute(&cache(), &obs, at(100));
    assert_eq!(
        cond(&s, "CredentialsValid"),
        ("False".into(), "Rejected".into(), "UNAUTHORIZED: authentication required".into())
    );
    assert_eq!(cond(&s, "UpstreamReachable").0, "True");
    assert_eq!(cond(&s, "Ready").1, "Rejected");
    assert_eq!(cond(&s, "Stalled").0, "True");
    assert_eq!(cond(&s, "Reconciling").0, "False");
}

#[test]
fn an_upstream_puts_at_most_one_short_line_into_status() {
    let page = format!("upstream x answered 500: <html>\n<body>{}</body>\n</html>", "spam ".repeat(500));
    for probe in [ProbeFailure::Unreachable(page.clone()), ProbeFailure::Rejected(page.clone())] {
        let obs = Observed { probe: Some(Err(probe)), ..healthy() };
        let s = compute(&cache(), &obs, at(100));
        for c in s.conditions.as_deref().unwrap() {
            assert!(c.message.chars().count() <= PROBE_MESSAGE_MAX, "{}: {} chars", c.type_, c.message.len());
            assert!(!c.message.contains('\n') && !c.message.contains("spam"), "{}", c.message);
        }
    }
}

#[test]
fn an_unreachable_upstream_is_retried_and_credentials_stay_unknown() {
    let obs =
        Observed { probe: Some(Err(ProbeFailure::Unreachable("connection refused".into()))), ..healthy() };
    let s = compute(&cache(), &obs, at(100));
    assert_eq!(
        cond(&s, "UpstreamReachable"),
        ("False".into(), "Unreachable".into(), "connection refused".into())
    );
    assert_eq!(cond(&s, "CredentialsValid").0, "Unknown");
    assert_eq!(cond(&s, "Ready").1, "UpstreamUnreachable");
    assert_eq!(cond(&s, "Reconciling").0, "True");
    assert_eq!(cond(&s, "Stalled").0, "False");
}

#[test]
fn a_missing_secret_or_registry_stalls_and_a_rollout_is_waited_for() {
    let obs = Observed {
        credentials: CredentialsState::Unusable(
            "SecretNotFound".into(),
            "credentials Secret hub-creds does not exist".into(),
        ),
        ..healthy()
    };
    let s = compute(&cache(), &obs, at(100));
    assert_eq!(cond(&s, "CredentialsValid").1, "SecretNotFound");
    assert_eq!(cond(&s, "Stalled").1, "SecretNotFound");

    let s = compute(&cache(), &Observed { registry: None, ..healthy() }, at(100));
    assert_eq!(cond(&s, "Ready").1, "RegistryNotFound");
    assert_eq!(s.pull_prefix, None);
    assert_eq!(s.containerd_hosts_toml, None);

    let rolling = Observed { registry: Some(RegistryView { serves_this: false, ..serving() }), ..healthy() };
    let s = compute(&cache(), &rolling, at(100));
    assert_eq!(cond(&s, "Ready").1, "RegistryRollingOut");
    assert_eq!(cond(&s, "Reconciling").0, "True");
    assert_eq!(s.pull_prefix.as_deref(), Some("mirror.ci.svc:5000/docker.io"));
}

#[test]
fn suspended_caches_are_not_checked_and_not_ready() {
    let obs = Observed { suspended: true, probe: None, ..healthy() };
    let s = compute(&cache(), &obs, at(100));
    assert_eq!(cond(&s, "Ready").1, "Suspended");
    assert_eq!(cond(&s, "Stalled").0, "False");
    assert_eq!(cond(&s, "Reconciling").0, "False");
    assert_eq!(cond(&s, "UpstreamReachable").0, "Unknown");
}

#[test]
fn an_unchanged_world_gives_an_identical_status() {
    let mut pc = cache();
    let first = compute(&pc, &healthy(), at(100));
    pc.status = Some(first.clone());
    assert_eq!(compute(&pc, &healthy(), at(200)), first);
    let flipped = compute(
        &pc,
        &Observed { probe: Some(Err(ProbeFailure::Unreachable("x".into()))), ..healthy() },
        at(300),
    );
    let ready = condition(flipped.conditions.as_deref().unwrap(), "Ready").unwrap();
    assert_eq!(ready.last_transition_time, at(300));
    let creds = condition(flipped.conditions.as_deref().unwrap(), "CredentialsValid").unwrap();
    assert_eq!(creds.last_transition_time, at(300), "True → Unknown is a transition");
}
