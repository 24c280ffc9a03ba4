//! `berth-kubelet`: runs Berth pods as local processes. See `berth_e2e::kubelet`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_e2e::kubelet::{self, Options};
use kube::config::{KubeConfigOptions, Kubeconfig};

fn usage() -> &'static str {
    "usage: berth-kubelet --kubeconfig FILE --state-dir DIR --hosts-file FILE --pod-cidr 127.X.0.0/16 --kubernetes-service-ip IP [--node-name NAME] --binary NAME=PATH..."
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut kubeconfig = None;
    let mut opts = Options {
        node_name: berth_e2e::cluster::NODE_NAME.into(),
        state_dir: PathBuf::new(),
        hosts_file: PathBuf::new(),
        binaries: BTreeMap::new(),
        api_server: None,
        pod_range: (127, 160),
        kubernetes_service_ip: std::net::Ipv4Addr::new(127, 96, 0, 1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value\n{}", usage()));
        match a.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--state-dir" => opts.state_dir = value()?.into(),
            "--hosts-file" => opts.hosts_file = value()?.into(),
            "--node-name" => opts.node_name = value()?,
            "--pod-cidr" => {
                let v = value()?;
                let ip: std::net::Ipv4Addr = v
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("--pod-cidr {v:?}"))?;
                let [a, b, ..] = ip.octets();
                if a != 127 || !v.ends_with("/16") {
                    bail!("--pod-cidr must be a loopback /16, like 127.160.0.0/16");
                }
                opts.pod_range = (a, b);
            }
            "--kubernetes-service-ip" => {
                opts.kubernetes_service_ip = value()?.parse().context("--kubernetes-service-ip")?
            }
            "--binary" => {
                let v = value()?;
                let (name, path) =
                    v.split_once('=').with_context(|| format!("--binary {v:?}: want NAME=PATH"))?;
                opts.binaries.insert(
                    name.to_owned(),
                    std::fs::canonicalize(path).with_context(|| format!("binary {path}"))?,
                );
            }
            _ => bail!("unknown argument {a:?}\n{}", usage()),
        }
    }
    let kubeconfig = kubeconfig.context(usage())?;
    if opts.state_dir.as_os_str().is_empty() || opts.hosts_file.as_os_str().is_empty() {
        bail!(usage());
    }
    let kc = Kubeconfig::read_from(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let authority = config.cluster_url.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    opts.api_server = authority.parse().ok();
    let client = kube::Client::try_from(config)?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    };
    kubelet::run(client, opts, shutdown).await
}
