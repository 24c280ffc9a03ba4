//! Repository names, tags and references, validated once at the edge.
//!
//! ```text
//! name       ::= component ("/" component)*                  (at most 255 bytes)
//! component  ::= [a-z0-9]+ (("." | "_" | "__" | "-"+) [a-z0-9]+)*
//! tag        ::= [a-zA-Z0-9_] [a-zA-Z0-9._-]{0,127}
//! reference  ::= tag | digest
//! ```
//! Because every component must start and end with `[a-z0-9]`, no valid name contains `..`, `/` at
//! either end, `//`, `%` or uppercase letters, which is what keeps names safe to use anywhere.

use std::fmt;
use std::str::FromStr;

use super::digest::{truncate, Digest, DigestError};

pub const MAX_NAME_LEN: usize = 255;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(Box<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} is invalid: components are lowercase letters and digits, separated by '.', '_', '__' or '-', joined by '/'")]
    Invalid(String),
    #[error("repository name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.is_empty() || !s.split('/').all(valid_component) {
            return Err(NameError::Invalid(truncate(s)));
        }
        Ok(RepoName(s.into()))
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: exactly ".", "_" or "__", or any number of "-".
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tag {0:?} is invalid: up to 128 characters of [a-zA-Z0-9._-], not starting with '.' or '-'")]
pub struct TagError(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_');
        let rest_ok = b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(TagError(truncate(s)));
        }
        Ok(Tag(s.into()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag can never contain ':', a digest always does.
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c/d/e/f/g/h",
            "my-org/my__app",
            "x.y_z/a---b",
            "0/1",
            "docker.io/library/nginx",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok:?} should parse");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "", "/", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "%2e%2e", "A", "a/B", "a___b", "a.-b",
            "-a", "a-", "a b", "a\0b", "é",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} must not parse");
        }
        assert_eq!("a".repeat(256).parse::<RepoName>(), Err(NameError::TooLong));
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok:?}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("sha256:xyz".parse::<Reference>(), Err(ReferenceError::Digest(_))));
    }
}
