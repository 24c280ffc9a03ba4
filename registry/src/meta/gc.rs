//! What garbage collection reads and removes ([`Collect`]), apart from the repository model.
//!
//! A collection marks in memory, one repository at a time, from what [`Collect::repo_contents`]
//! reads; then removes each thing it found unreachable with a statement that checks, inside its
//! transaction, that the thing is still removable by what is stored *now* (no tag, no manifest
//! that needs it, older than the grace). So a push that raced the mark wins: its manifest, tag
//! or link makes the removal a no-op, counted as a conflict. Blobs nothing uses any more are
//! released to [`super::sweep`], which deletes their objects.
//!
//! On PostgreSQL each removal first locks the row (`FOR UPDATE`), then checks in a statement of
//! its own, which sees every write that held a conflicting lock before (a manifest push locks the
//! references it checks `FOR SHARE`; a tag's foreign key locks its manifest).

use std::collections::HashMap;

use super::browse::StoredTag;
use super::{parse_stored, Result};
use berth_core::oci::{Digest, RepoName};

/// A digest's place in [`RepoContents::digests`]: a repository's graph names each digest once,
/// however many edges lead to it.
pub type DigestId = u32;

/// A manifest as the mark needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: DigestId,
    pub subject: Option<DigestId>,
    pub size: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// An edge from a manifest to what it needs: a blob (config, layer) or a child manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub parent: DigestId,
    pub child: DigestId,
    pub manifest: bool,
}

/// A blob readable in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub digest: DigestId,
    pub size: u64,
    /// Unix seconds: when it was last linked (pushed or mounted).
    pub linked_at: i64,
}

/// Everything one repository holds. Manifests, edges and links name digests by their place in
/// `digests`: a repository of a million manifests is read as a few hundred bytes per manifest,
/// not a copy of each digest per edge (a collection holds one repository at a time).
#[derive(Debug, Clone, Default)]
pub struct RepoContents {
    pub digests: Vec<Digest>,
    pub manifests: Vec<StoredManifest>,
    pub tags: Vec<StoredTag>,
    pub edges: Vec<Edge>,
    pub links: Vec<Link>,
}

impl RepoContents {
    pub fn digest(&self, id: DigestId) -> &Digest {
        &self.digests[id as usize]
    }
}

/// Builds [`RepoContents`] row by row, parsing each distinct digest once. Digests are found
/// again by the first 128 bits of their hex (a few bytes each, where a copy of the text was
/// a hundred), always checked against the whole digest: two that share those bits (which
/// nobody can make on purpose) are told apart by their text.
#[derive(Default)]
pub(crate) struct ContentsBuilder {
    ids: HashMap<u128, DigestId>,
    shared_prefix: HashMap<Box<str>, DigestId>,
    contents: RepoContents,
}

/// The first 128 bits of a digest's hex, if it has them.
fn prefix(text: &str) -> Option<u128> {
    let hex = text.split_once(':')?.1.get(..32)?;
    hex.bytes().all(|b| b.is_ascii_hexdigit()).then(|| u128::from_str_radix(hex, 16).ok()).flatten()
}

impl ContentsBuilder {
    fn id(&mut self, text: &str) -> Result<DigestId> {
        let key = prefix(text);
        if let Some(&id) = key.and_then(|k| self.ids.get(&k)) {
            if self.contents.digest(id).as_str() == text {
                return Ok(id);
            }
        }
        if let Some(&id) = self.shared_prefix.get(text) {
            return Ok(id);
        }
        let digest: Digest = parse_stored("digest", text.to_owned())?;
        let id = DigestId::try_from(self.contents.digests.len())
            .map_err(|_| super::MetaError::Db("a repository names more than 2^32 digests".into()))?;
        match key {
            Some(k) if !self.ids.contains_key(&k) => {
                self.ids.insert(k, id);
            }
            _ => {
                self.shared_prefix.insert(text.into(), id);
            }
        }
        self.contents.digests.push(digest);
        Ok(id)
    }

    /// A row of [`MANIFESTS`].
    pub(crate) fn manifest(
        &mut self,
        digest: &str,
        subject: Option<&str>,
        size: i64,
        created_at: i64,
    ) -> Result<()> {
        let digest = self.id(digest)?;
        let subject = subject.map(|s| self.id(s)).transpose()?;
        self.contents.manifests.push(StoredManifest {
            digest,
            subject,
            size: size.max(0) as u64,
            created_at,
        });
        Ok(())
    }

    /// A row of [`TAGS`].
    pub(crate) fn tag(&mut self, tag: StoredTag) {
        self.contents.tags.push(tag);
    }

