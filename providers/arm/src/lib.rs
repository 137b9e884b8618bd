//! What offload's Azure providers share about Azure Resource Manager, so that ACI and
//! Container Apps say it once: how they reach it (a bearer token, timeouts, what is sent
//! again and what once: `client`), how they stay inside the subscription's read budget
//! (which every provider on the subscription spends, and every replica), and what an ARM
//! error means to the engine.
//!
//! The generated `azure_mgmt_*` clients differ per service; what they send and answer is
//! `azure_core`'s, and that is all this crate touches.

mod client;
#[cfg(feature = "fake")]
pub mod fake;

pub use client::{exists, refused, Azure, Sending};

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use offload_provider::budget::Budget;
use offload_provider::{ProviderError, Result};
use serde::Deserialize;
use serde_json::Value;

/// Azure Resource Manager in Azure's public cloud.
pub const ENDPOINT: &str = "https://management.azure.com";
/// ARM's read budget per subscription and region: a bucket of 250, refilled at 25 a second
/// (Microsoft Learn, "Understand how Azure Resource Manager throttles requests").
pub const READS_PER_SECOND: u32 = 25;
pub const READ_BURST: u32 = 250;

/// Below this many remaining reads (ARM's `x-ms-ratelimit-remaining-subscription-reads`),
/// reads pause for a second to let the bucket refill.
const LOW_READS: i64 = 50;

pub use offload_provider::SecretString;

/// A container registry the operator lets jobs pull from, as both Azure providers take
/// it: a password (kept as the service's secret), or a managed identity.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The registry's host name (`myregistry.azurecr.io`).
    pub server: String,
    /// The user name to pull with, with `password`.
    pub username: Option<String>,
    /// The password to pull with, with `username`; kept as the service's secret, never
    /// shown.
    pub password: Option<SecretString>,
    /// A managed identity (resource id; `system` on Container Apps) that may pull from it.
    pub identity: Option<String>,
}

pub use offload_provider::options_refusal;

/// A bearer token given in the configuration.
#[derive(Debug)]
pub(crate) struct FixedToken(pub(crate) SecretString);

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(&self, _scopes: &[&str]) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new(self.0 .0.clone()),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

/// The retry policy of requests sent again: a few exponential retries, which wait out a
/// 429's Retry-After before they give up.
fn retry() -> azure_core::RetryOptions {
    azure_core::RetryOptions::exponential(
        azure_core::ExponentialRetryOptions::default().max_retries(3u32),
    )
}

/// This replica's share of the subscription's ARM reads, kept also below what ARM says is
/// left of its bucket.
pub struct Reads {
    budget: Budget,
    remaining: AtomicI64,
}

impl Reads {
    pub fn new(per_second: u32, burst: u32) -> Reads {
        Reads {
            budget: Budget::per_second(per_second, burst),
            remaining: AtomicI64::new(i64::MAX),
        }
    }

    pub fn set_replicas(&self, live: usize) {
        self.budget.set_replicas(live);
    }

    /// Waits for this replica's turn to read.
    pub async fn turn(&self) {
        self.budget.ready().await;
        if self.remaining.load(Ordering::Relaxed) < LOW_READS {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Notes what ARM says is left of the subscription's reads.
    pub fn note(&self, response: &azure_core::Response) {
        let remaining = response
            .headers()
            .get_optional_str(&azure_core::headers::HeaderName::from_static(
                "x-ms-ratelimit-remaining-subscription-reads",
            ))
            .and_then(|v| v.parse().ok());
        if let Some(n) = remaining {
            self.remaining.store(n, Ordering::Relaxed);
        }
    }
}

/// What an ARM error means to the engine. `capacity` lists the service's error codes that
/// mean "not now or not here" rather than "wrong request".
pub fn classify(op: &str, err: azure_core::Error, capacity: &[&str]) -> ProviderError {
    let Some(http) = err.as_http_error() else {
        return ProviderError::Transient(format!("{op}: {err}"));
    };
    let status = u16::from(http.status());
    let code = http.error_code().unwrap_or_default().to_string();
    let text = format!(
        "{op}: {status} {code}: {}",
        http.error_message().unwrap_or_default()
    );
    match status {
        429 => ProviderError::Throttled {
            retry_after: Duration::from_secs(10),
        },
        _ if capacity.contains(&code.as_str()) => ProviderError::Capacity(text),
        401 | 403 => ProviderError::Config(text),
        404 => ProviderError::NotFound(text),
        400 | 409 | 422 => ProviderError::InvalidSpec(text),
        _ => ProviderError::Transient(text),
    }
}

/// A response's body as JSON.
pub async fn json(op: &str, response: azure_core::Response) -> Result<Value> {
    let text = response
        .into_body()
        .collect_string()
        .await
        .map_err(|e| ProviderError::Transient(format!("{op}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| ProviderError::Transient(format!("{op}: {e}")))
}

/// A read of something that is not there: `None`, not an error.
pub fn not_found_is_none<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(ProviderError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every page of a list, each read under `reads`, its items as ARM's JSON; `None` when
/// the listed parent is gone (a 404). `items` takes a page's items out of its model.
pub async fn pages<P, T>(
    op: &str,
    reads: &Reads,
    mut stream: azure_core::Pageable<P, azure_core::Error>,
    items: impl Fn(P) -> Vec<T>,
    classify: impl Fn(&str, azure_core::Error) -> ProviderError,
) -> Result<Option<Vec<Value>>>
where
    P: azure_core::Continuable + serde::de::DeserializeOwned + Send + 'static,
    T: serde::Serialize,
{
    use futures::StreamExt;
    let mut all = vec![];
    loop {
        reads.turn().await;
        let Some(page) = stream.next().await else {
            return Ok(Some(all));
        };
        let Some(page) = not_found_is_none(page.map_err(|e| classify(op, e)))? else {
            return Ok(None);
        };
        for item in items(page) {
            all.push(
                serde_json::to_value(item)
                    .map_err(|e| ProviderError::Transient(format!("{op}: {e}")))?,
            );
        }
    }
}

/// A stop or delete of something already gone is no error.
pub fn gone_is_fine(result: Result<()>) -> Result<()> {
    match result {
        Err(ProviderError::NotFound(_)) => Ok(()),
        other => other,
    }
}

/// Removes the `null`s of a request body written with `json!`, which ARM would take as
/// values.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_token_does_not_show() {
        let token: SecretString = serde_json::from_value(serde_json::json!("token-value")).unwrap();
        assert_eq!(format!("{token:?}"), "<redacted>");
        assert!(!format!("{:?}", FixedToken(token)).contains("token-value"));
    }
}
