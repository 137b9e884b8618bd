//! Workloads of several steps as one pod: every step but the last is an init container, in
//! order (Kubernetes starts each once the one before it has exited 0), and the last is the
//! pod's `main` container; every container mounts the same emptyDir volumes at the task's
//! shared folders. The filer's steps run `filer_image` with the deployment's credentials
//! from `filer_secret` (an `envFrom` on them alone, not the executors); executors that need
//! a shell get one as on every runtime ([`offload_provider::steps`]). The pod's annotation `offload.dev/steps` keeps the steps' roles,
//! so that a failed pod says whose step failed: a filer's is no exit code of the job's, and
//! its reason is the filer's own line (its container's termination message, taken from its
//! log's end on error).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, Pod, SecretEnvSource, Volume,
    VolumeMount,
};
use offload_provider::steps::{
    filer_failure, roles_of, run, said_exit, Run, Workdir, FILER_ROOT_ENV,
};
use offload_provider::{Phase, StepPlan, StepRole, StepRun};

use crate::config::Config;
use crate::pod::CONTAINER;

/// The pod annotation with the steps' roles, comma-separated.
pub const ROLES: &str = "offload.dev/steps";

/// Why this provider cannot run `plan`.
pub fn refusal(config: &Config, plan: &StepPlan) -> Option<String> {
    if plan.steps.iter().any(|s| s.role.is_filer()) && config.filer_image.is_none() {
        return Some(
            "steps: inputs and outputs need the filer, and this kubernetes provider has no filer_image".into(),
        );
    }
    None
}

/// The name of step `i`'s container.
pub fn container_name(plan: &StepPlan, i: usize) -> String {
    match i + 1 == plan.steps.len() {
        true => CONTAINER.to_string(),
        false => format!("step-{i}"),
    }
}

/// The pod's containers for `plan`: the init containers and the main one. `base` is the
/// container a one-step workload would have (its resources and the job's env and secrets),
/// which each executor starts from.
pub fn containers(
    config: &Config,
    plan: &StepPlan,
    base: &Container,
) -> (Vec<Container>, Container, Vec<Volume>) {
    let volumes: Vec<Volume> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(i, _)| Volume {
            name: format!("steps-{i}"),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        })
        .collect();
    let mounts: Vec<VolumeMount> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(i, path)| VolumeMount {
            name: format!("steps-{i}"),
            mount_path: path.clone(),
            ..VolumeMount::default()
        })
        .collect();
    let mut all: Vec<Container> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let env_of = |vars: &BTreeMap<String, String>| -> Vec<EnvVar> {
                vars.iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        ..EnvVar::default()
                    })
                    .collect()
            };
            let mut c = match step.role.is_filer() {
                true => Container {
                    image: config.filer_image.clone(),
                    command: Some(
                        config
                            .filer_command
                            .iter()
                            .chain(&step.command)
                            .cloned()
                            .collect(),
                    ),
                    env: Some(
                        env_of(&step.env)
                            .into_iter()
                            .chain([EnvVar {
                                name: FILER_ROOT_ENV.into(),
                                value: Some("/".into()),
                                ..EnvVar::default()
                            }])
                            .collect(),
                    ),
                    env_from: config.filer_secret.as_ref().map(|name| {
                        vec![EnvFromSource {
                            secret_ref: Some(SecretEnvSource {
                                name: name.clone(),
                                optional: Some(false),
                            }),
                            ..EnvFromSource::default()
                        }]
                    }),
                    resources: base.resources.clone(),
                    termination_message_policy: Some("FallbackToLogsOnError".into()),
                    ..Container::default()
                },
                false => {
                    // The job's env and secrets (as the one container would have them),
                    // then the executor's own.
                    let mut env: Vec<EnvVar> = base.env.clone().unwrap_or_default();
                    env.retain(|e| !step.env.contains_key(&e.name));
                    env.extend(env_of(&step.env));
                    let Run { command, env: extra } = run(step, Workdir::Runtime);
                    env.extend(extra.into_iter().map(|(name, value)| EnvVar {
                        name,
                        value: Some(value),
                        ..EnvVar::default()
                    }));
                    Container {
                        image: Some(step.image.clone()),
                        command: Some(command),
                        working_dir: step.workdir.clone(),
                        env: Some(env),
                        env_from: base.env_from.clone(),
                        ..base.clone()
                    }
                }
            };
            c.name = container_name(plan, i);
            c.args = None;
            c.volume_mounts = (!mounts.is_empty()).then(|| mounts.clone());
            c
        })
        .collect();
    let main = all.pop().expect("a plan has steps");
    (all, main, volumes)
}

/// The roles of a steps pod, from its annotation; none for a pod of one container.
pub fn roles(pod: &Pod) -> Vec<StepRole> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLES))
        .map(|text| roles_of(text))
        .unwrap_or_default()
}

/// Each step's container status, in order (init containers, then `main`).
fn statuses(pod: &Pod) -> Vec<Option<k8s_openapi::api::core::v1::ContainerStatus>> {
    let roles = roles(pod);
    let status = pod.status.clone().unwrap_or_default();
    let init = status.init_container_statuses.unwrap_or_default();
    let main = status.container_statuses.unwrap_or_default();
    (0..roles.len())
        .map(|i| {
            let name = match i + 1 == roles.len() {
                true => CONTAINER.to_string(),
                false => format!("step-{i}"),
            };
            init.iter().chain(&main).find(|c| c.name == name).cloned()
        })
        .collect()
}

/// A failed steps pod's phase: whose step failed, and why.
pub fn failed(pod: &Pod) -> Option<Phase> {
    let roles = roles(pod);
    if roles.is_empty() {
        return None;
    }
    for (role, status) in roles.iter().zip(statuses(pod)) {
        let Some(done) = status
            .and_then(|s| s.state)
            .and_then(|s| s.terminated)
            .filter(|t| t.exit_code != 0)
        else {
            continue;
        };
        return Some(match role {
            StepRole::Executor => Phase::Exited {
                exit_code: Some(done.exit_code),
                reason: Some(format!("exited with code {}", done.exit_code)),
            },
            filer => Phase::Exited {
                exit_code: None,
                reason: Some(filer_failure(*filer, &done.message.unwrap_or_default())),
            },
        });
    }
    None
}

/// How each step went, from the pod's statuses; `log` reads a container's log.
pub async fn runs<F, Fut>(pod: &Pod, tail: usize, log: F) -> Vec<StepRun>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let roles = roles(pod);
    let mut runs = vec![];
    for (i, (role, status)) in roles.iter().zip(statuses(pod)).enumerate() {
        let done = status.and_then(|s| s.state).and_then(|s| s.terminated);
        let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| std::time::SystemTime::from(t.0))
        };
        let name = match i + 1 == roles.len() {
            true => CONTAINER.to_string(),
            false => format!("step-{i}"),
        };
        let text = match &done {
            Some(_) => log(name).await,
            None => String::new(),
        };
        // A wrapped executor that ignores errors says its own code.
        let said = said_exit(&text);
        runs.push(StepRun {
            role: *role,
            exit_code: said.or(done.as_ref().map(|d| d.exit_code)),
            started: time(done.as_ref().and_then(|d| d.started_at.as_ref())),
            finished: time(done.as_ref().and_then(|d| d.finished_at.as_ref())),
            log: offload_provider::tail_str(&text, tail).to_string(),
        });
    }
    runs
}
