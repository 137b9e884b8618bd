//! The seam between offload's engine and a container runtime.
//!
//! Every runtime (the local host, the simulator, Kubernetes, ECS Fargate, ACI, Container
//! Apps, Cloud Run) implements [`Provider`]. The engine owns every call out; a provider only
//! translates. The contract, shaped after Virtual Kubelet's `PodLifecycleHandler`:
//!
//! - [`Provider::launch`] is idempotent for the same [`Launch::key`]: launching a key that
//!   already has a workload returns that workload's [`Handle`] and starts nothing new. The
//!   engine stores the key before it calls, so a crash never launches a job twice.
//! - [`Provider::observe`] is batched: one call answers for many handles.
//! - Errors say what the engine must do next ([`ProviderError`]), not what went wrong inside.
//! - Each provider declares what it can run ([`Capabilities`]) and what it costs
//!   ([`PriceSheet`]), so routing needs no provider-specific code.
//!
//! No cloud SDK belongs in this crate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod budget;
pub mod figures;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod one_by_one;
pub mod steps;
pub mod timed_log;
pub mod timeouts;

/// What a provider is asked to run: the job's spec, resolved for launching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub name: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    pub timeout_seconds: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// The per-kind escape hatch, already picked out for this provider's kind.
    pub provider_options: Option<serde_json::Value>,
    /// Several containers run one after another in this one workload (a GA4GH TES task's
    /// executors, with the gateway's filer around them); `None` for a workload of one
    /// container, `image` with `command` and `args`. Only providers that say so
    /// ([`Provider::runs_steps`]) take it; the others refuse it ([`refuse_steps`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepPlan>,
}

/// The containers of a workload of several steps, in the order they run, and what they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPlan {
    pub steps: Vec<Step>,
    /// Absolute directories every step sees at the same path, empty when the workload
    /// starts: the task's volumes and the folders of its inputs and outputs.
    pub volumes: Vec<String>,
}

/// One container of a workload of several steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub role: StepRole,
    /// The image; empty for the filer, whose image (or program) is the provider's.
    pub image: String,
    /// argv; for the filer, the arguments after its program (`filer stage-in`).
    pub command: Vec<String>,
    /// Where the command runs (absolute); the image's own directory when absent.
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Absolute paths: a file piped to stdin, files that take stdout and stderr.
    pub stdin: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// A non-zero exit is recorded and the next step runs all the same.
    pub ignore_error: bool,
    /// For the filer: folders of the gateway's host it may read and write (the tenant's
    /// `file://` allow-lists), which only a provider on that host gives it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_reads: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_writes: Vec<String>,
}

/// Whose a step is: the task's own command, or the gateway's filer, which acts with the
/// deployment's credentials (given to it alone) and whose failure is not the task's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRole {
    /// Downloads the inputs before the first executor.
    StageIn,
    Executor,
    /// Uploads the outputs after the last executor.
    StageOut,
}

impl StepRole {
    pub fn is_filer(self) -> bool {
        self != StepRole::Executor
    }
}

/// How one step of an ended (or running) workload went, as its provider saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    pub role: StepRole,
    pub exit_code: Option<i32>,
    pub started: Option<std::time::SystemTime>,
    pub finished: Option<std::time::SystemTime>,
    /// The end of its output (stdout and stderr interleaved, where they were not sent to
    /// files), as much as asked for.
    pub log: String,
}

/// Why a provider that runs one container per workload refuses `spec`, naming the field.
pub fn refuse_steps(kind: &str, spec: &WorkloadSpec) -> Result<()> {
    match &spec.steps {
        None => Ok(()),
        Some(_) => Err(ProviderError::InvalidSpec(format!(
            "steps: the {kind} provider runs one container per job; several executors, staged \
             inputs and outputs or volumes need a provider that runs steps (local, kubernetes, ecs, aci)"
        ))),
    }
}

