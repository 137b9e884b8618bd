//! The read path for job status, which Airflow sensors, triggers and `offload run` ask far
//! more often than anything changes: each job's answer (its JSON, serialised once per
//! change) kept in memory, so that a read of a job the gateway knows makes no store round
//! trip and takes no write lock.
//!
//! [`Snapshots`] wraps the store: every write through it drops the written job's snapshot,
//! and so does every change another replica makes (its change feed passes through here), or
//! all of them when the feed reconnects. A read that misses reads the store and keeps the
//! answer, unless a change came while it read (an epoch counts the changes), so that a slow
//! read can never put an older answer back after a newer change.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use super::{
    Change, CostQuery, JobRecord, Lease, ListQuery, NewJob, Patch, Store, StoreResult, Submitted,
};
use crate::model::{CostGroup, Event, Job, JobState};

/// A job's answer to `GET /v1/jobs/{id}`, and whose job it is.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tenant: Arc<str>,
    /// The job as JSON.
    pub json: Bytes,
}

pub struct Snapshots {
    inner: Arc<dyn Store>,
    cache: Arc<Cache>,
}

struct Cache {
    /// A B-tree, not a hash map: it grows a node at a time, where a hash map doubles and
    /// rehashes every entry at once under the write lock that every read waits for. Ids
    /// are UUIDv7, so its first entry is the oldest job's.
    jobs: RwLock<BTreeMap<Uuid, Snapshot>>,
    /// Changes seen so far; a read that misses keeps its answer only if none came since.
    epoch: AtomicU64,
    max: usize,
}

impl Cache {
    fn changed(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.jobs.write().unwrap().remove(&id);
    }

    fn changed_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.jobs.write().unwrap().clear();
    }
}

impl Snapshots {
    /// Keeps at most `max` snapshots; past that, the oldest job's is dropped for each new one.
    pub fn new(inner: Arc<dyn Store>, max: usize) -> Snapshots {
        Snapshots {
            inner,
            cache: Arc::new(Cache {
                jobs: RwLock::default(),
                epoch: AtomicU64::new(0),
                max: max.max(1),
            }),
        }
    }

    /// The job's answer as it is now: from memory when known, else from the store.
    pub async fn job(&self, id: Uuid) -> StoreResult<Option<Snapshot>> {
        let cache = &self.cache;
        if let Some(s) = cache.jobs.read().unwrap().get(&id) {
            return Ok(Some(s.clone()));
        }
        let epoch = cache.epoch.load(Ordering::Acquire);
        let Some(rec) = self.inner.get(id).await? else {
            return Ok(None);
        };
        let snapshot = Snapshot {
            tenant: Arc::from(rec.tenant.as_str()),
            json: Bytes::from(serde_json::to_vec(&rec.job).expect("a job serialises")),
        };
        let mut jobs = cache.jobs.write().unwrap();
        if cache.epoch.load(Ordering::Acquire) == epoch {
            if jobs.len() >= cache.max {
                jobs.pop_first();
            }
            jobs.insert(id, snapshot.clone());
        }
        Ok(Some(snapshot))
    }

    /// How many snapshots are kept.
    pub fn kept(&self) -> usize {
        self.cache.jobs.read().unwrap().len()
    }

    fn changed(&self, id: Uuid) {
        self.cache.changed(id);
    }
}

#[async_trait::async_trait]
impl Store for Snapshots {
    async fn submit(&self, new: NewJob) -> StoreResult<Submitted> {
        // A new job has no snapshot yet; a repeated key changes nothing.
        self.inner.submit(new).await
    }

    async fn get(&self, id: Uuid) -> StoreResult<Option<JobRecord>> {
        self.inner.get(id).await
    }

    async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Vec<Job>> {
        self.inner.list(tenant, query).await
    }

    async fn events(&self, id: Uuid) -> StoreResult<Vec<Event>> {
        self.inner.events(id).await
    }

