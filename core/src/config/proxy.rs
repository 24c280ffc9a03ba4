//! The pull-through cache: which upstream registries `berth` mirrors, and how.
//!
//! ```yaml
//! proxy:
//!   upstreams:
//!     - name: docker.io                 # served as /v2/docker.io/<repo> and for ?ns=docker.io
//!       url: https://registry-1.docker.io
//!       aliases: [hub]                  # /v2/hub/nginx is docker.io/library/nginx
//!       default: true                   # Docker `registry-mirrors`: /v2/library/nginx
//!       library: true                   # one-part names get `library/` (default: name is docker.io)
//!       username: robot
//!       password_file: /secrets/hub/password   # or password_env; a bearer token: token_file/token_env
//!       # or credentials_dir: /secrets/hub, a Secret mounted as files: `token`, or `username` and `password`
//!       ca_file: /secrets/hub/ca.crt      # or insecure: true
//!       include: ["library/*", "bitnami/**"]    # `*` stays within one path part, `**` crosses them
//!       exclude: ["library/busybox"]
//!       revalidate_after: 5m            # tags are checked with one HEAD at most this often
//!       revalidate: [{ repositories: "library/*", after: 1h }]
//!       stale_if_error: 24h             # a cached tag is served this long past its check if the upstream fails
//!       negative_ttl: 30s               # an upstream 404 is remembered this long
//!       max_size: 50Gi                  # least-recently-pulled content is evicted above this
//!       unpulled_ttl: 30d               # content not pulled for this long is evicted
//!       connect_timeout: 10s
//!       read_timeout: 30s               # an upstream that sends nothing for this long has failed
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{duration, size};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A directory of credential files, as a Kubernetes Secret is mounted: `token`, or
    /// `username` and `password`; read at each login, so a rotated Secret needs no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default = "default_revalidate", with = "duration")]
    pub revalidate_after: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revalidate: Vec<RevalidateRule>,
    #[serde(default = "default_stale", with = "duration")]
    pub stale_if_error: Duration,
    #[serde(default = "default_negative", with = "duration")]
    pub negative_ttl: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "size::option")]
    pub max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::option")]
    pub unpulled_ttl: Option<Duration>,
    #[serde(default = "default_connect", with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_read", with = "duration")]
    pub read_timeout: Duration,
}

/// A freshness interval for the repositories matching a pattern; the first match wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevalidateRule {
    pub repositories: String,
    #[serde(with = "duration")]
    pub after: Duration,
}

fn default_revalidate() -> Duration {
    Duration::from_secs(300)
}
fn default_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_negative() -> Duration {
    Duration::from_secs(30)
}
fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_read() -> Duration {
    Duration::from_secs(30)
}

/// Docker Hub's registry name, for which the `library/` rule is on unless said otherwise.
pub const DOCKER_HUB: &str = "docker.io";

impl UpstreamConfig {
    /// A minimal upstream with every default, as tests and the operator start from.
    pub fn new(name: &str, url: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            aliases: vec![],
            default: false,
            library: None,
            username: None,
            password_file: None,
            password_env: None,
            token_file: None,
            credentials_dir: None,
            token_env: None,
            ca_file: None,
            insecure: false,
            include: vec![],
            exclude: vec![],
            revalidate_after: default_revalidate(),
            revalidate: vec![],
            stale_if_error: default_stale(),
            negative_ttl: default_negative(),
            max_size: None,
            unpulled_ttl: None,
            connect_timeout: default_connect(),
            read_timeout: default_read(),
        }
    }

    /// Whether one-part names get Docker Hub's `library/` prefix.
    pub fn library_rule(&self) -> bool {
        self.library.unwrap_or(self.name == DOCKER_HUB)
    }
}

