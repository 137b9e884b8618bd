//! The budgets' ledger on SQLite ([`crate::store::ledger`]): charges and settlements are
//! writes of the one writer thread, so a charge's check and its increments are one step
//! that no other write comes between.

use rusqlite::{params, params_from_iter, Connection, ToSql};
use uuid::Uuid;

use super::records::{parse_json, time};
use super::{db, SqliteStore};
use crate::model::budget::{Budget, BudgetSource};
use crate::model::JobCost;
use crate::store::ledger::{Charge, Charged, Ledger, LiveCharge, Spend};
use crate::store::StoreResult;

/// Version 7: budgets, their spend per period, and the charges of jobs not yet settled.
pub(super) const MIGRATION_7: &str = r#"
BEGIN;
CREATE TABLE IF NOT EXISTS budgets (
    id TEXT PRIMARY KEY,
    budget TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL,
    period TEXT NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    committed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, period)
);
CREATE TABLE IF NOT EXISTS budget_charges (
    job_id TEXT NOT NULL,
    budget TEXT NOT NULL,
    period TEXT NOT NULL,
    micros INTEGER NOT NULL,
    PRIMARY KEY (job_id, budget, period)
);
PRAGMA user_version = 7;
COMMIT;
"#;

/// Version 9: a job's charges are settled by the write that ends it (a trigger, in that
/// write's transaction): its cost is spent in each period it was charged to, its estimate
/// no longer committed, its charges gone. Before, each budgets round looked for ended jobs
/// among every live charge, which cost a scan of them all each second.
pub(super) const MIGRATION_9: &str = r#"
BEGIN;
CREATE TRIGGER IF NOT EXISTS jobs_settle_charges AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('succeeded', 'failed', 'cancelled')
    AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled')
BEGIN
    UPDATE budget_spend
        SET spent = spent + CAST(round(COALESCE(json_extract(NEW.cost, '$.usd'), 0) * 1000000) AS INTEGER),
            committed = committed - c.micros
        FROM budget_charges c
        WHERE c.job_id = NEW.id AND c.budget = budget_spend.budget AND c.period = budget_spend.period;
    DELETE FROM budget_charges WHERE job_id = NEW.id;
END;
PRAGMA user_version = 9;
COMMIT;
"#;

/// The states in which a job's charges are settled.
const ENDED: &str = "('succeeded', 'failed', 'cancelled')";

/// Deletes one of a job's charges.
const FORGET_CHARGE: &str =
    "DELETE FROM budget_charges WHERE job_id = ?1 AND budget = ?2 AND period = ?3";

