//! The `/v1/jobs` endpoints. Handlers only read the store, write it, and poke the engine;
//! they never wait on a provider except to read a live job's log through the engine.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use tracing::Instrument;
use futures::stream;
use offload_provider::LogQuery;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::{Presented, Tenant};
use super::body::JsonBody;
use super::error::{ApiError, Problem};
use super::marks::Quoter;
use super::waiters::WaiterPlace;
use super::AppState;
use crate::engine::changes::Waiter;
use crate::engine::{CancelOutcome, SubmitRefusal};
use crate::model::{
    limits, patterns, CostReport, Event, FieldError, Job, JobPage, JobSpec, JobState, Quote,
};
use crate::store::{CostGrouping, CostQuery, JobRecord, ListQuery, NewJob, Submitted};

const MAX_PAGE: usize = 500;

pub(crate) fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    let hyphenated = patterns::JOB_ID.is_match(id).then_some(id);
    hyphenated
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                FieldError::new("id", format!("{id:?} is not a job id (a UUID)")),
            )
        })
}

/// The tenant's job, or 404 (also for another tenant's job: its existence is not told).
pub(crate) async fn job_of(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<JobRecord, ApiError> {
    state
        .store
        .get(id)
        .await?
        .filter(|r| r.tenant == tenant.0)
        .ok_or_else(|| ApiError::not_found("job"))
}

#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    summary = "Submit a job",
    description = "Commits the job and answers 201 with it once committed. Send an `Idempotency-Key` with every submit and the same key when sending again: a repeated key with the same body answers 200 with the first job, with another body 409. A field at fault, or a job no configured provider can run, is a 422 naming the field; 503 with `Retry-After` when the store could not commit it.",
    request_body = JobSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key with the same body returns the same job")),
    responses(
        (status = 201, description = "Accepted and stored", body = Job),
        (status = 200, description = "An earlier submit with this Idempotency-Key", body = Job),
        (status = 409, description = "The Idempotency-Key was used with a different body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_job(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<Response, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| patterns::IDEMPOTENCY_KEY.is_match(k))
                .ok_or_else(|| {
                    ApiError::field(
                        StatusCode::BAD_REQUEST,
                        FieldError::new(
                            "Idempotency-Key",
                            "must be 1 to 255 visible ASCII characters",
                        ),
                    )
                })?;
            Some(key.to_string())
        }
    };
    let submitted = submit(&state, tenant, spec, idempotency_key).await?;
    match submitted {
        Submitted::Created(rec) => {
            tracing::debug!(job = %rec.job.id, "accepted");
            let location = format!("/v1/jobs/{}", rec.job.id);
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(rec.job),
            )
                .into_response())
        }
        Submitted::Existing(rec) => Ok((StatusCode::OK, Json(rec.job)).into_response()),
        Submitted::Conflict(id) => Err(ApiError::field(
            StatusCode::CONFLICT,
            FieldError::new(
                "Idempotency-Key",
                format!("was already used for job {id} with a different body"),
            ),
        )),
    }
}

