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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installed_operator_runs_a_registry_that_serves_and_stays_put() {
    let cp = cluster().await;
    install_operator(&cp);
    // What the operator may do with Secrets, pinned: what it names, by name; never a list or a
    // watch, which would read every Secret in the cluster.
    for ns in [None, Some("kube-system"), Some("default")] {
        for verb in ["create", "get", "patch", "delete"] {
            assert!(operator_may(&cp, verb, ns), "{verb} secrets in {ns:?}");
        }
        for verb in ["list", "watch", "update", "deletecollection"] {
            assert!(!operator_may(&cp, verb, ns), "no {verb} of secrets in {ns:?}");
        }
    }
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "reg").await.unwrap();
    let out = kubectl_apply(&cp, &ns.name, REGISTRY);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "hub", "Ready", "True", Duration::from_secs(180)).await,
        "Registry Ready\n{}",
        debug(&cp)
    );
    let reg = regs.get("hub").await.unwrap();
    assert_eq!(reg.data["status"]["endpoint"], format!("hub.{}.svc:5000", ns.name));
    assert_eq!(reg.data["status"]["effective"]["storageSize"], "2Gi");
    assert_eq!(reg.data["status"]["observedGeneration"], 1);

    // skopeo pushes and pulls through the Registry's Service.
    let image = layout();
    let dest = format!("docker://hub.{}.svc.cluster.local:5000/team/app:v1", ns.name);
    let push = skopeo_push(&cp, image.path(), &dest, &["--dest-tls-verify=false"]);
    assert!(push.status.success(), "skopeo push: {}", String::from_utf8_lossy(&push.stderr));
    let pull = skopeo_pull(&cp, &dest);
    assert!(pull.status.success(), "skopeo pull: {}", String::from_utf8_lossy(&pull.stderr));

    // GitOps stability: re-applying the same YAML and letting the operator resync writes nothing.
    let versions = || async {
        let mut v = Vec::new();
        let secrets: Api<Secret> = ns.api();
        let services: Api<Service> = ns.api();
        let sets: Api<StatefulSet> = ns.api();
        for s in secrets.list(&ListParams::default()).await.unwrap() {
            v.push((format!("secret/{}", s.metadata.name.unwrap()), s.metadata.resource_version.unwrap()));
        }
        for s in services.list(&ListParams::default()).await.unwrap() {
            v.push((format!("service/{}", s.metadata.name.unwrap()), s.metadata.resource_version.unwrap()));
        }
        for s in sets.list(&ListParams::default()).await.unwrap() {
            v.push((
                format!("statefulset/{}", s.metadata.name.unwrap()),
                s.metadata.resource_version.unwrap(),
            ));
        }
        let r = regs.get("hub").await.unwrap();
        v.push(("registry/hub".into(), r.metadata.resource_version.unwrap()));
        v.sort();
        v
    };
    let before = versions().await;
    for _ in 0..3 {
        assert!(kubectl_apply(&cp, &ns.name, REGISTRY).status.success());
    }
    // An edit of a label the operator does not own triggers a full reconcile pass.
    after_a_reconcile(&client, || {
        run(cp.kubectl().unwrap().args(["label", "registry", "hub", "-n", &ns.name, "touched=yes"]));
    })
    .await;
    let mut after = versions().await;
    let mut expected = before.clone();
    // Only the Registry itself changed (the label just added).
    after.retain(|(k, _)| k != "registry/hub");
    expected.retain(|(k, _)| k != "registry/hub");
    assert_eq!(after, expected, "no child was written by the resync");
    // And what the user applied is exactly what is live: `kubectl diff` finds nothing (exit 0).
    let diff = kubectl_with_stdin(&cp, &["diff", "-n", &ns.name, "-f", "-"], REGISTRY);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    // Drift repair: deleted children come back.
    let secrets: Api<Secret> = ns.api();
    let services: Api<Service> = ns.api();
    secrets.delete("hub-config", &DeleteParams::default()).await.unwrap();
    services.delete("hub", &DeleteParams::default()).await.unwrap();
    let back = wait_until(Duration::from_secs(60), || {
        let (secrets, services) = (secrets.clone(), services.clone());
        async move {
            secrets.get_opt("hub-config").await.ok().flatten().is_some()
                && services.get_opt("hub").await.ok().flatten().is_some()
        }
    })
    .await;
    assert!(back, "deleted Secret and Service were recreated");
    // The StatefulSet too (orphaning its pod, as `kubectl delete --cascade=orphan` does, so the
    // registry keeps serving while the operator puts the set back and adopts it).
    let sets: Api<StatefulSet> = ns.api();
    let old_set = sets.get("hub").await.unwrap().metadata.uid;
    sets.delete("hub", &DeleteParams::orphan()).await.unwrap();
    let set_back = wait_until(Duration::from_secs(60), || {
        let (sets, old_set) = (sets.clone(), old_set.clone());
        async move { sets.get_opt("hub").await.ok().flatten().is_some_and(|s| s.metadata.uid != old_set) }
    })
    .await;
    assert!(set_back, "a deleted StatefulSet was recreated\n{}", debug(&cp));
    assert!(
        wait_condition(&regs, "hub", "Ready", "True", Duration::from_secs(120)).await,
        "Ready again after the StatefulSet came back\n{}",
        debug(&cp)
    );

    // Editing the spec rolls the pod (the config hash changes).
    let pods: Api<Pod> = ns.api();
    let old_uid = pods.get("hub-0").await.unwrap().metadata.uid;
    let edited = format!("{REGISTRY}  log:\n    level: debug\n");
    assert!(kubectl_apply(&cp, &ns.name, &edited).status.success());
    let rolled = wait_until(Duration::from_secs(180), || {
        let pods = pods.clone();
        let old = old_uid.clone();
        async move {
            pods.get_opt("hub-0").await.ok().flatten().is_some_and(|p| p.metadata.uid != old && pod_ready(&p))
        }
    })
    .await;
    assert!(rolled, "the pod was replaced after the spec edit\n{}", debug(&cp));

    // A larger volume grows the claim in place; the StatefulSet's template (immutable) stays.
    let grown = format!("{}  log:\n    level: debug\n", REGISTRY.replace("size: 2Gi", "size: 3Gi"));
    let out = kubectl_apply(&cp, &ns.name, &grown);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let claims: Api<PersistentVolumeClaim> = ns.api();
    let requested = |c: &PersistentVolumeClaim| {
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage").map(|q| q.0.clone()))
    };
    let grew = wait_until(Duration::from_secs(60), || async {
        claims
            .get_opt("data-hub-0")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| requested(&c).as_deref() == Some("3Gi"))
    })
    .await;
    assert!(
        grew,
        "the claim was grown to 3Gi: {:?}\n{:?}\n{}",
        claims.get_opt("data-hub-0").await.ok().flatten().map(|c| (c.spec, c.metadata.labels)),
        regs.get("hub").await.map(|r| r.data["status"].clone()),
        debug(&cp)
    );
    let sets: Api<StatefulSet> = ns.api();
    let template = sets.get("hub").await.unwrap().spec.unwrap().volume_claim_templates.unwrap();
    assert_eq!(requested(&template[0]).as_deref(), Some("2Gi"));
    let reg = regs.get("hub").await.unwrap();
    assert_eq!(condition(&reg, "Stalled").map(|c| c.0), Some("False".to_owned()), "{:?}", reg.data["status"]);

    // Deleting the Registry removes its children but keeps the volume claim.
    regs.delete("hub", &DeleteParams::default()).await.unwrap();
    let sets: Api<StatefulSet> = ns.api();
    let gone = wait_until(Duration::from_secs(90), || {
        let (sets, services) = (sets.clone(), services.clone());
        async move {
            sets.get_opt("hub").await.ok().flatten().is_none()
                && services.get_opt("hub").await.ok().flatten().is_none()
        }
    })
    .await;
    assert!(gone, "children go away by owner reference");
    let claims: Api<PersistentVolumeClaim> = ns.api();
    assert!(claims.get_opt("data-hub-0").await.unwrap().is_some(), "the data volume claim is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_registry_serves_https_to_clients_trusting_its_ca() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "tls").await.unwrap();
    let yaml = concat!(
        "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: secure\nspec:\n  tls:\n    mode: SelfSigned\n",
        pod_ip_env!()
    );
    assert!(kubectl_apply(&cp, &ns.name, yaml).status.success());
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "secure", "Ready", "True", Duration::from_secs(180)).await,
        "TLS Registry Ready\n{}",
        debug(&cp)
    );
    let reg = regs.get("secure").await.unwrap();
    let ca_secret = reg.data["status"]["tls"]["caSecretName"].as_str().unwrap().to_owned();
    let fingerprint = reg.data["status"]["tls"]["caFingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "SHA-256 as colon-separated hex");
    let secrets: Api<Secret> = ns.api();
    let ca = secrets.get(&ca_secret).await.unwrap();
    let ca_pem = ca.data.unwrap()["ca.crt"].0.clone();
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("ca.crt"), &ca_pem).unwrap();

    let image = layout();
    let dest = format!("docker://secure.{}.svc.cluster.local/team/app:v1", ns.name);
    let trusted =
        skopeo_push(&cp, image.path(), &dest, &["--dest-cert-dir", &certs.path().display().to_string()]);
    assert!(
        trusted.status.success(),
        "HTTPS push trusting the CA: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let untrusted = skopeo_push(&cp, image.path(), &dest, &[]);
    assert!(!untrusted.status.success(), "a client that does not trust the CA is refused");

    // The CA is created once: another reconcile does not replace it.
    after_a_reconcile(&client, || {
        run(cp.kubectl().unwrap().args(["annotate", "registry", "secure", "-n", &ns.name, "poke=1"]));
    })
    .await;
    let again = secrets.get(&ca_secret).await.unwrap();
    assert_eq!(again.data.unwrap()["ca.crt"].0, ca_pem);

    // Rotation: a serving certificate due for renewal is re-issued by the same CA, and the pod
    // serves the new one without a restart (the Secret volume refreshes; berth reloads it).
    let tls_secret = reg.data["status"]["tls"]["secretName"].as_str().unwrap().to_owned();
    let old_crt = secrets.get(&tls_secret).await.unwrap().data.unwrap()["tls.crt"].0.clone();
    let pods: Api<Pod> = ns.api();
    let pod_uid = pods.get("secure-0").await.unwrap().metadata.uid;
    after_a_reconcile(&client, || {
        run(cp.kubectl().unwrap().args([
            "annotate",
            "secret",
            &tls_secret,
            "-n",
            &ns.name,
            "berth.dev/not-after=1",
            "--overwrite",
        ]));
        run(cp.kubectl().unwrap().args([
            "annotate",
            "registry",
            "secure",
            "-n",
            &ns.name,
            "poke=2",
            "--overwrite",
        ]));
    })
    .await;
    let renewed = wait_until(Duration::from_secs(60), || async {
        secrets.get(&tls_secret).await.ok().and_then(|s| s.data).is_some_and(|d| d["tls.crt"].0 != old_crt)
    })
    .await;
    assert!(renewed, "the serving certificate was re-issued");
    let new_crt = secrets.get(&tls_secret).await.unwrap().data.unwrap()["tls.crt"].0.clone();
    assert_eq!(secrets.get(&ca_secret).await.unwrap().data.unwrap()["ca.crt"].0, ca_pem, "same CA");
    let fingerprint_of = |pem: &[u8]| {
        let mut child = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(pem).unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).trim().to_owned()
    };
    let want = fingerprint_of(&new_crt);
    let host = format!("secure.{}.svc.cluster.local:443", ns.name);
    let served = wait_until(Duration::from_secs(120), || {
        let (host, want) = (host.clone(), want.clone());
        let out = cp
            .in_cluster_dns("sh")
            .args(["-c", &format!("openssl s_client -connect {host} -servername {} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256", host.split(':').next().unwrap())])
            .output();
        async move { out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == want) }
    })
    .await;
    assert!(served, "the pod serves the renewed certificate\n{}", debug(&cp));
    assert_eq!(pods.get("secure-0").await.unwrap().metadata.uid, pod_uid, "without a restart");
    let after =
        skopeo_push(&cp, image.path(), &dest, &["--dest-cert-dir", &certs.path().display().to_string()]);
    assert!(after.status.success(), "clients trusting the CA still push");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_and_unprovisionable_storage_stalls() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "bad").await.unwrap();

    let too_many =
        "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: many\nspec:\n  replicas: 3\n";
    let out = kubectl_apply(&cp, &ns.name, too_many);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than one replica needs shared storage"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let two_kinds = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: two\nspec:\n  storage:\n    filesystem: {}\n    existingClaim: {name: x}\n";
    let out = kubectl_apply(&cp, &ns.name, two_kinds);
    assert!(String::from_utf8_lossy(&out.stderr).contains("set exactly one of filesystem, existingClaim, s3"));

    let sized = |size: &str| {
        format!("apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: grow\nspec:\n  storage:\n    filesystem:\n      size: {size}\n      storageClassName: does-not-exist\n")
    };
    assert!(kubectl_apply(&cp, &ns.name, &sized("5Gi")).status.success());
    let out = kubectl_apply(&cp, &ns.name, &sized("1Gi"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the volume size cannot shrink"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let switch = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: grow\nspec:\n  storage:\n    existingClaim: {name: other}\n";
    let out = kubectl_apply(&cp, &ns.name, switch);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the storage kind cannot be changed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The other two kinds are installed with their rules too.
    let bad_prefix = "apiVersion: berth.dev/v1alpha1\nkind: ProxyCache\nmetadata:\n  name: hub\nspec:\n  registryRef: {name: grow}\n  upstream: {url: https://registry-1.docker.io}\n  prefix: Docker.IO\n";
    let out = kubectl_apply(&cp, &ns.name, bad_prefix);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prefix must be one path part"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good_proxy = bad_prefix.replace("Docker.IO", "docker.io");
    assert!(kubectl_apply(&cp, &ns.name, &good_proxy).status.success());
    let no_trigger = "apiVersion: berth.dev/v1alpha1\nkind: ReplicationPolicy\nmetadata:\n  name: out\nspec:\n  source: {registryRef: {name: grow}}\n  destination: {url: https://mirror.example}\n";
    let out = kubectl_apply(&cp, &ns.name, no_trigger);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set trigger.schedule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both_ends = "apiVersion: berth.dev/v1alpha1\nkind: ReplicationPolicy\nmetadata:\n  name: out\nspec:\n  source: {registryRef: {name: grow}, url: https://x.example}\n  destination: {url: https://mirror.example}\n  trigger: {schedule: '0 * * * *'}\n";
    let out = kubectl_apply(&cp, &ns.name, both_ends);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set exactly one of registryRef and url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The StorageClass does not exist: Stalled with a reason, not an endless loop.
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "grow", "Stalled", "True", Duration::from_secs(120)).await,
        "Stalled\n{}",
        debug(&cp)
    );
    let reg = regs.get("grow").await.unwrap();
    let (_, reason, message) = condition(&reg, "Stalled").unwrap();
    assert_eq!(reason, "StorageUnavailable");
    assert!(message.contains("does-not-exist"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_lints_and_renders_manifests_valid_against_the_real_schemas() {
    let cp = cluster().await;
    run(Command::new(helm()).args(["lint", "--strict", &format!("{ROOT}/charts/berth-operator")]));
    let schemas = tempfile::tempdir().unwrap();
    run(Command::new("python3")
        .arg(format!("{ROOT}/e2e/kubeconform_schemas.py"))
        .arg("--kubectl")
        .arg(berth_e2e::cluster::k8s_bin("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["--crds", &format!("{ROOT}/crds"), "--out", &schemas.path().display().to_string()]));
    let version = berth_e2e::version("K8S_VERSION").unwrap().trim_start_matches('v').to_owned();
    for values in [
        vec![],
        vec!["--set", "serviceMonitor.enabled=false", "--set", "replicaCount=2", "--set", "crds.keep=false"],
    ] {
        let rendered = run(Command::new(helm())
            .args([
                "template",
                "berth",
                &format!("{ROOT}/charts/berth-operator"),
                "-n",
                "berth-system",
                "--kube-version",
                &version,
            ])
            .args(&values));
        let example =
            std::fs::read_to_string(format!("{ROOT}/charts/berth-operator/examples/registry.yaml")).unwrap();
        let all = format!("{rendered}\n---\n{example}");
        let location = format!(
            "{}/{{{{ .Group }}}}-{{{{ .ResourceAPIVersion }}}}-{{{{ .ResourceKind }}}}.json",
            schemas.path().display()
        );
        let mut child = Command::new(berth_e2e::tool("kubeconform", "KUBECONFORM_VERSION").unwrap())
            .args(["-strict", "-summary", "-schema-location", &location])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(all.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("Skipped: 1"),
            "kubeconform:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Invalid: 0, Errors: 0, Skipped: 0"), "{text}");
    }
}

/// What installing cert-manager adds to the API that Berth relies on: the Certificate kind.
const CERTIFICATE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_mode_stalls_without_it_and_serves_the_secret_it_issues() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "cm").await.unwrap();
    let yaml = concat!(
        "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: issued\nspec:\n  tls:\n    mode: CertManager\n    issuerRef: {name: team-ca}\n",
        pod_ip_env!()
    );
    assert!(kubectl_apply(&cp, &ns.name, yaml).status.success());
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "issued", "Stalled", "True", Duration::from_secs(90)).await,
        "Stalled without cert-manager\n{}",
        debug(&cp)
    );
    assert_eq!(condition(&regs.get("issued").await.unwrap(), "Stalled").unwrap().1, "CertManagerMissing");

    // cert-manager's Certificate kind appears: the operator asks for a certificate.
    assert!(kubectl_apply(&cp, "default", CERTIFICATE_CRD).status.success());
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let certs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let asked = wait_until(Duration::from_secs(120), || {
        let certs = certs.clone();
        async move { certs.get_opt("issued-tls").await.ok().flatten().is_some() }
    })
    .await;
    assert!(asked, "a Certificate was created\n{}", debug(&cp));
    let cert = certs.get("issued-tls").await.unwrap();
    assert_eq!(cert.data["spec"]["secretName"], "issued-tls");
    assert_eq!(cert.data["spec"]["issuerRef"]["name"], "team-ca");
    assert!(wait_condition(&regs, "issued", "Reconciling", "True", Duration::from_secs(60)).await);
    assert_eq!(condition(&regs.get("issued").await.unwrap(), "Ready").unwrap().1, "CertificatePending");

    // Issue the Secret as cert-manager would; the registry then serves HTTPS with it.
    let dir = tempfile::tempdir().unwrap();
    let ca = berth_e2e::pki::Ca::new(dir.path(), "team-ca").unwrap();
    let names: Vec<String> = cert.data["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = ca.issue(dir.path(), "issued", "issued", &[], &names, true).unwrap();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "issued-tls"},
        "stringData": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.pair.cert_pem},
    });
    assert!(kubectl_apply(&cp, &ns.name, &secret.to_string()).status.success());
    assert!(
        wait_condition(&regs, "issued", "Ready", "True", Duration::from_secs(180)).await,
        "Ready with the issued certificate\n{}",
        debug(&cp)
    );
}

