//! The Node object and its heartbeat (a Lease renewed every 10 s, as kubelets do), so the node
//! lifecycle controller keeps the node Ready and never evicts its pods.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::context::Context;

const FIELD_MANAGER: &str = "berth-kubelet";

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20)
}

fn status(ctx: &Context) -> serde_json::Value {
    let now = super::context::now();
    let resources = serde_json::json!({
        "cpu": cpus().to_string(), "memory": format!("{}Ki", memory_kib()), "pods": "110",
        "ephemeral-storage": "100Gi",
    });
    let cond = |t: &str, s: &str, reason: &str, msg: &str| {
        serde_json::json!({"type": t, "status": s, "reason": reason, "message": msg,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    serde_json::json!({
        "status": {
            "capacity": resources, "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": ctx.opts.node_name}],
            "conditions": [
                cond("Ready", "True", "KubeletReady", "berth-kubelet is running pods as local processes"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "memory is available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "disk is available"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "PIDs are available"),
            ],
            "nodeInfo": {
                "machineID": "berth-e2e", "systemUUID": "berth-e2e", "bootID": "berth-e2e",
                "kernelVersion": "", "osImage": "berth process kubelet",
                "containerRuntimeVersion": "berth-process://0.1",
                "kubeletVersion": crate::tools::version("K8S_VERSION").unwrap_or("v0.0.0"),
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    })
}

pub async fn register(ctx: &Context) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = &ctx.opts.node_name;
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/berth-process": ""}},
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(status(ctx))).await?;
    renew_lease(ctx).await
}

async fn renew_lease(ctx: &Context) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": ctx.opts.node_name},
        "spec": {"holderIdentity": ctx.opts.node_name, "leaseDurationSeconds": 40, "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now())},
    });
    leases
        .patch(&ctx.opts.node_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(lease))
        .await?;
    Ok(())
}

pub async fn heartbeat(ctx: Arc<Context>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if let Err(e) = renew_lease(&ctx).await {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        n += 1;
        if n.is_multiple_of(6) {
            if let Err(e) = nodes
                .patch_status(&ctx.opts.node_name, &PatchParams::default(), &Patch::Merge(status(&ctx)))
                .await
            {
                tracing::warn!(error = %e, "updating node status failed");
            }
        }
    }
}
