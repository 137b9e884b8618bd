//! The engine's two long-running tasks: the scheduler, which runs reconciles when jobs are
//! poked or their requeue time comes (never two for one job at once) and sweeps the store
//! for queued jobs that no poke reached, and the per-provider poller, which observes live
//! workloads in batches and pokes the jobs that changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use offload_provider::{Observation, Phase, ProviderError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};
use uuid::Uuid;

use super::follow::Seen;
use super::{Engine, EngineError, Slot};

/// Jobs ready for a reconcile, and the rule that one job has one reconcile at a time.
///
/// In lanes, taken in turn: one per tenant for the jobs it just submitted, one for every
/// other poke (an observation, a timer, a sweep). A tenant's burst of 100,000 submits then
/// waits in its own lane, and another tenant's next job is reconciled (and queued for a
/// place by its fair share) after a few of the burst's, not after all of them.
#[derive(Default)]
struct ReadyQueue {
    lanes: BTreeMap<Lane, VecDeque<Uuid>>,
    /// The lanes with jobs, in the order their turns come.
    turns: VecDeque<Lane>,
    queued: BTreeSet<Uuid>,
    running: HashSet<Uuid>,
    /// Poked while running: reconcile once more when the current one ends.
    again: HashSet<Uuid>,
}

/// A lane: a tenant's new jobs, or (`None`) every other poke.
type Lane = Option<Arc<str>>;

impl ReadyQueue {
    fn push(&mut self, id: Uuid, lane: Lane) {
        if self.running.contains(&id) {
            self.again.insert(id);
        } else if self.queued.insert(id) {
            let jobs = self.lanes.entry(lane.clone()).or_default();
            if jobs.is_empty() {
                self.turns.push_back(lane);
            }
            jobs.push_back(id);
        }
    }

    fn start_next(&mut self, limit: usize) -> Option<Uuid> {
        if self.running.len() >= limit {
            return None;
        }
        let lane = self.turns.pop_front()?;
        let jobs = self.lanes.get_mut(&lane).expect("a lane with a turn has jobs");
        let id = jobs.pop_front().expect("a lane with a turn has jobs");
        match jobs.is_empty() {
            true => {
                self.lanes.remove(&lane);
            }
            false => self.turns.push_back(lane),
        }
        self.queued.remove(&id);
        self.running.insert(id);
        Some(id)
    }

    /// Marks a reconcile done; true when the job was poked meanwhile.
    fn finish(&mut self, id: Uuid) -> bool {
        self.running.remove(&id);
        self.again.remove(&id)
    }

    fn knows(&self, id: Uuid) -> bool {
        self.queued.contains(&id) || self.running.contains(&id)
    }
}

pub(super) async fn run(engine: Arc<Engine>, mut poked: mpsc::UnboundedReceiver<(Uuid, Lane)>) {
    let limit = engine.config.reconcile_concurrency;
    let mut delays: DelayQueue<Uuid> = DelayQueue::new();
    let mut delay_keys: BTreeMap<Uuid, delay_queue::Key> = BTreeMap::new();
    let mut queue = ReadyQueue::default();
    let mut tasks: JoinSet<Option<Duration>> = JoinSet::new();
    let mut task_jobs: HashMap<tokio::task::Id, Uuid> = HashMap::new();
    let (found, mut swept) = mpsc::unbounded_channel();
    // Where the next sweep of this replica's jobs goes on from.
    let mut owned_after = None;
    let mut sweep = tokio::time::interval(Duration::from_secs(
        engine.config.queued_sweep_seconds.max(1),
    ));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Some(id) = queue.start_next(limit) {
            let engine = engine.clone();
            let task = tasks.spawn(async move { super::reconcile::reconcile(&engine, id).await });
            task_jobs.insert(task.id(), id);
        }
        tokio::select! {
            _ = engine.shutdown.cancelled() => break,
            Some((id, lane)) = poked.recv() => queue.push(id, lane),
            _ = sweep.tick() => {
                let (engine, found) = (engine.clone(), found.clone());
                tokio::spawn(async move { engine.sweep(found, owned_after).await });
            }
            // A job the sweep found: reconcile it unless the engine has it in hand.
            Some(swept) = swept.recv() => match swept {
                Swept::Job(id) => {
                    let waiting = engine.slots.iter().any(|s| s.places.is_waiting(id));
                    if !queue.knows(id) && !delay_keys.contains_key(&id) && !waiting {
                        tracing::info!(job = %id, "sweep found a job of this replica's that nothing was driving");
                        queue.push(id, None);
                    }
                }
                Swept::Next(after) => owned_after = after,
            },
            Some(expired) = delays.next(), if !delays.is_empty() => {
                let id = expired.into_inner();
                delay_keys.remove(&id);
                queue.push(id, None);
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (task, requeue) = match done {
                    Ok((task, requeue)) => (task, requeue),
                    Err(e) => {
                        tracing::error!(error = %e, "a reconcile panicked; retrying it later");
                        (e.id(), Some(Duration::from_secs(5)))
                    }
                };
                let Some(id) = task_jobs.remove(&task) else { continue };
                if let Some(key) = delay_keys.remove(&id) {
                    delays.remove(&key);
                }
                if queue.finish(id) {
                    queue.push(id, None);
                } else if let Some(after) = requeue {
                    delay_keys.insert(id, delays.insert(id, after));
                }
                for slot in &engine.slots {
                    for (waiting, tenant) in slot.places.next_waiting() {
                        queue.push(waiting, Some(tenant));
                    }
                }
            }
        }
    }
    // Let reconciles in flight finish their store writes; workloads carry on regardless.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

