//! Unit tests of the pure parts: what a Registry becomes, and what its status says.

use berth_core::config::Config;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::{self, Child, Inputs};
use super::effective;
use super::status::{self, Observed, SetState};
use crate::controllers::render::replication::OnPushSource;
use crate::controllers::render::BuildError;
use crate::crd::registry::*;
use crate::crd::Registry;

pub(super) fn registry(spec: serde_json::Value) -> Registry {
    let mut r: Registry = serde_json::from_value(serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "hub", "namespace": "team", "uid": "u-1", "generation": 3,
                     "labels": {"team": "x"}, "annotations": {"argocd.argoproj.io/tracking-id": "y"}},
        "spec": spec,
    }))
    .unwrap();
    r.metadata.creation_timestamp = None;
    r
}

pub(super) fn inputs() -> Inputs {
    Inputs {
        default_image: "ghcr.io/berth-dev/berth:0.1.0".into(),
        tls_secret: None,
        proxies: vec![],
        claim_template_size: None,
        on_push: vec![],
        mirror_endpoint: None,
    }
}

pub(super) fn children(r: &Registry, i: &Inputs) -> Vec<Child> {
    desired::build(r, i).unwrap()
}

pub(super) fn find<'a>(c: &'a [Child], kind: &str, name: &str) -> &'a Child {
    c.iter().find(|x| x.kind() == kind && x.name() == name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub(super) fn config_of(c: &[Child]) -> Config {
    let Child::Secret(s) = find(c, "Secret", "hub-config") else { unreachable!() };
    let yaml = &s.string_data.as_ref().unwrap()["config.yaml"];
    Config::from_yaml(yaml, "rendered").unwrap()
}

#[test]
fn defaults_make_one_filesystem_registry() {
    let r = registry(serde_json::json!({}));
    let c = children(&r, &inputs());
    let kinds: Vec<_> = c.iter().map(|x| (x.kind(), x.name())).collect();
    assert_eq!(
        kinds,
        [
            ("Secret", "hub-config".into()),
            ("Service", "hub".into()),
            ("Service", "hub-headless".into()),
            ("StatefulSet", "hub".into())
        ]
    );
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let spec = set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claims = spec.volume_claim_templates.as_ref().unwrap();
    assert_eq!(
        claims[0].spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "10Gi"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some("ghcr.io/berth-dev/berth:0.1.0"));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    let probe = pod.containers[0].readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((probe.path.as_deref(), probe.scheme.as_deref()), (Some("/readyz"), Some("HTTP")));
    assert_eq!(
        spec.persistent_volume_claim_retention_policy.as_ref().unwrap().when_deleted.as_deref(),
        Some("Retain")
    );
}

#[test]
fn what_the_operator_renders_berth_parses() {
    let r = registry(serde_json::json!({"log": {"level": "debug", "format": "text"}}));
    let config = config_of(&children(&r, &inputs()));
    assert_eq!(config.listen, "0.0.0.0:5000");
    assert_eq!(config.log.level, "debug");
    assert!(config.tls.is_none());
    // On SIGTERM a replica stays reachable (not ready) while endpoints drop it, then drains; both
    // within the pod's termination grace period.
    assert_eq!(config.limits.shutdown_delay, std::time::Duration::from_secs(5));
    let c = children(&r, &inputs());
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let grace = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap().termination_grace_period_seconds;
    let needed = (config.limits.shutdown_delay + config.limits.shutdown_grace).as_secs() as i64;
    assert!(grace.unwrap() > needed, "{grace:?} > {needed}");
    let r = registry(serde_json::json!({"tls": {"mode": "SelfSigned"}}));
    let tls = Inputs { tls_secret: Some("hub-tls".into()), ..inputs() };
    let config = config_of(&children(&r, &tls));
    assert_eq!(config.tls.unwrap().cert, std::path::PathBuf::from("/etc/berth/tls/tls.crt"));
}

#[test]
fn children_carry_berth_labels_and_owner_never_the_crs_own() {
    let r = registry(serde_json::json!({"gc": {}, "nodeMirror": {"enabled": true}}));
    let i = Inputs { mirror_endpoint: Some("10.96.0.9:5000".into()), ..inputs() };
    let all = children(&r, &i);
    assert!(all.iter().any(|c| matches!(c, Child::DaemonSet(_))), "the node mirror is built");
    for c in all {
        let meta = match &c {
            Child::Secret(o) => &o.metadata,
            Child::Service(o) => &o.metadata,
            Child::StatefulSet(o) => &o.metadata,
            Child::Pdb(o) => &o.metadata,
            Child::CronJob(o) => &o.metadata,
            Child::ConfigMap(o) => &o.metadata,
            Child::DaemonSet(o) => &o.metadata,
        };
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "berth-operator", "{}", c.name());
        assert!(!labels.contains_key("team"), "CR labels are not copied");
        assert!(meta.annotations.as_ref().is_none_or(|a| !a.contains_key("argocd.argoproj.io/tracking-id")));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Registry", "u-1", Some(true))
        );
    }
}

