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

mod changes;
pub mod conninfo;
mod ledger;
pub mod tls;
mod updates;

/// The channel every change to a job is announced on, with the job's id as payload.
pub const CHANNEL: &str = "offload_jobs";

/// One schema version: applied in one transaction, never edited once shipped.
///
/// Migrations expand, then contract (docs/deploying.md#upgrades), so that during a rolling
/// upgrade release N runs beside N+1 on one database: version N+1 only adds (tables,
/// nullable columns or ones with defaults, indexes), which N ignores, and what N reads is
/// dropped only in N+2, which no replica of N runs beside. A migration that cannot keep
/// this says `breaking: true`, and then code older than it refuses the database.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
    /// Whether code that knows only the version before this one cannot run on the schema
    /// once this is applied. Recorded in `offload_migrations`, where older code reads it.
    breaking: bool,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("postgres/migrations/0001_jobs.sql"),
        breaking: true,
    },
    Migration {
        version: 2,
        name: "cost",
        sql: include_str!("postgres/migrations/0002_cost.sql"),
        breaking: true,
    },
    Migration {
        version: 3,
        name: "task_runs",
        sql: include_str!("postgres/migrations/0003_task_runs.sql"),
        breaking: true,
    },
    Migration {
        version: 4,
        name: "replicas",
        sql: include_str!("postgres/migrations/0004_replicas.sql"),
        breaking: true,
    },
    Migration {
        version: 5,
        name: "retention",
        sql: include_str!("postgres/migrations/0005_retention.sql"),
        breaking: true,
    },
    Migration {
        version: 6,
        name: "list_by_state",
        sql: include_str!("postgres/migrations/0006_list_by_state.sql"),
        breaking: true,
    },
    Migration {
        version: 7,
        name: "cheaper_updates",
        sql: include_str!("postgres/migrations/0007_cheaper_updates.sql"),
        breaking: true,
    },
    Migration {
        version: 8,
        name: "notices_per_statement",
        sql: include_str!("postgres/migrations/0008_notices_per_statement.sql"),
        breaking: true,
    },
    Migration {
        version: 9,
        name: "task_runs_by_digest",
        sql: include_str!("postgres/migrations/0009_task_runs_by_digest.sql"),
        breaking: true,
    },
    Migration {
        version: 10,
        name: "replica_places",
        sql: include_str!("postgres/migrations/0010_replica_places.sql"),
        breaking: true,
    },
    Migration {
        version: 11,
        name: "first_dispatch",
        sql: include_str!("postgres/migrations/0011_first_dispatch.sql"),
        breaking: true,
    },
    Migration {
        version: 12,
        name: "budgets",
        sql: include_str!("postgres/migrations/0012_budgets.sql"),
        breaking: true,
    },
    Migration {
        version: 13,
        name: "steps",
        sql: include_str!("postgres/migrations/0013_steps.sql"),
        // A release without it would run a job of several steps as its last step alone.
        breaking: true,
    },
];

/// The channel a replica asks another to reconcile a job on, with `owner job-id` as payload.
pub const POKES: &str = "offload_pokes";

/// The advisory lock that migrations run under ("offload" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6f66_666c_6f61_6401;

/// The columns [`record`] reads, in its order.
const JOB_COLUMNS: [&str; 22] = [
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

fn columns(table: &str) -> String {
    JOB_COLUMNS
        .iter()
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the store connects; the defaults suit one gateway on a small machine.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The most connections this gateway holds.
    pub pool_size: usize,
    /// How long a new connection may take (unless the URL sets `connect_timeout`).
    pub connect_timeout: Duration,
    /// How long a call waits for a free connection before it fails.
    pub wait_timeout: Duration,
    /// How long this replica's lease lasts without renewal (`store.lease_seconds`).
    pub lease: Duration,
    /// PostgreSQL's `statement_timeout` for the gateway's sessions: no statement runs
    /// longer (`store.statement_timeout_seconds`).
    pub statement_timeout: Duration,
    /// `lock_timeout`: no statement waits longer for a row another session holds
    /// (`store.lock_timeout_seconds`).
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a session that holds a transaction open and
    /// sends nothing (its process frozen, say) is ended, and its locks released, after this
    /// (`store.idle_in_transaction_timeout_seconds`).
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        let store = crate::config::StoreConfig::default();
        PostgresOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(store.lease_seconds),
            statement_timeout: Duration::from_secs(store.statement_timeout_seconds),
            lock_timeout: Duration::from_secs(store.lock_timeout_seconds),
            idle_in_transaction_timeout: Duration::from_secs(
                store.idle_in_transaction_timeout_seconds,
            ),
        }
    }
}

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
}

/// The most submits one transaction takes.
const MAX_BATCH: usize = 512;

/// A submit as it goes into the batch: every value ready for the SQL.
#[derive(Clone)]
struct SubmitRow {
    id: Uuid,
    tenant: String,
    spec: String,
    labels: String,
    sealed: String,
    key: Option<String>,
    created_at: DateTime<Utc>,
    owner: String,
}