/// Compute a workload asks for, already parsed into numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// vCPUs, fractional.
    pub cpu: f64,
    pub memory_bytes: u64,
    pub gpu: Option<Gpu>,
    pub ephemeral_storage_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub count: u32,
    /// A GPU kind such as `nvidia-tesla-t4`; `None` means any kind the provider has.
    pub kind: Option<String>,
}

/// One launch: the spec, its secrets, and the key that makes it idempotent.
#[derive(Clone)]
pub struct Launch {
    /// Deterministic from the job id and attempt number; a valid DNS-1123 label.
    pub key: String,
    pub job_id: String,
    pub attempt: u32,
    pub spec: WorkloadSpec,
    /// Values are secret: providers pass them to the workload and nowhere else.
    pub secret_env: BTreeMap<String, String>,
    /// No earlier call was made with this key (the engine stored it a moment ago), so
    /// nothing can exist under it yet: a provider may skip looking for a workload to adopt.
    pub fresh: bool,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("key", &self.key)
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("fresh", &self.fresh)
            .field("spec", &self.spec)
            .field("secret_env", &self.secret_env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a launched workload lives at its provider (pod name, task ARN, group id, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handle {
    pub key: String,
    pub provider_ref: String,
}

/// Where a workload is in its life, as the provider last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Accepted, not yet running (scheduling, pulling, provisioning).
    Starting {
        reason: Option<String>,
    },
    Running,
    /// Ended. `exit_code` is absent when the runtime never reported one.
    Exited {
        exit_code: Option<i32>,
        reason: Option<String>,
    },
    /// The provider no longer knows the workload; the engine may launch a new attempt.
    Lost {
        reason: String,
    },
    /// The runtime took the workload back (a spot interruption, a preemption, an
    /// eviction): not the job's doing, so not its failure. The engine launches a new
    /// attempt.
    Preempted {
        reason: String,
    },
    /// Accepted, but the runtime cannot place it for want of capacity and has given up
    /// trying soon (a pod unschedulable past the provider's limit). Not final: the engine
    /// may stop it and move the job to another provider, or leave it waiting here.
    NoCapacity {
        reason: String,
    },
}

impl Phase {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Phase::Exited { .. } | Phase::Lost { .. } | Phase::Preempted { .. }
        )
    }
}

/// One observation of one handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub handle: Handle,
    pub phase: Phase,
    /// When the runtime says the workload started and stopped running, where it reports
    /// both (an ended workload): what it bills, rather than what the gateway saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran: Option<RunTimes>,
}

/// A workload's run as its runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimes {
    pub started: std::time::SystemTime,
    pub finished: std::time::SystemTime,
}

impl RunTimes {
    /// Both times, when the runtime gave both and they are in order.
    pub fn of(
        started: Option<std::time::SystemTime>,
        finished: Option<std::time::SystemTime>,
    ) -> Option<RunTimes> {
        let (started, finished) = (started?, finished?);
        (finished >= started).then_some(RunTimes { started, finished })
    }

    /// Whole seconds run, rounded up.
    pub fn seconds(&self) -> u64 {
        let d = self.finished.duration_since(self.started).unwrap_or_default();
        d.as_millis().div_ceil(1000) as u64
    }
}

/// A piece of a workload's log, and where to continue reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogChunk {
    pub text: String,
    /// Opaque; pass it back as [`LogQuery::cursor`] to read on.
    pub cursor: Option<String>,
}

impl LogChunk {
    /// The part of a whole log that `query` asks for, for runtimes whose log API returns
    /// the whole log each time: the cursor is a byte offset into it.
    pub fn from_whole(text: &str, query: &LogQuery) -> LogChunk {
        let from = query
            .cursor
            .as_deref()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|&at| at <= text.len() && text.is_char_boundary(at))
            .unwrap_or(0);
        let new = &text[from..];
        let chunk = match query.tail_bytes {
            Some(max) => tail_str(new, max),
            None => new,
        };
        LogChunk {
            text: chunk.to_string(),
            cursor: Some(text.len().to_string()),
        }
    }
}

