//! ECS Fargate provider: each attempt of a job is one ECS task.
//!
//! - launch: finds the task definition for the image and size (registering it once),
//!   unless the launch is `fresh` looks for a task already started by this launch key
//!   (`startedBy`; moto and a crash between RunTask and the stored answer both need it,
//!   since `clientToken` is not enough), then calls RunTask with the key as `clientToken`
//!   and `startedBy`;
//! - observe: one DescribeTasks per 100 live tasks per poll round;
//! - cancel: StopTask (a task ECS has forgotten has nothing left to stop); logs: CloudWatch
//!   Logs, stream `PREFIX/CONTAINER/TASK_ID`; the tails of tasks ended in the same round
//!   in one FilterLogEvents per 100 (`logs`);
//! - a job's `provider_options.ecs` chooses only what the operator allows (`options`);
//! - a job of several steps is one task of a container per step, in order (`steps`);
//! - every call waits for a token from a client-side bucket kept under ECS's rates.

mod config;
mod containers;
mod errors;
mod logs;
mod options;
mod pricing;
mod sizing;
mod status;
mod steps;
mod taskdef;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_config::{timeout::TimeoutConfig, BehaviorVersion, Region};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    DesiredStatus, EphemeralStorage, KeyValuePair, LaunchType, NetworkConfiguration, PropagateTags,
    Tag, TaskDefinitionField, TaskOverride,
};
use offload_provider::budget::Budget;
use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, Provider,
    ProviderError, Resources, Result, StepRun, WorkloadSpec,
};

pub use config::{Arch, CapacityProvider, CapacityShare, Config};

/// The longest a running task goes unobserved unless `max_poll_interval_ms` says otherwise.
/// A Fargate task takes tens of seconds to provision and is billed by the second with a
/// one-minute minimum, so a few seconds more before its end is seen cost little, while
/// every look is a DescribeTasks (Airflow's EcsRunTaskOperator polls every 6 s). From the
/// default 500 ms interval, five doublings: a 30 s task alone is looked at six times, and
/// costs the operator's 8 calls with its RunTask and log read.
pub const MAX_POLL_INTERVAL_MS: u64 = 16_000;
use containers::Containers;
use errors::classify;
use options::Options;
use taskdef::DIGEST_TAG;

/// ECS allows at most this many tasks per DescribeTasks call.
const DESCRIBE_BATCH: usize = 100;
/// ECS's limit on tags per resource.
const MAX_TAGS: usize = 50;

impl Config {
    /// Connects with the standard AWS credential chain (env, profile, web identity, ECS
    /// task role, IMDS); nothing is called until the first request.
    pub async fn build(&self) -> std::result::Result<Ecs, String> {
        self.check()?;
        if self.log_group.is_none() {
            tracing::warn!(
                cluster = %self.cluster,
                "ecs: no log_group, so tasks write no log: jobs here will have no log, no log \
                 tail and no offload-result; set log_group (a CloudWatch Logs group that \
                 exists) and execution_role_arn"
            );
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        Ok(Ecs {
            ecs: aws_sdk_ecs::Client::new(&shared),
            logs: aws_sdk_cloudwatchlogs::Client::new(&shared),
            limiter: Budget::per_second(self.calls_per_second, self.burst),
            definitions: tokio::sync::Mutex::default(),
            missing: Mutex::default(),
            containers: Containers::default(),
            config: self.clone(),
        })
    }
}

pub struct Ecs {
    ecs: aws_sdk_ecs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    /// The account's ECS and CloudWatch Logs call rate, shared among the replicas.
    limiter: Budget,
    /// Task definition ARN by family; the lock also keeps two launches from registering
    /// the same family at once.
    definitions: tokio::sync::Mutex<HashMap<String, String>>,
    /// Task ARN → poll rounds in a row it was missing from DescribeTasks.
    missing: Mutex<HashMap<String, u32>>,
    containers: Containers,
    config: Config,
}

impl Ecs {
    /// Waits for a token: every ECS and CloudWatch Logs call goes through here first.
    async fn ready(&self) {
        self.limiter.ready().await;
    }

