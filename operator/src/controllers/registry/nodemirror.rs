//! `spec.nodeMirror`: a ConfigMap with the plan and a DaemonSet running `berth node-mirror` on
//! every selected node (pure, like the rest of `desired`).
//!
//! ```text
//! Registry ─► ConfigMap <name>-node-mirror   plan.json: hosts to point at the Registry
//!          └► DaemonSet <name>-node-mirror   mounts the node's containerd (and CRI-O) directories
//!                                            (and containers' certs.d, for CRI-O under TLS)
//! ```
//!
//! The mirrored hosts: each active ProxyCache's prefix that names a registry host (`docker.io`,
//! `ghcr.io`; containerd sends it back as `?ns=`), and the Registry's own names (its pull
//! name and the endpoint nodes reach), so nodes pull its images by those names, over plain HTTP
//! when it has no TLS, trusting its CA when it has its own.

use std::collections::BTreeMap;

use berth_core::nodemirror::{MirroredHost, NodeMirrorPlan, Target};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Resource, ResourceExt};

use super::effective::Effective;
use crate::controllers::render::proxies::{self, ProxySource};
use crate::controllers::render::{from_json, BuildError};
use crate::crd::registry::{NodeMirrorSpec, TlsMode};
use crate::crd::Registry;
use crate::labels;

pub const DEFAULT_CONTAINERD_DIR: &str = "/etc/containerd/certs.d";
pub const DEFAULT_CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const DEFAULT_CRIO_DIR: &str = "/etc/containers/registries.conf.d";
pub const DEFAULT_CRIO_CERTS_DIR: &str = "/etc/containers/certs.d";
/// Where the pod sees what it mounts.
const PLAN_DIR: &str = "/etc/berth/node-mirror";
const CA_DIR: &str = "/etc/berth/node-mirror-ca";
const CONTAINERD_DIR: &str = "/host/containerd/certs.d";
const CONTAINERD_CONFIG_DIR: &str = "/host/containerd/config";
const CRIO_DIR: &str = "/host/crio/registries.conf.d";
const CRIO_CERTS_DIR: &str = "/host/crio/certs.d";
/// `/readyz` of `berth node-mirror`.
pub const READY_PORT: i32 = 9103;

/// The spec, when the mirror is on.
pub fn enabled(reg: &Registry) -> Option<&NodeMirrorSpec> {
    reg.spec.node_mirror.as_ref().filter(|m| m.enabled == Some(true))
}

/// `host:port` nodes reach the Registry at while the mirror is on: the spec's endpoint, else the
/// Service's cluster IP (none until it has one).
pub fn endpoint(reg: &Registry, port: i32, cluster_ip: Option<&str>) -> Option<String> {
    let spec = enabled(reg)?;
    if let Some(e) = &spec.endpoint {
        return Some(e.clone());
    }
    let ip: std::net::IpAddr = cluster_ip?.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(port).ok()?).to_string())
}

pub fn name(reg: &Registry) -> String {
    format!("{}-node-mirror", reg.name_any())
}

/// The pods' own labels: not the Registry's selector, so its Service never sends them clients.
fn pod_labels(reg: &Registry) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "berth-node-mirror".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), reg.name_any()),
    ])
}

/// Whether a ProxyCache prefix names a registry host that image names can start with.
fn is_host(prefix: &str) -> bool {
    prefix.contains('.') || prefix.contains(':') || prefix == "localhost"
}

/// The node's paths the spec names, defaults filled in.
struct NodePaths {
    /// containerd's hosts directory.
    containerd: String,
    /// containerd's config file.
    containerd_config: String,
    /// CRI-O's drop-in directory.
    crio: String,
    /// containers' `certs.d`.
    crio_certs: String,
}

fn node_paths(spec: &NodeMirrorSpec) -> NodePaths {
    let or = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
    NodePaths {
        containerd: or(&spec.containerd_config_path, DEFAULT_CONTAINERD_DIR),
        containerd_config: or(&spec.containerd_config_file, DEFAULT_CONTAINERD_CONFIG),
        crio: or(&spec.crio_config_path, DEFAULT_CRIO_DIR),
        crio_certs: or(&spec.crio_certs_path, DEFAULT_CRIO_CERTS_DIR),
    }
}

