//! What Fargate costs, so routing can compare it with other providers.
//!
//! AWS's published Linux list prices for us-east-1 (per vCPU-hour and GB-hour). Spot
//! prices float; these are the published Fargate Spot figures at the time of writing.
//! Every figure can be overridden with `[providers.NAME.price]`.

use offload_provider::PriceSheet;

use crate::config::{Arch, CapacityProvider, Config};

/// (vCPU-hour, GB-hour) in US dollars.
fn list_price(arch: Arch, capacity: CapacityProvider) -> (f64, f64) {
    match (arch, capacity) {
        (Arch::X86_64, CapacityProvider::Fargate) => (0.04048, 0.004445),
        (Arch::Arm64, CapacityProvider::Fargate) => (0.03238, 0.00356),
        (_, CapacityProvider::FargateSpot) => (0.012144, 0.0013335),
    }
}

/// The weighted mean over the configured capacity providers.
pub fn sheet(config: &Config) -> PriceSheet {
    let shares: Vec<_> = config.capacity.iter().filter(|c| c.weight > 0).collect();
    let total: f64 = shares.iter().map(|c| c.weight as f64).sum();
    let (mut vcpu, mut gb) = (0.0, 0.0);
    for share in shares {
        let (v, g) = list_price(config.cpu_architecture, share.provider);
        vcpu += v * share.weight as f64 / total;
        gb += g * share.weight as f64 / total;
    }
    PriceSheet {
        vcpu_hour: vcpu,
        gb_hour: gb,
        gpu_hour: Default::default(),
    }
}
