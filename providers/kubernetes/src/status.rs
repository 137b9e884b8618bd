//! What a pod's status says about its job: phase and container states mapped onto
//! offload's phases, with Kubernetes' reasons kept as the job's reason. A pod stuck on
//! an error that will not fix itself fails after the pending limit; a pod that is merely
//! unschedulable past it is "no capacity", which the engine may move elsewhere.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use offload_provider::{Phase, RunTimes};

use crate::pod::CONTAINER;

/// Waiting reasons that will not fix themselves (or not soon).
const STUCK: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

pub fn phase(pod: &Pod, now: DateTime<Utc>, pending_timeout: chrono::Duration) -> Phase {
    let status = pod.status.clone().unwrap_or_default();
    let main = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == CONTAINER);
    let state = main
        .as_ref()
        .and_then(|c| c.state.clone())
        .unwrap_or_default();
    match status.phase.as_deref() {
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Exited {
            exit_code: Some(terminated_code(&state).unwrap_or(0)),
            reason: None,
        },
        // A steps pod that failed by itself failed in one of its steps; one the pod's own
        // reason stopped (a deadline, an eviction) did not.
        Some("Failed") => crate::steps::failed(pod)
            .filter(|_| status.reason.is_none())
            .unwrap_or_else(|| failed(pod, &state)),
        // Pending, Unknown, or not yet set.
        _ => {
            let created = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| utc(t.0));
            let stuck_for =
                |since: Option<DateTime<Utc>>| since.map_or(chrono::Duration::zero(), |s| now - s);
            if let Some(waiting) = state.waiting.as_ref() {
                let reason = waiting.reason.clone().unwrap_or_default();
                let message = waiting.message.clone().unwrap_or_default();
                let why = format!("{reason}: {message}")
                    .trim_end_matches(": ")
                    .to_string();
                if STUCK.contains(&reason.as_str()) {
                    if stuck_for(created) > pending_timeout {
                        return Phase::Exited {
                            exit_code: None,
                            reason: Some(why),
                        };
                    }
                    return Phase::Starting { reason: Some(why) };
                }
            }
            let unschedulable = status.conditions.unwrap_or_default().into_iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            });
            if let Some(c) = unschedulable {
                let why = format!("Unschedulable: {}", c.message.unwrap_or_default());
                if stuck_for(c.last_transition_time.and_then(|t| utc(t.0)).or(created))
                    > pending_timeout
                {
                    return Phase::NoCapacity { reason: why };
                }
                return Phase::Starting { reason: Some(why) };
            }
            Phase::Starting { reason: None }
        }
    }
}

/// k8s-openapi's timestamps are jiff's; the engine's clock is chrono's.
fn utc(t: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
}

/// When the job's container ran, from its terminated state: what Autopilot bills.
pub fn ran(pod: &Pod) -> Option<RunTimes> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let main = statuses.iter().find(|c| c.name == CONTAINER)?;
    let done = main.state.as_ref()?.terminated.as_ref()?;
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| std::time::SystemTime::from(t.0))
    };
    RunTimes::of(time(done.started_at.as_ref()), time(done.finished_at.as_ref()))
}

fn terminated_code(state: &ContainerState) -> Option<i32> {
    state.terminated.as_ref().map(|t| t.exit_code)
}

