//! The budgets' ledger on PostgreSQL ([`crate::store::ledger`]), shared by every replica. A
//! charge locks its budgets' rows of the period (in one order, so that two charges never
//! wait for each other) before it checks them, so that replicas admitting at once cannot
//! both take the last of a budget.

use tokio_postgres::types::{FromSql, Json};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{pg, PostgresStore};
use crate::model::budget::{Budget, BudgetSource};
use crate::model::JobCost;
use crate::store::ledger::{Charge, Charged, Ledger, LiveCharge, Spend};
use crate::store::{StoreError, StoreResult};

fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx)
        .map_err(|e| pg(&format!("reading column {idx} of the ledger"), e))
}

fn spend(row: &Row) -> StoreResult<Spend> {
    Ok(Spend {
        budget: col(row, 0)?,
        period: col(row, 1)?,
        spent: col(row, 2)?,
        committed: col(row, 3)?,
    })
}

/// Settles the charges of up to `$1` ended jobs (or jobs no longer kept) in one statement,
/// skipping those another replica is settling; counts the charges settled.
const SETTLE_SQL: &str = "\
WITH ended AS (
    SELECT c.job_id, c.budget, c.period, c.micros,
           COALESCE(round((j.cost->>'usd')::numeric * 1000000)::bigint, 0) AS cost
    FROM budget_charges c LEFT JOIN jobs j ON j.id = c.job_id
    WHERE j.id IS NULL OR j.state IN ('succeeded', 'failed', 'cancelled')
    LIMIT $1
    FOR UPDATE OF c SKIP LOCKED
), gone AS (
    DELETE FROM budget_charges c USING ended e
    WHERE c.job_id = e.job_id AND c.budget = e.budget AND c.period = e.period
    RETURNING e.budget, e.period, e.micros, e.cost
), sums AS (
    SELECT budget, period, sum(cost)::bigint AS cost, sum(micros)::bigint AS micros
    FROM gone GROUP BY budget, period
), applied AS (
    UPDATE budget_spend s SET spent = s.spent + sums.cost, committed = s.committed - sums.micros
    FROM sums WHERE s.budget = sums.budget AND s.period = sums.period
)
SELECT count(*) FROM gone";

#[async_trait::async_trait]
impl Ledger for PostgresStore {
    async fn budgets(&self) -> StoreResult<Vec<(Budget, BudgetSource)>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT budget, source FROM budgets ORDER BY id", &[])
            .await
            .map_err(|e| pg("reading the budgets", e))?;
        rows.iter()
            .map(|r| {
                let Json(budget): Json<Budget> = col(r, 0)?;
                let source = match col::<&str>(r, 1)? {
                    "config" => BudgetSource::Config,
                    _ => BudgetSource::Api,
                };
                Ok((budget, source))
            })
            .collect()
    }

    async fn put_budget(&self, budget: &Budget, source: BudgetSource) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO budgets (id, budget, source) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET budget = excluded.budget, source = excluded.source",
                &[&budget.id(), &Json(budget), &source.as_str()],
            )
            .await
            .map_err(|e| pg("setting a budget", e))?;
        Ok(())
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM budgets WHERE id = $1", &[&id])
            .await
            .map_err(|e| pg("removing a budget", e))?;
        Ok(n > 0)
    }

    async fn spend(&self, periods: &[String]) -> StoreResult<Vec<Spend>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT budget, period, spent, committed FROM budget_spend WHERE period = ANY($1)",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let rows = client
            .query(&stmt, &[&periods])
            .await
            .map_err(|e| pg("reading the budgets' spend", e))?;
        rows.iter().map(spend).collect()
    }

    async fn charge(&self, job: Uuid, micros: i64, charges: &[Charge]) -> StoreResult<Charged> {
        let mut charges = charges.to_vec();
        charges.sort_by(|a, b| (&a.budget, &a.period).cmp(&(&b.budget, &b.period)));
        let budgets: Vec<&str> = charges.iter().map(|c| c.budget.as_str()).collect();
        let periods: Vec<&str> = charges.iter().map(|c| c.period.as_str()).collect();
        let failed = |e| pg("charging a job to its budgets", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(failed)?;
        let before = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM budget_charges WHERE job_id = $1)",
                &[&job],
            )
            .await
            .map_err(failed)?;
        if col::<bool>(&before, 0)? {
            return Ok(Charged::Admitted(vec![]));
        }
        // In (budget, period) order, the rows missing made and every row locked.
        tx.execute(
            "INSERT INTO budget_spend (budget, period) \
             SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            &[&budgets, &periods],
        )
        .await
        .map_err(failed)?;
        let rows = tx
            .query(
                "SELECT budget, period, spent, committed FROM budget_spend \
                 WHERE (budget, period) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
                 ORDER BY budget, period FOR UPDATE",
                &[&budgets, &periods],
            )
            .await
            .map_err(failed)?;
        let now: Vec<Spend> = rows.iter().map(spend).collect::<StoreResult<_>>()?;
        for c in &charges {
            let row = now
                .iter()
                .find(|s| s.budget == c.budget && s.period == c.period)
                .ok_or_else(|| StoreError::Db(format!("no spend row for {}", c.budget)))?;
            if row.spent + row.committed + micros > c.limit {
                // Dropped uncommitted: the transaction rolls back.
                return Ok(Charged::Over(row.clone()));
            }
        }
        let after = tx
            .query(
                "UPDATE budget_spend SET committed = committed + $3 \
                 WHERE (budget, period) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
                 RETURNING budget, period, spent, committed",
                &[&budgets, &periods, &micros],
            )
            .await
            .map_err(failed)?;
        tx.execute(
            "INSERT INTO budget_charges (job_id, budget, period, micros) \
             SELECT $1, b, p, $4 FROM unnest($2::text[], $3::text[]) AS c(b, p)",
            &[&job, &budgets, &periods, &micros],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(Charged::Admitted(
            after.iter().map(spend).collect::<StoreResult<_>>()?,
        ))
    }

    async fn settle(&self, limit: usize) -> StoreResult<usize> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(SETTLE_SQL)
            .await
            .map_err(|e| pg("preparing", e))?;
        let row = client
            .query_one(&stmt, &[&(limit as i64)])
            .await
            .map_err(|e| pg("settling ended jobs' charges", e))?;
        Ok(col::<i64>(&row, 0)? as usize)
    }

    async fn live_charges(&self, budgets: &[String]) -> StoreResult<Vec<LiveCharge>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.job_id, c.budget, c.period, \
                 CASE WHEN j.state = 'running' THEN j.started_at END, j.cost \
                 FROM budget_charges c JOIN jobs j ON j.id = c.job_id \
                 WHERE j.state IN ('starting', 'running') AND c.budget = ANY($1)",
                &[&budgets],
            )
            .await
            .map_err(|e| pg("reading the running jobs' charges", e))?;
        rows.iter()
            .map(|r| {
                let cost: Option<Json<JobCost>> = col(r, 4)?;
                let cost = cost.map(|Json(c)| c);
                Ok(LiveCharge {
                    job: col(r, 0)?,
                    budget: col(r, 1)?,
                    period: col(r, 2)?,
                    started_at: col(r, 3)?,
                    hourly_usd: cost.as_ref().map_or(0.0, |c| c.hourly_usd),
                    earlier_usd: cost.as_ref().map_or(0.0, |c| c.earlier_usd),
                })
            })
            .collect()
    }
}
