//! Durable job state behind one trait, so that SQLite (the embedded default) and
//! PostgreSQL (for several replicas) are two implementations of the same contract:
//!
//! - a submit is acknowledged only after it is committed;
//! - every state change is one transaction together with its event row;
//! - updates are compare-and-set on the job's state, so the engine and the API never
//!   overwrite each other's transitions;
//! - with several replicas on one store (PostgreSQL), each job has an owner, the replica
//!   whose engine reconciles it, and the engine's writes are fenced: they apply only while
//!   the job's owner is the writing replica. A replica holds a lease, renewed by the
//!   database's clock; the jobs of a replica whose lease lapsed are adopted by the others.

pub mod copy;
pub mod ledger;
pub mod postgres;
pub mod secrets;
pub mod snapshots;
pub mod sqlite;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{CostGroup, Event, Job, JobCost, JobSpec, JobState};

/// A job with the fields only the gateway sees.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: Job,
    pub tenant: String,
    /// The key of the current attempt's launch, stored before the provider is called.
    pub launch_key: Option<String>,
    /// When the current attempt was handed to a provider.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When the job's first attempt was: its timeout counts from here, whatever attempts
    /// follow (a lost workload, a failover, a preemption).
    pub first_dispatched_at: Option<DateTime<Utc>>,
    pub cancel_requested_by: Option<String>,
    /// Whether the finished workload has been deleted at its provider.
    pub released: bool,
    /// Providers that answered "no capacity" for this job, which auto routing skips.
    pub excluded: Vec<String>,
    /// The replica that reconciles the job; `None` in a store only one gateway opens.
    pub owner: Option<String>,
}

pub struct NewJob {
    pub id: Uuid,
    pub tenant: String,
    /// The spec with its secret values; the store keeps them apart from the open spec.
    pub spec: JobSpec,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum Submitted {
    Created(Box<JobRecord>),
    /// The same idempotency key with the same spec: the job it made before.
    Existing(Box<JobRecord>),
    /// The same idempotency key with a different spec.
    Conflict(Uuid),
}

/// How a cost report groups jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostGrouping {
    Provider,
    /// The value of this label; "" for jobs without it.
    Label(String),
}

/// A tenant's jobs that finished in `[since, until)`, grouped.
#[derive(Debug, Clone)]
pub struct CostQuery {
    pub group_by: CostGrouping,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<JobState>,
    pub provider: Option<String>,
    /// Equality selectors: every pair must match.
    pub labels: Vec<(String, String)>,
    /// Labels that must be present, whatever their value.
    pub label_keys: Vec<String>,
    /// Only jobs whose `name` starts with this.
    pub name_prefix: Option<String>,
    /// Only jobs with (`true`) or without (`false`) an exit code.
    pub has_exit_code: Option<bool>,
    /// Only jobs whose reason starts with (`true`), or does not start with (`false`),
    /// this text (a job without a reason does not start with it).
    pub reason_prefix: Option<(String, bool)>,
    /// Only jobs older than this one (the previous page's last id).
    pub before: Option<Uuid>,
    pub limit: usize,
}

/// What changed of a tenant's jobs after a position in the store's history of events.
#[derive(Debug, Clone, Default)]
pub struct ChangesQuery {
    /// The position the previous page ended at (0: from the start).
    pub after: i64,
    /// Equality selectors: every pair must match.
    pub labels: Vec<(String, String)>,
    /// Jobs a page holds at most.
    pub limit: usize,
}

/// A page of changed jobs: each once, as it is now, in the order of its latest change,
/// with the position of that change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesPage {
    pub jobs: Vec<(Job, i64)>,
    /// Where the next page goes on from: past every change this one looked at, the tenant's
    /// or not.
    pub next: i64,
    /// Whether there may be more changes after `next` already.
    pub more: bool,
}

/// Events one page of changes looks at most: a page's cost is bounded however far behind
/// its cursor is, or however many other jobs changed.
pub const CHANGES_SCAN: usize = 20_000;

