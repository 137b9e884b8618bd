//! The live workloads one provider's poller follows, and when it next looks at each.
//!
//! A look costs one call per batch of workloads (`max_observe_batch`) however full the
//! batch is, so the poller looks when the first workload is due and takes along as many of
//! the others, soonest due first, as the batches it pays for have room for. Each workload
//! keeps its own interval: `poll_interval_ms` after its launch, doubling with each look,
//! up to `max_poll_interval_ms`, so its end is seen within about as long as it has been
//! followed (a task that was provisioning a second ago will not have ended half a second
//! later). A change of phase does not shorten the interval: a task that has just started
//! running is no nearer its end for it. A running workload whose run time is known
//! (from its spec or its DAG task's recent runs) is not looked at again before it is
//! expected to end, still at least every `max_poll_interval_ms`: that bound is the longest
//! an end can go unseen by polling.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use offload_provider::Handle;
use tokio::time::Instant;
use uuid::Uuid;

/// One followed workload.
struct Workload {
    handle: Handle,
    next: Instant,
    step: Duration,
    /// How long the job is expected to run, when its spec or history says.
    expected: Option<Duration>,
    /// When it is expected to end: set when it is first seen running.
    expected_end: Option<Instant>,
}

/// What one look at a workload found.
pub(super) enum Seen {
    /// Its phase changed, to running or not.
    Changed {
        running: bool,
    },
    Unchanged,
}

pub(super) struct Followed {
    base: Duration,
    max: Duration,
    workloads: BTreeMap<Uuid, Workload>,
    /// Every followed workload by its next look, soonest first: a round and the poller's
    /// wake-up read only its head, however many workloads are live.
    order: BTreeSet<(Instant, Uuid)>,
}

