//! Group commit for job updates (the engine's writes, and cancels): every update waiting
//! (up to [`MAX_BATCH`]) goes into one transaction on one connection, and each is answered
//! once that transaction has committed. While one batch commits the next one gathers, so a
//! busy engine pays one WAL flush per batch instead of one per write, and the submits' own
//! group commits get the disk's attention.
//!
//! A batch is one statement ([`UPDATE_SQL`]) whose parameters are arrays, one element per
//! update: a statement per update cost about 140 microseconds of the server's time each
//! (its executor started and ended for one row), which made this loop, serial by design,
//! the limit of a burst's dispatch on PostgreSQL. Each update keeps what it would do
//! alone: its expected states, the owner fence, its event row. A job updated twice in one
//! batch (a cancel and an engine write, say) has its second update in a second statement of
//! the same transaction, which sees the first. Rows are locked in id order, so batches of
//! two replicas cannot deadlock. Should the batch fail, the transaction is rolled back and
//! every update of it runs again as a batch of its own: one failure is reported to its own
//! caller only.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{GenericClient, Row, Statement};
use uuid::Uuid;

use super::{columns, opt_text, pg, pool_error, record, text};
use crate::model::steps::StepLog;
use crate::model::JobCost;
use crate::model::JobState;
use crate::store::{JobRecord, Patch, StoreResult};

/// The most updates one transaction takes.
const MAX_BATCH: usize = 256;

/// Compare-and-set on each job's state, with its event row, for a batch of updates to
/// distinct jobs: `$n` is the array of the updates' n-th values. `before` locks the rows
/// and reads the states they are in now, which the CAS and the events compare with.
static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                $6::text[], $7::integer[], $8::text[], $9::timestamptz[], $10::integer[],
                $11::text[], $12::json[], $13::timestamptz[], $14::timestamptz[], $15::text[],
                $16::text[], $17::bool[], $18::jsonb[], $19::timestamptz[], $20::text[],
                $21::bool[], $22::jsonb[], $23::bool[], $24::text[], $25::timestamptz[], $26::jsonb[],
                $27::integer[])
            AS i (id, expect, state, provider, sets_ref, provider_ref, attempts, launch_key,
                dispatched_at, exit_code, reason, result, started_at, finished_at,
                cancel_requested_by, log_tail, released, excluded, at, event_reason,
                has_event, cost, from_any_replica, me, first_dispatched_at,
                steps, if_attempts)
        ), before AS (
            SELECT jobs.id, jobs.state, jobs.attempts FROM jobs WHERE jobs.id IN (SELECT id FROM input)
            ORDER BY jobs.id FOR UPDATE
        ), after AS (
            UPDATE jobs SET
                state = COALESCE(input.state, jobs.state),
                provider = COALESCE(input.provider, jobs.provider),
                provider_ref = CASE WHEN input.sets_ref THEN input.provider_ref ELSE jobs.provider_ref END,
                attempts = COALESCE(input.attempts, jobs.attempts),
                launch_key = COALESCE(input.launch_key, jobs.launch_key),
                dispatched_at = COALESCE(input.dispatched_at, jobs.dispatched_at),
                first_dispatched_at = COALESCE(input.first_dispatched_at, jobs.first_dispatched_at),
                exit_code = COALESCE(input.exit_code, jobs.exit_code),
                reason = COALESCE(input.reason, jobs.reason),
                result = COALESCE(input.result, jobs.result),
                started_at = COALESCE(input.started_at, jobs.started_at),
                finished_at = COALESCE(input.finished_at, jobs.finished_at),
                cancel_requested_by = COALESCE(input.cancel_requested_by, jobs.cancel_requested_by),
                log_tail = COALESCE(input.log_tail, jobs.log_tail),
                released = COALESCE(input.released, jobs.released),
                -- The workload is gone; nothing needs the job's secrets any more.
                secret_env = CASE WHEN input.released THEN '' ELSE jobs.secret_env END,
                excluded = CASE WHEN input.excluded IS NULL THEN jobs.excluded
                    ELSE ARRAY(SELECT jsonb_array_elements_text(input.excluded)) END,
                cost = COALESCE(input.cost, jobs.cost),
                steps = COALESCE(input.steps, jobs.steps)
            FROM input, before
            WHERE jobs.id = input.id AND before.id = input.id
                -- The expected states, comma-separated; '' for any.
                AND (input.expect = '' OR before.state = ANY(string_to_array(input.expect, ',')))
                AND (input.if_attempts IS NULL OR before.attempts = input.if_attempts)
                -- Fenced: an engine's write applies only while its replica owns the job.
                AND (input.from_any_replica OR jobs.owner = input.me)
            RETURNING {}, before.state AS state_before, input.at, input.event_reason, input.has_event
        ), event AS (
            INSERT INTO events (job_id, at, state, reason)
            SELECT id, at, state, event_reason FROM after
            WHERE state <> state_before OR has_event
        )
        SELECT * FROM after",
        columns("jobs")
    )
});

