//! A local-path provisioner for the `berth-local` StorageClass: each claim gets a PersistentVolume
//! that is a directory under the kubelet's state directory. When a claim is deleted, the Released
//! volume and its directory are removed (reclaim policy Delete).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;

use super::context::Context;

/// The StorageClass whose claims this provisioner serves (the cluster's default).
pub const STORAGE_CLASS: &str = "berth-local";
/// Its provisioner name.
pub const PROVISIONER: &str = "berth.dev/process-kubelet";

pub async fn run(ctx: Arc<Context>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut claim_events = watcher(claims, watcher::Config::default()).boxed();
    let mut volume_events = watcher(volumes.clone(), watcher::Config::default()).boxed();
    loop {
        tokio::select! {
            Some(ev) = claim_events.next() => match ev {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                    if let Err(e) = provision(&ctx, &volumes, &c).await {
                        tracing::warn!(error = %e, "provisioning failed");
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            },
            Some(ev) = volume_events.next() => match ev {
                Ok(watcher::Event::Apply(v) | watcher::Event::InitApply(v)) => reclaim(&ctx, &volumes, &v).await,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            },
        }
    }
}

async fn provision(
    ctx: &Context,
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
) -> anyhow::Result<()> {
    let spec = claim.spec.clone().unwrap_or_default();
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    let ours = spec.storage_class_name.as_deref() == Some(STORAGE_CLASS);
    if !pending
        || !ours
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
        || claim.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let dir = ctx.opts.state_dir.join("volumes").join(&name);
    std::fs::create_dir_all(&dir)?;
    let size = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_else(|| "1Gi".into());
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": dir, "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": claim.metadata.namespace, "name": claim.metadata.name, "uid": uid},
        }
    }))?;
    match volumes.create(&PostParams::default(), &pv).await {
        Ok(_) => tracing::info!(volume = %name, "provisioned"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn reclaim(ctx: &Context, volumes: &Api<PersistentVolume>, pv: &PersistentVolume) {
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .map(String::as_str)
        == Some(PROVISIONER);
    let delete =
        pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
    if !(released && ours && delete) {
        return;
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let _ = std::fs::remove_dir_all(ctx.opts.state_dir.join("volumes").join(&name));
    if let Err(e) = volumes.delete(&name, &DeleteParams::default()).await {
        tracing::debug!(volume = %name, error = %e, "deleting released volume");
    }
}
