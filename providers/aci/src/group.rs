//! One container group per attempt: its name, and the body of the PUT that creates it,
//! written as ARM's JSON and checked against the crate's model (a job of several steps
//! adds its init containers and volumes, [`crate::steps`]).

use offload_provider::{Launch, ProviderError, Resources, Result};
use serde_json::{json, Value};

use crate::config::{Config, Priority};

pub const CONTAINER: &str = "main";
pub const MANAGED_BY_TAG: &str = "managed-by";
pub const JOB_ID_TAG: &str = "offload-job-id";

/// ACI's name rules: 1 to 63 of lowercase letters, digits and `-`, no `-` at either end
/// and no `--`. Launch keys already are.
pub fn name(key: &str) -> Result<String> {
    if offload_provider::is_dns_label(key) && !key.contains("--") {
        Ok(key.to_string())
    } else {
        Err(ProviderError::InvalidSpec(format!(
            "launch key {key:?} is not a valid container group name"
        )))
    }
}

/// CPU cores and memory in GB, as ACI takes them (memory in steps of 0.1 GB).
pub fn size(resources: &Resources) -> (f64, f64) {
    let gb = resources.memory_bytes as f64 / (1u64 << 30) as f64;
    (
        (resources.cpu * 100.0).ceil() / 100.0,
        (gb * 10.0).ceil() / 10.0,
    )
}

/// Why this instance cannot run `resources`, naming ACI's limit.
pub fn refusal(config: &Config, resources: &Resources) -> Option<String> {
    let (cpu, memory) = size(resources);
    if cpu > config.max_cpu {
        return Some(format!(
            "resources.cpu: {cpu} exceeds ACI's limit of {} per container group",
            config.max_cpu
        ));
    }
    if memory > config.max_memory_gb {
        return Some(format!(
            "resources.memory: {memory} GB exceeds ACI's limit of {} GB per container group",
            config.max_memory_gb
        ));
    }
    if let Some(gpu) = &resources.gpu {
        let allowed = &config.gpu_skus;
        match &gpu.kind {
            _ if allowed.is_empty() => {
                return Some("resources.gpu: this ACI provider has no GPU SKUs (Azure retired ACI GPU in July 2025)".into())
            }
            Some(kind) if !allowed.contains(kind) => {
                return Some(format!("resources.gpu.kind: {kind} is not one of {}", allowed.join(", ")))
            }
            _ => {}
        }
    }
    None
}

pub fn body(config: &Config, launch: &Launch) -> Value {
    let spec = &launch.spec;
    let (cpu, memory) = size(&spec.resources);
    let mut requests = json!({"cpu": cpu, "memoryInGB": memory});
    if let Some(gpu) = &spec.resources.gpu {
        let sku = gpu
            .kind
            .clone()
            .or_else(|| config.gpu_skus.first().cloned());
        requests["gpu"] = json!({"count": gpu.count, "sku": sku});
    }
    let mut tags = config.tags.clone();
    for (k, v) in &spec.labels {
        tags.insert(format!("label-{k}"), v.clone());
    }
    tags.insert(MANAGED_BY_TAG.into(), "offload".into());
    tags.insert(JOB_ID_TAG.into(), launch.job_id.clone());
    let (init, mut main, volumes) = match &spec.steps {
        Some(plan) => {
            tags.insert(crate::steps::ROLES_TAG.into(), offload_provider::steps::roles_text(plan));
            crate::steps::containers(config, launch, plan)
        }
        None => {
            let command: Vec<&String> = spec.command.iter().chain(&spec.args).collect();
            let env: Vec<Value> = spec
                .env
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .chain(
                    launch
                        .secret_env
                        .iter()
                        .map(|(k, v)| json!({"name": k, "secureValue": v})),
                )
                .collect();
            let main = json!({"name": CONTAINER, "properties": {
                "image": spec.image,
                "command": command,
                "environmentVariables": env,
            }});
            (vec![], main, vec![])
        }
    };
    main["properties"]["resources"] = json!({"requests": requests});
    let mut properties = json!({
        "containers": [main],
        "osType": config.os_type,
        "restartPolicy": "Never",
        "priority": match config.priority { Priority::Regular => "Regular", Priority::Spot => "Spot" },
    });
    if !init.is_empty() {
        properties["initContainers"] = json!(init);
    }
    if !volumes.is_empty() {
        properties["volumes"] = json!(volumes);
    }
    if !config.subnet_ids.is_empty() {
        properties["subnetIds"] = json!(config
            .subnet_ids
            .iter()
            .map(|id| json!({"id": id}))
            .collect::<Vec<_>>());
    }
    if !config.registries.is_empty() {
        properties["imageRegistryCredentials"] = json!(config
            .registries
            .iter()
            .map(|r| {
                let password = r.password.as_ref().map(|p| &p.0);
                json!({"server": r.server, "username": r.username, "password": password, "identity": r.identity})
            })
            .collect::<Vec<_>>());
    }
    if let Some(dns) = &config.dns {
        properties["dnsConfig"] = json!({"nameServers": dns.name_servers, "searchDomains": dns.search_domains,
                                         "options": dns.options});
    }
    let mut group = json!({"location": config.location, "tags": tags, "properties": properties});
    if let Some(identity) = &config.managed_identity {
        group["identity"] =
            json!({"type": "UserAssigned", "userAssignedIdentities": {identity: {}}});
    }
    offload_arm::strip_nulls(&mut group);
    group
}
