//! Leader election when things go wrong, with berth-operator processes on a real API server: a
//! leader whose connection to the API server hangs stops acting before another takes over, and a
//! leader paused past its lease (SIGSTOP) acts on nothing when it wakes. In neither case do two
//! replicas reconcile at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::{wait_until, ControlPlane, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn operator_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("berth-operator");
    assert!(bin.is_file(), "{} missing: cargo build --workspace --bins first", bin.display());
    bin
}

/// One berth-operator process, its JSON log (stdout) and any error output in one file.
struct Operator {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A log line's time and message.
fn events(log: &Path) -> Vec<(k8s_openapi::jiff::Timestamp, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let at: k8s_openapi::jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
            Some((at, v["fields"]["message"].as_str()?.to_owned()))
        })
        .collect()
}

impl Operator {
    fn start(dir: &Path, kubeconfig: &Path, name: &str) -> Operator {
        let log = dir.join(format!("{name}.log"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(operator_bin())
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", "berth-system")
            .env("POD_NAME", name)
            .env("BERTH_LEADER_ELECTION", "true")
            .env("BERTH_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("BERTH_LOG_FORMAT", "json")
            .env("BERTH_LOG_LEVEL", "info,berth_operator=debug")
            .env("BERTH_RESYNC", "1s")
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Operator { name: name.into(), child, log }
    }

    fn leads_since(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        events(&self.log).into_iter().find(|(_, m)| m == "leading").map(|(t, _)| t)
    }

    fn reconciles(&self) -> Vec<k8s_openapi::jiff::Timestamp> {
        events(&self.log).into_iter().filter(|(_, m)| m == "reconciling").map(|(t, _)| t).collect()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the API server that can stall every connection it carries: bytes stop
/// moving both ways, but no connection closes (what a hung network looks like).
struct StallingProxy {
    addr: String,
    stalled: Arc<AtomicBool>,
}

impl StallingProxy {
    async fn start(upstream: String) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, flag.clone()), pipe(sr, cw, flag));
                });
            }
        });
        StallingProxy { addr, stalled }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The control plane's kubeconfig, with the server moved to `addr` (same certificate: same IP).
fn kubeconfig_via(cp: &ControlPlane, addr: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    let path = dir.join(format!("via-{}.kubeconfig", addr.replace(':', "-")));
    std::fs::write(&path, text.replace(&cp.server, &format!("https://{addr}"))).unwrap();
    path
}

async fn control_plane_with_crds() -> ControlPlane {
    let cp = ControlPlane::start(Options::default()).await.expect("control plane starts");
    let run = |args: &[&str]| {
        let out = cp.kubectl().unwrap().args(args).output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["apply", "-f", &format!("{ROOT}/crds")]);
    run(&["create", "namespace", "berth-system"]);
    run(&["create", "namespace", "work"]);
    let registry =
        "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: hub, namespace: work}\nspec: {}\n";
    let file = cp.dir.join("registry.yaml");
    std::fs::write(&file, registry).unwrap();
    // Registries to reconcile while leadership moves (no kubelet: they never get Ready, which
    // keeps the leader reconciling them every few seconds).
    let crds_ready = wait_until(Duration::from_secs(30), || async {
        cp.kubectl().unwrap().args(["apply", "-f"]).arg(&file).output().unwrap().status.success()
    })
    .await;
    assert!(crds_ready, "the Registry CRD is served");
    cp
}

/// Waits for `op` to lead, for at most `within`.
async fn wait_leading(op: &Operator, within: Duration) -> k8s_openapi::jiff::Timestamp {
    let ok = wait_until(within, || async { op.leads_since().is_some() }).await;
    assert!(ok, "{} leads:\n{}", op.name, std::fs::read_to_string(&op.log).unwrap_or_default());
    op.leads_since().unwrap()
}

/// `after`, which leads now, reconciles (its first reconcile may come a moment after it took the
/// lease), and the last reconcile of `before` ended before the first of `after`.
async fn no_overlap(before: &Operator, after: &Operator) {
    let reconciled = wait_until(Duration::from_secs(30), || async { !after.reconciles().is_empty() }).await;
    assert!(reconciled, "{} took over and reconciled", after.name);
    let (last, first) = (before.reconciles().into_iter().max(), after.reconciles().into_iter().min());
    if let (Some(last), Some(first)) = (last, first) {
        assert!(last < first, "{} reconciled at {last} after {} began at {first}", before.name, after.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_api_connection_hangs_stops_before_another_takes_over() {
    let cp = control_plane_with_crds().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = StallingProxy::start(cp.server.trim_start_matches("https://").to_owned()).await;
    let mut a = Operator::start(dir.path(), &kubeconfig_via(&cp, &proxy.addr, dir.path()), "a");
    wait_leading(&a, Duration::from_secs(60)).await;
    let b = Operator::start(dir.path(), &cp.kubeconfig, "b");
    let reconciling = wait_until(Duration::from_secs(30), || async { !a.reconciles().is_empty() }).await;
    assert!(reconciling, "the leader reconciles");

    // Every byte between the leader and the API server stops.
    proxy.stalled.store(true, Ordering::Relaxed);
    let stalled_at = Instant::now();
    let mut a_exited: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while b.leads_since().is_none() {
        assert!(Instant::now() < deadline, "b never took over");
        if a_exited.is_none() && a.exited() {
            a_exited = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b_leads = Instant::now();
    let a_exited = a_exited.expect("the stalled leader stopped before the follower took over");
    assert!(
        a_exited < b_leads,
        "a stopped ({:?}) before b led ({:?})",
        a_exited - stalled_at,
        b_leads - stalled_at
    );
    no_overlap(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_acts_on_nothing_when_it_wakes() {
    let cp = control_plane_with_crds().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Operator::start(dir.path(), &cp.kubeconfig, "a");
    wait_leading(&a, Duration::from_secs(60)).await;
    let b = Operator::start(dir.path(), &cp.kubeconfig, "b");
    let reconciling = wait_until(Duration::from_secs(30), || async { !a.reconciles().is_empty() }).await;
    assert!(reconciling, "the leader reconciles");

    a.signal("-STOP");
    wait_leading(&b, Duration::from_secs(90)).await;
    let b_reconciled = wait_until(Duration::from_secs(30), || async { !b.reconciles().is_empty() }).await;
    assert!(b_reconciled, "the new leader reconciles");
    let paused_reconciles = a.reconciles().len();

    // a wakes with work queued and a lease it lost long ago: it must act on none of it.
    a.signal("-CONT");
    let stopped = wait_until(Duration::from_secs(30), || async {
        events(&a.log).iter().any(|(_, m)| m.contains("not renewed within the renew deadline"))
    })
    .await;
    assert!(
        stopped,
        "a noticed it no longer leads:\n{}",
        std::fs::read_to_string(&a.log).unwrap_or_default()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.exited() {
        assert!(Instant::now() < deadline, "a exits");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.reconciles().len(), paused_reconciles, "a reconciled nothing after waking");
    no_overlap(&a, &b).await;
}
