//! What to do when something about a job fails again and again: wait longer each time it
//! fails in a row (capped exponential backoff, as kube-rs's controller `error_policy`
//! does), and forget the count once it succeeds or the job ends. A call that can never
//! succeed then costs a few calls an hour, not one every two seconds forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

pub struct ErrorPolicy {
    base: Duration,
    cap: Duration,
    failures: Mutex<HashMap<Uuid, u32>>,
}

impl ErrorPolicy {
    pub fn new(base: Duration, cap: Duration) -> Self {
        ErrorPolicy {
            base,
            cap,
            failures: Mutex::default(),
        }
    }

    /// Counts one more failure in a row for `id`; returns the count and how long to wait.
    pub fn failed(&self, id: Uuid) -> (u32, Duration) {
        let n = {
            let mut all = self.failures.lock().unwrap();
            let n = all.entry(id).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let backoff = self.base.saturating_mul(1 << (n - 1).min(20)).min(self.cap);
        (n, backoff)
    }

    /// The job's last attempt succeeded (or it ended): start counting afresh.
    pub fn forget(&self, id: Uuid) {
        self.failures.lock().unwrap().remove(&id);
    }

    /// How many jobs have failures counted now.
    pub fn tracked(&self) -> usize {
        self.failures.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let p = ErrorPolicy::new(Duration::from_secs(1), Duration::from_secs(10));
        let id = Uuid::now_v7();
        let waits: Vec<u64> = (0..6).map(|_| p.failed(id).1.as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        p.forget(id);
        assert_eq!(p.failed(id), (1, Duration::from_secs(1)));
        p.forget(id);
        assert_eq!(p.tracked(), 0);
    }
}
