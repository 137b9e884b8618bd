//! One job's next step, decided from its stored state and the latest observation.
//!
//! - queued: route, take a place at the provider (or wait for one, and after
//!   `routing.max_wait_seconds` route again among providers with room), store the attempt
//!   and its launch key, then launch (the key is stored first, so a crash before the
//!   answer relaunches the same key, which the provider answers with the workload it
//!   already has);
//! - "no capacity" from a launch or an observation: fail over to the next-best provider
//!   as a new attempt, at most `routing.max_hops` times; otherwise wait where it is;
//! - starting / running: follow the observation; stop the workload at its timeout;
//! - cancelling: stop the workload, then end the job as cancelled;
//! - ended: keep the log tail and result, free the place, and after a short delay
//!   release the workload at its provider.
//!
//! Returns when to look at the job again; `None` means only when poked. A reconcile that
//! fails waits as the job's [`ErrorPolicy`](super::error_policy::ErrorPolicy) says.

use std::time::Duration;

use chrono::{DateTime, Utc};
use offload_provider::{Handle, Launch, LogQuery, Phase, ProviderError};
use uuid::Uuid;

use super::budgets::Admission;
use super::routing::task_of;
use super::{launch_key, Engine, EngineError, Slot};
use crate::model::{extract_result, AttemptCost, DurationSource, JobCost, JobState};
use crate::store::{JobRecord, Patch, StoreError};

/// How often a live job is looked at even with no news: a safety net for lost pokes. The
/// poller pokes a job when its workload changes, cancels poke it where it is owned, and a
/// change feed that reconnects pokes every job the replica follows, so this is seldom what
/// moves a job; each look is a store read, which adds up with 100,000 live jobs.
const SAFETY: Duration = Duration::from_secs(300);

const LIVE: [JobState; 3] = [JobState::Starting, JobState::Running, JobState::Cancelling];

/// When to look again at a job whose provider's share of the reconciles is all in use.
const BUSY_WAIT: Duration = Duration::from_millis(200);

/// When to look again at a job whose provider call was fenced: by then the lease has been
/// renewed, or the job is found to be another replica's.
const FENCED_WAIT: Duration = Duration::from_secs(1);

pub(super) async fn reconcile(engine: &Engine, id: Uuid) -> Option<Duration> {
    let result = async {
        let rec = match engine.fresh.take(id) {
            Some(rec) => rec,
            None => match engine.store.get(id).await? {
                Some(rec) => {
                    if rec.job.state == JobState::Queued && rec.job.attempts == 0 {
                        engine.fresh.read(id);
                    }
                    rec
                }
                None => {
                    engine.free_place(id, None);
                    return Ok(None);
                }
            },
        };
        if !engine.owns(&rec) {
            // Another replica's (adopted from this one while it was paused, say).
            engine.free_place(id, None);
            if let Some(key) = &rec.launch_key {
                engine.forget_observation(key);
            }
            return Ok(None);
        }
        // A launched job's provider lends this reconcile one of its share (a queued job's
        // dispatch takes one once it knows where the job goes).
        let _permit = match rec.job.provider.as_deref().and_then(|p| engine.slot(p)) {
            Some(slot) if rec.job.state != JobState::Queued => Some(slot.reconcile_permit()?),
            _ => None,
        };
        match rec.job.state {
            JobState::Queued => {
                let span = tracing::debug_span!("dispatch", job = %id);
                tracing::Instrument::instrument(engine.dispatch(rec), span).await
            }
            JobState::Starting | JobState::Running | JobState::Cancelling => {
                engine.follow(rec).await
            }
            _ => {
                engine.free_place(id, rec.job.provider.as_deref());
                engine.release_workload(rec).await
            }
        }
    }
    .await;
    match result {
        Ok(next) => {
            engine.reconcile_errors.forget(id);
            next
        }
        Err(EngineError::Store(StoreError::Refused(why))) => engine.refused(id, why).await,
        Err(EngineError::Busy(provider)) => {
            tracing::debug!(job = %id, %provider, "the provider's share of reconciles is in use; looking again soon");
            Some(BUSY_WAIT)
        }
        Err(EngineError::Fenced(why)) => {
            // The next look finds the job another replica's, or the lease renewed.
            tracing::info!(job = %id, why = %why, "a provider call was not made");
            Some(FENCED_WAIT)
        }
        Err(e) => {
            let (n, wait) = engine.reconcile_errors.failed(id);
            tracing::warn!(job = %id, error = %e, failures = n, retry_in = ?wait, "reconcile failed");
            Some(wait)
        }
    }
}

type Step = Result<Option<Duration>, EngineError>;

/// Adds an ended attempt's cost to `offload_cost_usd_total` (a gauge that only grows: the
/// metrics crate counts in whole numbers).
pub(super) fn count_cost(cost: Option<&JobCost>) {
    if let Some(c) = cost {
        let this_attempt = crate::model::usd(c.usd.unwrap_or(c.earlier_usd) - c.earlier_usd);
        metrics::gauge!("offload_cost_usd_total", "provider" => c.provider.clone())
            .increment(this_attempt);
    }
}

