//! The mark: what in one repository is reachable, in memory, from what the repository holds.
//!
//! Roots are tagged manifests and manifests younger than the grace (and every manifest when
//! untagged ones are kept; every referrer when referrers are). From a reachable manifest, its child manifests (an index's) and its
//! blobs (config, layers) are reachable; a referrer is reachable while its subject is. Links no
//! reachable manifest needs, linked before the grace, are unreachable too.

use std::collections::{HashMap, HashSet};

use berth_core::oci::Digest;

use crate::meta::gc::RepoContents;

/// Why something is removed, as the report and the log say it.
pub const UNTAGGED: &str = "untagged and needed by no tagged manifest";
pub const SUBJECT_GONE: &str = "a referrer whose subject is gone";
pub const WITH_SUBJECT: &str = "a referrer of a manifest that goes";
pub const UNREFERENCED: &str = "a blob no kept manifest needs";

/// What one repository's mark found removable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    /// Manifests, each with its reason, parents before their children and subjects before their
    /// referrers (the order their removals' checks pass in).
    pub manifests: Vec<(Digest, u64, &'static str)>,
    /// Links, with their blob's size.
    pub links: Vec<(Digest, u64)>,
}

/// What is kept besides what the tags reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roots {
    /// Manifests created at or after this (unix seconds) are kept.
    pub manifests_since: i64,
    /// Links made at or after this are kept.
    pub links_since: i64,
    pub keep_untagged: bool,
    /// Referrers stay whatever becomes of their subject.
    pub keep_referrers: bool,
}

impl Roots {
    /// The grace alone: what is younger than `cutoff` is kept.
    pub fn since(cutoff: i64) -> Roots {
        Roots { manifests_since: cutoff, links_since: cutoff, keep_untagged: false, keep_referrers: false }
    }
}

/// Marks `c` from its tags and `roots`.
pub fn mark(c: &RepoContents, roots: &Roots) -> Marked {
    let mut children: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    let mut blobs: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for e in &c.edges {
        let to = if e.manifest { &mut children } else { &mut blobs };
        to.entry(&e.parent).or_default().push(&e.child);
    }
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for m in &c.manifests {
        if let Some(s) = &m.subject {
            referrers.entry(s).or_default().push(&m.digest);
        }
    }
    let present: HashSet<&Digest> = c.manifests.iter().map(|m| &m.digest).collect();
    let tagged: HashSet<&Digest> = c.tags.iter().map(|t| &t.digest).collect();
    let mut reached: HashSet<&Digest> = HashSet::new();
    let mut todo: Vec<&Digest> = c
        .manifests
        .iter()
        .filter(|m| {
            roots.keep_untagged
                || tagged.contains(&m.digest)
                || m.created_at >= roots.manifests_since
                || (roots.keep_referrers && m.subject.is_some())
        })
        .map(|m| &m.digest)
        .collect();
    while let Some(d) = todo.pop() {
        if !present.contains(d) || !reached.insert(d) {
            continue;
        }
        todo.extend(children.get(d).into_iter().flatten());
        todo.extend(referrers.get(d).into_iter().flatten());
    }

    let sizes: HashMap<&Digest, u64> = c.manifests.iter().map(|m| (&m.digest, m.size)).collect();
    let subject_of: HashMap<&Digest, &Digest> =
        c.manifests.iter().filter_map(|m| m.subject.as_ref().map(|s| (&m.digest, s))).collect();
    let unreached: HashSet<&Digest> = present.difference(&reached).copied().collect();
    // Parents and subjects first: a manifest goes once no unreached manifest that is still there
    // points at it, and its subject (when that goes too) is gone.
    let mut parents: HashMap<&Digest, usize> = HashMap::new();
    for (parent, kids) in &children {
        if unreached.contains(parent) {
            for k in kids.iter().filter(|k| unreached.contains(**k)) {
                *parents.entry(*k).or_default() += 1;
            }
        }
    }
    let mut placed: HashSet<&Digest> = HashSet::new();
    let ready = |d: &Digest, parents: &HashMap<&Digest, usize>, placed: &HashSet<&Digest>| {
        parents.get(d).is_none_or(|n| *n == 0)
            && subject_of.get(d).is_none_or(|s| !unreached.contains(s) || placed.contains(s))
    };
    let mut queue: Vec<&Digest> = unreached.iter().filter(|d| ready(d, &parents, &placed)).copied().collect();
    queue.sort_by(|a, b| b.cmp(a));
    let mut manifests = Vec::new();
    while let Some(d) = queue.pop() {
        if !placed.insert(d) {
            continue;
        }
        let why = match subject_of.get(d) {
            Some(s) if unreached.contains(s) => WITH_SUBJECT,
            Some(s) if !present.contains(s) => SUBJECT_GONE,
            _ => UNTAGGED,
        };
        manifests.push((d.clone(), sizes.get(d).copied().unwrap_or(0), why));
        for k in children.get(d).into_iter().flatten() {
            if let Some(n) = parents.get_mut(*k) {
                *n = n.saturating_sub(1);
            }
        }
        let mut next: Vec<&Digest> = children
            .get(d)
            .into_iter()
            .flatten()
            .chain(referrers.get(d).into_iter().flatten())
            .copied()
            .filter(|n| unreached.contains(*n) && !placed.contains(*n) && ready(n, &parents, &placed))
            .collect();
        next.sort_by(|a, b| b.cmp(a));
        queue.extend(next);
    }

    let needed: HashSet<&Digest> =
        reached.iter().flat_map(|m| blobs.get(m).into_iter().flatten().copied()).collect();
    let mut links: Vec<(Digest, u64)> = c
        .links
        .iter()
        .filter(|l| l.linked_at < roots.links_since && !needed.contains(&l.digest))
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    links.sort();
    Marked { manifests, links }
}
