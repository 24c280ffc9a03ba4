//! Berth's end-to-end harness: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager built from the Kubernetes Go modules by `e2e/k8s-tools.sh`) and a
//! process kubelet that runs Berth's own binaries as pods.
//!
//! ```text
//!  test / make demo ──► ControlPlane::start ──► etcd ─► kube-apiserver ─► kube-controller-manager
//!                                   └──► berth-kubelet (Node "berth-node"): binds pods, runs them as
//!                                        local processes, probes them, proxies Services
//! ```
//! See `e2e/README.md` for the model and its limits.

pub mod cluster;
pub mod kubelet;
pub mod network;
pub mod pki;
pub mod ports;
pub mod support;
pub mod tools;

pub use cluster::{ControlPlane, Options};
pub use support::{wait_until, TempNamespace};
pub use tools::{cache_dir, tool, version};
