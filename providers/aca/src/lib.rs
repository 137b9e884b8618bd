//! Azure Container Apps provider: each attempt of a job is one manual-trigger Container
//! Apps job, started once. This is where GPU work goes on Azure: Container Instances
//! retired GPUs on 14 July 2025, and Container Apps has serverless GPU workload profiles
//! (NVIDIA T4 and A100) on an environment.
//!
//! - launch: a create-only PUT of the job (named from the launch key, which its tags
//!   carry), then, once it is provisioned, its start, at most once (`start`): while the
//!   job provisions, a launch answers `Throttled` and the engine launches the key again
//!   later; a relaunch that is not fresh reads the job first;
//! - observe: one read per live job (its executions), paced by ARM's read budget, which
//!   this provider shares with the ACI provider's code (`offload_arm`), and one of the job
//!   itself while it has no execution; a job whose read fails is left out of the round;
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
mod start;
mod status;

use std::time::{Duration, SystemTime};

use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, Provider,
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

/// How long after its creation a job may still be provisioning: a launch then fails (and
/// the engine tries again, up to its launch retries). Until then a launch that finds it
/// provisioning asks to be called again after [`PROVISIONING_LOOK`].
const PROVISIONING_TIMEOUT: Duration = Duration::from_secs(120);
const PROVISIONING_LOOK: Duration = Duration::from_secs(2);

impl Config {
    /// Credentials as DefaultAzureCredential finds them, or `access_token`; nothing is
    /// called until needed.
    pub async fn build(&self) -> std::result::Result<Aca, String> {
        self.check()?;
        let azure =
            offload_arm::Azure::new(&self.endpoint, self.access_token.as_ref(), self.timeouts()?)?;
        Ok(Aca {
            arm: arm::Arm::new(self, &azure)?,
            logs: self
                .log_analytics
                .clone()
                .map(|c| logs::Logs::new(c, azure.credential(), azure.http())),
            config: self.clone(),
            starts: start::Starts::default(),
        })
    }
}

pub struct Aca {
    arm: arm::Arm,
    logs: Option<logs::Logs>,
    config: Config,
    starts: start::Starts,
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
    /// The job `launch` runs as, and whether this call made it: read (unless the launch
    /// is fresh), else created, else (a create refused because another launch of the key
    /// made it) read.
    async fn job(
        &self,
        launch: &Launch,
        name: &str,
        placement: &sizing::Placement,
    ) -> Result<(Value, bool)> {
        if !launch.fresh {
            if let Some(job) = self.arm.get(name).await? {
                return Ok((job, false));
            }
        }
        let body = job::body(
            &self.config,
            launch,
            placement,
            self.starts.mark(),
            time::OffsetDateTime::now_utc(),
        )?;
        if let Some(created) = self.arm.create(name, body).await? {
            return Ok((created, true));
        }
        // Another launch of this key created it a moment ago.
        let job = self.arm.get(name).await?.ok_or_else(|| {
            ProviderError::Transient(format!("job {name} exists and then does not"))
        })?;
        Ok((job, false))
    }

