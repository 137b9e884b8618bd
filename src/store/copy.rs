//! `offload store copy`: moves a gateway's history from its SQLite file into an empty
//! PostgreSQL database, so that a user who outgrows one machine (and moves to several
//! replicas on PostgreSQL) keeps every job, its events and its idempotency key.
//!
//! - The SQLite file is opened read-only, with rusqlite directly (not through
//!   [`SqliteStore`](super::sqlite::SqliteStore), which takes the gateway's lock file and
//!   starts a writer). It must be at the newest schema version this offload knows, and no
//!   gateway may be running on it: its lock file is held (shared) for the whole copy, so
//!   that no gateway starts on it meanwhile. Everything is read in one read transaction,
//!   a consistent snapshot.
//! - The target is migrated first ([`migrate`]), then written in ONE transaction: all of
//!   the history or none of it. The target must have no jobs; its `jobs` and `events`
//!   tables are locked (`EXCLUSIVE`: others may read, not write) before that is checked,
//!   so that no gateway slips a job in between.
//! - Rows go in batches (`unnest` of arrays, as the PostgreSQL store's submits do), read
//!   from SQLite on a blocking thread while the previous batch is written.
//! - Jobs keep their ids, states, times (SQLite keeps milliseconds), attempts, results,
//!   costs, log tails and everything else a `JobRecord` holds. Their `owner` is left NULL:
//!   no replica owns them, so the first live gateway on the target adopts those it still
//!   has work for. SQLite's `idempotency (tenant, key, job_id)` rows become the
//!   `jobs.idempotency_key` column.
//! - Events keep their `seq` (`OVERRIDING SYSTEM VALUE`), and the identity sequence is
//!   then set past the largest, so that new events come after them. Keeping the numbers,
//!   rather than numbering anew, keeps a job's history exactly as it was served (a client
//!   may hold a seq as a cursor), and does not depend on the target's sequence being
//!   untouched (a failed earlier attempt, rolled back, still used up numbers).
//! - Text PostgreSQL cannot hold is stored as the PostgreSQL store stores it: a NUL
//!   character becomes U+FFFD in `text` and `jsonb` columns (tenants, keys, labels,
//!   reasons, log tails, ...); the spec and the result are `json`, copied as written.
//! - `secret_env` is copied as it is: both stores seal it with the same
//!   [`SecretBox`](super::secrets::SecretBox), bound to the job's id, in the same text
//!   format (`''` for none or deleted; a `{...}` JSON object written in the clear by an
//!   offload from before sealing, which stays so). **The gateways on the target must use
//!   the SQLite gateway's key** (`store.secret_key`, or the key file beside the database,
//!   `offload.db.key` by default, which is what to put in `store.secret_key`), or the
//!   copied jobs' secrets will not open.
//! - Rows SQLite holds that PostgreSQL cannot (an idempotency key or an event of a job
//!   that is not in the file; the SQLite store writes none) are left out, with a warning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::{Statement, Transaction};
use uuid::Uuid;

use super::postgres::{connect_one, migrate, pg};
use crate::model::JobState;

/// The SQLite schema version this copies: the newest the SQLite store writes.
const SQLITE_VERSION: i64 = super::sqlite::VERSION;

/// Jobs per INSERT.
const JOB_BATCH: usize = 500;
/// Events per INSERT (rows of five small columns).
const EVENT_BATCH: usize = 2000;

/// What a copy moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub jobs: u64,
    pub events: u64,
    pub idempotency_keys: u64,
}

