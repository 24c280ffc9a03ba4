//! Authentication and authorization at the HTTP edge, and the token endpoint (`/token`) of the
//! Docker token authentication spec, with the OAuth2 form docker and containerd use for
//! refresh ("offline") tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Code};
use super::state::AppState;
use crate::auth::{parse_scope, Actions, AuthError, Authenticator, Caller, Identity, Scope};
use berth_core::oci::route::Route;

/// What a request needs: actions on repositories. (`/v2/` and `_catalog` need only a caller.)
pub fn required(route: &Route, method: &Method) -> Vec<(String, Actions)> {
    let Some(repo) = route.repo() else { return vec![] };
    let read = *method == Method::GET || *method == Method::HEAD;
    let needed = match route {
        Route::Manifest(..) | Route::Blob(..) if *method == Method::DELETE => Actions::DELETE,
        Route::Manifest(..) if !read => Actions::PUSH,
        Route::UploadStart(_) | Route::Upload(..) => Actions::PUSH,
        _ => Actions::PULL,
    };
    // A mount's `from` needs no check here: a source the caller may not read is simply not
    // mounted from (the client gets an upload session), which the handler decides.
    vec![(repo.to_string(), needed)]
}

/// `a=b&c=d` pairs in order, repeated keys kept (token requests repeat `scope`).
fn pairs(query: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(query).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The token endpoint's URL as clients reach this server: the configured realm, else the
/// configured external URL, else the host the request was sent to. `X-Forwarded-Proto` and
/// `-Host` count only from a trusted proxy, and a `Host` that is not a plain host name or address
/// is not used: no request can point a challenge somewhere else.
fn realm(st: &AppState, auth: &Authenticator, req: &Parts) -> String {
    if let Some(r) = &auth.config().token.realm {
        return r.clone();
    }
    if let Some(url) = &st.external_url {
        return url.join("/token");
    }
    let host = st
        .forwarded(req, "x-forwarded-host")
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .filter(|h| berth_core::net::is_authority(h))
        .unwrap_or("localhost");
    let proto = match st.forwarded(req, "x-forwarded-proto") {
        Some("https") => "https",
        Some("http") => "http",
        _ if st.tls => "https",
        _ => "http",
    };
    format!("{proto}://{host}/token")
}

/// The refusal for a failed authentication.
fn refused(
    st: &AppState,
    auth: &Authenticator,
    req: &Parts,
    needed: &[(String, Actions)],
    e: &AuthError,
) -> Response {
    match e {
        AuthError::Unavailable => {
            ApiError::new(Code::ServiceUnavailable, "authentication is temporarily unavailable")
                .into_response()
        }
        AuthError::Throttled(wait) => throttled(*wait, &e.to_string()),
        e => challenge(st, auth, req, needed, false, &e.to_string()),
    }
}

/// 429 with `Retry-After`.
fn throttled(wait: std::time::Duration, message: &str) -> Response {
    let mut resp = ApiError::new(Code::TooManyRequests, message).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    resp
}

/// 401 with a challenge for `needed`.
fn challenge(
    st: &AppState,
    auth: &Authenticator,
    req: &Parts,
    needed: &[(String, Actions)],
    insufficient: bool,
    message: &str,
) -> Response {
    let scope = (!needed.is_empty()).then(|| {
        needed
            .iter()
            .map(|(repo, a)| format!("repository:{repo}:{}", a.names().join(",")))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let value = auth.challenge(&realm(st, auth, req), scope.as_deref(), insufficient);
    let mut resp = ApiError::new(Code::Unauthorized, message).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Who is calling, and whether they may do what the route needs; `Err` is the response to send.
pub async fn admit(st: &AppState, req: &Parts, route: &Route) -> Result<Caller, Response> {
    let Some(auth) = &st.auth else { return Ok(Caller::open()) };
    let header = req.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let needed = required(route, &req.method);
    let caller = match auth.caller(header, st.client(req)).await {
        Ok(c) => c,
        Err(e) => return Err(refused(st, auth, req, &needed, &e)),
    };
    // Clients learn the scheme from `/v2/`: anonymous callers get the challenge there (unless
    // Basic auth is all there is and anonymous callers may pull something).
    if matches!(route, Route::Base | Route::Catalog)
        && caller.identity == Identity::Anonymous
        && !caller.by_token()
    {
        let open_basic = auth.signer().is_none() && !auth.config().anonymous.is_empty();
        if !open_basic {
            return Err(challenge(st, auth, req, &[], false, "authentication required"));
        }
    }
    if let Some((repo, _)) = needed.iter().find(|(repo, a)| !caller.may(repo, *a)) {
        if caller.identity == Identity::Anonymous || caller.by_token() {
            let message = if caller.by_token() {
                format!("the token does not grant this access to {repo}")
            } else {
                "authentication required".to_owned()
            };
            return Err(challenge(st, auth, req, &needed, caller.by_token(), &message));
        }
        let wanted = needed.iter().flat_map(|(_, a)| a.names()).collect::<Vec<_>>().join(",");
        st.audit.denied(
            caller.identity.name(),
            &st.client(req).to_string(),
            repo,
            &format!("{} {wanted}", req.method),
        );
        return Err(ApiError::new(
            Code::Denied,
            format!("{} may not do this in {repo}", caller.identity.name()),
        )
        .into_response());
    }
    Ok(caller)
}

#[derive(serde::Serialize)]
struct TokenBody {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

fn token_error(status: StatusCode, code: Code, message: &str) -> Response {
    let mut resp = ApiError::new(code, message).into_response();
    *resp.status_mut() = status;
    resp
}

/// `GET /token` (Basic or anonymous) and `POST /token` (OAuth2 password or refresh_token grant).
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    let Some(auth) = st.auth.clone() else {
        return ApiError::new(Code::NotFound, "this registry does not issue tokens").into_response();
    };
    if auth.signer().is_none() {
        return ApiError::new(Code::NotFound, "the token service is disabled").into_response();
    }
    let (parts, body) = req.into_parts();
    let client = st.client(&parts);
    let post = parts.method == Method::POST;
    let fields = if post {
        match axum::body::to_bytes(body, 64 << 10).await {
            Ok(b) => pairs(&b),
            Err(_) => return token_error(StatusCode::BAD_REQUEST, Code::Unsupported, "form too large"),
        }
    } else if parts.method == Method::GET {
        pairs(parts.uri.query().unwrap_or("").as_bytes())
    } else {
        return token_error(StatusCode::METHOD_NOT_ALLOWED, Code::Unsupported, "use GET or POST");
    };
    let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    if let Some(service) = get("service") {
        if service != auth.config().token.service {
            return token_error(
                StatusCode::BAD_REQUEST,
                Code::Denied,
                "tokens are issued for another service",
            );
        }
    }
    let scopes: Vec<Scope> = fields
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(parse_scope).collect::<Vec<_>>())
        .collect();
    let unauthorized = |message: &str| {
        let mut resp = token_error(StatusCode::UNAUTHORIZED, Code::Unauthorized, message);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"berth\""));
        resp
    };
    let login_failed = |e: AuthError| match e {
        AuthError::Throttled(wait) => throttled(wait, &e.to_string()),
        AuthError::Unavailable => {
            token_error(StatusCode::SERVICE_UNAVAILABLE, Code::ServiceUnavailable, &e.to_string())
        }
        e => unauthorized(&e.to_string()),
    };
    let (identity, offline) = if post {
        match get("grant_type") {
            Some("password") => {
                match auth.login(get("username").unwrap_or(""), get("password").unwrap_or(""), client).await {
                    Ok(i) => (i, get("access_type") == Some("offline")),
                    Err(e) => return login_failed(e),
                }
            }
            Some("refresh_token") => match refreshed(&auth, get("refresh_token").unwrap_or("")) {
                Some(i) => (i, false),
                None => return unauthorized("the refresh token is invalid or expired"),
            },
            _ => {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    Code::Unsupported,
                    "grant_type must be password or refresh_token",
                )
            }
        }
    } else {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let basic = header.and_then(|h| h.split_once(' ')).filter(|(s, _)| s.eq_ignore_ascii_case("basic"));
        match basic.and_then(|(_, b)| crate::auth::decode_basic(b.trim())) {
            Some((user, password)) => match auth.login(&user, &password, client).await {
                Ok(i) => (i, get("offline_token") == Some("true")),
                Err(e) => return login_failed(e),
            },
            None if header.is_some() => return unauthorized("use Basic credentials to get a token"),
            None => (Identity::Anonymous, false),
        }
    };
    let granted: Vec<Scope> = scopes
        .iter()
        .map(|s| Scope {
            repository: s.repository.clone(),
            actions: s.actions.intersect(auth.grants(&identity, &s.repository)),
        })
        .collect();
    let Some(signer) = auth.signer() else { return unauthorized("the token service is disabled") };
    let issued = signer.issue(identity.name(), &granted);
    let refresh = if offline && identity != Identity::Anonymous {
        signer.issue_refresh(identity.name()).ok()
    } else if get("grant_type") == Some("refresh_token") {
        get("refresh_token").map(str::to_owned)
    } else {
        None
    };
    let Ok(token) = issued else {
        return ApiError::new(Code::Unknown, "could not sign a token").into_response();
    };
    let body = TokenBody {
        access_token: token.clone(),
        token,
        expires_in: signer.lifetime().as_secs(),
        issued_at: jiff::Timestamp::now().to_string(),
        refresh_token: refresh,
        token_type: post.then_some("Bearer"),
        scope: post.then(|| {
            granted
                .iter()
                .map(|s| format!("repository:{}:{}", s.repository, s.actions.names().join(",")))
                .collect::<Vec<_>>()
                .join(" ")
        }),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(Body::from(json));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The identity a refresh token stands for, if it is valid and they still are.
fn refreshed(auth: &Arc<Authenticator>, token: &str) -> Option<Identity> {
    let claims = auth.signer()?.verify(token).ok().filter(|c| c.refresh && !c.sub.is_empty())?;
    let identity = auth.identity_named(&claims.sub);
    auth.still_valid(&identity).then_some(identity)
}
