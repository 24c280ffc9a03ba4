//! `Registry`: one Berth registry (a StatefulSet of `berth serve`) and how it is exposed.
//!
//! Every user-facing field is optional and has no schema default: defaults are resolved in code
//! (`controllers::registry::effective`) and reported in `status.effective`, so GitOps tools that
//! compare the applied YAML with the live object never see a field they did not write.

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::common::SecretKeyRef;

mod backends;
mod lifecycle;

pub use backends::*;
pub use lifecycle::*;

// Several printer columns repeat `type_ = "string"`, which is not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Registry",
    plural = "registries",
    shortname = "reg",
    category = "berth",
    namespaced,
    status = "RegistryStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(spec_replicas_path = ".spec.replicas", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
    validation = Rule::new("!has(self.spec.replicas) || self.spec.replicas <= 1 || (has(self.spec.storage) && has(self.spec.storage.s3) && has(self.spec.database) && has(self.spec.database.postgres))")
        .message("more than one replica needs shared storage (spec.storage.s3) and PostgreSQL (spec.database.postgres)"),
    validation = Rule::new("!has(self.spec.pullSecrets) || has(self.spec.auth)")
        .message("spec.pullSecrets needs spec.auth: an open registry needs no pull secret"),
    // The name is the Service's, which must be a DNS label (no dots, a letter first).
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("a Registry's name starts with a lowercase letter and has only lowercase letters, digits and '-': it names the Registry's Service"),
    // The StatefulSet's controller labels each pod `<name>-<10-character revision hash>`, and a
    // label is at most 63 characters: a longer name makes a StatefulSet that never has a pod.
    validation = Rule::new("self.metadata.name.size() <= 52")
        .message("a Registry's name is at most 52 characters: it names the StatefulSet, whose pods carry it with a revision hash in a label of at most 63")
)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Container image holding `berth`. Default: the image this operator was released with.
    pub image: Option<String>,
    /// Pull policy of that image.
    pub image_pull_policy: Option<String>,
    /// Number of registry pods. Default 1; more needs shared storage and PostgreSQL.
    #[x_kube(validation = Rule::new("self >= 0").message("replicas cannot be negative"))]
    pub replicas: Option<i32>,
    /// Where content is stored. Default: a 10Gi PersistentVolumeClaim per pod.
    pub storage: Option<StorageSpec>,
    /// Where metadata lives. Default: SQLite embedded in the data volume.
    pub database: Option<DatabaseSpec>,
    /// How the registry serves TLS. Default: plain HTTP inside the cluster.
    pub tls: Option<TlsSpec>,
    /// The client Service.
    pub service: Option<ServiceSpec>,
    /// Log level and format of `berth`.
    pub log: Option<LogSpec>,
    /// Who may pull, push and delete. Without it the registry is open to anyone who reaches it.
    pub auth: Option<AuthSpec>,
    /// imagePullSecrets for this registry, kept in the namespaces chosen here.
    pub pull_secrets: Option<PullSecretsSpec>,
    /// Resources of the registry container.
    pub resources: Option<ResourceRequirements>,
    /// Extra environment of the registry container, after the operator's own: for example
    /// `HTTPS_PROXY`/`NO_PROXY` for reaching upstreams, or, where pods share a network (as with
    /// `hostNetwork`), `POD_IP` from `status.podIP` with `BERTH_LISTEN: $(POD_IP):5000` and
    /// `BERTH_METRICS_LISTEN: $(POD_IP):9102` to bind only the pod's own address.
    pub env: Option<Vec<EnvVar>>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    /// Merged (JSON merge patch) over the generated pod template: anything not covered above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown")]
    pub pod_template: Option<serde_json::Value>,
    /// Garbage collection on a schedule: a CronJob asks the registry (through its Service, with a
    /// robot granted `admin` that the operator generates) to remove what no tag reaches. The
    /// annotation `berth.dev/gc-run`, set to a new value, runs one at once.
    pub gc: Option<GcSpec>,
    /// Webhooks: each push, tag or manifest delete and referrer attached is delivered (at least
    /// once, signed, retried with backoff) to these endpoints. The events are also kept as the
    /// audit log of changes (`GET /admin/v1/events`).
    pub notifications: Option<NotificationsSpec>,
    /// Point every node's containerd (and, when asked, CRI-O) at this Registry: a DaemonSet writes
    /// a `hosts.toml` for each ProxyCache's host (`docker.io`, ...) and for the Registry's own host,
    /// and removes them when this is turned off or the Registry is deleted. Off by default. Its
    /// pods mount host directories: the namespace's Pod Security level must be `privileged`.
    pub node_mirror: Option<NodeMirrorSpec>,
    /// The web UI at `/ui/` on the registry's own port: repositories, tags and signatures for
    /// what each user may pull, deletes for those who may delete, and an Operate page for
    /// admins. On by default.
    pub ui: Option<UiSpec>,
    /// What happens to volumes and generated Secrets when the Registry is deleted. Default: Retain.
    pub retain_policy: Option<RetainPolicy>,
    /// Stop reconciling (children are left as they are).
    pub suspend: Option<bool>,
}

