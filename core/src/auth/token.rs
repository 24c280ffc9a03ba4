//! Tokens of the Docker token authentication spec: JWTs signed with Ed25519 (`EdDSA`), with a
//! key id (the key's RFC 7638 JWK thumbprint), expiry and `access` claims.
//!
//! The signing key comes from `auth.token.key_file` (PKCS#8, PEM or DER; re-read when the file
//! changes, and tokens signed by the previous key stay valid until they expire) or is generated
//! once into the data directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::scope::{Actions, Scope};
use crate::config::auth::TokenConfig;

/// Clock skew accepted between issuing and checking.
const LEEWAY: u64 = 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued for another service")]
    Audience,
    #[error("token was issued by someone else")]
    Issuer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user or robot; empty for anonymous tokens.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceActions>,
    /// A refresh token (docker's "offline token"): only good for getting access tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
    /// A web UI session: only good as the UI's cookie, never as a Bearer or refresh token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ui: bool,
}

impl Claims {
    pub fn repository_access(&self) -> Vec<(String, Actions)> {
        self.access
            .iter()
            .filter(|a| a.kind == "repository")
            .map(|a| (a.name.clone(), Actions::parse(&a.actions.join(","))))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

struct Key {
    pair: Ed25519KeyPair,
    kid: String,
}

struct Keys {
    current: Key,
    /// The key before a rotation, with when it stopped signing.
    previous: Option<(Vec<u8>, String, Instant)>,
    stamp: Option<(SystemTime, u64)>,
}

pub struct Signer {
    path: PathBuf,
    watch: bool,
    issuer: String,
    service: String,
    lifetime: Duration,
    refresh_lifetime: Duration,
    keys: Mutex<Keys>,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(s: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The RFC 7638 thumbprint of an Ed25519 public key, as Distribution computes key ids.
pub fn thumbprint(public: &[u8]) -> String {
    let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(public));
    b64(&sha2::Sha256::digest(jwk.as_bytes()))
}

/// PKCS#8 DER from a PEM `PRIVATE KEY` block or raw DER.
fn pkcs8(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(bytes) else { return Ok(bytes.to_vec()) };
    let Some(start) = text.find("-----BEGIN PRIVATE KEY-----") else { return Ok(bytes.to_vec()) };
    let body = &text[start + "-----BEGIN PRIVATE KEY-----".len()..];
    let end = body.find("-----END PRIVATE KEY-----").ok_or("unterminated PEM block")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("PEM: {e}"))
}

fn load(path: &Path) -> Result<Key, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = pkcs8(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))?;
    let kid = thumbprint(pair.public_key().as_ref());
    Ok(Key { pair, kid })
}

