//! The dashboard at `/ui`: server-rendered pages (maud) over the same store and engine as
//! the API, with htmx (vendored in `assets/`) re-fetching the live parts. No separate
//! server, and nothing but `cargo build` to build it.
//!
//! Sign-in takes a gateway token and keeps it in an HttpOnly, SameSite=Strict cookie
//! (Secure when the request came over TLS, as a proxy's `X-Forwarded-Proto: https` says);
//! every page acts for that token's tenant, as the API does for a bearer token. A form
//! that changes state carries a CSRF token derived from the session, besides the cookie's
//! SameSite. Every answer carries a Content-Security-Policy with scripts and styles from
//! the gateway only: no inline script or style anywhere.

mod pages;

use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;

const COOKIE: &str = "offload_session";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub const HTMX: &str = "/ui/assets/htmx-2.0.11.min.js";
pub const CSS: &str = "/ui/assets/app.css";
pub const ICON: &str = "/ui/assets/favicon.svg";

/// A signed-in browser: the tenant its token maps to, and the CSRF token its forms carry.
pub struct Session {
    pub tenant: String,
    pub csrf: String,
}

fn csrf_of(token: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"offload-ui-csrf\0")
        .chain_update(token)
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn session_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(value)
                .ok()
        })
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let token = session_token(&parts.headers);
        match token
            .as_deref()
            .and_then(|t| state.tokens.tenant(t).map(|tenant| (t, tenant)))
        {
            Some((token, tenant)) => {
                if let Some(client) = parts.extensions.get::<crate::http::Client>() {
                    client.trust();
                }
                Ok(Session {
                tenant: tenant.to_string(),
                csrf: csrf_of(token),
            })
            }
            None => Err(Redirect::to("/ui/signin").into_response()),
        }
    }
}

impl Session {
    /// Whether a form's `csrf` field is this session's.
    fn checks(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Security headers on every dashboard answer.
async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/signin", get(signin_page).post(signin))
        .route("/ui/signout", axum::routing::post(signout))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/rows", get(pages::job_rows))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/live", get(pages::job_live))
        .route(
            "/ui/jobs/{id}/cancel",
            get(pages::confirm_cancel).post(cancel),
        )
        .route("/ui/providers", get(pages::providers))
        .route("/ui/costs", get(pages::costs))
        .route(
            HTMX,
            get(|| {
                asset(
                    "text/javascript",
                    include_bytes!("assets/htmx-2.0.11.min.js"),
                )
            }),
        )
        .route(
            CSS,
            get(|| asset("text/css", include_bytes!("assets/app.css"))),
        )
        .route(
            ICON,
            get(|| asset("image/svg+xml", include_bytes!("assets/favicon.svg"))),
        )
        .layer(axum::middleware::map_response(headers))
}

async fn asset(kind: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        bytes,
    )
        .into_response()
}

async fn signin_page() -> Response {
    pages::signin(None).into_response()
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn signin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if state.tokens.tenant(form.token.as_bytes()).is_none() {
        // Answered 200 with the form again: the page, not the request, failed (a 401
        // would show as a console error of the page).
        return pages::signin(Some("That token is not one of this gateway's.")).into_response();
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(form.token.as_bytes());
    let cookie = format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/ui/jobs").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("base64 is a valid header"),
    );
    response
}

#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    csrf: String,
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        pages::message(
            "Forbidden",
            "This form was not sent by this dashboard (its CSRF token is missing or wrong).",
        ),
    )
        .into_response()
}

async fn signout(session: Session, Form(form): Form<Csrf>) -> Response {
    if !session.checks(&form.csrf) {
        return forbidden();
    }
    let mut response = Redirect::to("/ui/signin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "offload_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<Csrf>,
) -> Response {
    if !session.checks(&form.csrf) {
        return forbidden();
    }
    let Ok(id) = super::jobs::parse_id(&id) else {
        return pages::not_found();
    };
    match state.engine.cancel(&session.tenant, id).await {
        Ok(crate::engine::CancelOutcome::NotFound) => pages::not_found(),
        Ok(_) => Redirect::to(&format!("/ui/jobs/{id}")).into_response(),
        Err(e) => pages::failure(&e.to_string()),
    }
}

/// The query of the jobs page, kept in its links and its live part.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
pub struct JobFilters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dag_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub q: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cursor: String,
}

pub type Filters = Query<JobFilters>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others_and_the_csrf_token_is_the_sessions() {
        let mut headers = HeaderMap::new();
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"tok;en");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={value}; c=d")).unwrap(),
        );
        assert_eq!(session_token(&headers).as_deref(), Some(&b"tok;en"[..]));
        assert_ne!(csrf_of(b"one"), csrf_of(b"two"));
        assert_eq!(csrf_of(b"one").len(), 64);
    }
}
