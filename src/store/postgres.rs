//! The store for several replicas: PostgreSQL, behind the same [`Store`] contract as SQLite.
//!
//! - Connections come from a pool (deadpool) of tokio-postgres clients; each keeps its
//!   prepared statements. A connection that PostgreSQL closed (a restart, a failover) is
//!   dropped when it comes back to the pool and the next caller gets a new one, so the
//!   store recovers by itself; until then every call answers [`StoreError::Db`].
//! - The schema is versioned: [`migrate`] applies what is missing under a PostgreSQL
//!   advisory lock, so that replicas starting together migrate once.
//! - A write is one transaction, acknowledged only once it has committed (a write that is
//!   one statement is its own transaction, without `BEGIN` and `COMMIT` round trips).
//!   Submits are group-committed, as SQLite's are: one task takes every submit waiting and
//!   inserts them with one statement in one transaction, so concurrent submits share a
//!   round trip and a WAL flush. The engine's updates are group-committed too, a batch as
//!   one statement (see `updates`).
//! - Every statement that writes jobs also sends `NOTIFY offload_jobs, '<id> <id> ...'` in
//!   its transaction, naming up to 200 of them a notice (by a trigger, see the migrations);
//!   [`PostgresStore::listen`] turns those notices, and
//!   the pokes replicas send each other on `offload_pokes`, into a stream, for replicas to
//!   learn of each other's changes.
//! - Replicas: each registers under a new id with a lease (the `replicas` table, renewed by
//!   the database's clock), owns the jobs it accepted, and fences the engine's writes with
//!   its id; [`Store::adopt`] takes over the jobs of replicas whose leases lapsed.
//! - Secret values are sealed with the same [`SecretBox`] as SQLite's before they reach the
//!   SQL. `text` and `jsonb` cannot hold a NUL character: the spec and the result are
//!   `json`, which keeps them as written; in other free text (a log tail, a reason, labels
//!   as selectors match them) a NUL is stored as U+FFFD.
//! - TLS as the URL's `sslmode` and `sslrootcert` ask, libpq's way (`tls`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::{Stream, StreamExt};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{AsyncMessage, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use super::secrets::SecretBox;
pub use super::Change;
use super::{
    ChangesPage, ChangesQuery, CostGrouping, CostQuery, JobRecord, Lease, ListQuery, NewJob,
    Patch, Store, StoreError, StoreResult, Submitted,
};
use crate::model::steps::StepLog;
use crate::model::{CostGroup, Event, Job, JobCost, JobSpec, JobState};
pub use connect::{configure, PostgresOptions, Target};
pub use migrate::migrate;
use listen::listen_loop;
use migrate::migrate_with;
use rows::{columns, get, opt_text, record, state, text, JOB_COLUMNS};
use submit::{new_record, submit_loop, SubmitOp, SubmitRow};

mod changes;
mod connect;
pub mod conninfo;
mod ledger;
mod listen;
mod migrate;
mod rows;
mod submit;
pub mod tls;
mod updates;

/// The channel every change to a job is announced on, with the job's id as payload.
pub const CHANNEL: &str = "offload_jobs";

/// The channel a replica asks another to reconcile a job on, with `owner job-id` as payload.
pub const POKES: &str = "offload_pokes";

pub struct PostgresStore {
    pool: Pool,
    config: Target,
    secrets: Arc<SecretBox>,
    /// This replica's id, which its jobs are owned by and its writes fenced with: new at
    /// each start, and again when its lease had lapsed.
    replica: std::sync::Mutex<String>,
    lease: Duration,
    /// Until when, by this process's clock, the lease of `replica` surely holds: when its
    /// last renewal was sent, plus the lease. The database counts the lease from a moment
    /// later, so the others adopt nothing of this replica's before then.
    lease_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// The connection the lease is registered and renewed on: its own, apart from the pool,
    /// so that a pool busy with requests and reconciles never makes a renewal wait.
    lease_conn: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// To the task that commits submits in batches.
    submits: tokio::sync::mpsc::UnboundedSender<SubmitOp>,
    /// To the task that commits updates in batches (`updates`).
    updates: tokio::sync::mpsc::UnboundedSender<updates::UpdateOp>,
    /// To the task that charges jobs to their budgets in batches (`ledger`).
    charges: tokio::sync::mpsc::UnboundedSender<ledger::ChargeOp>,
}

