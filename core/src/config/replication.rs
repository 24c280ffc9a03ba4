//! Replication on push: each manifest pushed with a tag (and each signature or SBOM attached to
//! one) is copied to other registries, from the event log — so a copy is never lost to a
//! restart, retried with backoff, and made by one replica.
//!
//! ```yaml
//! replication:
//!   on_push:
//!     - name: edge                          # names its deliveries, metrics and logs
//!       destination: https://edge.example   # any OCI registry
//!       credentials_dir: /run/berth/edge    # files `username` and `password`, read at each copy
//!       ca_file: /etc/berth/edge/ca.crt     # trusted besides the system's
//!       insecure: false                     # skip TLS verification
//!       repositories: ["team/**"]           # globs (all when absent)
//!       tags: ["v*", "re:^release-[0-9]+$"] # globs, or regexes after `re:` (all when absent)
//!       source_prefix: team                 # only repositories under it, named without it there
//!       destination_prefix: mirror          # put before each repository's name there
//!       referrers: true                     # signatures and SBOMs travel with their subjects
//!       overwrite: true                     # move a destination tag that names another digest
//!       deletes: none                       # tags: a tag deleted here goes there; mirror: and
//!                                           # the manifests no tag there names any more
//!       timeout: 10m                        # one copy at most
//!       max_attempts: 10                    # then the copy is dead (kept, listed, not retried)
//!       backoff: 10s                        # before the first retry; doubles up to 10m
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::notifications::Target;
use super::units::duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_push: Vec<OnPush>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPush {
    pub name: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_prefix: String,
    #[serde(default = "yes")]
    pub referrers: bool,
    #[serde(default = "yes")]
    pub overwrite: bool,
    #[serde(default, skip_serializing_if = "Deletes::is_none")]
    pub deletes: Deletes,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
}

/// What a replication deletes at the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    /// Nothing at the destination is deleted.
    #[default]
    None,
    /// Tags gone at the source go at the destination (within the filters).
    Tags,
    /// As `Tags`, and their manifests when no tag names them any more; tags are always
    /// overwritten.
    Mirror,
}

impl Deletes {
    pub fn is_none(&self) -> bool {
        *self == Deletes::None
    }
}

impl std::str::FromStr for Deletes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Deletes::None),
            "tags" => Ok(Deletes::Tags),
            "mirror" => Ok(Deletes::Mirror),
            other => Err(format!("{other:?}: deletes are none, tags or mirror")),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_max_attempts() -> u32 {
    10
}

fn default_backoff() -> Duration {
    Duration::from_secs(10)
}

/// The prefix of an on-push policy's name where deliveries are recorded (webhook endpoints'
/// names cannot hold a ':', so the two never meet).
pub const DELIVERY_PREFIX: &str = "replicate:";

impl OnPush {
    /// The name its deliveries are recorded under.
    pub fn delivery_name(&self) -> String {
        format!("{DELIVERY_PREFIX}{}", self.name)
    }
}

impl ReplicationConfig {
    pub fn is_empty(&self) -> bool {
        self == &ReplicationConfig::default()
    }

    /// Returns the offending field and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.on_push.iter().enumerate() {
            let target = Target {
                name: &p.name,
                url_field: "destination",
                url: &p.destination,
                max_attempts: p.max_attempts,
                timeout: p.timeout,
            };
            let field = |f: &str| format!("replication.on_push[{i}].{f}");
            target.check(&mut names, "policies", field)?;
            for (f, prefix) in
                [("source_prefix", &p.source_prefix), ("destination_prefix", &p.destination_prefix)]
            {
                let path = prefix.trim_end_matches('/');
                if let (false, Err(e)) = (path.is_empty(), path.parse::<crate::oci::RepoName>()) {
                    return Err((field(f), format!("{prefix:?} is not a repository path: {e}")));
                }
            }
            if p.deletes == Deletes::Mirror && !p.overwrite {
                return Err((
                    field("overwrite"),
                    "deletes: mirror makes the destination's tags equal these: it overwrites".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn policies_parse_with_defaults_and_round_trip() {
        let c = Config::from_yaml(
            "replication:\n  on_push:\n    - name: edge\n      destination: https://edge.example\n      \
             tags: ['v*']\n",
            "t",
        )
        .unwrap();
        let p = &c.replication.on_push[0];
        assert!(p.overwrite && p.referrers);
        assert_eq!(p.deletes, super::Deletes::None);
        assert_eq!(p.timeout.as_secs(), 600);
        assert_eq!(p.delivery_name(), "replicate:edge");
        assert_eq!(Config::from_yaml(&c.to_yaml(), "again").unwrap(), c, "stable round trip");
    }

    #[test]
    fn bad_policies_name_their_field() {
        for (yaml, field) in [
            ("- {name: 'a:b', destination: 'http://x'}", "replication.on_push[0].name"),
            ("- {name: a, destination: 'x.example'}", "replication.on_push[0].destination"),
            (
                "- {name: a, destination: 'http://x'}\n    - {name: a, destination: 'http://y'}",
                "replication.on_push[1].name",
            ),
            ("- {name: a, destination: 'http://x', timeout: 0s}", "replication.on_push[0].timeout"),
            (
                "- {name: a, destination: 'http://x', destination_prefix: 'A/'}",
                "replication.on_push[0].destination_prefix",
            ),
            (
                "- {name: a, destination: 'http://x', source_prefix: 'a//b'}",
                "replication.on_push[0].source_prefix",
            ),
            (
                "- {name: a, destination: 'http://x', deletes: mirror, overwrite: false}",
                "replication.on_push[0].overwrite",
            ),
        ] {
            let e = Config::from_yaml(&format!("replication:\n  on_push:\n    {yaml}\n"), "t").unwrap_err();
            assert_eq!(e.field, field, "{yaml}");
        }
    }
}
