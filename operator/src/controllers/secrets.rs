//! The Secrets the operator generates for a Registry (its CA and serving certificate, robot
//! secrets, the token key): labelled as its children, and reading them back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};

use crate::crd::registry::RetainPolicy;
use crate::crd::Registry;
use crate::labels;

/// The value of `key`, as text.
pub fn data(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// A Secret the operator generates for `reg`: labelled as its child, owned by it only with
/// `retainPolicy: Delete` (otherwise it outlives the Registry).
pub fn secret(
    reg: &Registry,
    name: String,
    kind: &str,
    component: &str,
    entries: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut s = Secret {
        type_: Some(kind.into()),
        data: Some(entries.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    };
    s.metadata.name = Some(name);
    s.metadata.namespace = reg.namespace();
    s.metadata.labels = Some(labels::child(&reg.name_any(), component));
    s.metadata.annotations = Some(annotations);
    if reg.spec.retain_policy == Some(RetainPolicy::Delete) {
        s.metadata.owner_references = reg.controller_owner_ref(&()).map(|o| vec![o]);
    }
    s
}
