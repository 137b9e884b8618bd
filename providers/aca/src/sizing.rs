//! The sizes Container Apps runs a job's replica at: a CPU and memory pair it accepts on
//! the Consumption profile, or a serverless GPU profile with its GPU. A request between
//! sizes is rounded up to the next one; a request above every size is refused, naming it.

use offload_provider::{ProviderError, Resources, Result};

use crate::config::Config;

const GIB: f64 = (1u64 << 30) as f64;

/// The Consumption profile's sizes: CPU in steps of 0.25 vCPU from 0.25 to 4, each with
/// twice as many GiB of memory (0.5 GiB to 8 GiB). Source: Microsoft Learn, "Workload
/// profiles in Azure Container Apps" and "Containers in Azure Container Apps", "Allocations".
pub const CPU_STEP: f64 = 0.25;
pub const MAX_CONSUMPTION_CPU: f64 = 4.0;
pub const GIB_PER_CPU: f64 = 2.0;

/// A serverless GPU workload profile type: its GPU and what one replica may have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuProfileType {
    pub profile_type: &'static str,
    /// The GPU kind, by the names Kubernetes' GKE accelerators use, so that `auto` compares
    /// like with like.
    pub kind: &'static str,
    pub gpus: u32,
    pub max_cpu: f64,
    pub max_memory_gib: f64,
}

/// Source: Microsoft Learn, "Using serverless GPUs in Azure Container Apps" and "Workload
/// profiles in Azure Container Apps" (profile types, one GPU a replica, vCPU and memory).
pub const GPU_PROFILE_TYPES: [GpuProfileType; 2] = [
    GpuProfileType {
        profile_type: "Consumption-GPU-NC8as-T4",
        kind: "nvidia-tesla-t4",
        gpus: 1,
        max_cpu: 8.0,
        max_memory_gib: 56.0,
    },
    GpuProfileType {
        profile_type: "Consumption-GPU-NC24-A100",
        kind: "nvidia-tesla-a100",
        gpus: 1,
        max_cpu: 24.0,
        max_memory_gib: 220.0,
    },
];

/// Where a job runs and at what size.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The workload profile's name in the environment.
    pub profile: String,
    pub cpu: f64,
    pub memory_gib: f64,
    /// The GPU profile's type, for a GPU job.
    pub gpu: Option<GpuProfileType>,
}

impl Placement {
    /// Memory as the API takes it: `"1.5Gi"`.
    pub fn memory(&self) -> String {
        format!("{}Gi", self.memory_gib)
    }

    /// The size as billed: the placement's CPU, memory and GPU.
    pub fn billed(&self, request: &Resources) -> Resources {
        Resources {
            cpu: self.cpu,
            memory_bytes: (self.memory_gib * GIB).round() as u64,
            gpu: self.gpu.map(|g| offload_provider::Gpu {
                count: g.gpus,
                kind: Some(g.kind.to_string()),
            }),
            ..request.clone()
        }
    }
}

fn up_to(step: f64, x: f64) -> f64 {
    // A hair of tolerance, so that 0.5 given as 0.5000000001 by a unit parse is 0.5.
    ((x / step) - 1e-9).ceil().max(1.0) * step
}

/// The profiles of `config` that have a GPU, with their types.
pub fn gpu_profiles(config: &Config) -> impl Iterator<Item = (&str, GpuProfileType)> {
    config.gpu_profiles.iter().filter_map(|p| {
        GPU_PROFILE_TYPES
            .iter()
            .find(|t| t.profile_type == p.profile_type)
            .map(|t| (p.name.as_str(), *t))
    })
}

/// Where `resources` run, or why they cannot, naming the field and the limit.
pub fn place(config: &Config, resources: &Resources) -> Result<Placement> {
    let refuse = |why: String| Err(ProviderError::InvalidSpec(why));
    let gib = resources.memory_bytes as f64 / GIB;
    let Some(gpu) = &resources.gpu else {
        let cpu = up_to(CPU_STEP, resources.cpu.max(gib / GIB_PER_CPU));
        if cpu > MAX_CONSUMPTION_CPU {
            return refuse(format!(
                "resources: {} vCPU and {:.2} GiB need {cpu} vCPU with {} GiB, more than Container \
                 Apps' Consumption profile allows ({MAX_CONSUMPTION_CPU} vCPU with {} GiB)",
                resources.cpu,
                gib,
                cpu * GIB_PER_CPU,
                MAX_CONSUMPTION_CPU * GIB_PER_CPU
            ));
        }
        return Ok(Placement {
            profile: config.workload_profile.clone(),
            cpu,
            memory_gib: cpu * GIB_PER_CPU,
            gpu: None,
        });
    };
    let mut profiles = gpu_profiles(config).peekable();
    if profiles.peek().is_none() {
        return refuse(
            "resources.gpu: this Container Apps provider has no serverless GPU profiles (gpu_profiles)"
                .into(),
        );
    }
    let candidates: Vec<_> = profiles
        .filter(|(_, t)| gpu.kind.as_deref().is_none_or(|k| k == t.kind))
        .collect();
    let Some(&(name, profile)) = candidates.first() else {
        let kinds: Vec<&str> = gpu_profiles(config).map(|(_, t)| t.kind).collect();
        return refuse(format!(
            "resources.gpu.kind: {} is not one of {}",
            gpu.kind.as_deref().unwrap_or_default(),
            kinds.join(", ")
        ));
    };
    if gpu.count != profile.gpus {
        return refuse(format!(
            "resources.gpu.count: {} GPUs; a replica on Container Apps' {} profile has exactly {}",
            gpu.count, profile.profile_type, profile.gpus
        ));
    }
    let cpu = up_to(CPU_STEP, resources.cpu);
    let memory_gib = up_to(CPU_STEP, gib);
    if cpu > profile.max_cpu {
        return refuse(format!(
            "resources.cpu: {} exceeds the {} vCPU of a replica on the {} profile",
            resources.cpu, profile.max_cpu, profile.profile_type
        ));
    }
    if memory_gib > profile.max_memory_gib {
        return refuse(format!(
            "resources.memory: {gib:.2} GiB exceeds the {} GiB of a replica on the {} profile",
            profile.max_memory_gib, profile.profile_type
        ));
    }
    Ok(Placement {
        profile: name.to_string(),
        cpu,
        memory_gib,
        gpu: Some(profile),
    })
}
