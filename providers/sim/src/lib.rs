//! The `sim` provider: a simulated container runtime for tests, demos and benchmarks.
//!
//! A workload's life is a plan (start latency, run time, exit code, output) fixed at
//! launch; its phase at any moment follows from the wall clock, so the simulator needs
//! no background task. Faults are injected with configured probabilities: throttling,
//! transient errors and capacity errors on launch, transient errors on observe,
//! workloads that get lost and workloads that are never placed. An ended workload
//! reports when it ran, as a runtime reports what it bills.
//!
//! Every launch call is appended to a record file (when one is configured) before it
//! returns: `created` when a workload was made, `adopted` when the key already had one.
//! The record is the simulated runtime itself, shared by every gateway process that names
//! it (replicas, or a gateway and its restart): each reads the lines the others appended
//! before it answers, and a launch decides and appends under an exclusive file lock, so
//! that one key creates one workload whichever process asks. A test reads it as the audit
//! trail of launches: no key may ever have two `created` lines.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    tail_str, Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, PriceSheet,
    Provider, ProviderError, Result, RunTimes, WorkloadSpec,
};
use serde::{Deserialize, Serialize};

/// `[providers.NAME]` settings for `kind = "sim"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "SimConfig")]
pub struct Config {
    /// How long a workload takes to start, in milliseconds.
    pub start_ms: u64,
    /// How long a workload runs once started, in milliseconds.
    pub run_ms: u64,
    /// The exit code a workload ends with.
    pub exit_code: i32,
    /// Where launches are recorded; without it the simulator forgets everything on restart.
    pub record: Option<PathBuf>,
    /// Faults to inject, each a probability from 0 to 1.
    pub faults: Faults,
    /// The most vCPUs a job sent here may ask for.
    pub max_cpu: f64,
    /// The most memory a job sent here may ask for, in bytes.
    pub max_memory_bytes: u64,
    /// The GPU kinds the simulated runtime has.
    pub gpu_kinds: Vec<String>,
    /// Whether the simulated runtime is spot capacity.
    pub spot: bool,
    /// The most workloads one observe call looks at.
    pub max_observe_batch: usize,
    /// What the simulated runtime costs and how it bills, in the same table as every
    /// provider's `price` (`vcpu_hour`, `gb_hour`, `gpu_hour`, `min_billed_seconds`,
    /// `billing_increment_seconds`), so tests can model any runtime. Free by default.
    pub price: PriceSheet,
    /// The seed of the fault injection's random numbers, for runs that repeat; unset, a
    /// random one.
    pub seed: Option<u64>,
    /// The longest `start_ms`, `run_ms` or `unschedulable_ms` a job may ask for in its
    /// options; by default a week, the longest a job may last.
    pub max_option_ms: u64,
    /// The most `capacity_errors` a job may ask for in its options; by default a million,
    /// which stands for "never" in any test.
    pub max_capacity_errors: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            start_ms: 200,
            run_ms: 1000,
            exit_code: 0,
            record: None,
            faults: Faults::default(),
            max_cpu: 16.0,
            max_memory_bytes: 64 << 30,
            gpu_kinds: vec![],
            spot: false,
            max_observe_batch: 100,
            price: PriceSheet::default(),
            seed: None,
            max_option_ms: 7 * 24 * 3600 * 1000,
            max_capacity_errors: 1_000_000,
        }
    }
}

/// Probabilities, each from 0 to 1.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// A launch answers "throttled, retry after `throttle_retry_ms`".
    pub throttle: f64,
    /// How long a throttled launch is told to wait, in milliseconds.
    pub throttle_retry_ms: u64,
    /// A launch or observe call fails with a transient error.
    pub transient: f64,
    /// A launch answers "no capacity".
    pub capacity: f64,
    /// A created workload is lost once it would have started.
    pub lost: f64,
    /// A created workload is never placed: it answers "no capacity" until it is stopped,
    /// as a pod that stays unschedulable does.
    pub unschedulable: f64,
    /// A created workload is preempted halfway through its run, as a spot one is taken
    /// back: not its job's failure.
    pub preempt: f64,
}

