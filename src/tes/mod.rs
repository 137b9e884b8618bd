//! The GA4GH Task Execution Service, v1.1, at `/ga4gh/tes/v1`: workflow engines (Snakemake,
//! Nextflow, Cromwell, cwl-tes) send their tasks here, and each task is a job of the gateway
//! (`task`), stored, routed, run, costed and shown like any other, with the same tokens and
//! tenants as `/v1`. Its own OpenAPI document is `doc`; its states are `state`.
//!
//! Errors are `/v1`'s problems (TES defines none), with 400 where `/v1` answers 422: a task
//! that cannot be run as written is a bad request, whose `errors` name each field as TES
//! names it (`executors[0].command`, `inputs[1].url`, `resources.ram_gb`).

pub mod doc;
pub mod state;
pub mod task;

use axum::extract::{FromRequestParts, Path, Query, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::api::auth::Tenant;
use crate::api::body::JsonBody;
use crate::api::error::{ApiError, Problem};
use crate::api::AppState;
use crate::engine::CancelOutcome;
use crate::model::FieldError;
use crate::store::{ListQuery, Submitted};
use state::TesState;
use task::{
    TesCancelTaskResponse, TesCreateTaskResponse, TesListTasksResponse, TesTask, View,
    BACKEND_PARAMETERS,
};

/// The TES API's routes, nested under `/ga4gh/tes/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/service-info", get(service_info))
        .route("/tasks", get(list_tasks).post(create_task))
        .route(
            "/tasks/{id}",
            get(get_task).post(cancel_task).fallback(wrong_method),
        )
        .route("/openapi.json", get(openapi_json))
}

/// The tenant a TES request acts for: its token's, as on `/v1`; without an `Authorization`
/// header, `tes.anonymous_tenant` when the operator set one.
pub struct TesTenant(pub Tenant);

impl FromRequestParts<AppState> for TesTenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let (None, Some(tenant)) = (
            parts.headers.get(header::AUTHORIZATION),
            &state.tes.anonymous_tenant,
        ) {
            return Ok(TesTenant(Tenant(tenant.clone())));
        }
        Tenant::from_request_parts(parts, state).await.map(TesTenant)
    }
}

/// A problem as TES answers it: 400 for what `/v1` calls 422, each field named as TES names it.
fn bad_request(e: ApiError) -> ApiError {
    match e.status() {
        StatusCode::UNPROCESSABLE_ENTITY => e.with_status(StatusCode::BAD_REQUEST),
        _ => e,
    }
}

/// A job spec's field, as the task it came from names it.
fn task_field(field: &str) -> String {
    let renamed = [
        ("steps.", ""),
        ("labels", "tags"),
        ("resources.cpu", "resources.cpu_cores"),
        ("resources.memory", "resources.ram_gb"),
        ("resources.ephemeral_storage", "resources.disk_gb"),
        ("resources.gpu.count", "resources.backend_parameters.gpu_count"),
        ("resources.gpu.kind", "resources.backend_parameters.gpu_kind"),
        ("routing.zones", "resources.zones"),
        ("routing.", "resources.backend_parameters."),
        ("timeout_seconds", "resources.backend_parameters.timeout_seconds"),
        ("provider_options", "resources.backend_parameters"),
        ("provider", "resources.backend_parameters.provider"),
        ("image", "executors[0].image"),
        ("env", "executors[0].env"),
        ("command", "executors[0].command"),
        ("(body)", "(body)"),
    ];
    for (from, to) in renamed {
        if let Some(rest) = field.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    field.to_string()
}

/// Renames the fields of a `/v1` problem as TES names them, and makes it a 400.
fn as_task_problem(e: ApiError) -> ApiError {
    bad_request(e.map_fields(task_field))
}

#[utoipa::path(
    get, path = "/service-info", tag = "TaskService", operation_id = "GetServiceInfo",
    summary = "Describe this service",
    description = "GA4GH service-info: this service's id, organization, TES version and the storage its tasks reach.",
    responses((status = 200, description = "What this service is and what it takes", body = Object)),
)]
pub async fn service_info(State(state): State<AppState>) -> Json<serde_json::Value> {
    let t = &state.tes;
    Json(json!({
        "id": t.service_id,
        "name": "offload",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
        "description": "GA4GH TES on the offload gateway: each task is a job, routed to the cheapest provider that can run it.",
        "organization": {"name": t.organization_name, "url": t.organization_url},
        "version": env!("CARGO_PKG_VERSION"),
        "storage": t.storage,
        "tesResources_backend_parameters": BACKEND_PARAMETERS,
    }))
}

