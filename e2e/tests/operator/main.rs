//! The operator end to end on the real control plane: installed with the Helm chart by real helm,
//! reconciling Registries that really serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_e2e::cluster::KubeletBinary;
use berth_e2e::support::pod_ready;
use berth_e2e::{wait_until, ControlPlane, Options, TempNamespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const IMAGE_TAG: &str = "dev";

fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().join(name)
}

fn helm() -> PathBuf {
    berth_e2e::tool("helm", "HELM_VERSION").unwrap()
}

async fn cluster() -> ControlPlane {
    let (berth, operator) = (target_bin("berth"), target_bin("berth-operator"));
    assert!(berth.is_file() && operator.is_file(), "cargo build --workspace --bins first");
    let opts = Options {
        kubelet: Some(KubeletBinary {
            path: env!("CARGO_BIN_EXE_berth-kubelet").into(),
            binaries: vec![("berth".into(), berth), ("berth-operator".into(), operator)],
        }),
        state_dir: None,
        ..Options::default()
    };
    ControlPlane::start(opts).await.expect("control plane starts")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm install` of the chart, waiting for the operator to be ready.
fn install_operator(cp: &ControlPlane) {
    install_operator_with(cp, &[]);
}

fn install_operator_with(cp: &ControlPlane, values: &[&str]) {
    run(Command::new(helm())
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args([
            "install",
            "berth",
            &format!("{ROOT}/charts/berth-operator"),
            "-n",
            "berth-system",
            "--create-namespace",
        ])
        .args([
            "--set",
            &format!("image.tag={IMAGE_TAG}"),
            "--set",
            "logFormat=text",
            // Pods share one network here (see pod_ip_env): the operator binds its pod IP too.
            "--set",
            "bindPodIP=true",
            // Secrets are not watched: drift in them is put right at each resync.
            "--set",
            "resync=10s",
            "--wait",
            "--timeout",
            "3m",
        ])
        .args(values.iter().flat_map(|v| ["--set", v])));
}

fn registries(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("berth.dev", "v1alpha1", "Registry");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn condition(o: &DynamicObject, kind: &str) -> Option<(String, String, String)> {
    let conds = o.data["status"]["conditions"].as_array()?;
    let c = conds.iter().find(|c| c["type"] == kind)?;
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str().unwrap_or("").into(),
    ))
}

async fn wait_condition(
    api: &Api<DynamicObject>,
    name: &str,
    kind: &str,
    status: &str,
    within: Duration,
) -> bool {
    wait_until(within, || {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|o| condition(&o, kind))
                .is_some_and(|c| c.0 == status)
        }
    })
    .await
}

/// Waits (up to `within`) for `name` to be `Stalled`; its reason and message.
async fn stalled(
    cp: &ControlPlane,
    api: &Api<DynamicObject>,
    name: &str,
    within: Duration,
) -> (String, String) {
    assert!(wait_condition(api, name, "Stalled", "True", within).await, "{name} Stalled\n{}", debug(cp));
    let (_, reason, message) = condition(&api.get(name).await.unwrap(), "Stalled").unwrap();
    (reason, message)
}

fn kubectl_apply(cp: &ControlPlane, ns: &str, yaml: &str) -> std::process::Output {
    kubectl_with_stdin(cp, &["apply", "-n", ns, "-f", "-"], yaml)
}

fn kubectl_with_stdin(cp: &ControlPlane, args: &[&str], yaml: &str) -> std::process::Output {
    let mut child = cp
        .kubectl()
        .unwrap()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("python3").arg(format!("{ROOT}/tests/make_oci_layout.py")).arg(dir.path()));
    dir
}

fn skopeo_push(cp: &ControlPlane, layout: &Path, dest: &str, extra: &[&str]) -> std::process::Output {
    cp.in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy"])
        .args(extra)
        .arg(format!("oci:{}:multi", layout.display()))
        .arg(dest)
        .output()
        .unwrap()
}

/// Pulls `src` (plain HTTP) into a throwaway layout.
fn skopeo_pull(cp: &ControlPlane, src: &str) -> std::process::Output {
    let back = tempfile::tempdir().unwrap();
    cp.in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false", src])
        .arg(format!("oci:{}:v1", back.path().display()))
        .output()
        .unwrap()
}

fn debug(cp: &ControlPlane) -> String {
    let pods = cp.kubectl().unwrap().args(["get", "pods,registries", "-A", "-o", "wide"]).output().unwrap();
    format!(
        "{}\noperator pods' output:\n{}\nkubelet:\n{}",
        String::from_utf8_lossy(&pods.stdout),
        operator_output(cp),
        cp.log("berth-kubelet").lines().rev().take(40).collect::<Vec<_>>().join("\n")
    )
}

fn operator_output(cp: &ControlPlane) -> String {
    let mut out = String::new();
    for log in glob(&cp.dir.join("kubelet/pods"), "output.log") {
        if let Ok(text) = std::fs::read_to_string(&log) {
            out.push_str(&format!(
                "--- {}\n{}\n",
                log.display(),
                text.lines().rev().take(15).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    out
}

fn glob(dir: &Path, file: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(glob(&p, file));
            } else if p.file_name().and_then(|f| f.to_str()) == Some(file) {
                out.push(p);
            }
        }
    }
    out
}

/// Registry reconciles the operator has finished, from its own metrics (through its Service).
async fn reconciles(client: &kube::Client) -> u64 {
    let services: Api<Service> = Api::namespaced(client.clone(), "berth-system");
    let Ok(svc) = services.get("berth-berth-operator-metrics").await else { return 0 };
    let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    let Ok(resp) = reqwest::get(format!("http://{ip}:8080/metrics")).await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("berth_operator_reconciles_total{kind=\"Registry\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `change`, then waits until the operator has completed at least one more reconcile.
async fn after_a_reconcile(client: &kube::Client, change: impl FnOnce()) {
    let before = reconciles(client).await;
    change();
    let done = wait_until(Duration::from_secs(60), || async { reconciles(client).await > before }).await;
    assert!(done, "the operator reconciled after the change");
}

/// The process kubelet's pods share one network, as `hostNetwork` pods do: so each Registry binds
/// only its own pod IP, the way a user of such a cluster would (the downward API in `spec.env`).
macro_rules! pod_ip_env {
    () => {
        "  env:\n    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n    - {name: BERTH_LISTEN, value: \"$(POD_IP):5000\"}\n    - {name: BERTH_METRICS_LISTEN, value: \"$(POD_IP):9102\"}\n"
    };
}

const REGISTRY: &str = concat!(
    "apiVersion: berth.dev/v1alpha1
kind: Registry
metadata:
  name: hub
spec:
  storage:
    filesystem:
      size: 2Gi
",
    pod_ip_env!()
);

/// A ResourceQuota `name` allowing `hard` of `resource`: how a test makes the API server refuse.
fn resource_quota(name: &str, resource: &str, hard: u32) -> String {
    format!("apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: {name}\nspec:\n  hard: {{{resource}: \"{hard}\"}}\n")
}

/// Whether the operator's ServiceAccount may `verb` Secrets (in `ns`, or in every namespace).
fn operator_may(cp: &ControlPlane, verb: &str, ns: Option<&str>) -> bool {
    let mut cmd = cp.kubectl().unwrap();
    cmd.args([
        "auth",
        "can-i",
        verb,
        "secrets",
        "--as=system:serviceaccount:berth-system:berth-berth-operator",
    ]);
    match ns {
        Some(ns) => cmd.args(["-n", ns]),
        None => cmd.arg("--all-namespaces"),
    };
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

// After the helpers: the macros above are in scope only below their definitions.
mod access;
mod failover;
mod lifecycle;
mod nodemirror;
mod replicas;
mod replication;
mod serving;
mod tls;
