//! Bearer tokens mapped to tenants. Tokens are compared in constant time, and every
//! configured token is compared, so timing reveals neither a token nor which one matched.
//! A refusal is counted against the client's address and logged (`failures`); a request
//! that authenticates marks its connection as trusted (`http::conns`).

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AppState};
use crate::http::Client;

/// The tenant a request acts for.
pub struct Tenant(pub String);

/// A request whose token is an admin's (`admin = true`): it may act on every tenant's
/// budgets. Any other token is refused with 403.
pub struct Admin(pub Tenant);

/// A request with any accepted token, and whether that token is an admin's.
pub struct Caller {
    pub tenant: Tenant,
    pub admin: bool,
}

/// One accepted token: its tenant, whether it is an admin's, and its SHA-256 (what a
/// dashboard session keeps of the token it signed in with).
struct Known {
    token: Vec<u8>,
    tenant: String,
    admin: bool,
    digest: [u8; 32],
}

/// The accepted tokens.
pub struct Tokens(Vec<Known>);

impl Tokens {
    pub fn new(tokens: Vec<crate::config::TokenConfig>) -> Self {
        Tokens(
            tokens
                .into_iter()
                .map(|t| Known {
                    digest: super::ui::sessions::digest(t.token.as_bytes()),
                    token: t.token.into_bytes(),
                    tenant: t.tenant,
                    admin: t.admin,
                })
                .collect(),
        )
    }

    fn find(&self, presented: &[u8]) -> Option<&Known> {
        let mut found = None;
        for known in &self.0 {
            if bool::from(known.token.as_slice().ct_eq(presented)) {
                found = Some(known);
            }
        }
        found
    }

    pub(super) fn tenant(&self, presented: &[u8]) -> Option<&str> {
        self.find(presented).map(|k| k.tenant.as_str())
    }

    /// Whether the token with this digest is still accepted, for this tenant.
    pub(super) fn still_maps(&self, digest: &[u8; 32], tenant: &str) -> bool {
        self.0
            .iter()
            .any(|k| bool::from(k.digest.ct_eq(digest)) && k.tenant == tenant)
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Caller::from_request_parts(parts, state).await.map(|c| c.tenant)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.admin {
            true => Ok(Admin(caller.tenant)),
            false => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this call needs an admin token (auth.tokens[].admin = true)",
            )
            .into_response()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let client = parts
            .extensions
            .get::<Client>()
            .cloned()
            .unwrap_or_else(Client::unknown);
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str())
            .to_string();
        let unauthorized = |detail: &str| {
            if let Some(wait) = state.failures.failed(&client, &route, detail) {
                return ApiError::too_many_failures(wait).into_response();
            }
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
            r
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("missing Authorization: Bearer token"));
        };
        let presented = value.as_bytes();
        let token = presented
            .strip_prefix(b"Bearer ")
            .or_else(|| presented.strip_prefix(b"bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        match state.tokens.find(token) {
            Some(known) => {
                client.trust();
                Ok(Caller {
                    tenant: Tenant(known.tenant.clone()),
                    admin: known.admin,
                })
            }
            None => Err(unauthorized("unknown token")),
        }
    }
}
