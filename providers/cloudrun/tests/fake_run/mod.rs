//! A fake Cloud Run Admin API (v2), Cloud Logging API (v2) and Secret Manager API (v1),
//! for the provider's tests and the gateway's. No Cloud Run emulator exists, so this keeps
//! the published conventions the real clients rely on:
//!
//! - resource names (`projects/P/locations/L/jobs/J/executions/E/tasks/T`), `-` for "every
//!   job" in a list of executions, `pageSize`/`pageToken`/`nextPageToken` paging;
//! - long-running operations: a job's create and delete and an execution's cancel answer
//!   an `Operation` (`projects/P/locations/L/operations/ID`, `metadata` an `Any` with
//!   `@type`), not done; `GET` of the operation answers it done, with its `response`;
//! - errors as `google.rpc.Status` in `{"error": {"code", "message", "status"}}` (the
//!   Rust client reads the code from `status`), 429 `RESOURCE_EXHAUSTED` with Retry-After
//!   and a `RetryInfo` detail, 409 `ALREADY_EXISTS` for a job id that is taken, 409
//!   `ABORTED` for a stale `etag`;
//! - a job's `startExecutionToken` starts its execution `JOB-TOKEN` as it is created
//!   (with `latestCreatedExecution` on the job), unless its image is one the test said is
//!   missing: then the job's `terminalCondition` fails with `CONTAINER_MISSING`, as Cloud
//!   Run reports an image it cannot find;
//! - executions with `runningCount`/`succeededCount`/`failedCount`/`cancelledCount`,
//!   `startTime`/`completionTime` and a `Completed` condition; one task each, whose
//!   `lastAttemptResult` has the exit code, or `DEADLINE_EXCEEDED` for a timeout;
//! - int64 fields as strings, durations as `"600s"`, RFC 3339 times in UTC, enums by
//!   name (the client asks `$alt=json;enum-encoding=int` and reads both forms);
//! - Cloud Run's limits checked on create: a GPU task needs 4 vCPU and 16 GiB, the job id
//!   and token fit 63 characters, a secret reference names a secret version that exists.
//!
//! Cloud Logging: `POST /v2/entries:list` with the filter form the provider sends
//! (`resource.type`, `resource.labels.job_name`, `resource.labels.location`, optionally
//! `timestamp>=`), `orderBy` `timestamp asc` or `timestamp desc` (equal timestamps in
//! `insertId` order, as the reference says), `pageSize` up to 1000 (more is refused, as the
//! API refuses it); each line written has its own instant, later than the one before.
//! Secret Manager: create a secret (with its labels), add a version, delete a secret, list
//! secrets with a `name:"TEXT"` filter (the names that contain TEXT; the fake refuses other
//! filters with 400).
//! The test plays Cloud Run: it moves executions on and writes log lines; it can make the
//! next requests of a kind fail with an error, or never answer ([`FakeRun::fail`],
//! [`FakeRun::hang`]).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const TOKEN: &str = "fake-google-token";
pub const PROJECT: &str = "batch-prod";
pub const REGION: &str = "us-central1";

#[derive(Default)]
struct Inner {
    /// By job id.
    jobs: BTreeMap<String, Value>,
    /// By job id: its one execution (offload's jobs have one) and its task.
    executions: BTreeMap<String, Value>,
    tasks: BTreeMap<String, Value>,
    operations: BTreeMap<String, Value>,
    /// Log lines by job id, oldest first.
    logs: BTreeMap<String, Vec<Line>>,
    /// The instant of the last line written, so that the next is later.
    last_line: Option<time::OffsetDateTime>,
    /// Secret id → the secret.
    secrets: BTreeMap<String, Secret>,
    faults: Vec<Rule>,
    missing_images: BTreeSet<String>,
    throttle: Option<(u32, u64)>,
    requests: Vec<(String, String, Option<Value>)>,
    serial: u64,
}

/// One line of a job's output as Cloud Logging holds it.
struct Line {
    at: time::OffsetDateTime,
    text: String,
    insert_id: String,
}

#[derive(Default)]
struct Secret {
    labels: Value,
    /// Version payloads (base64), oldest first.
    versions: Vec<String>,
}

