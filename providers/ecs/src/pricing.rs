//! What Fargate costs and how it bills, so routing can compare it with other providers and
//! estimate what a job will cost.
//!
//! - Size: Fargate bills the task size it launched, not the request: a request is rounded
//!   up to the smallest valid task size ([`crate::sizing::fit`]), so 0.3 vCPU is billed as
//!   0.5 vCPU with at least 1 GB.
//! - Time: from the start of the image pull until the task stops, rounded up to the second,
//!   with a one-minute minimum (Linux; Windows tasks, which offload does not run, have a
//!   fifteen-minute one).
//! - Price: AWS's list prices for Linux in US East (N. Virginia), per vCPU-hour and
//!   GB-hour; a `capacity` mix of FARGATE and FARGATE_SPOT is priced at its weighted mean.
//!   Other regions differ (often by 10-30%): set `[providers.NAME.price]` there.
//!   Ephemeral storage beyond the free 20 GB is not priced.
//!
//! Every figure below names its source and when it was read. The four On-Demand rates are
//! the AWS Price List's (offer `AmazonECS`, us-east-1 usage types): a GetProducts answer
//! recorded by others and dated reads of the 2026 offer that others published agree on
//! them; they were quoted, not fetched live from here. The stored copy of AWS's pricing
//! page that could be read on 2026-11-24 renders its rate tables client-side (the figures
//! are not in its text), and ends before the one-minute minimum, which is taken from
//! verbatim quotations of the page. Fargate Spot floats: its share below is the floor the
//! page advertises, UNCONFIRMED as a price.

use offload_provider::figures::{self, Figures, Pricing, ReadPrices};
use offload_provider::{PriceSheet, Resources};

use crate::config::{Arch, CapacityProvider, Config};
use crate::sizing;

/// Billing rule: per second with a one-minute minimum, Linux tasks.
/// Source: https://aws.amazon.com/fargate/pricing/ ("...until the Amazon ECS Task or Amazon
/// EKS Pod terminates, rounded up to the nearest second", read in the stored copy on
/// 2026-11-24). The minimum is quoted, not read here (UNCONFIRMED in that sense): the
/// page's sentence "Pricing is calculated per second with a 1-minute minimum" (and on
/// https://aws.amazon.com/ecs/pricing/: "A minimum charge of one minute applies") is past
/// the part of the stored page that could be read; it is taken from verbatim quotations of
/// those pages by others (research notes read 2026-10-09; vantage.sh and
/// blog.awsfundamentals.com say the same).
pub const MIN_BILLED_SECONDS: u64 = 60;
pub const BILLING_INCREMENT_SECONDS: u64 = 1;

/// Linux/X86 On-Demand, US East (N. Virginia), USD per vCPU-hour.
/// Source: AWS Price List, offer `AmazonECS`, usage type `USE1-Fargate-vCPU-Hours:perCPU`
/// (us-east-1, On-Demand, per hours): "0.0404800000" USD in a GetProducts answer recorded
/// by others (a test fixture; SKU 8CESGAFWKAJ98PME, offer version 20221121182130, effective
/// 2022-11-01), and unchanged in reads of the us-east-1 offer file of version
/// 20260911124425 (the 2026-09-11 offer, effective 2026-07-01) quoted in research notes
/// read 2026-10-09, and in a check against the Price List Bulk API on 2026-09-29
/// (theuves/fgcalc README). Read by others and quoted, not fetched live from here. The
/// pricing page's own table ("$0.04048 per vCPU per hour"; worked example "$0.000011244 per
/// vCPU second") is quoted identically by independent write-ups (e.g.
/// vantage.sh/blog/fargate-pricing).
pub const X86_VCPU_HOUR: f64 = 0.04048;
/// Linux/X86 On-Demand, US East (N. Virginia), USD per GB-hour of memory.
/// Source: AWS Price List, offer `AmazonECS`, usage type `USE1-Fargate-GB-Hours`
/// (us-east-1, On-Demand): "0.0044450000" USD in the same recorded GetProducts answer (SKU
/// PBZNQUSEXZUC34C9, offer version 20221121182130), unchanged in the reads of the
/// 2026-09-11 offer (effective 2026-07-01) quoted 2026-10-09; quoted by others, not fetched
/// from here, as for [`X86_VCPU_HOUR`].
pub const X86_GB_HOUR: f64 = 0.004445;
/// Linux/ARM (Graviton) On-Demand, US East (N. Virginia), USD per vCPU-hour.
/// Source: AWS Price List, offer `AmazonECS`, usage type
/// `USE1-Fargate-ARM-vCPU-Hours:perCPU` (us-east-1, On-Demand): "0.0323800000" USD in the
/// same recorded GetProducts answer (SKU XSZATS4VYMDC9CYN, offer version 20221121182130),
/// unchanged in the reads of the 2026-09-11 offer (effective 2026-07-01) quoted 2026-10-09;
/// a Cost Explorer bill check published by others (2026-08-05) derives $0.032380 too.
/// Quoted, not fetched from here, as for [`X86_VCPU_HOUR`].
pub const ARM_VCPU_HOUR: f64 = 0.03238;
/// Linux/ARM (Graviton) On-Demand, US East (N. Virginia), USD per GB-hour.
/// Source: AWS Price List, offer `AmazonECS`, usage type `USE1-Fargate-ARM-GB-Hours`
/// (us-east-1, On-Demand): "0.0035600000" USD in the same recorded GetProducts answer (SKU
/// UNH9KPQP7W7C66C9, offer version 20221121182130), unchanged in the reads of the
/// 2026-09-11 offer (effective 2026-07-01) quoted 2026-10-09; the same bill check derives
/// $0.003560. Quoted, not fetched from here, as for [`X86_VCPU_HOUR`].
pub const ARM_GB_HOUR: f64 = 0.00356;

