//! The sizes Cloud Run runs a job's task at. A request is rounded up to the nearest size
//! Cloud Run accepts (GPU minimums applied); a request above every size is refused, naming
//! the field and the limit.
//!
//! Source: Google Cloud, "Configure CPU limits for jobs" and "Configure memory limits for
//! jobs" (cloud.google.com/run/docs/configuring/jobs/cpu, .../jobs/memory-limits), read
//! 2026-12-02: CPU from 0.08 to 1 in steps of 0.001, else 1, 2, 4, 6 or 8; at least 0.5
//! vCPU above 512 MiB and 1 vCPU above 1 GiB; memory from 512 MiB (the second-generation
//! environment jobs run in) to 4 GiB per vCPU up to 32 GiB, with at least 2 GiB at 4 vCPU
//! and 4 GiB at 6 or 8.

use offload_provider::{Gpu, ProviderError, Resources, Result};

use crate::config::Config;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

pub const MIN_CPU: f64 = 0.08;
pub const MAX_CPU: f64 = 8.0;
pub const MIN_MEMORY_BYTES: u64 = 512 * MIB;
pub const MAX_MEMORY_BYTES: u64 = 32 * GIB;
/// The whole vCPU counts above 1, each with its memory range in GiB.
const WHOLE_CPUS: [(f64, u64, u64); 5] = [
    (1.0, 0, 4),
    (2.0, 0, 8),
    (4.0, 2, 16),
    (6.0, 4, 24),
    (8.0, 4, 32),
];

/// A Cloud Run accelerator and what a task with it must have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuKind {
    /// The `nodeSelector.accelerator` value, which is also GKE's name for the GPU, so that
    /// `auto` compares like with like.
    pub kind: &'static str,
    pub min_cpu: f64,
    pub min_memory_bytes: u64,
}

/// Source: Google Cloud, "GPU support for jobs" (cloud.google.com/run/docs/configuring/jobs/gpu),
/// read 2026-12-02: NVIDIA L4, one per task, with at least 4 vCPU and 16 GiB.
pub const GPU_KINDS: [GpuKind; 1] = [GpuKind {
    kind: "nvidia-l4",
    min_cpu: 4.0,
    min_memory_bytes: 16 * GIB,
}];

/// What a task runs at.
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    pub cpu: f64,
    pub memory_bytes: u64,
    pub gpu: Option<GpuKind>,
}

impl Size {
    /// `cpu` as Cloud Run's limit takes it: `"1"`, `"4"`, `"0.5"`.
    pub fn cpu_limit(&self) -> String {
        let text = format!("{:.3}", self.cpu);
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }

    /// Memory as a limit in MiB (`"512Mi"`), which every size is a whole number of.
    pub fn memory_limit(&self) -> String {
        format!("{}Mi", self.memory_bytes / MIB)
    }

    /// The request at this size: what Cloud Run bills.
    pub fn billed(&self, request: &Resources) -> Resources {
        Resources {
            cpu: self.cpu,
            memory_bytes: self.memory_bytes,
            gpu: self.gpu.map(|g| Gpu {
                count: 1,
                kind: Some(g.kind.to_string()),
            }),
            ephemeral_storage_bytes: request.ephemeral_storage_bytes,
        }
    }
}

fn refuse(why: String) -> ProviderError {
    ProviderError::InvalidSpec(why)
}

/// The GPU kind a request asks for, if it may have it here.
fn gpu(config: &Config, gpu: &Gpu) -> Result<GpuKind> {
    if gpu.count != 1 {
        return Err(refuse(format!(
            "resources.gpu.count: Cloud Run gives a task exactly 1 GPU, not {}",
            gpu.count
        )));
    }
    let allowed = |k: &&GpuKind| config.gpu_kinds.iter().any(|c| c == k.kind);
    let found = match &gpu.kind {
        Some(kind) => GPU_KINDS.iter().filter(allowed).find(|g| g.kind == kind),
        None => GPU_KINDS.iter().find(allowed),
    };
    found.copied().ok_or_else(|| {
        refuse(format!(
            "resources.gpu.kind: {} is not among this provider's GPU kinds ({})",
            gpu.kind.as_deref().unwrap_or("any"),
            config.gpu_kinds.join(", ")
        ))
    })
}