/// Counts what an ended job would have cost at its reference in
/// `offload_reference_usd_total`, at the provider it ended on (one without a reference, at
/// what it cost), so that what routing saved is that sum less `offload_cost_usd_total`'s.
pub(super) fn count_reference(cost: Option<&JobCost>) {
    if let Some(c) = cost {
        let reference = c.reference.as_ref().and_then(|r| r.usd).or(c.usd).unwrap_or(0.0);
        metrics::gauge!("offload_reference_usd_total", "provider" => c.provider.clone())
            .increment(reference);
    }
}

/// Counts a job's end in `offload_jobs_ended_total`: the store's counts (`offload_jobs`)
/// cover a job only until its workload is released.
pub(super) fn count_end(provider: Option<&str>, state: JobState) {
    metrics::counter!(
        "offload_jobs_ended_total",
        "provider" => provider.unwrap_or_default().to_string(),
        "state" => state.as_str()
    )
    .increment(1);
}

/// When the current attempt started running: a `started_at` from before its dispatch is an
/// earlier attempt's.
fn this_attempt_start(rec: &JobRecord) -> Option<DateTime<Utc>> {
    rec.job
        .started_at
        .filter(|s| rec.dispatched_at.is_none_or(|d| *s >= d))
}

/// The job's time limit, when its runtime reports that its workload finished after the
/// deadline (`timeout_seconds` from dispatch) by more than a second (a workload the engine
/// stopped at the deadline takes a moment to end).
fn ran_past_deadline(rec: &JobRecord, ran: Option<offload_provider::RunTimes>) -> Option<u64> {
    let limit = rec.job.spec.timeout_seconds?;
    let deadline = deadline_base(rec)? + chrono::Duration::seconds(limit as i64 + 1);
    let finished: DateTime<Utc> = ran?.finished.into();
    (finished > deadline).then_some(limit)
}

/// When the job's timeout began: its first dispatch (a job stored before that was kept
/// has its current attempt's).
fn deadline_base(rec: &JobRecord) -> Option<DateTime<Utc>> {
    rec.first_dispatched_at.or(rec.dispatched_at)
}

/// How many of the job's attempts so far were preempted.
pub(super) fn preemptions(rec: &JobRecord) -> u32 {
    rec.job
        .cost
        .as_ref()
        .map_or(0, |c| c.earlier.iter().filter(|a| a.preempted).count() as u32)
}

/// Whole seconds from `started` (none: it never started) to `finished`, rounded up.
fn run_seconds(started: Option<DateTime<Utc>>, finished: DateTime<Utc>) -> Option<u64> {
    started.map(|at| ((finished - at).num_milliseconds().max(0) as u64).div_ceil(1000))
}

/// Whether a provider's answer to a stop or delete says the workload is already gone.
fn gone(result: &Result<(), EngineError>) -> bool {
    matches!(
        result,
        Ok(())
            | Err(EngineError::Provider {
                source: ProviderError::NotFound(_),
                ..
            })
    )
}

