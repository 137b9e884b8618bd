//! Each provider's places: at most `max_concurrency` jobs hold one at once (starting,
//! running, cancelling), and the queued jobs routed here that found none wait for one,
//! oldest first. When each began to wait is kept, so that a job that has waited longer than
//! `routing.max_wait_seconds` can be routed again to a provider with room.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

pub(super) struct Places {
    max: usize,
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
            inner: Mutex::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a place for `id` when one is free (true also when it holds one already). It
    /// never queues the job: see [`Places::wait`].
    pub fn take(&self, id: Uuid) -> bool {
        let mut inner = self.inner.lock().unwrap();
        if inner.held.contains(&id) {
            return true;
        }
        if inner.held.len() >= self.max {
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
        let mut free = self.max.saturating_sub(inner.held.len());
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
