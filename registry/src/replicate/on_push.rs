//! Replication on push: the copy one push event asks for, made from this registry's own storage
//! (the events' deliverer claims, retries and settles it like a webhook's delivery).
//!
//! ```text
//! push of repo:tag (tag through the policy's filter) ─► copy repo:<what the tag names now>
//! referrer attached to a subject ─► copy it, if the destination holds its subject
//! tag or manifest deleted (deletes: tags or mirror) ─► the repository's tags there (within the
//!     filter) that it lacks here are deleted; with mirror, their manifests too
//! anything else (untagged pushes), or gone here since ─► nothing to do
//! ```
//! A tag is copied as it stands when the copy runs, not as the event saw it: copies of one tag
//! made out of order (a retry, another replica) still leave the latest at the destination, and
//! a delete compares the repository's tags as they stand at both ends, so a tag pushed again
//! since its delete stays.

use std::sync::Arc;

use anyhow::Context;
use berth_client::{Unobserved, Upstream};
use berth_core::config::notifications::EventKind;
use berth_core::config::replication::{Deletes, OnPush};
use berth_core::config::UpstreamConfig;
use berth_core::oci::{Reference, RepoName};

use super::copy::Copier;
use super::filter::{TagFilter, TagRules};
use super::names::Prefixes;
use super::prune;
use super::report::Outcome;
use super::source::Source;
use crate::meta::events::Event;
use crate::service::{Registry, ServiceError};

/// One on-push policy's copies.
pub struct PushCopier {
    policy: OnPush,
    registry: Arc<Registry>,
    filter: TagFilter,
    prefixes: Prefixes,
    /// The destination, its credential files re-read at each login (a rotated Secret needs no
    /// restart).
    dst: Arc<Upstream>,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// The image (and its referrers) is at the destination now.
    Copied,
    /// It was there already (its referrers were looked at).
    Unchanged,
    /// Tags (and with mirror, manifests) the source no longer has were deleted there.
    Deleted,
    /// The event asks for nothing under this policy.
    Ignored(&'static str),
}

impl PushCopier {
    pub fn new(policy: &OnPush, registry: Arc<Registry>) -> anyhow::Result<PushCopier> {
        let filter = TagFilter::new(&tag_rules(&policy.tags))
            .with_context(|| format!("replication.on_push {}: tags", policy.name))?;
        let prefixes = Prefixes::new(&policy.source_prefix, &policy.destination_prefix)
            .with_context(|| format!("replication.on_push {}", policy.name))?;
        let mut config = UpstreamConfig::new(&policy.name, policy.destination.trim_end_matches('/'));
        config.credentials_dir = policy.credentials_dir.clone();
        config.ca_file = policy.ca_file.clone();
        config.insecure = policy.insecure;
        let dst = Upstream::new(&config, Arc::new(Unobserved))
            .map_err(|e| anyhow::anyhow!("replication.on_push {}: {e}", policy.name))?;
        Ok(PushCopier { policy: policy.clone(), registry, filter, prefixes, dst: Arc::new(dst) })
    }

    pub fn policy(&self) -> &OnPush {
        &self.policy
    }

    /// Makes the copy `event` asks for.
    pub async fn copy(&self, event: &Event) -> anyhow::Result<Copied> {
        let repo: RepoName = event.repository.parse().context("the event's repository")?;
        if !self.prefixes.covers(repo.as_str()) {
            return Ok(Copied::Ignored("the repository is outside the source prefix"));
        }
        let there = self.prefixes.destination(&repo)?;
        let reference = match (event.kind, &event.tag, &event.subject, &event.digest) {
            (EventKind::TagDelete | EventKind::Delete, ..) => return self.prune(&repo, &there).await,
            (EventKind::Push, Some(tag), _, _) if self.filter.matches(tag) => tag.clone(),
            (EventKind::Push, Some(_), _, _) => return Ok(Copied::Ignored("the tag is not replicated")),
            (EventKind::Referrer, ..) if !self.policy.referrers => {
                return Ok(Copied::Ignored("referrers are not replicated (referrers: false)"))
            }
            (EventKind::Referrer, _, Some(_), Some(digest)) => digest.clone(),
            _ => return Ok(Copied::Ignored("only tags and referrers are replicated on push")),
        };
        let here: Reference = reference.parse().context("the event's reference")?;
        match self.registry.head_manifest(&repo, &here).await {
            Ok(_) => {}
            Err(ServiceError::ManifestUnknown | ServiceError::NameUnknown) => {
                return Ok(Copied::Ignored("deleted here since"));
            }
            Err(e) => return Err(e.into()),
        }
        let dst = self.dst.clone();
        if let (EventKind::Referrer, Some(subject)) = (event.kind, &event.subject) {
            if dst.manifest_digest(&there, subject).await?.is_none() {
                return Ok(Copied::Ignored("the destination does not hold its subject"));
            }
        }
        let mut copier = Copier::new(Source::Local(self.registry.clone()), dst, self.filter.clone(), false);
        copier.overwrite = self.policy.overwrite;
        copier.prefixes = self.prefixes.clone();
        copier.copy_referrers = self.policy.referrers;
        let image = copier.image(&repo, &reference).await?;
        Ok(match image.outcome {
            Outcome::Copied => Copied::Copied,
            Outcome::Kept => Copied::Ignored("the destination's tag names another image (overwrite: false)"),
            _ => Copied::Unchanged,
        })
    }

    /// After a delete here: the tags of `repo` at the destination (as `there`, within the
    /// filter) that it no longer has here go there too.
    async fn prune(&self, repo: &RepoName, there: &RepoName) -> anyhow::Result<Copied> {
        if self.policy.deletes == Deletes::None {
            return Ok(Copied::Ignored("deletes are not replicated (deletes: none)"));
        }
        let here = Source::Local(self.registry.clone()).tags(repo).await?.unwrap_or_default();
        let here = here.into_iter().filter(|t| self.filter.matches(t)).collect();
        let pruned = prune::prune(&self.dst, &self.filter, self.policy.deletes, false, there, &here).await?;
        Ok(if pruned.tags.is_empty() { Copied::Unchanged } else { Copied::Deleted })
    }
}

/// A policy's tag patterns: globs, and regexes after `re:`.
fn tag_rules(tags: &[String]) -> TagRules {
    let mut rules = TagRules::default();
    for t in tags {
        match t.strip_prefix("re:") {
            Some(re) => rules.regexes.push(re.to_owned()),
            None => rules.globs.push(t.clone()),
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_patterns_are_globs_or_regexes() {
        let filter = TagFilter::new(&tag_rules(&["v*".into(), "re:^release-[0-9]+$".into()])).unwrap();
        assert!(filter.matches("v1.2"));
        assert!(filter.matches("release-12"));
        assert!(!filter.matches("release-x"));
        assert!(!filter.matches("latest"));
        assert!(TagFilter::new(&tag_rules(&[])).unwrap().matches("anything"), "all when empty");
    }
}
