//! What every part of the kubelet shares: its options, the API client and the pod IPs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ips::IpPool;

#[derive(Debug, Clone)]
pub struct Options {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub hosts_file: PathBuf,
    /// Binary name (as a container command names it) → local path.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Where the `kubernetes` Service forwards to.
    pub api_server: Option<std::net::SocketAddr>,
    /// This cluster's pod addresses: the first two octets of a 127.x.0.0/16 range.
    pub pod_range: (u8, u8),
    /// The `kubernetes` Service's ClusterIP (given to pods as KUBERNETES_SERVICE_HOST).
    pub kubernetes_service_ip: std::net::Ipv4Addr,
}

pub struct Context {
    pub client: kube::Client,
    pub opts: Options,
    pub ips: IpPool,
}

pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}