/// CRI-O is configured, and needs the Registry's CA.
fn crio_with_ca(spec: &NodeMirrorSpec, tls: bool) -> bool {
    spec.crio == Some(true) && tls
}

fn parent_and_file(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", f)) => ("/".into(), f.into()),
        Some((d, f)) => (d.into(), f.into()),
        None => ("/".into(), path.into()),
    }
}

/// The `host:port` images of `reg` are named with: its pull Secrets' server, else its
/// Service's cluster DNS name.
pub fn pull_name(reg: &Registry, eff: &Effective) -> String {
    super::pullsecrets::server(reg, &reg.spec.pull_secrets.clone().unwrap_or_default(), eff.port)
}

/// The plan for `endpoint` (`host:port` nodes reach the Registry at) and `pull_name` (the
/// `host:port` images are named with).
pub fn plan(
    reg: &Registry,
    spec: &NodeMirrorSpec,
    eff: &Effective,
    endpoint: &str,
    pull_name: &str,
    sources: &[ProxySource],
) -> NodeMirrorPlan {
    let scheme = if eff.tls == TlsMode::None { "http" } else { "https" };
    let mirror = format!("{scheme}://{endpoint}");
    let mut hosts: Vec<MirroredHost> = sources
        .iter()
        .filter(|s| s.spec.suspend != Some(true))
        .map(|s| (proxies::prefix(&s.spec), s.spec.upstream.url.trim_end_matches('/').to_owned()))
        .filter(|(prefix, _)| is_host(prefix))
        .map(|(prefix, server)| MirroredHost {
            host: prefix.clone(),
            server,
            mirror: mirror.clone(),
            prefix: Some(prefix),
        })
        .collect();
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    hosts.dedup_by(|a, b| a.host == b.host);
    for own in [pull_name, endpoint] {
        if !hosts.iter().any(|h| h.host == own) {
            hosts.push(MirroredHost {
                host: own.to_owned(),
                server: format!("{scheme}://{own}"),
                mirror: mirror.clone(),
                prefix: None,
            });
        }
    }
    let paths = node_paths(spec);
    let (_, config_name) = parent_and_file(&paths.containerd_config);
    let tls = eff.tls != TlsMode::None;
    NodeMirrorPlan {
        owner: format!("{}/{}", reg.namespace().unwrap_or_default(), reg.name_any()),
        hosts,
        containerd: Some(Target {
            dir: CONTAINERD_DIR.into(),
            node_dir: paths.containerd.into(),
            config_file: Some(format!("{CONTAINERD_CONFIG_DIR}/{config_name}").into()),
            node_config_file: Some(paths.containerd_config.into()),
        }),
        crio: (spec.crio == Some(true)).then(|| Target {
            dir: CRIO_DIR.into(),
            node_dir: paths.crio.into(),
            ..Target::default()
        }),
        crio_certs: crio_with_ca(spec, tls).then(|| Target {
            dir: CRIO_CERTS_DIR.into(),
            node_dir: paths.crio_certs.into(),
            ..Target::default()
        }),
        ca_file: tls.then(|| format!("{CA_DIR}/ca.crt").into()),
    }
}

fn meta(reg: &Registry) -> serde_json::Value {
    serde_json::json!({
        "name": name(reg),
        "namespace": reg.namespace(),
        "labels": labels::child(&reg.name_any(), "node-mirror"),
        "ownerReferences": reg.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
    })
}

pub fn config_map(reg: &Registry, plan: &NodeMirrorPlan) -> Result<ConfigMap, BuildError> {
    let text = serde_json::to_string_pretty(plan).unwrap_or_default();
    from_json(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(reg),
        "data": {"plan.json": text},
    }))
}

