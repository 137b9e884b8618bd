//! Jobs just submitted, handed to their first reconcile, so that it need not read back
//! what the submit has just written: a store read per job, which in a burst of 100,000
//! submits adds up (on PostgreSQL, a round trip and a tenth of the server's time per job).
//!
//! Bounded: past [`MAX`] records, or [`MAX_BYTES`] of them, waiting, a new job's record is
//! not kept and its reconcile reads the store, as any other does. A kept record may have gone stale by the time its
//! reconcile runs (a cancel came between): every write a reconcile makes is a
//! compare-and-set on the stored state, so a stale record costs one refused write and a
//! second look, which reads the store, never a wrong step.
//!
//! One stale record would pass that check: a record kept *after* the job's first reconcile
//! already ran (a sweep found the queued job between the submit's commit and its
//! handler's [`Fresh::keep`]), taken by a later reconcile once the job is queued again (a
//! failover), whose state it matches while its attempts and exclusions are the first
//! dispatch's. So a first dispatch that read the store marks the job ([`Fresh::read`]): a
//! record kept for it meanwhile is dropped, and one that comes afterwards is not kept. The
//! dispatch's write also holds only at the attempts its record showed
//! ([`crate::store::Patch::if_attempts`]), so no stale record dispatches a job twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::JobRecord;

/// The most records kept at once (about 2 KB each, so 64 MB at most): room for the backlog
/// a burst builds on PostgreSQL (17,000 jobs waiting for dispatch at the end of the
/// benchmark's 100,000). With 4,096, sustained durable submits there left 5,000 waiting,
/// and one job in three was read back, about 10 % more of the server's CPU per job.
const MAX: usize = 32_768;

/// The most bytes of records kept at once (by [`crate::model::JobSpec::footprint`]): a spec
/// may be far larger than most, and a burst of large ones must not hold gigabytes.
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
pub(super) struct Fresh {
    kept: Mutex<Kept>,
}

/// How long a job's first dispatch from the store is remembered: far longer than a submit
/// handler takes from its commit to its [`Fresh::keep`].
const READ_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Kept {
    jobs: HashMap<Uuid, (JobRecord, usize)>,
    bytes: usize,
    /// Jobs whose first dispatch read the store, and when; pruned past [`READ_FOR`].
    read: HashMap<Uuid, Instant>,
    /// `read`'s size when it was last pruned.
    pruned_at: usize,
}

impl Fresh {
    /// Keeps a new job's record for its first reconcile, if there is room and that
    /// reconcile has not already run.
    pub(super) fn keep(&self, rec: JobRecord) {
        let size = rec.job.spec.footprint();
        let mut kept = self.kept.lock().unwrap();
        if kept.read.remove(&rec.job.id).is_some() {
            return;
        }
        if kept.jobs.len() < MAX && kept.bytes + size <= MAX_BYTES {
            kept.bytes += size;
            kept.jobs.insert(rec.job.id, (rec, size));
        }
    }

    /// Marks a job whose first dispatch read its record from the store, so that one kept
    /// later is not; one kept since that dispatch looked (the store read is as new) is
    /// dropped.
    pub(super) fn read(&self, id: Uuid) {
        let mut kept = self.kept.lock().unwrap();
        if let Some((_, size)) = kept.jobs.remove(&id) {
            kept.bytes -= size;
            return;
        }
        let now = Instant::now();
        kept.read.insert(id, now);
        // Pruned once it has doubled since: each entry is looked at a bounded number of times.
        if kept.read.len() >= 2 * kept.pruned_at.max(512) {
            kept.read.retain(|_, at| now.duration_since(*at) < READ_FOR);
            kept.pruned_at = kept.read.len();
        }
    }

    /// The record kept for `id`, once.
    pub(super) fn take(&self, id: Uuid) -> Option<JobRecord> {
        let mut kept = self.kept.lock().unwrap();
        let (rec, size) = kept.jobs.remove(&id)?;
        kept.bytes -= size;
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(env_bytes: usize) -> JobRecord {
        let spec = serde_json::from_value(serde_json::json!({
            "image": "img", "env": {"BIG": "x".repeat(env_bytes)},
        }))
        .unwrap();
        JobRecord {
            job: crate::model::Job {
                id: Uuid::now_v7(),
                state: crate::model::JobState::Queued,
                terminal: false,
                provider: None,
                provider_ref: None,
                attempts: 0,
                exit_code: None,
                reason: None,
                result: None,
                labels: Default::default(),
                spec,
                created_at: chrono::Utc::now(),
                started_at: None,
                finished_at: None,
                cost: None,
                steps: vec![],
            },
            tenant: "t".into(),
            launch_key: None,
            dispatched_at: None,
            first_dispatched_at: None,
            cancel_requested_by: None,
            released: false,
            excluded: vec![],
            owner: None,
        }
    }

    /// Records of large specs fill the byte bound long before the count: past it, a new
    /// job's record is not kept (its reconcile reads the store), and each one taken makes
    /// room again.
    #[test]
    fn large_records_are_bounded_in_bytes() {
        let fresh = Fresh::default();
        let ids: Vec<Uuid> = (0..200)
            .map(|_| {
                let rec = record(1 << 20);
                let id = rec.job.id;
                fresh.keep(rec);
                id
            })
            .collect();
        let kept = ids.iter().filter(|id| fresh.kept.lock().unwrap().jobs.contains_key(id)).count();
        assert!(kept < 64, "{kept} records of 1 MiB kept");
        assert!(fresh.kept.lock().unwrap().bytes <= MAX_BYTES);
        assert!(fresh.take(ids[0]).is_some());
        let small = record(10);
        let id = small.job.id;
        fresh.keep(small);
        assert!(fresh.take(id).is_some(), "room again once one was taken");
    }

    /// A record that comes after the job's first dispatch read the store is not kept: a
    /// later reconcile would take it once the job is queued again, stale.
    #[test]
    fn a_record_kept_after_the_first_dispatch_read_the_store_is_dropped() {
        let fresh = Fresh::default();
        let late = record(10);
        let id = late.job.id;
        fresh.read(id);
        fresh.keep(late);
        assert!(fresh.take(id).is_none());
        assert!(fresh.kept.lock().unwrap().read.is_empty(), "its mark is spent");
        // Another job's record is kept as before.
        let other = record(10);
        let other_id = other.job.id;
        fresh.keep(other);
        assert!(fresh.take(other_id).is_some());
        // Pruning drops only marks past READ_FOR: 5,000 made just now are all kept.
        for _ in 0..5000 {
            fresh.read(Uuid::now_v7());
        }
        assert_eq!(fresh.kept.lock().unwrap().read.len(), 5000);
    }

    /// The other order: the submit handler keeps the record between a sweep's look for a
    /// kept one and its store read. The store read is at least as new as the record, so the
    /// record is dropped: a later reconcile would take it once the job is queued again.
    #[test]
    fn a_record_kept_before_the_first_dispatch_read_the_store_is_dropped() {
        let fresh = Fresh::default();
        let rec = record(10);
        let id = rec.job.id;
        assert!(fresh.take(id).is_none(), "the sweep finds nothing kept");
        fresh.keep(rec);
        fresh.read(id);
        assert!(fresh.take(id).is_none());
        assert_eq!(fresh.kept.lock().unwrap().bytes, 0);
    }
}
