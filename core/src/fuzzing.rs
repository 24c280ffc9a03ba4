//! The checks the fuzz targets (`fuzz/`) run on arbitrary input, shared with the regression test
//! that replays every saved case (`tests/fuzz_regressions.rs`) on stable Rust in `cargo test`.
//! Each parser must return, never panic, and what it accepts must hold its own invariants.

use std::sync::OnceLock;

use crate::auth::challenge;
use crate::auth::token::Signer;
use crate::config::auth::TokenConfig;
use crate::oci::range::{parse_content_range, parse_range, RangeOutcome};
use crate::oci::route as path;
use crate::oci::{manifest, Digest, Reference, RepoName, Tag};

/// A check: returns, or panics on a broken invariant.
pub type Check = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: [(&str, Check); 8] = [
    ("path", path),
    ("reference", reference),
    ("manifest", manifest),
    ("range", range),
    ("www_authenticate", www_authenticate),
    ("token", token),
    ("forwarded", forwarded),
    ("etags", etags),
];

fn text(data: &[u8]) -> &str {
    std::str::from_utf8(data).unwrap_or("")
}

/// The request path parser: an accepted route names a repository that parses again as itself.
pub fn path(data: &[u8]) {
    if let Ok(route) = path::parse(text(data)) {
        if let Some(repo) = route.repo() {
            let again = repo.as_str().parse::<RepoName>();
            assert_eq!(again.as_ref().ok(), Some(repo), "an accepted name parses again as itself");
        }
    }
}

/// Digests, tags, references and names: whatever parses prints back as it was written.
pub fn reference(data: &[u8]) {
    let s = text(data);
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.as_str(), s);
    }
}

/// Manifest parsing, under each content type a client may send.
pub fn manifest(data: &[u8]) {
    let Some((selector, body)) = data.split_first() else { return };
    let content_type = match selector % 6 {
        0 => None,
        1 => Some("application/vnd.oci.image.manifest.v1+json"),
        2 => Some("application/vnd.oci.image.index.v1+json"),
        3 => Some("application/vnd.docker.distribution.manifest.v2+json"),
        4 => Some("application/vnd.docker.distribution.manifest.list.v2+json"),
        _ => Some("application/json; charset=utf-8"),
    };
    let _ = manifest::parse(content_type, body);
}

/// `Content-Range` of upload chunks and `Range` of blob reads: accepted ranges are ordered and
/// every range served lies inside the blob.
pub fn range(data: &[u8]) {
    let s = text(data);
    if let Some(r) = parse_content_range(s) {
        assert!(r.start <= r.end, "{s:?} gave {}..{}", r.start, r.end);
    }
    if let Some(r) = parse_range(s) {
        for size in [0, 1, 500, u64::MAX] {
            if let RangeOutcome::Partial { start, end } = r.resolve(size) {
                assert!(start <= end && end < size, "{s:?} on {size} bytes gave {start}..={end}");
            }
        }
    }
}

/// `WWW-Authenticate` from upstreams: schemes are lowercase words, parameter names lowercase.
pub fn www_authenticate(data: &[u8]) {
    for c in challenge::parse(text(data)) {
        assert!(!c.scheme.is_empty());
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        for (name, _) in &c.params {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }
}

/// Bearer tokens and token-request scopes: arbitrary input is refused, never trusted.
pub fn token(data: &[u8]) {
    static SIGNER: OnceLock<Option<Signer>> = OnceLock::new();
    let s = text(data);
    let _ = crate::auth::parse_scope(s);
    let _ = crate::auth::decode_basic(s);
    let signer = SIGNER.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("berth-fuzz-token-{}.key", std::process::id()));
        Signer::open(&path, true, &TokenConfig::default()).ok()
    });
    if let Some(signer) = signer {
        assert!(signer.verify(s).is_err(), "an unsigned input verified: {s:?}");
    }
}

/// Who a request comes from and where clients reach the registry: trusted ranges, the
/// `X-Forwarded-For` chain, hosts and external URLs. Lines of input: trusted ranges, then the
/// peer, then header values. The client found is the peer or an address the chain names; a host
/// or URL accepted can never end a quoted header parameter or add a path.
pub fn forwarded(data: &[u8]) {
    use crate::net::{client_address, is_authority, parse_hop, Cidr, ExternalUrl};
    let s = text(data);
    let mut lines = s.lines();
    let trusted: Vec<Cidr> = lines.next().unwrap_or("").split(' ').filter_map(|c| c.parse().ok()).collect();
    let peer: std::net::IpAddr = lines.next().and_then(|p| p.parse().ok()).unwrap_or([127, 0, 0, 1].into());
    let values: Vec<&str> = lines.collect();
    let client = client_address(peer, values.iter().copied(), &trusted);
    // The client is the peer or one of the hops the headers name: never an invented address.
    let hops = || values.iter().flat_map(|v| v.split(',')).filter_map(|h| parse_hop(h.trim()));
    let peer_seen = parse_hop(&peer.to_string());
    assert!(Some(client) == peer_seen || hops().any(|h| h == client), "{s:?} gave {client}");
    for v in std::iter::once(s).chain(values.iter().copied()) {
        if is_authority(v) {
            assert!(!v.contains(['"', '/', '?', '#', ' ', '\\']), "{v:?} accepted as a host");
        }
        if let Ok(u) = ExternalUrl::parse(v) {
            let joined = u.join("/token");
            assert!(
                !joined.contains(['"', '?', '#', ' ']) && joined.ends_with("/token"),
                "{v:?} gave {joined}"
            );
        }
    }
}

/// `If-Match` and `If-None-Match`, a header line per input line: every tag found was written in
/// quotes, `*` only where one was written, and no manifest (or absence) both matches a list and
/// does not match it.
pub fn etags(data: &[u8]) {
    use crate::oci::precondition::{Etags, Precondition};
    let s = text(data);
    let items = || s.lines().flat_map(|l| l.split(',')).map(str::trim);
    let Some(tags) = Etags::parse(s.lines()) else {
        assert!(items().all(str::is_empty), "{s:?} has items, but parsed as no header");
        return;
    };
    let mut candidates = vec![None, Some(Digest::of(crate::oci::Algorithm::Sha256, data))];
    match &tags {
        Etags::Any => assert!(items().any(|i| i == "*"), "{s:?} gave * without one"),
        Etags::Of { strong, weak } => {
            for d in strong.iter().chain(weak) {
                assert!(s.contains(&format!("\"{d}\"")), "{s:?} gave {d}, never quoted in it");
                candidates.push(Some(d.clone()));
            }
        }
    }
    let both = Precondition { if_match: Some(tags.clone()), if_none_match: Some(tags) };
    for current in &candidates {
        assert!(!both.holds(current.as_ref()), "{s:?}: {current:?} matches and does not");
    }
}