/// Copies every job, event and idempotency key of the SQLite store at `from` into the
/// PostgreSQL database at `to_url` (migrated first), in one transaction; refuses a target
/// that already has jobs, a SQLite file of another schema version, and a file a running
/// gateway holds. The gateways on the target must use the same `store.secret_key` as the
/// SQLite gateway did, for the sealed `secret_env` of the jobs is copied as it is.
pub async fn copy_sqlite_to_postgres(from: &Path, to_url: &str) -> anyhow::Result<Copied> {
    let path = from.to_path_buf();
    let Source { conn, lock: _lock } = tokio::task::spawn_blocking(move || open_source(&path))
        .await
        .context("opening the SQLite file")??;

    migrate(to_url)
        .await
        .context("applying the PostgreSQL store's migrations to the target")?;
    let mut target = super::postgres::configure(to_url, &Default::default())?;
    if target.config.get_application_name() == Some("offload") {
        target.config.application_name("offload store copy");
    }
    let (mut client, driver) = connect_one(&target, "the copy").await?;
    // One transaction of large statements: no statement or lock timeout.
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await
        .context("preparing the copy's session")?;

    let tx = client
        .transaction()
        .await
        .map_err(|e| pg("beginning the copy's transaction", e))?;
    tx.batch_execute(
        "SET LOCAL lock_timeout = '60s';
         LOCK TABLE jobs, events IN EXCLUSIVE MODE;
         SET LOCAL lock_timeout = 0;",
    )
    .await
    .map_err(|e| {
        pg(
            "locking the target's jobs and events (is a gateway writing to it?)",
            e,
        )
    })?;
    let has_jobs: bool = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM jobs)", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| pg("looking for jobs in the target", e))?;
    if has_jobs {
        bail!("the target already has jobs; copy into an empty database");
    }
    let jobs_stmt = tx
        .prepare(INSERT_JOBS)
        .await
        .map_err(|e| pg("preparing the insert of jobs", e))?;
    let events_stmt = tx
        .prepare(INSERT_EVENTS)
        .await
        .map_err(|e| pg("preparing the insert of events", e))?;

    // Read on a blocking thread, a few batches ahead of the writes.
    let (sender, mut batches) = tokio::sync::mpsc::channel::<Batch>(4);
    let shown = from.display().to_string();
    let reader = tokio::task::spawn_blocking(move || read_source(conn, &shown, sender));
    let mut copied = Copied::default();
    let mut max_seq: Option<i64> = None;
    let written = async {
        while let Some(batch) = batches.recv().await {
            match batch {
                Batch::Jobs(rows) => {
                    let keys = rows.iter().filter(|r| r.idempotency_key.is_some()).count();
                    let before = copied.jobs;
                    copied.jobs += insert_jobs(&tx, &jobs_stmt, rows).await?;
                    copied.idempotency_keys += keys as u64;
                    if copied.jobs / 10_000 > before / 10_000 {
                        tracing::info!(jobs = copied.jobs, "copying jobs");
                    }
                }
                Batch::Events(rows) => {
                    if let Some(last) = rows.iter().map(|r| r.seq).max() {
                        max_seq = Some(max_seq.map_or(last, |m| m.max(last)));
                    }
                    copied.events += insert_events(&tx, &events_stmt, rows).await?;
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    // Should a write have failed, this stops the reader (its next send fails).
    drop(batches);
    let read = reader.await.context("reading the SQLite file")?;
    written?;
    // The stream of batches ends when the reader returns, having read everything or not.
    let skipped = read?;

    if let Some(max) = max_seq {
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'seq')::regclass, $1::int8)",
            &[&max],
        )
        .await
        .map_err(|e| pg("moving the events' sequence past the copied events", e))?;
    }
    tx.commit()
        .await
        .map_err(|e| pg("committing the copy", e))?;
    drop(client);
    let _ = driver.await;
    if skipped.keys > 0 || skipped.events > 0 {
        tracing::warn!(
            idempotency_keys = skipped.keys,
            events = skipped.events,
            "left out idempotency keys and events of jobs that are not in the SQLite file"
        );
    }
    tracing::info!(
        jobs = copied.jobs,
        events = copied.events,
        idempotency_keys = copied.idempotency_keys,
        "copied the SQLite store into PostgreSQL"
    );
    Ok(copied)
}

/// The SQLite file, open read-only, and the gateway's lock file held while it is copied.
struct Source {
    conn: Connection,
    lock: Option<std::fs::File>,
}

