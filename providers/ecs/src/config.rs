//! `[providers.NAME]` settings for `kind = "ecs"`, checked before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "EcsConfig")]
pub struct Config {
    /// The AWS region of the cluster.
    #[serde(default = "default_region")]
    pub region: String,
    /// Another endpoint than AWS's (moto in the tests, a VPC endpoint in production).
    pub endpoint_url: Option<String>,
    /// The ECS cluster the tasks run in (its name or ARN).
    pub cluster: String,
    /// The subnets of the tasks' awsvpc network interfaces: at least one.
    pub subnets: Vec<String>,
    /// The security groups of the tasks' network interfaces (the VPC's default when
    /// empty).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Give each task a public IP: needed to pull images in subnets with no NAT gateway.
    #[serde(default)]
    pub assign_public_ip: bool,
    /// The execution role, which lets ECS pull private images and write logs; needed with
    /// `log_group`.
    pub execution_role_arn: Option<String>,
    /// The role the job's code runs as.
    pub task_role_arn: Option<String>,
    /// The CloudWatch Logs group of the `awslogs` driver; it must exist. Without it jobs
    /// have no log, and so no `offload-result` either.
    pub log_group: Option<String>,
    /// The prefix of the tasks' log streams (`PREFIX/CONTAINER/TASK_ID`).
    #[serde(default = "default_prefix")]
    pub log_stream_prefix: String,
    /// The Fargate platform version (`LATEST` when unset).
    pub platform_version: Option<String>,
    /// The capacity providers: `FARGATE`, `FARGATE_SPOT`, or both with weights (Fargate
    /// Spot needs them on the cluster).
    #[serde(default = "on_demand")]
    pub capacity: Vec<CapacityShare>,
    /// `X86_64` or `ARM64` (which has no Fargate Spot).
    #[serde(default)]
    pub cpu_architecture: Arch,
    /// Tags on every task (and on the task definitions offload registers).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// ECS calls per second at most, a client-side token bucket every call waits on: ECS
    /// allows Fargate RunTask 20 a second with a burst of 100.
    #[serde(default = "default_rate")]
    pub calls_per_second: u32,
    /// The most ECS calls at once, the bucket `calls_per_second` refills.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Poll rounds a task may be missing from DescribeTasks before its job fails.
    #[serde(default = "default_missing")]
    pub missing_retries: u32,
    /// Existing task definitions a job may run (`provider_options.ecs.task_definition`),
    /// written as jobs name them: a family (any revision), `family:revision`, or an ARN
    /// whose revision may be `*`. None by default: a definition chooses the roles, images
    /// and secrets its task gets.
    #[serde(default)]
    pub allowed_task_definitions: Vec<String>,
    /// Roles a job may run as (`provider_options.ecs.task_role_arn`); none by default.
    #[serde(default)]
    pub allowed_task_roles: Vec<String>,
    /// The image the filer steps of a job with inputs or outputs run (the gateway's own
    /// image, which has `offload`); without it, such jobs are refused.
    pub filer_image: Option<String>,
    /// The filer's program in that image, before `filer stage-in` or `filer stage-out`.
    #[serde(default = "offload_provider::steps::default_filer_command")]
    pub filer_command: Vec<String>,
    /// The deployment's credentials for the object stores, which the filer's containers
    /// alone get: variable (`AWS_ACCESS_KEY_ID`, ...) → the ARN of a Secrets Manager secret
    /// or SSM parameter, read by ECS with `execution_role_arn`. Not `task_role_arn`: every
    /// container of a task has its role, the executors too.
    #[serde(default)]
    pub filer_secrets: BTreeMap<String, String>,
}

/// One capacity provider of a task's capacity provider strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityShare {
    /// `FARGATE` or `FARGATE_SPOT`.
    pub provider: CapacityProvider,
    /// Its share of the tasks beyond the bases.
    #[serde(default = "one")]
    pub weight: i32,
    /// The tasks it runs before the weights apply.
    #[serde(default)]
    pub base: i32,
}