/// What a job may ask of the simulator through `provider_options.sim`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobOptions {
    start_ms: Option<u64>,
    run_ms: Option<u64>,
    exit_code: Option<i32>,
    output: Option<String>,
    lost: Option<bool>,
    /// The first this-many launches of each key answer "no capacity".
    capacity_errors: Option<u32>,
    /// What every stop of the workload answers: `not_found` or `transient`.
    cancel_error: Option<CancelError>,
    /// The workload is not placed for this long: it answers "no capacity" (as an
    /// unschedulable pod past its limit does) until then, or until it is stopped.
    unschedulable_ms: Option<u64>,
    /// The workload is lost after it has run this long (its node went away): an attempt
    /// that ran, and costs what it ran, before the job's next attempt.
    lost_after_ms: Option<u64>,
    /// The workload is preempted after it has run this long, as a spot workload is taken
    /// back by its runtime.
    preempt_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CancelError {
    NotFound,
    Transient,
}

/// A workload's fixed plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    start_ms: u64,
    run_ms: u64,
    exit_code: i32,
    output: String,
    lost: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancel_error: Option<CancelError>,
    /// How long the workload waits unplaced before it starts (`u64::MAX`: never placed).
    #[serde(default, skip_serializing_if = "is_zero")]
    unschedulable_ms: u64,
    /// Lost after running this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost_after_ms: Option<u64>,
    /// Preempted after running this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preempt_after_ms: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Plan {
    /// When a workload launched at `launched_ms` starts running.
    fn started_at(&self, launched_ms: u64) -> u64 {
        launched_ms
            .saturating_add(self.unschedulable_ms)
            .saturating_add(self.start_ms)
    }
}

/// One line of the record file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub op: RecordOp,
    pub key: String,
    /// Empty on `cancelled` and `released` lines.
    #[serde(default)]
    pub job_id: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<Plan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOp {
    Created,
    Adopted,
    Cancelled,
    Released,
}

struct Workload {
    launched_ms: u64,
    plan: Plan,
    cancelled_ms: Option<u64>,
}

struct State {
    /// A B-tree, as the engine's maps of live jobs are: it never rehashes all at once.
    workloads: BTreeMap<String, Workload>,
    /// "No capacity" answers given so far, per key, for `capacity_errors`.
    refused: BTreeMap<String, u32>,
    record: Option<Shared>,
    rng: fastrand::Rng,
}

/// The record file shared with other processes, and how much of it this one has read.
struct Shared {
    file: File,
    read: u64,
}

impl Shared {
    /// The whole lines appended since the last read (by any process).
    fn read_new(&mut self) -> std::io::Result<Vec<Record>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![];
        let mut buf = [0u8; 64 << 10];
        loop {
            let n = self.file.read_at(&mut buf, self.read + bytes.len() as u64)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        // A line still being written (or cut short by a kill) is read once it is whole.
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.read += whole as u64;
        Ok(bytes[..whole]
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect())
    }
}

/// Reads a record file, for tests that check what the simulator saw.
pub fn read_record(path: &Path) -> std::io::Result<Vec<Record>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = vec![];
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A crash may cut the last line short; everything before it is whole.
        if let Ok(record) = serde_json::from_str(&line) {
            out.push(record);
        }
    }
    Ok(out)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Config {
    pub fn build(&self) -> std::io::Result<SimProvider> {
        self.price.check().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("price.{e}"))
        })?;
        let record = match &self.record {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(path)?;
                Some(Shared { file, read: 0 })
            }
            None => None,
        };
        let rng = self
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        let mut state = State {
            workloads: BTreeMap::new(),
            refused: BTreeMap::new(),
            record,
            rng,
        };
        state.sync()?;
        Ok(SimProvider {
            config: self.clone(),
            state: Mutex::new(state),
        })
    }
}

