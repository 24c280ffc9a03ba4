//! Who may pull: proxy caches with upstream credentials, users and robots, and the pull secrets
//! the operator writes into namespaces.

use super::*;

/// CNCF Distribution with one htpasswd user, on a loopback port: the upstream a ProxyCache mirrors.
pub(super) struct Upstream {
    pub(super) url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Upstream {
    pub(super) async fn start(user: &str, password: &str) -> Upstream {
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

pub(super) fn proxy_caches(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("berth.dev", "v1alpha1", "ProxyCache");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

pub(super) fn credentials(password: &str) -> String {
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
pub(super) fn users_secret(cp: &ControlPlane, ns: &str) {
    let users = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: users\nstringData:\n  htpasswd: |\n    alice:{}\n",
        bcrypt::hash("alice-pw", 5).unwrap()
    );
    assert!(kubectl_apply(cp, ns, &users).status.success());
}

/// crane, at the version `scripts/tools.sh` builds.
pub(super) fn crane() -> PathBuf {
    let version = include_str!("../../../scripts/tools.sh")
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
