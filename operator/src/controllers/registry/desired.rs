//! The children of a `Registry`, as a pure function of the resource and what the reconciler
//! looked up. No I/O: every decision here is unit-tested without a cluster.
//!
//! ```text
//! Registry ─► Secret <name>-config          berth's config.yaml, rendered from berth's own types
//!          ├► Service <name>                clients (ClusterIP/NodePort/LoadBalancer)
//!          ├► Service <name>-headless       stable pod names for the StatefulSet
//!          ├► StatefulSet <name>            berth serve; config hash annotation rolls pods
//!          ├► PodDisruptionBudget <name>    only with more than one replica
//!          ├► CronJob <name>-gc             only with spec.gc (see `gc`)
//!          └► ConfigMap, DaemonSet <name>-node-mirror   only with spec.nodeMirror (see `nodemirror`)
//! ```

use berth_core::config::{
    Config, LimitsConfig, LogConfig, LogFormat, MetadataConfig, MetricsConfig, StorageConfig, TlsConfig,
    UiConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use sha2::Digest as _;

use super::effective::{self, Effective, CONTAINER_PORT, METRICS_PORT, UID};
use super::nodemirror;
use crate::controllers::render::proxies::{self, ProxySource};
use crate::controllers::render::replication::{self, OnPushSource};
use crate::controllers::render::{auth, from_json, notifications, postgres, retention, s3, BuildError};
use crate::crd::registry::{RetainPolicy, TlsMode, UiSpec};
use crate::crd::Registry;
use crate::labels;
use berth_core::config::NotificationsConfig;

pub const CONFIG_DIR: &str = "/etc/berth/config";
pub const TLS_DIR: &str = "/etc/berth/tls";
pub const DATA_DIR: &str = "/var/lib/berth";
pub const CONFIG_HASH: &str = "berth.dev/config-hash";

/// What the reconciler found out before building.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub default_image: String,
    /// The Secret with the serving certificate (`tls.crt`, `tls.key`) when TLS is on.
    pub tls_secret: Option<String>,
    /// The `ProxyCache`s that name this Registry.
    pub proxies: Vec<ProxySource>,
    /// The claim size in the existing StatefulSet's volumeClaimTemplates, which cannot change:
    /// a larger `spec.storage.filesystem.size` grows the claims themselves instead.
    pub claim_template_size: Option<String>,
    /// The `ReplicationPolicy`s that copy this Registry's pushes as they happen.
    pub on_push: Vec<OnPushSource>,
    /// `host:port` nodes reach the Registry at, for `spec.nodeMirror` (its Service's cluster IP
    /// once it has one, or the spec's endpoint).
    pub mirror_endpoint: Option<String>,
}

// A handful are built per reconcile; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    Secret(Secret),
    Service(Service),
    StatefulSet(StatefulSet),
    Pdb(PodDisruptionBudget),
    CronJob(CronJob),
    ConfigMap(ConfigMap),
    DaemonSet(DaemonSet),
}

impl Child {
    pub fn kind(&self) -> &'static str {
        match self {
            Child::Secret(_) => "Secret",
            Child::Service(_) => "Service",
            Child::StatefulSet(_) => "StatefulSet",
            Child::Pdb(_) => "PodDisruptionBudget",
            Child::CronJob(_) => "CronJob",
            Child::ConfigMap(_) => "ConfigMap",
            Child::DaemonSet(_) => "DaemonSet",
        }
    }

    pub fn name(&self) -> String {
        match self {
            Child::Secret(o) => o.name_any(),
            Child::Service(o) => o.name_any(),
            Child::StatefulSet(o) => o.name_any(),
            Child::Pdb(o) => o.name_any(),
            Child::CronJob(o) => o.name_any(),
            Child::ConfigMap(o) => o.name_any(),
            Child::DaemonSet(o) => o.name_any(),
        }
    }
}

pub fn headless_name(reg: &Registry) -> String {
    format!("{}-headless", reg.name_any())
}

pub fn config_secret_name(reg: &Registry) -> String {
    format!("{}-config", reg.name_any())
}

