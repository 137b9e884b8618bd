//! The OpenAPI document, generated from the handlers' annotations and the model's types,
//! then completed in two passes that keep it exact:
//!
//! - the spec's limits and patterns come from `model::limits` and `model::patterns`, the
//!   same constants the server checks requests with;
//! - every operation lists the problems the layers around it can answer (401 and 503 for
//!   any call with a token, 400 for bad parameters, 404 for an unknown id, 400, 408, 413,
//!   415 and 422 for a body, 429 for long-polls and followers).
//!
//! `openapi/offload.v1.yaml` is the generic document committed; a test fails when they
//! differ. `/openapi.json` serves it with this deployment's own providers, GPU kinds and
//! per-kind options filled in ([`served`]), so that a client (or schemathesis) sees what
//! this gateway accepts.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{budgets, changes, error, jobs, ops};
use crate::engine::Engine;
use crate::model::{self, limits, patterns, quantity};

#[derive(OpenApi)]
#[openapi(
    info(title = "offload", description = "Run container jobs on serverless runtimes from schedulers such as Airflow.",
        contact(name = "offload")),
    servers((url = "/", description = "This gateway")),
    tags(
        (name = "jobs", description = "Submit, follow and cancel jobs; quotes, the changes feed and spend"),
        (name = "budgets", description = "Spend limits per tenant and per label value"),
        (name = "providers", description = "The runtimes jobs run on, their health, load and prices"),
        (name = "ops", description = "Probes and metrics, with no token"),
    ),
    paths(
        jobs::create_job, jobs::quote, jobs::costs, jobs::list_jobs, jobs::get_job, jobs::cancel_job, jobs::job_logs, jobs::job_events,
        changes::changes,
        budgets::list, budgets::put, budgets::delete,
        ops::providers, ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        model::JobSpec, model::ResourceSpec, model::GpuSpec, model::Job, model::JobState, model::Event,
        model::JobPage, model::ProviderInfo, model::PriceRefresh, model::FieldError, error::Problem,
        model::RoutingSpec, model::Prefer, model::SpotPolicy, model::Quote, model::QuoteCandidate,
        model::QuoteExclusion, model::JobCost, model::CostReport, model::CostGroup,
        model::JobChange, model::ChangeFeed, model::AttemptCost,
        model::budget::Budget, model::budget::BudgetAction, model::budget::BudgetStatus,
        model::budget::BudgetSource, model::budget::PeriodStatus, model::budget::PeriodKind,
        model::budget::BudgetList,
        model::steps::StepsSpec, model::steps::Executor, model::steps::Input,
        model::steps::Output, model::steps::FileType, model::steps::StepLog,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// The `bearer` security scheme every authenticated operation names (the TES document's
/// too).
pub(crate) struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The generic document, as committed.
pub fn openapi() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    constrain(&mut doc);
    add_problems(&mut doc);
    doc
}

/// The document as committed in `openapi/offload.v1.yaml`.
pub fn openapi_yaml() -> String {
    serde_norway::to_string(&openapi()).expect("the OpenAPI document serialises")
}

