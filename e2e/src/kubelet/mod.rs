//! `berth-kubelet`: a kubelet whose "containers" are local processes of Berth's own binaries.
//!
//! ```text
//!            watch Pods ──► bind unscheduled pods to this node (it is the only one)
//!                      └──► one worker per pod on this node:
//!                             volumes as directories (Secret, ConfigMap, emptyDir, projected token,
//!                             PVC, downward API), a loopback IP (--pod-cidr), each container a
//!                             process in its own mount namespace (`sandbox`), probes, restarts,
//!                             status; SIGTERM then SIGKILL when the pod is deleted
//!   watch Services+Pods ──► a TCP proxy on every ClusterIP:port (a loopback range) and a hosts
//!                                     file naming every Service and StatefulSet pod (`services`)
//!            watch PVCs ──► a PV (a directory) for each claim of the `berth-local` class
//! ```
//! Only images whose repository is named `berth` run: the container's command picks one of the
//! binaries given with `--binary name=path` (`berth` when there is no command).

pub mod node;
pub mod pods;
pub mod probes;
pub mod provisioner;
pub mod sandbox;
pub mod services;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The provisioner name of the StorageClass this kubelet serves.
pub const PROVISIONER: &str = "berth.dev/process-kubelet";

#[derive(Debug, Clone)]
pub struct Options {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub hosts_file: PathBuf,
    /// Binary name (as a container command names it) → local path.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Where the `kubernetes` Service forwards to.
    pub api_server: Option<std::net::SocketAddr>,
    /// This cluster's pod addresses: the first two octets of a 127.x.0.0/16 range.
    pub pod_range: (u8, u8),
    /// The `kubernetes` Service's ClusterIP (given to pods as KUBERNETES_SERVICE_HOST).
    pub kubernetes_service_ip: std::net::Ipv4Addr,
}

pub struct Context {
    pub client: kube::Client,
    pub opts: Options,
    pub ips: pods::IpPool,
}

/// Runs until `shutdown` resolves, then stops every pod process it started.
pub async fn run(
    client: kube::Client,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(opts.state_dir.join("pids"))?;
    kill_leftovers(&opts.state_dir);
    let ips = pods::IpPool::new(opts.pod_range);
    let ctx = Arc::new(Context { client, opts, ips });
    node::register(&ctx).await?;
    let tasks = vec![
        tokio::spawn(node::heartbeat(ctx.clone())),
        tokio::spawn(services::run(ctx.clone())),
        tokio::spawn(provisioner::run(ctx.clone())),
    ];
    let pods = pods::Pods::new(ctx.clone());
    tokio::select! {
        r = pods.run() => r?,
        _ = shutdown => tracing::info!("stopping: terminating every pod process"),
    }
    for t in tasks {
        t.abort();
    }
    pods.stop_all().await;
    Ok(())
}

/// Kills process groups a previous kubelet recorded and did not stop (after a crash).
pub fn kill_leftovers(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("pids")) else { return };
    for e in entries.flatten() {
        if let Some(pgid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(e.path());
    }
}

pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}
