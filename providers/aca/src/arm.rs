//! Azure Resource Manager calls for `Microsoft.App/jobs` through `azure_mgmt_app`, reads
//! under the subscription's read budget (`offload_arm::Reads`). Every call is `.send()`,
//! its status read here: the crate's long-running-operation helpers would poll for the
//! job's provisioning, which `launch` does itself under the budget.

use std::sync::Arc;

use azure_core::auth::TokenCredential;
use azure_mgmt_app::package_preview_2024_08::models::Job;
use azure_mgmt_app::package_preview_2024_08::Client;
use offload_arm::{gone_is_fine, json, not_found_is_none, Reads};
use offload_provider::{ProviderError, Result};
use serde_json::Value;

use crate::config::Config;

pub struct Arm {
    client: Client,
    subscription: String,
    group: String,
    pub reads: Reads,
}

/// ARM error codes of Container Apps' that mean "not now or not here" rather than "wrong
/// request".
const CAPACITY_CODES: [&str; 4] = [
    "ServiceUnavailable",
    "InsufficientCapacity",
    "ManagedEnvironmentResourceQuotaExceeded",
    "JobExecutionQuotaExceeded",
];

pub fn classify(op: &str, err: azure_core::Error) -> ProviderError {
    offload_arm::classify(op, err, &CAPACITY_CODES)
}

impl Arm {
    pub fn new(
        config: &Config,
        credential: Arc<dyn TokenCredential>,
    ) -> std::result::Result<Arm, String> {
        let client = Client::builder(credential)
            .endpoint(offload_arm::endpoint(&config.endpoint)?)
            .retry(offload_arm::retry())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Arm {
            client,
            subscription: config.subscription_id.clone(),
            group: config.resource_group.clone(),
            reads: Reads::new(config.reads_per_second, config.read_burst),
        })
    }

    /// The job as ARM reports it, or `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Value>> {
        self.reads.turn().await;
        let sent = self
            .client
            .jobs_client()
            .get(&self.subscription, &self.group, name)
            .send()
            .await
            .map_err(|e| classify("get job", e));
        match not_found_is_none(sent)? {
            Some(response) => {
                let raw = response.into_raw_response();
                self.reads.note(&raw);
                json("get job", raw).await.map(Some)
            }
            None => Ok(None),
        }
    }

    /// Creates (or replaces) the job; ARM answers while it is still provisioning.
    pub async fn create(&self, name: &str, body: Value) -> Result<Value> {
        let model: Job = serde_json::from_value(body)
            .map_err(|e| ProviderError::InvalidSpec(format!("job: {e}")))?;
        let response = self
            .client
            .jobs_client()
            .create_or_update(&self.subscription, &self.group, name, model)
            .send()
            .await
            .map_err(|e| classify("create job", e))?;
        json("create job", response.into_raw_response()).await
    }

    /// Starts the job's one execution; its name, when ARM gives it in the answer (a 200),
    /// not when it answers 202 and leaves the execution to be listed.
    pub async fn start(&self, name: &str) -> Result<Option<String>> {
        let response = self
            .client
            .jobs_client()
            .start(&self.subscription, &self.group, name)
            .send()
            .await
            .map_err(|e| classify("start job", e))?;
        let raw = response.into_raw_response();
        if u16::from(raw.status()) == 202 {
            return Ok(None);
        }
        let body = json("start job", raw).await?;
        Ok(body["name"].as_str().map(str::to_string))
    }

    /// The job's executions, as ARM's JSON; none for a job that is gone.
    pub async fn executions(&self, name: &str) -> Result<Option<Vec<Value>>> {
        let pages = self
            .client
            .jobs_executions_client()
            .list(&self.subscription, &self.group, name)
            .into_stream();
        offload_arm::pages(
            "list job executions",
            &self.reads,
            pages,
            |p| p.value,
            classify,
        )
        .await
    }

    /// Stops an execution; one already gone is no error.
    pub async fn stop(&self, job: &str, execution: &str) -> Result<()> {
        let sent = self
            .client
            .jobs_client()
            .stop_execution(&self.subscription, &self.group, job, execution)
            .send()
            .await;
        gone_is_fine(
            sent.map(|_| ())
                .map_err(|e| classify("stop job execution", e)),
        )
    }

    /// Deletes the job (200, 202 or 204); one already gone is no error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let sent = self
            .client
            .jobs_client()
            .delete(&self.subscription, &self.group, name)
            .send()
            .await;
        gone_is_fine(sent.map(|_| ()).map_err(|e| classify("delete job", e)))
    }

    /// The resource group's jobs, every page, as ARM's JSON.
    pub async fn list(&self) -> Result<Vec<Value>> {
        let pages = self
            .client
            .jobs_client()
            .list_by_resource_group(&self.subscription, &self.group)
            .into_stream();
        let jobs = offload_arm::pages("list jobs", &self.reads, pages, |p| p.value, classify);
        Ok(jobs.await?.unwrap_or_default())
    }
}
