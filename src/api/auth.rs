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

/// The accepted tokens, each with its tenant and the token's SHA-256 (what a dashboard
/// session keeps of the token it signed in with).
pub struct Tokens(Vec<(Vec<u8>, String, [u8; 32])>);

impl Tokens {
    pub fn new(tokens: Vec<(String, String)>) -> Self {
        Tokens(
            tokens
                .into_iter()
                .map(|(t, tenant)| {
                    let digest = super::ui::sessions::digest(t.as_bytes());
                    (t.into_bytes(), tenant, digest)
                })
                .collect(),
        )
    }

    pub(super) fn tenant(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (token, tenant, _) in &self.0 {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(tenant.as_str());
            }
        }
        found
    }

    /// Whether the token with this digest is still accepted, for this tenant.
    pub(super) fn still_maps(&self, digest: &[u8; 32], tenant: &str) -> bool {
        self.0
            .iter()
            .any(|(_, t, d)| bool::from(d.ct_eq(digest)) && t == tenant)
    }
}

impl FromRequestParts<AppState> for Tenant {
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
        match state.tokens.tenant(token) {
            Some(tenant) => {
                client.trust();
                Ok(Tenant(tenant.to_string()))
            }
            None => Err(unauthorized("unknown token")),
        }
    }
}
