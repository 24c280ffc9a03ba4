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
//! Referrers (signatures, SBOMs) are read through the referrers API, or where the source has
//! none from the `sha256-<hex>` tag scheme; a destination without the API (no `OCI-Subject` on
//! the push) gets that tag scheme kept up to date, so cosign and oras find them there too.

mod filter;
mod pages;
mod prune;
mod referrers;
mod report;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use berth_client::push::Sent;
use berth_client::{Credentials, Fetched, Upstream};
use berth_core::config::UpstreamConfig;
use berth_core::glob::Glob;
use berth_core::oci::{Algorithm, Digest, RepoName};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::Method;

use filter::TagFilter;
pub use filter::TagRules;
pub use prune::Deletes;
pub use report::Report;
use report::{Failure, ImageReport, Outcome};

/// Blobs of one manifest copied at once.
const BLOBS_AT_ONCE: usize = 4;

/// One side of a copy.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

impl Side {
    fn client(&self, name: &str) -> anyhow::Result<Upstream> {
        let mut config = UpstreamConfig::new(name, self.url.trim_end_matches('/'));
        config.insecure = self.insecure;
        let ca = match &self.ca_file {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
            None => None,
        };
        let credentials = match &self.username {
            Some(user) => {
                Credentials::Basic { user: user.clone(), password: self.password.clone().unwrap_or_default() }
            }
            None => Credentials::None,
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
}

/// Runs a replication: its report (failures in it, never an early stop).
pub async fn run(r: &Request) -> anyhow::Result<Report> {
    let copier = Copier {
        src: r.from.client("source")?,
        dst: r.to.client("destination")?,
        filter: TagFilter::new(&r.tags)?,
        overwrite: !r.no_overwrite,
        deletes: r.deletes,
        dry_run: r.dry_run,
        report: Mutex::new(Report { dry_run: r.dry_run, ..Report::default() }),
        placed: Mutex::new(HashMap::new()),
        done: Mutex::new(HashSet::new()),
    };
    let mut specs = r.images.clone();
    if r.all {
        let globs: Vec<Glob> = r.repositories.iter().map(|g| Glob::new(g)).collect();
        match copier.catalog().await {
            Ok(names) => specs
                .extend(names.into_iter().filter(|n| globs.is_empty() || globs.iter().any(|g| g.matches(n)))),
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
        for (repo, reference) in images {
            let name = format!("{repo}{}{reference}", if reference.contains(':') { "@" } else { ":" });
            match copier.image(&repo, &reference).await {
                Ok(image) => {
                    tracing::info!(image = %name, outcome = ?image.outcome, "replicated");
                    copier.with_report(|rep| rep.images.push(image));
                }
                Err(e) => copier.failed(&name, &e),
            }
        }
        if whole && copier.deletes != Deletes::None {
            let (dst, filter) = (&copier.dst, &copier.filter);
            match prune::prune(dst, filter, copier.deletes, copier.dry_run, &repo, &source_tags).await {
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
    let mut report = copier.report.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    report.images.sort_by(|a, b| (&a.repository, &a.reference).cmp(&(&b.repository, &b.reference)));
    Ok(report)
}

struct Copier {
    src: Upstream,
    dst: Upstream,
    filter: TagFilter,
    /// Whether a tag naming another digest at the destination is moved.
    overwrite: bool,
    deletes: Deletes,
    dry_run: bool,
    report: Mutex<Report>,
    /// Per blob, a destination repository this run put it in (to mount it from).
    placed: Mutex<HashMap<Digest, RepoName>>,
    /// Manifests (with their referrers) this run copied or found there: per repository.
    done: Mutex<HashSet<(RepoName, Digest)>>,
}

/// A manifest as read from the source.
struct Manifest {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
}

impl Copier {
    fn with_report(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    fn failed(&self, image: &str, e: &anyhow::Error) {
        tracing::warn!(image, error = %format!("{e:#}"), "not replicated");
        self.with_report(|r| r.failed.push(Failure { image: image.to_owned(), error: format!("{e:#}") }));
    }

    /// Every tag of `repo` at the source, page by page.
    async fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>> {
        pages::tag_list(&self.src, repo)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{repo}: no such repository at the source"))
    }

    /// Every repository the source's catalog lists (to these credentials), page by page.
    async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        pages::pages(|query| async move {
            match self.src.catalog(&query).await? {
                Fetched::Found(resp) => {
                    Ok(resp.json::<List>().await.context("reading the catalog")?.repositories)
                }
                Fetched::NotFound => anyhow::bail!("the source has no catalog (GET /v2/_catalog)"),
            }
        })
        .await
    }

    /// Copies one image; how it went.
    async fn image(&self, repo: &RepoName, reference: &str) -> anyhow::Result<ImageReport> {
        let m = self.fetch(repo, reference).await?;
        let is_tag = !reference.contains(':');
        let there = if is_tag { self.dst.manifest_digest(repo, reference).await? } else { None };
        let outcome = if there.is_some() && there.as_deref() != Some(m.digest.as_str()) && !self.overwrite {
            // The destination's tag stays as it is: nothing of this image is copied.
            Outcome::Kept
        } else if there.as_deref() == Some(m.digest.as_str()) {
            // Unchanged; referrers added since are still copied.
            self.mark_done(repo, &m.digest);
            self.referrers(repo, &m.digest).await?;
            Outcome::Unchanged
        } else {
            self.manifest(repo, &m, is_tag.then_some(reference)).await?;
            if self.dry_run {
                Outcome::WouldCopy
            } else {
                Outcome::Copied
            }
        };
        Ok(ImageReport {
            repository: repo.to_string(),
            reference: reference.to_owned(),
            digest: m.digest,
            outcome,
        })
    }

    /// The source's manifest, its digest checked.
    async fn fetch(&self, repo: &RepoName, reference: &str) -> anyhow::Result<Manifest> {
        let resp = match self.src.fetch(Method::GET, repo, "manifests", reference).await? {
            Fetched::Found(resp) => resp,
            Fetched::NotFound => anyhow::bail!("{repo}:{reference}: no such manifest at the source"),
        };
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let bytes = resp.bytes().await.context("reading a manifest")?;
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        if reference.contains(':') && reference != digest.as_str() {
            anyhow::bail!("{repo}@{reference}: the source sent a manifest whose digest is {digest}");
        }
        Ok(Manifest { digest, media_type, bytes })
    }

    /// Notes a manifest as copied (or found there) this run: whether it was not yet.
    fn mark_done(&self, repo: &RepoName, digest: &Digest) -> bool {
        self.done.lock().map(|mut d| d.insert((repo.clone(), digest.clone()))).unwrap_or(true)
    }

    fn is_done(&self, repo: &RepoName, digest: &Digest) -> bool {
        self.done.lock().map(|d| d.contains(&(repo.clone(), digest.clone()))).unwrap_or(false)
    }

    /// Copies a manifest with what it needs, then puts it (under `tag`, or its digest), then its
    /// referrers: whether it was copied (a dry run: would be) rather than found there.
    fn manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        m: &'a Manifest,
        tag: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            let first = self.mark_done(repo, &m.digest);
            let parsed: serde_json::Value =
                serde_json::from_slice(&m.bytes).with_context(|| format!("{repo}@{}: not JSON", m.digest))?;
            // A manifest the destination holds came with everything it needs (the destination
            // checked when it was pushed).
            let there = first && self.dst.manifest_digest(repo, m.digest.as_str()).await?.is_some();
            if first && !there {
                if let Some(children) = parsed["manifests"].as_array() {
                    for child in children {
                        let digest = parse_digest(child["digest"].as_str().unwrap_or_default())?;
                        if self.is_done(repo, &digest) {
                            continue;
                        }
                        let c = self.fetch(repo, digest.as_str()).await?;
                        self.manifest(repo, &c, None).await?;
                    }
                } else {
                    let blobs = parsed["layers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .chain(std::iter::once(&parsed["config"]).filter(|c| c.is_object()))
                        .map(|d| {
                            Ok((
                                parse_digest(d["digest"].as_str().unwrap_or_default())?,
                                d["size"].as_u64().unwrap_or(0),
                            ))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    futures_util::stream::iter(blobs)
                        .map(|(digest, size)| self.blob(repo, digest, size))
                        .buffer_unordered(BLOBS_AT_ONCE)
                        .try_collect::<Vec<()>>()
                        .await?;
                }
            }
            if !self.dry_run && ((first && !there) || tag.is_some()) {
                let reference = tag.unwrap_or(m.digest.as_str());
                let headers = self.dst.put_manifest(repo, reference, &m.media_type, m.bytes.clone()).await?;
                if first && !there {
                    if let Some(subject) = parsed["subject"]["digest"].as_str() {
                        if headers.get("oci-subject").is_none() {
                            let referrer = referrers::Referrer {
                                digest: &m.digest,
                                media_type: &m.media_type,
                                size: m.bytes.len(),
                                parsed: &parsed,
                            };
                            referrers::add_to_scheme(&self.dst, repo, subject, referrer).await?;
                        }
                    }
                }
            }
            if first {
                self.with_report(|r| if there { r.manifests_skipped += 1 } else { r.manifests_copied += 1 });
                self.referrers(repo, &m.digest).await?;
            }
            Ok(first && !there)
        })
    }

    /// Copies a blob to `repo` unless it is there.
    async fn blob(&self, repo: &RepoName, digest: Digest, size: u64) -> anyhow::Result<()> {
        if self.dst.has_blob(repo, digest.as_str()).await? {
            self.with_report(|r| r.blobs_skipped += 1);
            return Ok(());
        }
        if self.dry_run {
            self.with_report(|r| {
                r.blobs_copied += 1;
                r.bytes_copied += size;
            });
            return Ok(());
        }
        let mount = self.placed.lock().ok().and_then(|p| p.get(&digest).filter(|r| *r != repo).cloned());
        let body = async {
            match self.src.fetch(Method::GET, repo, "blobs", digest.as_str()).await? {
                Fetched::Found(resp) => Ok(reqwest::Body::wrap_stream(resp.bytes_stream())),
                Fetched::NotFound => Err(berth_client::UpstreamError::Status {
                    upstream: "source".into(),
                    status: 404,
                    detail: format!("{repo}@{digest}: no such blob"),
                }),
            }
        };
        let sent = self.dst.put_blob(repo, digest.as_str(), size, mount.as_ref(), body).await?;
        self.with_report(|r| match sent {
            Sent::Mounted => r.blobs_mounted += 1,
            Sent::Uploaded => {
                r.blobs_copied += 1;
                r.bytes_copied += size;
            }
        });
        if let Ok(mut p) = self.placed.lock() {
            p.entry(digest).or_insert_with(|| repo.clone());
        }
        Ok(())
    }

    /// Copies what refers to `digest` in `repo` (and what refers to those).
    async fn referrers(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<()> {
        for d in referrers::list(&self.src, repo, digest).await? {
            if self.is_done(repo, &d) {
                continue;
            }
            let m = self.fetch(repo, d.as_str()).await?;
            if self.manifest(repo, &m, None).await? {
                self.with_report(|r| r.referrers_copied += 1);
            }
        }
        Ok(())
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

fn parse_digest(s: &str) -> anyhow::Result<Digest> {
    s.parse().map_err(|e| anyhow::anyhow!("descriptor digest {s:?}: {e}"))
}
