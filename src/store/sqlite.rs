//! The embedded store: SQLite in WAL mode.
//!
//! Writes go to one writer thread that owns the only write connection. It takes every
//! write that is waiting, runs them in one transaction (each in its own savepoint should
//! one fail), commits once, and only then answers each caller: group commit, so
//! concurrent submits share a sync instead of paying one each. What can be done before or
//! after (statements, JSON, the parsing of rows read back, checkpoints) is done off that
//! thread. Reads use a pool of read-only connections and never wait for the writer (WAL
//! readers see the last commit).

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, ToSql};
use tokio::sync::oneshot;
use uuid::Uuid;

mod changes;
mod checkpoints;
mod ledger;

use super::secrets::SecretBox;
use super::{
    ChangesPage, ChangesQuery, CostGrouping, CostQuery, JobRecord, ListQuery, NewJob, Patch,
    Store, StoreError, StoreResult, Submitted,
};
use crate::model::{CostGroup, Event, Job, JobState};
use checkpoints::{Checkpoints, Committed};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    state TEXT NOT NULL,
    provider TEXT,
    provider_ref TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    launch_key TEXT,
    dispatched_at INTEGER,
    exit_code INTEGER,
    reason TEXT,
    result TEXT,
    labels TEXT NOT NULL,
    spec TEXT NOT NULL,
    secret_env TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    cancel_requested_by TEXT,
    log_tail TEXT,
    released INTEGER NOT NULL DEFAULT 0,
    excluded TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, id DESC);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (state) WHERE released = 0;
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq);
PRAGMA user_version = 1;
"#;

/// Version 2: each job's cost (JSON), and an index for cost reports.
const MIGRATION_2: &str = r#"
BEGIN;
ALTER TABLE jobs ADD COLUMN cost TEXT;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (tenant, finished_at);
PRAGMA user_version = 2;
COMMIT;
"#;

/// Version 3: an index for the run times of a DAG task's successful runs (the expected
/// duration of a job whose spec gives none).
const MIGRATION_3: &str = r#"
BEGIN;
CREATE INDEX IF NOT EXISTS jobs_task_runs ON jobs
    (tenant, json_extract(labels, '$.dag_id'), json_extract(labels, '$.task_id'), finished_at)
    WHERE state = 'succeeded';
PRAGMA user_version = 3;
COMMIT;
"#;

/// Version 4: an index for retention, over jobs ended and released.
const MIGRATION_4: &str = r#"
BEGIN;
CREATE INDEX IF NOT EXISTS jobs_retention ON jobs (finished_at) WHERE released = 1;
PRAGMA user_version = 4;
COMMIT;
"#;

/// Version 5: an index for lists filtered by state (`GET /v1/jobs?state=`), which would
/// otherwise walk every newer job of the tenant to find a page.
const MIGRATION_5: &str = r#"
BEGIN;
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (tenant, state, id DESC);
PRAGMA user_version = 5;
COMMIT;
"#;

/// Version 6: when each job's first attempt was dispatched, which its timeout counts from.
const MIGRATION_6: &str = r#"
BEGIN;
ALTER TABLE jobs ADD COLUMN first_dispatched_at INTEGER;
PRAGMA user_version = 6;
COMMIT;
"#;

/// Version 8: how each step of a job of several steps went (JSON).
const MIGRATION_8: &str = r#"
BEGIN;
ALTER TABLE jobs ADD COLUMN steps TEXT;
PRAGMA user_version = 8;
COMMIT;
"#;

/// The schema version this code writes.
pub(crate) const VERSION: i64 = 8;

const JOB_COLUMNS: &str = "id, tenant, state, provider, provider_ref, attempts, launch_key, dispatched_at, \
    exit_code, reason, result, labels, spec, created_at, started_at, finished_at, cancel_requested_by, \
    released, excluded, cost, first_dispatched_at, steps";

/// The most writes one transaction takes before it commits.
const MAX_BATCH: usize = 1024;

/// A write waiting for the writer thread. It may run twice (see `run_batch`), so it keeps
/// what it was given and its latest outcome, and answers its caller once, after the
/// batch's commit.
trait Write: Send {
    /// Runs the write in the batch's transaction; `false` if it failed (its outcome, kept
    /// for its caller, says why).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the write's outcome if its batch committed, else the batch's
    /// error.
    fn answer(self: Box<Self>, batch: Option<&StoreError>);
}

struct Op<T, F> {
    f: F,
    outcome: Option<StoreResult<T>>,
    tx: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send, F: FnMut(&Connection) -> rusqlite::Result<T> + Send> Write for Op<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = (self.f)(conn).map_err(db);
        let ran = outcome.is_ok();
        self.outcome = Some(outcome);
        ran
    }

    fn answer(self: Box<Self>, batch: Option<&StoreError>) {
        let _ = self.tx.send(match (batch, self.outcome) {
            (None, Some(outcome)) => outcome,
            (Some(e), _) => Err(StoreError::Db(e.to_string())),
            (None, None) => Err(StoreError::Db("the write was not run".into())),
        });
    }
}

