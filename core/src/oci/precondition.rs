//! Conditional manifest requests (`If-Match`, `If-None-Match`; RFC 9110 §13.1): the entity tags
//! a request sends and whether they hold for what its reference names now.
//!
//! A manifest's entity tag is its digest in quotes (what `GET` answers as `ETag`). What a
//! reference names now is a tag's manifest, or for a digest the manifest itself when the
//! repository holds it.

use super::{Digest, Tag};

/// The entity tags of one header: `*` (any current manifest), or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Etags {
    Any,
    /// The strong tags listed (`"sha256:…"`), and the weak ones (`W/"sha256:…"`), which only
    /// `If-None-Match` compares (a weak comparison); a tag that is not a digest matches nothing.
    Of {
        strong: Vec<Digest>,
        weak: Vec<Digest>,
    },
}

impl Etags {
    /// The entity tags of every line of one header; `None` when the header is absent.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Etags> {
        let (mut strong, mut weak, mut listed) = (Vec::new(), Vec::new(), false);
        for item in lines.into_iter().flat_map(|l| l.split(',')).map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                return Some(Etags::Any);
            }
            listed = true;
            let (list, quoted) = match item.strip_prefix("W/") {
                Some(rest) => (&mut weak, rest),
                None => (&mut strong, item),
            };
            let digest = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"'));
            if let Some(d) = digest.and_then(|d| d.parse::<Digest>().ok()) {
                list.push(d);
            }
        }
        // A header of nothing but commas and spaces counts as absent.
        listed.then_some(Etags::Of { strong, weak })
    }

    fn matches(&self, current: Option<&Digest>, weak_too: bool) -> bool {
        match (self, current) {
            (_, None) => false,
            (Etags::Any, Some(_)) => true,
            (Etags::Of { strong, weak }, Some(d)) => strong.contains(d) || (weak_too && weak.contains(d)),
        }
    }
}

/// What a conditional write expects of what its reference names now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    pub if_match: Option<Etags>,
    pub if_none_match: Option<Etags>,
}

impl Precondition {
    /// `If-Match` of one manifest: the reference must name `digest`.
    pub fn naming(digest: Digest) -> Precondition {
        Precondition { if_match: Some(Etags::Of { strong: vec![digest], weak: vec![] }), if_none_match: None }
    }

    /// Whether the request sets no condition.
    pub fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether the write may go ahead when its reference names `current` (RFC 9110 §13.2.2:
    /// `If-Match` by strong comparison, then `If-None-Match` by weak comparison).
    pub fn holds(&self, current: Option<&Digest>) -> bool {
        self.if_match_holds(current) && self.if_none_match_holds(current)
    }

    /// Whether `If-Match`, if sent, lists `current` (strong comparison).
    pub fn if_match_holds(&self, current: Option<&Digest>) -> bool {
        self.if_match.as_ref().is_none_or(|m| m.matches(current, false))
    }

    /// Whether `If-None-Match`, if sent, leaves `current` out (weak comparison). On a read, one
    /// that does not hold means the client has the manifest already (304).
    pub fn if_none_match_holds(&self, current: Option<&Digest>) -> bool {
        self.if_none_match.as_ref().is_none_or(|m| !m.matches(current, true))
    }
}

/// A manifest push's condition, on the reference its request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The tag the request named; `None` for a push by digest.
    pub tag: Option<Tag>,
    pub expect: Precondition,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn headers_parse_into_the_tags_they_list() {
        let (a, b) = (digest('a'), digest('b'));
        assert_eq!(Etags::parse([]), None);
        assert_eq!(Etags::parse(["*"]), Some(Etags::Any));
        assert_eq!(Etags::parse([&format!("\"{a}\", \"x\""), "*"]), Some(Etags::Any));
        assert_eq!(
            Etags::parse([&format!("\"{a}\" , W/\"{b}\""), "\"not-a-digest\", W/\"\", \"", ""]),
            Some(Etags::Of { strong: vec![a.clone()], weak: vec![b.clone()] })
        );
        // Present but naming nothing usable: matches nothing (so If-Match fails), not absent.
        assert_eq!(Etags::parse([" , "]), None);
        assert_eq!(Etags::parse([a.as_str()]), Some(Etags::Of { strong: vec![], weak: vec![] }));
    }

    #[test]
    fn conditions_hold_as_rfc_9110_says() {
        let (a, b) = (digest('a'), digest('b'));
        let of = |strong: &[&Digest], weak: &[&Digest]| Etags::Of {
            strong: strong.iter().map(|d| (*d).clone()).collect(),
            weak: weak.iter().map(|d| (*d).clone()).collect(),
        };
        let when = |if_match, if_none_match| Precondition { if_match, if_none_match };
        assert!(Precondition::default().holds(None) && Precondition::default().holds(Some(&a)));
        // If-Match: the current manifest must be one listed (strongly); `*`: any at all.
        assert!(when(Some(of(&[&a], &[])), None).holds(Some(&a)));
        assert!(!when(Some(of(&[&a], &[])), None).holds(Some(&b)));
        assert!(!when(Some(of(&[&a], &[])), None).holds(None));
        assert!(!when(Some(of(&[], &[&a])), None).holds(Some(&a)), "a weak tag never matches If-Match");
        assert!(when(Some(Etags::Any), None).holds(Some(&b)));
        assert!(!when(Some(Etags::Any), None).holds(None));
        // If-None-Match: none of those listed (weakly); `*`: nothing there yet.
        assert!(when(None, Some(Etags::Any)).holds(None));
        assert!(!when(None, Some(Etags::Any)).holds(Some(&a)));
        assert!(!when(None, Some(of(&[], &[&a]))).holds(Some(&a)));
        assert!(when(None, Some(of(&[&a], &[]))).holds(Some(&b)));
        // Both: each must hold.
        assert!(!when(Some(of(&[&a], &[])), Some(of(&[&a], &[]))).holds(Some(&a)));
    }
}
