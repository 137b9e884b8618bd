//! `[providers.NAME]` settings for `kind = "cloudrun"`.

use std::collections::BTreeMap;

use offload_provider::SecretString;
use serde::Deserialize;

use crate::sizing::GPU_KINDS;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CloudrunConfig")]
pub struct Config {
    /// The Google Cloud project the jobs are created in.
    pub project: String,
    /// The region (`us-central1`, ...): Cloud Run jobs are regional.
    pub region: String,
    /// The Cloud Run Admin API; another for a test server.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The Cloud Logging API; another for a test server.
    #[serde(default = "default_logging_endpoint")]
    pub logging_endpoint: String,
    /// A fixed bearer token instead of Application Default Credentials (Workload Identity
    /// on GKE and Cloud Composer, the metadata server, `GOOGLE_APPLICATION_CREDENTIALS`, or
    /// gcloud's): for test servers. Never shown.
    pub access_token: Option<SecretString>,
    /// The service account the jobs run as (its email); the project's default compute
    /// service account otherwise.
    pub service_account: Option<String>,
    /// The GPU kinds jobs may ask for, each of Cloud Run's accelerators (`nvidia-l4`).
    #[serde(default = "default_gpu_kinds")]
    pub gpu_kinds: Vec<String>,
    /// Whether GPU jobs keep zonal redundancy: capacity reserved in other zones for a zone's
    /// outage, billed at a higher GPU rate. Off by default: a batch job that loses its zone
    /// fails and the engine's retry relaunches it.
    #[serde(default)]
    pub gpu_zonal_redundancy: bool,
    /// Where `secret_env` values are kept: Secret Manager, in this project. Without it a
    /// job with `secret_env` is refused, since a job resource's plain `value`s are readable
    /// by anyone who can read the job.
    pub secret_manager: Option<SecretManager>,
    /// Labels put on every job (Cloud Run's label rules apply).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A job whose execution has not started (its job not ready) this long after its launch
    /// fails; Cloud Run gives its reason on the job.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout_seconds: u64,
    /// How long one attempt of a request may take, connecting included, until its answer
    /// is read (the Google clients take no separate connect timeout).
    #[serde(default = "offload_provider::timeouts::request_seconds")]
    pub request_timeout_seconds: u64,
}

/// Where jobs' `secret_env` values are kept.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretManager {
    /// The Secret Manager API; another for a test server.
    #[serde(default = "default_secret_manager_endpoint")]
    pub endpoint: String,
}

fn default_endpoint() -> String {
    "https://run.googleapis.com".into()
}
fn default_logging_endpoint() -> String {
    "https://logging.googleapis.com".into()
}
fn default_secret_manager_endpoint() -> String {
    "https://secretmanager.googleapis.com".into()
}
fn default_gpu_kinds() -> Vec<String> {
    vec!["nvidia-l4".into()]
}
fn default_pending_timeout() -> u64 {
    600
}

impl Config {
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [("project", &self.project), ("region", &self.region)] {
            if value.is_empty() {
                return Err(format!("{field}: must not be empty"));
            }
        }
        for (i, kind) in self.gpu_kinds.iter().enumerate() {
            if !GPU_KINDS.iter().any(|g| g.kind == kind) {
                let known: Vec<&str> = GPU_KINDS.iter().map(|g| g.kind).collect();
                return Err(format!(
                    "gpu_kinds[{i}]: {kind:?} is not a Cloud Run accelerator ({})",
                    known.join(", ")
                ));
            }
        }
        for (k, v) in &self.labels {
            crate::job::label_rule(k, v).map_err(|why| format!("labels.{k}: {why}"))?;
        }
        if self.request_timeout_seconds == 0 {
            return Err("request_timeout_seconds: must be at least 1".into());
        }
        Ok(())
    }

    /// `projects/P/locations/R`: where jobs are created and listed.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> Result<Config, String> {
        let mut base = serde_json::json!({"project": "p", "region": "us-central1"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let config: Config = serde_json::from_value(base).map_err(|e| e.to_string())?;
        config.check().map(|_| config)
    }

    #[test]
    fn the_token_does_not_show_and_unknown_gpus_and_bad_labels_are_refused_by_name() {
        let shown = format!(
            "{:?}",
            config(serde_json::json!({"access_token": "token-value"})).unwrap()
        );
        assert!(!shown.contains("token-value"), "{shown}");
        let err =
            config(serde_json::json!({"gpu_kinds": ["nvidia-l4", "nvidia-h100"]})).unwrap_err();
        assert!(err.starts_with("gpu_kinds[1]: \"nvidia-h100\""), "{err}");
        let err = config(serde_json::json!({"labels": {"Team": "x"}})).unwrap_err();
        assert!(err.starts_with("labels.Team: "), "{err}");
    }
}
