//! `spec.nodeMirror` on the real control plane: the DaemonSet's pod writes containerd's hosts
//! files into the node's directory, a real containerd reading that directory pulls
//! `docker.io/library/...` through the Registry by the image's original name — over the
//! Registry's self-signed TLS, to its cluster IP — and turning the option off takes back what was
//! written and nothing else.

use super::access::{credentials, proxy_caches, Upstream};
use super::*;
use kube::api::{Patch, PatchParams};

/// A containerd of its own (no CRI) under `dir`; killed on drop.
struct Containerd {
    socket: PathBuf,
    child: std::process::Child,
}

impl Containerd {
    async fn start(dir: &Path) -> Containerd {
        let config = dir.join("containerd.toml");
        let socket = dir.join("containerd.sock");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{1}\"\n",
                dir.display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd { socket, child };
        let up = wait_until(Duration::from_secs(20), || async { c.ctr(&["version"]).status.success() }).await;
        assert!(up, "containerd started");
        c
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "berth-e2e"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mirror_points_containerd_at_the_registry_and_takes_its_files_back() {
    // Docker Hub, as far as this test goes: it wants a login that containerd is not given, so a
    // pull that succeeds went through Berth (which has the login).
    let upstream = Upstream::start("mirror", "s3cret").await;
    let image = layout();
    let seeded = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "mirror:s3cret"])
        .arg(format!("oci:{}:multi", image.path().display()))
        .arg(format!("docker://{}/library/alpine:3.20", upstream.url.trim_start_matches("http://")))
        .output()
        .unwrap();
    assert!(seeded.status.success(), "seeding: {}", String::from_utf8_lossy(&seeded.stderr));
    let anonymous = reqwest::get(format!("{}/v2/library/alpine/manifests/3.20", upstream.url)).await.unwrap();
    assert_eq!(anonymous.status(), 401, "the upstream refuses anonymous pulls");