/// The next `times` requests with this method whose path and query contain `contains`
/// meet `fault`.
struct Rule {
    method: &'static str,
    contains: String,
    times: u32,
    fault: Option<(StatusCode, &'static str)>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

pub struct FakeRun {
    pub url: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRun {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Now, as Google's APIs write times: RFC 3339 in UTC.
fn now() -> String {
    written(time::OffsetDateTime::now_utc())
}

fn written(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.format(&format).unwrap()
}

fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// A `google.rpc.Status` error answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": code}});
    (status, Json(body)).into_response()
}

fn not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("Resource '{name}' was not found"),
    )
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn parent() -> String {
    format!("projects/{PROJECT}/locations/{REGION}")
}

/// A Cloud Run resource id: 1 to 63 of `a-z0-9-`, starting with a letter, not ending with `-`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id.as_bytes()[0].is_ascii_lowercase()
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Bytes of a Kubernetes-style quantity as Cloud Run takes them (`512Mi`, `4Gi`).
fn memory_bytes(text: &str) -> Option<u64> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(
        n * match unit {
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => return None,
        },
    )
}

impl Inner {
    fn serial(&mut self) -> String {
        self.serial += 1;
        format!("{:08x}", self.serial)
    }

    /// A new operation on `target`, not done; its `GET` finds it done with `response`.
    fn operation(&mut self, kind: &str, response: Value) -> Value {
        let name = format!("{}/operations/{}", parent(), self.serial());
        let mut any = response.clone();
        any["@type"] = json!(format!("type.googleapis.com/google.cloud.run.v2.{kind}"));
        let done = json!({"name": name, "metadata": any, "done": true, "response": any});
        self.operations.insert(name.clone(), done);
        json!({"name": name, "metadata": any, "done": false})
    }

    /// Why Cloud Run would refuse to create `job`, if it would.
    fn refusal(&self, id: &str, job: &Value) -> Option<String> {
        if !valid_id(id) {
            return Some(format!("jobId: {id:?} is not a valid job id"));
        }
        if let Some(token) = job["startExecutionToken"].as_str() {
            if id.len() + token.len() >= 63 {
                return Some(
                    "startExecutionToken: job name and token must be fewer than 63 characters"
                        .into(),
                );
            }
        }
        let task = &job["template"]["template"];
        let containers = task["containers"].as_array()?;
        let container = containers.first()?;
        if container["image"].as_str().unwrap_or("").is_empty() {
            return Some("template.template.containers[0].image: must not be empty".into());
        }
        let limits = &container["resources"]["limits"];
        let cpu: f64 = limits["cpu"].as_str().unwrap_or("1").parse().ok()?;
        let memory = memory_bytes(limits["memory"].as_str().unwrap_or("512Mi"))?;
        if limits.get("nvidia.com/gpu").is_some() {
            if task["nodeSelector"]["accelerator"] != "nvidia-l4" {
                return Some(
                    "template.template.nodeSelector.accelerator: nvidia-l4 is needed for a GPU"
                        .into(),
                );
            }
            if cpu < 4.0 || memory < 16 << 30 {
                return Some("GPU tasks need at least 4 CPU and 16Gi of memory".into());
            }
        }
        for env in container["env"].as_array().into_iter().flatten() {
            let reference = &env["valueSource"]["secretKeyRef"];
            if let Some(secret) = reference["secret"].as_str() {
                let version: usize = reference["version"]
                    .as_str()
                    .unwrap_or("")
                    .parse()
                    .unwrap_or(0);
                let known = self
                    .secrets
                    .get(secret)
                    .is_some_and(|s| version >= 1 && version <= s.versions.len());
                if !known {
                    return Some(format!("Secret projects/{PROJECT}/secrets/{secret}/versions/{version} was not found"));
                }
            }
        }
        None
    }

