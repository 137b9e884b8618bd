//! `provider_options.ecs`: what a job may choose for its task, within what the operator
//! allows.
//!
//! A task definition carries the roles its task runs as and pulls with, its containers and
//! their secrets; a task role is the AWS identity the job's code gets. The gateway runs
//! tasks on tenants' behalf with its own rights (RunTask, iam:PassRole), so a tenant's
//! choice of either is refused unless the provider's config lists it
//! (`allowed_task_definitions`, `allowed_task_roles`, both empty by default), with a
//! message naming the exact field. `validate` runs this at submit, and `launch` again.

use offload_provider::{ProviderError, Result};
use serde::Deserialize;

use crate::config::Config;
use crate::taskdef::CONTAINER;

const FIELD: &str = "provider_options.ecs";

/// `provider_options.ecs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// An existing task definition to run instead of the image (a family, `family:revision`
    /// or ARN): one of `allowed_task_definitions`.
    pub task_definition: Option<String>,
    /// Its container that runs the job: overridden (command, env), and followed (exit
    /// code, log stream). Only with `task_definition`; `main` by default.
    pub container: Option<String>,
    /// The role the job's code runs as instead of the provider's `task_role_arn`: one of
    /// `allowed_task_roles`.
    pub task_role_arn: Option<String>,
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

    /// The container the job runs in.
    pub fn container(&self) -> &str {
        self.container.as_deref().unwrap_or(CONTAINER)
    }

    fn refusal(&self, config: &Config) -> Option<String> {
        if let Some(name) = self
            .container
            .as_ref()
            .filter(|name| !is_container_name(name))
        {
            return Some(format!(
                "{FIELD}.container: {name:?} is not a container name (1 to 255 letters, digits, - and _)"
            ));
        }
        if let Some(name) = &self.task_definition {
            if !config
                .allowed_task_definitions
                .iter()
                .any(|entry| definition_allowed(entry, name))
            {
                return Some(format!(
                    "{FIELD}.task_definition: {name:?} is not in allowed_task_definitions"
                ));
            }
        } else if self.container.is_some() {
            return Some(format!(
                "{FIELD}.container: only with task_definition (offload's own task definitions \
                 have one container, {CONTAINER})"
            ));
        }
        match &self.task_role_arn {
            Some(role) if !config.allowed_task_roles.contains(role) => Some(format!(
                "{FIELD}.task_role_arn: {role:?} is not in allowed_task_roles"
            )),
            _ => None,
        }
    }
}

/// ECS's rule for container names.
fn is_container_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.chars().all(is_name_char)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A task definition's name split into what ECS reads from it: the ARN up to the family
/// (empty for a bare family), the family, and the revision if given. `None` when it is
/// none of a family (letters, digits, `-`, `_`), `family:revision` or a task definition ARN.
pub fn definition_parts(name: &str) -> Option<(&str, &str, Option<&str>)> {
    const MARK: &str = ":task-definition/";
    let (arn, rest) = match name.find(MARK) {
        Some(at) if name.starts_with("arn:") => name.split_at(at + MARK.len()),
        _ if name.starts_with("arn:") => return None,
        _ => ("", name),
    };
    let (family, revision) = match rest.split_once(':') {
        Some((family, revision)) => (family, Some(revision)),
        None => (rest, None),
    };
    let family_ok = (1..=255).contains(&family.len()) && family.chars().all(is_name_char);
    let revision_ok = revision
        .is_none_or(|r| r == "*" || (!r.is_empty() && r.chars().all(|c| c.is_ascii_digit())));
    (family_ok && revision_ok).then_some((arn, family, revision))
}

/// Whether an `allowed_task_definitions` entry allows the task definition a job names. An
/// entry is written as the job must write it: a family (`etl`, or `etl:*`) allows `etl`
/// and `etl:N`; `etl:3` allows only itself; an ARN entry (its revision may be `*`) allows
/// ARNs of that account, region and family.
fn definition_allowed(entry: &str, wanted: &str) -> bool {
    let (Some(entry), Some(wanted)) = (definition_parts(entry), definition_parts(wanted)) else {
        return false;
    };
    let revision_allowed = match entry.2 {
        None | Some("*") => wanted.2 != Some("*"),
        Some(revision) => wanted.2 == Some(revision),
    };
    entry.0 == wanted.0 && entry.1 == wanted.1 && revision_allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_allow_what_they_name() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/report";
        let cases = [
            ("etl", "etl", true),
            ("etl", "etl:4", true),
            ("etl:*", "etl:4", true),
            ("etl", "etl:*", false),
            ("etl", "etl2", false),
            ("etl", "etl2:1", false),
            ("etl:3", "etl:3", true),
            ("etl:3", "etl:4", false),
            ("etl:3", "etl", false),
            ("etl", &format!("{arn}:4"), false),
            (&format!("{arn}:*"), &format!("{arn}:4"), true),
            (&format!("{arn}:*"), "report:4", false),
            (&format!("{arn}:4"), &format!("{arn}:5"), false),
            ("etl", "arn:aws:ecs:us-east-1:123456789012:task/etl", false),
        ];
        for (entry, wanted, allowed) in cases {
            assert_eq!(
                definition_allowed(entry, wanted),
                allowed,
                "{entry} / {wanted}"
            );
        }
    }

    #[test]
    fn malformed_names_have_no_parts() {
        for name in ["", ":3", "etl:", "etl:x", "e/tl", "arn:aws:iam::1:role/etl"] {
            assert_eq!(definition_parts(name), None, "{name}");
        }
    }
}