impl Followed {
    pub fn new(base: Duration, max: Duration) -> Followed {
        Followed {
            base,
            max: max.max(base),
            workloads: BTreeMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Follows `handle` as job `id`'s workload, first looked at one base interval after `now`;
    /// a workload already followed under the same key keeps its schedule. True when it
    /// was not followed before.
    pub fn follow(
        &mut self,
        id: Uuid,
        handle: Handle,
        expected: Option<Duration>,
        now: Instant,
    ) -> bool {
        if self.follows(id, &handle.key) {
            return false;
        }
        let next = now + self.base;
        let workload = Workload {
            handle,
            next,
            step: self.base,
            expected,
            expected_end: None,
        };
        if let Some(old) = self.workloads.insert(id, workload) {
            self.order.remove(&(old.next, id));
        }
        self.order.insert((next, id));
        true
    }

    pub fn unfollow(&mut self, id: Uuid) {
        if let Some(old) = self.workloads.remove(&id) {
            self.order.remove(&(old.next, id));
        }
    }

    /// Whether `key` is the workload followed for job `id`.
    pub fn follows(&self, id: Uuid, key: &str) -> bool {
        self.workloads.get(&id).is_some_and(|w| w.handle.key == key)
    }

    /// The first interval after a launch.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// How long the health check may wait: with workloads followed, a round answers at
    /// least every `max_poll_interval_ms` and stands for the check, so the check is only
    /// for rounds that fail.
    pub fn health_gap(&self, health_every: Duration) -> Duration {
        match self.workloads.is_empty() {
            true => health_every,
            false => health_every.max(self.max + self.base),
        }
    }

    /// The jobs whose workloads are followed.
    pub fn jobs(&self) -> Vec<Uuid> {
        self.workloads.keys().copied().collect()
    }

    /// When the soonest look is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.order.first().map(|(next, _)| *next)
    }

    /// The workloads to look at now, in batches of `batch`: none when none is due; else the
    /// due ones, and after them the soonest of the rest while the last batch has room.
    pub fn round(&self, now: Instant, batch: usize) -> Vec<(Uuid, Handle)> {
        let batch = batch.max(1);
        let due = self
            .order
            .iter()
            .take_while(|(next, _)| *next <= now)
            .count();
        self.order
            .iter()
            .take(due.div_ceil(batch) * batch)
            .map(|(_, id)| (*id, self.workloads[id].handle.clone()))
            .collect()
    }

    /// Schedules the next look at `id`'s workload `key` after one that found `seen`.
    pub fn looked(&mut self, id: Uuid, key: &str, seen: Seen, now: Instant) {
        let (base, max) = (self.base, self.max);
        let Some(w) = self.workloads.get_mut(&id).filter(|w| w.handle.key == key) else {
            return;
        };
        self.order.remove(&(w.next, id));
        match seen {
            Seen::Changed { running } => {
                w.step = (w.step * 2).min(max);
                // Expected to end its run time after it started, give or take a look.
                w.expected_end = w.expected.filter(|_| running).map(|d| now + d + base);
                w.next = match w.expected_end {
                    Some(end) => end.min(now + max).max(now + base),
                    None => now + w.step,
                };
            }
            Seen::Unchanged => match w.expected_end {
                Some(end) if end > now => {
                    w.next = end.min(now + max).max(now + base);
                }
                _ => {
                    // Past its expected end, it may end at any moment: from the base again.
                    if w.expected_end.take().is_some() {
                        w.step = base;
                    } else {
                        w.step = (w.step * 2).min(max);
                    }
                    w.next = now + w.step;
                }
            },
        }
        self.order.insert((w.next, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(n: u32) -> Handle {
        Handle {
            key: format!("key-{n}"),
            provider_ref: format!("ref-{n}"),
        }
    }

    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(4);

    #[test]
    fn an_unchanged_workload_is_looked_at_less_and_less_often_up_to_the_bound() {
        let mut f = Followed::new(BASE, MAX);
        let id = Uuid::new_v4();
        let start = Instant::now();
        f.follow(id, handle(1), None, start);
        assert_eq!(f.next_due(), Some(start + BASE));
        let mut gaps = vec![];
        let mut now = start + BASE;
        for _ in 0..6 {
            f.looked(id, "key-1", Seen::Unchanged, now);
            let next = f.next_due().unwrap();
            gaps.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(gaps, [1000, 2000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn a_change_of_phase_does_not_bring_the_next_look_sooner() {
        let mut f = Followed::new(BASE, Duration::from_secs(16));
        let id = Uuid::new_v4();
        let start = Instant::now();
        f.follow(id, handle(1), None, start);
        // Seen running at the first look, then unchanged: a 30 s task is seen ended at the
        // sixth look, 31.5 s after its launch.
        let mut now = start + BASE;
        let mut looks = vec![now - start];
        f.looked(id, "key-1", Seen::Changed { running: true }, now);
        while now - start < Duration::from_secs(30) {
            now = f.next_due().unwrap();
            looks.push(now - start);
            f.looked(id, "key-1", Seen::Unchanged, now);
        }
        let secs: Vec<f64> = looks.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    }

    #[test]
    fn a_running_workload_with_a_known_run_time_is_next_looked_at_when_it_should_end() {
        let mut f = Followed::new(BASE, Duration::from_secs(15));
        let id = Uuid::new_v4();
        let start = Instant::now();
        f.follow(id, handle(1), Some(Duration::from_secs(30)), start);
        let now = start + BASE;
        f.looked(id, "key-1", Seen::Changed { running: true }, now);
        let t = now + Duration::from_secs(15);
        assert_eq!(f.next_due(), Some(t), "no longer than the bound");
        f.looked(id, "key-1", Seen::Unchanged, t);
        let t = t + Duration::from_secs(15);
        assert_eq!(f.next_due(), Some(t), "and again");
        f.looked(id, "key-1", Seen::Unchanged, t);
        let end = now + Duration::from_secs(30) + BASE;
        assert_eq!(f.next_due(), Some(end), "then at its expected end");
        f.looked(id, "key-1", Seen::Unchanged, end);
        assert_eq!(
            f.next_due(),
            Some(end + BASE),
            "overdue: from the base again"
        );
    }

    #[test]
    fn a_round_takes_the_due_workloads_and_fills_its_batches_with_the_soonest_others() {
        let mut f = Followed::new(BASE, MAX);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let start = Instant::now();
        for (n, id) in ids.iter().enumerate() {
            f.follow(*id, handle(n as u32), None, start);
        }
        let now = start + BASE;
        // Three have been looked at and are due later, at different times.
        for (n, id) in ids.iter().enumerate().skip(2) {
            f.looked(
                *id,
                &format!("key-{n}"),
                Seen::Unchanged,
                now - BASE / n as u32,
            );
        }
        assert!(f.round(start, 3).is_empty(), "none due yet");
        let round = f.round(now, 3);
        let taken: Vec<Uuid> = round.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            taken.len(),
            3,
            "two due, and one batch of three has room for one more"
        );
        assert!(taken.contains(&ids[0]) && taken.contains(&ids[1]));
        assert_eq!(taken[2], ids[2], "the soonest due of the rest: {taken:?}");
        assert_eq!(f.round(now, 100).len(), 5);
    }

    #[test]
    fn a_new_attempt_replaces_the_old_and_a_stale_answer_is_ignored() {
        let mut f = Followed::new(BASE, MAX);
        let id = Uuid::new_v4();
        let start = Instant::now();
        f.follow(id, handle(1), None, start);
        f.follow(id, handle(2), None, start);
        assert!(f.follows(id, "key-2") && !f.follows(id, "key-1"));
        let due = f.next_due();
        f.looked(id, "key-1", Seen::Unchanged, start + MAX);
        assert_eq!(f.next_due(), due);
        f.unfollow(id);
        assert_eq!(f.next_due(), None);
        assert!(f.round(start + MAX, 100).is_empty());
    }
}
