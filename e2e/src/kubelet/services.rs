//! Services without kube-proxy or DNS: a TCP proxy on every ClusterIP:port (ClusterIPs come from a
//! loopback /16, so they are addresses this process can listen on) forwarding to the
//! ready endpoints, and a hosts file that names every Service
//! (`<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc`, `<svc>.<ns>`) and every pod with a hostname
//! and subdomain (StatefulSet pods). Pods see that file as /etc/hosts; tests run clients with it
//! (`ControlPlane::in_cluster_dns`). Only TCP is proxied.
//!
//! Endpoints are computed here from the pods, exactly as the EndpointSlice controller selects
//! them (selector match, pod IP, Ready unless the Service publishes unready addresses), because the
//! API server refuses loopback addresses in EndpointSlices, so those stay empty in this cluster.
//! The `kubernetes` Service forwards to the API server itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

use super::context::Context;

type Endpoints = Arc<RwLock<Vec<SocketAddr>>>;

struct Listener {
    endpoints: Endpoints,
    task: tokio::task::JoinHandle<()>,
}

pub async fn run(ctx: Arc<Context>) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let svc_stream = reflector::reflector(
        svc_writer,
        watcher(Api::<Service>::all(ctx.client.clone()), watcher::Config::default()).default_backoff(),
    );
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(ctx.client.clone()), watcher::Config::default()).default_backoff(),
    );
    let api_server = ctx.opts.api_server;
    let tx1 = changed_tx.clone();
    tokio::spawn(svc_stream.for_each(move |_| {
        let _ = tx1.try_send(());
        async {}
    }));
    tokio::spawn(pod_stream.for_each(move |_| {
        let _ = changed_tx.try_send(());
        async {}
    }));
    let mut listeners: HashMap<SocketAddr, Listener> = HashMap::new();
    let mut hosts = String::new();
    loop {
        // Coalesce bursts of changes.
        if changed.recv().await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        while changed.try_recv().is_ok() {}
        let desired = desired(&svc_store, &pod_store, api_server);
        listeners.retain(|addr, l| {
            let keep = desired.proxies.contains_key(addr);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (addr, eps) in desired.proxies {
            match listeners.get(&addr) {
                Some(l) => {
                    if let Ok(mut cur) = l.endpoints.write() {
                        *cur = eps;
                    }
                }
                None => match listen(addr, eps).await {
                    Ok(l) => {
                        listeners.insert(addr, l);
                    }
                    Err(e) => tracing::warn!(address = %addr, error = %e, "cannot listen for service"),
                },
            }
        }
        if desired.hosts != hosts {
            if let Err(e) = rewrite_in_place(&ctx.opts.hosts_file, &desired.hosts) {
                tracing::warn!(error = %e, "writing the hosts file failed");
            }
            hosts = desired.hosts;
        }
    }
}

struct Desired {
    proxies: HashMap<SocketAddr, Vec<SocketAddr>>,
    hosts: String,
}

fn desired(services: &Store<Service>, pods: &Store<Pod>, api_server: Option<SocketAddr>) -> Desired {
    let pods = pods.state();
    let mut proxies = HashMap::new();
    // Service addresses first, pod addresses after: a rolling update changes only the pod lines,
    // so the bytes naming a Service stay where they were in every rewrite.
    let mut lines = vec!["127.0.0.1\tlocalhost".to_owned()];
    let mut pod_lines = Vec::new();
    let mut services = services.state();
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let names = format!("{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}");
        let spec = svc.spec.clone().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
        let unready_too = spec.publish_not_ready_addresses.unwrap_or(false);
        let members: Vec<&Pod> = match &spec.selector {
            Some(sel) if !sel.is_empty() => pods
                .iter()
                .map(|p| p.as_ref())
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|p| {
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .filter(|p| serves(p, unready_too))
                .collect(),
            _ => Vec::new(),
        };
        // Pods named under this Service (StatefulSet pods: hostname + subdomain).
        for p in &members {
            let spec = p.spec.as_ref();
            let (Some(h), Some(sub)) =
                (spec.and_then(|s| s.hostname.clone()), spec.and_then(|s| s.subdomain.clone()))
            else {
                continue;
            };
            if sub == name {
                pod_lines
                    .push(format!("{}\t{h}.{name}.{ns}.svc.cluster.local {h}.{name}.{ns}.svc", pod_ip(p)));
            }
        }
        if cluster_ip == "None" || cluster_ip.is_empty() {
            for p in &members {
                pod_lines.push(format!("{}\t{names}", pod_ip(p)));
            }
            continue;
        }
        lines.push(format!("{cluster_ip}\t{names}"));
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(addr) = format!("{cluster_ip}:{}", port.port).parse::<SocketAddr>() else { continue };
            let targets = if ns == "default" && name == "kubernetes" {
                api_server.into_iter().collect()
            } else {
                members.iter().filter_map(|p| target(p, port)).collect()
            };
            proxies.insert(addr, targets);
        }
    }
    lines.append(&mut pod_lines);
    lines.push(String::new());
    Desired { proxies, hosts: lines.join("\n") }
}

