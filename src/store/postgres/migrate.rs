//! The schema's versions and how they are applied: each in one transaction, under an
//! advisory lock so that replicas starting together migrate once; expand, then contract,
//! so that two releases run side by side on one database (docs/deploying.md#upgrades).

use super::*;

/// One schema version: applied in one transaction, never edited once shipped.
///
/// Migrations expand, then contract (docs/deploying.md#upgrades), so that during a rolling
/// upgrade release N runs beside N+1 on one database: version N+1 only adds (tables,
/// nullable columns or ones with defaults, indexes), which N ignores, and what N reads is
/// dropped only in N+2, which no replica of N runs beside. A migration that cannot keep
/// this says `breaking: true`, and then code older than it refuses the database.
pub(super) struct Migration {
    pub(super) version: i32,
    pub(super) name: &'static str,
    pub(super) sql: &'static str,
    /// Whether code that knows only the version before this one cannot run on the schema
    /// once this is applied. Recorded in `offload_migrations`, where older code reads it.
    pub(super) breaking: bool,
}

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("migrations/0001_jobs.sql"),
        breaking: true,
    },
    Migration {
        version: 2,
        name: "cost",
        sql: include_str!("migrations/0002_cost.sql"),
        breaking: true,
    },
    Migration {
        version: 3,
        name: "task_runs",
        sql: include_str!("migrations/0003_task_runs.sql"),
        breaking: true,
    },
    Migration {
        version: 4,
        name: "replicas",
        sql: include_str!("migrations/0004_replicas.sql"),
        breaking: true,
    },
    Migration {
        version: 5,
        name: "retention",
        sql: include_str!("migrations/0005_retention.sql"),
        breaking: true,
    },
    Migration {
        version: 6,
        name: "list_by_state",
        sql: include_str!("migrations/0006_list_by_state.sql"),
        breaking: true,
    },
    Migration {
        version: 7,
        name: "cheaper_updates",
        sql: include_str!("migrations/0007_cheaper_updates.sql"),
        breaking: true,
    },
    Migration {
        version: 8,
        name: "notices_per_statement",
        sql: include_str!("migrations/0008_notices_per_statement.sql"),
        breaking: true,
    },
    Migration {
        version: 9,
        name: "task_runs_by_digest",
        sql: include_str!("migrations/0009_task_runs_by_digest.sql"),
        breaking: true,
    },
    Migration {
        version: 10,
        name: "replica_places",
        sql: include_str!("migrations/0010_replica_places.sql"),
        breaking: true,
    },
    Migration {
        version: 11,
        name: "first_dispatch",
        sql: include_str!("migrations/0011_first_dispatch.sql"),
        breaking: true,
    },
    Migration {
        version: 12,
        name: "budgets",
        sql: include_str!("migrations/0012_budgets.sql"),
        breaking: true,
    },
    Migration {
        version: 13,
        name: "steps",
        sql: include_str!("migrations/0013_steps.sql"),
        // A release without it would run a job of several steps as its last step alone.
        breaking: true,
    },
    Migration {
        version: 14,
        name: "charge_in_one_call",
        sql: include_str!("migrations/0014_charge_in_one_call.sql"),
        // Adds a function; version 13 charges as before, in the same rows.
        breaking: false,
    },
    Migration {
        version: 15,
        name: "settle_at_end",
        sql: include_str!("migrations/0015_settle_at_end.sql"),
        // Adds a trigger; version 14's rounds find nothing left to settle.
        breaking: false,
    },
];

/// The advisory lock that migrations run under ("offload" in ASCII, then 1).
pub(super) const MIGRATION_LOCK: i64 = 0x6f66_666c_6f61_6401;

/// Applies the schema versions the database lacks, under the migration lock, and returns
/// the names of those it applied. What `offload migrate` runs; [`PostgresStore::connect`]
/// runs it too.
pub async fn migrate(url: &str) -> StoreResult<Vec<String>> {
    migrate_with(&configure(url, &PostgresOptions::default())?).await
}

pub(super) async fn migrate_with(target: &Target) -> StoreResult<Vec<String>> {
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

pub(super) async fn apply_migrations(client: &mut tokio_postgres::Client) -> StoreResult<Vec<String>> {
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
