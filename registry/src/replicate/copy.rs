//! Copying one image: its manifest with what it needs, then its referrers.
//!
//! Images are copied concurrently, and many share manifests (two tags of one digest, an index's
//! children, a signature's subject). Each manifest's copy is one shared job per repository: the
//! first image to need it does the work, the others wait for it and then only add their tags, so
//! a manifest is never put before what it needs is there, nor copied twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use berth_client::pace::Pacer;
use berth_client::push::Sent;
use berth_client::Upstream;
use berth_core::oci::manifest::media as media_types;
use berth_core::oci::{Algorithm, Digest, RepoName};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::filter::{Platform, TagFilter};
use super::names::Prefixes;
use super::prune::Deletes;
use super::referrers;
use super::report::{Failure, ImageReport, Outcome, Report};
use super::source::Source;

/// Blobs of one manifest copied at once.
const BLOBS_AT_ONCE: usize = 4;

pub(super) struct Copier {
    pub src: Source,
    pub dst: Arc<Upstream>,
    pub filter: TagFilter,
    /// Whether a tag naming another digest at the destination is moved.
    pub overwrite: bool,
    pub deletes: Deletes,
    pub dry_run: bool,
    /// Paces the bytes of blobs sent (a bandwidth limit), when set.
    pub bandwidth: Option<Arc<Pacer>>,
    /// An index's children copied: those for these platforms (all when empty). The index's own
    /// bytes are copied as they are, so its digest stays (the destination must accept a sparse
    /// index).
    pub platforms: Vec<Platform>,
    /// Where each source repository goes at the destination.
    pub prefixes: Prefixes,
    /// Whether referrers (signatures, SBOMs) travel with their subjects.
    pub copy_referrers: bool,
    pub report: Mutex<Report>,
    pub tally: super::progress::Tally,
    /// Per blob, a destination repository this run put it in (to mount it from).
    placed: Mutex<HashMap<Digest, RepoName>>,
    /// Per manifest and repository: its copy, shared by every image that needs it.
    copies: Mutex<HashMap<(RepoName, Digest), SharedCopy>>,
}

/// A repository at both ends: its name at the source and at the destination.
pub(super) struct Repos {
    pub src: RepoName,
    pub dst: RepoName,
}

/// One manifest's copy, done by the first image that needs it and awaited by the others.
type SharedCopy = Arc<OnceCell<Placed>>;

/// How a manifest's copy went.
#[derive(Debug, Clone)]
struct Placed {
    /// It was copied (a dry run: would be), not found there.
    copied: bool,
    /// The tag it was put under (else its digest, or not put).
    tagged: Option<String>,
}

/// A manifest as read from the source.
pub(super) struct Manifest {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
}

