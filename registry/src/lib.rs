//! Berth: an OCI Distribution Spec v1.1 registry.
//!
//! ```text
//! client ──HTTP──► api (routing, protocol edge) ──► service (OCI semantics)
//!                                                      ├── meta     (SQL: repos, tags, edges, uploads)
//!                                                      └── storage  (bytes by digest)
//! ```
//! Only [`config`] is built without the `server` feature, so other crates can render configs.

pub mod config;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "server")]
pub mod glob;
#[cfg(feature = "server")]
pub mod meta;
#[cfg(feature = "server")]
pub mod oci;
#[cfg(feature = "server")]
pub mod proxy;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tls;