/// A Fargate capacity provider.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CapacityProvider {
    #[serde(rename = "FARGATE")]
    Fargate,
    #[serde(rename = "FARGATE_SPOT")]
    FargateSpot,
}

impl CapacityProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityProvider::Fargate => "FARGATE",
            CapacityProvider::FargateSpot => "FARGATE_SPOT",
        }
    }
}

/// A task's CPU architecture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Arch {
    #[default]
    #[serde(rename = "X86_64")]
    X86_64,
    #[serde(rename = "ARM64")]
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "X86_64",
            Arch::Arm64 => "ARM64",
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_prefix() -> String {
    "offload".into()
}
fn on_demand() -> Vec<CapacityShare> {
    vec![CapacityShare {
        provider: CapacityProvider::Fargate,
        weight: 1,
        base: 0,
    }]
}
fn one() -> i32 {
    1
}
fn default_rate() -> u32 {
    20
}
fn default_burst() -> u32 {
    100
}
fn default_missing() -> u32 {
    3
}

impl Config {
    /// Rules serde cannot say; the message names the setting.
    pub fn check(&self) -> Result<(), String> {
        if self.subnets.is_empty() {
            return Err("subnets: Fargate tasks need at least one subnet".into());
        }
        if self.capacity.is_empty() || self.capacity.iter().all(|c| c.weight <= 0) {
            return Err("capacity: give FARGATE and/or FARGATE_SPOT with a positive weight".into());
        }
        if self.cpu_architecture == Arch::Arm64 && self.spot() {
            return Err("capacity: Fargate Spot does not run ARM64 tasks".into());
        }
        if self.calls_per_second == 0 || self.burst == 0 {
            return Err("calls_per_second and burst must be at least 1".into());
        }
        if self.log_group.is_some() && self.execution_role_arn.is_none() {
            return Err("execution_role_arn: the awslogs driver needs an execution role".into());
        }
        if !self.filer_secrets.is_empty() && self.execution_role_arn.is_none() {
            return Err("execution_role_arn: filer_secrets are read with an execution role".into());
        }
        if let Some(entry) = self
            .allowed_task_definitions
            .iter()
            .find(|entry| crate::options::definition_parts(entry).is_none())
        {
            return Err(format!(
                "allowed_task_definitions: {entry:?} is not a family, family:revision or task definition ARN"
            ));
        }
        if let Some(role) = self
            .allowed_task_roles
            .iter()
            .find(|role| !(role.starts_with("arn:") && role.contains(":role/")))
        {
            return Err(format!(
                "allowed_task_roles: {role:?} is not an IAM role ARN"
            ));
        }
        Ok(())
    }

    pub fn spot(&self) -> bool {
        self.capacity
            .iter()
            .any(|c| c.provider == CapacityProvider::FargateSpot && c.weight > 0)
    }

    /// Plain on-demand Fargate is asked for with `launchType`; anything else needs a strategy.
    pub fn on_demand_only(&self) -> bool {
        self.capacity
            .iter()
            .all(|c| c.provider == CapacityProvider::Fargate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(extra: serde_json::Value) -> Result<(), String> {
        let base = json!({"cluster": "offload", "subnets": ["subnet-1"]});
        offload_provider::conformance::config::<Config>(base, extra).check()
    }

    #[test]
    fn allow_lists_hold_task_definitions_and_roles() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/etl:*";
        let role = "arn:aws:iam::123456789012:role/etl";
        assert_eq!(
            check(
                json!({"allowed_task_definitions": ["etl", "load:3", arn], "allowed_task_roles": [role]})
            ),
            Ok(())
        );
        assert_eq!(
            check(json!({"allowed_task_definitions": ["etl:latest"]})),
            Err("allowed_task_definitions: \"etl:latest\" is not a family, family:revision or task definition ARN".into())
        );
        assert_eq!(
            check(json!({"allowed_task_roles": ["etl"]})),
            Err("allowed_task_roles: \"etl\" is not an IAM role ARN".into())
        );
    }
}
