//! OCI semantics over storage and metadata: uploads, blobs, manifests, tags and referrers.
//!
//! Nothing here knows HTTP. Handlers in [`crate::api`] parse a request into typed values, call one
//! method here, and turn the result (or the [`ServiceError`]) into a response.

mod assembly;
mod blobs;
mod cache;
mod changes;
mod error;
pub(crate) mod in_place;
mod in_use;
mod manifests;
pub mod multiparts;
mod pulls;
mod purge;
mod referrers;
mod registry;
mod uploads;

pub use blobs::BlobRead;
pub use error::{Result, ServiceError};
pub use manifests::{Listing, PushOptions, PutManifest};
pub use referrers::ReferrerPage;
pub use registry::{BodyStream, Limits, Readiness, Registry};
pub use uploads::UploadState;
