//! Manifest parsing: what a pushed manifest is, and which other content it points at.
//!
//! The registry stores manifest bytes exactly as pushed (their digest is over those bytes); this
//! module only reads them to learn the media type, the blobs and child manifests that must already
//! exist in the repository, the `subject` (for the referrers API), and the artifact type.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest::{truncate, Digest};

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// `artifactType`, or for an image manifest without one, its config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Blobs (config and layers) that must exist in the repository.
    pub blobs: Vec<Descriptor>,
    /// Child manifests (of an index) that must exist in the repository.
    pub manifests: Vec<Descriptor>,
}

/// What a manifest says of content it references: the digest, and the size a client pulling
/// it will expect (and check: containerd refuses content of another size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest has no media type: set Content-Type or mediaType")]
    NoMediaType,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    urls: Option<Vec<String>>,
}

impl RawDescriptor {
    fn described(&self, field: &str) -> Result<Descriptor, ManifestError> {
        let raw = self
            .digest
            .as_deref()
            .ok_or_else(|| ManifestError::Invalid(format!("{field}: descriptor has no digest")))?;
        let digest = raw.parse().map_err(|e| ManifestError::Invalid(format!("{field}: {e}")))?;
        match self.size.and_then(|s| u64::try_from(s).ok()) {
            Some(size) => Ok(Descriptor { digest, size }),
            None => Err(ManifestError::Invalid(format!("{field}: descriptor needs a size >= 0"))),
        }
    }

    /// Foreign and non-distributable layers live elsewhere; the registry need not hold them.
    fn is_external(&self) -> bool {
        let foreign = self
            .media_type
            .as_deref()
            .is_some_and(|m| m.contains(".foreign.") || m.contains(".nondistributable."));
        foreign || self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }
}

/// Strips parameters (`; charset=...`) and surrounding space from a Content-Type.
fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or(ct).trim()
}

pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(truncate(&e.to_string())))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let header = content_type.map(bare_media_type).filter(|s| !s.is_empty());
    let media_type = resolve_media_type(header, &raw)?;
    let kind = match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image,
        media::OCI_INDEX | media::DOCKER_LIST => ManifestKind::Index,
        other => return Err(ManifestError::UnsupportedMediaType(truncate(other))),
    };
    let subject = raw.subject.as_ref().map(|s| s.described("subject")).transpose()?.map(|s| s.digest);
    let mut parsed = ParsedManifest {
        media_type,
        kind,
        artifact_type: raw.artifact_type.clone(),
        subject,
        annotations: raw.annotations.clone(),
        blobs: Vec::new(),
        manifests: Vec::new(),
    };
    match kind {
        ManifestKind::Image => fill_image(&raw, &mut parsed)?,
        ManifestKind::Index => fill_index(&raw, &mut parsed)?,
    }
    Ok(parsed)
}

fn resolve_media_type(header: Option<&str>, raw: &RawManifest) -> Result<String, ManifestError> {
    let body = raw.media_type.as_deref();
    if let Some(mt) = header.or(body) {
        if matches!(mt, media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED) {
            return Err(ManifestError::UnsupportedMediaType(mt.to_owned()));
        }
    }
    match (header, body) {
        (Some(h), Some(b)) if h != b => {
            Err(ManifestError::MediaTypeMismatch { header: truncate(h), body: truncate(b) })
        }
        (_, Some(b)) => Ok(b.to_owned()),
        (Some(h), None) => Ok(h.to_owned()),
        // Neither says: the OCI spec lets the shape decide.
        (None, None) if raw.config.is_some() => Ok(media::OCI_MANIFEST.to_owned()),
        (None, None) if raw.manifests.is_some() => Ok(media::OCI_INDEX.to_owned()),
        (None, None) => Err(ManifestError::NoMediaType),
    }
}

fn fill_image(raw: &RawManifest, out: &mut ParsedManifest) -> Result<(), ManifestError> {
    if raw.manifests.is_some() {
        return Err(ManifestError::Invalid("an image manifest has no \"manifests\"".into()));
    }
    let config =
        raw.config.as_ref().ok_or_else(|| ManifestError::Invalid("image manifest has no config".into()))?;
    out.blobs.push(config.described("config")?);
    let layers =
        raw.layers.as_ref().ok_or_else(|| ManifestError::Invalid("image manifest has no layers".into()))?;
    for (i, layer) in layers.iter().enumerate() {
        let described = layer.described(&format!("layers[{i}]"))?;
        if !layer.is_external() {
            out.blobs.push(described);
        }
    }
    if out.artifact_type.is_none() {
        out.artifact_type = config.media_type.clone();
    }
    Ok(())
}

fn fill_index(raw: &RawManifest, out: &mut ParsedManifest) -> Result<(), ManifestError> {
    if raw.config.is_some() || raw.layers.is_some() {
        return Err(ManifestError::Invalid("an index has no config or layers".into()));
    }
    let children =
        raw.manifests.as_ref().ok_or_else(|| ManifestError::Invalid("index has no \"manifests\"".into()))?;
    for (i, child) in children.iter().enumerate() {
        out.manifests.push(child.described(&format!("manifests[{i}]"))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}]{extra}}}"#,
            media::OCI_MANIFEST
        )
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let m = parse(Some(media::OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        let described = m.blobs.iter().map(|b| (b.digest.as_str(), b.size)).collect::<Vec<_>>();
        assert_eq!(described, [(D1, 2), (D2, 3)]);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let body = image(&format!(
            r#","artifactType":"application/x.sbom","subject":{{"mediaType":"{}","digest":"{D1}","size":9}},"annotations":{{"k":"v"}}"#,
            media::OCI_MANIFEST
        ));
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.subject.unwrap().as_str(), D1);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sbom"));
        assert_eq!(m.annotations.unwrap()["k"], "v");
    }

    #[test]
    fn index_references_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D1}","size":5}}]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST
        );
        let m = parse(Some(media::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests.iter().map(|c| (c.digest.as_str(), c.size)).collect::<Vec<_>>(), [(D1, 5)]);
        assert!(m.blobs.is_empty());
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a","digest":"{D1}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":1,"urls":["https://example.invalid/x"]}}]}}"#,
            media::DOCKER_MANIFEST
        );
        let m = parse(Some(media::DOCKER_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 1);
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases: Vec<(Option<&str>, String)> = vec![
            (Some(media::OCI_MANIFEST), "not json".into()),
            (Some(media::OCI_MANIFEST), "[]".into()),
            (Some(media::OCI_MANIFEST), image("").replace("\"schemaVersion\":2", "\"schemaVersion\":1")),
            (Some(media::OCI_INDEX), image("")),
            (Some("application/json"), image("").replace(media::OCI_MANIFEST, "application/json")),
            (Some(media::DOCKER_SCHEMA1_SIGNED), "{\"schemaVersion\":2}".into()),
            (Some(media::OCI_MANIFEST), image("").replace(D2, "sha256:nothex")),
            (Some(media::OCI_MANIFEST), image("").replace("\"size\":3", "\"size\":-3")),
            (None, "{\"schemaVersion\":2}".into()),
        ];
        for (ct, body) in cases {
            assert!(parse(ct, body.as_bytes()).is_err(), "{ct:?} {body}");
        }
    }

    #[test]
    fn content_type_parameters_are_ignored() {
        let ct = format!("{}; charset=utf-8", media::OCI_MANIFEST);
        assert!(parse(Some(&ct), image("").as_bytes()).is_ok());
    }
}
