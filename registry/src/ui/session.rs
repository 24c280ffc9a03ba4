//! Who is looking at the UI, and the guards of its forms.
//!
//! - The session is a cookie holding a token the registry's own key signs (so any replica
//!   accepts it), marked as a UI session: it is refused as a Bearer or refresh token. Each
//!   request checks it again against the users and robots as they are now, like a token.
//!   `HttpOnly`, `SameSite=Strict`, `Secure` when clients reach the registry over TLS.
//! - Every form carries the value of a random `berth_csrf` cookie (double submit), and a POST
//!   whose `Origin` (or `Sec-Fetch-Site`) says another site sent it is refused.
//! - Logging in is the same check as `/token` and Basic auth: throttled, counted, audited.
//!
//! Where another identity source fits: a session names its subject only, and everything after
//! logging in (the cookie, the re-check at each request, what the rules allow) goes through
//! `Authenticator`. An LDAP directory is one more password check behind `Authenticator::login`
//! (the form stays as it is); an OIDC provider is a redirect and a callback that end, like the
//! form, in `start_session` with the identity the provider vouched for. Either one also answers
//! `session_caller`'s question — does this subject still exist, and in which groups — from a
//! cache it refreshes, never with a network call per request.

use axum::http::{header, request::Parts, HeaderMap, HeaderValue};

use crate::api::AppState;
use crate::auth::Caller;

pub const SESSION: &str = "berth_session";
pub const CSRF: &str = "berth_csrf";

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Whether cookies must be `Secure`: clients reach the registry over TLS.
fn secure(st: &AppState) -> bool {
    st.tls || st.external_url.as_ref().is_some_and(|u| u.https)
}

/// A `Set-Cookie` value for the UI's paths.
pub fn set_cookie(st: &AppState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure(st) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Path=/ui"))
}

/// The request's CSRF value, or a new one (to be set as a cookie) when it has none.
pub fn csrf(parts: &Parts) -> (String, bool) {
    match cookie(&parts.headers, CSRF)
        .filter(|v| v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        Some(v) => (v.to_owned(), false),
        None => {
            let mut bytes = [0u8; 32];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
            use base64::Engine as _;
            (base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes), true)
        }
    }
}

/// Whether a POST may act: sent by this site's own page, with the form's CSRF value equal to
/// the cookie's.
pub fn form_allowed(parts: &Parts, form_csrf: Option<&str>) -> bool {
    let h = &parts.headers;
    if h.get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s != "same-origin" && s != "none")
    {
        return false;
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, r)| r);
        if origin == "null" || origin_host != host {
            return false;
        }
    }
    match (cookie(h, CSRF), form_csrf) {
        (Some(c), Some(f)) => equal(c.as_bytes(), f.as_bytes()),
        _ => false,
    }
}

/// Compares two secrets in time that depends on their length only.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is looking: everyone may do everything without access control; with it, the session's
/// user or robot, else anonymous (who sees what anonymous may pull).
pub async fn viewer(st: &AppState, parts: &Parts) -> Caller {
    let Some(auth) = &st.auth else { return Caller::open() };
    if let Some(session) = cookie(&parts.headers, SESSION) {
        if let Ok(c) = auth.session_caller(session) {
            return c;
        }
    }
    match auth.caller(None, st.client(parts)).await {
        Ok(c) => c,
        Err(_) => Caller::open_anonymous(auth.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().method("POST").uri("/ui/delete");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

    #[test]
    fn a_form_acts_only_with_the_cookies_csrf_value_from_this_site() {
        let cookie = format!("{CSRF}={TOKEN}");
        let same = parts(&[("cookie", &cookie), ("host", "berth:5000"), ("origin", "http://berth:5000")]);
        assert!(form_allowed(&same, Some(TOKEN)));
        assert!(!form_allowed(&same, Some("another")), "a different value");
        assert!(!form_allowed(&same, None), "no value");
        let elsewhere =
            parts(&[("cookie", &cookie), ("host", "berth:5000"), ("origin", "https://evil.example")]);
        assert!(!form_allowed(&elsewhere, Some(TOKEN)), "another site's form");
        let fetch = parts(&[("cookie", &cookie), ("host", "berth:5000"), ("sec-fetch-site", "cross-site")]);
        assert!(!form_allowed(&fetch, Some(TOKEN)));
        assert!(!form_allowed(&parts(&[("host", "berth:5000")]), Some(TOKEN)), "no cookie");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let p = parts(&[("cookie", "a=1; berth_session=tok; b=2")]);
        assert_eq!(cookie(&p.headers, SESSION), Some("tok"));
        assert_eq!(cookie(&p.headers, "c"), None);
        let (fresh, new) = csrf(&p);
        assert!(new && fresh.len() == 43);
    }
}
