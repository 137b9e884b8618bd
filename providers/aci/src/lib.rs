//! Azure Container Instances provider: each attempt of a job is one container group.
//!
//! - launch: unless fresh, a GET first (a relaunch after a crash finds the group of its
//!   key), then a create-only PUT (sent once; a group that exists is adopted, never
//!   replaced) of the group with `restartPolicy: Never`, `secret_env` as `secureValue`s
//!   and the job id and labels as tags;
//! - observe: a GET per live group, paced by ARM's read budget (`arm`); a group whose read
//!   fails is left out of the round. Not one list of the resource group per round: a list
//!   carries no instance view (see the published ContainerGroupsListByResourceGroup
//!   example), so no container state or exit code;
//! - cancel: read the log, then stop (kept until release, so the engine reads its tail);
//!   release: delete (groups count against ACI's quota);
//! - logs: the container logs API (or the copy read at cancel, see `stopped`); `managed`
//!   lists groups tagged `managed-by=offload`;
//! - a job of several steps is one group of init containers in order (`steps`).
//!
//! A job sets nothing through `provider_options.aci`: the subnets, identity and registry
//! credentials of its group are the operator's settings only, so a tenant cannot choose
//! another network or identity; a job that sends options is refused, not run without them.
//!
//! `azure_mgmt_containerinstance` stays inside `arm`, behind this crate's own types.

mod arm;
mod config;
mod group;
mod pricing;
mod status;
mod steps;
mod stopped;

use group::CONTAINER;
use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, Provider,
    ProviderError, Resources, Result, StepRun, WorkloadSpec,
};

pub use config::{Config, Dns, Priority};
pub use offload_arm::{Registry, SecretString};

/// The longest a running group goes unobserved unless `max_poll_interval_ms` says
/// otherwise. Every look is a GET against ARM's read budget, which the whole subscription
/// shares (25 a second), and a group takes tens of seconds to start: from the default
/// 500 ms interval, five doublings, as for ECS.
pub const MAX_POLL_INTERVAL_MS: u64 = 16_000;

impl Config {
    /// Credentials as DefaultAzureCredential finds them (environment, workload identity,
    /// managed identity, Azure CLI), or `access_token`; nothing is called until needed.
    pub async fn build(&self) -> std::result::Result<Aci, String> {
        self.check()?;
        Ok(Aci {
            arm: arm::Arm::new(self)?,
            config: self.clone(),
            stopped: stopped::StoppedLogs::default(),
        })
    }
}

pub struct Aci {
    arm: arm::Arm,
    config: Config,
    stopped: stopped::StoppedLogs,
}