/// A tokio-postgres error with its causes, which its own `Display` leaves out. An error of
/// the SQLSTATE classes that no retry can mend (22 data exception, 23 integrity constraint
/// violation, 54 program limit exceeded, such as an index row too big) is
/// [`StoreError::Refused`].
pub(super) fn pg(context: &str, e: tokio_postgres::Error) -> StoreError {
    let mut text = format!("{context}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    match e.code().map(|c| &c.code()[..2]) {
        Some("22" | "23" | "54") => StoreError::Refused(text),
        _ => StoreError::Db(text),
    }
    .counted()
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg("connecting to PostgreSQL", e),
        PoolError::Timeout(kind) => StoreError::Db(format!(
            "no PostgreSQL connection in time ({kind:?} timed out)"
        ))
        .counted(),
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Db(format!("PostgreSQL connection pool: {other}")).counted(),
    }
}

/// One connection outside the pool (for the migrations, or a copy), driven by a task of
/// its own: drop the client, then await the task.
pub(super) async fn connect_one(
    target: &Target,
    what: &'static str,
) -> StoreResult<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let (client, connection) = target
        .connect()
        .await
        .map_err(|e| pg(&format!("connecting to PostgreSQL for {what}"), e))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the PostgreSQL connection for {} failed", what);
        }
    });
    Ok((client, driver))
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// or the `key=value` form), applying any migration it lacks first.
    pub async fn connect(url: &str, secrets: SecretBox) -> StoreResult<PostgresStore> {
        PostgresStore::connect_with(url, secrets, PostgresOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        secrets: SecretBox,
        options: PostgresOptions,
    ) -> StoreResult<PostgresStore> {
        let config = configure(url, &options)?;
        migrate_with(&config).await?;
        let manager = Manager::from_config(
            config.config.clone(),
            config.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Db(format!("building the PostgreSQL pool: {e}")))?;
        let (submits, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(submit_loop(pool.clone(), queue));
        let (updates, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(updates::update_loop(pool.clone(), queue));
        let (charges, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(ledger::charge_loop(pool.clone(), queue));
        let store = PostgresStore {
            pool,
            config,
            secrets: Arc::new(secrets),
            replica: std::sync::Mutex::new(String::new()),
            lease: options.lease,
            lease_until: std::sync::Mutex::new(None),
            lease_conn: tokio::sync::Mutex::new(None),
            submits,
            charges,
            updates,
        };
        store.register().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// This replica's id now.
    fn me(&self) -> String {
        self.replica.lock().unwrap().clone()
    }

    /// Runs `sql` on the lease's own connection (made anew when it is not open), and notes
    /// a lease that held when the statement was sent when `renews` says the answer renewed
    /// it.
    async fn on_lease_conn(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let mut conn = self.lease_conn.lock().await;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, _driver) = connect_one(&self.config, "the lease").await?;
            *conn = Some(client);
        }
        let client = conn.as_ref().expect("connected above");
        match client.query(sql, params).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // A new connection next time, whatever went wrong with this one.
                *conn = None;
                Err(pg(what, e))
            }
        }
    }

    /// Registers this replica under a new id with a fresh lease; the id.
    async fn register(&self) -> StoreResult<String> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "offload".into());
        let host: String = host.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
        let id = format!("{host}-{}", &Uuid::now_v7().simple().to_string()[20..]);
        let sent = std::time::Instant::now();
        self.on_lease_conn(
            "registering this replica",
            "INSERT INTO replicas (id, lease_until) VALUES ($1, now() + make_interval(secs => $2))",
            &[&id, &self.lease.as_secs_f64()],
        )
        .await?;
        tracing::info!(replica = %id, "registered as a replica");
        *self.replica.lock().unwrap() = id.clone();
        *self.lease_until.lock().unwrap() = Some(sent + self.lease);
        Ok(id)
    }

    /// Every change to any job, as PostgreSQL announces them on [`CHANNEL`], from a
    /// connection of its own that reconnects (with backoff) whenever it fails. Starts with
    /// [`Change::Resync`], and says it again after each reconnection. Ends when dropped.
    pub fn listen(&self) -> impl Stream<Item = Change> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(listen_loop(self.config.clone(), tx));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
    }

    /// A job with its sealed secrets, by tenant and idempotency key.
    async fn by_key(&self, tenant: &str, key: &str) -> StoreResult<Option<(JobRecord, String)>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {}, jobs.secret_env FROM jobs WHERE tenant = $1 AND idempotency_key = $2",
            columns("jobs")
        );
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg("preparing", e))?;
        let row = client
            .query_opt(&stmt, &[&text(tenant), &text(key)])
            .await
            .map_err(|e| pg("reading a job by its idempotency key", e))?;
        row.map(|row| {
            let sealed: String = row
                .try_get(JOB_COLUMNS.len())
                .map_err(|e| pg("reading secret_env", e))?;
            Ok((record(&row)?, sealed))
        })
        .transpose()
    }

    /// The jobs of `rows` (this replica's now), each read on its own: a row that cannot be
    /// read (a spec this version cannot parse, say) is ended `failed` with the reason, and
    /// released, so that the orphan sweep removes its workload, instead of failing the
    /// rest with it or staying this replica's with nobody driving it.
    async fn readable(&self, rows: &[Row]) -> StoreResult<Vec<JobRecord>> {
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            match record(row) {
                Ok(rec) => jobs.push(rec),
                Err(e) => {
                    let id: Uuid = get(row, 0)?;
                    tracing::error!(job = %id, error = %e, "a job of this replica's cannot be read; ending it");
                    self.fail_unreadable(id, &e.to_string()).await?;
                }
            }
        }
        Ok(jobs)
    }

    /// Ends a job whose row cannot be read as failed, with why, in one statement that
    /// parses nothing of it.
    async fn fail_unreadable(&self, id: Uuid, why: &str) -> StoreResult<()> {
        let reason = format!("the stored job cannot be read: {why}");
        let client = self.client().await?;
        client
            .execute(
                "WITH ended AS (
                    UPDATE jobs SET state = 'failed', reason = $2, released = true,
                        secret_env = '', finished_at = COALESCE(finished_at, now())
                    WHERE id = $1 AND owner = $3 RETURNING id
                )
                INSERT INTO events (job_id, at, state, reason)
                SELECT id, now(), 'failed', $2 FROM ended",
                &[&id, &text(&reason), &self.me()],
            )
            .await
            .map(drop)
            .map_err(|e| pg("ending a job that cannot be read", e))
    }

    /// Opens a job's sealed secrets; `None` when there are none (never given, or deleted).
    fn open(&self, id: Uuid, sealed: &str) -> StoreResult<Option<BTreeMap<String, String>>> {
        match sealed {
            "" => Ok(None),
            // Copied in the clear from a store written before sealing.
            plain if plain.starts_with('{') => serde_json::from_str(plain)
                .map(Some)
                .map_err(|e| StoreError::Db(format!("the stored secrets: {e}"))),
            sealed => self
                .secrets
                .open(id, sealed)
                .map(Some)
                .map_err(StoreError::Db),
        }
    }
}

