//! `berth replicate`: copies images between two registries (Berth, CNCF Distribution, any that
//! speaks the distribution API), in either direction, keeping every digest.
//!
//! ```text
//! for each image (a repository's tags through the filters, a tag, or a digest; with `all`,
//! every repository the source's catalog lists, through repository globs):
//!     GET the manifest ─► tag already names that digest there? unchanged (only its referrers
//!                          are looked at)
//!     copy it: an index's children first, a manifest's config and layers (HEAD; mounted from
//!              another repository this run wrote them to; else streamed GET ─► PUT), then the
//!              manifest's bytes as they are ─► its referrers, recursively
//! ```
//! Images are copied `jobs` at a time, each manifest once however many images share it
//! ([`copy`]); requests to each side can be paced (`rate`) and blob bytes too (`bandwidth`).
//! Referrers (signatures, SBOMs) are read through the referrers API, or where the source has
//! none from the `sha256-<hex>` tag scheme; a destination without the API (no `OCI-Subject` on
//! the push) gets that tag scheme kept up to date, so cosign and oras find them there too.

mod body;
mod copy;
mod filter;
mod names;
pub mod on_push;
mod pages;
mod progress;
mod prune;
mod referrers;
mod report;
mod source;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use berth_client::{Credentials, Upstream};
use berth_core::config::UpstreamConfig;
use berth_core::glob::Glob;
use berth_core::oci::RepoName;
use futures_util::StreamExt;

use copy::Copier;
use filter::TagFilter;
pub use filter::TagRules;
pub use progress::Progress;
pub use prune::Deletes;
pub use report::Report;
use report::{ImageReport, Outcome};
use source::Source;

/// One side of a copy.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    /// A docker `config.json` or podman `auth.json` to find credentials in, when `username`
    /// is not given.
    pub authfile: Option<PathBuf>,
}

