//! Deletes at the destination, for a repository replicated whole: `tags` removes the tags (within
//! the filter) the source no longer has; `mirror` also deletes the manifests those tags named
//! once no tag left names them, so the destination's tags equal the source's.

use std::collections::HashSet;

use berth_client::Upstream;
use berth_core::oci::{Digest, RepoName};

use super::filter::TagFilter;
use super::pages::tag_list;
pub use berth_core::config::replication::Deletes;

/// What [`prune`] deleted (or, in a dry run, would): tags with the digests they named, and how
/// many manifests.
#[derive(Debug, Default)]
pub struct Pruned {
    pub tags: Vec<(String, Digest)>,
    pub manifests: u64,
}

/// Removes from `repo` at `dst` the tags within `filter` that `source_tags` (the source's,
/// through the same filter) lacks; with [`Deletes::Mirror`], also the manifests only those tags
/// named.
pub async fn prune(
    dst: &Upstream,
    filter: &TagFilter,
    deletes: Deletes,
    dry_run: bool,
    repo: &RepoName,
    source_tags: &HashSet<String>,
) -> anyhow::Result<Pruned> {
    let mut pruned = Pruned::default();
    let there: Vec<String> = match tag_list(dst, repo).await? {
        Some(tags) => tags.into_iter().filter(|t| filter.matches(t)).collect(),
        None => return Ok(pruned),
    };
    for tag in there.iter().filter(|t| !source_tags.contains(*t)) {
        let Some(digest) = dst.manifest_digest(repo, tag).await? else { continue };
        let digest: Digest =
            digest.parse().map_err(|e| anyhow::anyhow!("{repo}:{tag} names {digest:?}: {e}"))?;
        if !dry_run {
            dst.delete_manifest(repo, tag).await?;
        }
        tracing::info!(image = %format!("{repo}:{tag}"), dry_run, "tag deleted at the destination");
        pruned.tags.push((tag.to_string(), digest));
    }
    if deletes != Deletes::Mirror || pruned.tags.is_empty() {
        return Ok(pruned);
    }
    // A manifest a tag left still names stays.
    let mut kept = HashSet::new();
    for tag in there.iter().filter(|t| source_tags.contains(*t)) {
        if let Some(d) = dst.manifest_digest(repo, tag).await? {
            kept.insert(d);
        }
    }
    for (_, digest) in &pruned.tags {
        // Inserted once deleted: two gone tags naming one manifest delete it once.
        if !kept.insert(digest.to_string()) {
            continue;
        }
        if !dry_run {
            dst.delete_manifest(repo, digest.as_str()).await?;
        }
        pruned.manifests += 1;
    }
    Ok(pruned)
}
