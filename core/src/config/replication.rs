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
//!       overwrite: true                     # move a destination tag that names another digest
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
    #[serde(default = "yes")]
    pub overwrite: bool,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
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
            target.check(&mut names, "policies", |field| format!("replication.on_push[{i}].{field}"))?;
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
        assert!(p.overwrite);
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
        ] {
            let e = Config::from_yaml(&format!("replication:\n  on_push:\n    {yaml}\n"), "t").unwrap_err();
            assert_eq!(e.field, field, "{yaml}");
        }
    }
}
