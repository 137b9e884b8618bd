//! A fake Azure Resource Manager for `Microsoft.App/jobs`, and a fake Log Analytics query
//! API beside it. No Container Apps emulator exists, so this serves the shapes of
//! Microsoft's published examples (tests/fixtures, copied from Azure/azure-rest-api-specs,
//! api-version 2024-08-02-preview), behind ARM's gate for every ARM call
//! (`offload_arm::fake`: token, api-version, throttling, the read bucket, the record).
//!
//! As ARM does: a PUT answers 201 (200 for a replacement) with the job still
//! `InProgress`, and the next read finds it `Succeeded`; a PUT with `If-None-Match: *` of a
//! job that exists is refused with 412 `PreconditionFailed` (ARM's conditional create, which
//! Bicep's `@onlyIfNotExists()` sends; no Microsoft.App document confirms that Container
//! Apps honours it); a start before then is
//! refused with 409; a start answers 200 with the new execution's name and id
//! (Job_Start.json); executions are listed in Job_Executions_Get.json's shape, with the
//! container's status and exit code under `detailedStatus`; a job's secrets come back
//! without their values; a stop ends an execution that is still running (200) and leaves
//! one that has ended; a delete answers 200, or 204 for a job that is not there.
//!
//! Log Analytics: `POST /v1/workspaces/{id}/query` with `{"query": KQL}`, answered in the
//! query API's shape (`tables[0]` with `columns` and `rows`). The fake understands the two
//! query forms the provider sends (a job's lines are its replica's, whose name starts with
//! the job's): oldest first from an instant (`TimeGenerated >=`, `take`), and newest first
//! as far as a number of characters (`row_cumsum` over `strlen`); it refuses any other
//! with 400, as the API refuses KQL it cannot parse. Each line has its own instant, later
//! than the one before, as a container's lines have.
//!
//! The ARM side is served with `offload_arm::fake::serve`, so a test can lose an answer
//! after the fake carried the request out ([`FakeApps::fault`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
pub use offload_arm::fake::Fault;
pub use offload_arm::fake::TOKEN;
use offload_arm::fake::{arm_error, create_only, precondition_failed, Gate};
use serde_json::{json, Value};

pub const API_VERSION: &str = "2024-08-02-preview";
pub const WORKSPACE: &str = "7f0c0b1e-0000-4000-8000-00000000a11c";
const JOBS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/jobs";

