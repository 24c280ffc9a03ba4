//! Credentials from a docker `config.json` or podman `auth.json`, as `docker login` and
//! `podman login` leave them:
//!
//! ```json
//! {"auths": {"registry.example:5000": {"auth": "<base64 of user:password>"}},
//!  "credHelpers": {"gcr.example": "gcloud"},
//!  "credsStore": "desktop"}
//! ```
//! A registry's credential helper (`credHelpers`) is asked first, then its `auths` entry, then
//! the default helper (`credsStore`). A helper is the program `docker-credential-<name>`, run
//! with `get` and the registry on stdin, answering `{"Username": …, "Secret": …}`. Keys are
//! matched by host and port, whatever scheme or path they carry; Docker Hub's many names are one.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

/// Why credentials could not be read.
type Result<T> = std::result::Result<T, String>;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, Entry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The username and password `path` holds for the registry at `url`; `None` when it has none.
/// Without `helpers`, a file that sends to a credential helper is refused (a server must not
/// run programs a mounted file names).
pub fn lookup(path: &Path, url: &str, helpers: bool) -> Result<Option<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    lookup_in(&text, &path.display().to_string(), url, helpers)
}

/// As [`lookup`], in the text of an auth file that `origin` names (for messages).
pub fn lookup_in(text: &str, origin: &str, url: &str, helpers: bool) -> Result<Option<(String, String)>> {
    let file: AuthFile =
        serde_json::from_str(text).map_err(|e| format!("{origin}: not an auth file: {e}"))?;
    let host = host(url);
    let helper = |name: &str, server: &str| match helpers {
        true => helper_get(name, server),
        false => Err(format!("{origin}: credential helpers are not run here")),
    };
    if let Some((key, name)) = file.cred_helpers.iter().find(|(k, _)| self::host(k) == host) {
        return helper(name, key);
    }
    if let Some((key, entry)) = file.auths.iter().find(|(k, _)| self::host(k) == host) {
        if let Some(found) = from_entry(entry).map_err(|e| format!("{origin}: auths[{key:?}]: {e}"))? {
            return Ok(Some(found));
        }
    }
    match &file.creds_store {
        Some(name) => helper(name, &server_url(url)),
        None => Ok(None),
    }
}

fn from_entry(e: &Entry) -> Result<Option<(String, String)>> {
    if e.identitytoken.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err("an identity token (an OAuth login) is not supported: log in with a username and password or token".into());
    }
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "auth is not base64".to_owned())?;
        let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_owned())?;
        let Some((user, password)) = decoded.split_once(':') else {
            return Err("auth is not user:password".into());
        };
        return Ok(Some((user.to_owned(), password.to_owned())));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u.clone(), p.clone()))),
        _ => Ok(None),
    }
}

/// Asks `docker-credential-<name>` for `server`'s credentials.
fn helper_get(name: &str, server: &str) -> Result<Option<(String, String)>> {
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!("credential helper {name:?}: not a helper's name"));
    }
    let program = format!("docker-credential-{name}");
    let running = |e: std::io::Error| format!("running {program}: {e}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(running)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).map_err(running)?;
    }
    let out = child.wait_with_output().map_err(running)?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout);
        // Helpers say so on stdout when they hold nothing for the server.
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("{program} get {server}: {}: {}", out.status, said.trim()));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let a: Answer =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{program}: not its JSON answer: {e}"))?;
    if a.username == "<token>" {
        return Err(format!("{program}: an identity token (an OAuth login) is not supported"));
    }
    Ok(Some((a.username, a.secret)))
}

/// A key's or URL's host and port, Docker Hub's names as one.
fn host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// How helpers know a registry: Docker Hub by its historical index URL, others by host.
fn server_url(url: &str) -> String {
    match host(url).as_str() {
        "docker.io" => "https://index.docker.io/v1/".into(),
        h => h.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(json.as_bytes()).unwrap();
        f
    }

    #[test]
    fn entries_are_found_by_host_whatever_their_scheme() {
        let f = file(
            r#"{"auths": {"https://registry.example:5000/v2/": {"auth": "YWxpY2U6cHc6d2l0aC1jb2xvbg=="},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "empty.example": {}}}"#,
        );
        let alice = lookup(f.path(), "http://registry.example:5000", true).unwrap();
        assert_eq!(alice, Some(("alice".into(), "pw:with-colon".into())), "only the first ':' splits");
        assert_eq!(
            lookup(f.path(), "https://registry-1.docker.io", true).unwrap(),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(lookup(f.path(), "https://empty.example", true).unwrap(), None);
        assert_eq!(lookup(f.path(), "https://other.example", true).unwrap(), None);
    }

    #[test]
    fn what_cannot_be_used_says_why() {
        let bad = file(r#"{"auths": {"r.example": {"auth": "not base64!"}}}"#);
        assert!(lookup(bad.path(), "https://r.example", true).unwrap_err().contains("base64"));
        let token = file(r#"{"auths": {"r.example": {"identitytoken": "x"}}}"#);
        assert!(lookup(token.path(), "https://r.example", true).unwrap_err().contains("identity token"));
        let helper = file(r#"{"credHelpers": {"r.example": "../evil"}}"#);
        assert!(lookup(helper.path(), "https://r.example", true).unwrap_err().contains("not a helper"));
        let helped = file(r#"{"credsStore": "desktop"}"#);
        assert!(lookup(helped.path(), "https://r.example", false).unwrap_err().contains("not run here"));
        let broken = file("{");
        assert!(lookup(broken.path(), "https://r.example", true).is_err());
    }
}
