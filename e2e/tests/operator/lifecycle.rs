//! Garbage collection as the operator runs it: `spec.gc` becomes a CronJob, the run annotation
//! starts a Job at once, and the status shows what the run removed — here on a real volume.

use super::*;
use crate::access;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Patch, PatchParams};

/// Blobs in the registry's store on its volume (a directory of the process kubelet).
async fn blob_files(cp: &ControlPlane, client: &kube::Client, ns: &str) -> usize {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volume = claims.get("data-hub-0").await.unwrap().spec.unwrap().volume_name.unwrap();
    let data = cp.dir.join("kubelet/volumes").join(volume);
    // Files and small objects (rows of the metadata database) both.
    berth_registry::storage::fs::stored_keys(&data.join("storage"), &data.join("meta.db"), "blobs/")
        .unwrap()
        .len()
}

/// The Job started for `value` of the run annotation, once it exists.
async fn job_for(client: &kube::Client, ns: &str, value: &str) -> Option<String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.list(&ListParams::default()).await.ok()?.items.into_iter().find_map(|j| {
        let asked = j.metadata.annotations.as_ref()?.get("berth.dev/gc-run")? == value;
        asked.then(|| j.metadata.name.clone()).flatten()
    })
}

/// Sets the run annotation of the Registry `hub` to `value`.
fn ask_for_run(cp: &ControlPlane, ns: &str, value: &str) {
    let annotation = format!("berth.dev/gc-run={value}");
    run(cp.kubectl().unwrap().args(["annotate", "--overwrite", "registry", "hub", "-n", ns, &annotation]));
}