impl Engine {
    async fn dispatch(&self, rec: JobRecord) -> Step {
        let id = rec.job.id;
        let auto = rec.job.spec.provider == "auto";
        let (seconds, _) = self.expected_duration(&rec.tenant, &rec.job.spec).await;
        let ranked = match self.route(&rec, seconds) {
            Ok(ranked) => ranked,
            Err(why) => return self.end_unlaunched(&rec, None, JobState::Failed, why).await,
        };
        let (mut slot, mut estimate) = ranked[0];
        // Its first dispatch is admitted by its budgets, at the estimate where it goes
        // first; later attempts were admitted with it.
        let mut budget_note = None;
        if deadline_base(&rec).is_none() {
            match self.budgets.admit(&rec, estimate.estimated_usd).await? {
                Admission::Admitted(note) => budget_note = note,
                Admission::Wait(reason) => return self.wait_for_budget(&rec, reason).await,
            }
        }
        let mut how = if !auto {
            "named"
        } else if rec.excluded.is_empty() {
            "auto"
        } else {
            "failover"
        };
        let mut event = String::new();
        let tenant = rec.tenant.as_str();
        if !slot.places.take(id, tenant) {
            let waited = slot.places.wait(id, tenant, rec.job.spec.priority);
            let max_wait = Duration::from_secs(self.routing.max_wait_seconds);
            if !auto {
                return Ok(None); // woken when a place frees
            }
            let elsewhere = match waited >= max_wait {
                true => ranked[1..].iter().find(|(s, _)| s.places.take(id, tenant)),
                false => None,
            };
            let Some(&(other, other_estimate)) = elsewhere else {
                // Woken when a place frees, or when the wait is up.
                return Ok(Some(max_wait.saturating_sub(waited).max(Duration::from_secs(1))));
            };
            slot.places.free(id);
            event = format!(
                "waited {} s for a place at {}; ",
                waited.as_secs(),
                slot.name
            );
            (slot, estimate, how) = (other, other_estimate, "max_wait");
        }
        let slot = slot.clone();
        let _permit = match slot.reconcile_permit() {
            Ok(permit) => permit,
            Err(busy) => {
                slot.places.free(id);
                return Err(busy);
            }
        };
        let attempt = rec.job.attempts + 1;
        let key = launch_key(id, attempt);
        let mut dispatched = format!("{event}dispatched to {} (attempt {attempt})", slot.name);
        if let Some(note) = budget_note {
            dispatched = format!("{dispatched}; {note}");
        }
        let patch = Patch {
            state: Some(JobState::Starting),
            provider: Some(slot.name.clone()),
            provider_ref: Some(None),
            attempts: Some(attempt),
            if_attempts: Some(rec.job.attempts),
            launch_key: Some(key),
            dispatched_at: Some(Utc::now()),
            first_dispatched_at: rec.first_dispatched_at.is_none().then(Utc::now),
            // A reason it waited for (a budget) no longer holds.
            reason: rec.job.reason.is_some().then(|| dispatched.clone()),
            event: Some(dispatched),
            cost: Some(JobCost {
                provider: slot.name.clone(),
                hourly_usd: estimate.hourly_usd,
                estimated_usd: estimate.estimated_usd,
                billed_seconds: None,
                usd: None,
                // What the job cost so far (a job sent back to the queue has its usd so).
                earlier_usd: rec
                    .job
                    .cost
                    .as_ref()
                    .map_or(0.0, |c| c.usd.unwrap_or(c.earlier_usd)),
                earlier: rec
                    .job
                    .cost
                    .as_ref()
                    .map_or_else(Vec::new, |c| c.earlier.clone()),
                reference: self.reference(&rec.job.spec, &ranked),
            }),
            ..Patch::default()
        };
        match self.store.update(id, &[JobState::Queued], patch).await {
            Ok(Some(rec)) => {
                metrics::counter!(
                    "offload_jobs_routed_total",
                    "provider" => slot.name.clone(),
                    "reason" => how
                )
                .increment(1);
                self.changed(id);
                self.launch(rec, &slot, true).await
            }
            Ok(None) => {
                slot.let_go(id);
                Ok(Some(Duration::ZERO))
            }
            Err(e) => {
                // Nothing was stored: the place is not the job's.
                slot.let_go(id);
                Err(e.into())
            }
        }
    }

    /// Keeps a job queued for its budgets, with `reason` as its reason (stored once: it
    /// waits until its budgets' round wakes it).
    async fn wait_for_budget(&self, rec: &JobRecord, reason: String) -> Step {
        if rec.job.reason.as_deref() != Some(reason.as_str()) {
            let patch = Patch {
                reason: Some(reason.clone()),
                event: Some(reason),
                ..Patch::default()
            };
            if self.store.update(rec.job.id, &[JobState::Queued], patch).await?.is_some() {
                self.changed(rec.job.id);
            }
        }
        Ok(None)
    }

    /// Launches the job's current key; `fresh` when the key was stored just now, in this
    /// reconcile, so no earlier call can have started anything under it.
    async fn launch(&self, rec: JobRecord, slot: &Slot, fresh: bool) -> Step {
        let id = rec.job.id;
        let key = rec
            .launch_key
            .clone()
            .unwrap_or_else(|| launch_key(id, rec.job.attempts));
        let resources = match rec.job.spec.validate() {
            Ok(r) => r,
            Err(errors) => {
                let why = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                return self
                    .end_unlaunched(
                        &rec,
                        Some(slot),
                        JobState::Failed,
                        format!("invalid spec: {why}"),
                    )
                    .await;
            }
        };
        let launch = Launch {
            key,
            job_id: id.to_string(),
            attempt: rec.job.attempts,
            spec: rec.job.spec.workload(
                resources,
                slot.provider.kind(),
                &self.staging.policy(&rec.tenant),
            ),
            // The stored spec names its secrets (their values redacted): none, no read.
            secret_env: match rec.job.spec.secret_env.is_empty() {
                true => Default::default(),
                false => self.store.secrets(id).await?,
            },
            fresh,
        };
        self.fence(Some(&rec), slot, "launch")?;
        let error = match self
            .call(slot, "launch", slot.provider.launch(&launch))
            .await
        {
            Ok(handle) => {
                self.launch_errors.forget(id);
                self.capacity_waits.forget(id);
                let patch = Patch {
                    provider_ref: Some(Some(handle.provider_ref.clone())),
                    event: Some(format!("launched as {}", handle.provider_ref)),
                    ..Patch::default()
                };
                self.store.update(id, &LIVE, patch).await?;
                let expected = match self.expected_duration(&rec.tenant, &rec.job.spec).await {
                    (_, DurationSource::Default) => None,
                    (seconds, _) => Some(Duration::from_secs(seconds)),
                };
                slot.follow(id, handle, expected);
                return Ok(Some(self.next_look(&rec)));
            }
            Err(EngineError::Provider { source, .. }) => source,
            Err(e) => return Err(e),
        };
        let name = &slot.name;
        match error {
            ProviderError::Throttled { retry_after } => Ok(Some(retry_after)),
            ProviderError::Capacity(why) => self.no_capacity(&rec, slot, why).await,
            ProviderError::Transient(_) | ProviderError::NotFound(_) => {
                let (failures, wait) = self.launch_errors.failed(id);
                if failures > self.config.launch_retries {
                    let why = format!("launch at {name} failed {failures} times; last: {error}");
                    return self
                        .end_unlaunched(&rec, Some(slot), JobState::Failed, why)
                        .await;
                }
                tracing::info!(job = %id, provider = %name, error = %error, "launch failed; retrying");
                Ok(Some(wait))
            }
            ProviderError::InvalidSpec(why) => {
                self.end_unlaunched(
                    &rec,
                    Some(slot),
                    JobState::Failed,
                    format!("{name} refused the spec: {why}"),
                )
                .await
            }
            ProviderError::Config(why) => {
                self.end_unlaunched(
                    &rec,
                    Some(slot),
                    JobState::Failed,
                    format!("{name} is misconfigured: {why}"),
                )
                .await
            }
        }
    }

