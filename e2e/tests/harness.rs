//! The harness itself, proven on the real control plane: a StatefulSet of `berth serve` behind a
//! Service becomes Ready through real probes and serves skopeo by the Service's DNS name; deleting
//! it takes the pod and its process away (owner-reference GC); Jobs succeed and fail for real; a
//! CronJob creates Jobs on schedule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use berth_e2e::cluster::KubeletBinary;
use berth_e2e::ports::Picker;
use berth_e2e::support::pod_ready;
use berth_e2e::{wait_until, ControlPlane, Options, TempNamespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};

fn berth_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<test> → target/<profile>/berth
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().join("berth")
}

async fn cluster() -> ControlPlane {
    let berth = berth_bin();
    assert!(berth.is_file(), "{} missing: cargo build --workspace --bins", berth.display());
    let opts = Options {
        kubelet: Some(KubeletBinary {
            path: env!("CARGO_BIN_EXE_berth-kubelet").into(),
            binaries: vec![("berth".into(), berth)],
        }),
        state_dir: None,
        ..Options::default()
    };
    ControlPlane::start(opts).await.expect("control plane starts")
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

const IMAGE: &str = "ghcr.io/berth-dev/berth:dev";

async fn create<K>(api: &Api<K>, v: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &obj(v)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_of_berth_serves_through_its_service_and_goes_away_with_it() {
    let cp = cluster().await;
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "harness").await.unwrap();

    // The demo's own manifest, applied the way a user would.
    let apply = cp
        .kubectl()
        .unwrap()
        .args([
            "apply",
            "-n",
            &ns.name,
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/statefulset-registry.yaml"),
        ])
        .output()
        .unwrap();
    assert!(apply.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&apply.stderr));

    let pods: Api<Pod> = ns.api();
    let ready = wait_until(Duration::from_secs(120), || {
        let pods = pods.clone();
        async move { pods.get_opt("registry-0").await.ok().flatten().is_some_and(|p| pod_ready(&p)) }
    })
    .await;
    assert!(ready, "registry-0 became Ready\nkubelet log:\n{}", cp.log("berth-kubelet"));

    // skopeo pushes and pulls through the Service's DNS name.
    let layout = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/make_oci_layout.py");
    assert!(std::process::Command::new("python3").arg(script).arg(layout.path()).status().unwrap().success());
    let host = format!("registry.{}.svc.cluster.local:5000", ns.name);
    let push = cp
        .in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.path().display()))
        .arg(format!("docker://{host}/e2e/app:v1"))
        .output()
        .unwrap();
    if !push.status.success() {
        let slices = cp
            .kubectl()
            .unwrap()
            .args(["get", "endpointslices,svc,pods", "-o", "yaml", "-n", &ns.name])
            .output()
            .unwrap();
        panic!(
            "skopeo push: {}\nhosts:\n{}\n{}\nkubelet:\n{}",
            String::from_utf8_lossy(&push.stderr),
            std::fs::read_to_string(&cp.hosts_file).unwrap_or_default(),
            String::from_utf8_lossy(&slices.stdout),
            cp.log("berth-kubelet")
        );
    }
    let back = tempfile::tempdir().unwrap();
    let pull = cp
        .in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/e2e/app:v1"))
        .arg(format!("oci:{}:v1", back.path().display()))
        .output()
        .unwrap();
    assert!(pull.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&pull.stderr));

    // The pod's process is a real berth; deleting the StatefulSet takes pod and process away.
    let pod = pods.get("registry-0").await.unwrap();
    let pid = pod.status.unwrap().container_statuses.unwrap()[0].container_id.clone().unwrap();
    let pid = pid.trim_start_matches("berth-process://").to_owned();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let sets: Api<StatefulSet> = ns.api();
    let dp =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    sets.delete("registry", &dp).await.unwrap();
    let gone = wait_until(Duration::from_secs(90), || {
        let pods = pods.clone();
        async move { pods.get_opt("registry-0").await.ok().flatten().is_none() }
    })
    .await;
    assert!(gone, "the garbage collector deleted the pod");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_and_fail_for_real_and_cronjobs_run_on_schedule() {
    let cp = cluster().await;
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "jobs").await.unwrap();
    create(
        &ns.api::<ConfigMap>(),
        serde_json::json!({
            "metadata": {"name": "good"}, "data": {"config.yaml": "listen: 127.0.0.1:5000\n"},
        }),
    )
    .await;
    let job = |name: &str, config: &str| {
        serde_json::json!({
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "check", "image": IMAGE, "args": ["check-config", config],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
                "volumes": [{"name": "cfg", "configMap": {"name": "good"}}],
            }}},
        })
    };
    let jobs: Api<Job> = ns.api();
    create(&jobs, job("passes", "/cfg/config.yaml")).await;
    create(&jobs, job("fails", "/cfg/missing.yaml")).await;
    let condition = |name: &'static str, kind: &'static str| {
        let jobs = jobs.clone();
        async move {
            jobs.get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|j| j.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
        }
    };
    assert!(
        wait_until(Duration::from_secs(120), || condition("passes", "Complete")).await,
        "exit 0 completes the Job\n{}",
        cp.log("berth-kubelet")
    );
    assert!(
        wait_until(Duration::from_secs(120), || condition("fails", "Failed")).await,
        "exit 1 fails the Job"
    );

    let cron: Api<CronJob> = ns.api();
    create(&cron, serde_json::json!({
        "metadata": {"name": "every-minute"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": job("x", "/cfg/config.yaml")["spec"].clone()}},
    }))
    .await;
    // The CronJob controller creates a Job at the next minute boundary (at most ~60 s away).
    let scheduled = wait_until(Duration::from_secs(150), || {
        let jobs = jobs.clone();
        async move {
            jobs.list(&ListParams::default()).await.is_ok_and(|l| {
                l.items.iter().any(|j| {
                    j.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "CronJob" && o.name == "every-minute")
                })
            })
        }
    })
    .await;
    assert!(scheduled, "the CronJob created a Job on schedule");
}

/// Another process may take a port between its choice and its use (see `ports.rs`): the component
/// that loses it is started again on a fresh one, and the cluster comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_whose_ports_are_taken_starts_on_others() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    // Attempt one: the apiserver and both etcd ports; attempt two: the apiserver's again.
    let opts = Options { ports: Picker::starting_with([taken; 4]), ..Options::default() };
    let cp = ControlPlane::start(opts).await.expect("control plane starts on other ports");
    assert!(!cp.server.ends_with(&format!(":{taken}")), "{}", cp.server);
    let out = cp.kubectl().unwrap().args(["get", "namespace", "default", "-o", "name"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/default");
    drop(held);
}