/// The document for this deployment: `provider` names its providers, `resources.gpu.kind`
/// the GPU kinds they offer (no GPU at all when none does), `resources.cpu` the largest
/// any takes, and `provider_options` the kinds configured, each with its own options.
pub fn served(engine: &Engine) -> Value {
    let mut doc = openapi();
    let slots = engine.slots();
    let mut names: Vec<Value> = slots.iter().map(|s| json!(s.name)).collect();
    names.insert(0, json!("auto"));
    let spec = &mut doc["components"]["schemas"]["JobSpec"]["properties"];
    spec["provider"]["enum"] = Value::Array(names);
    spec["provider"]
        .as_object_mut()
        .map(|p| p.remove("pattern"));
    let mut kinds = serde_json::Map::new();
    for slot in slots {
        kinds.insert(slot.provider.kind().into(), slot.provider.options_schema());
    }
    spec["provider_options"]["properties"] = Value::Object(kinds);
    spec["provider_options"]["additionalProperties"] = json!(false);
    let mut gpu_kinds: Vec<String> = slots
        .iter()
        .flat_map(|s| s.provider.capabilities().gpu_kinds)
        .collect();
    gpu_kinds.sort();
    gpu_kinds.dedup();
    let max_cpu = slots
        .iter()
        .map(|s| s.provider.capabilities().max_cpu)
        .fold(0.0, f64::max)
        .min(limits::CPU);
    // allow and deny name configured providers or kinds; with one provider, a deny list
    // that names it leaves nothing, so none is accepted.
    let mut known: Vec<String> = slots
        .iter()
        .flat_map(|s| [s.name.clone(), s.provider.kind().to_string()])
        .collect();
    known.sort();
    known.dedup();
    let routing = &mut doc["components"]["schemas"]["RoutingSpec"]["properties"];
    for list in ["allow", "deny"] {
        routing[list]["items"]["enum"] = json!(known);
        routing[list]["items"]
            .as_object_mut()
            .map(|p| p.remove("pattern"));
    }
    if slots.len() == 1 {
        routing["deny"]["maxItems"] = json!(0);
    }
    // Zones are the configured ones; with none, a spec names none.
    let zones = engine.zones();
    routing["zones"]["items"]
        .as_object_mut()
        .map(|p| p.remove("pattern"));
    match zones.is_empty() {
        true => routing["zones"]["maxItems"] = json!(0),
        false => routing["zones"]["items"]["enum"] = json!(zones),
    }
    let max_memory = slots
        .iter()
        .map(|s| s.provider.capabilities().max_memory_bytes)
        .max()
        .unwrap_or(0);
    let resources = &mut doc["components"]["schemas"]["ResourceSpec"]["properties"];
    // Strings bounded as numbers are: a size or CPU quantity no provider takes is
    // schema-invalid, not a 422.
    resources["cpu"]["oneOf"][0]["maximum"] = json!(max_cpu);
    resources["cpu"]["oneOf"][1]["allOf"] = json!([{"pattern": quantity::cpus_at_most(max_cpu)}]);
    if let Some(bound) = quantity::sizes_at_most(max_memory) {
        resources["memory"]["allOf"] = json!([{"pattern": bound}]);
    }
    if gpu_kinds.is_empty() {
        resources["gpu"] = json!({"type": "null", "description": "No provider here offers GPUs."});
        // Nothing refers to it any more.
        doc["components"]["schemas"].as_object_mut().map(|s| s.remove("GpuSpec"));
    } else {
        doc["components"]["schemas"]["GpuSpec"]["properties"]["kind"]["enum"] = json!(gpu_kinds
            .into_iter()
            .map(Some)
            .chain([None])
            .collect::<Vec<_>>());
    }
    serve_staging(&mut doc, engine);
    doc
}

/// The limits and patterns of a job of several steps (`StepsSpec` and the executors,
/// inputs and outputs TES's document shares), from `model::limits` and `model::patterns`.
pub(crate) fn constrain_steps(schemas: &mut Value) {
    let path = json!({"type": "string", "pattern": patterns::ABSOLUTE_PATH.text, "maxLength": limits::PATH});
    // TES's document has the executors, inputs and outputs, not `StepsSpec`.
    if let Some(steps) = schemas.get_mut("StepsSpec") {
        let steps = &mut steps["properties"];
        steps["executors"]["minItems"] = json!(1);
        steps["executors"]["maxItems"] = json!(limits::EXECUTORS);
        for files in ["inputs", "outputs"] {
            steps[files]["maxItems"] = json!(limits::FILES);
        }
        steps["volumes"]["maxItems"] = json!(limits::VOLUMES);
        steps["volumes"]["items"] = path.clone();
    }
    let executor = &mut schemas["Executor"]["properties"];
    executor["image"]["minLength"] = json!(1);
    executor["image"]["maxLength"] = json!(limits::IMAGE);
    executor["image"]["pattern"] = json!(patterns::NOT_BLANK.text);
    executor["command"]["minItems"] = json!(1);
    executor["command"]["maxItems"] = json!(limits::ARGS);
    executor["command"]["items"]["maxLength"] = json!(limits::ARG);
    executor["command"]["items"]["pattern"] = json!(patterns::NO_NUL.text);
    for field in ["workdir", "stdin", "stdout", "stderr"] {
        executor[field]["pattern"] = json!(patterns::ABSOLUTE_PATH.text);
        executor[field]["maxLength"] = json!(limits::PATH);
    }
    executor["env"]["maxProperties"] = json!(limits::ENV);
    executor["env"]["propertyNames"] = json!({"type": "string", "pattern": patterns::ENV_NAME.text});
    executor["env"]["additionalProperties"] =
        json!({"type": "string", "maxLength": limits::ENV_VALUE, "pattern": patterns::NO_NUL.text});
    for file in ["Input", "Output"] {
        let props = &mut schemas[file]["properties"];
        props["path"]["pattern"] = json!(patterns::FILE_PATH.text);
        props["path"]["maxLength"] = json!(limits::PATH);
    }
    let scheme = |schemes: &[&str]| format!("^({})://[^\\x00]+$", schemes.join("|"));
    let input = &mut schemas["Input"];
    input["properties"]["content"]["pattern"] = json!(patterns::NO_NUL.text);
    input["properties"]["url"]["pattern"] = json!(scheme(&model::steps::INPUT_SCHEMES));
    // One of them given, and not as null.
    input["anyOf"] = json!([
        {"required": ["url"], "properties": {"url": {"type": "string"}}},
        {"required": ["content"], "properties": {"content": {"type": "string"}}},
    ]);
    let output = &mut schemas["Output"]["properties"];
    output["url"]["pattern"] = json!(scheme(&model::steps::OUTPUT_SCHEMES));
    output["path_prefix"]["pattern"] = json!(patterns::ABSOLUTE_PATH.text);
    output["path_prefix"]["maxLength"] = json!(limits::PATH);
}

