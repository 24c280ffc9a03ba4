//! One controller per kind. Each has a pure `desired` (spec → children) and `status`
//! (observations → status) and one `reconcile` module that alone talks to the API server.

pub mod apply;
mod context;
pub mod jobs;
pub mod proxycache;
pub mod registry;
pub mod render;
pub mod replication;
pub mod secrets;

pub use context::{now, publish_readiness, Context, Error};