/// Checks a spec (its fields, what the tenant's filer may reach, whether some provider can
/// run it) and commits it as the tenant's job: what `POST /v1/jobs` and TES's `POST /tasks`
/// share. A refusal is a 422 naming the fields, which TES answers as a 400.
pub(crate) async fn submit(
    state: &AppState,
    tenant: Tenant,
    spec: JobSpec,
    idempotency_key: Option<String>,
) -> Result<Submitted, ApiError> {
    spec.validate().map_err(ApiError::invalid)?;
    if let Some(steps) = &spec.steps {
        let refused = state.engine.staging.policy(&tenant.0).problems(steps);
        if !refused.is_empty() {
            return Err(ApiError::invalid(refused));
        }
    }
    match state.engine.submit_refusal(&tenant.0, &spec).await {
        None => {}
        Some(SubmitRefusal::Unroutable(errors)) => return Err(ApiError::unroutable(errors)),
        Some(SubmitRefusal::Budget(refusal)) => return Err(ApiError::budget(refusal)),
    }
    let new = NewJob {
        id: Uuid::now_v7(),
        tenant: tenant.0,
        spec,
        idempotency_key,
        created_at: Utc::now(),
    };
    // The commit and the poke after it run in a task of their own: a client that goes
    // away mid-request drops this handler, but never between the two.
    let (store, engine) = (state.store.clone(), state.engine.clone());
    let commit = tracing::debug_span!("store commit", job = %new.id);
    let submitted = tokio::spawn(
        async move {
            let submitted = store.submit(new).await;
            match &submitted {
                Ok(Submitted::Created(rec)) => engine.submitted((**rec).clone()),
                Ok(Submitted::Existing(rec)) => engine.poke(rec.job.id),
                _ => {}
            }
            submitted
        }
        .instrument(commit),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the submit did not finish; retry with the same Idempotency-Key",
        )
    })?;
    Ok(submitted?)
}