    /// Where an `auto` job that `slot` has no room for can fail over to: the providers it
    /// would leave behind (this one included), and the hop's number; `None` when it named
    /// its provider, has made `routing.max_hops` hops, or no other provider can run it.
    fn failover(&self, rec: &JobRecord, slot: &Slot) -> Option<(Vec<String>, usize)> {
        let hops = rec.excluded.len();
        if rec.job.spec.provider != "auto" || hops >= self.routing.max_hops as usize {
            return None;
        }
        let mut excluded = rec.excluded.clone();
        excluded.push(slot.name.clone());
        self.alternative(&rec.job.spec, &excluded)
            .then_some((excluded, hops + 1))
    }

    /// The provider has no room for the job now (a launch answered so). An `auto` job
    /// fails over to the next-best provider as a new attempt; otherwise it waits here and
    /// launches the same key again later (backing off), for capacity is a reason to wait,
    /// not to fail.
    async fn no_capacity(&self, rec: &JobRecord, slot: &Slot, why: String) -> Step {
        let (id, name) = (rec.job.id, &slot.name);
        if let Some((excluded, hop)) = self.failover(rec, slot) {
            let max = self.routing.max_hops;
            let patch = Patch {
                state: Some(JobState::Queued),
                excluded: Some(excluded),
                event: Some(format!(
                    "no capacity at {name} ({why}); failing over (hop {hop} of at most {max})"
                )),
                ..Patch::default()
            };
            slot.let_go(id);
            self.capacity_waits.forget(id);
            // A cancel may have come meanwhile; the next reconcile ends the job then.
            self.transition(id, &[JobState::Starting], patch).await?;
            return Ok(Some(Duration::ZERO));
        }
        let wait = self.capacity_wait(rec, slot, &why).await?;
        Ok(Some(wait.min(self.next_look(rec))))
    }

    /// Counts one more "no capacity" for a job with nowhere else to go, saying so in its
    /// events the first time; how long to wait before trying again.
    async fn capacity_wait(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        why: &str,
    ) -> Result<Duration, EngineError> {
        let (id, name) = (rec.job.id, &slot.name);
        let (n, wait) = self.capacity_waits.failed(id);
        if n == 1 {
            let patch = Patch {
                event: Some(format!(
                    "no capacity at {name} ({why}); nowhere else to go, waiting"
                )),
                ..Patch::default()
            };
            self.store.update(id, &LIVE, patch).await?;
        }
        tracing::info!(job = %id, provider = %name, waits = n, retry_in = ?wait, "no capacity; waiting");
        Ok(wait)
    }

