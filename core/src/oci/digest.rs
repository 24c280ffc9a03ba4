//! Content digests (`<algorithm>:<hex>`) and the streaming hasher that produces them.
//!
//! Only the two algorithms the OCI image spec registers are accepted: `sha256` (64 hex digits) and
//! `sha512` (128). Any other well-formed algorithm is [`DigestError::Unsupported`], so the API can
//! tell "malformed" from "not supported here" — both are `DIGEST_INVALID` on the wire.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::Digest as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Box::new(sha2::Sha512::new())),
        }
    }
}

/// The hex digits a referrers tag keeps of its subject's digest.
const REFERRERS_TAG_HEX: usize = 64;

/// A validated digest. It cannot exist in a malformed state; `as_str` is its canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form <algorithm>:<encoded>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    Unsupported(String),
    #[error("digest {0:?} must have {1} lowercase hex digits")]
    BadEncoding(String, usize),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hex part, after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }

    /// The tag under which the OCI 1.1 referrers tag scheme keeps the index of what refers to
    /// this digest, on a registry without the referrers API: `<algorithm>-<hex>`, the hex cut to
    /// its first 64 digits as the scheme says (a tag has at most 128 characters; a sha512 has 128
    /// digits).
    pub fn referrers_tag(&self) -> String {
        let hex = self.hex();
        format!("{}-{}", self.algorithm.name(), &hex[..hex.len().min(REFERRERS_TAG_HEX)])
    }

    /// Whether `tag` is one [`Digest::referrers_tag`] makes: a list of referrers, not an image.
    pub fn is_referrers_tag(tag: &str) -> bool {
        tag.split_once('-').is_some_and(|(algorithm, hex)| {
            [Algorithm::Sha256, Algorithm::Sha512].iter().any(|a| a.name() == algorithm)
                && hex.len() == REFERRERS_TAG_HEX
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    /// Digest of a byte slice held in memory.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = algorithm.hasher();
        hasher.update(bytes);
        hasher.finish()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || DigestError::Malformed(truncate(s));
        let (algo, encoded) = s.split_once(':').ok_or_else(malformed)?;
        if !valid_algorithm_component(algo) || !valid_encoded(encoded) {
            return Err(malformed());
        }
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::Unsupported(truncate(other))),
        };
        let want = algorithm.hex_len();
        let lower_hex = encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if encoded.len() != want || !lower_hex {
            return Err(DigestError::BadEncoding(truncate(s), want));
        }
        Ok(Digest { algorithm, text: s.into() })
    }
}

/// `algorithm ::= component ([+._-] component)*`, `component ::= [a-z0-9]+`
fn valid_algorithm_component(algo: &str) -> bool {
    !algo.is_empty()
        && algo
            .split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// `encoded ::= [a-zA-Z0-9=_-]+`
fn valid_encoded(encoded: &str) -> bool {
    !encoded.is_empty()
        && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

/// Error messages quote input; keep what an attacker controls short.
pub(crate) fn truncate(s: &str) -> String {
    crate::text::clip(s, 160)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Lowercase hex of `bytes`, as digests are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The first byte of a stored sha256 [`Hasher::state`].
const STATE_SHA256: u8 = 1;

/// Incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(Box<sha2::Sha512>),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The state after the bytes so far, to be stored and resumed by another process
    /// ([`Hasher::resume`]): sha256 only (the one algorithm uploads are hashed in as they arrive).
    pub fn state(&self) -> Option<Vec<u8>> {
        match self {
            Hasher::Sha256(h) => {
                let mut out = vec![STATE_SHA256];
                out.extend_from_slice(&h.serialize());
                Some(out)
            }
            Hasher::Sha512(_) => None,
        }
    }

    /// A hasher continuing from a [`Hasher::state`]; `None` if `state` is not one.
    pub fn resume(state: &[u8]) -> Option<Hasher> {
        let (&STATE_SHA256, rest) = state.split_first()? else { return None };
        let rest = SerializedState::<sha2::Sha256>::try_from(rest).ok()?;
        sha2::Sha256::deserialize(&rest).ok().map(Hasher::Sha256)
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex(&h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex(&h.finalize())),
        };
        Digest { algorithm, text: format!("{}:{hex}", algorithm.name()).into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_canonical_form() {
        let d: Digest = EMPTY_256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.referrers_tag(), format!("sha256-{}", d.hex()));
    }

    #[test]
    fn referrers_tags_are_valid_tags_for_both_algorithms() {
        let long = Digest::of(Algorithm::Sha512, b"subject");
        let tag = long.referrers_tag();
        assert_eq!(tag, format!("sha512-{}", &long.hex()[..64]));
        assert!(tag.parse::<crate::oci::Tag>().is_ok(), "{tag}");
        let short = Digest::of(Algorithm::Sha256, b"subject");
        for d in [&long, &short] {
            assert!(Digest::is_referrers_tag(&d.referrers_tag()));
        }
        let hex = "a".repeat(64);
        assert!(!Digest::is_referrers_tag(&format!("md5-{hex}")));
        assert!(!Digest::is_referrers_tag(&format!("sha256-{}", "A".repeat(64))));
        assert!(!Digest::is_referrers_tag(&format!("sha512-{}", "a".repeat(128))));
        assert!(!Digest::is_referrers_tag("sha256-abc") && !Digest::is_referrers_tag("latest"));
    }

    #[test]
    fn a_stored_state_resumes_where_it_stopped() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cut in [0, 1, 63, 64, 65, 4096, 9_999, 10_000] {
            let mut h = Algorithm::Sha256.hasher();
            h.update(&data[..cut]);
            let state = h.state().unwrap();
            let mut resumed = Hasher::resume(&state).unwrap();
            resumed.update(&data[cut..]);
            assert_eq!(resumed.finish(), Digest::of(Algorithm::Sha256, &data), "cut at {cut}");
        }
        assert!(Algorithm::Sha512.hasher().state().is_none());
        let state = Algorithm::Sha256.hasher().state().unwrap();
        assert!(Hasher::resume(&state[..state.len() - 1]).is_none(), "truncated");
        assert!(Hasher::resume(&[]).is_none());
        assert!(Hasher::resume(&[9; 41]).is_none(), "unknown kind");
    }

    #[test]
    fn hashes_match_known_vectors() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").as_str(), EMPTY_256);
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.as_str().starts_with("sha512:cf83e1357eefb8bdf1542850d66d8007"));
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} must not parse");
        }
        assert!(matches!("md5:abcd".parse::<Digest>(), Err(DigestError::Unsupported(_))));
        assert!(matches!("blake3:abcd".parse::<Digest>(), Err(DigestError::Unsupported(_))));
    }

    #[test]
    fn long_input_is_truncated_in_errors() {
        let long = format!("sha256:{}", "a".repeat(10_000));
        let msg = long.parse::<Digest>().unwrap_err().to_string();
        assert!(msg.len() < 400);
    }
}
