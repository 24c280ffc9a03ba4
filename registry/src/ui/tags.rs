//! What a repository page's rows show beyond the metadata: each tag's platforms, [`describe`]d
//! from its manifest (and an image's config). The page's tags, in the order asked for, and the
//! sizes of their images come from the metadata ([`crate::meta::browse`]).

use berth_core::oci::{Digest, Reference, RepoName};
use serde_json::Value;

use super::view::Ui;
pub use crate::meta::browse::TagOrder as Order;

/// The largest config read for its view (a real one is a few KiB).
pub const CONFIG_MAX: u64 = 256 * 1024;

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("")
}

pub fn size_of(v: &Value) -> u64 {
    v.get("size").and_then(|s| s.as_u64()).unwrap_or(0)
}

/// `os/architecture[/variant]` of an index entry's `platform` or an image's config; empty when
/// it names none.
pub fn platform(p: &Value) -> String {
    let (os, arch, variant) = (str_of(p, "os"), str_of(p, "architecture"), str_of(p, "variant"));
    match (os, arch, variant) {
        ("", "", _) => String::new(),
        (os, arch, "") => format!("{os}/{arch}"),
        (os, arch, v) => format!("{os}/{arch}/{v}"),
    }
}

/// A manifest's kind, from its media type.
fn kind(media_type: &str) -> &'static str {
    match media_type {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => "index",
        "application/vnd.oci.image.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v2+json" => "image",
        _ => "other",
    }
}

/// Most platforms a tag's row lists: an index may name thousands of children, and a page sizes
/// each platform it shows.
pub const PLATFORMS_SHOWN: usize = 16;

/// What a tag's row shows beyond the metadata: its kind and its platforms (each with the child
/// manifest whose size is its own, for an index), and how many more it has than are listed.
#[derive(Default)]
pub struct Described {
    pub kind: &'static str,
    pub platforms: Vec<(String, Option<Digest>)>,
    pub more: usize,
}

/// Reads `digest`'s manifest (and an image's config) for its row.
pub async fn describe(ui: &Ui, repo: &RepoName, digest: &Digest) -> Described {
    let reference = Reference::Digest(digest.clone());
    let Ok(record) = ui.st.registry.head_manifest(repo, &reference).await else {
        return Described::default();
    };
    let kind = kind(&record.media_type);
    let doc: serde_json::Value = match ui.st.registry.manifest_bytes(&record).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => return Described { kind, ..Described::default() },
    };
    let mut platforms: Vec<(String, Option<Digest>)> = match kind {
        "index" => doc
            .get("manifests")
            .and_then(|m| m.as_array())
            .map(|children| {
                children
                    .iter()
                    .map(|c| (platform(c.get("platform").unwrap_or(&serde_json::Value::Null)), c))
                    // Build attestations ride in indexes as `unknown/unknown`.
                    .filter(|(p, _)| !p.is_empty() && !p.starts_with("unknown/"))
                    .map(|(p, c)| (p, str_of(c, "digest").parse().ok()))
                    .collect()
            })
            .unwrap_or_default(),
        "image" => {
            let config =
                doc.get("config").map(|c| str_of(c, "digest")).and_then(|d| d.parse::<Digest>().ok());
            let read = match &config {
                Some(c) => ui.st.registry.small_blob(repo, c, CONFIG_MAX).await.ok().flatten(),
                None => None,
            };
            read.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map(|image| platform(&image))
                .filter(|p| !p.is_empty())
                .map(|p| vec![(p, None)])
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let more = platforms.len().saturating_sub(PLATFORMS_SHOWN);
    platforms.truncate(PLATFORMS_SHOWN);
    Described { kind, platforms, more }
}

/// Rows described at once, so a page of tags is not read one by one.
pub const DESCRIBED_AT_ONCE: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_from_an_index_entry_or_a_config() {
        assert_eq!(
            platform(&serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
            "linux/arm64/v8"
        );
        assert_eq!(platform(&serde_json::json!({"os": "linux", "architecture": "amd64"})), "linux/amd64");
        assert_eq!(platform(&serde_json::json!({})), "");
    }

    #[test]
    fn kinds_by_media_type() {
        assert_eq!(kind("application/vnd.oci.image.index.v1+json"), "index");
        assert_eq!(kind("application/vnd.docker.distribution.manifest.v2+json"), "image");
        assert_eq!(kind("application/vnd.cncf.helm.config.v1+json"), "other");
    }
}
