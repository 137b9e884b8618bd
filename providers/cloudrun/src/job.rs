//! One Cloud Run job per attempt: its id, labels, and the body that creates it, written as
//! the Admin API's JSON and checked against `google-cloud-run-v2`'s model.
//!
//! The body carries a `startExecutionToken`: creating the job starts its one execution in
//! the same request. `jobs:run` takes no request id, so a run sent again after a crash
//! would start a second execution; a create sent again is refused (409 `ALREADY_EXISTS`),
//! and the job it finds has its execution already.

use std::collections::BTreeMap;

use google_cloud_run_v2::model::Job;
use offload_provider::{Launch, ProviderError, Result};
use serde_json::{json, Value};

use crate::config::Config;
use crate::sizing::Size;

pub const CONTAINER: &str = "main";
pub const MANAGED_BY_LABEL: &str = "managed-by";
pub const JOB_ID_LABEL: &str = "offload-job-id";
/// The launch key, which the job's id is made from.
pub const KEY_LABEL: &str = "offload-launch-key";
/// The token that names the execution the job's creation starts. A job of offload's has
/// that one execution only.
pub const EXECUTION_TOKEN: &str = "run";

/// How much longer than `timeout_seconds` a task may run. The engine ends a job at its
/// timeout itself (cancelling the execution); the task timeout is the backstop for a
/// gateway that is down then, so it must not win the race.
pub const TIMEOUT_GRACE_SECONDS: u64 = 60;
/// The task timeout of a job without one: a day, the longest that is not Preview.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 86_400;
/// Cloud Run's longest task timeout: 168 hours (over 24 is Preview). Source: "Configure
/// task timeout for jobs" (cloud.google.com/run/docs/configuring/task-timeout), read
/// 2026-12-02.
pub const MAX_TIMEOUT_SECONDS: u64 = 168 * 3600;

/// The job's id: [`offload_provider::short_name`] of the key (30 characters, within the
/// 63 Cloud Run allows with the token), so a launch key always finds its job again.
pub fn id(key: &str) -> String {
    offload_provider::short_name(key)
}

/// Whether a label is one Cloud Run takes: keys of 1 to 63 lowercase letters, digits, `_`
/// and `-`, starting with a letter; values of up to 63 of the same.
pub fn label_rule(key: &str, value: &str) -> std::result::Result<(), String> {
    let fine = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    if key.is_empty() || !key.as_bytes()[0].is_ascii_lowercase() || !fine(key) {
        return Err("a label key is 1-63 of a-z, 0-9, _ and -, starting with a letter".into());
    }
    if !fine(value) {
        return Err("a label value is up to 63 of a-z, 0-9, _ and -".into());
    }
    Ok(())
}

/// A spec label as Cloud Run can hold it: lowercased, other characters as `_`, cut to 63.
/// Labels are for finding jobs in the console; the gateway keeps them exactly.
fn label_text(text: &str) -> String {
    text.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .take(63)
        .collect()
}

pub fn labels(config: &Config, launch: &Launch) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    for (k, v) in &launch.spec.labels {
        let key = label_text(&format!("label-{k}"));
        labels.insert(key, label_text(v));
    }
    labels.insert(MANAGED_BY_LABEL.into(), "offload".into());
    labels.insert(JOB_ID_LABEL.into(), label_text(&launch.job_id));
    labels.insert(KEY_LABEL.into(), launch.key.clone());
    labels
}

/// The environment of the container: `env` as values, and `secret_env` as references to
/// the Secret Manager versions `secrets` names (variable, secret, version).
fn env(launch: &Launch, secrets: &[(String, String, String)]) -> Vec<Value> {
    launch
        .spec
        .env
        .iter()
        .filter(|(k, _)| !launch.secret_env.contains_key(*k))
        .map(|(k, v)| json!({"name": k, "value": v}))
        .chain(secrets.iter().map(|(var, secret, version)| {
            json!({"name": var, "valueSource": {"secretKeyRef": {"secret": secret, "version": version}}})
        }))
        .collect()
}

/// The task timeout, or why the job's timeout cannot be one.
fn timeout(launch: &Launch) -> Result<u64> {
    let seconds = launch
        .spec
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT_SECONDS, |t| {
            t.saturating_add(TIMEOUT_GRACE_SECONDS)
        });
    if seconds > MAX_TIMEOUT_SECONDS {
        return Err(ProviderError::InvalidSpec(format!(
            "timeout_seconds: {} is more than Cloud Run's task timeout of {} hours allows",
            launch.spec.timeout_seconds.unwrap_or_default(),
            MAX_TIMEOUT_SECONDS / 3600
        )));
    }
    Ok(seconds)
}

pub fn check(launch: &Launch) -> Result<()> {
    timeout(launch).map(|_| ())
}

