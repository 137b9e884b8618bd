//! What a container group costs and how it is billed, so routing can compare ACI with other
//! providers and estimate what a job will cost.
//!
//! - Size: a group is billed for the CPU and memory allocated to it, which is what its
//!   containers request (offload runs one container per group), in the units ACI takes
//!   ([`crate::group::size`]: CPU to 0.01 core, memory up to the next 0.1 GB), and at least
//!   the group minimum of 1 CPU and 1 GB.
//! - Time: per second, from the start of the first image pull until the group stops; no
//!   minimum is published.
//! - Price: Linux, Standard SKU, East US, pay-as-you-go; Spot groups at the East US
//!   Standard Spot meters' price (0.3 of Standard). Other regions differ: set
//!   `[providers.NAME.price]` there.
//!
//! Every figure names its source and when it was read; figures that could not be read on a
//! primary source are marked UNCONFIRMED. The CPU, memory and Spot figures are the Azure
//! Retail Prices API's East US meters as others read and quoted them (not fetched live
//! from here); the GPU figures and the absence of a minimum are UNCONFIRMED.

use std::collections::BTreeMap;

use offload_provider::figures::{self, Pricing, ReadPrices};
use offload_provider::{PriceSheet, Resources};

use crate::config::{Config, Priority};
use crate::group;

/// Billing rule: per second, no minimum. Sources, read 2026-11-24: Microsoft Learn, "Azure
/// Container Instances FAQ" (MicrosoftDocs/azure-docs
/// articles/container-instances/container-instances-faq.yml, ms.date 06/17/2022): "Container
/// group duration is calculated from the time that we start to pull your first container's
/// image ... until the container group is stopped"; "Azure Container Instances Spot
/// Containers" (container-instances-spot-containers-overview.md, 05/14/2023): "Customers
/// are billed based on per-second memory and core usage." No minimum duration is stated in
/// either; UNCONFIRMED that the pricing page states none.
pub const MIN_BILLED_SECONDS: u64 = 0;
pub const BILLING_INCREMENT_SECONDS: u64 = 1;

/// The least a container group is allocated, and so billed: 1 CPU and 1 GB. Source:
/// Microsoft Learn, "Container groups in Azure Container Instances", "Minimum and maximum
/// allocation": "Allocate a minimum of 1 CPU and 1 GB of memory to a container group"
/// (MicrosoftDocs/azure-docs articles/container-instances/container-instances-container-groups.md,
/// ms.date 06/17/2022), read 2026-11-24.
pub const MIN_GROUP_CPU: f64 = 1.0;
pub const MIN_GROUP_MEMORY_GB: f64 = 1.0;

/// Linux, Standard, East US, pay-as-you-go: USD per vCPU-second ($0.0405 per vCPU-hour).
/// Source: Azure Retail Prices API (prices.azure.com/api/retail/prices), serviceName
/// `Container Instances`, skuName `Standard`, meter `Standard vCPU Duration` (unit
/// `1 Hour`), armRegionName `eastus`: 0.0405, as read from the API on 2026-08-27 and
/// 2026-10-09 and quoted in independent write-ups (read by others and quoted, not fetched
/// live from here; `tests/prices/` records an answer built from the same reads). The
/// earlier default, $0.0000135 per vCPU-second ($0.0486 an hour), came from third-party
/// quotes of the pricing page and was 1.2 times this.
pub const VCPU_SECOND: f64 = 0.0405 / 3600.0;
/// Linux, Standard, East US, pay-as-you-go: USD per GB-second of memory ($0.00445 per
/// GB-hour). Source: the same Retail Prices API query, meter `Standard Memory Duration`
/// (unit `1 GB Hour`), armRegionName `eastus`: 0.00445, read 2026-08-27 and 2026-10-09 and
/// quoted, as for [`VCPU_SECOND`]. The earlier default, $0.0000015 per GB-second ($0.0054
/// an hour), came from third-party quotes and was 1.2 times this.
pub const GB_SECOND: f64 = 0.00445 / 3600.0;

/// Spot container groups as a share of the regular price. Source: Azure Retail Prices API,
/// serviceName `Container Instances`, skuName `Standard Spot`, meters `Standard Spot vCPU
/// Duration` (0.01215 per 1 Hour) and `Standard Spot Memory Duration` (0.001335 per 1 GB
/// Hour), armRegionName `eastus`, read 2026-08-27 and 2026-10-09 and quoted by others (not
/// fetched live from here): exactly 0.3 of the Standard meters above. Microsoft Learn,
/// "Azure Container Instances Spot Containers" (see above, read 2026-11-24) describes it as
/// "up to a 70% discount compared to regular-priority ACI containers"; it named East US 2,
/// West Europe and West US as Spot regions when it was written, but the Retail Prices API
/// lists the Standard Spot SKU in East US too.
pub const SPOT_SHARE_OF_REGULAR: f64 = 0.3;

