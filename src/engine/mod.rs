//! The engine: owns every call out to a provider and drives each job to its end.
//!
//! Level-triggered, in the style of kube-rs's controller runtime: [`reconcile`] reads the
//! stored job and the latest observation of its workload and decides the next step and
//! when to look again. What lives in memory here (slots taken, live handles, the latest
//! observations) is derived and rebuilt from the store at start, so a restart loses
//! nothing.
//!
//! Three kinds of task run: the scheduler, which runs reconciles (at most one per job at a
//! time) when a job is poked or its requeue time comes, and sweeps the store now and then
//! for queued jobs nobody poked; one poller per provider, which observes all of that
//! provider's live workloads in batches and pokes the jobs whose observation changed; and
//! the HTTP handlers, which only poke (a submit hands its new job's record to the first
//! reconcile, see `fresh`).
//!
//! Every map here that grows with the live jobs (places, followed workloads, observations,
//! requeue timers) is a B-tree, not a hash map: a B-tree grows a node at a time, where
//! every per-job hash map doubled at the same job count (28,672, 57,344, ...) and rehashed
//! all its entries at once under its lock, stalling the runtime threads for tens of
//! milliseconds in the middle of a submit burst (a durable submit's p99 in that second:
//! 18-62 ms, against 8-12 ms in the others; BENCHMARKS.md, Profiles).

pub mod budgets;
pub mod changes;
mod error_policy;
mod fair;
mod follow;
mod fresh;
mod history;
mod ownership;
mod places;
mod reconcile;
mod routing;
mod scheduler;
#[cfg(test)]
mod store_faults;

pub use routing::SubmitRefusal;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Handle, LogChunk, LogQuery, Phase, PriceSheet, Provider, ProviderError, RunTimes,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use changes::{Changes, Waiter};
use error_policy::ErrorPolicy;
use history::{RunDurations, StartLatency};
use follow::Followed;
use places::Places;

use crate::config::{Config, EngineConfig, RoutingConfig};
use crate::model::{JobState, ProviderInfo};
use crate::store::{JobRecord, Patch, Store, StoreError};

/// The newest look at one followed workload.
struct Observed {
    phase: Phase,
    /// When it ran, where its provider reports that.
    ran: Option<RunTimes>,
    /// Its log tail, when it was seen ended together with others and their tails were
    /// read in one call ([`offload_provider::Provider::tails`]).
    tail: Option<String>,
}

/// How much of each step's output a job of several steps keeps when it ends.
pub const STEP_TAIL_BYTES: usize = 8 << 10;

/// One configured provider instance and the engine's bookkeeping for it.
pub struct Slot {
    pub name: String,
    pub provider: Arc<dyn Provider>,
    /// How often the health check runs while no observe round answers.
    health_every: Duration,
    /// Its price sheet and where each figure came from: replaced whole when a price refresh
    /// reprices the providers.
    pricing: std::sync::RwLock<Arc<Pricing>>,
    /// `[providers.NAME.price]`, which replaces the provider's own sheet, read figures and all.
    configured_price: Option<PriceSheet>,
    /// Who holds one of the `max_concurrency` places, and who waits for one.
    places: Places,
    /// Launched workloads the poller observes, and when it next looks at each.
    followed: Mutex<Followed>,
    /// Wakes the poller when a workload is followed (its first look may be sooner than
    /// the poller's next).
    new_workload: tokio::sync::Notify,
    /// `None` while healthy; the last health check's error otherwise.
    health: Mutex<Option<String>>,
    /// How long recent jobs took from dispatch to running here, for `prefer = speed`.
    starts: StartLatency,
    /// Log followers' reads of this provider: a budget of their own, so that followers
    /// cannot use up the calls that launches and status need, shared fairly by tenant.
    follower_reads: fair::FairShare,
    /// Calls made to the provider since the gateway started, and how many failed (as the
    /// `offload_provider_calls_total` and `_errors_total` metrics count them).
    calls: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    /// How long one call may take ([`crate::config::ProviderConfig::call_deadline`]).
    deadline: Duration,
    /// This provider's share of the reconciles that may run at once: a provider whose calls
    /// are slow holds at most these, and the others keep theirs.
    reconciles: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    /// Its price sheet now, and where each figure came from.
    pub fn pricing(&self) -> Arc<Pricing> {
        self.pricing.read().unwrap().clone()
    }

