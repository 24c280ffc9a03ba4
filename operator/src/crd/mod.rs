//! The custom resources of group `berth.dev`, version `v1alpha1`. `crdgen` renders them into
//! `crds/`; CI fails when the committed YAML and these types disagree.

pub mod common;
pub mod proxycache;
pub mod registry;
pub mod replication;

pub use proxycache::{ProxyCache, ProxyCacheSpec, ProxyCacheStatus};
pub use registry::{Registry, RegistrySpec, RegistryStatus};
pub use replication::{ReplicationPolicy, ReplicationPolicySpec, ReplicationPolicyStatus};

/// An object whose fields are kept as written (`x-kubernetes-preserve-unknown-fields`).
pub fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
