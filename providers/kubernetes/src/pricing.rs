//! What a pod costs, so routing can compare Kubernetes with other providers.
//!
//! GKE Autopilot's published general-purpose Pod prices (us-central1) per vCPU-hour and
//! GB-hour, Spot when `gke.spot` is on, and per-GPU-hour figures for the common
//! accelerators. Clusters billed per node (GKE Standard, EKS, AKS) should set `price`.

use std::collections::BTreeMap;

use offload_provider::PriceSheet;

use crate::config::Config;

/// (kind, on-demand, Spot) US dollars per GPU-hour.
const GPUS: [(&str, f64, f64); 4] = [
    ("nvidia-tesla-t4", 0.35, 0.14),
    ("nvidia-l4", 0.7, 0.28),
    ("nvidia-tesla-a100", 2.93, 1.17),
    ("nvidia-h100-80gb", 11.06, 4.42),
];

pub fn sheet(config: &Config) -> PriceSheet {
    let spot = config.gke.spot;
    let (vcpu_hour, gb_hour) = if spot {
        (0.0133, 0.0014767)
    } else {
        (0.0445, 0.0049225)
    };
    let gpu_hour: BTreeMap<String, f64> = GPUS
        .iter()
        .filter(|(kind, ..)| config.gpu_kinds.iter().any(|k| k == kind))
        .map(|(kind, on_demand, spot_price)| {
            (
                kind.to_string(),
                if spot { *spot_price } else { *on_demand },
            )
        })
        .collect();
    PriceSheet {
        vcpu_hour,
        gb_hour,
        gpu_hour,
    }
}
