//! Azure Resource Manager calls through `azure_mgmt_containerinstance`, each under its
//! budget. The crate's long-running-operation helpers poll until a 200 and fail on a 204,
//! so every call is `.send()` and its status is read here. The SDK's own retry policy
//! waits out a 429's Retry-After before it gives up; what still fails is throttling. A
//! create is sent once, and only if no group of the name exists
//! (`offload_arm::Sending::Once`): sent again, a PUT replaces the group, which restarts it.

use std::num::NonZeroU32;

use azure_mgmt_containerinstance::package_preview_2024_10::models::ContainerGroup;
use azure_mgmt_containerinstance::package_preview_2024_10::Client;
use governor::Quota;
use offload_arm::{gone_is_fine, json, Azure, Reads, Sending};
use offload_provider::budget::Budget;
use offload_provider::{ProviderError, Result};
use serde_json::Value;

use crate::config::Config;

pub struct Arm {
    /// Reads, stops and deletes, sent again when they fail in passing.
    client: Client,
    /// Creates, sent once.
    once: Client,
    subscription: String,
    group: String,
    /// ARM's reads and ACI's creates per subscription, shared among the replicas.
    reads: Reads,
    creates: Budget,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("checked in Config::check")
}

/// ARM error codes of ACI's that mean "not now or not here" rather than "wrong request".
const CAPACITY_CODES: [&str; 6] = [
    "ServiceUnavailable",
    "ContainerGroupQuotaReached",
    "InsufficientCapacity",
    "SkuNotAvailable",
    "RegistryQuotaExceeded",
    "StandardCoresQuotaExceeded",
];

pub fn classify(op: &str, err: azure_core::Error) -> ProviderError {
    offload_arm::classify(op, err, &CAPACITY_CODES)
}

impl Arm {
    pub fn new(config: &Config) -> std::result::Result<Arm, String> {
        let azure = Azure::new(
            &config.endpoint,
            config.access_token.as_ref(),
            config.timeouts()?,
        )?;
        Ok(Arm {
            client: azure.client(Sending::Again, Client::new)?,
            once: azure.client(Sending::Once, Client::new)?,
            subscription: config.subscription_id.clone(),
            group: config.resource_group.clone(),
            reads: Reads::new(config.reads_per_second, config.read_burst),
            creates: Budget::new(Quota::per_hour(nonzero(config.creates_per_hour))),
        })
    }

    /// How many replicas share the subscription's ARM budget now.
    pub fn set_replicas(&self, live: usize) {
        self.reads.set_replicas(live);
        self.creates.set_replicas(live);
    }

    /// The group as ARM reports it, or `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Value>> {
        self.reads.turn().await;
        let sent = self
            .client
            .container_groups_client()
            .get(&self.subscription, &self.group, name)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let raw = response.into_raw_response();
                self.reads.note(&raw);
                json("get container group", raw).await.map(Some)
            }
            Err(e) => match classify("get container group", e) {
                ProviderError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Creates the group unless one of its name exists: `false` when it does.
    pub async fn create(&self, name: &str, body: Value) -> Result<bool> {
        let model: ContainerGroup = serde_json::from_value(body)
            .map_err(|e| ProviderError::InvalidSpec(format!("container group: {e}")))?;
        self.creates.ready().await;
        let sent = self
            .once
            .container_groups_client()
            .create_or_update(&self.subscription, &self.group, name, model)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if offload_arm::exists(&e) => Ok(false),
            Err(e) => Err(classify("create container group", e)),
        }
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

    /// The log of one container of a group (`main`, or a step's init container).
    pub async fn logs(&self, name: &str, container: &str, tail: Option<i32>) -> Result<String> {
        self.reads.turn().await;
        let mut request = self.client.containers_client().list_logs(
            &self.subscription,
            &self.group,
            name,
            container,
        );
        if let Some(lines) = tail {
            request = request.tail(lines);
        }
        match request.send().await {
            Ok(response) => {
                let raw = response.into_raw_response();
                self.reads.note(&raw);
                let body = json("container logs", raw).await?;
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
        let pages = self
            .client
            .container_groups_client()
            .list_by_resource_group(&self.subscription, &self.group)
            .into_stream();
        let groups = offload_arm::pages("list container groups", &self.reads, pages, |p| p.value, classify);
        Ok(groups.await?.unwrap_or_default())
    }
}
