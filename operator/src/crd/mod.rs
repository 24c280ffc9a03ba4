//! The custom resources of group `berth.dev`, version `v1alpha1`. `crdgen` renders them into
//! `crds/`; CI fails when the committed YAML and these types disagree.

pub mod common;
pub mod registry;

pub use registry::{Registry, RegistrySpec, RegistryStatus};

/// An object whose fields are kept as written (`x-kubernetes-preserve-unknown-fields`).
pub fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