/// Writes a new key, readable only by its owner, without ever exposing a partial file.
fn generate(path: &Path) -> Result<(), String> {
    let pem = crate::keys::generate_token_key_pem()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let temp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("{}: {e}", temp.display()))?;
        f.write_all(pem.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("{}: {e}", temp.display()))?;
    }
    std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Signer {
    /// Opens the key at `path`; with `create`, a missing key is generated there first.
    pub fn open(path: &Path, create: bool, config: &TokenConfig) -> Result<Signer, String> {
        if create && !path.exists() {
            generate(path)?;
        }
        let current = load(path)?;
        Ok(Signer {
            path: path.to_owned(),
            watch: !create,
            issuer: config.issuer.clone(),
            service: config.service.clone(),
            lifetime: config.lifetime,
            refresh_lifetime: config.refresh_lifetime,
            keys: Mutex::new(Keys { current, previous: None, stamp: stamp(path) }),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Re-reads a configured key file that changed; the old key keeps verifying for one token
    /// lifetime. `Ok(true)` when a new key was loaded; an unreadable file keeps the previous key.
    /// Blocking file I/O: the server's refresh task runs it, never a request.
    pub fn refresh(&self) -> Result<bool, String> {
        if !self.watch {
            return Ok(false);
        }
        let now = stamp(&self.path);
        if self.keys.lock().map(|k| k.stamp == now).unwrap_or(true) {
            return Ok(false);
        }
        let next = load(&self.path)?;
        let mut keys = self.keys.lock().map_err(|_| "key lock poisoned".to_owned())?;
        let old = std::mem::replace(&mut keys.current, next);
        keys.previous = Some((old.pair.public_key().as_ref().to_vec(), old.kid, Instant::now()));
        keys.stamp = now;
        Ok(true)
    }

    /// The key file this signer reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Signs `claims` as they are (the token endpoint builds them with `issue`).
    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let keys = self.keys.lock().map_err(|_| "key lock poisoned".to_owned())?;
        let header = Header { alg: "EdDSA".into(), typ: Some("JWT".into()), kid: keys.current.kid.clone() };
        let h = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
        let c = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let input = format!("{}.{}", b64(&h), b64(&c));
        let sig = keys.current.pair.sign(input.as_bytes());
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }

    fn claims(&self, subject: &str, access: Vec<ResourceActions>, refresh: bool) -> Claims {
        let now = now();
        let life = if refresh { self.refresh_lifetime } else { self.lifetime };
        let mut jti = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti);
        Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: now + life.as_secs(),
            nbf: now.saturating_sub(LEEWAY),
            iat: now,
            jti: b64(&jti),
            access,
            refresh,
            ui: false,
        }
    }

    /// An access token for `subject` granting exactly `granted`.
    pub fn issue(&self, subject: &str, granted: &[Scope]) -> Result<String, String> {
        let access = granted
            .iter()
            .filter(|s| !s.actions.is_empty())
            .map(|s| ResourceActions {
                kind: "repository".into(),
                name: s.repository.clone(),
                actions: s.actions.names().into_iter().map(str::to_owned).collect(),
            })
            .collect();
        self.sign(&self.claims(subject, access, false))
    }

    /// A refresh token for `subject`.
    pub fn issue_refresh(&self, subject: &str) -> Result<String, String> {
        self.sign(&self.claims(subject, vec![], true))
    }

    /// A web UI session for `subject`, good for `life`.
    pub fn issue_session(&self, subject: &str, life: Duration) -> Result<String, String> {
        let mut claims = self.claims(subject, vec![], false);
        claims.exp = claims.iat + life.as_secs();
        claims.ui = true;
        self.sign(&claims)
    }

    /// Checks signature, issuer, audience and validity period; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = serde_json::from_slice(&unb64(h)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::Signature);
        }
        let public = {
            let keys = self.keys.lock().map_err(|_| TokenError::UnknownKey)?;
            if header.kid == keys.current.kid {
                keys.current.pair.public_key().as_ref().to_vec()
            } else {
                match &keys.previous {
                    Some((public, kid, since)) if *kid == header.kid && since.elapsed() < self.lifetime => {
                        public.clone()
                    }
                    _ => return Err(TokenError::UnknownKey),
                }
            }
        };
        let signature = unb64(s)?;
        let input_len = h.len() + 1 + c.len();
        UnparsedPublicKey::new(&ED25519, &public)
            .verify(&token.as_bytes()[..input_len], &signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&unb64(c)?).map_err(|_| TokenError::Malformed)?;
        let now = now();
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != self.service {
            return Err(TokenError::Audience);
        }
        if now > claims.exp + LEEWAY {
            return Err(TokenError::Expired);
        }
        if now + LEEWAY < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(dir: &Path, service: &str) -> Signer {
        let config = TokenConfig { service: service.into(), ..TokenConfig::default() };
        Signer::open(&dir.join("key.pem"), true, &config).unwrap()
    }

    fn scope(repo: &str, actions: Actions) -> Scope {
        Scope { repository: repo.into(), actions }
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_access() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path(), "berth");
        let t = s.issue("alice", &[scope("team/app", Actions::PULL.union(Actions::PUSH))]).unwrap();
        let c = s.verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.repository_access(), vec![("team/app".to_owned(), Actions::PULL.union(Actions::PUSH))]);
        // The key was generated once, owner-only, and is reused by the next start.
        let mode = std::fs::metadata(dir.path().join("key.pem")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        assert!(signer(dir.path(), "berth").verify(&t).is_ok());
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path(), "berth");
        let t = s.issue("alice", &[scope("team/app", Actions::PULL)]).unwrap();
        // Widen the claims without re-signing.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c: Claims = serde_json::from_slice(&unb64(&parts[1]).unwrap()).unwrap();
        c.access[0].actions.push("push".into());
        parts[1] = b64(&serde_json::to_vec(&c).unwrap());
        assert_eq!(s.verify(&parts.join(".")), Err(TokenError::Signature));
        // Another service's key and audience.
        let other_dir = tempfile::tempdir().unwrap();
        let other = signer(other_dir.path(), "elsewhere");
        let foreign = other.issue("alice", &[]).unwrap();
        assert_eq!(s.verify(&foreign), Err(TokenError::UnknownKey));
        let mut c = s.claims("alice", vec![], false);
        c.aud = "elsewhere".into();
        assert_eq!(s.verify(&s.sign(&c).unwrap()), Err(TokenError::Audience));
        c.aud = "berth".into();
        c.exp = now() - 3600;
        assert_eq!(s.verify(&s.sign(&c).unwrap()), Err(TokenError::Expired));
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(s.verify(junk), Err(TokenError::Malformed), "{junk:?}");
        }
        // `alg: none` and friends.
        let none = format!("{}.{}.", b64(br#"{"alg":"none","kid":"x"}"#), parts[1]);
        assert!(s.verify(&none).is_err());
    }

    #[test]
    fn a_rotated_key_file_signs_new_tokens_and_old_ones_stay_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        generate(&path).unwrap();
        let s = Signer::open(&path, false, &TokenConfig::default()).unwrap();
        let before = s.issue("alice", &[]).unwrap();
        generate(&path).unwrap();
        assert_eq!(s.refresh(), Ok(true), "the new key is loaded");
        let after = s.issue("alice", &[]).unwrap();
        assert_ne!(before.split('.').next(), after.split('.').next(), "a new key id");
        assert!(s.verify(&before).is_ok() && s.verify(&after).is_ok());
    }
}
