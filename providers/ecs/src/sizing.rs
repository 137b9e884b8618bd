//! Fargate runs only certain CPU/memory pairs: a request is rounded up to the smallest
//! pair that holds it, or refused with the limits named.

const MIB: u64 = 1 << 20;

/// A valid Fargate task size, in ECS units (1024 CPU units = 1 vCPU) and MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size {
    pub cpu_units: u32,
    pub memory_mib: u32,
}

/// (CPU units, memory choices in MiB), from AWS's table of Fargate task sizes.
fn memory_choices(cpu_units: u32) -> Vec<u32> {
    let range = |from: u32, to: u32, step: u32| (from..=to).step_by(step as usize).collect();
    match cpu_units {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => vec![],
    }
}

const CPU_UNITS: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

/// The largest Fargate task, for the provider's capabilities.
pub const MAX_CPU: f64 = 16.0;
pub const MAX_MEMORY_BYTES: u64 = 122880 * MIB;

/// The smallest Fargate size with at least `cpu` vCPUs and `memory_bytes`.
pub fn fit(cpu: f64, memory_bytes: u64) -> Result<Size, String> {
    let want_cpu = (cpu * 1024.0).ceil() as u32;
    let want_mib = memory_bytes.div_ceil(MIB);
    CPU_UNITS
        .iter()
        .filter(|&&units| units >= want_cpu)
        .find_map(|&units| {
            let memory = memory_choices(units)
                .into_iter()
                .find(|&m| m as u64 >= want_mib)?;
            Some(Size {
                cpu_units: units,
                memory_mib: memory,
            })
        })
        .ok_or_else(|| {
            format!(
                "no Fargate size holds {cpu} vCPU with {want_mib} MiB: Fargate tasks have 0.25 to 16 vCPU \
                 and 0.5 to 120 GiB, with memory between 2 and 8 GiB per vCPU for most sizes"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_up_to_the_next_valid_size() {
        let size = |cpu, mib: u64| fit(cpu, mib * MIB).map(|s| (s.cpu_units, s.memory_mib));
        assert_eq!(size(0.25, 512), Ok((256, 512)));
        assert_eq!(size(0.1, 100), Ok((256, 512)));
        assert_eq!(size(0.25, 3000), Ok((512, 3072)));
        assert_eq!(size(1.0, 1024), Ok((1024, 2048)));
        assert_eq!(size(1.5, 5000), Ok((2048, 5120)));
        assert_eq!(size(4.0, 31 * 1024), Ok((8192, 32768)));
        assert_eq!(size(16.0, 120 * 1024), Ok((16384, 122880)));
    }

    #[test]
    fn too_big_is_refused_with_the_limits() {
        let err = fit(17.0, 1024 * MIB).unwrap_err();
        assert!(err.contains("0.25 to 16 vCPU"), "{err}");
        assert!(fit(2.0, 121 * 1024 * MIB).is_err());
    }
}
