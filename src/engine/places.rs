//! Each provider's places: at most `max_concurrency` jobs hold one at once (starting,
//! running, cancelling), and the queued jobs routed here that found none wait for one.
//!
//! Places go to tenants by weighted fair share, as Kueue's fair sharing and AWS Batch's
//! fair-share policies divide theirs: a freed place goes to the waiting tenant that holds
//! the fewest for its weight (`[tenants.NAME] weight`, 1 by default), never past its own
//! `max_concurrency`, and within a tenant to its job of the highest `priority`, then the
//! oldest. A place chosen so is reserved for that job until its reconcile takes it, and no
//! other job takes a place while a tenant that may have one waits: so one tenant's burst of
//! 100,000 jobs delays another's next job by one place's turn, not by the burst.
//!
//! When each job began to wait is kept, so that a job that has waited longer than
//! `routing.max_wait_seconds` can be routed again to a provider with room. With several
//! replicas the places are the cluster's: each replica takes new ones only up to its share
//! ([`Places::share`], set at each lease renewal), which leaves the others what they hold;
//! the fair share is then each replica's among the jobs it owns.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::TenantConfig;

/// Each tenant's weight and limit, from `[tenants.NAME]`; a tenant not named has weight 1
/// and no limit of its own.
#[derive(Debug, Default)]
pub(super) struct Tenancy {
    tenants: BTreeMap<String, TenantConfig>,
}

impl Tenancy {
    pub fn new(tenants: BTreeMap<String, TenantConfig>) -> Tenancy {
        Tenancy { tenants }
    }

    fn weight(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).map_or(1, |t| u64::from(t.weight.max(1)))
    }

    fn limit(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|t| t.max_concurrency)
            .unwrap_or(usize::MAX)
    }
}

/// Who waits for a place, and in what order within its tenant.
type WaitKey = (Reverse<i32>, u64, Uuid);

pub(super) struct Places {
    max: usize,
    /// How many of the `max` this replica may hold: all of them alone, its share with others.
    limit: AtomicUsize,
    tenancy: Arc<Tenancy>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The jobs holding a place, and whose.
    held: BTreeMap<Uuid, Arc<str>>,
    /// Places reserved for the waiters chosen to have them, until their reconciles take them.
    granted: BTreeMap<Uuid, Arc<str>>,
    /// Places each tenant holds or has reserved.
    used: BTreeMap<Arc<str>, usize>,
    /// Each tenant's waiting jobs: the highest priority first, then the oldest.
    waiting: BTreeMap<Arc<str>, BTreeSet<WaitKey>>,
    /// When each waiting job began to wait, and where it is in its tenant's queue.
    since: BTreeMap<Uuid, (Instant, Arc<str>, WaitKey)>,
    /// The order of arrival, for the queues.
    arrivals: u64,
}

impl Inner {
    fn use_one(&mut self, tenant: &Arc<str>) {
        *self.used.entry(tenant.clone()).or_default() += 1;
    }

    fn release_one(&mut self, tenant: &Arc<str>) {
        if let Some(n) = self.used.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.used.remove(tenant);
            }
        }
    }

    fn used_by(&self, tenant: &str) -> usize {
        self.used.get(tenant).copied().unwrap_or(0)
    }

    fn stop_waiting(&mut self, id: Uuid) {
        if let Some((_, tenant, key)) = self.since.remove(&id) {
            if let Some(queue) = self.waiting.get_mut(&tenant) {
                queue.remove(&key);
                if queue.is_empty() {
                    self.waiting.remove(&tenant);
                }
            }
        }
    }

    fn occupied(&self) -> usize {
        self.held.len() + self.granted.len()
    }
}

