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
mod records;
mod schema;
mod writer;
mod writes;

use super::secrets::SecretBox;
use super::{
    ChangesPage, ChangesQuery, CostGrouping, CostQuery, JobRecord, ListQuery, NewJob, Patch, Store,
    StoreError, StoreResult, Submitted,
};
use crate::model::{CostGroup, Event, Job, JobState};
use checkpoints::{Checkpoints, Committed};
use records::{get_record, list, ms, record, time, RawRecord, JOB_COLUMNS};
pub(crate) use schema::VERSION;
use writer::{write_loop, Op, Write};
use writes::{stored_secrets, submit, update, PatchRow, SubmitOutcome, SubmitRow};

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
        schema::migrate(&conn, &path_str)?;
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
        let reference =
            "COALESCE(json_extract(cost, '$.reference.usd'), json_extract(cost, '$.usd'), 0.0)";
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
    use super::schema::SCHEMA;
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
