//! Picks the provider for a job, and quotes what each would cost. Uses only what providers
//! declare (capabilities, their own validation, price sheet), so it has no
//! provider-specific code.
//!
//! Feasibility first: the provider's capabilities and validation, the spec's
//! `routing.allow` and `routing.deny`, `routing.spot = never` against spot providers,
//! `routing.max_hourly_usd` against the price of the size the provider would launch, and
//! for `auto` the providers a failover already left for want of capacity. Then the order
//! of the feasible: healthy before unhealthy; with `spot = preferred` spot before the
//! rest; with `prefer = speed` a free place and then the lowest expected start latency
//! (the median of the provider's recent starts, in half seconds); the lowest estimated
//! cost (price sheet times billed duration); the most free places; the configured order.
//!
//! The expected duration is the spec's, else the median of the DAG task's recent
//! successful runs, else the gateway's default.

use std::cmp::Ordering;
use std::sync::Arc;

use offload_provider::{Estimate, Resources};

use super::history::TaskKey;
use super::{Engine, Slot};
use crate::config::RoutingConfig;
use crate::model::{
    DurationSource, FieldError, JobSpec, Prefer, Quote, QuoteCandidate, QuoteExclusion,
    ReferenceCost, SpotPolicy,
};
use crate::store::JobRecord;

/// Why a spot provider cannot run a job that allows no spot, and what would change that.
const SPOT_NEVER: &str = "it is a spot provider (all or part of its capacity is spot) and routing.spot is never: \
     allow spot (the job's routing.spot, or routing.default_spot) or give the provider no spot capacity";

/// Start latencies closer than this are a tie (which cost breaks).
const LATENCY_STEP_MS: u64 = 500;

/// A provider that can run the job, with what ranks it.
struct Candidate<'a> {
    slot: &'a Arc<Slot>,
    estimate: Estimate,
    rank: Rank,
}

/// What ranks a feasible provider; smaller is better. Kept apart from the slots so that
/// the order can be tested on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rank {
    pub healthy: bool,
    pub spot: bool,
    /// The expected start latency in steps of [`LATENCY_STEP_MS`]; 0 before the first
    /// start was measured.
    pub start_steps: u64,
    pub cost: f64,
    pub free: usize,
    pub index: usize,
}

/// Orders two feasible providers for a job with these preferences, best first.
pub(crate) fn compare(a: &Rank, b: &Rank, prefer: Prefer, spot: SpotPolicy) -> Ordering {
    let mut order = b.healthy.cmp(&a.healthy);
    if spot == SpotPolicy::Preferred {
        order = order.then(b.spot.cmp(&a.spot));
    }
    if prefer == Prefer::Speed {
        // A full provider starts nothing until a place frees, however fast it starts.
        order = order
            .then((a.free == 0).cmp(&(b.free == 0)))
            .then(a.start_steps.cmp(&b.start_steps));
    }
    order
        .then(a.cost.total_cmp(&b.cost))
        .then(b.free.cmp(&a.free))
        .then(a.index.cmp(&b.index))
}

/// The routing block with the gateway's defaults filled in.
struct Wants<'a> {
    prefer: Prefer,
    spot: SpotPolicy,
    allow: &'a [String],
    deny: &'a [String],
    max_hourly_usd: Option<f64>,
    /// The providers (names or kinds) of the zones the spec asks for; `None` for any.
    zones: Option<Vec<&'a String>>,
    seconds: u64,
}

impl<'a> Wants<'a> {
    fn of(spec: &'a JobSpec, defaults: &'a RoutingConfig, seconds: u64) -> Self {
        let r = spec.routing.as_ref();
        let zones = r.filter(|r| !r.zones.is_empty()).map(|r| {
            r.zones
                .iter()
                .filter_map(|z| defaults.zones.get(z))
                .flatten()
                .collect()
        });
        Wants {
            zones,
            prefer: r.and_then(|r| r.prefer).unwrap_or_default(),
            spot: r.and_then(|r| r.spot).unwrap_or(defaults.default_spot),
            allow: r.map(|r| r.allow.as_slice()).unwrap_or_default(),
            deny: r.map(|r| r.deny.as_slice()).unwrap_or_default(),
            max_hourly_usd: r.and_then(|r| r.max_hourly_usd),
            seconds,
        }
    }
}

/// The DAG task a job belongs to, by its `dag_id` and `task_id` labels.
pub(super) fn task_of(tenant: &str, spec: &JobSpec) -> Option<TaskKey> {
    Some(TaskKey {
        tenant: tenant.to_string(),
        dag_id: spec.labels.get("dag_id")?.clone(),
        task_id: spec.labels.get("task_id")?.clone(),
    })
}

