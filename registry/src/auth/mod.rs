//! Who is asking, and may they do it.
//!
//! ```text
//! Authorization: Basic  ──► robots, then the htpasswd file (bcrypt; unknown users cost the same)
//! Authorization: Bearer ──► a token this server signed (token.rs): its `access` claims decide
//! no header             ──► anonymous: only what `auth.anonymous` grants
//! ```
//! Users are granted what `auth.rules` say (every user everything when there are no rules),
//! robots what their own grants say; everyone also gets what anonymous callers get. Secrets and
//! tokens never reach a log line, a `Debug` or an error message.

pub mod htpasswd;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest as _;

pub use berth_core::auth::token;
pub use berth_core::auth::{decode_basic, parse_scope, Actions, Scope};
use berth_core::config::auth::{Action, AuthConfig, Grant};
use berth_core::glob::Glob;
use htpasswd::{Htpasswd, Watched};
use throttle::{LoginGuard, LoginMetrics};
use token::Signer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(String),
    Robot(String),
}

impl Identity {
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "",
            Identity::User(n) | Identity::Robot(n) => n,
        }
    }
}

/// Who made a request and what they may do.
#[derive(Clone)]
pub struct Caller {
    pub identity: Identity,
    /// `None`: no `auth` configured, everything is allowed.
    auth: Option<Arc<Authenticator>>,
    /// A Bearer token's `access` claims, which alone decide what the request may do.
    token: Option<Vec<(String, Actions)>>,
}

impl Caller {
    pub fn open() -> Caller {
        Caller { identity: Identity::Anonymous, auth: None, token: None }
    }

    /// Anonymous, under `auth`'s rules.
    pub fn open_anonymous(auth: Arc<Authenticator>) -> Caller {
        Caller { identity: Identity::Anonymous, auth: Some(auth), token: None }
    }

    /// What this request may do in `repo`.
    pub fn allowed(&self, repo: &str) -> Actions {
        match (&self.auth, &self.token) {
            (None, _) => Actions::ALL,
            (Some(_), Some(access)) => {
                access.iter().filter(|(name, _)| name == repo).fold(Actions::NONE, |a, (_, x)| a.union(*x))
            }
            (Some(auth), None) => auth.grants(&self.identity, repo),
        }
    }

    pub fn may(&self, repo: &str, needed: Actions) -> bool {
        self.allowed(repo).contains(needed)
    }

    /// Whether the caller may see `repo` at all (the catalog): by the rules for who they are,
    /// whatever their token was scoped to.
    pub fn may_read(&self, repo: &str) -> bool {
        match &self.auth {
            None => true,
            Some(auth) => auth.grants(&self.identity, repo).contains(Actions::PULL),
        }
    }

    pub fn by_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the caller may use the admin API: with credentials (a token's scopes name
    /// repositories, never the admin API), as a user or robot granted `admin`.
    pub fn may_admin(&self) -> bool {
        match (&self.auth, &self.token) {
            (None, _) => true,
            (Some(_), Some(_)) => false,
            (Some(auth), None) => auth.is_admin(&self.identity),
        }
    }
}

/// Why a request's credentials were not accepted (never says which part was wrong).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0}")]
    BadToken(String),
    #[error("unsupported authorization scheme")]
    Scheme,
    #[error("authentication is temporarily unavailable")]
    Unavailable,
    /// Too many failed logins for this name or from this address, or too many at once.
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
}

struct CompiledGrant {
    repositories: Vec<Glob>,
    actions: Actions,
}

impl CompiledGrant {
    fn new(repositories: &[String], actions: &[Action]) -> CompiledGrant {
        CompiledGrant {
            repositories: repositories.iter().map(|p| Glob::new(p)).collect(),
            actions: Actions::of(actions),
        }
    }

    fn matches(&self, repo: &str) -> bool {
        self.repositories.iter().any(|g| g.matches(repo))
    }
}