    /// The task definition of offload's own for `spec` at `size`, registered if need be.
    async fn task_definition(&self, spec: &WorkloadSpec, size: sizing::Size) -> Result<String> {
        let shape = match &spec.steps {
            Some(plan) => steps::shape(&self.config, plan),
            None => vec![],
        };
        let (family, digest) = taskdef::family(&self.config, &spec.image, size, &shape);
        let mut known = self.definitions.lock().await;
        if let Some(arn) = known.get(&family) {
            return Ok(arn.clone());
        }
        self.ready().await;
        let found = self
            .ecs
            .describe_task_definition()
            .task_definition(&family)
            .include(TaskDefinitionField::Tags)
            .send()
            .await;
        let arn = match found {
            Ok(out)
                if out
                    .tags()
                    .iter()
                    .any(|t| t.key() == Some(DIGEST_TAG) && t.value() == Some(&digest)) =>
            {
                out.task_definition()
                    .and_then(|d| d.task_definition_arn())
                    .map(str::to_string)
            }
            _ => None,
        };
        let arn = match arn {
            Some(arn) => arn,
            None => {
                self.ready().await;
                let parts = match &spec.steps {
                    Some(plan) => steps::definition(&self.config, plan, |name, image| {
                        taskdef::container(&self.config, name, image)
                    }),
                    None => (vec![], vec![taskdef::one_container(&self.config, &spec.image, size)]),
                };
                let out = taskdef::register(
                    &self.ecs,
                    &self.config,
                    size,
                    (&family, &digest),
                    parts,
                    self.config_tags(),
                )
                .send()
                .await
                .map_err(|e| classify("RegisterTaskDefinition", e))?;
                tracing::info!(%family, image = %spec.image, "registered an ECS task definition");
                out.task_definition()
                    .and_then(|d| d.task_definition_arn())
                    .ok_or_else(|| {
                        ProviderError::Transient("RegisterTaskDefinition returned no ARN".into())
                    })?
                    .to_string()
            }
        };
        known.insert(family, arn.clone());
        Ok(arn)
    }

    /// A task RunTask already started for this launch key, running or stopped.
    async fn started_by(&self, key: &str) -> Result<Option<String>> {
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            self.ready().await;
            let out = self
                .ecs
                .list_tasks()
                .cluster(&self.config.cluster)
                .started_by(key)
                .desired_status(status)
                .send()
                .await
                .map_err(|e| classify("ListTasks", e))?;
            if let Some(arn) = out.task_arns().first() {
                return Ok(Some(arn.clone()));
            }
        }
        Ok(None)
    }

    fn config_tags(&self) -> Vec<Tag> {
        tags(self.config.tags.iter())
    }

    fn network(&self) -> Result<NetworkConfiguration> {
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.config.subnets.clone()))
            .set_security_groups(Some(self.config.security_groups.clone()))
            .assign_public_ip(if self.config.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| ProviderError::Config(format!("subnets: {e}")))?;
        Ok(NetworkConfiguration::builder()
            .awsvpc_configuration(vpc)
            .build())
    }

    fn log_stream(&self, handle: &Handle) -> String {
        self.stream_of(&handle.provider_ref, &self.containers.of(&handle.provider_ref))
    }

    /// The log stream of a task's container.
    fn stream_of(&self, task_arn: &str, container: &str) -> String {
        let task_id = task_arn.rsplit('/').next().unwrap_or_default();
        format!("{}/{container}/{task_id}", self.config.log_stream_prefix)
    }

    /// The last `max` bytes of a task's container's log; empty where there is no log (no
    /// `log_group`, or a container that never started).
    async fn container_tail(&self, task_arn: &str, container: &str, max: usize) -> Result<String> {
        let Some(group) = &self.config.log_group else {
            return Ok(String::new());
        };
        let name = self.stream_of(task_arn, container);
        let stream = logs::Stream {
            logs: &self.logs,
            limiter: &self.limiter,
            group,
            name: &name,
        };
        let query = LogQuery {
            cursor: None,
            tail_bytes: Some(max),
        };
        match stream.read(&query).await {
            Ok(chunk) => Ok(chunk.text),
            Err(ProviderError::NotFound(_)) => Ok(String::new()),
            Err(e) => Err(e),
        }
    }

    /// A spec's size and options, or why it cannot run here (the message names the field).
    fn checked(&self, spec: &WorkloadSpec) -> Result<(sizing::Size, Options)> {
        if spec.resources.gpu.is_some() {
            return Err(ProviderError::InvalidSpec(
                "resources.gpu: Fargate has no GPUs".into(),
            ));
        }
        let size = sizing::fit(spec.resources.cpu, spec.resources.memory_bytes)
            .map_err(ProviderError::InvalidSpec)?;
        if let Some(bytes) = spec.resources.ephemeral_storage_bytes {
            if bytes > 200 << 30 {
                return Err(ProviderError::InvalidSpec(
                    "resources.ephemeral_storage: Fargate allows at most 200 GiB".into(),
                ));
            }
        }
        let options = Options::allowed(spec.provider_options.as_ref(), &self.config)?;
        if let Some(plan) = &spec.steps {
            if options.task_definition.is_some() {
                return Err(ProviderError::InvalidSpec(
                    "provider_options.ecs.task_definition: a job of several steps runs in a \
                     task definition of offload's own"
                        .into(),
                ));
            }
            if let Some(why) = steps::refusal(&self.config, plan) {
                return Err(ProviderError::InvalidSpec(why));
            }
        }
        Ok((size, options))
    }
}

