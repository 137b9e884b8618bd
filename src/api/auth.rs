//! Bearer tokens mapped to tenants. Only each token's SHA-256 is kept in memory; a
//! presented token is hashed and compared with every accepted digest in constant time, so
//! timing reveals neither a token nor which one matched. The set can be replaced while the
//! gateway runs (`tokens_file`), and a dashboard session lasts only while the token it
//! signed in with is in it. A refusal is counted against the client's address and logged
//! (`failures`); a request that authenticates marks its connection as trusted
//! (`http::conns`).

use std::sync::RwLock;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use subtle::ConstantTimeEq;

use super::ui::sessions::digest;
use super::{error::ApiError, AppState};
use crate::config::TokenConfig;
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

/// One accepted token: its SHA-256 (the token itself is not kept; a dashboard session
/// keeps the same digest of the token it signed in with), its tenant, and whether it is
/// an admin's.
#[derive(Clone, PartialEq)]
struct Known {
    digest: [u8; 32],
    tenant: String,
    admin: bool,
}

/// The accepted tokens, which `auth.tokens_file` may replace while the gateway runs; each
/// replacement is told to the requests that hold on ([`Tokens::revoked`]).
pub struct Tokens {
    known: RwLock<Vec<Known>>,
    replaced: tokio::sync::watch::Sender<()>,
}

/// The token a request presented (its digest) and its tenant, kept in the request's
/// extensions for the requests that hold on (long-polls, log followers): they end once it
/// is no longer accepted.
#[derive(Clone)]
pub struct Presented {
    digest: [u8; 32],
    tenant: String,
}

fn hashed(tokens: &[TokenConfig]) -> Vec<Known> {
    tokens
        .iter()
        .map(|t| Known {
            digest: digest(t.token.as_bytes()),
            tenant: t.tenant.clone(),
            admin: t.admin,
        })
        .collect()
}

impl Tokens {
    pub fn new(tokens: &[TokenConfig]) -> Self {
        Tokens {
            known: RwLock::new(hashed(tokens)),
            replaced: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Accepts `tokens` from now on, and no other: a request or a dashboard session with
    /// a token left out is refused from its next request on. How many tokens (or tenants
    /// or admin flags of a token) were added and removed.
    pub fn replace(&self, tokens: &[TokenConfig]) -> (usize, usize) {
        let new = hashed(tokens);
        let old = std::mem::replace(&mut *self.known.write().unwrap(), new.clone());
        let added = new.iter().filter(|t| !old.contains(t)).count();
        let removed = old.iter().filter(|t| !new.contains(t)).count();
        self.replaced.send_replace(());
        (added, removed)
    }

    /// Resolves once the token `presented` is no longer accepted for its tenant; never for
    /// a request that presented none (TES's anonymous tenant).
    pub async fn revoked(&self, presented: Option<&Presented>) {
        let Some(p) = presented else {
            return std::future::pending().await;
        };
        // Subscribed before the check, so that no replacement between the two is missed.
        let mut replaced = self.replaced.subscribe();
        while self.still_maps(&p.digest, &p.tenant) {
            if replaced.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The accepted token presented, if it is one: every digest is compared, each in
    /// constant time.
    fn find(&self, presented: &[u8]) -> Option<Known> {
        let presented = digest(presented);
        let mut found = None;
        for known in self.known.read().unwrap().iter() {
            if bool::from(known.digest.ct_eq(&presented)) {
                found = Some(known.clone());
            }
        }
        found
    }

    /// The tenant of the presented token, if it is accepted.
    pub(super) fn tenant(&self, presented: &[u8]) -> Option<String> {
        self.find(presented).map(|k| k.tenant)
    }

    /// Whether the token with this digest is still accepted, for this tenant.
    pub(super) fn still_maps(&self, token: &[u8; 32], tenant: &str) -> bool {
        self.known
            .read()
            .unwrap()
            .iter()
            .any(|k| bool::from(k.digest.ct_eq(token)) && k.tenant == tenant)
    }
}

/// 401, with the scheme to authenticate with.
fn unauthorized(detail: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
    r
}

/// The answer to a request whose token was removed while it held on.
pub(super) fn revoked() -> axum::response::Response {
    unauthorized("the token is no longer accepted")
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
            unauthorized(detail)
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
                parts.extensions.insert(Presented {
                    digest: known.digest,
                    tenant: known.tenant.clone(),
                });
                Ok(Caller {
                    tenant: Tenant(known.tenant),
                    admin: known.admin,
                })
            }
            None => Err(unauthorized("unknown token")),
        }
    }
}