fn is_empty(patch: &Patch) -> bool {
    let Patch {
        state,
        provider,
        provider_ref,
        attempts,
        launch_key,
        dispatched_at,
        first_dispatched_at,
        exit_code,
        reason,
        result,
        started_at,
        finished_at,
        cancel_requested_by,
        log_tail,
        released,
        excluded,
        if_attempts,
        cost,
        steps,
        event,
        from_any_replica: _,
    } = patch;
    state.is_none()
        && provider.is_none()
        && provider_ref.is_none()
        && attempts.is_none()
        && launch_key.is_none()
        && dispatched_at.is_none()
        && first_dispatched_at.is_none()
        && exit_code.is_none()
        && reason.is_none()
        && result.is_none()
        && started_at.is_none()
        && finished_at.is_none()
        && cancel_requested_by.is_none()
        && log_tail.is_none()
        && released.is_none()
        && excluded.is_none()
        // A condition only, but one the read below does not check.
        && if_attempts.is_none()
        && cost.is_none()
        && steps.is_none()
        && event.is_none()
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn submit(&self, new: NewJob) -> StoreResult<Submitted> {
        // Sealed and serialised here, off the batch's path.
        let sealed = match new.spec.secret_env.is_empty() {
            true => String::new(),
            false => self.secrets.seal(new.id, &new.spec.secret_env),
        };
        let spec = new.spec.redacted();
        let labels: BTreeMap<Cow<str>, Cow<str>> = new
            .spec
            .labels
            .iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect();
        let json = |e| StoreError::Db(format!("serialising a job: {e}"));
        let row = SubmitRow {
            id: new.id,
            tenant: text(&new.tenant).into_owned(),
            spec: serde_json::to_string(&spec).map_err(json)?,
            labels: serde_json::to_string(&labels).map_err(json)?,
            sealed,
            key: opt_text(&new.idempotency_key).map(Cow::into_owned),
            // As PostgreSQL keeps it (microseconds), so that the record below is the one
            // every later read gives.
            created_at: new.created_at.trunc_subsecs(6),
            owner: self.me(),
        };
        let (tenant, key) = (&row.tenant, &row.key);
        // Twice at most: should the job that holds the key be deleted between the insert
        // that found it and the read of it, the key is free again.
        for _ in 0..2 {
            let (done, made) = tokio::sync::oneshot::channel();
            let op = SubmitOp {
                row: row.clone(),
                done,
            };
            self.submits.send(op).map_err(|_| StoreError::Closed)?;
            if made.await.map_err(|_| StoreError::Closed)?? {
                return Ok(Submitted::Created(Box::new(new_record(&row, spec))));
            }
            let Some(key) = key.as_deref() else {
                return Err(StoreError::Db(format!(
                    "job {} was not inserted, and it has no idempotency key",
                    new.id
                )));
            };
            let Some((existing, sealed)) = self.by_key(tenant, key).await? else {
                continue;
            };
            let stored = self.open(existing.job.id, &sealed)?;
            // Once a job's secrets are deleted, only their names can be compared.
            let same = existing.job.spec == spec && stored.is_none_or(|s| s == new.spec.secret_env);
            return Ok(if same {
                Submitted::Existing(Box::new(existing))
            } else {
                Submitted::Conflict(existing.job.id)
            });
        }
        Err(StoreError::Db(
            "the job holding this idempotency key was deleted while it was read; try again".into(),
        ))
    }

    async fn get(&self, id: Uuid) -> StoreResult<Option<JobRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {} FROM jobs WHERE id = $1", columns("jobs"));
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg("preparing", e))?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(|e| pg("reading a job", e))?;
        row.as_ref().map(record).transpose()
    }

    async fn list(&self, tenant: &str, q: &ListQuery) -> StoreResult<Vec<Job>> {
        // Two selectors on one key with different values match nothing; a JSON object
        // cannot say that.
        let mut labels: BTreeMap<Cow<str>, Cow<str>> = BTreeMap::new();
        for (k, v) in &q.labels {
            if labels
                .insert(text(k), text(v))
                .is_some_and(|old| old != text(v))
            {
                return Ok(vec![]);
            }
        }
        let tenant = text(tenant);
        let provider = opt_text(&q.provider);
        let labels = Json(labels);
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let mut sql = format!("SELECT {} FROM jobs WHERE tenant = $1", columns("jobs"));
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        let state = q.state.map(|s| s.as_str());
        if let Some(s) = &state {
            // A range, not `=`: the planner then keeps `state` in the sort key below, which
            // only jobs_by_state gives. With `=` it may walk the primary key back through
            // every newer job, filtering (most jobs long ended, the newest in other states:
            // 30-57 ms a page with a million ended jobs, against 0.5 ms).
            values.push(s);
            sql += &format!(" AND state >= ${0} AND state <= ${0}", values.len());
        }
        if let Some(p) = &provider {
            values.push(p);
            sql += &format!(" AND provider = ${}", values.len());
        }
        if !q.labels.is_empty() {
            values.push(&labels);
            sql += &format!(" AND labels @> ${}::jsonb", values.len());
        }
        let label_keys: Vec<Cow<str>> = q.label_keys.iter().map(|k| text(k)).collect();
        for k in &label_keys {
            values.push(k);
            sql += &format!(" AND labels ? ${}", values.len());
        }
        let name_prefix = opt_text(&q.name_prefix);
        if let Some(prefix) = &name_prefix {
            values.push(prefix);
            sql += &format!(" AND starts_with(spec->>'name', ${})", values.len());
        }
        match q.has_exit_code {
            Some(true) => sql += " AND exit_code IS NOT NULL",
            Some(false) => sql += " AND exit_code IS NULL",
            None => {}
        }
        let reason_prefix = q.reason_prefix.as_ref().map(|(p, starts)| (text(p), *starts));
        if let Some((prefix, starts)) = &reason_prefix {
            values.push(prefix);
            sql += &match starts {
                true => format!(" AND starts_with(reason, ${})", values.len()),
                false => format!(
                    " AND (reason IS NULL OR NOT starts_with(reason, ${}))",
                    values.len()
                ),
            };
        }
        if let Some(before) = &q.before {
            values.push(before);
            sql += &format!(" AND id < ${}", values.len());
        }
        values.push(&limit);
        let order = if state.is_some() { "state, id DESC" } else { "id DESC" };
        sql += &format!(" ORDER BY {order} LIMIT ${}", values.len());
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg("preparing a list", e))?;
        let rows = client
            .query(&stmt, &values)
            .await
            .map_err(|e| pg("listing jobs", e))?;
        rows.iter().map(|r| record(r).map(|rec| rec.job)).collect()
    }

    async fn events(&self, id: Uuid) -> StoreResult<Vec<Event>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, at, state, reason FROM events WHERE job_id = $1 ORDER BY seq",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let rows = client
            .query(&stmt, &[&id])
            .await
            .map_err(|e| pg("reading events", e))?;
        rows.iter()
            .map(|r| {
                let read = |e| pg("reading an event", e);
                Ok(Event {
                    seq: r.try_get(0).map_err(read)?,
                    at: r.try_get(1).map_err(read)?,
                    state: state(r.try_get(2).map_err(read)?)?,
                    reason: r.try_get(3).map_err(read)?,
                })
            })
            .collect()
    }

    async fn changed_since(&self, tenant: &str, query: &ChangesQuery) -> StoreResult<ChangesPage> {
        self.changes_of(tenant, query).await
    }

    async fn update(
        &self,
        id: Uuid,
        expect: &[JobState],
        patch: Patch,
    ) -> StoreResult<Option<JobRecord>> {
        if is_empty(&patch) {
            let expect: Vec<&str> = expect.iter().map(|s| s.as_str()).collect();
            let client = self.client().await?;
            // Nothing to write: only whether the job is in one of `expect`.
            let sql = format!(
                "SELECT {} FROM jobs WHERE id = $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2::text[]))",
                columns("jobs")
            );
            let stmt = client
                .prepare_cached(&sql)
                .await
                .map_err(|e| pg("preparing", e))?;
            let row = client
                .query_opt(&stmt, &[&id, &expect])
                .await
                .map_err(|e| pg("reading a job", e))?;
            return row.as_ref().map(record).transpose();
        }
        // Committed with whatever other updates are waiting (`updates`).
        let (done, answer) = tokio::sync::oneshot::channel();
        let row = updates::UpdateRow::new(id, expect, patch, self.me());
        let op = updates::UpdateOp { row, done };
        self.updates.send(op).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn secrets(&self, id: Uuid) -> StoreResult<BTreeMap<String, String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT secret_env FROM jobs WHERE id = $1")
            .await
            .map_err(|e| pg("preparing", e))?;
        let sealed: Option<String> = client
            .query_opt(&stmt, &[&id])
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(|e| pg("reading a job's secrets", e))?;
        drop(client);
        Ok(match sealed {
            Some(sealed) => self.open(id, &sealed)?.unwrap_or_default(),
            None => BTreeMap::new(),
        })
    }

    async fn log_tail(&self, id: Uuid) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT log_tail FROM jobs WHERE id = $1")
            .await
            .map_err(|e| pg("preparing", e))?;
        let tail: Option<Option<String>> = client
            .query_opt(&stmt, &[&id])
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(|e| pg("reading a log tail", e))?;
        Ok(tail.flatten())
    }

    async fn unfinished(&self) -> StoreResult<Vec<JobRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM jobs WHERE NOT released AND owner = $1
                AND (state NOT IN ('succeeded', 'failed', 'cancelled') OR provider_ref IS NOT NULL)
             ORDER BY id",
            columns("jobs")
        );
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg("preparing", e))?;
        let rows = client
            .query(&stmt, &[&self.me()])
            .await
            .map_err(|e| pg("reading unfinished jobs", e))?;
        drop(client);
        self.readable(&rows).await
    }

    async fn owned(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<Uuid>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id FROM jobs WHERE NOT released AND owner = $1 AND id > $2 \
                   AND (state NOT IN ('succeeded', 'failed', 'cancelled') OR provider_ref IS NOT NULL) \
                 ORDER BY id LIMIT $3",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.unwrap_or(Uuid::nil());
        let rows = client
            .query(&stmt, &[&self.me(), &after, &limit])
            .await
            .map_err(|e| pg("reading this replica's jobs", e))?;
        rows.iter().map(|r| get(r, 0)).collect()
    }

    async fn queued(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Uuid>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id FROM jobs WHERE state = 'queued' AND NOT released AND owner = $3 AND created_at < $1 ORDER BY id LIMIT $2",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&before, &limit, &self.me()])
            .await
            .map_err(|e| pg("reading queued jobs", e))?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(|e| pg("reading a queued job", e)))
            .collect()
    }

    async fn purge(&self, finished_before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let client = self.client().await?;
        // Events go with their job, in the same statement; the idempotency key is a column.
        let stmt = client
            .prepare_cached(
                "WITH gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
                 WHERE released AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id), \
                 events_gone AS (DELETE FROM events WHERE job_id IN (SELECT id FROM gone)) \
                 SELECT count(*) FROM gone",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let row = client
            .query_one(&stmt, &[&finished_before, &limit])
            .await
            .map_err(|e| pg("purging ended jobs", e))?;
        let purged: i64 = row.try_get(0).map_err(|e| pg("purging ended jobs", e))?;
        Ok(u64::try_from(purged).unwrap_or(0))
    }

    async fn run_durations(
        &self,
        tenant: &str,
        dag_id: &str,
        task_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        let client = self.client().await?;
        // The expressions of the jobs_task_runs_by_digest index, so that it is used, and
        // then the values themselves.
        let stmt = client
            .prepare_cached(
                "SELECT ceil(extract(epoch FROM finished_at - started_at))::int8 FROM jobs \
                 WHERE tenant = $1 AND md5(labels->>'dag_id') = md5($2) \
                   AND md5(labels->>'task_id') = md5($3) \
                   AND labels->>'dag_id' = $2 AND labels->>'task_id' = $3 \
                   AND state = 'succeeded' AND started_at IS NOT NULL AND finished_at IS NOT NULL \
                 ORDER BY finished_at DESC LIMIT $4",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&tenant, &text(dag_id), &text(task_id), &limit])
            .await
            .map_err(|e| pg("reading run times", e))?;
        rows.iter()
            .map(|r| get::<i64>(r, 0).map(|s| s.max(0) as u64))
            .collect()
    }

    async fn costs(&self, tenant: &str, query: &CostQuery) -> StoreResult<Vec<CostGroup>> {
        let (key, label) = match &query.group_by {
            CostGrouping::Provider => ("COALESCE(provider, '')", String::new()),
            CostGrouping::Label(k) => ("COALESCE(labels->>$4::text, '')", k.clone()),
        };
        let window =
            "tenant = $1 AND finished_at >= $2 AND finished_at < $3 AND $4::text IS NOT NULL";
        // A job's reference cost; one without a reference counts at what it cost.
        let reference = "COALESCE((cost->'reference'->>'usd')::float8, (cost->>'usd')::float8, 0)";
        let sql = match &query.group_by {
            // Each attempt where it was spent: the earlier ones at their own providers, the
            // last at the job's.
            CostGrouping::Provider => format!(
                "SELECT k, sum(n)::int8, COALESCE(sum(usd), 0)::float8, COALESCE(sum(est), 0)::float8, \
                    COALESCE(sum(ref), 0)::float8 \
                 FROM ( \
                    SELECT {key} AS k, 1 AS n, \
                        COALESCE((cost->>'usd')::float8, 0) - COALESCE(( \
                            SELECT sum((e->>'usd')::float8) \
                            FROM jsonb_array_elements(COALESCE(cost->'earlier', '[]')) AS e), 0) AS usd, \
                        COALESCE((cost->>'estimated_usd')::float8, 0) AS est, \
                        {reference} AS ref \
                    FROM jobs WHERE {window} \
                    UNION ALL \
                    SELECT e->>'provider', 0, (e->>'usd')::float8, 0, 0 \
                    FROM jobs, jsonb_array_elements(COALESCE(jobs.cost->'earlier', '[]')) AS e \
                    WHERE {window} \
                 ) AS attempts GROUP BY 1"
            ),
            CostGrouping::Label(_) => format!(
                "SELECT {key} AS k, count(*), \
                    COALESCE(sum((cost->>'usd')::float8), 0)::float8, \
                    COALESCE(sum((cost->>'estimated_usd')::float8), 0)::float8, \
                    COALESCE(sum({reference}), 0)::float8 \
                 FROM jobs WHERE {window} \
                 GROUP BY 1"
            ),
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg("preparing", e))?;
        let rows = client
            .query(&stmt, &[&tenant, &query.since, &query.until, &label])
            .await
            .map_err(|e| pg("reading costs", e))?;
        let mut groups = rows
            .iter()
            .map(|r| {
                Ok(CostGroup::new(
                    get(r, 0)?,
                    get::<i64>(r, 1)? as u64,
                    get(r, 2)?,
                    get(r, 3)?,
                    get(r, 4)?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // In byte order, as SQLite gives them, whatever the database's collation.
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(groups)
    }

    async fn counts(&self) -> StoreResult<Vec<(String, JobState, u64)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT COALESCE(provider, ''), state, count(*) FROM jobs WHERE NOT released GROUP BY 1, 2",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let rows = client
            .query(&stmt, &[])
            .await
            .map_err(|e| pg("counting jobs", e))?;
        rows.iter()
            .map(|r| {
                let read = |e| pg("reading a count", e);
                let n: i64 = r.try_get(2).map_err(read)?;
                Ok((
                    r.try_get(0).map_err(read)?,
                    state(r.try_get(1).map_err(read)?)?,
                    u64::try_from(n).unwrap_or(0),
                ))
            })
            .collect()
    }

    fn ledger(&self) -> &dyn crate::store::ledger::Ledger {
        self
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| pg("pinging PostgreSQL", e))
    }

    fn replica(&self) -> Option<String> {
        Some(self.me())
    }

    fn lease_left(&self) -> Option<Duration> {
        let until = *self.lease_until.lock().unwrap();
        Some(until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(std::time::Instant::now())
        }))
    }

    async fn renew_lease(&self, held: &BTreeMap<String, usize>) -> StoreResult<Lease> {
        let me = self.me();
        let held = Json(held);
        let sent = std::time::Instant::now();
        let renewed = self
            .on_lease_conn(
                "renewing the lease",
                "UPDATE replicas SET lease_until = now() + make_interval(secs => $2), held = $3 \
                 WHERE id = $1 AND lease_until >= now() RETURNING id",
                &[&me, &self.lease.as_secs_f64(), &held],
            )
            .await?;
        let renewed_as = match renewed.len() {
            1 => {
                *self.lease_until.lock().unwrap() = Some(sent + self.lease);
                None
            }
            _ => {
                tracing::warn!(replica = %me, "this replica's lease had lapsed: its jobs are others' to adopt now; registering anew");
                Some(self.register().await?)
            }
        };
        let me = self.me();
        // The live replicas, and the places each other replica said it held: the live ones,
        // and those that lapsed within the last lease (their jobs are being adopted, and
        // their workloads still run meanwhile).
        let rows = self
            .on_lease_conn(
                "reading the replicas",
                "SELECT id, lease_until >= now(), held FROM replicas \
                 WHERE lease_until >= now() - make_interval(secs => $1) ORDER BY id",
                &[&self.lease.as_secs_f64()],
            )
            .await?;
        let mut live = vec![];
        let mut held_elsewhere: BTreeMap<String, usize> = BTreeMap::new();
        for row in &rows {
            let id: String = get(row, 0)?;
            let is_live: bool = row.try_get(1).map_err(|e| pg("reading a lease", e))?;
            let Json(held): Json<BTreeMap<String, usize>> =
                row.try_get(2).map_err(|e| pg("reading a replica's places", e))?;
            if id != me {
                for (provider, n) in held {
                    *held_elsewhere.entry(provider).or_default() += n;
                }
            }
            if is_live {
                live.push(id);
            }
        }
        Ok(Lease {
            live: live.len().max(1),
            leader: live.first().is_none_or(|first| *first == me),
            rank: live.iter().position(|id| *id == me).unwrap_or(0),
            held_elsewhere,
            renewed_as,
        })
    }

    async fn adopt(&self, limit: usize) -> StoreResult<Vec<JobRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&ADOPT_SQL)
            .await
            .map_err(|e| pg("preparing the adoption", e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&self.me(), &limit])
            .await
            .map_err(|e| pg("adopting jobs", e))?;
        drop(client);
        self.readable(&rows).await
    }

    async fn release_lease(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM replicas WHERE id = $1", &[&self.me()])
            .await
            .map(drop)
            .map_err(|e| pg("giving up the lease", e))
    }

    async fn poke_owner(&self, rec: &JobRecord) -> StoreResult<()> {
        let Some(owner) = &rec.owner else {
            return Ok(());
        };
        let client = self.client().await?;
        let payload = format!("{owner} {}", rec.job.id);
        client
            .execute("SELECT pg_notify($1, $2)", &[&POKES, &payload])
            .await
            .map(drop)
            .map_err(|e| pg("poking the job's owner", e))
    }

    fn changes(&self) -> Option<futures::stream::BoxStream<'static, Change>> {
        Some(self.listen().boxed())
    }
}