pub(super) async fn poll(engine: Arc<Engine>, slot: Arc<Slot>) {
    engine.check_health(&slot).await;
    let mut last_health = Instant::now();
    let mut last_sweep = Instant::now();
    let sweep_every = Duration::from_secs(engine.config.orphan_sweep_seconds.max(1));
    let capabilities = slot.provider.capabilities();
    let batch = capabilities.max_observe_batch.max(1);
    loop {
        let round = slot.followed.lock().unwrap().round(Instant::now(), batch);
        let mut answered = false;
        let mut throttled = None;
        for chunk in round.chunks(batch) {
            let handles: Vec<_> = chunk.iter().map(|(_, h)| h.clone()).collect();
            match engine
                .call_within(
                    &slot,
                    "observe",
                    observe_deadline(slot.deadline, handles.len()),
                    slot.provider.observe(&handles),
                )
                .await
            {
                Ok(observations) => {
                    answered = true;
                    let tails = engine
                        .tails_of_ended(&slot, &observations, capabilities.max_tail_batch)
                        .await;
                    engine.looked(&slot, chunk, observations, tails);
                }
                Err(EngineError::Provider {
                    source: ProviderError::Throttled { retry_after },
                    ..
                }) => {
                    throttled = Some(retry_after);
                    break;
                }
                Err(e) => tracing::warn!(provider = %slot.name, error = %e, "observe failed"),
            }
            // An in-process provider (sim, local) answers without waiting, and a round can
            // hold thousands of workloads: let the requests and reconciles waiting for this
            // worker thread run between batches.
            tokio::task::yield_now().await;
        }
        if answered {
            // The runtime just answered for its workloads: that is a health check passed,
            // at no extra call.
            *slot.health.lock().unwrap() = None;
            last_health = Instant::now();
        }
        let health_gap = slot.followed.lock().unwrap().health_gap(slot.health_every);
        if last_health.elapsed() >= health_gap {
            engine.check_health(&slot).await;
            last_health = Instant::now();
        }
        if last_sweep.elapsed() >= sweep_every {
            if engine.leads() {
                engine.sweep_orphans(&slot).await;
            }
            last_sweep = Instant::now();
        }
        // Until the soonest look, health check or sweep; a workload that could not be
        // looked at (the call failed) is tried again one base interval on.
        let now = Instant::now();
        let (due, base) = {
            let followed = slot.followed.lock().unwrap();
            (followed.next_due(), followed.base())
        };
        let mut wake = (last_health + health_gap).min(last_sweep + sweep_every);
        if let Some(due) = due {
            wake = wake.min(due.max(now + base));
        }
        if let Some(after) = throttled {
            wake = wake.max(now + after);
        }
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            _ = slot.new_workload.notified(), if throttled.is_none() => {}
        }
    }
}