/// CNCF Distribution with one htpasswd user, on a loopback port: the upstream a ProxyCache mirrors.
struct Upstream {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Upstream {
    async fn start(user: &str, password: &str) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())).unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
                dir.path().join("data").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let child = Command::new(berth_e2e::tool("registry", "DISTRIBUTION_VERSION").unwrap())
            .arg("serve")
            .arg(&config)
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(20), || {
            let probe = format!("{url}/v2/");
            async move { reqwest::get(probe).await.is_ok() }
        })
        .await;
        assert!(up, "Distribution started");
        Upstream { url, child, _dir: dir }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy_caches(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("berth.dev", "v1alpha1", "ProxyCache");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn credentials(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: upstream-login\nstringData:\n  username: mirror\n  password: {password}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cache_added_to_a_running_registry_serves_and_reports_its_credentials() {
    let upstream = Upstream::start("mirror", "s3cret").await;
    let image = layout();
    let host = upstream.url.trim_start_matches("http://").to_owned();
    let seeded = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "mirror:s3cret"])
        .arg(format!("oci:{}:multi", image.path().display()))
        .arg(format!("docker://{host}/library/alpine:3.20"))
        .output()
        .unwrap();
    assert!(seeded.status.success(), "seeding: {}", String::from_utf8_lossy(&seeded.stderr));

    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "pxc").await.unwrap();
    assert!(kubectl_apply(&cp, &ns.name, &REGISTRY.replace("name: hub", "name: mirror")).status.success());
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "mirror", "Ready", "True", Duration::from_secs(180)).await,
        "Registry Ready\n{}",
        debug(&cp)
    );

    // Added while the Registry runs: the Registry rolls to the new config and the cache is Ready.
    assert!(kubectl_apply(&cp, &ns.name, &credentials("s3cret")).status.success());
    let cache = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: ProxyCache\nmetadata:\n  name: hub\nspec:\n  registryRef: {{name: mirror}}\n  upstream:\n    url: {}\n    credentialsSecret: upstream-login\n  prefix: docker.io\n",
        upstream.url
    );
    let out = kubectl_apply(&cp, &ns.name, &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let caches = proxy_caches(&client, &ns.name);
    assert!(
        wait_condition(&caches, "hub", "Ready", "True", Duration::from_secs(180)).await,
        "ProxyCache Ready\n{:?}\n{}",
        caches.get("hub").await.map(|c| c.data["status"].clone()),
        debug(&cp)
    );
    let pc = caches.get("hub").await.unwrap();
    let endpoint = format!("mirror.{}.svc:5000", ns.name);
    assert_eq!(pc.data["status"]["pullPrefix"], format!("{endpoint}/docker.io"));
    let toml = pc.data["status"]["containerdHostsToml"].as_str().unwrap();
    assert!(toml.contains(&format!("[host.\"http://{endpoint}\"]")), "{toml}");
    assert_eq!(condition(&pc, "CredentialsValid").unwrap().1, "Accepted");
    assert_eq!(condition(&pc, "UpstreamReachable").unwrap().0, "True");

    // A client pulls the upstream's image through the Registry by the prefixed name.
    let back = tempfile::tempdir().unwrap();
    let pull = cp
        .in_cluster_dns("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://mirror.{}.svc.cluster.local:5000/docker.io/library/alpine:3.20", ns.name))
        .arg(format!("oci:{}:pulled", back.path().display()))
        .output()
        .unwrap();
    assert!(pull.status.success(), "pull through the cache: {}", String::from_utf8_lossy(&pull.stderr));

    // A wrong password in the Secret: the operator notices the Secret change and says so in the
    // upstream's words.
    assert!(kubectl_apply(&cp, &ns.name, &credentials("wrong")).status.success());
    assert!(
        wait_condition(&caches, "hub", "CredentialsValid", "False", Duration::from_secs(90)).await,
        "CredentialsValid=False\n{:?}",
        caches.get("hub").await.map(|c| c.data["status"].clone())
    );
    let pc = caches.get("hub").await.unwrap();
    let (_, reason, message) = condition(&pc, "CredentialsValid").unwrap();
    assert_eq!(reason, "Rejected");
    assert!(message.contains("authentication required"), "{message}");
    assert!(!message.contains("wrong"), "the password leaked: {message}");
    assert_eq!(condition(&pc, "Ready").unwrap().0, "False");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_auth_admits_its_users_and_robots_only() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "auth").await.unwrap();
    users_secret(&cp, &ns.name);
    let registry = concat!(
        "apiVersion: berth.dev/v1alpha1
kind: Registry
metadata:
  name: locked
spec:
  storage:
    filesystem:
      size: 1Gi
  auth:
    htpasswdSecret: users
    anonymousPull: [\"public/**\"]
    rules:
      - {users: [alice], repositories: [\"**\"], actions: [pull, push, delete]}
    robots:
      - {name: ci, repositories: [\"team/**\"], actions: [pull, push]}
",
        pod_ip_env!()
    );
    let out = kubectl_apply(&cp, &ns.name, registry);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "locked", "Ready", "True", Duration::from_secs(180)).await,
        "Registry Ready\n{}",
        debug(&cp)
    );
    // The robot's secret was generated once, beside its hash.
    let secrets: Api<Secret> = ns.api();
    let robots = secrets.get("locked-robots").await.unwrap();
    let data = robots.data.clone().unwrap();
    let robot_secret = String::from_utf8(data["ci"].0.clone()).unwrap();
    assert!(robot_secret.len() >= 40);
    assert!(bcrypt::verify(&robot_secret, std::str::from_utf8(&data["ci.bcrypt"].0).unwrap()).unwrap());
    assert!(secrets.get_opt("locked-token-key").await.unwrap().is_some());

    let image = layout();
    let host = format!("locked.{}.svc.cluster.local:5000", ns.name);
    let push = |creds: Option<String>, repo: &str| {
        let mut extra = vec!["--dest-tls-verify=false".to_owned()];
        if let Some(c) = creds {
            extra.push("--dest-creds".into());
            extra.push(c);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        skopeo_push(&cp, image.path(), &format!("docker://{host}/{repo}:v1"), &extra)
    };
    let out = push(Some(format!("ci:{robot_secret}")), "team/app");
    assert!(out.status.success(), "the robot pushes: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!push(Some(format!("ci:{robot_secret}")), "public/app").status.success(), "outside its grant");
    assert!(!push(None, "team/anon").status.success(), "anonymous pushes are refused");
    let out = push(Some("alice:alice-pw".into()), "public/app");
    assert!(out.status.success(), "alice pushes: {}", String::from_utf8_lossy(&out.stderr));
    let pull = |src: &str, creds: Option<&str>| {
        let back = tempfile::tempdir().unwrap();
        let mut cmd = cp.in_cluster_dns("skopeo");
        cmd.args(["--insecure-policy", "copy", "--src-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--src-creds", c]);
        }
        cmd.arg(format!("docker://{host}/{src}")).arg(format!("oci:{}:x", back.path().display()));
        cmd.output().unwrap().status.success()
    };
    assert!(pull("public/app:v1", None), "anonymous pulls of public/**");
    assert!(!pull("team/app:v1", None), "no anonymous pulls elsewhere");
    assert!(pull("team/app:v1", Some(&format!("ci:{robot_secret}"))));

    // Re-applying leaves the generated secrets as they were.
    let before = secrets.get("locked-robots").await.unwrap().metadata.resource_version;
    after_a_reconcile(&client, || {
        assert!(kubectl_apply(&cp, &ns.name, registry).status.success());
        run(cp.kubectl().unwrap().args(["label", "registry", "locked", "-n", &ns.name, "touched=yes"]));
    })
    .await;
    assert_eq!(secrets.get("locked-robots").await.unwrap().metadata.resource_version, before);

    // Deleting the Registry keeps the secrets it generated (retainPolicy defaults to Retain).
    regs.delete("locked", &DeleteParams::default()).await.unwrap();
    let gone = wait_until(Duration::from_secs(90), || async {
        regs.get_opt("locked").await.ok().flatten().is_none()
    })
    .await;
    assert!(gone, "the Registry went away");
    assert!(secrets.get_opt("locked-robots").await.unwrap().is_some(), "robot secrets are kept");
    assert!(secrets.get_opt("locked-token-key").await.unwrap().is_some(), "the token key is kept");
}

/// The Secret `users` with one htpasswd user, alice (password alice-pw).
fn users_secret(cp: &ControlPlane, ns: &str) {
    let users = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: users\nstringData:\n  htpasswd: |\n    alice:{}\n",
        bcrypt::hash("alice-pw", 5).unwrap()
    );
    assert!(kubectl_apply(cp, ns, &users).status.success());
}

/// crane, at the version `scripts/tools.sh` builds.
fn crane() -> PathBuf {
    let version = include_str!("../../scripts/tools.sh")
        .lines()
        .find_map(|l| l.trim().trim_start_matches('"').strip_prefix("crane|"))
        .and_then(|rest| rest.split('|').next())
        .expect("crane in scripts/tools.sh")
        .to_owned();
    berth_e2e::cache_dir().join(format!("crane-{version}/bin/crane"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_follow_namespace_labels_and_leave_with_the_registry() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "dist").await.unwrap();
    users_secret(&cp, &ns.name);
    let registry = concat!(
        "apiVersion: berth.dev/v1alpha1
kind: Registry
metadata:
  name: dist
spec:
  storage:
    filesystem:
      size: 1Gi
  auth:
    htpasswdSecret: users
  pullSecrets:
    namespaceSelector:
      matchLabels: {berth.dev/pull: \"yes\"}
    serviceAccounts: [default]
",
        pod_ip_env!()
    );
    let out = kubectl_apply(&cp, &ns.name, registry);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "dist", "Ready", "True", Duration::from_secs(180)).await,
        "Ready\n{}",
        debug(&cp)
    );
    let host = format!("dist.{}.svc.cluster.local:5000", ns.name);
    let image = layout();
    let push = skopeo_push(
        &cp,
        image.path(),
        &format!("docker://{host}/team/app:v1"),
        &["--dest-tls-verify=false", "--dest-creds", "alice:alice-pw"],
    );
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));

    let app = TempNamespace::create(&client, "app").await.unwrap();
    let later = TempNamespace::create(&client, "later").await.unwrap();
    let foreign = TempNamespace::create(&client, "foreign").await.unwrap();
    let not_ours = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dist-pull\nstringData:\n  note: mine\n";
    assert!(kubectl_apply(&cp, &foreign.name, not_ours).status.success());
    let label = |ns: &str, value: &str| {
        run(cp.kubectl().unwrap().args([
            "label",
            "namespace",
            ns,
            &format!("berth.dev/pull={value}"),
            "--overwrite",
        ]));
    };
    label(&app.name, "yes");
    label(&foreign.name, "yes");
    let secret_in = |ns: &str| {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        async move { api.get_opt("dist-pull").await.ok().flatten() }
    };
    let placed = wait_until(Duration::from_secs(60), || async { secret_in(&app.name).await.is_some() }).await;
    assert!(placed, "a pull Secret appears in the labelled namespace\n{}", debug(&cp));
    let s = secret_in(&app.name).await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));

    // crane, given nothing but that Secret's docker config, pulls the Registry's image.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.json"), &s.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let pulled = cp
        .in_cluster_dns(crane().to_str().unwrap())
        .env("DOCKER_CONFIG", home.path())
        .args(["--insecure", "manifest", &format!("{host}/team/app:v1")])
        .output()
        .unwrap();
    assert!(pulled.status.success(), "crane pull: {}", String::from_utf8_lossy(&pulled.stderr));
    let denied = cp
        .in_cluster_dns(crane().to_str().unwrap())
        .env("DOCKER_CONFIG", tempfile::tempdir().unwrap().path())
        .args(["--insecure", "manifest", &format!("{host}/team/app:v1")])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "without the Secret the pull is refused");

    // The default ServiceAccount lists it.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &app.name);
    let listed = wait_until(Duration::from_secs(60), || async {
        accounts
            .get_opt("default")
            .await
            .ok()
            .flatten()
            .is_some_and(|sa| sa.image_pull_secrets.iter().flatten().any(|r| r.name == "dist-pull"))
    })
    .await;
    assert!(listed, "the default ServiceAccount lists the pull Secret");

    // Deleted: it comes back. The foreign Secret is left alone and reported.
    let app_secrets: Api<Secret> = Api::namespaced(client.clone(), &app.name);
    app_secrets.delete("dist-pull", &DeleteParams::default()).await.unwrap();
    let back = wait_until(Duration::from_secs(60), || async { secret_in(&app.name).await.is_some() }).await;
    assert!(back, "a deleted pull Secret is recreated");
    let reported = wait_until(Duration::from_secs(60), || {
        let regs = regs.clone();
        let foreign = foreign.name.clone();
        async move {
            regs.get("dist").await.ok().is_some_and(|r| {
                r.data["status"]["pullSecrets"]["failed"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x["namespace"] == foreign.as_str()))
            })
        }
    })
    .await;
    assert!(
        reported,
        "the foreign Secret is reported: {:?}",
        regs.get("dist").await.map(|r| r.data["status"].clone())
    );
    let theirs = secret_in(&foreign.name).await.unwrap();
    assert!(theirs.data.unwrap().contains_key("note"), "the foreign Secret is untouched");

    // Selection changes: one namespace joins, one leaves (its ServiceAccount entry goes too).
    label(&later.name, "yes");
    label(&app.name, "no");
    let moved = wait_until(Duration::from_secs(60), || async {
        secret_in(&later.name).await.is_some() && secret_in(&app.name).await.is_none()
    })
    .await;
    assert!(moved, "the Secret follows the selection");
    let sa = accounts.get("default").await.unwrap();
    assert!(!sa.image_pull_secrets.iter().flatten().any(|r| r.name == "dist-pull"));

    // The Registry goes: its Secrets go everywhere; the foreign one stays.
    regs.delete("dist", &DeleteParams::default()).await.unwrap();
    let gone = wait_until(Duration::from_secs(90), || async {
        secret_in(&later.name).await.is_none() && regs.get_opt("dist").await.ok().flatten().is_none()
    })
    .await;
    assert!(gone, "pull Secrets are removed with the Registry\n{}", debug(&cp));
    assert!(secret_in(&foreign.name).await.is_some());
}

