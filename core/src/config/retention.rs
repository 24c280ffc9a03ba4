//! Retention policies: which tags garbage collection removes, per repository.
//!
//! ```yaml
//! retention:
//!   purge_delay: 24h                   # released bytes are deleted no sooner (for backups)
//!   review_every: 10m                  # collect over the review queue this often
//!   review_grace: 1h                   # with this grace (as the full runs': default 1h)
//!   review_keep_untagged: false        # and keeping untagged manifests, or not
//!   policies:                          # the first whose repositories match decides
//!     - repositories: ["ci/**"]
//!       protect: [latest, "release-*"] # never removed, whatever the rules say
//!       protect_annotations:           # nor tags of manifests annotated so (key, or key=value)
//!         - "org.example.release=true"
//!       minimum_tags: 3                # at least this many tags stay (the newest pushed)
//!       untagged_for: 7d               # untagged manifests stay this long after their push
//!       referrers: with_subject        # or keep: signatures and SBOMs outlive their subject
//!       dry_run: false                 # true: reported, never removed
//!       tags:                          # ordered: the first selector that matches a tag decides
//!         - match: { regex: "^pr-[0-9]+$" }
//!           keep: { pushed_within: 7d }
//!         - match: { glob: "*" }
//!           keep: { any: [ { most_recently_pushed: 10 }, { pulled_within: 30d } ] }
//! ```
//! A tag no selector matches is kept. Rules: `most_recently_pushed: N`, `most_recently_pulled: N`
//! (among the tags its selector matched), `pushed_within: D`, `pulled_within: D`, and `any`/`all`
//! of rules. A tag never pulled counts as pulled when it was pushed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<RetentionPolicy>,
    /// The bytes of a blob nothing uses any more are deleted no sooner than this after it was
    /// released (longer than the store's own grace, when set): a backup that copies the
    /// database first and the store within this time restores every blob the database names.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pub purge_delay: Option<Duration>,
    /// How often each replica tries a collection over the review queue (only the repositories
    /// changed since a collection last looked); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pub review_every: Option<Duration>,
    /// The grace of those collections (nothing younger is removed): the full runs' own, which
    /// their clients give. Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pub review_grace: Option<Duration>,
    /// Those collections keep manifests no tag reaches, as full runs with `--keep-untagged` do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review_keep_untagged: bool,
}

impl RetentionConfig {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.purge_delay.is_none()
            && self.review_every.is_none()
            && self.review_grace.is_none()
            && !self.review_keep_untagged
    }

    /// Returns the offending field (relative to `retention`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, p) in self.policies.iter().enumerate() {
            let f = |field: &str| format!("retention.policies[{i}].{field}");
            if p.repositories.is_empty() || p.repositories.iter().any(|r| r.trim().is_empty()) {
                return Err((f("repositories"), "name at least one repository glob, e.g. team/**".into()));
            }
            for (j, t) in p.tags.iter().enumerate() {
                if let TagMatch::Regex(r) = &t.select {
                    regex_lite::Regex::new(r)
                        .map_err(|e| (f(&format!("tags[{j}].match.regex")), e.to_string()))?;
                }
                t.keep.validate().map_err(|m| (f(&format!("tags[{j}].keep")), m))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Repository globs (`*` within a path part, `**` across parts).
    pub repositories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagRule>,
    /// Tag globs never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    /// Manifest annotations whose tags are never removed: `key` (any value) or `key=value`,
    /// matched against the annotations of the manifest (or index) the tag names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect_annotations: Vec<String>,
    /// At least this many tags stay in each repository: the most recently pushed of those the
    /// rules would remove are spared first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minimum_tags: u32,
    /// Untagged manifests stay this long after their push (the collection's grace when longer).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pub untagged_for: Option<Duration>,
    #[serde(default, skip_serializing_if = "Referrers::is_default")]
    pub referrers: Referrers,
    /// Report what this policy would remove; remove none of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What happens to a referrer (a signature, an SBOM) whose subject goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Referrers {
    #[default]
    WithSubject,
    Keep,
}

impl Referrers {
    fn is_default(&self) -> bool {
        *self == Referrers::WithSubject
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    #[serde(rename = "match")]
    pub select: TagMatch,
    pub keep: Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TagMatchRepr", into = "TagMatchRepr")]
pub enum TagMatch {
    /// `*` matches any run of characters.
    Glob(String),
    /// A regular expression (anchor it with `^…$` to match whole tags).
    Regex(String),
}

/// How a selector is written: a map with exactly one of its keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagMatchRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    glob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<TagMatchRepr> for TagMatch {
    type Error = String;
    fn try_from(r: TagMatchRepr) -> Result<TagMatch, String> {
        match (r.glob, r.regex) {
            (Some(g), None) => Ok(TagMatch::Glob(g)),
            (None, Some(r)) => Ok(TagMatch::Regex(r)),
            _ => Err("a tag match is one of {glob: …} or {regex: …}".into()),
        }
    }
}

impl From<TagMatch> for TagMatchRepr {
    fn from(m: TagMatch) -> TagMatchRepr {
        match m {
            TagMatch::Glob(g) => TagMatchRepr { glob: Some(g), ..Default::default() },
            TagMatch::Regex(r) => TagMatchRepr { regex: Some(r), ..Default::default() },
        }
    }
}

/// Which of the tags a selector matched stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "KeepRepr", into = "KeepRepr")]
pub enum Keep {
    MostRecentlyPushed(u32),
    MostRecentlyPulled(u32),
    PushedWithin(Duration),
    PulledWithin(Duration),
    /// Kept if any rule keeps it.
    Any(Vec<Keep>),
    /// Kept only if every rule keeps it.
    All(Vec<Keep>),
}

/// How a rule is written: a map with exactly one of its keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    most_recently_pushed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    most_recently_pulled: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pushed_within: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pulled_within: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<Vec<Keep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<Vec<Keep>>,
}