/// How often ended jobs past `store.retention_days` are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Jobs one purge deletes at most (one transaction); the next batch follows at once.
const PURGE_BATCH: usize = 1000;

/// Deletes the jobs that ended longer ago than `keep`, shortly after start and then every
/// [`RETENTION_EVERY`], on the leading replica only (once per cluster).
pub(super) async fn retention(engine: Arc<Engine>, keep: chrono::Duration) {
    let mut every = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if !engine.leads() {
            continue;
        }
        let before = chrono::Utc::now() - keep;
        let mut purged = 0;
        loop {
            match engine.store.purge(before, PURGE_BATCH).await {
                Ok(n) => {
                    purged += n;
                    if (n as usize) < PURGE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention: the store is unavailable");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(jobs = purged, %before, "retention: deleted jobs that ended before");
            metrics::counter!("offload_jobs_purged_total").increment(purged);
        }
    }
}

/// Observations a provider pushes (a Kubernetes watch): a workload's change reaches its
/// job at once instead of at the next poll round, which stays as the safety net. A pushed
/// workload that no job follows is dropped.
pub(super) async fn pushed(
    engine: Arc<Engine>,
    slot: Arc<Slot>,
    mut observations: offload_provider::ObservationStream,
) {
    loop {
        let o = tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            o = observations.next() => match o {
                Some(o) => o,
                None => return tracing::warn!(provider = %slot.name, "the provider's push stream ended; polling only"),
            },
        };
        let Some(id) = super::job_of_key(&o.handle.key) else {
            continue;
        };
        let followed = [(id, o.handle.clone())];
        engine.record_observations(&slot, &followed, vec![o], HashMap::new());
    }
}

/// How long an observe of `workloads` may take: a call's deadline for every 10 of them
/// (ACA and ACI read each at ARM's read budget, which with three replicas is about 8 a
/// second: a batch of 100 takes over 12 s, and a call's deadline would lose every round).
fn observe_deadline(call: Duration, workloads: usize) -> Duration {
    call * workloads.div_ceil(10).max(1) as u32
}

/// What a sweep of the store found, for the scheduler.
enum Swept {
    /// A job of this replica's that may have no reconcile coming.
    Job(Uuid),
    /// Where the next sweep of this replica's jobs goes on from (none: from the first).
    Next(Option<Uuid>),
}

/// Jobs a sweep reads at most, of each kind.
const SWEEP_PAGE: usize = 10_000;

impl Engine {
    /// Sends the scheduler the ids of this replica's jobs that may have nothing driving
    /// them, and it reconciles those it does not already have in hand:
    ///
    /// - jobs queued for longer than a sweep interval, so that a committed job is
    ///   dispatched even when the poke after its commit never came (the client went away
    ///   mid-request, say);
    /// - a page of all its unfinished jobs, the next page each sweep, so that a job the
    ///   store says is this replica's is driven by it even when it never learnt of it (an
    ///   adoption whose answer was lost with its connection, after it had committed).
    async fn sweep(&self, found: mpsc::UnboundedSender<Swept>, owned_after: Option<Uuid>) {
        let age = chrono::Duration::seconds(self.config.queued_sweep_seconds as i64);
        let queued = self.store.queued(chrono::Utc::now() - age, SWEEP_PAGE).await;
        let owned = self.store.owned(owned_after, SWEEP_PAGE).await;
        let (queued, owned) = match (queued, owned) {
            (Ok(queued), Ok(owned)) => (queued, owned),
            (Err(e), _) | (_, Err(e)) => {
                return tracing::warn!(error = %e, "sweep: store unavailable")
            }
        };
        let next = match owned.len() {
            SWEEP_PAGE => owned.last().copied(),
            _ => None,
        };
        for id in queued.into_iter().chain(owned) {
            let _ = found.send(Swept::Job(id));
        }
        let _ = found.send(Swept::Next(next));
    }

    pub(super) async fn check_health(&self, slot: &Slot) {
        let result = self.call(slot, "check", slot.provider.check()).await;
        *slot.health.lock().unwrap() = result.err().map(|e| e.to_string());
    }