    /// Its sheet from `read`: the configured `price`, else the provider's own with the read
    /// figures over its defaults.
    fn price(&self, read: &ReadPrices) -> Pricing {
        match &self.configured_price {
            Some(sheet) => Pricing::configured(sheet.clone()),
            None => self.provider.price_sheet(read),
        }
    }

    /// The job is done here (ended, moved on, or back in the queue): frees its place,
    /// takes it out of the wait queue, and stops observing its workload.
    fn let_go(&self, id: Uuid) {
        self.places.free(id);
        self.followed.lock().unwrap().unfollow(id);
    }

    /// Whether the poller still follows `key` as `id`'s current workload.
    fn follows(&self, id: Uuid, key: &str) -> bool {
        self.followed.lock().unwrap().follows(id, key)
    }

    /// One of this provider's share of the reconciles, held while a reconcile may call it;
    /// [`EngineError::Busy`] when all are in use.
    fn reconcile_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, EngineError> {
        self.reconciles
            .clone()
            .try_acquire_owned()
            .map_err(|_| EngineError::Busy(self.name.clone()))
    }

    /// Has the poller follow `handle` as `id`'s workload (kept as it is when followed
    /// already), expected to run for `expected` where that is known.
    fn follow(&self, id: Uuid, handle: Handle, expected: Option<Duration>) {
        let now = tokio::time::Instant::now();
        if self.followed.lock().unwrap().follow(id, handle, expected, now) {
            self.new_workload.notify_one();
        }
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    slots: Vec<Arc<Slot>>,
    config: EngineConfig,
    /// The defaults of a spec's `routing` block.
    routing: RoutingConfig,
    /// Jobs to reconcile soon, each with its lane in the scheduler (a tenant's new jobs, or
    /// none).
    poke: mpsc::UnboundedSender<(Uuid, Option<Arc<str>>)>,
    poked: Mutex<Option<mpsc::UnboundedReceiver<(Uuid, Option<Arc<str>>)>>>,
    /// What each tenant's filer steps may reach.
    pub staging: crate::config::StagingConfig,
    /// New jobs' records, for their first reconcile.
    fresh: fresh::Fresh,
    /// The newest phase of each workload the pollers follow, by launch key (an answer
    /// about an earlier attempt can never be taken for the current one's).
    observations: Mutex<BTreeMap<String, Observed>>,
    /// Recent run times of DAG tasks, for the expected duration of specs that give none.
    runs: RunDurations,
    /// Reconciles that failed in a row (a store or provider call), per job.
    reconcile_errors: ErrorPolicy,
    /// Transient launch failures in a row, per job; the job fails past `launch_retries`.
    launch_errors: ErrorPolicy,
    /// "No capacity" answers in a row where there is nowhere else to go: wait, never fail.
    capacity_waits: ErrorPolicy,
    /// Jobs whose stored state changed, for their log followers and long polls.
    changes: Arc<Changes>,
    /// Whether this replica does the work that must happen once per cluster (the orphan
    /// sweep); always with a store no other gateway shares.
    leader: AtomicBool,
    /// How often this replica's lease is renewed, when it shares the store.
    lease_every: Duration,
    /// `store.retention_days`.
    retention: Option<chrono::Duration>,
    /// Spend limits, checked as jobs are first dispatched.
    budgets: budgets::Budgets,
    shutdown: CancellationToken,
    /// How the last price refresh went, for `GET /v1/providers`.
    price_refresh: Mutex<Option<crate::model::PriceRefresh>>,
}

/// What a cancel request found.
pub enum CancelOutcome {
    Accepted(Box<JobRecord>),
    AlreadyTerminal(Box<JobRecord>),
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provider {provider}: {source}")]
    Provider {
        provider: String,
        source: ProviderError,
    },
    /// A call that would change a workload was not made: the job is no longer this
    /// replica's, or its lease may lapse before the call's deadline.
    #[error("not made: {0}")]
    Fenced(String),
    /// The provider's share of the reconciles is in use (its calls are slow): look again
    /// in a moment.
    #[error("provider {0} is busy with other reconciles")]
    Busy(String),
}

impl Engine {
    /// Builds every configured provider, priced with the price file's figures; fails on the
    /// first provider that cannot be built, or on a price file that is not one.
    pub async fn new(config: &Config, store: Arc<dyn Store>) -> Result<Arc<Engine>, String> {
        Engine::with_clock(config, store, crate::clock::Clock::system()).await
    }

