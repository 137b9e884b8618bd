//! One Container Apps job per attempt: its name, and the body of the PUT that creates it,
//! written as ARM's JSON and checked against `azure_mgmt_app`'s model.

use offload_provider::{Launch, ProviderError, Result};
use serde_json::{json, Value};

use crate::config::Config;
use crate::sizing::Placement;

pub const CONTAINER: &str = "main";
pub const MANAGED_BY_TAG: &str = "managed-by";
pub const JOB_ID_TAG: &str = "offload-job-id";
/// The launch key, which the job's name is made from but cannot hold.
pub const KEY_TAG: &str = "offload-launch-key";
/// The mark of the provider instance that created the job, the only one that starts it
/// (`crate::start`).
pub const STARTER_TAG: &str = "offload-starter";
/// When the job was created (RFC 3339): a job with no execution long after it will get
/// none.
pub const CREATED_TAG: &str = "offload-created-at";

/// Container Apps job names are "lower case alphanumeric characters or '-', start with a
/// letter, end with an alphanumeric character, cannot have '--', and must be less than 32
/// characters" (the Azure CLI's reference), and a launch key is longer: the name is
/// [`offload_provider::short_name`]'s (30 characters), and the key goes in a tag.
pub fn name(key: &str) -> String {
    offload_provider::short_name(key)
}

/// How much longer than `timeout_seconds` Container Apps lets a replica run. The engine
/// ends a job at its timeout itself (stopping the execution); the replica timeout is the
/// backstop for a gateway that is down then, so it must not win the race.
pub const REPLICA_TIMEOUT_GRACE_SECONDS: u64 = 60;
/// The replica timeout of a job without one: a day.
pub const DEFAULT_REPLICA_TIMEOUT_SECONDS: u64 = 86_400;

/// The name of the job secret that holds `secret_env`'s `i`-th value.
fn secret_name(i: usize) -> String {
    format!("env-{i}")
}

/// The job to create for `launch`, marked as `starter`'s, created at `now`.
pub fn body(
    config: &Config,
    launch: &Launch,
    placement: &Placement,
    starter: &str,
    now: time::OffsetDateTime,
) -> Result<Value> {
    let spec = &launch.spec;
    let env: Vec<Value> = spec
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .chain(
            launch
                .secret_env
                .keys()
                .enumerate()
                .map(|(i, k)| json!({"name": k, "secretRef": secret_name(i)})),
        )
        .collect();
    let mut secrets: Vec<Value> = launch
        .secret_env
        .values()
        .enumerate()
        .map(|(i, v)| json!({"name": secret_name(i), "value": v}))
        .collect();
    let mut registries = vec![];
    for (i, r) in config.registries.iter().enumerate() {
        let mut registry =
            json!({"server": r.server, "username": r.username, "identity": r.identity});
        if let Some(password) = &r.password {
            let name = format!("registry-{i}");
            secrets.push(json!({"name": name, "value": password.0}));
            registry["passwordSecretRef"] = json!(name);
        }
        registries.push(registry);
    }
    let mut tags = config.tags.clone();
    for (k, v) in &spec.labels {
        tags.insert(format!("label-{k}"), v.clone());
    }
    tags.insert(MANAGED_BY_TAG.into(), "offload".into());
    tags.insert(JOB_ID_TAG.into(), launch.job_id.clone());
    tags.insert(KEY_TAG.into(), launch.key.clone());
    tags.insert(STARTER_TAG.into(), starter.to_string());
    let created = now
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ProviderError::Transient(format!("the time now: {e}")))?;
    tags.insert(CREATED_TAG.into(), created);
    let replica_timeout = spec
        .timeout_seconds
        .map_or(DEFAULT_REPLICA_TIMEOUT_SECONDS, |t| {
            t + REPLICA_TIMEOUT_GRACE_SECONDS
        });
    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "env": env,
        "resources": {"cpu": placement.cpu, "memory": placement.memory()},
    });
    if !spec.command.is_empty() {
        container["command"] = json!(spec.command);
    }
    if !spec.args.is_empty() {
        container["args"] = json!(spec.args);
    }
    let mut job = json!({
        "location": config.location,
        "tags": tags,
        "properties": {
            "environmentId": config.environment_id,
            "workloadProfileName": placement.profile,
            "configuration": {
                "triggerType": "Manual",
                "replicaTimeout": replica_timeout,
                // The engine decides retries.
                "replicaRetryLimit": 0,
                "manualTriggerConfig": {"replicaCompletionCount": 1, "parallelism": 1},
                "secrets": secrets,
                "registries": registries,
            },
            "template": {"containers": [container]},
        },
    });
    if let Some(identity) = &config.managed_identity {
        job["identity"] = json!({"type": "UserAssigned", "userAssignedIdentities": {identity: {}}});
    }
    offload_arm::strip_nulls(&mut job);
    i32::try_from(replica_timeout).map_err(|_| {
        ProviderError::InvalidSpec(format!(
            "timeout_seconds: {} is more than Container Apps' replica timeout can hold",
            replica_timeout
        ))
    })?;
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_name_fits_container_apps_rules_and_is_stable() {
        let key = "offload-0192c3f4a5b6c7d8e9f0a1b2c3d4e5f6-12";
        let n = name(key);
        assert_eq!(n.len(), 30, "{n}");
        assert!(n.starts_with("offload-"));
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert!(!n.contains("--") && !n.ends_with('-'));
        assert_eq!(n, name(key));
        assert_ne!(n, name("offload-0192c3f4a5b6c7d8e9f0a1b2c3d4e5f6-13"));
    }
}
