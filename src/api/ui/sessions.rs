//! The dashboard's sessions. The cookie holds a random session id (32 bytes from the
//! operating system), which the gateway keeps only as its SHA-256, together with the
//! session's tenant, the digest of the token it signed in with, its CSRF token and its
//! expiry. A session ends at sign-out, at its expiry (`auth.session_seconds`), and as soon
//! as its token is no longer one of the gateway's (removed from `auth.tokens_file`, or from
//! `auth.tokens` by a restart). Sessions live in this process's memory: a restart ends them
//! all. One tenant holds at most
//! [`PER_TENANT`] sessions; a sign-in past that ends the tenant's oldest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Sessions one tenant may hold at once.
const PER_TENANT: usize = 1_000;

/// A signed-in session as a request finds it.
pub struct Found {
    pub tenant: String,
    pub csrf: String,
}

struct Stored {
    tenant: String,
    /// The SHA-256 of the token the session signed in with.
    token: [u8; 32],
    csrf: String,
    /// When it started, in sign-in order.
    started: u64,
    expires: Instant,
}

pub struct Sessions {
    lasts: Duration,
    open: Mutex<HashMap<[u8; 32], Stored>>,
    started: AtomicU64,
}

/// 32 random bytes from the operating system, base64url: a session id or a CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Sessions {
    pub fn new(lasts: Duration) -> Sessions {
        Sessions {
            lasts,
            open: Mutex::default(),
            started: AtomicU64::new(0),
        }
    }

    pub fn lasts(&self) -> Duration {
        self.lasts
    }

    /// Starts a session for `tenant`, signed in with the token whose digest is `token`;
    /// the cookie's value.
    pub fn start(&self, tenant: &str, token: [u8; 32]) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap();
        open.retain(|_, s| s.expires > now);
        let mine: Vec<([u8; 32], u64)> = open
            .iter()
            .filter(|(_, s)| s.tenant == tenant)
            .map(|(k, s)| (*k, s.started))
            .collect();
        if mine.len() >= PER_TENANT {
            if let Some((oldest, _)) = mine.into_iter().min_by_key(|(_, started)| *started) {
                open.remove(&oldest);
            }
        }
        open.insert(
            digest(id.as_bytes()),
            Stored {
                tenant: tenant.to_string(),
                token,
                csrf: random_token(),
                started: self.started.fetch_add(1, Ordering::Relaxed),
                expires: now + self.lasts,
            },
        );
        id
    }

    /// The live session whose cookie holds `id`, if its token still maps to its tenant
    /// (`still_valid`); a session found expired or orphaned is ended.
    pub fn find(&self, id: &str, still_valid: impl Fn(&[u8; 32], &str) -> bool) -> Option<Found> {
        let key = digest(id.as_bytes());
        let mut open = self.open.lock().unwrap();
        let s = open.get(&key)?;
        if s.expires <= Instant::now() || !still_valid(&s.token, &s.tenant) {
            open.remove(&key);
            return None;
        }
        Some(Found {
            tenant: s.tenant.clone(),
            csrf: s.csrf.clone(),
        })
    }

    /// Ends the session whose cookie holds `id`.
    pub fn end(&self, id: &str) {
        self.open.lock().unwrap().remove(&digest(id.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_its_token_goes_and_is_kept_only_hashed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let token = digest(b"a-token");
        let id = sessions.start("a", token);
        assert!(!sessions.open.lock().unwrap().contains_key(id.as_bytes()));
        assert!(sessions
            .find(&id, |t, tenant| *t == token && tenant == "a")
            .is_some());
        assert!(sessions.find("another id", |_, _| true).is_none());
        // The token was removed from the configuration.
        assert!(sessions.find(&id, |_, _| false).is_none());
        assert!(sessions.find(&id, |_, _| true).is_none(), "ended for good");
    }

    #[test]
    fn a_tenant_past_its_sessions_loses_its_oldest() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.start("a", [0; 32]);
        for _ in 1..PER_TENANT {
            sessions.start("a", [0; 32]);
        }
        let other = sessions.start("b", [0; 32]);
        assert!(sessions.find(&first, |_, _| true).is_some());
        sessions.start("a", [0; 32]);
        assert!(sessions.find(&first, |_, _| true).is_none());
        assert!(sessions.find(&other, |_, _| true).is_some());
    }
}