fn failed(pod: &Pod, state: &ContainerState) -> Phase {
    let status = pod.status.as_ref();
    let pod_reason = status.and_then(|s| s.reason.clone());
    let pod_message = status.and_then(|s| s.message.clone()).unwrap_or_default();
    // Kubernetes marks a pod it takes down for reasons of its own with the DisruptionTarget
    // condition: a GKE Spot node's shutdown (TerminationByKubelet), a preemption by a pod
    // of higher priority, a NoExecute taint, a drain, a node gone. Not the job's doing, so
    // a new attempt follows; except a node-pressure eviction (pod reason `Evicted`), which
    // the job's own disk or memory use may have caused.
    let disruption = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    if let Some(c) = disruption.filter(|_| pod_reason.as_deref() != Some("Evicted")) {
        let why = [c.reason.as_deref(), pod_reason.as_deref(), c.message.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        return Phase::Preempted {
            reason: format!("preempted by Kubernetes: {why}"),
        };
    }
    match (&pod_reason, &state.terminated) {
        // The pod as a whole was stopped: activeDeadlineSeconds, eviction, preemption.
        (Some(reason), _) => Phase::Exited {
            exit_code: terminated_code(state),
            reason: Some(
                format!("{reason}: {pod_message}")
                    .trim_end_matches(": ")
                    .to_string(),
            ),
        },
        (None, Some(t)) => {
            let reason = match t.reason.as_deref() {
                Some("OOMKilled") => "OOMKilled".to_string(),
                _ => format!("exited with code {}", t.exit_code),
            };
            Phase::Exited {
                exit_code: Some(t.exit_code),
                reason: Some(match &t.message {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason,
                }),
            }
        }
        (None, None) => Phase::Exited {
            exit_code: None,
            reason: Some("pod failed without a container exit".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status,
        }))
        .unwrap()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
            + chrono::Duration::minutes(minutes)
    }

    const LIMIT: chrono::Duration = chrono::Duration::minutes(5);

    #[test]
    fn phases_and_exit_codes() {
        assert_eq!(
            phase(&pod(json!({"phase": "Pending"})), at(0), LIMIT),
            Phase::Starting { reason: None }
        );
        assert_eq!(
            phase(&pod(json!({"phase": "Running"})), at(0), LIMIT),
            Phase::Running
        );
        let done = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "main", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]}),
        );
        assert_eq!(
            phase(&done, at(0), LIMIT),
            Phase::Exited {
                exit_code: Some(0),
                reason: None
            }
        );
        let oom = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "main", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(
            phase(&oom, at(0), LIMIT),
            Phase::Exited {
                exit_code: Some(137),
                reason: Some("OOMKilled".into())
            }
        );
        let deadline = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline"}));
        assert_eq!(
            phase(&deadline, at(0), LIMIT),
            Phase::Exited { exit_code: None, reason: Some("DeadlineExceeded: Pod was active on the node longer than the specified deadline".into()) }
        );
    }

    #[test]
    fn pods_kubernetes_took_down_are_preempted_but_evictions_for_pressure_fail() {
        let shutdown = pod(json!({"phase": "Failed", "reason": "Terminated",
            "message": "Pod was terminated in response to imminent node shutdown.",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                            "message": "Pod was terminated in response to imminent node shutdown."}]}));
        assert_eq!(
            phase(&shutdown, at(0), LIMIT),
            Phase::Preempted {
                reason: "preempted by Kubernetes: TerminationByKubelet: Terminated: Pod was terminated in response to imminent node shutdown.".into()
            }
        );
        let preempted = pod(json!({"phase": "Failed",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                            "message": "default-scheduler: preempting to accommodate a higher priority pod"}]}));
        assert!(matches!(phase(&preempted, at(0), LIMIT), Phase::Preempted { .. }));
        let pressure = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi.",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]}));
        assert!(matches!(phase(&pressure, at(0), LIMIT), Phase::Exited { reason: Some(r), .. } if r.starts_with("Evicted: Pod ephemeral")));
        // A condition that is not (or no longer) true changes nothing.
        let cleared = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded",
            "conditions": [{"type": "DisruptionTarget", "status": "False", "reason": "PreemptionByScheduler"}]}));
        assert!(matches!(phase(&cleared, at(0), LIMIT), Phase::Exited { .. }));
    }

    #[test]
    fn stuck_pending_pods_fail_after_the_limit() {
        let pull = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}),
        );
        assert_eq!(
            phase(&pull, at(1), LIMIT),
            Phase::Starting {
                reason: Some("ImagePullBackOff: Back-off pulling image \"nope\"".into())
            }
        );
        assert!(
            matches!(phase(&pull, at(6), LIMIT), Phase::Exited { exit_code: None, reason: Some(r) } if r.starts_with("ImagePullBackOff"))
        );
        let unschedulable = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            "lastTransitionTime": "2026-01-01T00:02:00Z"}]}),
        );
        assert!(matches!(
            phase(&unschedulable, at(6), LIMIT),
            Phase::Starting { .. }
        ));
        assert_eq!(
            phase(&unschedulable, at(8), LIMIT),
            Phase::NoCapacity {
                reason: "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
                    .into()
            }
        );
    }

    #[test]
    fn an_ended_container_reports_when_it_ran() {
        let done = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "main", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0,
            "startedAt": "2026-01-01T00:01:00Z", "finishedAt": "2026-01-01T00:03:30Z"}}}]}),
        );
        assert_eq!(ran(&done).map(|r| r.seconds()), Some(150));
        assert_eq!(ran(&pod(json!({"phase": "Running"}))), None);
    }
}
