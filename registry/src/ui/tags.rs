//! A repository's tags as the UI lists them: in the order asked for (last pushed, last pulled,
//! or by name), each with the size of its image — config and layers, the bytes a pull moves —
//! counted from the metadata's edges without reading a manifest (an index counts each blob its
//! platforms share once; each platform's own size is [`Sizes::of`] its child), and its platforms,
//! [`describe`]d from the manifest (and an image's config) for the rows shown.

use std::collections::{HashMap, HashSet};

use berth_core::oci::{Digest, Reference, RepoName};
use serde_json::Value;

use super::view::Ui;
use crate::meta::gc::{RepoContents, StoredTag};

/// How the tags are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Last pushed first.
    Pushed,
    /// Last pulled first; never pulled last (newest pushed first among them).
    Pulled,
    Name,
}

impl Order {
    pub fn parse(s: Option<&str>) -> Order {
        match s {
            Some("pulled") => Order::Pulled,
            Some("name") => Order::Name,
            _ => Order::Pushed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Pushed => "pushed",
            Order::Pulled => "pulled",
            Order::Name => "name",
        }
    }

    pub const ALL: [Order; 3] = [Order::Pushed, Order::Pulled, Order::Name];

    /// `tags` in this order.
    pub fn sort(self, tags: &mut [StoredTag]) {
        match self {
            Order::Pushed => {
                tags.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.name.cmp(&b.name)))
            }
            // `Some` sorts above `None` when reversed: pulled ones come first.
            Order::Pulled => tags.sort_by(|a, b| {
                b.pulled_at
                    .cmp(&a.pulled_at)
                    .then_with(|| b.pushed_at.cmp(&a.pushed_at))
                    .then_with(|| a.name.cmp(&b.name))
            }),
            Order::Name => tags.sort_by(|a, b| a.name.cmp(&b.name)),
        }
    }
}

/// The sizes of a repository's images, from its edges and the sizes of its blobs.
pub struct Sizes<'a> {
    blob_size: HashMap<&'a Digest, u64>,
    /// Per manifest: the blobs it names, and its child manifests.
    edges: HashMap<&'a Digest, (Vec<&'a Digest>, Vec<&'a Digest>)>,
}

impl<'a> Sizes<'a> {
    pub fn new(contents: &'a RepoContents) -> Sizes<'a> {
        let blob_size = contents.links.iter().map(|l| (&l.digest, l.size)).collect();
        let mut edges: HashMap<&Digest, (Vec<&Digest>, Vec<&Digest>)> = HashMap::new();
        for e in &contents.edges {
            let (blobs, children) = edges.entry(&e.parent).or_default();
            if e.manifest {
                children.push(&e.child);
            } else {
                blobs.push(&e.child);
            }
        }
        Sizes { blob_size, edges }
    }

    /// The bytes of every distinct blob `digest` needs, through its children. A walk with a list
    /// of its own, not nested calls: anyone who may push can nest indexes as deep as they like.
    pub fn of(&self, digest: &Digest) -> u64 {
        let mut blobs: HashSet<&Digest> = HashSet::new();
        let mut seen: HashSet<&Digest> = HashSet::from([digest]);
        let mut todo = vec![digest];
        while let Some(d) = todo.pop() {
            let Some((own, children)) = self.edges.get(d) else { continue };
            blobs.extend(own.iter().copied());
            todo.extend(children.iter().copied().filter(|c| seen.insert(*c)));
        }
        blobs.iter().map(|b| self.blob_size.get(*b).copied().unwrap_or(0)).sum()
    }
}

/// The sizes of `wanted` in `contents`, worked out on the blocking pool: each walks the
/// repository's manifests, which can be many.
pub async fn sizes_of(contents: RepoContents, wanted: Vec<Digest>) -> HashMap<Digest, u64> {
    tokio::task::spawn_blocking(move || {
        let sizes = Sizes::new(&contents);
        wanted
            .into_iter()
            .map(|d| {
                let n = sizes.of(&d);
                (d, n)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

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

/// What a tag's row shows beyond the metadata: its kind and its platforms (each with the child
/// manifest whose size is its own, for an index).
#[derive(Default)]
pub struct Described {
    pub kind: &'static str,
    pub platforms: Vec<(String, Option<Digest>)>,
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
        Err(_) => return Described { kind, platforms: Vec::new() },
    };
    let platforms = match kind {
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
    Described { kind, platforms }
}

/// Rows described at once, so a page of tags is not read one by one.
pub const DESCRIBED_AT_ONCE: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::gc::{Edge, Link};

    fn d(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap()
    }

    fn tag(name: &str, pushed_at: i64, pulled_at: Option<i64>) -> StoredTag {
        StoredTag { name: name.into(), digest: d(1), pushed_at, pulled_at, annotations: None }
    }

    #[test]
    fn orders_by_push_pull_or_name() {
        let mut tags = vec![tag("b", 10, None), tag("a", 30, Some(5)), tag("c", 20, Some(50))];
        let names = |t: &[StoredTag]| t.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        Order::Pushed.sort(&mut tags);
        assert_eq!(names(&tags), ["a", "c", "b"]);
        Order::Pulled.sort(&mut tags);
        assert_eq!(names(&tags), ["c", "a", "b"]);
        Order::Name.sort(&mut tags);
        assert_eq!(names(&tags), ["a", "b", "c"]);
        assert_eq!(Order::parse(Some("pulled")), Order::Pulled);
        assert_eq!(Order::parse(Some("nonsense")), Order::Pushed);
    }

    #[test]
    fn an_index_counts_shared_layers_once() {
        // Index 1 → images 2 and 3; both use layer 10; 2 has config 11 and 3 config 12.
        let edge = |p, c, manifest| Edge { parent: d(p), child: d(c), manifest };
        let link = |n, size| Link { digest: d(n), size, linked_at: 0 };
        let contents = RepoContents {
            edges: vec![
                edge(1, 2, true),
                edge(1, 3, true),
                edge(2, 10, false),
                edge(2, 11, false),
                edge(3, 10, false),
                edge(3, 12, false),
            ],
            links: vec![link(10, 1000), link(11, 10), link(12, 20)],
            ..RepoContents::default()
        };
        let sizes = Sizes::new(&contents);
        assert_eq!(sizes.of(&d(2)), 1010);
        assert_eq!(sizes.of(&d(3)), 1020);
        assert_eq!(sizes.of(&d(1)), 1030);
        assert_eq!(sizes.of(&d(99)), 0);
    }

    #[test]
    fn an_index_nested_deeper_than_any_stack_is_sized() {
        // Anyone who may push can nest indexes; a walk by nested calls overflowed the stack
        // (and an overflow aborts the registry) on the repository's page.
        const LEVELS: u64 = 200_000;
        let nth = |i: u64| -> Digest { format!("sha256:{i:064x}").parse().unwrap() };
        let mut edges: Vec<Edge> =
            (0..LEVELS).map(|i| Edge { parent: nth(i), child: nth(i + 1), manifest: true }).collect();
        edges.push(Edge { parent: nth(LEVELS), child: nth(LEVELS + 1), manifest: false });
        let contents = RepoContents {
            edges,
            links: vec![Link { digest: nth(LEVELS + 1), size: 7, linked_at: 0 }],
            ..RepoContents::default()
        };
        assert_eq!(Sizes::new(&contents).of(&nth(0)), 7);
    }

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
