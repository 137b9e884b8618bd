//! A TES task as the API speaks it, and how it maps to the gateway's job and back. A task is
//! a job: its id is the job's, its executors, inputs, outputs and volumes are the job's
//! `steps` (model::steps, whose types keep TES's names), its tags are the job's labels, and
//! its resources the job's resources and routing. A task of one executor that needs none of
//! the steps' machinery (no files, volumes, workdir, redirections or `ignore_error`) is a
//! plain job, which every provider runs; any other needs a provider that runs steps.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::TesState;
use crate::model::steps::{Executor, Input, Output, StepsSpec};
use crate::model::{
    FieldError, GpuSpec, Job, JobSpec, ResourceSpec, RoutingSpec, SpotPolicy, Prefer,
};
use crate::staging::filer::{Uploaded, OUTPUT_MARK};

/// A task, as created, and as read back with its state and logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TesTask {
    /// Assigned by the gateway: the job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TesState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::model::objects_or_null"
    )]
    pub inputs: Option<Vec<Input>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::model::objects_or_null"
    )]
    pub outputs: Option<Vec<Output>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::model::object_or_null"
    )]
    pub resources: Option<TesResources>,
    /// Run one after another; required (at least one) when creating.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::model::objects_or_null"
    )]
    pub executors: Option<Vec<Executor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    /// The job's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// One per attempt, the last one current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<TesTaskLog>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
}

/// What a task asks for, mapped onto the job's resources and routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TesResources {
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<i32>,
    /// `true`: spot providers may run it (routing.spot `allowed`); `false`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
    /// Memory, in GB (10^9 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_gb: Option<f64>,
    /// Ephemeral storage, in GB (10^9 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<f64>,
    /// Zones of the gateway's `routing.zones`: only providers in one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Keys (any case) of `service-info`'s `tesResources_backend_parameters`; others are
    /// dropped (and refused with `backend_parameters_strict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_parameters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_parameters_strict: Option<bool>,
}

/// One attempt of a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TesTaskLog {
    /// One per executor that ran.
    pub logs: Vec<TesExecutorLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Every file uploaded, directories flattened.
    pub outputs: Vec<TesOutputFileLog>,
    /// What is not an executor's: why the attempt ended, the filer's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_logs: Option<Vec<String>>,
}

/// One executor's run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TesExecutorLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The end of its output: stdout and stderr interleaved (the last 8 KiB of a step;
    /// the job's stored log tail for a plain job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Empty: stderr is interleaved in `stdout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// -1 for an executor that was stopped before it ended.
    pub exit_code: i32,
}

/// One uploaded file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TesOutputFileLog {
    pub url: String,
    pub path: String,
    /// Bytes, as a string (JSON has no int64).
    pub size_bytes: String,
}

/// `POST /tasks`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TesCreateTaskResponse {
    pub id: String,
}

/// `GET /tasks`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TesListTasksResponse {
    pub tasks: Vec<TesTask>,
    /// Pass as `page_token` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `POST /tasks/{id}:cancel`'s answer: empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TesCancelTaskResponse {}

/// How much of a task a read returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum View {
    /// `id` and `state` only.
    #[default]
    Minimal,
    /// All but executors' stdout and stderr, inputs' content and system logs.
    Basic,
    Full,
}

/// The backend parameters a task may give, lowercase (keys compare without case).
pub const BACKEND_PARAMETERS: [&str; 7] = [
    "provider",
    "prefer",
    "max_hourly_usd",
    "expected_duration_seconds",
    "timeout_seconds",
    "gpu_count",
    "gpu_kind",
];