    /// A row of [`EDGES`].
    pub(crate) fn edge(&mut self, parent: &str, child: &str, manifest: bool) -> Result<()> {
        let (parent, child) = (self.id(parent)?, self.id(child)?);
        self.contents.edges.push(Edge { parent, child, manifest });
        Ok(())
    }

    /// A row of [`LINKS`].
    pub(crate) fn link(&mut self, digest: &str, size: i64, linked_at: i64) -> Result<()> {
        let digest = self.id(digest)?;
        self.contents.links.push(Link { digest, size: size.max(0) as u64, linked_at });
        Ok(())
    }

    pub(crate) fn finish(self) -> RepoContents {
        let mut c = self.contents;
        c.digests.shrink_to_fit();
        c.manifests.shrink_to_fit();
        c.edges.shrink_to_fit();
        c.links.shrink_to_fit();
        c
    }
}

#[async_trait::async_trait]
pub trait Collect:
    super::browse::Browse + super::runs::RunLog + super::scrub::Scrub + super::queue::ReviewQueue
{
    /// The repository's manifests, tags, edges and links.
    async fn repo_contents(&self, repo: &RepoName) -> Result<RepoContents>;
    /// Removes each tag (in one transaction) that still names the digest it is given with.
    /// Whether each was.
    async fn collect_tags(&self, repo: &RepoName, tags: Vec<(String, Digest)>) -> Result<Vec<bool>>;
    /// Deletes each manifest (in order, in one transaction) that is still unreachable by what is
    /// stored: untagged, no child of a manifest in the repository, its subject (if any) not
    /// there, created before `before`. Whether each was.
    async fn collect_manifests(
        &self,
        repo: &RepoName,
        digests: Vec<Digest>,
        before: i64,
    ) -> Result<Vec<bool>>;
    /// Removes each link (in one transaction) no manifest in the repository needs, linked before
    /// `before`. Whether each was.
    async fn collect_links(&self, repo: &RepoName, digests: Vec<Digest>, before: i64) -> Result<Vec<bool>>;
    /// How many links and manifests, in all repositories, use the digest.
    async fn blob_uses(&self, digest: &Digest) -> Result<u64>;
    /// Live blobs nothing uses, recorded before `before`, sorted after `after`: at most `limit`.
    async fn unused_blobs(
        &self,
        before: i64,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>>;
    /// Releases each blob ([`super::sweep`]) nothing uses, recorded before `before` (in one
    /// transaction). Whether each was.
    async fn release_unused(&self, digests: Vec<Digest>, before: i64) -> Result<Vec<bool>>;
    /// Takes (or renews) the lease `name` for `holder` until `until` (unix milliseconds), unless
    /// another holder's has not lapsed by `now`; `Err` names that holder.
    async fn claim_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<std::result::Result<(), String>>;
    /// Gives the lease up, if `holder` (a holder's name, or how its name starts) still has it.
    async fn end_lease(&self, name: &str, holder: &str) -> Result<()>;
}

/// Parameters: name, holder, until, now (unix milliseconds).
pub(crate) const CLAIM_LEASE: &str = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
     WHERE leases.expires_at < $4 OR leases.holder = excluded.holder";
/// Parameter: name.
pub(crate) const LEASE_HOLDER: &str = "SELECT holder FROM leases WHERE name = $1";
/// Parameters: name, the holder's name or its start.
pub(crate) const END_LEASE: &str =
    "DELETE FROM leases WHERE name = $1 AND substr(holder, 1, length($2)) = $2";

/// Links a blob to a repository, or marks an existing link as linked now: a blob pushed again
/// is as young as the push. Parameters: repository id, digest, now (unix seconds).
pub(crate) const LINK: &str =
    "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3)
     ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at
     WHERE repository_blobs.created_at < excluded.created_at";

/// A manifest pushed again is as young as the push. Parameters: now (unix seconds), repository
/// id, digest.
pub(crate) const REFRESH_MANIFEST: &str =
    "UPDATE manifests SET created_at = $1 WHERE repository_id = $2 AND digest = $3 AND created_at < $1";

/// A blob's link a client asked about (a HEAD, before it pushes a manifest that needs the blob)
/// is made young, if it was linked more than a minute ago. Parameters: now (unix seconds),
/// digest, repository name.
pub(crate) const TOUCH_LINK: &str = "UPDATE repository_blobs SET created_at = $1
     WHERE digest = $2 AND created_at < CAST($1 AS BIGINT) - 60
       AND repository_id = (SELECT id FROM repositories WHERE name = $3)";

/// What a mark needs of a repository. Parameter: repository id.
pub(crate) const MANIFESTS: &str =
    "SELECT digest, subject, size, created_at FROM manifests WHERE repository_id = $1";
pub(crate) const TAGS: &str = super::browse::tags_of_repository!();
pub(crate) const EDGES: &str = "SELECT manifest_digest, child_digest, kind = 'manifest'
     FROM manifest_references WHERE repository_id = $1";
pub(crate) const LINKS: &str = "SELECT rb.digest, b.size, rb.created_at
     FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = $1";

/// A tag retention removes, unless it moved since. Parameters: repository id, tag, digest.
pub(crate) const COLLECT_TAG: &str =
    "DELETE FROM tags WHERE repository_id = $1 AND name = $2 AND digest = $3";

/// When a manifest was last pulled, unless a later pull is recorded. Parameters: pulled at (unix
/// seconds), repository name, digest.
pub(crate) const RECORD_PULL: &str = "UPDATE manifests SET pulled_at = $1
     WHERE repository_id = (SELECT id FROM repositories WHERE name = $2) AND digest = $3
       AND (pulled_at IS NULL OR pulled_at < $1)";

/// Parameters: repository id, digest, created before (unix seconds).
pub(crate) const COLLECT_MANIFEST: &str = "DELETE FROM manifests
     WHERE repository_id = $1 AND digest = $2 AND created_at < $3
       AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = $1 AND t.digest = $2)
       AND NOT EXISTS (SELECT 1 FROM manifest_references r
                       WHERE r.repository_id = $1 AND r.child_digest = $2 AND r.kind = 'manifest')
       AND (subject IS NULL
            OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = $1 AND s.digest = manifests.subject))";

