//! Which jobs this replica reconciles when several gateways share one PostgreSQL store.
//!
//! A replica owns the jobs it accepted and those it adopted; the store fences every engine
//! write with the owner, so a replica that lost a job writes nothing to it. Two tasks:
//!
//! - the lease: renewed every third of `store.lease_seconds`, on a connection of its own;
//!   each renewal says how many places this replica holds at each provider and tells how
//!   many replicas are live (the providers' rate budgets and places are divided among
//!   them: [`super::places::Places::share`]) and whether this one leads (does the work that
//!   must happen once per cluster: the orphan sweep); then the jobs of replicas whose
//!   leases lapsed are adopted in batches, renewing between them and for at most a third
//!   of the lease a round, taken in as at start (places, live workloads, followed by their
//!   stored launch keys: nothing is launched again) and reconciled. A replica makes no
//!   call that changes a workload unless its lease surely outlasts the call
//!   ([`Engine::fence`](super::Engine));
//! - the change feed: a change any replica made wakes this replica's waiters on that job
//!   (long-polls, log followers), a reconnection wakes all of them to read again, and a
//!   poke addressed to this replica (a cancel that came to another) reconciles the job.
//!
//! With SQLite neither task runs: one gateway owns every job and leads.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::Engine;
use crate::store::Change;

/// Jobs one adoption claims at most; the next batch follows at once.
const ADOPT_BATCH: usize = 500;

/// Renewals that found this replica's lease had lapsed.
const LAPSES: &str = "offload_lease_lapses_total";

pub(super) async fn lease(engine: Arc<Engine>, every: Duration) {
    // From 0, so that the first lapse is an increase Prometheus sees.
    metrics::counter!(LAPSES).absolute(0);
    loop {
        if engine.renew().await {
            // Bounded in time, renewing between batches: what is left waits for the next
            // round, and this replica's own lease never lapses behind a long adoption.
            engine.adopt(every).await;
        }
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

pub(super) async fn feed(
    engine: Arc<Engine>,
    mut changes: futures::stream::BoxStream<'static, Change>,
) {
    loop {
        let change = tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            change = changes.next() => change,
        };
        match change {
            Some(Change::Job(id)) => engine.changes.notify(id),
            Some(Change::Resync) => {
                // Pokes from other replicas may have been lost with the feed.
                engine.changes.notify_all();
                engine.poke_followed();
            }
            // Waiters are woken to read again at the Resync that follows.
            Some(Change::Down) => {}
            Some(Change::Poke { owner, id }) => {
                if engine.store.replica().as_deref() == Some(owner.as_str()) {
                    engine.poke(id);
                }
            }
            None => return,
        }
    }
}

impl Engine {
    /// Renews this replica's lease, saying what it holds, and takes from the answer how many
    /// replicas share the providers' rate budgets and places, and whether it leads; false
    /// when the renewal failed.
    async fn renew(&self) -> bool {
        let held: BTreeMap<String, usize> = self
            .slots
            .iter()
            .map(|s| (s.name.clone(), s.places.held()))
            .collect();
        let lease = match self.store.renew_lease(&held).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "renewing the lease failed; trying again");
                return false;
            }
        };
        if let Some(id) = &lease.renewed_as {
            tracing::warn!(replica = %id, "lease had lapsed; carrying on as a new replica");
            metrics::counter!(LAPSES).increment(1);
        }
        self.leader.store(lease.leader, Ordering::Relaxed);
        for slot in &self.slots {
            slot.provider.set_replicas(lease.live);
            let elsewhere = lease.held_elsewhere.get(&slot.name).copied().unwrap_or(0);
            slot.places.share(lease.live, lease.rank, elsewhere);
        }
        metrics::gauge!("offload_replicas_live").set(lease.live as f64);
        true
    }

    /// Takes over the jobs of replicas whose leases lapsed, batch by batch, renewing this
    /// replica's own lease between batches, for at most `within`.
    async fn adopt(&self, within: Duration) {
        let started = tokio::time::Instant::now();
        loop {
            let adopted = match self.store.adopt(ADOPT_BATCH).await {
                Ok(adopted) => adopted,
                Err(e) => return tracing::warn!(error = %e, "adopting jobs failed"),
            };
            if !adopted.is_empty() {
                tracing::info!(jobs = adopted.len(), "adopted the jobs of a replica whose lease lapsed");
                metrics::counter!("offload_jobs_adopted_total").increment(adopted.len() as u64);
            }
            for rec in &adopted {
                self.take_in(rec);
            }
            // A batch can come short of the limit with more to adopt (jobs another replica
            // held locked); an empty one means none is left.
            if adopted.is_empty() || started.elapsed() >= within {
                return;
            }
            if !self.renew().await {
                return;
            }
        }
    }
}
