//! Berth: an OCI Distribution Spec v1.1 registry.
//!
//! ```text
//! client ──HTTP──► api (routing, protocol edge) ──► service (OCI semantics)
//!                     │                                ├── meta     (SQL: repos, tags, edges, uploads)
//!                     └► proxy (pull-through cache) ──►└── storage  (bytes by digest)
//! ```
//! The vocabulary (digests, names, manifests) and the config types come from `berth-core`; the
//! proxy talks to its upstreams through `berth-client`.

pub mod api;
pub mod auth;
pub mod gc;
pub mod meta;
pub mod nodemirror;
pub mod notify;
pub mod proxy;
pub mod replicate;
pub mod server;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod ui;

pub use berth_core::oci::UploadId;