/// Parameters: repository id, digest, linked before (unix seconds).
pub(crate) const COLLECT_LINK: &str = "DELETE FROM repository_blobs
     WHERE repository_id = $1 AND digest = $2 AND created_at < $3
       AND NOT EXISTS (SELECT 1 FROM manifest_references r
                       WHERE r.repository_id = $1 AND r.child_digest = $2 AND r.kind = 'blob')";

/// Parameter: digest.
pub(crate) const BLOB_USES: &str = "SELECT (SELECT count(*) FROM repository_blobs WHERE digest = $1)
          + (SELECT count(*) FROM manifests WHERE digest = $1)";

/// Parameters: recorded before (unix seconds), after (digest, '' for the start), limit.
pub(crate) const UNUSED_BLOBS: &str = "SELECT b.digest, b.size FROM blobs b
     WHERE b.state = 'live' AND b.created_at < $1 AND b.digest > $2
       AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
       AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest)
     ORDER BY b.digest LIMIT $3";

/// Parameters: now (unix milliseconds), digest, recorded before (unix seconds).
pub(crate) const RELEASE_UNUSED: &str = "UPDATE blobs SET state = 'deleting', state_at = $1
     WHERE digest = $2 AND state = 'live' AND created_at < $3
       AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $2)
       AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = $2)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_kept_once_and_told_apart_by_their_whole_text() {
        let shared = "0123456789abcdef".repeat(2);
        let (a, b) =
            (format!("sha256:{shared}{}", "a".repeat(32)), format!("sha256:{shared}{}", "b".repeat(32)));
        let c = format!("sha256:{}", "c".repeat(64));
        let mut builder = ContentsBuilder::default();
        builder.manifest(&a, None, 10, 1).unwrap();
        builder.manifest(&b, Some(&a), 20, 2).unwrap();
        builder.edge(&a, &c, false).unwrap();
        builder.edge(&b, &c, false).unwrap();
        builder.link(&c, 30, 3).unwrap();
        assert!(
            builder.manifest("sha256:not-hex", None, 1, 1).is_err(),
            "a stored digest that does not parse"
        );
        let contents = builder.finish();
        // Three digests, though two share their first 128 bits and one is named three times.
        assert_eq!(contents.digests.len(), 3);
        let text = |id: DigestId| contents.digest(id).as_str().to_owned();
        let [first, second] = [&contents.manifests[0], &contents.manifests[1]];
        assert_eq!((text(first.digest), text(second.digest)), (a.clone(), b));
        assert_eq!(second.subject.map(text), Some(a));
        assert_eq!(contents.edges[0].child, contents.edges[1].child);
        assert_eq!(text(contents.links[0].digest), c);
        assert_eq!(prefix("sha256:short"), None);
        assert_eq!(prefix(&format!("sha256:+{}", "1".repeat(31))), None, "hex digits only");
    }
}