/// Which part of a log to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    /// Continue after an earlier chunk.
    pub cursor: Option<String>,
    /// Only the last bytes (at most this many); the chunk's cursor still points at the end.
    pub tail_bytes: Option<usize>,
}

/// What a provider can run. Routing uses it to skip providers that cannot hold a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub max_cpu: f64,
    pub max_memory_bytes: u64,
    /// GPU kinds this provider may request; empty means no GPU work.
    pub gpu_kinds: Vec<String>,
    pub spot: bool,
    pub arch: Vec<String>,
    /// How many handles one [`Provider::observe`] call may carry.
    pub max_observe_batch: usize,
    /// How many ended workloads' log tails one [`Provider::tails`] call reads: 0 where the
    /// runtime reads one log per call.
    pub max_tail_batch: usize,
}

impl Capabilities {
    /// Why this provider cannot run `resources`, or `None` when it can.
    pub fn refusal(&self, resources: &Resources) -> Option<String> {
        if resources.cpu > self.max_cpu {
            return Some(format!(
                "cpu {} exceeds the limit of {}",
                resources.cpu, self.max_cpu
            ));
        }
        if resources.memory_bytes > self.max_memory_bytes {
            return Some(format!(
                "memory {} bytes exceeds the limit of {} bytes",
                resources.memory_bytes, self.max_memory_bytes
            ));
        }
        if let Some(gpu) = &resources.gpu {
            if self.gpu_kinds.is_empty() {
                return Some("no GPU kinds are enabled".into());
            }
            if let Some(kind) = &gpu.kind {
                if !self.gpu_kinds.iter().any(|k| k == kind) {
                    return Some(format!(
                        "GPU kind {kind} is not one of {}",
                        self.gpu_kinds.join(", ")
                    ));
                }
            }
        }
        None
    }
}

/// What running costs, in US dollars, and how the runtime bills it, so routing can
/// compare providers and estimate what a job will cost.
///
/// Prices are per hour of one vCPU, one GiB (2^30 bytes) of memory, which is how offload
/// counts the "GB" of cloud price lists, and one GPU of a kind. Time is billed the way
/// most runtimes bill it: in steps of `billing_increment_seconds`, and never less than
/// `min_billed_seconds` (Fargate: per second with a one-minute minimum; ACI and GKE
/// Autopilot: per second, no minimum). The size billed is the provider's business:
/// estimate with [`Provider::billed_resources`], not the request as written.
///
/// `[providers.NAME.price]` deserialises this table; every field has a default, so a
/// table that only sets prices bills per second with no minimum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSheet {
    /// USD per hour of one vCPU.
    #[serde(default)]
    pub vcpu_hour: f64,
    /// USD per hour of one GiB of memory.
    #[serde(default)]
    pub gb_hour: f64,
    /// USD per hour of one GPU, by GPU kind (`nvidia-l4 = 0.67`).
    #[serde(default)]
    pub gpu_hour: BTreeMap<String, f64>,
    /// A run shorter than this many seconds is billed as this long (60 on Fargate).
    #[serde(default)]
    pub min_billed_seconds: u64,
    /// Billed time is rounded up to a multiple of this many seconds (1: per second); 0
    /// counts as 1.
    #[serde(default = "one_second")]
    pub billing_increment_seconds: u64,
}

fn one_second() -> u64 {
    1
}

impl Default for PriceSheet {
    /// Free, billed per second with no minimum.
    fn default() -> Self {
        PriceSheet {
            vcpu_hour: 0.0,
            gb_hour: 0.0,
            gpu_hour: BTreeMap::new(),
            min_billed_seconds: 0,
            billing_increment_seconds: 1,
        }
    }
}

/// What a job is expected to cost at one provider.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Dollars per hour for the resources as billed.
    pub hourly_usd: f64,
    /// The expected run time as billed: rounded up to the increment, at least the minimum.
    pub billed_seconds: u64,
    /// `hourly_usd` for `billed_seconds`.
    pub estimated_usd: f64,
}