fn open_source(path: &Path) -> anyhow::Result<Source> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => bail!("{shown} is not a file (the SQLite store to copy from)"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{shown}: no such file (the SQLite store to copy from, store.path of its gateway)"
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    }
    let lock = gateway_lock(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {shown} read-only"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .with_context(|| format!("opening {shown}"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .with_context(|| {
            format!("reading the schema version of {shown} (is it an offload SQLite store?)")
        })?;
    match version {
        SQLITE_VERSION => {}
        0 => bail!("{shown} is not an offload SQLite store (it has no offload schema)"),
        v if v > SQLITE_VERSION => bail!(
            "{shown} has SQLite schema version {v}, newer than this offload knows ({SQLITE_VERSION}); copy it with a newer offload"
        ),
        v => bail!(
            "{shown} has SQLite schema version {v}, older than this offload's ({SQLITE_VERSION}); start this offload's gateway on it once (it migrates the file), stop it, and copy again"
        ),
    }
    Ok(Source { conn, lock })
}

/// Takes the lock file the gateway keeps beside its database (`offload.db.lock`), shared:
/// refused while a gateway runs on the file, and no gateway starts on it while held. `None`
/// when there is no lock file (no gateway ever ran on the file).
fn gateway_lock(path: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = match std::fs::File::open(&lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", lock_path.display())),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by a running offload gateway (it holds {}); stop the gateway first, so that nothing changes the file while it is copied",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

/// A job as it goes into PostgreSQL: every value ready for the SQL.
struct JobRow {
    id: Uuid,
    tenant: String,
    state: String,
    provider: Option<String>,
    provider_ref: Option<String>,
    attempts: i32,
    launch_key: Option<String>,
    dispatched_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    reason: Option<String>,
    /// JSON text, for a `json` column (kept as written).
    result: Option<String>,
    /// JSON text, for a `json` column (kept as written).
    spec: String,
    /// A JSON object of strings without NUL characters, for the `jsonb` column.
    labels: String,
    secret_env: String,
    idempotency_key: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    cancel_requested_by: Option<String>,
    log_tail: Option<String>,
    released: bool,
    /// A JSON array of strings, turned into `text[]` by the SQL (one array per row
    /// cannot go through `unnest`, which flattens arrays of arrays).
    excluded: String,
    /// JSON text without NUL characters, for the `jsonb` column.
    cost: Option<String>,
    first_dispatched_at: Option<DateTime<Utc>>,
    /// How each step of a job of several steps went: JSON text without NUL characters.
    steps: Option<String>,
}

struct EventRow {
    seq: i64,
    job_id: Uuid,
    at: DateTime<Utc>,
    state: String,
    reason: Option<String>,
}

enum Batch {
    Jobs(Vec<JobRow>),
    Events(Vec<EventRow>),
}

/// What the SQLite file holds that PostgreSQL cannot: rows of jobs not in the file.
struct Skipped {
    keys: usize,
    events: usize,
}

const SELECT_JOBS: &str =
    "SELECT id, tenant, state, provider, provider_ref, attempts, launch_key, \
    dispatched_at, exit_code, reason, result, labels, spec, secret_env, created_at, started_at, \
    finished_at, cancel_requested_by, log_tail, released, excluded, cost, first_dispatched_at, \
    steps FROM jobs ORDER BY id";

const SELECT_EVENTS: &str = "SELECT seq, job_id, at, state, reason FROM events ORDER BY seq";

/// Reads the whole file in one read transaction (one snapshot) and hands it on in batches,
/// jobs first (events refer to them). Stops with an error should the receiver be gone.
fn read_source(
    mut conn: Connection,
    shown: &str,
    out: tokio::sync::mpsc::Sender<Batch>,
) -> anyhow::Result<Skipped> {
    let tx = conn
        .transaction()
        .with_context(|| format!("beginning a read of {shown}"))?;
    let read = |what: &str| format!("reading {what} from {shown}");
    let send = |batch: Batch| {
        out.blocking_send(batch)
            .map_err(|_| anyhow!("the copy stopped before {shown} was read to the end"))
    };

    // (tenant, job id) -> key. Loaded whole: the table has no index on job_id.
    let mut keys: HashMap<(String, String), String> = HashMap::new();
    {
        let mut stmt = tx
            .prepare("SELECT tenant, key, job_id FROM idempotency")
            .with_context(|| read("idempotency keys"))?;
        let mut rows = stmt.query([]).with_context(|| read("idempotency keys"))?;
        while let Some(row) = rows.next().with_context(|| read("idempotency keys"))? {
            let (tenant, key, job_id): (String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            if let Some(other) = keys.insert((tenant.clone(), job_id.clone()), key.clone()) {
                bail!(
                    "job {job_id} of tenant {tenant:?} has two idempotency keys ({other:?} and {key:?}) in {shown}; PostgreSQL keeps one per job"
                );
            }
        }
    }

    let mut job_ids: HashSet<String> = HashSet::new();
    {
        let mut stmt = tx.prepare(SELECT_JOBS).with_context(|| read("jobs"))?;
        let mut rows = stmt.query([]).with_context(|| read("jobs"))?;
        let mut batch = Vec::with_capacity(JOB_BATCH);
        while let Some(row) = rows.next().with_context(|| read("jobs"))? {
            let id_text: String = row.get(0)?;
            let job = job_row(row, &id_text, &mut keys)
                .with_context(|| format!("job {id_text} in {shown}"))?;
            job_ids.insert(id_text);
            batch.push(job);
            if batch.len() == JOB_BATCH {
                send(Batch::Jobs(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(JOB_BATCH),
                )))?;
            }
        }
        if !batch.is_empty() {
            send(Batch::Jobs(batch))?;
        }
    }

    let mut skipped_events = 0;
    {
        let mut stmt = tx.prepare(SELECT_EVENTS).with_context(|| read("events"))?;
        let mut rows = stmt.query([]).with_context(|| read("events"))?;
        let mut batch = Vec::with_capacity(EVENT_BATCH);
        while let Some(row) = rows.next().with_context(|| read("events"))? {
            let seq: i64 = row.get(0)?;
            let job_id: String = row.get(1)?;
            if !job_ids.contains(&job_id) {
                skipped_events += 1;
                continue;
            }
            let event = event_row(row, seq, &job_id)
                .with_context(|| format!("event {seq} (of job {job_id}) in {shown}"))?;
            batch.push(event);
            if batch.len() == EVENT_BATCH {
                send(Batch::Events(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(EVENT_BATCH),
                )))?;
            }
        }
        if !batch.is_empty() {
            send(Batch::Events(batch))?;
        }
    }
    Ok(Skipped {
        // Keys whose job was not found took no job row.
        keys: keys.len(),
        events: skipped_events,
    })
}

/// A job from a row of [`SELECT_JOBS`]; takes its idempotency key out of `keys`.
fn job_row(
    row: &rusqlite::Row,
    id_text: &str,
    keys: &mut HashMap<(String, String), String>,
) -> anyhow::Result<JobRow> {
    let id: Uuid = id_text
        .parse()
        .map_err(|e| anyhow!("the id is not a UUID: {e}"))?;
    let tenant: String = row.get(1)?;
    let state: String = row.get(2)?;
    if JobState::parse(&state).is_none() {
        bail!("unknown state {state:?}");
    }
    let attempts: i64 = row.get(5)?;
    let exit_code: Option<i64> = row.get(8)?;
    let result: Option<String> = row.get(10)?;
    if let Some(result) = &result {
        json_syntax("result", result)?;
    }
    let labels: String = row.get(11)?;
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&labels).context("its labels are not a JSON object of strings")?;
    let labels: BTreeMap<String, String> = labels
        .into_iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect();
    let spec: String = row.get(12)?;
    json_syntax("spec", &spec)?;
    let excluded: String = row.get(20)?;
    let excluded: Vec<String> = serde_json::from_str(&excluded)
        .context("its excluded providers are not a JSON array of strings")?;
    let excluded: Vec<String> = excluded.into_iter().map(text).collect();
    let cost: Option<String> = row.get(21)?;
    let cost = cost
        .map(|c| {
            serde_json::from_str::<serde_json::Value>(&c)
                .context("its cost is not JSON")
                .map(|v| scrub(v).to_string())
        })
        .transpose()?;
    let steps: Option<String> = row.get(23)?;
    let steps = steps
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(&s)
                .context("its steps are not JSON")
                .map(|v| scrub(v).to_string())
        })
        .transpose()?;
    let key = keys.remove(&(tenant.clone(), id_text.to_string()));
    Ok(JobRow {
        id,
        tenant: text(tenant),
        state,
        provider: row.get::<_, Option<String>>(3)?.map(text),
        provider_ref: row.get::<_, Option<String>>(4)?.map(text),
        attempts: i32::try_from(attempts)
            .map_err(|_| anyhow!("its attempts ({attempts}) do not fit an integer column"))?,
        launch_key: row.get::<_, Option<String>>(6)?.map(text),
        dispatched_at: row.get::<_, Option<i64>>(7)?.and_then(time),
        exit_code: exit_code
            .map(i32::try_from)
            .transpose()
            .map_err(|_| anyhow!("its exit code does not fit an integer column"))?,
        reason: row.get::<_, Option<String>>(9)?.map(text),
        result,
        spec,
        labels: serde_json::to_string(&labels)?,
        secret_env: row.get(13)?,
        idempotency_key: key.map(text),
        // As the SQLite store reads it.
        created_at: time(row.get(14)?).unwrap_or_default(),
        started_at: row.get::<_, Option<i64>>(15)?.and_then(time),
        finished_at: row.get::<_, Option<i64>>(16)?.and_then(time),
        cancel_requested_by: row.get::<_, Option<String>>(17)?.map(text),
        log_tail: row.get::<_, Option<String>>(18)?.map(text),
        released: row.get(19)?,
        excluded: serde_json::to_string(&excluded)?,
        cost,
        first_dispatched_at: row.get::<_, Option<i64>>(22)?.and_then(time),
        steps,
    })
}

