//! Azure Resource Manager calls for `Microsoft.App/jobs` through `azure_mgmt_app`, reads
//! under the subscription's read budget (`offload_arm::Reads`). Every call is `.send()`,
//! its status read here: the crate's long-running-operation helpers would poll for the
//! job's provisioning, which `launch` looks at itself under the budget. A create and a
//! start are sent once (`offload_arm::Sending::Once`), the create only if no job of the
//! name exists.

use azure_mgmt_app::package_preview_2024_08::models::Job;
use azure_mgmt_app::package_preview_2024_08::Client;
use offload_arm::{gone_is_fine, json, not_found_is_none, Azure, Reads, Sending};
use offload_provider::{ProviderError, Result};
use serde_json::Value;

use crate::config::Config;

pub struct Arm {
    /// Reads, stops and deletes, sent again when they fail in passing.
    client: Client,
    /// Creates and starts, sent once.
    once: Client,
    subscription: String,
    group: String,
    pub reads: Reads,
}

/// How a start went.
pub enum Start {
    /// Container Apps started an execution (named when it answered with the name).
    Started(Option<String>),
    /// Container Apps refused it for now (409: the job is provisioning or changing).
    Busy,
    /// Container Apps refused it, so it was not carried out.
    Refused(ProviderError),
    /// No telling: the answer was lost, or the service failed after it had the request.
    Unknown(ProviderError),
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
    pub fn new(config: &Config, azure: &Azure) -> std::result::Result<Arm, String> {
        Ok(Arm {
            client: azure.client(Sending::Again, Client::new)?,
            once: azure.client(Sending::Once, Client::new)?,
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

    /// Creates the job unless one of its name exists (then `None`); ARM answers while it
    /// is still provisioning.
    pub async fn create(&self, name: &str, body: Value) -> Result<Option<Value>> {
        let model: Job = serde_json::from_value(body)
            .map_err(|e| ProviderError::InvalidSpec(format!("job: {e}")))?;
        let sent = self
            .once
            .jobs_client()
            .create_or_update(&self.subscription, &self.group, name, model)
            .send()
            .await;
        match sent {
            Ok(response) => json("create job", response.into_raw_response())
                .await
                .map(Some),
            Err(e) if offload_arm::exists(&e) => Ok(None),
            Err(e) => Err(classify("create job", e)),
        }
    }

    /// Starts the job's one execution. Its name comes in a 200's answer, not in a 202's,
    /// which leaves the execution to be listed.
    pub async fn start(&self, name: &str) -> Start {
        let sent = self
            .once
            .jobs_client()
            .start(&self.subscription, &self.group, name)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response.into_raw_response(),
            Err(e)
                if e.as_http_error()
                    .is_some_and(|h| u16::from(h.status()) == 409) =>
            {
                return Start::Busy
            }
            Err(e) if offload_arm::refused(&e) => return Start::Refused(classify("start job", e)),
            Err(e) => return Start::Unknown(classify("start job", e)),
        };
        if u16::from(response.status()) == 202 {
            return Start::Started(None);
        }
        // Started: an answer whose body cannot be read still says so.
        let body = json("start job", response).await.unwrap_or_default();
        Start::Started(body["name"].as_str().map(str::to_string))
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
