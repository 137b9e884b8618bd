//! What a DescribeTasks answer says about a job: ECS's task lifecycle mapped onto
//! offload's phases, with the stop code and reasons turned into a job's reason. A task of
//! several steps ended with the first of them that exited non-zero, if one did.

use aws_sdk_ecs::types::{Task, TaskStopCode};
use offload_provider::{Phase, RunTimes};

use crate::taskdef::CONTAINER;

/// The container the job runs in: the one offload's first container override names (a
/// launch sends one, or for a job of several steps its last executor's first), else
/// `main`.
pub fn container(task: &Task) -> &str {
    task.overrides()
        .and_then(|o| o.container_overrides().first())
        .and_then(|c| c.name())
        .unwrap_or(CONTAINER)
}

pub fn phase(task: &Task) -> Phase {
    match task.last_status().unwrap_or("PROVISIONING") {
        "STOPPED" | "DELETED" => stopped(task, container(task)),
        // Once running, the way down (DEACTIVATING, STOPPING, DEPROVISIONING) is still running
        // as far as the job is concerned: the outcome comes with STOPPED.
        "RUNNING" | "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => Phase::Running,
        // PROVISIONING, PENDING, ACTIVATING.
        _ => Phase::Starting { reason: None },
    }
}

/// When a stopped task ran, as ECS reports it (`startedAt` to `stoppedAt`): what Fargate
/// bills, give or take its image pull.
pub fn ran(task: &Task) -> Option<RunTimes> {
    if !matches!(task.last_status(), Some("STOPPED" | "DELETED")) {
        return None;
    }
    let time = |t: Option<&aws_sdk_ecs::primitives::DateTime>| {
        t.and_then(|t| std::time::SystemTime::try_from(*t).ok())
    };
    RunTimes::of(time(task.started_at()), time(task.stopped_at()))
}