/// The simulator; see the module docs.
pub struct SimProvider {
    config: Config,
    state: Mutex<State>,
}

impl State {
    /// Applies what any process appended to the record since the last look.
    fn sync(&mut self) -> std::io::Result<()> {
        let Some(shared) = self.record.as_mut() else {
            return Ok(());
        };
        for r in shared.read_new()? {
            self.apply(r);
        }
        Ok(())
    }

    /// One line of the record, applied to the workloads (again, harmlessly).
    fn apply(&mut self, r: Record) {
        match (r.op, r.plan) {
            (RecordOp::Created, Some(plan)) => {
                self.workloads.entry(r.key).or_insert(Workload {
                    launched_ms: r.at_ms,
                    plan,
                    cancelled_ms: None,
                });
            }
            (RecordOp::Cancelled, _) => {
                if let Some(w) = self.workloads.get_mut(&r.key) {
                    w.cancelled_ms.get_or_insert(r.at_ms);
                }
            }
            (RecordOp::Released, _) => {
                self.workloads.remove(&r.key);
            }
            _ => {}
        }
    }

    /// Runs `f` with the record locked against every other process (and the other
    /// processes' lines read first), so that what it decides and appends is the truth.
    fn locked<T>(&mut self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let io = |e: std::io::Error| ProviderError::Transient(format!("the sim record: {e}"));
        if let Some(shared) = &self.record {
            shared.file.lock().map_err(io)?;
        }
        let out = self.sync().map_err(io).and_then(|()| f(self));
        if let Some(shared) = &self.record {
            let _ = shared.file.unlock();
        }
        out
    }

    fn append(
        &mut self,
        op: RecordOp,
        launch_key: &str,
        job_id: &str,
        at_ms: u64,
        plan: Option<&Plan>,
    ) -> Result<()> {
        let Some(shared) = self.record.as_mut() else {
            return Ok(());
        };
        let record = Record {
            op,
            key: launch_key.into(),
            job_id: job_id.into(),
            at_ms,
            plan: plan.cloned(),
        };
        let mut line = serde_json::to_vec(&record).expect("records serialise");
        line.push(b'\n');
        // One write per record: a process kill never leaves half a line before a whole one.
        shared
            .file
            .write_all(&line)
            .map_err(|e| ProviderError::Transient(format!("writing the sim record: {e}")))?;
        // Our own line, read back at the next sync, applies as it already has.
        Ok(())
    }

    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }
}