pub fn daemon_set(
    reg: &Registry,
    spec: &NodeMirrorSpec,
    eff: &Effective,
    tls_secret: Option<&str>,
) -> Result<DaemonSet, BuildError> {
    let paths = node_paths(spec);
    let (config_dir, _) = parent_and_file(&paths.containerd_config);
    let mut mounts = vec![
        serde_json::json!({"name": "plan", "mountPath": PLAN_DIR, "readOnly": true}),
        serde_json::json!({"name": "containerd-hosts", "mountPath": CONTAINERD_DIR}),
        serde_json::json!({"name": "containerd-config", "mountPath": CONTAINERD_CONFIG_DIR, "readOnly": true}),
    ];
    let mut volumes = vec![
        serde_json::json!({"name": "plan", "configMap": {"name": name(reg)}}),
        serde_json::json!({"name": "containerd-hosts", "hostPath": {"path": paths.containerd, "type": "DirectoryOrCreate"}}),
        serde_json::json!({"name": "containerd-config", "hostPath": {"path": config_dir, "type": "DirectoryOrCreate"}}),
    ];
    if spec.crio == Some(true) {
        mounts.push(serde_json::json!({"name": "crio", "mountPath": CRIO_DIR}));
        volumes.push(
            serde_json::json!({"name": "crio", "hostPath": {"path": paths.crio, "type": "DirectoryOrCreate"}}),
        );
    }
    if crio_with_ca(spec, tls_secret.is_some()) {
        mounts.push(serde_json::json!({"name": "crio-certs", "mountPath": CRIO_CERTS_DIR}));
        volumes.push(serde_json::json!({"name": "crio-certs", "hostPath": {"path": paths.crio_certs, "type": "DirectoryOrCreate"}}));
    }
    if let Some(secret) = tls_secret {
        // Only the CA: the serving key never leaves the Registry's own pods.
        mounts.push(serde_json::json!({"name": "ca", "mountPath": CA_DIR, "readOnly": true}));
        volumes.push(serde_json::json!({"name": "ca", "secret": {
            "secretName": secret, "items": [{"key": "ca.crt", "path": "ca.crt"}], "optional": true}}));
    }
    let tolerations = match &spec.tolerations {
        Some(t) => serde_json::to_value(t).unwrap_or_default(),
        None => serde_json::json!([{"operator": "Exists"}]),
    };
    let mut pod_spec = serde_json::json!({
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "tolerations": tolerations,
        "containers": [{
            "name": "node-mirror",
            "image": eff.image,
            "imagePullPolicy": reg.spec.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into()),
            "args": ["node-mirror", "--plan", format!("{PLAN_DIR}/plan.json"), "--listen", format!("$(POD_IP):{READY_PORT}")],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"name": "ready", "containerPort": READY_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "ready"}, "periodSeconds": 5},
            // Root, to write the node's root-owned directories; nothing more.
            "securityContext": {"runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}},
            "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    if let Some(sel) = &spec.node_selector {
        pod_spec["nodeSelector"] = serde_json::to_value(sel).unwrap_or_default();
    }
    from_json(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": meta(reg),
        "spec": {
            "selector": {"matchLabels": pod_labels(reg)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {"metadata": {"labels": pod_labels(reg)}, "spec": pod_spec},
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::registry::effective;
    use crate::crd::proxycache::{ProxyCacheSpec, Upstream};
    use crate::crd::RegistrySpec;

    fn registry(tls: bool) -> Registry {
        let mut spec = RegistrySpec::default();
        if tls {
            spec.tls =
                Some(crate::crd::registry::TlsSpec { mode: Some(TlsMode::SelfSigned), ..Default::default() });
        }
        spec.node_mirror = Some(NodeMirrorSpec { enabled: Some(true), ..Default::default() });
        let mut r = Registry::new("hub", spec);
        r.metadata.namespace = Some("team".into());
        r.metadata.uid = Some("u1".into());
        r
    }

    #[test]
    fn nodes_reach_the_spec_endpoint_else_the_cluster_ip() {
        let r = registry(true);
        assert_eq!(endpoint(&r, 443, Some("10.96.4.2")).as_deref(), Some("10.96.4.2:443"));
        assert_eq!(endpoint(&r, 5000, Some("fd00::4:2")).as_deref(), Some("[fd00::4:2]:5000"));
        // No address yet (or a headless Service's "None"): nothing for nodes until there is one.
        assert_eq!(endpoint(&r, 443, None), None);
        assert_eq!(endpoint(&r, 443, Some("None")), None);
        let mut named = registry(true);
        if let Some(m) = named.spec.node_mirror.as_mut() {
            m.endpoint = Some("registry.example.com:443".into());
        }
        assert_eq!(endpoint(&named, 443, None).as_deref(), Some("registry.example.com:443"));
        let mut off = registry(true);
        off.spec.node_mirror = None;
        assert_eq!(endpoint(&off, 443, Some("10.96.4.2")), None);
    }

    fn cache(name: &str, url: &str, prefix: Option<&str>) -> ProxySource {
        ProxySource {
            name: name.into(),
            spec: ProxyCacheSpec {
                upstream: Upstream { url: url.into(), ..Default::default() },
                prefix: prefix.map(Into::into),
                ..Default::default()
            },
        }
    }

    #[test]
    fn caches_named_by_host_and_the_registrys_own_names_are_mirrored() {
        let reg = registry(false);
        let eff = effective::resolve(&reg, "berth:dev");
        let sources = [
            cache("hub", "https://registry-1.docker.io/", Some("docker.io")),
            cache("gh", "https://ghcr.io", None),
            cache("internal", "https://mirror.example", Some("internal")),
        ];
        let spec = enabled(&reg).unwrap();
        let p = plan(&reg, spec, &eff, "10.96.0.9:5000", "hub.team.svc.cluster.local:5000", &sources);
        assert_eq!(p.owner, "team/hub");
        let hosts: Vec<_> =
            p.hosts.iter().map(|h| (h.host.as_str(), h.server.as_str(), h.prefix.as_deref())).collect();
        assert_eq!(
            hosts,
            [
                ("docker.io", "https://registry-1.docker.io", Some("docker.io")),
                ("ghcr.io", "https://ghcr.io", Some("ghcr.io")),
                ("hub.team.svc.cluster.local:5000", "http://hub.team.svc.cluster.local:5000", None),
                ("10.96.0.9:5000", "http://10.96.0.9:5000", None),
            ],
            "a prefix that is no host (internal) cannot be pulled by a host name: left out"
        );
        assert!(p.hosts.iter().all(|h| h.mirror == "http://10.96.0.9:5000"));
        assert_eq!(p.ca_file, None);
        assert_eq!(p.crio, None);
        assert_eq!(p.crio_certs, None, "no TLS, no CA to place");
        let c = p.containerd.unwrap();
        assert_eq!(c.node_dir, std::path::Path::new("/etc/containerd/certs.d"));
        assert_eq!(c.config_file.unwrap(), std::path::Path::new("/host/containerd/config/config.toml"));
    }

    #[test]
    fn the_daemon_set_mounts_the_node_directories_and_only_the_ca() {
        let mut reg = registry(true);
        let spec = reg.spec.node_mirror.as_mut().unwrap();
        spec.crio = Some(true);
        spec.containerd_config_file = Some("/srv/containerd/config.toml".into());
        let spec = spec.clone();
        let eff = effective::resolve(&reg, "berth:dev");
        let p = plan(&reg, &spec, &eff, "10.96.0.9:443", "hub.team.svc.cluster.local:443", &[]);
        assert!(p.hosts.iter().all(|h| h.mirror == "https://10.96.0.9:443"));
        assert_eq!(p.ca_file.unwrap(), std::path::Path::new("/etc/berth/node-mirror-ca/ca.crt"));
        assert_eq!(p.crio.unwrap().node_dir, std::path::Path::new("/etc/containers/registries.conf.d"));
        assert_eq!(p.crio_certs.unwrap().node_dir, std::path::Path::new("/etc/containers/certs.d"));

        let ds = serde_json::to_value(daemon_set(&reg, &spec, &eff, Some("hub-tls")).unwrap()).unwrap();
        let pod = &ds["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], "berth-node-mirror");
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        let host_paths: Vec<_> = volumes.iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
        assert_eq!(
            host_paths,
            [
                "/etc/containerd/certs.d",
                "/srv/containerd",
                "/etc/containers/registries.conf.d",
                "/etc/containers/certs.d"
            ]
        );
        let ca = volumes.iter().find(|v| v["name"] == "ca").unwrap();
        assert_eq!(ca["secret"]["items"], serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]));
        assert_eq!(pod["spec"]["tolerations"], serde_json::json!([{"operator": "Exists"}]));
        assert_eq!(pod["spec"]["containers"][0]["args"][0], "node-mirror");
    }
}
