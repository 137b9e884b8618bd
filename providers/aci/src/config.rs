//! `[providers.NAME]` settings for `kind = "aci"`.

use std::collections::BTreeMap;

use offload_arm::{Registry, SecretString};
use offload_provider::timeouts::Timeouts;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AciConfig")]
pub struct Config {
    /// The Azure subscription (its id) the container groups are created in.
    pub subscription_id: String,
    /// The resource group the container groups are created in.
    pub resource_group: String,
    /// The Azure region of the container groups (`westeurope`).
    pub location: String,
    /// Azure Resource Manager; another for sovereign clouds or a test server.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// A fixed bearer token instead of DefaultAzureCredential's chain (environment,
    /// workload identity, managed identity, Azure CLI): for test servers and tokens
    /// obtained elsewhere. Never shown.
    pub access_token: Option<SecretString>,
    /// The groups' operating system: `Linux` or `Windows`.
    #[serde(default = "linux")]
    pub os_type: String,
    /// VNet subnets (full resource ids) for the groups.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Registries the jobs' images may come from, each with a password or a managed
    /// identity that may pull from it.
    #[serde(default)]
    pub registries: Vec<Registry>,
    /// A user-assigned managed identity (resource id) for the groups.
    pub managed_identity: Option<String>,
    /// `Regular`, or `Spot` (evictable groups at a lower price; such evictions are
    /// preemptions, not the job's failure).
    #[serde(default)]
    pub priority: Priority,
    /// The groups' DNS settings, for groups in a VNet.
    pub dns: Option<Dns>,
    /// Tags put on every group; jobs set nothing through `provider_options.aci`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// GPU SKUs (K80, P100, V100) this deployment may request. Empty by default: Azure
    /// retired ACI GPU on 14 July 2025; only deployments that still have it set this.
    #[serde(default)]
    pub gpu_skus: Vec<String>,
    /// The most vCPUs one group may have: ACI's per-group limit in this region.
    #[serde(default = "default_max_cpu")]
    pub max_cpu: f64,
    /// The most memory one group may have, in GB: ACI's per-group limit in this region.
    #[serde(default = "default_max_memory_gb")]
    pub max_memory_gb: f64,
    /// ARM reads per second, ARM's read budget per subscription (a bucket of 250 refilled
    /// at 25 per second), shared with any `aca` provider on the subscription.
    #[serde(default = "default_reads")]
    pub reads_per_second: u32,
    /// The most ARM reads at once, the bucket `reads_per_second` refills.
    #[serde(default = "default_read_burst")]
    pub read_burst: u32,
    /// Container group creates per hour at most: ACI allows 300.
    #[serde(default = "default_creates")]
    pub creates_per_hour: u32,
    /// How long connecting to ARM may take.
    #[serde(default = "offload_provider::timeouts::connect_seconds")]
    pub connect_timeout_seconds: u64,
    /// How long one request may take until its answer is read; a read that takes longer
    /// is sent again, a create is not.
    #[serde(default = "offload_provider::timeouts::request_seconds")]
    pub request_timeout_seconds: u64,
    /// The image the filer steps of a job with inputs or outputs run (the gateway's own
    /// image, which has `offload`); without it, such jobs are refused.
    pub filer_image: Option<String>,
    /// The filer's program in that image, before `filer stage-in` or `filer stage-out`.
    #[serde(default = "offload_provider::steps::default_filer_command")]
    pub filer_command: Vec<String>,
    /// The deployment's credentials for the object stores, which the filer's init
    /// containers alone get, as secure environment variables (`AZURE_STORAGE_ACCOUNT_KEY`,
    /// ...). Never shown. Not `managed_identity`: a group's identity is every container's,
    /// the executors' too.
    #[serde(default)]
    pub filer_secrets: BTreeMap<String, SecretString>,
}

/// A container group's priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Priority {
    #[default]
    Regular,
    Spot,
}

/// A container group's DNS settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// The DNS servers' addresses.
    pub name_servers: Vec<String>,
    /// The search domains, separated by spaces.
    pub search_domains: Option<String>,
    /// resolv.conf options, separated by spaces.
    pub options: Option<String>,
}

fn default_endpoint() -> String {
    offload_arm::ENDPOINT.into()
}
fn linux() -> String {
    "Linux".into()
}
fn default_max_cpu() -> f64 {
    4.0
}
fn default_max_memory_gb() -> f64 {
    16.0
}
fn default_reads() -> u32 {
    offload_arm::READS_PER_SECOND
}
fn default_read_burst() -> u32 {
    offload_arm::READ_BURST
}
fn default_creates() -> u32 {
    300
}

impl Config {
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("subscription_id", &self.subscription_id),
            ("resource_group", &self.resource_group),
            ("location", &self.location),
        ] {
            if value.is_empty() {
                return Err(format!("{field}: must not be empty"));
            }
        }
        if self.reads_per_second == 0 || self.read_burst == 0 || self.creates_per_hour == 0 {
            return Err(
                "reads_per_second, read_burst and creates_per_hour must be at least 1".into(),
            );
        }
        self.timeouts().map(|_| ())
    }

    pub fn timeouts(&self) -> Result<Timeouts, String> {
        Timeouts::from_seconds(self.connect_timeout_seconds, self.request_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_config_do_not_show() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "subscription_id": "s", "resource_group": "g", "location": "l",
            "access_token": "token-value",
            "registries": [{"server": "r.azurecr.io", "username": "u", "password": "password-value"}],
        }))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("token-value") && !shown.contains("password-value"),
            "{shown}"
        );
        assert_eq!(config.access_token.unwrap().0, "token-value");
    }
}
