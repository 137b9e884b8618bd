//! Workloads of several steps as one Fargate task: a container per step, in order, each
//! but the first started only once the one before it has exited 0 (`dependsOn` with
//! condition `SUCCESS`, which only a container that is not essential may be depended on
//! for), and only the last essential, so that the task ends when it does, or when a step
//! before it fails and the rest can never start. Every container mounts the task's volumes
//! (with no host: Fargate's bind mounts on the task's ephemeral storage) at the shared
//! folders, and has no memory of its own: the steps run one at a time, each with the whole
//! task's.
//!
//! Containers are named by role, `stage-in`, `exec-0` to `exec-N`, `stage-out`, which is
//! how a DescribeTasks answer tells whose step failed. The job is followed (its log, its
//! exit code when all went well) by its last executor, whose container override comes
//! first ([`crate::status::container`]). The filer's containers run `filer_image` with the
//! deployment's credentials from `filer_secrets` (ECS `secrets`, on them alone; the task
//! role would reach every container, the executors' too).
//!
//! What differs between tasks of one shape (commands, environments, the filer's plan) goes
//! in RunTask's container overrides, so that one task definition serves every task of that
//! shape (images, working directories, volumes); ECS takes at most 8,192 characters of
//! overrides, and a task whose steps come to more is refused, naming `steps`.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride,
    KeyValuePair, MountPoint, Secret, Task, Volume,
};
use offload_provider::steps::{run, Run, Workdir, FILER_ROOT_ENV};
use offload_provider::{ProviderError, Result, Step, StepPlan, StepRole};

use crate::config::Config;

/// The most characters of overrides RunTask takes.
pub const MAX_OVERRIDES: usize = 8192;

/// Why this provider cannot run `plan`, naming the field.
pub fn refusal(config: &Config, plan: &StepPlan) -> Option<String> {
    if plan.steps.iter().any(|s| s.role.is_filer()) && config.filer_image.is_none() {
        return Some(
            "steps: inputs and outputs need the filer, and this ecs provider has no filer_image"
                .into(),
        );
    }
    None
}

/// Step `i`'s container name.
pub fn name(plan: &StepPlan, i: usize) -> String {
    match plan.steps[i].role {
        StepRole::StageIn => "stage-in".into(),
        StepRole::StageOut => "stage-out".into(),
        StepRole::Executor => {
            let before = plan.steps[..i].iter().filter(|s| !s.role.is_filer()).count();
            format!("exec-{before}")
        }
    }
}

/// The role and place in the order of a container offload named for a step.
fn place(name: &str) -> Option<(StepRole, usize)> {
    match name {
        "stage-in" => Some((StepRole::StageIn, 0)),
        "stage-out" => Some((StepRole::StageOut, usize::MAX)),
        _ => {
            let n: usize = name.strip_prefix("exec-")?.parse().ok()?;
            Some((StepRole::Executor, n + 1))
        }
    }
}

/// The container the job is followed by: its last executor.
pub fn followed(plan: &StepPlan) -> String {
    let last = (0..plan.steps.len())
        .rev()
        .find(|i| !plan.steps[*i].role.is_filer())
        .unwrap_or(plan.steps.len() - 1);
    name(plan, last)
}

/// What the task definition's family is made from beyond the image and size: each step's
/// role, image and working directory, the volumes, the filer's image and secrets.
pub fn shape(config: &Config, plan: &StepPlan) -> Vec<String> {
    let steps = plan.steps.iter().map(|s| {
        let image = match s.role.is_filer() {
            true => config.filer_image.as_deref().unwrap_or_default(),
            false => &s.image,
        };
        format!("{:?} {image} {}", s.role, s.workdir.as_deref().unwrap_or(""))
    });
    let secrets = config.filer_secrets.iter().map(|(k, v)| format!("{k}={v}"));
    steps
        .chain(plan.volumes.iter().cloned())
        .chain(secrets)
        .collect()
}

/// The task definition's volumes and containers for `plan`; `container` makes a container
/// of a name and an image with the provider's log settings.
pub fn definition(
    config: &Config,
    plan: &StepPlan,
    container: impl Fn(&str, &str) -> aws_sdk_ecs::types::builders::ContainerDefinitionBuilder,
) -> (Vec<Volume>, Vec<ContainerDefinition>) {
    let volumes = (0..plan.volumes.len())
        .map(|k| Volume::builder().name(format!("steps-{k}")).build())
        .collect();
    let mounts: Vec<MountPoint> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(k, path)| {
            MountPoint::builder()
                .source_volume(format!("steps-{k}"))
                .container_path(path)
                .read_only(false)
                .build()
        })
        .collect();
    let last = plan.steps.len() - 1;
    let containers = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let image = match step.role.is_filer() {
                true => config.filer_image.clone().unwrap_or_default(),
                false => step.image.clone(),
            };
            let mut c = container(&name(plan, i), &image)
                .essential(i == last)
                .set_working_directory(step.workdir.clone())
                .set_mount_points(Some(mounts.clone()));
            if i > 0 {
                c = c.depends_on(
                    ContainerDependency::builder()
                        .container_name(name(plan, i - 1))
                        .condition(ContainerCondition::Success)
                        .build()
                        .expect("a dependency has its name and condition"),
                );
            }
            if step.role.is_filer() {
                let secrets = config.filer_secrets.iter().map(|(var, arn)| {
                    Secret::builder()
                        .name(var)
                        .value_from(arn)
                        .build()
                        .expect("a secret has its name and source")
                });
                c = c.set_secrets(Some(secrets.collect()));
            }
            c.build()
        })
        .collect();
    (volumes, containers)
}