/// Fargate Spot (Linux/X86 only; ECS refuses ARM64 on Spot), as a share of the On-Demand
/// price. Source: https://aws.amazon.com/fargate/pricing/ ("Fargate Spot ... at up to a
/// 70% discount off the regular Fargate price", read in the stored copy on 2026-11-24):
/// 0.3 is the floor that "up to 70%" sets, the cheapest Spot can be, not what it costs
/// today. The page's own Spot price feed
/// (dftu77xade0tc.cloudfront.net/fargate-spot-prices.json), as read and quoted by others,
/// gave 0.31-0.32 of On-Demand in us-east-1 in August-September 2026 ($0.01268 per
/// vCPU-hour and $0.00139 per GB-hour on 2026-08-22, 0.313; $0.01288871 and $0.00141527 on
/// 2026-09-28, 0.318). UNCONFIRMED as a fixed figure: Spot prices float with supply and
/// demand, and the live feed could not be read here.
pub const SPOT_SHARE_OF_ON_DEMAND: f64 = 0.3;

/// The figure of the Fargate Spot share, which no catalog gives: the AWS price list has no
/// Fargate Spot prices (they float, and are published only on the pricing page).
const SPOT_SHARE: &str = "spot_share_of_on_demand";

/// The weighted mean over the configured capacity providers, with Fargate's billing rules:
/// each On-Demand figure read from the AWS price list for the config's `region` where the
/// price file has it (usage types in `offload::prices::aws`), else the default above; Spot
/// at its share of the (read or default) x86 On-Demand price.
pub fn sheet(config: &Config, read: &ReadPrices) -> Pricing {
    let mut f = read.figures("ecs", &config.region);
    let shares: Vec<_> = config.capacity.iter().filter(|c| c.weight > 0).collect();
    let total: f64 = shares.iter().map(|c| c.weight as f64).sum();
    let (mut vcpu, mut gb) = (0.0, 0.0);
    for share in shares {
        let (v, g) = match (config.cpu_architecture, share.provider) {
            (Arch::X86_64, CapacityProvider::Fargate) => x86(&mut f),
            (Arch::Arm64, CapacityProvider::Fargate) => (
                f.get(figures::ARM_VCPU_HOUR, ARM_VCPU_HOUR),
                f.get(figures::ARM_GB_HOUR, ARM_GB_HOUR),
            ),
            // ECS refuses ARM64 on Spot: Spot is x86's.
            (_, CapacityProvider::FargateSpot) => {
                let (v, g) = x86(&mut f);
                let spot = f.get(SPOT_SHARE, SPOT_SHARE_OF_ON_DEMAND);
                (v * spot, g * spot)
            }
        };
        vcpu += v * share.weight as f64 / total;
        gb += g * share.weight as f64 / total;
    }
    f.pricing(PriceSheet {
        vcpu_hour: vcpu,
        gb_hour: gb,
        gpu_hour: Default::default(),
        min_billed_seconds: MIN_BILLED_SECONDS,
        billing_increment_seconds: BILLING_INCREMENT_SECONDS,
    })
}

/// Linux/X86 On-Demand (vCPU-hour, GB-hour).
fn x86(f: &mut Figures) -> (f64, f64) {
    (
        f.get(figures::VCPU_HOUR, X86_VCPU_HOUR),
        f.get(figures::GB_HOUR, X86_GB_HOUR),
    )
}

