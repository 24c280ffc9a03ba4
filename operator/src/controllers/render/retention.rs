//! `spec.gc.retention` and `purgeDelay` as berth's `retention` config (pure): the same
//! policies, written the Kubernetes way (camelCase, durations as strings), checked by berth's
//! own validation.

use berth_core::config::duration;
use berth_core::config::retention::{Keep, Referrers, RetentionConfig, RetentionPolicy, TagMatch, TagRule};

use super::error::BuildError;
use crate::crd::registry::{GcSpec, KeepRuleSpec, KeepSpec, ReferrersPolicy, TagMatchSpec};

pub fn config(gc: &GcSpec) -> Result<RetentionConfig, BuildError> {
    let policies = gc.retention.as_deref().unwrap_or_default();
    let optional = |v: &Option<String>, field: &str| {
        v.as_deref()
            .map(duration::parse)
            .transpose()
            .map_err(|m| BuildError::InvalidGc(format!("{field}: {m}")))
    };
    let purge_delay = optional(&gc.purge_delay, "purgeDelay")?;
    let review_every = optional(&gc.review_every, "reviewEvery")?;
    let review_grace = optional(&gc.grace, "grace")?;
    let invalid = |at: String, m: String| BuildError::InvalidGc(format!("retention{at}: {m}"));
    let mut out = Vec::with_capacity(policies.len());
    for (i, p) in policies.iter().enumerate() {
        let mut tags = Vec::new();
        for (j, t) in p.tags.iter().flatten().enumerate() {
            let at = || format!("[{i}].tags[{j}]");
            let select = tag_match(&t.select).map_err(|m| invalid(at(), m))?;
            let keep = keep(&t.keep).map_err(|m| invalid(format!("{}.keep", at()), m))?;
            tags.push(TagRule { select, keep });
        }
        let untagged_for = p
            .untagged_for
            .as_deref()
            .map(duration::parse)
            .transpose()
            .map_err(|m| invalid(format!("[{i}].untaggedFor"), m))?;
        out.push(RetentionPolicy {
            repositories: p.repositories.clone(),
            tags,
            protect: p.protect.clone().unwrap_or_default(),
            protect_annotations: p.protect_annotations.clone().unwrap_or_default(),
            minimum_tags: p.minimum_tags.unwrap_or(0),
            untagged_for,
            referrers: match p.referrers {
                Some(ReferrersPolicy::Keep) => Referrers::Keep,
                _ => Referrers::WithSubject,
            },
            dry_run: p.dry_run == Some(true),
        });
    }
    // Reviews remove what the CronJob's runs would, and stop when those do; a dry run only
    // reports, which a review of the queue never needs.
    let reviews = gc.suspend != Some(true) && gc.dry_run != Some(true);
    let c = RetentionConfig {
        policies: out,
        purge_delay,
        review_every: review_every.filter(|_| reviews),
        review_grace: review_grace.filter(|_| reviews && review_every.is_some()),
        review_keep_untagged: reviews && review_every.is_some() && gc.keep_untagged == Some(true),
    };
    c.validate().map_err(|(field, m)| {
        BuildError::InvalidGc(format!("{}: {m}", field.replacen("retention.policies", "retention", 1)))
    })?;
    Ok(c)
}

fn tag_match(m: &TagMatchSpec) -> Result<TagMatch, String> {
    match (&m.glob, &m.regex) {
        (Some(g), None) => Ok(TagMatch::Glob(g.clone())),
        (None, Some(r)) => Ok(TagMatch::Regex(r.clone())),
        _ => Err("match needs exactly one of glob or regex".into()),
    }
}

fn keep(k: &KeepSpec) -> Result<Keep, String> {
    let list = |rules: &[KeepRuleSpec]| rules.iter().map(rule).collect::<Result<Vec<_>, _>>();
    let mut found = Vec::new();
    if let Some(r) = rule_opt(&k.rule)? {
        found.push(r);
    }
    if let Some(any) = &k.any {
        found.push(Keep::Any(list(any)?));
    }
    if let Some(all) = &k.all {
        found.push(Keep::All(list(all)?));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        _ => Err(ONE_RULE.into()),
    }
}

const ONE_RULE: &str =
    "give exactly one of mostRecentlyPushed, mostRecentlyPulled, pushedWithin, pulledWithin, any, all";

fn rule(r: &KeepRuleSpec) -> Result<Keep, String> {
    rule_opt(r)?.ok_or_else(|| ONE_RULE.into())
}

