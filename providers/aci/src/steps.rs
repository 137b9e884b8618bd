//! Workloads of several steps as one container group: every step but the last is an init
//! container, in order (ACI starts each once the one before it has exited 0, and the
//! group's containers once all have), and the last is the group's `main` container; every
//! one mounts the same `emptyDir` volumes at the task's shared folders. ACI's containers
//! have no working directory of their own, so an executor with a `workdir` runs through
//! the shared `/bin/sh` wrapper, which goes there ([`offload_provider::steps`]). The filer's
//! steps run `filer_image` with the deployment's credentials from `filer_secrets` (secure
//! variables on them alone; the group's managed identity would reach every container). The
//! group's tag `offload-steps` keeps the steps' roles, so that a failed group says whose
//! step failed.

use offload_provider::steps::{roles_of, run, Run, Workdir, FILER_ROOT_ENV};
use offload_provider::{Launch, StepPlan, StepRole};
use serde_json::{json, Value};

use crate::config::Config;
use crate::group::CONTAINER;

/// The group tag with the steps' roles, comma-separated.
pub const ROLES_TAG: &str = "offload-steps";

/// Why this provider cannot run `plan`, naming the field.
pub fn refusal(config: &Config, plan: &StepPlan) -> Option<String> {
    (plan.steps.iter().any(|s| s.role.is_filer()) && config.filer_image.is_none()).then(|| {
        "steps: inputs and outputs need the filer, and this aci provider has no filer_image".into()
    })
}

/// Step `i`'s container name: `step-i`, the last `main`.
fn name(count: usize, i: usize) -> String {
    match i + 1 == count {
        true => CONTAINER.to_string(),
        false => format!("step-{i}"),
    }
}

/// The roles of a group of steps, from its tag; none for a group of one container.
fn roles(group: &Value) -> Vec<StepRole> {
    group["tags"][ROLES_TAG].as_str().map(roles_of).unwrap_or_default()
}

/// The group's init containers, its main container (without resources, which the caller
/// adds) and its volumes, as ARM's JSON.
pub fn containers(config: &Config, launch: &Launch, plan: &StepPlan) -> (Vec<Value>, Value, Vec<Value>) {
    let volumes = (0..plan.volumes.len())
        .map(|k| json!({"name": format!("steps-{k}"), "emptyDir": {}}))
        .collect();
    let mounts: Vec<Value> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(k, path)| json!({"name": format!("steps-{k}"), "mountPath": path}))
        .collect();
    let plain = |(k, v): (&String, &String)| json!({"name": k, "value": v});
    let secure = |(k, v): (&String, &String)| json!({"name": k, "secureValue": v});
    let mut all: Vec<Value> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let (image, command, env): (&str, Vec<String>, Vec<Value>) = match step.role.is_filer() {
                true => (
                    config.filer_image.as_deref().unwrap_or_default(),
                    config.filer_command.iter().chain(&step.command).cloned().collect(),
                    step.env
                        .iter()
                        .map(plain)
                        .chain([json!({"name": FILER_ROOT_ENV, "value": "/"})])
                        .chain(config.filer_secrets.iter().map(|(k, v)| secure((k, &v.0))))
                        .collect(),
                ),
                false => {
                    let Run { command, env: extra } = run(step, Workdir::Shell);
                    let env = step
                        .env
                        .iter()
                        .map(plain)
                        .chain(extra.iter().map(|(k, v)| plain((k, v))))
                        .chain(launch.secret_env.iter().map(secure))
                        .collect();
                    (&step.image, command, env)
                }
            };
            json!({"name": name(plan.steps.len(), i), "properties": {
                "image": image,
                "command": command,
                "environmentVariables": env,
                "volumeMounts": mounts,
            }})
        })
        .collect();
    let main = all.pop().expect("a plan has steps");
    (all, main, volumes)
}

/// Each step's container properties in a GET's answer, in order, with its role.
fn in_order(group: &Value) -> Vec<(StepRole, &Value)> {
    let roles = roles(group);
    let props = &group["properties"];
    let all: Vec<&Value> = props["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(props["containers"].as_array().into_iter().flatten())
        .collect();
    roles
        .iter()
        .enumerate()
        .filter_map(|(i, role)| {
            let wanted = name(roles.len(), i);
            let found = all.iter().find(|c| c["name"] == wanted.as_str())?;
            Some((*role, &found["properties"]))
        })
        .collect()
}

/// A step's current state in the instance view.
fn state(container: &Value) -> &Value {
    &container["instanceView"]["currentState"]
}

/// The first step of a group that exited non-zero: its role, container name and code.
pub fn failed(group: &Value) -> Option<(StepRole, String, i32)> {
    let count = roles(group).len();
    in_order(group).into_iter().enumerate().find_map(|(i, (role, c))| {
        let state = state(c);
        let code = state["exitCode"].as_i64().filter(|code| *code != 0)?;
        (state["state"] == "Terminated").then(|| (role, name(count, i), code as i32))
    })
}

/// How one step went so far, as a GET tells.
pub struct Seen<'a> {
    pub role: StepRole,
    pub container: String,
    /// Once it ended.
    pub exit_code: Option<i32>,
    pub started: Option<&'a str>,
    pub finished: Option<&'a str>,
}

/// How each step went so far, in order.
pub fn runs(group: &Value) -> Vec<Seen<'_>> {
    let count = roles(group).len();
    in_order(group)
        .into_iter()
        .enumerate()
        .map(|(i, (role, c))| {
            let state = state(c);
            let ended = state["state"] == "Terminated";
            Seen {
                role,
                container: name(count, i),
                exit_code: state["exitCode"].as_i64().filter(|_| ended).map(|c| c as i32),
                started: state["startTime"].as_str(),
                finished: state["finishTime"].as_str().filter(|_| ended),
            }
        })
        .collect()
}
