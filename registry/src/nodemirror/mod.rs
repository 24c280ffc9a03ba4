//! `berth node-mirror`: the process a Registry's `spec.nodeMirror` DaemonSet runs on each node.
//! Every few seconds it reads its plan (a ConfigMap the operator renders), writes containerd's
//! `hosts.toml` for each mirrored host (and a CRI-O drop-in and its CA when asked) into the node's
//! directories it has mounted, checks that containerd reads that directory, and answers
//! `/readyz` with 200, or 503 and what is wrong. On SIGTERM (the option turned off, the Registry
//! deleted, the node no longer selected, or a pod replaced) it removes what it wrote.

pub mod files;
pub mod sync;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::nodemirror::NodeMirrorPlan;
use tracing::{info, warn};

use sync::Layout;

/// How often the plan is read again and the files compared.
pub const EVERY: Duration = Duration::from_secs(5);

/// What the last round found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub problems: Vec<String>,
}

fn read_plan(path: &Path) -> Result<NodeMirrorPlan, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read the plan {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("the plan {} is not valid: {e}", path.display()))
}

/// One round: the files `plan` wants, on disk (blocking).
pub fn apply(plan: &NodeMirrorPlan) -> (Report, Vec<PathBuf>, Vec<PathBuf>) {
    let mut report = Report::default();
    let (mut written, mut removed) = (vec![], vec![]);
    let ca = match &plan.ca_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t),
            Err(e) => {
                report.problems.push(format!("cannot read the Registry's CA {}: {e}", f.display()));
                None
            }
        },
        None => None,
    };
    let mut merge = |out: sync::Outcome, report: &mut Report, files: usize| {
        report.files += files;
        report.problems.extend(out.problems);
        written.extend(out.written);
        removed.extend(out.removed);
    };
    if let Some(t) = &plan.containerd {
        let wanted = files::containerd(plan, &t.node_dir, ca.as_deref());
        let n = wanted.len();
        merge(sync::sync(&t.dir, &plan.owner, &wanted, Layout::Containerd), &mut report, n);
        if let Some(config) = &t.config_file {
            let shown = t.node_config_file.as_deref().unwrap_or(config).display().to_string();
            match std::fs::read_to_string(config) {
                Ok(text) if sync::containerd_reads(&text, &t.node_dir) => {}
                Ok(_) => report.problems.push(format!(
                    "containerd's config ({shown}) does not read hosts files from {dir}: set config_path = \"{dir}\" \
                     under [plugins.\"io.containerd.grpc.v1.cri\".registry] (containerd 1.x) and restart containerd",
                    dir = t.node_dir.display()
                )),
                Err(e) => report.problems.push(format!("cannot read containerd's config {shown}: {e}")),
            }
        }
    }
    if let Some(t) = &plan.crio {
        let wanted: Vec<_> = files::crio(plan).into_iter().collect();
        let n = wanted.len();
        merge(sync::sync(&t.dir, &plan.owner, &wanted, Layout::Crio), &mut report, n);
    }
    if let Some(t) = &plan.crio_certs {
        let wanted = files::crio_certs(plan, ca.as_deref());
        let n = wanted.len();
        merge(sync::sync(&t.dir, &plan.owner, &wanted, Layout::Containerd), &mut report, n);
    }
    for h in plan.hosts.iter().filter(|h| !files::valid_host(&h.host)) {
        report.problems.push(format!("{:?} cannot name a registry host: left out", h.host));
    }
    (report, written, removed)
}

/// Removes every file `plan`'s owner wrote in its directories (blocking).
pub fn withdraw(plan: &NodeMirrorPlan) -> Vec<PathBuf> {
    let mut removed = vec![];
    let targets = [
        (&plan.containerd, Layout::Containerd),
        (&plan.crio, Layout::Crio),
        (&plan.crio_certs, Layout::Containerd),
    ];
    for (t, layout) in targets {
        if let Some(t) = t {
            let out = sync::sync(&t.dir, &plan.owner, &[], layout);
            for p in &out.problems {
                warn!(problem = %p, "taking the node's mirror files back");
            }
            removed.extend(out.removed);
        }
    }
    removed
}

/// Runs until `stop` resolves, then removes what it wrote.
pub async fn run(
    plan_path: PathBuf,
    listener: Option<tokio::net::TcpListener>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let report = Arc::new(Mutex::new(Report { files: 0, problems: vec!["not yet looked at".into()] }));
    if let Some(l) = listener {
        let r = report.clone();
        let app = axum::Router::new().route(
            "/readyz",
            axum::routing::get(move || {
                let r = r.lock().map(|g| g.clone()).unwrap_or_default();
                async move {
                    if r.problems.is_empty() {
                        (axum::http::StatusCode::OK, format!("ok: {} files in place\n", r.files))
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, r.problems.join("\n") + "\n")
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    let mut last_plan: Option<NodeMirrorPlan> = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let path = plan_path.clone();
        let round = tokio::task::spawn_blocking(move || {
            let plan = read_plan(&path)?;
            let (report, written, removed) = apply(&plan);
            Ok::<_, String>((plan, report, written, removed))
        })
        .await;
        let new = match round {
            Ok(Ok((plan, new, written, removed))) => {
                for p in written {
                    info!(file = %p.display(), "written");
                }
                for p in removed {
                    info!(file = %p.display(), "removed");
                }
                last_plan = Some(plan);
                new
            }
            Ok(Err(problem)) => Report { files: 0, problems: vec![problem] },
            Err(e) => Report { files: 0, problems: vec![format!("the round failed: {e}")] },
        };
        if let Ok(mut r) = report.lock() {
            if r.problems != new.problems {
                for p in &new.problems {
                    warn!(problem = %p, "the node is not configured as planned");
                }
                if new.problems.is_empty() {
                    info!(files = new.files, "the node is configured as planned");
                }
            }
            *r = new;
        }
    }
    if let Some(plan) = last_plan {
        let removed = tokio::task::spawn_blocking(move || withdraw(&plan)).await.unwrap_or_default();
        info!(files = removed.len(), "stopping: the files written are removed");
    }
    Ok(())
}
