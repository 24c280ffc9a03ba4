//! HTML for the web UI, written by hand: every value from a request, the metadata or a
//! manifest goes through [`esc`]; pages carry no script and no inline style (the
//! Content-Security-Policy allows neither).

use std::fmt::Write;

/// `s` with HTML's special characters escaped (for text and attribute values alike).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` for a URL's query value.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Bytes as people read them: `512 B`, `1.5 KiB`.
pub fn size(n: u64) -> String {
    berth_core::config::size::approximate(n)
}

/// A digest shortened for tables: `sha256:0123456789ab`. Any text is safe: a page must never
/// panic (the process aborts) on what a document says.
pub fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.chars().take(12).collect::<String>()),
        None => digest.to_owned(),
    }
}

/// Unix seconds as people read them, in UTC: `2026-12-05 01:41 UTC`.
pub fn when(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map_or_else(|_| secs.to_string(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
}

/// An RFC 3339 time from a document (an image config's `created`) as [`when`] writes it; text
/// that is not such a time as it is.
pub fn when_text(s: &str) -> String {
    s.parse::<jiff::Timestamp>().map_or_else(|_| s.to_owned(), |t| when(t.as_second()))
}

/// Who is looking, for the header.
pub struct Viewer<'a> {
    /// `None` when the registry has no access control.
    pub name: Option<&'a str>,
    pub csrf: &'a str,
    /// Whether logging in is possible (access control with the token service).
    pub can_login: bool,
    /// Whether the viewer may operate (admin).
    pub admin: bool,
}

/// A whole page: `title`, the header for `viewer`, and `body` (already HTML).
pub fn page(title: &str, viewer: &Viewer<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Berth</title><link rel=\"stylesheet\" href=\"/ui/assets/berth.css\">\
         <link rel=\"icon\" href=\"/ui/assets/favicon.svg\"></head><body>\
         <header><a class=\"brand\" href=\"/ui/\">Berth</a><nav>",
        esc(title)
    );
    if viewer.admin {
        out.push_str("<a href=\"/ui/operate\">Operate</a>");
    }
    match viewer.name {
        Some("") if viewer.can_login => out.push_str("<a href=\"/ui/login\">Log in</a>"),
        Some("") | None => {}
        Some(name) => {
            let _ = write!(
                out,
                "<span class=\"who\">{}</span><form method=\"post\" action=\"/ui/logout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form>",
                esc(name),
                esc(viewer.csrf)
            );
        }
    }
    out.push_str("</nav></header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_become_markup() {
        assert_eq!(
            esc("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(q("a/b c&d"), "a%2Fb+c%26d");
    }

    #[test]
    fn sizes_and_digests_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short("sha256:0123456789aé€bcdef"), "sha256:0123456789aé");
        assert_eq!(when(1_764_900_000), "2025-12-05 02:00 UTC");
        assert_eq!(when_text("2025-12-05T02:00:30.5Z"), "2025-12-05 02:00 UTC");
        assert_eq!(when_text("yesterday"), "yesterday");
    }
}
