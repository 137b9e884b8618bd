//! Picks the provider for a job, and quotes what each would cost. Uses only what providers
//! declare (capabilities, their own validation, price sheet), so it has no
//! provider-specific code.
//!
//! Feasibility first: the provider's capabilities and validation, the spec's
//! `routing.allow` and `routing.deny`, `routing.spot = never` against spot providers,
//! `routing.max_hourly_usd` against the price of the size the provider would launch, and
//! for `auto` the providers a re-route already left for want of capacity. Then the order
//! of the feasible: healthy before unhealthy; with `spot = preferred` spot before the
//! rest; with `prefer = speed` the fewest active jobs for the provider's
//! `max_concurrency`; the lowest estimated cost (price sheet times billed duration); the
//! most free places; the configured order.

use std::cmp::Ordering;
use std::sync::Arc;

use offload_provider::{Estimate, Resources};

use super::{Engine, Slot};
use crate::config::RoutingConfig;
use crate::model::{
    FieldError, JobSpec, Prefer, Quote, QuoteCandidate, QuoteExclusion, SpotPolicy,
};
use crate::store::JobRecord;

/// A provider that can run the job, with what ranks it.
struct Candidate<'a> {
    slot: &'a Arc<Slot>,
    spot: bool,
    estimate: Estimate,
    healthy: bool,
    /// Active jobs over `max_concurrency`.
    load: f64,
    free: usize,
    /// Position in the configuration.
    index: usize,
}

/// What ranks a feasible provider; smaller is better. Kept apart from the slots so that
/// the order can be tested on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rank {
    pub healthy: bool,
    pub spot: bool,
    pub load: f64,
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
        order = order.then(a.load.total_cmp(&b.load));
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
    seconds: u64,
}

impl<'a> Wants<'a> {
    fn of(spec: &'a JobSpec, defaults: &RoutingConfig) -> Self {
        let r = spec.routing.as_ref();
        Wants {
            prefer: r.and_then(|r| r.prefer).unwrap_or_default(),
            spot: r.and_then(|r| r.spot).unwrap_or(defaults.default_spot),
            allow: r.map(|r| r.allow.as_slice()).unwrap_or_default(),
            deny: r.map(|r| r.deny.as_slice()).unwrap_or_default(),
            max_hourly_usd: r.and_then(|r| r.max_hourly_usd),
            seconds: r
                .and_then(|r| r.expected_duration_seconds)
                .unwrap_or(defaults.default_duration_seconds),
        }
    }
}

/// The feasible providers best first, and why each other one is not feasible.
struct Ranking<'a> {
    candidates: Vec<Candidate<'a>>,
    refusals: Vec<(String, String)>,
}

impl Engine {
    /// Where the job goes now, with the estimate a quote would give there.
    pub(super) fn route(&self, rec: &JobRecord) -> Result<(&Arc<Slot>, Estimate), String> {
        match self.rank(&rec.job.spec, &rec.excluded) {
            Ok(r) => r
                .candidates
                .first()
                .map(|c| (c.slot, c.estimate))
                .ok_or_else(|| {
                    let why: Vec<_> = r
                        .refusals
                        .iter()
                        .map(|(n, w)| format!("{n}: {w}"))
                        .collect();
                    format!(
                        "no configured provider can run this job ({})",
                        why.join("; ")
                    )
                }),
            Err(errors) => Err(errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// Whether `auto` routing has a provider for `spec` besides the `excluded` ones.
    pub(super) fn alternative(&self, spec: &JobSpec, excluded: &[String]) -> bool {
        self.rank(spec, excluded)
            .is_ok_and(|r| !r.candidates.is_empty())
    }

    /// Whether some provider can take `spec`; the API calls it before accepting a job.
    /// Otherwise every reason: the bad fields, or each provider's refusal (field
    /// `provider`, a message that starts with the provider's name).
    pub fn check_spec(&self, spec: &JobSpec) -> Result<(), Vec<FieldError>> {
        self.quote(spec).map(|_| ())
    }

    /// Where `spec` would run, best first, with the expected cost at each, and the
    /// providers that cannot run it; an error exactly when a submit would be refused.
    pub fn quote(&self, spec: &JobSpec) -> Result<Quote, Vec<FieldError>> {
        let ranking = self.rank(spec, &[])?;
        if ranking.candidates.is_empty() {
            return Err(ranking
                .refusals
                .into_iter()
                .map(|(name, why)| {
                    FieldError::new("provider", format!("{name} cannot run this job: {why}"))
                })
                .collect());
        }
        Ok(Quote {
            candidates: ranking
                .candidates
                .iter()
                .map(|c| QuoteCandidate {
                    provider: c.slot.name.clone(),
                    kind: c.slot.provider.kind().to_string(),
                    spot: c.spot,
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
        })
    }

    fn rank(&self, spec: &JobSpec, excluded: &[String]) -> Result<Ranking<'_>, Vec<FieldError>> {
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
        let wants = Wants::of(spec, &self.routing);
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
                Ok((spot, estimate)) => {
                    let active = slot.active.lock().unwrap().len();
                    candidates.push(Candidate {
                        slot,
                        spot,
                        estimate,
                        healthy: slot.health.lock().unwrap().is_none(),
                        load: active as f64 / slot.max_concurrency.max(1) as f64,
                        free: slot.max_concurrency.saturating_sub(active),
                        index,
                    })
                }
                Err(why) => refusals.push((slot.name.clone(), why)),
            }
        }
        let rank = |c: &Candidate| Rank {
            healthy: c.healthy,
            spot: c.spot,
            load: c.load,
            cost: c.estimate.estimated_usd,
            free: c.free,
            index: c.index,
        };
        candidates.sort_by(|a, b| compare(&rank(a), &rank(b), wants.prefer, wants.spot));
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
        let spot = slot.provider.capabilities().spot;
        if spot && wants.spot == SpotPolicy::Never {
            return Err("it is a spot provider and routing.spot is never".into());
        }
        let workload = spec.workload(resources.clone(), kind);
        slot.provider
            .validate(&workload)
            .map_err(|e| e.to_string())?;
        let billed = slot.provider.billed_resources(resources);
        let estimate = slot
            .prices
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
            load: 0.0,
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
    fn speed_takes_the_least_loaded_and_cost_breaks_ties() {
        let busy_cheap = Rank {
            load: 0.5,
            ..r(0, 0.1)
        };
        let idle_dear = r(1, 5.0);
        let idle_dearer = r(2, 6.0);
        let all = [busy_cheap, idle_dearer, idle_dear];
        assert_eq!(order(&all, Prefer::Speed, SpotPolicy::Never), [1, 2, 0]);
        assert_eq!(order(&all, Prefer::Cost, SpotPolicy::Never), [0, 1, 2]);
    }
}