/// Rewrites the hosts file without ever leaving it empty or cut short: pods bind-mount this very
/// file, so it must stay the same inode (no rename), and a resolver reading it between a truncate
/// and a write would find no names at all. The new text is written over the old at offset 0 in one
/// call, padded with blank lines (which resolvers skip) to the old length, so the file never
/// shrinks and a reader sees either version or, at worst, a mix whose Service lines agree.
fn rewrite_in_place(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    let old_len = file.metadata()?.len() as usize;
    let mut bytes = text.as_bytes().to_vec();
    if bytes.len() < old_len {
        bytes.resize(old_len, b'\n');
    }
    file.write_all_at(&bytes, 0)
}

fn pod_ip(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

/// Whether a selected pod is an endpoint: it has an IP, is not finished or terminating, and is
/// Ready (unless the Service publishes unready addresses).
fn serves(p: &Pod, unready_too: bool) -> bool {
    let status = p.status.as_ref();
    let has_ip = status.and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty());
    let finished = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    has_ip
        && !finished
        && p.metadata.deletion_timestamp.is_none()
        && (unready_too || crate::support::pod_ready(p))
}

/// The pod address a Service port forwards to (`targetPort` by number or by container port name).
fn target(p: &Pod, port: &ServicePort) -> Option<SocketAddr> {
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            p.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    format!("{}:{number}", pod_ip(p)).parse().ok()
}

async fn listen(addr: SocketAddr, eps: Vec<SocketAddr>) -> std::io::Result<Listener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let endpoints: Endpoints = Arc::new(RwLock::new(eps));
    let shared = endpoints.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            let (shared, next) = (shared.clone(), next.clone());
            tokio::spawn(async move {
                // A Service whose endpoints are still being published is waited for briefly, so a
                // client racing a pod's readiness is not turned away; then the connection closes.
                let mut target = None;
                for _ in 0..200 {
                    let eps = shared.read().map(|e| e.clone()).unwrap_or_default();
                    if !eps.is_empty() {
                        target = Some(eps[next.fetch_add(1, Ordering::Relaxed) % eps.len()]);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let Some(target) = target else { return };
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = outbound.set_nodelay(true);
                    let _ = inbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(Listener { endpoints, task })
}

#[cfg(test)]
mod tests {
    use super::rewrite_in_place;

    /// A resolver reading the hosts file while it is rewritten (as happens on every pod change
    /// of a rolling update) must always find the Service's name.
    #[test]
    fn a_reader_never_sees_the_hosts_file_without_its_services() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let service = "127.0.0.1\tlocalhost\n10.96.0.9\thub.ns.svc.cluster.local hub.ns.svc hub.ns\n";
        let long = format!(
            "{service}127.1.0.5\thub-0.hub.ns.svc.cluster.local\n127.1.0.6\thub-1.hub.ns.svc.cluster.local\n"
        );
        rewrite_in_place(&path, &long).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let mut misses = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    if !text.contains("hub.ns.svc.cluster.local hub.ns.svc") {
                        misses += 1;
                    }
                }
                misses
            })
        };
        for i in 0..20_000 {
            rewrite_in_place(&path, if i % 2 == 0 { service } else { &long }).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reader.join().unwrap(), 0, "reads found no Service line");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&long), "the last text written is what the file holds");
    }
}
