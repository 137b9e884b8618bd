//! One pod per attempt: the spec a launch turns into, and the labels that let one watch
//! follow every pod offload manages.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, LocalObjectReference, Pod, PodSpec,
    ResourceRequirements, Secret, SecretEnvSource, SecretKeySelector, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use offload_provider::{Launch, ProviderError, Result};

use crate::config::Config;
use crate::options::{Options, SecretRef};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const JOB_ID: &str = "offload.dev/job-id";
pub const CONTAINER: &str = "main";

/// A label value Kubernetes accepts: at most 63 of `[A-Za-z0-9-_.]`, starting and ending
/// with an alphanumeric; anything else becomes `-`, and the ends are trimmed.
pub fn label_value(value: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The pod's name: the launch key, which the engine makes a DNS-1123 label already.
pub fn name(key: &str) -> Result<String> {
    if offload_provider::is_dns_label(key) {
        Ok(key.to_string())
    } else {
        Err(ProviderError::InvalidSpec(format!(
            "launch key {key:?} is not a DNS-1123 label"
        )))
    }
}

/// The per-attempt Secret holding `secret_env`.
pub fn secret_name(pod: &str) -> String {
    format!("{pod}-env")
}

pub fn labels(config: &Config, launch: &Launch) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = launch
        .spec
        .labels
        .iter()
        .filter_map(|(k, v)| {
            // `offload.dev/label-KEY`, the name part cut to 63 like a value.
            let key = label_value(k);
            (!key.is_empty()).then(|| {
                (
                    format!("offload.dev/{}", label_value(&format!("label-{key}"))),
                    label_value(v),
                )
            })
        })
        .collect();
    labels.extend(config.labels.clone());
    labels.insert(MANAGED_BY.into(), "offload".into());
    labels.insert(JOB_ID.into(), label_value(&launch.job_id));
    labels
}

fn quantity(value: String) -> Quantity {
    Quantity(value)
}

pub fn build(config: &Config, launch: &Launch, options: &Options) -> Result<Pod> {
    let name = name(&launch.key)?;
    let spec = &launch.spec;
    let r = &spec.resources;
    let mut amounts = BTreeMap::from([
        (
            "cpu".to_string(),
            quantity(format!("{}m", (r.cpu * 1000.0).ceil() as u64)),
        ),
        ("memory".to_string(), quantity(r.memory_bytes.to_string())),
    ]);
    if let Some(bytes) = r.ephemeral_storage_bytes {
        amounts.insert("ephemeral-storage".into(), quantity(bytes.to_string()));
    }
    let mut node_selector = config.node_selector.clone();
    let mut tolerations = config.tolerations.clone();
    let mut limits = amounts.clone();
    if let Some(gpu) = &r.gpu {
        limits.insert("nvidia.com/gpu".into(), quantity(gpu.count.to_string()));
        if let Some(kind) = &gpu.kind {
            node_selector.insert("cloud.google.com/gke-accelerator".into(), kind.clone());
        }
        tolerations.push(Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    if config.gke.spot {
        node_selector.insert("cloud.google.com/gke-spot".into(), "true".into());
        tolerations.push(Toleration {
            key: Some("cloud.google.com/gke-spot".into()),
            operator: Some("Equal".into()),
            value: Some("true".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    if let Some(class) = &config.gke.compute_class {
        node_selector.insert("cloud.google.com/compute-class".into(), class.clone());
    }
    node_selector.extend(options.node_selector.clone());
    tolerations.extend(options.tolerations.clone());

    let secret = secret_name(&name);
    let from_secret = |secret: &str, key: &str| EnvVar {
        name: key.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // Secrets named with keys: each key as the variable of its name.
    let chosen_keys = options.env_from_secrets.iter().flat_map(|s| match s {
        SecretRef::Keys(k) => k.keys.iter().map(|key| from_secret(&k.name, key)).collect(),
        SecretRef::Whole(_) => vec![],
    });
    let env = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        })
        .chain(chosen_keys)
        .chain(launch.secret_env.keys().map(|k| from_secret(&secret, k)))
        .chain([EnvVar {
            name: "OFFLOAD_JOB_ID".into(),
            value: Some(launch.job_id.clone()),
            ..EnvVar::default()
        }])
        .collect();
    // Secrets named alone: every key, through envFrom.
    let env_from = options
        .env_from_secrets
        .iter()
        .filter_map(|s| match s {
            SecretRef::Whole(name) => Some(EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }),
            SecretRef::Keys(_) => None,
        })
        .collect::<Vec<_>>();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: Some(ResourceRequirements {
            requests: Some(amounts),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let mut annotations = config.annotations.clone();
    let (init, container, volumes) = match &spec.steps {
        Some(plan) => {
            annotations.insert(crate::steps::ROLES.into(), offload_provider::steps::roles_text(plan));
            let (init, main, volumes) = crate::steps::containers(config, plan, &container);
            (Some(init).filter(|i| !i.is_empty()), main, Some(volumes).filter(|v| !v.is_empty()))
        }
        None => (None, container, None),
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: config.namespace.clone(),
            labels: Some(labels(config, launch)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            init_containers: init,
            volumes,
            containers: vec![container],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: spec.timeout_seconds.map(|s| s as i64),
            service_account_name: config.service_account.clone(),
            image_pull_secrets: (!config.image_pull_secrets.is_empty()).then(|| {
                config
                    .image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            affinity: config.affinity.clone(),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// The Secret with the attempt's `secret_env`, owned by its pod so it goes with it.
pub fn secret(config: &Config, launch: &Launch, pod: &Pod) -> Secret {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&pod_name)),
            namespace: config.namespace.clone(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.into(), "offload".into()),
                (JOB_ID.into(), label_value(&launch.job_id)),
            ])),
            owner_references: pod.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: pod_name.clone(),
                    uid,
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        string_data: Some(launch.secret_env.clone().into_iter().collect()),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(label_value("etl"), "etl");
        assert_eq!(
            label_value("manual__2026-01-02T03:04:05+00:00"),
            "manual__2026-01-02T03-04-05-00-00"
        );
        assert_eq!(label_value("--x--"), "x");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_value("é!"), "");
    }

    #[test]
    fn job_labels_become_prefixed_valid_labels() {
        let mut spec: offload_provider::WorkloadSpec = serde_json::from_value(serde_json::json!({
            "name": null, "image": "alpine", "command": [], "args": [], "env": {},
            "resources": {"cpu": 1.0, "memory_bytes": 1, "gpu": null, "ephemeral_storage_bytes": null},
            "timeout_seconds": null, "labels": {}, "provider_options": null
        }))
        .unwrap();
        spec.labels
            .insert("run_id".into(), "manual__2026-01-02T03:04:05+00:00".into());
        spec.labels.insert("!!".into(), "dropped".into());
        let launch = Launch {
            key: "offload-1-1".into(),
            job_id: "0193-abc".into(),
            attempt: 1,
            spec,
            secret_env: Default::default(),
            fresh: false,
        };
        let config: Config = serde_json::from_value(serde_json::json!({})).unwrap();
        let labels = labels(&config, &launch);
        assert_eq!(
            labels["offload.dev/label-run_id"],
            "manual__2026-01-02T03-04-05-00-00"
        );
        assert_eq!(labels[MANAGED_BY], "offload");
        assert_eq!(labels[JOB_ID], "0193-abc");
        assert_eq!(labels.len(), 3);
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert!(name("offload-0123abcd-1").is_ok());
        assert!(name("Offload_1").is_err());
        assert!(name(&"a".repeat(64)).is_err());
    }
}