/// `berth_operator_reconciles_total` of one operator pod, read from its own metrics endpoint.
async fn pod_reconciles(pod: &Pod) -> Option<u64> {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone())?;
    let text = reqwest::get(format!("http://{ip}:8080/metrics")).await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("berth_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_elect_one_leader_and_fail_over() {
    let cp = cluster().await;
    install_operator_with(&cp, &["replicaCount=2"]);
    let client = cp.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "berth-system");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "berth-system");
    let holder = || async {
        leases.get_opt("berth-operator").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
    };
    assert!(
        wait_until(Duration::from_secs(60), || async { holder().await.is_some() }).await,
        "a leader is elected"
    );
    let leader = holder().await.unwrap();

    let ns = TempNamespace::create(&client, "ha").await.unwrap();
    let regs = registries(&client, &ns.name);
    assert!(kubectl_apply(&cp, &ns.name, REGISTRY).status.success());
    assert!(
        wait_condition(&regs, "hub", "Ready", "True", Duration::from_secs(180)).await,
        "Ready\n{}",
        debug(&cp)
    );
    // Only the leader reconciles.
    let operators =
        pods.list(&ListParams::default().labels("app.kubernetes.io/name=berth-operator")).await.unwrap();
    assert_eq!(operators.items.len(), 2, "two replicas run");
    for p in &operators.items {
        let n = pod_reconciles(p).await;
        if p.metadata.name.as_deref() == Some(leader.as_str()) {
            assert!(n.is_some_and(|n| n > 0), "the leader reconciles: {n:?}");
        } else {
            let name = p.metadata.name.clone().unwrap_or_default();
            assert_eq!(n, Some(0), "the follower {name} answers and stays idle");
        }
    }

    // The leader goes away: another replica takes the Lease and carries on.
    pods.delete(&leader, &DeleteParams::default()).await.unwrap();
    let took_over =
        wait_until(Duration::from_secs(90), || async { holder().await.is_some_and(|h| h != leader) }).await;
    assert!(took_over, "another replica holds the Lease\n{}", debug(&cp));
    let second = REGISTRY.replace("name: hub", "name: second");
    assert!(kubectl_apply(&cp, &ns.name, &second).status.success());
    assert!(
        wait_condition(&regs, "second", "Ready", "True", Duration::from_secs(180)).await,
        "the new leader reconciles\n{}",
        debug(&cp)
    );
}