impl SimProvider {
    fn options(spec: &WorkloadSpec) -> Result<JobOptions> {
        match &spec.provider_options {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| ProviderError::InvalidSpec(format!("provider_options.sim: {e}"))),
            None => Ok(JobOptions::default()),
        }
    }

    fn plan(&self, spec: &WorkloadSpec, lost: bool) -> Result<Plan> {
        let opts = Self::options(spec)?;
        let max_ms = self.config.max_option_ms;
        let delays = [
            ("start_ms", opts.start_ms),
            ("run_ms", opts.run_ms),
            ("unschedulable_ms", opts.unschedulable_ms),
            ("lost_after_ms", opts.lost_after_ms),
            ("preempt_after_ms", opts.preempt_after_ms),
        ];
        for (name, ms) in delays {
            if ms.is_some_and(|ms| ms > max_ms) {
                return Err(ProviderError::InvalidSpec(format!(
                    "provider_options.sim.{name}: at most {max_ms}"
                )));
            }
        }
        if opts
            .capacity_errors
            .is_some_and(|n| n > self.config.max_capacity_errors)
        {
            return Err(ProviderError::InvalidSpec(format!(
                "provider_options.sim.capacity_errors: at most {}",
                self.config.max_capacity_errors
            )));
        }
        let exit_code = opts.exit_code.unwrap_or(self.config.exit_code);
        let output = opts.output.unwrap_or_else(|| {
            format!(
                "sim: running {} {}\nsim: exiting with {exit_code}\n",
                spec.image,
                spec.command.join(" ")
            )
        });
        Ok(Plan {
            start_ms: opts.start_ms.unwrap_or(self.config.start_ms),
            run_ms: opts.run_ms.unwrap_or(self.config.run_ms),
            exit_code,
            output,
            lost: opts.lost.unwrap_or(lost),
            cancel_error: opts.cancel_error,
            unschedulable_ms: opts.unschedulable_ms.unwrap_or(0),
            lost_after_ms: opts.lost_after_ms,
            preempt_after_ms: opts.preempt_after_ms,
        })
    }

    fn phase(w: &Workload, now: u64) -> Phase {
        let started = w.plan.started_at(w.launched_ms);
        if let Some(at) = w.cancelled_ms {
            return Phase::Exited {
                exit_code: Some(143),
                reason: Some(format!(
                    "cancelled after {} ms",
                    at.saturating_sub(w.launched_ms)
                )),
            };
        }
        if now < w.launched_ms.saturating_add(w.plan.unschedulable_ms) {
            return Phase::NoCapacity {
                reason: "simulated: no node can place it".into(),
            };
        }
        if now < started {
            return Phase::Starting {
                reason: Some("simulated start".into()),
            };
        }
        if w.plan.lost {
            return Phase::Lost {
                reason: "simulated lost workload".into(),
            };
        }
        if let Some(after) = w.plan.preempt_after_ms {
            if now >= started.saturating_add(after) {
                return Phase::Preempted {
                    reason: format!("simulated preemption after running {after} ms"),
                };
            }
        }
        if let Some(after) = w.plan.lost_after_ms {
            if now >= started.saturating_add(after) {
                return Phase::Lost {
                    reason: format!("simulated workload lost after running {after} ms"),
                };
            }
        }
        if now < started.saturating_add(w.plan.run_ms) {
            return Phase::Running;
        }
        Phase::Exited {
            exit_code: Some(w.plan.exit_code),
            reason: None,
        }
    }

    /// When an ended workload ran, as a runtime would report it for billing.
    fn ran(w: &Workload, now: u64) -> Option<RunTimes> {
        let started = w.plan.started_at(w.launched_ms);
        let finished = match w.cancelled_ms {
            Some(at) => at,
            None if matches!(Self::phase(w, now), Phase::Exited { .. }) => {
                started.saturating_add(w.plan.run_ms)
            }
            None => return None,
        };
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        (finished >= started).then(|| RunTimes {
            started: at(started),
            finished: at(finished),
        })
    }
}

