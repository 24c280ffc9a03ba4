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

use crate::meta::browse::StoredTag;

/// A tag retention removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    /// Its index in the tags given.
    pub index: usize,
    pub reason: String,
}

/// What retention decides for a tag: removed or kept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Its index in the tags given.
    pub index: usize,
    pub removed: bool,
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
    /// Tag globs, each with how it was written.
    protect: Vec<(Glob, String)>,
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
            protect: p.protect.iter().map(|g| (Glob::new(g), g.clone())).collect(),
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
        self.decide(tags, now)
            .into_iter()
            .filter(|d| d.removed)
            .map(|d| Doomed { index: d.index, reason: d.reason })
            .collect()
    }

    /// What this policy decides for each of `tags` at `now` (unix seconds), and why; by name.
    pub fn decide(&self, tags: &[StoredTag], now: i64) -> Vec<Decision> {
        let at = |why: String| format!("retention.policies[{}]: {why}", self.index);
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.rules.len()];
        let mut decisions: Vec<Decision> = Vec::with_capacity(tags.len());
        for (i, t) in tags.iter().enumerate() {
            match self.rules.iter().position(|(s, _, _)| s.matches(&t.name)) {
                // A protected tag still counts among its rule's tags (it takes one of the N most
                // recent, say); it is only never removed.
                Some(g) => groups[g].push(i),
                None => {
                    let why = self.protection(t).unwrap_or_else(|| "no tag rule matches it".into());
                    decisions.push(Decision { index: i, removed: false, reason: at(why) });
                }
            }
        }
        for (g, members) in groups.iter().enumerate() {
            let (_, keep, shown) = &self.rules[g];
            let rule = format!("tag rule {} ({shown})", g + 1);
            let kept = kept(keep, tags, members, now);
            for &i in members {
                let (removed, why) = if let Some(why) = self.protection(&tags[i]) {
                    (false, why)
                } else if kept.contains(&i) {
                    (false, format!("{rule} keeps it: {keep}"))
                } else {
                    (true, format!("{rule} keeps only tags {keep}"))
                };
                decisions.push(Decision { index: i, removed, reason: at(why) });
            }
        }
        // At least `minimum_tags` stay: spare the most recently pushed first.
        let removed = decisions.iter().filter(|d| d.removed).count();
        let spare = self.minimum_tags.saturating_sub(tags.len() - removed);
        if spare > 0 {
            let mut doomed: Vec<&mut Decision> = decisions.iter_mut().filter(|d| d.removed).collect();
            doomed.sort_by_key(|d| (std::cmp::Reverse(tags[d.index].pushed_at), tags[d.index].name.clone()));
            for d in doomed.into_iter().take(spare) {
                d.removed = false;
                d.reason = at(format!("minimum_tags {} keeps it", self.minimum_tags));
            }
        }
        decisions.sort_by(|a, b| tags[a.index].name.cmp(&tags[b.index].name));
        decisions
    }

    /// What protects the tag, if anything: a tag glob, or an annotation of its manifest.
    fn protection(&self, tag: &StoredTag) -> Option<String> {
        if let Some((_, glob)) = self.protect.iter().find(|(p, _)| p.matches(&tag.name)) {
            return Some(format!("protected by {glob:?}"));
        }
        self.annotation(tag).map(|a| format!("protected by its manifest's annotation {a}"))
    }

    /// The protecting annotation the tag's manifest carries, as configured.
    fn annotation(&self, tag: &StoredTag) -> Option<String> {
        if self.protect_annotations.is_empty() {
            return None;
        }
        let Some(Ok(serde_json::Value::Object(found))) =
            tag.annotations.as_deref().map(serde_json::from_str::<serde_json::Value>)
        else {
            return None;
        };
        self.protect_annotations.iter().find_map(|(key, want)| match (found.get(key), want) {
            (Some(_), None) => Some(key.clone()),
            (Some(serde_json::Value::String(v)), Some(want)) if v == want => Some(format!("{key}={want}")),
            _ => None,
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