/// The one leaf rule `r` gives, if any.
fn rule_opt(r: &KeepRuleSpec) -> Result<Option<Keep>, String> {
    let within = |d: &Option<String>| d.as_deref().map(duration::parse).transpose();
    let rules: Vec<Keep> = [
        r.most_recently_pushed.map(Keep::MostRecentlyPushed),
        r.most_recently_pulled.map(Keep::MostRecentlyPulled),
        within(&r.pushed_within)?.map(Keep::PushedWithin),
        within(&r.pulled_within)?.map(Keep::PulledWithin),
    ]
    .into_iter()
    .flatten()
    .collect();
    match rules.len() {
        0 => Ok(None),
        1 => Ok(rules.into_iter().next()),
        _ => Err(ONE_RULE.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(retention: serde_json::Value) -> GcSpec {
        serde_json::from_value(
            serde_json::json!({"retention": retention, "purgeDelay": "1d", "reviewEvery": "10m",
                "grace": "30m", "keepUntagged": true}),
        )
        .unwrap()
    }

    #[test]
    fn policies_render_to_what_berth_reads() {
        let p = spec(serde_json::json!([{
            "repositories": ["ci/**"],
            "protect": ["latest"],
            "protectAnnotations": ["org.example.release=true"],
            "minimumTags": 2,
            "untaggedFor": "7d",
            "referrers": "Keep",
            "tags": [
                {"match": {"regex": "^pr-"}, "keep": {"pushedWithin": "7d"}},
                {"match": {"glob": "*"}, "keep": {"any": [{"mostRecentlyPushed": 10}, {"pulledWithin": "30d"}]}},
            ],
        }]));
        let c = config(&p).unwrap();
        let rendered = berth_core::config::Config { retention: c.clone(), ..Default::default() };
        let back = berth_core::config::Config::from_yaml(&rendered.to_yaml(), "rendered").unwrap();
        assert_eq!(back.retention, c, "berth parses what the operator writes");
        assert_eq!(c.purge_delay, Some(std::time::Duration::from_secs(86_400)));
        assert_eq!(c.review_every, Some(std::time::Duration::from_secs(600)));
        assert_eq!(
            (c.review_grace, c.review_keep_untagged),
            (Some(std::time::Duration::from_secs(1800)), true),
            "reviews keep what the CronJob's runs keep"
        );
        for (field, value) in [("suspend", true), ("dryRun", true)] {
            let mut stopped = p.clone();
            let mut v = serde_json::to_value(&stopped).unwrap();
            v[field] = value.into();
            stopped = serde_json::from_value(v).unwrap();
            let c = config(&stopped).unwrap();
            assert_eq!(
                (c.review_every, c.review_grace, c.review_keep_untagged),
                (None, None, false),
                "{field}"
            );
        }
        let p0 = &c.policies[0];
        assert_eq!((p0.minimum_tags, p0.referrers), (2, Referrers::Keep));
        assert_eq!(p0.protect_annotations, ["org.example.release=true"]);
        assert_eq!(
            p0.tags[1].keep.to_string(),
            "any of (among the 10 most recently pushed, pulled within 30d)"
        );
    }

    #[test]
    fn mistakes_say_where() {
        let cases = [
            (
                serde_json::json!([{"repositories": ["a"], "tags": [{"match": {}, "keep": {"mostRecentlyPushed": 1}}]}]),
                "retention[0].tags[0]: match needs",
            ),
            (
                serde_json::json!([{"repositories": ["a"], "tags": [{"match": {"glob": "*"}, "keep": {}}]}]),
                "retention[0].tags[0].keep: give exactly one",
            ),
            (
                serde_json::json!([{"repositories": ["a"], "tags": [{"match": {"glob": "*"}, "keep": {"mostRecentlyPushed": 1, "any": [{"pushedWithin": "1d"}]}}]}]),
                "retention[0].tags[0].keep: give exactly one",
            ),
            (
                serde_json::json!([{"repositories": ["a"], "tags": [{"match": {"glob": "*"}, "keep": {"pushedWithin": "soon"}}]}]),
                "retention[0].tags[0].keep: \"soon\"",
            ),
            (
                serde_json::json!([{"repositories": ["a"], "tags": [{"match": {"regex": "("}, "keep": {"mostRecentlyPushed": 1}}]}]),
                "retention[0].tags[0].match.regex",
            ),
            (serde_json::json!([{"repositories": [], "tags": []}]), "retention[0].repositories"),
        ];
        for (json, want) in cases {
            match config(&spec(json)) {
                Err(BuildError::InvalidGc(m)) => assert!(m.starts_with(want), "{m}"),
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
