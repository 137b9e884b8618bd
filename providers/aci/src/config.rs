//! `[providers.NAME]` settings for `kind = "aci"`.

use std::collections::BTreeMap;

use offload_arm::{Registry, SecretString};
use offload_provider::timeouts::Timeouts;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    /// Azure Resource Manager; another for sovereign clouds or a test server.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// A fixed bearer token instead of DefaultAzureCredential's chain (environment,
    /// workload identity, managed identity, Azure CLI): for test servers and tokens
    /// obtained elsewhere.
    pub access_token: Option<SecretString>,
    #[serde(default = "linux")]
    pub os_type: String,
    /// VNet subnets (full resource ids) for the groups.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub registries: Vec<Registry>,
    /// A user-assigned managed identity (resource id) for the groups.
    pub managed_identity: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    pub dns: Option<Dns>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// GPU SKUs (K80, P100, V100) this deployment may request. Empty by default: Azure
    /// retired ACI GPU on 14 July 2025; only deployments that still have it set this.
    #[serde(default)]
    pub gpu_skus: Vec<String>,
    /// ACI's per-group limits in this region.
    #[serde(default = "default_max_cpu")]
    pub max_cpu: f64,
    #[serde(default = "default_max_memory_gb")]
    pub max_memory_gb: f64,
    /// ARM's read budget per subscription: a bucket of 250 refilled at 25 per second.
    #[serde(default = "default_reads")]
    pub reads_per_second: u32,
    #[serde(default = "default_read_burst")]
    pub read_burst: u32,
    /// ACI allows 300 container group creates per hour.
    #[serde(default = "default_creates")]
    pub creates_per_hour: u32,
    /// How long connecting to ARM may take.
    #[serde(default = "offload_provider::timeouts::connect_seconds")]
    pub connect_timeout_seconds: u64,
    /// How long one request may take until its answer is read; a read that takes longer
    /// is sent again, a create is not.
    #[serde(default = "offload_provider::timeouts::request_seconds")]
    pub request_timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub enum Priority {
    #[default]
    Regular,
    Spot,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    pub name_servers: Vec<String>,
    pub search_domains: Option<String>,
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
