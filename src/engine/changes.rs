//! Per-job change notices. A long-poll or a log follower waits on its own job, and a
//! change wakes only that job's waiters, not one broadcast for every job: with thousands
//! of waiters, each change costs one wake-up instead of thousands.
//!
//! A job has a notice channel only while someone waits on it; the last waiter to leave
//! removes it, so the map holds no entry for jobs nobody watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

#[derive(Default)]
pub struct Changes {
    jobs: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
}

/// One waiter on one job's changes.
pub struct Waiter {
    id: Uuid,
    rx: watch::Receiver<u64>,
    changes: Arc<Changes>,
}

impl Changes {
    /// Wakes the waiters of `id`, if it has any.
    pub fn notify(&self, id: Uuid) {
        if let Some(tx) = self.jobs.lock().unwrap().get(&id) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every waiter, to read its job again: changes may have been missed.
    pub fn notify_all(&self) {
        for tx in self.jobs.lock().unwrap().values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Starts waiting on `id`: changes after this call wake the waiter.
    pub fn watch(self: &Arc<Self>, id: Uuid) -> Waiter {
        let rx = self
            .jobs
            .lock()
            .unwrap()
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Waiter {
            id,
            rx,
            changes: self.clone(),
        }
    }

    /// How many jobs have waiters now.
    pub fn watched(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }
}

impl Waiter {
    /// Returns when the job has changed since the last call (or since [`Changes::watch`]).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives in the map as long as this waiter does; never reached.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut jobs = self.changes.jobs.lock().unwrap();
        if jobs
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            jobs.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_change_wakes_only_its_own_job_and_the_last_waiter_cleans_up() {
        let changes = Arc::new(Changes::default());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut wa = changes.watch(a);
        let mut wb = changes.watch(b);
        changes.notify(b);
        let woke_a = tokio::time::timeout(Duration::from_millis(50), wa.changed()).await;
        assert!(woke_a.is_err(), "a woke on b's change");
        tokio::time::timeout(Duration::from_secs(1), wb.changed())
            .await
            .expect("b did not wake");
        let wa2 = changes.watch(a);
        drop(wa);
        assert_eq!(changes.watched(), 2);
        drop(wa2);
        drop(wb);
        assert_eq!(changes.watched(), 0);
    }
}