/// An event from a row of [`SELECT_EVENTS`].
fn event_row(row: &rusqlite::Row, seq: i64, job_id: &str) -> anyhow::Result<EventRow> {
    let state: String = row.get(3)?;
    if JobState::parse(&state).is_none() {
        bail!("unknown state {state:?}");
    }
    Ok(EventRow {
        seq,
        job_id: job_id
            .parse()
            .map_err(|e| anyhow!("the job id is not a UUID: {e}"))?,
        // As the SQLite store reads it.
        at: time(row.get(2)?).unwrap_or_default(),
        state,
        reason: row.get::<_, Option<String>>(4)?.map(text),
    })
}

/// Whether `value` is JSON at all, for a `json` column (which checks only that).
fn json_syntax(what: &str, value: &str) -> anyhow::Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(drop)
        .with_context(|| format!("its {what} is not JSON"))
}

/// Milliseconds since the epoch, as the SQLite store reads them.
fn time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// Free text as PostgreSQL can hold it: NUL characters become U+FFFD, as the PostgreSQL
/// store's `text()` does.
fn text(s: String) -> String {
    match s.contains('\0') {
        true => s.replace('\0', "\u{FFFD}"),
        false => s,
    }
}

/// A JSON value as `jsonb` can hold it: [`text`] on every string and key.
fn scrub(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (text(k), scrub(v))).collect())
        }
        other => other,
    }
}