#[utoipa::path(
    post, path = "/tasks", tag = "TaskService", operation_id = "CreateTask",
    summary = "Create a task",
    description = "Commits a TES task as a job of the caller's tenant and answers its id. Its executors run one after another; a field at fault is a 400 naming it as TES names it.",
    request_body = TesTask,
    responses(
        (status = 200, description = "Created; its id", body = TesCreateTaskResponse),
        (status = 400, description = "A malformed task, each field at fault named in `errors`; or no configured provider can run it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_task(
    State(state): State<AppState>,
    TesTenant(tenant): TesTenant,
    body: Result<JsonBody<TesTask>, ApiError>,
) -> Result<Json<TesCreateTaskResponse>, ApiError> {
    let JsonBody(task) = body.map_err(bad_request)?;
    let spec = task
        .to_spec()
        .map_err(|errors| bad_request(ApiError::invalid(errors)))?;
    match crate::api::jobs::submit(&state, tenant, spec, None)
        .await
        .map_err(as_task_problem)?
    {
        Submitted::Created(rec) | Submitted::Existing(rec) => Ok(Json(TesCreateTaskResponse {
            id: rec.job.id.to_string(),
        })),
        Submitted::Conflict(id) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("task {id} conflicts"),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewParams {
    /// MINIMAL (the default): `id` and `state`; BASIC: all but executors' stdout and
    /// stderr, inputs' content and system logs; FULL: everything.
    #[param(value_type = Option<View>)]
    view: Option<String>,
}

fn view_of(view: Option<&str>) -> Result<View, ApiError> {
    match view {
        None | Some("MINIMAL") => Ok(View::Minimal),
        Some("BASIC") => Ok(View::Basic),
        Some("FULL") => Ok(View::Full),
        Some(other) => Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::new("view", format!("{other:?} is not MINIMAL, BASIC or FULL")),
        )),
    }
}

#[utoipa::path(
    get, path = "/tasks/{id}", tag = "TaskService", operation_id = "GetTask",
    summary = "Read a task",
    description = "The task in the view asked for (MINIMAL, BASIC or FULL).",
    params(("id" = String, Path, description = "The task's id"), ViewParams),
    responses(
        (status = 200, body = TesTask),
        (status = 404, description = "No such task for this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_task(
    State(state): State<AppState>,
    TesTenant(tenant): TesTenant,
    Path(id): Path<String>,
    Query(p): Query<ViewParams>,
) -> Result<Response, ApiError> {
    if id.ends_with(":cancel") {
        return Ok(method_not_allowed(&id));
    }
    let view = view_of(p.view.as_deref())?;
    let id = crate::api::jobs::parse_id(&id)?;
    let rec = crate::api::jobs::job_of(&state, &tenant, id).await?;
    let job = &rec.job;
    // A plain job's executor log is its stored log tail.
    let tail = match view == View::Full && job.terminal && job.spec.steps.is_none() {
        true => state.store.log_tail(id).await?,
        false => None,
    };
    Ok(Json(TesTask::of(job, view, tail.as_deref())).into_response())
}

/// `/tasks/{id}` and `/tasks/{id}:cancel` are two resources (a task, read with GET; its
/// cancel, POST) that axum routes as one path: each answers the other's methods, and any
/// other, with 405 and its own `Allow`.
fn method_not_allowed(id_or_path: &str) -> Response {
    let allow = match id_or_path.ends_with(":cancel") {
        true => "POST",
        false => "GET,HEAD",
    };
    let problem = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)], problem).into_response()
}

async fn wrong_method(uri: axum::http::Uri) -> Response {
    method_not_allowed(uri.path())
}

#[utoipa::path(
    post, path = "/tasks/{id}:cancel", tag = "TaskService", operation_id = "CancelTask",
    summary = "Cancel a task",
    description = "Stops the task's job; cancelling a task that has ended changes nothing.",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Cancelled, or cancelling; also when it had already ended", body = TesCancelTaskResponse),
        (status = 404, description = "No such task for this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_task(
    State(state): State<AppState>,
    TesTenant(tenant): TesTenant,
    Path(id_action): Path<String>,
) -> Result<Response, ApiError> {
    let Some(id) = id_action.strip_suffix(":cancel") else {
        return Ok(method_not_allowed(&id_action));
    };
    let id = crate::api::jobs::parse_id(id)?;
    match state.engine.cancel(&tenant.0, id).await? {
        CancelOutcome::Accepted(_) | CancelOutcome::AlreadyTerminal(_) => {
            Ok(Json(TesCancelTaskResponse {}).into_response())
        }
        CancelOutcome::NotFound => Err(ApiError::not_found("task")),
    }
}

