//! imagePullSecrets for a Registry, kept in every namespace its `spec.pullSecrets` selects.
//!
//! ```text
//! Namespaces (names, label selector, exclusions) ─► Secret <registry>-pull (kubernetes.io/dockerconfigjson)
//!                                                   for the built-in pull-only robot `pull-secrets`
//!                                                └► optionally listed in ServiceAccounts' imagePullSecrets
//! ```
//! The Secrets live in other namespaces, so they cannot be owned by the Registry: they carry its
//! labels instead, and a finalizer on the Registry removes them when it is deleted. A Secret of
//! the same name that the operator did not create is never touched; it is reported in status.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;

use crate::controllers::apply::apply;
use crate::crd::registry::{NamespaceFailure, PullSecretsSpec, PullSecretsStatus};
use crate::crd::Registry;
use crate::labels;

pub const FINALIZER: &str = "berth.dev/pull-secrets";
pub const REGISTRY_NAMESPACE: &str = "berth.dev/registry-namespace";
const COMPONENT: &str = "pull-secret";

pub fn secret_name(reg: &Registry, spec: &PullSecretsSpec) -> String {
    spec.secret_name.clone().unwrap_or_else(|| format!("{}-pull", reg.name_any()))
}

/// The labels of every pull Secret of `reg`, wherever it is.
pub fn secret_labels(reg: &Registry) -> BTreeMap<String, String> {
    let mut l = labels::child(&reg.name_any(), COMPONENT);
    l.insert(REGISTRY_NAMESPACE.into(), reg.namespace().unwrap_or_default());
    l
}

/// The Registry a pull Secret belongs to, from its labels.
pub fn registry_of(labels: &BTreeMap<String, String>) -> Option<(String, String)> {
    if labels.get("app.kubernetes.io/component").map(String::as_str) != Some(COMPONENT) {
        return None;
    }
    Some((labels.get(REGISTRY_NAMESPACE)?.clone(), labels.get(labels::REGISTRY)?.clone()))
}

/// Whether `labels` satisfy a Kubernetes label selector.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    exact && expressions
}

