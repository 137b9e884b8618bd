//! The job as the API speaks it: the spec a client posts, the job it gets back, its states
//! and events. These types are the single source of the OpenAPI document.

pub mod budget;
pub mod patterns;
pub mod quantity;
pub mod steps;

pub use quantity::{parse_cpu, parse_quantity};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use offload_provider::{Gpu, Resources, WorkloadSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What the gateway stands in for a secret value whenever a spec goes back out.
pub const REDACTED: &str = "<redacted>";

/// A container job, as posted to `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A human-readable name; not unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the job is for, in the author's words (a TES task's `description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The container image. The local provider records it but runs `command` on the host.
    /// With `steps`, the first executor's image, which the job is listed by.
    pub image: String,
    /// The entrypoint; empty means the image's own.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variable names are `[A-Za-z_][A-Za-z0-9_]*`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Write-only: values reach the workload and never come back out, nor go to logs. A
    /// name also in `env` takes this value.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "object")]
    pub resources: ResourceSpec,
    /// Wall-clock limit from dispatch; the job is stopped and fails with reason `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// A configured provider name, or `auto` to let routing pick the provider that fits at
    /// the lowest estimated cost (see `routing`).
    #[serde(default = "auto")]
    pub provider: String,
    /// How to choose the provider: what to prefer, spot, which providers, a price cap.
    /// Applies to a named provider too, as checks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub routing: Option<RoutingSpec>,
    /// Free-form string labels (keys of 1 to 253 characters, values of at most 1024);
    /// Airflow puts dag_id, task_id, run_id and try_number here.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Among the caller's jobs waiting for a place at a provider, one of a higher priority
    /// gets the next place first (Airflow's `priority_weight`); 0 by default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Per-kind options (`{"ecs": {...}, "sim": {...}}`), validated by that kind's provider.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub provider_options: BTreeMap<String, serde_json::Value>,
    /// Several executors run one after another in one workload, sharing volumes, with
    /// inputs staged before them and outputs after (a GA4GH TES task); `command` and
    /// `args` are then left empty. Only providers that run steps take such a job (local,
    /// kubernetes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub steps: Option<steps::StepsSpec>,
}

fn auto() -> String {
    "auto".into()
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The `routing` block of a spec: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// `cost` (the default): the lowest estimated cost for the expected duration. `speed`:
    /// a provider with a free place and the lowest expected start latency (the median of
    /// its recent starts, in half seconds), the lower cost breaking ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer: Option<Prefer>,
    /// Whether spot (preemptible) providers may run the job: `never` excludes them,
    /// `allowed` treats them like the others, `preferred` ranks them first. Default: the
    /// gateway's `routing.default_spot` (itself `never` unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<SpotPolicy>,
    /// Only these providers, by name or kind; empty or absent means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Never these providers, by name or kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Only providers in one of these zones, as the gateway's `routing.zones` places them
    /// (a TES task's `resources.zones`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Providers whose price for this job's size is higher than this many US dollars per
    /// hour are excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hourly_usd: Option<f64>,
    /// How long the job is expected to run, for its cost estimate (billing minimums and
    /// increments apply to it). Default: the median of the last 20 successful runs with
    /// the same `dag_id` and `task_id` labels, else the gateway's
    /// `routing.default_duration_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration_seconds: Option<u64>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    #[default]
    Cost,
    Speed,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SpotPolicy {
    #[default]
    Never,
    Allowed,
    Preferred,
}

/// One provider that can run a quoted job, with what it is expected to cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuoteCandidate {
    pub provider: String,
    pub kind: String,
    pub spot: bool,
    /// Dollars per hour for the size this provider would launch.
    pub hourly_usd: f64,
    /// The expected duration as this provider bills it (minimum and increment applied).
    pub billed_seconds: u64,
    /// `hourly_usd` for `billed_seconds`.
    pub estimated_usd: f64,
}

/// A provider that cannot run a quoted job, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuoteExclusion {
    pub provider: String,
    pub reason: String,
}

/// What `POST /v1/quotes` answers: where the job would run, best first, and where not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quote {
    /// The providers that can run the job, in the order routing would pick them.
    pub candidates: Vec<QuoteCandidate>,
    pub excluded: Vec<QuoteExclusion>,
    /// The run time the estimates assume.
    pub expected_duration_seconds: u64,
    /// Where that run time comes from.
    pub duration_source: DurationSource,
}

