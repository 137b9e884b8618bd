//! Azure Container Apps provider: each attempt of a job is one manual-trigger Container
//! Apps job, started once. This is where GPU work goes on Azure: Container Instances
//! retired GPUs on 14 July 2025, and Container Apps has serverless GPU workload profiles
//! (NVIDIA T4 and A100) on an environment.
//!
//! - launch: a PUT of the job (named from the launch key, which its tags carry), then its
//!   start. `start` has no idempotency token, so a relaunch that is not fresh looks first:
//!   a job of its key with an execution is adopted; one without is started;
//! - observe: one read per live job (its executions), paced by ARM's read budget, which
//!   this provider shares with the ACI provider's code (`offload_arm`);
//! - cancel: stop the execution; release: delete the job;
//! - logs: a Log Analytics query (`logs`); `managed` lists jobs tagged `managed-by=offload`.
//!
//! A job sets nothing through `provider_options.aca`: the environment, profiles, identity
//! and registries are the operator's. `azure_mgmt_app` stays inside `arm`.

mod arm;
mod config;
mod job;
mod logs;
mod pricing;
mod sizing;
mod status;

use std::time::{Duration, SystemTime};

use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, PriceSheet, Provider,
    ProviderError, Resources, Result, WorkloadSpec,
};
use serde_json::Value;

pub use config::{Config, GpuProfile, LogAnalytics};
pub use job::name as job_name;
pub use offload_arm::Registry;
pub use sizing::GPU_PROFILE_TYPES;

/// The longest a running job goes unobserved unless `max_poll_interval_ms` says otherwise:
/// every look is a read against ARM's budget, as for ACI.
pub const MAX_POLL_INTERVAL_MS: u64 = 16_000;

/// How long a launch waits for a new job's provisioning before it starts it, and how often
/// it looks: first soon, then at most every few seconds.
const PROVISIONING_TIMEOUT: Duration = Duration::from_secs(120);
const FIRST_PROVISIONING_LOOK: Duration = Duration::from_millis(250);
const MAX_PROVISIONING_LOOK: Duration = Duration::from_secs(4);

impl Config {
    /// Credentials as DefaultAzureCredential finds them, or `access_token`; nothing is
    /// called until needed.
    pub async fn build(&self) -> std::result::Result<Aca, String> {
        self.check()?;
        let credential = offload_arm::credential(self.access_token.as_ref())?;
        Ok(Aca {
            arm: arm::Arm::new(self, credential.clone())?,
            logs: self
                .log_analytics
                .clone()
                .map(|c| logs::Logs::new(c, credential)),
            config: self.clone(),
        })
    }
}

pub struct Aca {
    arm: arm::Arm,
    logs: Option<logs::Logs>,
    config: Config,
}

/// The execution of a job: the newest by start time (a job of offload's has one).
fn newest(executions: Vec<Value>) -> Option<Value> {
    executions.into_iter().max_by_key(|e| {
        e["properties"]["startTime"]
            .as_str()
            .unwrap_or("")
            .to_string()
    })
}

