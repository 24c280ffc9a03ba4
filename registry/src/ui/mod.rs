//! The web UI at `/ui/` (on unless `ui.enabled: false`): server-rendered pages over the same
//! registry, users, robots and rules as the API, showing only what the viewer may pull. No
//! script, no external asset: the Content-Security-Policy allows the pages' own stylesheet and
//! nothing else, so it works air-gapped. Light and dark follow the system's preference.

mod html;
mod manifest;
pub mod operate;
pub mod pages;
pub mod session;
mod tags;
mod view;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;
use crate::auth::Identity;
use crate::meta::Precondition;
use crate::service::ServiceError;
pub use view::Ui;

const CSS: &str = include_str!("berth.css");
const FAVICON: &str = include_str!("favicon.svg");
/// Largest form body read.
const MAX_FORM: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { axum::response::Redirect::permanent("/ui/") }))
        .route("/ui/", get(repositories))
        .route("/ui/repository", get(repository))
        .route("/ui/manifest", get(manifest))
        .route("/ui/delete", get(delete_preview).post(delete))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/operate", get(operate))
        .route("/ui/operate/gc", get(gc_run).post(start_gc))
        .route("/ui/assets/berth.css", get(|| asset("text/css; charset=utf-8", CSS)))
        .route("/ui/assets/favicon.svg", get(|| asset("image/svg+xml", FAVICON)))
}

/// A query's or form's parameters.
type Form = std::collections::HashMap<String, String>;

fn params(text: &str) -> Form {
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn query(parts: &Parts) -> Form {
    params(parts.uri.query().unwrap_or(""))
}

async fn form(body: Body) -> Option<Form> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    Some(params(std::str::from_utf8(&bytes).ok()?))
}

async fn repositories(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    let q = query(&parts);
    let page = pages::repositories(&ui, q.get("q").map_or("", String::as_str), q.get("last").cloned()).await;
    ui.page(page)
}

async fn repository(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    let q = query(&parts);
    let name = q.get("name").map(String::as_str);
    let order = tags::Order::parse(q.get("order").map(String::as_str));
    let from = q.get("from").and_then(|f| f.parse().ok()).unwrap_or(0);
    let page = pages::repository(&ui, name, order, from, q.get("deleted").map(String::as_str)).await;
    ui.page(page)
}

async fn manifest(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    let q = query(&parts);
    ui.page(
        manifest::manifest(&ui, q.get("name").map(String::as_str), q.get("ref").map(String::as_str)).await,
    )
}

async fn delete_preview(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    let q = query(&parts);
    ui.page(
        pages::delete_preview(&ui, q.get("name").map(String::as_str), q.get("ref").map(String::as_str)).await,
    )
}

fn refused(ui: &Ui) -> Response {
    ui.respond(
        StatusCode::FORBIDDEN,
        "Refused",
        "<p class=\"notice error\">This form was not sent from this registry's own page (or it is too old): \
         go back, reload, and try again.</p>",
    )
}

/// A form POST from this site's own page: the viewer, the request, the form's fields.
async fn posted(st: AppState, req: Request) -> Result<(Ui, Parts, Form), Response> {
    let (parts, body) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    match form(body).await {
        Some(f) if session::form_allowed(&parts, f.get("csrf").map(String::as_str)) => Ok((ui, parts, f)),
        _ => Err(refused(&ui)),
    }
}

async fn delete(State(st): State<AppState>, req: Request) -> Response {
    let (ui, parts, f) = match posted(st, req).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    let (repo, reference) =
        match pages::deletable(&ui, f.get("name").map(String::as_str), f.get("ref").map(String::as_str)) {
            Ok(x) => x,
            Err(e) => return ui.page(Err(e)),
        };
    let origin = ui.st.origin(&parts, &ui.caller);
    // Only what the preview showed (a form without `seen` deletes whatever the reference names).
    let seen = f.get("seen").and_then(|d| d.parse::<berth_core::oci::Digest>().ok());
    let expect = seen.map(Precondition::naming).unwrap_or_default();
    match ui.st.registry.delete_manifest(&repo, &reference, &expect, &origin).await {
        Ok(()) => {
            let to = format!(
                "/ui/repository?name={}&deleted={}",
                html::q(repo.as_str()),
                html::q(&reference.to_string())
            );
            ui.see_other(&to, &[])
        }
        Err(ServiceError::PreconditionFailed { current }) => ui.page(Err((
            StatusCode::CONFLICT,
            match current {
                Some(d) => format!(
                    "{reference} now names {d}, not the manifest the preview showed: nothing was deleted. \
                     Look again before deleting."
                ),
                None => format!("{reference} is not in {} (any more).", repo.as_str()),
            },
        ))),
        Err(ServiceError::ManifestUnknown) => ui.page(Err((
            StatusCode::NOT_FOUND,
            format!("{reference} is not in {} (any more).", repo.as_str()),
        ))),
        Err(e) => ui.page(Err((StatusCode::SERVICE_UNAVAILABLE, format!("The delete failed: {e}")))),
    }
}