/// A batch of jobs in one statement. `owner` is not named: NULL, no replica owns them.
const INSERT_JOBS: &str = "INSERT INTO jobs (id, tenant, state, provider, provider_ref, attempts, \
        launch_key, dispatched_at, exit_code, reason, result, spec, labels, secret_env, \
        idempotency_key, created_at, started_at, finished_at, cancel_requested_by, log_tail, \
        released, excluded, cost, first_dispatched_at, steps)
    SELECT input.id, input.tenant, input.state, input.provider, input.provider_ref, input.attempts,
        input.launch_key, input.dispatched_at, input.exit_code, input.reason, input.result::json,
        input.spec::json, input.labels::jsonb, input.secret_env, input.idempotency_key,
        input.created_at, input.started_at, input.finished_at, input.cancel_requested_by,
        input.log_tail, input.released,
        ARRAY(SELECT x.elem FROM jsonb_array_elements_text(input.excluded_json::jsonb)
                WITH ORDINALITY AS x (elem, pos) ORDER BY x.pos),
        input.cost::jsonb, input.first_dispatched_at, input.steps::jsonb
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
            $7::text[], $8::timestamptz[], $9::int4[], $10::text[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::timestamptz[], $17::timestamptz[],
            $18::timestamptz[], $19::text[], $20::text[], $21::bool[], $22::text[], $23::text[],
            $24::timestamptz[], $25::text[])
        WITH ORDINALITY AS input (id, tenant, state, provider, provider_ref, attempts,
            launch_key, dispatched_at, exit_code, reason, result, spec, labels, secret_env,
            idempotency_key, created_at, started_at, finished_at, cancel_requested_by, log_tail,
            released, excluded_json, cost, first_dispatched_at, steps, n)
    ORDER BY input.n";