impl PriceSheet {
    /// Dollars per hour for `resources`; `None` when a requested GPU kind has no price.
    /// A GPU request without a kind is priced at the cheapest kind on the sheet.
    pub fn hourly(&self, resources: &Resources) -> Option<f64> {
        let gib = resources.memory_bytes as f64 / (1u64 << 30) as f64;
        let mut cost = resources.cpu * self.vcpu_hour + gib * self.gb_hour;
        if let Some(gpu) = &resources.gpu {
            let per_gpu = match &gpu.kind {
                Some(kind) => *self.gpu_hour.get(kind)?,
                None => self.gpu_hour.values().copied().reduce(f64::min)?,
            };
            cost += per_gpu * gpu.count as f64;
        }
        Some(cost)
    }

    /// The seconds billed for a run of `expected` seconds: rounded up to a multiple of
    /// the increment, and at least the minimum.
    pub fn billed_seconds(&self, expected: u64) -> u64 {
        let step = self.billing_increment_seconds.max(1);
        expected
            .div_ceil(step)
            .saturating_mul(step)
            .max(self.min_billed_seconds)
    }

    /// What a run of `seconds` costs with `resources`, which should already be the size
    /// the runtime bills ([`Provider::billed_resources`]); `None` when a requested GPU
    /// kind has no price.
    pub fn estimate(&self, resources: &Resources, seconds: u64) -> Option<Estimate> {
        let hourly_usd = self.hourly(resources)?;
        let billed_seconds = self.billed_seconds(seconds);
        Some(Estimate {
            hourly_usd,
            billed_seconds,
            estimated_usd: hourly_usd * billed_seconds as f64 / 3600.0,
        })
    }

    /// Rules serde cannot say: prices are finite and not negative.
    pub fn check(&self) -> Result<(), String> {
        let prices = [("vcpu_hour", self.vcpu_hour), ("gb_hour", self.gb_hour)]
            .into_iter()
            .map(|(name, v)| (name.to_string(), v))
            .chain(
                self.gpu_hour
                    .iter()
                    .map(|(kind, v)| (format!("gpu_hour.{kind}"), *v)),
            );
        for (name, value) in prices {
            if !value.is_finite() || value < 0.0 {
                return Err(format!(
                    "{name}: {value} is not a price (USD per hour, 0 or more)"
                ));
            }
        }
        Ok(())
    }
}

