//! Online garbage collection: removes what no tag reaches, beside pushes, and gives the bytes
//! back through the one safe delete path ([`crate::meta::sweep`]).
//!
//! ```text
//! for each repository (catalog order; those the pull-through cache keeps are its own):
//!     read its manifests, edges and links ─► mark (in memory) ─► remove each unreachable
//!     manifest, then each unneeded link, by a statement that checks again what is stored now
//! release every blob nothing uses any more ─► purge (objects deleted after the read grace)
//! ```
//! A dry run marks the same way and removes nothing; its report is what a real run would remove
//! if nothing changed meanwhile. A removal whose check fails (a push made the thing needed again)
//! is counted as a conflict, never forced.

pub mod client;
pub mod mark;
pub mod metrics;
mod report;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::oci::{Digest, RepoName};
use tracing::info;

use crate::meta::gc::Collect;
use crate::meta::{self, Page};
use crate::service::{Registry, Result, ServiceError};
use metrics::GcMetrics;
pub use report::{Removed, RepoReport, Report};

/// Repositories read per catalog page, and unused blobs per batch.
const BATCH: usize = 500;
/// Removals made in one transaction (each still checked on its own).
const REMOVALS: usize = 32;
/// The lease that makes one collection at a time run across replicas, how long it holds without
/// renewal, and how often a running collection renews it.
const LEASE: &str = "gc";
const LEASE_TERM: Duration = Duration::from_secs(60);
const LEASE_RENEWAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Options {
    /// Nothing younger than this is removed: pushes in flight (blobs uploaded before their
    /// manifest, a manifest pushed before its tag) finish first.
    pub grace: Duration,
    /// Keep manifests no tag reaches (only links and blobs nothing needs are collected).
    pub keep_untagged: bool,
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { grace: Duration::from_secs(3600), keep_untagged: false, dry_run: false }
    }
}

pub struct Collector {
    registry: Arc<Registry>,
    store: Arc<dyn Collect>,
    /// Repository prefixes the pull-through cache serves (its eviction keeps them).
    cached: Vec<String>,
    metrics: Arc<GcMetrics>,
}

/// Renews the lease while a collection runs. A lease lost meanwhile lets another replica start:
/// two collections at once are still safe (each removal checks what is stored), only wasteful.
async fn renew(store: Arc<dyn Collect>, holder: String) {
    let mut tick = tokio::time::interval(LEASE_RENEWAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = meta::now_millis();
        match store.claim_lease(LEASE, &holder, now, now + LEASE_TERM.as_millis() as i64).await {
            Ok(Ok(())) => {}
            Ok(Err(other)) => tracing::warn!(%other, "the collection's lease went to another run"),
            Err(e) => tracing::warn!(error = %e, "could not renew the collection's lease"),
        }
    }
}

