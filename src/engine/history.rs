//! What routing learns from jobs that ran: each provider's recent start latencies (for
//! `prefer = speed`) and how long each DAG task's recent successful runs took (the expected
//! duration of a spec that gives none).
//!
//! Both are estimates, so both may be a little stale: start latencies are relearned from
//! the next starts after a restart, and run times are read from the store on a miss and
//! again after [`RUNS_FRESH_FOR`], so that runs other replicas finished count too.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{Store, StoreResult};

/// How many starts, and how many runs of one task, an estimate looks at.
pub(super) const RECENT: usize = 20;

/// How long run times read from the store are used before they are read again.
const RUNS_FRESH_FOR: Duration = Duration::from_secs(60);

/// DAG tasks whose run times are kept in memory at most; past it the cache starts afresh.
const MAX_TASKS: usize = 10_000;

/// The median of `values`: the middle one, or the mean of the two middle ones rounded up.
pub(super) fn median(values: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut v: Vec<u64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(match v.len() % 2 {
        1 => v[mid],
        _ => (v[mid - 1] + v[mid]).div_ceil(2),
    })
}

/// A provider's last [`RECENT`] start latencies: from dispatch to the workload seen running.
#[derive(Default)]
pub(super) struct StartLatency {
    recent: Mutex<VecDeque<u64>>,
}

impl StartLatency {
    pub fn record(&self, latency: Duration) {
        let mut recent = self.recent.lock().unwrap();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(latency.as_millis() as u64);
    }

    /// The median of the recent starts, in milliseconds; `None` before the first.
    pub fn expected_ms(&self) -> Option<u64> {
        median(self.recent.lock().unwrap().iter().copied())
    }
}

/// A DAG task of a tenant: its `dag_id` and `task_id` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TaskKey {
    pub tenant: String,
    pub dag_id: String,
    pub task_id: String,
}

struct Runs {
    /// Seconds, newest first.
    seconds: VecDeque<u64>,
    read_at: Instant,
}

/// The run times of recent successful runs of each DAG task.
#[derive(Default)]
pub(super) struct RunDurations {
    tasks: Mutex<HashMap<TaskKey, Runs>>,
}

impl RunDurations {
    /// The median run time of the task's last [`RECENT`] successful runs, in seconds;
    /// `None` when it has none.
    pub async fn median(&self, store: &dyn Store, task: &TaskKey) -> StoreResult<Option<u64>> {
        let cached = {
            let tasks = self.tasks.lock().unwrap();
            tasks
                .get(task)
                .filter(|r| r.read_at.elapsed() < RUNS_FRESH_FOR)
                .map(|r| median(r.seconds.iter().copied()))
        };
        if let Some(m) = cached {
            return Ok(m);
        }
        let seconds = store
            .run_durations(&task.tenant, &task.dag_id, &task.task_id, RECENT)
            .await?;
        let m = median(seconds.iter().copied());
        let mut tasks = self.tasks.lock().unwrap();
        if tasks.len() >= MAX_TASKS {
            tasks.clear();
        }
        tasks.insert(
            task.clone(),
            Runs {
                seconds: seconds.into(),
                read_at: Instant::now(),
            },
        );
        Ok(m)
    }

    /// A run of the task that just succeeded, for estimates before the next read.
    pub fn record(&self, task: &TaskKey, seconds: u64) {
        if let Some(runs) = self.tasks.lock().unwrap().get_mut(task) {
            runs.seconds.push_front(seconds);
            runs.seconds.truncate(RECENT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median([]), None);
        assert_eq!(median([7]), Some(7));
        assert_eq!(median([30, 10, 20]), Some(20));
        assert_eq!(median([10, 21]), Some(16));
        assert_eq!(median([1, 100, 2, 99]), Some(51));
    }

    #[test]
    fn start_latency_keeps_the_last_twenty() {
        let l = StartLatency::default();
        assert_eq!(l.expected_ms(), None);
        for _ in 0..RECENT {
            l.record(Duration::from_secs(60));
        }
        for _ in 0..RECENT / 2 + 1 {
            l.record(Duration::from_millis(500));
        }
        assert_eq!(l.expected_ms(), Some(500));
    }
}
