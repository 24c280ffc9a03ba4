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

fn match_parts(pattern: &[String], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((p, rest)) if p == "**" => (0..=name.len()).any(|skip| match_parts(rest, &name[skip..])),
        Some((p, rest)) => match name.split_first() {
            Some((n, names)) => match_part(p.as_bytes(), n.as_bytes()) && match_parts(rest, names),
            None => false,
        },
    }
}

/// `*` within one part: greedy with backtracking, linear in practice for these short names.
fn match_part(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
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
    p[pi..].iter().all(|&c| c == b'*')
}