/// The size `request` runs at, or why it cannot run on Cloud Run.
pub fn size(config: &Config, request: &Resources) -> Result<Size> {
    if request.cpu > MAX_CPU {
        return Err(refuse(format!(
            "resources.cpu: {} vCPU is more than a Cloud Run task's {MAX_CPU}",
            request.cpu
        )));
    }
    if request.memory_bytes > MAX_MEMORY_BYTES {
        return Err(refuse(format!(
            "resources.memory: {} MiB is more than a Cloud Run task's 32 GiB",
            request.memory_bytes.div_ceil(MIB)
        )));
    }
    let gpu = request.gpu.as_ref().map(|g| gpu(config, g)).transpose()?;
    let mut cpu = request.cpu.max(MIN_CPU);
    let mut memory = request.memory_bytes.div_ceil(MIB).max(1) * MIB;
    memory = memory.max(MIN_MEMORY_BYTES);
    if let Some(g) = gpu {
        cpu = cpu.max(g.min_cpu);
        memory = memory.max(g.min_memory_bytes);
    }
    // Fractional CPU holds at most 1 GiB; 0.5 vCPU at least above 512 MiB.
    if cpu < 1.0 && memory <= GIB {
        if memory > MIN_MEMORY_BYTES {
            cpu = cpu.max(0.5);
        }
        let cpu = (cpu * 1000.0).ceil() / 1000.0;
        return Ok(Size {
            cpu,
            memory_bytes: memory,
            gpu,
        });
    }
    let Some(&(whole, min_gib, _)) = WHOLE_CPUS
        .iter()
        .find(|(c, _, max_gib)| *c >= cpu && memory <= max_gib * GIB)
    else {
        // Unreachable within the limits checked above, but said plainly if it were not.
        return Err(refuse(format!(
            "resources: {} vCPU with {} MiB is no size Cloud Run runs",
            request.cpu,
            memory / MIB
        )));
    };
    Ok(Size {
        cpu: whole,
        memory_bytes: memory.max(min_gib * GIB),
        gpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_json::from_value(serde_json::json!({"project": "p", "region": "us-central1"}))
            .unwrap()
    }

    fn req(cpu: f64, memory_bytes: u64, gpu: Option<(u32, Option<&str>)>) -> Resources {
        Resources {
            cpu,
            memory_bytes,
            gpu: gpu.map(|(count, kind)| Gpu {
                count,
                kind: kind.map(String::from),
            }),
            ephemeral_storage_bytes: None,
        }
    }

    fn sized(cpu: f64, memory_bytes: u64) -> (String, String) {
        let s = size(&config(), &req(cpu, memory_bytes, None)).unwrap();
        (s.cpu_limit(), s.memory_limit())
    }

    #[test]
    fn requests_round_up_to_the_sizes_cloud_run_accepts() {
        assert_eq!(sized(0.25, 256 * MIB), ("0.25".into(), "512Mi".into()));
        assert_eq!(sized(0.25, 768 * MIB), ("0.5".into(), "768Mi".into()));
        assert_eq!(sized(0.5, 2 * GIB), ("1".into(), "2048Mi".into()));
        assert_eq!(sized(1.5, GIB), ("2".into(), "1024Mi".into()));
        assert_eq!(sized(3.0, GIB), ("4".into(), "2048Mi".into()));
        assert_eq!(sized(2.0, 9 * GIB), ("4".into(), "9216Mi".into()));
        assert_eq!(sized(5.0, GIB), ("6".into(), "4096Mi".into()));
        assert_eq!(sized(1.0, 30 * GIB), ("8".into(), "30720Mi".into()));
    }

    #[test]
    fn a_gpu_task_gets_the_gpu_minimums_and_bad_gpus_or_sizes_are_refused_by_field() {
        let s = size(&config(), &req(1.0, GIB, Some((1, Some("nvidia-l4"))))).unwrap();
        assert_eq!(
            (s.cpu_limit(), s.memory_limit()),
            ("4".into(), "16384Mi".into())
        );
        assert_eq!(s.gpu.unwrap().kind, "nvidia-l4");
        assert_eq!(
            size(&config(), &req(1.0, GIB, Some((1, None))))
                .unwrap()
                .gpu,
            s.gpu
        );
        let refused = |r: Resources| match size(&config(), &r) {
            Err(ProviderError::InvalidSpec(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(req(1.0, GIB, Some((2, None)))).starts_with("resources.gpu.count:"));
        assert!(refused(req(1.0, GIB, Some((1, Some("nvidia-tesla-a100")))))
            .starts_with("resources.gpu.kind:"));
        assert!(refused(req(16.0, GIB, None)).starts_with("resources.cpu: 16 vCPU"));
        assert!(refused(req(8.0, 64 * GIB, None)).starts_with("resources.memory:"));
    }
}