/// ECS tags from key/value pairs: characters ECS refuses become `_`, lengths are cut to
/// its limits, and `aws:` keys (reserved) are skipped.
fn tags<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<Tag> {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_alphanumeric() || " _.:/=+-@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    };
    pairs
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("aws:") && !k.is_empty())
        .map(|(k, v)| {
            Tag::builder()
                .key(clean(k, 128))
                .value(clean(v, 256))
                .build()
        })
        .collect()
}

#[async_trait::async_trait]
impl Provider for Ecs {
    fn kind(&self) -> &'static str {
        "ecs"
    }

    fn set_replicas(&self, live: usize) {
        self.limiter.set_replicas(live);
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_cpu: sizing::MAX_CPU,
            max_memory_bytes: sizing::MAX_MEMORY_BYTES,
            gpu_kinds: vec![],
            spot: self.config.spot(),
            arch: vec![match self.config.cpu_architecture {
                Arch::X86_64 => "x86_64".into(),
                Arch::Arm64 => "arm64".into(),
            }],
            max_observe_batch: DESCRIBE_BATCH,
            max_tail_batch: logs::MAX_STREAMS_PER_FILTER,
        }
    }

    fn price_sheet(&self, read: &ReadPrices) -> Pricing {
        pricing::sheet(&self.config, read)
    }

    /// The Fargate task size the request is rounded up to: what Fargate bills.
    fn billed_resources(&self, resources: &Resources) -> Resources {
        pricing::billed_resources(resources)
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        self.checked(spec)?;
        match &spec.steps {
            Some(plan) => steps::overrides(&self.config, plan, &BTreeMap::new()).map(|_| ()),
            None => Ok(()),
        }
    }

    fn runs_steps(&self) -> bool {
        true
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        let spec = &launch.spec;
        let (size, opts) = self.checked(spec)?;
        let followed = spec.steps.as_ref().map(steps::followed);
        let container = followed.as_deref().unwrap_or(opts.container());
        let handle = |arn: String| {
            self.containers.remember(&arn, container);
            Handle {
                key: launch.key.clone(),
                provider_ref: arn,
            }
        };
        if launch.fresh {
            // Nothing can exist under a key never sent: no lookup.
        } else if let Some(arn) = self.started_by(&launch.key).await? {
            tracing::info!(key = %launch.key, %arn, "adopting the ECS task this launch key started");
            return Ok(handle(arn));
        }
        let definition = match &opts.task_definition {
            Some(existing) => existing.clone(),
            None => self.task_definition(spec, size).await?,
        };

        let containers = match &spec.steps {
            Some(plan) => steps::overrides(&self.config, plan, &launch.secret_env)?,
            None => {
                // ECS overrides only the container's command, not its entrypoint: `command`
                // and `args` together become that command.
                let command: Vec<String> =
                    spec.command.iter().chain(&spec.args).cloned().collect();
                let environment = spec
                    .env
                    .iter()
                    .chain(&launch.secret_env)
                    .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                    .collect();
                vec![ContainerOverride::builder()
                    .name(container)
                    .set_command((!command.is_empty()).then_some(command))
                    .set_environment(Some(environment))
                    .build()]
            }
        };
        let mut overrides = TaskOverride::builder()
            .set_container_overrides(Some(containers))
            .cpu(size.cpu_units.to_string())
            .memory(size.memory_mib.to_string())
            .set_task_role_arn(opts.task_role_arn.clone());
        if let Some(bytes) = spec
            .resources
            .ephemeral_storage_bytes
            .filter(|b| *b > 20 << 30)
        {
            overrides = overrides.ephemeral_storage(
                EphemeralStorage::builder()
                    .size_in_gib(bytes.div_ceil(1 << 30) as i32)
                    .build(),
            );
        }

        let ids = BTreeMap::from([
            ("offload:job-id".to_string(), launch.job_id.clone()),
            ("offload:launch-key".to_string(), launch.key.clone()),
        ]);
        let mut task_tags = tags(ids.iter().chain(&self.config.tags).chain(&spec.labels));
        task_tags.truncate(MAX_TAGS);

        let mut request = self
            .ecs
            .run_task()
            .cluster(&self.config.cluster)
            .task_definition(definition)
            .count(1)
            .network_configuration(self.network()?)
            .overrides(overrides.build())
            .client_token(&launch.key)
            .started_by(&launch.key)
            .set_tags(Some(task_tags))
            .propagate_tags(PropagateTags::TaskDefinition)
            .set_platform_version(self.config.platform_version.clone());
        request = if self.config.on_demand_only() {
            request.launch_type(LaunchType::Fargate)
        } else {
            let strategy = self
                .config
                .capacity
                .iter()
                .map(|c| {
                    CapacityProviderStrategyItem::builder()
                        .capacity_provider(c.provider.as_str())
                        .weight(c.weight)
                        .base(c.base)
                        .build()
                        .map_err(|e| ProviderError::Config(format!("capacity: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            request.set_capacity_provider_strategy(Some(strategy))
        };
        self.ready().await;
        let out = request.send().await.map_err(|e| classify("RunTask", e))?;
        if let Some(arn) = out.tasks().first().and_then(|t| t.task_arn()) {
            return Ok(handle(arn.to_string()));
        }
        Err(match out.failures().first() {
            Some(f) => errors::run_task_failure(f.reason().unwrap_or("no reason"), f.detail()),
            None => {
                ProviderError::Transient("RunTask returned neither a task nor a failure".into())
            }
        })
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        let mut observations = Vec::with_capacity(handles.len());
        // Tasks whose filer failed: which observation, whose step, its container.
        let mut filer_failed = vec![];
        for chunk in handles.chunks(DESCRIBE_BATCH) {
            self.ready().await;
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.config.cluster)
                .set_tasks(Some(chunk.iter().map(|h| h.provider_ref.clone()).collect()))
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", e))?;
            let by_arn: HashMap<&str, _> = out
                .tasks()
                .iter()
                .filter_map(|t| Some((t.task_arn()?, t)))
                .collect();
            let mut missing = self.missing.lock().unwrap();
            for handle in chunk {
                let (phase, ran) = match by_arn.get(handle.provider_ref.as_str()) {
                    Some(task) => {
                        missing.remove(&handle.provider_ref);
                        self.containers
                            .remember(&handle.provider_ref, status::container(task));
                        let phase = status::phase(task);
                        if let (Phase::Exited { .. }, Some((role, name, _))) =
                            (&phase, steps::failed(task).filter(|(r, _, _)| r.is_filer()))
                        {
                            filer_failed.push((observations.len(), role, name.to_string()));
                        }
                        (phase, status::ran(task))
                    }
                    None => {
                        let rounds = missing.entry(handle.provider_ref.clone()).or_default();
                        *rounds += 1;
                        if *rounds <= self.config.missing_retries {
                            continue;
                        }
                        missing.remove(&handle.provider_ref);
                        let phase = Phase::Exited {
                            exit_code: None,
                            reason: Some(format!(
                                "ECS no longer reports task {}: missing from DescribeTasks {} times",
                                handle.provider_ref,
                                self.config.missing_retries + 1
                            )),
                        };
                        (phase, None)
                    }
                };
                observations.push(Observation {
                    handle: handle.clone(),
                    phase,
                    ran,
                });
            }
        }
        // A failed filer says why (the URL and the cause) in its log; the task does not.
        // A log that cannot be read leaves the reason the task gives, not the round undone.
        for (at, role, container) in filer_failed {
            let seen = &mut observations[at];
            let said = match self.container_tail(&seen.handle.provider_ref, &container, 4096).await {
                Ok(said) => said,
                Err(e) => {
                    tracing::warn!(task = %seen.handle.provider_ref, error = %e, "could not read why the filer failed");
                    String::new()
                }
            };
            if let Phase::Exited { reason, .. } = &mut seen.phase {
                *reason = offload_provider::steps::filer_reason(role, &said, reason.take());
            }
        }
        Ok(observations)
    }

    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()> {
        self.ready().await;
        let reason: String = reason.chars().take(255).collect();
        match self
            .ecs
            .stop_task()
            .cluster(&self.config.cluster)
            .task(&handle.provider_ref)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("StopTask", e) {
                // ECS forgets stopped tasks: one it no longer knows has nothing left to stop.
                ProviderError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        let Some(group) = &self.config.log_group else {
            return Ok(LogChunk::default());
        };
        let stream = self.log_stream(handle);
        logs::Stream {
            logs: &self.logs,
            limiter: &self.limiter,
            group,
            name: &stream,
        }
        .read(query)
        .await
    }

    async fn tails(&self, handles: &[Handle], max_bytes: usize) -> Result<HashMap<String, String>> {
        let Some(group) = &self.config.log_group else {
            return Ok(handles
                .iter()
                .map(|h| (h.key.clone(), String::new()))
                .collect());
        };
        let streams: Vec<_> = handles
            .iter()
            .map(|h| (h.key.clone(), self.log_stream(h)))
            .collect();
        logs::tails(&self.logs, &self.limiter, group, &streams, max_bytes).await
    }

    /// One DescribeTasks for the task, then each step's container's log: ECS tells each
    /// one's exit code, and when the task, not each container, started and stopped.
    async fn step_runs(&self, handle: &Handle, tail_bytes: usize) -> Result<Vec<StepRun>> {
        self.ready().await;
        let out = self
            .ecs
            .describe_tasks()
            .cluster(&self.config.cluster)
            .tasks(&handle.provider_ref)
            .send()
            .await
            .map_err(|e| classify("DescribeTasks", e))?;
        let Some(task) = out.tasks().first() else {
            return Ok(vec![]);
        };
        let ran = status::ran(task);
        let ordered = steps::in_order(task);
        let mut runs = Vec::with_capacity(ordered.len());
        for (i, (role, container)) in ordered.iter().enumerate() {
            let name = container.name().unwrap_or_default();
            let text = match container.exit_code() {
                Some(_) => self.container_tail(&handle.provider_ref, name, tail_bytes).await?,
                None => String::new(),
            };
            runs.push(StepRun {
                role: *role,
                exit_code: offload_provider::steps::said_exit(&text).or(container.exit_code()),
                started: ran.filter(|_| i == 0).map(|r| r.started),
                finished: ran.filter(|_| i + 1 == ordered.len()).map(|r| r.finished),
                log: text,
            });
        }
        Ok(runs)
    }

    /// ECS forgets stopped tasks on its own (after about an hour): nothing to delete but
    /// what this provider remembers about the task.
    async fn release(&self, handle: &Handle) -> Result<()> {
        self.containers.forget(&handle.provider_ref);
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        self.ready().await;
        self.ecs
            .list_tasks()
            .cluster(&self.config.cluster)
            .max_results(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("ListTasks", e))
    }
}
