//! What a Container Apps job costs and how it is billed, so routing can compare it with
//! other providers and send GPU work where it is cheapest.
//!
//! - Size: the replica's allocation ([`crate::sizing::place`]): on the Consumption profile
//!   the CPU and memory pair the request rounds up to; on a serverless GPU profile the
//!   requested CPU and memory (to 0.25) and the profile's GPU.
//! - Time: per second while the replica runs; jobs are billed at the active rate, with no
//!   request charge and no minimum.
//! - Price: pay-as-you-go list prices (region below); the monthly free grant is not counted
//!   (it is the subscription's, not one job's). Other regions differ: set
//!   `[providers.NAME.price]` there.
//!
//! Every figure names its source and when it was read; figures that could not be read on a
//! primary source are marked UNCONFIRMED. The vCPU, memory and GPU figures are the Azure
//! Retail Prices API's East US meters as others read and quoted them (not fetched live
//! from here); billing a GPU replica's vCPU and memory on top of its GPU at those rates,
//! and the absence of a minimum, are UNCONFIRMED.

use std::collections::BTreeMap;

use offload_provider::figures::{self, Pricing, ReadPrices};
use offload_provider::PriceSheet;

use crate::config::Config;
use crate::sizing;

/// Billing rule: per second, no minimum. Source: Microsoft Learn, "Billing in Azure
/// Container Apps" (MicrosoftDocs/azure-docs articles/container-apps/billing.md @03e5750,
/// ms.date 12/09/2025), read 2026-12-02: resources are billed "on a per-second basis, in
/// vCPU-seconds and GiB-seconds"; "resources consumed by Azure Container Apps jobs are
/// charged the active rate"; "Request charges don't apply to Azure Container Apps jobs";
/// "You're charged for the amount of resources allocated to each replica while it's
/// running". No minimum is stated; UNCONFIRMED that the pricing page states none.
pub const MIN_BILLED_SECONDS: u64 = 0;
pub const BILLING_INCREMENT_SECONDS: u64 = 1;

/// Consumption plan, active usage, East US, pay-as-you-go: USD per vCPU-second. Source:
/// Azure Retail Prices API, serviceName `Azure Container Apps`, skuName `Standard`, meter
/// `Standard vCPU Active Usage` (unit `1 Second`), armRegionName `eastus`: 0.000024 in
/// three dated reads others published and quoted (a live query of 2026-08-01, a table
/// measured 2026-08-23, a read of 2026-09-14); not fetched live from here (neither the API
/// nor the pricing page, https://azure.microsoft.com/pricing/details/container-apps/, could
/// be read here on 2026-12-02). Other regions are dearer (westeurope 0.000034).
pub const VCPU_SECOND: f64 = 0.000024;
/// Consumption plan, active usage, East US: USD per GiB-second. Source: the same three
/// reads of the Retail Prices API (2026-08-01, 2026-08-23, 2026-09-14), meter `Standard
/// Memory Active Usage` (unit `1 GiB Second`), armRegionName `eastus`: 0.000003; quoted,
/// not fetched from here, as for [`VCPU_SECOND`].
pub const GIB_SECOND: f64 = 0.000003;

/// (GPU kind, USD per GPU-second) of the serverless GPU profiles, East US. Source: Azure
/// Retail Prices API, serviceName `Azure Container Apps`, meters `Standard NC T4 v3 GPU
/// Usage` (0.000073) and `Standard NC A100 v4 GPU Usage` (0.000529), unit `1 Second`,
/// armRegionName `eastus`, in a live query of 2026-08-01 that others published and quoted
/// (not fetched live from here). The earlier defaults, 0.000088 and 0.000635, were the
/// South Central US (read 2026-09-30) and Canada Central rates, 1.2 times these. Billed on
/// top of the replica's vCPU-seconds and GiB-seconds: billing.md lists GPU-seconds as a
/// third meter ("The number of GPUs allocated to your container apps on a per-second
/// basis") and says serverless GPUs are "always billed for active usage"; UNCONFIRMED that
/// a GPU replica's vCPU and memory bill at the Consumption rates above. Set
/// `price.gpu_hour` where they differ.
pub const GPU_SECOND: [(&str, f64); 2] = [
    ("nvidia-tesla-t4", 0.000073),
    ("nvidia-tesla-a100", 0.000529),
];

/// The sheet for `config`: each figure read from the Azure Retail Prices API for its
/// `location` where the price file has it (meters in `offload::prices::azure`), else the
/// default above.
pub fn sheet(config: &Config, read: &ReadPrices) -> Pricing {
    let mut f = read.figures("aca", &config.location);
    let vcpu_hour = f.get(figures::VCPU_HOUR, VCPU_SECOND * 3600.0);
    let gb_hour = f.get(figures::GB_HOUR, GIB_SECOND * 3600.0);
    let kinds: Vec<&str> = sizing::gpu_profiles(config).map(|(_, t)| t.kind).collect();
    let gpu_hour = GPU_SECOND
        .iter()
        .filter(|(kind, _)| kinds.contains(kind))
        .map(|(kind, price)| (kind.to_string(), f.get(&figures::gpu_hour(kind), price * 3600.0)))
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

    fn config(profiles: serde_json::Value) -> Config {
        serde_json::from_value(serde_json::json!({
            "subscription_id": "s", "resource_group": "g", "location": "eastus",
            "environment_id": "e", "gpu_profiles": profiles,
        }))
        .unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn req(cpu: f64, memory_bytes: u64, gpu: Option<&str>) -> Resources {
        Resources {
            cpu,
            memory_bytes,
            gpu: gpu.map(|k| Gpu {
                count: 1,
                kind: Some(k.into()),
            }),
            ephemeral_storage_bytes: None,
        }
    }

    #[test]
    fn a_replica_is_billed_per_second_at_its_consumption_pair() {
        let config = config(serde_json::json!([]));
        let sheet = sheet(&config, &ReadPrices::default()).sheet;
        assert!(sheet.gpu_hour.is_empty(), "no GPU profiles, no GPU prices");
        // 0.3 vCPU and 1.5 GiB run as 0.75 vCPU with 1.5 GiB.
        let placed = crate::sizing::place(&config, &req(0.3, 1536 << 20, None)).unwrap();
        let billed = placed.billed(&req(0.3, 1536 << 20, None));
        assert_eq!((billed.cpu, billed.memory_bytes), (0.75, 1536 << 20));
        let est = sheet.estimate(&billed, 61).unwrap();
        assert_eq!(est.billed_seconds, 61);
        assert!(
            close(est.estimated_usd, (0.75 * 0.000024 + 1.5 * 0.000003) * 61.0),
            "{est:?}"
        );
    }

    #[test]
    fn a_gpu_replica_adds_its_gpu_seconds_to_its_cpu_and_memory() {
        let config = config(serde_json::json!([
            {"name": "t4", "type": "Consumption-GPU-NC8as-T4"},
            {"name": "a100", "type": "Consumption-GPU-NC24-A100"},
        ]));
        let sheet = sheet(&config, &ReadPrices::default()).sheet;
        let est = sheet
            .estimate(&req(4.0, 16 * GIB, Some("nvidia-tesla-a100")), 3600)
            .unwrap();
        let hourly = (4.0 * 0.000024 + 16.0 * 0.000003 + 0.000529) * 3600.0;
        assert!(close(est.hourly_usd, hourly), "{est:?}");
        assert!(close(sheet.gpu_hour["nvidia-tesla-t4"], 0.000073 * 3600.0));
    }
}