/// Asks for a run with the annotation and waits for the status to report it; its `lastRun`.
async fn run_gc(cp: &ControlPlane, client: &kube::Client, ns: &str, value: &str) -> serde_json::Value {
    ask_for_run(cp, ns, value);
    let regs = registries(client, ns);
    let last_run = || async { regs.get("hub").await.ok().map(|r| r.data["status"]["gc"]["lastRun"].clone()) };
    let reported = wait_until(Duration::from_secs(120), || async {
        let Some(job) = job_for(client, ns, value).await else { return false };
        last_run().await.is_some_and(|last| last["job"] == job.as_str())
    })
    .await;
    let last = last_run().await.unwrap_or_default();
    assert!(reported, "the run {value:?} is reported: {last}\n{}", debug(cp));
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_spec_gc_collects_on_request_and_reports_it() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "gc").await.unwrap();
    access::users_secret(&cp, &ns.name);
    let registry = concat!(
        "apiVersion: berth.dev/v1alpha1
kind: Registry
metadata:
  name: hub
spec:
  storage:
    filesystem:
      size: 1Gi
  auth:
    htpasswdSecret: users
  gc:
    grace: 0s
    dryRun: true
    retention:
      - repositories: [\"team/drop\"]
        tags: [{match: {glob: \"*\"}, keep: {mostRecentlyPushed: 0}}]
",
        pod_ip_env!()
    );
    let out = kubectl_apply(&cp, &ns.name, registry);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "hub", "Ready", "True", Duration::from_secs(180)).await,
        "Ready\n{}",
        debug(&cp)
    );
    let crons: Api<CronJob> = ns.api();
    let cron = crons.get("hub-gc").await.expect("the GC CronJob");
    let spec = cron.spec;
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    assert!(
        pod.volumes.unwrap_or_default().iter().all(|v| v.persistent_volume_claim.is_none()),
        "no volume of the registry"
    );
    let (status, reason, _) = condition(&regs.get("hub").await.unwrap(), "GarbageCollected").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "NotRunYet"));

    // An image to keep, and a multi-arch index its retention policy untags: its bytes are garbage.
    let host = format!("hub.{}.svc.cluster.local:5000", ns.name);
    let image = layout();
    let creds = ["--dest-tls-verify=false", "--dest-creds", "alice:alice-pw"];
    let push = skopeo_push(&cp, image.path(), &format!("docker://{host}/team/keep:v1"), &creds);
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let push = cp
        .in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy", "--all"])
        .args(creds)
        .arg(format!("oci:{}:multiarch", image.path().display()))
        .arg(format!("docker://{host}/team/drop:v1"))
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let stored = blob_files(&cp, &client, &ns.name).await;
    assert_eq!(stored, 14, "multi: 5 blobs with its manifest; multiarch: 9 with its index");

    // A dry run reports what would go and removes nothing.
    let dry = run_gc(&cp, &client, &ns.name, "dry-1").await;
    assert_eq!((dry["result"].as_str(), dry["dryRun"].as_bool()), (Some("Succeeded"), Some(true)), "{dry}");
    assert_eq!((dry["tagsRemoved"].as_i64(), dry["manifestsRemoved"].as_i64()), (Some(1), Some(3)), "{dry}");
    assert_eq!(dry["blobsRemoved"], 9, "{dry}");
    assert_eq!(blob_files(&cp, &client, &ns.name).await, stored, "a dry run removes nothing");
    let (_, reason, message) = condition(&regs.get("hub").await.unwrap(), "GarbageCollected").unwrap();
    assert_eq!(reason, "DryRun", "{message}");

    // A real run gives the bytes back (and, verifying, reads every stored blob back); what stays
    // pulls whole.
    let api: Api<DynamicObject> = regs.clone();
    let patch = serde_json::json!({"spec": {"gc": {"dryRun": false, "verify": true}}});
    api.patch("hub", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let real = run_gc(&cp, &client, &ns.name, "real-1").await;
    assert_eq!(
        (real["result"].as_str(), real["dryRun"].as_bool()),
        (Some("Succeeded"), Some(false)),
        "{real}"
    );
    assert_eq!(
        (real["tagsRemoved"].as_i64(), real["manifestsRemoved"].as_i64(), real["blobsRemoved"].as_i64()),
        (Some(1), Some(3), Some(9)),
        "{real}"
    );
    assert!(real["bytesReclaimed"].as_i64().unwrap_or(0) > 0, "{real}");
    assert_eq!(
        (real["orphansRemoved"].as_i64(), real["corruptBlobs"].as_i64()),
        (Some(0), Some(0)),
        "{real}"
    );
    assert_eq!(blob_files(&cp, &client, &ns.name).await, stored - 9, "the bytes are gone from the volume");
    let (status, reason, message) = condition(&regs.get("hub").await.unwrap(), "GarbageCollected").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Collected"), "{message}");
    assert!(message.contains("removed 1 tags, 3 manifests and 9 blobs"), "{message}");
    let back = tempfile::tempdir().unwrap();
    let pull = cp
        .in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false", "--src-creds", "alice:alice-pw"])
        .arg(format!("docker://{host}/team/keep:v1"))
        .arg(format!("oci:{}:v1", back.path().display()))
        .output()
        .unwrap();
    assert!(pull.status.success(), "{}", String::from_utf8_lossy(&pull.stderr));

    // The same annotation again starts nothing new; without spec.gc the CronJob goes.
    ask_for_run(&cp, &ns.name, "real-1");
    let patch = serde_json::json!({"spec": {"gc": null}});
    api.patch("hub", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let gone = wait_until(Duration::from_secs(60), || async {
        crons.get_opt("hub-gc").await.ok().flatten().is_none()
    })
    .await;
    assert!(gone, "the CronJob is pruned with spec.gc\n{}", debug(&cp));
    let jobs: Api<Job> = ns.api();
    let asked = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("berth.dev/gc-run")));
    assert_eq!(asked.count(), 2, "one Job per value asked for");
    let cleared = wait_until(Duration::from_secs(30), || async {
        regs.get("hub").await.ok().is_some_and(|r| condition(&r, "GarbageCollected").is_none())
    })
    .await;
    assert!(cleared, "no GarbageCollected condition without spec.gc");
}