/// After SIGTERM a replica stays reachable, not ready, this long, so endpoints drop it before its
/// listener closes; then requests in flight get [`SHUTDOWN_GRACE`]. Both fit in
/// [`TERMINATION_GRACE_SECONDS`].
const SHUTDOWN_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
const TERMINATION_GRACE_SECONDS: u64 = 45;

/// berth's config for this Registry, from the very types `berth` parses.
pub fn render_config(reg: &Registry, eff: &Effective, inputs: &Inputs) -> Result<Config, BuildError> {
    let spec = &reg.spec;
    let storage = spec.storage.clone().unwrap_or_default();
    let postgres = spec.database.as_ref().and_then(|d| d.postgres.as_ref());
    let tls = (eff.tls != TlsMode::None).then(|| TlsConfig {
        cert: format!("{TLS_DIR}/tls.crt").into(),
        key: format!("{TLS_DIR}/tls.key").into(),
        reload_interval: std::time::Duration::from_secs(10),
    });
    Ok(Config {
        listen: format!("0.0.0.0:{CONTAINER_PORT}"),
        data_dir: DATA_DIR.into(),
        log: LogConfig {
            level: eff.log_level.clone(),
            format: if eff.log_json { LogFormat::Json } else { LogFormat::Text },
        },
        tls,
        storage: match &storage.s3 {
            Some(s3) => StorageConfig::S3(s3::config(s3)),
            None => StorageConfig::Filesystem {
                path: Some(format!("{DATA_DIR}/storage").into()),
                small_objects: None,
            },
        },
        metadata: match postgres {
            Some(pg) => postgres::config(pg),
            None => MetadataConfig::Sqlite { path: Some(format!("{DATA_DIR}/meta.db").into()) },
        },
        // Off the port clients reach; the operator reads /readyz there for the status.
        metrics: MetricsConfig { listen: Some(format!("0.0.0.0:{METRICS_PORT}")) },
        proxy: proxies::upstreams(&inputs.proxies)?,
        auth: spec.auth.as_ref().map(|a| auth::render(a, auth::Builtin::of(reg))).transpose()?,
        retention: match &spec.gc {
            Some(gc) => retention::config(gc)?,
            None => Default::default(),
        },
        notifications: match &spec.notifications {
            Some(n) => {
                let scheme = if eff.tls == TlsMode::None { "http" } else { "https" };
                let ns = reg.namespace().unwrap_or_default();
                let source = format!("{scheme}://{}.{ns}.svc.cluster.local:{}", reg.name_any(), eff.port);
                NotificationsConfig { source: Some(source), ..notifications::config(n)? }
            }
            None => Default::default(),
        },
        replication: replication::config(&inputs.on_push)?,
        ui: ui_config(spec.ui.as_ref())?,
        limits: LimitsConfig {
            shutdown_delay: SHUTDOWN_DELAY,
            shutdown_grace: SHUTDOWN_GRACE,
            ..LimitsConfig::default()
        },
        ..Config::default()
    })
}

/// `spec.ui` as berth's `ui` config: berth's defaults where it is silent.
fn ui_config(spec: Option<&UiSpec>) -> Result<UiConfig, BuildError> {
    let defaults = UiConfig::default();
    let Some(spec) = spec else { return Ok(defaults) };
    let session = match spec.session.as_deref() {
        Some(s) => berth_core::config::duration::parse(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| BuildError::InvalidUi(format!("session {s:?} is not a duration such as 8h")))?,
        None => defaults.session,
    };
    Ok(UiConfig { enabled: spec.enabled.unwrap_or(defaults.enabled), session })
}

fn owner(reg: &Registry) -> Vec<OwnerReference> {
    reg.controller_owner_ref(&()).into_iter().collect()
}

fn meta(reg: &Registry, name: String, component: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "namespace": reg.namespace(),
        "labels": labels::child(&reg.name_any(), component),
        "ownerReferences": owner(reg),
    })
}