pub struct SqliteStore {
    writer: Mutex<mpsc::Sender<Box<dyn Write>>>,
    readers: Arc<ReadPool>,
    secrets: Arc<SecretBox>,
    _checkpoints: Checkpoints,
    /// Held for the store's life: a second gateway on the same file refuses to start
    /// instead of racing this one's engine.
    _lock: std::fs::File,
}

/// Read-only connections, opened as needed and reused.
struct ReadPool {
    path: String,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.idle.lock().unwrap().pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let conn = open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.pragma_update(None, "mmap_size", 1i64 << 28)
                    .map_err(db)?;
                conn
            }
        };
        let out = f(&conn).map_err(db);
        self.idle.lock().unwrap().push(conn);
        out
    }
}

/// A SQLite error; a constraint failed, a value too big for SQLite or of the wrong type is
/// [`StoreError::Refused`], since no retry can mend it.
fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    match e.sqlite_error_code() {
        Some(ConstraintViolation | TooBig | TypeMismatch) => StoreError::Refused(e.to_string()),
        _ => StoreError::Db(e.to_string()),
    }
    .counted()
}

fn open(path: &str, flags: OpenFlags) -> StoreResult<Connection> {
    let conn =
        Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. `synchronous_full` syncs every
    /// commit to disk (durable across power loss); otherwise a commit survives a process
    /// crash but not a power cut.
    pub fn open(
        path: &Path,
        synchronous_full: bool,
        secrets: SecretBox,
    ) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display())))?;
        }
        let path_str = path.to_string_lossy().into_owned();
        let lock = lock_file(path)?;
        // Created private before SQLite opens it: SQLite gives the WAL and shared-memory
        // files it makes the database's mode, and all of them hold every tenant's specs
        // and log tails.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Db(format!("creating {path_str}: {e}"))),
        }
        let conn = open(
            &path_str,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(
            None,
            "synchronous",
            if synchronous_full { "FULL" } else { "NORMAL" },
        )
        .map_err(db)?;
        // A savepoint keeps the pages its write changes in a sub-journal until its release:
        // in memory, not in a temporary file written page by page.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version > VERSION {
            return Err(StoreError::Db(format!(
                "{path_str} has schema version {version}, newer than this offload knows"
            )));
        }
        if version < 1 {
            conn.execute_batch(SCHEMA).map_err(db)?;
        }
        if version < 2 {
            conn.execute_batch(MIGRATION_2).map_err(db)?;
        }
        if version < 3 {
            conn.execute_batch(MIGRATION_3).map_err(db)?;
        }
        if version < 4 {
            conn.execute_batch(MIGRATION_4).map_err(db)?;
        }
        if version < 5 {
            conn.execute_batch(MIGRATION_5).map_err(db)?;
        }
        if version < 6 {
            conn.execute_batch(MIGRATION_6).map_err(db)?;
        }
        if version < 7 {
            conn.execute_batch(ledger::MIGRATION_7).map_err(db)?;
        }
        if version < 8 {
            conn.execute_batch(MIGRATION_8).map_err(db)?;
        }
        // Room for every statement the writer runs, each patch's shape of UPDATE included.
        conn.set_prepared_statement_cache_capacity(64);
        // Checkpoints run on a thread of their own (see `checkpoints`), not in a commit.
        checkpoints::prepare_writer(&conn, checkpoints::LOG_LIMIT).map_err(db)?;
        let checkpoints = Checkpoints::start(
            open(&path_str, OpenFlags::SQLITE_OPEN_READ_WRITE)?,
            checkpoints::EVERY,
            checkpoints::LOG_LIMIT,
        )
        .map_err(|e| StoreError::Db(format!("starting the checkpoint thread: {e}")))?;
        let committed = checkpoints.committed();
        let (tx, rx) = mpsc::channel::<Box<dyn Write>>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(conn, rx, &committed))
            .map_err(|e| StoreError::Db(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Mutex::new(tx),
            readers: Arc::new(ReadPool {
                path: path_str,
                idle: Mutex::new(vec![]),
            }),
            secrets: Arc::new(secrets),
            _checkpoints: checkpoints,
            _lock: lock,
        })
    }

    /// Runs `f` in the writer's next batch, once or (should another write in the batch
    /// fail) twice, and answers once the batch has committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let op: Box<dyn Write> = Box::new(Op {
            f,
            outcome: None,
            tx,
        });
        self.writer
            .lock()
            .unwrap()
            .send(op)
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }
}

/// Takes the lock file beside the database (`offload.db.lock` for `offload.db`), or says
/// which file another process holds.
fn lock_file(path: &Path) -> StoreResult<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| StoreError::Db(format!("opening {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Db(format!(
            "another offload gateway is using {} (it holds {}); one gateway per SQLite file, or use PostgreSQL for several",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Db(format!(
            "locking {}: {e}",
            lock_path.display()
        ))),
    }
}

/// Runs a statement the writer runs again and again (its plan is cached).
fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(db)
}