    /// [`Engine::new`] with budgets' days and months read from `clock`.
    pub async fn with_clock(
        config: &Config,
        store: Arc<dyn Store>,
        clock: crate::clock::Clock,
    ) -> Result<Arc<Engine>, String> {
        let read = match &config.prices.file {
            Some(path) => crate::prices::file::load(path)?,
            None => ReadPrices::default(),
        };
        let mut slots = vec![];
        let lease = config
            .store
            .url
            .is_some()
            .then(|| Duration::from_secs(config.store.lease_seconds));
        let share = (config.engine.reconcile_concurrency / config.providers.len().max(1)).max(1);
        let tenancy = Arc::new(places::Tenancy::new(config.tenants.clone()));
        for (name, p) in &config.providers {
            let provider = p
                .kind
                .build()
                .await
                .map_err(|e| format!("providers.{name}: {e}"))?;
            let slot = Slot {
                name: name.clone(),
                pricing: Default::default(),
                configured_price: p.price.clone(),
                provider,
                health_every: Duration::from_secs(p.health_check_seconds.max(1)),
                places: Places::new(p.max_concurrency, tenancy.clone()),
                followed: Mutex::new(Followed::new(
                    Duration::from_millis(p.poll_interval_ms),
                    Duration::from_millis(p.max_poll_interval_ms()),
                )),
                new_workload: tokio::sync::Notify::new(),
                health: Mutex::new(Some("not checked yet".into())),
                starts: StartLatency::default(),
                follower_reads: fair::FairShare::new(p.follower_reads_per_second),
                calls: Default::default(),
                errors: Default::default(),
                deadline: p.call_deadline(lease),
                reconciles: Arc::new(tokio::sync::Semaphore::new(share)),
            };
            *slot.pricing.write().unwrap() = Arc::new(slot.price(&read));
            slots.push(Arc::new(slot));
        }
        let (poke, poked) = mpsc::unbounded_channel();
        let budgets = budgets::Budgets::new(store.clone(), clock, config.budgets.clone());
        Ok(Arc::new(Engine {
            store,
            slots,
            config: config.engine.clone(),
            routing: config.routing.clone(),
            staging: config.staging.clone(),
            poke,
            fresh: fresh::Fresh::default(),
            poked: Mutex::new(Some(poked)),
            observations: Mutex::default(),
            runs: RunDurations::default(),
            reconcile_errors: ErrorPolicy::new(Duration::from_secs(1), Duration::from_secs(300)),
            launch_errors: ErrorPolicy::new(Duration::from_millis(200), Duration::from_secs(60)),
            capacity_waits: ErrorPolicy::new(Duration::from_secs(1), Duration::from_secs(60)),
            changes: Arc::default(),
            leader: AtomicBool::new(true),
            lease_every: Duration::from_secs(config.store.lease_seconds).div_f64(3.0),
            retention: config
                .store
                .retention_days
                .map(|d| chrono::Duration::days(d.min(100_000) as i64)),
            budgets,
            shutdown: CancellationToken::new(),
            price_refresh: Mutex::default(),
        }))
    }

