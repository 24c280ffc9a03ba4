//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1), as registries send them:
//!
//! ```text
//! Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"
//! Basic realm="Registry Realm"
//! ```
//! One header may hold several challenges; parameters are `name=token` or `name="quoted \" string"`.
//! Anything malformed yields what was parsed before it, never a panic.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase: `bearer`, `basic`, ...
    pub scheme: String,
    /// Names lowercase, values as sent.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub fn parse(header: &str) -> Vec<Challenge> {
    let mut p = Parser { s: header.as_bytes(), i: 0 };
    let mut out: Vec<Challenge> = vec![];
    loop {
        p.skip_separators();
        let Some(word) = p.token() else { break };
        p.skip_spaces();
        if p.peek() == Some(b'=') && !out.is_empty() && !p.is_token68_tail() {
            p.i += 1;
            p.skip_spaces();
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.token() };
            let Some(value) = value else { break };
            if let Some(last) = out.last_mut() {
                last.params.push((word.to_ascii_lowercase(), value));
            }
        } else {
            out.push(Challenge { scheme: word.to_ascii_lowercase(), params: vec![] });
            // A token68 credential (`Negotiate abc==`) carries no parameters we use; skip it.
            p.skip_spaces();
            let mark = p.i;
            if p.token().is_some() && (p.is_token68_tail() || matches!(p.peek(), None | Some(b','))) {
                while p.peek() == Some(b'=') {
                    p.i += 1;
                }
            } else {
                p.i = mark;
            }
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// `=` signs that end the input or precede a separator belong to a token68, not a parameter.
    fn is_token68_tail(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        j > self.i && matches!(self.s.get(j), None | Some(b',' | b' ' | b'\t'))
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.i += 1;
                    out.push(self.peek()?);
                    self.i += 1;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn several_challenges_tokens_and_escapes() {
        let c = parse(
            r#"Negotiate abc==, Basic realm="a \"quoted\" realm", Bearer Realm=http://x/t , error=insufficient_scope"#,
        );
        let schemes: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["negotiate", "basic", "bearer"]);
        assert_eq!(c[1].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c[2].param("realm"), Some("http://x/t"));
        assert_eq!(c[2].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn malformed_input_never_panics() {
        for s in ["", ",,,", "Bearer realm=\"unterminated", "Bearer realm=", "=", "Basic \\", "Bearer a=\"\\"]
        {
            let _ = parse(s);
        }
        assert_eq!(parse("Bearer realm=\"unterminated")[0].params, vec![]);
    }
}