/// Runs the write in its own savepoint: should it fail, what it wrote is undone and the
/// transaction goes on. `Err` only when the savepoint itself fails.
fn in_savepoint(conn: &Connection, write: &mut dyn Write) -> StoreResult<()> {
    exec(conn, "SAVEPOINT op")?;
    match write.run(conn) {
        true => exec(conn, "RELEASE op"),
        false => conn.execute_batch("ROLLBACK TO op; RELEASE op").map_err(db),
    }
}

fn write_loop(conn: Connection, rx: mpsc::Receiver<Box<dyn Write>>, committed: &Committed) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, &mut batch);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "sqlite batch failed; none of its writes were kept");
        }
        for write in batch {
            write.answer(outcome.as_ref().err());
        }
        // After the answers: a checkpoint the writer runs delays no caller of this batch.
        if outcome.is_ok() {
            committed.after_commit(&conn);
        }
    }
}

/// Runs one batch in one transaction: all of its writes are kept, or none. The writes run
/// first as they are, without savepoints (a savepoint copies each page that a write
/// changes, the better part of a small write's cost). Should one of them fail, the
/// transaction is rolled back and the whole batch run again with each write in its own
/// savepoint, so that the failed write alone is undone and the others are kept.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Write>]) -> StoreResult<()> {
    run_in_transaction(conn, batch, false).unwrap_or_else(|| {
        let _ = conn.execute_batch("ROLLBACK");
        run_in_transaction(conn, batch, true).unwrap_or_else(|| {
            Err(StoreError::Db(
                "a write failed outside its savepoint".into(),
            ))
        })
    })
}

/// Runs the batch's writes in one transaction and commits it; `None` when a write failed
/// outside a savepoint (the transaction, still open, then holds part of it). Should the
/// transaction end early (SQLite rolls back by itself on a full disk or an I/O error), the
/// writes after that point are not run at all, for outside a transaction each would be
/// kept on its own while its caller is told the batch failed.
fn run_in_transaction(
    conn: &Connection,
    batch: &mut [Box<dyn Write>],
    savepoints: bool,
) -> Option<StoreResult<()>> {
    // Whether the batch's transaction is still open, as it must be before each write.
    let open = || match conn.is_autocommit() {
        false => Ok(()),
        true => Err(StoreError::Db(
            "the transaction was rolled back in the middle of a batch".into(),
        )),
    };
    let mut outcome = exec(conn, "BEGIN IMMEDIATE");
    for write in batch.iter_mut() {
        outcome = outcome.and_then(|()| open());
        if outcome.is_err() {
            break;
        }
        match savepoints {
            true => outcome = in_savepoint(conn, write.as_mut()),
            false if write.run(conn) => {}
            false => return None,
        }
    }
    outcome = outcome
        .and_then(|()| open())
        .and_then(|()| exec(conn, "COMMIT"));
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Some(outcome)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn parse_json<T: serde::de::DeserializeOwned>(idx: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A job's row as read, its JSON, id and times not yet parsed. The writer reads the row
/// back after each write, and its caller parses it: off the one thread that every write
/// waits for.
struct RawRecord {
    id: String,
    tenant: String,
    state: String,
    provider: Option<String>,
    provider_ref: Option<String>,
    attempts: u32,
    launch_key: Option<String>,
    dispatched_at: Option<i64>,
    exit_code: Option<i32>,
    reason: Option<String>,
    result: Option<String>,
    labels: String,
    spec: String,
    created_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    cancel_requested_by: Option<String>,
    released: bool,
    excluded: String,
    cost: Option<String>,
    first_dispatched_at: Option<i64>,
    steps: Option<String>,
}

impl RawRecord {
    /// Reads a row of `JOB_COLUMNS`.
    fn read(row: &Row) -> rusqlite::Result<RawRecord> {
        Ok(RawRecord {
            id: row.get(0)?,
            tenant: row.get(1)?,
            state: row.get(2)?,
            provider: row.get(3)?,
            provider_ref: row.get(4)?,
            attempts: row.get(5)?,
            launch_key: row.get(6)?,
            dispatched_at: row.get(7)?,
            exit_code: row.get(8)?,
            reason: row.get(9)?,
            result: row.get(10)?,
            labels: row.get(11)?,
            spec: row.get(12)?,
            created_at: row.get(13)?,
            started_at: row.get(14)?,
            finished_at: row.get(15)?,
            cancel_requested_by: row.get(16)?,
            released: row.get(17)?,
            excluded: row.get(18)?,
            cost: row.get(19)?,
            first_dispatched_at: row.get(20)?,
            steps: row.get(21)?,
        })
    }

    /// The record; an error names the column (its index in `JOB_COLUMNS`) that does not
    /// parse.
    fn parse(self) -> rusqlite::Result<JobRecord> {
        let state = JobState::parse(&self.state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown state {}", self.state).into(),
            )
        })?;
        let job = Job {
            id: self.id.parse().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            state,
            terminal: state.is_terminal(),
            provider: self.provider,
            provider_ref: self.provider_ref,
            attempts: self.attempts,
            exit_code: self.exit_code,
            reason: self.reason,
            result: self.result.map(|r| parse_json(10, &r)).transpose()?,
            labels: parse_json(11, &self.labels)?,
            spec: parse_json(12, &self.spec)?,
            created_at: time(self.created_at).unwrap_or_default(),
            started_at: time(self.started_at),
            finished_at: time(self.finished_at),
            cost: self.cost.map(|c| parse_json(19, &c)).transpose()?,
            steps: self
                .steps
                .map(|s| parse_json(20, &s))
                .transpose()?
                .unwrap_or_default(),
        };
        Ok(JobRecord {
            job,
            tenant: self.tenant,
            launch_key: self.launch_key,
            dispatched_at: time(self.dispatched_at),
            first_dispatched_at: time(self.first_dispatched_at),
            cancel_requested_by: self.cancel_requested_by,
            released: self.released,
            excluded: parse_json(18, &self.excluded)?,
            owner: None,
        })
    }
}

