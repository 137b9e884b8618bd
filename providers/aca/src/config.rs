//! `[providers.NAME]` settings for `kind = "aca"`.

use std::collections::BTreeMap;

use offload_arm::{Registry, SecretString};
use offload_provider::timeouts::Timeouts;
use serde::Deserialize;

use crate::sizing::GPU_PROFILE_TYPES;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AcaConfig")]
pub struct Config {
    /// The Azure subscription (its id) the jobs are created in.
    pub subscription_id: String,
    /// The resource group the jobs are created in.
    pub resource_group: String,
    /// The Azure region of the jobs, the environment's (`westus3`).
    pub location: String,
    /// The Container Apps environment (its resource id) the jobs run in. Its workload
    /// profiles are the ones `gpu_profiles` names.
    pub environment_id: String,
    /// Azure Resource Manager; another for sovereign clouds or a test server.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// A fixed bearer token instead of DefaultAzureCredential's chain (environment,
    /// workload identity, managed identity, Azure CLI): for test servers. Never shown.
    pub access_token: Option<SecretString>,
    /// The environment's workload profile for jobs without a GPU.
    #[serde(default = "consumption")]
    pub workload_profile: String,
    /// The environment's serverless GPU workload profiles, by name, with their type.
    #[serde(default)]
    pub gpu_profiles: Vec<GpuProfile>,
    /// Registries the jobs' images may come from, each with a password or a managed
    /// identity that may pull from it.
    #[serde(default)]
    pub registries: Vec<Registry>,
    /// A user-assigned managed identity (resource id) for the jobs.
    pub managed_identity: Option<String>,
    /// Tags put on every job; jobs set nothing through `provider_options.aca`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where the environment sends its console logs; without it a job's log cannot be read.
    pub log_analytics: Option<LogAnalytics>,
    /// A workload whose image cannot be pulled is given this long (from its execution's
    /// start) before its job fails: a registry may be briefly unreachable.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout_seconds: u64,
    /// ARM reads per second, ARM's read budget per subscription (a bucket of 250 refilled
    /// at 25 per second), shared with any `aci` provider on the subscription.
    #[serde(default = "default_reads")]
    pub reads_per_second: u32,
    /// The most ARM reads at once, the bucket `reads_per_second` refills.
    #[serde(default = "default_read_burst")]
    pub read_burst: u32,
    /// How long connecting to ARM or Log Analytics may take.
    #[serde(default = "offload_provider::timeouts::connect_seconds")]
    pub connect_timeout_seconds: u64,
    /// How long one request may take until its answer is read; a read that takes longer
    /// is sent again, a create or a start is not.
    #[serde(default = "offload_provider::timeouts::request_seconds")]
    pub request_timeout_seconds: u64,
}

/// A serverless GPU workload profile of the environment.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuProfile {
    /// The profile's name in the environment, which a job's `workloadProfileName` gives.
    pub name: String,
    /// Its `workloadProfileType`: `Consumption-GPU-NC8as-T4` or `Consumption-GPU-NC24-A100`.
    #[serde(rename = "type")]
    pub profile_type: String,
}

/// The Log Analytics workspace the environment sends its console logs to.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogAnalytics {
    /// The workspace's id (its customer id, a GUID), not its resource id.
    pub workspace_id: String,
    /// The Log Analytics query API (`api.loganalytics.io` and `api.loganalytics.azure.com`
    /// both serve it); another for sovereign clouds or a test server.
    #[serde(default = "default_log_endpoint")]
    pub endpoint: String,
    /// `ContainerAppConsoleLogs_CL` for an environment whose logs go to Log Analytics;
    /// `ContainerAppConsoleLogs` for one that sends them through Azure Monitor.
    #[serde(default = "default_log_table")]
    pub table: String,
}

fn default_endpoint() -> String {
    offload_arm::ENDPOINT.into()
}
fn consumption() -> String {
    "Consumption".into()
}
fn default_log_endpoint() -> String {
    "https://api.loganalytics.io".into()
}
fn default_log_table() -> String {
    "ContainerAppConsoleLogs_CL".into()
}
fn default_pending_timeout() -> u64 {
    300
}
fn default_reads() -> u32 {
    offload_arm::READS_PER_SECOND
}
fn default_read_burst() -> u32 {
    offload_arm::READ_BURST
}

impl Config {
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("subscription_id", &self.subscription_id),
            ("resource_group", &self.resource_group),
            ("location", &self.location),
            ("environment_id", &self.environment_id),
            ("workload_profile", &self.workload_profile),
        ] {
            if value.is_empty() {
                return Err(format!("{field}: must not be empty"));
            }
        }
        if self.reads_per_second == 0 || self.read_burst == 0 {
            return Err("reads_per_second and read_burst must be at least 1".into());
        }
        self.timeouts()?;
        for (i, profile) in self.gpu_profiles.iter().enumerate() {
            if !GPU_PROFILE_TYPES
                .iter()
                .any(|t| t.profile_type == profile.profile_type)
            {
                let known: Vec<&str> = GPU_PROFILE_TYPES.iter().map(|t| t.profile_type).collect();
                return Err(format!(
                    "gpu_profiles[{i}].type: {:?} is not a serverless GPU profile type ({})",
                    profile.profile_type,
                    known.join(", ")
                ));
            }
        }
        if let Some(logs) = &self.log_analytics {
            if logs.workspace_id.is_empty() {
                return Err("log_analytics.workspace_id: must not be empty".into());
            }
        }
        Ok(())
    }

    pub fn timeouts(&self) -> Result<Timeouts, String> {
        Timeouts::from_seconds(self.connect_timeout_seconds, self.request_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> Result<Config, String> {
        let mut base = serde_json::json!({
            "subscription_id": "s", "resource_group": "g", "location": "westus3",
            "environment_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.App/managedEnvironments/e",
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let config: Config = serde_json::from_value(base).map_err(|e| e.to_string())?;
        config.check().map(|_| config)
    }

    #[test]
    fn secrets_in_the_config_do_not_show() {
        let config = config(serde_json::json!({
            "access_token": "token-value",
            "registries": [{"server": "r.azurecr.io", "username": "u", "password": "password-value"}],
        }))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("token-value") && !shown.contains("password-value"),
            "{shown}"
        );
    }

    #[test]
    fn an_unknown_gpu_profile_type_is_refused_by_name() {
        let err = config(serde_json::json!({"gpu_profiles": [
            {"name": "t4", "type": "Consumption-GPU-NC8as-T4"},
            {"name": "h100", "type": "Consumption-GPU-NC40-H100"},
        ]}))
        .unwrap_err();
        assert!(
            err.starts_with("gpu_profiles[1].type: \"Consumption-GPU-NC40-H100\""),
            "{err}"
        );
        assert!(err.contains("Consumption-GPU-NC24-A100"), "{err}");
    }
}
