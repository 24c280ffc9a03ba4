//! Logging in to an upstream: the scheme its challenge names, the tokens kept per scope, and the
//! credentials from their files (read again each time, so a rotated Secret needs no restart).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::config::UpstreamConfig;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::authfile;
use crate::error::{Result, UpstreamError};
use berth_core::auth::challenge::{self, Challenge};

/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(15);
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Credentials for one request.
pub(crate) enum Auth {
    Basic(String, String),
    Bearer(String),
}

/// What an upstream is logged in with.
#[derive(Clone)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "anonymous",
            Credentials::Basic { .. } => "basic(redacted)",
            Credentials::Bearer(_) => "bearer(redacted)",
        })
    }
}

#[derive(Clone, Default)]
pub(crate) enum Scheme {
    #[default]
    Unknown,
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Token {
    value: String,
    renew_at: Instant,
}

#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// What an upstream has said about logging in to it: its scheme, and the tokens it gave, per scope.
#[derive(Default)]
pub(crate) struct Session {
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl Session {
    /// The scheme last learned.
    pub fn scheme(&self) -> Scheme {
        self.scheme.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Remembers the scheme from a 401's challenge.
    pub fn learn(&self, resp: &Response) {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let scheme = if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            match b.param("realm") {
                Some(realm) => {
                    Scheme::Bearer { realm: realm.to_owned(), service: b.param("service").map(str::to_owned) }
                }
                None => Scheme::Unknown,
            }
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            Scheme::Basic
        } else if resp.status() == StatusCode::UNAUTHORIZED {
            Scheme::Unknown
        } else {
            Scheme::Anonymous
        };
        if let Ok(mut s) = self.scheme.lock() {
            *s = scheme;
        }
    }

    /// A token for `scope` that is not yet due for renewal.
    pub fn token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(scope).filter(|t| t.renew_at > Instant::now()).map(|t| t.value.clone())
    }

    /// Keeps `value` for `scope` until shortly before it expires (`expires_in` seconds).
    pub fn keep(&self, scope: String, value: String, expires_in: Option<u64>) {
        let lifetime = expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let renew_at = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN).max(lifetime / 2);
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|_, t| t.renew_at > Instant::now());
            m.insert(scope, Token { value, renew_at });
        }
    }
}

/// `config`'s credentials for upstream `name` at `base`, read from its files or environment now.
pub(crate) fn configured_secret(name: &str, base: &str, c: &UpstreamConfig) -> Result<Credentials> {
    let read = |file: &Option<std::path::PathBuf>, env: &Option<String>| -> Result<Option<String>> {
        if let Some(f) = file {
            return std::fs::read_to_string(f)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| UpstreamError::Auth {
                    upstream: name.to_owned(),
                    detail: format!("cannot read {}: {}", f.display(), e.kind()),
                });
        }
        if let Some(v) = env {
            return std::env::var(v).map(Some).map_err(|_| UpstreamError::Auth {
                upstream: name.to_owned(),
                detail: format!("environment variable {v} is not set"),
            });
        }
        Ok(None)
    };
    if let Some(dir) = &c.credentials_dir {
        return credentials_in(name, base, dir);
    }
    if let Some(token) = read(&c.token_file, &c.token_env)? {
        return Ok(Credentials::Bearer(token));
    }
    match (&c.username, read(&c.password_file, &c.password_env)?) {
        (Some(user), password) => {
            Ok(Credentials::Basic { user: user.clone(), password: password.unwrap_or_default() })
        }
        (None, _) => Ok(Credentials::None),
    }
}

/// `token`, or `username` and `password`, or `base`'s entry in a docker config
/// `.dockerconfigjson`, from a directory (a mounted Secret).
fn credentials_in(name: &str, base: &str, dir: &std::path::Path) -> Result<Credentials> {
    let config = dir.join(".dockerconfigjson");
    if config.exists() {
        let auth = |detail| UpstreamError::Auth { upstream: name.to_owned(), detail };
        return match authfile::lookup(&config, base, false).map_err(auth)? {
            Some((user, password)) => Ok(Credentials::Basic { user, password }),
            None => Err(auth(format!("{} has no entry for {}", config.display(), base))),
        };
    }
    let read = |file: &str| match std::fs::read_to_string(dir.join(file)) {
        Ok(v) => Ok(Some(v.trim_end_matches(['\n', '\r']).to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(UpstreamError::Auth {
            upstream: name.to_owned(),
            detail: format!("cannot read {}: {}", dir.join(file).display(), e.kind()),
        }),
    };
    match (read("token")?, read("username")?) {
        (Some(token), _) => Ok(Credentials::Bearer(token)),
        (None, Some(user)) => {
            Ok(Credentials::Basic { user, password: read("password")?.unwrap_or_default() })
        }
        (None, None) => Err(UpstreamError::Auth {
            upstream: name.to_owned(),
            detail: format!("{} holds neither `token` nor `username`", dir.display()),
        }),
    }
}

/// `req` with the credentials `auth` holds, if any.
pub(crate) fn with_auth(req: RequestBuilder, auth: Option<&Auth>) -> RequestBuilder {
    match auth {
        Some(Auth::Basic(user, password)) => req.basic_auth(user, Some(password)),
        Some(Auth::Bearer(token)) => req.bearer_auth(token),
        None => req,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mounted_docker_config_gives_this_registrys_entry() {
        let dir = tempfile::tempdir().unwrap();
        let secret = |url: &str| {
            let mut config = UpstreamConfig::new("edge", url);
            config.credentials_dir = Some(dir.path().to_owned());
            configured_secret("edge", url, &config)
        };
        std::fs::write(
            dir.path().join(".dockerconfigjson"),
            r#"{"auths": {"edge.example:5000": {"username": "robot", "password": "pw"}}}"#,
        )
        .unwrap();
        match secret("https://edge.example:5000").unwrap() {
            Credentials::Basic { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("robot", "pw"))
            }
            other => panic!("{other:?}"),
        }
        let e = secret("https://elsewhere.example").unwrap_err().to_string();
        assert!(e.contains("no entry"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Credentials::Basic { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok-123".into())).contains("tok-123"));
    }
}
