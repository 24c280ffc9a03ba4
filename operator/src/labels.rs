//! Labels the operator puts on what it creates, and nothing else: a CR's own labels and
//! annotations are never copied to children.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const OPERATOR: &str = "berth-operator";
pub const REGISTRY: &str = "berth.dev/registry";

/// Selects the pods of one Registry (stable for the life of the StatefulSet).
pub fn selector(registry: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "berth".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), registry.to_owned()),
    ])
}

/// Every label of a child of `registry`.
pub fn child(registry: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(registry);
    l.insert("app.kubernetes.io/component".into(), component.into());
    l.insert(MANAGED_BY.into(), OPERATOR.into());
    l.insert(REGISTRY.into(), registry.into());
    l
}

/// `key=value,…` for list calls.
pub fn owned_by(registry: &str) -> String {
    format!("{MANAGED_BY}={OPERATOR},{REGISTRY}={registry}")
}

pub fn selector_string(registry: &str) -> String {
    selector(registry).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
