//! `provider_options.kubernetes`: what a job may add to its pod, within what the operator
//! allows.
//!
//! Whoever can create a pod in a namespace can read every Secret there through it (the
//! gateway's own tokens and other jobs' `-env` Secrets included) and place it on any node.
//! The gateway creates pods on tenants' behalf, so a tenant's choice of Secret, node label or
//! toleration is refused unless the provider's config lists it (`allowed_secrets`,
//! `allowed_node_selectors`, `allowed_tolerations`, all empty by default), with a message
//! naming the exact field. `validate` runs this at submit, and `launch` again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use offload_provider::{ProviderError, Result};
use serde::Deserialize;

use crate::config::Config;

const FIELD: &str = "provider_options.kubernetes";

/// `provider_options.kubernetes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Existing Secrets for the container's environment, each one of `allowed_secrets`.
    #[serde(default)]
    pub env_from_secrets: Vec<SecretRef>,
    /// Added to the provider's node selector; each label and value from
    /// `allowed_node_selectors`.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Added to the provider's tolerations; each equal to one of `allowed_tolerations`.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

/// A Secret for the environment: its name alone (every key becomes a variable, through
/// `envFrom`), or `{name, keys}` (those keys, each the variable of its own name).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    Whole(String),
    Keys(SecretKeys),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeys {
    pub name: String,
    pub keys: Vec<String>,
}

impl Options {
    /// Parses a job's options and refuses any choice the config does not allow.
    pub fn allowed(value: Option<&serde_json::Value>, config: &Config) -> Result<Options> {
        let options: Options = match value {
            None => Options::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| ProviderError::InvalidSpec(format!("{FIELD}: {e}")))?,
        };
        match options.refusal(config) {
            Some(why) => Err(ProviderError::InvalidSpec(why)),
            None => Ok(options),
        }
    }

    fn refusal(&self, config: &Config) -> Option<String> {
        self.env_from_secrets
            .iter()
            .enumerate()
            .find_map(|(i, secret)| secret_refusal(config, i, secret))
            .or_else(|| {
                self.node_selector.iter().find_map(|(label, value)| {
                    let field = format!("{FIELD}.node_selector[{label:?}]");
                    match config.allowed_node_selectors.get(label) {
                        None => Some(format!(
                            "{field}: node label {label:?} is not in allowed_node_selectors"
                        )),
                        Some(values) if !values.contains(value) => Some(format!(
                            "{field}: value {value:?} is not in allowed_node_selectors (allowed: {})",
                            values.join(", ")
                        )),
                        Some(_) => None,
                    }
                })
            })
            .or_else(|| {
                self.tolerations.iter().enumerate().find_map(|(i, t)| {
                    (!config.allowed_tolerations.contains(t)).then(|| {
                        format!(
                            "{FIELD}.tolerations[{i}]: toleration {} is not in allowed_tolerations",
                            serde_json::to_string(t).unwrap_or_default()
                        )
                    })
                })
            })
    }
}

