//! The engine against a store that fails on demand: the paths no HTTP test can reach
//! deterministically. Reconciles are driven one at a time, with no scheduler running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::{reconcile::reconcile, Engine};
use crate::config::Config;
use crate::model::{Event, Job, JobSpec, JobState};
use crate::store::secrets::SecretBox;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    JobRecord, ListQuery, NewJob, Patch, Store, StoreError, StoreResult, Submitted,
};

/// A SQLite store whose next `fail_updates` updates fail, which refuses every update to the
/// state `refuse` (as a database refuses a row too big for an index), and which counts its
/// reads.
struct FlakyStore {
    inner: SqliteStore,
    fail_updates: AtomicUsize,
    refuse: std::sync::Mutex<Option<JobState>>,
    /// What `lease_left` answers (`None`: no lease, as with SQLite alone).
    lease_left: std::sync::Mutex<Option<std::time::Duration>>,
    gets: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn submit(&self, new: NewJob) -> StoreResult<Submitted> {
        self.inner.submit(new).await
    }
    async fn get(&self, id: Uuid) -> StoreResult<Option<JobRecord>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id).await
    }
    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Vec<Job>> {
        self.inner.list(tenant, query).await
    }
    async fn events(&self, id: Uuid) -> StoreResult<Vec<Event>> {
        self.inner.events(id).await
    }
    async fn changed_since(
        &self,
        tenant: &str,
        query: &crate::store::ChangesQuery,
    ) -> StoreResult<crate::store::ChangesPage> {
        self.inner.changed_since(tenant, query).await
    }
    async fn update(
        &self,
        id: Uuid,
        expect: &[JobState],
        patch: Patch,
    ) -> StoreResult<Option<JobRecord>> {
        let failing = self
            .fail_updates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Db("injected failure".into()));
        }
        if patch.state.is_some() && patch.state == *self.refuse.lock().unwrap() {
            return Err(StoreError::Refused("index row size 3032 exceeds maximum 2704".into()));
        }
        self.inner.update(id, expect, patch).await
    }
    async fn secrets(&self, id: Uuid) -> StoreResult<BTreeMap<String, String>> {
        self.inner.secrets(id).await
    }
    async fn log_tail(&self, id: Uuid) -> StoreResult<Option<String>> {
        self.inner.log_tail(id).await
    }
    async fn unfinished(&self) -> StoreResult<Vec<JobRecord>> {
        self.inner.unfinished().await
    }
    async fn queued(&self, before: chrono::DateTime<Utc>, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.inner.queued(before, limit).await
    }
    async fn owned(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.inner.owned(after, limit).await
    }
    fn lease_left(&self) -> Option<std::time::Duration> {
        *self.lease_left.lock().unwrap()
    }
    async fn costs(
        &self,
        tenant: &str,
        query: &crate::store::CostQuery,
    ) -> StoreResult<Vec<crate::model::CostGroup>> {
        self.inner.costs(tenant, query).await
    }
    async fn purge(&self, finished_before: chrono::DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        self.inner.purge(finished_before, limit).await
    }
    async fn run_durations(
        &self,
        tenant: &str,
        dag_id: &str,
        task_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        self.inner.run_durations(tenant, dag_id, task_id, limit).await
    }
    async fn counts(&self) -> StoreResult<Vec<(String, JobState, u64)>> {
        self.inner.counts().await
    }
    fn ledger(&self) -> &dyn crate::store::ledger::Ledger {
        self.inner.ledger()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

async fn engine(dir: &std::path::Path) -> (Arc<Engine>, Arc<FlakyStore>) {
    let config = Config::from_toml(
        "[providers.sim]\nkind = \"sim\"\nmax_concurrency = 1\nstart_ms = 10\nrun_ms = 60000\n",
    )
    .unwrap();
    let key = SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open(&dir.join("db"), false, key).unwrap(),
        fail_updates: AtomicUsize::new(0),
        refuse: Default::default(),
        lease_left: Default::default(),
        gets: AtomicUsize::new(0),
    });
    (Engine::new(&config, store.clone()).await.unwrap(), store)
}

async fn submit(store: &FlakyStore, options: serde_json::Value) -> Uuid {
    submitted(store, options).await.job.id
}

/// A new job's record, as the submit answered it.
async fn submitted(store: &FlakyStore, options: serde_json::Value) -> JobRecord {
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "image": "img", "provider": "sim", "provider_options": {"sim": options}
    }))
    .unwrap();
    let id = Uuid::now_v7();
    let new = NewJob {
        id,
        tenant: "t".into(),
        spec,
        idempotency_key: None,
        created_at: Utc::now(),
    };
    match store.submit(new).await.unwrap() {
        Submitted::Created(rec) => *rec,
        other => panic!("not created: {other:?}"),
    }
}

