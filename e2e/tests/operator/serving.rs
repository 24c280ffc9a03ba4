//! A Registry that serves: installed by helm, refusing invalid specs, and a chart valid against
//! the real schemas (over TLS in [`super::tls`]).

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

    // Names its Service and StatefulSet could not take: 53 characters (the pods could never be
    // made), a dot, a digit first.
    let named = |name: &str| {
        format!("apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: {name}\nspec: {{}}\n")
    };
    for (name, why) in [
        ("r".repeat(53), "a Registry's name is at most 52 characters"),
        ("team.hub".to_owned(), "a Registry's name starts with a lowercase letter"),
        ("1hub".to_owned(), "a Registry's name starts with a lowercase letter"),
    ] {
        let out = kubectl_apply(&cp, &ns.name, &named(&name));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains(why), "{name}: {said}");
    }

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
    let (reason, message) = stalled(&cp, &regs, "grow", Duration::from_secs(120)).await;
    assert_eq!(reason, "StorageUnavailable");
    assert!(message.contains("does-not-exist"), "{message}");

    // The API server refuses a child (here a quota allows no NodePort): Stalled in its words,
    // and put right by the operator's next pass once the quota allows it.
    let quota = |ports| resource_quota("ports", "services.nodeports", ports);
    assert!(kubectl_apply(&cp, &ns.name, &quota(0)).status.success());
    let fenced = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: fenced\nspec:\n  service: {type: NodePort}\n";
    assert!(kubectl_apply(&cp, &ns.name, fenced).status.success());
    let (reason, message) = stalled(&cp, &regs, "fenced", Duration::from_secs(120)).await;
    assert_eq!(reason, "ChildRejected");
    assert!(message.contains("Service fenced") && message.contains("quota"), "{message}");
    assert!(kubectl_apply(&cp, &ns.name, &quota(1)).status.success());
    assert!(
        wait_condition(&regs, "fenced", "Stalled", "False", Duration::from_secs(120)).await,
        "no longer Stalled once the quota allows it\n{}",
        debug(&cp)
    );
    let services: Api<Service> = ns.api();
    assert!(services.get_opt("fenced").await.unwrap().is_some(), "the Service was made");

    // Pods the API server refuses (a quota allows no more) are the StatefulSet controller's to
    // make, not the operator's: the Registry's Ready condition says why, from that controller.
    assert!(kubectl_apply(&cp, &ns.name, &resource_quota("pods", "pods", 0)).status.success());
    let crowded = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: crowded\nspec: {}\n";
    assert!(kubectl_apply(&cp, &ns.name, crowded).status.success());
    let said = wait_until(Duration::from_secs(120), || {
        let regs = regs.clone();
        async move {
            let reg = regs.get("crowded").await.ok();
            reg.and_then(|r| condition(&r, "Ready")).is_some_and(|(_, reason, _)| reason == "PodsNotCreated")
        }
    })
    .await;
    assert!(said, "Ready says the pods were refused\n{}", debug(&cp));
    let (status, _, message) = condition(&regs.get("crowded").await.unwrap(), "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("crowded-0") && message.contains("quota"), "{message}");
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
