//! Pods on this node: binding, and one worker per pod.
//!
//! ```text
//! watch Pods ─► unbound: bind to this node
//!            └► ours: one [`worker`] each (volumes, containers, probes, status), told of updates
//!                     and of the delete; each container a [`process`] under supervision
//! ```

mod process;
mod status;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::context::Context;
use worker::{Msg, Worker};

struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Pods {
    ctx: Arc<Context>,
    workers: Mutex<HashMap<String, Handle>>,
}

impl Pods {
    pub fn new(ctx: Arc<Context>) -> Pods {
        Pods { ctx, workers: Mutex::new(HashMap::new()) }
    }

    pub async fn run(&self) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => self.seen(p),
                Ok(watcher::Event::Delete(p)) => self.deleted(&p),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            self.reap();
        }
        Ok(())
    }

    fn seen(&self, pod: Pod) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if node.is_empty() {
            if pod.metadata.deletion_timestamp.is_none() {
                tokio::spawn(bind(self.ctx.clone(), pod));
            }
            return;
        }
        if node != self.ctx.opts.node_name {
            return;
        }
        let Ok(mut workers) = self.workers.lock() else { return };
        if let Some(h) = workers.get(&uid) {
            let _ = h.tx.send(Msg::Update(Box::new(pod)));
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(Worker::start(self.ctx.clone(), pod, rx));
        workers.insert(uid, Handle { tx, task });
    }

    fn deleted(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Ok(workers) = self.workers.lock() {
            if let Some(h) = workers.get(&uid) {
                let _ = h.tx.send(Msg::Gone);
            }
        }
    }

    fn reap(&self) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.retain(|_, h| !h.task.is_finished());
        }
    }

    pub async fn stop_all(&self) {
        let handles: Vec<Handle> = match self.workers.lock() {
            Ok(mut w) => w.drain().map(|(_, h)| h).collect(),
            Err(_) => return,
        };
        for h in &handles {
            let _ = h.tx.send(Msg::Gone);
        }
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(35), h.task).await;
        }
    }
}

/// The scheduler's job, for the only node there is.
async fn bind(ctx: Arc<Context>, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": ctx.opts.node_name},
    });
    match api
        .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "bound"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed"),
    }
}
