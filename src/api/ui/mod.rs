//! The dashboard at `/ui`, and the API reference at `/docs` (`reference`): server-rendered
//! pages (maud) over the same store and engine as the API, with htmx (vendored in `assets/`) re-fetching the live parts. No separate
//! server, and nothing but `cargo build` to build it.
//!
//! Sign-in takes a gateway token, checked against the form's CSRF token (a random value
//! the sign-in page sets both in a SameSite=Strict cookie and in the form, so that no other
//! site can sign a browser in), and starts a session (`sessions`): the HttpOnly,
//! SameSite=Strict cookie holds a random session id, never the token (Secure when the
//! request came over TLS, as a proxy's `X-Forwarded-Proto: https` says). Every page acts for
//! the session's tenant, as the API does for a bearer token. A form that changes state
//! carries the session's CSRF token, besides the cookie's SameSite. Every answer carries a
//! Content-Security-Policy with scripts and styles from the gateway only: no inline script
//! or style anywhere.

mod pages;
mod reference;
pub mod sessions;

use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::http::Client;

const COOKIE: &str = "offload_session";
/// The sign-in form's CSRF cookie.
const SIGNIN_COOKIE: &str = "offload_signin";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub const HTMX: &str = "/ui/assets/htmx-2.0.11.min.js";
pub const CSS: &str = "/ui/assets/app.css";
pub const ICON: &str = "/ui/assets/favicon.svg";

/// A signed-in browser: the tenant its session acts for, and the CSRF token its forms carry.
pub struct Session {
    pub tenant: String,
    pub csrf: String,
    /// The session id, as its cookie holds it.
    id: String,
}

/// The value of the cookie `name`, among all the request's cookies.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let found = cookie(&parts.headers, COOKIE).and_then(|id| {
            let session = state
                .sessions
                .find(id, |token, tenant| state.tokens.still_maps(token, tenant))?;
            Some((id.to_string(), session))
        });
        match found {
            Some((id, found)) => {
                if let Some(client) = parts.extensions.get::<Client>() {
                    client.trust();
                }
                Ok(Session {
                    tenant: found.tenant,
                    csrf: found.csrf,
                    id,
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

/// Whether the request came over TLS, as a proxy in front says.
fn secure(headers: &HeaderMap) -> &'static str {
    match headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
    {
        true => "; Secure",
        false => "",
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
        .route("/ui/", get(|| async { Redirect::to("/ui/jobs") }))
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
        .route("/docs", get(reference::v1))
        .route("/docs/tes", get(reference::tes))
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

/// The sign-in form, with a fresh CSRF token in it and in its cookie.
fn signin_form(status: StatusCode, headers: &HeaderMap, error: Option<&str>) -> Response {
    let csrf = sessions::random_token();
    let cookie = format!(
        "{SIGNIN_COOKIE}={csrf}; Path=/ui/signin; HttpOnly; SameSite=Strict{}",
        secure(headers)
    );
    let mut response = (status, pages::signin(&csrf, error)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("base64url is a valid header"),
    );
    response
}

async fn signin_page(headers: HeaderMap) -> Response {
    signin_form(StatusCode::OK, &headers, None)
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn signin(
    State(state): State<AppState>,
    client: Option<axum::Extension<Client>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return forbidden();
    }
    let client = client.map_or_else(Client::unknown, |c| c.0);
    let Some(tenant) = state.tokens.tenant(form.token.as_bytes()) else {
        if let Some(wait) = state
            .failures
            .failed(&client, "/ui/signin", "unknown token")
        {
            let mut r = signin_form(
                StatusCode::TOO_MANY_REQUESTS,
                &headers,
                Some("Too many failed sign-ins from this address; try again later."),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, (wait.as_secs() + 1).into());
            return r;
        }
        // Answered 200 with the form again: the page, not the request, failed (a 401
        // would show as a console error of the page).
        return signin_form(
            StatusCode::OK,
            &headers,
            Some("That token is not one of this gateway's."),
        );
    };
    client.trust();
    let id = state
        .sessions
        .start(&tenant, sessions::digest(form.token.as_bytes()));
    let session = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.sessions.lasts().as_secs(),
        secure(&headers)
    );
    let mut response = Redirect::to("/ui/jobs").into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&session).expect("base64url is a valid header"),
    );
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_static("offload_signin=; Path=/ui/signin; HttpOnly; SameSite=Strict; Max-Age=0"),
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

async fn signout(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<Csrf>,
) -> Response {
    if !session.checks(&form.csrf) {
        return forbidden();
    }
    state.sessions.end(&session.id);
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
    fn a_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; offload_session=abc; c=d"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("offload_signin=xyz"));
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, SIGNIN_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
