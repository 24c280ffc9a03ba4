//! Every rule and combinator, as a table: a policy, tags with their ages, what goes.

use berth_core::config::RetentionConfig;
use berth_core::oci::{Algorithm, Digest};

use super::Policies;
use crate::meta::browse::StoredTag;

const DAY: i64 = 86_400;
const NOW: i64 = 1_000 * DAY;

/// `name:pushed days ago[:pulled days ago]`.
fn tags(spec: &str) -> Vec<StoredTag> {
    spec.split_whitespace()
        .map(|t| {
            let parts: Vec<&str> = t.split(':').collect();
            let ago = |s: &str| NOW - s.parse::<i64>().unwrap() * DAY;
            StoredTag {
                name: parts[0].into(),
                digest: Digest::of(Algorithm::Sha256, parts[0].as_bytes()),
                pushed_at: ago(parts[1]),
                pulled_at: parts.get(2).map(|p| ago(p)),
                annotations: None,
            }
        })
        .collect()
}

fn policies(yaml: &str) -> Policies {
    let c: RetentionConfig = serde_yaml::from_str(yaml).unwrap();
    c.validate().unwrap();
    Policies::new(&c).unwrap()
}

/// Which tags the policy for `repo` removes.
fn removed(yaml: &str, repo: &str, spec: &str) -> Vec<String> {
    let p = policies(yaml);
    let Some(policy) = p.for_repo(repo) else { return Vec::new() };
    let t = tags(spec);
    policy.doomed(&t, NOW).into_iter().map(|d| t[d.index].name.clone()).collect()
}

const TAGS: &str = "a:1:50 b:2:1 c:3 d:10:2 e:20:30 f:40";

#[test]
fn each_rule_and_combinator() {
    let rule = |keep: &str| {
        format!("policies: [{{repositories: [\"**\"], tags: [{{match: {{glob: \"*\"}}, keep: {keep}}}]}}]")
    };
    let table: &[(&str, &str)] = &[
        ("{most_recently_pushed: 2}", "c d e f"),
        ("{most_recently_pushed: 0}", "a b c d e f"),
        ("{most_recently_pushed: 10}", ""),
        // Never pulled counts as pulled when pushed: c (3 days), f (40 days).
        ("{most_recently_pulled: 3}", "a e f"),
        ("{pushed_within: 5d}", "d e f"),
        ("{pulled_within: 5d}", "a e f"),
        ("{any: [{pushed_within: 2d}, {pulled_within: 2d}]}", "c e f"),
        ("{all: [{pushed_within: 15d}, {pulled_within: 5d}]}", "a e f"),
        ("{all: [{most_recently_pushed: 4}, {any: [{pulled_within: 2d}, {pushed_within: 1d}]}]}", "c e f"),
        ("{any: [{most_recently_pulled: 1}]}", "a c d e f"),
    ];
    for (keep, gone) in table {
        let want: Vec<&str> = gone.split_whitespace().collect();
        assert_eq!(removed(&rule(keep), "team/app", TAGS), want, "keep {keep}");
    }
}

#[test]
fn the_first_matching_selector_decides_and_unmatched_tags_stay() {
    let yaml = r#"policies:
  - repositories: ["ci/**"]
    tags:
      - {match: {regex: "^pr-[0-9]+$"}, keep: {pushed_within: 7d}}
      - {match: {glob: "pr-*"}, keep: {most_recently_pushed: 1}}
      - {match: {glob: "v*"}, keep: {most_recently_pushed: 2}}
"#;
    let t = "pr-1:3 pr-2:9 pr-x:1 pr-y:2 v1:30 v2:20 v3:10 latest:100 main:90";
    // pr-1/pr-2 by the regex (pr-2 too old); pr-x/pr-y by the glob (keep the newest, pr-x);
    // v1 beyond the two newest; latest and main match nothing.
    assert_eq!(removed(yaml, "ci/app", t), ["pr-2", "pr-y", "v1"]);
    assert_eq!(removed(yaml, "prod/app", t), Vec::<String>::new(), "no policy: nothing goes");
}