    /// Releases the provider's workloads that no job owns: the job is gone from the store,
    /// or the workload is not its current attempt's, or the job ended and was released
    /// already. A job's current, unreleased workload is never touched.
    pub(super) async fn sweep_orphans(&self, slot: &Slot) {
        let handles = match self.call(slot, "managed", slot.provider.managed()).await {
            Ok(handles) => handles,
            Err(e) => {
                return tracing::warn!(provider = %slot.name, error = %e, "orphan sweep failed")
            }
        };
        for handle in handles {
            let Some(id) = super::job_of_key(&handle.key) else {
                continue;
            };
            let owned = match self.store.get(id).await {
                Ok(Some(rec)) => rec.launch_key.as_deref() == Some(&handle.key) && !rec.released,
                Ok(None) => false,
                Err(e) => return tracing::warn!(error = %e, "orphan sweep: store unavailable"),
            };
            if owned {
                continue;
            }
            if let Err(e) = self.fence(None, slot, "release") {
                return tracing::info!(provider = %slot.name, error = %e, "orphan sweep stopped");
            }
            tracing::info!(provider = %slot.name, key = %handle.key, "releasing a workload no job owns");
            if let Err(e) = self
                .call(slot, "release", slot.provider.release(&handle))
                .await
            {
                tracing::warn!(provider = %slot.name, key = %handle.key, error = %e, "orphan release failed");
            }
        }
    }

    /// The log tails of the workloads `observations` show newly ended, by launch key, read
    /// together where the provider reads up to `per_call` in one call: a round that sees
    /// many jobs end costs one call for their tails instead of one per job. A tail this
    /// leaves out is read on its own when its job ends.
    async fn tails_of_ended(
        &self,
        slot: &Slot,
        observations: &[Observation],
        per_call: usize,
    ) -> HashMap<String, String> {
        let ended: Vec<_> = {
            let seen = self.observations.lock().unwrap();
            observations
                .iter()
                .filter(|o| matches!(o.phase, offload_provider::Phase::Exited { .. }))
                .filter(|o| seen.get(&o.handle.key).map(|s| &s.phase) != Some(&o.phase))
                .map(|o| o.handle.clone())
                .collect()
        };
        let mut tails = HashMap::new();
        if per_call == 0 || ended.len() < 2 {
            return tails;
        }
        let max_bytes = self.config.log_tail_bytes;
        for handles in ended.chunks(per_call) {
            match self
                .call(slot, "tails", slot.provider.tails(handles, max_bytes))
                .await
            {
                Ok(read) => tails.extend(read),
                Err(e) => tracing::warn!(provider = %slot.name, error = %e,
                    "could not read the log tails together; each is read on its own"),
            }
        }
        tails
    }

    /// Records one observe call's answer for `chunk` (and the `tails` read with it) and
    /// schedules each workload's next look by whether its phase changed. A workload the
    /// answer left out (ECS forgets a task for a round or two) counts as unchanged.
    fn looked(
        &self,
        slot: &Slot,
        chunk: &[(Uuid, offload_provider::Handle)],
        observations: Vec<Observation>,
        tails: HashMap<String, String>,
    ) {
        let running: HashSet<String> = observations
            .iter()
            .filter(|o| o.phase == offload_provider::Phase::Running)
            .map(|o| o.handle.key.clone())
            .collect();
        let changed = self.record_observations(slot, chunk, observations, tails);
        let now = Instant::now();
        let mut followed = slot.followed.lock().unwrap();
        for (id, handle) in chunk {
            let seen = match changed.contains(id) {
                true => Seen::Changed {
                    running: running.contains(&handle.key),
                },
                false => Seen::Unchanged,
            };
            followed.looked(*id, &handle.key, seen, now);
        }
    }

