//! The OCI vocabulary: digests, names, references, manifests, ranges, the distribution API's
//! routes, upload ids and conditional requests. Pure values, no I/O.

pub mod digest;
pub mod manifest;
pub mod name;
pub mod precondition;
pub mod range;
pub mod route;
pub mod upload_id;

pub use digest::{hex, Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestKind, ParsedManifest};
pub use name::{Reference, RepoName, Tag};
pub use upload_id::UploadId;