pub fn build(reg: &Registry, inputs: &Inputs) -> Result<Vec<Child>, BuildError> {
    let eff = effective::resolve(reg, &inputs.default_image);
    let config = render_config(reg, &eff, inputs)?;
    let config_yaml = config.to_yaml();
    let hash = berth_core::oci::hex(&sha2::Sha256::digest(config_yaml.as_bytes()));
    let tls_secret = match eff.tls {
        TlsMode::None => None,
        _ => Some(inputs.tls_secret.clone().ok_or(BuildError::TlsPending)?),
    };
    let mut children = vec![
        Child::Secret(from_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": meta(reg, config_secret_name(reg), "config"),
            "type": "Opaque",
            "stringData": {"config.yaml": config_yaml},
        }))?),
        Child::Service(service(reg, &eff)?),
        Child::Service(headless(reg)?),
        Child::StatefulSet(statefulset(reg, &eff, &hash, tls_secret.as_deref(), inputs)?),
    ];
    if eff.replicas > 1 {
        children.push(Child::Pdb(from_json(serde_json::json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(reg, reg.name_any(), "registry"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels::selector(&reg.name_any())}},
        }))?));
    }
    if let Some(cron) = super::gc::cron_job(reg, &eff, tls_secret.as_deref())? {
        children.push(Child::CronJob(cron));
    }
    if let (Some(spec), Some(endpoint)) = (nodemirror::enabled(reg), &inputs.mirror_endpoint) {
        let pull_name = nodemirror::pull_name(reg, &eff);
        let plan = nodemirror::plan(reg, spec, &eff, endpoint, &pull_name, &inputs.proxies);
        children.push(Child::ConfigMap(nodemirror::config_map(reg, &plan)?));
        children.push(Child::DaemonSet(nodemirror::daemon_set(reg, spec, &eff, tls_secret.as_deref())?));
    }
    Ok(children)
}

fn port_name(eff: &Effective) -> &'static str {
    if eff.tls == TlsMode::None {
        "http"
    } else {
        "https"
    }
}

/// The Registry's Service, the one clients and nodes reach.
pub fn service(reg: &Registry, eff: &Effective) -> Result<Service, BuildError> {
    let mut m = meta(reg, reg.name_any(), "registry");
    if let Some(a) = reg.spec.service.as_ref().and_then(|s| s.annotations.clone()) {
        m["annotations"] = serde_json::to_value(a).unwrap_or_default();
    }
    from_json(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": m,
        "spec": {
            "type": eff.service_type,
            "selector": labels::selector(&reg.name_any()),
            "ports": [{"name": port_name(eff), "port": eff.port, "targetPort": port_name(eff), "protocol": "TCP"}],
        },
    }))
}

fn headless(reg: &Registry) -> Result<Service, BuildError> {
    from_json(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(reg, headless_name(reg), "registry"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": labels::selector(&reg.name_any()),
            "ports": [{"name": "registry", "port": CONTAINER_PORT, "targetPort": CONTAINER_PORT, "protocol": "TCP"}],
        },
    }))
}

