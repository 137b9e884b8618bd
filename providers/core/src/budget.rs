//! A provider's budget of calls to its cloud (ECS API calls, ARM reads, Kubernetes API
//! calls per second). The cloud's limit is the account's, not one gateway's: with N
//! replicas live, each call here waits for N cells of the budget, so that N replicas
//! together stay inside it.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct Budget {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
    replicas: AtomicU32,
}

impl Budget {
    /// `per_second` calls a second, `burst` at once (each at least 1).
    pub fn per_second(per_second: u32, burst: u32) -> Budget {
        let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
        Budget::new(Quota::per_second(rate).allow_burst(burst))
    }

    pub fn new(quota: Quota) -> Budget {
        Budget {
            burst: quota.burst_size(),
            limiter: RateLimiter::direct(quota),
            replicas: AtomicU32::new(1),
        }
    }

    /// Waits until this replica's share of the budget allows one more call.
    pub async fn ready(&self) {
        let n = self.replicas.load(Ordering::Relaxed).clamp(1, self.burst.get());
        let cells = NonZeroU32::new(n).expect("at least 1");
        // Never more cells than the burst, so this cannot fail.
        let _ = self.limiter.until_n_ready(cells).await;
    }

    /// How many replicas share the budget now.
    pub fn set_replicas(&self, live: usize) {
        self.replicas
            .store(u32::try_from(live.max(1)).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn n_replicas_share_one_budget() {
        let budget = Budget::per_second(20, 20);
        for _ in 0..20 {
            budget.ready().await;
        }
        budget.set_replicas(4);
        let started = Instant::now();
        for _ in 0..5 {
            budget.ready().await;
        }
        // The burst used up, 5 calls of 4 cells at 20 cells a second take a second at
        // least: a quarter of the rate alone (the bound that matters; slower is no fault).
        let took = started.elapsed().as_millis();
        assert!(took >= 900, "5 calls as 1 of 4 replicas took only {took} ms");
    }
}
