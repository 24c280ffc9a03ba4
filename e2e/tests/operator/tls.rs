//! A Registry over TLS: a self-signed certificate its clients trust through its CA, and
//! cert-manager's, which it waits for.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_registry_serves_https_to_clients_trusting_its_ca() {
    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "tls").await.unwrap();
    let issued = names_of_every_certificate(ns.api(), "secure-tls").await;
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
    // Nodes reach the Registry by its Service's cluster IP (the node mirror): the first
    // certificate its pods serve already holds it, not only one issued a pass later.
    let services: Api<Service> = ns.api();
    let ip = services.get("secure").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let versions = issued.lock().unwrap().clone();
    assert!(!versions.is_empty(), "the serving certificate was seen being issued");
    assert!(versions.iter().all(|names| names.split(',').any(|n| n == ip)), "{ip} in each of {versions:?}");
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

/// The names of every version of the Secret `name` from now on, as the operator recorded them
/// beside each certificate it issued (watched from before it exists, so none is missed).
async fn names_of_every_certificate(
    secrets: Api<Secret>,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use futures_util::StreamExt;
    use kube::runtime::watcher;
    use kube::ResourceExt;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(secrets, config).boxed();
    let (started, listed) = tokio::sync::oneshot::channel();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut started = Some(started);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => drop(started.take().map(|s| s.send(()))),
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    let names = s.annotations().get("berth.dev/dns-names").cloned().unwrap_or_default();
                    let mut seen = record.lock().unwrap();
                    if seen.last() != Some(&names) {
                        seen.push(names);
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), listed).await.unwrap().unwrap();
    seen
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
    assert_eq!(stalled(&cp, &regs, "issued", Duration::from_secs(90)).await.0, "CertManagerMissing");

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
    // It asks for the Service's cluster IP too, the address nodes reach by default.
    let services: Api<Service> = ns.api();
    let ip = services.get("issued").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    assert_eq!(cert.data["spec"]["ipAddresses"], serde_json::json!([ip]));
    let names: Vec<String> = cert.data["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .chain(cert.data["spec"]["ipAddresses"].as_array().unwrap())
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
