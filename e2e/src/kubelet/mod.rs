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

mod context;
mod env;
mod ips;
pub mod node;
pub mod pods;
pub mod probes;
pub mod provisioner;
pub mod sandbox;
pub mod services;
pub mod volumes;

use std::path::Path;
use std::sync::Arc;

pub use context::{Context, Options};
use ips::IpPool;

/// Runs until `shutdown` resolves, then stops every pod process it started.
pub async fn run(
    client: kube::Client,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(opts.state_dir.join("pids"))?;
    kill_leftovers(&opts.state_dir);
    let ips = IpPool::new(opts.pod_range);
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