#[async_trait::async_trait]
impl Provider for Aci {
    fn kind(&self) -> &'static str {
        "aci"
    }

    fn set_replicas(&self, live: usize) {
        self.arm.set_replicas(live);
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_cpu: self.config.max_cpu,
            max_memory_bytes: (self.config.max_memory_gb * (1u64 << 30) as f64) as u64,
            gpu_kinds: self.config.gpu_skus.clone(),
            spot: self.config.priority == Priority::Spot,
            arch: vec!["x86_64".into()],
            max_observe_batch: 100,
            max_tail_batch: 0,
        }
    }

    fn price_sheet(&self, read: &ReadPrices) -> Pricing {
        pricing::sheet(&self.config, read)
    }

    /// The container group's allocation, at least ACI's group minimum: what ACI bills.
    fn billed_resources(&self, resources: &Resources) -> Resources {
        pricing::billed_resources(resources)
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        let steps = spec.steps.as_ref().and_then(|plan| steps::refusal(&self.config, plan));
        match steps
            .or_else(|| group::refusal(&self.config, &spec.resources))
            .or_else(|| {
                let settings = "subnets, identity and registries";
                offload_arm::options_refusal("aci", "ACI", settings, spec.provider_options.as_ref())
            })
        {
            Some(why) => Err(ProviderError::InvalidSpec(why)),
            None => Ok(()),
        }
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        self.validate(&launch.spec)?;
        let name = group::name(&launch.key)?;
        let handle = Handle {
            key: launch.key.clone(),
            provider_ref: name.clone(),
        };
        if !launch.fresh && self.arm.get(&name).await?.is_some() {
            tracing::info!(group = %name, "adopting the container group this launch key created");
            return Ok(handle);
        }
        if !self
            .arm
            .create(&name, group::body(&self.config, launch))
            .await?
        {
            tracing::info!(group = %name, "another launch of this key created the container group: adopting it");
        }
        Ok(handle)
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        offload_provider::one_by_one::observe(handles, |handle| async move {
            let phase = match self.arm.get(&handle.provider_ref).await? {
                Some(group) => match (status::phase(&group), steps::failed(&group)) {
                    // A failed filer says why (the URL and the cause) in its log; a log
                    // that cannot be read leaves the group's own reason.
                    (Phase::Exited { exit_code, reason }, Some((role, container, _)))
                        if role.is_filer() =>
                    {
                        let said = self
                            .arm
                            .logs(&handle.provider_ref, &container, None)
                            .await
                            .unwrap_or_default();
                        Phase::Exited {
                            exit_code,
                            reason: offload_provider::steps::filer_reason(role, &said, reason),
                        }
                    }
                    (phase, _) => phase,
                },
                None => Phase::Lost {
                    reason: format!("container group {} was deleted", handle.provider_ref),
                },
            };
            // The group's instance view has event times, not a billed run: the engine
            // bills from its own observation.
            Ok(Observation {
                handle: handle.clone(),
                phase,
                ran: None,
            })
        })
        .await
    }

    /// Stops the group and keeps it (stopped groups cost nothing) for `release` to delete.
    /// A stop recycles the containers, log included, so the log is read first.
    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()> {
        let name = &handle.provider_ref;
        tracing::info!(group = %name, reason, "stopping the container group");
        match self.arm.logs(name, CONTAINER, None).await {
            Ok(text) => self.stopped.keep(name, text),
            // The log is not worth delaying the stop for.
            Err(e) => {
                tracing::warn!(group = %name, error = %e, "could not read the log before the stop")
            }
        }
        self.arm.stop(name).await
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        let text = match self.stopped.get(&handle.provider_ref) {
            Some(text) => text,
            None => self.arm.logs(&handle.provider_ref, CONTAINER, None).await?,
        };
        Ok(LogChunk::from_whole(&text, query))
    }

    fn runs_steps(&self) -> bool {
        true
    }

    /// One GET of the group, then each step's container's log.
    async fn step_runs(&self, handle: &Handle, tail_bytes: usize) -> Result<Vec<StepRun>> {
        let Some(group) = self.arm.get(&handle.provider_ref).await? else {
            return Ok(vec![]);
        };
        let mut runs = vec![];
        for seen in steps::runs(&group) {
            let text = match seen.exit_code {
                Some(_) => self.arm.logs(&handle.provider_ref, &seen.container, None).await?,
                None => String::new(),
            };
            runs.push(StepRun {
                role: seen.role,
                exit_code: offload_provider::steps::said_exit(&text).or(seen.exit_code),
                started: seen.started.and_then(offload_provider::rfc3339),
                finished: seen.finished.and_then(offload_provider::rfc3339),
                log: offload_provider::tail_str(&text, tail_bytes).to_string(),
            });
        }
        Ok(runs)
    }

    async fn release(&self, handle: &Handle) -> Result<()> {
        self.arm.delete(&handle.provider_ref).await?;
        self.stopped.forget(&handle.provider_ref);
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
            .filter(|g| g["tags"][group::MANAGED_BY_TAG] == "offload")
            .filter_map(|g| g["name"].as_str())
            .map(|name| Handle {
                key: name.to_string(),
                provider_ref: name.to_string(),
            })
            .collect())
    }
}