impl TryFrom<KeepRepr> for Keep {
    type Error = String;
    fn try_from(r: KeepRepr) -> Result<Keep, String> {
        let mut rules = [
            r.most_recently_pushed.map(Keep::MostRecentlyPushed),
            r.most_recently_pulled.map(Keep::MostRecentlyPulled),
            r.pushed_within.map(Keep::PushedWithin),
            r.pulled_within.map(Keep::PulledWithin),
            r.any.map(Keep::Any),
            r.all.map(Keep::All),
        ]
        .into_iter()
        .flatten();
        match (rules.next(), rules.next()) {
            (Some(k), None) => Ok(k),
            _ => Err("a keep rule is exactly one of most_recently_pushed, most_recently_pulled, \
                      pushed_within, pulled_within, any, all"
                .into()),
        }
    }
}

impl From<Keep> for KeepRepr {
    fn from(k: Keep) -> KeepRepr {
        let mut r = KeepRepr::default();
        match k {
            Keep::MostRecentlyPushed(n) => r.most_recently_pushed = Some(n),
            Keep::MostRecentlyPulled(n) => r.most_recently_pulled = Some(n),
            Keep::PushedWithin(d) => r.pushed_within = Some(d),
            Keep::PulledWithin(d) => r.pulled_within = Some(d),
            Keep::Any(v) => r.any = Some(v),
            Keep::All(v) => r.all = Some(v),
        }
        r
    }
}

impl Keep {
    fn validate(&self) -> Result<(), String> {
        match self {
            Keep::Any(rules) | Keep::All(rules) if rules.is_empty() => {
                Err("any and all need at least one rule".into())
            }
            Keep::Any(rules) | Keep::All(rules) => rules.iter().try_for_each(Keep::validate),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, name: &str, rules: &[Keep]| {
            let parts: Vec<String> = rules.iter().map(Keep::to_string).collect();
            write!(f, "{name} of ({})", parts.join(", "))
        };
        match self {
            Keep::MostRecentlyPushed(n) => write!(f, "among the {n} most recently pushed"),
            Keep::MostRecentlyPulled(n) => write!(f, "among the {n} most recently pulled"),
            Keep::PushedWithin(d) => write!(f, "pushed within {}", duration::format(d)),
            Keep::PulledWithin(d) => write!(f, "pulled within {}", duration::format(d)),
            Keep::Any(rules) => list(f, "any", rules),
            Keep::All(rules) => list(f, "all", rules),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_documented_and_bad_ones_say_where() {
        let yaml = "policies:
  - repositories: [\"ci/**\"]
    protect: [latest]
    minimum_tags: 3
    untagged_for: 7d
    referrers: keep
    tags:
      - match: { regex: \"^pr-[0-9]+$\" }
        keep: { pushed_within: 7d }
      - match: { glob: \"*\" }
        keep: { any: [ { most_recently_pushed: 10 }, { pulled_within: 30d } ] }
";
        let c: RetentionConfig = serde_yaml::from_str(yaml).unwrap();
        c.validate().unwrap();
        let p = &c.policies[0];
        assert_eq!((p.minimum_tags, p.referrers), (3, Referrers::Keep));
        assert_eq!(p.untagged_for, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(p.tags[0].keep, Keep::PushedWithin(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            p.tags[1].keep.to_string(),
            "any of (among the 10 most recently pushed, pulled within 30d)"
        );
        let back: RetentionConfig = serde_yaml::from_str(&serde_yaml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c, "what the operator writes, berth reads");

        let bad_regex =
            "policies: [{repositories: [a], tags: [{match: {regex: \"(\"}, keep: {pushed_within: 1d}}]}]";
        let c: RetentionConfig = serde_yaml::from_str(bad_regex).unwrap();
        assert_eq!(c.validate().unwrap_err().0, "retention.policies[0].tags[0].match.regex");
        let empty_any = "policies: [{repositories: [a], tags: [{match: {glob: x}, keep: {all: []}}]}]";
        let c: RetentionConfig = serde_yaml::from_str(empty_any).unwrap();
        assert_eq!(c.validate().unwrap_err().0, "retention.policies[0].tags[0].keep");
        let no_repos = "policies: [{repositories: []}]";
        let c: RetentionConfig = serde_yaml::from_str(no_repos).unwrap();
        assert_eq!(c.validate().unwrap_err().0, "retention.policies[0].repositories");
        assert!(serde_yaml::from_str::<RetentionConfig>("policies: [{repositories: [a], keep_all: true}]")
            .is_err());
    }
}