/// The namespaces that should hold the Secret (pure). Neither names nor a selector: none.
pub fn selected(
    namespaces: &[(String, BTreeMap<String, String>)],
    spec: &PullSecretsSpec,
) -> BTreeSet<String> {
    let names: BTreeSet<&String> = spec.namespaces.iter().flatten().collect();
    let excluded: BTreeSet<&String> = spec.exclude_namespaces.iter().flatten().collect();
    namespaces
        .iter()
        .filter(|(name, labels)| {
            let chosen =
                names.contains(name) || spec.namespace_selector.as_ref().is_some_and(|s| matches(s, labels));
            chosen && !excluded.contains(name)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Where nodes pull from: the configured server, or the Service's cluster DNS name.
pub fn server(reg: &Registry, spec: &PullSecretsSpec, port: i32) -> String {
    spec.server.clone().unwrap_or_else(|| {
        format!("{}.{}.svc.cluster.local:{port}", reg.name_any(), reg.namespace().unwrap_or_default())
    })
}

/// `.dockerconfigjson` for one registry (pure).
pub fn docker_config(server: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({"auths": {server: {"username": user, "password": password, "auth": auth}}}).to_string()
}

fn desired(reg: &Registry, name: &str, ns: &str, config: &str) -> Secret {
    let mut s = Secret {
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        string_data: Some(BTreeMap::from([(".dockerconfigjson".into(), config.to_owned())])),
        ..Secret::default()
    };
    s.metadata.name = Some(name.to_owned());
    s.metadata.namespace = Some(ns.to_owned());
    s.metadata.labels = Some(secret_labels(reg));
    s
}

fn is_ours(s: &Secret, reg: &Registry) -> bool {
    registry_of(s.labels()).is_some_and(|(ns, name)| Some(ns) == reg.namespace() && name == reg.name_any())
}

/// Brings every selected namespace's Secret (and ServiceAccount entries) up to date and removes
/// them where they no longer belong. Per-namespace failures are reported, not fatal.
pub async fn distribute(
    client: &kube::Client,
    reg: &Registry,
    spec: &PullSecretsSpec,
    docker_config: &str,
) -> Result<PullSecretsStatus, kube::Error> {
    let name = secret_name(reg, spec);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let all: Vec<(String, BTreeMap<String, String>)> = namespaces
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();
    let wanted = selected(&all, spec);
    let mut failed = vec![];
    let mut placed = vec![];
    for ns in &wanted {
        match place(client, reg, spec, &name, ns, docker_config).await {
            Ok(()) => placed.push(ns.clone()),
            Err(reason) => failed.push(NamespaceFailure { namespace: ns.clone(), reason }),
        }
    }
    // Ours where it no longer belongs (a namespace left the selection, or the name changed), by
    // the record of where it was placed.
    let (before, old_name) = previous(reg);
    for ns in before {
        if !wanted.contains(&ns) || old_name != name {
            remove(client, spec, &old_name, &ns).await?;
        }
    }
    placed.sort();
    Ok(PullSecretsStatus {
        secret_name: Some(name),
        namespaces: Some(placed.len() as i32),
        placed: Some(placed),
        failed: (!failed.is_empty()).then_some(failed),
    })
}

/// Where the last reconcile placed the Secret, and under which name.
fn previous(reg: &Registry) -> (Vec<String>, String) {
    let status = reg.status.as_ref().and_then(|s| s.pull_secrets.clone()).unwrap_or_default();
    let name = status.secret_name.unwrap_or_else(|| format!("{}-pull", reg.name_any()));
    (status.placed.unwrap_or_default(), name)
}

async fn place(
    client: &kube::Client,
    reg: &Registry,
    spec: &PullSecretsSpec,
    name: &str,
    ns: &str,
    docker_config: &str,
) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    match secrets.get_opt(name).await {
        Ok(Some(existing)) if !is_ours(&existing, reg) => {
            return Err(format!("a Secret {name} exists here that Berth did not create; it is left alone"));
        }
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    apply(client, ns, &desired(reg, name, ns, docker_config)).await.map_err(|e| e.to_string())?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    for sa in spec.service_accounts.iter().flatten() {
        list_in(&accounts, sa, name, true).await.map_err(|e| format!("ServiceAccount {sa}: {e}"))?;
    }
    Ok(())
}

/// Adds `name` to (or removes it from) a ServiceAccount's imagePullSecrets, keeping every other
/// entry: the whole list is written back under the resourceVersion it was read at, so an entry
/// someone adds meanwhile makes the write fail and retry rather than vanish.
async fn list_in(accounts: &Api<ServiceAccount>, sa: &str, name: &str, on: bool) -> Result<(), kube::Error> {
    let Some(account) = accounts.get_opt(sa).await? else { return Ok(()) };
    let current: Vec<String> = account.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
    if current.iter().any(|n| n == name) == on {
        return Ok(());
    }
    let mut next: Vec<String> = current.into_iter().filter(|n| n != name).collect();
    if on {
        next.push(name.to_owned());
    }
    let entries: Vec<serde_json::Value> = next.iter().map(|n| serde_json::json!({"name": n})).collect();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": account.resource_version()},
        "imagePullSecrets": entries,
    });
    accounts.patch(sa, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn remove(
    client: &kube::Client,
    spec: &PullSecretsSpec,
    name: &str,
    ns: &str,
) -> Result<(), kube::Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    for sa in spec.service_accounts.iter().flatten() {
        list_in(&accounts, sa, name, false).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every pull Secret of `reg` (the Registry is going, or stopped distributing).
pub async fn withdraw(
    client: &kube::Client,
    reg: &Registry,
    spec: &PullSecretsSpec,
) -> Result<(), kube::Error> {
    let (placed, name) = previous(reg);
    for ns in placed {
        remove(client, spec, &name, &ns).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn ns(name: &str, labels: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
        (name.into(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn namespaces_are_chosen_by_name_or_labels_minus_exclusions() {
        let all = [
            ns("ci", &[("berth.dev/pull", "yes")]),
            ns("team-a", &[("berth.dev/pull", "yes"), ("tier", "prod")]),
            ns("team-b", &[("tier", "dev")]),
            ns("kube-system", &[("berth.dev/pull", "yes")]),
            ns("named", &[]),
        ];
        let spec = PullSecretsSpec {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("berth.dev/pull".into(), "yes".into())])),
                match_expressions: None,
            }),
            namespaces: Some(vec!["named".into()]),
            exclude_namespaces: Some(vec!["kube-system".into()]),
            ..PullSecretsSpec::default()
        };
        let got: Vec<String> = selected(&all, &spec).into_iter().collect();
        assert_eq!(got, ["ci", "named", "team-a"]);
        assert!(selected(&all, &PullSecretsSpec::default()).is_empty(), "nothing chosen, nothing served");

        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
        };
        let labels = BTreeMap::from([("tier".to_owned(), "prod".to_owned())]);
        assert!(matches(&expr("In", &["prod", "dev"]), &labels));
        assert!(!matches(&expr("NotIn", &["prod"]), &labels));
        assert!(matches(&expr("Exists", &[]), &labels));
        assert!(!matches(&expr("DoesNotExist", &[]), &labels));
        assert!(!matches(&expr("Sometimes", &[]), &labels));
    }

    #[test]
    fn the_docker_config_names_the_server_nodes_use() {
        let c: serde_json::Value =
            serde_json::from_str(&docker_config("hub.ci.svc.cluster.local:5000", "pull-secrets", "s3cret"))
                .unwrap();
        let entry = &c["auths"]["hub.ci.svc.cluster.local:5000"];
        assert_eq!(entry["username"], "pull-secrets");
        assert_eq!(entry["auth"], base64::engine::general_purpose::STANDARD.encode("pull-secrets:s3cret"));
        let labels = BTreeMap::from([
            ("app.kubernetes.io/component".to_owned(), COMPONENT.to_owned()),
            (REGISTRY_NAMESPACE.to_owned(), "ci".to_owned()),
            (labels::REGISTRY.to_owned(), "hub".to_owned()),
        ]);
        assert_eq!(registry_of(&labels), Some(("ci".into(), "hub".into())));
    }
}