/// One container's override: its argv and environment.
fn step_override(
    config: &Config,
    name: String,
    step: &Step,
    secret_env: &BTreeMap<String, String>,
) -> ContainerOverride {
    let pair = |(k, v): (&String, &String)| KeyValuePair::builder().name(k).value(v).build();
    let (command, env): (Vec<String>, Vec<KeyValuePair>) = match step.role.is_filer() {
        true => (
            config.filer_command.iter().chain(&step.command).cloned().collect(),
            step.env
                .iter()
                .map(pair)
                .chain([KeyValuePair::builder().name(FILER_ROOT_ENV).value("/").build()])
                .collect(),
        ),
        false => {
            let Run { command, env: extra } = run(step, Workdir::Runtime);
            let env = step
                .env
                .iter()
                .chain(secret_env)
                .map(pair)
                .chain(extra.iter().map(|(k, v)| pair((k, v))))
                .collect();
            (command, env)
        }
    };
    ContainerOverride::builder()
        .name(name)
        .set_command(Some(command))
        .set_environment(Some(env))
        .build()
}

/// The container overrides of a task of `plan`, the followed container's first, or why
/// they are too long for RunTask (naming `steps`). `secret_env` is the job's secret
/// environment, which the executors get and the filer does not.
pub fn overrides(
    config: &Config,
    plan: &StepPlan,
    secret_env: &BTreeMap<String, String>,
) -> Result<Vec<ContainerOverride>> {
    let followed = followed(plan);
    let mut all: Vec<ContainerOverride> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| step_override(config, name(plan, i), step, secret_env))
        .collect();
    all.sort_by_key(|o| o.name() != Some(followed.as_str()));
    let length = characters(&all);
    if length > MAX_OVERRIDES {
        return Err(ProviderError::InvalidSpec(format!(
            "steps: the commands, environments and inline inputs of this task's steps come to \
             {length} characters of ECS overrides, and RunTask takes at most {MAX_OVERRIDES}"
        )));
    }
    Ok(all)
}

/// The characters of the overrides as RunTask's JSON carries them (with the task's size,
/// which a few dozen more cover).
fn characters(overrides: &[ContainerOverride]) -> usize {
    let json: Vec<serde_json::Value> = overrides
        .iter()
        .map(|o| {
            let env: Vec<_> = o
                .environment()
                .iter()
                .map(|p| serde_json::json!({"name": p.name(), "value": p.value()}))
                .collect();
            serde_json::json!({"name": o.name(), "command": o.command(), "environment": env})
        })
        .collect();
    serde_json::json!({"containerOverrides": json, "cpu": "16384", "memory": "122880"})
        .to_string()
        .len()
}

/// The containers of a task of steps, by their place in the order; none for a task of
/// one container.
pub fn in_order(task: &Task) -> Vec<(StepRole, &aws_sdk_ecs::types::Container)> {
    let mut steps: Vec<_> = task
        .containers()
        .iter()
        .filter_map(|c| {
            let (role, at) = place(c.name()?)?;
            Some((at, role, c))
        })
        .collect();
    steps.sort_by_key(|(at, _, _)| *at);
    steps.into_iter().map(|(_, role, c)| (role, c)).collect()
}

/// The first step of a stopped task that exited non-zero: its role, name and code.
pub fn failed(task: &Task) -> Option<(StepRole, &str, i32)> {
    in_order(task).into_iter().find_map(|(role, c)| {
        let code = c.exit_code().filter(|code| *code != 0)?;
        Some((role, c.name()?, code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Container;

    use offload_provider::conformance::step;

    fn plan() -> StepPlan {
        StepPlan {
            steps: vec![
                step(StepRole::StageIn, "", &["filer", "stage-in"]),
                step(StepRole::Executor, "alpine", &["sort", "/data/in"]),
                step(StepRole::Executor, "python:3", &["python", "-V"]),
                step(StepRole::StageOut, "", &["filer", "stage-out"]),
            ],
            volumes: vec!["/data".into()],
        }
    }

    #[test]
    fn containers_are_named_by_role_and_read_back_in_order() {
        let plan = plan();
        let names: Vec<_> = (0..4).map(|i| name(&plan, i)).collect();
        assert_eq!(names, ["stage-in", "exec-0", "exec-1", "stage-out"]);
        assert_eq!(followed(&plan), "exec-1");
        let task = Task::builder()
            .set_containers(Some(
                [("stage-out", None), ("exec-1", Some(2)), ("stage-in", Some(0)), ("exec-0", Some(0))]
                    .into_iter()
                    .map(|(n, code)| Container::builder().name(n).set_exit_code(code).build())
                    .collect(),
            ))
            .build();
        let order: Vec<_> = in_order(&task).iter().map(|(_, c)| c.name().unwrap()).collect();
        assert_eq!(order, ["stage-in", "exec-0", "exec-1", "stage-out"]);
        assert_eq!(failed(&task), Some((StepRole::Executor, "exec-1", 2)));
        assert!(in_order(&Task::builder().containers(Container::builder().name("main").build()).build()).is_empty());
    }

    #[test]
    fn overrides_too_long_for_run_task_are_refused_naming_steps() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "cluster": "c", "subnets": ["s"], "filer_image": "offload:1"
        }))
        .unwrap();
        let mut plan = plan();
        let all = overrides(&config, &plan, &BTreeMap::new()).unwrap();
        assert_eq!(all[0].name(), Some("exec-1"));
        assert_eq!(all[1].command(), ["offload", "filer", "stage-in"]);
        plan.steps[1].env.insert("BIG".into(), "x".repeat(MAX_OVERRIDES));
        let Err(ProviderError::InvalidSpec(why)) = overrides(&config, &plan, &BTreeMap::new()) else {
            panic!("overrides past ECS's limit were taken");
        };
        assert!(why.starts_with("steps: ") && why.contains("8192"), "{why}");
    }
}