/// A published example the fake serves, by its file name in tests/fixtures (built in, so
/// that the fake works from any crate that includes it).
pub fn fixture(name: &str) -> Value {
    let text = match name {
        "Job_Start.json" => include_str!("../fixtures/Job_Start.json"),
        "Job_Executions_Get.json" => include_str!("../fixtures/Job_Executions_Get.json"),
        "Job_CreateorUpdate.json" => include_str!("../fixtures/Job_CreateorUpdate.json"),
        other => panic!("the fake serves no example {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// One log line as Log Analytics holds it.
struct Row {
    at: String,
    line: String,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, Value>,
    /// Each job's executions, oldest first.
    executions: BTreeMap<String, Vec<Value>>,
    logs: BTreeMap<String, Vec<Row>>,
    /// The instant of the last log line written, so that the next is later.
    last_line: Option<time::OffsetDateTime>,
    started: u32,
    /// PUTs that replaced a job that existed.
    replaced: u32,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

pub struct FakeApps {
    pub url: String,
    shared: Shared,
    gate: Gate,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApps {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Now, as Log Analytics and ARM write times: RFC 3339 in UTC with a fixed number of
/// fractional digits (so that the fake compares them as text).
fn now() -> String {
    written(time::OffsetDateTime::now_utc())
}

fn written(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.format(&format).unwrap()
}

fn not_found(what: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource 'Microsoft.App/jobs/{what}' was not found."),
    )
}

/// A job as ARM returns it: its secrets without their values.
fn shown(job: &Value) -> Value {
    let mut job = job.clone();
    for s in job["properties"]["configuration"]["secrets"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        s.as_object_mut().unwrap().remove("value");
    }
    job
}

async fn put_job(
    State(shared): State<Shared>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = shared.0.lock().unwrap();
    let existed = inner.jobs.contains_key(&name);
    if existed && create_only(&headers) {
        return precondition_failed(&format!("Microsoft.App/jobs/{name}"));
    }
    if existed {
        inner.replaced += 1;
    }
    let mut job = body;
    job["id"] = json!(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/jobs/{name}"
    ));
    job["name"] = json!(name);
    job["type"] = json!("Microsoft.App/jobs");
    // As Job_CreateorUpdate.json's answers: provisioning has only begun.
    job["properties"]["provisioningState"] = json!("InProgress");
    inner.jobs.insert(name, job.clone());
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(shown(&job))).into_response()
}

async fn get_job(
    State(shared): State<Shared>,
    Path((_sub, _rg, name)): Path<(String, String, String)>,
) -> Response {
    let mut inner = shared.0.lock().unwrap();
    match inner.jobs.get_mut(&name) {
        Some(job) => {
            job["properties"]["provisioningState"] = json!("Succeeded");
            Json(shown(job)).into_response()
        }
        None => not_found(&name),
    }
}

async fn list_jobs(State(shared): State<Shared>) -> Response {
    let mut inner = shared.0.lock().unwrap();
    let jobs: Vec<Value> = inner
        .jobs
        .values_mut()
        .map(|job| {
            job["properties"]["provisioningState"] = json!("Succeeded");
            shown(job)
        })
        .collect();
    Json(json!({"value": jobs, "nextLink": null})).into_response()
}

async fn delete_job(
    State(shared): State<Shared>,
    Path((_sub, _rg, name)): Path<(String, String, String)>,
) -> Response {
    let mut inner = shared.0.lock().unwrap();
    inner.executions.remove(&name);
    match inner.jobs.remove(&name) {
        Some(_) => StatusCode::OK.into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn start_job(
    State(shared): State<Shared>,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Response {
    let mut guard = shared.0.lock().unwrap();
    let inner = &mut *guard;
    let Some(job) = inner.jobs.get(&name) else {
        return not_found(&name);
    };
    if job["properties"]["provisioningState"] != "Succeeded" {
        return arm_error(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("Job '{name}' is still provisioning."),
        );
    }
    inner.started += 1;
    let execution_name = format!("{name}-{:07x}", inner.started);
    // Job_Executions_Get.json's execution, made this one's.
    let mut execution =
        fixture("Job_Executions_Get.json")["responses"]["200"]["body"]["value"][0].clone();
    execution["name"] = json!(execution_name);
    let props = &mut execution["properties"];
    props["status"] = json!("Processing");
    props["startTime"] = json!(now());
    props.as_object_mut().unwrap().remove("endTime");
    props["template"] = job["properties"]["template"].clone();
    props["detailedStatus"] = json!({"replicas": [{"name": format!("{execution_name}-0"),
        "containers": [{"name": "main", "status": "Waiting", "additionalInformation": "ContainerCreating"}]}]});
    inner
        .executions
        .entry(name.clone())
        .or_default()
        .push(execution);
    let mut body = fixture("Job_Start.json")["responses"]["200"]["body"].clone();
    body["name"] = json!(execution_name);
    body["id"] = json!(format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/jobs/{name}/executions/{execution_name}"));
    Json(body).into_response()
}

async fn list_executions(
    State(shared): State<Shared>,
    Path((_sub, _rg, name)): Path<(String, String, String)>,
) -> Response {
    let inner = shared.0.lock().unwrap();
    if !inner.jobs.contains_key(&name) {
        return not_found(&name);
    }
    let mut body = fixture("Job_Executions_Get.json")["responses"]["200"]["body"].clone();
    // Newest first.
    let mut executions = inner.executions.get(&name).cloned().unwrap_or_default();
    executions.reverse();
    body["value"] = json!(executions);
    Json(body).into_response()
}

async fn stop_execution(
    State(shared): State<Shared>,
    Path((_sub, _rg, name, execution)): Path<(String, String, String, String)>,
) -> Response {
    let mut inner = shared.0.lock().unwrap();
    let Some(found) = inner
        .executions
        .get_mut(&name)
        .and_then(|es| es.iter_mut().find(|e| e["name"] == execution.as_str()))
    else {
        return not_found(&format!("{name}/executions/{execution}"));
    };
    let props = &mut found["properties"];
    if matches!(props["status"].as_str(), Some("Processing" | "Running")) {
        props["status"] = json!("Stopped");
        props["endTime"] = json!(now());
    }
    StatusCode::OK.into_response()
}

/// Which lines of a job a query asks for.
enum Lines {
    /// Oldest first, from an instant, at most this many.
    Forward { from: Option<String>, take: usize },
    /// Newest first, until the lines (each counted as its characters and a newline) reach
    /// this many characters: the one that reaches them is the last.
    Backward { chars: usize },
}

/// The fake's reading of the provider's KQL: `TABLE | where COLUMN startswith 'JOB-'`, then
/// either `[| where TimeGenerated >= datetime(T)] | order by TimeGenerated asc | project
/// TimeGenerated, LOG | take N`, or `| order by TimeGenerated desc | extend total =
/// row_cumsum(strlen(LOG) + 1) | where total - strlen(LOG) - 1 < N | project
/// TimeGenerated, LOG`. Gives the job, the log column and the lines asked for.
fn parse(kql: &str) -> Option<(String, String, Lines)> {
    let parts: Vec<&str> = kql.split('|').map(str::trim).collect();
    let table = parts.first()?.to_string();
    let (column, prefix) = parts
        .get(1)?
        .strip_prefix("where ")?
        .split_once(" startswith ")?;
    let job = prefix.strip_prefix('\'')?.strip_suffix("-'")?.to_string();
    let expected = if table.ends_with("_CL") {
        ("ContainerGroupName_s", "Log_s")
    } else {
        ("ContainerGroupName", "Log")
    };
    (column == expected.0).then_some(())?;
    let log = expected.1;
    let project = format!("project TimeGenerated, {log}");
    let mut rest = &parts[2..];
    if rest.first()? == &"order by TimeGenerated desc" {
        let sum = format!("extend total = row_cumsum(strlen({log}) + 1)");
        let cut = format!("where total - strlen({log}) - 1 < ");
        (rest.get(1)? == &sum.as_str() && rest.get(3)? == &project.as_str() && rest.len() == 4)
            .then_some(())?;
        let chars = rest.get(2)?.strip_prefix(cut.as_str())?.parse().ok()?;
        return Some((job, log.to_string(), Lines::Backward { chars }));
    }
    let from = match rest
        .first()?
        .strip_prefix("where TimeGenerated >= datetime(")
    {
        Some(t) => {
            rest = &rest[1..];
            Some(t.strip_suffix(')')?.to_string())
        }
        None => None,
    };
    (rest.first()? == &"order by TimeGenerated asc" && rest.get(1)? == &project.as_str())
        .then_some(())?;
    let take = rest.get(2)?.strip_prefix("take ")?.parse().ok()?;
    (rest.len() == 3).then_some(())?;
    Some((job, log.to_string(), Lines::Forward { from, take }))
}

async fn query(
    State(shared): State<Shared>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "InvalidTokenError", "message": "The provided authentication is not valid."}}))).into_response();
    }
    if workspace != WORKSPACE {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "WorkspaceNotFoundError", "message": "The workspace could not be found"}}))).into_response();
    }
    let Some((job, log, lines)) = body["query"].as_str().and_then(parse) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "BadArgumentError", "message": "The request had some invalid properties"}}))).into_response();
    };
    let inner = shared.0.lock().unwrap();
    let all = inner.logs.get(&job).map_or(&[][..], Vec::as_slice);
    let rows: Vec<Value> = match lines {
        Lines::Forward { from, take } => all
            .iter()
            .filter(|r| from.as_ref().is_none_or(|f| r.at.as_str() >= f.as_str()))
            .take(take)
            .map(|r| json!([r.at, r.line]))
            .collect(),
        Lines::Backward { chars } => {
            let mut total = 0;
            all.iter()
                .rev()
                .take_while(|r| {
                    let before = total;
                    total += r.line.chars().count() + 1;
                    before < chars
                })
                .map(|r| json!([r.at, r.line]))
                .collect()
        }
    };
    Json(json!({"tables": [{"name": "PrimaryResult", "columns": [
        {"name": "TimeGenerated", "type": "datetime"}, {"name": log, "type": "string"}], "rows": rows}]}))
    .into_response()
}

