//! What a Cloud Run job costs and how it is billed, so routing can compare it with other
//! providers and send GPU work where it is cheapest.
//!
//! - Size: the task's limits ([`crate::sizing::size`]): the CPU and memory the request
//!   rounds up to, and its GPU.
//! - Time: while the task's instance runs, "rounded up to the nearest 100 millisecond"; the
//!   sheet bills whole seconds (at most 0.9 s more per job). No minimum, no request charge.
//! - Price: Tier 1 list prices for jobs (instance-based billing); the monthly free tier is
//!   the billing account's, not one job's, and is not counted. Tier 2 regions are dearer:
//!   set `[providers.NAME.price]` there.
//!
//! Every figure names its source and when it was read; figures that could not be read on a
//! primary source are marked UNCONFIRMED. The CPU rate was read on Google's pricing page;
//! the memory and L4 figures are the Cloud Billing Catalog's as others read and quoted them
//! (not fetched live from here).

use std::collections::BTreeMap;

use offload_provider::figures::{self, Pricing, ReadPrices};
use offload_provider::PriceSheet;

use crate::config::Config;

/// Source: Google Cloud, "Cloud Run pricing" (cloud.google.com/run/pricing), read
/// 2026-12-02: usage is "rounded up to the nearest 100 millisecond"; no minimum is stated
/// for jobs.
pub const MIN_BILLED_SECONDS: u64 = 0;
pub const BILLING_INCREMENT_SECONDS: u64 = 1;

/// Tier 1, "Services with CPU always allocated / Jobs": USD per vCPU-second. Source: the
/// pricing page above, read 2026-12-02.
pub const VCPU_SECOND: f64 = 0.000018;
/// Tier 1, jobs: USD per GiB-second. Source: Google Cloud Billing Catalog API, Cloud Run
/// SKU `Services Memory (instance-based)`, us-central1: 0.000002 per GiB-second, as read by
/// others from the Cloud Billing API as of 2026-08 and quoted (not fetched live from here);
/// and Google's Cloud Run committed use discounts page (docs.cloud.google.com/run/cud),
/// us-central1 Tier 1: "$0.000002 per GiB-second for memory ($0.0072 per hour)", quoted
/// verbatim by others in notes read 2026-10-09. The part of the pricing page with it was
/// not readable here on 2026-12-02.
pub const GIB_SECOND: f64 = 0.000002;
/// (GPU kind, USD per GPU-second, without zonal redundancy, with it). Source: Google Cloud
/// Billing Catalog API, Cloud Run NVIDIA L4 GPU figures, us-central1: 0.0001867 without
/// zonal redundancy and 0.0002909 ($1.0472 an hour) with it, as read by others from the
/// Cloud Billing API as of 2026-08 and quoted (not fetched live from here); a pricing
/// summary table published by others gives the same two figures. The earlier default with
/// zonal redundancy, 0.0002333, had no source and was 20% low. Neither was readable on the
/// pricing page here on 2026-12-02. The jobs GPU page
/// (cloud.google.com/run/docs/configuring/jobs/gpu) says GPU jobs "follow No zonal
/// redundancy pricing (in preview)".
pub const GPU_SECOND: [(&str, f64, f64); 1] = [("nvidia-l4", 0.0001867, 0.0002909)];

/// Cloud Run GPU figures with zonal redundancy are named so; without it, as
/// [`figures::gpu_hour`].
fn redundant_gpu_hour(kind: &str) -> String {
    format!("zonal_redundant_gpu_hour.{kind}")
}

/// The sheet for `config`: each figure read from the Google Cloud Billing Catalog for its
/// `region` where the price file has it (SKUs in `offload::prices::google`), else the
/// default above.
pub fn sheet(config: &Config, read: &ReadPrices) -> Pricing {
    let mut f = read.figures("cloudrun", &config.region);
    let vcpu_hour = f.get(figures::VCPU_HOUR, VCPU_SECOND * 3600.0);
    let gb_hour = f.get(figures::GB_HOUR, GIB_SECOND * 3600.0);
    let gpu_hour = GPU_SECOND
        .iter()
        .filter(|(kind, _, _)| config.gpu_kinds.iter().any(|k| k == kind))
        .map(|(kind, plain, redundant)| {
            let price = match config.gpu_zonal_redundancy {
                true => f.get(&redundant_gpu_hour(kind), redundant * 3600.0),
                false => f.get(&figures::gpu_hour(kind), plain * 3600.0),
            };
            (kind.to_string(), price)
        })
        .collect::<BTreeMap<_, _>>();
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

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn an_l4_task_is_billed_at_its_gpu_minimums_per_second() {
        let config: Config =
            serde_json::from_value(serde_json::json!({"project": "p", "region": "us-central1"}))
                .unwrap();
        let request = Resources {
            cpu: 1.0,
            memory_bytes: GIB,
            gpu: Some(Gpu {
                count: 1,
                kind: Some("nvidia-l4".into()),
            }),
            ephemeral_storage_bytes: None,
        };
        let billed = crate::sizing::size(&config, &request)
            .unwrap()
            .billed(&request);
        let est = sheet(&config, &ReadPrices::default())
            .sheet
            .estimate(&billed, 61)
            .unwrap();
        assert_eq!(est.billed_seconds, 61);
        let per_second = 4.0 * 0.000018 + 16.0 * 0.000002 + 0.0001867;
        assert!(close(est.estimated_usd, per_second * 61.0), "{est:?}");
        let redundant: Config = serde_json::from_value(serde_json::json!(
            {"project": "p", "region": "us-central1", "gpu_zonal_redundancy": true}))
        .unwrap();
        assert!(close(
            sheet(&redundant, &ReadPrices::default()).sheet.gpu_hour["nvidia-l4"],
            0.0002909 * 3600.0
        ));
    }
}