/// Errors typed by what the engine must do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The job cannot run here as specified: fail it (the user's fault), or route elsewhere.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// No room right now (quota, capacity): try another provider, or later.
    #[error("no capacity: {0}")]
    Capacity(String),
    /// Slow down: call again after `retry_after`.
    #[error("throttled, retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    /// A passing fault: retry with backoff.
    #[error("transient error: {0}")]
    Transient(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Credentials or configuration are wrong: retrying will not help.
    #[error("auth or config error: {0}")]
    Config(String),
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// A stream of observations pushed by the provider (a Kubernetes watch, say).
pub type ObservationStream = futures::stream::BoxStream<'static, Observation>;

/// A container runtime, as the engine sees it.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The kind tag (`local`, `sim`, `kubernetes`, `ecs`, `aci`, `aca`, `cloudrun`).
    fn kind(&self) -> &'static str;

    /// How many gateway replicas share this provider's cloud account now: a provider
    /// with a rate budget ([`budget::Budget`]) takes its share of it.
    fn set_replicas(&self, _live: usize) {}

    fn capabilities(&self) -> Capabilities;

    /// What this runtime costs and how it bills time: its built-in list prices, each
    /// replaced by the figure `read` from its cloud's catalog where there is one, with
    /// where each figure came from.
    fn price_sheet(&self, read: &figures::ReadPrices) -> figures::Pricing;

    /// The size this runtime bills for a request: the size it would launch. Fargate bills
    /// the task size it rounds the request up to, ACI its container group's allocation;
    /// the default is the request as given. Price an estimate with this, not the request:
    /// `sheet.estimate(&provider.billed_resources(&request), seconds)`.
    fn billed_resources(&self, resources: &Resources) -> Resources {
        resources.clone()
    }

    /// Checks a spec before anything is launched; kind-specific rules go here.
    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        if !self.runs_steps() {
            refuse_steps(self.kind(), spec)?;
        }
        match self.capabilities().refusal(&spec.resources) {
            Some(why) => Err(ProviderError::InvalidSpec(why)),
            None => Ok(()),
        }
    }

    /// The JSON Schema of this kind's `provider_options`, for the OpenAPI document a
    /// gateway serves. The default says only "an object"; a provider whose options are
    /// fixed says which.
    fn options_schema(&self) -> serde_json::Value {
        serde_json::json!({"type": "object"})
    }

    /// Starts the workload, or returns the existing one for the same key.
    async fn launch(&self, launch: &Launch) -> Result<Handle>;

    /// Observes many workloads in one round; handles the provider does not know come back
    /// as [`Phase::Lost`].
    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>>;

    /// A push stream of observations, for providers that can watch. The engine still
    /// calls [`Provider::observe`] now and then as a safety net.
    fn subscribe(&self) -> Option<ObservationStream> {
        None
    }

    /// Asks the workload to stop. Idempotent; an already finished workload is no error.
    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()>;

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk>;

    /// The last `max_bytes` of each of these ended workloads' logs, by launch key, read
    /// together in as few calls as the runtime allows (up to
    /// [`Capabilities::max_tail_batch`] handles; never called where that is 0). A workload
    /// left out of the answer is read on its own with [`Provider::logs`].
    async fn tails(
        &self,
        _handles: &[Handle],
        _max_bytes: usize,
    ) -> Result<std::collections::HashMap<String, String>> {
        Ok(Default::default())
    }

    /// Whether this provider runs workloads of several steps ([`WorkloadSpec::steps`]).
    fn runs_steps(&self) -> bool {
        false
    }

    /// How each step of a workload of several steps went, in order, with the last
    /// `tail_bytes` of each one's output; none for a workload of one container, or where
    /// the provider runs no steps.
    async fn step_runs(&self, _handle: &Handle, _tail_bytes: usize) -> Result<Vec<StepRun>> {
        Ok(vec![])
    }

    /// Deletes a finished workload once its outcome and log tail are stored.
    async fn release(&self, handle: &Handle) -> Result<()>;

    /// Health check: can this provider be reached with its credentials?
    async fn check(&self) -> Result<()>;

    /// Every workload this provider holds that offload made (found by its labels or tags),
    /// for the engine's orphan sweep. Providers that cannot list them, or whose workloads
    /// go away on their own, return none.
    async fn managed(&self) -> Result<Vec<Handle>> {
        Ok(vec![])
    }
}

/// Whether `name` is a DNS-1123 label (1 to 63 of `a-z`, `0-9` and `-`, no `-` at either
/// end), as launch keys are and as pod and container group names must be.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A secret from a provider's configuration (a token, a registry password): used as it
/// is, never shown by Debug (or in logs).
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a job's `provider_options.KIND` is refused by a provider that takes none (an empty
/// object is fine), since networks, identities and registries are the operator's to set.
/// `service` names the service, `settings` what its operator sets instead.
pub fn options_refusal(
    kind: &str,
    service: &str,
    settings: &str,
    options: Option<&serde_json::Value>,
) -> Option<String> {
    match options {
        None => None,
        Some(serde_json::Value::Object(map)) if map.is_empty() => None,
        Some(_) => Some(format!(
            "provider_options.{kind}: {service} takes no per-job options; {settings} are set in \
             the provider's configuration"
        )),
    }
}