impl Side {
    /// Its client (reads files, and may run a credential helper: call it off the async threads).
    fn client(&self, name: &str) -> anyhow::Result<Upstream> {
        let mut config = UpstreamConfig::new(name, self.url.trim_end_matches('/'));
        config.insecure = self.insecure;
        let ca = match &self.ca_file {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
            None => None,
        };
        let credentials = match (&self.username, &self.authfile) {
            (Some(user), _) => {
                Credentials::Basic { user: user.clone(), password: self.password.clone().unwrap_or_default() }
            }
            (None, Some(file)) => {
                match berth_client::authfile::lookup(file, &self.url, true).map_err(anyhow::Error::msg)? {
                    Some((user, password)) => Credentials::Basic { user, password },
                    None => Credentials::None,
                }
            }
            (None, None) => Credentials::None,
        };
        Upstream::with_credentials(&config, credentials, ca.as_deref()).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub from: Side,
    pub to: Side,
    /// `repository` (its tags, through the filters), `repository:tag` or `repository@digest`.
    pub images: Vec<String>,
    /// Also every repository of the source's catalog (`GET /v2/_catalog`) that matches
    /// `repositories` (all when empty).
    pub all: bool,
    pub repositories: Vec<String>,
    /// Which of a repository's tags are copied.
    pub tags: TagRules,
    /// A tag the destination has with another digest is kept as it is (not with `Mirror`).
    pub no_overwrite: bool,
    /// What a repository replicated whole deletes at the destination.
    pub deletes: Deletes,
    pub dry_run: bool,
    /// Images copied at once (at least one).
    pub jobs: usize,
    /// Requests per second to each side, at most.
    pub rate: Option<f64>,
    /// Blob bytes per second sent, at most (all blobs together).
    pub bandwidth: Option<u64>,
    /// What is shown on stderr while the run works.
    pub progress: Progress,
    /// `os/architecture[/variant]`: an index's children copied are those for these (all when
    /// empty), the index's bytes as they are.
    pub platforms: Vec<String>,
    /// Only the source's repositories under this path are replicated, named without it at the
    /// destination (all, as they are, when empty).
    pub from_prefix: String,
    /// Put before each repository's name at the destination.
    pub to_prefix: String,
    /// Referrers (signatures, SBOMs) stay behind.
    pub no_referrers: bool,
}

/// Runs a replication: its report (failures in it, never an early stop).
pub async fn run(r: &Request) -> anyhow::Result<Report> {
    let (from, to) = (r.from.clone(), r.to.clone());
    let (src, dst) =
        tokio::task::spawn_blocking(move || (from.client("source"), to.client("destination"))).await?;
    let (mut src, mut dst) = (src?, dst?);
    if let Some(rate) = r.rate {
        (src, dst) = (src.with_request_rate(rate), dst.with_request_rate(rate));
    }
    let mut copier =
        Copier::new(Source::Remote(Box::new(src)), Arc::new(dst), TagFilter::new(&r.tags)?, r.dry_run);
    copier.overwrite = !r.no_overwrite;
    copier.deletes = r.deletes;
    copier.platforms = r.platforms.iter().map(|p| p.parse()).collect::<anyhow::Result<_>>()?;
    copier.prefixes = names::Prefixes::new(&r.from_prefix, &r.to_prefix)?;
    copier.copy_referrers = !r.no_referrers;
    copier.bandwidth = r.bandwidth.and_then(|b| berth_client::pace::Pacer::new(b as f64)).map(Arc::new);
    let copier = copier;
    let mut display = progress::Display::new(r.progress, &copier.tally, &copier.report);
    tokio::select! {
        () = replicate(r, &copier) => {}
        () = display.run() => {}
    }
    display.finish().await;
    let mut report = copier.report.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    report.images.sort_by(|a, b| (&a.repository, &a.reference).cmp(&(&b.repository, &b.reference)));
    Ok(report)
}

/// Every image `r` names, `r.jobs` at a time, each repository's deletes after its copies.
async fn replicate(r: &Request, copier: &Copier) {
    let mut specs = r.images.clone();
    if r.all {
        let globs: Vec<Glob> = r.repositories.iter().map(|g| Glob::new(g)).collect();
        match copier.catalog().await {
            Ok(names) => specs.extend(names.into_iter().filter(|n| {
                copier.prefixes.covers(n) && (globs.is_empty() || globs.iter().any(|g| g.matches(n)))
            })),
            Err(e) => copier.failed("the source's catalog", &e),
        }
    }
    for spec in &specs {
        let (repo, reference) = match parse_spec(spec) {
            Ok(parsed) => parsed,
            Err(e) => {
                copier.failed(spec, &e);
                continue;
            }
        };
        let at_destination = match copier.prefixes.destination(&repo) {
            Ok(name) => name,
            Err(e) => {
                copier.failed(spec, &e);
                continue;
            }
        };
        let whole = reference.is_none();
        let images = match reference {
            Some(r) => vec![(repo.clone(), r)],
            None => match copier.tags(&repo).await {
                Ok(tags) => {
                    tags.into_iter().filter(|t| copier.filter.matches(t)).map(|t| (repo.clone(), t)).collect()
                }
                Err(e) => {
                    copier.failed(spec, &e);
                    continue;
                }
            },
        };
        let source_tags: HashSet<String> = images.iter().map(|(_, t)| t.clone()).collect();
        copier.tally.images_found.fetch_add(images.len() as u64, std::sync::atomic::Ordering::Relaxed);
        futures_util::stream::iter(images)
            .for_each_concurrent(r.jobs.max(1), |(repo, reference)| async move {
                let name = format!("{repo}{}{reference}", if reference.contains(':') { "@" } else { ":" });
                match copier.image(&repo, &reference).await {
                    Ok(image) => {
                        tracing::info!(image = %name, outcome = ?image.outcome, "replicated");
                        copier.with_report(|rep| rep.images.push(image));
                    }
                    Err(e) => copier.failed(&name, &e),
                }
            })
            .await;
        if whole && copier.deletes != Deletes::None {
            let (dst, filter) = (&copier.dst, &copier.filter);
            match prune::prune(dst, filter, copier.deletes, copier.dry_run, &at_destination, &source_tags)
                .await
            {
                Ok(pruned) => copier.with_report(|r| {
                    let outcome = if copier.dry_run { Outcome::WouldDelete } else { Outcome::Deleted };
                    r.manifests_deleted += pruned.manifests;
                    r.images.extend(pruned.tags.into_iter().map(|(tag, digest)| ImageReport {
                        repository: repo.to_string(),
                        reference: tag,
                        digest,
                        outcome,
                    }));
                }),
                Err(e) => copier.failed(&format!("{repo} (deletes)"), &e),
            }
        }
    }
}

impl Copier {
    /// Every tag of `repo` at the source.
    async fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>> {
        self.src.tags(repo).await?.ok_or_else(|| anyhow::anyhow!("{repo}: no such repository at the source"))
    }

    /// Every repository the source's catalog lists (to these credentials).
    async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        self.src.catalog().await
    }
}

/// `repository` (its tags), `repository:tag` or `repository@digest`.
fn parse_spec(spec: &str) -> anyhow::Result<(RepoName, Option<String>)> {
    let (name, reference) = match spec.split_once('@') {
        Some((n, d)) => (n, Some(d.to_owned())),
        None => match spec.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((n, t)) => (n, Some(t.to_owned())),
            None => (spec, None),
        },
    };
    let repo: RepoName = name.parse().map_err(|e| anyhow::anyhow!("{spec}: {e}"))?;
    Ok((repo, reference))
}
