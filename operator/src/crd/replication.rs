//! `ReplicationPolicy`: copy repositories between registries, on a schedule or on demand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Several printer columns repeat `type_ = "string"`, which is not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ReplicationPolicy",
    plural = "replicationpolicies",
    shortname = "rp",
    category = "berth",
    namespaced,
    status = "ReplicationPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun.finishedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.trigger) && (has(self.spec.trigger.schedule) || (has(self.spec.trigger.manual) && self.spec.trigger.manual) || (has(self.spec.trigger.onPush) && self.spec.trigger.onPush))").message("set trigger.schedule, trigger.manual: true (runs are then started with the berth.dev/run annotation), or trigger.onPush: true")
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicySpec {
    pub source: Endpoint,
    pub destination: Endpoint,
    /// Push (from a Registry of this cluster outward) or Pull (into one). Default Push.
    pub mode: Option<ReplicationMode>,
    /// Which repositories and tags are copied. Default: everything.
    pub rules: Option<Vec<ReplicationRule>>,
    pub trigger: Option<Trigger>,
    /// What a run (or, on push, a delete at the source) deletes at the destination: `None` (the
    /// default), `Tags` (tags the source no longer has, within the rules) or `Mirror` (and the
    /// manifests only those tags named).
    pub deletes: Option<DeleteMode>,
    /// Move destination tags that name another digest. Default true; `Mirror` always does.
    pub overwrite: Option<bool>,
    /// No new runs (a run in progress finishes).
    pub suspend: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeleteMode {
    None,
    Tags,
    Mirror,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.registryRef) != has(self.url)").message("set exactly one of registryRef and url"))]
pub struct Endpoint {
    /// A Registry in this namespace.
    pub registry_ref: Option<super::proxycache::LocalRef>,
    /// Any OCI registry, e.g. `https://registry.example.com`.
    pub url: Option<String>,
    /// A Secret with `username` and `password` (or a docker config) for `url`.
    pub credentials_secret: Option<String>,
    /// A repository path at this end. At the source: only repositories under it are copied,
    /// named without it at the destination. At the destination: put before each name (source
    /// `team/app` with destination prefix `mirror` lands as `mirror/team/app`).
    pub prefix: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReplicationMode {
    Push,
    Pull,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRule {
    /// Repository globs, e.g. `team/*`.
    pub repositories: Option<Vec<String>>,
    /// Tag globs or regexes (`re:^v[0-9]+`), e.g. `v*`.
    pub tags: Option<Vec<String>>,
    /// Copy referrers (signatures, SBOMs) with each image. Default true.
    pub referrers: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Cron schedule, e.g. `0 * * * *`.
    pub schedule: Option<String>,
    /// Allow runs started by the `berth.dev/run` annotation.
    pub manual: Option<bool>,
    /// Copy each tag pushed (and each signature or SBOM attached) as it happens: the policy is
    /// rendered into the source Registry's config, and the replica that records the push makes
    /// the copy, retried until it lands. Needs `source.registryRef` and mode Push.
    pub on_push: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicyStatus {
    pub observed_generation: Option<i64>,
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    pub last_run: Option<RunSummary>,
    /// When the schedule next starts a run (none while suspended or without a schedule).
    pub next_run: Option<Time>,
    /// The last value of the `berth.dev/run` annotation a run was started for.
    pub requested: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The Job that ran it.
    pub job: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub succeeded: Option<bool>,
    pub images_copied: Option<i64>,
    /// Images already at the destination (or kept there, without overwrites).
    pub images_skipped: Option<i64>,
    pub images_failed: Option<i64>,
    pub tags_deleted: Option<i64>,
    pub bytes_copied: Option<i64>,
    pub message: Option<String>,
}