    async fn follow(&self, rec: JobRecord) -> Step {
        let id = rec.job.id;
        let Some(slot) = rec
            .job
            .provider
            .as_deref()
            .and_then(|p| self.slot(p))
            .cloned()
        else {
            let why = format!("provider {:?} is no longer configured", rec.job.provider);
            return self.end_unlaunched(&rec, None, JobState::Failed, why).await;
        };
        slot.places.hold(id, &rec.tenant);
        let cancel_reason = (rec.job.state == JobState::Cancelling).then(|| {
            let who = rec.cancel_requested_by.as_deref().unwrap_or("the gateway");
            format!("cancelled by {who}")
        });
        let timeout_reason = match (deadline_base(&rec), rec.job.spec.timeout_seconds) {
            (Some(at), Some(limit))
                if Utc::now() >= at + chrono::Duration::seconds(limit as i64) =>
            {
                Some(format!("timeout: still running after {limit} s"))
            }
            _ => None,
        };
        let (Some(key), Some(pref)) = (rec.launch_key.clone(), rec.job.provider_ref.clone()) else {
            // No launch answer is stored: either the launch keeps failing (no capacity,
            // say) or the gateway stopped before storing the answer.
            if let Some(reason) = cancel_reason {
                return self
                    .end_unlaunched(&rec, Some(&slot), JobState::Cancelled, reason)
                    .await;
            }
            if let Some(reason) = timeout_reason {
                return self
                    .end_unlaunched(&rec, Some(&slot), JobState::Failed, reason)
                    .await;
            }
            // Launch the same key again; the provider hands back the workload if it exists.
            return self.launch(rec, &slot, false).await;
        };
        let handle = Handle {
            key,
            provider_ref: pref,
        };
        slot.follow(id, handle.clone(), None);
        let (phase, ran) = self
            .observations
            .lock()
            .unwrap()
            .get(&handle.key)
            .map_or((None, None), |o| (Some(o.phase.clone()), o.ran));

        if let Some(reason) = cancel_reason {
            // A workload that has ended by itself, or that its provider has lost, has
            // nothing left to stop (and a stop that keeps failing would keep the job
            // cancelling).
            let gone = match phase {
                Some(Phase::Exited { exit_code, .. }) => Some(exit_code),
                Some(Phase::Lost { .. } | Phase::Preempted { .. }) => Some(None),
                _ => None,
            };
            if let Some(exit_code) = gone {
                return self
                    .end(&rec, &slot, &handle, JobState::Cancelled, exit_code, reason)
                    .await;
            }
            return self
                .stop_workload(&rec, &slot, &handle, JobState::Cancelled, reason)
                .await;
        }
        // Past its timeout but ended by itself: its own outcome stands (below), unless its
        // runtime says it ran on past the deadline, which only a look nobody made in time
        // could miss (its owner died, and the replica that adopted it found it ended): it
        // ends as the stop at its deadline would have ended it.
        let ended = matches!(phase, Some(Phase::Exited { .. }));
        if let Some(reason) = &timeout_reason {
            if !ended {
                return self
                    .stop_workload(&rec, &slot, &handle, JobState::Failed, reason.clone())
                    .await;
            }
            if let Some(limit) = ran_past_deadline(&rec, ran) {
                let reason = format!("timeout: ran past its limit of {limit} s");
                return self
                    .end(&rec, &slot, &handle, JobState::Failed, None, reason)
                    .await;
            }
        }
        match phase {
            Some(Phase::Running) if rec.job.state == JobState::Starting => {
                let now = Utc::now();
                let patch = Patch {
                    state: Some(JobState::Running),
                    started_at: Some(now),
                    ..Patch::default()
                };
                if self.transition(id, &[JobState::Starting], patch).await? {
                    if let Some(latency) = rec.dispatched_at.and_then(|d| (now - d).to_std().ok())
                    {
                        slot.starts.record(latency);
                    }
                }
            }
            Some(Phase::NoCapacity { reason }) => {
                return self.unplaced(&rec, &slot, &handle, reason).await
            }
            Some(Phase::Exited { exit_code, reason }) => {
                let state = if exit_code == Some(0) {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                };
                let reason = reason.unwrap_or_else(|| match exit_code {
                    Some(0) => "exited with code 0".into(),
                    Some(code) => format!("exited with code {code}"),
                    None => "ended without an exit code".into(),
                });
                return self
                    .end(&rec, &slot, &handle, state, exit_code, reason)
                    .await;
            }
            Some(Phase::Lost { reason }) => return self.lost(&rec, &slot, &handle, reason).await,
            Some(Phase::Preempted { reason }) => {
                return self.preempted(&rec, &slot, &handle, reason).await
            }
            _ => {}
        }
        Ok(Some(self.next_look(&rec)))
    }

    /// Stops the workload at its provider, then ends the job in `state`. A workload the
    /// provider no longer knows counts as stopped.
    async fn stop_workload(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        handle: &Handle,
        state: JobState,
        reason: String,
    ) -> Step {
        self.fence(Some(rec), slot, "cancel")?;
        let stopped = self
            .call(slot, "cancel", slot.provider.cancel(handle, &reason))
            .await;
        if !gone(&stopped) {
            stopped?;
        }
        self.end(rec, slot, handle, state, None, reason).await
    }

    /// Stops and deletes a workload that is not to run on (a workload the provider no
    /// longer knows counts as stopped and deleted), so that it cannot come back and run
    /// beside its successor.
    async fn remove_workload(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        handle: &Handle,
        reason: &str,
    ) -> Result<(), EngineError> {
        self.fence(Some(rec), slot, "cancel")?;
        let stopped = self
            .call(slot, "cancel", slot.provider.cancel(handle, reason))
            .await;
        if !gone(&stopped) {
            stopped?;
        }
        let released = self
            .call(slot, "release", slot.provider.release(handle))
            .await;
        if !gone(&released) {
            released?;
        }
        Ok(())
    }