    fn create_job(&mut self, id: &str, mut job: Value) -> Response {
        if let Some(why) = self.refusal(id, &job) {
            return invalid(&why);
        }
        if self.jobs.contains_key(id) {
            return error(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                &format!("Resource '{id}' already exists"),
            );
        }
        let name = format!("{}/jobs/{id}", parent());
        let at = now();
        job["name"] = json!(name);
        job["uid"] = json!(format!("0000-{}", self.serial()));
        job["generation"] = json!("1");
        job["observedGeneration"] = json!("1");
        job["createTime"] = json!(at);
        job["etag"] = json!(format!("\"{}\"", self.serial()));
        let image = job["template"]["template"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if self.missing_images.contains(&image) {
            job["terminalCondition"] = json!({"type": "Ready", "state": "CONDITION_FAILED",
                "reason": "CONTAINER_MISSING", "message": format!("Image '{image}' not found."),
                "lastTransitionTime": at});
        } else if let Some(token) = job["startExecutionToken"].as_str() {
            let execution_id = format!("{id}-{token}");
            let execution_name = format!("{name}/executions/{execution_id}");
            let execution = json!({
                "name": execution_name, "uid": format!("0000-{}", self.serial()), "generation": "1",
                "job": id, "createTime": at, "taskCount": 1, "parallelism": 1,
                "template": job["template"]["template"], "labels": job["labels"],
                "conditions": [{"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": at}],
                "etag": format!("\"{}\"", self.serial()),
            });
            let task = json!({"name": format!("{execution_name}/tasks/{execution_id}-0"), "job": id,
                "execution": execution_id, "index": 0, "createTime": at});
            job["executionCount"] = json!(1);
            job["latestCreatedExecution"] = json!({"name": execution_id, "createTime": at,
                "completionStatus": "EXECUTION_PENDING"});
            job["terminalCondition"] =
                json!({"type": "Ready", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": at});
            self.executions.insert(id.to_string(), execution);
            self.tasks.insert(id.to_string(), task);
        }
        self.jobs.insert(id.to_string(), job.clone());
        Json(self.operation("Job", job)).into_response()
    }

    fn page(items: Vec<Value>, key: &str, query: &BTreeMap<String, String>) -> Response {
        let size: usize = query
            .get("pageSize")
            .and_then(|s| s.parse().ok())
            .filter(|&s| s > 0)
            .unwrap_or(100)
            .min(500);
        let from: usize = query
            .get("pageToken")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let page: Vec<Value> = items.iter().skip(from).take(size).cloned().collect();
        let mut body = json!({ key: page });
        if from + size < items.len() {
            body["nextPageToken"] = json!((from + size).to_string());
        }
        Json(body).into_response()
    }

    fn stale(resource: &Value, query: &BTreeMap<String, String>, body: &Option<Value>) -> bool {
        let sent = query.get("etag").cloned().or_else(|| {
            body.as_ref()
                .and_then(|b| b["etag"].as_str().map(String::from))
        });
        sent.is_some_and(|e| !e.is_empty() && resource["etag"] != e.as_str())
    }

    /// Cloud Run's API: `path` after `/v2/projects/P/locations/L/`.
    fn run(
        &mut self,
        method: &Method,
        rest: &[&str],
        query: &BTreeMap<String, String>,
        body: Option<Value>,
    ) -> Response {
        match (method.as_str(), rest) {
            ("POST", ["jobs"]) => {
                let id = query.get("jobId").cloned().unwrap_or_default();
                self.create_job(&id, body.unwrap_or(Value::Null))
            }
            ("GET", ["jobs"]) => Self::page(self.jobs.values().cloned().collect(), "jobs", query),
            ("GET", ["jobs", id]) => match self.jobs.get(*id) {
                Some(job) => Json(job.clone()).into_response(),
                None => not_found(id),
            },
            ("DELETE", ["jobs", id]) => {
                let Some(job) = self.jobs.get(*id).cloned() else {
                    return not_found(id);
                };
                if Self::stale(&job, query, &body) {
                    return error(StatusCode::CONFLICT, "ABORTED", "etag mismatch");
                }
                self.jobs.remove(*id);
                self.executions.remove(*id);
                self.tasks.remove(*id);
                Json(self.operation("Job", job)).into_response()
            }
            ("GET", ["jobs", "-", "executions"]) => Self::page(
                self.executions.values().cloned().collect(),
                "executions",
                query,
            ),
            ("GET", ["jobs", id, "executions"]) => {
                if !self.jobs.contains_key(*id) {
                    return not_found(id);
                }
                Self::page(
                    self.executions.get(*id).into_iter().cloned().collect(),
                    "executions",
                    query,
                )
            }
            ("GET", ["jobs", id, "executions", e]) => match self.executions.get(*id).filter(|x| {
                x["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(&format!("/{e}")))
            }) {
                Some(x) => Json(x.clone()).into_response(),
                None => not_found(e),
            },
            ("POST", ["jobs", id, "executions", action]) if action.ends_with(":cancel") => {
                let e = action.trim_end_matches(":cancel");
                let Some(x) = self
                    .executions
                    .get(*id)
                    .filter(|x| {
                        x["name"]
                            .as_str()
                            .is_some_and(|n| n.ends_with(&format!("/{e}")))
                    })
                    .cloned()
                else {
                    return not_found(e);
                };
                if Self::stale(&x, query, &body) {
                    return error(StatusCode::CONFLICT, "ABORTED", "etag mismatch");
                }
                if x["completionTime"].is_null() {
                    self.end(
                        id,
                        json!({"cancelledCount": 1}),
                        "CONDITION_FAILED",
                        Some("CANCELLED"),
                        "The execution was cancelled.",
                        None,
                    );
                }
                let x = self.executions[*id].clone();
                Json(self.operation("Execution", x)).into_response()
            }
            ("GET", ["jobs", id, "executions", e, "tasks"]) => {
                let tasks: Vec<Value> = self
                    .tasks
                    .get(*id)
                    .filter(|t| t["execution"] == *e)
                    .into_iter()
                    .cloned()
                    .collect();
                if tasks.is_empty() && !self.executions.contains_key(*id) {
                    return not_found(e);
                }
                Self::page(tasks, "tasks", query)
            }
            ("GET", ["operations", id]) => match self
                .operations
                .get(&format!("{}/operations/{id}", parent()))
            {
                Some(op) => Json(op.clone()).into_response(),
                None => not_found(id),
            },
            _ => not_found(&rest.join("/")),
        }
    }

    /// Ends the job's execution with these counts and its `Completed` condition; `attempt`
    /// is its task's `lastAttemptResult`.
    fn end(
        &mut self,
        id: &str,
        counts: Value,
        state: &str,
        reason: Option<&str>,
        message: &str,
        attempt: Option<Value>,
    ) {
        let at = now();
        let x = self
            .executions
            .get_mut(id)
            .expect("no execution of that job");
        x.as_object_mut().unwrap().remove("runningCount");
        x.as_object_mut()
            .unwrap()
            .extend(counts.as_object().unwrap().clone());
        if x["startTime"].is_null() {
            x["startTime"] = json!(at);
        }
        x["completionTime"] = json!(at);
        let mut condition = json!({"type": "Completed", "state": state, "lastTransitionTime": at});
        if state != "CONDITION_SUCCEEDED" {
            condition["message"] = json!(message);
        }
        if let Some(r) = reason {
            condition["executionReason"] = json!(r);
        }
        x["conditions"] = json!([condition]);
        let status = match (state, reason) {
            ("CONDITION_SUCCEEDED", _) => "EXECUTION_SUCCEEDED",
            (_, Some("CANCELLED")) => "EXECUTION_CANCELLED",
            _ => "EXECUTION_FAILED",
        };
        if let Some(job) = self.jobs.get_mut(id) {
            job["latestCreatedExecution"]["completionTime"] = json!(at);
            job["latestCreatedExecution"]["completionStatus"] = json!(status);
        }
        if let (Some(task), Some(attempt)) = (self.tasks.get_mut(id), attempt) {
            task["lastAttemptResult"] = attempt;
            task["completionTime"] = json!(at);
        }
    }

    fn entries(&self, body: &Value) -> Response {
        if body["orderBy"]
            .as_str()
            .is_some_and(|o| o != "timestamp asc" && o != "timestamp desc")
        {
            return invalid("orderBy: only 'timestamp asc' or 'timestamp desc'");
        }
        let size = body["pageSize"].as_i64().unwrap_or(50);
        if !(0..=1000).contains(&size) {
            return invalid("pageSize: must be between 0 and 1000");
        }
        if body["resourceNames"] != json!([format!("projects/{PROJECT}")]) {
            return invalid("resourceNames: this fake holds one project's entries");
        }
        let filter = body["filter"].as_str().unwrap_or("");
        let quoted = |after: &str| -> Option<String> {
            let at = filter.find(after)? + after.len();
            let rest = filter.get(at..)?.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        };
        let form = format!("resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"{}\" AND resource.labels.location=\"{REGION}\"", quoted("resource.labels.job_name=").unwrap_or_default());
        let from = quoted("timestamp>=");
        let expected = match &from {
            Some(t) => format!("{form} AND timestamp>=\"{t}\""),
            None => form,
        };
        if filter != expected {
            return invalid(&format!("filter: the fake does not understand {filter:?}"));
        }
        let job = quoted("resource.labels.job_name=").unwrap_or_default();
        let from = match from.as_deref().map(parse_time) {
            Some(None) => return invalid("filter: timestamp is not RFC 3339"),
            Some(Some(t)) => Some(t),
            None => None,
        };
        let lines = self.logs.get(&job).map_or(&[][..], Vec::as_slice);
        let mut entries: Vec<&Line> = lines
            .iter()
            .filter(|l| from.is_none_or(|f| l.at >= f))
            .collect();
        if body["orderBy"] == "timestamp desc" {
            entries.reverse();
        }
        let size = if size == 0 { 50 } else { size as usize };
        let from: usize = body["pageToken"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let page: Vec<Value> = entries
            .iter()
            .skip(from)
            .take(size)
            .map(|l| entry(&job, l))
            .collect();
        let mut answer = json!({"entries": page});
        if from + size < entries.len() {
            answer["nextPageToken"] = json!((from + size).to_string());
        }
        Json(answer).into_response()
    }

    /// Secret Manager: `path` after `/v1/projects/P/`.
    fn secret_manager(
        &mut self,
        method: &Method,
        rest: &[&str],
        query: &BTreeMap<String, String>,
        body: Option<Value>,
    ) -> Response {
        match (method.as_str(), rest) {
            ("POST", ["secrets"]) => {
                let id = query.get("secretId").cloned().unwrap_or_default();
                if self.secrets.contains_key(&id) {
                    return error(
                        StatusCode::CONFLICT,
                        "ALREADY_EXISTS",
                        &format!("Secret [projects/{PROJECT}/secrets/{id}] already exists."),
                    );
                }
                if body.as_ref().is_none_or(|b| b["replication"].is_null()) {
                    return invalid("secret.replication: must be set");
                }
                let labels = body.as_ref().map_or(Value::Null, |b| b["labels"].clone());
                self.secrets.insert(
                    id.clone(),
                    Secret {
                        labels,
                        versions: vec![],
                    },
                );
                let mut secret = body.unwrap();
                secret["name"] = json!(format!("projects/{PROJECT}/secrets/{id}"));
                secret["createTime"] = json!(now());
                Json(secret).into_response()
            }
            ("POST", ["secrets", action]) if action.ends_with(":addVersion") => {
                let id = action.trim_end_matches(":addVersion");
                let Some(versions) = self.secrets.get_mut(id).map(|s| &mut s.versions) else {
                    return not_found(id);
                };
                let Some(data) = body.as_ref().and_then(|b| b["payload"]["data"].as_str()) else {
                    return invalid("payload.data: must be set");
                };
                versions.push(data.to_string());
                Json(json!({"name": format!("projects/{PROJECT}/secrets/{id}/versions/{}", versions.len()),
                    "createTime": now(), "state": "ENABLED"})).into_response()
            }
            ("DELETE", ["secrets", id]) => match self.secrets.remove(*id) {
                Some(_) => Json(json!({})).into_response(),
                None => not_found(id),
            },
            ("GET", ["secrets"]) => {
                let filter = query.get("filter").map(String::as_str).unwrap_or("");
                let contains = match filter {
                    "" => Some(""),
                    f => f.strip_prefix("name:\"").and_then(|f| f.strip_suffix('"')),
                };
                let Some(contains) = contains.filter(|c| !c.contains('"')) else {
                    return invalid(&format!("filter: the fake does not understand {filter:?}"));
                };
                let secrets: Vec<Value> = self
                    .secrets
                    .iter()
                    .map(|(id, s)| (format!("projects/{PROJECT}/secrets/{id}"), s))
                    .filter(|(name, _)| name.contains(contains))
                    .map(|(name, s)| {
                        json!({"name": name, "labels": s.labels, "createTime": "2026-12-02T10:00:00Z",
                            "replication": {"automatic": {}}})
                    })
                    .collect();
                Self::page(secrets, "secrets", query)
            }
            _ => not_found(&rest.join("/")),
        }
    }
}

async fn serve(shared: Shared, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let path = parts.uri.path().to_string();
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), percent_decode(v)))
        })
        .collect();
    // A request held unanswered is held outside the lock.
    match answer(&shared, parts, path, query, body) {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

/// The answer to a request, or `None` for one a test said never to answer.
fn answer(
    shared: &Shared,
    parts: axum::http::request::Parts,
    path: String,
    query: BTreeMap<String, String>,
    body: Option<Value>,
) -> Option<Response> {
    let mut inner = shared.0.lock().unwrap();
    let shown = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    inner
        .requests
        .push((parts.method.to_string(), shown.clone(), body.clone()));
    if !authorized(&parts.headers) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ));
    }
    let fault = inner
        .faults
        .iter_mut()
        .find(|r| r.times > 0 && r.method == parts.method.as_str() && shown.contains(&r.contains))
        .map(|r| {
            r.times -= 1;
            r.fault
        });
    match fault {
        Some(Some((status, code))) => {
            return Some(error(
                status,
                code,
                "The service encountered an error; try again later.",
            ))
        }
        Some(None) => return None,
        None => {}
    }
    if let Some((left, seconds)) = inner.throttle {
        inner.throttle = (left > 1).then_some((left - 1, seconds));
        let body = json!({"error": {"code": 429, "message": "Quota exceeded for quota metric 'Read requests'", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")}]}});
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", seconds.to_string())],
                Json(body),
            )
                .into_response(),
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["v2", "projects", p, "locations", l, rest @ ..] if *p == PROJECT && *l == REGION => {
            inner.run(&parts.method, rest, &query, body)
        }
        ["v2", "entries:list"] if parts.method == Method::POST => {
            inner.entries(&body.unwrap_or(Value::Null))
        }
        ["v1", "projects", p, rest @ ..] if *p == PROJECT => {
            inner.secret_manager(&parts.method, rest, &query, body)
        }
        _ => not_found(&path),
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A line as an entry of `entries.list`'s answer.
fn entry(job: &str, line: &Line) -> Value {
    let at = written(line.at);
    json!({
        "logName": format!("projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"),
        "resource": {"type": "cloud_run_job", "labels": {"project_id": PROJECT, "job_name": job, "location": REGION}},
        "labels": {"run.googleapis.com/execution_name": format!("{job}-run"), "run.googleapis.com/task_index": "0", "run.googleapis.com/task_attempt": "0"},
        "textPayload": line.text, "timestamp": at, "receiveTimestamp": at, "insertId": line.insert_id, "severity": "DEFAULT",
    })
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

impl FakeRun {
    pub async fn start() -> FakeRun {
        let shared = Shared::default();
        let state = shared.clone();
        let app = Router::new()
            .fallback(move |request: axum::extract::Request<Body>| serve(state.clone(), request));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeRun {
            url,
            shared,
            server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.0.lock().unwrap())
    }

    /// The job as Cloud Run holds it.
    pub fn job(&self, id: &str) -> Option<Value> {
        self.with(|i| i.jobs.get(id).cloned())
    }

    pub fn jobs(&self) -> Vec<String> {
        self.with(|i| i.jobs.keys().cloned().collect())
    }

    /// The job's execution.
    pub fn execution(&self, job: &str) -> Option<Value> {
        self.with(|i| i.executions.get(job).cloned())
    }

    /// `n` jobs of someone else's in the region, each with a running execution, as a
    /// project shared with other teams has: offload's region list pages through them.
    pub fn foreign(&self, n: usize) {
        self.with(|i| {
            for k in 0..n {
                let id = format!("nightly-report-{k}");
                let name = format!("projects/{PROJECT}/locations/{REGION}/jobs/{id}");
                let at = now();
                let execution = json!({
                    "name": format!("{name}/executions/{id}-abcde"), "uid": format!("0000-{}", i.serial()),
                    "generation": "1", "job": id, "createTime": at, "startTime": at, "taskCount": 1,
                    "parallelism": 1, "runningCount": 1, "labels": {"team": "reports"},
                    "conditions": [{"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": at}],
                });
                i.jobs.insert(id.clone(), json!({"name": name, "labels": {"team": "reports"}, "createTime": at}));
                i.executions.insert(id, execution);
            }
        });
    }

    /// Creating a job with this image fails it as Cloud Run fails one whose image is not
    /// in its registry.
    pub fn missing_image(&self, image: &str) {
        self.with(|i| i.missing_images.insert(image.to_string()));
    }

    /// The execution's task is running.
    pub fn run(&self, job: &str) {
        self.with(|i| {
            let at = now();
            let x = i.executions.get_mut(job).expect("no execution of that job");
            x["runningCount"] = json!(1);
            x["startTime"] = json!(at);
            x["conditions"] = json!([{"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": at}]);
            if let Some(t) = i.tasks.get_mut(job) {
                t["startTime"] = json!(at);
            }
        });
    }

    /// The task exits with `code`.
    pub fn exit(&self, job: &str, code: i32) {
        self.with(|i| match code {
            0 => i.end(job, json!({"succeededCount": 1}), "CONDITION_SUCCEEDED", None, "", Some(json!({"status": {}}))),
            c => i.end(job, json!({"failedCount": 1}), "CONDITION_FAILED", Some("NON_ZERO_EXIT_CODE"),
                &format!("Task {job}-run-0 failed with message: The container exited with an error."),
                Some(json!({"exitCode": c, "status": {"code": 2, "message": "The container exited with an error."}}))),
        });
    }

    /// The task runs past its timeout.
    pub fn time_out(&self, job: &str) {
        self.with(|i| {
            i.end(job, json!({"failedCount": 1}), "CONDITION_FAILED", None,
            &format!("Task {job}-run-0 failed with message: The configured timeout was reached."),
            Some(json!({"status": {"code": 4, "message": "The configured timeout was reached."}})))
        });
    }

    /// Cloud Logging receives these lines of the job's output, each stamped with its own
    /// instant: now, or just after the line before.
    pub fn append_log(&self, job: &str, text: &str) {
        self.with(|i| {
            for line in text.lines() {
                let now = time::OffsetDateTime::now_utc();
                let now = now
                    .replace_nanosecond(now.nanosecond() / 1000 * 1000)
                    .unwrap();
                let at = match i.last_line {
                    Some(last) if last >= now => last + time::Duration::microseconds(1),
                    _ => now,
                };
                i.last_line = Some(at);
                let insert_id = i.serial();
                i.logs.entry(job.to_string()).or_default().push(Line {
                    at,
                    text: line.to_string(),
                    insert_id,
                });
            }
        });
    }

    /// The next `times` requests with this method whose path and query contain `contains`
    /// answer this error (a `google.rpc.Status` with `code`), and are not carried out.
    pub fn fail(
        &self,
        method: &'static str,
        contains: &str,
        times: u32,
        status: StatusCode,
        code: &'static str,
    ) {
        self.with(|i| {
            i.faults.push(Rule {
                method,
                contains: contains.to_string(),
                times,
                fault: Some((status, code)),
            })
        });
    }

    /// The next `times` requests with this method whose path and query contain `contains`
    /// are neither carried out nor answered: the connection is held until the client gives up.
    pub fn hang(&self, method: &'static str, contains: &str, times: u32) {
        self.with(|i| {
            i.faults.push(Rule {
                method,
                contains: contains.to_string(),
                times,
                fault: None,
            })
        });
    }

    /// The secret's versions' values, decoded.
    pub fn secret(&self, id: &str) -> Option<Vec<String>> {
        use base64::Engine as _;
        self.with(|i| i.secrets.get(id).map(|s| s.versions.clone()))
            .map(|vs| {
                vs.iter()
                    .map(|v| {
                        String::from_utf8(
                            base64::engine::general_purpose::STANDARD.decode(v).unwrap(),
                        )
                        .unwrap()
                    })
                    .collect()
            })
    }

    pub fn secrets(&self) -> Vec<String> {
        self.with(|i| i.secrets.keys().cloned().collect())
    }

    /// The next `times` requests answer 429 with Retry-After `seconds`.
    pub fn throttle(&self, times: u32, seconds: u64) {
        self.with(|i| i.throttle = Some((times, seconds)));
    }

    /// (method, path and query, JSON body) of every request.
    pub fn requests(&self) -> Vec<(String, String, Option<Value>)> {
        self.with(|i| i.requests.clone())
    }
}
