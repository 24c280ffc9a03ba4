//! `ProxyCache`: one upstream registry that a `Registry` mirrors (a pull-through cache).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Several printer columns repeat `type_ = "string"`, which is not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ProxyCache",
    plural = "proxycaches",
    shortname = "pxc",
    category = "berth",
    namespaced,
    status = "ProxyCacheStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Prefix", type_ = "string", json_path = ".status.pullPrefix"),
    printcolumn(name = "Upstream", type_ = "string", json_path = ".spec.upstream.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCacheSpec {
    /// The Registry (in this namespace) that serves this cache.
    #[x_kube(validation = Rule::new("self == oldSelf").message("registryRef cannot be changed"))]
    pub registry_ref: LocalRef,
    pub upstream: Upstream,
    /// The first path part under which the upstream is served, e.g. `docker.io` for
    /// `<registry>/docker.io/library/nginx`; also the `ns` value containerd mirrors send.
    /// Default: the upstream's host name.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]+([._-][a-z0-9]+)*$')").message("prefix must be one path part: lowercase letters, digits, '.', '_', '-'"))]
    pub prefix: Option<String>,
    /// Serve repositories without a prefix from this upstream (Docker's `registry-mirrors`).
    pub default_upstream: Option<bool>,
    /// Which upstream repositories may be pulled (globs). Default: all.
    pub repositories: Option<RepositoryFilter>,
    pub freshness: Option<Freshness>,
    /// Upper bound of cached content from this upstream, e.g. 100Gi; least recently pulled content is
    /// evicted first.
    #[x_kube(validation = Rule::new("isQuantity(self)").message("sizeLimit must be a quantity like 100Gi"))]
    pub size_limit: Option<String>,
    /// Cached content not pulled for this long is removed, e.g. 720h.
    pub unused_ttl: Option<String>,
    /// Stop serving this upstream (cached content stays).
    pub suspend: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// e.g. `https://registry-1.docker.io`.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must start with https:// or http://"))]
    pub url: String,
    /// A Secret with `username` and `password` (or `token`) for the upstream.
    pub credentials_secret: Option<String>,
    /// A Secret whose `ca.crt` holds extra CA certificates (PEM) for the upstream.
    pub ca_secret: Option<String>,
    /// Skip TLS verification of the upstream (never in production).
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFilter {
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freshness {
    /// How long a cached tag is served before it is revalidated with a HEAD, e.g. 10m.
    pub revalidate_after: Option<String>,
    /// How long a cached tag may still be served while the upstream fails, e.g. 24h.
    pub stale_if_error: Option<String>,
    /// How long an upstream "not found" is remembered, e.g. 1m.
    pub negative_ttl: Option<String>,
    /// Other revalidation intervals for some repositories; the first matching rule wins, e.g.
    /// `{repositories: "library/*-nightly", after: 0s}`.
    pub rules: Option<Vec<RevalidateRule>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevalidateRule {
    /// Upstream repositories (glob: `*` within one path part, `**` across parts).
    pub repositories: String,
    /// e.g. 1h, or 0s to check on every pull.
    pub after: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCacheStatus {
    pub observed_generation: Option<i64>,
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// What to put in front of an upstream image name, e.g. `hub.team.svc:5000/docker.io`.
    pub pull_prefix: Option<String>,
    /// containerd `hosts.toml` that makes nodes pull this upstream through Berth.
    pub containerd_hosts_toml: Option<String>,
}
