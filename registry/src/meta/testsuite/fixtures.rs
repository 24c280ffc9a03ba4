//! What the metadata suite builds its cases from: names, digests and manifests.

use crate::meta::{NewManifest, Stored};
use berth_core::oci::{Algorithm, Descriptor, Digest, RepoName};

pub(crate) fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

pub(crate) fn digest(s: &str) -> Digest {
    Digest::of(Algorithm::Sha256, s.as_bytes())
}

/// What a manifest says of `digest`: that it has `size` bytes.
pub(crate) fn described(digest: &Digest, size: u64) -> Descriptor {
    Descriptor { digest: digest.clone(), size }
}

/// The manifest `name` (of 100 bytes) referencing `blobs`, tagged `tag`.
pub(crate) fn manifest(r: &str, name: &str, blobs: &[&Descriptor], tag: Option<&str>) -> NewManifest {
    NewManifest {
        repo: repo(r),
        digest: digest(name),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: 100,
        artifact_type: None,
        subject: None,
        annotations: None,
        blobs: blobs.iter().map(|&d| d.clone()).collect(),
        manifests: vec![],
        tags: tag.map(|t| t.parse().unwrap()).into_iter().collect(),
        verify_references: true,
        children_optional: false,
        stored: Stored::Written,
        events: Vec::new(),
        condition: None,
    }
}