/// The job, with its execution to start. `secrets` are the `secret_env` references.
pub fn body(
    config: &Config,
    launch: &Launch,
    size: &Size,
    secrets: &[(String, String, String)],
) -> Result<Job> {
    let spec = &launch.spec;
    let mut limits = json!({"cpu": size.cpu_limit(), "memory": size.memory_limit()});
    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "env": env(launch, secrets),
        "resources": {"limits": limits.clone()},
    });
    if !spec.command.is_empty() {
        container["command"] = json!(spec.command);
    }
    if !spec.args.is_empty() {
        container["args"] = json!(spec.args);
    }
    let mut task = json!({
        "containers": [],
        "timeout": format!("{}s", timeout(launch)?),
        // The engine decides retries.
        "maxRetries": 0,
    });
    if let Some(gpu) = size.gpu {
        limits["nvidia.com/gpu"] = json!("1");
        container["resources"]["limits"] = limits;
        task["nodeSelector"] = json!({"accelerator": gpu.kind});
        task["gpuZonalRedundancyDisabled"] = json!(!config.gpu_zonal_redundancy);
    }
    task["containers"] = json!([container]);
    if let Some(account) = &config.service_account {
        task["serviceAccount"] = json!(account);
    }
    let job = json!({
        "labels": labels(config, launch),
        "template": {"taskCount": 1, "parallelism": 1, "template": task},
        "startExecutionToken": EXECUTION_TOKEN,
    });
    serde_json::from_value(job).map_err(|e| ProviderError::InvalidSpec(format!("job: {e}")))
}

#[cfg(test)]
mod tests {
    use offload_provider::{Gpu, Resources, WorkloadSpec};

    use super::*;

    fn config() -> Config {
        serde_json::from_value(json!({"project": "p", "region": "us-central1",
            "service_account": "runner@p.iam.gserviceaccount.com"}))
        .unwrap()
    }

    fn launch(gpu: bool) -> Launch {
        Launch {
            key: "offload-0192c3f4a5b6c7d8e9f0a1b2c3d4e5f6-2".into(),
            job_id: "0192c3f4-a5b6-c7d8-e9f0-a1b2c3d4e5f6".into(),
            attempt: 2,
            spec: WorkloadSpec {
                name: None,
                image: "us-docker.pkg.dev/p/r/train:1".into(),
                command: vec!["python".into()],
                args: vec!["train.py".into()],
                env: [("MODE".to_string(), "fast".to_string())].into(),
                resources: Resources {
                    cpu: 1.0,
                    memory_bytes: 1 << 30,
                    gpu: gpu.then(|| Gpu {
                        count: 1,
                        kind: Some("nvidia-l4".into()),
                    }),
                    ephemeral_storage_bytes: None,
                },
                timeout_seconds: Some(600),
                labels: [("dag_id".to_string(), "Nightly.Train".to_string())].into(),
                provider_options: None,
                steps: None,
            },
            secret_env: [("TOKEN".to_string(), "hunter2".to_string())].into(),
            fresh: true,
        }
    }

    #[test]
    fn the_job_starts_its_execution_with_the_spec_and_no_secret_value() {
        let launch = launch(true);
        let size = crate::sizing::size(&config(), &launch.spec.resources).unwrap();
        let secrets = [(
            "TOKEN".to_string(),
            "offload-x-env-0".to_string(),
            "1".to_string(),
        )];
        let job = body(&config(), &launch, &size, &secrets).unwrap();
        let json = serde_json::to_value(&job).unwrap();
        assert!(!json.to_string().contains("hunter2"), "{json}");
        assert_eq!(json["startExecutionToken"], EXECUTION_TOKEN);
        let task = &json["template"]["template"];
        assert_eq!(task["maxRetries"], 0);
        assert_eq!(task["timeout"], "660s");
        assert_eq!(task["serviceAccount"], "runner@p.iam.gserviceaccount.com");
        assert_eq!(task["nodeSelector"]["accelerator"], "nvidia-l4");
        assert_eq!(task["gpuZonalRedundancyDisabled"], true);
        let container = &task["containers"][0];
        assert_eq!(
            container["resources"]["limits"],
            json!({"cpu": "4", "memory": "16384Mi", "nvidia.com/gpu": "1"})
        );
        assert_eq!(container["command"], json!(["python"]));
        assert_eq!(
            container["env"],
            json!([{"name": "MODE", "value": "fast"},
                   {"name": "TOKEN", "valueSource": {"secretKeyRef": {"secret": "offload-x-env-0", "version": "1"}}}])
        );
        assert_eq!(json["labels"]["label-dag_id"], "nightly_train");
        assert_eq!(json["labels"][KEY_LABEL], launch.key);
        for (k, v) in json["labels"].as_object().unwrap() {
            label_rule(k, v.as_str().unwrap()).unwrap();
        }
    }

    #[test]
    fn a_timeout_beyond_cloud_runs_is_refused_by_name() {
        let mut launch = launch(false);
        launch.spec.timeout_seconds = Some(MAX_TIMEOUT_SECONDS);
        let err = check(&launch).unwrap_err().to_string();
        assert!(err.contains("timeout_seconds:"), "{err}");
        launch.spec.timeout_seconds = None;
        let size = crate::sizing::size(&config(), &launch.spec.resources).unwrap();
        let job = serde_json::to_value(body(&config(), &launch, &size, &[]).unwrap()).unwrap();
        assert_eq!(job["template"]["template"]["timeout"], "86400s");
        assert!(job["template"]["template"]["nodeSelector"].is_null());
    }
}