impl Copier {
    pub fn new(src: Source, dst: Arc<Upstream>, filter: TagFilter, dry_run: bool) -> Copier {
        Copier {
            src,
            dst,
            filter,
            overwrite: true,
            deletes: Deletes::None,
            dry_run,
            bandwidth: None,
            platforms: Vec::new(),
            prefixes: Prefixes::default(),
            copy_referrers: true,
            report: Mutex::new(Report { dry_run, ..Report::default() }),
            tally: Default::default(),
            placed: Mutex::new(HashMap::new()),
            copies: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_report(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    pub fn failed(&self, image: &str, e: &anyhow::Error) {
        tracing::warn!(image, error = %format!("{e:#}"), "not replicated");
        self.with_report(|r| r.failed.push(Failure { image: image.to_owned(), error: format!("{e:#}") }));
    }

    /// The shared copy of `digest` in the destination's `repo`.
    fn copy_of(&self, repo: &RepoName, digest: &Digest) -> SharedCopy {
        let mut copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        copies.entry((repo.clone(), digest.clone())).or_default().clone()
    }

    /// Whether `digest` in the destination's `repo` was copied (or found there) already this run.
    fn copied(&self, repo: &RepoName, digest: &Digest) -> bool {
        self.copy_of(repo, digest).initialized()
    }

    /// Copies one image of the source's `repo`; how it went.
    pub async fn image(&self, repo: &RepoName, reference: &str) -> anyhow::Result<ImageReport> {
        let repos = Repos { dst: self.prefixes.destination(repo)?, src: repo.clone() };
        let repo = &repos;
        let is_tag = !reference.contains(':');
        let there = if is_tag { self.dst.manifest_digest(&repo.dst, reference).await? } else { None };
        if let Some(there) = &there {
            // A tag already naming the source's digest there costs a HEAD at each end, no GET
            // (which a registry such as Docker Hub counts against its pull limit).
            if let Some((here, media_type)) = self.src.manifest_digest(&repo.src, reference).await? {
                if here.as_str() == there.as_str() {
                    let index = match is_index(&media_type) && self.copy_referrers {
                        true => self.fetch_there(&repo.dst, &here).await?,
                        false => None,
                    };
                    self.unchanged(repo, &here, index.as_ref()).await?;
                    return Ok(ImageReport {
                        repository: repo.src.to_string(),
                        reference: reference.to_owned(),
                        digest: here,
                        outcome: Outcome::Unchanged,
                    });
                }
            }
        }
        let m = self.fetch(&repo.src, reference).await?;
        let outcome = if there.is_some() && there.as_deref() != Some(m.digest.as_str()) && !self.overwrite {
            // The destination's tag stays as it is: nothing of this image is copied.
            Outcome::Kept
        } else if there.as_deref() == Some(m.digest.as_str()) {
            self.unchanged(repo, &m.digest, Some(&m).filter(|m| is_index(&m.media_type))).await?;
            Outcome::Unchanged
        } else {
            self.manifest(repo, &m, is_tag.then_some(reference), 0).await?;
            if self.dry_run {
                Outcome::WouldCopy
            } else {
                Outcome::Copied
            }
        };
        Ok(ImageReport {
            repository: repo.src.to_string(),
            reference: reference.to_owned(),
            digest: m.digest,
            outcome,
        })
    }

    /// A manifest the destination has already: only referrers added since are copied (once),
    /// to it and, for an `index`, to each of its children copied.
    async fn unchanged(&self, repo: &Repos, digest: &Digest, index: Option<&Manifest>) -> anyhow::Result<()> {
        self.referrers_once(repo, digest, 1).await?;
        let Some(index) = index else { return Ok(()) };
        let parsed: serde_json::Value = serde_json::from_slice(&index.bytes)
            .with_context(|| format!("{}@{}: not JSON", repo.src, index.digest))?;
        for child in parsed["manifests"].as_array().into_iter().flatten() {
            if self.platforms.is_empty() || self.platforms.iter().any(|p| p.matches(child)) {
                let digest = parse_digest(child["digest"].as_str().unwrap_or_default())?;
                self.referrers_once(repo, &digest, 2).await?;
            }
        }
        Ok(())
    }

    /// The referrers of a manifest the destination holds, looked at once per run.
    async fn referrers_once(&self, repo: &Repos, digest: &Digest, depth: usize) -> anyhow::Result<()> {
        self.copy_of(&repo.dst, digest)
            .get_or_try_init(|| async {
                self.referrers(repo, digest, depth).await?;
                anyhow::Ok(Placed { copied: false, tagged: None })
            })
            .await?;
        Ok(())
    }

    /// The source's manifest, its digest checked.
    async fn fetch(&self, repo: &RepoName, reference: &str) -> anyhow::Result<Manifest> {
        let Some((media_type, bytes)) = self.src.manifest(repo, reference).await? else {
            anyhow::bail!("{repo}:{reference}: no such manifest at the source")
        };
        checked(repo, reference, media_type, bytes, "source")
    }

    /// The destination's manifest `digest`, its digest checked; `None` when it has none.
    async fn fetch_there(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<Option<Manifest>> {
        match super::source::remote_manifest(&self.dst, repo, digest.as_str()).await? {
            Some((media_type, bytes)) => {
                checked(repo, digest.as_str(), media_type, bytes, "destination").map(Some)
            }
            None => Ok(None),
        }
    }

    /// Copies a manifest with what it needs and its referrers (once per run, whoever asks),
    /// then puts it under `tag` if its copy did not: whether this call copied it (a dry run:
    /// would have) rather than found it there or left it to another. `depth`: how many levels
    /// below the image it is (0 for the image itself).
    fn manifest<'a>(
        &'a self,
        repo: &'a Repos,
        m: &'a Manifest,
        tag: Option<&'a str>,
        depth: usize,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            within_depth(repo, &m.digest, depth)?;
            let mut ours = false;
            let placed = self
                .copy_of(&repo.dst, &m.digest)
                .get_or_try_init(|| {
                    ours = true;
                    self.place(repo, m, tag, depth)
                })
                .await?
                .clone();
            if let (Some(t), false) = (tag, self.dry_run) {
                if placed.tagged.as_deref() != Some(t) {
                    self.dst.put_manifest(&repo.dst, t, &m.media_type, m.bytes.clone()).await?;
                }
            }
            Ok(ours && placed.copied)
        })
    }

    /// The work of one manifest's copy: what it needs (an index's children, a manifest's config
    /// and layers) unless the destination holds it, its bytes as they are (under `tag`, or its
    /// digest), then its referrers.
    async fn place(
        &self,
        repo: &Repos,
        m: &Manifest,
        tag: Option<&str>,
        depth: usize,
    ) -> anyhow::Result<Placed> {
        let parsed: serde_json::Value = serde_json::from_slice(&m.bytes)
            .with_context(|| format!("{}@{}: not JSON", repo.src, m.digest))?;
        // A manifest the destination holds came with everything it needs (the destination
        // checked when it was pushed).
        let there = self.dst.manifest_digest(&repo.dst, m.digest.as_str()).await?.is_some();
        if !there {
            if let Some(children) = parsed["manifests"].as_array() {
                for child in children {
                    if !self.platforms.is_empty() && !self.platforms.iter().any(|p| p.matches(child)) {
                        self.with_report(|r| r.manifests_left_out += 1);
                        continue;
                    }
                    let digest = parse_digest(child["digest"].as_str().unwrap_or_default())?;
                    if !self.copied(&repo.dst, &digest) {
                        let c = self.fetch(&repo.src, digest.as_str()).await?;
                        self.manifest(repo, &c, None, depth + 1).await?;
                    }
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
        let mut tagged = None;
        if !self.dry_run && (!there || tag.is_some()) {
            let reference = tag.unwrap_or(m.digest.as_str());
            let headers = self.dst.put_manifest(&repo.dst, reference, &m.media_type, m.bytes.clone()).await?;
            tagged = tag.map(str::to_owned);
            let subject = parsed["subject"]["digest"].as_str().and_then(|s| s.parse::<Digest>().ok());
            if let (false, Some(subject)) = (there, subject) {
                if headers.get("oci-subject").is_none() {
                    let referrer = referrers::Referrer {
                        digest: &m.digest,
                        media_type: &m.media_type,
                        size: m.bytes.len(),
                        parsed: &parsed,
                    };
                    referrers::add_to_scheme(&self.dst, &repo.dst, &subject, referrer).await?;
                }
            }
        }
        self.with_report(|r| if there { r.manifests_skipped += 1 } else { r.manifests_copied += 1 });
        self.referrers(repo, &m.digest, depth + 1).await?;
        Ok(Placed { copied: !there, tagged })
    }

    /// Copies a blob to `repo` unless it is there.
    async fn blob(&self, repo: &Repos, digest: Digest, size: u64) -> anyhow::Result<()> {
        if self.dst.has_blob(&repo.dst, digest.as_str()).await? {
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
        let mount = self.placed.lock().ok().and_then(|p| p.get(&digest).filter(|r| **r != repo.dst).cloned());
        let body = async {
            let source_error =
                |detail| berth_client::UpstreamError::Protocol { upstream: "source".into(), detail };
            match self.src.blob(&repo.src, &digest).await.map_err(|e| source_error(format!("{e:#}")))? {
                Some(stream) => {
                    let pacer = self.bandwidth.clone();
                    let sent = self.tally.bytes_sent.clone();
                    let paced = stream.then(move |chunk| {
                        let pacer = pacer.clone();
                        async move {
                            if let Ok(c) = &chunk {
                                if let Some(p) = &pacer {
                                    p.take(c.len() as u64).await;
                                }
                            }
                            chunk
                        }
                    });
                    let paced = paced.inspect(move |chunk| {
                        if let Ok(c) = chunk {
                            sent.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                    Ok(reqwest::Body::wrap_stream(paced))
                }
                None => Err(source_error(format!("{}@{digest}: no such blob", repo.src))),
            }
        };
        let sent = self.dst.put_blob(&repo.dst, digest.as_str(), size, mount.as_ref(), body).await?;
        self.with_report(|r| match sent {
            Sent::Mounted => r.blobs_mounted += 1,
            Sent::Uploaded => {
                r.blobs_copied += 1;
                r.bytes_copied += size;
            }
        });
        if let Ok(mut p) = self.placed.lock() {
            p.entry(digest).or_insert_with(|| repo.dst.clone());
        }
        Ok(())
    }

    /// Copies what refers to `digest` in `repo` (and what refers to those), unless referrers stay
    /// behind. A referrer the destination holds is read there (no GET at the source); one
    /// whose own `subject` is not `digest` is left out: a source's listing cannot make a copy
    /// wait on itself (a subject names its referrer's digest only by hashing it, so no chain
    /// of checked subjects loops), nor carry foreign manifests along. `depth`: how many levels
    /// below the image the referrers found here are.
    fn referrers<'a>(
        &'a self,
        repo: &'a Repos,
        digest: &'a Digest,
        depth: usize,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if !self.copy_referrers {
                return Ok(());
            }
            for d in self.src.referrers(&repo.src, digest).await? {
                if self.copied(&repo.dst, &d) {
                    continue;
                }
                within_depth(repo, &d, depth)?;
                let (m, there) = match self.fetch_there(&repo.dst, &d).await? {
                    Some(m) => (m, true),
                    None => (self.fetch(&repo.src, d.as_str()).await?, false),
                };
                let subject = serde_json::from_slice::<serde_json::Value>(&m.bytes)
                    .ok()
                    .and_then(|v| v["subject"]["digest"].as_str().map(str::to_owned));
                if subject.as_deref() != Some(digest.as_str()) {
                    tracing::warn!(repository = %repo.src, referrer = %d, subject = %digest,
                        "the source lists a referrer whose subject is another: left out");
                    continue;
                }
                if there {
                    self.with_report(|r| r.manifests_skipped += 1);
                    self.referrers_once(repo, &d, depth + 1).await?;
                } else if self.manifest(repo, &m, None, depth).await? {
                    self.with_report(|r| r.referrers_copied += 1);
                }
            }
            Ok(())
        })
    }
}

/// `bytes` as the manifest `reference` names, its digest checked when that is a digest (by the
/// digest's own algorithm: an index may name a child by sha512); a tag's manifest is known by
/// its sha256, as registries answer it.
fn checked(
    repo: &RepoName,
    reference: &str,
    media_type: String,
    bytes: Bytes,
    end: &str,
) -> anyhow::Result<Manifest> {
    let named = if reference.contains(':') { Some(parse_digest(reference)?) } else { None };
    let digest = Digest::of(named.as_ref().map_or(Algorithm::Sha256, Digest::algorithm), &bytes);
    if named.is_some_and(|n| n != digest) {
        anyhow::bail!("{repo}@{reference}: the {end} sent a manifest whose digest is {digest}");
    }
    Ok(Manifest { digest, media_type, bytes })
}

/// How deep a copy follows an index's children and referrers of referrers (each level is a
/// nested call): real images use two or three levels; a chain pushed deeper fails its copy with
/// this message instead of overflowing a thread's stack (which aborts the whole process).
const MAX_DEPTH: usize = 32;

fn within_depth(repo: &Repos, digest: &Digest, depth: usize) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        anyhow::bail!(
            "{}@{digest}: nested more than {MAX_DEPTH} levels below the image (index children, \
             referrers of referrers): not copied",
            repo.src
        );
    }
    Ok(())
}

fn is_index(media_type: &str) -> bool {
    media_type == media_types::OCI_INDEX || media_type == media_types::DOCKER_LIST
}

fn parse_digest(s: &str) -> anyhow::Result<Digest> {
    s.parse().map_err(|e| anyhow::anyhow!("descriptor digest {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_checked_by_the_algorithm_their_reference_names() {
        let repo: RepoName = "team/app".parse().unwrap();
        let bytes = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let check = |reference: &str| checked(&repo, reference, "m".into(), bytes.clone(), "source");
        let (sha256, sha512) = (Digest::of(Algorithm::Sha256, &bytes), Digest::of(Algorithm::Sha512, &bytes));
        assert_eq!(check("v1").unwrap().digest, sha256, "a tag's manifest is known by its sha256");
        assert_eq!(check(sha256.as_str()).unwrap().digest, sha256);
        assert_eq!(check(sha512.as_str()).unwrap().digest, sha512, "an index may name a child by sha512");
        let other = Digest::of(Algorithm::Sha512, b"other bytes");
        let refused = check(other.as_str()).err().unwrap().to_string();
        assert!(refused.contains(&format!("whose digest is {sha512}")), "{refused}");
        assert!(check("sha256:not-hex").is_err(), "a malformed digest reference is refused");
    }
}