#[test]
fn config_changes_roll_the_pods() {
    let hash = |spec| {
        let c = children(&registry(spec), &inputs());
        let Child::StatefulSet(s) = find(&c, "StatefulSet", "hub") else { unreachable!() };
        s.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
            [desired::CONFIG_HASH]
            .clone()
    };
    assert_eq!(hash(serde_json::json!({})), hash(serde_json::json!({})), "same spec, same hash");
    assert_ne!(hash(serde_json::json!({})), hash(serde_json::json!({"log": {"level": "debug"}})));
}

#[test]
fn replicas_pdb_tls_and_overrides() {
    let r = registry(serde_json::json!({
        "replicas": 3,
        "tls": {"mode": "Secret", "secretName": "mine"},
        "service": {"type": "LoadBalancer", "annotations": {"lb": "internal"}},
        "retainPolicy": "Delete",
        "podTemplate": {"metadata": {"annotations": {"extra": "1"}}, "spec": {"priorityClassName": "high"}},
    }));
    let c = children(&r, &Inputs { tls_secret: Some("mine".into()), ..inputs() });
    assert!(c.iter().any(|x| x.kind() == "PodDisruptionBudget"));
    let Child::Service(svc) = find(&c, "Service", "hub") else { unreachable!() };
    let s = svc.spec.as_ref().unwrap();
    assert_eq!((s.type_.as_deref(), s.ports.as_ref().unwrap()[0].port), (Some("LoadBalancer"), 443));
    assert_eq!(svc.metadata.annotations.as_ref().unwrap()["lb"], "internal");
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let spec = set.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
    assert!(pod.volumes.as_ref().unwrap().iter().any(|v| v
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
        == Some("mine")));
    let probe = pod.containers[0].readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(probe.scheme.as_deref(), Some("HTTPS"));
    let ann = spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
    assert!(ann.contains_key("extra") && ann.contains_key(desired::CONFIG_HASH), "merge keeps both");
    assert_eq!(
        spec.persistent_volume_claim_retention_policy.as_ref().unwrap().when_deleted.as_deref(),
        Some("Delete")
    );
}

#[test]
fn s3_storage_is_rendered_and_its_secrets_mounted() {
    let reg = registry(serde_json::json!({"storage": {"s3": {
        "bucket": "berth", "endpoint": "http://minio.storage:9000", "pathStyle": true,
        "credentialsSecret": "minio-keys", "prefix": "hub", "redirect": true}}}));
    let c = children(&reg, &inputs());
    let config = config_of(&c);
    let berth_core::config::StorageConfig::S3(s3) = &config.storage else { panic!("{:?}", config.storage) };
    assert_eq!(
        (s3.bucket.as_str(), s3.prefix.as_deref(), s3.path_style, s3.redirect),
        ("berth", Some("hub"), true, true)
    );
    let dir = s3.credentials_dir.clone().unwrap();
    // The metadata stays in SQLite on the data volume until PostgreSQL is configured.
    assert!(config.sqlite_path().unwrap().starts_with("/var/lib/berth"), "{:?}", config.sqlite_path());
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let pod = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "s3-credentials")
        .unwrap();
    assert_eq!(std::path::Path::new(&mount.mount_path), dir);
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "s3-credentials").unwrap();
    assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("minio-keys"));
}