/// Where a job's expected run time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurationSource {
    /// The spec's `routing.expected_duration_seconds`.
    Spec,
    /// The median of the last 20 successful runs of jobs with the same `dag_id` and
    /// `task_id` labels.
    History,
    /// The gateway's `routing.default_duration_seconds`.
    Default,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// vCPUs: a number (`0.5`, `2`) or a Kubernetes CPU quantity (`"500m"`, `"0.5"`, `"2"`).
    #[serde(default = "default_cpu", deserialize_with = "cpu_quantity")]
    #[schema(schema_with = cpu_schema)]
    pub cpu: f64,
    /// Kubernetes quantity: `512Mi`, `2Gi`, `1G`, or bytes.
    #[serde(default = "default_memory")]
    #[schema(example = "512Mi")]
    pub memory: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub gpu: Option<GpuSpec>,
    /// Kubernetes quantity, as `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<String>,
}

fn default_cpu() -> f64 {
    0.25
}

fn cpu_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0.0))
                .maximum(Some(1024.0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(patterns::CPU.text)),
        )
        .description(Some(
            "vCPUs: a number (0.5, 2) or a Kubernetes CPU quantity (\"500m\", \"0.5\", \"2\")",
        ))
        .examples([serde_json::json!("500m")])
        .build();
    Schema::OneOf(one_of)
}

/// A struct from a JSON object only: serde's derive would also take an array of its
/// fields in order, which the schema does not allow.
struct ObjectOnly<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

pub(crate) fn object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<T, D::Error> {
    de.deserialize_map(ObjectOnly(std::marker::PhantomData))
}

/// An item of a list of structs, from a JSON object only (see [`ObjectOnly`]).
struct Item<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Item<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        object(de).map(Item)
    }
}

/// A list of structs, each from a JSON object only.
pub(crate) fn objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Vec<T>, D::Error> {
    let items: Vec<Item<T>> = Deserialize::deserialize(de)?;
    Ok(items.into_iter().map(|i| i.0).collect())
}

/// A list of structs, each from a JSON object only, or null.
pub(crate) fn objects_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let items: Option<Vec<Item<T>>> = Deserialize::deserialize(de)?;
    Ok(items.map(|items| items.into_iter().map(|i| i.0).collect()))
}

struct ObjectOrNull<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
        object(de).map(Some)
    }
}

pub(crate) fn object_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Option<T>, D::Error> {
    de.deserialize_option(ObjectOrNull(std::marker::PhantomData))
}

fn cpu_quantity<'de, D: serde::Deserializer<'de>>(de: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cpu {
        Number(f64),
        Text(String),
    }
    let expected = "a number of vCPUs such as 0.5, or a Kubernetes CPU quantity such as \"500m\"";
    match Cpu::deserialize(de)
        .map_err(|_| serde::de::Error::custom(format!("expected {expected}")))?
    {
        Cpu::Number(n) => Ok(n),
        Cpu::Text(t) => parse_cpu(&t)
            .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not {expected}"))),
    }
}

fn default_memory() -> String {
    "512Mi".into()
}