/// Where a job would run and what it would cost there, without submitting it.
#[utoipa::path(
    post, path = "/v1/quotes", tag = "jobs",
    summary = "Quote a job",
    description = "Takes the body of a submit and creates nothing: the providers that can run the job, best first, each with its estimated cost, and those that cannot with why.",
    request_body = JobSpec,
    responses(
        (status = 200, description = "The providers that can run the job, best first, with the estimated cost at each; and the others, with why not", body = Quote),
        (status = 422, description = "Invalid fields, or no configured provider can run the job (each provider's reason in `errors`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn quote(
    State(state): State<AppState>,
    tenant: Tenant,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<Json<Quote>, ApiError> {
    spec.validate().map_err(ApiError::invalid)?;
    let quote = state
        .engine
        .quote(&tenant.0, &spec)
        .await
        .map_err(ApiError::unroutable)?;
    Ok(Json(quote))
}

/// The longest a `GET /v1/jobs/{id}?wait=` may hold the request.
const MAX_WAIT_SECONDS: u64 = 120;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Long-poll: hold the request up to this many seconds (at most 120) and answer as soon
    /// as the job changes state or ends; without it, answer at once.
    #[param(value_type = Option<u32>, minimum = 0, maximum = 120)]
    wait: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    summary = "Read a job",
    description = "The job's state, provider, outcome and cost. With `wait=SECONDS` the request is held until the job changes state or ends, so a sensor needs few requests. Another tenant's job is a 404, as if it did not exist.",
    params(("id" = Uuid, Path, description = "The job id"), GetParams),
    responses(
        (status = 200, body = Job),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    tenant: Tenant,
    presented: Option<axum::Extension<Presented>>,
    Path(id): Path<String>,
    Query(p): Query<GetParams>,
) -> Result<Response, ApiError> {
    let wait = match &p.wait {
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_WAIT_SECONDS)
            .ok_or_else(|| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    FieldError::new(
                        "wait",
                        format!("must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"),
                    ),
                )
            })?,
        None => 0,
    };
    if wait == 0 {
        // The hot path: a plain read takes no part in change notices, and answers a job
        // the gateway knows from its snapshot, serialised once per change.
        let snapshot = state
            .snapshots
            .job(parse_id(&id)?)
            .await?
            .filter(|s| *s.tenant == *tenant.0)
            .ok_or_else(|| ApiError::not_found("job"))?;
        return Ok(([(header::CONTENT_TYPE, "application/json")], snapshot.json).into_response());
    }
    // Watch before the first read, so that no change between the two is missed.
    let id = parse_id(&id)?;
    let _place = state.waiters.enter(&tenant.0)?;
    let mut changes = state.engine.watch(id);
    let first = job_of(&state, &tenant, id).await?.job;
    if first.terminal {
        return Ok(Json(first).into_response());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let revoked = state.tokens.revoked(presented.as_deref());
    tokio::pin!(revoked);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = state.draining.cancelled() => break,
            _ = &mut revoked => return Ok(super::auth::revoked()),
            _ = changes.changed() => {
                let job = job_of(&state, &tenant, id).await?.job;
                if job.state != first.state {
                    return Ok(Json(job).into_response());
                }
            }
        }
    }
    Ok(Json(job_of(&state, &tenant, id).await?.job).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs routed to this provider.
    provider: Option<String>,
    /// Equality label selector: `dag_id=etl,env=prod`, at most 64 pairs.
    labels: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50). A page also ends once its jobs take about 1 MiB
    /// as JSON; `next_cursor` then continues after it.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    summary = "List jobs",
    description = "The caller's jobs, newest first, a page at a time, filtered by state, provider and label equality selectors (`dag_id=etl,env=prod`).",
    params(ListParams),
    responses((status = 200, body = JobPage), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(p): Query<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let bad = |field: &str, message: String| {
        ApiError::field(StatusCode::BAD_REQUEST, FieldError::new(field, message))
    };
    let job_state = match &p.state {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let all: Vec<_> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            bad("state", format!("{s:?} is not one of {}", all.join(", ")))
        })?),
        None => None,
    };
    let labels = selectors(p.labels.as_deref())?;
    let limit = match &p.limit {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                bad(
                    "limit",
                    format!("{l:?} is not a number from 1 to {MAX_PAGE}"),
                )
            })?,
        None => 50,
    };
    let before = match &p.cursor {
        Some(c) => Some(
            parse_id(c)
                .map_err(|_| bad("cursor", format!("{c:?} is not a cursor this API gave")))?,
        ),
        None => None,
    };
    let query = ListQuery {
        state: job_state,
        provider: p.provider.clone(),
        labels,
        before,
        limit,
        ..ListQuery::default()
    };
    let page = super::listing::page(&*state.store, &tenant.0, &query).await?;
    Ok(Json(JobPage {
        jobs: page.jobs,
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// A `labels` parameter's equality selectors (`dag_id=etl,env=prod`, `key==value` too).
pub(super) fn selectors(labels: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |message: String| {
        ApiError::field(StatusCode::BAD_REQUEST, FieldError::new("labels", message))
    };
    if let Some(l) = labels.filter(|l| !patterns::LABEL_SELECTOR.is_match(l)) {
        return Err(bad(format!("{l:?} is not key=value pairs joined by commas")));
    }
    if labels.iter().flat_map(|l| l.split(',')).count() > limits::LABEL_SELECTORS {
        return Err(bad(format!(
            "more than {} selectors (no job has more labels)",
            limits::LABEL_SELECTORS
        )));
    }
    let mut pairs = vec![];
    for pair in labels.iter().flat_map(|l| l.split(',')) {
        let (k, v) = pair
            .split_once("==")
            .or_else(|| pair.split_once('='))
            .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(pairs)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostParams {
    /// `provider`, or `label:KEY` for the value of label KEY (jobs without it group under
    /// "").
    group_by: String,
    /// Jobs that finished at or after this time; default 7 days ago.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Jobs that finished before this time; default now.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/costs", tag = "jobs",
    summary = "Report spend",
    description = "Spend per provider or per label over `[since, until)` for the caller's tenant, with what the same runs would have cost at their reference providers and what routing saved.",
    params(CostParams),
    responses((status = 200, body = CostReport), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn costs(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(p): Query<CostParams>,
) -> Result<Json<CostReport>, ApiError> {
    let bad = |field: &str, message: String| {
        ApiError::field(StatusCode::BAD_REQUEST, FieldError::new(field, message))
    };
    if !patterns::COST_GROUP_BY.is_match(&p.group_by) {
        return Err(bad(
            "group_by",
            format!("{:?} is neither provider nor label:KEY", p.group_by),
        ));
    }
    let group_by = match p.group_by.strip_prefix("label:") {
        Some(key) => CostGrouping::Label(key.to_string()),
        None => CostGrouping::Provider,
    };
    let time = |field: &str, value: &Option<String>| match value {
        Some(v) => chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| bad(field, format!("{v:?} is not an RFC 3339 date-time: {e}"))),
        None => Ok(None),
    };
    let until = time("until", &p.until)?.unwrap_or_else(Utc::now);
    let since = time("since", &p.since)?.unwrap_or_else(|| Utc::now() - chrono::Duration::days(7));
    let query = CostQuery {
        group_by,
        since,
        until,
    };
    let groups = state.store.costs(&tenant.0, &query).await?;
    let total_usd = crate::model::usd(groups.iter().map(|g| g.usd).sum());
    let total_reference_usd = crate::model::usd(groups.iter().map(|g| g.reference_usd).sum());
    Ok(Json(CostReport {
        groups,
        total_usd,
        total_reference_usd,
        total_saved_usd: crate::model::usd(total_reference_usd - total_usd),
    }))
}

#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    summary = "Cancel a job",
    description = "202, also when repeated; 409 once the job has ended. A queued job ends at once; a launched one is stopped at its provider.",
    params(("id" = Uuid, Path, description = "The job id")),
    responses(
        (status = 202, description = "Cancel accepted (again, if it already was)", body = Job),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already ended", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let id = parse_id(&id)?;
    match state.engine.cancel(&tenant.0, id).await? {
        CancelOutcome::Accepted(rec) => Ok((StatusCode::ACCEPTED, Json(rec.job))),
        CancelOutcome::AlreadyTerminal(rec) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} has already ended ({})", rec.job.state.as_str()),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("job")),
    }
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "jobs",
    summary = "Read a job's events",
    description = "The job's transitions, oldest first, each with its time and reason.",
    params(("id" = Uuid, Path, description = "The job id")),
    responses((status = 200, body = Vec<Event>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn job_events(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let rec = job_of(&state, &tenant, parse_id(&id)?).await?;
    Ok(Json(state.store.events(rec.job.id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only the last N lines, at most 100000, of the log's last MiB (when following, of
    /// what is there when the follow starts).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 100000)]
    tail: Option<String>,
    /// `true` streams the log until the job ends.
    #[param(value_type = Option<bool>)]
    follow: Option<String>,
}

/// The most lines `tail` may ask for.
const MAX_TAIL: usize = 100_000;
/// How much of a live log's end `tail` reads: its lines are the last ones within it.
const TAIL_READ_BYTES: usize = 1 << 20;

pub(super) fn last_lines(text: &str, n: usize) -> &str {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    match trimmed.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &text[i + 1..],
        _ if n == 0 => "",
        _ => text,
    }
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}/logs", tag = "jobs",
    summary = "Read a job's log",
    description = "The job's output as text, stdout and stderr interleaved: the last `tail` lines, or with `follow=true` streamed until the job ends.",
    params(("id" = Uuid, Path, description = "The job id"), LogParams),
    responses(
        (status = 200, description = "stdout and stderr, interleaved", body = String, content_type = "text/plain"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider's log could not be read", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn job_logs(
    State(state): State<AppState>,
    tenant: Tenant,
    presented: Option<axum::Extension<Presented>>,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
) -> Result<Response, ApiError> {
    let rec = job_of(&state, &tenant, parse_id(&id)?).await?;
    let bad = |field: &str, message: &str| {
        ApiError::field(StatusCode::BAD_REQUEST, FieldError::new(field, message))
    };
    let tail = match &p.tail {
        Some(t) => Some(
            t.parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_TAIL)
                .ok_or_else(|| bad("tail", "must be a whole number of lines from 0 to 100000"))?,
        ),
        None => None,
    };
    let follow = match p.follow.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("follow", "must be true or false")),
    };
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow {
        let query = LogQuery {
            cursor: None,
            tail_bytes: tail.map(|_| TAIL_READ_BYTES),
        };
        let chunk = state
            .engine
            .logs(&rec, &query)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("reading the log failed: {e}"),
                )
            })?;
        let text = tail
            .map_or(chunk.text.as_str(), |n| last_lines(&chunk.text, n))
            .to_string();
        return Ok((text_plain, text).into_response());
    }
    let follower = Follower {
        _place: state.waiters.enter(&tenant.0)?,
        presented: presented.map(|p| p.0),
        changes: state.engine.watch(rec.job.id),
        state,
        id: rec.job.id,
        cursor: None,
        tail,
        quoter: Quoter::default(),
        streamed: false,
        done: false,
    };
    let body = Body::from_stream(stream::unfold(follower, Follower::next));
    Ok((text_plain, body).into_response())
}

/// How often a follower of a running job reads its provider's log when nothing else wakes
/// it; reads also wait for the provider's follower budget.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Streams a job's log until the job ends (or the server shuts down).
struct Follower {
    _place: WaiterPlace,
    /// The token it was asked with: the stream ends once that is no longer accepted.
    presented: Option<Presented>,
    state: AppState,
    changes: Waiter,
    id: Uuid,
    cursor: Option<String>,
    tail: Option<usize>,
    /// Marks the job's lines that would pass for the gateway's.
    quoter: Quoter,
    /// Whether anything was read from the provider (then the stored tail would repeat it).
    streamed: bool,
    done: bool,
}

impl Follower {
    async fn next(mut self) -> Option<(Result<String, std::io::Error>, Self)> {
        loop {
            if self.done || self.state.draining.is_cancelled() {
                let rest = self.quoter.finish();
                return (!rest.is_empty()).then_some((Ok(rest), self));
            }
            let rec = match self.state.store.get(self.id).await {
                Ok(Some(r)) => r,
                _ => {
                    self.done = true;
                    continue;
                }
            };
            let at_provider = rec.job.provider_ref.is_some() && !rec.released;
            if !at_provider && !rec.job.terminal {
                // Not launched yet: wait for the engine to move it.
                self.pause().await;
                continue;
            }
            if !at_provider && self.streamed {
                self.done = true;
                continue;
            }
            // The first read of a follower asked for a tail reads the log's end.
            let query = LogQuery {
                cursor: self.cursor.clone(),
                tail_bytes: self
                    .tail
                    .filter(|_| self.cursor.is_none())
                    .map(|_| TAIL_READ_BYTES),
            };
            let chunk = match self.state.engine.follow_logs(&rec, &query).await {
                Ok(c) => c,
                Err(e) => {
                    self.done = true;
                    let line = self
                        .quoter
                        .gateway_line(&format!("reading the log failed: {e}"));
                    return Some((Ok(line), self));
                }
            };
            // An ended job read from the start gets its stored tail, which is the whole answer.
            self.done = !at_provider || (rec.job.terminal && query.cursor.is_none());
            self.streamed |= at_provider;
            self.cursor = chunk.cursor.or(self.cursor.take());
            let text = match self.tail.take() {
                Some(n) => last_lines(&chunk.text, n).to_string(),
                None => chunk.text,
            };
            let text = self.quoter.push(&text);
            if !text.is_empty() {
                return Some((Ok(text), self));
            }
            if rec.job.terminal {
                self.done = true;
                continue;
            }
            self.pause().await;
        }
    }

    /// Waits for this job's next change, the next read's time, or shutdown; ends the
    /// stream when its token is removed.
    async fn pause(&mut self) {
        tokio::select! {
            _ = self.changes.changed() => {}
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = self.state.draining.cancelled() => {}
            _ = self.state.tokens.revoked(self.presented.as_ref()) => self.done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(super::last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(super::last_lines("a\nb\nc", 1), "c");
        assert_eq!(super::last_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(super::last_lines("a\nb\n", 0), "");
    }
}