/// The feasible providers best first, and why each other one is not feasible.
struct Ranking<'a> {
    candidates: Vec<Candidate<'a>>,
    refusals: Vec<(String, String)>,
}

/// Why a submit is refused before it is stored.
pub enum SubmitRefusal {
    /// No configured provider can run the job: the bad fields, or each provider's reason.
    Unroutable(Vec<FieldError>),
    /// Its budgets refuse it (422 or 429).
    Budget(super::budgets::Refusal),
}

impl Engine {
    /// How long `spec` is expected to run, in seconds, and where that figure comes from.
    pub(super) async fn expected_duration(
        &self,
        tenant: &str,
        spec: &JobSpec,
    ) -> (u64, DurationSource) {
        if let Some(s) = spec
            .routing
            .as_ref()
            .and_then(|r| r.expected_duration_seconds)
        {
            return (s, DurationSource::Spec);
        }
        if let Some(task) = task_of(tenant, spec) {
            match self.runs.median(self.store.as_ref(), &task).await {
                Ok(Some(s)) => return (s.max(1), DurationSource::History),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "run history unavailable; using the default duration"),
            }
        }
        (self.routing.default_duration_seconds, DurationSource::Default)
    }

    /// Where the job may go now, best first, with the estimate a quote would give at
    /// each, for an expected run of `seconds`.
    pub(super) fn route(
        &self,
        rec: &JobRecord,
        seconds: u64,
    ) -> Result<Vec<(&Arc<Slot>, Estimate)>, String> {
        // Preempted as often as allowed: only where nothing is spot, from now on.
        let spec = match super::reconcile::preemptions(rec) >= self.routing.max_preemptions {
            true => {
                let mut spec = rec.job.spec.clone();
                spec.routing.get_or_insert_with(Default::default).spot = Some(SpotPolicy::Never);
                std::borrow::Cow::Owned(spec)
            }
            false => std::borrow::Cow::Borrowed(&rec.job.spec),
        };
        match self.rank(&spec, &rec.excluded, seconds) {
            Ok(r) if r.candidates.is_empty() => {
                let why: Vec<_> = r
                    .refusals
                    .iter()
                    .map(|(n, w)| format!("{n}: {w}"))
                    .collect();
                Err(format!(
                    "no configured provider can run this job ({})",
                    why.join("; ")
                ))
            }
            Ok(r) => Ok(r
                .candidates
                .iter()
                .map(|c| (c.slot, c.estimate))
                .collect()),
            Err(errors) => Err(errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// The provider a job's savings are measured against, among `ranked` (where it may
    /// go, best first), with its price for the job: the one the spec named, else
    /// `routing.reference_provider` when it is among them, else the dearest of them.
    pub(super) fn reference(&self, spec: &JobSpec, ranked: &[(&Arc<Slot>, Estimate)]) -> Option<ReferenceCost> {
        let named = |name: &str| ranked.iter().find(|(s, _)| s.name == name);
        let (slot, estimate) = match spec.provider.as_str() {
            "auto" => self
                .routing
                .reference_provider
                .as_deref()
                .and_then(named)
                .or_else(|| {
                    ranked
                        .iter()
                        .max_by(|a, b| a.1.hourly_usd.total_cmp(&b.1.hourly_usd))
                })?,
            name => named(name)?,
        };
        Some(ReferenceCost {
            provider: slot.name.clone(),
            hourly_usd: estimate.hourly_usd,
            usd: None,
        })
    }

    /// The configured zones' names.
    pub fn zones(&self) -> Vec<String> {
        self.routing.zones.keys().cloned().collect()
    }

    /// Whether `auto` routing has a provider for `spec` besides the `excluded` ones.
    pub(super) fn alternative(&self, spec: &JobSpec, excluded: &[String]) -> bool {
        self.rank(spec, excluded, self.routing.default_duration_seconds)
            .is_ok_and(|r| !r.candidates.is_empty())
    }

    /// Why a submit of `spec` by `tenant` is refused, if it is: no provider can take it
    /// (every reason: the bad fields, or each provider's refusal, field `provider`, a
    /// message that starts with the provider's name), or its budgets refuse it at the
    /// estimate of where it would go first. One ranking answers both: the expected duration
    /// decides no feasibility, so a job its budgets cover is ranked for it, any other for
    /// the default.
    pub async fn submit_refusal(&self, tenant: &str, spec: &JobSpec) -> Option<SubmitRefusal> {
        let covered = self.budgets.covers(tenant, spec);
        let seconds = match covered {
            true => self.expected_duration(tenant, spec).await.0,
            false => self.routing.default_duration_seconds,
        };
        let ranking = match self.rank(spec, &[], seconds) {
            Ok(ranking) => ranking,
            Err(errors) => return Some(SubmitRefusal::Unroutable(errors)),
        };
        if let Err(errors) = Self::feasible_or_refusals(&ranking) {
            return Some(SubmitRefusal::Unroutable(errors));
        }
        let best = ranking.candidates.first().filter(|_| covered)?;
        self.budgets
            .refusal(tenant, spec, best.estimate.estimated_usd)
            .map(SubmitRefusal::Budget)
    }

    fn feasible_or_refusals(ranking: &Ranking) -> Result<(), Vec<FieldError>> {
        if !ranking.candidates.is_empty() {
            return Ok(());
        }
        Err(ranking
            .refusals
            .iter()
            .map(|(name, why)| {
                FieldError::new("provider", format!("{name} cannot run this job: {why}"))
            })
            .collect())
    }

    /// Where `tenant`'s `spec` would run, best first, with the expected cost at each, and
    /// the providers that cannot run it; an error exactly when no provider could take it
    /// (a submit's 422; a budget's refusal is not a quote's).
    pub async fn quote(&self, tenant: &str, spec: &JobSpec) -> Result<Quote, Vec<FieldError>> {
        let (seconds, source) = self.expected_duration(tenant, spec).await;
        let ranking = self.rank(spec, &[], seconds)?;
        Self::feasible_or_refusals(&ranking)?;
        Ok(Quote {
            candidates: ranking
                .candidates
                .iter()
                .map(|c| QuoteCandidate {
                    provider: c.slot.name.clone(),
                    kind: c.slot.provider.kind().to_string(),
                    spot: c.rank.spot,
                    hourly_usd: c.estimate.hourly_usd,
                    billed_seconds: c.estimate.billed_seconds,
                    estimated_usd: c.estimate.estimated_usd,
                })
                .collect(),
            excluded: ranking
                .refusals
                .into_iter()
                .map(|(provider, reason)| QuoteExclusion { provider, reason })
                .collect(),
            expected_duration_seconds: seconds,
            duration_source: source,
        })
    }

    fn rank(
        &self,
        spec: &JobSpec,
        excluded: &[String],
        seconds: u64,
    ) -> Result<Ranking<'_>, Vec<FieldError>> {
        let resources = spec.validate()?;
        let mut errors = vec![];
        if let Some(kind) = spec
            .provider_options
            .keys()
            .find(|k| !self.slots.iter().any(|s| s.provider.kind() == k.as_str()))
        {
            errors.push(FieldError::new(
                format!("provider_options.{kind}"),
                format!("no configured provider is of kind {kind:?}"),
            ));
        }
        let wants = Wants::of(spec, &self.routing, seconds);
        let zones = spec.routing.as_ref().map(|r| r.zones.as_slice()).unwrap_or_default();
        for (i, zone) in zones.iter().enumerate() {
            if !self.routing.zones.contains_key(zone) {
                let known: Vec<_> = self.routing.zones.keys().map(String::as_str).collect();
                errors.push(FieldError::new(
                    format!("routing.zones[{i}]"),
                    format!("{zone:?} is not a configured zone (routing.zones: {})", known.join(", ")),
                ));
            }
        }
        for (list, field) in [(wants.allow, "routing.allow"), (wants.deny, "routing.deny")] {
            for (i, name) in list.iter().enumerate() {
                let known = self
                    .slots
                    .iter()
                    .any(|s| &s.name == name || s.provider.kind() == name);
                if !known {
                    errors.push(FieldError::new(
                        format!("{field}[{i}]"),
                        format!("{name:?} is neither a configured provider nor a configured kind"),
                    ));
                }
            }
        }
        let named = spec.provider != "auto";
        if named && self.slot(&spec.provider).is_none() {
            let names: Vec<_> = self.slots.iter().map(|s| s.name.as_str()).collect();
            errors.push(FieldError::new(
                "provider",
                format!(
                    "{:?} is not configured; use auto or one of: {}",
                    spec.provider,
                    names.join(", ")
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut candidates = vec![];
        let mut refusals = vec![];
        for (index, slot) in self.slots.iter().enumerate() {
            if named && slot.name != spec.provider {
                continue;
            }
            if !named && excluded.contains(&slot.name) {
                refusals.push((slot.name.clone(), "no capacity".to_string()));
                continue;
            }
            match self.feasible(slot, spec, &resources, &wants) {
                Ok((spot, estimate)) => candidates.push(Candidate {
                    slot,
                    estimate,
                    rank: Rank {
                        healthy: slot.health.lock().unwrap().is_none(),
                        spot,
                        start_steps: slot.starts.expected_ms().unwrap_or(0) / LATENCY_STEP_MS,
                        cost: estimate.estimated_usd,
                        free: slot.places.max().saturating_sub(slot.places.held()),
                        index,
                    },
                }),
                Err(why) => refusals.push((slot.name.clone(), why)),
            }
        }
        candidates.sort_by(|a, b| compare(&a.rank, &b.rank, wants.prefer, wants.spot));
        Ok(Ranking {
            candidates,
            refusals,
        })
    }

    /// Whether `slot` may run the job: its spot flag and estimate, or why not.
    fn feasible(
        &self,
        slot: &Slot,
        spec: &JobSpec,
        resources: &Resources,
        wants: &Wants,
    ) -> Result<(bool, Estimate), String> {
        let kind = slot.provider.kind();
        let named = |list: &[String]| list.iter().any(|n| n == &slot.name || n == kind);
        if !wants.allow.is_empty() && !named(wants.allow) {
            return Err("not in routing.allow".into());
        }
        if named(wants.deny) {
            return Err("in routing.deny".into());
        }
        if let Some(zoned) = &wants.zones {
            if !zoned.iter().any(|n| **n == slot.name || *n == kind) {
                return Err("in none of the zones of routing.zones".into());
            }
        }
        let spot = slot.provider.capabilities().spot;
        if spot && wants.spot == SpotPolicy::Never {
            return Err(SPOT_NEVER.into());
        }
        // The tenant's filer policy changes nothing a provider checks.
        let workload = spec.workload(resources.clone(), kind, &Default::default());
        slot.provider
            .validate(&workload)
            .map_err(|e| e.to_string())?;
        let billed = slot.provider.billed_resources(resources);
        let estimate = slot
            .pricing()
            .sheet
            .estimate(&billed, wants.seconds)
            .ok_or_else(|| "no price for this GPU kind".to_string())?;
        if let Some(max) = wants.max_hourly_usd {
            if estimate.hourly_usd > max {
                return Err(format!(
                    "its price of {:.4} USD per hour is above routing.max_hourly_usd {max}",
                    estimate.hourly_usd
                ));
            }
        }
        Ok((spot, estimate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: usize, cost: f64) -> Rank {
        Rank {
            healthy: true,
            spot: false,
            start_steps: 0,
            cost,
            free: 1,
            index,
        }
    }

    fn order(ranks: &[Rank], prefer: Prefer, spot: SpotPolicy) -> Vec<usize> {
        let mut v = ranks.to_vec();
        v.sort_by(|a, b| compare(a, b, prefer, spot));
        v.into_iter().map(|r| r.index).collect()
    }

    #[test]
    fn cost_then_free_places_then_configured_order() {
        let a = r(0, 2.0);
        let b = r(1, 1.0);
        let c = Rank {
            free: 5,
            ..r(2, 2.0)
        };
        let d = r(3, 1.0);
        assert_eq!(
            order(&[a, b, c, d], Prefer::Cost, SpotPolicy::Never),
            [1, 3, 2, 0]
        );
    }

    #[test]
    fn unhealthy_last_and_spot_first_when_preferred() {
        let sick = Rank {
            healthy: false,
            ..r(0, 0.1)
        };
        let spot = Rank {
            spot: true,
            ..r(1, 3.0)
        };
        let plain = r(2, 1.0);
        let all = [sick, spot, plain];
        assert_eq!(order(&all, Prefer::Cost, SpotPolicy::Allowed), [2, 1, 0]);
        assert_eq!(order(&all, Prefer::Cost, SpotPolicy::Preferred), [1, 2, 0]);
    }

    #[test]
    fn speed_takes_the_quickest_start_with_room_and_cost_breaks_ties() {
        let slow_cheap = Rank {
            start_steps: 4,
            ..r(0, 0.1)
        };
        let quick_dear = Rank {
            start_steps: 1,
            ..r(1, 5.0)
        };
        let quick_dearer = Rank {
            start_steps: 1,
            ..r(2, 6.0)
        };
        let unmeasured_full = Rank {
            free: 0,
            ..r(3, 0.01)
        };
        let all = [slow_cheap, quick_dearer, quick_dear, unmeasured_full];
        assert_eq!(order(&all, Prefer::Speed, SpotPolicy::Never), [1, 2, 0, 3]);
        assert_eq!(
            order(&all, Prefer::Cost, SpotPolicy::Never),
            [3, 0, 1, 2],
            "cost ignores start latency and free places come after the price"
        );
    }
}