async fn operate(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    ui.page(operate::overview(&ui, query(&parts).get("last").cloned()).await)
}

async fn gc_run(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    ui.page(operate::run(&ui, query(&parts).get("id").map(String::as_str)).await)
}

async fn start_gc(State(st): State<AppState>, req: Request) -> Response {
    let (ui, parts, _) = match posted(st, req).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    match operate::start_dry_run(&ui, &parts).await {
        Ok(id) => ui.see_other(&format!("/ui/operate/gc?id={}", html::q(&id)), &[]),
        Err(e) => ui.page(Err(e)),
    }
}

fn login_page(ui: &Ui, status: StatusCode, problem: Option<&str>) -> Response {
    if !ui.can_login() {
        let why = if ui.st.auth.is_none() {
            "This registry has no access control: there is nobody to log in as."
        } else {
            "Logging in needs the token service (auth.token), which this registry has turned off."
        };
        return ui.respond(StatusCode::NOT_FOUND, "Log in", &format!("<p class=\"notice\">{why}</p>"));
    }
    let mut body = String::from("<h1>Log in</h1>");
    if let Some(p) = problem {
        body.push_str(&format!("<p class=\"notice error\">{}</p>", html::esc(p)));
    }
    body.push_str(&format!(
        "<form class=\"login\" method=\"post\" action=\"/ui/login\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"user\">User or robot</label><input id=\"user\" name=\"user\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required><button id=\"login\">Log in</button></form>",
        html::esc(&ui.csrf)
    ));
    ui.respond(status, "Log in", &body)
}

async fn login_form(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ui = Ui::of(st, &parts).await;
    login_page(&ui, StatusCode::OK, None)
}

async fn login(State(st): State<AppState>, req: Request) -> Response {
    let (ui, parts, f) = match posted(st, req).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    let Some(auth) = ui.st.auth.clone() else { return login_page(&ui, StatusCode::BAD_REQUEST, None) };
    let user = f.get("user").map_or("", String::as_str);
    let password = f.get("password").map_or("", String::as_str);
    let identity = match auth.login(user, password, ui.st.client(&parts)).await {
        Ok(Identity::Anonymous) | Err(_) if user.is_empty() => {
            return login_page(&ui, StatusCode::UNAUTHORIZED, Some("Give a user name and password."))
        }
        Ok(i) => i,
        Err(e) => return login_page(&ui, StatusCode::UNAUTHORIZED, Some(&e.to_string())),
    };
    start_session(&ui, &auth, &identity)
}

/// The end of every way of logging in: a session for `identity`, and on to the repositories.
/// (A password form is the one way today; an OIDC callback would end here too.)
fn start_session(ui: &Ui, auth: &crate::auth::Authenticator, identity: &Identity) -> Response {
    let life = ui.st.ui_session;
    let Some(token) = auth.signer().and_then(|s| s.issue_session(identity.name(), life).ok()) else {
        return login_page(
            ui,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("No session could be signed; try again."),
        );
    };
    let cookie = session::set_cookie(&ui.st, session::SESSION, &token, Some(life.as_secs()));
    ui.see_other("/ui/", &[cookie])
}

async fn logout(State(st): State<AppState>, req: Request) -> Response {
    let (ui, _, _) = match posted(st, req).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    ui.see_other("/ui/", &[session::set_cookie(&ui.st, session::SESSION, "", Some(0))])
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