/// Changes to a job; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub state: Option<JobState>,
    pub provider: Option<String>,
    pub provider_ref: Option<Option<String>>,
    pub attempts: Option<u32>,
    pub launch_key: Option<String>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub first_dispatched_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub result: Option<serde_json::Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested_by: Option<String>,
    pub log_tail: Option<String>,
    pub released: Option<bool>,
    pub excluded: Option<Vec<String>>,
    /// Applies only while the job has made exactly this many attempts. A dispatch sets it
    /// to what its record showed: a record gone stale (the job was dispatched and queued
    /// again since, by a failover) then dispatches nothing, where the state alone would let
    /// it through.
    pub if_attempts: Option<u32>,
    pub cost: Option<JobCost>,
    /// How each step of a job of several steps went, in its last attempt.
    pub steps: Option<Vec<crate::model::steps::StepLog>>,
    /// Appends an event with this reason even when the state does not change. A state
    /// change always appends one, with `reason` (or this) as its reason.
    pub event: Option<String>,
    /// A request any replica may write (a cancel), rather than an engine write, which
    /// applies only while the job's owner is the writing replica.
    pub from_any_replica: bool,
}

/// What a lease renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Replicas whose leases are live, this one included.
    pub live: usize,
    /// Whether this replica does the work that must happen once per cluster (the orphan
    /// sweep): the live replica with the smallest id.
    pub leader: bool,
    /// This replica's place among the live ones, in id order (0 for the leader).
    pub rank: usize,
    /// The places the other replicas hold at each provider, as they last said: the live
    /// ones, and those whose lease lapsed within the last lease (their workloads run on
    /// until they are adopted).
    pub held_elsewhere: BTreeMap<String, usize>,
    /// The new id this replica registered under, when its lease had lapsed (it was paused
    /// or cut off past it): it owns none of its jobs from before, which others adopt.
    pub renewed_as: Option<String>,
}

/// A notice from a store shared by several replicas: [`Store::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This job was written (by any replica) and the write has committed.
    Job(Uuid),
    /// The feed has just (re)connected: notices sent while it was not listening are lost,
    /// so read again whatever is cached or waited on. Always the first item.
    Resync,
    /// The feed's connection broke; a [`Change::Resync`] follows once it listens again.
    /// Until then no change of another replica's is heard: keep nothing cached.
    Down,
    /// A replica asks `owner` to reconcile this job soon (a cancel came to another one).
    Poke { owner: String, id: Uuid },
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not answer (unreachable, busy, a failed commit): the same call
    /// may well succeed later.
    #[error("database error: {0}")]
    Db(String),
    /// The database refuses this write itself (a constraint, a value or row too big for it,
    /// data it cannot hold): sent again, it fails again.
    #[error("the database refused the write: {0}")]
    Refused(String),
    #[error("the store is shutting down")]
    Closed,
}

/// Failed uses of the database, by `error`: `db` (it did not answer, or failed) or
/// `refused` (it refused the write itself).
const ERRORS: &str = "offload_store_errors_total";

impl StoreError {
    /// Counts the error in [`ERRORS`]. Each store makes the errors its database answers
    /// through this, so that every failed use of the database counts once, whoever asked
    /// (a request, the engine, the lease).
    fn counted(self) -> Self {
        let kind = match &self {
            StoreError::Db(_) => "db",
            StoreError::Refused(_) => "refused",
            StoreError::Closed => return self,
        };
        metrics::counter!(ERRORS, "error" => kind).increment(1);
        self
    }

    /// Makes [`ERRORS`] exist at 0 for each kind from the start: Prometheus sees no
    /// increase in a series whose first sample is already 1.
    pub fn count_from_zero() {
        for kind in ["db", "refused"] {
            metrics::counter!(ERRORS, "error" => kind).absolute(0);
        }
    }
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits a new job, honouring its idempotency key.
    async fn submit(&self, new: NewJob) -> StoreResult<Submitted>;

    async fn get(&self, id: Uuid) -> StoreResult<Option<JobRecord>>;

    /// A tenant's jobs, newest first.
    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Vec<Job>>;

    async fn events(&self, id: Uuid) -> StoreResult<Vec<Event>>;

    /// The tenant's jobs that changed after `query.after` (the position of an event): at
    /// most [`CHANGES_SCAN`] events are looked at. On PostgreSQL an event's position is
    /// taken when it is written, not when it commits, so one can become visible after a
    /// later one: a reader that needs every change lists what it follows now and then too.
    async fn changed_since(&self, tenant: &str, query: &ChangesQuery) -> StoreResult<ChangesPage>;

