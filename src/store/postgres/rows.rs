//! Job rows in and out: the columns a record is read from, the conversions of a row
//! into a `JobRecord`, and free text as PostgreSQL can hold it (no NUL).

use super::*;

/// The columns [`record`] reads, in its order.
pub(super) const JOB_COLUMNS: [&str; 22] = [
    "id",
    "tenant",
    "state",
    "provider",
    "provider_ref",
    "attempts",
    "launch_key",
    "dispatched_at",
    "exit_code",
    "reason",
    "result",
    "spec",
    "created_at",
    "started_at",
    "finished_at",
    "cancel_requested_by",
    "released",
    "excluded",
    "cost",
    "owner",
    "first_dispatched_at",
    "steps",
];

pub(super) fn columns(table: &str) -> String {
    JOB_COLUMNS
        .iter()
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Free text as PostgreSQL can hold it: NUL characters become U+FFFD.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    match s.contains('\0') {
        true => Cow::Owned(s.replace('\0', "\u{FFFD}")),
        false => Cow::Borrowed(s),
    }
}

pub(super) fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx)
        .map_err(|e| pg(&format!("reading column {}", JOB_COLUMNS[idx]), e))
}

pub(super) fn state(text: &str) -> StoreResult<JobState> {
    JobState::parse(text).ok_or_else(|| StoreError::Db(format!("unknown state {text:?}")))
}

/// A job from a row whose first columns are [`JOB_COLUMNS`].
pub(super) fn record(row: &Row) -> StoreResult<JobRecord> {
    let state = state(get(row, 2)?)?;
    let attempts: i32 = get(row, 5)?;
    let result: Option<Json<serde_json::Value>> = get(row, 10)?;
    let Json(spec): Json<JobSpec> = get(row, 11)?;
    let job = Job {
        id: get(row, 0)?,
        state,
        terminal: state.is_terminal(),
        provider: get(row, 3)?,
        provider_ref: get(row, 4)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        exit_code: get(row, 8)?,
        reason: get(row, 9)?,
        result: result.map(|Json(v)| v),
        labels: spec.labels.clone(),
        spec,
        created_at: get(row, 12)?,
        started_at: get(row, 13)?,
        finished_at: get(row, 14)?,
        cost: get::<Option<Json<JobCost>>>(row, 18)?.map(|Json(c)| c),
        steps: get::<Option<Json<Vec<StepLog>>>>(row, 21)?
            .map(|Json(s)| s)
            .unwrap_or_default(),
    };
    let owner: Option<String> = get(row, 19)?;
    Ok(JobRecord {
        job,
        tenant: get(row, 1)?,
        launch_key: get(row, 6)?,
        dispatched_at: get(row, 7)?,
        first_dispatched_at: get(row, 20)?,
        cancel_requested_by: get(row, 15)?,
        released: get(row, 16)?,
        excluded: get(row, 17)?,
        owner,
    })
}