impl FakeApps {
    pub async fn start() -> FakeApps {
        let shared = Shared::default();
        let gate = Gate::new(API_VERSION);
        let arm = Router::new()
            .route(JOBS, get(list_jobs))
            .route(
                &format!("{JOBS}/{{name}}"),
                put(put_job).get(get_job).delete(delete_job),
            )
            .route(&format!("{JOBS}/{{name}}/start"), post(start_job))
            .route(&format!("{JOBS}/{{name}}/executions"), get(list_executions))
            .route(
                &format!("{JOBS}/{{name}}/executions/{{execution}}/stop"),
                post(stop_execution),
            )
            .with_state(shared.clone());
        let logs = Router::new()
            .route("/v1/workspaces/{workspace}/query", post(query))
            .with_state(shared.clone());
        let app = gate.guard(arm).merge(logs);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = offload_arm::fake::serve(listener, app);
        FakeApps {
            url,
            shared,
            gate,
            server,
        }
    }

    /// The job as stored, secrets and all (what the PUT sent).
    pub fn job(&self, name: &str) -> Option<Value> {
        self.shared.0.lock().unwrap().jobs.get(name).cloned()
    }

    pub fn jobs(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().jobs.keys().cloned().collect()
    }

    /// The job's executions, oldest first.
    pub fn executions(&self, job: &str) -> Vec<Value> {
        self.shared
            .0
            .lock()
            .unwrap()
            .executions
            .get(job)
            .cloned()
            .unwrap_or_default()
    }

