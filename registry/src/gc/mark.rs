//! The mark: what in one repository is reachable, in memory, from what the repository holds.
//!
//! Roots are tagged manifests and manifests younger than the grace (and every manifest when
//! untagged ones are kept; every referrer when referrers are). From a reachable manifest, its child manifests (an index's) and its
//! blobs (config, layers) are reachable; a referrer is reachable while its subject is. Links no
//! reachable manifest needs, linked before the grace, are unreachable too.

use std::collections::HashSet;

use berth_core::oci::Digest;

use crate::meta::gc::{DigestId, RepoContents};

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

/// Where each digest's neighbours are, in one list: those of `id` are
/// `to[start[id]..start[id + 1]]` (a few bytes an edge, however many digests share them).
struct Adjacency {
    start: Vec<u32>,
    to: Vec<DigestId>,
}

impl Adjacency {
    fn new(n: usize, pairs: impl Iterator<Item = (DigestId, DigestId)> + Clone) -> Adjacency {
        let mut start = vec![0u32; n + 1];
        for (from, _) in pairs.clone() {
            start[from as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut next = start.clone();
        let mut to = vec![0; start[n] as usize];
        for (from, t) in pairs {
            let at = &mut next[from as usize];
            to[*at as usize] = t;
            *at += 1;
        }
        Adjacency { start, to }
    }

    fn of(&self, id: DigestId) -> &[DigestId] {
        let i = id as usize;
        &self.to[self.start[i] as usize..self.start[i + 1] as usize]
    }
}

/// Marks `c` from its tags and `roots`.
pub fn mark(c: &RepoContents, roots: &Roots) -> Marked {
    let n = c.digests.len();
    let children = Adjacency::new(n, c.edges.iter().filter(|e| e.manifest).map(|e| (e.parent, e.child)));
    let blobs = Adjacency::new(n, c.edges.iter().filter(|e| !e.manifest).map(|e| (e.parent, e.child)));
    let referrers = Adjacency::new(n, c.manifests.iter().filter_map(|m| m.subject.map(|s| (s, m.digest))));
    let mut present = vec![false; n];
    let mut size = vec![0u64; n];
    let mut subject_of: Vec<Option<DigestId>> = vec![None; n];
    for m in &c.manifests {
        present[m.digest as usize] = true;
        size[m.digest as usize] = m.size;
        subject_of[m.digest as usize] = m.subject;
    }
    let tagged: HashSet<&Digest> = c.tags.iter().map(|t| &t.digest).collect();
    let mut reached = vec![false; n];
    let mut todo: Vec<DigestId> = c
        .manifests
        .iter()
        .filter(|m| {
            roots.keep_untagged
                || tagged.contains(c.digest(m.digest))
                || m.created_at >= roots.manifests_since
                || (roots.keep_referrers && m.subject.is_some())
        })
        .map(|m| m.digest)
        .collect();
    while let Some(d) = todo.pop() {
        if !present[d as usize] || reached[d as usize] {
            continue;
        }
        reached[d as usize] = true;
        todo.extend(children.of(d));
        todo.extend(referrers.of(d));
    }

    let unreached = |d: DigestId| present[d as usize] && !reached[d as usize];
    // Parents and subjects first: a manifest goes once no unreached manifest that is still there
    // points at it, and its subject (when that goes too) is gone.
    let mut parents = vec![0u32; n];
    for e in c.edges.iter().filter(|e| e.manifest && unreached(e.parent) && unreached(e.child)) {
        parents[e.child as usize] += 1;
    }
    let mut placed = vec![false; n];
    let ready = |d: DigestId, parents: &[u32], placed: &[bool]| {
        parents[d as usize] == 0 && subject_of[d as usize].is_none_or(|s| !unreached(s) || placed[s as usize])
    };
    // Smallest digest first among those ready, as a stack sorted the other way.
    let by_digest_desc = |a: &DigestId, b: &DigestId| c.digest(*b).cmp(c.digest(*a));
    let mut queue: Vec<DigestId> = c
        .manifests
        .iter()
        .map(|m| m.digest)
        .filter(|d| unreached(*d) && ready(*d, &parents, &placed))
        .collect();
    queue.sort_by(by_digest_desc);
    queue.dedup();
    let mut manifests = Vec::new();
    while let Some(d) = queue.pop() {
        if placed[d as usize] {
            continue;
        }
        placed[d as usize] = true;
        let why = match subject_of[d as usize] {
            Some(s) if unreached(s) => WITH_SUBJECT,
            Some(s) if !present[s as usize] => SUBJECT_GONE,
            _ => UNTAGGED,
        };
        manifests.push((c.digest(d).clone(), size[d as usize], why));
        for k in children.of(d) {
            if unreached(*k) {
                parents[*k as usize] = parents[*k as usize].saturating_sub(1);
            }
        }
        let mut next: Vec<DigestId> = children
            .of(d)
            .iter()
            .chain(referrers.of(d))
            .copied()
            .filter(|n| unreached(*n) && !placed[*n as usize] && ready(*n, &parents, &placed))
            .collect();
        next.sort_by(by_digest_desc);
        queue.extend(next);
    }

    let mut needed = vec![false; n];
    for m in (0..n).filter(|i| reached[*i]) {
        for b in blobs.of(m as DigestId) {
            needed[*b as usize] = true;
        }
    }
    let mut links: Vec<(Digest, u64)> = c
        .links
        .iter()
        .filter(|l| l.linked_at < roots.links_since && !needed[l.digest as usize])
        .map(|l| (c.digest(l.digest).clone(), l.size))
        .collect();
    links.sort();
    Marked { manifests, links }
}
