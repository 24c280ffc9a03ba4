//! The pull-through cache: a read-through layer over [`crate::service`] for repositories an
//! upstream serves.
//!
//! ```text
//! manifest by digest ─► cached? serve : fetch once (single flight), verify, cache, serve
//! manifest by tag    ─► checked within revalidate_after? serve
//!                       : HEAD upstream ─► same digest: serve │ new digest: GET, cache, serve
//!                                       └► failed: serve the cached tag if within stale_if_error
//!                       404 upstream ─► remembered for negative_ttl
//! blob               ─► cached? serve : join or start the one fetch (see [`flight`])
//! ```
//! Content addressed by digest never changes, so it is never revalidated. Proxied repositories
//! are read-only; every other repository is an ordinary one (the hybrid registry).
//!
//! One file per concern: [`route`] (which upstream serves a name), `manifests` (fetching and
//! caching manifests, one fetch per manifest), `tags` with `freshness` (when a cached tag is
//! checked again, served stale, or known missing), `blobs` and [`flight`] (one streamed fetch per
//! blob, shared by every client waiting for it; `segments` streams it to other replicas through
//! storage while it runs), `listing` (tag lists), `eviction` with `pulls`
//! (pull times, size limits and TTLs). `state` holds what they share.

mod blobs;
mod error;
mod eviction;
pub mod flight;
mod freshness;
mod listing;
mod manifests;
mod pulls;
mod referrers;
pub mod route;
mod segments;
mod state;
mod tags;

pub use error::{ProxyError, Result};
pub use route::Target;
pub use state::Proxy;
