//! Online garbage collection: removes what no tag reaches, beside pushes, and gives the bytes
//! back through the one safe delete path ([`crate::meta::sweep`]).
//!
//! ```text
//! for each repository (catalog order; those the pull-through cache keeps are its own):
//!     read its manifests, edges and links ─► mark (in memory) ─► remove each unreachable
//!     manifest, then each unneeded link, by a statement that checks again what is stored now
//! release every blob nothing uses any more ─► purge (objects deleted after the read grace)
//! ```
//! A collection over the review queue walks only the queued repositories, and releases only the
//! blobs whose uses it removed: what a client's delete left unused (a deleted manifest's own
//! bytes, a blob deleted by digest) waits for the next full collection.
//! A dry run marks the same way and removes nothing; its report is what a real run would remove
//! if nothing changed meanwhile. A removal whose check fails (a push made the thing needed again)
//! is counted as a conflict, never forced.

pub mod client;
#[cfg(test)]
mod in_place_tests;
pub mod mark;
pub mod metrics;
mod progress;
mod report;
pub mod retention;
pub mod review;
mod runs;
pub mod scrub;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::{Digest, RepoName};
use tracing::info;

use crate::meta::browse::{TagOrder, TagPage};
use crate::meta::gc::{Collect, RepoContents};
use crate::meta::{self, Page};
use crate::service::{Registry, Result};
use metrics::GcMetrics;
use progress::{Control, Phase};
pub use progress::{Progress, RunView};
pub use report::{Corrupt, KeptTag, Removed, RemovedTag, RepoReport, Report, ScrubReport};
use retention::Policies;

/// Repositories read per catalog page, and unused blobs per batch.
const BATCH: usize = 500;
/// Removals made in one transaction (each still checked on its own): few, so a push never waits
/// long behind one on SQLite's single writer (docs/benchmarks.md: 32 cost pushes 1.6× their p99).
const REMOVALS: usize = 8;
/// The longest pause after a removal.
const MAX_PAUSE: Duration = Duration::from_millis(50);
#[derive(Debug, Clone)]
pub struct Options {
    /// Nothing younger than this is removed: pushes in flight (blobs uploaded before their
    /// manifest, a manifest pushed before its tag) finish first.
    pub grace: Duration,
    /// Keep manifests no tag reaches (only links and blobs nothing needs are collected).
    pub keep_untagged: bool,
    pub dry_run: bool,
    /// Also release stored objects no metadata knows and remove stale upload objects
    /// ([`scrub`]).
    pub scrub: bool,
    /// Also read every live blob and check it against its digest (a scrub that verifies).
    pub verify: bool,
    /// Look only at the repositories queued for review ([`crate::meta::queue`]), not at all.
    pub queued: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: Duration::from_secs(3600),
            keep_untagged: false,
            dry_run: false,
            scrub: false,
            verify: false,
            queued: false,
        }
    }
}

pub struct Collector {
    registry: Arc<Registry>,
    store: Arc<dyn Collect>,
    /// Repository prefixes the pull-through cache serves (its eviction keeps them).
    cached: Vec<String>,
    metrics: Arc<GcMetrics>,
    retention: Policies,
}

