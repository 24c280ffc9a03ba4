//! One request's view of the UI: who is looking, their CSRF value, and how pages are answered
//! (the frame, and the headers that keep them self-contained).

use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{html, session};
use crate::api::AppState;
use crate::auth::Caller;

/// A page's outcome: its title and HTML, or a status with a message.
pub type Page = Result<(String, String), (StatusCode, String)>;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// One request's view: who, their CSRF value, and the state.
pub struct Ui {
    pub st: AppState,
    pub caller: Caller,
    pub csrf: String,
    /// The CSRF value is new: the response sets its cookie.
    new_csrf: bool,
    host: String,
}

impl Ui {
    pub async fn of(st: AppState, parts: &Parts) -> Ui {
        let caller = session::viewer(&st, parts).await;
        let (csrf, new_csrf) = session::csrf(parts);
        let host = match &st.external_url {
            Some(u) => u.authority.clone(),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_owned(),
        };
        Ui { st, caller, csrf, new_csrf, host }
    }

    /// The `host[:port]` images here are pulled by.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn can_login(&self) -> bool {
        self.st.auth.as_ref().is_some_and(|a| a.signer().is_some())
    }

    /// `body` in the page frame, with the UI's headers.
    pub fn respond(&self, status: StatusCode, title: &str, body: &str) -> Response {
        let name = self.st.auth.as_ref().map(|_| self.caller.identity.name());
        let viewer = html::Viewer {
            name,
            csrf: &self.csrf,
            can_login: self.can_login(),
            admin: self.caller.may_admin(),
        };
        let mut resp = (status, html::page(title, &viewer, body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        self.secured(h);
        resp
    }

    fn secured(&self, h: &mut axum::http::HeaderMap) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.new_csrf {
            h.append(header::SET_COOKIE, session::set_cookie(&self.st, session::CSRF, &self.csrf, None));
        }
    }

    pub fn page(&self, page: Page) -> Response {
        match page {
            Ok((title, body)) => self.respond(StatusCode::OK, &title, &body),
            Err((status, message)) => self.respond(
                status,
                "Not here",
                &format!("<p class=\"notice error\">{}</p>", html::esc(&message)),
            ),
        }
    }

    /// A 303 to `to` (after a form), with extra cookies.
    pub fn see_other(&self, to: &str, cookies: &[HeaderValue]) -> Response {
        let mut resp = StatusCode::SEE_OTHER.into_response();
        let h = resp.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/ui/")));
        self.secured(h);
        for c in cookies {
            h.append(header::SET_COOKIE, c.clone());
        }
        resp
    }
}
