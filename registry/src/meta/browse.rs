//! What the UI's repository page reads ([`Browse`]): one page of a repository's tags in the order
//! asked for, and the sizes of the images it shows. Each is a query whose cost follows the page,
//! not the repository: a page of a repository of a hundred thousand manifests reads fifty tags and
//! walks only the manifests those reach (the page once read every manifest, edge and link of the
//! repository on each view).

use std::collections::HashMap;

use super::{parse_stored, Result};
use berth_core::oci::{Digest, RepoName};

/// A repository's tags, each with its manifest's last pull and annotations (the mark's and the
/// UI's pages' query). Parameter: repository id.
macro_rules! tags_of_repository {
    () => {
        "SELECT t.name, t.digest, t.updated_at, m.pulled_at, m.annotations
         FROM tags t JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
         WHERE t.repository_id = $1"
    };
}
pub(crate) use tags_of_repository;

/// A page ordered by the tags' own columns: the page is read from an index of `tags` (the
/// offset walks the index alone), and only its rows are joined to their manifests.
macro_rules! tag_page_by_tag {
    ($order:literal) => {
        concat!(
            "SELECT t.name, t.digest, t.updated_at, m.pulled_at, m.annotations
             FROM (SELECT name, digest, updated_at FROM tags WHERE repository_id = $1
                   ORDER BY ",
            $order,
            " LIMIT $2 OFFSET $3) AS t
             JOIN manifests m ON m.repository_id = $1 AND m.digest = t.digest
             ORDER BY ",
            $order
        )
    };
}

/// How a page's tags are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOrder {
    /// Last pushed first.
    Pushed,
    /// Last pulled first; never pulled last (newest pushed first among them).
    Pulled,
    Name,
}

impl TagOrder {
    pub const ALL: [TagOrder; 3] = [TagOrder::Pushed, TagOrder::Pulled, TagOrder::Name];

    pub fn parse(s: Option<&str>) -> TagOrder {
        match s {
            Some("pulled") => TagOrder::Pulled,
            Some("name") => TagOrder::Name,
            _ => TagOrder::Pushed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TagOrder::Pushed => "pushed",
            TagOrder::Pulled => "pulled",
            TagOrder::Name => "name",
        }
    }

    /// The page's query in this order. Parameters: repository id, limit, offset. Ties fall to
    /// the name, so pages do not overlap. Each order walks an index (`0017_tag_pages.sql`), so
    /// a first page costs about the same in a repository of a hundred tags and of a hundred
    /// thousand.
    pub(crate) fn page_sql(self) -> &'static str {
        match self {
            TagOrder::Pushed => tag_page_by_tag!("updated_at DESC, name"),
            // Manifests walked from an index by their last pull (never pulled last on both
            // engines; SQLite's CROSS JOIN keeps that walk outermost), each joined to its tags:
            // only tags of one pull second (or all never pulled) are sorted among themselves.
            TagOrder::Pulled => {
                "SELECT t.name, t.digest, t.updated_at, m.pulled_at, m.annotations
                 FROM manifests m CROSS JOIN tags t
                 WHERE m.repository_id = $1 AND t.repository_id = m.repository_id AND t.digest = m.digest
                 ORDER BY m.pulled_at DESC NULLS LAST, t.updated_at DESC, t.name LIMIT $2 OFFSET $3"
            }
            TagOrder::Name => tag_page_by_tag!("name"),
        }
    }
}

/// A tag, with when it was pushed (last set) and when its manifest was last pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTag {
    pub name: String,
    pub digest: Digest,
    /// Unix seconds.
    pub pushed_at: i64,
    /// Unix seconds; `None` when never pulled (since pulls were recorded).
    pub pulled_at: Option<i64>,
    /// The annotations of the manifest it names, as JSON.
    pub annotations: Option<String>,
}

impl StoredTag {
    /// From a row of [`tags_of_repository`].
    pub(crate) fn from_row(
        name: String,
        digest: String,
        pushed_at: i64,
        pulled_at: Option<i64>,
        annotations: Option<String>,
    ) -> Result<StoredTag> {
        Ok(StoredTag { name, digest: parse_stored("digest", digest)?, pushed_at, pulled_at, annotations })
    }
}

/// One page of a repository's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPage {
    /// How many tags the repository has.
    pub total: u64,
    pub tags: Vec<StoredTag>,
}

#[async_trait::async_trait]
pub trait Browse: Send + Sync {
    /// At most `limit` of `repo`'s tags from `offset` in `order`; `None` when the repository
    /// holds nothing (no tag, manifest or blob).
    async fn tag_page(
        &self,
        repo: &RepoName,
        order: TagOrder,
        offset: u64,
        limit: u64,
    ) -> Result<Option<TagPage>>;

    /// For each of `digests` in `repo`: the bytes of every distinct blob it needs, through its
    /// child manifests (an index counts a blob its platforms share once). A digest that needs
    /// nothing is left out.
    async fn image_sizes(&self, repo: &RepoName, digests: Vec<Digest>) -> Result<HashMap<Digest, u64>>;
}

/// Parameter: repository id.
pub(crate) const TAG_COUNT: &str = "SELECT count(*) FROM tags WHERE repository_id = $1";
/// A row when the repository holds a manifest or a blob. Parameter: repository id.
pub(crate) const HOLDS_ANY: &str = "SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repository_id = $1)
     OR EXISTS (SELECT 1 FROM repository_blobs WHERE repository_id = $1)";

/// The sizes query, its roots read by `$roots` (a query of one column `d`, from parameter 1).
/// Parameter 2: repository id. A walk the database makes with a table of its own (`UNION` keeps
/// each manifest once per root), however deep anyone nests indexes.
macro_rules! image_sizes {
    ($roots:literal) => {
        concat!(
            "WITH RECURSIVE reach(root, digest) AS (
                 SELECT d, d FROM (",
            $roots,
            ") AS roots
                 UNION
                 SELECT reach.root, r.child_digest FROM reach JOIN manifest_references r
                   ON r.repository_id = $2 AND r.manifest_digest = reach.digest AND r.kind = 'manifest'
             ),
             needs(root, digest) AS (
                 SELECT DISTINCT reach.root, r.child_digest FROM reach JOIN manifest_references r
                   ON r.repository_id = $2 AND r.manifest_digest = reach.digest AND r.kind = 'blob'
             )
             SELECT needs.root, CAST(sum(b.size) AS BIGINT)
             FROM needs JOIN blobs b ON b.digest = needs.digest GROUP BY needs.root"
        )
    };
}

/// Parameter 1: the roots as a JSON array of digests.
pub(crate) const IMAGE_SIZES_SQLITE: &str = image_sizes!("SELECT value AS d FROM json_each($1)");
/// Parameter 1: the roots as an array of digests.
#[cfg(feature = "postgres")]
pub(crate) const IMAGE_SIZES_POSTGRES: &str = image_sizes!("SELECT unnest(CAST($1 AS TEXT[])) AS d");

/// `offset` and `limit` as the engines take them.
pub(crate) fn window(offset: u64, limit: u64) -> (i64, i64) {
    (i64::try_from(limit).unwrap_or(i64::MAX), i64::try_from(offset).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_from_their_names() {
        for o in TagOrder::ALL {
            assert_eq!(TagOrder::parse(Some(o.as_str())), o);
        }
        assert_eq!(TagOrder::parse(Some("nonsense")), TagOrder::Pushed);
        assert_eq!(TagOrder::parse(None), TagOrder::Pushed);
    }
}