impl Aca {
    /// Waits until a new job is provisioned (ARM answers its PUT while it is still
    /// `InProgress`): a start before then is refused.
    async fn provisioned(&self, name: &str, mut job: Value) -> Result<()> {
        let deadline = tokio::time::Instant::now() + PROVISIONING_TIMEOUT;
        let mut look = FIRST_PROVISIONING_LOOK;
        loop {
            match job["properties"]["provisioningState"]
                .as_str()
                .unwrap_or("")
            {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    return Err(ProviderError::InvalidSpec(format!(
                        "job {name}: provisioning {}",
                        job["properties"]["provisioningState"]
                    )))
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(ProviderError::Transient(format!(
                        "job {name}: still provisioning after {PROVISIONING_TIMEOUT:?}"
                    )))
                }
                _ => {}
            }
            tokio::time::sleep(look).await;
            look = (look * 2).min(MAX_PROVISIONING_LOOK);
            job = self.arm.get(name).await?.ok_or_else(|| {
                ProviderError::Transient(format!("job {name} is gone while provisioning"))
            })?;
        }
    }

    /// Where `spec` runs, or why it cannot (per-job options, or a size no profile has).
    fn placement(&self, spec: &WorkloadSpec) -> Result<sizing::Placement> {
        let settings = "the environment, workload profiles, identity and registries";
        let options = spec.provider_options.as_ref();
        if let Some(why) = offload_arm::options_refusal("aca", "Container Apps", settings, options)
        {
            return Err(ProviderError::InvalidSpec(why));
        }
        sizing::place(&self.config, &spec.resources)
    }

    async fn start(&self, name: &str) -> Result<()> {
        let execution = self.arm.start(name).await?;
        tracing::info!(job = %name, execution = execution.as_deref().unwrap_or("(listed later)"), "started the Container Apps job");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Provider for Aca {
    fn kind(&self) -> &'static str {
        "aca"
    }

    fn set_replicas(&self, live: usize) {
        self.arm.reads.set_replicas(live);
    }

    fn capabilities(&self) -> Capabilities {
        let gpus: Vec<_> = sizing::gpu_profiles(&self.config).map(|(_, t)| t).collect();
        let max_cpu = gpus
            .iter()
            .map(|t| t.max_cpu)
            .fold(sizing::MAX_CONSUMPTION_CPU, f64::max);
        let max_gib = gpus
            .iter()
            .map(|t| t.max_memory_gib)
            .fold(sizing::MAX_CONSUMPTION_CPU * sizing::GIB_PER_CPU, f64::max);
        let mut gpu_kinds: Vec<String> = gpus.iter().map(|t| t.kind.to_string()).collect();
        gpu_kinds.dedup();
        Capabilities {
            max_cpu,
            max_memory_bytes: (max_gib * (1u64 << 30) as f64) as u64,
            gpu_kinds,
            spot: false,
            arch: vec!["x86_64".into()],
            max_observe_batch: 100,
            max_tail_batch: 0,
        }
    }

    fn price_sheet(&self) -> PriceSheet {
        pricing::sheet(&self.config)
    }

    /// The size the replica runs at: what Container Apps bills.
    fn billed_resources(&self, resources: &Resources) -> Resources {
        match sizing::place(&self.config, resources) {
            Ok(placement) => placement.billed(resources),
            Err(_) => resources.clone(),
        }
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        self.placement(spec).map(|_| ())
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        let placement = self.placement(&launch.spec)?;
        let name = job::name(&launch.key);
        let handle = Handle {
            key: launch.key.clone(),
            provider_ref: name.clone(),
        };
        if !launch.fresh {
            if let Some(existing) = self.arm.get(&name).await? {
                if existing["tags"][job::KEY_TAG] != launch.key.as_str() {
                    return Err(ProviderError::Config(format!(
                        "job {name} exists for another launch key than {}",
                        launch.key
                    )));
                }
                let executions = self.arm.executions(&name).await?.unwrap_or_default();
                if executions.is_empty() {
                    tracing::info!(job = %name, "the job of this launch key was not started: starting it");
                    self.provisioned(&name, existing).await?;
                    self.start(&name).await?;
                } else {
                    tracing::info!(job = %name, "adopting the job execution this launch key started");
                }
                return Ok(handle);
            }
        }
        let created = self
            .arm
            .create(&name, job::body(&self.config, launch, &placement)?)
            .await?;
        self.provisioned(&name, created).await?;
        self.start(&name).await?;
        Ok(handle)
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        let pending = Duration::from_secs(self.config.pending_timeout_seconds);
        let mut seen = Vec::with_capacity(handles.len());
        for handle in handles {
            let (phase, ran) = match self.arm.executions(&handle.provider_ref).await? {
                None => (
                    Phase::Lost {
                        reason: format!("Container Apps job {} was deleted", handle.provider_ref),
                    },
                    None,
                ),
                Some(executions) => match newest(executions) {
                    // A start's execution can be listed a moment after the start answers.
                    None => (
                        Phase::Starting {
                            reason: Some("no execution listed yet".into()),
                        },
                        None,
                    ),
                    Some(execution) => {
                        let phase = status::phase(&execution, SystemTime::now(), pending);
                        let ran = phase.is_final().then(|| status::ran(&execution)).flatten();
                        (phase, ran)
                    }
                },
            };
            seen.push(Observation {
                handle: handle.clone(),
                phase,
                ran,
            });
        }
        Ok(seen)
    }

    /// Stops the job's execution; the job stays until `release` deletes it. Its log is in
    /// Log Analytics, which a stop does not touch.
    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()> {
        let name = &handle.provider_ref;
        let Some(execution) = self.arm.executions(name).await?.and_then(newest) else {
            return Ok(());
        };
        let Some(execution_name) = execution["name"].as_str() else {
            return Ok(());
        };
        tracing::info!(job = %name, execution = execution_name, reason, "stopping the job execution");
        self.arm.stop(name, execution_name).await
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        match &self.logs {
            Some(logs) => logs.read(&handle.provider_ref, query).await,
            None => Err(ProviderError::Config(
                "no log_analytics workspace is configured: Container Apps keeps job logs only there".into(),
            )),
        }
    }

    async fn release(&self, handle: &Handle) -> Result<()> {
        self.arm.delete(&handle.provider_ref).await
    }

    async fn check(&self) -> Result<()> {
        self.arm.list().await.map(|_| ())
    }

    async fn managed(&self) -> Result<Vec<Handle>> {
        Ok(self
            .arm
            .list()
            .await?
            .iter()
            .filter(|j| j["tags"][job::MANAGED_BY_TAG] == "offload")
            .filter_map(|j| {
                Some(Handle {
                    key: j["tags"][job::KEY_TAG].as_str()?.to_string(),
                    provider_ref: j["name"].as_str()?.to_string(),
                })
            })
            .collect())
    }
}