/// (SKU, USD per GPU-hour). UNCONFIRMED, all of them: kept from earlier versions of this
/// file without a source; Azure retired ACI GPU on 14 July 2025 and its pricing page no
/// longer lists GPU meters. One weak source agrees for V100: an undated East US Retail
/// Prices API listing in a pricing-calculator design note (whose vCPU rows are
/// placeholders) gives meter `V100 vGPU Duration` at $0.085 per 100 Seconds ($3.06 an
/// hour). Meters `K80 vGPU Duration` and `P100 vGPU Duration` exist, but no price for them
/// was found. Deployments that still have GPU SKUs should set `price.gpu_hour`.
pub const GPUS: [(&str, f64); 3] = [("K80", 1.71), ("P100", 2.43), ("V100", 3.06)];

/// The sheet for `config`: each figure read from the Azure Retail Prices API for its
/// `location` where the price file has it (meters in `offload::prices::azure`), else the
/// default above.
pub fn sheet(config: &Config, read: &ReadPrices) -> Pricing {
    let mut f = read.figures("aci", &config.location);
    let (vcpu_hour, gb_hour) = match config.priority {
        Priority::Regular => (
            f.get(figures::VCPU_HOUR, VCPU_SECOND * 3600.0),
            f.get(figures::GB_HOUR, GB_SECOND * 3600.0),
        ),
        Priority::Spot => (
            f.get(
                figures::SPOT_VCPU_HOUR,
                VCPU_SECOND * 3600.0 * SPOT_SHARE_OF_REGULAR,
            ),
            f.get(
                figures::SPOT_GB_HOUR,
                GB_SECOND * 3600.0 * SPOT_SHARE_OF_REGULAR,
            ),
        ),
    };
    let gpu_hour = GPUS
        .iter()
        .filter(|(sku, _)| config.gpu_skus.iter().any(|s| s == sku))
        .map(|(sku, price)| (sku.to_string(), f.get(&figures::gpu_hour(sku), *price)))
        .collect::<BTreeMap<_, _>>();
    f.pricing(PriceSheet {
        vcpu_hour,
        gb_hour,
        gpu_hour,
        min_billed_seconds: MIN_BILLED_SECONDS,
        billing_increment_seconds: BILLING_INCREMENT_SECONDS,
    })
}

/// The allocation ACI bills for `resources`: the group's CPU and memory as they are sent
/// to ACI, at least the group minimum. Memory is ACI's GB, counted here as 2^30 bytes, as
/// `group::size` counts it.
pub fn billed_resources(resources: &Resources) -> Resources {
    let (cpu, gb) = group::size(resources);
    let gb = gb.max(MIN_GROUP_MEMORY_GB);
    Resources {
        cpu: cpu.max(MIN_GROUP_CPU),
        memory_bytes: (gb * (1u64 << 30) as f64).round() as u64,
        ..resources.clone()
    }
}

#[cfg(test)]
mod tests {
    use offload_provider::Gpu;

    use super::*;

    const GIB: u64 = 1 << 30;

    fn config(priority: Priority, gpu_skus: &[&str]) -> Config {
        let mut config: Config = serde_json::from_value(serde_json::json!({
            "subscription_id": "s", "resource_group": "g", "location": "eastus",
        }))
        .unwrap();
        config.priority = priority;
        config.gpu_skus = gpu_skus.iter().map(|s| s.to_string()).collect();
        config
    }

    fn req(cpu: f64, memory_bytes: u64) -> Resources {
        Resources {
            cpu,
            memory_bytes,
            gpu: None,
            ephemeral_storage_bytes: None,
        }
    }