    /// Puts a launched job back in the queue for a new attempt, after its workload was
    /// removed: what this attempt cost, and where, goes into the job's `earlier` attempts.
    async fn requeue(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        handle: &Handle,
        patch: Patch,
        preempted: bool,
    ) -> Step {
        let ended = self.final_cost(rec, run_seconds(this_attempt_start(rec), Utc::now()));
        let folded = ended.clone().map(|mut cost| {
            let total = cost.usd.unwrap_or(cost.earlier_usd);
            cost.earlier.push(AttemptCost {
                provider: cost.provider.clone(),
                billed_seconds: cost.billed_seconds.unwrap_or(0),
                usd: crate::model::usd(total - cost.earlier_usd),
                preempted,
            });
            cost.earlier_usd = total;
            cost.usd = Some(total);
            cost
        });
        let patch = Patch {
            state: Some(JobState::Queued),
            provider_ref: Some(None),
            cost: folded,
            ..patch
        };
        if self
            .transition(rec.job.id, &[JobState::Starting, JobState::Running], patch)
            .await?
        {
            count_cost(ended.as_ref());
        }
        slot.let_go(rec.job.id);
        self.capacity_waits.forget(rec.job.id);
        self.forget_observation(&handle.key);
        Ok(Some(Duration::ZERO))
    }

    /// The workload vanished: make sure it is stopped and deleted, then launch a new
    /// attempt, or fail when none are left.
    async fn lost(&self, rec: &JobRecord, slot: &Slot, handle: &Handle, reason: String) -> Step {
        self.remove_workload(rec, slot, handle, &reason).await?;
        if self.counted_attempts(rec) >= self.config.max_attempts {
            let why = format!(
                "workload lost ({reason}) on the last of {} attempts",
                self.config.max_attempts
            );
            return self
                .end_unlaunched(rec, Some(slot), JobState::Failed, why)
                .await;
        }
        let patch = Patch {
            event: Some(format!(
                "workload lost at {} ({reason}); stopped it, launching a new attempt",
                slot.name
            )),
            ..Patch::default()
        };
        self.requeue(rec, slot, handle, patch, false).await
    }

    /// The attempts that count against `engine.max_attempts`: all but those that failed
    /// over for want of capacity and the preemptions allowed on spot.
    fn counted_attempts(&self, rec: &JobRecord) -> u32 {
        rec.job
            .attempts
            .saturating_sub(rec.excluded.len() as u32)
            .saturating_sub(preemptions(rec).min(self.routing.max_preemptions))
    }

    /// The runtime took the workload back (a spot interruption): not the job's failure.
    /// It is counted, its workload removed, and the job launched again as a new attempt
    /// (its cost so far kept): on spot again until `routing.max_preemptions`, after that
    /// only where nothing is spot.
    async fn preempted(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        handle: &Handle,
        reason: String,
    ) -> Step {
        self.remove_workload(rec, slot, handle, &reason).await?;
        metrics::counter!("offload_preemptions_total", "provider" => slot.name.clone())
            .increment(1);
        let (n, max) = (preemptions(rec) + 1, self.routing.max_preemptions);
        // Past the preemptions allowed on spot, a preemption counts as a lost attempt does
        // (where nothing is spot, or on a named provider, one may still come).
        if n > max && self.counted_attempts(rec) >= self.config.max_attempts {
            let why = format!(
                "preempted at {} ({reason}) {n} times, on the last of {} attempts",
                slot.name, self.config.max_attempts
            );
            return self
                .end_unlaunched(rec, Some(slot), JobState::Failed, why)
                .await;
        }
        let next = match n >= max {
            true => "launching a new attempt where nothing is spot",
            false => "launching a new attempt",
        };
        let patch = Patch {
            event: Some(format!(
                "preempted at {} ({reason}): preemption {n} of {max} on spot; {next}",
                slot.name
            )),
            ..Patch::default()
        };
        self.requeue(rec, slot, handle, patch, true).await
    }

    /// The provider accepted the workload but cannot place it (a pod unschedulable past
    /// its limit). An `auto` job with somewhere else to go fails over as a new attempt,
    /// once its workload here is removed; otherwise it waits here, where it may yet be
    /// placed.
    async fn unplaced(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        handle: &Handle,
        reason: String,
    ) -> Step {
        let Some((excluded, hop)) = self.failover(rec, slot) else {
            self.capacity_wait(rec, slot, &reason).await?;
            return Ok(Some(self.next_look(rec)));
        };
        self.remove_workload(rec, slot, handle, &reason).await?;
        let patch = Patch {
            excluded: Some(excluded),
            event: Some(format!(
                "no capacity at {} ({reason}); stopped it, failing over (hop {hop} of at most {})",
                slot.name, self.routing.max_hops
            )),
            ..Patch::default()
        };
        self.requeue(rec, slot, handle, patch, false).await
    }