#[test]
fn policies_that_copy_on_push_are_rendered_and_their_secrets_mounted() {
    let r = registry(serde_json::json!({}));
    let source = OnPushSource {
        policy: "to-edge".into(),
        url: "https://edge.ci.svc:5000".into(),
        credentials: Some("edge-login".into()),
        ca_secret: Some("edge-tls".into()),
        rules: vec![crate::crd::replication::ReplicationRule {
            repositories: Some(vec!["team/**".into()]),
            ..Default::default()
        }],
        overwrite: true,
        ..Default::default()
    };
    let with = Inputs { on_push: vec![source], ..inputs() };
    let c = children(&r, &with);
    let policy = &config_of(&c).replication.on_push[0];
    assert_eq!((policy.name.as_str(), policy.destination.as_str()), ("to-edge", "https://edge.ci.svc:5000"));
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let pod = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let mounted: Vec<_> =
        pod.containers[0].volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    for dir in [policy.credentials_dir.as_deref(), policy.ca_file.as_deref().and_then(|f| f.parent())] {
        let dir = dir.unwrap().to_str().unwrap();
        assert!(mounted.contains(&dir), "{dir} is mounted: {mounted:?}");
    }
    assert_ne!(
        config_of(&c),
        config_of(&children(&r, &inputs())),
        "a policy added or removed changes the config (and rolls the pods)"
    );
}

#[test]
fn replicas_on_s3_and_postgres_share_one_database_and_spread_over_nodes() {
    let reg = registry(serde_json::json!({
        "replicas": 3,
        "storage": {"s3": {"bucket": "berth", "endpoint": "http://minio.storage:9000", "pathStyle": true}},
        "database": {"postgres": {"urlSecret": {"name": "pg", "key": "uri"}}},
    }));
    let c = children(&reg, &inputs());
    let config = config_of(&c);
    let berth_core::config::MetadataConfig::Postgres { url_file: Some(file), .. } = &config.metadata else {
        panic!("{:?}", config.metadata)
    };
    assert_eq!(config.sqlite_path(), None);
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let spec = set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    let mount =
        pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "database").unwrap();
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "database").unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("pg"));
    let item = &secret.items.as_ref().unwrap()[0];
    assert_eq!(item.key, "uri");
    assert_eq!(std::path::Path::new(&mount.mount_path).join(&item.path), *file);
    let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(
        (spread.topology_key.as_str(), spread.when_unsatisfiable.as_str()),
        ("kubernetes.io/hostname", "ScheduleAnyway")
    );
    assert!(matches!(find(&c, "PodDisruptionBudget", "hub"), Child::Pdb(_)));
}

#[test]
fn unsupported_and_pending_inputs_are_build_errors() {
    let tls = registry(serde_json::json!({"tls": {"mode": "SelfSigned"}}));
    assert_eq!(desired::build(&tls, &inputs()), Err(BuildError::TlsPending));
    let existing = registry(serde_json::json!({"storage": {"existingClaim": {"name": "old"}}}));
    let c = children(&existing, &inputs());
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    assert!(set.spec.as_ref().unwrap().volume_claim_templates.as_ref().is_none_or(|v| v.is_empty()));
}

#[test]
fn the_ui_is_on_by_default_and_spec_ui_turns_it_off_or_shortens_logins() {
    let on = config_of(&children(&registry(serde_json::json!({})), &inputs()));
    assert_eq!(on.ui, berth_core::config::UiConfig::default());
    assert!(on.ui.enabled);
    let off = registry(serde_json::json!({"ui": {"enabled": false, "session": "30m"}}));
    let off = config_of(&children(&off, &inputs()));
    assert!(!off.ui.enabled);
    assert_eq!(off.ui.session, std::time::Duration::from_secs(1800));
    let bad = registry(serde_json::json!({"ui": {"session": "soon"}}));
    let err = desired::build(&bad, &inputs()).unwrap_err();
    assert_eq!(err.reason(), "InvalidUi");
    assert!(err.to_string().contains("spec.ui: session \"soon\""), "{err}");
}

#[test]
fn merge_patch_follows_rfc7386() {
    let mut t = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1]});
    desired::merge_patch(&mut t, &serde_json::json!({"a": {"b": null, "e": 3}, "d": [2]}));
    assert_eq!(t, serde_json::json!({"a": {"c": 2, "e": 3}, "d": [2]}));
}

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn observed(ready: i32) -> Observed {
    Observed {
        statefulset: Some(SetState { generation: 2, observed_generation: 2, replicas: 1, ready, updated: 1 }),
        endpoint: "hub.team.svc:5000".into(),
        selector: "app.kubernetes.io/instance=hub".into(),
        ..Observed::default()
    }
}

