//! Which requests an upstream serves, and under which names.
//!
//! ```text
//! /v2/docker.io/library/nginx/...        path form          ─┐
//! /v2/hub/nginx/...                      alias + library/    ├─► upstream docker.io, remote library/nginx,
//! /v2/library/nginx/...?ns=docker.io     containerd mirror   │   cached locally as docker.io/library/nginx
//! /v2/nginx/...                          registry-mirrors    ─┘   (the default upstream)
//! ```
//! Every form of one image shares one cache entry: the local name is always `<upstream>/<remote>`.
//! A name no upstream serves (or whose upstream's filters reject it) is an ordinary local
//! repository that accepts pushes.

use berth_core::config::UpstreamConfig;
use berth_core::oci::RepoName;

/// A request for proxied content: the upstream (an index into the configured list), the name
/// there, and the name of the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: usize,
    pub remote: RepoName,
    pub local: RepoName,
}

struct Entry {
    names: Vec<String>,
    library: bool,
    include: Vec<Glob>,
    exclude: Vec<Glob>,
}

pub struct Routes {
    entries: Vec<Entry>,
    default: Option<usize>,
}

impl Routes {
    pub fn new(upstreams: &[UpstreamConfig]) -> Routes {
        let entries = upstreams
            .iter()
            .map(|u| Entry {
                names: std::iter::once(&u.name).chain(&u.aliases).cloned().collect(),
                library: u.library_rule(),
                include: u.include.iter().map(|p| Glob::new(p)).collect(),
                exclude: u.exclude.iter().map(|p| Glob::new(p)).collect(),
            })
            .collect();
        Routes { entries, default: upstreams.iter().position(|u| u.default) }
    }

    /// The upstream that serves `repo` (asked for with the mirror query `ns`, if any), or `None`
    /// for a local repository.
    pub fn resolve(&self, repo: &RepoName, ns: Option<&str>) -> Option<Target> {
        if let Some(ns) = ns {
            let i = self.entries.iter().position(|e| e.names.iter().any(|n| n == ns))?;
            return self.target(i, repo.as_str());
        }
        let name = repo.as_str();
        if let Some((first, rest)) = name.split_once('/') {
            if let Some(i) = self.entries.iter().position(|e| e.names.iter().any(|n| n == first)) {
                return self.target(i, rest);
            }
        }
        self.target(self.default?, name)
    }

    fn target(&self, i: usize, name: &str) -> Option<Target> {
        let e = &self.entries[i];
        let remote =
            if e.library && !name.contains('/') { format!("library/{name}") } else { name.to_owned() };
        let admitted = (e.include.is_empty() || e.include.iter().any(|g| g.matches(&remote)))
            && !e.exclude.iter().any(|g| g.matches(&remote));
        if !admitted {
            return None;
        }
        let local = format!("{}/{remote}", e.names[0]).parse().ok()?;
        Some(Target { upstream: i, remote: remote.parse().ok()?, local })
    }
}

pub use berth_core::glob::Glob;

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn routes() -> Routes {
        let mut hub = UpstreamConfig::new("docker.io", "https://registry-1.docker.io");
        hub.aliases = vec!["hub".into()];
        hub.default = true;
        hub.exclude = vec!["private/**".into()];
        let mut ghcr = UpstreamConfig::new("ghcr.io", "https://ghcr.io");
        ghcr.include = vec!["berth-dev/*".into()];
        Routes::new(&[hub, ghcr])
    }

    fn resolve(r: &Routes, name: &str, ns: Option<&str>) -> Option<(usize, String, String)> {
        r.resolve(&repo(name), ns).map(|t| (t.upstream, t.remote.to_string(), t.local.to_string()))
    }

    #[test]
    fn every_form_of_one_image_shares_one_cache_name() {
        let r = routes();
        let nginx = Some((0, "library/nginx".to_owned(), "docker.io/library/nginx".to_owned()));
        assert_eq!(resolve(&r, "docker.io/library/nginx", None), nginx);
        assert_eq!(resolve(&r, "docker.io/nginx", None), nginx);
        assert_eq!(resolve(&r, "hub/nginx", None), nginx);
        assert_eq!(resolve(&r, "library/nginx", Some("docker.io")), nginx);
        assert_eq!(resolve(&r, "nginx", None), nginx);
        assert_eq!(resolve(&r, "bitnami/redis", None).unwrap().2, "docker.io/bitnami/redis");
    }

    #[test]
    fn filters_and_unknown_names_leave_repositories_local() {
        let r = routes();
        assert_eq!(resolve(&r, "ghcr.io/berth-dev/berth", None).unwrap().2, "ghcr.io/berth-dev/berth");
        // ghcr.io has no library rule and only admits berth-dev/*.
        assert_eq!(resolve(&r, "ghcr.io/other/x", None), None);
        assert_eq!(resolve(&r, "ghcr.io/berth-dev/a/b", None), None);
        // The default upstream excludes private/**, so those names are pushable here.
        assert_eq!(resolve(&r, "private/team/app", None), None);
        assert_eq!(resolve(&r, "app", Some("quay.io")), None);
        let no_default = Routes::new(&[UpstreamConfig::new("quay.io", "https://quay.io")]);
        assert_eq!(resolve(&no_default, "team/app", None), None);
    }
}