/// A submit waiting for its batch: answered once the batch has committed, with whether its
/// job was inserted (`false`: its idempotency key was taken), or with the batch's error.
struct SubmitOp {
    row: SubmitRow,
    done: tokio::sync::oneshot::Sender<StoreResult<bool>>,
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

/// Where and how the gateway connects to PostgreSQL: the connection's settings, and the
/// TLS its `sslmode` asks for.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

impl Target {
    /// One connection, driven by a task of its own.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }
}

/// The connection settings from `url`, with this store's defaults where it names none, the
/// session settings every connection of the gateway's has (its timeouts), and its TLS.
pub fn configure(url: &str, options_of: &PostgresOptions) -> StoreResult<Target> {
    let options = options_of;
    let mut conn = conninfo::ConnInfo::parse(url);
    let tls = tls::Tls::take_from(&mut conn)
        .and_then(|tls| tls.connector())
        .map_err(|e| StoreError::Db(format!("the PostgreSQL URL: {e}")))?;
    let mut config = tokio_postgres::Config::from_str(&conn.to_string()).map_err(|e| {
        pg(
            "the PostgreSQL URL (postgres://user:password@host:port/database)",
            e,
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("offload");
    }
    // Notice a peer that vanished without a word (a failover, a cut network) within a
    // minute rather than the kernel's two hours.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    config.keepalives_idle(Duration::from_secs(30));
    // The server's side of each session: no statement runs or waits for a lock without
    // end, and a session whose process froze inside a transaction (a SIGSTOP, a stalled
    // VM) is ended, so that its row locks cannot hold other replicas' writes. The server
    // also drops a connection whose peer stops reading (a frozen listener would otherwise
    // pin the NOTIFY queue until every notifying write failed): its `tcp_user_timeout`
    // counts the time its data waits unacknowledged, zero-window probes included.
    let ms = |d: Duration| d.as_millis().max(1);
    let mut options = config.get_options().map(str::to_string).unwrap_or_default();
    for (name, value) in [
        ("statement_timeout", ms(options_of.statement_timeout)),
        ("lock_timeout", ms(options_of.lock_timeout)),
        (
            "idle_in_transaction_session_timeout",
            ms(options_of.idle_in_transaction_timeout),
        ),
        ("tcp_user_timeout", 30_000),
    ] {
        if !options.contains(name) {
            options.push_str(&format!(" -c {name}={value}"));
        }
    }
    config.options(options.trim());
    Ok(Target { config, tls })
}

/// Free text as PostgreSQL can hold it: NUL characters become U+FFFD.
fn text(s: &str) -> Cow<'_, str> {
    match s.contains('\0') {
        true => Cow::Owned(s.replace('\0', "\u{FFFD}")),
        false => Cow::Borrowed(s),
    }
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

/// Applies the schema versions the database lacks, under the migration lock, and returns
/// the names of those it applied. What `offload migrate` runs; [`PostgresStore::connect`]
/// runs it too.
pub async fn migrate(url: &str) -> StoreResult<Vec<String>> {
    migrate_with(&configure(url, &PostgresOptions::default())?).await
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

async fn migrate_with(target: &Target) -> StoreResult<Vec<String>> {
    let (mut client, driver) = connect_one(target, "the migrations").await?;
    let outcome = async {
        // A migration may rewrite a large table and wait for the replicas' locks: no
        // statement or lock timeout in this session.
        client
            .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
            .await
            .map_err(|e| pg("preparing the migration session", e))?;
        // A session lock: released at the end of this function, or when the connection
        // drops should this process die while it holds it.
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| pg("taking the migration lock", e))?;
        let applied = apply_migrations(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| pg("releasing the migration lock", e));
        let applied = applied?;
        unlocked?;
        Ok(applied)
    }
    .await;
    drop(client);
    let _ = driver.await;
    outcome
}

async fn apply_migrations(client: &mut tokio_postgres::Client) -> StoreResult<Vec<String>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS offload_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(|e| pg("creating offload_migrations", e))?;
    // Versions applied before this column existed count as breaking.
    client
        .batch_execute(
            "ALTER TABLE offload_migrations ADD COLUMN IF NOT EXISTS breaking boolean NOT NULL DEFAULT true",
        )
        .await
        .map_err(|e| pg("adding offload_migrations.breaking", e))?;
    let (current, oldest): (i32, i32) = client
        .query_one(
            "SELECT COALESCE(max(version), 0),
                    COALESCE(max(CASE WHEN breaking THEN version ELSE version - 1 END), 0)
             FROM offload_migrations",
            &[],
        )
        .await
        .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .map_err(|e| pg("reading the schema version", e))?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > newest {
        // A newer release migrated the database. Its versions up to the one after ours
        // only expanded the schema, unless one says it breaks ours.
        if oldest > newest {
            return Err(StoreError::Db(format!(
                "the database has schema version {current}, newer than this offload knows ({newest}), \
                 and it needs an offload of schema version {oldest} or later; run a newer offload"
            )));
        }
        tracing::info!(
            database = current,
            ours = newest,
            "the database has a newer schema version, whose additions this offload ignores (expand, then contract)"
        );
        return Ok(vec![]);
    }
    let mut applied = vec![];
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let name = format!("{:04}_{}", m.version, m.name);
        let failed = |e| pg(&format!("applying migration {name}"), e);
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO offload_migrations (version, name, breaking) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.breaking],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(migration = %name, "applied a PostgreSQL migration");
        applied.push(name);
    }
    Ok(applied)
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
        let store = PostgresStore {
            pool,
            config,
            secrets: Arc::new(secrets),
            replica: std::sync::Mutex::new(String::new()),
            lease: options.lease,
            lease_until: std::sync::Mutex::new(None),
            lease_conn: tokio::sync::Mutex::new(None),
            submits,
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

/// Group commit: takes every submit that is waiting (up to [`MAX_BATCH`]), inserts them with
/// one statement in one transaction, and answers each only once that has committed. While
/// one batch commits the next one gathers, so concurrent submits share a round trip and a
/// WAL flush instead of paying one each. Ends when the store is dropped.
async fn submit_loop(pool: Pool, mut queue: tokio::sync::mpsc::UnboundedReceiver<SubmitOp>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (rows, answers): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|op| {
                let id = op.row.id;
                (op.row, (id, op.done))
            })
            .unzip();
        match insert_batch(&pool, rows).await {
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
async fn insert_batch(
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

async fn listen_loop(config: Target, tx: tokio::sync::mpsc::Sender<Change>) {
    let first = Duration::from_millis(100);
    let mut backoff = first;
    loop {
        let started = std::time::Instant::now();
        match listen_once(&config, &tx).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "the PostgreSQL change feed broke; reconnecting"),
        }
        if tx.send(Change::Down).await.is_err() {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            // It had been listening a while: a new outage, not more of the last one.
            backoff = first;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Listens on one connection until it fails (`Err`) or nobody reads the feed (`Ok`).
async fn listen_once(
    config: &Target,
    tx: &tokio::sync::mpsc::Sender<Change>,
) -> Result<(), String> {
    let (client, mut connection) = config
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    // Drives the connection and hands its notifications on, waiting for room in the
    // channel: a slow reader slows the feed rather than losing notices.
    let (notices, mut notified) = tokio::sync::mpsc::channel::<Change>(1024);
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let changes: Vec<Change> = match n.channel() {
                        POKES => n
                            .payload()
                            .split_once(' ')
                            .and_then(|(owner, id)| {
                                Some(Change::Poke {
                                    owner: owner.to_string(),
                                    id: id.parse().ok()?,
                                })
                            })
                            .into_iter()
                            .collect(),
                        // Each notice names the jobs one statement changed (up to 200).
                        _ => n
                            .payload()
                            .split(' ')
                            .filter_map(|id| id.parse::<Uuid>().ok().map(Change::Job))
                            .collect(),
                    };
                    for change in changes {
                        if notices.send(change).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{e}")),
            }
        }
        Err("the connection closed".to_string())
    });
    let _stop_driver = AbortOnDrop(driver.abort_handle());
    // Resync goes out once LISTEN has answered, and before any notice of this
    // connection: notices that come while LISTEN answers wait for it.
    let mut early = vec![];
    let listen = format!("LISTEN {CHANNEL}; LISTEN {POKES}");
    {
        let listening = client.batch_execute(&listen);
        tokio::pin!(listening);
        loop {
            tokio::select! {
                listened = &mut listening => {
                    listened.map_err(|e| format!("LISTEN: {e}"))?;
                    break;
                }
                Some(change) = notified.recv() => early.push(change),
            }
        }
    }
    let changes = std::iter::once(Change::Resync).chain(early);
    for change in changes {
        if tx.send(change).await.is_err() {
            return Ok(());
        }
    }
    loop {
        tokio::select! {
            change = notified.recv() => match change {
                Some(change) => {
                    if tx.send(change).await.is_err() {
                        return Ok(());
                    }
                }
                None => break,
            },
            () = tx.closed() => return Ok(()),
        }
    }
    drop(client);
    match driver.await {
        Ok(outcome) => outcome,
        Err(e) => Err(e.to_string()),
    }
}

/// Aborts a task when dropped, so that a listener that returns early leaves no task behind.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx)
        .map_err(|e| pg(&format!("reading column {}", JOB_COLUMNS[idx]), e))
}

fn state(text: &str) -> StoreResult<JobState> {
    JobState::parse(text).ok_or_else(|| StoreError::Db(format!("unknown state {text:?}")))
}

/// A job from a row whose first columns are [`JOB_COLUMNS`].
fn record(row: &Row) -> StoreResult<JobRecord> {
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

/// A batch of submits in one statement; the ids of the jobs it inserted. Rows come sorted
/// by tenant and idempotency key, so that concurrent batches (of other replicas) take the
/// key index's locks in one order and never deadlock on each other. A key already taken, by
/// an earlier job or by an earlier row of the same batch, inserts nothing and returns no
/// row. Nothing else comes back: the submit knows every value it wrote ([`new_record`]).
const SUBMIT_SQL: &str = "WITH job AS (
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
fn new_record(row: &SubmitRow, spec: JobSpec) -> JobRecord {
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