fn cond(s: &RegistryStatus, kind: &str) -> (String, String) {
    let c = s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == kind).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[test]
fn status_ready_reconciling_stalled() {
    let mut r = registry(serde_json::json!({}));
    let eff = effective::resolve(&r, "img");
    let t0 = time("2026-01-01T00:00:00Z");
    let progressing = status::compute(&r, &eff, &observed(0), t0.clone());
    assert_eq!(cond(&progressing, "Ready"), ("False".into(), "Progressing".into()));
    assert_eq!(cond(&progressing, "Reconciling").0, "True");
    assert_eq!(progressing.observed_generation, Some(3));
    assert_eq!(progressing.effective.as_ref().unwrap().storage_size.as_deref(), Some("10Gi"));

    r.status = Some(progressing.clone());
    let t1 = time("2026-01-01T00:01:00Z");
    let again = status::compute(&r, &eff, &observed(0), t1.clone());
    assert_eq!(again, progressing, "an unchanged world gives an identical status (no write)");

    let ready = status::compute(&r, &eff, &observed(1), t1.clone());
    assert_eq!(cond(&ready, "Ready"), ("True".into(), "Serving".into()));
    assert_eq!(cond(&ready, "Reconciling").0, "False");
    let ready_since = ready
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .last_transition_time
        .clone();
    assert_eq!(ready_since, t1, "transition time moves on transitions only");

    let mut stuck = observed(0);
    stuck.stalled = Some((
        "StorageUnavailable".into(),
        "volume claim data-hub-0: StorageClass \"gold\" does not exist".into(),
    ));
    let stalled = status::compute(&r, &eff, &stuck, t1);
    assert_eq!(cond(&stalled, "Stalled"), ("True".into(), "StorageUnavailable".into()));
    assert_eq!(cond(&stalled, "Ready").0, "False");
    assert_eq!(cond(&stalled, "Reconciling").0, "False", "stalled is not progressing");
}

#[test]
fn backends_are_reported_in_their_own_words_and_an_unreachable_one_stalls() {
    use super::backends::{Backends, Health};
    let r = registry(serde_json::json!({}));
    let eff = effective::resolve(&r, "img");
    let t = time("2026-01-01T00:00:00Z");
    let ready = status::compute(&r, &eff, &observed(1), t.clone());
    assert_eq!(cond(&ready, "StorageReady"), ("True".into(), "Reachable".into()));
    assert_eq!(cond(&ready, "DatabaseReady"), ("True".into(), "Reachable".into()));
    let starting = status::compute(&r, &eff, &observed(0), t.clone());
    assert_eq!(cond(&starting, "StorageReady"), ("Unknown".into(), "NoAnswer".into()));

    // What reconcile sets when a replica that is not ready says its bucket refuses the secret.
    let message = "hub-0: object storage unavailable: InvalidAccessKeyId".to_owned();
    let mut obs = observed(0);
    obs.backends = Some(Backends {
        storage: Health::Failing { reason: "CredentialsRefused", message: message.clone() },
        database: Health::Ready,
    });
    obs.stalled = Some(("StorageUnavailable".into(), message.clone()));
    let s = status::compute(&r, &eff, &obs, t);
    assert_eq!(cond(&s, "StorageReady"), ("False".into(), "CredentialsRefused".into()));
    assert_eq!(cond(&s, "DatabaseReady"), ("True".into(), "Reachable".into()));
    assert_eq!(cond(&s, "Stalled"), ("True".into(), "StorageUnavailable".into()));
    let stalled = s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.message, message, "the backend's words reach the user");
}

#[test]
fn effective_values_are_reported() {
    let r = registry(
        serde_json::json!({"tls": {"mode": "SelfSigned"}, "storage": {"filesystem": {"size": "50Gi"}}}),
    );
    let eff = effective::resolve(&r, "img");
    let rep = eff.report(&r);
    assert_eq!(
        (rep.tls_mode.as_str(), rep.port, rep.storage_size.as_deref()),
        ("SelfSigned", 443, Some("50Gi"))
    );
    assert_eq!(rep.retain_policy, "Retain");
}