    /// Applies `patch` if the job is in one of `expect` (any state when empty); returns the
    /// job as it is afterwards, or `None` when its state did not match (or it is unknown).
    async fn update(
        &self,
        id: Uuid,
        expect: &[JobState],
        patch: Patch,
    ) -> StoreResult<Option<JobRecord>>;

    /// The secret values of a job's spec, for launching it.
    async fn secrets(&self, id: Uuid) -> StoreResult<BTreeMap<String, String>>;

    /// The log tail kept when the job ended.
    async fn log_tail(&self, id: Uuid) -> StoreResult<Option<String>>;

    /// Every job this replica's engine still has work for: owned by it, and not terminal
    /// or not yet released.
    async fn unfinished(&self) -> StoreResult<Vec<JobRecord>>;

    /// Ids of this replica's jobs still queued that were created before `before`, oldest
    /// first.
    async fn queued(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Uuid>>;

    /// Ids of this replica's jobs that its engine still has work for (as [`Store::unfinished`]
    /// finds them), in id order, after `after`: a page of at most `limit`.
    async fn owned(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<Uuid>>;

    /// Deletes up to `limit` jobs that ended and were released before `finished_before`,
    /// with their events and idempotency keys; how many it deleted.
    async fn purge(&self, finished_before: DateTime<Utc>, limit: usize) -> StoreResult<u64>;

    /// How long a tenant's last `limit` succeeded jobs with these `dag_id` and `task_id`
    /// labels ran (`started_at` to `finished_at`, whole seconds rounded up), newest first.
    async fn run_durations(
        &self,
        tenant: &str,
        dag_id: &str,
        task_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<u64>>;

    /// How many jobs not yet released there are per (provider, state): every live job, and
    /// ended ones until their workload is released (an index holds just those, so this
    /// stays cheap with millions of ended jobs kept). Undispatched jobs have provider "".
    async fn counts(&self) -> StoreResult<Vec<(String, JobState, u64)>>;

    /// The cost of a tenant's jobs that finished in the query's period, by group, ordered
    /// by key. Jobs never dispatched count with 0 under provider "".
    async fn costs(&self, tenant: &str, query: &CostQuery) -> StoreResult<Vec<CostGroup>>;

    /// Whether the store answers.
    async fn ping(&self) -> StoreResult<()>;

    /// The budgets and their spend, kept in the same database.
    fn ledger(&self) -> &dyn ledger::Ledger;

    /// The id this replica's writes are fenced with and its jobs are owned by; `None` for
    /// a store only one gateway opens (SQLite), where every job is that gateway's.
    fn replica(&self) -> Option<String> {
        None
    }

    /// How long this replica may still act as the owner of its jobs, by its own clock:
    /// `None` for a store no other gateway shares, where it always may.
    fn lease_left(&self) -> Option<std::time::Duration> {
        None
    }

    /// Renews this replica's lease (registering anew when it had lapsed), saying how many
    /// places it `held` at each provider.
    async fn renew_lease(&self, _held: &BTreeMap<String, usize>) -> StoreResult<Lease> {
        Ok(Lease {
            live: 1,
            leader: true,
            rank: 0,
            held_elsewhere: BTreeMap::new(),
            renewed_as: None,
        })
    }

    /// Takes over up to `limit` jobs the engine still has work for whose owner holds no
    /// live lease, each with an event; the jobs as they are now this replica's.
    async fn adopt(&self, _limit: usize) -> StoreResult<Vec<JobRecord>> {
        Ok(vec![])
    }

    /// Gives up this replica's lease (a graceful stop), so that the others adopt its jobs
    /// at once instead of after the lease.
    async fn release_lease(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Asks the replica that owns `rec` to reconcile it soon.
    async fn poke_owner(&self, _rec: &JobRecord) -> StoreResult<()> {
        Ok(())
    }

    /// Changes made by every replica, for waiters and pokes; `None` when no other gateway
    /// shares the store.
    fn changes(&self) -> Option<futures::stream::BoxStream<'static, Change>> {
        None
    }
}
