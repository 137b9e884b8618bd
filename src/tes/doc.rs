//! The TES API's OpenAPI document, generated from its handlers and types as `/v1`'s is
//! (`api::doc`), with TES's server path and the limits the gateway checks tasks with.
//! Committed as `openapi/tes.v1.yaml` (a test fails when they differ) and served at
//! `/ga4gh/tes/v1/openapi.json`.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{state, task};
use crate::api::error;
use crate::model::{limits, patterns, steps, FieldError};

#[derive(OpenApi)]
#[openapi(
    info(title = "offload: GA4GH Task Execution Service", version = "1.1.0",
        description = "GA4GH TES v1.1 on the offload gateway: each task is a job, stored, routed to the cheapest provider that can run it, and costed."),
    servers((url = "/ga4gh/tes/v1")),
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

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as committed.
pub fn openapi() -> Value {
    let mut doc = serde_json::to_value(TesDoc::openapi()).expect("the document serialises");
    // A task is created with its executors, and read back without them in the MINIMAL
    // view: TesTask requires them where it is a request body, not where it is an answer.
    doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"] =
        json!({"allOf": [{"$ref": "#/components/schemas/TesTask"}, {"required": ["executors"]}]});
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
    let mut doc = openapi();
    crate::api::doc::staging_schemas(
        &mut doc["components"]["schemas"],
        staging,
        &[("TesTask", "outputs"), ("StepsSpec", "outputs")],
    );
    doc
}

/// The document as committed in `openapi/tes.v1.yaml`.
pub fn openapi_yaml() -> String {
    serde_norway::to_string(&openapi()).expect("the OpenAPI document serialises")
}
