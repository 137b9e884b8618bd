//! `GET /v1/changes`: what changed of the caller's jobs since a cursor, for a client that
//! follows many jobs at once (the Airflow executor, at each scheduler heartbeat): one call
//! tells of every job of a label selector that changed, however many it follows, instead of
//! a read per job. An answer holds at most `limit` jobs and about
//! [`limits::PAGE_BYTES`] of them as JSON.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Tenant;
use super::error::{ApiError, Problem};
use super::AppState;
use crate::model::{limits, ChangeFeed, FieldError, JobChange};
use crate::store::ChangesQuery;

/// Jobs one answer holds at most.
const MAX_JOBS: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangeParams {
    /// The `next_cursor` of the previous answer; from the start when absent.
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,18}$")]
    after: Option<String>,
    /// Equality label selector: `dag_id=etl,env=prod`.
    labels: Option<String>,
    /// Jobs an answer holds at most, 1 to 1000 (default 500).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/changes", tag = "jobs",
    summary = "Follow changes",
    description = "What changed of the caller's jobs since a cursor (the previous answer's `next_cursor`), filtered by labels: one call a heartbeat follows any number of jobs.",
    params(ChangeParams),
    responses(
        (status = 200, description = "The jobs that changed after the cursor, each once, as they are now, oldest change first", body = ChangeFeed),
        (status = 400, description = "A malformed parameter, named in `errors`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn changes(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(p): Query<ChangeParams>,
) -> Result<Json<ChangeFeed>, ApiError> {
    let bad = |field: &str, message: String| {
        ApiError::field(StatusCode::BAD_REQUEST, FieldError::new(field, message))
    };
    let after = match &p.after {
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|_| a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("after", format!("{a:?} is not a cursor this API gave")))?,
        None => 0,
    };
    let limit = match &p.limit {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_JOBS).contains(n))
            .ok_or_else(|| bad("limit", format!("{l:?} is not a number from 1 to {MAX_JOBS}")))?,
        None => 500,
    };
    let labels = super::jobs::selectors(p.labels.as_deref())?;
    let query = ChangesQuery {
        after,
        labels,
        limit,
    };
    let page = state.store.changed_since(&tenant.0, &query).await?;
    // At most limits::PAGE_BYTES of JSON (at least one job): the next answer goes on after
    // the last job this one holds.
    let (mut jobs, mut bytes) = (vec![], 0);
    let (mut next, mut more) = (page.next, page.more);
    for (job, position) in page.jobs {
        let change = JobChange::from(job);
        bytes += serde_json::to_vec(&change).map_or(0, |j| j.len());
        if bytes > limits::PAGE_BYTES && !jobs.is_empty() {
            more = true;
            break;
        }
        jobs.push(change);
        next = position;
    }
    if !more {
        next = page.next;
    }
    Ok(Json(ChangeFeed {
        jobs,
        next_cursor: next.to_string(),
        more,
    }))
}