    /// Moves the job's newest execution on: its status, and its container's entry under
    /// `detailedStatus` (`status`, `code`, `additionalInformation`). An ended one gets its
    /// end time.
    pub fn set_execution(&self, job: &str, status: &str, container: Value) {
        let mut inner = self.shared.0.lock().unwrap();
        let execution = inner
            .executions
            .get_mut(job)
            .and_then(|es| es.last_mut())
            .expect("no execution of that job");
        let props = &mut execution["properties"];
        props["status"] = json!(status);
        let mut container = container;
        container["name"] = json!("main");
        props["detailedStatus"]["replicas"][0]["containers"] = json!([container]);
        if matches!(status, "Succeeded" | "Failed" | "Stopped" | "Degraded") {
            props["endTime"] = json!(now());
        }
    }

    /// Log Analytics receives these lines of the job's console output, each stamped with
    /// its own instant: now, or just after the line before.
    pub fn append_log(&self, job: &str, text: &str) {
        let mut guard = self.shared.0.lock().unwrap();
        let inner = &mut *guard;
        let rows = inner.logs.entry(job.to_string()).or_default();
        for line in text.lines() {
            let now = time::OffsetDateTime::now_utc();
            let now = now
                .replace_nanosecond(now.nanosecond() / 1000 * 1000)
                .unwrap();
            let at = match inner.last_line {
                Some(last) if last >= now => last + time::Duration::microseconds(1),
                _ => now,
            };
            inner.last_line = Some(at);
            rows.push(Row {
                at: written(at),
                line: line.to_string(),
            });
        }
    }

    /// How many PUTs replaced a job that existed.
    pub fn replaced(&self) -> u32 {
        self.shared.0.lock().unwrap().replaced
    }

    /// The next `times` ARM requests with this method whose path ends with `suffix` meet
    /// `fault`.
    pub fn fault(&self, method: &'static str, suffix: &str, times: u32, fault: Fault) {
        self.gate.fault(method, suffix, times, fault);
    }

    pub fn throttle(&self, times: u32, seconds: u64) {
        self.gate.throttle(times, seconds);
    }

    pub fn over_budget(&self) -> u32 {
        self.gate.over_budget()
    }

    /// (method, path and query, JSON body) of every ARM request.
    pub fn requests(&self) -> Vec<(String, String, Option<Value>)> {
        self.gate.requests()
    }
}
