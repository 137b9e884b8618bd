//! The read path for job status, which Airflow sensors, triggers and `offload run` ask far
//! more often than anything changes: each job's answer (its JSON, serialised once per
//! change) kept in memory, so that a read of a job the gateway knows makes no store round
//! trip and takes no write lock.
//!
//! [`Snapshots`] wraps the store: every write through it drops the written job's snapshot,
//! and so does every change another replica makes (its change feed passes through here), or
//! all of them when the feed reconnects. While the feed is down (its connection broke and
//! is being made again), nothing is kept at all: another replica's change could not drop
//! it. A read that misses reads the store and keeps the answer unless a change to that job
//! came while it read (reads in flight are marked per job), so that a slow read can never
//! put an older answer back after a newer change, and a steady stream of writes to other
//! jobs does not stop misses from being kept. The snapshots are bounded in bytes, the
//! oldest job's dropped first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

impl Snapshot {
    /// What keeping it costs: its JSON, its tenant, and the map's own share (an estimate).
    fn bytes(&self) -> usize {
        self.json.len() + self.tenant.len() + 128
    }
}

pub struct Snapshots {
    inner: Arc<dyn Store>,
    cache: Arc<Cache>,
}

struct Cache {
    kept: RwLock<Kept>,
    /// Reads that missed and are still out, by job: whether a change to the job came since
    /// they began. Locked before `kept` wherever both are.
    filling: Mutex<BTreeMap<Uuid, Filling>>,
    /// False while the change feed is down: nothing is kept then.
    live: AtomicBool,
    max_bytes: usize,
}

/// The snapshots kept, and their bytes.
#[derive(Default)]
struct Kept {
    /// A B-tree, not a hash map: it grows a node at a time, where a hash map doubles and
    /// rehashes every entry at once under the write lock that every read waits for. Ids
    /// are UUIDv7, so its first entry is the oldest job's.
    jobs: BTreeMap<Uuid, Snapshot>,
    bytes: usize,
}

impl Kept {
    fn remove(&mut self, id: &Uuid) {
        if let Some(old) = self.jobs.remove(id) {
            self.bytes -= old.bytes();
        }
    }

    fn clear(&mut self) {
        self.jobs.clear();
        self.bytes = 0;
    }
}

/// The reads of one job that are out.
struct Filling {
    readers: u32,
    changed: bool,
}

impl Cache {
    fn changed(&self, id: Uuid) {
        let mut filling = self.filling.lock().unwrap();
        if let Some(f) = filling.get_mut(&id) {
            f.changed = true;
        }
        self.kept.write().unwrap().remove(&id);
    }

    fn changed_all(&self) {
        let mut filling = self.filling.lock().unwrap();
        filling.values_mut().for_each(|f| f.changed = true);
        self.kept.write().unwrap().clear();
    }

    /// The change feed broke (`false`) or is listening again (`true`): either way, what is
    /// kept may be stale.
    fn feed(&self, live: bool) {
        let filling = self.filling.lock().unwrap();
        self.live.store(live, Ordering::Release);
        drop(filling);
        self.changed_all();
    }

    /// A read of `id` that missed begins.
    fn begin(&self, id: Uuid) -> ReadOut<'_> {
        let mut filling = self.filling.lock().unwrap();
        filling
            .entry(id)
            .or_insert(Filling {
                readers: 0,
                changed: false,
            })
            .readers += 1;
        ReadOut { cache: self, id }
    }
}

/// A read that missed, out until dropped (answered, failed, or given up by its caller).
struct ReadOut<'a> {
    cache: &'a Cache,
    id: Uuid,
}

impl ReadOut<'_> {
    /// Keeps what the read found, unless the job changed while it read or the feed is
    /// down; drops the oldest jobs' snapshots past the byte bound.
    fn keep(self, snapshot: &Snapshot) {
        let cache = self.cache;
        let filling = cache.filling.lock().unwrap();
        let changed = filling.get(&self.id).is_none_or(|f| f.changed);
        if changed || !cache.live.load(Ordering::Acquire) {
            return;
        }
        let mut kept = cache.kept.write().unwrap();
        kept.remove(&self.id);
        kept.bytes += snapshot.bytes();
        kept.jobs.insert(self.id, snapshot.clone());
        while kept.bytes > cache.max_bytes {
            let Some((_, oldest)) = kept.jobs.pop_first() else {
                break;
            };
            kept.bytes -= oldest.bytes();
        }
        drop(kept);
        drop(filling);
    }
}

impl Drop for ReadOut<'_> {
    fn drop(&mut self) {
        let mut filling = self.cache.filling.lock().unwrap();
        if let Some(f) = filling.get_mut(&self.id) {
            f.readers -= 1;
            if f.readers == 0 {
                filling.remove(&self.id);
            }
        }
    }
}

impl Snapshots {
    /// Keeps at most `max_bytes` of snapshots; past that, the oldest jobs' are dropped.
    pub fn new(inner: Arc<dyn Store>, max_bytes: usize) -> Snapshots {
        Snapshots {
            inner,
            cache: Arc::new(Cache {
                kept: RwLock::default(),
                filling: Mutex::default(),
                live: AtomicBool::new(true),
                max_bytes,
            }),
        }
    }