#[test]
fn waiting_for_a_certificate_is_progress_not_a_stall() {
    let r = registry(
        serde_json::json!({"tls": {"mode": "CertManager", "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}),
    );
    let eff = effective::resolve(&r, "img");
    let mut obs = observed(1);
    obs.waiting =
        Some(("CertificatePending".into(), "waiting for cert-manager to issue Secret hub-tls".into()));
    let s = status::compute(&r, &eff, &obs, time("2026-01-01T00:00:00Z"));
    assert_eq!(cond(&s, "Ready"), ("False".into(), "CertificatePending".into()));
    assert_eq!(cond(&s, "Reconciling").0, "True");
    assert_eq!(cond(&s, "Stalled").0, "False");
}

#[test]
fn certificate_for_cert_manager() {
    let r = registry(
        serde_json::json!({"tls": {"mode": "CertManager", "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}, "dnsNames": ["registry.example.com"]}}),
    );
    let c = super::tls::certificate(&r, Some("10.96.4.2"));
    assert_eq!(c["spec"]["secretName"], "hub-tls");
    assert_eq!(
        c["spec"]["issuerRef"],
        serde_json::json!({"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    let names: Vec<&str> =
        c["spec"]["dnsNames"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(names.contains(&"hub.team.svc.cluster.local") && names.contains(&"registry.example.com"));
    // The address nodes reach by default, where cert-manager takes addresses.
    assert_eq!(c["spec"]["ipAddresses"], serde_json::json!(["10.96.4.2"]));
    assert!(!names.contains(&"10.96.4.2"));
    assert_eq!(c["metadata"]["ownerReferences"][0]["uid"], "u-1");
    // An endpoint given for the nodes: its host, a name or an address, is asked for too.
    let mut r = r;
    r.spec.node_mirror = Some(NodeMirrorSpec {
        enabled: Some(true),
        endpoint: Some("10.0.0.5:30443".into()),
        ..Default::default()
    });
    let c = super::tls::certificate(&r, Some("10.96.4.2"));
    assert_eq!(c["spec"]["ipAddresses"], serde_json::json!(["10.96.4.2", "10.0.0.5"]));
}

#[test]
fn the_self_signed_certificate_holds_the_services_cluster_ip_once_it_has_one() {
    let r = registry(serde_json::json!({"tls": {"mode": "SelfSigned"}}));
    let before = super::tls::serving_names(&r, None);
    assert!(before.contains(&"hub.team.svc".to_owned()));
    let after = super::tls::serving_names(&r, Some("10.96.4.2"));
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.last().map(String::as_str), Some("10.96.4.2"));
    // A headless Service's "None" is no address.
    assert_eq!(super::tls::serving_names(&r, Some("None")), before);
    // The address nodes are told to use is in it too, whatever it is.
    for (endpoint, host) in [
        ("10.0.0.5:30443", "10.0.0.5"),
        ("[fd00::5]:443", "fd00::5"),
        ("mirror.example.com:443", "mirror.example.com"),
    ] {
        let r = registry(serde_json::json!({
            "tls": {"mode": "SelfSigned"}, "nodeMirror": {"enabled": true, "endpoint": endpoint},
        }));
        let names = super::tls::serving_names(&r, Some("10.96.4.2"));
        assert_eq!(names[names.len() - 2..], ["10.96.4.2", host], "{endpoint}");
    }
    // Named already (tls.dnsNames): once.
    let r = registry(serde_json::json!({
        "tls": {"mode": "SelfSigned", "dnsNames": ["mirror.example.com"]},
        "nodeMirror": {"enabled": true, "endpoint": "mirror.example.com:443"},
    }));
    let names = super::tls::serving_names(&r, None);
    assert_eq!(names.iter().filter(|n| *n == "mirror.example.com").count(), 1);
}

#[test]
fn extra_env_reaches_the_registry_container() {
    let r = registry(serde_json::json!({"env": [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "BERTH_LISTEN", "value": "$(POD_IP):5000"},
    ]}));
    let c = children(&r, &inputs());
    let Child::StatefulSet(set) = find(&c, "StatefulSet", "hub") else { unreachable!() };
    let env = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    assert_eq!(env.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["POD_IP", "BERTH_LISTEN"]);
    assert_eq!(env[0].value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "status.podIP");
    // Without it, the container has no env at all (nothing to drift).
    let plain = children(&registry(serde_json::json!({})), &inputs());
    let Child::StatefulSet(set) = find(&plain, "StatefulSet", "hub") else { unreachable!() };
    assert!(set.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.is_none());
}