impl ProxyConfig {
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Returns the offending field (relative to `proxy`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut prefixes: Vec<&str> = vec![];
        let mut defaults = 0;
        for (i, u) in self.upstreams.iter().enumerate() {
            let f = |field: &str| format!("proxy.upstreams[{i}].{field}");
            if !is_prefix(&u.name) {
                return Err((
                    f("name"),
                    format!("{:?} must be one lowercase path part like docker.io or ghcr.io", u.name),
                ));
            }
            for (j, a) in u.aliases.iter().enumerate() {
                if !is_prefix(a) {
                    return Err((
                        f(&format!("aliases[{j}]")),
                        format!("{a:?} must be one lowercase path part"),
                    ));
                }
            }
            for p in std::iter::once(&u.name).chain(&u.aliases) {
                if prefixes.contains(&p.as_str()) {
                    return Err((f("name"), format!("{p:?} is served by two upstreams")));
                }
                prefixes.push(p);
            }
            if !(u.url.starts_with("https://") || u.url.starts_with("http://")) || u.url.len() < 10 {
                return Err((f("url"), format!("{:?} must be an http:// or https:// URL", u.url)));
            }
            if u.default {
                defaults += 1;
                if defaults > 1 {
                    return Err((f("default"), "only one upstream can be the default".into()));
                }
            }
            if u.password_file.is_some() && u.password_env.is_some() {
                return Err((f("password_file"), "give password_file or password_env, not both".into()));
            }
            if (u.password_file.is_some() || u.password_env.is_some()) && u.username.is_none() {
                return Err((f("username"), "a password needs a username".into()));
            }
            if (u.token_file.is_some() || u.token_env.is_some()) && u.username.is_some() {
                return Err((f("token_file"), "give a username and password, or a token, not both".into()));
            }
            let named = u.username.is_some()
                || u.password_file.is_some()
                || u.password_env.is_some()
                || u.token_file.is_some()
                || u.token_env.is_some();
            if u.credentials_dir.is_some() && named {
                return Err((
                    f("credentials_dir"),
                    "give credentials_dir or the other credential fields, not both".into(),
                ));
            }
            if u.insecure && u.ca_file.is_some() {
                return Err((
                    f("insecure"),
                    "insecure skips verification, so ca_file would be ignored".into(),
                ));
            }
            for (field, patterns) in [("include", &u.include), ("exclude", &u.exclude)] {
                for (j, p) in patterns.iter().enumerate() {
                    check_pattern(p).map_err(|m| (f(&format!("{field}[{j}]")), m))?;
                }
            }
            for (j, r) in u.revalidate.iter().enumerate() {
                check_pattern(&r.repositories)
                    .map_err(|m| (f(&format!("revalidate[{j}].repositories")), m))?;
            }
            if u.connect_timeout.is_zero() || u.read_timeout.is_zero() {
                return Err((f("read_timeout"), "timeouts must be above zero".into()));
            }
        }
        Ok(())
    }
}

/// One repository path part: lowercase letters, digits and `.`, `_`, `-` inside.
fn is_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.ends_with('/') || p.contains("//") {
        return Err(format!("{p:?} is not a repository pattern like library/* or bitnami/**"));
    }
    let ok = p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-/*".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!("{p:?} may hold only lowercase names, `/`, `*` and `**`"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn a_full_upstream_parses_and_round_trips() {
        let text = "proxy:\n  upstreams:\n  - name: docker.io\n    url: https://registry-1.docker.io\n\
                    \x20   aliases: [hub]\n    default: true\n    username: bot\n    password_env: HUB_PASSWORD\n\
                    \x20   include: ['library/*']\n    revalidate_after: 10m\n\
                    \x20   revalidate: [{repositories: 'library/alpine', after: 1h}]\n\
                    \x20   max_size: 50Gi\n    unpulled_ttl: 30d\n";
        let c = Config::from_yaml(text, "c.yaml").unwrap();
        let u = &c.proxy.upstreams[0];
        assert!(u.library_rule());
        assert_eq!(u.max_size, Some(50 << 30));
        assert_eq!(u.revalidate_after.as_secs(), 600);
        assert_eq!(Config::from_yaml(&c.to_yaml(), "again").unwrap(), c);
    }

    #[test]
    fn mistakes_name_the_upstream_field() {
        let cases = [
            ("- {name: Docker.IO, url: 'https://x.example'}", "proxy.upstreams[0].name"),
            ("- {name: a, url: 'https://x.example'}\n  - {name: b, aliases: [a], url: 'https://y.example'}", "proxy.upstreams[1].name"),
            ("- {name: a, url: 'ftp://x.example'}", "proxy.upstreams[0].url"),
            ("- {name: a, url: 'https://x.example', password_env: P}", "proxy.upstreams[0].username"),
            ("- {name: a, url: 'https://x.example', include: ['/abs']}", "proxy.upstreams[0].include[0]"),
            ("- {name: a, url: 'https://x.example', default: true}\n  - {name: b, url: 'https://y.example', default: true}", "proxy.upstreams[1].default"),
            ("- {name: a, url: 'https://x.example', max_size: lots}", "proxy.upstreams[0].max_size"),
        ];
        for (upstreams, field) in cases {
            let e =
                Config::from_yaml(&format!("proxy:\n  upstreams:\n  {upstreams}\n"), "b.yaml").unwrap_err();
            assert_eq!(e.field, field, "{upstreams}: {e}");
        }
    }
}