fn secret_refusal(config: &Config, i: usize, secret: &SecretRef) -> Option<String> {
    let field = format!("{FIELD}.env_from_secrets[{i}]");
    let name = match secret {
        SecretRef::Whole(name) => name,
        SecretRef::Keys(k) => &k.name,
    };
    let Some(allowed) = config.allowed_secrets.iter().find(|a| &a.name == name) else {
        return Some(format!(
            "{field}: secret {name:?} is not in allowed_secrets"
        ));
    };
    match secret {
        SecretRef::Whole(_) if !allowed.keys.is_empty() => Some(format!(
            "{field}: secret {name:?} is allowed by key only ({}); name the keys: \
             {{\"name\": {name:?}, \"keys\": [...]}}",
            allowed.keys.join(", ")
        )),
        SecretRef::Whole(_) => None,
        SecretRef::Keys(k) if k.keys.is_empty() => Some(format!(
            "{field}.keys: name at least one key, or give the secret's name alone for all of them"
        )),
        SecretRef::Keys(k) => k.keys.iter().enumerate().find_map(|(j, key)| {
            (!allowed.keys.is_empty() && !allowed.keys.contains(key)).then(|| {
                format!(
                    "{field}.keys[{j}]: key {key:?} of secret {name:?} is not in allowed_secrets"
                )
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(allow: serde_json::Value) -> Config {
        serde_json::from_value(allow).unwrap()
    }

    fn refusal(config: &Config, options: serde_json::Value) -> String {
        match Options::allowed(Some(&options), config) {
            Err(ProviderError::InvalidSpec(why)) => why,
            other => panic!("{options} was not refused: {other:?}"),
        }
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let config = config(json!({}));
        assert!(Options::allowed(None, &config).is_ok());
        assert!(Options::allowed(Some(&json!({})), &config).is_ok());
        assert_eq!(
            refusal(&config, json!({"env_from_secrets": ["offload-tokens"]})),
            "provider_options.kubernetes.env_from_secrets[0]: secret \"offload-tokens\" is not in allowed_secrets"
        );
        assert_eq!(
            refusal(&config, json!({"node_selector": {"kubernetes.io/hostname": "node-1"}})),
            "provider_options.kubernetes.node_selector[\"kubernetes.io/hostname\"]: node label \"kubernetes.io/hostname\" is not in allowed_node_selectors"
        );
        assert_eq!(
            refusal(&config, json!({"tolerations": [{"operator": "Exists"}]})),
            "provider_options.kubernetes.tolerations[0]: toleration {\"operator\":\"Exists\"} is not in allowed_tolerations"
        );
    }

    #[test]
    fn secrets_are_allowed_whole_or_by_key() {
        let config = config(json!({"allowed_secrets": [
            {"name": "db-creds", "keys": ["PASSWORD", "USER"]},
            {"name": "shared-config"},
        ]}));
        let ok = Options::allowed(
            Some(&json!({"env_from_secrets": ["shared-config", {"name": "shared-config", "keys": ["ANY"]},
                                              {"name": "db-creds", "keys": ["PASSWORD"]}]})),
            &config,
        )
        .unwrap();
        assert_eq!(ok.env_from_secrets.len(), 3);
        assert_eq!(
            refusal(&config, json!({"env_from_secrets": ["shared-config", "db-creds"]})),
            "provider_options.kubernetes.env_from_secrets[1]: secret \"db-creds\" is allowed by key only (PASSWORD, USER); name the keys: {\"name\": \"db-creds\", \"keys\": [...]}"
        );
        assert_eq!(
            refusal(&config, json!({"env_from_secrets": [{"name": "db-creds", "keys": ["USER", "ADMIN"]}]})),
            "provider_options.kubernetes.env_from_secrets[0].keys[1]: key \"ADMIN\" of secret \"db-creds\" is not in allowed_secrets"
        );
        assert!(refusal(
            &config,
            json!({"env_from_secrets": [{"name": "db-creds", "keys": []}]})
        )
        .starts_with(
            "provider_options.kubernetes.env_from_secrets[0].keys: name at least one key"
        ));
        assert!(refusal(
            &config,
            json!({"env_from_secrets": [{"name": "db-creds", "key": "USER"}]})
        )
        .starts_with("provider_options.kubernetes: "));
    }

    #[test]
    fn node_labels_and_tolerations_come_from_the_lists() {
        let toleration = json!({"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"});
        let config = config(json!({
            "allowed_node_selectors": {"cloud.google.com/gke-nodepool": ["batch", "gpu"]},
            "allowed_tolerations": [toleration],
        }));
        Options::allowed(
            Some(
                &json!({"node_selector": {"cloud.google.com/gke-nodepool": "gpu"},
                         "tolerations": [toleration]}),
            ),
            &config,
        )
        .unwrap();
        assert_eq!(
            refusal(&config, json!({"node_selector": {"cloud.google.com/gke-nodepool": "prod"}})),
            "provider_options.kubernetes.node_selector[\"cloud.google.com/gke-nodepool\"]: value \"prod\" is not in allowed_node_selectors (allowed: batch, gpu)"
        );
        let mut wider = toleration.clone();
        wider["operator"] = json!("Exists");
        wider.as_object_mut().unwrap().remove("value");
        assert!(
            refusal(&config, json!({"tolerations": [toleration, wider]}))
                .starts_with("provider_options.kubernetes.tolerations[1]: toleration ")
        );
    }
}
