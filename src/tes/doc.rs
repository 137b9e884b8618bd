//! The TES API's OpenAPI document, generated from its handlers and types as `/v1`'s is
//! (`api::doc`), with TES's server path and the limits the gateway checks tasks with.
//! Committed as `openapi/tes.v1.yaml` (a test fails when they differ) and served at
//! `/ga4gh/tes/v1/openapi.json`.

use serde_json::{json, Value};
use utoipa::OpenApi;

use super::{state, task};
use crate::api::doc::BearerAuth;
use crate::api::error;
use crate::model::{limits, patterns, steps, FieldError};

#[derive(OpenApi)]
#[openapi(
    info(title = "offload: GA4GH Task Execution Service", version = "1.1.0",
        description = "GA4GH TES v1.1 on the offload gateway: each task is a job, stored, routed to the cheapest provider that can run it, and costed.",
        contact(name = "offload")),
    servers((url = "/ga4gh/tes/v1")),
    tags((name = "TaskService", description = "GA4GH TES v1.1: create, follow and cancel tasks")),
    paths(super::service_info, super::create_task, super::get_task, super::list_tasks, super::cancel_task),
    components(schemas(
        task::TesTask, task::TesResources, task::TesTaskLog, task::TesExecutorLog,
        task::TesOutputFileLog, task::TesCreateTaskResponse, task::TesListTasksResponse,
        task::TesCancelTaskResponse, task::View, state::TesState,
        steps::Executor, steps::Input, steps::Output, steps::FileType,
        FieldError, error::Problem,
    )),
    modifiers(&BearerAuth),
)]
struct TesDoc;

/// The document, as committed.
pub fn openapi() -> Value {
    let mut doc = constrained();
    split_request(&mut doc);
    doc
}

/// The schemas a created task is checked against, in the request body only.
const REQUEST_SCHEMAS: [&str; 5] = ["TesTask", "TesResources", "Executor", "Input", "Output"];

/// Keywords that say what a request may hold, not what an answer does.
const REQUEST_KEYWORDS: [&str; 13] = [
    "minItems", "maxItems", "minLength", "maxLength", "pattern", "propertyNames",
    "maxProperties", "minimum", "maximum", "exclusiveMinimum", "anyOf", "not", "if",
];

/// TesTask and its parts are both what a client sends and what it reads back, and what it
/// reads back need not meet what a new task must: the MINIMAL view has no executors, the
/// BASIC view no inputs' content, and a job submitted through `/v1` is listed as a task
/// (an empty command, where its image's entrypoint runs). So the create request's body is
/// TesTask with its parts written out in it, with every limit, and the components, which
/// the answers use, keep TES's names and shapes without the limits.
fn split_request(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let mut body = inline(schemas["TesTask"].clone(), &schemas);
    body["required"] = json!(["executors"]);
    doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"] = body;
    for name in REQUEST_SCHEMAS {
        strip(&mut doc["components"]["schemas"][name]);
    }
    let input = &mut doc["components"]["schemas"]["Input"];
    input["required"] = json!(["path"]);
    input["properties"]["content"]["type"] = json!(["string", "null"]);
    input["properties"]["url"]["type"] = json!(["string", "null"]);
}

/// `schema` with each reference to one of [`REQUEST_SCHEMAS`] replaced by that schema.
fn inline(schema: Value, schemas: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let target = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .filter(|name| REQUEST_SCHEMAS.contains(name));
            match target {
                Some(name) => inline(schemas[name].clone(), schemas),
                None => Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (k, inline(v, schemas)))
                        .collect(),
                ),
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| inline(v, schemas)).collect()),
        other => other,
    }
}

/// Removes [`REQUEST_KEYWORDS`] from `schema` and everything in it.
fn strip(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            for keyword in REQUEST_KEYWORDS {
                map.remove(keyword);
            }
            if map.get("then").is_some() {
                map.remove("then");
            }
            for (key, value) in map.iter_mut() {
                // Names of properties are not keywords.
                if key == "properties" {
                    if let Value::Object(props) = value {
                        props.values_mut().for_each(strip);
                    }
                } else {
                    strip(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// The document with TES's limits on its components, before [`split_request`].
fn constrained() -> Value {
    let mut doc = serde_json::to_value(TesDoc::openapi()).expect("the document serialises");
    let schemas = &mut doc["components"]["schemas"];
    crate::api::doc::constrain_steps(schemas);
    let task = &mut schemas["TesTask"]["properties"];
    task["executors"]["minItems"] = json!(1);
    task["executors"]["maxItems"] = json!(limits::EXECUTORS);
    task["name"]["maxLength"] = json!(limits::NAME);
    task["tags"]["maxProperties"] = json!(limits::LABELS);
    task["tags"]["propertyNames"] =
        json!({"type": "string", "minLength": 1, "maxLength": limits::LABEL_KEY});
    task["tags"]["additionalProperties"] =
        json!({"type": "string", "maxLength": limits::LABEL_VALUE});
    task["volumes"]["maxItems"] = json!(limits::VOLUMES);
    task["volumes"]["items"] =
        json!({"type": "string", "pattern": patterns::ABSOLUTE_PATH.text, "maxLength": limits::PATH});
    for files in ["inputs", "outputs"] {
        task[files]["maxItems"] = json!(limits::FILES);
    }
    let resources = &mut schemas["TesResources"]["properties"];
    resources["cpu_cores"]["minimum"] = json!(1);
    resources["cpu_cores"]["maximum"] = json!(limits::CPU);
    for gb in ["ram_gb", "disk_gb"] {
        resources[gb]["exclusiveMinimum"] = json!(0);
        resources[gb]["maximum"] = json!(1_000_000);
    }
    crate::api::doc::add_problems(&mut doc);
    doc
}

/// The document for this deployment: which URLs its tenants may stage (as `/v1`'s).
pub fn served(staging: &crate::config::StagingConfig) -> Value {
    let mut doc = constrained();
    crate::api::doc::staging_schemas(
        &mut doc["components"]["schemas"],
        staging,
        &[("TesTask", "outputs")],
    );
    split_request(&mut doc);
    doc
}

/// The document as committed in `openapi/tes.v1.yaml`.
pub fn openapi_yaml() -> String {
    serde_norway::to_string(&openapi()).expect("the OpenAPI document serialises")
}
