//! What a pod costs and how it is billed, so routing can compare Kubernetes with other
//! providers and estimate what a job will cost.
//!
//! The defaults are GKE Autopilot's, in us-central1 (Iowa): Autopilot bills the CPU, memory
//! and ephemeral storage a pod requests, in one-second increments with no minimum, at its
//! general-purpose Pod prices (its Spot Pod prices when `gke.spot` is on), and GPUs per
//! GPU-hour for the kinds in `gpu_kinds`. A pod is billed at its requests as given: this
//! provider does not model Autopilot raising requests below its per-class minimums.
//!
//! Other regions, other compute classes, and clusters billed per node (GKE Standard, EKS,
//! AKS, your own) should set `[providers.NAME.price]`; GKE Standard nodes bill per second
//! with a one-minute minimum, as Compute Engine does.
//!
//! Every figure names its source and when it was read. Google's pricing page renders its
//! price tables client-side, and the stored copies readable on 2026-11-24 have the billing
//! rules in their text but not the figures; those are marked UNCONFIRMED. They stay so:
//! only secondary quotes agree with them, and no recorded Cloud Billing Catalog answer with
//! a price for the Autopilot Pod or Spot Pod SKUs, or for Autopilot GPUs, was found.

use std::collections::BTreeMap;

use offload_provider::figures::{self, Pricing, ReadPrices};
use offload_provider::PriceSheet;

use crate::config::Config;

/// Billing rule: "All Autopilot resources are charged in 1 second increments, there is no
/// minimum charge" (earlier copy: "there is no minimum duration").
/// Source: https://cloud.google.com/kubernetes-engine/pricing (Autopilot mode), read in
/// stored copies on 2026-11-24.
pub const MIN_BILLED_SECONDS: u64 = 0;
pub const BILLING_INCREMENT_SECONDS: u64 = 1;

/// General-purpose Autopilot Pod, us-central1, USD per vCPU-hour.
/// Source: https://cloud.google.com/kubernetes-engine/pricing ("General-purpose (default)
/// Pods" table), read 2026-11-24. UNCONFIRMED: the table is rendered client-side and is not
/// in the stored copy's text; the figure is the one quoted, identically, by independent
/// write-ups (cloudbolt.io and others, us-central1) and cost notes dated 2026.
pub const VCPU_HOUR: f64 = 0.0445;
/// General-purpose Autopilot Pod, us-central1, USD per GiB-hour of memory.
/// Source and status: as for [`VCPU_HOUR`] (UNCONFIRMED).
pub const GB_HOUR: f64 = 0.0049225;
/// General-purpose Autopilot Spot Pod, us-central1, USD per vCPU-hour.
/// Source: as for [`VCPU_HOUR`]. UNCONFIRMED: as for [`VCPU_HOUR`]; besides, "Spot prices
/// are dynamic and can change up to once every 30 days, but always provide discounts of
/// 60-91% off of the corresponding regular price" (the same page, stored copy).
pub const SPOT_VCPU_HOUR: f64 = 0.0133;
/// General-purpose Autopilot Spot Pod, us-central1, USD per GiB-hour.
/// Source and status: as for [`SPOT_VCPU_HOUR`] (UNCONFIRMED).
pub const SPOT_GB_HOUR: f64 = 0.0014767;

/// (kind, On-Demand, Spot) USD per GPU-hour, us-central1.
/// UNCONFIRMED, all of them: kept from earlier versions of this file without a source, and
/// not found in any readable copy of Google's pricing pages on 2026-11-24. They are close to
/// Compute Engine's per-GPU list prices; on GKE 1.29.4 and later Autopilot runs GPU pods in
/// the Accelerator compute class and bills the node that holds them (the GPU, the machine's
/// vCPUs and memory), so a per-GPU figure understates a GPU pod. Set `price.gpu_hour` for
/// real figures.
pub const GPUS: [(&str, f64, f64); 4] = [
    ("nvidia-tesla-t4", 0.35, 0.14),
    ("nvidia-l4", 0.7, 0.28),
    ("nvidia-tesla-a100", 2.93, 1.17),
    ("nvidia-h100-80gb", 11.06, 4.42),
];

/// Spot GPU figures are named so; on-demand ones as [`figures::gpu_hour`].
fn spot_gpu_hour(kind: &str) -> String {
    format!("spot_gpu_hour.{kind}")
}