/// A short name for `key`, stable and distinct per key, for runtimes whose names are
/// shorter than a launch key can be (Container Apps jobs: under 32 characters): `offload-`
/// and the first 22 hex digits of the key's SHA-256, 30 characters of `a-z0-9-`. The key
/// itself goes in the workload's tags or labels.
pub fn short_name(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..11].iter().map(|b| format!("{b:02x}")).collect();
    format!("offload-{hex}")
}

/// An RFC 3339 instant (as the clouds' APIs write times), if `text` is one.
pub fn rfc3339(text: &str) -> Option<std::time::SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(std::time::SystemTime::from)
}

/// Cuts `text` to its last `max` bytes, on a character boundary.
pub fn tail_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: f64, gib: u64, gpu: Option<Gpu>) -> Resources {
        Resources {
            cpu,
            memory_bytes: gib << 30,
            gpu,
            ephemeral_storage_bytes: None,
        }
    }

    #[test]
    fn capabilities_name_the_limit_that_refuses() {
        let caps = Capabilities {
            max_cpu: 4.0,
            max_memory_bytes: 16 << 30,
            gpu_kinds: vec!["nvidia-l4".into()],
            spot: false,
            arch: vec!["x86_64".into()],
            max_observe_batch: 100,
            max_tail_batch: 0,
        };
        assert_eq!(caps.refusal(&res(4.0, 16, None)), None);
        assert!(caps.refusal(&res(8.0, 1, None)).unwrap().contains("cpu 8"));
        assert!(caps
            .refusal(&res(1.0, 32, None))
            .unwrap()
            .contains("memory"));
        let t4 = Gpu {
            count: 1,
            kind: Some("nvidia-t4".into()),
        };
        assert!(caps
            .refusal(&res(1.0, 1, Some(t4)))
            .unwrap()
            .contains("nvidia-t4"));
        let any = Gpu {
            count: 1,
            kind: None,
        };
        assert_eq!(caps.refusal(&res(1.0, 1, Some(any))), None);
    }

    #[test]
    fn price_sheet_adds_cpu_memory_and_gpu() {
        let sheet = PriceSheet {
            vcpu_hour: 0.04,
            gb_hour: 0.005,
            gpu_hour: [("a".to_string(), 1.0), ("b".to_string(), 0.5)].into(),
            ..PriceSheet::default()
        };
        let cost = sheet.hourly(&res(2.0, 4, None)).unwrap();
        assert!((cost - 0.1).abs() < 1e-9, "{cost}");
        let any = Gpu {
            count: 2,
            kind: None,
        };
        let cost = sheet.hourly(&res(0.0, 0, Some(any))).unwrap();
        assert!((cost - 1.0).abs() < 1e-9, "cheapest kind twice: {cost}");
        let unknown = Gpu {
            count: 1,
            kind: Some("c".into()),
        };
        assert_eq!(sheet.hourly(&res(0.0, 0, Some(unknown))), None);
    }

    fn sheet(min: u64, step: u64) -> PriceSheet {
        PriceSheet {
            vcpu_hour: 0.036,
            gb_hour: 0.0036,
            gpu_hour: [("nvidia-l4".to_string(), 0.72)].into(),
            min_billed_seconds: min,
            billing_increment_seconds: step,
        }
    }

    #[test]
    fn billed_time_has_a_minimum_and_rounds_up_to_the_increment() {
        let per_second = sheet(0, 1);
        assert_eq!(per_second.billed_seconds(0), 0);
        assert_eq!(per_second.billed_seconds(1), 1);
        assert_eq!(per_second.billed_seconds(61), 61);

        let fargate = sheet(60, 1);
        assert_eq!(fargate.billed_seconds(0), 60);
        assert_eq!(fargate.billed_seconds(10), 60);
        assert_eq!(fargate.billed_seconds(60), 60);
        assert_eq!(fargate.billed_seconds(61), 61);

        let per_minute = sheet(0, 60);
        assert_eq!(per_minute.billed_seconds(1), 60);
        assert_eq!(per_minute.billed_seconds(60), 60);
        assert_eq!(per_minute.billed_seconds(61), 120);

        // A minimum that is not a multiple of the increment still holds as written.
        let odd = sheet(90, 60);
        assert_eq!(odd.billed_seconds(10), 90);
        assert_eq!(odd.billed_seconds(91), 120);

        // 0 as an increment means per second, not a division by zero.
        assert_eq!(sheet(0, 0).billed_seconds(7), 7);
        assert_eq!(sheet(0, 1).billed_seconds(u64::MAX), u64::MAX);
        assert_eq!(sheet(0, 60).billed_seconds(u64::MAX), u64::MAX);
    }

    #[test]
    fn estimates_price_the_billed_time() {
        // 1 vCPU + 1 GiB = $0.0396/hour; 10 s with a 60 s minimum is billed as a minute.
        let est = sheet(60, 1).estimate(&res(1.0, 1, None), 10).unwrap();
        assert_eq!(est.billed_seconds, 60);
        assert!((est.hourly_usd - 0.0396).abs() < 1e-12, "{est:?}");
        assert!((est.estimated_usd - 0.00066).abs() < 1e-12, "{est:?}");

        // GPUs are billed per GPU-hour by kind, times the count, on top of CPU and memory.
        let l4 = Gpu {
            count: 2,
            kind: Some("nvidia-l4".into()),
        };
        let est = sheet(0, 1).estimate(&res(4.0, 16, Some(l4)), 1800).unwrap();
        let hourly = 4.0 * 0.036 + 16.0 * 0.0036 + 2.0 * 0.72;
        assert!((est.hourly_usd - hourly).abs() < 1e-12, "{est:?}");
        assert!((est.estimated_usd - hourly / 2.0).abs() < 1e-12, "{est:?}");

        let t4 = Gpu {
            count: 1,
            kind: Some("nvidia-tesla-t4".into()),
        };
        assert_eq!(sheet(0, 1).estimate(&res(1.0, 1, Some(t4)), 60), None);
    }

    #[test]
    fn the_price_table_takes_billing_rules_and_defaults_to_per_second() {
        let only_prices: PriceSheet =
            serde_json::from_value(serde_json::json!({"vcpu_hour": 0.04, "gb_hour": 0.004}))
                .unwrap();
        assert_eq!(only_prices.min_billed_seconds, 0);
        assert_eq!(only_prices.billing_increment_seconds, 1);
        assert_eq!(
            only_prices,
            PriceSheet {
                vcpu_hour: 0.04,
                gb_hour: 0.004,
                ..PriceSheet::default()
            }
        );

        let rules: PriceSheet = serde_json::from_value(serde_json::json!({
            "vcpu_hour": 0.04, "gb_hour": 0.004, "gpu_hour": {"nvidia-l4": 0.7},
            "min_billed_seconds": 60, "billing_increment_seconds": 1,
        }))
        .unwrap();
        assert_eq!(rules.min_billed_seconds, 60);
        assert_eq!(rules.gpu_hour["nvidia-l4"], 0.7);

        let unknown = serde_json::from_value::<PriceSheet>(serde_json::json!({"minimum": 60}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn prices_must_be_finite_and_not_negative() {
        assert_eq!(sheet(60, 1).check(), Ok(()));
        let negative = PriceSheet {
            vcpu_hour: -1.0,
            ..PriceSheet::default()
        };
        assert!(negative.check().unwrap_err().starts_with("vcpu_hour"));
        let nan_gpu = PriceSheet {
            gpu_hour: [("nvidia-l4".to_string(), f64::NAN)].into(),
            ..PriceSheet::default()
        };
        assert!(nan_gpu
            .check()
            .unwrap_err()
            .starts_with("gpu_hour.nvidia-l4"));
    }

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail_str("abc", 10), "abc");
        assert_eq!(tail_str("abcdef", 2), "ef");
        assert_eq!(tail_str("aé", 1), "");
        assert_eq!(tail_str("aéb", 2), "b");
    }
}