fn record(row: &Row) -> rusqlite::Result<JobRecord> {
    RawRecord::read(row)?.parse()
}

fn raw_record(conn: &Connection, id: &str) -> rusqlite::Result<Option<RawRecord>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], RawRecord::read)
        .optional()
}

fn get_record(conn: &Connection, id: &str) -> rusqlite::Result<Option<JobRecord>> {
    raw_record(conn, id)?.map(RawRecord::parse).transpose()
}

fn add_event(
    conn: &Connection,
    id: &str,
    at: DateTime<Utc>,
    state: JobState,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO events (job_id, at, state, reason) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, ms(at), state.as_str(), reason])?;
    Ok(())
}

/// A submit's columns, serialised before it reaches the writer thread.
struct SubmitRow {
    new: NewJob,
    spec: String,
    labels: String,
    /// The sealed secrets, or "" for none (none given, or deleted once the job ended).
    sealed: String,
}

impl SubmitRow {
    fn of(new: NewJob, secrets: &SecretBox) -> rusqlite::Result<SubmitRow> {
        Ok(SubmitRow {
            spec: serde_json::to_string(&new.spec.redacted()).map_err(json_err)?,
            labels: serde_json::to_string(&new.spec.labels).map_err(json_err)?,
            sealed: match new.spec.secret_env.is_empty() {
                true => String::new(),
                false => secrets.seal(new.id, &new.spec.secret_env),
            },
            new,
        })
    }
}

/// Inserts the job and its first event; the row as stored (`RETURNING`, no read-back).
fn insert_job(conn: &Connection, row: &SubmitRow) -> rusqlite::Result<RawRecord> {
    let new = &row.new;
    let id = new.id.to_string();
    let record = conn
        .prepare_cached(&format!(
            "INSERT INTO jobs (id, tenant, state, labels, spec, secret_env, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {JOB_COLUMNS}"
        ))?
        .query_row(
            params![
                id,
                new.tenant,
                JobState::Queued.as_str(),
                row.labels,
                row.spec,
                row.sealed,
                ms(new.created_at)
            ],
            RawRecord::read,
        )?;
    add_event(
        conn,
        &id,
        new.created_at,
        JobState::Queued,
        Some("submitted"),
    )?;
    Ok(record)
}

/// What the writer hands back for a submit: the new job's row (for its caller to parse), or
/// the answer to a key used before.
enum SubmitOutcome {
    Created(RawRecord),
    Repeated(Submitted),
}

fn submit(
    conn: &Connection,
    row: &SubmitRow,
    secrets: &SecretBox,
) -> rusqlite::Result<SubmitOutcome> {
    let new = &row.new;
    if let Some(key) = &new.idempotency_key {
        let existing: Option<String> = conn
            .prepare_cached("SELECT job_id FROM idempotency WHERE tenant = ?1 AND key = ?2")?
            .query_row([&new.tenant, key], |r| r.get(0))
            .optional()?;
        if let Some(job_id) = existing {
            let record = get_record(conn, &job_id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            let stored = stored_secrets(conn, &record.job.id, secrets)?;
            // Once a job's secrets are deleted, only their names can be compared.
            let same = record.job.spec == new.spec.redacted()
                && stored.is_none_or(|s| s == new.spec.secret_env);
            return Ok(SubmitOutcome::Repeated(if same {
                Submitted::Existing(Box::new(record))
            } else {
                Submitted::Conflict(record.job.id)
            }));
        }
        conn.prepare_cached("INSERT INTO idempotency (tenant, key, job_id) VALUES (?1, ?2, ?3)")?
            .execute(params![new.tenant, key, new.id.to_string()])?;
    }
    Ok(SubmitOutcome::Created(insert_job(conn, row)?))
}

/// A job's secret values; `None` once they are deleted.
fn stored_secrets(
    conn: &Connection,
    id: &Uuid,
    secrets: &SecretBox,
) -> rusqlite::Result<Option<BTreeMap<String, String>>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT secret_env FROM jobs WHERE id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    match text.as_deref() {
        None | Some("") => Ok(None),
        // Written in the clear by an offload from before sealing.
        Some(plain) if plain.starts_with('{') => parse_json(0, plain).map(Some),
        Some(sealed) => secrets.open(*id, sealed).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        }),
    }
}

