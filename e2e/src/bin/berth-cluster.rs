//! `berth-cluster`: the local demo's engine. Starts the control plane and the process kubelet,
//! installs the operator with the Helm chart (as a user would), applies a `Registry`, waits until
//! it serves, prints how to use it, and runs until interrupted (Ctrl-C or SIGTERM), then stops
//! everything it started.
//!
//! ```text
//! berth-cluster [--state-dir DIR] [--manifest FILE]
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_e2e::cluster::KubeletBinary;
use berth_e2e::{ControlPlane, Options};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

const NAMESPACE: &str = "berth-demo";

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("no parent directory")?.join(name))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn,kube_client=off").init();
    let mut state_dir = None;
    let berth = sibling("berth")?;
    let operator = sibling("berth-operator")?;
    let mut manifest = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/registry.yaml"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().map(PathBuf::from).with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--state-dir" => state_dir = Some(value()?),
            "--manifest" => manifest = value()?,
            _ => bail!("usage: berth-cluster [--state-dir DIR] [--manifest FILE]"),
        }
    }
    for bin in [&berth, &operator] {
        if !bin.is_file() {
            bail!("{} not found: build it with `cargo build --workspace --bins`", bin.display());
        }
    }
    eprintln!("starting etcd, kube-apiserver, kube-controller-manager and berth-kubelet...");
    let kubelet = KubeletBinary {
        path: sibling("berth-kubelet")?,
        binaries: vec![("berth".into(), berth), ("berth-operator".into(), operator)],
    };
    let cp = ControlPlane::start(Options { kubelet: Some(kubelet), state_dir, ..Options::default() }).await?;
    let kubectl = |args: &[&str]| -> anyhow::Result<()> {
        let out = cp.kubectl()?.args(args).output()?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    eprintln!("installing the operator with helm...");
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/berth-operator");
    let helm = std::process::Command::new(berth_e2e::tool("helm", "HELM_VERSION")?)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args([
            "install",
            "berth",
            chart,
            "-n",
            "berth-system",
            "--create-namespace",
            "--set",
            "image.tag=dev",
            // The demo's pods share one network: the operator binds its own pod IP.
            "--set",
            "bindPodIP=true",
            "--wait",
        ])
        .output()?;
    if !helm.status.success() {
        bail!("helm install: {}", String::from_utf8_lossy(&helm.stderr));
    }
    kubectl(&["create", "namespace", NAMESPACE])?;
    kubectl(&["apply", "-n", NAMESPACE, "-f", &manifest.display().to_string()])?;
    eprintln!("waiting for the Registry to become Ready...");
    if let Err(e) =
        kubectl(&["wait", "--for=condition=Ready", "registry/registry", "-n", NAMESPACE, "--timeout=180s"])
    {
        bail!(
            "the demo Registry did not become Ready ({e}); kubelet log: {}",
            cp.dir.join("berth-kubelet.log").display()
        );
    }
    let client = cp.client().await?;
    let svc: Service = Api::namespaced(client, NAMESPACE).get("registry").await?;
    let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    println!(
        "\nBerth is running in Kubernetes.\n\n  export KUBECONFIG={kc}\n  {kubectl} get pods -n {NAMESPACE}\n\n\
         Push to it through its Service (ClusterIP {ip}, reachable from this machine):\n\n  \
         skopeo copy --dest-tls-verify=false oci:./layout:tag docker://{ip}:5000/demo/app:1\n  \
         crane --insecure catalog {ip}:5000\n\nPress Ctrl-C to stop the cluster.",
        kc = cp.kubeconfig.display(),
        kubectl = berth_e2e::cluster::k8s_bin("kubectl")?.display(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping...");
    drop(cp);
    Ok(())
}