/// The sheet for `config`: each figure read from the Google Cloud Billing Catalog for
/// `gke.region` where the price file has it (SKUs in `offload::prices::google`), else the
/// default above.
pub fn sheet(config: &Config, read: &ReadPrices) -> Pricing {
    let mut f = read.figures("kubernetes", &config.gke.region);
    let spot = config.gke.spot;
    let (vcpu_hour, gb_hour) = match spot {
        true => (
            f.get(figures::SPOT_VCPU_HOUR, SPOT_VCPU_HOUR),
            f.get(figures::SPOT_GB_HOUR, SPOT_GB_HOUR),
        ),
        false => (
            f.get(figures::VCPU_HOUR, VCPU_HOUR),
            f.get(figures::GB_HOUR, GB_HOUR),
        ),
    };
    let gpu_hour: BTreeMap<String, f64> = GPUS
        .iter()
        .filter(|(kind, ..)| config.gpu_kinds.iter().any(|k| k == kind))
        .map(|(kind, on_demand, spot_price)| {
            let price = match spot {
                true => f.get(&spot_gpu_hour(kind), *spot_price),
                false => f.get(&figures::gpu_hour(kind), *on_demand),
            };
            (kind.to_string(), price)
        })
        .collect();
    f.pricing(PriceSheet {
        vcpu_hour,
        gb_hour,
        gpu_hour,
        min_billed_seconds: MIN_BILLED_SECONDS,
        billing_increment_seconds: BILLING_INCREMENT_SECONDS,
    })
}

#[cfg(test)]
mod tests {
    use offload_provider::{Gpu, Resources};

    use super::*;

    const GIB: u64 = 1 << 30;

    fn config(spot: bool, gpu_kinds: &[&str]) -> Config {
        let mut config: Config = serde_json::from_value(serde_json::json!({})).unwrap();
        config.gke.spot = spot;
        config.gpu_kinds = gpu_kinds.iter().map(|k| k.to_string()).collect();
        config
    }

    fn req(cpu: f64, gib: u64, gpu: Option<Gpu>) -> Resources {
        Resources {
            cpu,
            memory_bytes: gib * GIB,
            gpu,
            ephemeral_storage_bytes: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn autopilot_bills_per_second_with_no_minimum() {
        let sheet = sheet(&config(false, &[]), &ReadPrices::default()).sheet;
        assert_eq!(sheet.billed_seconds(1), 1);
        assert_eq!(sheet.billed_seconds(10), 10);
        assert_eq!(sheet.billed_seconds(61), 61);
        // 0.5 vCPU + 2 GiB for 10 s.
        let est = sheet.estimate(&req(0.5, 2, None), 10).unwrap();
        let hourly = 0.5 * 0.0445 + 2.0 * 0.0049225;
        assert!(close(est.hourly_usd, hourly), "{est:?}");
        assert!(close(est.estimated_usd, hourly * 10.0 / 3600.0), "{est:?}");
    }

    #[test]
    fn gpus_are_priced_per_gpu_hour_for_the_kinds_the_cluster_has() {
        let sheet = sheet(
            &config(false, &["nvidia-l4", "nvidia-tesla-t4"]),
            &ReadPrices::default(),
        )
        .sheet;
        assert_eq!(sheet.gpu_hour.len(), 2);
        let two_l4 = Gpu {
            count: 2,
            kind: Some("nvidia-l4".into()),
        };
        let est = sheet.estimate(&req(4.0, 16, Some(two_l4)), 3600).unwrap();
        let hourly = 4.0 * 0.0445 + 16.0 * 0.0049225 + 2.0 * 0.7;
        assert!(close(est.hourly_usd, hourly), "{est:?}");
        assert!(close(est.estimated_usd, hourly), "{est:?}");
        // A GPU of any kind is priced at the cheapest the cluster has (T4).
        let any = Gpu {
            count: 1,
            kind: None,
        };
        let est = sheet.estimate(&req(1.0, 4, Some(any)), 3600).unwrap();
        assert!(
            close(est.hourly_usd, 0.0445 + 4.0 * 0.0049225 + 0.35),
            "{est:?}"
        );
        // A kind the cluster does not have has no price.
        let a100 = Gpu {
            count: 1,
            kind: Some("nvidia-tesla-a100".into()),
        };
        assert_eq!(sheet.estimate(&req(1.0, 4, Some(a100)), 60), None);
    }

    #[test]
    fn spot_pods_use_spot_prices() {
        let sheet = sheet(&config(true, &["nvidia-tesla-t4"]), &ReadPrices::default()).sheet;
        assert!(close(sheet.vcpu_hour, 0.0133) && close(sheet.gb_hour, 0.0014767));
        assert_eq!(sheet.gpu_hour["nvidia-tesla-t4"], 0.14);
        assert_eq!(sheet.min_billed_seconds, 0);
    }
}