/// `GET /tasks`'s parameters, for the document; the handler reads the query itself, since
/// `tag_key` and `tag_value` repeat.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Only tasks whose name starts with this.
    name_prefix: Option<String>,
    #[param(value_type = Option<TesState>)]
    state: Option<String>,
    /// Tag keys, zipped with `tag_value`: a key without a value (or with an empty one)
    /// matches any value.
    #[param(value_type = Option<Vec<String>>)]
    tag_key: Option<String>,
    #[param(value_type = Option<Vec<String>>)]
    tag_value: Option<String>,
    /// 1 to 2047 (default 256); a page also ends at about 1 MiB of JSON.
    #[param(value_type = Option<i32>, minimum = 1, maximum = 2047)]
    page_size: Option<String>,
    /// The previous page's `next_page_token`.
    page_token: Option<String>,
    #[param(value_type = Option<View>)]
    view: Option<String>,
}

const MAX_PAGE: usize = 2047;
const DEFAULT_PAGE: usize = 256;

#[utoipa::path(
    get, path = "/tasks", tag = "TaskService", operation_id = "ListTasks",
    summary = "List tasks",
    description = "The caller's tasks, a page at a time, filtered by name prefix, state and tags, in the view asked for.",
    params(ListParams),
    responses((status = 200, body = TesListTasksResponse)),
    security(("bearer" = []))
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    TesTenant(tenant): TesTenant,
    RawQuery(raw): RawQuery,
) -> Result<Json<TesListTasksResponse>, ApiError> {
    let bad = |field: &str, message: String| {
        ApiError::field(StatusCode::BAD_REQUEST, FieldError::new(field, message))
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad("(query)", format!("not a query string: {e}")))?;
    let one = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        match values.next() {
            Some(_) => Err(bad(name, "given more than once".into())),
            None => Ok(first),
        }
    };
    let view = view_of(one("view")?)?;
    let limit = match one("page_size")? {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| bad("page_size", format!("{n:?} is not a number from 1 to {MAX_PAGE}")))?,
        None => DEFAULT_PAGE,
    };
    let before = match one("page_token")? {
        Some(t) => Some(
            crate::api::jobs::parse_id(t)
                .map_err(|_| bad("page_token", format!("{t:?} is not a token this API gave")))?,
        ),
        None => None,
    };
    let mut query = ListQuery {
        before,
        limit,
        name_prefix: one("name_prefix")?.map(String::from),
        ..ListQuery::default()
    };
    if let Some(s) = one("state")? {
        let tes_state = TesState::parse(s).ok_or_else(|| {
            let all: Vec<_> = TesState::ALL.iter().map(|s| s.as_str()).collect();
            bad("state", format!("{s:?} is not one of {}", all.join(", ")))
        })?;
        if !tes_state.filter(&mut query) {
            return Ok(Json(TesListTasksResponse {
                tasks: vec![],
                next_page_token: None,
            }));
        }
    }
    let keys = pairs.iter().filter(|(k, _)| k == "tag_key").map(|(_, v)| v);
    let mut values = pairs.iter().filter(|(k, _)| k == "tag_value").map(|(_, v)| v);
    for key in keys {
        match values.next().filter(|v| !v.is_empty()) {
            Some(value) => query.labels.push((key.clone(), value.clone())),
            None => query.label_keys.push(key.clone()),
        }
    }
    if query.labels.len() + query.label_keys.len() > crate::model::limits::LABEL_SELECTORS {
        return Err(bad(
            "tag_key",
            format!(
                "more than {} tags (no task has more)",
                crate::model::limits::LABEL_SELECTORS
            ),
        ));
    }
    let page = crate::api::listing::page(&*state.store, &tenant.0, &query).await?;
    Ok(Json(TesListTasksResponse {
        tasks: page.jobs.iter().map(|j| TesTask::of(j, view, None)).collect(),
        next_page_token: page.next.map(|id| id.to_string()),
    }))
}

/// The TES document (OpenAPI 3.1), as `openapi/tes.v1.yaml` has it, with what this
/// deployment's tenants may stage.
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(doc::served(&state.engine.staging)).into_response()
}