    /// The budgets, for the API.
    pub fn budgets(&self) -> &budgets::Budgets {
        &self.budgets
    }

    pub fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// Prices every provider again from `read`, the figures a refresh read; a provider with
    /// a configured `price` keeps it.
    pub fn reprice(&self, read: &ReadPrices) {
        for slot in &self.slots {
            let pricing = Arc::new(slot.price(read));
            *slot.pricing.write().unwrap() = pricing;
        }
        self.price_refreshed(None);
    }

    /// Notes how a price refresh went: `None` when it repriced the providers, else why it
    /// failed (the providers keep their prices).
    pub fn price_refreshed(&self, error: Option<String>) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        *self.price_refresh.lock().unwrap() = Some(crate::model::PriceRefresh {
            at,
            ok: error.is_none(),
            error,
        });
    }

    fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// Asks for a reconcile of `id` soon.
    pub fn poke(&self, id: Uuid) {
        let _ = self.poke.send((id, None));
    }

    /// Asks for the first reconcile of a job just submitted, handing it the record.
    pub fn submitted(&self, rec: JobRecord) {
        let (id, tenant) = (rec.job.id, Arc::from(rec.tenant.as_str()));
        self.fresh.keep(rec);
        let _ = self.poke.send((id, Some(tenant)));
    }

    /// Pokes every job whose workload a poller follows here.
    fn poke_followed(&self) {
        for slot in &self.slots {
            let jobs = slot.followed.lock().unwrap().jobs();
            jobs.into_iter().for_each(|id| self.poke(id));
        }
    }

    /// Starts waiting for changes to the stored state of job `id`.
    pub fn watch(&self, id: Uuid) -> Waiter {
        self.changes.watch(id)
    }

