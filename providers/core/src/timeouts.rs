//! How long one HTTP request of a cloud provider may take, so that no call hangs on a
//! connection that never answers. The engine gives each provider call a deadline of its
//! own (`call_timeout_seconds`); these bound each request inside a call, so that a hung
//! request fails as itself (and one that is safe to resend is resent) before that
//! deadline, and calls made outside the engine (a health check, `offload config check`)
//! end too. One place for the defaults of every provider's `connect_timeout_seconds` and
//! `request_timeout_seconds`.

use std::time::Duration;

/// The default of `connect_timeout_seconds`: a connection not made in this long will not be.
pub fn connect_seconds() -> u64 {
    5
}

/// The default of `request_timeout_seconds`: ARM, Log Analytics and Google's APIs answer
/// in well under this (long operations answer at once and go on in the background).
pub fn request_seconds() -> u64 {
    20
}

/// A provider's request timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// How long connecting may take.
    pub connect: Duration,
    /// How long a request may take, connecting included, until its answer is read.
    pub request: Duration,
}

impl Timeouts {
    /// From the settings, which must be at least a second each.
    pub fn from_seconds(connect: u64, request: u64) -> Result<Timeouts, String> {
        if connect == 0 || request == 0 {
            return Err(
                "connect_timeout_seconds and request_timeout_seconds must be at least 1".into(),
            );
        }
        Ok(Timeouts {
            connect: Duration::from_secs(connect),
            request: Duration::from_secs(request),
        })
    }
}
