//! One controller per kind. Each has a pure `desired` (spec → children) and `status`
//! (observations → status) and one `reconcile` module that alone talks to the API server.

pub mod apply;
pub mod registry;