/// What this deployment's tenants may stage, in a served document: an input's URL is under
/// some tenant's `read` prefixes (an `http(s)` one only where its literal address may be
/// reached), an output's under some `write` prefix; with none, no input has a URL and no
/// job has outputs. `outputs` are the schemas' properties that hold outputs.
pub(crate) fn staging_schemas(schemas: &mut Value, staging: &crate::config::StagingConfig, outputs: &[(&str, &str)]) {
    let reads: Vec<String> = staging
        .tenants
        .values()
        .flat_map(|t| t.read.clone())
        .filter(|p| {
            crate::staging::net::literal_host_allowed(p, staging.allow_private_addresses).is_ok()
        })
        .collect();
    let writes: Vec<String> = staging.tenants.values().flat_map(|t| t.write.clone()).collect();
    match crate::staging::url_pattern(&reads) {
        Some(pattern) => schemas["Input"]["properties"]["url"]["pattern"] = json!(pattern),
        None => {
            schemas["Input"]["properties"]["url"] = json!({"not": {}, "description": "No tenant here may read from a URL: give content."});
            schemas["Input"]["required"] = json!(["path", "content"]);
            schemas["Input"]["properties"]["content"]["type"] = json!("string");
        }
    }
    match crate::staging::url_pattern(&writes) {
        Some(pattern) => schemas["Output"]["properties"]["url"]["pattern"] = json!(pattern),
        None => {
            for (schema, property) in outputs {
                schemas[*schema]["properties"][*property]["maxItems"] = json!(0);
            }
        }
    }
}

fn serve_staging(doc: &mut Value, engine: &Engine) {
    staging_schemas(&mut doc["components"]["schemas"], &engine.staging, &[("StepsSpec", "outputs")]);
}

