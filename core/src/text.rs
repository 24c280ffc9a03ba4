//! Text quoted from elsewhere (a request, an upstream, a store's or a peer's error), cut to what
//! a message, a status or a page can carry.

/// `s` cut to at most `max` characters, a cut marked with `…` (one of the `max`).
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().nth(max).is_none() {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// The first line of `s` with words in it, trimmed, control characters made spaces, clipped to
/// `max` characters: whatever a peer answers, one short line of it.
pub fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let clean: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clip(&clean, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_by_characters_and_marks_the_cut() {
        assert_eq!(clip("short", 5), "short");
        assert_eq!(clip("longer", 5), "long…");
        assert_eq!(clip("ééééé", 4), "ééé…", "never inside a character");
        assert_eq!(clip("", 0), "");
        assert_eq!(clip("x", 0), "…");
    }

    #[test]
    fn one_line_of_whatever_a_peer_says() {
        assert_eq!(one_line("\n  connection refused \r\n more", 80), "connection refused");
        assert_eq!(one_line("a\u{7}b", 80), "a b");
        assert_eq!(one_line(&"spam ".repeat(100), 10).chars().count(), 10);
    }
}