/// Charges `micros` to each of `charges`, all or none, in two statements: the job's charges
/// are recorded first (none when it was charged before: a dispatch again after a restart
/// changes nothing), then every period is raised and its figures read back at once.
/// Should one go past its limit, the raises and the records are taken back (the rare case)
/// and nothing is charged. (It took five statements for a job under two budgets: a check,
/// then one per period and one per record.)
fn charge(
    conn: &Connection,
    job: &str,
    micros: i64,
    charges: &[Charge],
) -> rusqlite::Result<Charged> {
    if charges.is_empty() {
        return Ok(Charged::Admitted(vec![]));
    }
    let rows = |n: usize, row: &str| vec![row; n].join(", ");
    let recorded: Vec<(String, String)> = conn
        .prepare_cached(&format!(
            "INSERT INTO budget_charges (job_id, budget, period, micros) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING budget, period",
            rows(charges.len(), "(?, ?, ?, ?)")
        ))?
        .query_map(
            params_from_iter(charges.iter().flat_map(|c| -> [&dyn ToSql; 4] {
                [&job, &c.budget, &c.period, &micros]
            })),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    if recorded.len() < charges.len() {
        // Charged before: what this statement added (for a budget made since) goes again.
        let mut delete = conn.prepare_cached(FORGET_CHARGE)?;
        for (budget, period) in &recorded {
            delete.execute(params![job, budget, period])?;
        }
        return Ok(Charged::Admitted(vec![]));
    }
    let mut after: Vec<Spend> = conn
        .prepare_cached(&format!(
            "INSERT INTO budget_spend (budget, period, committed) VALUES {} \
             ON CONFLICT (budget, period) DO UPDATE SET committed = committed + excluded.committed \
             RETURNING budget, period, spent, committed",
            rows(charges.len(), "(?, ?, ?)")
        ))?
        .query_map(
            params_from_iter(charges.iter().flat_map(|c| -> [&dyn ToSql; 3] {
                [&c.budget, &c.period, &micros]
            })),
            |r| Ok(Spend { budget: r.get(0)?, period: r.get(1)?, spent: r.get(2)?, committed: r.get(3)? }),
        )?
        .collect::<rusqlite::Result<_>>()?;
    // RETURNING's order is SQLite's: the rows are put in the charges' order.
    let place = |row: &Spend| charges.iter().position(|c| c.budget == row.budget && c.period == row.period);
    after.sort_by_key(place);
    let over = charges
        .iter()
        .zip(&after)
        .find(|(c, row)| row.spent + row.committed > c.limit)
        .map(|(_, row)| row);
    let Some(over) = over else {
        return Ok(Charged::Admitted(after));
    };
    let mut undo = conn.prepare_cached(
        "UPDATE budget_spend SET committed = committed - ?3 WHERE budget = ?1 AND period = ?2",
    )?;
    let mut forget = conn.prepare_cached(FORGET_CHARGE)?;
    for c in charges {
        undo.execute(params![c.budget, c.period, micros])?;
        forget.execute(params![job, c.budget, c.period])?;
    }
    Ok(Charged::Over(Spend { committed: over.committed - micros, ..over.clone() }))
}

/// The charges of ended jobs (or of jobs no longer kept), with what each job cost.
const ENDED_CHARGES: &str = "SELECT c.job_id, c.budget, c.period, c.micros, \
     CAST(round(COALESCE(json_extract(j.cost, '$.usd'), 0) * 1000000) AS INTEGER) \
     FROM budget_charges c LEFT JOIN jobs j ON j.id = c.job_id \
     WHERE j.id IS NULL OR j.state IN ";

fn settle(conn: &Connection, limit: usize) -> rusqlite::Result<usize> {
    let ended: Vec<(String, String, String, i64, i64)> = conn
        .prepare_cached(&format!("{ENDED_CHARGES}{ENDED} LIMIT ?1"))?
        .query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (job, budget, period, micros, cost) in &ended {
        conn.prepare_cached(FORGET_CHARGE)?
            .execute(params![job, budget, period])?;
        conn.prepare_cached(
            "UPDATE budget_spend SET spent = spent + ?3, committed = committed - ?4 \
             WHERE budget = ?1 AND period = ?2",
        )?
        .execute(params![budget, period, cost, micros])?;
    }
    Ok(ended.len())
}

#[async_trait::async_trait]
impl Ledger for SqliteStore {
    async fn budgets(&self) -> StoreResult<Vec<(Budget, BudgetSource)>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT budget, source FROM budgets ORDER BY id")?
                .query_map([], |r| {
                    let budget: Budget = parse_json(0, &r.get::<_, String>(0)?)?;
                    let source = match r.get::<_, String>(1)?.as_str() {
                        "config" => BudgetSource::Config,
                        _ => BudgetSource::Api,
                    };
                    Ok((budget, source))
                })?
                .collect()
        })
        .await
    }

    async fn put_budget(&self, budget: &Budget, source: BudgetSource) -> StoreResult<()> {
        let (id, text) = (
            budget.id(),
            serde_json::to_string(budget)
                .map_err(|e| crate::store::StoreError::Refused(e.to_string()))?,
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO budgets (id, budget, source) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET budget = excluded.budget, source = excluded.source",
            )?
            .execute(params![id, text, source.as_str()])
            .map(|_| ())
        })
        .await
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM budgets WHERE id = ?1")?
                .execute([&id])
                .map(|n| n > 0)
        })
        .await
    }

    async fn spend(&self, periods: &[String]) -> StoreResult<Vec<Spend>> {
        let periods = periods.to_vec();
        self.read(move |conn| {
            let marks = vec!["?"; periods.len()].join(", ");
            conn.prepare(&format!(
                "SELECT budget, period, spent, committed FROM budget_spend WHERE period IN ({marks})"
            ))?
            .query_map(params_from_iter(periods.iter()), |r| {
                Ok(Spend {
                    budget: r.get(0)?,
                    period: r.get(1)?,
                    spent: r.get(2)?,
                    committed: r.get(3)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn charge(&self, job: Uuid, micros: i64, charges: &[Charge]) -> StoreResult<Charged> {
        let (job, charges) = (job.to_string(), charges.to_vec());
        self.write(move |conn| charge(conn, &job, micros, &charges))
            .await
    }

    async fn settle(&self, limit: usize) -> StoreResult<usize> {
        // A read first: most of the time there is nothing to settle, and then the writer
        // is not asked for a transaction.
        let any: bool = self
            .read(|conn| {
                conn.prepare_cached(&format!("SELECT EXISTS ({ENDED_CHARGES}{ENDED})"))?
                    .query_row([], |r| r.get(0))
            })
            .await?;
        if !any {
            return Ok(0);
        }
        self.write(move |conn| settle(conn, limit)).await
    }

    async fn live_charges(&self, budgets: &[String]) -> StoreResult<Vec<LiveCharge>> {
        let budgets = budgets.to_vec();
        let rows: Vec<(String, String, String, Option<i64>, Option<String>)> = self
            .read(move |conn| {
                let marks = vec!["?"; budgets.len()].join(", ");
                conn.prepare(&format!(
                    "SELECT c.job_id, c.budget, c.period, \
                     CASE WHEN j.state = 'running' THEN j.started_at END, j.cost \
                     FROM budget_charges c JOIN jobs j ON j.id = c.job_id \
                     WHERE j.state IN ('starting', 'running') AND c.budget IN ({marks})"
                ))?
                .query_map(params_from_iter(budgets.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .await?;
        rows.into_iter()
            .map(|(job, budget, period, started, cost)| {
                let cost: Option<JobCost> =
                    cost.map(|c| parse_json(4, &c)).transpose().map_err(db)?;
                Ok(LiveCharge {
                    job: job.parse().map_err(|e: uuid::Error| {
                        crate::store::StoreError::Db(format!("a charge's job id: {e}"))
                    })?,
                    budget,
                    period,
                    started_at: time(started),
                    hourly_usd: cost.as_ref().map_or(0.0, |c| c.hourly_usd),
                    earlier_usd: cost.as_ref().map_or(0.0, |c| c.earlier_usd),
                })
            })
            .collect()
    }
}