/// An update with every value ready for the SQL.
pub(super) struct UpdateRow {
    id: Uuid,
    /// The expected states, comma-separated; "" for any.
    expect: String,
    state: Option<&'static str>,
    provider: Option<String>,
    sets_ref: bool,
    provider_ref: Option<String>,
    attempts: Option<i32>,
    if_attempts: Option<i32>,
    launch_key: Option<String>,
    dispatched_at: Option<DateTime<Utc>>,
    first_dispatched_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    reason: Option<String>,
    result: Option<Json<serde_json::Value>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    cancel_requested_by: Option<String>,
    log_tail: Option<String>,
    released: Option<bool>,
    excluded: Option<Json<Vec<String>>>,
    at: DateTime<Utc>,
    event_reason: Option<String>,
    has_event: bool,
    cost: Option<Json<JobCost>>,
    from_any_replica: bool,
    me: String,
    steps: Option<Json<Vec<StepLog>>>,
}

impl UpdateRow {
    pub fn new(id: Uuid, expect: &[JobState], patch: Patch, me: String) -> UpdateRow {
        let owned = |s: &Option<String>| opt_text(s).map(|t| t.into_owned());
        let event_reason = patch
            .event
            .as_deref()
            .or(patch.reason.as_deref())
            .map(|s| text(s).into_owned());
        UpdateRow {
            id,
            expect: expect
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            state: patch.state.map(|s| s.as_str()),
            provider: owned(&patch.provider),
            sets_ref: patch.provider_ref.is_some(),
            provider_ref: patch.provider_ref.as_ref().and_then(owned),
            attempts: patch.attempts.map(count),
            if_attempts: patch.if_attempts.map(count),
            launch_key: owned(&patch.launch_key),
            dispatched_at: patch.dispatched_at,
            first_dispatched_at: patch.first_dispatched_at,
            exit_code: patch.exit_code,
            reason: owned(&patch.reason),
            result: patch.result.map(Json),
            started_at: patch.started_at,
            finished_at: patch.finished_at,
            cancel_requested_by: owned(&patch.cancel_requested_by),
            log_tail: owned(&patch.log_tail),
            released: patch.released,
            excluded: patch.excluded.map(Json),
            at: Utc::now(),
            event_reason,
            has_event: patch.event.is_some(),
            cost: patch.cost.map(Json),
            from_any_replica: patch.from_any_replica,
            me,
            steps: patch.steps.map(Json),
        }
    }
}

/// A number of attempts as its column holds it.
fn count(attempts: u32) -> i32 {
    i32::try_from(attempts).unwrap_or(i32::MAX)
}

/// `UPDATE_SQL`'s parameters for `rows` (distinct jobs): one array per value.
fn arrays<'a>(rows: &[&'a UpdateRow]) -> Vec<Box<dyn ToSql + Sync + Send + 'a>> {
    fn each<'a, T: ToSql + Sync + Send + 'a>(
        rows: &[&'a UpdateRow],
        value: impl Fn(&'a UpdateRow) -> T,
    ) -> Box<dyn ToSql + Sync + Send + 'a> {
        Box::new(rows.iter().map(|r| value(r)).collect::<Vec<T>>())
    }
    vec![
        each(rows, |r| r.id),
        each(rows, |r| r.expect.as_str()),
        each(rows, |r| r.state),
        each(rows, |r| r.provider.as_deref()),
        each(rows, |r| r.sets_ref),
        each(rows, |r| r.provider_ref.as_deref()),
        each(rows, |r| r.attempts),
        each(rows, |r| r.launch_key.as_deref()),
        each(rows, |r| r.dispatched_at),
        each(rows, |r| r.exit_code),
        each(rows, |r| r.reason.as_deref()),
        each(rows, |r| r.result.as_ref()),
        each(rows, |r| r.started_at),
        each(rows, |r| r.finished_at),
        each(rows, |r| r.cancel_requested_by.as_deref()),
        each(rows, |r| r.log_tail.as_deref()),
        each(rows, |r| r.released),
        each(rows, |r| r.excluded.as_ref()),
        each(rows, |r| r.at),
        each(rows, |r| r.event_reason.as_deref()),
        each(rows, |r| r.has_event),
        each(rows, |r| r.cost.as_ref()),
        each(rows, |r| r.from_any_replica),
        each(rows, |r| r.me.as_str()),
        each(rows, |r| r.first_dispatched_at),
        each(rows, |r| r.steps.as_ref()),
        each(rows, |r| r.if_attempts),
    ]
}