    /// Whether `job` is provisioned, so that it can be started: `Throttled` while it is
    /// still provisioning, an error once that failed or took too long.
    fn provisioned(&self, name: &str, job: &Value) -> Result<()> {
        let state = job["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("");
        match state {
            "Succeeded" => return Ok(()),
            "Failed" | "Canceled" => {
                return Err(ProviderError::InvalidSpec(format!(
                    "job {name}: provisioning {state}"
                )))
            }
            _ => {}
        }
        let since = created(job).and_then(|at| SystemTime::now().duration_since(at).ok());
        if since.is_some_and(|s| s > PROVISIONING_TIMEOUT) {
            return Err(ProviderError::Transient(format!(
                "job {name}: still provisioning after {PROVISIONING_TIMEOUT:?}"
            )));
        }
        Err(ProviderError::Throttled {
            retry_after: PROVISIONING_LOOK,
        })
    }

    /// What a job without an execution says: starting, until `pending_timeout_seconds`
    /// after its creation, when no execution will come (its start was lost, or the process
    /// that created it never started it).
    async fn unstarted(&self, name: &str) -> Result<Phase> {
        let Some(job) = self.arm.get(name).await? else {
            return Ok(deleted(name));
        };
        let pending = Duration::from_secs(self.config.pending_timeout_seconds);
        let waited = created(&job).and_then(|at| SystemTime::now().duration_since(at).ok());
        Ok(match waited {
            Some(waited) if waited <= pending => Phase::Starting {
                reason: Some("no execution listed yet".into()),
            },
            _ => Phase::Lost {
                reason: format!(
                    "Container Apps job {name} has no execution {} s after its creation",
                    self.config.pending_timeout_seconds
                ),
            },
        })
    }

    async fn observe_one(&self, handle: &Handle) -> Result<Observation> {
        let name = &handle.provider_ref;
        let pending = Duration::from_secs(self.config.pending_timeout_seconds);
        let (phase, ran) = match self.arm.executions(name).await? {
            None => (deleted(name), None),
            // A start's execution can be listed a moment after the start answers.
            Some(executions) => match newest(executions) {
                None => (self.unstarted(name).await?, None),
                Some(execution) => {
                    let phase = status::phase(&execution, SystemTime::now(), pending);
                    let ran = phase.is_final().then(|| status::ran(&execution)).flatten();
                    (phase, ran)
                }
            },
        };
        Ok(Observation {
            handle: handle.clone(),
            phase,
            ran,
        })
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
}

/// When the job was created, as its tag says.
fn created(job: &Value) -> Option<SystemTime> {
    offload_provider::rfc3339(job["tags"][job::CREATED_TAG].as_str()?)
}

fn deleted(name: &str) -> Phase {
    Phase::Lost {
        reason: format!("Container Apps job {name} was deleted"),
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

    fn price_sheet(&self, read: &ReadPrices) -> Pricing {
        pricing::sheet(&self.config, read)
    }

    /// The size the replica runs at: what Container Apps bills.
    fn billed_resources(&self, resources: &Resources) -> Resources {
        match sizing::place(&self.config, resources) {
            Ok(placement) => placement.billed(resources),
            Err(_) => resources.clone(),
        }
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        offload_provider::refuse_steps(self.kind(), spec)?;
        self.placement(spec).map(|_| ())
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        let placement = self.placement(&launch.spec)?;
        let name = job::name(&launch.key);
        let handle = Handle {
            key: launch.key.clone(),
            provider_ref: name.clone(),
        };
        let (job, made) = self.job(launch, &name, &placement).await?;
        if !made {
            if job["tags"][job::KEY_TAG] != launch.key.as_str() {
                return Err(ProviderError::Config(format!(
                    "job {name} exists for another launch key than {}",
                    launch.key
                )));
            }
            if !self.starts.mine(&job) {
                tracing::info!(job = %name, "another process created this job and starts it, if anyone does: adopting it");
                return Ok(handle);
            }
        }
        self.provisioned(&name, &job)?;
        if !self.starts.claim(&name) {
            tracing::info!(job = %name, "this job's start was sent already: adopting it");
            return Ok(handle);
        }
        match self.arm.start(&name).await {
            arm::Start::Started(execution) => {
                tracing::info!(job = %name, execution = execution.as_deref().unwrap_or("(listed later)"), "started the Container Apps job");
                Ok(handle)
            }
            arm::Start::Busy => {
                self.starts.refused(&name);
                Err(ProviderError::Throttled {
                    retry_after: PROVISIONING_LOOK,
                })
            }
            arm::Start::Refused(e) => {
                self.starts.refused(&name);
                Err(e)
            }
            arm::Start::Unknown(e) => {
                tracing::warn!(job = %name, error = %e, "the start's answer was lost: it is not sent again, and the job is lost if no execution appears");
                Ok(handle)
            }
        }
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        offload_provider::one_by_one::observe(handles, |h| self.observe_one(h)).await
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
        self.arm.delete(&handle.provider_ref).await?;
        self.starts.forget(&handle.provider_ref);
        Ok(())
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
