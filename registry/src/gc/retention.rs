//! Retention: which of a repository's tags its policy removes, and why (pure; the collection
//! removes them, then marks from the tags that stay).
//!
//! ```text
//! tags ─► each to the first selector that matches it (none: kept)
//!      ─► per selector, its rule over the tags it matched (most recently pushed/pulled N,
//!         pushed/pulled within D, any/all of rules) ─► the rest are candidates
//!      ─► protected tags (by name, or by their manifest's annotations) spared ─► minimum_tags: the newest pushed candidates spared
//! ```

use std::collections::HashSet;

use berth_core::config::retention::{Keep, Referrers, RetentionConfig, RetentionPolicy, TagMatch};
use berth_core::glob::Glob;

use crate::meta::gc::StoredTag;

/// A tag retention removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    /// Its index in the tags given.
    pub index: usize,
    pub reason: String,
}

enum Selector {
    Glob(Glob),
    Regex(regex_lite::Regex),
}

impl Selector {
    fn matches(&self, tag: &str) -> bool {
        match self {
            Selector::Glob(g) => g.matches(tag),
            Selector::Regex(r) => r.is_match(tag),
        }
    }
}

/// One policy, ready to apply.
pub struct Policy {
    /// Its place in the config (`retention.policies[i]`).
    pub index: usize,
    repositories: Vec<Glob>,
    rules: Vec<(Selector, Keep, String)>,
    protect: Vec<Glob>,
    /// Annotation keys, each with the value it must have (any, when `None`).
    protect_annotations: Vec<(String, Option<String>)>,
    minimum_tags: usize,
    /// Untagged manifests stay this long (seconds).
    pub untagged_for: Option<i64>,
    pub keep_referrers: bool,
    pub dry_run: bool,
}

/// The configured policies; the first whose repositories match a repository decides for it.
#[derive(Default)]
pub struct Policies(Vec<Policy>);

impl Policies {
    pub fn new(c: &RetentionConfig) -> Result<Policies, String> {
        c.policies.iter().enumerate().map(|(i, p)| Policy::new(i, p)).collect::<Result<_, _>>().map(Policies)
    }

    pub fn for_repo(&self, repo: &str) -> Option<&Policy> {
        self.0.iter().find(|p| p.repositories.iter().any(|g| g.matches(repo)))
    }
}

impl Policy {
    fn new(index: usize, p: &RetentionPolicy) -> Result<Policy, String> {
        let rules = p
            .tags
            .iter()
            .map(|t| {
                let (selector, shown) = match &t.select {
                    TagMatch::Glob(g) => (Selector::Glob(Glob::new(g)), format!("glob {g:?}")),
                    TagMatch::Regex(r) => (
                        Selector::Regex(regex_lite::Regex::new(r).map_err(|e| format!("regex {r:?}: {e}"))?),
                        format!("regex {r:?}"),
                    ),
                };
                Ok((selector, t.keep.clone(), shown))
            })
            .collect::<Result<_, String>>()?;
        Ok(Policy {
            index,
            repositories: p.repositories.iter().map(|r| Glob::new(r)).collect(),
            rules,
            protect: p.protect.iter().map(|g| Glob::new(g)).collect(),
            protect_annotations: p
                .protect_annotations
                .iter()
                .map(|a| match a.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (a.clone(), None),
                })
                .collect(),
            minimum_tags: p.minimum_tags as usize,
            untagged_for: p.untagged_for.map(|d| d.as_secs() as i64),
            keep_referrers: p.referrers == Referrers::Keep,
            dry_run: p.dry_run,
        })
    }

    /// The tags this policy removes from `tags`, at `now` (unix seconds).
    pub fn doomed(&self, tags: &[StoredTag], now: i64) -> Vec<Doomed> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.rules.len()];
        for (i, t) in tags.iter().enumerate() {
            if let Some(g) = self.rules.iter().position(|(s, _, _)| s.matches(&t.name)) {
                groups[g].push(i);
            }
        }
        let mut doomed: Vec<Doomed> = Vec::new();
        for (g, members) in groups.iter().enumerate() {
            let (_, keep, shown) = &self.rules[g];
            let kept = kept(keep, tags, members, now);
            for &i in members.iter().filter(|i| !kept.contains(i)) {
                if self.protect.iter().any(|p| p.matches(&tags[i].name)) || self.annotated(&tags[i]) {
                    continue;
                }
                doomed.push(Doomed {
                    index: i,
                    reason: format!(
                        "retention.policies[{}]: tag rule {} ({shown}) keeps only tags {keep}",
                        self.index,
                        g + 1
                    ),
                });
            }
        }
        // At least `minimum_tags` stay: spare the most recently pushed first.
        let spare = self.minimum_tags.saturating_sub(tags.len() - doomed.len());
        if spare > 0 {
            doomed.sort_by_key(|d| (std::cmp::Reverse(tags[d.index].pushed_at), tags[d.index].name.clone()));
            doomed.drain(..spare.min(doomed.len()));
        }
        doomed.sort_by(|a, b| tags[a.index].name.cmp(&tags[b.index].name));
        doomed
    }
}

impl Policy {
    /// Whether the tag's manifest carries one of the protecting annotations.
    fn annotated(&self, tag: &StoredTag) -> bool {
        if self.protect_annotations.is_empty() {
            return false;
        }
        let Some(Ok(serde_json::Value::Object(found))) =
            tag.annotations.as_deref().map(serde_json::from_str::<serde_json::Value>)
        else {
            return false;
        };
        self.protect_annotations.iter().any(|(key, want)| match (found.get(key), want) {
            (Some(_), None) => true,
            (Some(serde_json::Value::String(v)), Some(want)) => v == want,
            _ => false,
        })
    }
}

/// The members `keep` keeps.
fn kept(keep: &Keep, tags: &[StoredTag], members: &[usize], now: i64) -> HashSet<usize> {
    let pulled = |i: usize| tags[i].pulled_at.unwrap_or(tags[i].pushed_at);
    let newest = |n: u32, at: &dyn Fn(usize) -> i64| {
        let mut by: Vec<usize> = members.to_vec();
        // Newest first; ties by name, so the outcome never depends on the order read.
        by.sort_by(|a, b| at(*b).cmp(&at(*a)).then_with(|| tags[*a].name.cmp(&tags[*b].name)));
        by.into_iter().take(n as usize).collect()
    };
    let within = |d: &std::time::Duration, at: &dyn Fn(usize) -> i64| {
        let since = now - d.as_secs() as i64;
        members.iter().copied().filter(|i| at(*i) >= since).collect()
    };
    match keep {
        Keep::MostRecentlyPushed(n) => newest(*n, &|i| tags[i].pushed_at),
        Keep::MostRecentlyPulled(n) => newest(*n, &pulled),
        Keep::PushedWithin(d) => within(d, &|i| tags[i].pushed_at),
        Keep::PulledWithin(d) => within(d, &pulled),
        Keep::Any(rules) => rules.iter().flat_map(|r| kept(r, tags, members, now)).collect(),
        Keep::All(rules) => {
            let mut sets = rules.iter().map(|r| kept(r, tags, members, now));
            let first = sets.next().unwrap_or_default();
            sets.fold(first, |acc, s| acc.intersection(&s).copied().collect())
        }
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