/// The task size Fargate would launch, and bill, for `resources`; a request no Fargate size
/// holds (which `validate` refuses) is returned as it is.
pub fn billed_resources(resources: &Resources) -> Resources {
    match sizing::fit(resources.cpu, resources.memory_bytes) {
        Ok(size) => Resources {
            cpu: size.cpu_units as f64 / 1024.0,
            memory_bytes: size.memory_mib as u64 * (1 << 20),
            ..resources.clone()
        },
        Err(_) => resources.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CapacityShare;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn config(arch: Arch, capacity: &[(CapacityProvider, i32)]) -> Config {
        let mut config: Config = serde_json::from_value(serde_json::json!({
            "cluster": "c", "subnets": ["subnet-1"],
        }))
        .unwrap();
        config.cpu_architecture = arch;
        config.capacity = capacity
            .iter()
            .map(|&(provider, weight)| CapacityShare {
                provider,
                weight,
                base: 0,
            })
            .collect();
        config
    }

    fn on_demand() -> PriceSheet {
        priced(Arch::X86_64, &[(CapacityProvider::Fargate, 1)])
    }

    fn priced(arch: Arch, capacity: &[(CapacityProvider, i32)]) -> PriceSheet {
        sheet(&config(arch, capacity), &ReadPrices::default()).sheet
    }

    fn req(cpu: f64, memory_bytes: u64) -> Resources {
        Resources {
            cpu,
            memory_bytes,
            gpu: None,
            ephemeral_storage_bytes: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn requests_are_billed_at_the_fargate_size_they_launch_as() {
        // 0.3 vCPU is launched, and billed, as 0.5 vCPU with that size's least memory.
        assert_eq!(billed_resources(&req(0.3, 256 * MIB)), req(0.5, GIB));
        assert_eq!(billed_resources(&req(0.3, 1500 * MIB)), req(0.5, 2 * GIB));
        // Memory can push the size up too: 0.25 vCPU with 3 GB needs 0.5 vCPU.
        assert_eq!(billed_resources(&req(0.25, 3 * GIB)), req(0.5, 3 * GIB));
        assert_eq!(billed_resources(&req(1.0, GIB)), req(1.0, 2 * GIB));
        // A valid size is billed as it is; storage is kept.
        let exact = Resources {
            ephemeral_storage_bytes: Some(40 * GIB),
            ..req(2.0, 4 * GIB)
        };
        assert_eq!(billed_resources(&exact), exact);
        // Too big for Fargate: left alone (validate refuses it).
        assert_eq!(billed_resources(&req(32.0, GIB)), req(32.0, GIB));
    }

    #[test]
    fn fargate_bills_per_second_with_a_one_minute_minimum() {
        let sheet = on_demand();
        assert_eq!(sheet.billed_seconds(10), 60);
        assert_eq!(sheet.billed_seconds(60), 60);
        assert_eq!(sheet.billed_seconds(61), 61);
        assert_eq!(sheet.billed_seconds(3601), 3601);
    }

    #[test]
    fn a_short_small_job_costs_a_minute_of_its_launched_size() {
        // 0.3 vCPU / 256 MiB for 10 s: billed as 0.5 vCPU + 1 GB for 60 s.
        let sheet = on_demand();
        let est = sheet
            .estimate(&billed_resources(&req(0.3, 256 * MIB)), 10)
            .unwrap();
        let hourly = 0.5 * 0.04048 + 1.0 * 0.004445;
        assert_eq!(est.billed_seconds, 60);
        assert!(close(est.hourly_usd, hourly), "{est:?}");
        assert!(close(est.estimated_usd, hourly / 60.0), "{est:?}");

        // 61 s is billed as 61 s.
        let est = sheet
            .estimate(&billed_resources(&req(1.0, 2 * GIB)), 61)
            .unwrap();
        assert_eq!(est.billed_seconds, 61);
        assert!(close(
            est.estimated_usd,
            (0.04048 + 2.0 * 0.004445) * 61.0 / 3600.0
        ));
    }

    #[test]
    fn arm_spot_and_mixes_are_priced_from_the_list() {
        let arm = priced(Arch::Arm64, &[(CapacityProvider::Fargate, 1)]);
        assert!(close(arm.vcpu_hour, 0.03238) && close(arm.gb_hour, 0.00356));
        assert_eq!(arm.min_billed_seconds, 60);

        let spot = priced(Arch::X86_64, &[(CapacityProvider::FargateSpot, 1)]);
        assert!(close(spot.vcpu_hour, 0.012144), "{spot:?}");
        assert!(close(spot.gb_hour, 0.0013335), "{spot:?}");

        // Three Spot tasks to one On-Demand: the weighted mean.
        let mix = priced(
            Arch::X86_64,
            &[
                (CapacityProvider::Fargate, 1),
                (CapacityProvider::FargateSpot, 3),
            ],
        );
        assert!(
            close(mix.vcpu_hour, (0.04048 + 3.0 * 0.012144) / 4.0),
            "{mix:?}"
        );
        assert_eq!(mix.billing_increment_seconds, 1);
        assert!(mix.gpu_hour.is_empty());
    }
}