impl Collector {
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<dyn Collect>,
        cached: Vec<String>,
        metrics: Arc<GcMetrics>,
    ) -> Collector {
        Collector { registry, store, cached, metrics }
    }

    fn is_cached(&self, repo: &str) -> bool {
        self.cached.iter().any(|p| repo.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('/')))
    }

    /// One collection, from start to end; [`ServiceError::Busy`] while another runs (on any
    /// replica: they share a lease in the database).
    pub async fn run(&self, o: &Options) -> Result<Report> {
        let holder = format!(
            "{} (run {})",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "berth".into()),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let now = meta::now_millis();
        if let Err(other) =
            self.store.claim_lease(LEASE, &holder, now, now + LEASE_TERM.as_millis() as i64).await?
        {
            return Err(ServiceError::Busy(format!(
                "a garbage collection is running on {other}; try again when it ends"
            )));
        }
        let renewal = tokio::spawn(renew(self.store.clone(), holder.clone()));
        let outcome = self.timed(o).await;
        renewal.abort();
        if let Err(e) = self.store.end_lease(LEASE, &holder).await {
            tracing::warn!(error = %e, "could not give up the collection's lease; it lapses by itself");
        }
        outcome
    }

    async fn timed(&self, o: &Options) -> Result<Report> {
        let started = std::time::Instant::now();
        let outcome = self.collect(o).await;
        self.metrics.observe(o.dry_run, started.elapsed(), outcome.as_ref().ok());
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, dry_run = o.dry_run, "garbage collection failed");
        }
        outcome
    }

    async fn collect(&self, o: &Options) -> Result<Report> {
        // Created at or before now less the grace (times are whole seconds).
        let cutoff = meta::now() + 1 - o.grace.as_secs() as i64;
        let mut report = Report { dry_run: o.dry_run, ..Report::default() };
        // Per digest: how many of its uses (links, manifests) this run removed (or would).
        let mut dropped: HashMap<Digest, u64> = HashMap::new();
        let mut page = Page { limit: BATCH, last: None };
        loop {
            let mut names = self.registry.meta().catalog(&page).await?;
            let more = names.len() > BATCH;
            names.truncate(BATCH);
            for name in &names {
                if self.is_cached(name) {
                    continue;
                }
                let repo: RepoName = meta::parse_stored("repository name", name.clone())?;
                let r = self.collect_repo(&repo, cutoff, o, &mut dropped).await?;
                if !r.is_empty() {
                    report.repositories.push(r);
                }
            }
            match names.pop() {
                Some(last) if more => page.last = Some(last),
                _ => break,
            }
        }
        self.release_blobs(cutoff, o, &dropped, &mut report).await?;
        if !o.dry_run {
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
            "garbage collection finished"
        );
        Ok(report)
    }

    async fn collect_repo(
        &self,
        repo: &RepoName,
        cutoff: i64,
        o: &Options,
        dropped: &mut HashMap<Digest, u64>,
    ) -> Result<RepoReport> {
        let contents = self.store.repo_contents(repo).await?;
        let marked = mark::mark(&contents, cutoff, o.keep_untagged);
        let mut r = RepoReport { repository: repo.to_string(), ..RepoReport::default() };
        for chunk in marked.manifests.chunks(REMOVALS) {
            let digests: Vec<Digest> = chunk.iter().map(|(d, _, _)| d.clone()).collect();
            let removed =
                self.removed(o, digests, |ds| self.store.collect_manifests(repo, ds, cutoff)).await?;
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

    /// Whether each of `digests` is removed by `remove` (one transaction), or, in a dry run, would
    /// be: all of them.
    async fn removed<F, Fut>(&self, o: &Options, digests: Vec<Digest>, remove: F) -> Result<Vec<bool>>
    where
        F: FnOnce(Vec<Digest>) -> Fut,
        Fut: std::future::Future<Output = meta::Result<Vec<bool>>>,
    {
        if o.dry_run {
            return Ok(vec![true; digests.len()]);
        }
        Ok(remove(digests).await?)
    }

    /// Releases every blob nothing uses (a dry run: that nothing would use once its removals were
    /// made).
    async fn release_blobs(
        &self,
        cutoff: i64,
        o: &Options,
        dropped: &HashMap<Digest, u64>,
        report: &mut Report,
    ) -> Result<()> {
        let mut after: Option<Digest> = None;
        loop {
            let batch = self.store.unused_blobs(cutoff, after.as_ref(), BATCH).await?;
            for chunk in batch.chunks(REMOVALS) {
                let digests: Vec<Digest> = chunk.iter().map(|(d, _)| d.clone()).collect();
                let released = self.removed(o, digests, |ds| self.store.release_unused(ds, cutoff)).await?;
                for ((digest, size), gone) in chunk.iter().zip(released) {
                    if gone {
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
            let mut sizes: HashMap<&Digest, u64> = HashMap::new();
            for r in &report.repositories {
                for x in r.manifests.iter().chain(&r.links) {
                    sizes.insert(&x.digest, x.size);
                }
            }
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
