//! Azure Resource Manager calls through `azure_mgmt_containerinstance`, each under its
//! budget. The crate's long-running-operation helpers poll until a 200 and fail on a 204,
//! so every call is `.send()` and its status is read here. The SDK's own retry policy
//! waits out a 429's Retry-After before it gives up; what still fails is throttling.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use azure_mgmt_containerinstance::package_preview_2024_10::models::ContainerGroup;
use azure_mgmt_containerinstance::package_preview_2024_10::Client;
use futures::StreamExt;
use governor::Quota;
use offload_provider::budget::Budget;
use offload_provider::{ProviderError, Result};
use serde_json::Value;

use crate::config::Config;
use crate::group::CONTAINER;

/// Below this many remaining reads (ARM's `x-ms-ratelimit-remaining-subscription-reads`),
/// reads pause for a second to let the bucket refill.
const LOW_READS: i64 = 50;

/// A bearer token given in the configuration.
#[derive(Debug)]
struct FixedToken(String);

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(&self, _scopes: &[&str]) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new(self.0.clone()),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

pub struct Arm {
    client: Client,
    subscription: String,
    group: String,
    /// ARM's reads and creates per subscription, shared among the replicas.
    reads: Budget,
    creates: Budget,
    remaining_reads: AtomicI64,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("checked in Config::check")
}

/// ARM error codes that mean "not now or not here" rather than "wrong request".
const CAPACITY_CODES: [&str; 6] = [
    "ServiceUnavailable",
    "ContainerGroupQuotaReached",
    "InsufficientCapacity",
    "SkuNotAvailable",
    "RegistryQuotaExceeded",
    "StandardCoresQuotaExceeded",
];

pub fn classify(op: &str, err: azure_core::Error) -> ProviderError {
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
        _ if CAPACITY_CODES.contains(&code.as_str()) => ProviderError::Capacity(text),
        401 | 403 => ProviderError::Config(text),
        404 => ProviderError::NotFound(text),
        400 | 409 | 422 => ProviderError::InvalidSpec(text),
        _ => ProviderError::Transient(text),
    }
}

impl Arm {
    pub fn new(config: &Config) -> std::result::Result<Arm, String> {
        let credential: Arc<dyn TokenCredential> = match &config.access_token {
            Some(token) => Arc::new(FixedToken(token.0.clone())),
            None => azure_identity::create_default_credential().map_err(|e| e.to_string())?,
        };
        let endpoint =
            azure_core::Url::parse(&config.endpoint).map_err(|e| format!("endpoint: {e}"))?;
        let client = Client::builder(credential)
            .endpoint(endpoint)
            .retry(azure_core::RetryOptions::exponential(
                azure_core::ExponentialRetryOptions::default().max_retries(3u32),
            ))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Arm {
            client,
            subscription: config.subscription_id.clone(),
            group: config.resource_group.clone(),
            reads: Budget::per_second(config.reads_per_second, config.read_burst),
            creates: Budget::new(Quota::per_hour(nonzero(config.creates_per_hour))),
            remaining_reads: AtomicI64::new(i64::MAX),
        })
    }

    /// How many replicas share the subscription's ARM budget now.
    pub fn set_replicas(&self, live: usize) {
        self.reads.set_replicas(live);
        self.creates.set_replicas(live);
    }

    async fn read_turn(&self) {
        self.reads.ready().await;
        if self.remaining_reads.load(Ordering::Relaxed) < LOW_READS {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn note_budget(&self, response: &azure_core::Response) {
        let remaining = response
            .headers()
            .get_optional_str(&azure_core::headers::HeaderName::from_static(
                "x-ms-ratelimit-remaining-subscription-reads",
            ))
            .and_then(|v| v.parse().ok());
        if let Some(n) = remaining {
            self.remaining_reads.store(n, Ordering::Relaxed);
        }
    }

    async fn json(op: &str, response: azure_core::Response) -> Result<Value> {
        let text = response
            .into_body()
            .collect_string()
            .await
            .map_err(|e| ProviderError::Transient(format!("{op}: {e}")))?;
        serde_json::from_str(&text).map_err(|e| ProviderError::Transient(format!("{op}: {e}")))
    }

    /// The group as ARM reports it, or `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Value>> {
        self.read_turn().await;
        let sent = self
            .client
            .container_groups_client()
            .get(&self.subscription, &self.group, name)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let raw = response.into_raw_response();
                self.note_budget(&raw);
                Self::json("get container group", raw).await.map(Some)
            }
            Err(e) => match classify("get container group", e) {
                ProviderError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    pub async fn create(&self, name: &str, body: Value) -> Result<()> {
        let model: ContainerGroup = serde_json::from_value(body)
            .map_err(|e| ProviderError::InvalidSpec(format!("container group: {e}")))?;
        self.creates.ready().await;
        self.client
            .container_groups_client()
            .create_or_update(&self.subscription, &self.group, name, model)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("create container group", e))
    }

    /// Stops the group's containers; a group already gone is no error.
    pub async fn stop(&self, name: &str) -> Result<()> {
        let sent = self
            .client
            .container_groups_client()
            .stop(&self.subscription, &self.group, name)
            .send()
            .await;
        gone_is_fine(
            sent.map(|_| ())
                .map_err(|e| classify("stop container group", e)),
        )
    }

    /// Deletes the group (200, 202 or 204); a group already gone is no error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let sent = self
            .client
            .container_groups_client()
            .delete(&self.subscription, &self.group, name)
            .send()
            .await;
        gone_is_fine(
            sent.map(|_| ())
                .map_err(|e| classify("delete container group", e)),
        )
    }

    pub async fn logs(&self, name: &str, tail: Option<i32>) -> Result<String> {
        self.read_turn().await;
        let mut request = self.client.containers_client().list_logs(
            &self.subscription,
            &self.group,
            name,
            CONTAINER,
        );
        if let Some(lines) = tail {
            request = request.tail(lines);
        }
        match request.send().await {
            Ok(response) => {
                let raw = response.into_raw_response();
                self.note_budget(&raw);
                let body = Self::json("container logs", raw).await?;
                Ok(body["content"].as_str().unwrap_or_default().to_string())
            }
            Err(e) => match classify("container logs", e) {
                ProviderError::NotFound(_) => Ok(String::new()),
                other => Err(other),
            },
        }
    }

    /// The resource group's container groups, every page, as ARM's JSON.
    pub async fn list(&self) -> Result<Vec<Value>> {
        let mut pages = self
            .client
            .container_groups_client()
            .list_by_resource_group(&self.subscription, &self.group)
            .into_stream();
        let mut groups = vec![];
        loop {
            self.read_turn().await;
            match pages.next().await {
                None => return Ok(groups),
                Some(page) => {
                    let page = page.map_err(|e| classify("list container groups", e))?;
                    for group in page.value {
                        groups.push(serde_json::to_value(group).map_err(|e| {
                            ProviderError::Transient(format!("list container groups: {e}"))
                        })?);
                    }
                }
            }
        }
    }
}

fn gone_is_fine(result: Result<()>) -> Result<()> {
    match result {
        Err(ProviderError::NotFound(_)) => Ok(()),
        other => other,
    }
}