/// An update waiting for its batch, and where its answer goes.
pub(super) struct UpdateOp {
    pub row: UpdateRow,
    pub done: tokio::sync::oneshot::Sender<StoreResult<Option<JobRecord>>>,
}

/// Commits the waiting updates in batches until the store is dropped.
pub(super) async fn update_loop(
    pool: Pool,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<UpdateOp>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Stable: a job's updates keep the order they came in.
        batch.sort_by_key(|op: &UpdateOp| op.row.id);
        let ops: Vec<UpdateOp> = std::mem::take(&mut batch);
        let rows: Vec<&UpdateRow> = ops.iter().map(|op| &op.row).collect();
        let answers = match together(&pool, &rows).await {
            Ok(answers) => answers,
            Err(e) => {
                if ops.len() > 1 {
                    tracing::debug!(error = %e, updates = ops.len(), "a batch of updates failed; each runs on its own");
                }
                let mut answers = Vec::with_capacity(ops.len());
                for row in &rows {
                    answers.push(match together(&pool, &[row]).await {
                        Ok(mut one) => one.remove(0),
                        Err(e) => Err(e),
                    });
                }
                answers
            }
        };
        for (op, answer) in ops.into_iter().zip(answers) {
            let _ = op.done.send(answer);
        }
    }
}

/// One round's statement; the jobs it updated, by id.
async fn run_round(
    client: &impl GenericClient,
    stmt: &Statement,
    round: &[&UpdateRow],
) -> StoreResult<HashMap<Uuid, Row>> {
    let arrays = arrays(round);
    let params: Vec<&(dyn ToSql + Sync)> = arrays
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let updated = client
        .query(stmt, &params)
        .await
        .map_err(|e| pg("updating jobs", e))?;
    updated
        .into_iter()
        .map(|row| Ok((row.try_get(0).map_err(|e| pg("reading column id", e))?, row)))
        .collect()
}

/// The updates (sorted by job) in one transaction, one statement per round: the first
/// update of each job, then the second of each job that has two, and so on. Each answer is
/// the job as it is after its update, `None` when its state or owner did not match; an
/// error when the transaction failed (and then none of them was kept).
async fn together(
    pool: &Pool,
    rows: &[&UpdateRow],
) -> StoreResult<Vec<StoreResult<Option<JobRecord>>>> {
    let mut rounds: Vec<Vec<&UpdateRow>> = vec![];
    let mut round_of = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let round = match i.checked_sub(1).map(|p| rows[p].id == row.id) {
            Some(true) => round_of[i - 1] + 1,
            _ => 0,
        };
        if rounds.len() == round {
            rounds.push(vec![]);
        }
        rounds[round].push(*row);
        round_of.push(round);
    }
    let mut client = pool.get().await.map_err(pool_error)?;
    let stmt = client
        .prepare_cached(&UPDATE_SQL)
        .await
        .map_err(|e| pg("preparing the update", e))?;
    let mut found: Vec<HashMap<Uuid, Row>> = Vec::with_capacity(rounds.len());
    if let [round] = &rounds[..] {
        // One statement is a transaction of its own (committed, durably, before PostgreSQL
        // says it is ready for the next): no BEGIN and COMMIT round trips.
        found.push(run_round(&**client, &stmt, round).await?);
    } else {
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg("beginning updates", e))?;
        for round in &rounds {
            found.push(run_round(&*tx, &stmt, round).await?);
        }
        tx.commit().await.map_err(|e| pg("committing updates", e))?;
    }
    Ok(rows
        .iter()
        .zip(round_of)
        .map(|(row, round)| found[round].get(&row.id).map(record).transpose())
        .collect())
}
