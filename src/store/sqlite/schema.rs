//! The SQLite store's schema and its migrations, one per version (`PRAGMA user_version`),
//! applied in order when a store opens a file an older offload wrote.

use super::*;

pub(super) const SCHEMA: &str = r#"
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

/// Each schema version after the first, with what brings a file of the version before to
/// it, in order.
const MIGRATIONS: [(i64, &str); 8] = [
    (2, MIGRATION_2),
    (3, MIGRATION_3),
    (4, MIGRATION_4),
    (5, MIGRATION_5),
    (6, MIGRATION_6),
    (7, ledger::MIGRATION_7),
    (8, MIGRATION_8),
    (9, ledger::MIGRATION_9),
];

/// The schema version this code writes: the last migration's.
pub(crate) const VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the database at `path` (as the log names it) to this offload's schema version,
/// refusing one a newer offload wrote.
pub(super) fn migrate(conn: &Connection, path_str: &str) -> StoreResult<()> {
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
    for (to, sql) in MIGRATIONS {
        if version < to {
            conn.execute_batch(sql).map_err(db)?;
        }
    }
    Ok(())
}