impl Default for ResourceSpec {
    fn default() -> Self {
        ResourceSpec {
            cpu: default_cpu(),
            memory: default_memory(),
            gpu: None,
            ephemeral_storage: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub count: u32,
    /// A GPU kind such as `nvidia-l4`; absent means any kind the provider offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// A dotted path into the request, such as `resources.memory`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Limits on a spec, checked by [`JobSpec::validate`] and published in the OpenAPI
/// document (`api::doc`), so that the two cannot drift apart. Lengths count characters,
/// as JSON Schema does.
pub mod limits {
    pub const NAME: usize = 253;
    pub const IMAGE: usize = 1024;
    /// Variables in `env`, and again in `secret_env`.
    pub const ENV: usize = 512;
    /// Characters in one value of `env` or `secret_env`.
    pub const ENV_VALUE: usize = 32 * 1024;
    /// Items in `command`, and again in `args`.
    pub const ARGS: usize = 1024;
    /// Characters in one item of `command` or `args`.
    pub const ARG: usize = 32 * 1024;
    /// Bytes of the whole spec as JSON, secret values included: what one job may make the
    /// gateway keep, copy and send back (its caches and list pages are counted in these).
    pub const SPEC_BYTES: usize = 64 * 1024;
    /// Selectors in one label filter (`GET /v1/jobs?labels=`): no job has more labels.
    pub const LABEL_SELECTORS: usize = LABELS;
    /// Bytes of jobs (as JSON) past which a list page ends early, with a cursor to the next.
    pub const PAGE_BYTES: usize = 1 << 20;
    pub const LABELS: usize = 64;
    pub const LABEL_KEY: usize = 253;
    pub const LABEL_VALUE: usize = 1024;
    pub const TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;
    pub const CPU: f64 = 1024.0;
    pub const GPUS: u32 = 16;
    /// How deep `provider_options` may nest; providers' options are a level or two deep.
    pub const OPTION_DEPTH: usize = 8;
    /// Entries in `routing.allow`, and again in `routing.deny`.
    pub const ROUTING_NAMES: usize = 64;
    /// `routing.expected_duration_seconds` at most: a week.
    pub const EXPECTED_DURATION_SECONDS: u64 = 7 * 24 * 3600;
    /// Characters in a path of a job of several steps (a file, a folder, a workdir).
    pub const PATH: usize = 4096;
    /// Executors in a job of several steps.
    pub const EXECUTORS: usize = 64;
    /// Inputs, and again outputs, of a job of several steps.
    pub const FILES: usize = 1024;
    /// Volumes of a job of several steps.
    pub const VOLUMES: usize = 64;
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Checks a value that reaches the workload's process: at most `max` characters, no NUL.
fn check_text(check: &mut impl FnMut(bool, &str, String), value: &str, max: usize, field: &str) {
    check(
        chars(value) <= max,
        field,
        format!("is longer than {max} characters"),
    );
    check(
        patterns::NO_NUL.is_match(value),
        field,
        "must not contain a NUL character".into(),
    );
}

/// How many bytes `value` takes as compact JSON, counted without building the text.
pub fn json_bytes(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

impl JobSpec {
    /// Checks everything that does not depend on a provider and resolves the resources.
    pub fn validate(&self) -> Result<Resources, Vec<FieldError>> {
        let mut errors = vec![];
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                errors.push(FieldError::new(field, message));
            }
        };
        check(
            patterns::NOT_BLANK.is_match(&self.image),
            "image",
            "must not be empty".into(),
        );
        check(
            chars(&self.image) <= limits::IMAGE,
            "image",
            format!("is longer than {} characters", limits::IMAGE),
        );
        if let Some(name) = &self.name {
            check(
                chars(name) <= limits::NAME,
                "name",
                format!("is longer than {} characters", limits::NAME),
            );
        }
        if let Some(steps) = &self.steps {
            check(
                self.command.is_empty() && self.args.is_empty(),
                "command",
                "a job with steps gives each executor its command; leave command and args out".into(),
            );
            for e in steps.problems() {
                check(false, &e.field, e.message);
            }
        }
        for (map, field) in [(&self.env, "env"), (&self.secret_env, "secret_env")] {
            check(
                map.len() <= limits::ENV,
                field,
                format!("more than {} variables", limits::ENV),
            );
            for (key, value) in map {
                check(
                    patterns::ENV_NAME.is_match(key),
                    &format!("{field}.{key}"),
                    "is not a valid environment variable name".into(),
                );
                check_text(&mut check, value, limits::ENV_VALUE, &format!("{field}.{key}"));
            }
        }
        for (list, field) in [(&self.command, "command"), (&self.args, "args")] {
            check(
                list.len() <= limits::ARGS,
                field,
                format!("more than {} items", limits::ARGS),
            );
            for (i, item) in list.iter().enumerate() {
                check_text(&mut check, item, limits::ARG, &format!("{field}[{i}]"));
            }
        }
        let bytes = json_bytes(self);
        check(
            bytes <= limits::SPEC_BYTES,
            "(body)",
            format!(
                "the spec is {bytes} bytes as JSON, more than {}",
                limits::SPEC_BYTES
            ),
        );
        check(
            self.labels.len() <= limits::LABELS,
            "labels",
            format!("more than {} labels", limits::LABELS),
        );
        for (key, value) in &self.labels {
            check(
                (1..=limits::LABEL_KEY).contains(&chars(key)),
                &format!("labels.{key}"),
                format!("keys must have 1 to {} characters", limits::LABEL_KEY),
            );
            check(
                chars(value) <= limits::LABEL_VALUE,
                &format!("labels.{key}"),
                format!(
                    "values must have at most {} characters",
                    limits::LABEL_VALUE
                ),
            );
        }
        check(
            self.provider_options
                .values()
                .all(|v| depth(v) < limits::OPTION_DEPTH),
            "provider_options",
            format!("nests deeper than {} levels", limits::OPTION_DEPTH),
        );
        if let Some(t) = self.timeout_seconds {
            check(
                (1..=limits::TIMEOUT_SECONDS).contains(&t),
                "timeout_seconds",
                format!("must be from 1 to {}", limits::TIMEOUT_SECONDS),
            );
        }
        if let Some(routing) = &self.routing {
            for (list, field) in [
                (&routing.allow, "routing.allow"),
                (&routing.deny, "routing.deny"),
                (&routing.zones, "routing.zones"),
            ] {
                check(
                    list.len() <= limits::ROUTING_NAMES,
                    field,
                    format!("more than {} entries", limits::ROUTING_NAMES),
                );
                for (i, name) in list.iter().enumerate() {
                    check(
                        patterns::PROVIDER_NAME.is_match(name),
                        &format!("{field}[{i}]"),
                        "is not a name (1 to 40 of a-z, 0-9 and '-')".into(),
                    );
                }
            }
            if let Some(max) = routing.max_hourly_usd {
                check(
                    max.is_finite() && max > 0.0,
                    "routing.max_hourly_usd",
                    "must be more than 0".into(),
                );
            }
            if let Some(d) = routing.expected_duration_seconds {
                check(
                    (1..=limits::EXPECTED_DURATION_SECONDS).contains(&d),
                    "routing.expected_duration_seconds",
                    format!("must be from 1 to {}", limits::EXPECTED_DURATION_SECONDS),
                );
            }
        }
        let r = &self.resources;
        check(
            r.cpu.is_finite() && r.cpu > 0.0 && r.cpu <= limits::CPU,
            "resources.cpu",
            format!("must be more than 0 and at most {}", limits::CPU),
        );
        let memory = parse_quantity(&r.memory);
        check(
            memory.is_some(),
            "resources.memory",
            format!("{:?} is not a memory size such as 512Mi or 2Gi", r.memory),
        );
        let storage = r.ephemeral_storage.as_ref().map(|s| (s, parse_quantity(s)));
        if let Some((s, parsed)) = &storage {
            check(
                parsed.is_some(),
                "resources.ephemeral_storage",
                format!("{s:?} is not a size such as 20Gi"),
            );
        }
        if let Some(gpu) = &r.gpu {
            check(
                (1..=limits::GPUS).contains(&gpu.count),
                "resources.gpu.count",
                format!("must be from 1 to {}", limits::GPUS),
            );
            if let Some(kind) = &gpu.kind {
                check(
                    !kind.is_empty(),
                    "resources.gpu.kind",
                    "must not be empty".into(),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Resources {
            cpu: r.cpu,
            memory_bytes: memory.unwrap_or_default(),
            gpu: r.gpu.as_ref().map(|g| Gpu {
                count: g.count,
                kind: g.kind.clone(),
            }),
            ephemeral_storage_bytes: storage.and_then(|(_, p)| p),
        })
    }

    /// The spec as a provider of `kind` sees it; a job of several steps gets its filer
    /// steps with what `policy` lets the tenant's files reach.
    pub fn workload(
        &self,
        resources: Resources,
        kind: &str,
        policy: &crate::staging::Policy,
    ) -> WorkloadSpec {
        // A name also in secret_env takes the secret value, which is passed apart.
        let env: BTreeMap<String, String> = self
            .env
            .iter()
            .filter(|(k, _)| !self.secret_env.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        WorkloadSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            steps: self
                .steps
                .as_ref()
                .map(|s| s.plan(&env, policy)),
            env,
            resources,
            timeout_seconds: self.timeout_seconds,
            labels: self.labels.clone(),
            provider_options: self.provider_options.get(kind).cloned(),
        }
    }

    /// About how many bytes the spec holds in memory: its strings, with a little for each
    /// one's own header. An estimate, for caches bounded in bytes.
    pub fn footprint(&self) -> usize {
        fn value(v: &serde_json::Value) -> usize {
            16 + match v {
                serde_json::Value::String(s) => s.len(),
                serde_json::Value::Array(a) => a.iter().map(value).sum(),
                serde_json::Value::Object(o) => o.iter().map(|(k, v)| k.len() + value(v)).sum(),
                _ => 0,
            }
        }
        let strings = |items: &mut dyn Iterator<Item = &String>| -> usize {
            items.map(|s| s.len() + 24).sum()
        };
        let maps = [&self.env, &self.secret_env, &self.labels];
        256 + self.image.len()
            + self.name.as_ref().map_or(0, String::len)
            + strings(&mut self.command.iter().chain(&self.args))
            + maps
                .iter()
                .map(|m| strings(&mut m.iter().flat_map(|(k, v)| [k, v])))
                .sum::<usize>()
            + self
                .provider_options
                .iter()
                .map(|(k, v)| k.len() + value(v))
                .sum::<usize>()
    }

    /// The spec with every secret value replaced, safe to store in the open and return.
    pub fn redacted(&self) -> JobSpec {
        let mut spec = self.clone();
        for value in spec.secret_env.values_mut() {
            *value = REDACTED.into();
        }
        spec
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Starting,
    Running,
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::Cancelling,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A job as `GET /v1/jobs/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// A UUID v7: ordered by creation time.
    pub id: Uuid,
    pub state: JobState,
    /// True once the state can no longer change.
    pub terminal: bool,
    /// The provider the job was routed to; absent until dispatched.
    pub provider: Option<String>,
    /// The workload at the provider: pod name, task ARN, container group id.
    pub provider_ref: Option<String>,
    pub exit_code: Option<i32>,
    /// Why the job is where it is: non-zero exit, OOM, image pull, timeout, cancel, error.
    pub reason: Option<String>,
    /// The JSON of the last `offload-result: {json}` line the job printed.
    pub result: Option<serde_json::Value>,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many launches the job has had (a lost workload or a re-route adds one).
    pub attempts: u32,
    /// The spec as posted, with secret values redacted.
    pub spec: JobSpec,
    /// What the job is expected to cost and, once it has ended, what it cost; absent
    /// until the job is dispatched.
    pub cost: Option<JobCost>,
    /// A job of several steps: how each step of its last attempt went, once it has ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<steps::StepLog>,
}

/// A job's cost under its provider's price sheet and billing rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobCost {
    /// The provider the estimate is for (the current attempt's).
    pub provider: String,
    /// Dollars per hour for the size the provider launches.
    pub hourly_usd: f64,
    /// The estimate at routing time, as `POST /v1/quotes` gives it.
    pub estimated_usd: f64,
    /// The run time as billed (started_at to finished_at, rounded up to the billing
    /// increment, at least the minimum; 0 when the job never started); absent until the
    /// job ends.
    pub billed_seconds: Option<u64>,
    /// `hourly_usd` for `billed_seconds`, plus `earlier_usd`; absent until the job ends.
    pub usd: Option<f64>,
    /// What earlier attempts cost (workloads lost and launched again, or moved to another
    /// provider), included in `usd`: the sum of `earlier`.
    #[serde(default)]
    pub earlier_usd: f64,
    /// Each earlier attempt's cost, where it ran, oldest first: cost reports by provider
    /// count each attempt where it was spent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<AttemptCost>,
    /// What the same run would have cost on the reference provider, which savings are
    /// measured against (see [`ReferenceCost`]); absent for jobs dispatched before
    /// savings were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceCost>,
}

/// The run of a job priced at the reference provider: the one the spec named, else
/// `routing.reference_provider` when it can run the job, else the dearest that can. Its
/// `usd` minus the job's is what routing (and spot) saved; it is negative when the job
/// cost more than the reference would have (preempted attempts, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReferenceCost {
    pub provider: String,
    /// The reference's dollars per hour for the size it would launch.
    pub hourly_usd: f64,
    /// The job's last attempt's run time billed under the reference's rules, at its
    /// price; absent until the job ends.
    pub usd: Option<f64>,
}

/// What one ended attempt of a job cost, at the provider that ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptCost {
    pub provider: String,
    /// Its run time as billed (0 when it never started).
    pub billed_seconds: u64,
    pub usd: f64,
    /// Whether the runtime took it back (a spot interruption), rather than the job failing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preempted: bool,
}

/// Dollars rounded to the micro-dollar, as every cost is kept: the same attempts then sum to
/// the same figure to the micro-dollar whatever the order (a report, a job, the metric).
pub fn usd(dollars: f64) -> f64 {
    (dollars * 1e6).round() / 1e6
}

/// One group of a cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostGroup {
    /// The provider, or the label's value ("" for jobs without the label or never
    /// dispatched).
    pub key: String,
    /// Jobs that finished in the period.
    pub jobs: u64,
    /// What they cost.
    pub usd: f64,
    /// What they were estimated to cost when dispatched.
    pub estimated_usd: f64,
    /// What the same runs would have cost on their reference providers (jobs without a
    /// reference count at what they cost).
    pub reference_usd: f64,
    /// `reference_usd - usd`: what routing and spot saved (negative: lost).
    pub saved_usd: f64,
}

impl CostGroup {
    /// A group from the sums a store read, rounded as every cost is kept.
    pub fn new(key: String, jobs: u64, usd_sum: f64, estimated_usd: f64, reference_sum: f64) -> Self {
        let (usd_sum, reference_usd) = (usd(usd_sum), usd(reference_sum));
        CostGroup {
            key,
            jobs,
            usd: usd_sum,
            estimated_usd,
            reference_usd,
            saved_usd: usd(reference_usd - usd_sum),
        }
    }
}

/// The cost of a tenant's jobs that finished in a period, by group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostReport {
    pub groups: Vec<CostGroup>,
    pub total_usd: f64,
    pub total_reference_usd: f64,
    pub total_saved_usd: f64,
}

/// One transition in a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The state after the event.
    pub state: JobState,
    pub reason: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A job as `GET /v1/changes` tells of it: its state and outcome, without its spec.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobChange {
    pub id: Uuid,
    pub state: JobState,
    pub terminal: bool,
    pub provider: Option<String>,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobChange {
    fn from(job: Job) -> JobChange {
        JobChange {
            id: job.id,
            state: job.state,
            terminal: job.terminal,
            provider: job.provider,
            attempts: job.attempts,
            exit_code: job.exit_code,
            reason: job.reason,
            labels: job.labels,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

/// The jobs that changed since a position, each once, as it is now, oldest change first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeFeed {
    pub jobs: Vec<JobChange>,
    /// Pass as `after` to hear of the changes after these; always present.
    pub next_cursor: String,
    /// True when more changes may already be waiting after `next_cursor`: ask again at once.
    pub more: bool,
}

/// A configured provider, as `GET /v1/providers` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProviderInfo {
    pub name: String,
    pub kind: String,
    pub healthy: bool,
    /// Why the last health check failed.
    pub health_error: Option<String>,
    pub max_concurrency: usize,
    /// Jobs holding a slot now (starting, running or cancelling).
    pub active: usize,
    /// Queued jobs routed here that wait for a free slot.
    pub waiting: usize,
    /// The median time from dispatch to running of the provider's last 20 starts, as
    /// `prefer = speed` ranks it; absent before the first start since the gateway started.
    pub start_latency_ms: Option<u64>,
    #[schema(value_type = Object)]
    pub capabilities: serde_json::Value,
    #[schema(value_type = Object)]
    pub prices: serde_json::Value,
    /// Where each figure the sheet was built from came from, by figure name: the catalog
    /// entry it was read from (`source`, `sku`, `region`, `quoted`, `effective`,
    /// `read_at`, ...), `{"source": "default"}` for the provider's built-in figure, or
    /// `{"source": "config"}` for `[providers.NAME.price]`.
    #[schema(value_type = Object)]
    pub price_sources: serde_json::Value,
    /// The gateway's last price refresh (`[prices] refresh_at_start`,
    /// `refresh_every_hours`); null before its first since the gateway started. After
    /// one that failed, `prices` are the last good ones (the price file's, or the defaults).
    pub price_refresh: Option<PriceRefresh>,
    /// Calls the gateway made to the provider since it started.
    pub calls: u64,
    /// Of those, how many failed (any error the provider answered, throttling included).
    pub errors: u64,
}

/// How the gateway's last price refresh went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PriceRefresh {
    /// When it ended (RFC 3339).
    pub at: String,
    /// True when it read the catalogs and repriced the providers; false when it failed and
    /// the providers kept their prices.
    pub ok: bool,
    /// Why it failed: the catalog and what went wrong (never an API key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Finds the job's result: the JSON of the last `offload-result: ` line of its output.
pub fn extract_result(log: &str) -> Option<serde_json::Value> {
    log.lines()
        .rev()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix("offload-result:"))
        .and_then(|json| serde_json::from_str(json.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> JobSpec {
        serde_json::from_value(json).unwrap()
    }


    #[test]
    fn cpu_takes_numbers_and_kubernetes_quantities() {
        for (given, vcpus) in [
            (serde_json::json!(0.5), 0.5),
            (serde_json::json!("0.5"), 0.5),
            (serde_json::json!("500m"), 0.5),
            (serde_json::json!(2), 2.0),
            (serde_json::json!("2"), 2.0),
            (serde_json::json!("250m"), 0.25),
        ] {
            let s = spec(serde_json::json!({"image": "a", "resources": {"cpu": given}}));
            assert_eq!(s.validate().unwrap().cpu, vcpus, "{given}");
        }
        for bad in [
            serde_json::json!("lots"),
            serde_json::json!("1.5.2"),
            serde_json::json!("m"),
            serde_json::json!(true),
            serde_json::json!("-1"),
        ] {
            let r: Result<JobSpec, _> = serde_json::from_value(
                serde_json::json!({"image": "a", "resources": {"cpu": bad}}),
            );
            let e = r.unwrap_err().to_string();
            assert!(e.contains("Kubernetes CPU quantity"), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_names_every_bad_field() {
        let s = spec(serde_json::json!({
            "image": "",
            "env": {"1BAD": "x", "OK": "y"},
            "resources": {"cpu": 0, "memory": "lots", "gpu": {"count": 0}},
            "timeout_seconds": 0
        }));
        let fields: Vec<_> = s
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "image",
                "env.1BAD",
                "timeout_seconds",
                "resources.cpu",
                "resources.memory",
                "resources.gpu.count"
            ]
        );
    }

    #[test]
    fn defaults_and_redaction() {
        let s = spec(serde_json::json!({"image": "alpine", "secret_env": {"TOKEN": "hunter2"}}));
        assert_eq!(s.provider, "auto");
        let r = s.validate().unwrap();
        assert_eq!((r.cpu, r.memory_bytes), (0.25, 512 << 20));
        let shown = serde_json::to_string(&s.redacted()).unwrap();
        assert!(
            !shown.contains("hunter2") && shown.contains(REDACTED),
            "{shown}"
        );
    }

    /// Every value that reaches a process is bounded and free of NUL, and so is the spec as
    /// a whole: one tenant cannot make the gateway keep and copy megabytes per job, nor
    /// submit a job no process can start.
    #[test]
    fn values_that_reach_the_process_are_bounded_and_free_of_nul() {
        let fields = |s: JobSpec| -> Vec<String> {
            s.validate()
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        let long = "x".repeat(limits::ENV_VALUE + 1);
        let s = spec(serde_json::json!({
            "image": "a",
            "command": ["sh", "a\0b"],
            "args": [long],
            "env": {"BIG": "x".repeat(limits::ENV_VALUE + 1), "NUL": "a\0"},
            "secret_env": {"S": "\0"},
        }));
        assert_eq!(
            fields(s),
            ["env.BIG", "env.NUL", "secret_env.S", "command[1]", "args[0]", "(body)"]
        );
        let many = spec(serde_json::json!({"image": "a", "args": vec!["x"; limits::ARGS + 1]}));
        assert_eq!(fields(many), ["args"]);
        // Each value within its limit, the whole past its own.
        let env: BTreeMap<String, String> = (0..3)
            .map(|i| (format!("V{i}"), "x".repeat(limits::ENV_VALUE)))
            .collect();
        let whole = spec(serde_json::json!({"image": "a", "env": env}));
        assert_eq!(fields(whole), ["(body)"]);
        let fine = spec(serde_json::json!({"image": "a", "command": ["echo", "x".repeat(1000)]}));
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn result_is_the_last_result_line() {
        let log = "hi\noffload-result: {\"n\": 0}\nmore\noffload-result: {\"n\": 1}\r\nbye\n";
        assert_eq!(extract_result(log), Some(serde_json::json!({"n": 1})));
        assert_eq!(extract_result("offload-result: not json\n"), None);
        assert_eq!(extract_result("nothing"), None);
    }
}