/// Bytes in a GB, as TES counts `ram_gb` and `disk_gb`.
const GB: f64 = 1e9;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl TesTask {
    /// The job this task is, or every problem, each naming its field as TES names it.
    pub fn to_spec(&self) -> Result<JobSpec, Vec<FieldError>> {
        let mut errors = vec![];
        let executors = self.executors.clone().unwrap_or_default();
        if executors.is_empty() {
            errors.push(FieldError::new("executors", "a task needs at least one executor"));
        }
        let mut labels = BTreeMap::new();
        for (k, v) in self.tags.iter().flatten() {
            labels.insert(k.clone(), v.clone());
        }
        let r = self.resources.clone().unwrap_or_default();
        let mut resources = ResourceSpec::default();
        let mut routing = RoutingSpec::default();
        let mut provider = "auto".to_string();
        let mut timeout_seconds = None;
        if let Some(cores) = r.cpu_cores {
            match cores {
                1..=1024 => resources.cpu = f64::from(cores),
                _ => errors.push(FieldError::new("resources.cpu_cores", "must be from 1 to 1024")),
            }
        }
        let bytes = |field: &str, gb: Option<f64>, errors: &mut Vec<FieldError>| match gb {
            Some(gb) if gb.is_finite() && gb > 0.0 && gb <= 1e6 => {
                Some(format!("{}", (gb * GB).ceil() as u64))
            }
            Some(_) => {
                errors.push(FieldError::new(field, "must be more than 0 and at most 1000000"));
                None
            }
            None => None,
        };
        if let Some(memory) = bytes("resources.ram_gb", r.ram_gb, &mut errors) {
            resources.memory = memory;
        }
        resources.ephemeral_storage = bytes("resources.disk_gb", r.disk_gb, &mut errors);
        routing.spot = r.preemptible.map(|p| match p {
            true => SpotPolicy::Allowed,
            false => SpotPolicy::Never,
        });
        routing.zones = r.zones.clone().unwrap_or_default();
        let strict = r.backend_parameters_strict.unwrap_or(false);
        let mut gpu: Option<GpuSpec> = None;
        for (key, value) in r.backend_parameters.iter().flatten() {
            let field = format!("resources.backend_parameters.{key}");
            let mut bad = |why: String| errors.push(FieldError::new(field.clone(), why));
            match key.to_ascii_lowercase().as_str() {
                "provider" => provider = value.clone(),
                "prefer" => match value.to_ascii_lowercase().as_str() {
                    "cost" => routing.prefer = Some(Prefer::Cost),
                    "speed" => routing.prefer = Some(Prefer::Speed),
                    _ => bad(format!("{value:?} is neither cost nor speed")),
                },
                "max_hourly_usd" => match value.parse::<f64>() {
                    Ok(v) => routing.max_hourly_usd = Some(v),
                    Err(_) => bad(format!("{value:?} is not a number")),
                },
                "expected_duration_seconds" => match value.parse::<u64>() {
                    Ok(v) => routing.expected_duration_seconds = Some(v),
                    Err(_) => bad(format!("{value:?} is not a whole number")),
                },
                "timeout_seconds" => match value.parse::<u64>() {
                    Ok(v) => timeout_seconds = Some(v),
                    Err(_) => bad(format!("{value:?} is not a whole number")),
                },
                "gpu_count" => match value.parse::<u32>() {
                    Ok(n) => gpu.get_or_insert(GpuSpec { count: 1, kind: None }).count = n,
                    Err(_) => bad(format!("{value:?} is not a whole number")),
                },
                "gpu_kind" => {
                    gpu.get_or_insert(GpuSpec { count: 1, kind: None }).kind = Some(value.clone())
                }
                _ if strict => bad(format!(
                    "not a backend parameter of this gateway (it takes {})",
                    BACKEND_PARAMETERS.join(", ")
                )),
                // The spec: log a warning, neither store nor return it.
                other => tracing::warn!(key = %other, "a TES task's unsupported backend parameter is dropped"),
            }
        }
        resources.gpu = gpu;
        if !errors.is_empty() {
            return Err(errors);
        }
        let steps = StepsSpec {
            executors,
            inputs: self.inputs.clone().unwrap_or_default(),
            outputs: self.outputs.clone().unwrap_or_default(),
            volumes: self.volumes.clone().unwrap_or_default(),
        };
        let first = steps.executors[0].clone();
        let plain = steps.executors.len() == 1
            && steps.inputs.is_empty()
            && steps.outputs.is_empty()
            && steps.volumes.is_empty()
            && first.workdir.is_none()
            && first.stdin.is_none()
            && first.stdout.is_none()
            && first.stderr.is_none()
            && !first.ignore_error;
        let routing = (routing != RoutingSpec::default()).then_some(routing);
        Ok(JobSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            image: first.image.clone(),
            command: if plain { first.command.clone() } else { vec![] },
            args: vec![],
            env: if plain { first.env.clone() } else { BTreeMap::new() },
            secret_env: BTreeMap::new(),
            resources,
            timeout_seconds,
            provider,
            routing,
            labels,
            priority: 0,
            provider_options: BTreeMap::new(),
            steps: (!plain).then_some(steps),
        })
    }

    /// The task a job is, as much of it as `view` asks for. `log_tail` is the plain job's
    /// stored log, for its executor's `stdout` (FULL only).
    pub fn of(job: &Job, view: View, log_tail: Option<&str>) -> TesTask {
        let state = TesState::of(job);
        let mut task = TesTask {
            id: Some(job.id.to_string()),
            state: Some(state),
            ..TesTask::default()
        };
        if view == View::Minimal {
            return task;
        }
        let full = view == View::Full;
        let spec = &job.spec;
        task.name = spec.name.clone();
        task.description = spec.description.clone();
        task.creation_time = Some(rfc3339(job.created_at));
        task.tags = Some(job.labels.clone());
        match &spec.steps {
            Some(steps) => {
                task.executors = Some(steps.executors.clone());
                let mut inputs = steps.inputs.clone();
                if !full {
                    inputs.iter_mut().for_each(|i| i.content = None);
                }
                task.inputs = (!inputs.is_empty()).then_some(inputs);
                task.outputs = (!steps.outputs.is_empty()).then(|| steps.outputs.clone());
                task.volumes = (!steps.volumes.is_empty()).then(|| steps.volumes.clone());
            }
            None => {
                task.executors = Some(vec![Executor {
                    image: spec.image.clone(),
                    command: spec.command.iter().chain(&spec.args).cloned().collect(),
                    workdir: None,
                    stdin: None,
                    stdout: None,
                    stderr: None,
                    env: spec.env.clone(),
                    ignore_error: false,
                }]);
            }
        }
        task.resources = Some(resources_of(spec));
        task.logs = Some(logs_of(job, full, log_tail));
        task
    }
}

