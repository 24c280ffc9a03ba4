//! Which tags of a repository are replicated: globs, regular expressions and a semver range,
//! each with its exclusions. The `sha256-<hex>` tags of the referrers tag scheme are never
//! images: they travel with their subjects.

use anyhow::Context;
use berth_core::glob::Glob;
use berth_core::oci::Digest;
use regex_lite::Regex;

#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    globs: Vec<Glob>,
    regexes: Vec<Regex>,
    exclude_globs: Vec<Glob>,
    exclude_regexes: Vec<Regex>,
    semver: Option<semver::VersionReq>,
}

/// A tag's filters as asked for.
#[derive(Debug, Clone, Default)]
pub struct TagRules {
    /// Globs a tag may match (with `regexes`: a tag matching any of either is in; all when both
    /// are empty).
    pub globs: Vec<String>,
    pub regexes: Vec<String>,
    pub exclude_globs: Vec<String>,
    pub exclude_regexes: Vec<String>,
    /// A semver range (`>=1.2, <2`): only tags that are versions in it (a leading `v` and a
    /// missing minor or patch allowed: `v1.2` is 1.2.0).
    pub semver: Option<String>,
}

impl TagFilter {
    pub fn new(r: &TagRules) -> anyhow::Result<TagFilter> {
        // Anchored: a pattern names whole tags, as globs do.
        let compile = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| Regex::new(&format!("^(?:{p})$")).with_context(|| format!("tag regex {p:?}")))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let semver = match &r.semver {
            Some(range) => {
                Some(semver::VersionReq::parse(range).with_context(|| format!("semver range {range:?}"))?)
            }
            None => None,
        };
        Ok(TagFilter {
            globs: r.globs.iter().map(|g| Glob::new(g)).collect(),
            regexes: compile(&r.regexes)?,
            exclude_globs: r.exclude_globs.iter().map(|g| Glob::new(g)).collect(),
            exclude_regexes: compile(&r.exclude_regexes)?,
            semver,
        })
    }

    pub fn matches(&self, tag: &str) -> bool {
        let included = (self.globs.is_empty() && self.regexes.is_empty())
            || self.globs.iter().any(|g| g.matches(tag))
            || self.regexes.iter().any(|r| r.is_match(tag));
        let excluded = self.exclude_globs.iter().any(|g| g.matches(tag))
            || self.exclude_regexes.iter().any(|r| r.is_match(tag));
        let in_range = match &self.semver {
            Some(req) => version(tag).is_some_and(|v| req.matches(&v)),
            None => true,
        };
        !Digest::is_referrers_tag(tag) && included && !excluded && in_range
    }
}

/// A platform an index's children are chosen by: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [os, architecture] | [os, architecture, _] if !os.is_empty() && !architecture.is_empty() => {
                Ok(Platform {
                    os: os.to_owned(),
                    architecture: architecture.to_owned(),
                    variant: parts.get(2).map(|v| (*v).to_owned()),
                })
            }
            _ => anyhow::bail!(
                "platform {s:?}: write os/architecture or os/architecture/variant, e.g. linux/arm64/v8"
            ),
        }
    }
}

impl Platform {
    /// Whether an index entry (a descriptor with its `platform`) is for this platform; one
    /// without a platform is for none.
    pub fn matches(&self, descriptor: &serde_json::Value) -> bool {
        let p = &descriptor["platform"];
        p["os"].as_str() == Some(self.os.as_str())
            && p["architecture"].as_str() == Some(self.architecture.as_str())
            && self.variant.as_deref().is_none_or(|v| p["variant"].as_str() == Some(v))
    }
}

/// The version a tag names: `1.2.3`, `v1.2.3`, `1.2` (1.2.0), `1` (1.0.0), pre-releases as semver
/// has them (`1.2.3-rc.1`).
fn version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, rest) = match t.find(['-', '+']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let parts = core.split('.').count();
    let padded = match parts {
        1 => format!("{core}.0.0{rest}"),
        2 => format!("{core}.0{rest}"),
        _ => return None,
    };
    semver::Version::parse(&padded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(r: TagRules) -> impl Fn(&str) -> bool {
        let f = TagFilter::new(&r).unwrap();
        move |t| f.matches(t)
    }

    #[test]
    fn table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: Vec<(TagRules, Vec<(&str, bool)>)> = vec![
            (TagRules::default(), vec![("latest", true), ("v1", true)]),
            (
                TagRules { globs: s(&["v*"]), exclude_globs: s(&["*-rc*"]), ..Default::default() },
                vec![("v1.2", true), ("v1.3-rc1", false), ("latest", false)],
            ),
            (
                TagRules { regexes: s(&["[0-9]+\\.[0-9]+"]), ..Default::default() },
                vec![("1.2", true), ("1.2.3", false), ("x1.2", false)],
            ),
            (
                TagRules { globs: s(&["latest"]), regexes: s(&["pr-[0-9]+"]), ..Default::default() },
                vec![("latest", true), ("pr-12", true), ("pr-x", false)],
            ),
            (
                TagRules { semver: Some(">=1.2, <2".into()), ..Default::default() },
                vec![
                    ("1.2.0", true),
                    ("v1.9.9", true),
                    ("v1.2", true),
                    ("2.0.0", false),
                    ("1.1.9", false),
                    ("1.5.0-rc.1", false),
                    ("latest", false),
                ],
            ),
            (
                TagRules {
                    semver: Some("^1".into()),
                    exclude_regexes: s(&[".*-debug"]),
                    ..Default::default()
                },
                vec![("1", true), ("1.4.2", true), ("1.4.2-debug", false)],
            ),
        ];
        for (rules, tags) in cases {
            let f = filter(rules.clone());
            for (tag, want) in tags {
                assert_eq!(f(tag), want, "{tag} under {rules:?}");
            }
        }
        let scheme = format!("sha256-{}", "a".repeat(64));
        assert!(!filter(TagRules::default())(&scheme), "the referrers tag scheme is never an image");
    }

    #[test]
    fn platforms_choose_index_entries() {
        let amd64 = serde_json::json!({"platform": {"os": "linux", "architecture": "amd64"}});
        let arm = serde_json::json!({"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}});
        let attestation = serde_json::json!({"platform": {"os": "unknown", "architecture": "unknown"}});
        let p: Platform = "linux/amd64".parse().unwrap();
        assert!(p.matches(&amd64) && !p.matches(&arm) && !p.matches(&attestation));
        let any_arm: Platform = "linux/arm64".parse().unwrap();
        let v7: Platform = "linux/arm64/v7".parse().unwrap();
        assert!(any_arm.matches(&arm) && !v7.matches(&arm), "a variant, when given, must match");
        assert!(!p.matches(&serde_json::json!({})), "no platform: for none");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_what_was_wrong() {
        let bad = TagRules { regexes: vec!["(".into()], ..Default::default() };
        assert!(TagFilter::new(&bad).unwrap_err().to_string().contains("tag regex"));
        let bad = TagRules { semver: Some("about 1".into()), ..Default::default() };
        assert!(TagFilter::new(&bad).unwrap_err().to_string().contains("semver range"));
    }
}