/// A batch of events in one statement, keeping their numbers.
const INSERT_EVENTS: &str = "INSERT INTO events (seq, job_id, at, state, reason)
    OVERRIDING SYSTEM VALUE
    SELECT input.seq, input.job_id, input.at, input.state, input.reason
    FROM unnest($1::int8[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[])
        AS input (seq, job_id, at, state, reason)
    ORDER BY input.seq";

async fn insert_jobs(
    tx: &Transaction<'_>,
    stmt: &Statement,
    rows: Vec<JobRow>,
) -> anyhow::Result<u64> {
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut providers = Vec::with_capacity(n);
    let mut provider_refs = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut launch_keys = Vec::with_capacity(n);
    let mut dispatched = Vec::with_capacity(n);
    let mut exit_codes = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut specs = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut secrets = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    let mut cancellers = Vec::with_capacity(n);
    let mut log_tails = Vec::with_capacity(n);
    let mut released = Vec::with_capacity(n);
    let mut excluded = Vec::with_capacity(n);
    let mut costs = Vec::with_capacity(n);
    let mut first_dispatched = Vec::with_capacity(n);
    let mut steps = Vec::with_capacity(n);
    for row in rows {
        ids.push(row.id);
        tenants.push(row.tenant);
        states.push(row.state);
        providers.push(row.provider);
        provider_refs.push(row.provider_ref);
        attempts.push(row.attempts);
        launch_keys.push(row.launch_key);
        dispatched.push(row.dispatched_at);
        exit_codes.push(row.exit_code);
        reasons.push(row.reason);
        results.push(row.result);
        specs.push(row.spec);
        labels.push(row.labels);
        secrets.push(row.secret_env);
        keys.push(row.idempotency_key);
        created.push(row.created_at);
        started.push(row.started_at);
        finished.push(row.finished_at);
        cancellers.push(row.cancel_requested_by);
        log_tails.push(row.log_tail);
        released.push(row.released);
        excluded.push(row.excluded);
        costs.push(row.cost);
        first_dispatched.push(row.first_dispatched_at);
        steps.push(row.steps);
    }
    let inserted = tx
        .execute(
            stmt,
            &[
                &ids,
                &tenants,
                &states,
                &providers,
                &provider_refs,
                &attempts,
                &launch_keys,
                &dispatched,
                &exit_codes,
                &reasons,
                &results,
                &specs,
                &labels,
                &secrets,
                &keys,
                &created,
                &started,
                &finished,
                &cancellers,
                &log_tails,
                &released,
                &excluded,
                &costs,
                &first_dispatched,
                &steps,
            ],
        )
        .await
        .map_err(|e| pg("inserting jobs", e))?;
    if inserted != n as u64 {
        bail!("inserted {inserted} of a batch of {n} jobs");
    }
    Ok(inserted)
}

async fn insert_events(
    tx: &Transaction<'_>,
    stmt: &Statement,
    rows: Vec<EventRow>,
) -> anyhow::Result<u64> {
    let n = rows.len();
    let mut seqs = Vec::with_capacity(n);
    let mut job_ids = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    for row in rows {
        seqs.push(row.seq);
        job_ids.push(row.job_id);
        ats.push(row.at);
        states.push(row.state);
        reasons.push(row.reason);
    }
    let inserted = tx
        .execute(stmt, &[&seqs, &job_ids, &ats, &states, &reasons])
        .await
        .map_err(|e| pg("inserting events", e))?;
    if inserted != n as u64 {
        bail!("inserted {inserted} of a batch of {n} events");
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_become_replacement_characters_in_jsonb() {
        let v = serde_json::json!({"a\0": ["x\0y", 1, {"k": "\0"}], "n": null});
        assert_eq!(
            scrub(v),
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", 1, {"k": "\u{FFFD}"}], "n": null})
        );
        assert_eq!(text("plain".into()), "plain");
    }
}
