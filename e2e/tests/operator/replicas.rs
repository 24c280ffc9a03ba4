//! A Registry of several replicas on S3 and PostgreSQL: served through its Service while pods
//! are deleted, rolled and scaled.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

use berth_registry::storage::s3::testing::{Minio, SECRET as MINIO_SECRET, USER as MINIO_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_s3_and_postgres_serve_and_scale() {
    // Pods run as processes here, so they reach a MinIO on loopback.
    let minio_dir = tempfile::tempdir().unwrap();
    let minio_bin = berth_e2e::tool("minio", "MINIO_VERSION").unwrap();
    let minio = Minio::start(&minio_bin, minio_dir.path()).await.expect("MinIO starts");
    minio.bucket("berth").unwrap();
    let db = berth_registry::meta::postgres::testing::TestDatabase::create().await;
    let cp = Arc::new(cluster().await);
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "s3").await.unwrap();
    run(cp.kubectl().unwrap().args(["-n", &ns.name, "create", "secret", "generic", "berth-s3"]).args([
        format!("--from-literal=accessKeyId={MINIO_USER}"),
        format!("--from-literal=secretAccessKey={MINIO_SECRET}"),
    ]));
    run(cp
        .kubectl()
        .unwrap()
        .args(["-n", &ns.name, "create", "secret", "generic", "berth-db"])
        .arg(format!("--from-literal=uri={}", db.url)));
    // The database serves TLS from a CA of its own: the replicas verify it (verify-full).
    let ca = berth_registry::meta::postgres::testing::server_ca().expect("the test database serves TLS");
    run(cp
        .kubectl()
        .unwrap()
        .args(["-n", &ns.name, "create", "secret", "generic", "berth-db-ca"])
        .arg(format!("--from-file=ca.crt={}", ca.display())));
    let registry = REGISTRY.replace(
        "  storage:\n    filesystem:\n      size: 2Gi\n",
        &format!(
            "  replicas: 3\n  storage:\n    s3:\n      bucket: berth\n      prefix: hub\n      endpoint: {}\n      pathStyle: true\n      credentialsSecret: berth-s3\n  database:\n    postgres:\n      urlSecret: {{name: berth-db, key: uri}}\n      caSecret: berth-db-ca\n",
            minio.url
        ),
    );
    assert!(registry.contains("postgres:"), "{registry}");
    let out = kubectl_apply(&cp, &ns.name, &registry);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "hub", "Ready", "True", Duration::from_secs(240)).await,
        "Registry Ready with 3 of 3 replicas (each /readyz reaches the bucket and the database)\n{}",
        debug(&cp)
    );
    let status = regs.get("hub").await.unwrap().data["status"].clone();
    assert_eq!(
        (status["effective"]["storage"].as_str(), status["readyReplicas"].as_i64()),
        (Some("s3"), Some(3))
    );

    let image = layout();
    let dest = format!("docker://hub.{}.svc.cluster.local:5000/team/app:v1", ns.name);
    let push = skopeo_push(&cp, image.path(), &dest, &["--dest-tls-verify=false"]);
    assert!(push.status.success(), "skopeo push: {}", String::from_utf8_lossy(&push.stderr));
    let listed = run(&mut minio.s3("GET", "/berth?list-type=2&prefix=hub%2Fblobs%2F"));
    assert!(listed.contains("<Key>hub/blobs/sha256/"), "the blobs are in the bucket: {listed}");
    let (pg, _conn) = db.client().await;
    let tags: i64 = pg.query_one("SELECT count(*) FROM tags", &[]).await.unwrap().get(0);
    assert_eq!(tags, 1, "the tag is in PostgreSQL");
    // Every replica answers from the shared state: several pulls through the Service.
    for _ in 0..3 {
        let pull = skopeo_pull(&cp, &dest);
        assert!(pull.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&pull.stderr));
    }

    let service = format!("hub.{}.svc.cluster.local:5000", ns.name);
    a_pod_deleted_during_a_push_loop_loses_nothing(&cp, &client, &ns.name, &service).await;
    a_rolling_update_during_a_pull_loop_fails_no_pull(&cp, &client, &ns.name, &dest).await;
    a_rotated_database_secret_takes_effect_without_restarts(&cp, &client, &ns.name, &db, &dest).await;

    // The scale subresource: down to one and back, serving throughout what was pushed.
    for replicas in ["1", "3"] {
        run(cp.kubectl().unwrap().args(["-n", &ns.name, "scale", "registry/hub", "--replicas", replicas]));
        let want = replicas.parse::<i64>().unwrap();
        let scaled = wait_until(Duration::from_secs(180), || {
            let regs = regs.clone();
            async move {
                let s = regs.get("hub").await.map(|r| r.data["status"].clone()).unwrap_or_default();
                s["readyReplicas"].as_i64() == Some(want) && s["replicas"].as_i64() == Some(want)
            }
        })
        .await;
        assert!(scaled, "scaled to {replicas}\n{}", debug(&cp));
        let pull = skopeo_pull(&cp, &dest);
        assert!(pull.status.success(), "pull at {replicas}: {}", String::from_utf8_lossy(&pull.stderr));
    }

    // A Registry whose bucket refuses its secret says so in its status, in the store's words,
    // and is Stalled rather than silently not ready.
    run(cp.kubectl().unwrap().args(["-n", &ns.name, "create", "secret", "generic", "berth-s3-wrong"]).args(
        [
            format!("--from-literal=accessKeyId={MINIO_USER}"),
            "--from-literal=secretAccessKey=not-the-secret".to_owned(),
        ],
    ));
    let broken = registry
        .replace("name: hub", "name: broken")
        .replace("replicas: 3", "replicas: 1")
        .replace("credentialsSecret: berth-s3", "credentialsSecret: berth-s3-wrong");
    let out = kubectl_apply(&cp, &ns.name, &broken);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_condition(&regs, "broken", "StorageReady", "False", Duration::from_secs(180)).await,
        "StorageReady=False for a refused secret\n{}",
        debug(&cp)
    );
    let b = regs.get("broken").await.unwrap();
    let (_, reason, message) = condition(&b, "StorageReady").unwrap();
    assert_eq!(reason, "CredentialsRefused", "{message}");
    assert!(message.starts_with("broken-0: "), "{message}");
    assert_eq!(condition(&b, "DatabaseReady").map(|c| c.0), Some("True".into()), "the database is fine");
    assert_eq!(
        condition(&b, "Stalled").map(|c| (c.0, c.1)),
        Some(("True".into(), "StorageUnavailable".into()))
    );
}