fn load(engine: &Engine) -> usize {
    engine.providers()[0].active
}

#[tokio::test]
async fn a_store_failure_in_dispatch_leaves_no_place_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let id = submit(&store, serde_json::json!({})).await;
    store.fail_updates.store(1, Ordering::SeqCst);
    reconcile(&engine, id).await;
    assert_eq!(load(&engine), 0, "the failed dispatch kept its place");
    // The retry dispatches it, and takes the place then.
    reconcile(&engine, id).await;
    assert_eq!(
        store.get(id).await.unwrap().unwrap().job.state,
        JobState::Starting
    );
    assert_eq!(load(&engine), 1);
}

#[tokio::test]
async fn a_job_that_ended_while_holding_a_place_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    // Its launches find no capacity: the job holds its place while it waits.
    let id = submit(&store, serde_json::json!({"capacity_errors": 1000})).await;
    reconcile(&engine, id).await;
    assert_eq!(load(&engine), 1);
    // Its end is stored by a write whose own follow-up failed (the engine's update of the
    // place never ran): the next reconcile finds it ended.
    let ended = Patch {
        state: Some(JobState::Failed),
        reason: Some("ended elsewhere".into()),
        ..Patch::default()
    };
    store.inner.update(id, &[], ended).await.unwrap();
    reconcile(&engine, id).await;
    assert_eq!(load(&engine), 0, "an ended job kept its place");
}

#[tokio::test]
async fn a_store_failure_at_a_cancel_is_retried_until_the_job_ends_and_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let id = submit(&store, serde_json::json!({"capacity_errors": 1000})).await;
    reconcile(&engine, id).await;
    engine.cancel("t", id).await.unwrap();
    store.fail_updates.store(1, Ordering::SeqCst);
    reconcile(&engine, id).await;
    assert_eq!(
        store.get(id).await.unwrap().unwrap().job.state,
        JobState::Cancelling
    );
    reconcile(&engine, id).await;
    assert_eq!(
        store.get(id).await.unwrap().unwrap().job.state,
        JobState::Cancelled
    );
    assert_eq!(load(&engine), 0);
}

#[tokio::test]
async fn a_log_read_racing_the_release_answers_the_stored_tail_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let id = submit(&store, serde_json::json!({})).await;
    // A record read just before the engine released the workload: the job has ended with
    // its tail stored, and the provider (here, one that never had it) no longer knows it.
    let ended = Patch {
        state: Some(JobState::Succeeded),
        provider: Some("sim".into()),
        provider_ref: Some(Some("sim-gone".into())),
        launch_key: Some(super::launch_key(id, 1)),
        log_tail: Some("the end\n".into()),
        ..Patch::default()
    };
    let stale = store.inner.update(id, &[], ended).await.unwrap().unwrap();
    assert!(!stale.released);
    let chunk = engine
        .logs(&stale, &offload_provider::LogQuery::default())
        .await
        .expect("a released workload's log read is no error");
    assert_eq!(chunk.text, "the end\n");
}

#[tokio::test]
async fn a_new_job_is_dispatched_without_reading_back_what_its_submit_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let rec = submitted(&store, serde_json::json!({})).await;
    let id = rec.job.id;
    engine.submitted(rec);
    reconcile(&engine, id).await;
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        0,
        "the first reconcile read the job"
    );
    assert_eq!(
        store.inner.get(id).await.unwrap().unwrap().job.state,
        JobState::Starting
    );
    // Handed over once: the next look reads the store.
    reconcile(&engine, id).await;
    assert_eq!(store.gets.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_new_jobs_record_gone_stale_before_its_first_reconcile_launches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let rec = submitted(&store, serde_json::json!({})).await;
    let id = rec.job.id;
    engine.submitted(rec);
    // Cancelled before its first reconcile, which then holds a record saying queued.
    engine.cancel("t", id).await.unwrap();
    reconcile(&engine, id).await;
    reconcile(&engine, id).await;
    let job = store.inner.get(id).await.unwrap().unwrap().job;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        (job.attempts, job.provider),
        (0, None),
        "a cancelled job was dispatched"
    );
    assert_eq!(load(&engine), 0, "a cancelled job kept a place");
}

