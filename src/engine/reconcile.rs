//! One job's next step, decided from its stored state and the latest observation.
//!
//! - queued: route, take a place at the provider, store the attempt and its launch key,
//!   then launch (the key is stored first, so a crash before the answer relaunches the
//!   same key, which the provider answers with the workload it already has);
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

use super::{launch_key, Engine, EngineError, Slot};
use crate::model::{extract_result, JobCost, JobState};
use crate::store::{JobRecord, Patch};

/// How often a live job is looked at even with no news (a safety net for lost pokes).
const SAFETY: Duration = Duration::from_secs(30);

const LIVE: [JobState; 3] = [JobState::Starting, JobState::Running, JobState::Cancelling];

pub(super) async fn reconcile(engine: &Engine, id: Uuid) -> Option<Duration> {
    let result = async {
        let Some(rec) = engine.store.get(id).await? else {
            engine.free_place(id, None);
            return Ok(None);
        };
        match rec.job.state {
            JobState::Queued => engine.dispatch(rec).await,
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
        metrics::gauge!("offload_cost_usd_total", "provider" => c.provider.clone())
            .increment(c.usd.unwrap_or(0.0) - c.earlier_usd);
    }
}

/// When the current attempt started running: a `started_at` from before its dispatch is an
/// earlier attempt's.
fn this_attempt_start(rec: &JobRecord) -> Option<DateTime<Utc>> {
    rec.job
        .started_at
        .filter(|s| rec.dispatched_at.is_none_or(|d| *s >= d))
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
        let (slot, estimate) = match self.route(&rec) {
            Ok((slot, estimate)) => (slot.clone(), estimate),
            Err(why) => return self.end_unlaunched(&rec, None, JobState::Failed, why).await,
        };
        if !slot.try_acquire(id) {
            return Ok(None); // woken when a place frees
        }
        let attempt = rec.job.attempts + 1;
        let key = launch_key(id, attempt);
        let patch = Patch {
            state: Some(JobState::Starting),
            provider: Some(slot.name.clone()),
            provider_ref: Some(None),
            attempts: Some(attempt),
            launch_key: Some(key),
            dispatched_at: Some(Utc::now()),
            event: Some(format!("dispatched to {} (attempt {attempt})", slot.name)),
            cost: Some(JobCost {
                provider: slot.name.clone(),
                hourly_usd: estimate.hourly_usd,
                estimated_usd: estimate.estimated_usd,
                billed_seconds: None,
                usd: None,
                earlier_usd: rec
                    .job
                    .cost
                    .as_ref()
                    .map_or(0.0, |c| c.usd.unwrap_or(c.earlier_usd)),
            }),
            ..Patch::default()
        };
        match self.store.update(id, &[JobState::Queued], patch).await {
            Ok(Some(rec)) => {
                let reason = if rec.job.spec.provider == "auto" {
                    "auto"
                } else {
                    "named"
                };
                metrics::counter!(
                    "offload_jobs_routed_total",
                    "provider" => slot.name.clone(),
                    "reason" => reason
                )
                .increment(1);
                self.changed(id);
                self.launch(rec, &slot, true).await
            }
            Ok(None) => {
                slot.release(id);
                Ok(Some(Duration::ZERO))
            }
            Err(e) => {
                // Nothing was stored: the place is not the job's.
                slot.release(id);
                Err(e.into())
            }
        }
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
            spec: rec.job.spec.workload(resources, slot.provider.kind()),
            secret_env: self.store.secrets(id).await?,
            fresh,
        };
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
                slot.live.lock().unwrap().insert(id, handle);
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

    /// The provider has no room for the job now. An `auto` job with another feasible
    /// provider is routed again without this one; otherwise it waits here and launches the
    /// same key again later (backing off), for capacity is a reason to wait, not to fail.
    async fn no_capacity(&self, rec: &JobRecord, slot: &Slot, why: String) -> Step {
        let (id, name) = (rec.job.id, &slot.name);
        if rec.job.spec.provider == "auto" {
            let mut excluded = rec.excluded.clone();
            excluded.push(name.clone());
            if self.alternative(&rec.job.spec, &excluded) {
                let patch = Patch {
                    state: Some(JobState::Queued),
                    excluded: Some(excluded),
                    event: Some(format!("no capacity at {name} ({why}); routing again")),
                    ..Patch::default()
                };
                slot.release(id);
                self.capacity_waits.forget(id);
                // A cancel may have come meanwhile; the next reconcile ends the job then.
                self.transition(id, &[JobState::Starting], patch).await?;
                return Ok(Some(Duration::ZERO));
            }
        }
        let (n, wait) = self.capacity_waits.failed(id);
        if n == 1 {
            let patch = Patch {
                event: Some(format!(
                    "no capacity at {name} ({why}); nowhere else to go, waiting"
                )),
                ..Patch::default()
            };
            self.store.update(id, &[JobState::Starting], patch).await?;
        }
        tracing::info!(job = %id, provider = %name, waits = n, retry_in = ?wait, "no capacity; waiting");
        Ok(Some(wait.min(self.next_look(rec))))
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
        slot.active.lock().unwrap().insert(id);
        let cancel_reason = (rec.job.state == JobState::Cancelling).then(|| {
            let who = rec.cancel_requested_by.as_deref().unwrap_or("the gateway");
            format!("cancelled by {who}")
        });
        let timeout_reason = match (rec.dispatched_at, rec.job.spec.timeout_seconds) {
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
        slot.live
            .lock()
            .unwrap()
            .entry(id)
            .or_insert_with(|| handle.clone());

        if let Some(reason) = cancel_reason {
            return self
                .stop_workload(&rec, &slot, &handle, JobState::Cancelled, reason)
                .await;
        }
        if let Some(reason) = timeout_reason {
            return self
                .stop_workload(&rec, &slot, &handle, JobState::Failed, reason)
                .await;
        }
        let phase = self.observations.lock().unwrap().get(&handle.key).cloned();
        match phase {
            Some(Phase::Running) if rec.job.state == JobState::Starting => {
                let patch = Patch {
                    state: Some(JobState::Running),
                    started_at: Some(Utc::now()),
                    ..Patch::default()
                };
                self.transition(id, &[JobState::Starting], patch).await?;
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
        let stopped = self
            .call(slot, "cancel", slot.provider.cancel(handle, &reason))
            .await;
        if !gone(&stopped) {
            stopped?;
        }
        self.end(rec, slot, handle, state, None, reason).await
    }

    /// The workload vanished: make sure it is stopped and deleted (so that it cannot come
    /// back and run beside its successor), then launch a new attempt, or fail when none
    /// are left.
    async fn lost(&self, rec: &JobRecord, slot: &Slot, handle: &Handle, reason: String) -> Step {
        let id = rec.job.id;
        let stopped = self
            .call(slot, "cancel", slot.provider.cancel(handle, &reason))
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
        if rec.job.attempts >= self.config.max_attempts {
            let why = format!(
                "workload lost ({reason}) on the last of {} attempts",
                self.config.max_attempts
            );
            return self
                .end_unlaunched(rec, Some(slot), JobState::Failed, why)
                .await;
        }
        // What this attempt cost is carried into the next one's `earlier_usd`.
        let cost = self.final_cost(rec, this_attempt_start(rec), Utc::now());
        let patch = Patch {
            state: Some(JobState::Queued),
            provider_ref: Some(None),
            event: Some(format!(
                "workload lost at {} ({reason}); stopped it, launching a new attempt",
                slot.name
            )),
            cost: cost.clone(),
            ..Patch::default()
        };
        if self
            .transition(id, &[JobState::Starting, JobState::Running], patch)
            .await?
        {
            count_cost(cost.as_ref());
        }
        slot.release(id);
        self.forget_observation(&handle.key);
        Ok(Some(Duration::ZERO))
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
        let query = LogQuery {
            cursor: None,
            tail_bytes: Some(self.config.log_tail_bytes),
        };
        let tail = match self
            .call(slot, "logs", slot.provider.logs(handle, &query))
            .await
        {
            Ok(chunk) => chunk.text,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not read the log tail");
                String::new()
            }
        };
        let now = Utc::now();
        let started_at = this_attempt_start(rec).unwrap_or(now);
        let cost = self.final_cost(rec, Some(started_at), now);
        let patch = Patch {
            state: Some(state),
            exit_code,
            cost: cost.clone(),
            reason: Some(reason),
            result: extract_result(&tail),
            log_tail: Some(tail),
            started_at: rec.job.started_at.is_none().then_some(now),
            finished_at: Some(now),
            ..Patch::default()
        };
        if self.store.update(id, &LIVE, patch).await?.is_some() {
            count_cost(cost.as_ref());
        }
        self.ended(id, slot);
        self.forget_observation(&handle.key);
        Ok(Some(Duration::from_secs(self.config.release_after_seconds)))
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
        let cost = self.final_cost(rec, this_attempt_start(rec), now);
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

    /// The job's cost once it ends at `finished`: its billed run time from `started` (none:
    /// it never started, and costs 0) under its provider's billing rules, at the hourly
    /// price of its estimate. `None` when it was never dispatched.
    pub(super) fn final_cost(
        &self,
        rec: &JobRecord,
        started: Option<DateTime<Utc>>,
        finished: DateTime<Utc>,
    ) -> Option<JobCost> {
        let mut cost = rec.job.cost.clone()?;
        let billed = match (started, self.slot(&cost.provider)) {
            (Some(at), Some(slot)) => {
                let ms = (finished - at).num_milliseconds().max(0) as u64;
                slot.prices.billed_seconds(ms.div_ceil(1000))
            }
            _ => 0,
        };
        cost.billed_seconds = Some(billed);
        cost.usd = Some(cost.earlier_usd + cost.hourly_usd * billed as f64 / 3600.0);
        Some(cost)
    }

    /// Drops the observation of a workload the poller no longer follows. Called after the
    /// poller stopped following it, so that no answer in flight can put it back.
    fn forget_observation(&self, key: &str) {
        self.observations.lock().unwrap().remove(key);
    }

    /// The job has ended: free its place, forget its failure counts, tell its waiters.
    fn ended(&self, id: Uuid, slot: &Slot) {
        slot.release(id);
        self.launch_errors.forget(id);
        self.capacity_waits.forget(id);
        self.changed(id);
    }

    /// Frees any place `id` holds: at `provider` when known, else at every provider. A job
    /// that has ended or is back in the queue holds none, whatever failed on its way there.
    pub(super) fn free_place(&self, id: Uuid, provider: Option<&str>) {
        for slot in self
            .slots
            .iter()
            .filter(|s| provider.is_none_or(|p| p == s.name))
        {
            slot.release(id);
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
        let timeout = rec
            .dispatched_at
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