impl Places {
    pub fn new(max: usize, tenancy: Arc<Tenancy>) -> Places {
        Places {
            max,
            limit: AtomicUsize::new(max),
            tenancy,
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

    /// Whether some tenant with room under its own limit waits for a place: then a place
    /// that frees is its, not a newcomer's.
    fn someone_may_wait(&self, inner: &Inner) -> bool {
        inner
            .waiting
            .keys()
            .any(|t| inner.used_by(t) < self.tenancy.limit(t))
    }

    /// Takes a place for `tenant`'s job `id` when one is free for it (true also when it
    /// holds one already, or one was reserved for it). It never queues the job: see
    /// [`Places::wait`].
    pub fn take(&self, id: Uuid, tenant: &str) -> bool {
        let mut inner = self.inner.lock().unwrap();
        if inner.held.contains_key(&id) {
            return true;
        }
        if let Some(tenant) = inner.granted.remove(&id) {
            inner.stop_waiting(id);
            inner.held.insert(id, tenant);
            return true;
        }
        let fits = inner.occupied() < self.limit()
            && inner.used_by(tenant) < self.tenancy.limit(tenant)
            && !self.someone_may_wait(&inner);
        if !fits {
            return false;
        }
        let tenant: Arc<str> = Arc::from(tenant);
        inner.stop_waiting(id);
        inner.use_one(&tenant);
        inner.held.insert(id, tenant);
        true
    }

    /// Holds a place for `tenant`'s job `id` whatever the limit: a job found live (at
    /// start, or by a reconcile) holds the place its workload uses.
    pub fn hold(&self, id: Uuid, tenant: &str) {
        let mut inner = self.inner.lock().unwrap();
        if inner.held.contains_key(&id) {
            return;
        }
        match inner.granted.remove(&id) {
            Some(tenant) => {
                inner.held.insert(id, tenant);
            }
            None => {
                let tenant: Arc<str> = Arc::from(tenant);
                inner.use_one(&tenant);
                inner.held.insert(id, tenant);
            }
        }
        inner.stop_waiting(id);
    }

    /// Queues `tenant`'s job `id`, of `priority`, for a place (once); how long it has
    /// waited so far.
    pub fn wait(&self, id: Uuid, tenant: &str, priority: i32) -> Duration {
        let mut inner = self.inner.lock().unwrap();
        if let Some((since, _, _)) = inner.since.get(&id) {
            return since.elapsed();
        }
        if inner.granted.contains_key(&id) {
            return Duration::ZERO;
        }
        inner.arrivals += 1;
        let key = (Reverse(priority), inner.arrivals, id);
        let tenant: Arc<str> = Arc::from(tenant);
        inner.waiting.entry(tenant.clone()).or_default().insert(key);
        inner.since.insert(id, (Instant::now(), tenant, key));
        Duration::ZERO
    }

    /// Frees the place `id` holds (or was reserved) and takes it out of the queue.
    pub fn free(&self, id: Uuid) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(tenant) = inner.held.remove(&id).or_else(|| inner.granted.remove(&id)) {
            inner.release_one(&tenant);
        }
        inner.stop_waiting(id);
    }

    pub fn is_waiting(&self, id: Uuid) -> bool {
        self.inner.lock().unwrap().since.contains_key(&id)
    }

    /// Chooses waiting jobs for as many places as are free, each place to the tenant that
    /// uses the fewest for its weight (and is below its own limit), its job of the highest
    /// priority, then the oldest; reserves the places for them, and returns them with their
    /// tenants, for their reconciles to take.
    pub fn next_waiting(&self) -> Vec<(Uuid, Arc<str>)> {
        let mut inner = self.inner.lock().unwrap();
        let mut free = self.limit().saturating_sub(inner.occupied());
        let mut chosen = vec![];
        while free > 0 {
            let next = inner
                .waiting
                .iter()
                .filter(|(t, _)| inner.used_by(t) < self.tenancy.limit(t))
                .min_by(|(a, qa), (b, qb)| {
                    // used/weight, compared without division; then the older first waiter.
                    let ua = inner.used_by(a) as u64 * self.tenancy.weight(b);
                    let ub = inner.used_by(b) as u64 * self.tenancy.weight(a);
                    ua.cmp(&ub).then_with(|| {
                        let first = |q: &BTreeSet<WaitKey>| q.first().map(|k| k.1);
                        first(qa).cmp(&first(qb))
                    })
                })
                .and_then(|(t, q)| Some((t.clone(), *q.first()?)));
            let Some((tenant, key)) = next else {
                break;
            };
            let id = key.2;
            inner.stop_waiting(id);
            inner.use_one(&tenant);
            inner.granted.insert(id, tenant.clone());
            chosen.push((id, tenant));
            free -= 1;
        }
        chosen
    }

    /// How many places are held (reserved ones included).
    pub fn held(&self) -> usize {
        self.inner.lock().unwrap().occupied()
    }

    /// How many jobs wait for a place.
    pub fn waiting(&self) -> usize {
        self.inner.lock().unwrap().since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(max: usize) -> Places {
        Places::new(max, Arc::default())
    }

    fn ids(chosen: Vec<(Uuid, Arc<str>)>) -> Vec<Uuid> {
        chosen.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn waiters_get_freed_places_oldest_first_and_leave_the_queue_once() {
        let places = places(1);
        let [a, b, c] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        assert!(places.take(a, "t"));
        assert!(places.take(a, "t"), "a holder takes its own place again");
        assert!(!places.take(b, "t"));
        assert_eq!(places.wait(b, "t", 0), Duration::ZERO);
        places.wait(c, "t", 0);
        places.wait(b, "t", 0);
        assert!(places.is_waiting(b) && places.is_waiting(c));
        assert!(places.next_waiting().is_empty(), "no place is free");
        places.free(a);
        places.free(c); // c went elsewhere
        assert_eq!(ids(places.next_waiting()), [b]);
        assert!(places.take(b, "t"), "the chosen waiter takes its reserved place");
        assert_eq!((places.held(), places.waiting()), (1, 0));
    }

    /// A freed place goes to the tenant that holds fewest for its weight, whatever came
    /// first: a second tenant's one job is next after a first tenant's thousand.
    #[test]
    fn places_go_by_weighted_fair_share_then_priority_then_age() {
        let tenancy = Tenancy::new(BTreeMap::from([(
            "heavy".to_string(),
            TenantConfig {
                weight: 3,
                max_concurrency: None,
            },
        )]));
        let places = Places::new(4, Arc::new(tenancy));
        for _ in 0..4 {
            assert!(places.take(Uuid::now_v7(), "a"));
        }
        let burst: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
        for id in &burst {
            assert!(!places.take(*id, "a"));
            places.wait(*id, "a", 0);
        }
        let b = Uuid::now_v7();
        places.wait(b, "b", 0);
        // One of a's four ends: the place is b's, though a's thousand waited longer.
        let held_by_a: Vec<Uuid> = {
            let inner = places.inner.lock().unwrap();
            inner.held.keys().copied().collect()
        };
        places.free(held_by_a[0]);
        let chosen = places.next_waiting();
        assert_eq!(ids(chosen), [b]);
        // A newcomer of a's cannot take a place while b's is reserved, nor while others wait.
        places.free(held_by_a[1]);
        assert!(!places.take(Uuid::now_v7(), "a"), "took a place others wait for");
        // Within a tenant: the highest priority first, then the oldest.
        let urgent = Uuid::now_v7();
        places.wait(urgent, "a", 10);
        assert_eq!(ids(places.next_waiting()), [urgent]);
        // Weights: with "heavy" (weight 3) and "light" (1) waiting, heavy gets three places
        // for light's one.
        let places = Places::new(8, places.tenancy.clone());
        for t in ["heavy", "light"] {
            for _ in 0..10 {
                places.wait(Uuid::now_v7(), t, 0);
            }
        }
        let chosen = places.next_waiting();
        let heavy = chosen.iter().filter(|(_, t)| &**t == "heavy").count();
        assert_eq!((heavy, chosen.len() - heavy), (6, 2));
    }

    /// A tenant's `max_concurrency` caps the places it holds however many are free, and its
    /// waiters then do not hold up the others.
    #[test]
    fn a_tenants_own_limit_holds_and_does_not_block_others() {
        let tenancy = Tenancy::new(BTreeMap::from([(
            "capped".to_string(),
            TenantConfig {
                weight: 1,
                max_concurrency: Some(1),
            },
        )]));
        let places = Places::new(4, Arc::new(tenancy));
        assert!(places.take(Uuid::now_v7(), "capped"));
        let waiter = Uuid::now_v7();
        assert!(!places.take(waiter, "capped"));
        places.wait(waiter, "capped", 0);
        assert!(places.next_waiting().is_empty(), "past its limit");
        assert!(places.take(Uuid::now_v7(), "other"), "the capped tenant's waiter blocked another");
    }

    /// Shared by replicas, each takes up to an equal share of the places, and no more than
    /// the others leave: one that adopted a lapsed replica's jobs holds more than its share
    /// until they end, and the others take fewer meanwhile.
    #[test]
    fn replicas_share_the_places_and_take_none_the_others_hold() {
        let take = |places: &Places, n: usize| {
            (0..n).filter(|_| places.take(Uuid::now_v7(), "t")).count()
        };
        // 16 places among three replicas: 6, 5 and 5.
        let shares: Vec<usize> = (0..3)
            .map(|rank| {
                let places = places(16);
                places.share(3, rank, 0);
                take(&places, 100)
            })
            .collect();
        assert_eq!(shares, [6, 5, 5]);
        // Two live replicas, the other holding 12 (its 8 and 4 it adopted): 4 left here.
        let p = places(16);
        p.share(2, 1, 12);
        assert_eq!(take(&p, 100), 4);
        // Adopted jobs are held whatever the share; none is taken until below it.
        let p = places(16);
        p.share(2, 0, 0);
        for _ in 0..10 {
            p.hold(Uuid::now_v7(), "t");
        }
        assert_eq!(take(&p, 100), 0);
        assert!(p.next_waiting().is_empty());
        // Alone again: every place.
        p.share(1, 0, 0);
        assert_eq!(take(&p, 100), 6);
    }

    #[test]
    fn a_waiter_that_takes_a_place_is_no_longer_waiting() {
        let places = places(1);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        places.hold(a, "t");
        places.wait(b, "t", 0);
        places.free(a);
        assert!(!places.take(b, "t"), "a waiter's place comes by its turn, not by a grab");
        assert_eq!(ids(places.next_waiting()), [b]);
        assert!(places.take(b, "t"));
        assert!(!places.is_waiting(b));
        assert!(places.next_waiting().is_empty());
    }
}