#[test]
fn protection_minimum_tags_and_policy_order() {
    let yaml = r#"policies:
  - repositories: ["team/keep-three"]
    minimum_tags: 3
    tags: [{match: {glob: "*"}, keep: {pushed_within: 1d}}]
  - repositories: ["team/**"]
    protect: ["latest", "release-*"]
    tags: [{match: {glob: "*"}, keep: {most_recently_pushed: 1}}]
"#;
    let t = "latest:50 release-1:40 n1:1 n2:2 n3:3 n4:4";
    assert_eq!(removed(yaml, "team/app", t), ["n2", "n3", "n4"], "protected tags stay");
    // The first policy decides for team/keep-three: only n1 is young, and three tags stay, the
    // most recently pushed of those that would go spared first (n2).
    assert_eq!(removed(yaml, "team/keep-three", "n1:0 n2:2 n3:3 old:50 older:60"), ["old", "older"]);
}

#[test]
fn annotations_protect_their_tags() {
    let yaml = r#"policies:
  - repositories: ["**"]
    protect_annotations: ["org.example.release=true", "org.example.hold"]
    tags: [{match: {glob: "*"}, keep: {most_recently_pushed: 0}}]
"#;
    let p = policies(yaml);
    let mut t = tags("released:1 not-released:2 held:3 plain:4 garbled:5");
    let notes = [
        r#"{"org.example.release":"true"}"#,
        r#"{"org.example.release":"false"}"#,
        r#"{"org.example.hold":""}"#,
        r#"{"org.opencontainers.image.title":"x"}"#,
        "not json",
    ];
    for (tag, a) in t.iter_mut().zip(notes) {
        tag.annotations = Some(a.into());
    }
    let gone: Vec<_> =
        p.for_repo("a").unwrap().doomed(&t, NOW).into_iter().map(|d| t[d.index].name.clone()).collect();
    assert_eq!(gone, ["garbled", "not-released", "plain"]);
}

#[test]
fn each_kept_tag_says_what_kept_it() {
    let yaml = r#"policies:
  - repositories: ["**"]
    protect: ["v9"]
    minimum_tags: 5
    tags:
      - {match: {regex: "^v"}, keep: {most_recently_pushed: 1}}
"#;
    let p = policies(yaml);
    let t = tags("latest:9 v1:3 v2:2 v3:1 v9:8 dev:5");
    let d: Vec<(String, bool, String)> = p
        .for_repo("a")
        .unwrap()
        .decide(&t, NOW)
        .into_iter()
        .map(|d| (t[d.index].name.clone(), d.removed, d.reason))
        .collect();
    let at = |s: &str| format!("retention.policies[0]: {s}");
    let rule = "tag rule 1 (regex \"^v\")";
    assert_eq!(
        d,
        [
            ("dev".into(), false, at("no tag rule matches it")),
            ("latest".into(), false, at("no tag rule matches it")),
            ("v1".into(), true, at(&format!("{rule} keeps only tags among the 1 most recently pushed"))),
            ("v2".into(), false, at("minimum_tags 5 keeps it")),
            ("v3".into(), false, at(&format!("{rule} keeps it: among the 1 most recently pushed"))),
            ("v9".into(), false, at("protected by \"v9\"")),
        ]
    );
}

#[test]
fn reasons_name_the_policy_and_rule() {
    let yaml = r#"policies: [{repositories: ["**"], tags: [{match: {glob: "v*"}, keep: {most_recently_pushed: 1}}]}]"#;
    let p = policies(yaml);
    let t = tags("v1:2 v2:1");
    let d = p.for_repo("a/b").unwrap().doomed(&t, NOW);
    assert_eq!(d.len(), 1);
    assert_eq!(t[d[0].index].name, "v1");
    assert_eq!(
        d[0].reason,
        "retention.policies[0]: tag rule 1 (glob \"v*\") keeps only tags among the 1 most recently pushed"
    );
}
