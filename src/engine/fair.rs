//! A budget of calls per second shared fairly among tenants: the log followers' reads of
//! one provider. With one budget for all, a tenant holding 300 followers made another's
//! first read wait behind all of them; here each read waits for its turn, and turns go
//! round the tenants that are waiting, one read each, so that one tenant's load costs
//! another at most its share (as Kubernetes API priority and fairness and Kueue's fair
//! sharing divide theirs). A task of its own hands out the turns as the budget allows; it
//! ends with the budget.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

pub struct FairShare {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

struct Inner {
    budget: DefaultDirectRateLimiter,
    waiting: Mutex<Waiting>,
    arrived: Notify,
}

/// Who waits for a turn: each tenant's waiters in arrival order, and the tenants in the
/// order their next turns come.
#[derive(Default)]
struct Waiting {
    by_tenant: BTreeMap<String, VecDeque<oneshot::Sender<()>>>,
    round: VecDeque<String>,
}

impl FairShare {
    /// A budget of `per_second` turns; must be made inside a Tokio runtime.
    pub fn new(per_second: u32) -> FairShare {
        let per_second = NonZeroU32::new(per_second.max(1)).expect("at least 1");
        let inner = Arc::new(Inner {
            budget: RateLimiter::direct(Quota::per_second(per_second)),
            waiting: Mutex::default(),
            arrived: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(hand_out(inner.clone(), stop.clone()));
        FairShare {
            inner,
            _stop: stop.drop_guard(),
        }
    }

    /// Waits for `tenant`'s next turn.
    pub async fn turn(&self, tenant: &str) {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.inner.waiting.lock().unwrap();
            let queue = waiting.by_tenant.entry(tenant.to_string()).or_default();
            if queue.is_empty() {
                waiting.round.push_back(tenant.to_string());
            }
            waiting
                .by_tenant
                .get_mut(tenant)
                .expect("just made")
                .push_back(tx);
        }
        self.inner.arrived.notify_one();
        // An error means the budget is gone (the engine is shutting down): go ahead.
        let _ = rx.await;
    }
}

impl Waiting {
    /// The next waiter in the round (skipping those that gave up), its tenant moved to the
    /// round's end.
    fn next(&mut self) -> Option<oneshot::Sender<()>> {
        while let Some(tenant) = self.round.pop_front() {
            let queue = self
                .by_tenant
                .get_mut(&tenant)
                .expect("a tenant in the round waits");
            let found = std::iter::from_fn(|| queue.pop_front()).find(|tx| !tx.is_closed());
            if queue.is_empty() {
                self.by_tenant.remove(&tenant);
            } else {
                self.round.push_back(tenant);
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Hands out a turn each time the budget allows one and someone waits.
async fn hand_out(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = inner.budget.until_ready() => {}
            _ = stop.cancelled() => return,
        }
        // A turn is ready: the next waiter takes it, once there is one.
        loop {
            let arrived = inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next = inner.waiting.lock().unwrap().next();
            match next {
                // Gone since it was picked: the turn goes to the next one.
                Some(tx) => match tx.send(()) {
                    Ok(()) => break,
                    Err(_) => continue,
                },
                None => tokio::select! {
                    _ = arrived => {}
                    _ = stop.cancelled() => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_go_round_the_waiting_tenants() {
        let share = Arc::new(FairShare::new(1));
        let served = Arc::new(Mutex::new(vec![]));
        let mut tasks = vec![];
        for (tenant, n) in [("a", 4), ("b", 1)] {
            for _ in 0..n {
                let (share, served) = (share.clone(), served.clone());
                tasks.push(tokio::spawn(async move {
                    share.turn(tenant).await;
                    served.lock().unwrap().push(tenant);
                }));
                tokio::task::yield_now().await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let served = served.lock().unwrap().clone();
        // The first turn went to a at once; b, arriving behind three more of a's, is served
        // after one of them, not after all (as one queue for all would have it).
        let b = served.iter().position(|t| *t == "b").unwrap();
        assert!(b <= 2, "b was served after {b} of a's turns: {served:?}");
    }
}