    /// Keeps the newest phase of each workload, by its launch key, and pokes the jobs
    /// whose phase changed; returns them. An answer for a workload the poller no longer
    /// follows (its job ended or moved to a new attempt while the call was out) is
    /// dropped, so nothing stale stays behind.
    fn record_observations(
        &self,
        slot: &Slot,
        chunk: &[(Uuid, offload_provider::Handle)],
        observations: Vec<Observation>,
        mut tails: HashMap<String, String>,
    ) -> HashSet<Uuid> {
        let by_key: HashMap<&str, Uuid> =
            chunk.iter().map(|(id, h)| (h.key.as_str(), *id)).collect();
        let (mut changed, mut poke) = (vec![], vec![]);
        {
            let mut seen = self.observations.lock().unwrap();
            for o in observations {
                let Some(&id) = by_key.get(o.handle.key.as_str()) else {
                    continue;
                };
                if !slot.follows(id, &o.handle.key) {
                    continue;
                }
                if seen.get(&o.handle.key).map(|s| &s.phase) != Some(&o.phase) {
                    // A workload still starting asks nothing of its job (which is
                    // `starting` since its launch): no reconcile, which would only read it.
                    if !matches!(o.phase, Phase::Starting { .. }) {
                        poke.push(id);
                    }
                    let observed = super::Observed {
                        tail: tails.remove(&o.handle.key),
                        phase: o.phase,
                        ran: o.ran,
                    };
                    seen.insert(o.handle.key, observed);
                    changed.push(id);
                }
            }
        }
        for id in poke {
            self.poke(id);
        }
        changed.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use offload_provider::Handle;

    use super::*;
    use crate::config::Config;
    use crate::store::secrets::SecretBox;
    use crate::store::sqlite::SqliteStore;

    /// Only an observation that asks something of its job reconciles it: a workload seen
    /// starting (its job has been `starting` since the launch) is recorded without a poke,
    /// which would only read the job again; one seen running pokes its job.
    #[tokio::test]
    async fn a_workload_seen_starting_pokes_no_reconcile_and_one_seen_running_does() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml("[providers.sim]\nkind = \"sim\"\n").unwrap();
        let key = SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db"), false, key).unwrap());
        let engine = Engine::new(&config, store).await.unwrap();
        let mut poked = engine.poked.lock().unwrap().take().unwrap();
        let slot = engine.slots[0].clone();
        let id = Uuid::now_v7();
        let handle = Handle {
            key: super::super::launch_key(id, 1),
            provider_ref: "sim-1".into(),
        };
        slot.follow(id, handle.clone(), None);
        let chunk = [(id, handle.clone())];
        let seen = |phase| Observation {
            handle: handle.clone(),
            phase,
            ran: None,
        };
        let starting = Phase::Starting {
            reason: Some("pulling the image".into()),
        };
        engine.record_observations(&slot, &chunk, vec![seen(starting)], HashMap::new());
        assert!(poked.try_recv().is_err(), "a workload seen starting poked its job");
        engine.record_observations(&slot, &chunk, vec![seen(Phase::Running)], HashMap::new());
        assert_eq!(poked.try_recv().ok().map(|(id, _)| id), Some(id), "a workload seen running");
    }

    /// A round of many batches lets other tasks run between them. An in-process provider
    /// (sim, local) answers without waiting, and without a yield a round of thousands of
    /// workloads held its worker thread, and every request queued on it, to the end.
    #[tokio::test(flavor = "current_thread")]
    async fn a_round_of_many_batches_lets_other_tasks_run_between_them() {
        const WORKLOADS: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(
            "[providers.sim]\nkind = \"sim\"\nmax_observe_batch = 1\npoll_interval_ms = 10\n",
        )
        .unwrap();
        let key = SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db"), false, key).unwrap());
        let engine = Engine::new(&config, store).await.unwrap();
        let slot = engine.slots[0].clone();
        for n in 0..WORKLOADS {
            let id = Uuid::now_v7();
            let handle = Handle {
                key: super::super::launch_key(id, 1),
                provider_ref: format!("sim-{n}"),
            };
            slot.follow(id, handle, None);
        }
        // Counts the workloads looked at so far each time it gets the thread.
        let counter = engine.clone();
        let counts = tokio::spawn(async move {
            let mut counts = vec![];
            loop {
                let n = counter.observations.lock().unwrap().len();
                counts.push(n);
                if n == WORKLOADS {
                    return counts;
                }
                tokio::task::yield_now().await;
            }
        });
        let poller = tokio::spawn(poll(engine.clone(), slot));
        let mut counts = tokio::time::timeout(Duration::from_secs(30), counts)
            .await
            .expect("the round did not look at every workload")
            .unwrap();
        counts.dedup();
        engine.shutdown.cancel();
        poller.await.unwrap();
        assert!(
            counts.iter().any(|&n| n > 0 && n < WORKLOADS),
            "nothing else ran during the round of {WORKLOADS} batches: {counts:?}"
        );
    }
}