/// A write the store refuses, and would refuse however often it came (a job's labels too big
/// for an index, say), ends the job `failed` with the store's reason and frees its place,
/// instead of being retried forever while the job holds the place.
#[tokio::test]
async fn a_write_the_store_refuses_ends_the_job_failed_and_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let id = submit(&store, serde_json::json!({})).await;
    reconcile(&engine, id).await;
    let rec = store.inner.get(id).await.unwrap().unwrap();
    assert!(rec.job.provider_ref.is_some(), "launched: {rec:?}");
    assert_eq!(load(&engine), 1);
    // Its workload has ended well; the store refuses to record a success.
    let ended = super::Observed {
        phase: offload_provider::Phase::Exited {
            exit_code: Some(0),
            reason: None,
        },
        ran: None,
        tail: Some("done\n".into()),
    };
    let key = rec.launch_key.clone().unwrap();
    engine.observations.lock().unwrap().insert(key, ended);
    *store.refuse.lock().unwrap() = Some(JobState::Succeeded);
    reconcile(&engine, id).await;
    let job = store.inner.get(id).await.unwrap().unwrap().job;
    assert_eq!(job.state, JobState::Failed);
    let reason = job.reason.unwrap_or_default();
    assert!(reason.contains("refused") && reason.contains("index row size"), "{reason}");
    assert_eq!(load(&engine), 0, "the refused job kept its place");
    // The place is free for the next job.
    let next = submit(&store, serde_json::json!({})).await;
    reconcile(&engine, next).await;
    assert_eq!(
        store.inner.get(next).await.unwrap().unwrap().job.state,
        JobState::Starting
    );
}

/// A workload that ended before it was ever seen running has the run time its runtime
/// reports, and none at all where the runtime says nothing: a run of "0 s" would make the
/// task's expected duration wrong, and routing with it.
#[tokio::test]
async fn a_run_never_seen_running_counts_as_reported_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let mut ended_jobs = vec![];
    let reported = offload_provider::RunTimes {
        started: std::time::SystemTime::now() - std::time::Duration::from_secs(42),
        finished: std::time::SystemTime::now() - std::time::Duration::from_secs(2),
    };
    for ran in [None, Some(reported)] {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "image": "img", "provider": "sim",
            "labels": {"dag_id": "d", "task_id": "t"},
        }))
        .unwrap();
        let id = Uuid::now_v7();
        let new = NewJob {
            id,
            tenant: "t".into(),
            spec,
            idempotency_key: None,
            created_at: Utc::now(),
        };
        store.submit(new).await.unwrap();
        reconcile(&engine, id).await;
        let key = store.inner.get(id).await.unwrap().unwrap().launch_key.unwrap();
        let exited = super::Observed {
            phase: offload_provider::Phase::Exited {
                exit_code: Some(0),
                reason: None,
            },
            ran,
            tail: Some(String::new()),
        };
        engine.observations.lock().unwrap().insert(key, exited);
        reconcile(&engine, id).await;
        ended_jobs.push(store.inner.get(id).await.unwrap().unwrap().job);
    }
    assert!(ended_jobs.iter().all(|j| j.state == JobState::Succeeded));
    assert_eq!(ended_jobs[0].started_at, None, "a start nobody saw or reported");
    assert_eq!(
        ended_jobs[1].started_at.map(|t| t.timestamp_millis()),
        Some(chrono::DateTime::<Utc>::from(reported.started).timestamp_millis()),
        "the start its runtime reported"
    );
    let runs = store.inner.run_durations("t", "d", "t", 10).await.unwrap();
    assert_eq!(runs.len(), 1, "the unknown run was counted: {runs:?}");
    assert!((40..=44).contains(&runs[0]), "{runs:?}");
    // The cost is billed on the reported run: 40 s.
    let cost = ended_jobs[1].cost.as_ref().unwrap();
    assert_eq!(cost.billed_seconds, Some(40));
}

/// A replica makes no call that changes a workload unless its lease surely outlasts the
/// call's deadline: paused past its lease, another replica may have adopted the job and
/// launched it, and a launch now would run it twice.
#[tokio::test]
async fn no_launch_while_the_lease_may_lapse_before_the_call_could_end() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let id = submit(&store, serde_json::json!({})).await;
    let calls = |engine: &Engine| engine.providers()[0].calls;
    let before = calls(&engine);
    *store.lease_left.lock().unwrap() = Some(std::time::Duration::from_secs(1));
    reconcile(&engine, id).await;
    let rec = store.inner.get(id).await.unwrap().unwrap();
    assert_eq!(rec.job.state, JobState::Starting, "dispatched (a store write)");
    assert_eq!(calls(&engine), before, "a launch was made with 1 s of lease left");
    assert!(rec.job.provider_ref.is_none());
    // Renewed: the same key is launched.
    *store.lease_left.lock().unwrap() = Some(std::time::Duration::from_secs(15));
    reconcile(&engine, id).await;
    let rec = store.inner.get(id).await.unwrap().unwrap();
    assert!(rec.job.provider_ref.is_some(), "not launched once renewed: {rec:?}");
    // Nor is a cancel's stop made without the lease.
    engine.cancel("t", id).await.unwrap();
    *store.lease_left.lock().unwrap() = Some(std::time::Duration::ZERO);
    let stops = calls(&engine);
    reconcile(&engine, id).await;
    assert_eq!(calls(&engine), stops, "a stop was made without a lease");
    assert_eq!(
        store.inner.get(id).await.unwrap().unwrap().job.state,
        JobState::Cancelling
    );
}

