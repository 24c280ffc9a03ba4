//! Where a source repository goes at the destination: its name with the source's prefix
//! replaced by the destination's.
//!
//! ```text
//! source prefix "library", destination prefix "mirror/hub":
//!     library/nginx      ─► mirror/hub/nginx
//!     library/team/app   ─► mirror/hub/team/app
//!     other/app          ─► not replicated (outside the source's prefix)
//! ```
//! Without prefixes a repository keeps its name.

use berth_core::oci::RepoName;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// Only repositories under it are replicated, without it at the destination ("" for all).
    from: String,
    /// Put before each name at the destination ("" for none).
    to: String,
}

impl Prefixes {
    /// Each prefix is a repository path (`mirror`, `mirror/hub`; a trailing `/` is dropped).
    pub fn new(from: &str, to: &str) -> anyhow::Result<Prefixes> {
        let check = |which: &str, p: &str| -> anyhow::Result<String> {
            let p = p.trim_end_matches('/');
            if !p.is_empty() {
                p.parse::<RepoName>().map_err(|e| anyhow::anyhow!("{which} prefix {p:?}: {e}"))?;
            }
            Ok(p.to_owned())
        };
        Ok(Prefixes { from: check("the source", from)?, to: check("the destination", to)? })
    }

    /// Whether a source repository is replicated at all.
    pub fn covers(&self, repo: &str) -> bool {
        self.relative(repo).is_some()
    }

    /// `repo` without the source's prefix; none when it lies outside it.
    fn relative<'a>(&self, repo: &'a str) -> Option<&'a str> {
        if self.from.is_empty() {
            return Some(repo);
        }
        repo.strip_prefix(self.from.as_str())?.strip_prefix('/').filter(|r| !r.is_empty())
    }

    /// The destination's name for the source repository `repo`.
    pub fn destination(&self, repo: &RepoName) -> anyhow::Result<RepoName> {
        let Some(rest) = self.relative(repo.as_str()) else {
            anyhow::bail!("{repo} is outside the source prefix {:?}", self.from);
        };
        if self.to.is_empty() && self.from.is_empty() {
            return Ok(repo.clone());
        }
        let name = if self.to.is_empty() { rest.to_owned() } else { format!("{}/{rest}", self.to) };
        name.parse().map_err(|e| anyhow::anyhow!("{repo} at the destination is {name:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn names_keep_their_path_below_the_prefixes() {
        let p = Prefixes::new("library/", "mirror/hub").unwrap();
        assert_eq!(p.destination(&name("library/nginx")).unwrap(), name("mirror/hub/nginx"));
        assert_eq!(p.destination(&name("library/team/app")).unwrap(), name("mirror/hub/team/app"));
        assert!(p.covers("library/nginx"));
        for outside in ["other/app", "library", "libraryx/app"] {
            assert!(!p.covers(outside), "{outside}");
            assert!(p.destination(&name(outside)).is_err(), "{outside}");
        }
    }

    #[test]
    fn one_prefix_alone_adds_or_strips() {
        let add = Prefixes::new("", "mirror").unwrap();
        assert_eq!(add.destination(&name("team/app")).unwrap(), name("mirror/team/app"));
        let strip = Prefixes::new("team", "").unwrap();
        assert_eq!(strip.destination(&name("team/app")).unwrap(), name("app"));
        let none = Prefixes::default();
        assert_eq!(none.destination(&name("team/app")).unwrap(), name("team/app"));
        assert!(none.covers("anything"));
    }

    #[test]
    fn a_prefix_must_be_a_repository_path() {
        assert!(Prefixes::new("Upper", "").is_err());
        assert!(Prefixes::new("", "a//b").is_err());
        let long = "a".repeat(250);
        let p = Prefixes::new("", &long).unwrap();
        assert!(p.destination(&name(&"b".repeat(10))).is_err(), "too long at the destination");
    }
}