/// A MinIO server of its own on loopback (pods run as processes here, so they reach it there),
/// with one bucket.
struct Minio {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

const MINIO_USER: &str = "berth-e2e";
const MINIO_SECRET: &str = "berth-e2e-secret";

impl Minio {
    async fn start(bucket: &str) -> Minio {
        let dir = tempfile::tempdir().unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, console) = (free(), free());
        let child = Command::new(berth_e2e::tool("minio", "MINIO_VERSION").unwrap())
            .args(["server", "--quiet", "--address", &format!("127.0.0.1:{port}")])
            .args(["--console-address", &format!("127.0.0.1:{console}")])
            .arg(dir.path())
            .env("MINIO_ROOT_USER", MINIO_USER)
            .env("MINIO_ROOT_PASSWORD", MINIO_SECRET)
            .env("MINIO_BROWSER", "off")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let minio = Minio { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let ready = wait_until(Duration::from_secs(30), || async {
            reqwest::get(format!("{}/minio/health/ready", minio.url))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "MinIO starts");
        run(&mut minio.s3("PUT", &format!("/{bucket}")));
        minio
    }

    /// One SigV4-signed request (curl signs it).
    fn s3(&self, method: &str, path: &str) -> Command {
        let mut c = Command::new("curl");
        c.args(["-sS", "-f", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{MINIO_USER}:{MINIO_SECRET}")])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(format!("{}{path}", self.url));
        c
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_s3_and_postgres_serve_and_scale() {
    let minio = Minio::start("berth").await;
    let db = berth_registry::meta::postgres::testing::TestDatabase::create().await;
    let cp = cluster().await;
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
