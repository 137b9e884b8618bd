//! The budgets' ledger on PostgreSQL ([`crate::store::ledger`]), shared by every replica. A
//! charge locks its budgets' rows of the period (in one order, so that two charges never
//! wait for each other) before it checks them, so that replicas admitting at once cannot
//! both take the last of a budget. The charges of concurrent dispatches go in batches, one
//! call of migration 14's `offload_charge` and one commit each ([`charge_loop`]), as
//! submits do: a busy budget's rows are locked once per batch, not once per job.

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

/// The charges no end settled: of ended jobs, or of jobs no longer kept.
const UNSETTLED: &str = "\
    FROM budget_charges c LEFT JOIN jobs j ON j.id = c.job_id
    WHERE (j.id IS NULL OR j.state IN ('succeeded', 'failed', 'cancelled'))";

/// Locks the periods of the charges no end settled, in (budget, period) order as a charge
/// and the trigger that settles at a job's end take them (migrations 14 and 15), so that
/// the sweep never holds one period while it waits for another that they hold; answers
/// which it locked.
static LOCK_PERIODS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT s.budget, s.period FROM budget_spend s
         WHERE (s.budget, s.period) IN (SELECT c.budget, c.period {UNSETTLED})
         ORDER BY s.budget, s.period FOR UPDATE"
    )
});

/// Settles the charges of up to `$1` ended jobs (or jobs no longer kept) in the periods
/// `$2`/`$3` (which the transaction holds) in one statement, skipping those another
/// replica is settling; counts the charges settled.
static SETTLE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH ended AS (
    SELECT c.job_id, c.budget, c.period, c.micros,
           COALESCE(round((j.cost->>'usd')::numeric * 1000000)::bigint, 0) AS cost
    {UNSETTLED}
    AND (c.budget, c.period) IN (SELECT * FROM unnest($2::text[], $3::text[]))
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
SELECT count(*) FROM gone"
    )
});

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
        let (done, answer) = tokio::sync::oneshot::channel();
        let op = ChargeOp { job, micros, charges: charges.to_vec(), done };
        self.charges
            .send(op)
            .map_err(|_| StoreError::Db("the charge task has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Db("the charge task has stopped".into()))?
    }

    async fn settle(&self, limit: usize) -> StoreResult<usize> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg("beginning to settle", e))?;
        let locked = tx
            .query(LOCK_PERIODS_SQL.as_str(), &[])
            .await
            .map_err(|e| pg("locking the periods to settle", e))?;
        if locked.is_empty() {
            return Ok(0);
        }
        let budgets: Vec<String> = locked.iter().map(|r| col(r, 0)).collect::<StoreResult<_>>()?;
        let periods: Vec<String> = locked.iter().map(|r| col(r, 1)).collect::<StoreResult<_>>()?;
        let row = tx
            .query_one(SETTLE_SQL.as_str(), &[&(limit as i64), &budgets, &periods])
            .await
            .map_err(|e| pg("settling ended jobs' charges", e))?;
        tx.commit().await.map_err(|e| pg("committing the settling", e))?;
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

/// The most jobs one batch of charges takes.
const MAX_CHARGES: usize = 256;

/// A job's charge waiting for its batch.
pub(super) struct ChargeOp {
    job: Uuid,
    micros: i64,
    charges: Vec<Charge>,
    done: tokio::sync::oneshot::Sender<StoreResult<Charged>>,
}

/// Group charging: takes every charge waiting (up to [`MAX_CHARGES`]), makes them in one
/// call and one commit, and answers each once that has committed. Ends when the store is
/// dropped.
pub(super) async fn charge_loop(
    pool: deadpool_postgres::Pool,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<ChargeOp>,
) {
    let mut batch = Vec::with_capacity(MAX_CHARGES);
    while queue.recv_many(&mut batch, MAX_CHARGES).await > 0 {
        let ops: Vec<ChargeOp> = std::mem::take(&mut batch);
        match charge_batch(&pool, &ops).await {
            Ok(mut answers) => {
                for op in ops {
                    let answer = answers.remove(&op.job).unwrap_or(Charged::Admitted(vec![]));
                    let _ = op.done.send(Ok(answer));
                }
            }
            Err(e) => {
                for op in ops {
                    let _ = op.done.send(Err(StoreError::Db(e.to_string())));
                }
            }
        }
    }
}

/// One call of `offload_charge` for `ops`, in one transaction: what each job got.
async fn charge_batch(
    pool: &deadpool_postgres::Pool,
    ops: &[ChargeOp],
) -> StoreResult<std::collections::HashMap<Uuid, Charged>> {
    let (mut jobs, mut micros, mut budgets, mut periods, mut limits) = (vec![], vec![], vec![], vec![], vec![]);
    for op in ops {
        for c in &op.charges {
            jobs.push(op.job);
            micros.push(op.micros);
            budgets.push(c.budget.as_str());
            periods.push(c.period.as_str());
            limits.push(c.limit);
        }
    }
    let failed = |e| pg("charging jobs to their budgets", e);
    let client = pool
        .get()
        .await
        .map_err(|e| StoreError::Db(format!("no PostgreSQL connection: {e}")))?;
    let stmt = client
        .prepare_cached("SELECT * FROM offload_charge($1, $2, $3, $4, $5)")
        .await
        .map_err(failed)?;
    let rows = client
        .query(&stmt, &[&jobs, &micros, &budgets, &periods, &limits])
        .await
        .map_err(failed)?;
    let mut answers = std::collections::HashMap::new();
    for row in &rows {
        let job: Uuid = col(row, 0)?;
        let budget: Option<String> = col(row, 1)?;
        if budget.is_none() {
            continue; // charged before: admitted, with no figures
        }
        let spend = Spend {
            budget: col(row, 1)?,
            period: col(row, 2)?,
            spent: col(row, 3)?,
            committed: col(row, 4)?,
        };
        let answer = answers.entry(job).or_insert(Charged::Admitted(vec![]));
        match (col::<bool>(row, 5)?, answer) {
            (false, answer) => *answer = Charged::Over(spend),
            (true, Charged::Admitted(after)) => after.push(spend),
            (true, Charged::Over(_)) => {}
        }
    }
    Ok(answers)
}