    fn gb(tenths: u64) -> u64 {
        (tenths as f64 / 10.0 * GIB as f64).round() as u64
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn groups_are_billed_at_their_allocation_and_at_least_the_minimum() {
        // Below the group minimum: billed as 1 CPU and 1 GB.
        assert_eq!(billed_resources(&req(0.3, 256 << 20)), req(1.0, GIB));
        // Memory up to the next 0.1 GB, CPU to the hundredth of a core.
        assert_eq!(billed_resources(&req(1.5, 1500 << 20)), req(1.5, gb(15)));
        assert_eq!(
            billed_resources(&req(1.234, 2 * GIB + 1)),
            req(1.24, gb(21))
        );
        // Exact sizes stay; the GPU and storage requests are kept.
        let gpu = Resources {
            gpu: Some(Gpu {
                count: 1,
                kind: Some("V100".into()),
            }),
            ephemeral_storage_bytes: Some(GIB),
            ..req(4.0, 16 * GIB)
        };
        assert_eq!(billed_resources(&gpu), gpu);
    }

    #[test]
    fn aci_bills_per_second_with_no_minimum() {
        let sheet = sheet(&config(Priority::Regular, &[]), &ReadPrices::default()).sheet;
        assert_eq!(sheet.billed_seconds(10), 10);
        assert_eq!(sheet.billed_seconds(61), 61);
        // 0.3 vCPU for 10 s is billed as 1 CPU + 1 GB for 10 s.
        let est = sheet
            .estimate(&billed_resources(&req(0.3, 256 << 20)), 10)
            .unwrap();
        assert!(
            close(est.hourly_usd, (VCPU_SECOND + GB_SECOND) * 3600.0),
            "{est:?}"
        );
        assert!(
            close(est.estimated_usd, (VCPU_SECOND + GB_SECOND) * 10.0),
            "{est:?}"
        );
        // 2 vCPU + 4 GB for an hour.
        let est = sheet.estimate(&req(2.0, 4 * GIB), 3600).unwrap();
        assert!(
            close(est.estimated_usd, 2.0 * 0.0405 + 4.0 * 0.00445),
            "{est:?}"
        );
    }

    #[test]
    fn spot_groups_and_gpus() {
        let spot = sheet(&config(Priority::Spot, &[]), &ReadPrices::default()).sheet;
        assert!(close(spot.vcpu_hour, 0.0405 * 0.3) && close(spot.gb_hour, 0.00445 * 0.3));
        assert!(
            spot.gpu_hour.is_empty(),
            "no GPU SKUs configured, none priced"
        );

        let gpus = sheet(&config(Priority::Regular, &["V100"]), &ReadPrices::default()).sheet;
        let v100 = Gpu {
            count: 2,
            kind: Some("V100".into()),
        };
        let est = gpus
            .estimate(
                &billed_resources(&Resources {
                    gpu: Some(v100),
                    ..req(6.0, 112 * GIB)
                }),
                1800,
            )
            .unwrap();
        let hourly = 6.0 * 0.0405 + 112.0 * 0.00445 + 2.0 * 3.06;
        assert!(close(est.hourly_usd, hourly), "{est:?}");
        assert!(close(est.estimated_usd, hourly / 2.0), "{est:?}");
    }

    fn read(figures: &[(&str, f64)]) -> ReadPrices {
        ReadPrices::new(
            figures
                .iter()
                .map(|(name, usd)| figures::ReadFigure {
                    kind: "aci".into(),
                    region: "eastus".into(),
                    figure: name.to_string(),
                    usd_per_hour: *usd,
                    source: "azure-retail-prices".into(),
                    sku: "meter".into(),
                    quoted: "quoted".into(),
                    effective: "2021-06-08T00:00:00Z".into(),
                    read_at: "2026-12-03T10:00:00Z".into(),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn figures_read_for_its_location_replace_the_defaults() {
        // Read figures other than the defaults, so that a figure read is seen to win.
        let read = read(&[
            (figures::VCPU_HOUR, 0.05),
            (figures::SPOT_VCPU_HOUR, 0.015),
            (&figures::gpu_hour("V100"), 3.0),
        ]);
        let regular = sheet(&config(Priority::Regular, &["V100", "K80"]), &read);
        assert!(close(regular.sheet.vcpu_hour, 0.05));
        assert!(close(regular.sheet.gb_hour, 0.00445), "not read: the default");
        assert_eq!(regular.sheet.gpu_hour["V100"], 3.0);
        assert_eq!(regular.sheet.gpu_hour["K80"], 1.71);
        let source = |p: &Pricing, name: &str| match &p.sources[name] {
            figures::FigureSource::Read(f) => f.source.clone(),
            figures::FigureSource::Given { source } => source.to_string(),
        };
        assert_eq!(source(&regular, figures::VCPU_HOUR), "azure-retail-prices");
        assert_eq!(source(&regular, figures::GB_HOUR), "default");
        assert_eq!(source(&regular, "gpu_hour.K80"), "default");
        // Spot groups use the Spot meters, not a share of the regular price.
        let spot = sheet(&config(Priority::Spot, &[]), &read);
        assert!(close(spot.sheet.vcpu_hour, 0.015));
        assert!(close(spot.sheet.gb_hour, 0.00445 * 0.3));
        assert_eq!(spot.sources.len(), 2, "only the figures it used: {:?}", spot.sources);
        // Another location reads nothing of East US's.
        let mut elsewhere = config(Priority::Regular, &[]);
        elsewhere.location = "westeurope".into();
        assert!(close(sheet(&elsewhere, &read).sheet.vcpu_hour, 0.0405));
    }
}