    async fn update(
        &self,
        id: Uuid,
        expect: &[JobState],
        patch: Patch,
    ) -> StoreResult<Option<JobRecord>> {
        let out = self.inner.update(id, expect, patch).await;
        // Also when it failed: it may have committed all the same.
        self.changed(id);
        out
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

    async fn queued(&self, before: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.inner.queued(before, limit).await
    }

    async fn owned(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.inner.owned(after, limit).await
    }

    async fn purge(&self, finished_before: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let purged = self.inner.purge(finished_before, limit).await?;
        if purged > 0 {
            // Which ones is not said; purges are rare, so all go.
            self.cache.changed_all();
        }
        Ok(purged)
    }
    async fn run_durations(
        &self,
        tenant: &str,
        dag_id: &str,
        task_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        self.inner
            .run_durations(tenant, dag_id, task_id, limit)
            .await
    }

    async fn counts(&self) -> StoreResult<Vec<(String, JobState, u64)>> {
        self.inner.counts().await
    }

    async fn costs(&self, tenant: &str, query: &CostQuery) -> StoreResult<Vec<CostGroup>> {
        self.inner.costs(tenant, query).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    fn replica(&self) -> Option<String> {
        self.inner.replica()
    }

    fn lease_left(&self) -> Option<std::time::Duration> {
        self.inner.lease_left()
    }

    async fn renew_lease(&self, held: &BTreeMap<String, usize>) -> StoreResult<Lease> {
        self.inner.renew_lease(held).await
    }

    async fn adopt(&self, limit: usize) -> StoreResult<Vec<JobRecord>> {
        let adopted = self.inner.adopt(limit).await?;
        for rec in &adopted {
            self.changed(rec.job.id);
        }
        Ok(adopted)
    }

    async fn release_lease(&self) -> StoreResult<()> {
        self.inner.release_lease().await
    }

    async fn poke_owner(&self, rec: &JobRecord) -> StoreResult<()> {
        self.inner.poke_owner(rec).await
    }

    fn changes(&self) -> Option<futures::stream::BoxStream<'static, Change>> {
        // On their way to the engine, other replicas' writes drop their jobs' snapshots, and
        // a reconnection (notices may have been missed) drops them all.
        let cache = self.cache.clone();
        let changes = self.inner.changes()?.inspect(move |change| match change {
            Change::Job(id) => cache.changed(*id),
            Change::Resync => cache.changed_all(),
            Change::Poke { .. } => {}
        });
        Some(changes.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::secrets::SecretBox;
    use crate::store::sqlite::SqliteStore;

    async fn new_job(store: &dyn Store) -> Uuid {
        let spec = serde_json::from_value(serde_json::json!({"image": "img"})).unwrap();
        let id = Uuid::now_v7();
        let new = NewJob {
            id,
            tenant: "t".into(),
            spec,
            idempotency_key: None,
            created_at: Utc::now(),
        };
        store.submit(new).await.unwrap();
        id
    }

    fn state(s: &Snapshot) -> JobState {
        serde_json::from_slice::<Job>(&s.json).unwrap().state
    }

    fn to(state: JobState) -> Patch {
        Patch {
            state: Some(state),
            ..Patch::default()
        }
    }

    #[tokio::test]
    async fn a_known_job_is_read_from_memory_until_a_write_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let inner = Arc::new(SqliteStore::open(&dir.path().join("db"), false, key).unwrap());
        let snapshots = Snapshots::new(inner.clone(), 2);
        let id = new_job(&snapshots).await;
        let s = snapshots.job(id).await.unwrap().unwrap();
        assert_eq!((&*s.tenant, state(&s)), ("t", JobState::Queued));
        // Changed behind its back, the snapshot still answers: no store read.
        inner.update(id, &[], to(JobState::Starting)).await.unwrap().unwrap();
        assert_eq!(state(&snapshots.job(id).await.unwrap().unwrap()), JobState::Queued);
        // A write through it drops the snapshot: the next read is the store's.
        snapshots.update(id, &[], to(JobState::Cancelled)).await.unwrap().unwrap();
        assert_eq!(state(&snapshots.job(id).await.unwrap().unwrap()), JobState::Cancelled);
        assert!(snapshots.job(Uuid::now_v7()).await.unwrap().is_none());
        // Bounded: at most `max` are kept, the oldest jobs' dropped first.
        let mut newest = id;
        for _ in 0..3 {
            newest = new_job(&snapshots).await;
            snapshots.job(newest).await.unwrap();
        }
        assert_eq!(snapshots.kept(), 2);
        // Changed behind its back: the newest job still answers from memory, the oldest
        // (dropped) from the store.
        inner.update(newest, &[], to(JobState::Starting)).await.unwrap().unwrap();
        assert_eq!(state(&snapshots.job(newest).await.unwrap().unwrap()), JobState::Queued);
        inner.update(id, &[], to(JobState::Failed)).await.unwrap().unwrap();
        assert_eq!(state(&snapshots.job(id).await.unwrap().unwrap()), JobState::Failed);
    }
}