/// A task's resources, from its job's spec.
fn resources_of(spec: &JobSpec) -> TesResources {
    let gb = |q: &str| crate::model::parse_quantity(q).map(|b| b as f64 / GB);
    let routing = spec.routing.clone().unwrap_or_default();
    let mut params = BTreeMap::new();
    if spec.provider != "auto" {
        params.insert("provider".to_string(), spec.provider.clone());
    }
    if let Some(p) = routing.prefer {
        let p = match p {
            Prefer::Cost => "cost",
            Prefer::Speed => "speed",
        };
        params.insert("prefer".into(), p.into());
    }
    if let Some(v) = routing.max_hourly_usd {
        params.insert("max_hourly_usd".into(), v.to_string());
    }
    if let Some(v) = routing.expected_duration_seconds {
        params.insert("expected_duration_seconds".into(), v.to_string());
    }
    if let Some(v) = spec.timeout_seconds {
        params.insert("timeout_seconds".into(), v.to_string());
    }
    if let Some(g) = &spec.resources.gpu {
        params.insert("gpu_count".into(), g.count.to_string());
        if let Some(kind) = &g.kind {
            params.insert("gpu_kind".into(), kind.clone());
        }
    }
    TesResources {
        cpu_cores: Some(spec.resources.cpu.ceil().min(f64::from(i32::MAX)) as i32),
        preemptible: routing.spot.map(|s| s != SpotPolicy::Never),
        ram_gb: gb(&spec.resources.memory),
        disk_gb: spec.resources.ephemeral_storage.as_deref().and_then(gb),
        zones: (!routing.zones.is_empty()).then_some(routing.zones),
        backend_parameters: (!params.is_empty()).then_some(params),
        backend_parameters_strict: None,
    }
}

/// The output file log a stage-out step printed.
fn uploaded(log: &str) -> Vec<TesOutputFileLog> {
    log.lines()
        .filter_map(|l| l.strip_prefix(OUTPUT_MARK))
        .filter_map(|json| serde_json::from_str::<Uploaded>(json).ok())
        .map(|u| TesOutputFileLog {
            url: u.url,
            path: u.path,
            size_bytes: u.size_bytes,
        })
        .collect()
}

/// One task log per attempt: the earlier ones say where they ran; the current one has its
/// times, its executors' logs, its uploaded files and why it ended.
fn logs_of(job: &Job, full: bool, log_tail: Option<&str>) -> Vec<TesTaskLog> {
    let earlier = job.cost.as_ref().map(|c| c.earlier.as_slice()).unwrap_or_default();
    let mut logs: Vec<TesTaskLog> = earlier
        .iter()
        .enumerate()
        .map(|(i, a)| TesTaskLog {
            metadata: Some(BTreeMap::from([("provider".to_string(), a.provider.clone())])),
            system_logs: full.then(|| {
                vec![format!(
                    "attempt {} at {} was given up (its workload lost, or moved for capacity) and the task launched again; billed {} s",
                    i + 1,
                    a.provider,
                    a.billed_seconds
                )]
            }),
            ..TesTaskLog::default()
        })
        .collect();
    if job.attempts == 0 && !job.terminal {
        return logs;
    }
    let time = |t: Option<DateTime<Utc>>| t.map(rfc3339);
    let mut current = TesTaskLog {
        start_time: time(job.started_at),
        end_time: time(job.finished_at),
        metadata: job
            .provider
            .as_ref()
            .map(|p| BTreeMap::from([("provider".to_string(), p.clone())])),
        ..TesTaskLog::default()
    };
    if job.spec.steps.is_some() {
        for step in &job.steps {
            if step.role.is_filer() {
                if step.role == offload_provider::StepRole::StageOut {
                    current.outputs = uploaded(&step.log);
                }
                continue;
            }
            // A step that never ran (after one that failed) has no log; one that ran has
            // its start, or at least its exit code (ECS tells no container's times).
            if step.started_at.is_none() && step.exit_code.is_none() {
                continue;
            }
            current.logs.push(TesExecutorLog {
                start_time: time(step.started_at),
                end_time: time(step.finished_at),
                stdout: full.then(|| step.log.clone()),
                stderr: full.then(String::new),
                exit_code: step.exit_code.unwrap_or(-1),
            });
        }
    } else if job.terminal && job.started_at.is_some() {
        current.logs.push(TesExecutorLog {
            start_time: time(job.started_at),
            end_time: time(job.finished_at),
            stdout: full.then(|| log_tail.unwrap_or_default().to_string()),
            stderr: full.then(String::new),
            exit_code: job.exit_code.unwrap_or(-1),
        });
    }
    if full {
        current.system_logs = Some(job.reason.iter().cloned().collect());
    }
    logs.push(current);
    logs
}