/// An update's statement and values, built (its JSON serialised) before it reaches the
/// writer thread.
struct PatchRow {
    /// `UPDATE jobs SET ... WHERE id = ?1 RETURNING ...`, or `None` for a patch that sets
    /// nothing (an event alone).
    sql: Option<String>,
    values: Vec<Value>,
    state: Option<JobState>,
    /// The event's reason, should the patch add one.
    event: Option<String>,
    explicit_event: bool,
}

impl PatchRow {
    fn of(patch: Patch) -> rusqlite::Result<PatchRow> {
        let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
        let mut sets: Vec<(&str, Value)> = vec![];
        if let Some(s) = patch.state {
            sets.push(("state", Value::Text(s.as_str().into())));
        }
        if let Some(v) = patch.provider {
            sets.push(("provider", Value::Text(v)));
        }
        if let Some(v) = patch.provider_ref {
            sets.push(("provider_ref", text(v)));
        }
        if let Some(v) = patch.attempts {
            sets.push(("attempts", Value::Integer(v.into())));
        }
        if let Some(v) = patch.launch_key {
            sets.push(("launch_key", Value::Text(v)));
        }
        if let Some(v) = patch.dispatched_at {
            sets.push(("dispatched_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.first_dispatched_at {
            sets.push(("first_dispatched_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.exit_code {
            sets.push(("exit_code", Value::Integer(v.into())));
        }
        if let Some(v) = patch.reason.clone() {
            sets.push(("reason", Value::Text(v)));
        }
        if let Some(v) = &patch.result {
            sets.push(("result", json_value(v)?));
        }
        if let Some(v) = patch.started_at {
            sets.push(("started_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.finished_at {
            sets.push(("finished_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.cancel_requested_by {
            sets.push(("cancel_requested_by", Value::Text(v)));
        }
        if let Some(v) = patch.log_tail {
            sets.push(("log_tail", Value::Text(v)));
        }
        if let Some(v) = patch.released {
            sets.push(("released", Value::Integer(v.into())));
            if v {
                // The workload is gone; nothing needs the job's secrets any more.
                sets.push(("secret_env", Value::Text(String::new())));
            }
        }
        if let Some(v) = &patch.excluded {
            sets.push(("excluded", json_value(v)?));
        }
        if let Some(v) = &patch.cost {
            sets.push(("cost", json_value(v)?));
        }
        if let Some(v) = &patch.steps {
            sets.push(("steps", json_value(v)?));
        }
        let sql = (!sets.is_empty()).then(|| {
            let clause: Vec<String> = sets
                .iter()
                .enumerate()
                .map(|(i, (col, _))| format!("{col} = ?{}", i + 2))
                .collect();
            format!(
                "UPDATE jobs SET {} WHERE id = ?1 RETURNING {JOB_COLUMNS}",
                clause.join(", ")
            )
        });
        Ok(PatchRow {
            sql,
            values: sets.into_iter().map(|(_, v)| v).collect(),
            state: patch.state,
            explicit_event: patch.event.is_some(),
            event: patch.event.or(patch.reason),
        })
    }
}

/// A value serialised as JSON text, for a column.
fn json_value<T: serde::Serialize>(v: &T) -> rusqlite::Result<Value> {
    serde_json::to_string(v).map(Value::Text).map_err(json_err)
}

fn update(
    conn: &Connection,
    id: Uuid,
    expect: &[JobState],
    patch: &PatchRow,
) -> rusqlite::Result<Option<RawRecord>> {
    let id = id.to_string();
    // The state alone decides; the whole row is read once, after the change.
    let current: Option<String> = conn
        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
        .query_row([&id], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        return Ok(None);
    };
    let current = JobState::parse(&current).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown state {current}").into(),
        )
    })?;
    if !expect.is_empty() && !expect.contains(&current) {
        return Ok(None);
    }
    let row = match &patch.sql {
        // A patch's shape repeats (a dispatch, a launch, an end): its statement is cached.
        Some(sql) => {
            let mut values: Vec<&dyn ToSql> = vec![&id];
            values.extend(patch.values.iter().map(|v| v as &dyn ToSql));
            conn.prepare_cached(sql)?
                .query_row(values.as_slice(), RawRecord::read)
                .optional()?
        }
        None => raw_record(conn, &id)?,
    };
    let state_changed = patch.state.is_some_and(|s| s != current);
    if state_changed || patch.explicit_event {
        let state = patch.state.unwrap_or(current);
        add_event(conn, &id, Utc::now(), state, patch.event.as_deref())?;
    }
    Ok(row)
}

fn list(conn: &Connection, tenant: &str, q: &ListQuery) -> rusqlite::Result<Vec<Job>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = ?1");
    let mut values: Vec<String> = vec![tenant.to_string()];
    if let Some(s) = q.state {
        values.push(s.as_str().into());
        sql += &format!(" AND state = ?{}", values.len());
    }
    if let Some(p) = &q.provider {
        values.push(p.clone());
        sql += &format!(" AND provider = ?{}", values.len());
    }
    // Matched through json_each, not a JSON path built from the key: a key may hold any
    // character, quotes and backslashes included.
    for (k, v) in &q.labels {
        values.push(k.clone());
        values.push(v.clone());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ?{} AND value = ?{})",
            values.len() - 1,
            values.len()
        );
    }
    for k in &q.label_keys {
        values.push(k.clone());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ?{})",
            values.len()
        );
    }
    // Compared as text, not with LIKE, whose `%` and `_` a prefix may hold.
    if let Some(prefix) = &q.name_prefix {
        values.push(prefix.clone());
        sql += &format!(
            " AND substr(json_extract(spec, '$.name'), 1, length(?{0})) = ?{0}",
            values.len()
        );
    }
    match q.has_exit_code {
        Some(true) => sql += " AND exit_code IS NOT NULL",
        Some(false) => sql += " AND exit_code IS NULL",
        None => {}
    }
    if let Some((prefix, starts)) = &q.reason_prefix {
        values.push(prefix.clone());
        let test = format!("substr(reason, 1, length(?{0})) = ?{0}", values.len());
        sql += &match starts {
            true => format!(" AND {test}"),
            false => format!(" AND (reason IS NULL OR NOT {test})"),
        };
    }
    if let Some(before) = q.before {
        values.push(before.to_string());
        sql += &format!(" AND id < ?{}", values.len());
    }
    sql += &format!(" ORDER BY id DESC LIMIT {}", q.limit);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), record)?;
    rows.map(|r| r.map(|rec| rec.job)).collect()
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn submit(&self, new: NewJob) -> StoreResult<Submitted> {
        // Sealed and serialised here, off the writer thread.
        let row = SubmitRow::of(new, &self.secrets).map_err(db)?;
        let secrets = self.secrets.clone();
        match self.write(move |conn| submit(conn, &row, &secrets)).await? {
            SubmitOutcome::Created(row) => {
                Ok(Submitted::Created(Box::new(row.parse().map_err(db)?)))
            }
            SubmitOutcome::Repeated(answer) => Ok(answer),
        }
    }

    /// A point read by primary key takes microseconds in WAL mode (readers never wait for
    /// the writer), less than handing it to a blocking thread and back: it runs in place.
    async fn get(&self, id: Uuid) -> StoreResult<Option<JobRecord>> {
        self.readers.with(|conn| get_record(conn, &id.to_string()))
    }

    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Vec<Job>> {
        let (tenant, query) = (tenant.to_string(), query.clone());
        self.read(move |conn| list(conn, &tenant, &query)).await
    }

    async fn changed_since(&self, tenant: &str, query: &ChangesQuery) -> StoreResult<ChangesPage> {
        let (tenant, query) = (tenant.to_string(), query.clone());
        self.read(move |conn| changes::changed_since(conn, &tenant, &query))
            .await
    }

    async fn events(&self, id: Uuid) -> StoreResult<Vec<Event>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, state, reason FROM events WHERE job_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([id.to_string()], |r| {
                let state: String = r.get(2)?;
                Ok(Event {
                    seq: r.get(0)?,
                    at: time(r.get(1)?).unwrap_or_default(),
                    state: JobState::parse(&state).unwrap_or(JobState::Failed),
                    reason: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn update(
        &self,
        id: Uuid,
        expect: &[JobState],
        patch: Patch,
    ) -> StoreResult<Option<JobRecord>> {
        let expect = expect.to_vec();
        // Built here, off the writer thread.
        let patch = PatchRow::of(patch).map_err(db)?;
        let row = self
            .write(move |conn| update(conn, id, &expect, &patch))
            .await?;
        row.map(RawRecord::parse).transpose().map_err(db)
    }

    async fn secrets(&self, id: Uuid) -> StoreResult<BTreeMap<String, String>> {
        let secrets = self.secrets.clone();
        self.read(move |conn| Ok(stored_secrets(conn, &id, &secrets)?.unwrap_or_default()))
            .await
    }

    async fn log_tail(&self, id: Uuid) -> StoreResult<Option<String>> {
        self.read(move |conn| {
            let tail: Option<Option<String>> = conn
                .prepare_cached("SELECT log_tail FROM jobs WHERE id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()?;
            Ok(tail.flatten())
        })
        .await
    }

    async fn unfinished(&self) -> StoreResult<Vec<JobRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE released = 0 ORDER BY id"
            ))?;
            let rows = stmt.query_map([], record)?;
            let all: Vec<JobRecord> = rows.collect::<rusqlite::Result<_>>()?;
            Ok(all
                .into_iter()
                .filter(|r| !r.job.terminal || r.job.provider_ref.is_some())
                .collect())
        })
        .await
    }

    async fn queued(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM jobs WHERE state = 'queued' AND released = 0 AND created_at < ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![ms(before), limit as i64], |r| {
                let id: String = r.get(0)?;
                Ok(id.parse::<Uuid>().ok())
            })?;
            Ok(rows.filter_map(|r| r.ok().flatten()).collect())
        })
        .await
    }

    async fn owned(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<Uuid>> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM jobs WHERE released = 0 AND id > ?1 \
                   AND (state NOT IN ('succeeded', 'failed', 'cancelled') OR provider_ref IS NOT NULL) \
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                let id: String = r.get(0)?;
                Ok(id.parse::<Uuid>().ok())
            })?;
            Ok(rows.filter_map(|r| r.ok().flatten()).collect())
        })
        .await
    }

    async fn purge(&self, finished_before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let before = ms(finished_before);
        self.write(move |conn| {
            let ids: Vec<String> = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE released = 1 AND finished_at < ?1 LIMIT ?2",
                )?
                .query_map(params![before, limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ids {
                conn.prepare_cached("DELETE FROM events WHERE job_id = ?1")?
                    .execute([id])?;
                conn.prepare_cached("DELETE FROM idempotency WHERE job_id = ?1")?
                    .execute([id])?;
                conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                    .execute([id])?;
            }
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn run_durations(
        &self,
        tenant: &str,
        dag_id: &str,
        task_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        let (tenant, dag_id, task_id) =
            (tenant.to_string(), dag_id.to_string(), task_id.to_string());
        self.read(move |conn| {
            // The expressions of the jobs_task_runs index, so that it is used.
            let mut stmt = conn.prepare_cached(
                "SELECT finished_at - started_at FROM jobs \
                 WHERE tenant = ?1 AND json_extract(labels, '$.dag_id') = ?2 \
                   AND json_extract(labels, '$.task_id') = ?3 AND state = 'succeeded' \
                   AND started_at IS NOT NULL AND finished_at IS NOT NULL \
                 ORDER BY finished_at DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![tenant, dag_id, task_id, limit as i64], |r| {
                r.get::<_, i64>(0)
            })?;
            rows.map(|ms| ms.map(|ms| (ms.max(0) as u64).div_ceil(1000)))
                .collect()
        })
        .await
    }

    async fn costs(&self, tenant: &str, query: &CostQuery) -> StoreResult<Vec<CostGroup>> {
        let (key, label) = match &query.group_by {
            CostGrouping::Provider => ("COALESCE(provider, '')", String::new()),
            CostGrouping::Label(k) => (
                "COALESCE((SELECT value FROM json_each(labels) WHERE key = ?4), '')",
                k.clone(),
            ),
        };
        let window = "tenant = ?1 AND finished_at >= ?2 AND finished_at < ?3 AND (?4 IS NOT NULL)";
        // A job's reference cost; one without a reference counts at what it cost.
        let reference = "COALESCE(json_extract(cost, '$.reference.usd'), json_extract(cost, '$.usd'), 0.0)";
        let sql = match &query.group_by {
            // Each attempt where it was spent: the earlier ones at their own providers, the
            // last at the job's.
            CostGrouping::Provider => format!(
                "SELECT k, SUM(n), SUM(usd), SUM(est), SUM(ref) FROM ( \
                    SELECT {key} AS k, 1 AS n, \
                        COALESCE(json_extract(cost, '$.usd'), 0.0) - COALESCE(( \
                            SELECT SUM(json_extract(e.value, '$.usd')) \
                            FROM json_each(jobs.cost, '$.earlier') AS e), 0.0) AS usd, \
                        COALESCE(json_extract(cost, '$.estimated_usd'), 0.0) AS est, \
                        {reference} AS ref \
                    FROM jobs WHERE {window} \
                    UNION ALL \
                    SELECT json_extract(e.value, '$.provider'), 0, json_extract(e.value, '$.usd'), 0.0, 0.0 \
                    FROM jobs, json_each(jobs.cost, '$.earlier') AS e WHERE {window} \
                 ) GROUP BY k ORDER BY k"
            ),
            CostGrouping::Label(_) => format!(
                "SELECT {key} AS k, COUNT(*), \
                    SUM(COALESCE(json_extract(cost, '$.usd'), 0.0)), \
                    SUM(COALESCE(json_extract(cost, '$.estimated_usd'), 0.0)), \
                    SUM({reference}) \
                 FROM jobs WHERE {window} \
                 GROUP BY k ORDER BY k"
            ),
        };
        let (tenant, since, until) = (tenant.to_string(), ms(query.since), ms(query.until));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![tenant, since, until, label], |r| {
                Ok(CostGroup::new(
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn counts(&self) -> StoreResult<Vec<(String, JobState, u64)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT COALESCE(provider, ''), state, COUNT(*) FROM jobs WHERE released = 0 GROUP BY 1, 2",
            )?;
            let rows = stmt.query_map([], |r| {
                let state: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    JobState::parse(&state).unwrap_or(JobState::Failed),
                    r.get(2)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    fn ledger(&self) -> &dyn crate::store::ledger::Ledger {
        self
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobSpec;

    fn test_box() -> SecretBox {
        SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
    }

    fn spec(image: &str) -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "image": image, "secret_env": {"TOKEN": "s3cret"}, "labels": {"dag_id": "etl", "env": "prod"}
        }))
        .unwrap()
    }

    fn new_job(tenant: &str, image: &str, key: Option<&str>) -> NewJob {
        NewJob {
            id: Uuid::now_v7(),
            tenant: tenant.into(),
            spec: spec(image),
            idempotency_key: key.map(String::from),
            created_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_version_1_database_gains_the_cost_column() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sqlite");
        let id = Uuid::now_v7();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, tenant, state, labels, spec, secret_env, created_at, finished_at) \
                 VALUES (?1, 'a', 'succeeded', '{}', ?2, '', 1, 2)",
                params![id.to_string(), serde_json::to_string(&spec("img").redacted()).unwrap()],
            )
            .unwrap();
        }
        for _ in 0..2 {
            let store = SqliteStore::open(&path, false, test_box()).unwrap();
            let got = store.get(id).await.unwrap().unwrap();
            assert_eq!(got.job.cost, None);
            drop(store);
            let conn = Connection::open(&path).unwrap();
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(version, VERSION);
        }
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        drop(conn);
        let refused = SqliteStore::open(&path, false, test_box()).err().unwrap();
        assert!(refused.to_string().contains("newer"), "{refused}");
    }

    /// Holds the writer inside a batch of its own until the sender is used, so that the
    /// writes sent meanwhile share the next batch.
    async fn hold_writer(
        store: &SqliteStore,
    ) -> (
        std::pin::Pin<Box<impl std::future::Future<Output = StoreResult<()>> + '_>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let mut holder = Box::pin(store.write(move |_| {
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok(())
        }));
        assert!(futures::poll!(&mut holder).is_pending());
        tokio::task::spawn_blocking(move || held_rx.recv().unwrap())
            .await
            .unwrap();
        (holder, go_tx)
    }

    #[tokio::test]
    async fn a_batch_whose_transaction_dies_keeps_none_of_its_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&tmp.path().join("db.sqlite"), false, test_box()).unwrap();
        // Three writes queue up behind the held writer, so that the three share a batch.
        let (holder, go_tx) = hold_writer(&store).await;
        let (a, b) = (new_job("a", "img", None), new_job("a", "img", None));
        let (a_id, b_id) = (a.id, b.id);
        let mut first = Box::pin(store.submit(a));
        // Ends the batch's transaction the way SQLite does on a full disk or an I/O error.
        let mut rollback = Box::pin(store.write(|conn| conn.execute_batch("ROLLBACK")));
        let mut second = Box::pin(store.submit(b));
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut rollback).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        go_tx.send(()).unwrap();
        holder.await.unwrap();
        assert!(first.await.is_err(), "told a rolled-back write it was kept");
        assert!(rollback.await.is_err());
        assert!(second.await.is_err(), "a write after the rollback was run");
        for id in [a_id, b_id] {
            assert_eq!(
                store.get(id).await.unwrap(),
                None,
                "a failed write was kept"
            );
        }
        // The writer goes on with the next batch.
        assert!(matches!(
            store.submit(new_job("a", "img", None)).await.unwrap(),
            Submitted::Created(_)
        ));
    }

    #[tokio::test]
    async fn a_failed_write_is_undone_alone_and_the_rest_of_its_batch_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&tmp.path().join("db.sqlite"), false, test_box()).unwrap();
        let (holder, go_tx) = hold_writer(&store).await;
        let (a, b) = (new_job("a", "img", None), new_job("a", "img", None));
        let (a_id, b_id) = (a.id, b.id);
        let mut first = Box::pin(store.submit(a));
        // Writes a row, then fails: what it wrote must not be kept.
        let mut failing = Box::pin(store.write(|conn| {
            conn.execute(
                "INSERT INTO events (job_id, at, state) VALUES ('nobody', 0, 'queued')",
                [],
            )?;
            conn.execute("INSERT INTO no_such_table VALUES (1)", [])
        }));
        let mut second = Box::pin(store.submit(b));
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut failing).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        go_tx.send(()).unwrap();
        holder.await.unwrap();
        assert!(failing.await.is_err());
        assert!(matches!(first.await.unwrap(), Submitted::Created(_)));
        assert!(matches!(second.await.unwrap(), Submitted::Created(_)));
        for id in [a_id, b_id] {
            assert!(
                store.get(id).await.unwrap().is_some(),
                "a good write was lost"
            );
            // Each job's first event, once: the writes run again were not kept twice.
            assert_eq!(store.events(id).await.unwrap().len(), 1);
        }
        let strays: i64 = store
            .read(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM events WHERE job_id = 'nobody'",
                    [],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(strays, 0, "the failed write's first row was kept");
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_refuses_to_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sqlite");
        let first = SqliteStore::open(&path, false, test_box()).unwrap();
        let second = SqliteStore::open(&path, false, test_box()).err().unwrap();
        assert!(
            second.to_string().contains("another offload gateway"),
            "{second}"
        );
        drop(first);
        SqliteStore::open(&path, false, test_box()).unwrap();
    }
}