#[async_trait::async_trait]
impl Provider for SimProvider {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_cpu: self.config.max_cpu,
            max_memory_bytes: self.config.max_memory_bytes,
            gpu_kinds: self.config.gpu_kinds.clone(),
            spot: self.config.spot,
            arch: vec!["x86_64".into()],
            max_observe_batch: self.config.max_observe_batch,
            max_tail_batch: 0,
        }
    }

    fn price_sheet(&self, _read: &ReadPrices) -> Pricing {
        Pricing::configured(self.config.price.clone())
    }

    fn options_schema(&self) -> serde_json::Value {
        // Every option may be absent or null: the provider's setting applies then.
        let ms = serde_json::json!({"type": ["integer", "null"], "minimum": 0, "maximum": self.config.max_option_ms});
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "start_ms": ms,
                "run_ms": ms,
                "exit_code": {"type": ["integer", "null"], "minimum": i32::MIN, "maximum": i32::MAX},
                "output": {"type": ["string", "null"]},
                "lost": {"type": ["boolean", "null"]},
                "capacity_errors": {"type": ["integer", "null"], "minimum": 0, "maximum": self.config.max_capacity_errors},
                "cancel_error": {"enum": ["not_found", "transient", null]},
                "unschedulable_ms": ms,
                "lost_after_ms": ms,
                "preempt_after_ms": ms,
            }
        })
    }

    /// A simulated workload of several steps runs as one: nothing runs anyway.
    fn runs_steps(&self) -> bool {
        true
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        if let Some(why) = self.capabilities().refusal(&spec.resources) {
            return Err(ProviderError::InvalidSpec(why));
        }
        self.plan(spec, false).map(|_| ())
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        self.validate(&launch.spec)?;
        let handle = Handle {
            key: launch.key.clone(),
            provider_ref: format!("sim-{}", launch.key),
        };
        let faults = &self.config.faults;
        let mut state = self.state.lock().unwrap();
        state.locked(|state| {
        let now = now_ms();
        if state.workloads.contains_key(&launch.key) {
            state.append(RecordOp::Adopted, &launch.key, &launch.job_id, now, None)?;
            return Ok(handle);
        }
        if state.roll(faults.throttle) {
            return Err(ProviderError::Throttled {
                retry_after: Duration::from_millis(faults.throttle_retry_ms),
            });
        }
        if state.roll(faults.transient) {
            return Err(ProviderError::Transient(
                "simulated transient launch error".into(),
            ));
        }
        let refusals = Self::options(&launch.spec)?.capacity_errors.unwrap_or(0);
        let refused = state.refused.entry(launch.key.clone()).or_insert(0);
        if *refused < refusals {
            *refused += 1;
            return Err(ProviderError::Capacity(format!(
                "simulated capacity shortage {refused} of {refusals}"
            )));
        }
        if state.roll(faults.capacity) {
            return Err(ProviderError::Capacity(
                "simulated capacity shortage".into(),
            ));
        }
        state.refused.remove(&launch.key);
        let lost = state.roll(faults.lost);
        let mut plan = self.plan(&launch.spec, lost)?;
        if state.roll(faults.unschedulable) {
            plan.unschedulable_ms = u64::MAX;
        }
        if state.roll(faults.preempt) {
            plan.preempt_after_ms = Some(plan.run_ms / 2);
        }
        state.append(
            RecordOp::Created,
            &launch.key,
            &launch.job_id,
            now,
            Some(&plan),
        )?;
        state.workloads.insert(
            launch.key.clone(),
            Workload {
                launched_ms: now,
                plan,
                cancelled_ms: None,
            },
        );
        Ok(handle)
        })
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        let mut state = self.state.lock().unwrap();
        state.sync().map_err(|e| ProviderError::Transient(format!("the sim record: {e}")))?;
        if state.roll(self.config.faults.transient) {
            return Err(ProviderError::Transient(
                "simulated transient observe error".into(),
            ));
        }
        let now = now_ms();
        Ok(handles
            .iter()
            .map(|h| match state.workloads.get(&h.key) {
                Some(w) => Observation {
                    handle: h.clone(),
                    phase: Self::phase(w, now),
                    ran: Self::ran(w, now),
                },
                None => Observation {
                    handle: h.clone(),
                    phase: Phase::Lost {
                        reason: "no such simulated workload".into(),
                    },
                    ran: None,
                },
            })
            .collect())
    }

    async fn cancel(&self, handle: &Handle, _reason: &str) -> Result<()> {
        self.state.lock().unwrap().locked(|state| Self::stop(state, handle))
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        let mut state = self.state.lock().unwrap();
        state.sync().map_err(|e| ProviderError::Transient(format!("the sim record: {e}")))?;
        Self::read_log(&state, handle, query)
    }

    async fn release(&self, handle: &Handle) -> Result<()> {
        self.state.lock().unwrap().locked(|state| {
            if state.workloads.remove(&handle.key).is_some() {
                state.append(RecordOp::Released, &handle.key, "", now_ms(), None)?;
            }
            Ok(())
        })
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

impl SimProvider {
    fn stop(state: &mut State, handle: &Handle) -> Result<()> {
        let now = now_ms();
        let Some(w) = state.workloads.get(&handle.key) else {
            return Ok(());
        };
        // An ended or lost workload has nothing left to stop, whatever a stop would answer
        // (a runtime answers a stop of a task it lost "not found", which counts as done).
        if w.cancelled_ms.is_some() || Self::phase(w, now).is_final() {
            return Ok(());
        }
        match w.plan.cancel_error {
            Some(CancelError::NotFound) => {
                return Err(ProviderError::NotFound(format!(
                    "simulated: {} is unknown to the runtime",
                    handle.key
                )))
            }
            Some(CancelError::Transient) => {
                return Err(ProviderError::Transient("simulated stop failure".into()))
            }
            None => {}
        }
        state.append(RecordOp::Cancelled, &handle.key, "", now, None)?;
        if let Some(w) = state.workloads.get_mut(&handle.key) {
            w.cancelled_ms = Some(now);
        }
        Ok(())
    }

    fn read_log(state: &State, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        let w = state
            .workloads
            .get(&handle.key)
            .ok_or_else(|| ProviderError::NotFound(handle.key.clone()))?;
        let text = match Self::phase(w, now_ms()) {
            Phase::Starting { .. } => "",
            _ => w.plan.output.as_str(),
        };
        let from = match (&query.cursor, query.tail_bytes) {
            (Some(c), _) => c
                .parse::<usize>()
                .map_err(|_| ProviderError::InvalidSpec(format!("bad log cursor {c:?}")))?,
            (None, Some(tail)) => text.len() - tail_str(text, tail).len(),
            (None, None) => 0,
        };
        let from = from.min(text.len());
        Ok(LogChunk {
            text: text.get(from..).unwrap_or_default().to_string(),
            cursor: Some(text.len().max(from).to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_provider::Resources;

    fn launch(key: &str, options: Option<serde_json::Value>) -> Launch {
        Launch {
            key: key.into(),
            job_id: format!("job-{key}"),
            attempt: 1,
            spec: WorkloadSpec {
                name: None,
                image: "img".into(),
                command: vec!["run".into()],
                args: vec![],
                env: Default::default(),
                resources: Resources {
                    cpu: 1.0,
                    memory_bytes: 1 << 30,
                    gpu: None,
                    ephemeral_storage_bytes: None,
                },
                timeout_seconds: None,
                labels: Default::default(),
                provider_options: options,
                steps: None,
            },
            secret_env: Default::default(),
            fresh: false,
        }
    }

    fn phase_of(p: &SimProvider, h: &Handle) -> Phase {
        futures_lite_block(p.observe(std::slice::from_ref(h)))
            .unwrap()
            .remove(0)
            .phase
    }

    fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[tokio::test]
    async fn gateways_sharing_a_record_share_one_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            record: Some(tmp.path().join("rec.jsonl")),
            run_ms: 60_000,
            start_ms: 0,
            ..Config::default()
        };
        // Two live gateways at once, each with its own simulator on the one record.
        let (a, b) = (config.build().unwrap(), config.build().unwrap());
        let h = a.launch(&launch("k1", None)).await.unwrap();
        assert_eq!(b.launch(&launch("k1", None)).await.unwrap(), h, "b adopts what a made");
        let (ha, hb) = (a.observe(std::slice::from_ref(&h)), b.observe(std::slice::from_ref(&h)));
        assert_eq!(ha.await.unwrap()[0].phase, Phase::Running);
        assert_eq!(hb.await.unwrap()[0].phase, Phase::Running);
        // A stop through one is seen by the other, and so is the release.
        b.cancel(&h, "test").await.unwrap();
        assert!(matches!(
            a.observe(std::slice::from_ref(&h)).await.unwrap()[0].phase,
            Phase::Exited { exit_code: Some(143), .. }
        ));
        a.release(&h).await.unwrap();
        assert!(matches!(
            b.observe(std::slice::from_ref(&h)).await.unwrap()[0].phase,
            Phase::Lost { .. }
        ));
        // Launches of one key from both, turn about: one workload.
        for i in 0..10 {
            let p = if i % 2 == 0 { &a } else { &b };
            p.launch(&launch("k2", None)).await.unwrap();
        }
        let created = read_record(&tmp.path().join("rec.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|r| r.op == RecordOp::Created)
            .map(|r| r.key)
            .collect::<Vec<_>>();
        assert_eq!(created, ["k1", "k2"], "one workload per key");
    }

    #[tokio::test]
    async fn follows_its_plan_and_survives_restart_through_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            record: Some(tmp.path().join("rec.jsonl")),
            ..Config::default()
        };
        let p = config.build().unwrap();
        let opts =
            serde_json::json!({"start_ms": 50, "run_ms": 100, "exit_code": 4, "output": "a\nb\n"});
        let h = p.launch(&launch("k1", Some(opts))).await.unwrap();
        assert!(matches!(
            p.observe(std::slice::from_ref(&h)).await.unwrap()[0].phase,
            Phase::Starting { .. }
        ));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            p.observe(std::slice::from_ref(&h)).await.unwrap()[0].phase,
            Phase::Running
        );
        // A restarted simulator adopts the key rather than creating a second workload.
        let p2 = config.build().unwrap();
        assert_eq!(p2.launch(&launch("k1", None)).await.unwrap(), h);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            p2.observe(std::slice::from_ref(&h)).await.unwrap()[0].phase,
            Phase::Exited {
                exit_code: Some(4),
                reason: None
            }
        );
        assert_eq!(
            p2.logs(
                &h,
                &LogQuery {
                    cursor: None,
                    tail_bytes: Some(2)
                }
            )
            .await
            .unwrap()
            .text,
            "b\n"
        );
        let ops: Vec<_> = read_record(&tmp.path().join("rec.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| r.op)
            .collect();
        assert_eq!(ops, vec![RecordOp::Created, RecordOp::Adopted]);
    }

    #[test]
    fn the_price_table_models_any_runtimes_billing() {
        // A Fargate-like runtime: per second with a one-minute minimum.
        let config: Config = serde_json::from_value(serde_json::json!({
            "spot": true,
            "gpu_kinds": ["nvidia-l4"],
            "price": {
                "vcpu_hour": 0.04, "gb_hour": 0.004, "gpu_hour": {"nvidia-l4": 0.7},
                "min_billed_seconds": 60, "billing_increment_seconds": 1,
            },
        }))
        .unwrap();
        let p = config.build().unwrap();
        assert!(p.capabilities().spot);
        let sheet = p.price_sheet(&ReadPrices::default()).sheet;
        assert_eq!(sheet.min_billed_seconds, 60);
        let resources = Resources {
            cpu: 0.3,
            memory_bytes: 1 << 30,
            gpu: None,
            ephemeral_storage_bytes: None,
        };
        // The simulator bills the request as given.
        assert_eq!(p.billed_resources(&resources), resources);
        let est = sheet.estimate(&p.billed_resources(&resources), 10).unwrap();
        assert_eq!(est.billed_seconds, 60);
        assert!((est.estimated_usd - (0.3 * 0.04 + 0.004) / 60.0).abs() < 1e-12);

        // Per-minute billing with no minimum.
        let per_minute: Config = serde_json::from_value(serde_json::json!({
            "price": {"vcpu_hour": 0.06, "billing_increment_seconds": 60},
        }))
        .unwrap();
        let sheet = per_minute.build().unwrap().price_sheet(&ReadPrices::default()).sheet;
        assert_eq!((sheet.billed_seconds(61), sheet.gb_hour), (120, 0.0));

        // Without a table the simulator is free and bills per second.
        let free = Config::default().build().unwrap().price_sheet(&ReadPrices::default()).sheet;
        assert_eq!(free.billed_seconds(10), 10);
        assert_eq!(free.estimate(&resources, 10).unwrap().estimated_usd, 0.0);

        // Unknown fields and negative prices are refused.
        let typo = serde_json::from_value::<Config>(serde_json::json!({
            "price": {"vcpu_hour": 0.04, "min_seconds": 60},
        }));
        assert!(typo.is_err());
        let negative = Config {
            price: PriceSheet {
                gb_hour: -0.1,
                ..PriceSheet::default()
            },
            ..Config::default()
        };
        let err = negative.build().err().unwrap();
        assert!(err.to_string().starts_with("price.gb_hour"), "{err}");
    }

    #[test]
    fn injected_faults_come_back_typed() {
        let all = |faults| {
            Config {
                faults,
                seed: Some(1),
                ..Config::default()
            }
            .build()
            .unwrap()
        };
        let throttled = all(Faults {
            throttle: 1.0,
            throttle_retry_ms: 7,
            ..Faults::default()
        });
        assert_eq!(
            futures_lite_block(throttled.launch(&launch("a", None))),
            Err(ProviderError::Throttled {
                retry_after: Duration::from_millis(7)
            })
        );
        let capacity = all(Faults {
            capacity: 1.0,
            ..Faults::default()
        });
        assert!(matches!(
            futures_lite_block(capacity.launch(&launch("a", None))),
            Err(ProviderError::Capacity(_))
        ));
        let transient = all(Faults {
            transient: 1.0,
            ..Faults::default()
        });
        assert!(matches!(
            futures_lite_block(transient.launch(&launch("a", None))),
            Err(ProviderError::Transient(_))
        ));
        let lost = all(Faults {
            lost: 1.0,
            ..Faults::default()
        });
        let h =
            futures_lite_block(lost.launch(&launch("a", Some(serde_json::json!({"start_ms": 0})))))
                .unwrap();
        assert!(matches!(phase_of(&lost, &h), Phase::Lost { .. }));
    }

    /// Out of the box a job cannot ask for a run longer than a job may last, nor for
    /// endless capacity errors: the bounds that apply are in the options' schema too.
    #[test]
    fn job_options_are_bounded_by_default() {
        let p = Config::default().build().unwrap();
        for options in [
            serde_json::json!({"run_ms": u64::MAX}),
            serde_json::json!({"start_ms": 604_800_001u64}),
            serde_json::json!({"unschedulable_ms": u64::MAX}),
            serde_json::json!({"capacity_errors": u32::MAX}),
        ] {
            let refused = p.validate(&launch("x", Some(options.clone())).spec);
            assert!(
                matches!(&refused, Err(ProviderError::InvalidSpec(m)) if m.contains("at most")),
                "{options}: {refused:?}"
            );
        }
        let week = serde_json::json!({"run_ms": 604_800_000u64, "capacity_errors": 1_000_000});
        assert!(p.validate(&launch("y", Some(week)).spec).is_ok());
        let schema = p.options_schema();
        assert_eq!(schema["properties"]["run_ms"]["maximum"], 604_800_000u64);
        assert_eq!(schema["properties"]["capacity_errors"]["maximum"], 1_000_000);
    }

    #[tokio::test]
    async fn cancel_ends_a_running_workload_and_bad_options_are_invalid() {
        let p = Config::default().build().unwrap();
        let h = p
            .launch(&launch(
                "c",
                Some(serde_json::json!({"start_ms": 0, "run_ms": 60000})),
            ))
            .await
            .unwrap();
        p.cancel(&h, "test").await.unwrap();
        assert!(matches!(
            p.observe(&[h]).await.unwrap()[0].phase,
            Phase::Exited {
                exit_code: Some(143),
                ..
            }
        ));
        let bad = p
            .launch(&launch("d", Some(serde_json::json!({"run_ms": "soon"}))))
            .await;
        assert!(
            matches!(bad, Err(ProviderError::InvalidSpec(m)) if m.contains("provider_options.sim"))
        );
    }
}