fn union(grants: &[CompiledGrant], repo: &str) -> Actions {
    grants.iter().filter(|g| g.matches(repo)).fold(Actions::NONE, |a, g| a.union(g.actions))
}

struct RobotEntry {
    hash: Watched<String>,
    expires: Option<SystemTime>,
    grants: Vec<CompiledGrant>,
}

/// How long a successful Basic login is remembered (so Basic on every request does not run
/// bcrypt every time). Only successes are remembered, keyed by a hash of the credentials.
const REMEMBER: Duration = Duration::from_secs(60);

pub struct Authenticator {
    config: AuthConfig,
    htpasswd: Option<Watched<Htpasswd>>,
    robots: HashMap<String, RobotEntry>,
    anonymous: Vec<CompiledGrant>,
    rules: Vec<(Vec<String>, CompiledGrant)>,
    signer: Option<Signer>,
    /// A hash of the usual cost, checked for unknown users so they take as long as known ones.
    decoy: String,
    remembered: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    guard: LoginGuard,
    /// Where failed logins are noted for the audit log.
    audit: Arc<crate::notify::audit::AuditNotes>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("robots", &self.robots.len()).finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: &AuthConfig, data_dir: &Path, logins: LoginMetrics) -> Result<Authenticator, String> {
        config.validate().map_err(|(field, m)| format!("{field}: {m}"))?;
        let htpasswd = match &config.htpasswd {
            Some(path) => Some(Watched::open(path.clone(), Htpasswd::parse)?),
            None => None,
        };
        let mut robots = HashMap::new();
        for r in &config.robots {
            let hash = match (&r.secret_hash, &r.secret_hash_file) {
                (Some(h), _) => Watched::fixed(h.clone()),
                (None, Some(file)) => Watched::open(file.clone(), |text| {
                    let h = text.trim();
                    if h.starts_with("$2") {
                        Ok(h.to_owned())
                    } else {
                        Err("not a bcrypt hash".to_owned())
                    }
                })?,
                (None, None) => return Err(format!("robot {}: no secret", r.name)),
            };
            let expires = r
                .expires
                .as_deref()
                .map(|e| {
                    e.parse::<jiff::Timestamp>()
                        .map(SystemTime::from)
                        .map_err(|err| format!("robot {}: expires {e:?}: {err}", r.name))
                })
                .transpose()?;
            let grants =
                r.grants.iter().map(|g: &Grant| CompiledGrant::new(&g.repositories, &g.actions)).collect();
            robots.insert(r.name.clone(), RobotEntry { hash, expires, grants });
        }
        let anonymous =
            config.anonymous.iter().map(|g| CompiledGrant::new(&g.repositories, &g.actions)).collect();
        let rules = config
            .rules
            .iter()
            .map(|r| (r.users.clone(), CompiledGrant::new(&r.repositories, &r.actions)))
            .collect();
        let signer = if config.token.enabled {
            let key = config.token.key_file.clone().unwrap_or_else(|| data_dir.join("token-signing.key"));
            Some(Signer::open(&key, config.token.key_file.is_none(), &config.token)?)
        } else {
            None
        };
        let cost = htpasswd
            .as_ref()
            .and_then(|h| h.current().ok())
            .and_then(|h| h.typical_cost())
            .unwrap_or(bcrypt::DEFAULT_COST);
        let decoy = bcrypt::hash("decoy password for unknown users", cost).map_err(|e| e.to_string())?;
        Ok(Authenticator {
            config: config.clone(),
            htpasswd,
            robots,
            anonymous,
            rules,
            signer,
            decoy,
            remembered: Mutex::new(HashMap::new()),
            guard: LoginGuard::new(
                &config.failed_logins,
                std::thread::available_parallelism().map_or(2, |n| n.get()),
                throttle::HASHING_WAIT,
                logins,
            ),
            audit: Default::default(),
        })
    }

    /// Notes failed logins in `audit` (for the audit log) rather than in a log of its own.
    pub fn with_audit(mut self, audit: Arc<crate::notify::audit::AuditNotes>) -> Authenticator {
        self.audit = audit;
        self
    }

    /// Re-reads the htpasswd file, robot secrets and a configured token key that changed. Blocking
    /// file I/O, run every couple of seconds by the server's refresh task: requests only ever read
    /// what is in memory.
    pub fn refresh_files(&self) {
        if let Some(h) = &self.htpasswd {
            h.refresh();
        }
        for r in self.robots.values() {
            r.hash.refresh();
        }
        if let Some(s) = &self.signer {
            match s.refresh() {
                Ok(true) => tracing::info!(file = %s.path().display(), "token signing key reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "token signing key unreadable; keeping the previous one")
                }
            }
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// What `who` may do in `repo` by the configured rules.
    pub fn grants(&self, who: &Identity, repo: &str) -> Actions {
        let anonymous = union(&self.anonymous, repo);
        match who {
            Identity::Anonymous => anonymous,
            Identity::User(_) if self.rules.is_empty() => Actions::ALL,
            Identity::User(name) => self
                .rules
                .iter()
                .filter(|(users, g)| users.iter().any(|u| u == "*" || u == name) && g.matches(repo))
                .fold(anonymous, |a, (_, g)| a.union(g.actions)),
            Identity::Robot(name) => {
                self.robots.get(name).map_or(Actions::NONE, |r| union(&r.grants, repo)).union(anonymous)
            }
        }
    }

    /// Whether `who` may use the admin API: every user when there are no rules (as with
    /// everything else), else users and robots granted `admin` (which is registry-wide).
    pub fn is_admin(&self, who: &Identity) -> bool {
        match who {
            Identity::Anonymous => false,
            Identity::User(_) if self.rules.is_empty() => true,
            _ => self.grants(who, "admin").contains(Actions::ADMIN),
        }
    }

    /// The caller of a request from `client` with this `Authorization` header (if any).
    pub async fn caller(
        self: &Arc<Self>,
        authorization: Option<&str>,
        client: IpAddr,
    ) -> Result<Caller, AuthError> {
        let rules = |identity| Caller { identity, auth: Some(self.clone()), token: None };
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(rules(Identity::Anonymous));
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = decode_basic(rest.trim()).ok_or(AuthError::BadCredentials)?;
            return Ok(rules(self.login(&user, &password, client).await?));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let signer = self.signer.as_ref().ok_or(AuthError::Scheme)?;
            let claims = signer.verify(rest.trim()).map_err(|e| AuthError::BadToken(e.to_string()))?;
            if claims.refresh {
                return Err(AuthError::BadToken("a refresh token is not an access token".into()));
            }
            if claims.ui {
                return Err(AuthError::BadToken("a web UI session is not an access token".into()));
            }
            let identity = self.identity_named(&claims.sub);
            // A token outlives nothing it was issued to: a user removed from the file or a robot
            // past its expiry loses access at once, not when the token runs out.
            if !self.still_valid(&identity) {
                return Err(AuthError::BadToken(format!("{} may no longer log in", identity.name())));
            }
            let access = claims.repository_access();
            return Ok(Caller { identity, auth: Some(self.clone()), token: Some(access) });
        }
        Err(AuthError::Scheme)
    }

    /// The caller a web UI session cookie stands for: by the rules for who they are, while they
    /// may still log in.
    pub fn session_caller(self: &Arc<Self>, session: &str) -> Result<Caller, AuthError> {
        let signer = self.signer.as_ref().ok_or(AuthError::Scheme)?;
        let claims = signer.verify(session).map_err(|e| AuthError::BadToken(e.to_string()))?;
        if !claims.ui {
            return Err(AuthError::BadToken("not a web UI session".into()));
        }
        let identity = self.identity_named(&claims.sub);
        if identity == Identity::Anonymous || !self.still_valid(&identity) {
            return Err(AuthError::BadToken(format!("{} may no longer log in", identity.name())));
        }
        Ok(Caller { identity, auth: Some(self.clone()), token: None })
    }

    /// Who a token's subject is: a robot by that name, else a user (empty: anonymous).
    pub fn identity_named(&self, subject: &str) -> Identity {
        match subject {
            "" => Identity::Anonymous,
            s if self.robots.contains_key(s) => Identity::Robot(s.to_owned()),
            s => Identity::User(s.to_owned()),
        }
    }

    /// Checks a user name and password (robots first, then the htpasswd file) for a login from
    /// `client`. An unknown user costs one bcrypt check, like a known one, so timing does not tell
    /// them apart; repeated failures are slowed down (see [`throttle`]).
    pub async fn login(&self, user: &str, password: &str, client: IpAddr) -> Result<Identity, AuthError> {
        let key: [u8; 32] = {
            let mut h = sha2::Sha256::new();
            h.update(user.as_bytes());
            h.update([0u8]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if let Some(identity) = self.remembered(&key) {
            if self.still_valid(&identity) {
                return Ok(identity);
            }
        }
        if let Some(wait) = self.guard.wait(user, client) {
            self.audit.login_failed(user, &client.to_string(), "refused unheard after repeated failures");
            return Err(AuthError::Throttled(wait));
        }
        let Some(_turn) = self.guard.hashing_turn().await else {
            return Err(AuthError::Throttled(Duration::from_secs(1)));
        };
        let (identity, hash) = if let Some(robot) = self.robots.get(user) {
            let hash = robot.hash.current().map_err(|_| AuthError::Unavailable)?;
            (Some(Identity::Robot(user.to_owned())), (*hash).clone())
        } else {
            let known = match &self.htpasswd {
                Some(h) => h.current().map_err(|_| AuthError::Unavailable)?.hash(user).map(str::to_owned),
                None => None,
            };
            match known {
                Some(hash) => (Some(Identity::User(user.to_owned())), hash),
                None => (None, self.decoy.clone()),
            }
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        match identity {
            Some(identity) if ok && self.still_valid(&identity) => {
                if let Ok(mut m) = self.remembered.lock() {
                    m.retain(|_, (_, at)| at.elapsed() < REMEMBER);
                    m.insert(key, (identity.clone(), Instant::now()));
                }
                self.guard.succeeded(user);
                Ok(identity)
            }
            _ => {
                self.guard.failed(user, client);
                self.audit.login_failed(user, &client.to_string(), "wrong name or password");
                Err(AuthError::BadCredentials)
            }
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<Identity> {
        let m = self.remembered.lock().ok()?;
        m.get(key).filter(|(_, at)| at.elapsed() < REMEMBER).map(|(i, _)| i.clone())
    }

    /// A robot past its expiry, or a user no longer in the file, is refused even with a token
    /// refresh or a remembered login.
    pub fn still_valid(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Anonymous => true,
            Identity::Robot(name) => {
                self.robots.get(name).is_some_and(|r| r.expires.is_none_or(|e| SystemTime::now() < e))
            }
            Identity::User(name) => {
                self.htpasswd.as_ref().and_then(|h| h.current().ok()).is_some_and(|h| h.hash(name).is_some())
            }
        }
    }

    /// The `WWW-Authenticate` value for a request that needs `scope` (e.g.
    /// `repository:team/app:pull,push`); `realm` is the token endpoint's URL.
    pub fn challenge(&self, realm: &str, scope: Option<&str>, insufficient: bool) -> String {
        if self.signer.is_none() {
            return "Basic realm=\"berth\", charset=\"UTF-8\"".into();
        }
        let mut v = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.config.token.service);
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if insufficient {
            v.push_str(",error=\"insufficient_scope\"");
        }
        v
    }
}
