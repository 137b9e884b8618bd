//! Group commit for job updates (the engine's writes, and cancels): every update waiting
//! (up to [`MAX_BATCH`]) goes into one transaction on one connection, its statements
//! pipelined, and each is answered once that transaction has committed. While one batch
//! commits the next one gathers, so a busy engine pays one WAL flush per batch instead of
//! one per write, and the submits' own group commits get the disk's attention.
//!
//! Each update is the same single statement it would be alone (`UPDATE_SQL`: the expected
//! states, the owner fence, the event row), so a batch changes nothing about what an update
//! does. Statements lock their rows in id order, so batches of two replicas cannot
//! deadlock. Should any statement of a batch fail, the whole transaction is rolled back and
//! every update of it runs again on its own, as it would have without the batch: one
//! failure is reported to its own caller only.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::{opt_text, pg, pool_error, record, text, UPDATE_SQL};
use crate::model::JobCost;
use crate::model::JobState;
use crate::store::{JobRecord, Patch, StoreResult};

/// The most updates one transaction takes.
const MAX_BATCH: usize = 256;

/// An update with every value ready for the SQL.
pub(super) struct UpdateRow {
    id: Uuid,
    expect: Vec<&'static str>,
    state: Option<&'static str>,
    provider: Option<String>,
    sets_ref: bool,
    provider_ref: Option<String>,
    attempts: Option<i32>,
    launch_key: Option<String>,
    dispatched_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    reason: Option<String>,
    result: Option<Json<serde_json::Value>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    cancel_requested_by: Option<String>,
    log_tail: Option<String>,
    released: Option<bool>,
    excluded: Option<Vec<String>>,
    at: DateTime<Utc>,
    event_reason: Option<String>,
    has_event: bool,
    cost: Option<Json<JobCost>>,
    from_any_replica: bool,
    me: String,
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
            expect: expect.iter().map(|s| s.as_str()).collect(),
            state: patch.state.map(|s| s.as_str()),
            provider: owned(&patch.provider),
            sets_ref: patch.provider_ref.is_some(),
            provider_ref: patch.provider_ref.as_ref().and_then(owned),
            attempts: patch.attempts.map(|a| i32::try_from(a).unwrap_or(i32::MAX)),
            launch_key: owned(&patch.launch_key),
            dispatched_at: patch.dispatched_at,
            exit_code: patch.exit_code,
            reason: owned(&patch.reason),
            result: patch.result.map(Json),
            started_at: patch.started_at,
            finished_at: patch.finished_at,
            cancel_requested_by: owned(&patch.cancel_requested_by),
            log_tail: owned(&patch.log_tail),
            released: patch.released,
            excluded: patch.excluded,
            at: Utc::now(),
            event_reason,
            has_event: patch.event.is_some(),
            cost: patch.cost.map(Json),
            from_any_replica: patch.from_any_replica,
            me,
        }
    }

    /// The statement's parameters, in `UPDATE_SQL`'s order.
    fn params(&self) -> [&(dyn ToSql + Sync); 24] {
        [
            &self.id,
            &self.expect,
            &self.state,
            &self.provider,
            &self.sets_ref,
            &self.provider_ref,
            &self.attempts,
            &self.launch_key,
            &self.dispatched_at,
            &self.exit_code,
            &self.reason,
            &self.result,
            &self.started_at,
            &self.finished_at,
            &self.cancel_requested_by,
            &self.log_tail,
            &self.released,
            &self.excluded,
            &self.at,
            &self.event_reason,
            &self.has_event,
            &self.cost,
            &self.from_any_replica,
            &self.me,
        ]
    }
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
                    answers.push(alone(&pool, row).await);
                }
                answers
            }
        };
        for (op, answer) in ops.into_iter().zip(answers) {
            let _ = op.done.send(answer);
        }
    }
}

/// The updates in one transaction, pipelined; an error when any of them failed (and then
/// none of them was kept).
async fn together(
    pool: &Pool,
    rows: &[&UpdateRow],
) -> StoreResult<Vec<StoreResult<Option<JobRecord>>>> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let stmt = client
        .prepare_cached(&UPDATE_SQL)
        .await
        .map_err(|e| pg("preparing the update", e))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg("beginning updates", e))?;
    let params: Vec<_> = rows.iter().map(|r| r.params()).collect();
    let rows = futures::future::join_all(params.iter().map(|p| tx.query_opt(&stmt, &p[..]))).await;
    let rows: Vec<_> = rows
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| pg("updating a job", e))?;
    tx.commit().await.map_err(|e| pg("committing updates", e))?;
    Ok(rows
        .iter()
        .map(|row| row.as_ref().map(record).transpose())
        .collect())
}

/// One update in its own transaction: a single statement, which commits on its own.
async fn alone(pool: &Pool, row: &UpdateRow) -> StoreResult<Option<JobRecord>> {
    let client = pool.get().await.map_err(pool_error)?;
    let stmt = client
        .prepare_cached(&UPDATE_SQL)
        .await
        .map_err(|e| pg("preparing the update", e))?;
    let found = client
        .query_opt(&stmt, &row.params())
        .await
        .map_err(|e| pg("updating a job", e))?;
    found.as_ref().map(record).transpose()
}