fn statefulset(
    reg: &Registry,
    eff: &Effective,
    hash: &str,
    tls_secret: Option<&str>,
    inputs: &Inputs,
) -> Result<StatefulSet, BuildError> {
    let proxies = &inputs.proxies;
    let name = reg.name_any();
    let storage = reg.spec.storage.clone().unwrap_or_default();
    let scheme = if eff.tls == TlsMode::None { "HTTP" } else { "HTTPS" };
    let port = port_name(eff);
    let mut mounts = vec![
        serde_json::json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        serde_json::json!({"name": "data", "mountPath": DATA_DIR}),
        serde_json::json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![
        serde_json::json!({"name": "config", "secret": {"secretName": config_secret_name(reg), "defaultMode": 0o440}}),
        serde_json::json!({"name": "tmp", "emptyDir": {}}),
    ];
    if let Some(secret) = tls_secret {
        mounts.push(serde_json::json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true}));
        volumes
            .push(serde_json::json!({"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}}));
    }
    if let Some(s3) = &storage.s3 {
        let (s3_mounts, s3_volumes) = s3::volumes(s3);
        mounts.extend(s3_mounts);
        volumes.extend(s3_volumes);
    }
    if let Some(pg) = reg.spec.database.as_ref().and_then(|d| d.postgres.as_ref()) {
        let (pg_mounts, pg_volumes) = postgres::volumes(pg);
        mounts.extend(pg_mounts);
        volumes.extend(pg_volumes);
    }
    if let Some(n) = &reg.spec.notifications {
        let (hook_mounts, hook_volumes) = notifications::volumes(n);
        mounts.extend(hook_mounts);
        volumes.extend(hook_volumes);
    }
    let (proxy_mounts, proxy_volumes) = proxies::volumes(proxies);
    mounts.extend(proxy_mounts);
    volumes.extend(proxy_volumes);
    let (copy_mounts, copy_volumes) = replication::volumes(&inputs.on_push);
    mounts.extend(copy_mounts);
    volumes.extend(copy_volumes);
    if let Some(spec) = &reg.spec.auth {
        let (auth_mounts, auth_volumes) = auth::volumes(reg, spec, auth::Builtin::of(reg));
        mounts.extend(auth_mounts);
        volumes.extend(auth_volumes);
    }
    let mut claims = Vec::new();
    if let Some(existing) = &storage.existing_claim {
        volumes
            .push(serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": existing.name}}));
    } else {
        let fs = storage.filesystem.clone().unwrap_or_default();
        let mut spec = serde_json::json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": inputs
                .claim_template_size
                .clone()
                .or_else(|| fs.size.clone())
                .unwrap_or_else(|| effective::DEFAULT_SIZE.into())}},
        });
        if let Some(class) = &fs.storage_class_name {
            spec["storageClassName"] = class.clone().into();
        }
        claims.push(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "labels": labels::selector(&name)},
            "spec": spec,
        }));
    }
    let mut pod = serde_json::json!({
        "metadata": {
            "labels": labels::child(&name, "registry"),
            "annotations": {CONFIG_HASH: hash},
        },
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            "containers": [{
                "name": "berth",
                "image": eff.image,
                "imagePullPolicy": reg.spec.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into()),
                "args": ["serve", "--config", format!("{CONFIG_DIR}/config.yaml")],
                "ports": [
                    {"name": port, "containerPort": CONTAINER_PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                ],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": port, "scheme": scheme}, "periodSeconds": 5, "failureThreshold": 3},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": port, "scheme": scheme}, "periodSeconds": 10, "failureThreshold": 6},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    });
    let spec = &reg.spec;
    if let Some(r) = &spec.resources {
        pod["spec"]["containers"][0]["resources"] = serde_json::to_value(r).unwrap_or_default();
    }
    if let Some(env) = spec.env.as_ref().filter(|e| !e.is_empty()) {
        pod["spec"]["containers"][0]["env"] = serde_json::to_value(env).unwrap_or_default();
    }
    if let Some(v) = &spec.node_selector {
        pod["spec"]["nodeSelector"] = serde_json::to_value(v).unwrap_or_default();
    }
    if let Some(v) = &spec.tolerations {
        pod["spec"]["tolerations"] = serde_json::to_value(v).unwrap_or_default();
    }
    if eff.replicas > 1 {
        // Replicas on different nodes where the cluster has them, so one node's loss leaves the
        // registry serving; never a reason to leave a pod unscheduled.
        pod["spec"]["topologySpreadConstraints"] = serde_json::json!([{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": labels::selector(&name)},
        }]);
    }
    if let Some(v) = &spec.affinity {
        pod["spec"]["affinity"] = serde_json::to_value(v).unwrap_or_default();
    }
    if let Some(patch) = &spec.pod_template {
        merge_patch(&mut pod, patch);
    }
    let retention = if eff.retain == RetainPolicy::Delete { "Delete" } else { "Retain" };
    from_json(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": meta(reg, name.clone(), "registry"),
        "spec": {
            "replicas": eff.replicas,
            "serviceName": headless_name(reg),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels::selector(&name)},
            "template": pod,
            "volumeClaimTemplates": claims,
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Retain"},
        },
    }))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
    }
}
