//! Jobs just submitted, handed to their first reconcile, so that it need not read back
//! what the submit has just written: a store read per job, which in a burst of 100,000
//! submits adds up (on PostgreSQL, a round trip and a tenth of the server's time per job).
//!
//! Bounded: past [`MAX`] records waiting, a new job's record is not kept and its reconcile
//! reads the store, as any other does. A kept record may have gone stale by the time its
//! reconcile runs (a cancel came between): every write a reconcile makes is a
//! compare-and-set on the stored state, so a stale record costs one refused write and a
//! second look, which reads the store, never a wrong step.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::store::JobRecord;

/// The most records kept at once (about 2 KB each, so 64 MB at most): room for the backlog
/// a burst builds on PostgreSQL (17,000 jobs waiting for dispatch at the end of the
/// benchmark's 100,000). With 4,096, sustained durable submits there left 5,000 waiting,
/// and one job in three was read back, about 10 % more of the server's CPU per job.
const MAX: usize = 32_768;

#[derive(Default)]
pub(super) struct Fresh {
    jobs: Mutex<HashMap<Uuid, JobRecord>>,
}

impl Fresh {
    /// Keeps a new job's record for its first reconcile, if there is room.
    pub(super) fn keep(&self, rec: JobRecord) {
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.len() < MAX {
            jobs.insert(rec.job.id, rec);
        }
    }

    /// The record kept for `id`, once.
    pub(super) fn take(&self, id: Uuid) -> Option<JobRecord> {
        self.jobs.lock().unwrap().remove(&id)
    }
}
