//! Events and the webhooks they are delivered to.
//!
//! ```yaml
//! notifications:
//!   keep: 720h                 # events (the audit log of changes) kept this long; default 30 days
//!   source: https://registry.example.com  # events' source; default external_url or http://<listen>
//!   endpoints:
//!     - name: scanner          # names the endpoint's deliveries, metrics and logs
//!       url: https://scanner.example/hook
//!       secret_file: /run/secrets/scanner   # signs each body (HMAC-SHA256), optional
//!       format: cloudevents    # or distribution: the envelope `registry:2` notifications use
//!       events: [push, delete] # push, tag_delete, delete, referrer (all when absent); pull
//!                              # only when listed: alike pulls in a few seconds are one event
//!                              # with a count
//!       repositories: ["team/**"]           # globs (all when absent)
//!       timeout: 10s           # per delivery
//!       max_attempts: 10       # then the delivery is dead (kept, listed, not retried)
//!       backoff: 1s            # before the first retry; doubles up to 10m
//!       ca_file: /etc/ssl/internal-ca.pem   # trusted besides the system's
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// How long events are kept (once every delivery of theirs is settled).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pub keep: Option<Duration>,
    /// This registry as events name it (their CloudEvents `source`, the Distribution envelope's
    /// `source.addr`). Default: `external_url`, else `http://<listen>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What happened, as endpoints filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A manifest was pushed (with a tag: the tag now names it).
    Push,
    /// A tag was deleted.
    TagDelete,
    /// A manifest was deleted (with its tags).
    Delete,
    /// A manifest with a subject (a signature, an SBOM) was pushed.
    Referrer,
    /// Requests refused to a known user or robot (the audit log only, never webhooks).
    Denied,
    /// Logins with a wrong name or password (the audit log only, never webhooks).
    LoginFailed,
    /// An action through the admin API, such as starting a collection (the audit log only).
    Admin,
    /// A manifest was pulled: only for endpoints that list it, and alike pulls (one caller,
    /// address and reference) within one write-behind interval are one event with a count.
    Pull,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Push,
        EventKind::TagDelete,
        EventKind::Delete,
        EventKind::Referrer,
        EventKind::Denied,
        EventKind::LoginFailed,
        EventKind::Admin,
        EventKind::Pull,
    ];

    /// A change to content, which webhooks hear of (the others are the audit log's own).
    pub fn is_change(self) -> bool {
        !matches!(self, EventKind::Denied | EventKind::LoginFailed | EventKind::Admin | EventKind::Pull)
    }

    /// Sent to the webhooks that list it, and only to those.
    pub fn is_opt_in(self) -> bool {
        self == EventKind::Pull
    }

    /// As configured and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::TagDelete => "tag_delete",
            EventKind::Delete => "delete",
            EventKind::Referrer => "referrer",
            EventKind::Denied => "denied",
            EventKind::LoginFailed => "login_failed",
            EventKind::Admin => "admin",
            EventKind::Pull => "pull",
        }
    }

    /// The CloudEvents `type`.
    pub fn cloud_type(self) -> &'static str {
        match self {
            EventKind::Push => "dev.berth.manifest.pushed",
            EventKind::TagDelete => "dev.berth.tag.deleted",
            EventKind::Delete => "dev.berth.manifest.deleted",
            EventKind::Referrer => "dev.berth.referrer.attached",
            EventKind::Denied => "dev.berth.access.denied",
            EventKind::LoginFailed => "dev.berth.login.failed",
            EventKind::Admin => "dev.berth.admin.action",
            EventKind::Pull => "dev.berth.manifest.pulled",
        }
    }

    pub fn from_cloud_type(t: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.cloud_type() == t)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One CloudEvents 1.0 event per request, structured mode (`application/cloudevents+json`).
    #[default]
    Cloudevents,
    /// The envelope of CNCF Distribution's notifications (`{"events": [...]}`).
    Distribution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "is_default_format")]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn is_default_format(f: &Format) -> bool {
    *f == Format::default()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_attempts() -> u32 {
    10
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

/// Events kept by default: 30 days.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// A name that may label metrics and name deliveries: letters, digits, '-' and '_', at most 63.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NotificationsConfig {
    pub fn is_empty(&self) -> bool {
        self == &NotificationsConfig::default()
    }

    pub fn keep(&self) -> Duration {
        self.keep.unwrap_or(DEFAULT_KEEP)
    }

    /// Returns the offending field and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let f = |field: &str| format!("notifications.endpoints[{i}].{field}");
            let target = Target {
                name: &e.name,
                url_field: "url",
                url: &e.url,
                max_attempts: e.max_attempts,
                timeout: e.timeout,
            };
            target.check(&mut names, "endpoints", f)?;
            if let Some(k) = e.events.iter().find(|k| !k.is_change() && !k.is_opt_in()) {
                return Err((
                    f("events"),
                    format!("{} is kept in the audit log, not sent to webhooks", k.as_str()),
                ));
            }
        }
        Ok(())
    }
}

/// What every target of deliveries (a webhook endpoint, an on-push replication policy) is
/// checked for.
pub(super) struct Target<'a> {
    pub name: &'a str,
    pub url_field: &'a str,
    pub url: &'a str,
    pub max_attempts: u32,
    pub timeout: Duration,
}

impl Target<'_> {
    /// A valid name not seen before (`names`, of `kind`), an http(s) URL, at least one attempt
    /// and a timeout; `field` names a field of this target.
    pub fn check<'n>(
        &self,
        names: &mut std::collections::HashSet<&'n str>,
        kind: &str,
        field: impl Fn(&str) -> String,
    ) -> Result<(), (String, String)>
    where
        Self: 'n,
    {
        if !valid_name(self.name) {
            return Err((field("name"), "letters, digits, '-' and '_', at most 63".into()));
        }
        if !names.insert(self.name) {
            return Err((field("name"), format!("{:?} names two {kind}", self.name)));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err((field(self.url_field), "must be an http:// or https:// URL".into()));
        }
        if self.max_attempts == 0 {
            return Err((field("max_attempts"), "must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err((field("timeout"), "must be more than 0s".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn endpoints_parse_with_defaults() {
        let c = Config::from_yaml(
            "notifications:\n  endpoints:\n    - name: scan\n      url: http://127.0.0.1:9/h\n      \
             events: [push, referrer]\n",
            "t",
        )
        .unwrap();
        let e = &c.notifications.endpoints[0];
        assert_eq!(e.max_attempts, 10);
        assert_eq!(e.timeout.as_secs(), 10);
        assert_eq!(e.events, vec![super::EventKind::Push, super::EventKind::Referrer]);
        assert_eq!(Config::from_yaml(&c.to_yaml(), "again").unwrap(), c, "stable round trip");
    }

    #[test]
    fn bad_endpoints_name_their_field() {
        for (yaml, field) in [
            ("- {name: 'a b', url: 'http://x'}", "notifications.endpoints[0].name"),
            ("- {name: a, url: 'ftp://x'}", "notifications.endpoints[0].url"),
            (
                "- {name: a, url: 'http://x'}\n    - {name: a, url: 'http://y'}",
                "notifications.endpoints[1].name",
            ),
            ("- {name: a, url: 'http://x', max_attempts: 0}", "notifications.endpoints[0].max_attempts"),
        ] {
            let e =
                Config::from_yaml(&format!("notifications:\n  endpoints:\n    {yaml}\n"), "t").unwrap_err();
            assert_eq!(e.field, field, "{yaml}");
        }
    }
}
