//! `auth:` — who may do what. Without this section berth is open (every request is allowed).
//!
//! ```yaml
//! auth:
//!   htpasswd: /etc/berth/htpasswd       # bcrypt entries; reloaded when the file changes
//!   token:                              # the built-in token service (Docker token auth)
//!     service: berth                    # the `service` clients ask tokens for
//!     realm: https://registry.example/token   # default: this server's /token, from the Host header
//!     key_file: /etc/berth/token.key    # Ed25519 PKCS#8 (PEM or DER); default: generated in data_dir
//!     lifetime: 5m
//!   anonymous:                          # what callers without credentials may do
//!     - { repositories: ["public/**"], actions: [pull] }
//!   rules:                              # what users may do; none: every user may do everything
//!     - { users: ["alice"], repositories: ["**"], actions: [pull, push, delete] }
//!     - { users: ["*"], repositories: ["team/**"], actions: [pull] }
//!   robots:                             # named credentials for CI and clusters
//!     - name: ci
//!       secret_hash: "$2y$10$..."       # bcrypt of the robot's secret
//!       expires: 2027-06-30T00:00:00Z
//!       grants: [{ repositories: ["apps/**"], actions: [pull, push] }]
//!   failed_logins: { free: 5, max_wait: 5m }   # then each failure doubles the wait (per name, per address)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<PathBuf>,
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anonymous: Vec<Grant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub robots: Vec<Robot>,
    #[serde(default, skip_serializing_if = "FailedLogins::is_default")]
    pub failed_logins: FailedLogins,
}

/// How failed logins slow the next ones down: after `free` failures for one user name, or from
/// one client address, each further failure doubles the wait before the next attempt is heard
/// (1 s, 2 s, 4 s, … up to `max_wait`). A refused attempt costs no password check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedLogins {
    #[serde(default = "default_free_failures")]
    pub free: u32,
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait: Duration,
}

fn default_free_failures() -> u32 {
    5
}

fn default_max_wait() -> Duration {
    Duration::from_secs(300)
}

impl Default for FailedLogins {
    fn default() -> Self {
        FailedLogins { free: default_free_failures(), max_wait: default_max_wait() }
    }
}

impl FailedLogins {
    fn is_default(&self) -> bool {
        self == &FailedLogins::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Off: clients authenticate with Basic on every request instead.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default = "default_service")]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_lifetime", with = "duration")]
    pub lifetime: Duration,
    /// How long a refresh token (docker's and containerd's "offline token") stays valid.
    #[serde(default = "default_refresh", with = "duration")]
    pub refresh_lifetime: Duration,
}

fn yes() -> bool {
    true
}

fn default_service() -> String {
    "berth".into()
}

fn default_lifetime() -> Duration {
    Duration::from_secs(300)
}

fn default_refresh() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            enabled: true,
            service: default_service(),
            issuer: default_service(),
            realm: None,
            key_file: None,
            lifetime: default_lifetime(),
            refresh_lifetime: default_refresh(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// The admin API (garbage collection runs and their reports): registry-wide, so granted only
    /// with `repositories: ["**"]`, and never to anonymous callers.
    Admin,
}

/// Repositories (globs: `*` within one path part, `**` across parts) and what may be done there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub repositories: Vec<String>,
    pub actions: Vec<Action>,
}

/// A grant to users of the htpasswd file, by name (`*`: every user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub users: Vec<String>,
    pub repositories: Vec<String>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Robot {
    /// The user name the robot logs in with.
    pub name: String,
    /// bcrypt hash of its secret, or a file holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash_file: Option<PathBuf>,
    /// RFC 3339 time after which the robot is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub grants: Vec<Grant>,
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let grants = |field: String, repositories: &[String], actions: &[Action]| {
            if repositories.is_empty() {
                return Err((
                    format!("{field}.repositories"),
                    "name at least one pattern, e.g. \"**\"".into(),
                ));
            }
            if let Some(p) = repositories.iter().find(|p| p.is_empty() || p.contains("//")) {
                return Err((format!("{field}.repositories"), format!("{p:?} is not a repository pattern")));
            }
            if actions.is_empty() {
                return Err((
                    format!("{field}.actions"),
                    "name at least one of pull, push, delete, admin".into(),
                ));
            }
            if actions.contains(&Action::Admin) && repositories != ["**"] {
                return Err((
                    format!("{field}.actions"),
                    "admin is registry-wide: grant it with repositories: [\"**\"]".into(),
                ));
            }
            Ok(())
        };
        for (i, g) in self.anonymous.iter().enumerate() {
            grants(format!("auth.anonymous[{i}]"), &g.repositories, &g.actions)?;
            if g.actions.contains(&Action::Admin) {
                return Err((format!("auth.anonymous[{i}].actions"), "admin needs a user or robot".into()));
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.users.is_empty() {
                return Err((format!("auth.rules[{i}].users"), "name at least one user, or \"*\"".into()));
            }
            grants(format!("auth.rules[{i}]"), &r.repositories, &r.actions)?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.robots.iter().enumerate() {
            let field = format!("auth.robots[{i}]");
            if r.name.is_empty() || r.name.contains(':') {
                return Err((format!("{field}.name"), "must be a user name without ':'".into()));
            }
            if !names.insert(&r.name) {
                return Err((format!("{field}.name"), format!("robot {:?} is defined twice", r.name)));
            }
            if r.secret_hash.is_some() == r.secret_hash_file.is_some() {
                return Err((field, "set exactly one of secret_hash and secret_hash_file".into()));
            }
            if let Some(h) = &r.secret_hash {
                if !h.starts_with("$2") {
                    return Err((format!("{field}.secret_hash"), "must be a bcrypt hash ($2y$...)".into()));
                }
            }
            for (j, g) in r.grants.iter().enumerate() {
                grants(format!("{field}.grants[{j}]"), &g.repositories, &g.actions)?;
            }
        }
        if self.token.service.is_empty() {
            return Err(("auth.token.service".into(), "must not be empty".into()));
        }
        if self.token.lifetime < Duration::from_secs(10) {
            return Err(("auth.token.lifetime".into(), "must be at least 10s".into()));
        }
        Ok(())
    }
}
