//! A Registry that serves: installed by helm, over TLS (self-signed or cert-manager), refusing
//! invalid specs, and a chart valid against the real schemas.

use super::*;

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
        vec![
            "--set",
            "serviceMonitor.enabled=false",
            "--set",
            "replicaCount=2",
            "--set",
            "crds.keep=false",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
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
