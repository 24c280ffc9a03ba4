//! What `berth node-mirror` writes on a node: the plan the operator renders into a ConfigMap for
//! a Registry's `spec.nodeMirror` DaemonSet, which each of its pods turns into containerd
//! `hosts.toml` files (and, when asked, a CRI-O `registries.conf.d` drop-in with the CA in
//! `certs.d`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeMirrorPlan {
    /// Whose files these are (`<namespace>/<registry>`): written into each file, and only files
    /// that carry it are ever changed or removed.
    pub owner: String,
    /// The registry hosts whose pulls go to Berth first.
    #[serde(default)]
    pub hosts: Vec<MirroredHost>,
    #[serde(default)]
    pub containerd: Option<Target>,
    #[serde(default)]
    pub crio: Option<Target>,
    /// containers' `certs.d` (CRI-O, podman, skopeo): the Registry's CA in a directory per
    /// `host:port` CRI-O reaches it by, when its TLS is its own.
    #[serde(default)]
    pub crio_certs: Option<Target>,
    /// The Registry's CA certificate (PEM), inside the pod, when its TLS is its own.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirroredHost {
    /// The host as image names spell it: `docker.io`, `ghcr.io`, `registry.team.svc:5000`.
    pub host: String,
    /// Where its content is when Berth cannot be reached: `https://registry-1.docker.io`.
    pub server: String,
    /// Berth as the nodes reach it: `http://10.96.3.7:5000`.
    pub mirror: String,
    /// The path part under which Berth serves this host's images (`docker.io`); none for the
    /// Registry's own host. containerd names it with `?ns=`, CRI-O in the mirror's location.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A directory on the node: where the pod sees it, and its path on the node (what the files
/// themselves must name).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    pub dir: PathBuf,
    pub node_dir: PathBuf,
    /// containerd's config file as the pod sees it (read only), to check that it reads `node_dir`.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// That file's path on the node (for messages).
    #[serde(default)]
    pub node_config_file: Option<PathBuf>,
}