/// Writes the spec's limits and patterns into its schemas.
fn constrain(doc: &mut Value) {
    constrain_steps(&mut doc["components"]["schemas"]);
    // A job with steps gives each executor its command, and none of its own.
    doc["components"]["schemas"]["JobSpec"]["if"] =
        json!({"required": ["steps"], "properties": {"steps": {"type": "object"}}});
    doc["components"]["schemas"]["JobSpec"]["then"] =
        json!({"properties": {"command": {"maxItems": 0}, "args": {"maxItems": 0}}});
    let schemas = &mut doc["components"]["schemas"];
    let whole = format!(
        "{} As JSON, secret values included, at most {} bytes.",
        schemas["JobSpec"]["description"].as_str().unwrap_or_default(),
        limits::SPEC_BYTES
    );
    schemas["JobSpec"]["description"] = json!(whole);
    let spec = &mut schemas["JobSpec"]["properties"];
    spec["image"]["minLength"] = json!(1);
    spec["image"]["maxLength"] = json!(limits::IMAGE);
    spec["image"]["pattern"] = json!(patterns::NOT_BLANK.text);
    spec["name"]["maxLength"] = json!(limits::NAME);
    for env in ["env", "secret_env"] {
        spec[env]["maxProperties"] = json!(limits::ENV);
        spec[env]["propertyNames"] = json!({"type": "string", "pattern": patterns::ENV_NAME.text});
        spec[env]["additionalProperties"] = json!({
            "type": "string", "maxLength": limits::ENV_VALUE, "pattern": patterns::NO_NUL.text
        });
    }
    for list in ["command", "args"] {
        spec[list]["maxItems"] = json!(limits::ARGS);
        spec[list]["items"]["maxLength"] = json!(limits::ARG);
        spec[list]["items"]["pattern"] = json!(patterns::NO_NUL.text);
    }
    spec["labels"]["maxProperties"] = json!(limits::LABELS);
    spec["labels"]["propertyNames"] =
        json!({"type": "string", "minLength": 1, "maxLength": limits::LABEL_KEY});
    spec["labels"]["additionalProperties"] =
        json!({"type": "string", "maxLength": limits::LABEL_VALUE});
    spec["priority"]["minimum"] = json!(i32::MIN);
    spec["priority"]["maximum"] = json!(i32::MAX);
    spec["timeout_seconds"]["minimum"] = json!(1);
    spec["timeout_seconds"]["maximum"] = json!(limits::TIMEOUT_SECONDS);
    spec["provider"]["pattern"] = json!("^(auto|[a-z0-9-]{1,40})$");
    spec["provider_options"]["additionalProperties"] = json!({"type": "object"});
    let routing = &mut schemas["RoutingSpec"]["properties"];
    for list in ["allow", "deny", "zones"] {
        routing[list]["maxItems"] = json!(limits::ROUTING_NAMES);
        routing[list]["items"]["pattern"] = json!(patterns::PROVIDER_NAME.text);
    }
    routing["max_hourly_usd"]["exclusiveMinimum"] = json!(0);
    routing["expected_duration_seconds"]["minimum"] = json!(1);
    routing["expected_duration_seconds"]["maximum"] = json!(limits::EXPECTED_DURATION_SECONDS);
    let resources = &mut schemas["ResourceSpec"]["properties"];
    for size in ["memory", "ephemeral_storage"] {
        resources[size]["pattern"] = json!(patterns::QUANTITY.text);
    }
    let gpu = &mut schemas["GpuSpec"]["properties"];
    gpu["count"]["minimum"] = json!(1);
    gpu["count"]["maximum"] = json!(limits::GPUS);
    gpu["kind"]["minLength"] = json!(1);
    for op in operations(doc) {
        let params = op.get_mut("parameters").and_then(Value::as_array_mut);
        for param in params.into_iter().flatten() {
            if param["name"] == "labels" {
                param["schema"]["pattern"] = json!(patterns::LABEL_SELECTOR.text);
            }
            if param["name"] == "group_by" {
                param["schema"]["pattern"] = json!(patterns::COST_GROUP_BY.text);
            }
            if param["name"] == "Idempotency-Key" {
                param["schema"]["pattern"] = json!(patterns::IDEMPOTENCY_KEY.text);
            }
            if param["name"] == "id" || param["name"] == "cursor" {
                param["schema"]["pattern"] = json!(patterns::JOB_ID.text);
            }
        }
    }
}

/// Adds to each operation the problems the layers around its handler can answer.
pub(crate) fn add_problems(doc: &mut Value) {
    for op in operations(doc) {
        let params: Vec<String> = op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect();
        let secured = op.get("security").is_some();
        let has_body = op.get("requestBody").is_some();
        let mut add = |status: &str, description: &str| {
            let responses = op["responses"].as_object_mut().expect("operations answer");
            responses.entry(status).or_insert_with(|| {
                json!({
                    "description": description,
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                })
            });
        };
        if secured {
            add("401", "No token, or one this gateway does not know");
            add(
                "503",
                "The job store is unavailable; retry later (Retry-After)",
            );
        }
        if !params.is_empty() {
            add("400", "A malformed parameter, named in `errors`");
        }
        if params.iter().any(|p| p == "id") {
            add("404", "No such job for this tenant");
        }
        if params.iter().any(|p| p == "wait" || p == "follow") {
            add(
                "429",
                "This tenant holds too many long-polls and followers open (Retry-After)",
            );
        }
        if has_body {
            add("400", "The body is not JSON, or a header is malformed");
            add("408", "The body did not arrive in time");
            add("413", "The body is larger than the configured limit");
            add("415", "The body is not sent as application/json");
            add(
                "422",
                "Invalid fields, each named in `errors`; or no configured provider can run the job",
            );
        }
    }
}

/// Every operation object of the document.
fn operations(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .flat_map(|item| {
            item.as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
        })
}