    // The node's directories: containerd's hosts directory, with a file someone else wrote, and
    // its config file, which names that directory.
    let node = tempfile::tempdir().unwrap();
    let hosts = node.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("example.org")).unwrap();
    let foreign = "server = \"https://example.org\"\n";
    std::fs::write(hosts.join("example.org/hosts.toml"), foreign).unwrap();
    let config_dir = node.path().join("containerd");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{}\"\n",
            hosts.display()
        ),
    )
    .unwrap();

    let cp = cluster().await;
    install_operator(&cp);
    let client = cp.client().await.unwrap();
    let ns = TempNamespace::create(&client, "mirror").await.unwrap();
    assert!(kubectl_apply(&cp, &ns.name, &credentials("s3cret")).status.success());
    let cache = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: ProxyCache\nmetadata:\n  name: hub\nspec:\n  registryRef: {{name: hub}}\n  upstream:\n    url: {}\n    credentialsSecret: upstream-login\n  prefix: docker.io\n",
        upstream.url
    );
    assert!(kubectl_apply(&cp, &ns.name, &cache).status.success());
    // Self-signed TLS: nodes reach the Registry by its cluster IP, which the certificate holds,
    // and trust the CA written beside the hosts file.
    // CRI-O's drop-in directory, and containers' certs.d where a HOME of the test's own has it.
    let crio_dir = node.path().join("registries.conf.d");
    let home = node.path().join("home");
    let crio_certs = home.join(".config/containers/certs.d");
    let registry = format!(
        "{REGISTRY}  tls: {{mode: SelfSigned}}\n  nodeMirror:\n    enabled: true\n    containerdConfigPath: {}\n    containerdConfigFile: {}\n    crio: true\n    crioConfigPath: {}\n    crioCertsPath: {}\n",
        hosts.display(),
        config_dir.join("config.toml").display(),
        crio_dir.display(),
        crio_certs.display()
    );
    let out = kubectl_apply(&cp, &ns.name, &registry);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let regs = registries(&client, &ns.name);
    assert!(
        wait_condition(&regs, "hub", "NodeMirrorReady", "True", Duration::from_secs(180)).await,
        "NodeMirrorReady\n{:?}\n{}",
        regs.get("hub").await.map(|r| r.data["status"].clone()),
        debug(&cp)
    );
    assert!(
        wait_condition(&proxy_caches(&client, &ns.name), "hub", "Ready", "True", Duration::from_secs(120))
            .await,
        "ProxyCache Ready\n{}",
        debug(&cp)
    );

    // What the pod wrote: docker.io to the Registry's cluster IP, and the Registry's own name.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let service = services.get("hub").await.unwrap().spec.unwrap();
    let (ip, port) = (service.cluster_ip.unwrap(), service.ports.unwrap()[0].port);
    let hub = std::fs::read_to_string(hosts.join("docker.io/hosts.toml")).unwrap();
    assert!(hub.starts_with(&format!("# Written by berth node-mirror for {}/hub;", ns.name)), "{hub}");
    assert!(hub.contains(&format!("server = \"{}\"", upstream.url)), "{hub}");
    assert!(hub.contains(&format!("[host.\"https://{ip}:{port}\"]")), "{hub}");
    assert!(hub.contains(&format!("ca = \"{}\"", hosts.join("docker.io/berth-ca.crt").display())), "{hub}");
    let own = hosts.join(format!("hub.{}.svc.cluster.local:{port}/hosts.toml", ns.name));
    assert!(own.is_file(), "the Registry's own name is configured");

    // A real containerd reading that directory pulls the image by its Docker Hub name.
    let state = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(state.path()).await;
    let hosts_dir = hosts.display().to_string();
    let pull =
        containerd.ctr(&["images", "pull", "--hosts-dir", &hosts_dir, "docker.io/library/alpine:3.20"]);
    assert!(
        pull.status.success(),
        "ctr pull through the mirror: {}{}",
        String::from_utf8_lossy(&pull.stdout),
        String::from_utf8_lossy(&pull.stderr)
    );
    let listed = containerd.ctr(&["images", "ls", "-q"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("docker.io/library/alpine:3.20"));

    // CRI-O's way, read by skopeo (the same containers/image library): the drop-in makes the
    // Registry docker.io's mirror, and the CA for the address it is reached by is in certs.d.
    let dropin = crio_dir.join(format!("50-berth-{}-hub.conf", ns.name));
    let ca_dir = crio_certs.join(format!("{ip}:{port}"));
    assert!(ca_dir.join("berth-ca.crt").is_file(), "the CA for {ip}:{port}");
    let inspected = Command::new("skopeo")
        .env("HOME", &home)
        .arg("--registries-conf")
        .arg(&dropin)
        .args(["inspect", "--raw", "docker://docker.io/library/alpine:3.20"])
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "skopeo through the CRI-O files: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );

    // Turned off: the DaemonSet goes, its pod takes back its files; the foreign file stays.
    let patch = serde_json::json!({"spec": {"nodeMirror": {"enabled": false}}});
    regs.patch("hub", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let gone = wait_until(Duration::from_secs(120), || {
        let (hub, own, dropin, ca_dir) =
            (hosts.join("docker.io"), own.clone(), dropin.clone(), ca_dir.clone());
        async move { !hub.exists() && !own.exists() && !dropin.exists() && !ca_dir.exists() }
    })
    .await;
    assert!(gone, "the files are removed\n{}", debug(&cp));
    assert_eq!(std::fs::read_to_string(hosts.join("example.org/hosts.toml")).unwrap(), foreign);
    let sets: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    let pruned = wait_until(Duration::from_secs(60), || {
        let sets = sets.clone();
        async move { sets.get_opt("hub-node-mirror").await.ok().flatten().is_none() }
    })
    .await;
    assert!(pruned, "the DaemonSet is gone");
    // The status is written at the end of the pass that pruned: it may trail the DaemonSet's going.
    let reported = wait_until(Duration::from_secs(60), || {
        let regs = regs.clone();
        async move { regs.get("hub").await.is_ok_and(|r| condition(&r, "NodeMirrorReady").is_none()) }
    })
    .await;
    assert!(
        reported,
        "no condition once it is off: {:?}",
        regs.get("hub").await.map(|r| r.data["status"].clone())
    );

    // In a namespace whose Pod Security level refuses the pods (they mount host directories), the
    // condition says so in the API server's words, not "see the pods' logs" of pods never made.
    run(cp.kubectl().unwrap().args([
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=baseline",
        "--overwrite",
    ]));
    let patch = serde_json::json!({"spec": {"nodeMirror": {"enabled": true}}});
    regs.patch("hub", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let refused = wait_until(Duration::from_secs(120), || {
        let regs = regs.clone();
        async move {
            let reg = regs.get("hub").await.ok();
            reg.and_then(|r| condition(&r, "NodeMirrorReady"))
                .is_some_and(|(_, reason, _)| reason == "PodsNotCreated")
        }
    })
    .await;
    assert!(refused, "NodeMirrorReady names the refusal\n{}", debug(&cp));
    let (status, _, message) = condition(&regs.get("hub").await.unwrap(), "NodeMirrorReady").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("PodSecurity"), "{message}");
}