impl Collector {
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<dyn Collect>,
        cached: Vec<String>,
        metrics: Arc<GcMetrics>,
    ) -> Collector {
        Collector { registry, store, cached, metrics, retention: Policies::default() }
    }

    /// The collector that applies these retention policies before it marks.
    pub fn with_retention(mut self, policies: Policies) -> Collector {
        self.retention = policies;
        self
    }

    /// One page of `repo`'s tags, as the UI lists them; `None` when it holds nothing.
    pub async fn tag_page(
        &self,
        repo: &RepoName,
        order: TagOrder,
        from: u64,
        limit: u64,
    ) -> Result<Option<TagPage>> {
        Ok(self.store.tag_page(repo, order, from, limit).await?)
    }

    /// The sizes of the images `digests` name in `repo` ([`crate::meta::browse::Browse::image_sizes`]).
    pub async fn image_sizes(&self, repo: &RepoName, digests: Vec<Digest>) -> Result<HashMap<Digest, u64>> {
        Ok(self.store.image_sizes(repo, digests).await?)
    }

    fn is_cached(&self, repo: &str) -> bool {
        self.cached.iter().any(|p| repo.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/')))
    }

    async fn timed(&self, o: &Options, control: &Control) -> Result<Report> {
        let started = std::time::Instant::now();
        let outcome = self.collect(o, control).await;
        self.metrics.observe(o.dry_run, started.elapsed(), outcome.as_ref().ok());
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, dry_run = o.dry_run, "garbage collection failed");
        }
        outcome
    }

    async fn collect(&self, o: &Options, control: &Control) -> Result<Report> {
        // Retention decides from pull times: this replica's are written first.
        if let Err(e) = self.registry.flush_behind().await {
            tracing::warn!(error = %e, "could not write pull times before the collection");
        }
        // Created at or before now less the grace (times are whole seconds).
        let now = meta::now();
        let cutoff = now + 1 - o.grace.as_secs() as i64;
        let mut report = Report { dry_run: o.dry_run, ..Report::default() };
        // Per digest: how many of its uses (links, manifests) this run removed (or would).
        let mut dropped: HashMap<Digest, u64> = HashMap::new();
        let mut page = Page { limit: BATCH, last: control.resume_after.clone() };
        // The last repository this run finished.
        let mut walked: Option<String> = None;
        'walk: loop {
            // Every repository, or (over the queue) those changed since a collection looked.
            let mut names = if o.queued {
                self.store.queued(cutoff, page.last.as_deref(), BATCH + 1).await?
            } else {
                self.registry.meta().catalog(&page).await?
            };
            let more = names.len() > BATCH;
            names.truncate(BATCH);
            for name in &names {
                if control.cancelled() {
                    report.cancelled = true;
                    break 'walk;
                }
                let repo: RepoName = meta::parse_stored("repository name", name.clone())?;
                if !self.is_cached(name) {
                    let r = self.collect_repo(&repo, now, cutoff, o, &mut dropped).await?;
                    control.update(|p| p.repository_done(name, &r));
                    if !r.is_empty() {
                        report.repositories.push(r);
                    }
                } else {
                    control.update(|p| p.repository_done(name, &RepoReport::default()));
                }
                if !o.dry_run && o.queued {
                    // Looked at with everything changed before the cutoff in view.
                    self.store.reviewed(&repo, cutoff).await?;
                }
                walked = Some(name.clone());
            }
            match names.pop() {
                Some(last) if more => page.last = Some(last),
                _ => break,
            }
        }
        if let Some(through) = walked.filter(|_| !o.dry_run && !o.queued) {
            // A full run takes what it walked off the queue at once (cancelled: as far as it got).
            self.store.reviewed_range(control.resume_after.as_deref(), &through, cutoff).await?;
        }
        if !report.cancelled {
            control.update(|p| p.phase = Phase::Blobs);
            self.release_blobs(cutoff, o, &dropped, &mut report, control).await?;
        }
        if (o.scrub || o.verify) && !report.cancelled {
            control.update(|p| p.phase = Phase::Scrub);
            match self.scrub(o, control).await? {
                Some(s) => report.scrub = Some(s),
                None => report.cancelled = true,
            }
        }
        if !o.dry_run && !report.cancelled {
            control.update(|p| p.phase = Phase::Purge);
            report.blobs_deleted = self.registry.purge_released().await? as u64;
        }
        report.total();
        info!(
            dry_run = o.dry_run,
            manifests = report.manifests_removed,
            links = report.links_removed,
            blobs = report.blobs.len(),
            bytes = report.bytes_freed,
            conflicts = report.conflicts,
            cancelled = report.cancelled,
            "garbage collection finished"
        );
        Ok(report)
    }

    async fn collect_repo(
        &self,
        repo: &RepoName,
        now: i64,
        cutoff: i64,
        o: &Options,
        dropped: &mut HashMap<Digest, u64>,
    ) -> Result<RepoReport> {
        let mut contents = self.store.repo_contents(repo).await?;
        let mut r = RepoReport { repository: repo.to_string(), ..RepoReport::default() };
        let mut roots = mark::Roots::since(cutoff);
        roots.keep_untagged = o.keep_untagged;
        if let Some(policy) = self.retention.for_repo(repo.as_str()) {
            self.retain(repo, policy, now, o, &mut contents, &mut r).await?;
            if let Some(keep) = policy.untagged_for {
                roots.manifests_since = roots.manifests_since.min(now + 1 - keep);
            }
            roots.keep_referrers = policy.keep_referrers;
        }
        let marked = mark::mark(&contents, &roots);
        let before = roots.manifests_since;
        for chunk in marked.manifests.chunks(REMOVALS) {
            let digests: Vec<Digest> = chunk.iter().map(|(d, _, _)| d.clone()).collect();
            let removed =
                self.removed(o, digests, |ds| self.store.collect_manifests(repo, ds, before)).await?;
            for ((digest, size, why), gone) in chunk.iter().zip(removed) {
                if gone {
                    info!(repository = %repo, digest = %digest, reason = why, dry_run = o.dry_run, "manifest removed");
                    *dropped.entry(digest.clone()).or_default() += 1;
                    r.manifests.push(Removed { digest: digest.clone(), size: *size, reason: why });
                } else {
                    r.conflicts += 1;
                }
            }
        }
        // Those only removed manifests needed, too: the removal's check (no manifest there needs
        // it) fails for a link whose manifest a conflict kept.
        for chunk in marked.links.chunks(REMOVALS) {
            let digests: Vec<Digest> = chunk.iter().map(|(d, _)| d.clone()).collect();
            let removed = self.removed(o, digests, |ds| self.store.collect_links(repo, ds, cutoff)).await?;
            for ((digest, size), gone) in chunk.iter().zip(removed) {
                if gone {
                    info!(repository = %repo, digest = %digest, reason = mark::UNREFERENCED, dry_run = o.dry_run, "blob unlinked");
                    *dropped.entry(digest.clone()).or_default() += 1;
                    r.links.push(Removed { digest: digest.clone(), size: *size, reason: mark::UNREFERENCED });
                } else {
                    r.conflicts += 1;
                }
            }
        }
        Ok(r)
    }

    /// Removes the tags `policy` dooms (each only if it still names what it named when read),
    /// and leaves `contents` as the mark must see it: read again after a real removal, without
    /// the doomed tags after a dry run (with them when the policy itself only reports: a real
    /// run keeps them too).
    async fn retain(
        &self,
        repo: &RepoName,
        policy: &retention::Policy,
        now: i64,
        o: &Options,
        contents: &mut RepoContents,
        r: &mut RepoReport,
    ) -> Result<()> {
        let (doomed, kept): (Vec<_>, Vec<_>) =
            policy.decide(&contents.tags, now).into_iter().partition(|d| d.removed);
        r.kept_tags = kept
            .into_iter()
            .map(|d| KeptTag { tag: contents.tags[d.index].name.clone(), reason: d.reason })
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let tags: Vec<(String, Digest)> = doomed
            .iter()
            .map(|d| (contents.tags[d.index].name.clone(), contents.tags[d.index].digest.clone()))
            .collect();
        let dry = o.dry_run || policy.dry_run;
        let mut gone_any = false;
        for (chunk, tags) in doomed.chunks(REMOVALS).zip(tags.chunks(REMOVALS)) {
            let removed = if dry {
                vec![true; tags.len()]
            } else {
                self.store.collect_tags(repo, tags.to_vec()).await?
            };
            for ((d, (tag, digest)), gone) in chunk.iter().zip(tags).zip(removed) {
                if !gone {
                    r.conflicts += 1;
                    continue;
                }
                gone_any = true;
                info!(repository = %repo, tag = %tag, digest = %digest, reason = %d.reason, dry_run = dry, "tag removed");
                r.tags.push(RemovedTag {
                    tag: tag.clone(),
                    digest: digest.clone(),
                    reason: d.reason.clone(),
                    policy_dry_run: policy.dry_run,
                });
            }
        }
        if !dry && gone_any {
            *contents = self.store.repo_contents(repo).await?;
        } else if o.dry_run && !policy.dry_run {
            let doomed: std::collections::HashSet<(&str, &Digest)> =
                r.tags.iter().map(|t| (t.tag.as_str(), &t.digest)).collect();
            contents.tags.retain(|t| !doomed.contains(&(t.name.as_str(), &t.digest)));
        }
        Ok(())
    }

    /// Whether each of `digests` is removed by `remove` (one transaction), or, in a dry run, would
    /// be: all of them. Each removal is followed by a pause as long as it took (at most
    /// [`MAX_PAUSE`]), so a collection takes at most about half of the database's time and
    /// pushes beside it keep their latency (docs/benchmarks.md).
    async fn removed<F, Fut>(&self, o: &Options, digests: Vec<Digest>, remove: F) -> Result<Vec<bool>>
    where
        F: FnOnce(Vec<Digest>) -> Fut,
        Fut: std::future::Future<Output = meta::Result<Vec<bool>>>,
    {
        if o.dry_run {
            return Ok(vec![true; digests.len()]);
        }
        let started = std::time::Instant::now();
        let removed = remove(digests).await?;
        tokio::time::sleep(started.elapsed().min(MAX_PAUSE)).await;
        Ok(removed)
    }

    /// Releases every blob nothing uses (over the queue: of those whose uses this run removed; a
    /// dry run: that nothing would use once its removals were made).
    async fn release_blobs(
        &self,
        cutoff: i64,
        o: &Options,
        dropped: &HashMap<Digest, u64>,
        report: &mut Report,
        control: &Control,
    ) -> Result<()> {
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        for r in &report.repositories {
            for x in r.manifests.iter().chain(&r.links) {
                sizes.insert(x.digest.clone(), x.size);
            }
        }
        let mut after: Option<Digest> = None;
        let mut candidates: Vec<(Digest, u64)> = Vec::new();
        if o.queued && !o.dry_run {
            candidates = dropped.keys().map(|d| (d.clone(), sizes.get(d).copied().unwrap_or(0))).collect();
            candidates.sort();
        }
        loop {
            if control.cancelled() {
                report.cancelled = true;
                return Ok(());
            }
            let batch = if o.queued {
                candidates.drain(..candidates.len().min(BATCH)).collect()
            } else {
                self.store.unused_blobs(cutoff, after.as_ref(), BATCH).await?
            };
            for chunk in batch.chunks(REMOVALS) {
                let digests: Vec<Digest> = chunk.iter().map(|(d, _)| d.clone()).collect();
                let released = self.removed(o, digests, |ds| self.store.release_unused(ds, cutoff)).await?;
                for ((digest, size), gone) in chunk.iter().zip(released) {
                    if gone {
                        control.update(|p| p.blob_released(*size));
                        report.blobs.push(Removed {
                            digest: digest.clone(),
                            size: *size,
                            reason: "used by nothing",
                        });
                    }
                }
            }
            match batch.last() {
                Some((d, _)) if batch.len() == BATCH => after = Some(d.clone()),
                _ => break,
            }
        }
        if o.dry_run {
            // Blobs whose every use this run would remove: not unused yet, so counted here.
            let mut freed = Vec::new();
            for (digest, n) in dropped {
                if self.store.blob_uses(digest).await? == *n {
                    let size = sizes.get(digest).copied().unwrap_or(0);
                    freed.push(Removed { digest: digest.clone(), size, reason: "used only by what goes" });
                }
            }
            freed.sort_by(|a, b| a.digest.cmp(&b.digest));
            report.blobs.extend(freed);
        }
        Ok(())
    }
}
