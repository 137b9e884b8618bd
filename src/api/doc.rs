//! The OpenAPI document, generated from the handlers' annotations and the model's types.
//! `openapi/offload.v1.yaml` is this document committed; a test fails when they differ.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, jobs, ops};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(title = "offload", description = "Run container jobs on serverless runtimes from schedulers such as Airflow."),
    paths(
        jobs::create_job, jobs::list_jobs, jobs::get_job, jobs::cancel_job, jobs::job_logs, jobs::job_events,
        ops::providers, ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        model::JobSpec, model::ResourceSpec, model::GpuSpec, model::Job, model::JobState, model::Event,
        model::JobPage, model::ProviderInfo, model::FieldError, error::Problem,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

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

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `openapi/offload.v1.yaml`.
pub fn openapi_yaml() -> String {
    openapi()
        .to_yaml()
        .expect("the OpenAPI document serialises")
}
