//! Group-committed submits: one task takes every submit waiting, inserts them with one
//! statement in one transaction, and answers each once that has committed.

use super::*;

/// The most submits one transaction takes.
pub(super) const MAX_BATCH: usize = 512;

/// A submit as it goes into the batch: every value ready for the SQL.
#[derive(Clone)]
pub(super) struct SubmitRow {
    pub(super) id: Uuid,
    pub(super) tenant: String,
    pub(super) spec: String,
    pub(super) labels: String,
    pub(super) sealed: String,
    pub(super) key: Option<String>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) owner: String,
}

/// A submit waiting for its batch: answered once the batch has committed, with whether its
/// job was inserted (`false`: its idempotency key was taken), or with the batch's error.
pub(super) struct SubmitOp {
    pub(super) row: SubmitRow,
    pub(super) done: tokio::sync::oneshot::Sender<StoreResult<bool>>,
}

/// Group commit: takes every submit that is waiting (up to [`MAX_BATCH`]), inserts them with
/// one statement in one transaction, and answers each only once that has committed. While
/// one batch commits the next one gathers, so concurrent submits share a round trip and a
/// WAL flush instead of paying one each. Ends when the store is dropped.
pub(super) async fn submit_loop(pool: Pool, mut queue: tokio::sync::mpsc::UnboundedReceiver<SubmitOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (rows, answers): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|op| {
                let id = op.row.id;
                (op.row, (id, op.done))
            })
            .unzip();
        let span = tracing::debug_span!("store batch", store = "postgres", writes = rows.len());
        match tracing::Instrument::instrument(insert_batch(&pool, rows), span).await {
            Ok(made) => {
                for (id, done) in answers {
                    let _ = done.send(Ok(made.contains(&id)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "a batch of submits failed; none of it was kept");
                for (_, done) in answers {
                    let _ = done.send(Err(StoreError::Db(e.to_string())));
                }
            }
        }
    }
}

/// Inserts a batch in one transaction; the ids of the jobs it made.
pub(super) async fn insert_batch(
    pool: &Pool,
    mut rows: Vec<SubmitRow>,
) -> StoreResult<std::collections::HashSet<Uuid>> {
    rows.sort_by(|a, b| (&a.tenant, &a.key).cmp(&(&b.tenant, &b.key)));
    let n = rows.len();
    let (mut ids, mut tenants, mut specs, mut labels, mut sealed, mut keys, mut created) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut owners = Vec::with_capacity(n);
    for row in rows {
        ids.push(row.id);
        tenants.push(row.tenant);
        specs.push(row.spec);
        labels.push(row.labels);
        sealed.push(row.sealed);
        keys.push(row.key);
        created.push(row.created_at);
        owners.push(row.owner);
    }
    let client = pool.get().await.map_err(pool_error)?;
    let stmt = client
        .prepare_cached(SUBMIT_SQL)
        .await
        .map_err(|e| pg("preparing the submit", e))?;
    // One statement, so a transaction of its own: committed (durably) before PostgreSQL
    // says it is ready for the next, with no BEGIN and COMMIT round trips.
    let inserted = client
        .query(
            &stmt,
            &[&ids, &tenants, &specs, &labels, &sealed, &keys, &created, &owners],
        )
        .await
        .map_err(|e| pg("submitting jobs", e))?;
    inserted.iter().map(|row| get(row, 0)).collect()
}

/// A batch of submits in one statement; the ids of the jobs it inserted. Rows come sorted
/// by tenant and idempotency key, so that concurrent batches (of other replicas) take the
/// key index's locks in one order and never deadlock on each other. A key already taken, by
/// an earlier job or by an earlier row of the same batch, inserts nothing and returns no
/// row. Nothing else comes back: the submit knows every value it wrote ([`new_record`]).
pub(super) const SUBMIT_SQL: &str = "WITH job AS (
            INSERT INTO jobs (id, tenant, state, spec, labels, secret_env, idempotency_key, created_at, owner)
            SELECT id, tenant, 'queued', spec::json, labels::jsonb, secret_env, idempotency_key, created_at, owner
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
                WITH ORDINALITY AS input (id, tenant, spec, labels, secret_env, idempotency_key, created_at, owner, n)
            ORDER BY n
            ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING id, created_at, state
        ), event AS (
            INSERT INTO events (job_id, at, state, reason)
            SELECT id, created_at, state, 'submitted' FROM job
        )
        SELECT id FROM job";

/// The job a submit inserted, as [`record`] would read it back: built from the values the
/// submit wrote instead of sent back and parsed again.
pub(super) fn new_record(row: &SubmitRow, spec: JobSpec) -> JobRecord {
    JobRecord {
        job: Job {
            id: row.id,
            state: JobState::Queued,
            terminal: false,
            provider: None,
            provider_ref: None,
            attempts: 0,
            exit_code: None,
            reason: None,
            result: None,
            labels: spec.labels.clone(),
            spec,
            created_at: row.created_at,
            started_at: None,
            finished_at: None,
            cost: None,
            steps: vec![],
        },
        tenant: row.tenant.clone(),
        launch_key: None,
        dispatched_at: None,
        first_dispatched_at: None,
        cancel_requested_by: None,
        released: false,
        excluded: vec![],
        owner: Some(row.owner.clone()),
    }
}
