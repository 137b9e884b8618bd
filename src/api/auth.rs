//! Bearer tokens mapped to tenants. Tokens are compared in constant time, and every
//! configured token is compared, so timing reveals neither a token nor which one matched.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AppState};

/// The tenant a request acts for.
pub struct Tenant(pub String);

/// The accepted tokens, each with its tenant.
pub struct Tokens(Vec<(Vec<u8>, String)>);

impl Tokens {
    pub fn new(tokens: Vec<(String, String)>) -> Self {
        Tokens(
            tokens
                .into_iter()
                .map(|(t, tenant)| (t.into_bytes(), tenant))
                .collect(),
        )
    }

    pub(super) fn tenant(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (token, tenant) in &self.0 {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let unauthorized = |detail: &str| {
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
                if let Some(client) = parts.extensions.get::<crate::http::Client>() {
                    client.trust();
                }
                Ok(Tenant(tenant.to_string()))
            }
            None => Err(unauthorized("unknown token")),
        }
    }
}
