//! The htpasswd file (bcrypt entries only), and files that are re-read when they change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Users and their bcrypt hashes.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl Htpasswd {
    /// `user:$2y$...` per line; blank lines and `#` comments are skipped. Other hash kinds
    /// (MD5, SHA1, crypt) are refused: they are too weak to accept.
    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) =
                line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash", i + 1))?;
            if !hash.starts_with("$2") {
                return Err(format!("line {}: only bcrypt hashes ($2y$) are accepted", i + 1));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd { users })
    }

    pub fn hash(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// The bcrypt cost most entries use.
    pub fn typical_cost(&self) -> Option<u32> {
        let mut costs: Vec<u32> = self.users.values().filter_map(|h| h.get(4..6)?.parse().ok()).collect();
        costs.sort_unstable();
        costs.get(costs.len() / 2).copied()
    }
}

/// How often [`Watched::refresh`] is meant to run (the server's refresh task).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

type Stamp = Option<(SystemTime, u64)>;

/// A value parsed from a file, re-read when the file changes. A change that does not parse is
/// logged and the previous value is kept. Reading the value touches only memory; the file is
/// looked at by [`Watched::refresh`], off the request path.
pub struct Watched<T> {
    path: Option<PathBuf>,
    parse: Parse<T>,
    state: Mutex<(Arc<T>, Stamp)>,
}

/// How a file becomes its value: as UTF-8 text, or as bytes (a key may be any bytes).
enum Parse<T> {
    Text(fn(&str) -> Result<T, String>),
    Bytes(fn(&[u8]) -> Result<T, String>),
}

impl<T> Parse<T> {
    fn read(&self, path: &std::path::Path) -> Result<T, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        match self {
            Parse::Text(parse) => {
                parse(std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_owned())?)
            }
            Parse::Bytes(parse) => parse(&bytes),
        }
    }
}

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl<T> Watched<T> {
    /// A value parsed from the UTF-8 text of `path`.
    pub fn open(path: PathBuf, parse: fn(&str) -> Result<T, String>) -> Result<Watched<T>, String> {
        Watched::start(path, Parse::Text(parse))
    }

    /// A value parsed from the bytes of `path`, whatever they are.
    pub fn open_bytes(path: PathBuf, parse: fn(&[u8]) -> Result<T, String>) -> Result<Watched<T>, String> {
        Watched::start(path, Parse::Bytes(parse))
    }

    fn start(path: PathBuf, parse: Parse<T>) -> Result<Watched<T>, String> {
        let s = stamp(&path);
        let value = parse.read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Watched { path: Some(path), parse, state: Mutex::new((Arc::new(value), s)) })
    }

    pub fn fixed(value: T) -> Watched<T> {
        let parse = Parse::Text(|_| Err("fixed".into()));
        Watched { path: None, parse, state: Mutex::new((Arc::new(value), None)) }
    }

    /// The value as the file said when last refreshed.
    pub fn current(&self) -> Result<Arc<T>, String> {
        Ok(self.state.lock().map_err(|_| "lock poisoned".to_owned())?.0.clone())
    }

    /// Re-reads the file if it changed (blocking file I/O: run it off the async threads).
    pub fn refresh(&self) {
        let Some(path) = &self.path else { return };
        let now = stamp(path);
        if self.state.lock().map(|st| st.1 == now).unwrap_or(true) {
            return;
        }
        match self.parse.read(path) {
            Ok(v) => {
                if let Ok(mut st) = self.state.lock() {
                    *st = (Arc::new(v), now);
                }
                tracing::info!(file = %path.display(), "reloaded");
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "kept the previous version"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        let h = Htpasswd::parse("# users\nalice:$2y$05$abcdefghijklmnopqrstuu\n\nbob:$2b$10$xyz\n").unwrap();
        assert!(h.hash("alice").is_some() && h.hash("bob").is_some() && h.hash("carol").is_none());
        assert_eq!(h.typical_cost(), Some(10));
        assert!(Htpasswd::parse("alice:{SHA}abc").unwrap_err().contains("line 1"));
        assert!(Htpasswd::parse("alice").unwrap_err().contains("user:hash"));
    }

    #[test]
    fn watched_files_reload_and_keep_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "alice:$2y$04$aaaaaaaaaaaaaaaaaaaaaa\n").unwrap();
        let w = Watched::open(path.clone(), Htpasswd::parse).unwrap();
        assert!(w.current().unwrap().hash("alice").is_some());
        std::fs::write(&path, "alice:$2y$04$aaaaaaaaaaaaaaaaaaaaaa\nbob:$2y$04$bbbbbbbbbbbbbbbbbbbbbb\n")
            .unwrap();
        assert!(w.current().unwrap().hash("bob").is_none(), "reading never touches the file");
        w.refresh();
        assert!(w.current().unwrap().hash("bob").is_some());
        std::fs::write(&path, "garbage").unwrap();
        w.refresh();
        assert!(w.current().unwrap().hash("bob").is_some(), "a broken file keeps the previous users");
    }

    #[test]
    fn a_key_may_be_any_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = [0xffu8, 0x00, 0x9c, b'k', 0x80];
        std::fs::write(&path, key).unwrap();
        let w = Watched::open_bytes(path.clone(), |b| Ok(b.to_vec())).unwrap();
        assert_eq!(w.current().unwrap().as_slice(), key);
        let e = Watched::open(path, |t| Ok(t.to_owned())).err().unwrap();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
