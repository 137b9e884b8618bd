//! Picks the provider for a job: the one it names, or, for `auto`, the cheapest healthy
//! provider whose capabilities and own validation accept it. Uses only what providers
//! declare (capabilities, price sheet), so it has no provider-specific code.

use std::sync::Arc;

use super::{Engine, Slot};
use crate::model::{FieldError, JobSpec};
use crate::store::JobRecord;

impl Engine {
    pub(super) fn route(&self, rec: &JobRecord) -> Result<&Arc<Slot>, String> {
        self.choose(&rec.job.spec, &rec.excluded)
            .map_err(|e| e.message)
    }

    /// Whether `auto` routing has a provider for `spec` besides the `excluded` ones.
    pub(super) fn alternative(&self, spec: &JobSpec, excluded: &[String]) -> bool {
        self.choose(spec, excluded).is_ok()
    }

    /// Whether some provider can take `spec`; the API calls it before accepting a job.
    pub fn check_spec(&self, spec: &JobSpec) -> Result<(), FieldError> {
        self.choose(spec, &[]).map(|_| ())
    }

    fn choose(&self, spec: &JobSpec, excluded: &[String]) -> Result<&Arc<Slot>, FieldError> {
        let resources = spec.validate().map_err(|mut e| e.remove(0))?;
        if let Some(kind) = spec
            .provider_options
            .keys()
            .find(|k| !self.slots.iter().any(|s| s.provider.kind() == k.as_str()))
        {
            return Err(FieldError::new(
                format!("provider_options.{kind}"),
                format!("no configured provider is of kind {kind:?}"),
            ));
        }
        let fits = |slot: &Slot| {
            let workload = spec.workload(resources.clone(), slot.provider.kind());
            slot.provider.validate(&workload).map_err(|e| e.to_string())
        };
        if spec.provider != "auto" {
            let slot = self.slot(&spec.provider).ok_or_else(|| {
                let names: Vec<_> = self.slots.iter().map(|s| s.name.as_str()).collect();
                FieldError::new(
                    "provider",
                    format!(
                        "{:?} is not configured; use auto or one of: {}",
                        spec.provider,
                        names.join(", ")
                    ),
                )
            })?;
            return fits(slot).map(|_| slot).map_err(|why| {
                FieldError::new(
                    "provider",
                    format!("{} cannot run this job: {why}", slot.name),
                )
            });
        }
        let mut refusals = vec![];
        let mut best: Option<(&Arc<Slot>, bool, f64)> = None;
        for slot in &self.slots {
            if excluded.contains(&slot.name) {
                refusals.push(format!("{}: no capacity", slot.name));
                continue;
            }
            if let Err(why) = fits(slot) {
                refusals.push(format!("{}: {why}", slot.name));
                continue;
            }
            let Some(cost) = slot.prices.hourly(&resources) else {
                refusals.push(format!("{}: no price for this GPU kind", slot.name));
                continue;
            };
            let healthy = slot.health.lock().unwrap().is_none();
            // Healthy before unhealthy, then cheaper; ties keep the configured order.
            let better = best.is_none_or(|(_, h, c)| (healthy && !h) || (healthy == h && cost < c));
            if better {
                best = Some((slot, healthy, cost));
            }
        }
        best.map(|(slot, _, _)| slot).ok_or_else(|| {
            FieldError::new(
                "provider",
                format!(
                    "auto: no configured provider can run this job ({})",
                    refusals.join("; ")
                ),
            )
        })
    }
}
