//! Helpers for tests against the control plane: wait on conditions with deadlines (never fixed
//! sleeps) and throwaway namespaces.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};

/// Polls `check` until it returns true or `within` passes; returns whether it did.
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(within, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Polls `check` until it returns something or `within` passes (then `None`), pausing 20 ms at
/// first and at most 500 ms between checks.
pub async fn poll_until<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

pub fn node_ready(n: &Node) -> bool {
    ready(
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (&c.type_, &c.status)),
    )
}

pub fn pod_ready(p: &Pod) -> bool {
    ready(
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (&c.type_, &c.status)),
    )
}

/// Whether the (type, status) pairs hold `Ready=True`.
fn ready<'a>(mut conditions: impl Iterator<Item = (&'a String, &'a String)>) -> bool {
    conditions.any(|(t, s)| t == "Ready" && s == "True")
}

/// A namespace that exists for the life of the value; deleted (without waiting) on drop.
pub struct TempNamespace {
    pub name: String,
    client: kube::Client,
}

impl TempNamespace {
    pub async fn create(client: &kube::Client, prefix: &str) -> anyhow::Result<TempNamespace> {
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"generateName": format!("{prefix}-")}
        }))?;
        let created = nss.create(&PostParams::default(), &ns).await?;
        let name = created.metadata.name.unwrap_or_default();
        // The service-account controller must have made `default` before pods can be created.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_until(Duration::from_secs(30), || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await.ok().flatten().is_some() }
        })
        .await;
        Ok(TempNamespace { name, client: client.clone() })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), self.name.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let nss: Api<Namespace> = Api::all(client);
                let _ = nss.delete(&name, &DeleteParams::default()).await;
            });
        }
    }
}