    /// Rebuilds the in-memory view from the store and starts the scheduler and pollers.
    /// Returns a handle that finishes when the engine has stopped.
    pub async fn start(self: &Arc<Self>) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        self.budgets.start().await?;
        let unfinished = self.store.unfinished().await?;
        tracing::info!(jobs = unfinished.len(), "engine resuming unfinished jobs");
        for rec in &unfinished {
            self.take_in(rec);
        }
        let poked = self
            .poked
            .lock()
            .unwrap()
            .take()
            .expect("engine started twice");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(scheduler::run(self.clone(), poked));
        for slot in &self.slots {
            tasks.spawn(scheduler::poll(self.clone(), slot.clone()));
            if let Some(pushed) = slot.provider.subscribe() {
                tasks.spawn(scheduler::pushed(self.clone(), slot.clone(), pushed));
            }
        }
        tasks.spawn(budgets::run(self.clone()));
        if let Some(keep) = self.retention {
            tasks.spawn(scheduler::retention(self.clone(), keep));
        }
        if let Some(changes) = self.store.changes() {
            tasks.spawn(ownership::feed(self.clone(), changes));
            tasks.spawn(ownership::lease(self.clone(), self.lease_every));
        }
        Ok(tokio::spawn(async move {
            while tasks.join_next().await.is_some() {}
        }))
    }

    /// Takes in a job this replica owns (at start, or adopted): the place its workload
    /// holds, the workload to observe, and a reconcile soon.
    fn take_in(&self, rec: &JobRecord) {
        let holds_place = matches!(
            rec.job.state,
            JobState::Starting | JobState::Running | JobState::Cancelling
        );
        if let (true, Some(slot)) = (
            holds_place,
            rec.job.provider.as_deref().and_then(|p| self.slot(p)),
        ) {
            slot.places.hold(rec.job.id, &rec.tenant);
            if let (Some(key), Some(pref)) = (&rec.launch_key, &rec.job.provider_ref) {
                let handle = Handle {
                    key: key.clone(),
                    provider_ref: pref.clone(),
                };
                slot.follow(rec.job.id, handle, None);
            }
        }
        self.poke(rec.job.id);
    }

    /// Whether this replica reconciles `rec`: it owns it (always, with a store no other
    /// gateway shares).
    fn owns(&self, rec: &JobRecord) -> bool {
        rec.owner == self.store.replica()
    }

    /// Whether this replica does the work that must happen once per cluster.
    fn leads(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Gives up this replica's lease once it has stopped, so that the others adopt its jobs
    /// at once.
    pub async fn release_lease(&self) -> Result<(), StoreError> {
        self.store.release_lease().await
    }

    /// Stops the scheduler and pollers; running workloads carry on and are re-adopted at
    /// the next start (or, with several replicas, by another replica).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Records a cancel request: a queued job ends at once, a launched one is stopped at
    /// its provider by the next reconcile.
    pub async fn cancel(&self, tenant: &str, id: Uuid) -> Result<CancelOutcome, StoreError> {
        self.cancel_as(id, Some(tenant), format!("tenant {tenant}")).await
    }

    /// Stops a job for the gateway's own reason `why` (a hard budget), as a cancel.
    async fn stop_for(&self, id: Uuid, why: &str) -> Result<CancelOutcome, StoreError> {
        self.cancel_as(id, None, why.to_string()).await
    }

    /// A cancel by `who`, of a job of `tenant` (any tenant's: `None`).
    async fn cancel_as(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        who: String,
    ) -> Result<CancelOutcome, StoreError> {
        loop {
            let found = self.store.get(id).await?;
            let Some(rec) = found.filter(|r| tenant.is_none_or(|t| r.tenant == t)) else {
                return Ok(CancelOutcome::NotFound);
            };
            let who = who.clone();
            let (expect, patch) = match rec.job.state {
                s if s.is_terminal() => return Ok(CancelOutcome::AlreadyTerminal(Box::new(rec))),
                JobState::Cancelling => return Ok(CancelOutcome::Accepted(Box::new(rec))),
                JobState::Queued => (
                    JobState::Queued,
                    Patch {
                        state: Some(JobState::Cancelled),
                        reason: Some(format!("cancelled by {who} before launch")),
                        finished_at: Some(chrono::Utc::now()),
                        cancel_requested_by: Some(who),
                        released: Some(true),
                        // Dispatched before (and sent back to the queue): it never ran.
                        cost: self.final_cost(&rec, None),
                        from_any_replica: true,
                        ..Patch::default()
                    },
                ),
                state => (
                    state,
                    Patch {
                        state: Some(JobState::Cancelling),
                        cancel_requested_by: Some(who.clone()),
                        event: Some(format!("cancel requested by {who}")),
                        from_any_replica: true,
                        ..Patch::default()
                    },
                ),
            };
            if let Some(rec) = self.store.update(id, &[expect], patch).await? {
                if rec.job.state.is_terminal() {
                    reconcile::count_end(rec.job.provider.as_deref(), rec.job.state);
                }
                self.changes.notify(id);
                match self.owns(&rec) {
                    true => self.poke(id),
                    // Its owner stops the workload; the poke is a courtesy, for the owner
                    // looks at every live job at least every 5 minutes anyway.
                    false => {
                        if let Err(e) = self.store.poke_owner(&rec).await {
                            tracing::warn!(job = %id, error = %e, "could not poke the job's owner");
                        }
                    }
                }
                return Ok(CancelOutcome::Accepted(Box::new(rec)));
            }
            // The engine moved the job meanwhile; look again.
        }
    }

    /// Reads a job's log: the stored tail once it has ended, the provider's log before.
    pub async fn logs(&self, rec: &JobRecord, query: &LogQuery) -> Result<LogChunk, EngineError> {
        self.read_log(rec, query, false).await
    }

    /// [`Engine::logs`] for a follower: a read of the provider waits for its tenant's turn
    /// of the provider's follower budget (`follower_reads_per_second`), apart from the
    /// engine's own calls.
    pub async fn follow_logs(
        &self,
        rec: &JobRecord,
        query: &LogQuery,
    ) -> Result<LogChunk, EngineError> {
        self.read_log(rec, query, true).await
    }

    async fn read_log(
        &self,
        rec: &JobRecord,
        query: &LogQuery,
        follower: bool,
    ) -> Result<LogChunk, EngineError> {
        // An ended job's log is the tail stored at its end, also in the moment between its
        // workload's release at the provider and the record saying so; only a follower that
        // is part way through (a cursor) still reads the provider until the release.
        let ended = rec.job.terminal && query.cursor.is_none();
        let live = match (&rec.job.provider, &rec.launch_key, &rec.job.provider_ref) {
            (Some(p), Some(key), Some(pref)) if !rec.released && !ended => {
                self.slot(p).map(|s| (s, key, pref))
            }
            _ => None,
        };
        let Some((slot, key, pref)) = live else {
            let tail = if rec.job.terminal {
                self.store.log_tail(rec.job.id).await?
            } else {
                None
            };
            return Ok(LogChunk {
                text: tail.unwrap_or_default(),
                cursor: None,
            });
        };
        let handle = Handle {
            key: key.clone(),
            provider_ref: pref.clone(),
        };
        if follower {
            slot.follower_reads.turn(&rec.tenant).await;
        }
        match self
            .call(slot, "logs", slot.provider.logs(&handle, query))
            .await
        {
            // The provider no longer has the workload: released between the read of the
            // record and this call (the log's end is in the store by now), or gone before
            // it ended (the engine will see it lost); either way not the gateway's fault.
            Err(EngineError::Provider {
                source: ProviderError::NotFound(_),
                ..
            }) => Ok(LogChunk {
                text: match rec.job.terminal {
                    true => self.store.log_tail(rec.job.id).await?.unwrap_or_default(),
                    false => String::new(),
                },
                cursor: None,
            }),
            other => other,
        }
    }

    /// Every provider with its health and load.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.slots
            .iter()
            .map(|s| {
                let health = s.health.lock().unwrap().clone();
                ProviderInfo {
                    name: s.name.clone(),
                    kind: s.provider.kind().into(),
                    healthy: health.is_none(),
                    health_error: health,
                    max_concurrency: s.places.max(),
                    active: s.places.held(),
                    waiting: s.places.waiting(),
                    start_latency_ms: s.starts.expected_ms(),
                    capabilities: serde_json::to_value(s.provider.capabilities())
                        .unwrap_or_default(),
                    prices: serde_json::to_value(&s.pricing().sheet).unwrap_or_default(),
                    price_sources: serde_json::to_value(&s.pricing().sources)
                        .unwrap_or_default(),
                    price_refresh: self.price_refresh.lock().unwrap().clone(),
                    calls: s.calls.load(std::sync::atomic::Ordering::Relaxed),
                    errors: s.errors.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// How many entries the engine's per-job maps hold, by map: each must shrink back as
    /// jobs end, or memory grows with every job ever run.
    pub fn entries(&self) -> [(&'static str, usize); 6] {
        [
            ("observations", self.observations.lock().unwrap().len()),
            (
                "waiting",
                self.slots.iter().map(|s| s.places.waiting()).sum(),
            ),
            ("reconcile_errors", self.reconcile_errors.tracked()),
            ("launch_errors", self.launch_errors.tracked()),
            ("capacity_waits", self.capacity_waits.tracked()),
            ("watched_jobs", self.changes.watched()),
        ]
    }

    /// Runs every provider's health check now.
    pub async fn check_providers(&self) {
        for slot in &self.slots {
            self.check_health(slot).await;
        }
    }

    /// Whether this replica may make a call that changes a workload of `rec`'s (or, with
    /// no job, of the provider's, as the orphan sweep does): it owns the job, and its lease
    /// surely outlasts the call's deadline. A replica paused past its lease, whose jobs
    /// another adopted meanwhile, must not launch, stop or delete what is now the other's.
    fn fence(&self, rec: Option<&JobRecord>, slot: &Slot, call: &str) -> Result<(), EngineError> {
        if let Some(rec) = rec.filter(|rec| !self.owns(rec)) {
            return Err(EngineError::Fenced(format!(
                "{call} at {}: job {} is no longer this replica's",
                slot.name, rec.job.id
            )));
        }
        match self.store.lease_left() {
            Some(left) if left < slot.deadline => Err(EngineError::Fenced(format!(
                "{call} at {}: this replica's lease has {left:?} left, less than the call's \
                 deadline of {:?}",
                slot.name, slot.deadline
            ))),
            _ => Ok(()),
        }
    }

    /// Makes one provider call, counting it and its errors; a call that has not answered by
    /// the provider's deadline is a passing fault.
    async fn call<T>(
        &self,
        slot: &Slot,
        call: &'static str,
        fut: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, EngineError> {
        self.call_within(slot, call, slot.deadline, fut).await
    }

    /// [`Engine::call`] with a deadline of its own: an observe of many workloads that its
    /// provider reads one by one, at a read budget's pace, takes longer than one call.
    async fn call_within<T>(
        &self,
        slot: &Slot,
        call: &'static str,
        deadline: Duration,
        fut: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, EngineError> {
        let labels = [("provider", slot.name.clone()), ("call", call.to_string())];
        metrics::counter!("offload_provider_calls_total", &labels).increment(1);
        slot.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::debug_span!(
            "provider call",
            provider = %slot.name,
            call,
            outcome = tracing::field::Empty,
            otel.name = format!("{call} {}", slot.name),
        );
        let timed = tokio::time::timeout(deadline, fut);
        let answer = match tracing::Instrument::instrument(timed, span.clone()).await {
            Ok(answer) => answer,
            Err(_) => Err(ProviderError::Transient(format!(
                "no answer to {call} within {deadline:?}"
            ))),
        };
        if answer.is_ok() {
            span.record("outcome", "ok");
        }
        answer.map_err(|source| {
            slot.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let kind = match &source {
                ProviderError::InvalidSpec(_) => "invalid_spec",
                ProviderError::Capacity(_) => "capacity",
                ProviderError::Throttled { .. } => "throttled",
                ProviderError::Transient(_) => "transient",
                ProviderError::NotFound(_) => "not_found",
                ProviderError::Config(_) => "config",
            };
            span.record("outcome", kind);
            let labels = [
                ("provider", slot.name.clone()),
                ("call", call.to_string()),
                ("error", kind.to_string()),
            ];
            metrics::counter!("offload_provider_errors_total", &labels).increment(1);
            EngineError::Provider {
                provider: slot.name.clone(),
                source,
            }
        })
    }
}

/// The launch key of a job's attempt: deterministic, a valid DNS-1123 label of at most
/// 63 characters, and a valid ACI container group name.
pub fn launch_key(id: Uuid, attempt: u32) -> String {
    format!("offload-{}-{attempt}", id.simple())
}

/// The job a launch key belongs to, for keys [`launch_key`] made.
pub fn job_of_key(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix("offload-")?;
    let (id, attempt) = rest.rsplit_once('-')?;
    attempt.parse::<u32>().ok()?;
    Uuid::try_parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_keys_name_their_job() {
        let id = Uuid::now_v7();
        assert_eq!(job_of_key(&launch_key(id, 3)), Some(id));
        assert_eq!(job_of_key("offload-nothex-1"), None);
        assert_eq!(job_of_key("someone-elses-pod"), None);
    }
}