/// What a client loop did: how many runs, and each run that failed after the client's own retries.
struct LoopReport {
    runs: usize,
    failures: Vec<String>,
}

/// Runs `step(i)` for i = 0, 1, … on a blocking thread until `stop` is set, at most `MAX_RUNS`
/// times and a moment apart (so the bound outlasts any rollout here); `done` counts the runs
/// that succeeded.
fn client_loop(
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    step: impl Fn(usize) -> std::process::Output + Send + 'static,
) -> tokio::task::JoinHandle<LoopReport> {
    const MAX_RUNS: usize = 1000;
    tokio::task::spawn_blocking(move || {
        let mut report = LoopReport { runs: 0, failures: Vec::new() };
        while !stop.load(Ordering::Relaxed) && report.runs < MAX_RUNS {
            let out = step(report.runs);
            if out.status.success() {
                done.fetch_add(1, Ordering::Relaxed);
            } else {
                report.failures.push(format!(
                    "run {}: {}",
                    report.runs,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            report.runs += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        report
    })
}

/// skopeo's own retries: what "a client's ordinary retry" means here.
const RETRIES: &[&str] = &["--retry-times", "3"];

async fn statefulset(client: &kube::Client, ns: &str) -> serde_json::Value {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    sts.get("hub").await.map(|s| serde_json::to_value(s.status).unwrap_or_default()).unwrap_or_default()
}

/// Every replica of the StatefulSet ready and at the newest revision.
async fn rolled_out(client: &kube::Client, ns: &str) -> bool {
    let s = statefulset(client, ns).await;
    s["readyReplicas"].as_i64() == Some(3)
        && s["updatedReplicas"].as_i64() == Some(3)
        && s["currentRevision"] == s["updateRevision"]
}

/// Pushes of fresh images run while one replica is deleted: the replica drains (not ready
/// first, requests in flight finish), the others take its clients, and every push lands.
async fn a_pod_deleted_during_a_push_loop_loses_nothing(
    cp: &Arc<ControlPlane>,
    client: &kube::Client,
    ns: &str,
    service: &str,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let old_uid = pods.get("hub-1").await.unwrap().metadata.uid;
    let (stop, pushed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (c, svc) = (cp.clone(), service.to_owned());
    let pushes = client_loop(stop.clone(), pushed.clone(), move |i| {
        let image = layout();
        let dest = format!("docker://{svc}/team/churn:p{i}");
        let flags = [&["--dest-tls-verify=false"], RETRIES].concat();
        skopeo_push(&c, image.path(), &dest, &flags)
    });
    let started =
        wait_until(Duration::from_secs(120), || async { pushed.load(Ordering::Relaxed) >= 1 }).await;
    assert!(started, "a first push landed");
    run(cp.kubectl().unwrap().args(["-n", ns, "delete", "pod", "hub-1", "--wait=false"]));
    let replaced = wait_until(Duration::from_secs(180), || async {
        let p = pods.get("hub-1").await.ok();
        p.as_ref().is_some_and(|p| p.metadata.uid != old_uid && pod_ready(p)) && rolled_out(client, ns).await
    })
    .await;
    assert!(replaced, "hub-1 replaced and ready\n{}", debug(cp));
    // A few more pushes with all three replicas back, then stop.
    let after = pushed.load(Ordering::Relaxed) + 2;
    let more =
        wait_until(Duration::from_secs(120), || async { pushed.load(Ordering::Relaxed) >= after }).await;
    stop.store(true, Ordering::Relaxed);
    let report = pushes.await.unwrap();
    eprintln!("push loop across the pod's deletion: {} pushes", report.runs);
    assert!(more, "pushes go on after the replica returned");
    assert!(
        report.failures.is_empty(),
        "{} of {} pushes failed: {:#?}",
        report.failures.len(),
        report.runs,
        report.failures
    );
    // Everything pushed is there, whole, through any replica.
    for i in 0..report.runs {
        let pull = skopeo_pull(cp, &format!("docker://{service}/team/churn:p{i}"));
        assert!(pull.status.success(), "churn:p{i}: {}", String::from_utf8_lossy(&pull.stderr));
    }
}

/// Pulls run while a spec change rolls every replica in turn: none fails.
async fn a_rolling_update_during_a_pull_loop_fails_no_pull(
    cp: &Arc<ControlPlane>,
    client: &kube::Client,
    ns: &str,
    image: &str,
) {
    let before = statefulset(client, ns).await["updateRevision"].clone();
    let (stop, pulled) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (c, src) = (cp.clone(), image.to_owned());
    let pulls = client_loop(stop.clone(), pulled.clone(), move |_| {
        let back = tempfile::tempdir().unwrap();
        c.in_cluster_dns("skopeo")
            .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
            .args(RETRIES)
            .arg(&src)
            .arg(format!("oci:{}:v1", back.path().display()))
            .output()
            .unwrap()
    });
    let started = wait_until(Duration::from_secs(60), || async { pulled.load(Ordering::Relaxed) >= 1 }).await;
    assert!(started, "a first pull");
    // One more variable beside the pod-IP ones (a JSON patch appends; a merge patch would
    // replace the list).
    let patch = r#"[{"op":"add","path":"/spec/env/-","value":{"name":"BERTH_E2E_ROLL","value":"1"}}]"#;
    run(cp.kubectl().unwrap().args(["-n", ns, "patch", "registry", "hub", "--type", "json", "-p", patch]));
    let rolling = wait_until(Duration::from_secs(60), || async {
        statefulset(client, ns).await["updateRevision"] != before
    })
    .await;
    assert!(rolling, "the spec change rolls the StatefulSet");
    let rolled = wait_until(Duration::from_secs(300), || rolled_out(client, ns)).await;
    stop.store(true, Ordering::Relaxed);
    let report = pulls.await.unwrap();
    eprintln!("pull loop across the rolling update: {} pulls", report.runs);
    assert!(rolled, "every replica replaced\n{}", debug(cp));
    assert!(
        report.failures.is_empty(),
        "{} of {} pulls failed: {:#?}",
        report.failures.len(),
        report.runs,
        report.failures
    );
    assert!(report.runs >= 3, "pulls ran throughout the rollout: {}", report.runs);
}

/// The database URL in its Secret is rotated (to another role) while the replicas run: the kubelet
/// updates the mounted file, each replica re-reads it and moves its pool to the new role, and no
/// pod restarts.
async fn a_rotated_database_secret_takes_effect_without_restarts(
    cp: &Arc<ControlPlane>,
    client: &kube::Client,
    ns: &str,
    db: &berth_registry::meta::postgres::testing::TestDatabase,
    image: &str,
) {
    let (pg, _conn) = db.client().await;
    let url = db.url.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let running = || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/name=berth")).await.unwrap();
        let mut ids: Vec<(String, Option<String>, i32)> = list
            .items
            .iter()
            .map(|p| {
                let restarts = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (p.metadata.name.clone().unwrap_or_default(), p.metadata.uid.clone(), restarts)
            })
            .collect();
        ids.sort();
        ids
    };
    let before = running().await;
    assert_eq!(before.len(), 3, "{before:?}");
    pg.batch_execute("CREATE ROLE berth_rotated LOGIN SUPERUSER").await.unwrap();
    let rotated = url.replacen("://berth@", "://berth_rotated@", 1);
    assert_ne!(rotated, url, "the test database's URL names the role berth");
    let patch = serde_json::json!({"stringData": {"uri": rotated}}).to_string();
    run(cp
        .kubectl()
        .unwrap()
        .args(["-n", ns, "patch", "secret", "berth-db", "--type", "merge", "-p", &patch]));
    // Every replica's pooled connections (named `berth/s<schema>` to the server) move to the
    // new role.
    let moved = wait_until(Duration::from_secs(120), || async {
        let count = |role: &'static str| {
            let pg = &pg;
            async move {
                pg.query_one(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE usename = $1 AND datname = current_database()
                   AND application_name ~ '^berth/s[0-9]+$'",
                    &[&role],
                )
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(-1)
            }
        };
        count("berth").await == 0 && count("berth_rotated").await >= 1
    })
    .await;
    assert!(moved, "the replicas connect with the rotated URL\n{}", debug(cp));
    let pull = skopeo_pull(cp, image);
    assert!(pull.status.success(), "pull after the rotation: {}", String::from_utf8_lossy(&pull.stderr));
    assert_eq!(running().await, before, "the same pods, not restarted");
}