fn stopped(task: &Task, container: &str) -> Phase {
    let containers = task.containers();
    let main = containers
        .iter()
        .find(|c| c.name() == Some(container))
        .or(containers.first());
    let exit_code = main.and_then(|c| c.exit_code());
    let nonempty = |s: Option<&str>| s.filter(|s| !s.trim().is_empty()).map(str::to_string);
    let why = nonempty(main.and_then(|c| c.reason())).or(nonempty(task.stopped_reason()));
    let because = |prefix: &str| {
        Some(match &why {
            Some(why) => format!("{prefix}: {why}"),
            None => prefix.to_string(),
        })
    };
    let failed = |reason| Phase::Exited {
        exit_code: None,
        reason,
    };
    let stopped_from_outside = matches!(
        task.stop_code(),
        Some(TaskStopCode::SpotInterruption | TaskStopCode::UserInitiated)
    );
    if let Some((role, name, code)) = crate::steps::failed(task).filter(|_| !stopped_from_outside) {
        return match role.is_filer() {
            // What the filer said is in its log, which the provider reads for the reason.
            true => failed(Some(offload_provider::steps::filer_failure(
                role,
                &format!("its container {name} exited with code {code}"),
            ))),
            false => Phase::Exited {
                exit_code: Some(code),
                reason: Some(format!("exited with code {code}")),
            },
        };
    }
    match task.stop_code() {
        Some(TaskStopCode::TaskFailedToStart) => failed(because("failed to start")),
        // AWS took the Spot capacity back: not the job's doing, so a new attempt follows.
        Some(TaskStopCode::SpotInterruption) => Phase::Preempted {
            reason: because("Fargate Spot interruption").unwrap_or_default(),
        },
        Some(TaskStopCode::UserInitiated) => failed(because("stopped by StopTask")),
        Some(TaskStopCode::ServiceSchedulerInitiated) | Some(TaskStopCode::TerminationNotice) => {
            failed(because("stopped by ECS"))
        }
        // EssentialContainerExited, or no stop code at all.
        _ => match exit_code {
            _ if why.as_deref().is_some_and(|w| w.contains("OutOfMemory")) => Phase::Exited {
                exit_code,
                reason: because("OOMKilled"),
            },
            Some(0) => Phase::Exited {
                exit_code,
                reason: None,
            },
            Some(code) => Phase::Exited {
                exit_code,
                reason: because(&format!("exited with code {code}")),
            },
            None => failed(because("stopped without an exit code")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Container, ContainerOverride, TaskOverride};

    fn task(status: &str, stop: Option<TaskStopCode>, exit: Option<i32>, reason: &str) -> Task {
        Task::builder()
            .last_status(status)
            .set_stop_code(stop)
            .stopped_reason(reason)
            .containers(
                Container::builder()
                    .name("main")
                    .set_exit_code(exit)
                    .build(),
            )
            .build()
    }

    #[test]
    fn lifecycle_states_map_to_phases() {
        for s in ["PROVISIONING", "PENDING", "ACTIVATING"] {
            assert_eq!(
                phase(&task(s, None, None, "")),
                Phase::Starting { reason: None }
            );
        }
        for s in ["RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"] {
            assert_eq!(phase(&task(s, None, None, "")), Phase::Running);
        }
    }

    #[test]
    fn stopped_tasks_carry_exit_code_and_reason() {
        let exited = TaskStopCode::EssentialContainerExited;
        let ok = task(
            "STOPPED",
            Some(exited.clone()),
            Some(0),
            "Essential container in task exited",
        );
        assert_eq!(
            phase(&ok),
            Phase::Exited {
                exit_code: Some(0),
                reason: None
            }
        );
        let bad = task(
            "STOPPED",
            Some(exited.clone()),
            Some(3),
            "Essential container in task exited",
        );
        assert_eq!(
            phase(&bad),
            Phase::Exited {
                exit_code: Some(3),
                reason: Some("exited with code 3: Essential container in task exited".into())
            }
        );
        let pull = task(
            "STOPPED",
            Some(TaskStopCode::TaskFailedToStart),
            None,
            "CannotPullContainerError: pull image manifest has been retried 5 time(s)",
        );
        assert_eq!(
            phase(&pull),
            Phase::Exited {
                exit_code: None,
                reason: Some("failed to start: CannotPullContainerError: pull image manifest has been retried 5 time(s)".into())
            }
        );
        let spot = task(
            "STOPPED",
            Some(TaskStopCode::SpotInterruption),
            Some(0),
            "Your Spot Task was interrupted.",
        );
        assert_eq!(
            phase(&spot),
            Phase::Preempted {
                reason: "Fargate Spot interruption: Your Spot Task was interrupted.".into()
            }
        );
        let mut oom = task("STOPPED", Some(exited), Some(137), "");
        oom.containers = Some(vec![Container::builder()
            .name("main")
            .exit_code(137)
            .reason("OutOfMemoryError: Container killed due to memory usage")
            .build()]);
        assert!(
            matches!(phase(&oom), Phase::Exited { exit_code: Some(137), reason: Some(r) } if r.starts_with("OOMKilled"))
        );
    }

    /// A task of steps ends with its first failed step, unless its end came from outside
    /// (a Spot interruption, a StopTask), which outranks it.
    #[test]
    fn a_failed_step_is_the_outcome_unless_the_task_was_stopped_from_outside() {
        let steps = |stop: Option<TaskStopCode>| {
            Task::builder()
                .last_status("STOPPED")
                .set_stop_code(stop)
                .stopped_reason("taken back")
                .set_containers(Some(
                    [("stage-in", 0), ("exec-0", 3)]
                        .map(|(n, c)| Container::builder().name(n).exit_code(c).build())
                        .to_vec(),
                ))
                .build()
        };
        let failed = Phase::Exited {
            exit_code: Some(3),
            reason: Some("exited with code 3".into()),
        };
        assert_eq!(phase(&steps(Some(TaskStopCode::EssentialContainerExited))), failed);
        assert_eq!(phase(&steps(None)), failed);
        assert!(matches!(
            phase(&steps(Some(TaskStopCode::SpotInterruption))),
            Phase::Preempted { .. }
        ));
        assert!(matches!(
            phase(&steps(Some(TaskStopCode::UserInitiated))),
            Phase::Exited { exit_code: None, reason: Some(r) } if r.starts_with("stopped by StopTask")
        ));
    }

    #[test]
    fn the_exit_code_is_the_named_containers() {
        let mut two = task(
            "STOPPED",
            Some(TaskStopCode::EssentialContainerExited),
            None,
            "Essential container in task exited",
        );
        two.containers = Some(vec![
            Container::builder().name("sidecar").exit_code(0).build(),
            Container::builder().name("app").exit_code(4).build(),
        ]);
        assert_eq!(container(&two), "main");
        two.overrides = Some(
            TaskOverride::builder()
                .container_overrides(ContainerOverride::builder().name("app").build())
                .build(),
        );
        assert_eq!(container(&two), "app");
        assert!(
            matches!(phase(&two), Phase::Exited { exit_code: Some(4), reason: Some(r) } if r.starts_with("exited with code 4"))
        );
    }
}