/// Node mirror setup (`spec.nodeMirror`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMirrorSpec {
    /// Run the DaemonSet. Default false.
    pub enabled: Option<bool>,
    /// containerd's hosts directory on the nodes (its `config_path`). Default
    /// `/etc/containerd/certs.d`.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("containerdConfigPath must be an absolute path"))]
    pub containerd_config_path: Option<String>,
    /// containerd's config file on the nodes, read to check that its `config_path` names that
    /// directory (containerd 1.x reads none unless told). Default `/etc/containerd/config.toml`.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("containerdConfigFile must be an absolute path"))]
    pub containerd_config_file: Option<String>,
    /// Also write a CRI-O `registries.conf.d` drop-in. Default false.
    pub crio: Option<bool>,
    /// CRI-O's drop-in directory on the nodes. Default `/etc/containers/registries.conf.d`.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("crioConfigPath must be an absolute path"))]
    pub crio_config_path: Option<String>,
    /// containers' `certs.d` on the nodes, where CRI-O finds the Registry's CA when the Registry
    /// has TLS of its own (with `crio`). Default `/etc/containers/certs.d`.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("crioCertsPath must be an absolute path"))]
    pub crio_certs_path: Option<String>,
    /// How nodes reach the Registry, `host:port`. Default: its Service's cluster IP and port
    /// (nodes reach cluster IPs through kube-proxy; nodes seldom resolve cluster DNS names). A
    /// `SelfSigned` or `CertManager` certificate holds that IP and the host given here; with a
    /// certificate of your own (`Secret`), give a name it holds that nodes resolve.
    #[schemars(regex(pattern = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]+$"))]
    pub endpoint: Option<String>,
    /// Nodes to configure. Default: every node.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Default: every taint tolerated, so no node is left out.
    pub tolerations: Option<Vec<Toleration>>,
}

/// Access control: users from an htpasswd Secret, robots, anonymous pulls, per-repository rules.
/// Clients log in with the Docker token protocol at the registry's own `/token`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret whose `htpasswd` key holds `user:<bcrypt hash>` lines (`berth hash-password`
    /// makes the hashes). Changes are picked up without a restart.
    pub htpasswd_secret: Option<String>,
    /// Repositories anyone may pull without credentials (globs; `**` is everything).
    pub anonymous_pull: Option<Vec<String>>,
    /// What htpasswd users may do. Without rules every user may do everything.
    pub rules: Option<Vec<AccessRule>>,
    /// Robot accounts for CI and clusters. The operator generates each robot's secret once into
    /// the Secret `<registry>-robots` (key: the robot's name); the robot logs in with its name.
    pub robots: Option<Vec<RobotSpec>>,
}

/// A `kubernetes.io/dockerconfigjson` Secret for a pull-only robot, in every chosen namespace:
/// created, repaired, updated when the endpoint or credential changes, and removed when the
/// namespace leaves the selection or the Registry goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullSecretsSpec {
    /// Name of the Secret in each namespace. Default: `<registry>-pull`.
    pub secret_name: Option<String>,
    /// Namespaces with these labels.
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name.
    pub namespaces: Option<Vec<String>>,
    /// Never these namespaces, whatever the rest says.
    pub exclude_namespaces: Option<Vec<String>>,
    /// Also list the Secret in these ServiceAccounts' imagePullSecrets (e.g. `default`), keeping
    /// what others put there. Default: none.
    pub service_accounts: Option<Vec<String>>,
    /// The registry host as nodes reach it. Default: `<registry>.<namespace>.svc.cluster.local:<port>`.
    pub server: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullSecretsStatus {
    pub secret_name: Option<String>,
    /// Namespaces that hold an up-to-date Secret.
    pub namespaces: Option<i32>,
    /// Where the operator placed the Secret: it removes them from here when a namespace leaves the
    /// selection, without listing Secrets across the cluster (its RBAC allows no such list).
    pub placed: Option<Vec<String>>,
    /// Namespaces where it could not be placed, and why.
    pub failed: Option<Vec<NamespaceFailure>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    pub namespace: String,
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// User names from the htpasswd Secret; `*` is every user.
    pub users: Vec<String>,
    /// Repository globs: `*` within one path part, `**` across parts.
    pub repositories: Vec<String>,
    pub actions: Vec<AccessAction>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RobotSpec {
    /// Lowercase letters, digits and '-', at most 63.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 63))]
    pub name: String,
    pub repositories: Vec<String>,
    pub actions: Vec<AccessAction>,
    /// RFC 3339 time after which the robot is refused, e.g. 2027-06-30T00:00:00Z.
    pub expires: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessAction {
    Pull,
    Push,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    None,
    SelfSigned,
    CertManager,
    Secret,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'Secret' || has(self.secretName)").message("mode Secret needs secretName"))]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'CertManager' || has(self.issuerRef)").message("mode CertManager needs issuerRef"))]