/// A workload that its runtime says ran on past its job's deadline ends the job `failed`
/// for its timeout even when it is first seen ended (its owner died before it could stop
/// it, and the replica that adopted it found it ended): as the stop at the deadline would
/// have ended it. One that ended before the deadline keeps its own outcome.
#[tokio::test]
async fn a_workload_that_ran_past_its_deadline_fails_its_job_even_when_seen_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = engine(dir.path()).await;
    let mut outcomes = vec![];
    for ran_for in [3, 0] {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "image": "img", "provider": "sim", "timeout_seconds": 1,
        }))
        .unwrap();
        let id = Uuid::now_v7();
        let new = NewJob {
            id,
            tenant: "t".into(),
            spec,
            idempotency_key: None,
            created_at: Utc::now(),
        };
        store.submit(new).await.unwrap();
        reconcile(&engine, id).await;
        // Dispatched 5 s ago; its workload ran `ran_for` seconds from then and ended.
        let dispatched = Utc::now() - chrono::Duration::seconds(5);
        let moved = Patch {
            dispatched_at: Some(dispatched),
            first_dispatched_at: Some(dispatched),
            ..Patch::default()
        };
        let rec = store.inner.update(id, &[], moved).await.unwrap().unwrap();
        let at = |s: i64| std::time::SystemTime::from(dispatched + chrono::Duration::seconds(s));
        let exited = super::Observed {
            phase: offload_provider::Phase::Exited {
                exit_code: Some(0),
                reason: None,
            },
            ran: Some(offload_provider::RunTimes {
                started: at(0),
                finished: at(ran_for),
            }),
            tail: Some(String::new()),
        };
        engine
            .observations
            .lock()
            .unwrap()
            .insert(rec.launch_key.unwrap(), exited);
        reconcile(&engine, id).await;
        let job = store.inner.get(id).await.unwrap().unwrap().job;
        outcomes.push((job.state, job.reason.unwrap_or_default()));
    }
    assert_eq!(outcomes[0].0, JobState::Failed, "{outcomes:?}");
    assert!(outcomes[0].1.starts_with("timeout"), "{outcomes:?}");
    assert_eq!(outcomes[1].0, JobState::Succeeded, "{outcomes:?}");
}

/// A job whose attempt ran and was lost goes back to the queue with that attempt's cost
/// among its `earlier` ones; cancelled there, it keeps that cost (it used to keep only the
/// attempts before it, though the metric had counted it), at the provider that ran it.
#[tokio::test]
async fn a_job_cancelled_in_the_queue_after_a_lost_attempt_keeps_that_attempts_cost() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        "[providers.sim]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 60000\nprice = { vcpu_hour = 36.0, min_billed_seconds = 60 }\n",
    )
    .unwrap();
    let key = SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open(&dir.path().join("db"), false, key).unwrap(),
        fail_updates: AtomicUsize::new(0),
        refuse: Default::default(),
        lease_left: Default::default(),
        gets: AtomicUsize::new(0),
    });
    let engine = Engine::new(&config, store.clone()).await.unwrap();
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "image": "img", "provider": "sim", "resources": {"cpu": 1},
    }))
    .unwrap();
    let id = Uuid::now_v7();
    let new = NewJob {
        id,
        tenant: "t".into(),
        spec,
        idempotency_key: None,
        created_at: Utc::now(),
    };
    store.submit(new).await.unwrap();
    reconcile(&engine, id).await;
    let key = store.inner.get(id).await.unwrap().unwrap().launch_key.unwrap();
    let seen = |phase| super::Observed {
        phase,
        ran: None,
        tail: None,
    };
    let observe = |phase| engine.observations.lock().unwrap().insert(key.clone(), seen(phase));
    observe(offload_provider::Phase::Running);
    reconcile(&engine, id).await;
    observe(offload_provider::Phase::Lost {
        reason: "node gone".into(),
    });
    reconcile(&engine, id).await;
    let rec = store.inner.get(id).await.unwrap().unwrap();
    assert_eq!(rec.job.state, JobState::Queued, "sent back to the queue: {rec:?}");
    let cost = rec.job.cost.clone().unwrap();
    assert_eq!(cost.earlier.len(), 1, "{cost:?}");
    assert_eq!((cost.earlier[0].provider.as_str(), cost.earlier[0].usd), ("sim", 0.6));
    engine.cancel("t", id).await.unwrap();
    let job = store.inner.get(id).await.unwrap().unwrap().job;
    assert_eq!(job.state, JobState::Cancelled);
    let cost = job.cost.unwrap();
    assert_eq!((cost.usd, cost.earlier_usd), (Some(0.6), 0.6), "{cost:?}");
}
