//! The OCI vocabulary: digests, names, references, manifests and ranges. Pure values, no I/O.

pub mod digest;
pub mod manifest;
pub mod name;
pub mod range;

pub use digest::{hex, Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestKind, ParsedManifest};
pub use name::{Reference, RepoName, Tag};
