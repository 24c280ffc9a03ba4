//! Starting and stopping the control plane.
//!
//! Every process gets free loopback ports (`ports.rs`; a component that loses its port anyway is
//! started again) and lives under one temp directory; `Drop` stops them all
//! (and any pod process the kubelet left), also when a test panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::kubelet::provisioner::{PROVISIONER, STORAGE_CLASS};
use crate::pki::{self, Ca, Pair};
use crate::ports::Picker;
use crate::support::poll_until;
use crate::tools::{cache_dir, version};

/// The process kubelet's node name and the StorageClass it provisions.
pub const NODE_NAME: &str = "berth-node";

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start the process kubelet (binary path), mapping images to local binaries.
    pub kubelet: Option<KubeletBinary>,
    /// Keep the state directory here instead of a temp dir (for `make demo`).
    pub state_dir: Option<PathBuf>,
    /// Where the components' loopback ports come from.
    pub ports: Picker,
}

#[derive(Debug, Clone)]
pub struct KubeletBinary {
    pub path: PathBuf,
    /// `name=path` pairs: the binaries a Berth image provides.
    pub binaries: Vec<(String, PathBuf)>,
}

struct Proc {
    name: &'static str,
    child: Child,
}

pub struct ControlPlane {
    pub dir: PathBuf,
    pub network: crate::network::NetworkLease,
    _temp: Option<tempfile::TempDir>,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub hosts_file: PathBuf,
    pub ca: Pair,
    procs: Vec<Proc>,
}

/// Starts of one step when a component loses its port to another process (see `ports.rs`).
const START_ATTEMPTS: usize = 3;
/// Lines of a component's log that an error shows (its directory goes when the cluster does).
const LOG_TAIL_LINES: usize = 20;

/// The longest one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How waiting for a component ended.
enum Wait {
    Ready,
    Exited { name: &'static str, port_taken: bool },
    TimedOut,
}

fn tool(dir: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = cache_dir().join(dir).join("bin").join(name);
    if !path.is_file() {
        bail!("{} is missing: run `bash e2e/k8s-tools.sh` (or `make e2e-tools`)", path.display());
    }
    Ok(path)
}

pub fn k8s_bin(name: &str) -> anyhow::Result<PathBuf> {
    let (version, build) = (version("K8S_VERSION").unwrap_or_default(), version("K8S_BUILD").unwrap_or("1"));
    tool(&format!("kubernetes-{version}-b{build}"), name)
}

fn etcd_bin() -> anyhow::Result<PathBuf> {
    tool(&format!("etcd-{}", version("ETCD_VERSION").unwrap_or_default()), "etcd")
}

fn kubeconfig_yaml(server: &str, ca: &Pair, user: &Pair) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth-e2e\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
         users:\n- name: user\n  user:\n    client-certificate: {}\n    client-key: {}\n\
         contexts:\n- name: berth-e2e\n  context: {{cluster: berth-e2e, user: user}}\ncurrent-context: berth-e2e\n",
        ca.cert.display(),
        user.cert.display(),
        user.key.display()
    )
}

