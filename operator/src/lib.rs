//! `berth-operator`: reconciles `Registry`, `ProxyCache` and `ReplicationPolicy` resources into the
//! Kubernetes objects that run Berth.
//!
//! ```text
//! Registry (spec, written by users or GitOps)
//!    ▼ watch (and the children it owns)
//! controllers::registry::reconcile   ── the only code that calls the API
//!    │ desired::build  (pure)  Registry → Secret, Services, StatefulSet, PDB
//!    │ status::compute (pure)  observations → status
//!    ▼ server-side apply (field manager berth-operator), prune by label, status patch if changed
//! ```

pub mod controllers;
pub mod crd;
pub mod labels;
pub mod leader;
pub mod metrics;
