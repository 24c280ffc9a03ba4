//! How a `Registry` sheds what it no longer needs: `spec.gc` and its retention policies.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcSpec {
    /// When collections run, in cron syntax (the CronJob's schedule). Default `0 3 * * *`.
    #[schemars(
        regex(pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( +\S+){4})$"),
        length(max = 128)
    )]
    pub schedule: Option<String>,
    /// Nothing pushed or linked more recently than this is removed, e.g. 30m, 2h. Default 1h.
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub grace: Option<String>,
    /// Keep manifests no tag reaches; collect only blobs nothing needs. Default false.
    pub keep_untagged: Option<bool>,
    /// Runs report what they would remove and remove nothing. Default false.
    pub dry_run: Option<bool>,
    /// Runs also remove stored objects no metadata knows (a day old) and the objects of upload
    /// sessions gone. Default false.
    pub scrub: Option<bool>,
    /// Runs also read every stored blob and check it against its digest (reads all the bytes;
    /// implies scrub). Corrupt cached content is evicted, to be fetched again. Default false.
    pub verify: Option<bool>,
    /// No scheduled runs; the annotation still starts one. Default false.
    pub suspend: Option<bool>,
    /// Which tags each run removes first. The first policy whose repositories match decides
    /// for a repository.
    pub retention: Option<Vec<RetentionPolicySpec>>,
    /// The bytes of what nothing uses any more are deleted no sooner than this after their
    /// release, e.g. 24h: longer than a backup takes (copy the database, then the store).
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub purge_delay: Option<String>,
    /// How often berth itself collects over the review queue (only the repositories changed
    /// since a collection last looked), e.g. 10m, between the CronJob's full runs, with the same
    /// grace and keepUntagged; none when absent, suspended or a dry run.
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$"))]
    pub review_every: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicySpec {
    /// Repository globs: `*` within one path part, `**` across parts.
    pub repositories: Vec<String>,
    /// Ordered: the first selector that matches a tag decides; a tag none matches stays.
    pub tags: Option<Vec<TagRuleSpec>>,
    /// Tag globs never removed.
    pub protect: Option<Vec<String>>,
    /// Tags of manifests with one of these annotations are never removed: `key` (any value) or
    /// `key=value`.
    pub protect_annotations: Option<Vec<String>>,
    /// At least this many tags stay in each repository (the most recently pushed).
    pub minimum_tags: Option<u32>,
    /// Untagged manifests stay this long after their push, e.g. 7d.
    pub untagged_for: Option<String>,
    /// WithSubject (default): referrers go with their subject; Keep: they stay.
    pub referrers: Option<ReferrersPolicy>,
    /// Report what this policy would remove; remove none of it.
    pub dry_run: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReferrersPolicy {
    WithSubject,
    Keep,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagRuleSpec {
    /// Exactly one of glob or regex.
    #[serde(rename = "match")]
    pub select: TagMatchSpec,
    pub keep: KeepSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagMatchSpec {
    /// `*` matches any run of characters.
    pub glob: Option<String>,
    /// A regular expression (anchor it with `^…$` to match whole tags).
    pub regex: Option<String>,
}

/// Exactly one rule: keep the N most recently pushed or pulled of the tags the selector matched,
/// those pushed or pulled within a duration, or any/all of such rules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepSpec {
    #[serde(flatten)]
    pub rule: KeepRuleSpec,
    pub any: Option<Vec<KeepRuleSpec>>,
    pub all: Option<Vec<KeepRuleSpec>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepRuleSpec {
    pub most_recently_pushed: Option<u32>,
    pub most_recently_pulled: Option<u32>,
    /// A duration, e.g. 30d.
    pub pushed_within: Option<String>,
    pub pulled_within: Option<String>,
}