/// Takes over unfinished jobs whose owner holds no live lease (or that have none), in a
/// batch that other replicas adopting at the same time skip, each with an event.
///
/// Every replica runs it at each lease renewal, so it reads only the jobs it takes: the
/// owners of unfinished jobs come from `jobs_by_owner` one step per owner (a loose index
/// scan), and the lapsed owners' jobs from it too. Asking of every unfinished job whether
/// its owner was live read all of them, 50 ms of the server's time each renewal with
/// 50,000 live. The claim checks each job again once locked, so a job another replica
/// adopted meanwhile is left alone.
static ADOPT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH RECURSIVE owners (owner) AS (
            (SELECT owner FROM jobs WHERE NOT released AND owner IS NOT NULL
                ORDER BY owner LIMIT 1)
            UNION ALL
            SELECT (SELECT jobs.owner FROM jobs
                    WHERE NOT jobs.released AND jobs.owner > owners.owner
                    ORDER BY jobs.owner LIMIT 1)
            FROM owners WHERE owners.owner IS NOT NULL
        ), lapsed AS (
            SELECT owner FROM owners WHERE owner IS NOT NULL
                AND owner NOT IN (SELECT id FROM replicas WHERE lease_until >= now())
        ), candidates AS (
            (SELECT id FROM jobs WHERE NOT released AND owner IS NULL LIMIT $2)
            UNION ALL
            -- A range and its order, not `=`: the planner guesses as many jobs for each
            -- owner, so with `=` it would rather read every job than the index.
            SELECT lapsed_jobs.id FROM lapsed CROSS JOIN LATERAL (
                SELECT jobs.id FROM jobs
                WHERE NOT jobs.released
                    AND jobs.owner >= lapsed.owner AND jobs.owner <= lapsed.owner
                ORDER BY jobs.owner LIMIT $2
            ) AS lapsed_jobs
        ), claimed AS (
            SELECT jobs.id, jobs.owner AS owner_before FROM jobs
            WHERE jobs.id IN (SELECT id FROM candidates ORDER BY id LIMIT $2)
                AND NOT jobs.released
                AND (jobs.owner IS NULL OR jobs.owner IN (SELECT owner FROM lapsed))
            ORDER BY jobs.id
            FOR UPDATE OF jobs SKIP LOCKED
        ), after AS (
            UPDATE jobs SET owner = $1::text FROM claimed WHERE jobs.id = claimed.id
            RETURNING {}, claimed.owner_before
        ), event AS (
            INSERT INTO events (job_id, at, state, reason)
            SELECT id, now(), state, 'adopted by replica ' || $1::text
                || COALESCE(' from ' || owner_before || ', whose lease had lapsed', '')
            FROM after
        )
        SELECT * FROM after",
        columns("jobs")
    )
});
