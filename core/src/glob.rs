//! Repository patterns, for upstream filters and access rules.

/// A repository pattern: `*` matches within one path part, `**` matches any number of parts.
#[derive(Debug, Clone)]
pub struct Glob {
    parts: Vec<String>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob { parts: pattern.split('/').map(str::to_owned).collect() }
    }

    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        match_parts(&self.parts, &parts)
    }
}

/// `**` over parts as `*` over bytes within a part ([`wildcard`] both).
fn match_parts(pattern: &[String], name: &[&str]) -> bool {
    wildcard(pattern, name, |p| p == "**", |p, n| match_part(p.as_bytes(), n.as_bytes()))
}

fn match_part(p: &[u8], s: &[u8]) -> bool {
    wildcard(p, s, |&c| c == b'*', |a, b| a == b)
}

/// Whether `pattern` matches all of `subject`, where each element of `pattern` that `is_star`
/// matches any run of elements, and any other matches exactly one element that `matches` it.
/// Greedy with backtracking to the last star only: a later star can take whatever an earlier
/// one could have, so this is linear in the lengths' product however many stars there are
/// (trying every split for each star costs the subject's length to the power of their count).
fn wildcard<P, S>(
    pattern: &[P],
    subject: &[S],
    is_star: impl Fn(&P) -> bool,
    matches: impl Fn(&P, &S) -> bool,
) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < subject.len() {
        if pi < pattern.len() && is_star(&pattern[pi]) {
            star = Some((pi, si));
            pi += 1;
        } else if pi < pattern.len() && matches(&pattern[pi], &subject[si]) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pattern[pi..].iter().all(is_star)
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_within_a_part_and_across_parts() {
        let cases = [
            ("library/*", "library/nginx", true),
            ("library/*", "library/team/nginx", false),
            ("library/**", "library/team/nginx", true),
            ("library/**", "library", true),
            ("**", "a/b/c", true),
            ("**/nginx", "nginx", true),
            ("**/nginx", "a/b/nginx", true),
            ("**/nginx", "a/b/nginx/x", false),
            ("team-*/**/prod", "team-a/x/y/prod", true),
            ("team-*/**/prod", "team-a/prod", true),
            ("team-*/**/prod", "other/prod", false),
            ("a/**/b/**/c", "a/b/c", true),
            ("a/**/b/**/c", "a/x/b/y/b/z/c", true),
            ("a/**/b/**/c", "a/x/y/c", false),
            ("**/*-cache/**", "mirror/docker-cache/library/nginx", true),
            ("*", "", true),
            ("a", "a/b", false),
            ("*-operator", "cert-manager-operator", true),
            ("*-operator", "operator", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(Glob::new(pattern).matches(name), want, "{pattern} ~ {name}");
        }
    }

    /// Patterns come from the config, names from requests: a pattern with several `**` against a
    /// name of many parts must not cost the name's length to the power of their count.
    #[test]
    fn many_double_stars_against_a_long_name_answer_at_once() {
        let pattern = Glob::new("**/a/**/a/**/a/**/a/**/a/**/a/**/a/**/b");
        let name = vec!["a"; 120].join("/");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(pattern.matches(&name));
        });
        // Generous for a slow machine: the linear match takes microseconds; trying every split
        // of 120 parts for eight `**` would not finish in a lifetime.
        let matched = rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(matched, Ok(false));
    }
}