    /// Ends a launched job: keeps its log tail and result, then frees its place.
    async fn end(
        &self,
        rec: &JobRecord,
        slot: &Slot,
        handle: &Handle,
        state: JobState,
        exit_code: Option<i32>,
        reason: String,
    ) -> Step {
        let id = rec.job.id;
        // What the runtime says the workload ran, where it says; else what the gateway saw.
        let (reported, read) = self
            .observations
            .lock()
            .unwrap()
            .get_mut(&handle.key)
            .map_or((None, None), |o| (o.ran, o.tail.take()));
        let tail = match read {
            Some(tail) => tail,
            None => self.log_tail(id, slot, handle).await,
        };
        // A job of several steps keeps how each went, and the end of each one's output.
        let steps = match rec.job.spec.steps.is_some() {
            true => match self
                .call(slot, "logs", slot.provider.step_runs(handle, super::STEP_TAIL_BYTES))
                .await
            {
                Ok(runs) => Some(runs.into_iter().map(Into::into).collect()),
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "could not read how the steps went");
                    None
                }
            },
            false => None,
        };
        let now = Utc::now();
        // When this attempt started: as seen running, else as its runtime reports. A
        // workload that ended before it was ever seen running, on a runtime that does not
        // say when it ran, has no known start: its run time is unknown, not 0 s.
        let started_at = this_attempt_start(rec).or(reported.map(|r| r.started.into()));
        let seconds = reported
            .map(|r| r.seconds())
            .or_else(|| run_seconds(started_at, now));
        let cost = self.final_cost(rec, seconds.or(Some(0)));
        if let (JobState::Succeeded, Some(task), Some(s)) =
            (state, task_of(&rec.tenant, &rec.job.spec), seconds)
        {
            self.runs.record(&task, s);
        }
        let patch = Patch {
            state: Some(state),
            exit_code,
            cost: cost.clone(),
            reason: Some(reason),
            result: extract_result(&tail),
            log_tail: Some(tail),
            steps,
            started_at: started_at.filter(|_| rec.job.started_at.is_none()),
            finished_at: Some(now),
            ..Patch::default()
        };
        if self.store.update(id, &LIVE, patch).await?.is_some() {
            count_cost(cost.as_ref());
            count_reference(cost.as_ref());
            count_end(Some(&slot.name), state);
        }
        self.ended(id, slot);
        self.forget_observation(&handle.key);
        Ok(Some(Duration::from_secs(self.config.release_after_seconds)))
    }

    /// The end of a workload's log, as much as `log_tail_bytes`; empty when it cannot be read.
    async fn log_tail(&self, id: Uuid, slot: &Slot, handle: &Handle) -> String {
        let query = LogQuery {
            cursor: None,
            tail_bytes: Some(self.config.log_tail_bytes),
        };
        match self
            .call(slot, "logs", slot.provider.logs(handle, &query))
            .await
        {
            Ok(chunk) => chunk.text,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not read the log tail");
                String::new()
            }
        }
    }

    /// The store refused a write of this job, which it would refuse again however often it
    /// were sent (a value too big for an index, say): ends the job `failed` with the store's
    /// reason, through a write that carries no more than that, so that it does not hold
    /// its place retrying forever. Its workload, if it has one, is released as any ended
    /// job's is.
    async fn refused(&self, id: Uuid, why: String) -> Option<Duration> {
        tracing::error!(job = %id, error = %why, "the store refused a write of this job; ending it");
        let reason = format!("the job store refused a write of this job: {why}");
        let ended = async {
            let Some(rec) = self.store.get(id).await? else {
                return Ok(None);
            };
            let slot = rec.job.provider.as_deref().and_then(|p| self.slot(p)).cloned();
            if rec.job.state.is_terminal() {
                return Ok(Some(Duration::ZERO));
            }
            self.end_unlaunched(&rec, slot.as_deref(), JobState::Failed, reason)
                .await
        }
        .await;
        // Whatever became of that write, the job is done with its place here.
        self.free_place(id, None);
        match ended {
            Ok(next) => {
                self.reconcile_errors.forget(id);
                next
            }
            Err(e) => {
                let (n, wait) = self.reconcile_errors.failed(id);
                tracing::warn!(job = %id, error = %e, failures = n, retry_in = ?wait, "could not end a job the store refused");
                Some(wait)
            }
        }
    }

    /// Ends a job that has no workload to keep (never launched, or its launch given up).
    async fn end_unlaunched(
        &self,
        rec: &JobRecord,
        slot: Option<&Slot>,
        state: JobState,
        reason: String,
    ) -> Step {
        let id = rec.job.id;
        let now = Utc::now();
        let cost = self.final_cost(rec, run_seconds(this_attempt_start(rec), now));
        let patch = Patch {
            state: Some(state),
            reason: Some(reason),
            finished_at: Some(now),
            released: Some(rec.job.provider_ref.is_none()),
            cost: cost.clone(),
            ..Patch::default()
        };
        let ended = self
            .store
            .update(
                id,
                &[
                    JobState::Queued,
                    JobState::Starting,
                    JobState::Running,
                    JobState::Cancelling,
                ],
                patch,
            )
            .await?;
        if ended.is_some() {
            count_cost(cost.as_ref());
            count_reference(cost.as_ref());
            count_end(rec.job.provider.as_deref(), state);
        }
        match slot {
            Some(slot) => self.ended(id, slot),
            None => self.free_place(id, None),
        }
        if let Some(key) = &rec.launch_key {
            self.forget_observation(key);
        }
        Ok(Some(Duration::from_secs(self.config.release_after_seconds)))
    }

    /// The job's cost once its attempt ran for `seconds` (none: it never started, and
    /// costs 0), billed under its provider's rules at the hourly price of its estimate.
    /// `None` when it was never dispatched.
    /// A queued job has no attempt under way (one that was sent back to the queue had its
    /// cost moved into `earlier` then): it costs what its earlier attempts cost.
    pub(super) fn final_cost(&self, rec: &JobRecord, seconds: Option<u64>) -> Option<JobCost> {
        let mut cost = rec.job.cost.clone()?;
        if rec.job.state == JobState::Queued {
            cost.usd = Some(cost.earlier_usd);
            return Some(cost);
        }
        let billed = match (seconds, self.slot(&cost.provider)) {
            (Some(s), Some(slot)) => slot.pricing().sheet.billed_seconds(s),
            _ => 0,
        };
        cost.billed_seconds = Some(billed);
        let this = crate::model::usd(cost.hourly_usd * billed as f64 / 3600.0);
        cost.usd = Some(crate::model::usd(cost.earlier_usd + this));
        // The same run at the reference, under its own billing rules.
        if let Some(reference) = cost.reference.as_mut() {
            let billed = match (seconds, self.slot(&reference.provider)) {
                (Some(s), Some(slot)) => slot.pricing().sheet.billed_seconds(s),
                _ => 0,
            };
            reference.usd = Some(crate::model::usd(reference.hourly_usd * billed as f64 / 3600.0));
        }
        Some(cost)
    }

    /// Drops the observation of a workload the poller no longer follows. Called after the
    /// poller stopped following it, so that no answer in flight can put it back.
    fn forget_observation(&self, key: &str) {
        self.observations.lock().unwrap().remove(key);
    }

    /// The job has ended: free its place, forget its failure counts, tell its waiters.
    fn ended(&self, id: Uuid, slot: &Slot) {
        slot.let_go(id);
        self.launch_errors.forget(id);
        self.capacity_waits.forget(id);
        self.changed(id);
    }

    /// Frees any place `id` holds: at `provider` when known, else at every provider. A job
    /// that has ended or is back in the queue holds none, whatever failed on its way there.
    pub(super) fn free_place(&self, id: Uuid, provider: Option<&str>) {
        self.budgets.unpark(id);
        for slot in self
            .slots
            .iter()
            .filter(|s| provider.is_none_or(|p| p == s.name))
        {
            slot.let_go(id);
        }
    }

    /// Deletes an ended job's workload at its provider once the release delay has passed.
    async fn release_workload(&self, rec: JobRecord) -> Step {
        if rec.released {
            return Ok(None);
        }
        let id = rec.job.id;
        let finished = rec.job.finished_at.unwrap_or_else(Utc::now);
        let due = finished + chrono::Duration::seconds(self.config.release_after_seconds as i64);
        if let Ok(wait) = (due - Utc::now()).to_std() {
            return Ok(Some(wait));
        }
        let slot = rec.job.provider.as_deref().and_then(|p| self.slot(p));
        if let (Some(slot), Some(key), Some(pref)) = (slot, &rec.launch_key, &rec.job.provider_ref)
        {
            let handle = Handle {
                key: key.clone(),
                provider_ref: pref.clone(),
            };
            self.fence(Some(&rec), slot, "release")?;
            let released = self
                .call(slot, "release", slot.provider.release(&handle))
                .await;
            if !gone(&released) {
                released?;
            }
        }
        self.store
            .update(
                id,
                &[],
                Patch {
                    released: Some(true),
                    ..Patch::default()
                },
            )
            .await?;
        Ok(None)
    }

    /// When to look at a live job again without news: its timeout, or the safety net.
    fn next_look(&self, rec: &JobRecord) -> Duration {
        let timeout = deadline_base(rec)
            .zip(rec.job.spec.timeout_seconds)
            .map(|(at, limit)| {
                (at + chrono::Duration::seconds(limit as i64) - Utc::now())
                    .to_std()
                    .unwrap_or_default()
            });
        timeout.map_or(SAFETY, |t| t.min(SAFETY))
    }

    fn changed(&self, id: Uuid) {
        self.changes.notify(id);
    }

    /// Applies `patch` if the job is in one of `expect`, and tells its waiters when it was.
    async fn transition(
        &self,
        id: Uuid,
        expect: &[JobState],
        patch: Patch,
    ) -> Result<bool, EngineError> {
        let applied = self.store.update(id, expect, patch).await?.is_some();
        if applied {
            self.changed(id);
        }
        Ok(applied)
    }
}