impl ControlPlane {
    pub async fn start(opts: Options) -> anyhow::Result<ControlPlane> {
        let (dir, temp) = match &opts.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("berth-e2e-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let network = crate::network::NetworkLease::acquire()?;
        let kubernetes_ip = network.kubernetes_service_ip().to_string();
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let ca = Ca::new(&pki_dir, "berth-e2e-ca")?;
        let serving = ca.issue(
            &pki_dir,
            "apiserver",
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "localhost",
                &kubernetes_ip,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            true,
        )?;
        let admin = ca.issue(&pki_dir, "admin", "berth-e2e-admin", &["system:masters"], &[], false)?;
        let kcm = ca.issue(&pki_dir, "kcm", "system:kube-controller-manager", &[], &[], false)?;
        let (sa_key, sa_pub) = pki::service_account_keys(&pki_dir)?;
        let kubeconfig = dir.join("admin.kubeconfig");
        let kcm_kubeconfig = dir.join("kcm.kubeconfig");
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, "127.0.0.1 localhost\n")?;

        let mut cp = ControlPlane {
            dir: dir.clone(),
            network,
            _temp: temp,
            kubeconfig: kubeconfig.clone(),
            server: String::new(),
            hosts_file,
            ca: ca.pair.clone(),
            procs: Vec::new(),
        };
        let mut ports = opts.ports.clone();
        let mut retry = false;
        let start_api = |cp: &mut ControlPlane| {
            let api_port = ports.port()?;
            cp.server = format!("https://127.0.0.1:{api_port}");
            std::fs::write(&cp.kubeconfig, kubeconfig_yaml(&cp.server, &cp.ca, &admin))?;
            std::fs::write(&kcm_kubeconfig, kubeconfig_yaml(&cp.server, &cp.ca, &kcm))?;
            let etcd_url = cp.start_etcd(&mut ports, std::mem::replace(&mut retry, true))?;
            cp.start_apiserver(api_port, &etcd_url, &serving, &sa_key, &sa_pub)
        };
        let api_ready = || api_ready(kubeconfig.clone());
        cp.start_step("kube-apiserver", Duration::from_secs(120), start_api, api_ready).await?;
        let client = cp.client().await?;
        cp.storage_class(&client).await?;
        // The service-account controller creating `default` shows the controller manager works.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let start_kcm = |cp: &mut ControlPlane| {
            cp.start_controller_manager(&kcm_kubeconfig, &ca.pair, &sa_key, ports.port()?)
        };
        let kcm_up = || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await.ok().flatten().is_some() }
        };
        cp.start_step("kube-controller-manager", Duration::from_secs(90), start_kcm, kcm_up).await?;
        if let Some(kubelet) = &opts.kubelet {
            let nodes: Api<Node> = Api::all(client.clone());
            let node_ready = || {
                let nodes = nodes.clone();
                async move {
                    nodes
                        .get_opt(NODE_NAME)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|n| crate::support::node_ready(&n))
                }
            };
            let start_kubelet = |cp: &mut ControlPlane| cp.start_kubelet(kubelet);
            cp.start_step("berth-kubelet", Duration::from_secs(60), start_kubelet, node_ready).await?;
        }
        Ok(cp)
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.procs.push(Proc { name, child });
        Ok(())
    }

    /// Runs `spawn` and waits up to `within` for `ready`. If a component exits because another
    /// process took its port, this step's components are stopped and started again on fresh
    /// ports; any other exit, or a timeout, fails with the end of the log that explains it.
    async fn start_step<S, F, Fut>(
        &mut self,
        component: &'static str,
        within: Duration,
        mut spawn: S,
        mut ready: F,
    ) -> anyhow::Result<()>
    where
        S: FnMut(&mut ControlPlane) -> anyhow::Result<()>,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let before = self.procs.len();
        for attempt in 1..=START_ATTEMPTS {
            spawn(self)?;
            match self.wait_for(within, &mut ready).await {
                Wait::Ready => return Ok(()),
                Wait::Exited { name, port_taken: true } if attempt < START_ATTEMPTS => {
                    tracing::warn!(
                        component = name,
                        attempt,
                        "another process took its port: starting again"
                    );
                    while self.procs.len() > before {
                        self.stop_newest();
                    }
                }
                Wait::Exited { name, .. } => {
                    bail!(
                        "{name} exited while starting {component}; the end of its log:\n{}",
                        self.log_tail(name)
                    )
                }
                Wait::TimedOut => bail!(
                    "{component} did not become ready within {within:?}; the end of its log:\n{}",
                    self.log_tail(component)
                ),
            }
        }
        bail!("{component} lost its port {START_ATTEMPTS} times")
    }

    async fn wait_for<F, Fut>(&mut self, within: Duration, ready: &mut F) -> Wait
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let outcome = poll_until(within, || {
            // An exit is seen before the check runs; a check that hangs (a port taken by a
            // process that never answers) is cut off, so the next round sees the exit.
            let exited = self.exited();
            let check = ready();
            async move {
                match exited {
                    Some(exited) => Some(exited),
                    None => tokio::time::timeout(CHECK_TIMEOUT, check)
                        .await
                        .unwrap_or(false)
                        .then_some(Wait::Ready),
                }
            }
        })
        .await;
        outcome.unwrap_or(Wait::TimedOut)
    }

    /// The first component that has exited, if any, and whether it lost its port.
    fn exited(&mut self) -> Option<Wait> {
        let name = self.procs.iter_mut().find_map(|p| p.child.try_wait().ok().flatten().map(|_| p.name))?;
        let port_taken = self.log(name).contains("address already in use");
        Some(Wait::Exited { name, port_taken })
    }

    fn log_tail(&self, name: &str) -> String {
        let log = self.log(name);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// etcd on fresh ports; `retry` clears the data the failed start left (it records the member's
    /// old peer URL).
    fn start_etcd(&mut self, ports: &mut Picker, retry: bool) -> anyhow::Result<String> {
        let data = self.dir.join("etcd");
        if retry && data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let (client, peer) = (ports.port()?, ports.port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(etcd_bin()?);
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--name", "berth-e2e", "--log-level", "error", "--unsafe-no-fsync"])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("berth-e2e={peer_url}")]);
        self.spawn("etcd", cmd)?;
        Ok(url)
    }

    fn start_apiserver(
        &mut self,
        port: u16,
        etcd: &str,
        serving: &Pair,
        sa_key: &Path,
        sa_pub: &Path,
    ) -> anyhow::Result<()> {
        let mut cmd = Command::new(k8s_bin("kube-apiserver")?);
        cmd.args(["--etcd-servers", etcd, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--secure-port", &port.to_string()])
            .arg(format!("--tls-cert-file={}", serving.cert.display()))
            .arg(format!("--tls-private-key-file={}", serving.key.display()))
            .arg(format!("--client-ca-file={}", self.ca.cert.display()))
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!("--service-account-signing-key-file={}", sa_key.display()))
            .args(["--service-account-issuer", "https://kubernetes.default.svc.cluster.local"])
            .args(["--service-cluster-ip-range", &self.network.service_cidr()])
            .args(["--authorization-mode", "Node,RBAC", "--allow-privileged=true", "--profiling=false"])
            .args([
                "--enable-admission-plugins",
                "NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota,LimitRanger",
            ]);
        self.spawn("kube-apiserver", cmd)
    }

    fn start_controller_manager(
        &mut self,
        kubeconfig: &Path,
        ca: &Pair,
        sa_key: &Path,
        port: u16,
    ) -> anyhow::Result<()> {
        let mut cmd = Command::new(k8s_bin("kube-controller-manager")?);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", kubeconfig.display()))
            .arg(format!("--service-account-private-key-file={}", sa_key.display()))
            .arg(format!("--root-ca-file={}", ca.cert.display()))
            .arg(format!("--cluster-signing-cert-file={}", ca.cert.display()))
            .arg(format!("--cluster-signing-key-file={}", ca.key.display()))
            .args(["--use-service-account-credentials=true", "--leader-elect=false", "--controllers=*"])
            .args(["--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
            .args(["--concurrent-statefulset-syncs", "5", "--concurrent-job-syncs", "5"]);
        self.spawn("kube-controller-manager", cmd)
    }

    fn start_kubelet(&mut self, k: &KubeletBinary) -> anyhow::Result<()> {
        let mut cmd = Command::new(&k.path);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--state-dir")
            .arg(self.dir.join("kubelet"))
            .arg("--hosts-file")
            .arg(&self.hosts_file)
            .args(["--node-name", NODE_NAME])
            .args(["--pod-cidr", &self.network.pod_cidr()])
            .args(["--kubernetes-service-ip", &self.network.kubernetes_service_ip().to_string()])
            .env("RUST_LOG", std::env::var("BERTH_KUBELET_LOG").unwrap_or_else(|_| "info".into()));
        for (name, path) in &k.binaries {
            cmd.arg("--binary").arg(format!("{name}={}", path.display()));
        }
        self.spawn("berth-kubelet", cmd)
    }

    async fn storage_class(&self, client: &kube::Client) -> anyhow::Result<()> {
        let classes: Api<StorageClass> = Api::all(client.clone());
        let sc: StorageClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": true,
        }))?;
        match classes.create(&PostParams::default(), &sc).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A client with the admin's credentials.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `kubectl` against this cluster.
    pub fn kubectl(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(k8s_bin("kubectl")?);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(cmd)
    }

    /// Runs `program` so that it resolves Service DNS names as pods do: in its own mount namespace
    /// with the cluster's hosts file over /etc/hosts.
    pub fn in_cluster_dns(&self, program: &str) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(&self.hosts_file)
        .arg(program);
        cmd
    }

    /// The log of one component (for failure messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops everything, newest first: the kubelet stops its pods, then the control plane goes.
    pub fn stop(&mut self) {
        while !self.procs.is_empty() {
            self.stop_newest();
        }
        crate::kubelet::kill_leftovers(&self.dir.join("kubelet"));
    }

    fn stop_newest(&mut self) {
        let Some(mut p) = self.procs.pop() else { return };
        let pid = p.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
        let deadline =
            std::time::Instant::now() + Duration::from_secs(if p.name == "berth-kubelet" { 40 } else { 10 });
        while std::time::Instant::now() < deadline {
            if p.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
        let _ = p.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the apiserver that `kubeconfig` points at answers `/readyz` with "ok".
async fn api_ready(kubeconfig: PathBuf) -> bool {
    let Ok(kc) = Kubeconfig::read_from(&kubeconfig) else { return false };
    let Ok(config) = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await else {
        return false;
    };
    let Ok(client) = kube::Client::try_from(config) else { return false };
    client.request_text(http_get("/readyz")).await.is_ok_and(|t| t.trim() == "ok")
}

fn http_get(path: &'static str) -> http::Request<Vec<u8>> {
    let mut req = http::Request::new(Vec::new());
    *req.uri_mut() = http::Uri::from_static(path);
    req
}
