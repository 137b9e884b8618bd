//! The budgets' ledger: budgets as set (from the config or the API), and what each has
//! spent and committed per period, kept in the store so that every replica admits against
//! the same figures. Spend is counted as jobs are admitted and end, one row per budget and
//! period, so that no admission sums the jobs of a period.
//!
//! Admitting a job charges its estimate, in micro-dollars, to each of its budgets' current
//! periods, all of them or none: a charge that would take any past its limit is refused.
//! A job is charged once, whatever attempts follow (a preemption, a failover). The write
//! that ends it replaces its estimate with its cost, in the periods it was charged to (a
//! trigger in each store, in that write's transaction); [`Ledger::settle`] does the same
//! for charges no end settled (a job charged in the instant after it ended, or deleted).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use crate::model::budget::{Budget, BudgetSource};

/// What a budget has spent and committed in one period, in micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// The budget's id ([`Budget::id`]).
    pub budget: String,
    /// The period's key ([`crate::model::budget::Period::key`]).
    pub period: String,
    pub spent: i64,
    pub committed: i64,
}

/// One budget's period a job is to be charged to, and its limit there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub budget: String,
    pub period: String,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Charged now, with the figures after the charge; or charged before (no figures).
    Admitted(Vec<Spend>),
    /// Nothing charged: this period would go past its limit, as it stands.
    Over(Spend),
}

/// A job charged to a budget that has not ended: what it has cost so far is its earlier
/// attempts' plus its current attempt's price for the time it has run.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCharge {
    pub job: Uuid,
    pub budget: String,
    pub period: String,
    /// When its current attempt started running; `None` while it is starting.
    pub started_at: Option<DateTime<Utc>>,
    pub hourly_usd: f64,
    pub earlier_usd: f64,
}

#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Every budget, with where it was set.
    async fn budgets(&self) -> StoreResult<Vec<(Budget, BudgetSource)>>;

    /// Sets a budget (the one of the same id is replaced).
    async fn put_budget(&self, budget: &Budget, source: BudgetSource) -> StoreResult<()>;

    /// Removes a budget; whether there was one. Its spend so far is kept, should it be set
    /// again in the same period.
    async fn delete_budget(&self, id: &str) -> StoreResult<bool>;

    /// Makes the config's budgets the ones from the config: sets each, and removes those
    /// an earlier config set that this one no longer has (those set through the API stay).
    async fn set_config_budgets(&self, budgets: &[Budget]) -> StoreResult<()> {
        let keep: std::collections::BTreeSet<String> = budgets.iter().map(Budget::id).collect();
        for (old, source) in self.budgets().await? {
            if source == BudgetSource::Config && !keep.contains(&old.id()) {
                self.delete_budget(&old.id()).await?;
            }
        }
        for b in budgets {
            self.put_budget(b, BudgetSource::Config).await?;
        }
        Ok(())
    }

    /// What every budget has spent and committed in these periods (the rows there are).
    async fn spend(&self, periods: &[String]) -> StoreResult<Vec<Spend>>;

    /// Charges `micros` to each of `charges` for `job`, all or none; a job charged before is
    /// not charged again.
    async fn charge(&self, job: Uuid, micros: i64, charges: &[Charge]) -> StoreResult<Charged>;

    /// Replaces the estimates charged for up to `limit` jobs that have ended (or are no
    /// longer kept) and whose end did not settle them with what they cost; how many charges
    /// it settled. It looks over every live charge.
    async fn settle(&self, limit: usize) -> StoreResult<usize>;

    /// The charges of jobs starting or running, to these budgets.
    async fn live_charges(&self, budgets: &[String]) -> StoreResult<Vec<LiveCharge>>;
}
