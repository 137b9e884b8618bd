//! Each provider's places: at most `max_concurrency` jobs hold one at once (starting,
//! running, cancelling), and the queued jobs routed here that found none wait for one,
//! oldest first. When each began to wait is kept, so that a job that has waited longer than
//! `routing.max_wait_seconds` can be routed again to a provider with room.
//!
//! With several replicas the places are the cluster's: each replica takes new ones only up
//! to its share ([`Places::share`], set at each lease renewal), which leaves the others
//! what they hold.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

pub(super) struct Places {
    max: usize,
    /// How many of the `max` this replica may hold: all of them alone, its share with others.
    limit: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    held: BTreeSet<Uuid>,
    /// Waiting jobs in the order they came; an id no longer in `since` left the queue.
    queue: VecDeque<Uuid>,
    since: BTreeMap<Uuid, Instant>,
}

impl Places {
    pub fn new(max: usize) -> Places {
        Places {
            max,
            limit: AtomicUsize::new(max),
            inner: Mutex::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Sets this replica's share of the places, one of `live` replicas at `rank` (its place
    /// among them) while the others hold `elsewhere`: an equal share of `max` (the first
    /// `max % live` replicas one more), and no more than the others leave free. What it
    /// holds already (adopted jobs among them) it keeps; it takes new places only below
    /// its share.
    pub fn share(&self, live: usize, rank: usize, elsewhere: usize) {
        let live = live.max(1);
        let fair = self.max / live + usize::from(rank < self.max % live);
        let limit = fair.min(self.max.saturating_sub(elsewhere));
        self.limit.store(limit, Ordering::Relaxed);
    }

    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Takes a place for `id` when one is free (true also when it holds one already). It
    /// never queues the job: see [`Places::wait`].
    pub fn take(&self, id: Uuid) -> bool {
        let mut inner = self.inner.lock().unwrap();
        if inner.held.contains(&id) {
            return true;
        }
        if inner.held.len() >= self.limit() {
            return false;
        }
        inner.since.remove(&id);
        inner.held.insert(id)
    }

    /// Holds a place for `id` whatever the limit: a job found live (at start, or by a
    /// reconcile) holds the place its workload uses.
    pub fn hold(&self, id: Uuid) {
        self.inner.lock().unwrap().held.insert(id);
    }

    /// Queues `id` for the next free place (once); how long it has waited so far.
    pub fn wait(&self, id: Uuid) -> Duration {
        let mut inner = self.inner.lock().unwrap();
        if let Some(since) = inner.since.get(&id) {
            return since.elapsed();
        }
        inner.since.insert(id, Instant::now());
        inner.queue.push_back(id);
        Duration::ZERO
    }

    /// Frees the place `id` holds and takes it out of the queue.
    pub fn free(&self, id: Uuid) {
        let mut inner = self.inner.lock().unwrap();
        inner.held.remove(&id);
        inner.since.remove(&id);
    }

    pub fn is_waiting(&self, id: Uuid) -> bool {
        self.inner.lock().unwrap().since.contains_key(&id)
    }

    /// The waiting jobs for as many places as are free, oldest first, out of the queue.
    pub fn next_waiting(&self) -> Vec<Uuid> {
        let mut inner = self.inner.lock().unwrap();
        let mut free = self.limit().saturating_sub(inner.held.len());
        let mut ids = vec![];
        while free > 0 {
            let Some(id) = inner.queue.pop_front() else {
                break;
            };
            if inner.since.remove(&id).is_some() {
                ids.push(id);
                free -= 1;
            }
        }
        ids
    }

    /// How many places are held.
    pub fn held(&self) -> usize {
        self.inner.lock().unwrap().held.len()
    }

    /// How many jobs wait for a place.
    pub fn waiting(&self) -> usize {
        self.inner.lock().unwrap().since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_get_freed_places_oldest_first_and_leave_the_queue_once() {
        let places = Places::new(1);
        let [a, b, c] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        assert!(places.take(a));
        assert!(places.take(a), "a holder takes its own place again");
        assert!(!places.take(b));
        assert_eq!(places.wait(b), Duration::ZERO);
        places.wait(c);
        places.wait(b);
        assert!(places.is_waiting(b) && places.is_waiting(c));
        assert!(places.next_waiting().is_empty(), "no place is free");
        places.free(a);
        places.free(c); // c went elsewhere
        assert_eq!(places.next_waiting(), [b]);
        assert_eq!((places.held(), places.waiting()), (0, 0));
    }

    /// Shared by replicas, each takes up to an equal share of the places, and no more than
    /// the others leave: one that adopted a lapsed replica's jobs holds more than its share
    /// until they end, and the others take fewer meanwhile.
    #[test]
    fn replicas_share_the_places_and_take_none_the_others_hold() {
        let take = |places: &Places, n: usize| {
            (0..n).filter(|_| places.take(Uuid::now_v7())).count()
        };
        // 16 places among three replicas: 6, 5 and 5.
        let shares: Vec<usize> = (0..3)
            .map(|rank| {
                let places = Places::new(16);
                places.share(3, rank, 0);
                take(&places, 100)
            })
            .collect();
        assert_eq!(shares, [6, 5, 5]);
        // Two live replicas, the other holding 12 (its 8 and 4 it adopted): 4 left here.
        let places = Places::new(16);
        places.share(2, 1, 12);
        assert_eq!(take(&places, 100), 4);
        // Adopted jobs are held whatever the share; none is taken until below it.
        let places = Places::new(16);
        places.share(2, 0, 0);
        for _ in 0..10 {
            places.hold(Uuid::now_v7());
        }
        assert_eq!(take(&places, 100), 0);
        assert!(places.next_waiting().is_empty());
        // Alone again: every place.
        places.share(1, 0, 0);
        assert_eq!(take(&places, 100), 6);
    }

    #[test]
    fn a_waiter_that_takes_a_place_is_no_longer_waiting() {
        let places = Places::new(1);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        places.hold(a);
        places.wait(b);
        places.free(a);
        assert!(places.take(b));
        assert!(!places.is_waiting(b));
        assert!(places.next_waiting().is_empty());
    }
}
