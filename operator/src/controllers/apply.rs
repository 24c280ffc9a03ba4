//! Server-side apply with one field manager, and pruning of children that are no longer wanted.
//!
//! Applying an unchanged object is a no-op on the API server (no new resourceVersion), so a
//! steady-state reconcile writes nothing.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const FIELD_MANAGER: &str = "berth-operator";

pub async fn apply<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    not_leading()?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await
}

/// Why the API server refused to write `what` (a kind and name), when that is the user's to fix:
/// the object is invalid (400, 422), or something in the cluster forbids it (403: an admission
/// policy, a quota, the operator's own RBAC). A controller reports it as `Stalled` (reason `ChildRejected`)
/// in the API server's words and tries again at its next pass, rather than failing the pass and
/// retrying in a tight loop with only its log to say why.
pub fn refusal(what: &str, e: &kube::Error) -> Option<(String, String)> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => {
            Some(("ChildRejected".into(), format!("the API server refused {what}: {}", s.message)))
        }
        _ => None,
    }
}

/// Every write checks leadership first: a reconcile that began while this process led must not
/// write once it no longer does (a pause, or renewals that failed meanwhile).
fn not_leading() -> Result<(), kube::Error> {
    if crate::leader::still_leading() {
        return Ok(());
    }
    Err(kube::Error::Service(Box::new(std::io::Error::other("this replica no longer leads"))))
}

/// Deletes objects of kind `K` labelled as children of `owner_uid`'s resource that are not in
/// `keep`. Only objects whose controller is that resource are touched.
pub async fn prune<K>(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<usize, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    not_leading()?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut removed = 0;
    for obj in api.list(&ListParams::default().labels(selector)).await? {
        let ours = obj.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == owner_uid);
        if ours && !keep.contains(&obj.name_any()) {
            api.delete(&obj.name_any(), &DeleteParams::background()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