pub struct TlsSpec {
    pub mode: Option<TlsMode>,
    /// With mode Secret: a `kubernetes.io/tls` Secret you provide (rotations are picked up).
    pub secret_name: Option<String>,
    /// With mode CertManager: the issuer of the Certificate.
    pub issuer_ref: Option<IssuerRef>,
    /// Extra DNS names for the serving certificate (the Service names are always included).
    pub dns_names: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// Issuer or ClusterIssuer. Default Issuer.
    pub kind: Option<String>,
    /// Default cert-manager.io.
    pub group: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Port of the Service. Default 5000 (443 with TLS).
    pub port: Option<i32>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogSpec {
    /// A tracing filter: info (default), debug, berth_registry=debug.
    pub level: Option<String>,
    /// text or json (default).
    pub format: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The generation the conditions and effective values describe.
    pub observed_generation: Option<i64>,
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// host:port clients inside the cluster push to.
    pub endpoint: Option<String>,
    pub replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    /// Label selector of the pods (for the scale subresource).
    pub selector: Option<String>,
    /// Every setting with its default resolved.
    pub effective: Option<EffectiveRegistry>,
    pub tls: Option<TlsStatus>,
    /// The ProxyCaches in the configuration the pods were given, by name. With `Ready`, the pods
    /// serve them.
    pub proxy_caches: Option<Vec<String>>,
    /// Where the pull Secrets are.
    pub pull_secrets: Option<PullSecretsStatus>,
    /// Garbage collection: its CronJob and the last run that ended.
    pub gc: Option<GcStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcStatus {
    /// The CronJob that runs collections.
    pub cron_job: Option<String>,
    /// The value of `berth.dev/gc-run` last acted on (its run's Job is `<registry>-gc-<hash>`).
    pub requested: Option<String>,
    pub last_run: Option<GcRun>,
}

/// One collection, as its Job ended and as `berth gc` summed it up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcRun {
    pub job: String,
    pub start_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    pub completion_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Succeeded or Failed.
    pub result: String,
    pub dry_run: Option<bool>,
    /// Tags retention removed.
    pub tags_removed: Option<i64>,
    pub manifests_removed: Option<i64>,
    pub blobs_removed: Option<i64>,
    pub bytes_reclaimed: Option<i64>,
    /// Removals skipped because a push needed the thing again meanwhile.
    pub conflicts: Option<i64>,
    /// Stored objects no metadata knew, removed by a scrub.
    pub orphans_removed: Option<i64>,
    /// Stored blobs a verifying scrub found missing or not matching their digest.
    pub corrupt_blobs: Option<i64>,
    /// Why a failed run failed.
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRegistry {
    pub image: String,
    pub replicas: i32,
    pub storage: String,
    pub storage_size: Option<String>,
    pub database: String,
    pub tls_mode: String,
    pub service_type: String,
    pub port: i32,
    pub retain_policy: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// Secret holding the serving certificate.
    pub secret_name: Option<String>,
    /// With SelfSigned: the Secret whose `ca.crt` clients should trust, and its SHA-256 fingerprint.
    pub ca_secret_name: Option<String>,
    pub ca_fingerprint: Option<String>,
}

/// The web UI (`spec.ui`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UiSpec {
    /// Serve the UI. Default true.
    pub enabled: Option<bool>,
    /// How long a login lasts (e.g. `8h`). Default 12 hours.
    pub session: Option<String>,
}

/// Webhook endpoints and how long events are kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// How long events are kept once delivered (e.g. `720h`). Default: 30 days.
    pub keep: Option<String>,
    pub endpoints: Option<Vec<WebhookSpec>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Names the endpoint's deliveries, metrics and logs: letters, digits, `-` and `_`.
    pub name: String,
    /// `http://` or `https://` URL events are POSTed to.
    pub url: String,
    /// A Secret key holding the key that signs each body (header `Berth-Signature`,
    /// HMAC-SHA256). Strongly recommended.
    pub secret: Option<SecretKeyRef>,
    /// `CloudEvents` (default: CloudEvents 1.0, structured) or `Distribution` (the envelope of
    /// `registry:2` notifications, for tools written for it).
    pub format: Option<WebhookFormat>,
    /// Which events: `Push`, `TagDelete`, `Delete`, `Referrer`, and `Pull` (only when listed;
    /// alike pulls within a few seconds are one event with a count). Default: all but `Pull`.
    pub events: Option<Vec<WebhookEvent>>,
    /// Repository globs whose events are sent. Default: all.
    pub repositories: Option<Vec<String>>,
    /// Per delivery, e.g. `10s` (the default).
    pub timeout: Option<String>,
    /// Attempts before a delivery is given up (dead). Default 10.
    #[x_kube(validation = Rule::new("self >= 1").message("maxAttempts must be at least 1"))]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, doubling up to 10m. Default `1s`.
    pub backoff: Option<String>,
    /// A Secret whose `ca.crt` signs the endpoint's certificate (besides the system's CAs).
    pub ca_secret: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WebhookFormat {
    CloudEvents,
    Distribution,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WebhookEvent {
    Push,
    TagDelete,
    Delete,
    Referrer,
    Pull,
}