    /// The job's answer as it is now: from memory when known, else from the store.
    pub async fn job(&self, id: Uuid) -> StoreResult<Option<Snapshot>> {
        let cache = &self.cache;
        if let Some(s) = cache.kept.read().unwrap().jobs.get(&id) {
            return Ok(Some(s.clone()));
        }
        let out = cache.begin(id);
        let Some(rec) = self.inner.get(id).await? else {
            return Ok(None);
        };
        let snapshot = Snapshot {
            tenant: Arc::from(rec.tenant.as_str()),
            json: Bytes::from(serde_json::to_vec(&rec.job).expect("a job serialises")),
        };
        out.keep(&snapshot);
        Ok(Some(snapshot))
    }

    /// How many snapshots are kept, and their bytes.
    pub fn kept(&self) -> (usize, usize) {
        let kept = self.cache.kept.read().unwrap();
        (kept.jobs.len(), kept.bytes)
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

    async fn changed_since(
        &self,
        tenant: &str,
        query: &super::ChangesQuery,
    ) -> StoreResult<super::ChangesPage> {
        self.inner.changed_since(tenant, query).await
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

    fn ledger(&self) -> &dyn crate::store::ledger::Ledger {
        self.inner.ledger()
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
            Change::Resync => cache.feed(true),
            Change::Down => cache.feed(false),
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

    fn store(dir: &std::path::Path) -> Arc<SqliteStore> {
        let key = SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        Arc::new(SqliteStore::open(&dir.join("db"), false, key).unwrap())
    }

    #[tokio::test]
    async fn a_known_job_is_read_from_memory_until_a_write_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let inner = store(dir.path());
        let snapshots = Snapshots::new(inner.clone(), 1 << 20);
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
    }

    /// Bounded in bytes, the oldest jobs' snapshots dropped first.
    #[tokio::test]
    async fn snapshots_are_bounded_in_bytes_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let inner = store(dir.path());
        let probe = Snapshots::new(inner.clone(), 1 << 20);
        let id = new_job(&probe).await;
        let one = probe.job(id).await.unwrap().unwrap().bytes();
        let snapshots = Snapshots::new(inner.clone(), 2 * one + one / 2);
        snapshots.job(id).await.unwrap();
        let mut newest = id;
        for _ in 0..3 {
            newest = new_job(&snapshots).await;
            snapshots.job(newest).await.unwrap();
        }
        let (jobs, bytes) = snapshots.kept();
        assert_eq!(jobs, 2);
        assert!(bytes <= 2 * one + one / 2, "{bytes} bytes kept");
        // Changed behind its back: the newest job still answers from memory, the oldest
        // (dropped) from the store.
        inner.update(newest, &[], to(JobState::Starting)).await.unwrap().unwrap();
        assert_eq!(state(&snapshots.job(newest).await.unwrap().unwrap()), JobState::Queued);
        inner.update(id, &[], to(JobState::Failed)).await.unwrap().unwrap();
        assert_eq!(state(&snapshots.job(id).await.unwrap().unwrap()), JobState::Failed);
    }

    /// A read that missed is kept unless its own job changed while it read: writes to other
    /// jobs, however many, do not stop it (one counter of every change used to, so that
    /// under steady writes no miss was kept, just when sensors poll most).
    #[tokio::test]
    async fn a_miss_is_kept_unless_its_own_job_changed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::new(store(dir.path()), 1 << 20);
        let (id, other) = (new_job(&snapshots).await, new_job(&snapshots).await);
        let out = snapshots.cache.begin(id);
        snapshots.changed(other);
        let found = Snapshot {
            tenant: Arc::from("t"),
            json: Bytes::from_static(b"{}"),
        };
        out.keep(&found);
        assert_eq!(snapshots.kept().0, 1, "a change to another job stopped the fill");
        snapshots.changed(id);
        let out = snapshots.cache.begin(id);
        snapshots.changed(id);
        out.keep(&found);
        assert_eq!(snapshots.kept().0, 0, "a fill kept what its own job's change made stale");
        assert!(snapshots.cache.filling.lock().unwrap().is_empty(), "reads out left behind");
    }

    /// While the change feed is down, another replica's change could not drop a snapshot:
    /// none is kept, and those kept are dropped; once it listens again they are kept again.
    #[tokio::test]
    async fn nothing_is_kept_while_the_change_feed_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::new(store(dir.path()), 1 << 20);
        let id = new_job(&snapshots).await;
        snapshots.job(id).await.unwrap();
        assert_eq!(snapshots.kept().0, 1);
        snapshots.cache.feed(false);
        assert_eq!(snapshots.kept().0, 0);
        snapshots.job(id).await.unwrap();
        assert_eq!(snapshots.kept().0, 0, "kept while the feed was down");
        snapshots.cache.feed(true);
        snapshots.job(id).await.unwrap();
        assert_eq!(snapshots.kept().0, 1);
    }
}
